// The admin key and every call to the gateway's API. The key lives in this module (and in
// sessionStorage, so a reload in the same tab keeps the session); it is sent only as an
// Authorization header, never in a URL or a cookie, so cross-site requests carry no credential.

const STORE = "tidegate.console.key";
let key = sessionStorage.getItem(STORE);

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : null;
    super(error ? error.message : `The gateway answered ${status}.`);
    this.status = status;
    this.code = error ? error.code : null;
    this.param = error ? error.param : null;
  }
}

export function hasKey() { return Boolean(key); }
export function storedKey() { return key; }
export function setKey(value) { key = value; sessionStorage.setItem(STORE, value); }
export function forgetKey() { key = null; sessionStorage.removeItem(STORE); }

async function send(method, path, body, accept) {
  const headers = { Authorization: `Bearer ${key}` };
  if (accept) headers.Accept = accept;
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, data);
  }
  return response;
}

export async function api(method, path, body) {
  return (await send(method, path, body)).json();
}

export async function text(path) {
  return (await send("GET", path, undefined, "text/plain")).text();
}

export async function blob(path) {
  return (await send("GET", path)).blob();
}

/** A path with query parameters (empty values left out). */
export function query(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const qs = search.toString();
  return qs ? `${path}?${qs}` : path;
}

export const enc = encodeURIComponent;
