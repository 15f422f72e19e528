// Usage and cost: the rollups of GET /admin/usage (the query `tidegate usage` prints), as
// charts and a table, and the same rows as CSV.

import { api, query } from "./api.js";
import { chart } from "./chart.js";
import { el, field, fmt, saveBlob, statusLine, table } from "./dom.js";

const COLUMNS = ["requests", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens", "cost_usd"];

export async function render(root, who) {
  root.append(el("h1", {}, "Usage and cost"));
  const status = statusLine();
  const tenants = who.operator ? (await api("GET", query("/admin/tenants", { limit: 100 }))).data : [who.tenant];
  const names = new Map(tenants.map((t) => [t.id, t.name]));
  const [tenantBox, tenant] = field("Tenant", el("select", { name: "tenant" },
    who.operator ? el("option", { value: "" }, "All tenants") : null,
    tenants.map((t) => el("option", { value: t.id }, t.name))));
  const monthAgo = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
  const [sinceBox, since] = field("Since (UTC day)", el("input", { type: "date", name: "since", value: monthAgo }));
  const [untilBox, until] = field("Until (UTC day)", el("input", { type: "date", name: "until" }));
  const [byBox, by] = field("Group by", el("select", { name: "group_by" },
    el("option", { value: "day" }, "day"), el("option", { value: "model" }, "model")));
  const exportButton = el("button", { type: "button", className: "secondary" }, "Export CSV");
  const form = el("form", { novalidate: true, "aria-label": "Usage filters" }, tenantBox, sinceBox, untilBox, byBox,
    el("button", { type: "submit" }, "Show"), exportButton);
  const tokens = chart("Total tokens", "bar", (v) => fmt.int(Math.round(v)));
  const cost = chart("Cost (USD)", "bar", (v) => v.toFixed(2));
  const out = el("div", { className: "card" });
  root.append(el("div", { className: "card" }, form, status.node), el("div", { className: "grid" }, tokens.node, cost.node), out);
  let rows = [];
  let group = "day";

  async function load() {
    status.clear();
    try {
      group = by.value;
      const rollup = await api("GET", query("/admin/usage", { tenant_id: tenant.value, since: since.value, until: until.value, group_by: group }));
      rows = rollup.data;
    } catch (err) {
      status.error(err);
      return;
    }
    // One series per tenant, one bar group per day (or model).
    const byTenant = new Map();
    for (const r of rows) {
      if (!byTenant.has(r.tenant_id)) byTenant.set(r.tenant_id, []);
      byTenant.get(r.tenant_id).push(r);
    }
    const keys = [...new Set(rows.map((r) => r[group]))].sort();
    const series = (figure) => [...byTenant].map(([id, own]) => ({
      name: names.get(id) || id,
      points: keys.filter((k) => own.some((r) => r[group] === k))
        .map((k) => [k, own.filter((r) => r[group] === k).reduce((sum, r) => sum + r[figure], 0)]),
    }));
    tokens.draw(series("total_tokens"));
    cost.draw(series("cost_usd"));
    out.replaceChildren(table("Usage", [
      ["Tenant", (r) => names.get(r.tenant_id) || r.tenant_id],
      [group === "day" ? "Day" : "Model", (r) => r[group]],
      ["Requests", (r) => fmt.int(r.requests), { num: true }],
      ["Prompt", (r) => fmt.int(r.prompt_tokens), { num: true }],
      ["Cached", (r) => fmt.int(r.cached_tokens), { num: true }],
      ["Completion", (r) => fmt.int(r.completion_tokens), { num: true }],
      ["Total tokens", (r) => fmt.int(r.total_tokens), { num: true }],
      ["Cost (USD)", (r) => fmt.usd(r.cost_usd), { num: true }],
    ], rows, { empty: "No usage recorded in that range." }));
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  exportButton.addEventListener("click", () => {
    const header = ["tenant_id", "tenant", group, ...COLUMNS];
    const lines = [header, ...rows.map((r) => [r.tenant_id, names.get(r.tenant_id) || "", r[group], ...COLUMNS.map((c) => r[c])])];
    saveBlob(new Blob([lines.map((l) => l.map(csvCell).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" }), `usage-by-${group}.csv`);
  });
  await load();
}

/** RFC 4180 quoting; a leading =, +, - or @ is neutralised so a spreadsheet never runs it. */
export function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n']/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}
