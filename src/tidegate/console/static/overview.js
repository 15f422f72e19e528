// Overview: per pool and model, live from /metrics (operators only), polled every few seconds.
// Percentiles and the error rate are over the last WINDOW_MS of scrapes, like a rate() query.

import { api, query, text } from "./api.js";
import { chart } from "./chart.js";
import { el, fmt, table } from "./dom.js";
import { buckets, byLabel, parse, quantile } from "./metrics.js";

export const POLL_MS = Number(new URLSearchParams(location.search).get("poll_ms")) || 5000;
const WINDOW_MS = 5 * 60 * 1000;
const ERROR_OUTCOMES = new Set(["upstream", "timeout", "overload"]);

const count = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

export async function render(root, who) {
  root.append(el("h1", {}, "Overview"));
  if (!who.operator) return tenantOverview(root, who);
  const status = el("p", { className: "notice", "aria-live": "polite" });
  const pools = el("div", { className: "card" });
  const models = el("div", { className: "card" });
  const charts = {
    inflight: chart("In flight per pool", "line", count),
    queue: chart("Queued per pool (all classes)", "line", count),
    ttft: chart("TTFT p95 per model (s)", "line", (v) => v.toFixed(3)),
    errors: chart("Error rate per model", "line", (v) => `${(100 * v).toFixed(0)}%`),
  };
  root.append(status, el("h2", {}, "Pools"), pools, el("h2", {}, "Models (last 5 minutes)"), models,
    el("div", { className: "grid" }, Object.values(charts).map((c) => c.node)));
  const history = [];
  let timer = null;
  let stopped = false;

  async function tick() {
    try {
      const samples = parse(await text("/metrics"));
      const at = Date.now();
      history.push({ at, samples, figures: figures(samples, history[0] && history[0].samples) });
      while (history.length > 1 && at - history[0].at > WINDOW_MS) history.shift();
      draw();
      status.textContent = `Updated ${new Date(at).toISOString().slice(11, 19)} UTC, every ${POLL_MS / 1000} s.`;
    } catch (err) {
      status.textContent = `Could not read /metrics: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  function draw() {
    const latest = history[history.length - 1].figures;
    pools.replaceChildren(table("Pools", [
      ["Pool", (p) => p.pool],
      ["Ready replicas", (p) => fmt.int(p.ready), { num: true }],
      ["In flight / capacity", (p) => `${fmt.int(p.inFlight)} / ${fmt.int(p.capacity)}`, { num: true }],
      ["Queued interactive", (p) => fmt.int(p.queue.interactive || 0), { num: true }],
      ["Queued batch", (p) => fmt.int(p.queue.batch || 0), { num: true }],
      ["KV cache", (p) => fmt.pct(p.kv), { num: true }],
      ["Prefix-cache hit rate", (p) => fmt.pct(p.prefixHit), { num: true }],
    ], latest.pools, { empty: "No pool reports yet." }));
    models.replaceChildren(table("Models", [
      ["Model", (m) => m.model],
      ["Requests", (m) => fmt.int(m.requests), { num: true }],
      ["TTFT p50", (m) => fmt.secs(m.ttft50), { num: true }],
      ["TTFT p95", (m) => fmt.secs(m.ttft95), { num: true }],
      ["ITL p50", (m) => fmt.secs(m.itl50), { num: true }],
      ["ITL p95", (m) => fmt.secs(m.itl95), { num: true }],
      ["Error rate", (m) => fmt.pct(m.errorRate), { num: true }],
    ], latest.models, { empty: "No requests yet." }));
    const series = (pick, key) => {
      const names = [...new Set(history.flatMap((h) => pick(h.figures).map((x) => x[key])))];
      return (value) => names.map((name) => ({
        name,
        points: history.map((h) => [h.at, value(pick(h.figures).find((x) => x[key] === name))])
          .filter((p) => p[1] !== null && p[1] !== undefined),
      }));
    };
    charts.inflight.draw(series((f) => f.pools, "pool")((p) => p && p.inFlight));
    charts.queue.draw(series((f) => f.pools, "pool")((p) => p && (p.queue.interactive || 0) + (p.queue.batch || 0)));
    charts.ttft.draw(series((f) => f.models, "model")((m) => m && m.ttft95));
    charts.errors.draw(series((f) => f.models, "model")((m) => m && m.errorRate));
  }

  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** What one scrape says per pool and, against an earlier scrape, per model. */
export function figures(samples, before) {
  const ready = byLabel(samples, "tidegate_pool_ready_replicas", "model");
  const inFlight = byLabel(samples, "tidegate_pool_in_flight_requests", "model");
  const capacity = byLabel(samples, "tidegate_pool_capacity", "model");
  const kvSum = byLabel(samples, "tidegate_engine_kv_cache_usage_ratio", "model");
  const kvCount = byLabel(samples.map((s) => ({ ...s, value: 1 })), "tidegate_engine_kv_cache_usage_ratio", "model");
  const hits = byLabel(samples, "tidegate_engine_prefix_cache_hits", "model");
  const queries = byLabel(samples, "tidegate_engine_prefix_cache_queries", "model");
  const names = new Set([...ready.keys(), ...capacity.keys(), ...inFlight.keys()]);
  const pools = [...names].sort().map((pool) => {
    const queue = {};
    for (const klass of ["interactive", "batch"]) {
      queue[klass] = byLabel(samples, "tidegate_queue_depth", "model", (l) => l.class === klass).get(pool) || 0;
    }
    return {
      pool,
      ready: ready.get(pool) ?? 0,
      inFlight: inFlight.get(pool) ?? 0,
      capacity: capacity.get(pool) ?? 0,
      queue,
      kv: kvCount.get(pool) ? kvSum.get(pool) / kvCount.get(pool) : null,
      prefixHit: queries.get(pool) ? (hits.get(pool) || 0) / queries.get(pool) : null,
    };
  });
  const prev = before || [];
  const total = byLabel(samples, "tidegate_requests_total", "model");
  const totalBefore = byLabel(prev, "tidegate_requests_total", "model");
  const isError = (l) => ERROR_OUTCOMES.has(l.outcome);
  const errs = byLabel(samples, "tidegate_requests_total", "model", isError);
  const errsBefore = byLabel(prev, "tidegate_requests_total", "model", isError);
  const ttft = buckets(samples, "tidegate_time_to_first_token_seconds", "model");
  const ttftBefore = buckets(prev, "tidegate_time_to_first_token_seconds", "model");
  const itl = buckets(samples, "tidegate_inter_token_latency_seconds", "model");
  const itlBefore = buckets(prev, "tidegate_inter_token_latency_seconds", "model");
  const models = [...total.keys()].sort().map((model) => {
    const requests = total.get(model) - (totalBefore.get(model) || 0);
    const errors = (errs.get(model) || 0) - (errsBefore.get(model) || 0);
    return {
      model,
      requests,
      errorRate: requests > 0 ? errors / requests : null,
      ttft50: quantile(0.5, ttft.get(model), ttftBefore.get(model)),
      ttft95: quantile(0.95, ttft.get(model), ttftBefore.get(model)),
      itl50: quantile(0.5, itl.get(model), itlBefore.get(model)),
      itl95: quantile(0.95, itl.get(model), itlBefore.get(model)),
    };
  });
  return { pools, models };
}

/** A tenant admin cannot read /metrics (it names every tenant): its own day instead. */
async function tenantOverview(root, who) {
  const today = new Date().toISOString().slice(0, 10);
  const rollup = await api("GET", query("/admin/usage", { tenant_id: who.tenant.id, since: today, group_by: "model" }));
  root.append(
    el("p", { className: "notice" }, "Live pool and scheduler figures are for operators. Your tenant today:"),
    el("div", { className: "card" }, table("Usage today", [
      ["Model", (r) => r.model],
      ["Requests", (r) => fmt.int(r.requests), { num: true }],
      ["Total tokens", (r) => fmt.int(r.total_tokens), { num: true }],
      ["Cost (USD)", (r) => fmt.usd(r.cost_usd), { num: true }],
    ], rollup.data, { empty: "No requests today." })),
  );
}
