// The panel's frame: the session, the navigation for its role, and the router
// (#/path?query -> a view).  Every view is an async function (main, params, query)
// that fills `main` from the REST API.
import { api, clear, errorBox, h, isCurrent, nextView, saveSession, session } from "./lib.js";
import { loginView } from "./views/login.js";
import { cdrDetailView, cdrsView, liveCallsView } from "./views/calls.js";
import { accountView, accountsView } from "./views/accounts.js";
import { ratesView, planView } from "./views/rates.js";
import { fraudView, metricsView, qualityView } from "./views/monitor.js";
import { PROVISIONING, provisioningIndex, provisioningView } from "./views/provisioning.js";

const ADMIN = "admin";
const ANY = "any";

// [pattern, view, who, nav label]: the first pattern that matches the path wins
const ROUTES = [
  ["/login", loginView, null],
  ["/", homeView, ANY],
  ["/cdrs", cdrsView, ANY, "Calls"],
  ["/cdrs/:id", cdrDetailView, ANY],
  ["/live", liveCallsView, ANY, "Live calls"],
  ["/accounts", accountsView, ANY, "Accounts"],
  ["/accounts/:account", accountView, ANY],
  ["/rates", ratesView, ADMIN, "Rates"],
  ["/rates/:plan", planView, ADMIN],
  ["/quality", qualityView, ANY, "Quality"],
  ["/metrics", metricsView, ADMIN, "Metrics"],
  ["/fraud", fraudView, ADMIN, "Fraud"],
  ["/p", provisioningIndex, ADMIN, "Provisioning"],
  ...PROVISIONING.map((p) => [`/p/${p.key}`, provisioningView(p), ADMIN]),
];

function match(path) {
  for (const [pattern, view, who, label] of ROUTES) {
    const names = [];
    const re = new RegExp("^" + pattern.replace(/:(\w+)/g, (_, n) => { names.push(n); return "([^/]+)"; }) + "$");
    const m = path.match(re);
    if (m) return { view, who, label, params: Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) };
  }
  return null;
}

async function homeView(main) {
  const s = session();
  location.replace(s.role === ADMIN ? "#/metrics" : "#/cdrs");
}

function renderFrame(path) {
  const s = session();
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!s) {
    clear(nav);
    clear(who);
    return;
  }
  const items = ROUTES.filter(([, , w, label]) => label && (w === ANY || s.role === w));
  clear(nav, items.map(([pattern, , , label]) => {
    const active = path === pattern || path.startsWith(pattern + "/");
    const text = s.role !== ADMIN && pattern === "/accounts" ? "My account" : label;
    const href = s.role !== ADMIN && pattern === "/accounts" ? `#/accounts/${encodeURIComponent(s.account)}` : "#" + pattern;
    return h("a", { href, class: active ? "active" : null, "data-nav": pattern.slice(1) }, text);
  }));
  clear(who,
    h("span", { class: "role", id: "whoami" }, s.role === ADMIN ? "admin" : s.account),
    h("button", { type: "button", class: "link", id: "logout", onclick: logout }, "Log out"));
}

async function logout() {
  try { await api("DELETE", "/v1/session"); } catch { /* ended anyway */ }
  saveSession(null);
  location.hash = "#/login";
}

async function route() {
  const [rawPath, rawQuery] = (location.hash.slice(1) || "/").split("?");
  const path = rawPath || "/";
  const query = Object.fromEntries(new URLSearchParams(rawQuery || ""));
  const gen = nextView();
  const main = document.getElementById("main");
  const found = match(path);
  const s = session();
  if (!s && path !== "/login") {
    location.replace("#/login");
    return;
  }
  renderFrame(path);
  if (!found) {
    clear(main, errorBox(new Error(`no page ${path}`)));
    return;
  }
  if (found.who === ADMIN && s.role !== ADMIN) {
    clear(main, h("div", { class: "error denied", role: "alert" }, h("strong", {}, "Access denied: "),
      "this page is for administrators"));
    return;
  }
  clear(main, h("p", { class: "empty" }, "Loading…"));
  document.title = `sipledger · ${found.label || path.split("/")[1] || "panel"}`;
  try {
    await found.view(main, found.params, query, gen);
  } catch (err) {
    if (isCurrent(gen)) clear(main, errorBox(err));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
