// Reading the gateway's /metrics (Prometheus text format) and turning two scrapes into rates
// and histogram percentiles over the time between them.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** [{name, labels: {...}, value}] for every sample. */
export function parse(textBody) {
  const samples = [];
  for (const line of textBody.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || "").matchAll(LABEL)) {
      labels[name] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of a metric's samples per value of one label. */
export function byLabel(samples, name, label, filter = () => true) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name || !filter(s.labels)) continue;
    const key = s.labels[label];
    out.set(key, (out.get(key) || 0) + s.value);
  }
  return out;
}

/** Cumulative bucket counts {le -> count} of a histogram, per value of `label`. */
export function buckets(samples, name, label) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const key = s.labels[label];
    if (!out.has(key)) out.set(key, new Map());
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    const per = out.get(key);
    per.set(le, (per.get(le) || 0) + s.value);
  }
  return out;
}

/** The q-quantile of the observations made between two cumulative bucket maps (the way
 *  Prometheus' histogram_quantile interpolates inside a bucket); null with none. */
export function quantile(q, now, before) {
  if (!now) return null;
  const bounds = [...now.keys()].sort((a, b) => a - b);
  const counts = bounds.map((le) => now.get(le) - ((before && before.get(le)) || 0));
  const total = counts[counts.length - 1];
  if (!total || total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      const lower = i === 0 ? 0 : bounds[i - 1];
      const below = i === 0 ? 0 : counts[i - 1];
      if (bounds[i] === Infinity) return lower;
      const inBucket = counts[i] - below;
      return lower + (bounds[i] - lower) * (inBucket > 0 ? (rank - below) / inBucket : 0);
    }
  }
  return null;
}
