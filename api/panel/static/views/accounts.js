// Billing accounts: the list (admin), and one account: balance and
// reservations, top-up with an idempotency key, block/unblock, plan, ledger
// history and statement / invoice downloads.  An account login sees only its own.
import {
  act, api, clear, download, enc, fields, formValues, h, idemKey, input, isCurrent, routeLink, section, session, table,
  time,
} from "../lib.js";

export async function accountsView(main, _params, _query, gen) {
  const s = session();
  if (s.role !== "admin") {
    location.replace(`#/accounts/${enc(s.account)}`);
    return;
  }
  const page = await api("GET", "/v1/accounts");
  if (!isCurrent(gen)) return;
  const out = h("div", {});
  clear(main, h("h1", {}, "Accounts"),
    table([
      { label: "Account", value: (a) => routeLink(`/accounts/${enc(a.id)}`, a.id, { class: "account-link" }) },
      { label: "Name", value: (a) => a.name },
      { label: "Kind", value: (a) => a.kind },
      { label: "Status", value: (a) => h("span", { class: `status ${a.status}` }, a.status) },
      { label: "Currency", value: (a) => a.currency },
      { label: "Plan", value: (a) => a.plan || "(default)" },
    ], page.items, { empty: "No billing accounts yet." }),
    section("New account",
      h("form", { id: "account-new", class: "inline", onsubmit: (ev) => {
        ev.preventDefault();
        const v = formValues(ev.target);
        act(out, async () => {
          const body = { id: v.id, kind: v.kind, name: v.name };
          if (v.currency) body.currency = v.currency;
          if (v.credit_limit) body.credit_limit = v.credit_limit;
          await api("POST", "/v1/accounts", { body });
          location.hash = `#/accounts/${enc(v.id)}`;
        });
      } },
      input("User (user@domain)", { name: "id", required: true, maxlength: 255 }),
      h("label", {}, h("span", {}, "Kind"), h("select", { name: "kind" },
        h("option", { value: "prepaid" }, "prepaid"), h("option", { value: "postpaid" }, "postpaid"))),
      input("Currency", { name: "currency", placeholder: "default", maxlength: 3 }),
      input("Credit limit", { name: "credit_limit", placeholder: "postpaid: 100.00" }),
      input("Name", { name: "name", maxlength: 255 }),
      h("button", { type: "submit" }, "Create")), out));
}

export async function accountView(main, { account }, query, gen) {
  const admin = session().role === "admin";
  const path = `/v1/accounts/${enc(account)}`;
  const [info, bal] = await Promise.all([api("GET", path), api("GET", `${path}/balance`)]);
  if (!isCurrent(gen)) return;
  const out = h("div", { id: "account-result" });
  const ledger = h("div", { id: "ledger" });
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  clear(main,
    h("h1", {}, account, " ", h("span", { class: `status ${info.status}`, id: "account-status" }, info.status)),
    section("Balance", fields([
      ["Balance", h("strong", { id: "balance" }, `${bal.balance} ${bal.currency}`)],
      ["Available", h("span", { id: "available" }, `${bal.available} ${bal.currency}`)],
      ["Reserved (live calls)", `${bal.reserved} ${bal.currency}`],
      ["Held", `${bal.held} ${bal.currency}`],
      ["Kind", bal.kind + (bal.kind === "postpaid" ? `, credit limit ${bal.credit_limit}` : "")],
      ["Plan", info.plan || "(default plan)"],
      ["Source", bal.live ? "billing service (live)" : "ledger (billing service not running)"],
    ]), bal.active_calls.length ? table([
      { label: "Call", value: (c) => c.call_id }, { label: "Number", value: (c) => c.number },
      { label: "Answered", value: (c) => time(c.answer_ms) }, { label: "Reserved", value: (c) => c.reserved },
    ], bal.active_calls) : null),
    admin ? section("Manage", topupForm(path, out, reload), h("div", { class: "row" },
      h("button", { type: "button", id: info.status === "blocked" ? "unblock" : "block",
        class: info.status === "blocked" ? null : "danger", onclick: () => act(out, async () => {
          await api("PATCH", path, { body: { status: info.status === "blocked" ? "active" : "blocked" } });
          reload();
        }) }, info.status === "blocked" ? "Unblock" : "Block"),
      await planForm(path, info, out, reload)), out) : null,
    section("Statements and invoices", reportsForm(path)),
    section("Ledger", h("button", { type: "button", id: "ledger-refresh", class: "link",
      onclick: () => showLedger(ledger, path, query.cursor, account) }, "Refresh"), ledger));
  showLedger(ledger, path, query.cursor, account);
}

function topupForm(path, out, reload) {
  // the key is made once per form: a double submit (or a retry after a timeout) is replayed, not paid twice
  const key = h("input", { type: "hidden", name: "key", value: idemKey() });
  return h("form", { id: "topup", class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    act(out, async () => {
      const r = await api("POST", `${path}/topups`, { body: { amount: v.amount, note: v.note },
        headers: { "Idempotency-Key": v.key } });
      reload();
      return `${r.replayed ? "Already done (same key): " : "Topped up: "}${r.event.amount}; balance ${r.balance}`;
    });
  } },
  input("Top-up amount", { name: "amount", id: "topup-amount", required: true, inputmode: "decimal",
    pattern: "\\d+(\\.\\d{1,6})?", placeholder: "10.00" }),
  input("Note", { name: "note", maxlength: 500 }),
  key,
  h("button", { type: "submit", id: "topup-submit" }, "Top up"));
}

async function planForm(path, info, out, reload) {
  let plans = [];
  try { plans = (await api("GET", "/v1/rate-plans")).items; } catch { /* shown as no choice */ }
  return h("form", { id: "plan-assign", class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    act(out, async () => {
      if (v.plan) await api("PUT", `${path}/plan`, { body: { plan: v.plan } });
      else if (info.plan) await api("DELETE", `${path}/plan`);
      reload();
    });
  } },
  h("label", {}, h("span", {}, "Rate plan"), h("select", { name: "plan" },
    h("option", { value: "" }, "(default plan)"),
    plans.map((p) => h("option", { value: p.name, selected: p.name === info.plan }, p.name)))),
  h("button", { type: "submit" }, "Assign"));
}

function reportsForm(path) {
  const out = h("div", {});
  const month = new Date().toISOString().slice(0, 7);
  return h("form", { id: "reports", class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    act(out, () => download(`${path}/reports/${enc(v.report)}`, { month: v.month, format: v.format },
      `${v.report}.${v.format}`));
  } },
  h("label", {}, h("span", {}, "Report"), h("select", { name: "report" },
    ["statement", "invoice", "destinations", "gateways"].map((r) => h("option", { value: r }, r)))),
  input("Month", { name: "month", type: "month", value: month, required: true }),
  h("label", {}, h("span", {}, "Format"), h("select", { name: "format" },
    ["csv", "xlsx", "parquet"].map((f) => h("option", { value: f }, f)))),
  h("button", { type: "submit" }, "Download"), out);
}

async function showLedger(where, path, cursor, account) {
  await act(where, async () => {
    const page = await api("GET", `${path}/ledger`, { query: { limit: 50, cursor } });
    clear(where, table([
      { label: "Time", value: (e) => time(e.ts_ms) },
      { label: "Kind", value: (e) => e.kind },
      { label: "Amount", value: (e) => `${e.amount} ${e.currency}`, class: "num" },
      { label: "Balance change", value: (e) => e.balance_delta, class: "num" },
      { label: "Call / note", value: (e) => e.cdr_id ? routeLink(`/cdrs/${e.cdr_id}`, e.number || e.call_id) : e.note },
      { label: "Key", value: (e) => e.key },
    ], page.items, { empty: "No ledger events yet." }),
    page.next_cursor ? routeLink(`/accounts/${enc(account)}?cursor=${page.next_cursor}`, "Older →") : null);
  });
}
