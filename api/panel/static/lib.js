// What every view uses: building DOM (never from HTML strings: everything the
// API returns is shown as text), calling the REST API with the session's
// bearer token, and a few formats.  No framework, no build step.

const SESSION_KEY = "sipledger.session";

export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return s && s.token && (!s.expires_ms || s.expires_ms > Date.now()) ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s) {
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

// h("a", {href: "#/x", class: "btn", onclick: fn}, "text", child, [more]) -> Element.
// Strings become text nodes; attributes are set one by one (no markup is parsed).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.body = body;
  }
}

// The one way to the server: /v1 with the bearer token.  A 401 ends the session.
export async function api(method, path, { query, body, headers, raw } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== "" && one !== null && one !== undefined) url.searchParams.append(k, one);
    }
  }
  const s = session();
  const init = { method, headers: { ...(headers || {}) } };
  if (s) init.headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) {
    if (typeof body === "string") init.body = body;
    else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(url, init);
  if (response.status === 401 && s && !path.endsWith("/v1/session")) {
    saveSession(null);
    location.hash = "#/login";
  }
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, describe(data, response), data);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

function describe(data, response) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  }
  return detail || `${response.status} ${response.statusText}`;
}

// A file the API sends (reports, exports): fetched with the token, saved by the browser.
export async function download(path, query, fallbackName) {
  const response = await api("GET", path, { query, raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || fallbackName;
  saveBlob(await response.blob(), name);
}

export function saveBlob(blob, name) {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// -- the view being shown -----------------------------------------------------------------------
// A view still loading when the user moves on must not draw over the next one;
// timers a view starts (live calls' refresh) stop when it is left.
let generation = 0;
let leaving = [];

export function nextView() {
  leaving.forEach((f) => f());
  leaving = [];
  return ++generation;
}

export function isCurrent(gen) {
  return gen === generation;
}

export function onLeave(fn) {
  leaving.push(fn);
}

// -- shapes every view shows ---------------------------------------------------------------------

export function errorBox(err) {
  const denied = err instanceof ApiError && (err.status === 403 || err.status === 404);
  const lines = err instanceof ApiError && err.body && Array.isArray(err.body.errors) ? err.body.errors : [];
  return h("div", { class: denied ? "error denied" : "error", role: "alert" },
    h("strong", {}, denied ? (err.status === 403 ? "Access denied: " : "Not found: ") : "Error: "),
    err.message || String(err),
    lines.length ? h("ul", { class: "line-errors" }, lines.map((l) => h("li", {}, l))) : null);
}

export function notice(text) {
  return h("div", { class: "notice", role: "status" }, text);
}

// table([{label, value: row => text|Node, class}], rows, {onrow}) -> a scrollable table
export function table(columns, rows, { empty = "nothing to show", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {},
        columns.map((c) => h("td", { class: c.class, "data-label": c.label }, cell(c.value(r)))))))));
}

function cell(v) {
  return v === null || v === undefined ? "" : v;
}

export function fields(pairs) {
  return h("dl", { class: "fields" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, cell(v))]));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), children);
}

// A labelled input; returns the <label> (the input is its last child)
export function input(label, attrs) {
  return h("label", {}, h("span", {}, label), h(attrs.tag || "input", { ...attrs, tag: null }));
}

export function formValues(form) {
  const out = {};
  for (const el of form.elements) if (el.name) out[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
  return out;
}

// Runs an async action from a form or button, showing its error (or result) in `where`
export async function act(where, fn) {
  clear(where);
  try {
    const text = await fn();
    if (text) clear(where, notice(text));
  } catch (err) {
    clear(where, errorBox(err));
  }
}

// -- formats -------------------------------------------------------------------------------------

export function time(ms) {
  if (!ms) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

export function seconds(ms) {
  if (!ms) return "0 s";
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

export function pct(ratio) {
  return ratio === null || ratio === undefined ? "" : `${(ratio * 100).toFixed(1)} %`;
}

export function idemKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "panel-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function routeLink(path, text, attrs = {}) {
  return h("a", { href: "#" + path, ...attrs }, text);
}

export function enc(s) {
  return encodeURIComponent(s);
}
