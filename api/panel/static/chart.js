// A line chart as inline SVG, drawn with DOM calls (no library, no markup strings):
// one line per series over time.  series = [{name, points: [[t_ms, y|null], ...]}]
const NS = "http://www.w3.org/2000/svg";
const W = 640, H = 220, PAD = { l: 48, r: 12, t: 12, b: 28 };
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function lineChart(title, series, { format = (y) => String(y), yMax } = {}) {
  const all = series.flatMap((x) => x.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  svg.append(s("title", {}, title));
  if (!all.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no data"));
    return svg;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const top = yMax ?? (Math.max(...all.map((p) => p[1])) * 1.1 || 1);
  const x = (t) => PAD.l + (t1 === t0 ? (W - PAD.l - PAD.r) / 2 : (t - t0) / (t1 - t0) * (W - PAD.l - PAD.r));
  const y = (v) => H - PAD.b - v / top * (H - PAD.t - PAD.b);
  for (const frac of [0, 0.5, 1]) {
    svg.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(top * frac), y2: y(top * frac), class: "grid" }));
    svg.append(s("text", { x: PAD.l - 4, y: y(top * frac) + 4, "text-anchor": "end", class: "axis" }, format(top * frac)));
  }
  for (const t of t0 === t1 ? [t0] : [t0, t1]) {
    svg.append(s("text", { x: x(t), y: H - 8, "text-anchor": t === t1 && t0 !== t1 ? "end" : "start", class: "axis" },
      new Date(t).toISOString().slice(5, 16).replace("T", " ")));
  }
  series.forEach((one, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = one.points.filter((p) => p[1] !== null && p[1] !== undefined);
    if (pts.length > 1) {
      svg.append(s("polyline", { points: pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), fill: "none",
        stroke: colour, "stroke-width": 2 }));
    }
    for (const p of pts) {
      const dot = s("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: colour });
      dot.append(s("title", {}, `${one.name || "(no gateway)"} ${new Date(p[0]).toISOString()}: ${format(p[1])}`));
      svg.append(dot);
    }
  });
  return svg;
}

export function legend(series) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  series.forEach((one, i) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLOURS[i % COLOURS.length];     // CSSOM: allowed by the CSP
    li.append(swatch, document.createTextNode(one.label || one.name || "(no gateway)"));
    ul.append(li);
  });
  return ul;
}
