// Sign-in, navigation and the page router. Each section is a module with render(root, who),
// which may return a function that stops what it started (the overview's polling).

import { api, ApiError, forgetKey, hasKey, setKey, storedKey } from "./api.js";
import * as overview from "./overview.js";
import * as tenants from "./tenants.js";
import * as usage from "./usage.js";
import * as traffic from "./traffic.js";
import * as batches from "./batches.js";
import * as audit from "./audit.js";

const PAGES = { overview, tenants, usage, traffic, batches, audit };
const SYSTEM_TENANT = "ten_system";
let who = null;
let stop = null;

const $ = (id) => document.getElementById(id);

/** Who the key is: the operator (it reads the system tenant) or one tenant's admin. */
async function identify() {
  try {
    const system = await api("GET", `/admin/tenants/${SYSTEM_TENANT}`);
    return { operator: true, tenant: system };
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
  }
  const own = await api("GET", "/admin/tenants?limit=1");
  return { operator: false, tenant: own.data[0] };
}

async function signIn(key) {
  setKey(key);
  try {
    who = await identify();
  } catch (err) {
    forgetKey();
    who = null;
    if (err instanceof ApiError && err.status === 403) {
      throw new Error("This key is not an admin key: member keys can only call /v1.");
    }
    throw err;
  }
  $("whoami").textContent = who.operator
    ? "Signed in as the operator"
    : `Signed in as tenant admin of ${who.tenant.name}`;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  $("page").hidden = false;
  for (const link of document.querySelectorAll("nav a[data-operator]")) {
    link.parentElement.hidden = !who.operator;
  }
  show();
}

function signOut() {
  if (stop) stop();
  stop = null;
  forgetKey();
  who = null;
  $("whoami").textContent = "";
  $("signin").hidden = false;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("page").hidden = true;
  $("page").replaceChildren();
  $("signin-key").value = "";
  $("signin-key").focus();
}

function show() {
  if (!who) return;
  if (stop) stop();
  stop = null;
  let name = location.hash.slice(1) || "overview";
  if (!(name in PAGES)) name = "overview";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = $("page");
  root.replaceChildren();
  root.dataset.page = name;
  delete root.dataset.ready;
  const result = PAGES[name].render(root, who);
  Promise.resolve(result).then((cleanup) => {
    const current = root.dataset.page === name;
    if (typeof cleanup === "function") {
      if (current) stop = cleanup; else cleanup();
    }
    if (current) root.dataset.ready = "true"; // its first load is on the page
  }).catch((err) => {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = err.message || String(err);
    root.append(p);
  });
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("signin-key");
  $("signin-error").textContent = "";
  try {
    await signIn(input.value.trim());
    input.value = "";
  } catch (err) {
    $("signin-error").textContent = err.message || String(err);
  }
});
$("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", show);

if (hasKey()) {
  signIn(storedKey()).catch(() => signOut());
}
