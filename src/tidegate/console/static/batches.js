// Batches and files of the signed-in key's tenant (the Batch and Files APIs are per tenant):
// status, counts, progress, errors, and downloads of output and error files.

import { api, blob, enc, query } from "./api.js";
import { el, fmt, saveBlob, statusLine, table } from "./dom.js";

export async function render(root, who) {
  root.append(el("h1", {}, "Batches and files"),
    el("p", { className: "notice" }, `Of tenant ${who.tenant.name}: the Batch and Files APIs show each key its own tenant's.`));
  const status = statusLine();
  const batchBox = el("div", { className: "card" });
  const fileBox = el("div", { className: "card" });
  root.append(status.node, el("h2", {}, "Batches"), batchBox, el("h2", {}, "Files"), fileBox);

  const download = (id, label) => el("button", { type: "button", className: "secondary",
    "aria-label": `Download ${label} ${id}`, onclick: async () => {
      try {
        saveBlob(await blob(`/v1/files/${enc(id)}/content`), `${id}.jsonl`);
      } catch (err) {
        status.error(err);
      }
    } }, `Download ${label}`);

  async function loadBatches(after = null) {
    const page = await api("GET", query("/v1/batches", { limit: 20, after }));
    const last = page.data.length ? page.data[page.data.length - 1].id : null;
    batchBox.replaceChildren(table("Batches", [
      ["Id", (b) => el("span", { className: "mono" }, b.id)],
      ["Status", (b) => b.status],
      ["Endpoint", (b) => b.endpoint],
      ["Created", (b) => el("span", { className: "nowrap" }, fmt.time(b.created_at))],
      ["Requests done / failed / total", (b) => {
        const c = b.request_counts || {};
        return `${fmt.int(c.completed)} / ${fmt.int(c.failed)} / ${fmt.int(c.total)}`;
      }, { num: true }],
      ["Progress", (b) => {
        const c = b.request_counts || {};
        const done = (c.completed || 0) + (c.failed || 0);
        return el("progress", { max: String(c.total || 1), value: String(done), "aria-label": `Progress of ${b.id}` });
      }],
      ["Errors", (b) => (b.errors && b.errors.data ? b.errors.data.map((e) => `${e.code || ""}: ${e.message}`).join("; ") : "")],
      ["Files", (b) => el("div", { className: "row" },
        b.output_file_id ? download(b.output_file_id, "output") : null,
        b.error_file_id ? download(b.error_file_id, "errors") : null)],
    ], page.data, { empty: "No batches." }),
    el("div", { className: "pager" },
      after ? el("button", { type: "button", className: "secondary", onclick: () => loadBatches() }, "First page") : null,
      page.has_more ? el("button", { type: "button", className: "secondary", onclick: () => loadBatches(last) }, "Next page") : null));
  }

  async function loadFiles(after = null) {
    const page = await api("GET", query("/v1/files", { limit: 20, after }));
    const last = page.data.length ? page.data[page.data.length - 1].id : null;
    fileBox.replaceChildren(table("Files", [
      ["Id", (f) => el("span", { className: "mono" }, f.id)],
      ["Name", (f) => f.filename],
      ["Purpose", (f) => f.purpose],
      ["Bytes", (f) => fmt.int(f.bytes), { num: true }],
      ["Created", (f) => el("span", { className: "nowrap" }, fmt.time(f.created_at))],
      ["", (f) => download(f.id, "file")],
    ], page.data, { empty: "No files." }),
    el("div", { className: "pager" },
      after ? el("button", { type: "button", className: "secondary", onclick: () => loadFiles() }, "First page") : null,
      page.has_more ? el("button", { type: "button", className: "secondary", onclick: () => loadFiles(last) }, "Next page") : null));
  }

  await Promise.all([loadBatches(), loadFiles()]);
}
