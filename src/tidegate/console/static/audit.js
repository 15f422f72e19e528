// The audit log, newest first: filtered by tenant on the server, by action or actor on the
// page's rows, and paged with the API's cursors (a stack of them for "Previous page").

import { api, query } from "./api.js";
import { el, field, fmt, statusLine, table } from "./dom.js";

const MAX_SCAN = 10;

export async function render(root, who) {
  root.append(el("h1", {}, "Audit log"));
  const status = statusLine();
  const tenants = who.operator ? (await api("GET", query("/admin/tenants", { limit: 100 }))).data : [who.tenant];
  const names = new Map(tenants.map((t) => [t.id, t.name]));
  const [tenantBox, tenant] = field("Tenant", el("select", { name: "tenant" },
    who.operator ? el("option", { value: "" }, "All tenants") : null,
    tenants.map((t) => el("option", { value: t.id }, t.name))));
  const [actionBox, action] = field("Action contains", el("input", { name: "action", placeholder: "key.created" }));
  const [actorBox, actor] = field("Actor contains", el("input", { name: "actor" }));
  const [sizeBox, size] = field("Per page", el("select", { name: "limit" }, ["20", "50", "100"].map((n) => el("option", { value: n }, n))));
  const form = el("form", { novalidate: true, "aria-label": "Audit filters" }, tenantBox, actionBox, actorBox, sizeBox, el("button", { type: "submit" }, "Filter"));
  const out = el("div", { className: "card" });
  root.append(el("div", { className: "card" }, form, status.node), out);
  let cursors = [null];

  // The API filters by tenant; the action and actor filters apply here, so a page reads on
  // through the API's pages until it has a page of matches (at most MAX_SCAN of them).
  async function load() {
    status.clear();
    const wantAction = action.value.trim().toLowerCase();
    const wantActor = actor.value.trim().toLowerCase();
    const matches = (e) => e.action.toLowerCase().includes(wantAction)
      && String(e.actor.name || "").toLowerCase().includes(wantActor);
    const limit = Number(size.value);
    const rows = [];
    let cursor = cursors[cursors.length - 1];
    let more = false;
    try {
      for (let scanned = 0; scanned < MAX_SCAN; scanned++) {
        const page = await api("GET", query("/admin/audit", { tenant_id: tenant.value, limit: 100, after: cursor }));
        let full = false;
        for (const event of page.data) {
          if (rows.length === limit) { full = true; break; }
          cursor = event.id; // the last event looked at: the next page reads on after it
          if (matches(event)) rows.push(event);
        }
        more = full || page.has_more;
        if (!more || rows.length === limit) break;
      }
    } catch (err) {
      status.error(err);
      return;
    }
    const page = { has_more: more, last_id: cursor };
    const pageNo = cursors.length;
    out.replaceChildren(table("Audit events", [
      ["At (UTC)", (e) => el("span", { className: "nowrap" }, fmt.time(e.at))],
      ["Actor", (e) => e.actor.name || e.actor.key_id || ""],
      ["Tenant", (e) => (names.has(e.tenant_id) ? names.get(e.tenant_id) : el("span", { className: "mono" }, e.tenant_id || ""))],
      ["Action", (e) => e.action],
      ["Target", (e) => `${e.target.type || ""} ${e.target.id || ""}`],
      ["Details", (e) => el("span", { className: "mono details" }, e.details ? JSON.stringify(e.details) : "")],
    ], rows, { empty: "No audit events match." }),
    el("div", { className: "pager" },
      el("span", { className: "notice" }, `Page ${pageNo}`),
      pageNo > 1 ? el("button", { type: "button", className: "secondary", onclick: () => { cursors.pop(); load(); } }, "Previous page") : null,
      page.has_more ? el("button", { type: "button", className: "secondary", onclick: () => { cursors.push(page.last_id); load(); } }, "Next page") : null));
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); cursors = [null]; load(); });
  await load();
}
