// Calls: the CDR viewer (filters, paging, totals, CSV export), one call with its
// legs, cost and SIP ladder, and the live calls with their hang-up button.
import {
  act, api, clear, download, enc, errorBox, fields, formValues, h, input, isCurrent, onLeave, pct, routeLink, saveBlob,
  section, seconds, session, table, time,
} from "../lib.js";

const DISPOSITIONS = ["answered", "busy", "no_answer", "cancelled", "failed", "rejected_credit"];
const FILTERS = ["from", "to", "account", "caller", "callee", "disposition", "gateway", "limit"];

export async function cdrsView(main, _params, query, gen) {
  const admin = session().role === "admin";
  const filters = h("form", { id: "cdr-filters", class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    const q = new URLSearchParams(Object.entries(v).filter(([, x]) => x));
    location.hash = `#/cdrs?${q}`;
  } },
  input("From", { name: "from", value: query.from || "", placeholder: "2026-12-01" }),
  input("To", { name: "to", value: query.to || "", placeholder: "2026-12-07T12:00" }),
  admin ? input("Account", { name: "account", value: query.account || "", placeholder: "user@domain" }) : null,
  input("Caller", { name: "caller", value: query.caller || "" }),
  input("Callee", { name: "callee", value: query.callee || "" }),
  h("label", {}, h("span", {}, "Disposition"), h("select", { name: "disposition" },
    h("option", { value: "" }, "any"),
    DISPOSITIONS.map((d) => h("option", { value: d, selected: query.disposition === d }, d)))),
  input("Gateway", { name: "gateway", value: query.gateway || "" }),
  input("Per page", { name: "limit", type: "number", min: 1, max: 1000, value: query.limit || "50" }),
  h("button", { type: "submit", id: "cdr-search" }, "Search"));

  const q = Object.fromEntries(FILTERS.filter((k) => query[k]).map((k) => [k, query[k]]));
  q.limit = q.limit || 50;
  if (query.cursor) q.cursor = query.cursor;
  const page = await api("GET", "/v1/cdrs", { query: q });
  if (!isCurrent(gen)) return;
  const items = page.items;
  const answered = items.filter((c) => c.disposition === "answered");
  const totalMs = answered.reduce((a, c) => a + c.duration_ms, 0);
  const totals = h("p", { class: "hint", id: "cdr-range-totals" });
  showRangeTotals(totals, q);
  const next = page.next_cursor
    ? routeLink(`/cdrs?${new URLSearchParams({ ...q, cursor: page.next_cursor })}`, "Next page →", { id: "cdr-next" })
    : null;
  // on a phone the filters fold away (open when some are set)
  const wide = window.matchMedia("(min-width: 641px)").matches;
  const filtered = FILTERS.some((k) => k !== "limit" && query[k]);
  clear(main,
    h("h1", {}, "Calls"),
    h("details", { class: "fold", open: wide || filtered }, h("summary", {}, "Filters"), filters),
    h("div", { class: "toolbar" },
      h("span", { id: "cdr-totals" }, `${items.length} calls on this page · ${answered.length} answered · `
        + `${seconds(totalMs)} talk time`),
      h("button", { type: "button", id: "cdr-refresh", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) },
        "Refresh"),
      h("button", { type: "button", id: "cdr-export", onclick: () => exportAll(q, items) }, "Export CSV"),
      query.cursor ? routeLink(`/cdrs?${new URLSearchParams(Object.fromEntries(Object.entries(q).filter(([k]) => k !== "cursor")))}`,
        "← First page") : null,
      next),
    totals,
    table([
      { label: "Setup", value: (c) => routeLink(`/cdrs/${c.cdr_id}`, time(c.setup_ms), { class: "cdr-link" }) },
      { label: "Account", value: (c) => c.account },
      { label: "Caller", value: (c) => c.caller_number || c.caller_uri },
      { label: "Dialled", value: (c) => c.dialled_number || c.dialled },
      { label: "Disposition", value: (c) => h("span", { class: `disp ${c.disposition}` }, c.disposition) },
      { label: "SIP", value: (c) => `${c.sip_code} ${c.sip_reason}` },
      { label: "Duration", value: (c) => seconds(c.duration_ms), class: "num" },
      { label: "Gateway", value: (c) => c.gateway },
      { label: "Hang-up", value: (c) => c.hangup_by },
    ], items, { empty: "No calls match.", rowAttrs: (c) => ({ "data-call-id": c.call_id, "data-cdr-id": c.cdr_id }) }));
}

const CSV_COLUMNS = ["cdr_id", "call_id", "setup_at", "answer_at", "end_at", "account", "caller_number", "caller_ip",
  "dialled_number", "disposition", "sip_code", "sip_reason", "duration_ms", "billable_s", "pdd_ms", "gateway",
  "hangup_by", "hangup_reason"];

// Totals over every call of the filter (all pages) from /v1/stats; it has no disposition filter
async function showRangeTotals(where, q) {
  const query = Object.fromEntries(["from", "to", "account", "caller", "callee", "gateway"]
    .filter((k) => q[k]).map((k) => [k, q[k]]));
  try {
    const rows = (await api("GET", "/v1/stats", { query: { ...query, period: "month" } })).rows;
    const sum = (k) => rows.reduce((a, r) => a + r[k], 0);
    const attempts = sum("attempts"), answered = sum("answered");
    const talk = rows.reduce((a, r) => a + (r.acd_s || 0) * r.answered, 0);
    clear(where, `All pages${q.disposition ? " (any disposition)" : ""}: ${attempts} attempts, ${answered} answered`
      + (attempts ? ` (ASR ${pct(answered / attempts)})` : "") + (answered ? `, ACD ${(talk / answered).toFixed(1)} s` : ""));
  } catch (err) {
    clear(where, errorBox(err));
  }
}

// Every call of the filter (up to 10 000, 1 000 a request), as CSV
async function exportAll(q, firstPage) {
  const items = [];
  let cursor = null;
  do {
    const page = await api("GET", "/v1/cdrs", { query: { ...q, cursor, limit: 1000 } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 10000);
  exportCsv(items.length ? items : firstPage);
}

function exportCsv(items) {
  const quote = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    // a leading = + - @ would be a formula in a spreadsheet: quote it as text
    const safe = /^[=+\-@\t\r]/.test(s) ? "'" + s : s;
    return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
  };
  const lines = [CSV_COLUMNS.join(","), ...items.map((c) => CSV_COLUMNS.map((k) => quote(c[k])).join(","))];
  saveBlob(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }), "calls.csv");
}

export async function cdrDetailView(main, { id }, _query, gen) {
  const call = await api("GET", `/v1/cdrs/${enc(id)}`);
  if (!isCurrent(gen)) return;
  const cost = h("div", { id: "cdr-cost" }, "…");
  const ladder = h("div", { id: "cdr-ladder" });
  clear(main,
    h("h1", {}, "Call ", h("code", {}, call.call_id)),
    section("Summary", fields([
      ["Account", call.account], ["Caller", `${call.caller_uri} (${call.caller_ip})`], ["Dialled", call.dialled],
      ["Disposition", `${call.disposition} — ${call.sip_code} ${call.sip_reason}`],
      ["Setup", time(call.setup_ms)], ["Answer", time(call.answer_ms)], ["End", time(call.end_ms)],
      ["Duration", seconds(call.duration_ms)], ["Billable", `${call.billable_s} s`], ["PDD", `${call.pdd_ms} ms`],
      ["Hang-up", `${call.hangup_by} ${call.hangup_reason}`], ["Gateways", call.gateways.join(", ")],
      ["Media relay", call.media_relay || "not relayed"],
    ]), h("h3", {}, "Cost"), cost),
    section("Legs", table([
      { label: "Leg", value: (l) => l.leg, class: "num" },
      { label: "Cause", value: (l) => l.leg_cause },
      { label: "Target", value: (l) => l.target || l.callee_uri },
      { label: "Gateway", value: (l) => l.gateway },
      { label: "Result", value: (l) => `${l.sip_code} ${l.sip_reason}` },
      { label: "Disposition", value: (l) => l.disposition },
      { label: "Duration", value: (l) => seconds(l.duration_ms), class: "num" },
    ], call.legs_detail)),
    section("SIP ladder", ladder));
  showCost(cost, call);
  if (call.trace_url) {
    api("GET", call.trace_url).then((t) => clear(ladder,
      h("button", { type: "button", class: "link", id: "pcap", onclick: () => download(call.trace_url,
        { format: "pcap" }, "trace.pcap") }, `Download pcap (${t.messages.length} messages)`),
      h("pre", { class: "ladder" }, t.ladder.join("\n"))))
      .catch((err) => clear(ladder, errorBox(err)));
  } else {
    clear(ladder, h("p", { class: "empty" }, "No SIP messages were captured for this call (docs/trace.md)."));
  }
}

// What the ledger charged for this call: its debits, found by cdr_id in the account's history
async function showCost(where, call) {
  if (!call.account) return clear(where, "no account: not billed");
  try {
    const page = await api("GET", `/v1/accounts/${enc(call.account)}/ledger`,
      { query: { kind: "debit", from: call.setup_ms, limit: 1000 } });
    const debits = page.items.filter((e) => e.cdr_id === call.cdr_id);
    if (!debits.length) return clear(where, "no debit (not billed, or not yet)");
    const total = debits.reduce((a, e) => a + Number(e.amount), 0);
    clear(where, `${total.toFixed(4)} ${debits[0].currency} in ${debits.length} debit(s), plan ${debits[0].plan}, `
      + `rate ${debits[0].rate_name || debits[0].prefix}`);
  } catch (err) {
    clear(where, err.status === 404 ? "no billing account" : errorBox(err));
  }
}

export async function liveCallsView(main, _params, _query, gen) {
  const admin = session().role === "admin";
  const list = h("div", { id: "live-list" });
  const status = h("div", { id: "live-status" });
  const armed = new Set();         // calls whose button was clicked once (kept across refreshes)
  clear(main, h("h1", {}, "Live calls"), h("p", { class: "hint" }, "Refreshed every 2 s."), status, list);
  const draw = async () => {
    let page;
    try {
      page = await api("GET", "/v1/calls");
    } catch (err) {
      if (isCurrent(gen)) clear(list, errorBox(err));
      return;
    }
    if (!isCurrent(gen)) return;
    clear(list, h("p", { class: "hint" }, `${page.items.length} calls on ${page.workers} worker(s)`
      + (page.truncated ? " (truncated)" : "")),
    table([
      { label: "Call-ID", value: (c) => h("code", {}, c.call_id) },
      { label: "State", value: (c) => h("span", { class: `state ${c.state}` }, c.state) },
      { label: "Account", value: (c) => c.account },
      { label: "From", value: (c) => c.caller },
      { label: "To", value: (c) => c.callee },
      { label: "Gateway", value: (c) => c.gateway },
      { label: "Started", value: (c) => time(c.started_ms) },
      { label: "Duration", value: (c) => seconds(c.duration_ms), class: "num" },
      admin ? { label: "", value: (c) => hangupButton(c, status, armed) } : null,
    ].filter(Boolean), page.items, { empty: "No calls in progress.", rowAttrs: (c) => ({ "data-call-id": c.call_id }) }));
  };
  await draw();
  const timer = setInterval(draw, 2000);
  onLeave(() => clearInterval(timer));
}

// Two clicks: "Hang up", then "Confirm" (no blocking dialog)
function hangupButton(call, status, armed) {
  const button = h("button", { type: "button", class: "danger hangup", onclick: () => {
    if (!armed.has(call.call_id)) {
      armed.add(call.call_id);
      button.textContent = "Confirm hang-up";
      return;
    }
    button.disabled = true;
    act(status, async () => {
      const r = await api("DELETE", `/v1/calls/${enc(call.call_id)}`);
      return `Hang-up sent for ${r.call.call_id} (command ${r.command_id})`;
    });
  } }, armed.has(call.call_id) ? "Confirm hang-up" : "Hang up");
  return button;
}
