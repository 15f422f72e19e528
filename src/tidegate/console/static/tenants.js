// Tenants and keys: list, create, edit limits and budgets (the API validates and its message
// is shown as written), keys with create (shown once, with a copy button) and revoke, and each
// budget's use as a bar.

import { api, enc, query } from "./api.js";
import { clear, confirmAction, el, field, fmt, numberInput, statusLine, table } from "./dom.js";

const LIMITS = [["requests_per_minute", "Requests per minute"], ["tokens_per_minute", "Tokens per minute"],
  ["concurrent_requests", "Concurrent requests"]];
const BUDGETS = [["daily_tokens", "Daily tokens"], ["monthly_tokens", "Monthly tokens"],
  ["daily_cost_usd", "Daily cost (USD)"], ["monthly_cost_usd", "Monthly cost (USD)"]];
const TIERS = ["interactive", "batch", "internal"];

export async function render(root, who) {
  root.append(el("h1", {}, "Tenants and keys"));
  const detail = el("div");
  if (!who.operator) {
    root.append(detail);
    return showTenant(detail, who, who.tenant.id);
  }
  const list = el("div", { className: "card" });
  root.append(createForm(who, () => loadList()), list, detail);
  let after = null;
  let selected = null;

  async function loadList(cursor = null) {
    const page = await api("GET", query("/admin/tenants", { limit: 20, after: cursor }));
    after = page.has_more ? page.last_id : null;
    const rows = page.data;
    clear(list).append(el("h2", {}, "Tenants"), table("Tenants", [
      ["Name", (t) => el("button", { type: "button", className: "secondary", "data-tenant": t.id,
        "aria-label": `Open tenant ${t.name}`, onclick: () => open(t.id) }, t.name)],
      ["Id", (t) => el("span", { className: "mono" }, t.id)],
      ["Tier", (t) => t.tier],
      ["RPM", (t) => fmt.int(t.settings.limits.requests_per_minute), { num: true }],
      ["TPM", (t) => fmt.int(t.settings.limits.tokens_per_minute), { num: true }],
      ["Daily tokens", (t) => fmt.int(t.settings.budgets.daily_tokens), { num: true }],
    ], rows, { rowClass: (t) => (t.id === selected ? "selected" : "") }),
    el("div", { className: "pager" },
      cursor ? el("button", { type: "button", className: "secondary", onclick: () => loadList() }, "First page") : null,
      after ? el("button", { type: "button", className: "secondary", onclick: () => loadList(after) }, "Next page") : null));
  }

  async function open(id) {
    selected = id;
    await showTenant(detail, who, id, () => loadList());
  }

  await loadList();
}

function createForm(who, onCreated) {
  const status = statusLine();
  const [nameBox, name] = field("Tenant name", el("input", { name: "name", required: true, maxlength: "200" }));
  const [tierBox, tier] = field("Tier", el("select", { name: "tier" }, TIERS.map((t) => el("option", { value: t }, t))));
  const policy = LIMITS.concat(BUDGETS).map(([k, label]) => [k, ...field(label, numberInput(k))]);
  const form = el("form", { novalidate: true, "aria-label": "Create a tenant" }, nameBox, tierBox, policy.map(([, box]) => box),
    el("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.clear();
    const settings = settingsFrom(policy, false);
    try {
      const created = await api("POST", "/admin/tenants", { name: name.value, tier: tier.value, settings });
      status.ok(`Created ${created.name} (${created.id}).`);
      form.reset();
      await onCreated(created);
    } catch (err) {
      status.error(err);
    }
  });
  return el("div", { className: "card" }, el("h2", {}, "Create a tenant"), form, status.node);
}

/** The settings document of the limit and budget inputs; with `nulls`, empty inputs reset. */
function settingsFrom(policy, nulls) {
  const settings = { limits: {}, budgets: {} };
  for (const [key, , input] of policy) {
    const section = LIMITS.some(([k]) => k === key) ? "limits" : "budgets";
    if (input.value === "") {
      if (nulls) settings[section][key] = null;
    } else {
      settings[section][key] = Number(input.value);
    }
  }
  return settings;
}

async function showTenant(root, who, id, onChanged = async () => {}) {
  const tenant = await api("GET", `/admin/tenants/${enc(id)}`);
  clear(root).append(el("section", { className: "card", "aria-label": `Tenant ${tenant.name}` },
    el("h2", {}, `Tenant: `, el("span", { className: "tenant-name" }, tenant.name)),
    el("p", {}, `Id `, el("span", { className: "mono" }, tenant.id), `, tier ${tenant.tier}.`),
    await budgetBars(tenant),
    who.operator ? editForm(tenant, async () => { await showTenant(root, who, id, onChanged); await onChanged(); }) : readOnly(tenant),
    await keysPanel(who, tenant),
    who.operator && tenant.id !== "ten_system" ? deleteButton(tenant, async () => { clear(root); await onChanged(); }) : null));
}

async function budgetBars(tenant) {
  const now = new Date();
  const day = now.toISOString().slice(0, 10);
  const month = `${day.slice(0, 8)}01`;
  const used = async (since) => {
    const rollup = await api("GET", query("/admin/usage", { tenant_id: tenant.id, since, group_by: "model" }));
    return rollup.data.reduce((acc, r) => ({ tokens: acc.tokens + r.total_tokens, cost: acc.cost + r.cost_usd }), { tokens: 0, cost: 0 });
  };
  const [today, thisMonth] = await Promise.all([used(day), used(month)]);
  const figures = { daily_tokens: today.tokens, monthly_tokens: thisMonth.tokens,
    daily_cost_usd: today.cost, monthly_cost_usd: thisMonth.cost };
  const bars = BUDGETS.filter(([k]) => tenant.settings.budgets[k] !== null && tenant.settings.budgets[k] !== undefined)
    .map(([k, label]) => {
      const budget = tenant.settings.budgets[k];
      const spent = figures[k];
      const show = k.endsWith("usd") ? fmt.usd : fmt.int;
      const id = `meter-${k}`;
      return el("div", { className: "row budget" },
        el("label", { for: id }, label),
        el("meter", { id, min: "0", max: String(budget), value: String(Math.min(spent, budget)),
          high: String(budget * 0.8), optimum: "0" }),
        el("span", {}, `${show(spent)} of ${show(budget)} (${fmt.pct(budget > 0 ? spent / budget : 1)})`));
    });
  return el("div", {}, el("h3", {}, "Budgets"), bars.length ? bars : el("p", { className: "notice" }, "No budgets set."));
}

function readOnly(tenant) {
  const rows = LIMITS.concat(BUDGETS).map(([k, label]) => ({ label, value: tenant.settings.limits[k] ?? tenant.settings.budgets[k] }));
  return el("div", {}, el("h3", {}, "Limits and budgets"),
    el("p", { className: "notice" }, "Set by the operator."),
    table("Limits and budgets", [["Setting", (r) => r.label], ["Value", (r) => fmt.int(r.value), { num: true }]], rows));
}

function editForm(tenant, onSaved) {
  const status = statusLine();
  const [nameBox, name] = field("Name", el("input", { name: "name", value: tenant.name, maxlength: "200" }));
  const [tierBox, tier] = field("Tier", el("select", { name: "tier" }, TIERS.map((t) =>
    el("option", { value: t, selected: t === tenant.tier }, t))));
  const policy = LIMITS.concat(BUDGETS).map(([k, label]) => {
    const current = tenant.settings.limits[k] ?? tenant.settings.budgets[k];
    return [k, ...field(label, numberInput(k, current))];
  });
  const models = (tenant.settings.allowed_models || []).join(", ");
  const [modelsBox, allowed] = field("Allowed models (comma-separated, empty: all)", el("input", { name: "allowed_models", value: models }));
  const form = el("form", { novalidate: true, "aria-label": "Edit limits and budgets" }, nameBox, tierBox, policy.map(([, box]) => box), modelsBox,
    el("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.clear();
    const settings = settingsFrom(policy, true);
    const list = allowed.value.split(",").map((s) => s.trim()).filter(Boolean);
    settings.allowed_models = list.length ? list : null;
    try {
      await api("PATCH", `/admin/tenants/${enc(tenant.id)}`, { name: name.value, tier: tier.value, settings });
      await onSaved();
    } catch (err) {
      status.error(err);
    }
  });
  return el("div", {}, el("h3", {}, "Limits and budgets"), form, status.node);
}

function deleteButton(tenant, onDeleted) {
  const status = statusLine();
  const button = el("button", { type: "button", className: "danger", onclick: async () => {
    if (!(await confirmAction(`Delete tenant ${tenant.name}? This cannot be undone.`))) return;
    try {
      await api("DELETE", `/admin/tenants/${enc(tenant.id)}`);
      await onDeleted();
    } catch (err) {
      status.error(err);
    }
  } }, "Delete tenant");
  return el("div", {}, el("h3", {}, "Delete"), button, status.node);
}

async function keysPanel(who, tenant) {
  const box = el("div");
  const shown = el("div", { "aria-live": "polite" });
  const status = statusLine();

  async function load() {
    const page = await api("GET", query("/admin/keys", { tenant_id: tenant.id, limit: 100 }));
    clear(box).append(table("Keys", [
      ["Name", (k) => k.name],
      ["Id", (k) => el("span", { className: "mono" }, k.id)],
      ["Prefix", (k) => el("span", { className: "mono" }, k.prefix)],
      ["Role", (k) => k.role],
      ["Status", (k) => k.status],
      ["Expires", (k) => fmt.time(k.expires_at)],
      ["Last used", (k) => fmt.time(k.last_used_at)],
      ["", (k) => (k.status === "active" ? el("button", { type: "button", className: "danger",
        "aria-label": `Revoke key ${k.name}`, onclick: () => revoke(k) }, "Revoke") : "")],
    ], page.data, { empty: "No keys." }));
  }

  async function revoke(key) {
    if (!(await confirmAction(`Revoke key ${key.name} (${key.prefix}…)? Requests with it stop at once.`))) return;
    try {
      await api("DELETE", `/admin/keys/${enc(key.id)}`);
      status.ok(`Revoked ${key.name}.`);
      await load();
    } catch (err) {
      status.error(err);
    }
  }

  const [nameBox, name] = field("Key name", el("input", { name: "key_name", required: true, maxlength: "200" }));
  const [roleBox, role] = field("Role", el("select", { name: "role" }, ["member", "admin"].map((r) => el("option", { value: r }, r))));
  const [daysBox, days] = field("Expires in days (empty: never)", numberInput("expires_in_days"));
  const form = el("form", { novalidate: true, "aria-label": "Create a key" }, nameBox, roleBox, daysBox, el("button", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.clear();
    const body = { name: name.value, role: role.value, tenant_id: tenant.id };
    if (days.value !== "") body.expires_in_days = Number(days.value);
    try {
      const created = await api("POST", "/admin/keys", body);
      form.reset();
      showOnce(shown, created);
      await load();
    } catch (err) {
      status.error(err);
    }
  });
  await load();
  return el("div", {}, el("h3", {}, "Keys"), box, el("h3", {}, "Create a key"), form, status.node, shown);
}

/** The new key, this once: the API never returns it again. */
function showOnce(root, created) {
  const value = el("code", { className: "new-key-value" }, created.key);
  const copied = el("span", { role: "status" });
  const copy = el("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(created.key);
      copied.textContent = "Copied.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(value);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      copied.textContent = "Selected: press Ctrl+C to copy.";
    }
  } }, "Copy key");
  const done = el("button", { type: "button", className: "secondary", onclick: () => clear(root) }, "Done");
  clear(root).append(el("div", { className: "newkey", role: "region", "aria-label": "New key" },
    el("strong", {}, `Key ${created.name} created. Copy it now: it is shown only once.`),
    value, el("div", { className: "row" }, copy, done, copied)));
  copy.focus();
}
