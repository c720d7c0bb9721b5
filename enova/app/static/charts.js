/* enova's small SVG line charts for /instance: no library, no network.
 *
 * EnovaCharts.draw(figure, chart, opts) (re)draws `chart` ({id, title, unit, series: [{name,
 * points: [[t, v], ...]}], lines: [{value, label}]}) into the <figure>, between opts.start and
 * opts.end (unix seconds), with opts.marks ([{time, label, kind}]) as vertical lines. A gap
 * longer than opts.gap seconds breaks a line. Each series path carries data-series, data-points
 * and data-last (its last value), so tests and people can read what is drawn. */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 220, L = 58, R = 12, T = 12, B = 26;
  const COLORS = ["#1f6feb", "#d92d20", "#079455", "#f79009", "#7a5af8", "#0e9384", "#c11574", "#4b5565"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function format(value, unit) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const abs = Math.abs(value);
    switch (unit) {
      case "s":
        if (abs === 0) return "0";
        if (abs < 1) return (value * 1000).toPrecision(3).replace(/\.0+$|(\.\d*?)0+$/, "$1") + " ms";
        return value.toPrecision(3) + " s";
      case "ratio": return (value * 100).toFixed(abs >= 0.995 || abs === 0 ? 0 : 1) + "%";
      case "percent": return value.toFixed(0) + "%";
      case "requests": case "replicas": return Number.isInteger(value) ? String(value) : value.toFixed(1);
      default:
        if (abs >= 100) return value.toFixed(0);
        if (abs >= 10) return value.toFixed(1);
        return value.toFixed(2);
    }
  }

  function niceMax(max, unit) {
    if (unit === "ratio") return 1;
    if (unit === "percent") return 100;
    if (unit === "requests" || unit === "replicas") return Math.max(4, Math.ceil(max / 4) * 4);  // whole ticks
    if (!(max > 0)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(max)));
    for (const m of [1, 2, 2.5, 5, 10]) if (max <= m * exp) return m * exp;
    return 10 * exp;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 5);
  }

  function draw(figure, chart, opts) {
    const start = opts.start, end = Math.max(opts.end, opts.start + 1), gap = opts.gap || Infinity;
    const marks = opts.marks || [];
    let max = 0, count = 0;
    for (const s of chart.series) for (const [, v] of s.points) { if (v > max) max = v; count++; }
    for (const line of chart.lines || []) if (line.value > max) max = line.value * 1.1;
    const top = niceMax(max, chart.unit);
    const x = (t) => L + (W - L - R) * (t - start) / (end - start);
    const y = (v) => T + (H - T - B) * (1 - Math.min(v, top) / top);

    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chart.title});
    for (let i = 0; i <= 4; i++) {
      const v = top * i / 4, yy = y(v);
      svg.appendChild(el("line", {class: i ? "grid" : "axis", x1: L, x2: W - R, y1: yy, y2: yy}));
      svg.appendChild(el("text", {class: "tick", x: L - 6, y: yy + 4, "text-anchor": "end"}, format(v, chart.unit)));
    }
    for (let i = 0; i <= 4; i++) {
      const t = start + (end - start) * i / 4;
      svg.appendChild(el("text", {class: "tick", x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle"},
                         clock(t)));
    }
    for (const mark of marks) {
      if (mark.time < start || mark.time > end) continue;
      const line = el("line", {class: "mark " + (mark.kind || ""), x1: x(mark.time), x2: x(mark.time), y1: T, y2: H - B,
                               "data-mark": mark.kind || "mark"});
      line.appendChild(el("title", {}, mark.label));
      svg.appendChild(line);
    }
    for (const line of chart.lines || []) {
      const yy = y(line.value);
      svg.appendChild(el("line", {class: "slo", x1: L, x2: W - R, y1: yy, y2: yy, "data-line": line.value}));
      svg.appendChild(el("text", {class: "slo-label", x: W - R - 2, y: yy - 4, "text-anchor": "end"}, line.label));
    }
    const legend = document.createElement("div");
    legend.className = "legend";
    chart.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      let d = "", prev = null;
      for (const [t, v] of s.points) {
        if (t < start) { prev = null; continue; }
        d += (prev === null || t - prev > gap ? "M" : "L") + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
        prev = t;
      }
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      const path = el("path", {class: "series", d: d.trim(), stroke: color, "data-series": s.name,
                               "data-points": s.points.length, "data-last": last === null ? "" : last});
      path.appendChild(el("title", {}, s.name));
      svg.appendChild(path);
      if (s.points.length === 1) {
        const [t, v] = s.points[0];
        svg.appendChild(el("circle", {cx: x(t), cy: y(v), r: 2.5, fill: color}));
      }
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(`${s.name} ${format(last, chart.unit)}`));
      legend.appendChild(item);
    });
    if (!count) {
      svg.appendChild(el("text", {class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle"},
                             opts.empty || "no data in this window"));
    }
    const caption = document.createElement("figcaption");
    const title = document.createElement("span");
    title.textContent = chart.title;
    const unit = document.createElement("span");
    unit.className = "muted";
    unit.textContent = chart.unit;
    caption.append(title, unit);
    figure.replaceChildren(caption, svg, legend);
    figure.dataset.points = String(count);
  }

  window.EnovaCharts = {draw, format};
})();
