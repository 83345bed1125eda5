// Provisioning (the CLI's `user`, `domain`, `gateway` ... as pages): one generic
// list / create / delete / test page per resource of the REST provisioning API
// (docs/api.md), each described by a spec below -- the rules stay in the API.
import { act, api, clear, enc, formValues, h, input, isCurrent, routeLink, section, table } from "../lib.js";

const list = (v) => (v ? v.split(",").map((x) => x.trim()).filter(Boolean) : []);
const num = (v, dflt) => (v === "" || v === undefined ? dflt : Number(v));
const orNull = (v) => (v === "" ? null : v);
const when = (iso) => (iso || "").replace("T", " ").slice(0, 19);

// key: URL of the page; path: the REST collection; columns: [label, row => text];
// create: the form's fields; body: form values -> request body; item: row -> its URL;
// actions: more forms (test a number, change a password): method, path and body or query
// from the form's values, show: the answer -> lines.
export const PROVISIONING = [
  { key: "domains", label: "Domains", path: "/v1/domains", columns: [["Domain", (r) => r.domain]],
    create: [{ name: "domain", label: "Domain", required: true, max: 255, placeholder: "example.test" }],
    body: (v) => ({ domain: v.domain }), item: (r) => `/v1/domains/${enc(r.domain)}` },
  { key: "users", label: "Subscribers", path: "/v1/users", filter: { name: "domain", label: "Domain" },
    columns: [["Address", (r) => r.address], ["Password storage", (r) => r.storage], ["Created", (r) => when(r.created_at)]],
    create: [{ name: "address", label: "User (user@domain)", required: true, max: 330 },
      { name: "password", label: "Password", type: "password", required: true, max: 128 },
      { name: "ha1_only", label: "keep hashes only", type: "checkbox" }],
    body: (v) => ({ address: v.address, password: v.password, ha1_only: v.ha1_only }),
    item: (r) => `/v1/users/${enc(r.address)}`,
    actions: [{ label: "Change a password", id: "user-passwd", method: "PATCH", fields: [
      { name: "address", label: "User (user@domain)", required: true, max: 330 },
      { name: "password", label: "New password", type: "password", required: true, max: 128 }],
    path: (v) => `/v1/users/${enc(v.address)}`, body: (v) => ({ password: v.password }),
    show: (r) => [`Password of ${r.address} changed (${r.storage})`] }] },
  { key: "aliases", label: "Aliases", path: "/v1/aliases",
    columns: [["Alias", (r) => r.alias], ["Target", (r) => r.target]],
    create: [{ name: "alias", label: "Alias (user@domain)", required: true, max: 330 },
      { name: "target", label: "Target (user@domain)", required: true, max: 330 }],
    body: (v) => ({ alias: v.alias, target: v.target }), item: (r) => `/v1/aliases/${enc(r.alias)}` },
  { key: "gateways", label: "Gateways", path: "/v1/gateways",
    columns: [["Name", (r) => r.name], ["URI", (r) => r.uri], ["Transport", (r) => r.transport],
      ["Probe", (r) => r.probe], ["State", (r) => h("span", { class: `probe ${r.probe_state}` }, r.probe_state)],
      ["Strip / prefix", (r) => `${r.strip} / ${r.prefix}`]],
    create: [{ name: "name", label: "Name", required: true, max: 64 },
      { name: "address", label: "Address (host:port)", required: true, max: 255 },
      { name: "transport", label: "Transport", options: ["udp", "tcp", "tls"] },
      { name: "strip", label: "Strip digits", type: "number", min: 0 },
      { name: "prefix", label: "Prefix", max: 64 },
      { name: "probe", label: "Probe", options: ["never", "always", "when-down"] },
      { name: "attrs", label: "Attributes", max: 255 }],
    body: (v) => ({ name: v.name, address: v.address, transport: v.transport, strip: num(v.strip, 0), prefix: v.prefix,
      probe: v.probe, attrs: v.attrs }),
    item: (r) => `/v1/gateways/${enc(r.name)}` },
  { key: "carriers", label: "Carriers", path: "/v1/carriers",
    columns: [["Name", (r) => r.name], ["Gateways", (r) => r.gateways.join(", ")],
      ["Weights", (r) => (r.weights || []).join(", ")]],
    create: [{ name: "name", label: "Name", required: true, max: 64 },
      { name: "gateways", label: "Gateways (comma separated)", required: true },
      { name: "weights", label: "Weights (optional)" }],
    body: (v) => ({ name: v.name, gateways: list(v.gateways), weights: v.weights ? list(v.weights).map(Number) : null }),
    item: (r) => `/v1/carriers/${enc(r.name)}` },
  { key: "routes", label: "Routes", path: "/v1/routes",
    columns: [["#", (r) => r.id], ["Prefix", (r) => r.prefix || "*"], ["Gateways", (r) => r.gateways.join(", ")],
      ["Groups", (r) => (r.groups || []).join(", ")], ["Priority", (r) => r.priority],
      ["When", (r) => [r.weekdays, r.time, r.weekdays || r.time ? r.tz : ""].filter(Boolean).join(" ")]],
    create: [{ name: "prefix", label: "Prefix", max: 64 },
      { name: "gateways", label: "Gateways / #carriers", required: true },
      { name: "groups", label: "Groups", placeholder: "default" },
      { name: "priority", label: "Priority", type: "number" },
      { name: "time", label: "Time (08:00-18:00)" }, { name: "weekdays", label: "Weekdays (1-5)" }],
    body: (v) => ({ prefix: v.prefix, gateways: list(v.gateways), groups: v.groups ? list(v.groups) : ["default"],
      priority: num(v.priority, 0), time: orNull(v.time), weekdays: orNull(v.weekdays) }),
    item: (r) => `/v1/routes/${r.id}`,
    actions: [{ label: "Test a number", id: "test-box", fields: [{ name: "number", label: "Number", required: true },
      { name: "group", label: "Group", placeholder: "default" }],
    path: () => "/v1/routes/test", query: (v) => ({ number: v.number, group: v.group || "default" }),
    show: (r) => r.routes.map((x) => `${x.gateway}${x.carrier ? ` (carrier ${x.carrier})` : ""} → ${x.uri}`) }] },
  { key: "dialplans", label: "Dialplans", path: "/v1/dialplans",
    columns: [["Dialplan", (r) => r.dpid], ["#", (r) => r.id], ["Priority", (r) => r.priority],
      ["Match", (r) => r.match], ["Replace", (r) => r.repl], ["Attributes", (r) => r.attrs]],
    create: [{ name: "dpid", label: "Dialplan id", type: "number", required: true, min: 0 },
      { name: "match", label: "Match (regex)", required: true, max: 512 },
      { name: "repl", label: "Replacement", max: 512 }, { name: "priority", label: "Priority", type: "number" }],
    createPath: (v) => `/v1/dialplans/${enc(v.dpid)}/rules`,
    body: (v) => ({ match: v.match, repl: orNull(v.repl), priority: num(v.priority, 0) }),
    item: (r) => `/v1/dialplans/${r.dpid}/rules/${r.id}`,
    actions: [{ label: "Test a number", id: "test-box", fields: [{ name: "dpid", label: "Dialplan id", type: "number", required: true },
      { name: "number", label: "Number", required: true }],
    path: (v) => `/v1/dialplans/${enc(v.dpid)}/test`, query: (v) => ({ number: v.number }),
    show: (r) => [`${r.number} → ${r.result} (rule #${r.rule.id})`] }] },
  { key: "blacklists", label: "Blacklists", path: "/v1/blacklists",
    columns: [["List", (r) => r.list], ["Prefix", (r) => r.prefix], ["Exact", (r) => (r.exact ? "yes" : "")],
      ["Answer", (r) => `${r.code} ${r.reason}`]],
    create: [{ name: "list", label: "List", placeholder: "default" }, { name: "prefix", label: "Prefix", required: true },
      { name: "exact", label: "exact number", type: "checkbox" }, { name: "code", label: "SIP code", type: "number" },
      { name: "reason", label: "Reason" }],
    body: (v) => ({ list: v.list || "default", prefix: v.prefix, exact: v.exact, code: num(v.code, 403),
      reason: v.reason || "Forbidden" }),
    item: (r) => `/v1/blacklists/${enc(r.list)}/entries/${enc(r.prefix)}?exact=${r.exact}`,
    actions: [{ label: "Test a number", id: "test-box", fields: [{ name: "list", label: "List", placeholder: "default" },
      { name: "number", label: "Number", required: true }],
    path: (v) => `/v1/blacklists/${enc(v.list || "default")}/test`, query: (v) => ({ number: v.number }),
    show: (r) => [r.blacklisted ? `blacklisted by ${r.entry.prefix} (${r.entry.code} ${r.entry.reason})` : "not blacklisted"] }] },
  { key: "trusted", label: "Trusted sources", path: "/v1/trusted",
    columns: [["CIDR", (r) => r.cidr], ["Protocol", (r) => r.proto || "any"], ["Tag", (r) => r.tag]],
    create: [{ name: "cidr", label: "CIDR", required: true, placeholder: "192.0.2.0/24" },
      { name: "proto", label: "Protocol", options: ["", "udp", "tcp"] }, { name: "tag", label: "Tag" }],
    body: (v) => ({ cidr: v.cidr, proto: orNull(v.proto), tag: v.tag }),
    item: (r) => `/v1/trusted/${r.cidr.split("/").map(enc).join("/")}${r.proto ? `?proto=${r.proto}` : ""}` },
  { key: "groups", label: "Groups", path: "/v1/groups/members",
    columns: [["Group", (r) => r.group], ["Member", (r) => r.address]],
    create: [{ name: "group", label: "Group", required: true, max: 64 },
      { name: "address", label: "Member (user@domain)", required: true, max: 330 }],
    body: (v) => ({ group: v.group, address: v.address }),
    item: (r) => `/v1/groups/members/${enc(r.group)}/${enc(r.address)}`,
    actions: [{ label: "Require a group for a prefix", method: "PUT", fields: [
      { name: "prefix", label: "Dialled prefix", required: true, max: 32 },
      { name: "group", label: "Group", required: true, max: 64 }],
    path: (v) => `/v1/groups/requirements/${enc(v.prefix)}`, body: (v) => ({ group: v.group }),
    show: (r) => [`Numbers starting ${r.prefix} now need group ${r.group}` + (r.previous ? ` (was ${r.previous})` : "")] }] },
  { key: "forwarding", label: "Forwarding", path: "/v1/forwarding",
    columns: [["User", (r) => r.address], ["Always", (r) => r.always], ["Busy", (r) => r.busy],
      ["No answer", (r) => r.no_answer && `${r.no_answer} (${r.no_answer_timeout || "default"} s)`],
      ["Unavailable", (r) => r.unavailable]],
    create: [{ name: "address", label: "User (user@domain)", required: true },
      { name: "always", label: "Always" }, { name: "busy", label: "Busy" }, { name: "no_answer", label: "No answer" },
      { name: "unavailable", label: "Unavailable" }, { name: "no_answer_timeout", label: "No-answer s", type: "number" }],
    method: "PATCH", createPath: (v) => `/v1/forwarding/${enc(v.address)}`,
    body: (v) => Object.fromEntries(["always", "busy", "no_answer", "unavailable"].filter((k) => v[k]).map((k) => [k, v[k]])
      .concat(v.no_answer_timeout ? [["no_answer_timeout", Number(v.no_answer_timeout)]] : [])),
    item: (r) => `/v1/forwarding/${enc(r.address)}` },
  { key: "media-servers", label: "Media servers", path: "/v1/media-servers",
    columns: [["Name", (r) => r.name], ["URI", (r) => r.uri]],
    create: [{ name: "name", label: "Name", required: true, max: 64 },
      { name: "uri", label: "URI", required: true, placeholder: "sip:vm@192.0.2.50:5070" }],
    body: (v) => ({ name: v.name, uri: v.uri }), item: (r) => `/v1/media-servers/${enc(r.name)}` },
  { key: "tokens", label: "API tokens", path: "/v1/tokens",
    columns: [["Id", (r) => r.id], ["Role", (r) => r.role], ["Account", (r) => r.account], ["Name", (r) => r.name],
      ["Created", (r) => when(r.created_at)]],
    create: [{ name: "role", label: "Role", options: ["account", "admin"] },
      { name: "account", label: "Account (user@domain)" }, { name: "name", label: "Name" }],
    body: (v) => ({ role: v.role, account: v.role === "admin" ? "" : v.account, name: v.name }),
    created: (r) => `Token (shown once, copy it now): ${r.token}`,
    item: (r) => `/v1/tokens/${enc(r.id)}` },
];

const PAGE = 100;

export async function provisioningIndex(main) {
  clear(main, h("h1", {}, "Provisioning"),
    h("ul", { class: "tiles" }, PROVISIONING.map((p) => h("li", {}, routeLink(`/p/${p.key}`, p.label)))));
}

// a form field; the add form's fields have ids (f-<name>), the action forms' do not (no duplicates)
function field(f, withId = true) {
  if (f.options) {
    return h("label", {}, h("span", {}, f.label), h("select", { name: f.name },
      f.options.map((o) => h("option", { value: o }, o || "any"))));
  }
  if (f.type === "checkbox") return h("label", { class: "check" }, h("input", { type: "checkbox", name: f.name }), f.label);
  return input(f.label, { name: f.name, id: withId ? `f-${f.name}` : null, type: f.type || "text", required: f.required, maxlength: f.max,
    min: f.min, placeholder: f.placeholder, autocomplete: f.type === "password" ? "new-password" : null });
}

export function provisioningView(spec) {
  return async (main, _params, query, gen) => {
    const offset = Number(query.offset || 0);
    const q = { limit: PAGE, offset };
    if (spec.filter && query[spec.filter.name]) q[spec.filter.name] = query[spec.filter.name];
    const page = await api("GET", spec.path, { query: q });
    if (!isCurrent(gen)) return;
    const out = h("div", { id: "prov-result" });
    const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
    const tabs = h("nav", { class: "tabs" }, PROVISIONING.map((p) => h("a", { href: `#/p/${p.key}`,
      class: p.key === spec.key ? "active" : null }, p.label)));
    const deleteButton = (r) => {
      const b = h("button", { type: "button", class: "link danger", onclick: () => {
        if (b.dataset.armed !== "1") {
          b.dataset.armed = "1";
          b.textContent = "confirm delete";
          return;
        }
        act(out, async () => { await api("DELETE", spec.item(r)); reload(); });
      } }, "delete");
      return b;
    };
    const more = page.total > offset + page.items.length
      ? routeLink(`/p/${spec.key}?offset=${offset + PAGE}`, "Next page →") : null;
    clear(main, tabs, h("h1", {}, spec.label),
      h("p", { class: "hint" }, `${page.total} in all`), more,
      table([...spec.columns.map(([label, value]) => ({ label, value })), { label: "", value: deleteButton }],
        page.items, { empty: "None yet." }),
      section("Add", h("form", { id: `${spec.key}-new`, class: "inline", onsubmit: (ev) => {
        ev.preventDefault();
        const v = formValues(ev.target);
        act(out, async () => {
          const r = await api(spec.method || "POST", spec.createPath ? spec.createPath(v) : spec.path, { body: spec.body(v) });
          if (spec.created) return spec.created(r);
          reload();
        });
      } }, spec.create.map((f) => field(f)), h("button", { type: "submit", id: `${spec.key}-add` }, "Add"))),
      (spec.actions || []).map(actionBox),
      out);
  };
}

function actionBox(action) {
  const result = h("div", { class: "action-result" });
  return section(action.label, h("form", { class: "inline", id: action.id, onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    act(result, async () => {
      const r = await api(action.method || "GET", action.path(v),
        action.body ? { body: action.body(v) } : { query: action.query(v) });
      clear(result, h("ul", { class: "test-lines" }, action.show(r).map((line) => h("li", {}, line))));
    });
  } }, action.fields.map((f) => field(f, false)), h("button", { type: "submit" }, action.method ? "Save" : "Test")), result);
}
