// Rollouts and traffic (operators only, like the API): each model's split, shadow pool and
// versions; a running rollout's step, share and gate figures against their thresholds, its
// operator moves; rollback with a confirmation; the shadow comparison summary.

import { api, enc, query } from "./api.js";
import { clear, confirmAction, el, field, fmt, statusLine, table } from "./dom.js";

const GATES = [["error_rate_delta", "Error rate delta", "max"], ["ttft_p95_ratio", "TTFT p95 ratio", "max"],
  ["itl_p95_ratio", "ITL p95 ratio", "max"], ["json_validity_delta", "JSON validity delta", "max"]];

export async function render(root, who) {
  root.append(el("h1", {}, "Rollouts and traffic"));
  if (!who.operator) {
    root.append(el("p", { className: "notice", role: "alert" }, "Model traffic and rollouts span every tenant: only the operator manages them."));
    return;
  }
  const models = (await api("GET", "/v1/models")).data.map((m) => m.id);
  const recentBox = el("div", { className: "card" });
  const refreshRecent = async () => {
    const recent = await api("GET", query("/admin/rollouts", { limit: 20 }));
    recentBox.replaceChildren(table("Recent rollouts", [
      ["Id", (r) => el("span", { className: "mono" }, r.id)],
      ["Model", (r) => r.model],
      ["Candidate", (r) => r.candidate_pool],
      ["Stable", (r) => r.stable_pool],
      ["State", (r) => r.state],
      ["Step", (r) => `${r.step_index + 1}/${r.steps.length} (${r.share}%)`],
      ["Reason", (r) => r.reason || ""],
    ], recent.data, { empty: "No rollouts yet." }));
  };
  for (const model of models) {
    const box = el("section", { className: "card", "aria-label": `Model ${model}`, "data-model": model });
    root.append(box);
    await showModel(box, model, refreshRecent);
  }
  root.append(el("h2", {}, "Recent rollouts"), recentBox);
  await refreshRecent();
}

async function showModel(box, model, refreshRecent, message = "") {
  const path = `/admin/models/${enc(model)}`;
  const [traffic, versions, shadow] = await Promise.all([
    api("GET", `${path}/traffic`), api("GET", `${path}/versions`), api("GET", `${path}/shadow`)]);
  const status = statusLine();
  const act = (fn, done) => async () => {
    status.clear();
    try {
      await fn();
      await showModel(box, model, refreshRecent, done);
      await refreshRecent();
    } catch (err) {
      status.error(err);
    }
  };
  const pools = [...new Set([traffic.stable_pool, ...traffic.weights.map(([p]) => p),
    ...versions.data.map((v) => v.pool), traffic.shadow && traffic.shadow.pool].filter(Boolean))];

  const shares = Object.entries(traffic.shares || {});
  const split = table(`Split of ${model}`, [
    ["Pool", ([p]) => p], ["Share", ([, s]) => fmt.pct(s), { num: true }],
    ["", ([p]) => (p === traffic.stable_pool ? "stable" : "")],
  ], shares.length ? shares : [[traffic.stable_pool, 1]]);

  const [splitBox, splitInput] = field("New split (pool=weight, …)", el("input", { name: "split",
    value: traffic.weights.map(([p, w]) => `${p}=${w}`).join(", ") || `${traffic.stable_pool}=100`, size: "40" }));
  const splitForm = el("form", { novalidate: true, "aria-label": `Set the split of ${model}` }, splitBox, el("button", { type: "submit" }, "Set split"));
  splitForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api("PUT", `${path}/traffic`, { weights: parseSplit(splitInput.value) }), "Split set.")();
  });

  const [shadowPoolBox, shadowPool] = field("Shadow pool", el("select", { name: "shadow_pool" },
    pools.map((p) => el("option", { value: p, selected: traffic.shadow && traffic.shadow.pool === p }, p))));
  const [sampleBox, sample] = field("Sample (0-1)", el("input", { type: "number", name: "sample", min: "0", max: "1", step: "0.01",
    value: traffic.shadow ? String(traffic.shadow.sample) : "0.1" }));
  const shadowForm = el("form", { novalidate: true, "aria-label": `Shadow traffic of ${model}` }, shadowPoolBox, sampleBox,
    el("button", { type: "submit" }, "Mirror"),
    traffic.shadow ? el("button", { type: "button", className: "secondary",
      onclick: act(() => api("PUT", `${path}/traffic`, { shadow: null }), "Shadow stopped.") }, "Stop shadow") : null);
  shadowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api("PUT", `${path}/traffic`, { shadow: { pool: shadowPool.value, sample: Number(sample.value) } }), "Shadow set.")();
  });

  const rollback = el("button", { type: "button", className: "danger", onclick: async () => {
    if (!(await confirmAction(`Roll ${model} back: all traffic to ${traffic.stable_pool}, ending any rollout?`))) return;
    await act(() => api("POST", `${path}/rollback`), "Rolled back.")();
  } }, "Roll back");

  clear(box).append(
    el("h2", {}, "Model ", el("span", { className: "mono" }, model)),
    el("p", {}, `Stable pool ${traffic.stable_pool}; sticky by ${traffic.sticky_by}; shadow: `,
      traffic.shadow ? `${traffic.shadow.pool} (${fmt.pct(traffic.shadow.sample)} of requests)` : "off",
      `; last change ${fmt.time(traffic.updated_at)} by ${traffic.updated_by || "—"}.`),
    split, splitForm, shadowForm,
    el("div", { className: "row" }, rollback),
    traffic.rollout ? await rolloutPanel(traffic.rollout.id, act) : startForm(model, pools, traffic, act),
    el("h3", {}, "Shadow comparison"),
    table(`Shadow comparison of ${model}`, [
      ["Primary", (p) => p.primary_pool], ["Shadow", (p) => p.shadow_pool], ["Pairs", (p) => fmt.int(p.count), { num: true }],
      ["Texts differ", (p) => fmt.pct(p.difference_rate), { num: true }],
      ["Mean similarity", (p) => fmt.num(p.mean_similarity), { num: true }],
    ], shadow.data, { empty: "No shadow comparisons." }),
    shadow.data.map((p) => sides(p)),
    el("h3", {}, "Versions"),
    table(`Versions of ${model}`, [
      ["Pool", (v) => v.pool], ["Source", (v) => v.source], ["Revision", (v) => el("span", { className: "mono" }, v.revision || "")],
      ["Profile", (v) => el("span", { className: "mono" }, v.profile_hash || "")], ["Recorded", (v) => fmt.time(v.created_at)],
    ], versions.data, { empty: "No versions recorded." }),
    status.node);
  if (message) status.ok(message);
}

/** One pair's figures side by side: a row per figure, the primary and the shadow pool. */
function sides(pair) {
  const names = [...new Set([...Object.keys(pair.primary || {}), ...Object.keys(pair.shadow || {})])];
  return table(`${pair.primary_pool} against ${pair.shadow_pool}`, [
    ["Figure", (k) => k.replace(/_/g, " ")],
    [pair.primary_pool, (k) => show(pair.primary && pair.primary[k]), { num: true }],
    [`${pair.shadow_pool} (shadow)`, (k) => show(pair.shadow && pair.shadow[k]), { num: true }],
  ], names, { showCaption: true });
}

function show(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  return value === null || value === undefined ? "—" : String(value);
}

/** "stable=95, candidate=5" → {stable: 95, candidate: 5} (the API checks the names). */
export function parseSplit(textValue) {
  const weights = {};
  for (const part of textValue.split(/[,\s]+/).filter(Boolean)) {
    const at = part.lastIndexOf("=");
    if (at < 1) throw new Error(`Write each pool as pool=weight, got "${part}".`);
    weights[part.slice(0, at)] = Number(part.slice(at + 1));
  }
  return weights;
}

async function rolloutPanel(id, act) {
  const r = await api("GET", `/admin/rollouts/${enc(id)}`);
  const step = r.current_step;
  const move = (name, label) => el("button", { type: "button", className: name === "abort" ? "danger" : "secondary",
    onclick: act(() => api("POST", `/admin/rollouts/${enc(id)}/${name}`), `Rollout ${name}d.`) }, label);
  const rows = GATES.map(([k, label]) => ({ label, figure: step ? step.figures[k] : null, threshold: r.gates[k], name: k }));
  return el("div", { className: "rollout", "aria-label": `Rollout ${r.id}` },
    el("h3", {}, "Running rollout ", el("span", { className: "mono" }, r.id)),
    el("p", {}, `${r.state}: step ${r.step_index + 1} of ${r.steps.length} (steps ${r.steps.join(", ")}%), candidate ${r.candidate_pool} at ${fmt.num(r.share, 1)}%, hold ${r.hold_s} s, since ${fmt.time(r.step_started_at)}.`),
    el("p", {}, step ? `Verdict: ${step.verdict}${step.reason ? ` (${step.reason})` : ""}` : "No figures yet."),
    table("Gates", [
      ["Gate", (g) => g.label],
      ["Figure", (g) => fmt.num(g.figure), { num: true }],
      ["Threshold", (g) => fmt.num(g.threshold), { num: true }],
      ["", (g) => (g.figure === null || g.figure === undefined ? "waiting"
        : g.figure <= g.threshold ? el("span", { className: "ok" }, "holds") : el("span", { className: "bad" }, "fails"))],
    ], rows),
    el("p", { className: "notice" }, step ? `Samples: stable ${fmt.int(step.figures.stable_requests)}, candidate ${fmt.int(step.figures.candidate_requests)} (need ${r.gates.min_samples}).` : ""),
    el("div", { className: "row" },
      r.state === "running" ? move("pause", "Pause") : move("resume", "Resume"),
      move("abort", "Abort"), move("promote", "Promote")));
}

function startForm(model, pools, traffic, act) {
  const candidates = pools.filter((p) => p !== traffic.stable_pool);
  const [poolBox, pool] = field("Candidate pool", el("select", { name: "candidate" }, candidates.map((p) => el("option", { value: p }, p))));
  const [stepsBox, steps] = field("Steps (%)", el("input", { name: "steps", value: "5, 25, 100" }));
  const [holdBox, hold] = field("Hold (s)", el("input", { type: "number", name: "hold_s", min: "0", value: "600" }));
  const form = el("form", { novalidate: true, "aria-label": `Start a rollout of ${model}` }, poolBox, stepsBox, holdBox,
    el("button", { type: "submit", disabled: !candidates.length }, "Start rollout"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api("POST", "/admin/rollouts", { model, candidate_pool: pool.value,
      steps: steps.value.split(/[,\s]+/).filter(Boolean).map(Number), hold_s: Number(hold.value) }), "Rollout started.")();
  });
  return el("div", {}, el("h3", {}, "Start a rollout"),
    candidates.length ? null : el("p", { className: "notice" }, "No other pool serves this model yet."), form);
}
