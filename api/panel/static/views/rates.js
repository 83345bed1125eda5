// Rates: plans, creating one, importing a CSV (all or nothing: every bad line
// is listed), and one plan's rates with its CSV export.  Plans are assigned
// to accounts on the account's page.
import { act, api, clear, download, enc, formValues, h, input, isCurrent, routeLink, section, table } from "../lib.js";

export async function ratesView(main, _params, _query, gen) {
  const page = await api("GET", "/v1/rate-plans");
  if (!isCurrent(gen)) return;
  const out = h("div", { id: "rates-result" });
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const csv = h("textarea", { name: "csv", id: "rates-csv", rows: 6, spellcheck: "false",
    placeholder: "plan,prefix,name,price_per_min,currency\nretail,49,Germany,0.0125,EUR" });
  const file = h("input", { type: "file", accept: ".csv,text/csv", onchange: async () => {
    if (file.files[0]) csv.value = await file.files[0].text();
  } });
  clear(main, h("h1", {}, "Rate plans"),
    table([
      { label: "Plan", value: (p) => routeLink(`/rates/${enc(p.name)}`, p.name) },
      { label: "Time zone", value: (p) => p.timezone },
      { label: "Currency", value: (p) => p.currency },
      { label: "Rates", value: (p) => p.rates, class: "num" },
      { label: "Accounts", value: (p) => p.accounts, class: "num" },
    ], page.items, { empty: "No rate plans yet." }),
    section("Import rates (CSV)",
      h("form", { id: "rates-import", onsubmit: (ev) => {
        ev.preventDefault();
        const v = formValues(ev.target);
        act(out, async () => {
          const r = await api("POST", "/v1/rate-plans/import", { body: csv.value,
            headers: { "Content-Type": "text/csv" }, query: { plan: v.plan, replace: v.replace ? "true" : "" } });
          setTimeout(reload, 1500);
          return `Imported ${r.added} rates` + (r.created.length ? `; new plans: ${r.created.join(", ")}` : "");
        });
      } },
      h("label", {}, h("span", {}, "CSV file"), file), csv,
      h("div", { class: "inline" },
        input("Into plan (optional)", { name: "plan", maxlength: 64 }),
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "replace" }), "replace the plans' rates"),
        h("button", { type: "submit", id: "rates-import-submit" }, "Import")))),
    section("New plan",
      h("form", { id: "plan-new", class: "inline", onsubmit: (ev) => {
        ev.preventDefault();
        const v = formValues(ev.target);
        act(out, async () => {
          await api("POST", "/v1/rate-plans", { body: { name: v.name, timezone: v.timezone || "UTC" } });
          reload();
        });
      } },
      input("Name", { name: "name", required: true, maxlength: 64 }),
      input("Time zone", { name: "timezone", placeholder: "UTC" }),
      h("button", { type: "submit" }, "Create"))),
    out);
}

export async function planView(main, { plan }, _query, gen) {
  const page = await api("GET", `/v1/rate-plans/${enc(plan)}/rates`);
  if (!isCurrent(gen)) return;
  const out = h("div", {});
  clear(main, h("h1", {}, "Plan ", plan),
    h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: () => act(out, () => download(`/v1/rate-plans/${enc(plan)}/export`, {},
        `${plan}.csv`)) }, "Export CSV"),
      h("button", { type: "button", class: "danger", onclick: () => act(out, async () => {
        await api("DELETE", `/v1/rate-plans/${enc(plan)}`);
        location.hash = "#/rates";
      }) }, "Delete plan")),
    out,
    table([
      { label: "Prefix", value: (r) => r.prefix || "*" },
      { label: "Name", value: (r) => r.name },
      { label: "Per minute", value: (r) => `${r.price_per_min} ${r.currency}`, class: "num" },
      { label: "Connect", value: (r) => r.connect_fee, class: "num" },
      { label: "Increments", value: (r) => `${r.first_increment}/${r.next_increment}` },
      { label: "Valid", value: (r) => `${r.valid_from || ""} – ${r.valid_to || ""}` },
      { label: "", value: (r) => h("button", { type: "button", class: "link", onclick: () => act(out, async () => {
        await api("DELETE", `/v1/rates/${r.id}`);
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      }) }, "delete") },
    ], page.items, { empty: "This plan has no rates." }));
}
