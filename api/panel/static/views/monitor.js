// Monitoring: quality over time (ASR, ACD, PDD per gateway, with probe state),
// the node's metrics, and the fraud alerts.
import { lineChart, legend } from "../chart.js";
import { api, clear, formValues, h, input, isCurrent, pct, section, table, time } from "../lib.js";

export async function qualityView(main, _params, query, gen) {
  const q = { bucket: query.bucket || "hour", group_by: query.group_by || "gateway",
    from: query.from || new Date(Date.now() - 24 * 3600e3).toISOString().slice(0, 16), to: query.to || "" };
  const data = await api("GET", "/v1/quality", { query: q });
  if (!isCurrent(gen)) return;
  const groups = [...new Set(data.rows.map((r) => r.group))];
  const series = (pick) => groups.map((g) => ({
    name: g, label: g ? `${g}${data.gateways[g] ? ` (${data.gateways[g]})` : ""}` : "(none)",
    points: data.rows.filter((r) => r.group === g).map((r) => [r.period_start_ms, pick(r)]),
  }));
  clear(main, h("h1", {}, "Quality"),
    h("form", { class: "filters", id: "quality-filters", onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = `#/quality?${new URLSearchParams(Object.entries(formValues(ev.target)).filter(([, v]) => v))}`;
    } },
    input("From", { name: "from", value: q.from }),
    input("To", { name: "to", value: q.to }),
    h("label", {}, h("span", {}, "Bucket"), h("select", { name: "bucket" },
      ["5min", "hour", "day"].map((b) => h("option", { value: b, selected: b === q.bucket }, b)))),
    h("label", {}, h("span", {}, "Per"), h("select", { name: "group_by" },
      ["gateway", "prefix", "account", "none"].map((b) => h("option", { value: b, selected: b === q.group_by }, b)))),
    h("button", { type: "submit" }, "Show")),
    Object.keys(data.gateways).length ? section("Gateways", h("ul", { class: "probes" },
      Object.entries(data.gateways).map(([g, st]) => h("li", {}, g, " ", h("span", { class: `probe ${st}` }, st)))))
      : null,
    legend(series(() => 0)),
    h("div", { class: "charts" },
      section("ASR", lineChart("ASR", series((r) => r.asr), { format: pct, yMax: 1 })),
      section("ACD (s)", lineChart("ACD", series((r) => r.acd_s), { format: (v) => v.toFixed(0) })),
      section("PDD p50 (ms)", lineChart("PDD", series((r) => r.pdd_ms.p50), { format: (v) => v.toFixed(0) }))),
    section("Figures", table([
      { label: "Period", value: (r) => r.period },
      { label: q.group_by, value: (r) => r.group },
      { label: "Attempts", value: (r) => r.attempts, class: "num" },
      { label: "ASR", value: (r) => pct(r.asr), class: "num" },
      { label: "NER", value: (r) => pct(r.ner), class: "num" },
      { label: "ACD", value: (r) => r.acd_s === null ? "" : `${r.acd_s} s`, class: "num" },
      { label: "PDD p50", value: (r) => r.pdd_ms.p50 === null ? "" : `${r.pdd_ms.p50} ms`, class: "num" },
    ], data.rows, { empty: "No traffic in this period." })));
}

export async function metricsView(main, _params, query, gen) {
  const data = await api("GET", "/v1/metrics", { query: { group: query.group || "" } });
  if (!isCurrent(gen)) return;
  const groups = [...new Set(data.rows.map((r) => r.name.split(":")[0]))];
  clear(main, h("h1", {}, "Metrics"),
    h("nav", { class: "tabs" }, h("a", { href: "#/metrics", class: query.group ? null : "active" }, "all"),
      (query.group ? [query.group] : groups).map((g) => h("a", { href: `#/metrics?group=${encodeURIComponent(g)}`,
        class: g === query.group ? "active" : null }, g))),
    table([
      { label: "Metric", value: (r) => r.name },
      { label: "Value", value: (r) => Number.isInteger(r.value) ? r.value : r.value.toFixed(3), class: "num" },
    ], data.rows, { empty: "No metrics yet (is `sipledger up` running?)." }));
}

export async function fraudView(main, _params, query, gen) {
  const data = await api("GET", "/v1/fraud", { query: { severity: query.severity || "", limit: 200 } });
  if (!isCurrent(gen)) return;
  clear(main, h("h1", {}, "Fraud alerts"),
    h("nav", { class: "tabs" }, ["", "warning", "critical"].map((sv) => h("a", {
      href: sv ? `#/fraud?severity=${sv}` : "#/fraud", class: (query.severity || "") === sv ? "active" : null },
    sv || "all"))),
    table([
      { label: "Time", value: (a) => time(a.at * 1000) },
      { label: "Severity", value: (a) => h("span", { class: `sev ${a.severity}` }, a.severity) },
      { label: "User", value: (a) => a.user },
      { label: "Rule", value: (a) => `${a.profile} #${a.rule_id}: ${a.parameter} ${a.value} > ${a.threshold}` },
      { label: "Number", value: (a) => a.number },
      { label: "Action", value: (a) => a.action },
    ], data.items, { empty: "No fraud alerts." }));
}
