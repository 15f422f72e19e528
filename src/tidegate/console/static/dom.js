// Building the page without HTML strings: every value goes in as a text node, so nothing a
// tenant sent (names, metadata, model names) can become markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "className") {
      node.className = value;
    } else if (name in node && typeof value !== "string") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

let ids = 0;
/** A labelled input (or select) in a .field box; returns [box, control]. */
export function field(text, control) {
  if (!control.id) control.id = `f${++ids}`;
  return [el("div", { className: "field" }, el("label", { for: control.id }, text), control), control];
}

export function numberInput(name, value) {
  return el("input", { type: "number", name, min: "0", step: "any", value: value ?? "" });
}

/** A table: columns are [header, cell(row) -> text or Node, {num: true}]. */
export function table(caption, columns, rows, options = {}) {
  // A column without a visible header (buttons) still has one for screen readers.
  const head = el("tr", {}, columns.map(([h, , o]) => el("th", { scope: "col", className: o?.num ? "num" : "" },
    h === "" ? el("span", { className: "visually-hidden" }, "Actions") : h)));
  const body = rows.map((row) => {
    const tr = el("tr", {}, columns.map(([, cell, o]) => el("td", { className: o?.num ? "num" : "" }, cell(row))));
    if (options.rowClass) tr.className = options.rowClass(row);
    return tr;
  });
  if (!rows.length) {
    body.push(el("tr", {}, el("td", { colSpan: columns.length, className: "notice" }, options.empty || "Nothing yet.")));
  }
  return el("table", {}, el("caption", { className: options.showCaption ? "" : "visually-hidden" }, caption),
    el("thead", {}, head), el("tbody", {}, body));
}

export const fmt = {
  int: (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US")),
  usd: (n) => (n === null || n === undefined ? "—" : Number(n).toFixed(4)),
  pct: (x) => (x === null || x === undefined || !isFinite(x) ? "—" : `${(100 * x).toFixed(1)}%`),
  secs: (x) => (x === null || x === undefined || !isFinite(x) ? "—" : x < 1 ? `${(1000 * x).toFixed(0)} ms` : `${x.toFixed(2)} s`),
  time: (unix) => (unix ? new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) : "—"),
  num: (x, d = 3) => (x === null || x === undefined || !isFinite(x) ? "—" : Number(x).toFixed(d)),
};

/** A status line for an action: shows an API error's message as the API wrote it. */
export function statusLine() {
  const line = el("p", { className: "error", role: "status" });
  return {
    node: line,
    error(err) { line.className = "error"; line.textContent = err.message || String(err); },
    ok(text) { line.className = "ok"; line.textContent = text; },
    clear() { line.textContent = ""; },
  };
}

/** Ask before a destructive action, in the page's own dialog. */
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const yes = document.getElementById("confirm-yes");
    const no = document.getElementById("confirm-no");
    const done = (answer) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    no.focus();
  });
}

/** Save bytes as a file through a temporary object URL (no data in any address bar). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
