// Small SVG charts (no library): horizontal bars for groups, columns for periods, each with axis
// labels, value labels, an accessible title and description, and a table view of the same data.
// Every bar carries data-key, data-series and data-value, so tests (and people with the
// inspector) can read exactly what was drawn.

import { h, svg } from "/static/js/dom.js";
import { addStrings, t } from "/static/js/i18n.js";

addStrings({
  en: { "chart.table": "Show as table" },
  "zh-CN": { "chart.table": "以表格显示" },
});

let uid = 0;
const WIDTH = 640;

/** A round upper bound for an axis (1, 2 or 5 times a power of ten). */
export function niceMax(value, integer = false) {
  if (integer && value <= 4) return 4;
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  const f = value / exp;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * exp;
}

/** Axis ticks from 0 to a niceMax() bound: steps of 1, 2 or 5 times a power of ten. */
function ticks(max) {
  const mantissa = max / 10 ** Math.floor(Math.log10(max));
  const n = [2, 4].includes(Math.round(mantissa)) ? 4 : 5;
  return Array.from({ length: n + 1 }, (_, i) => (max * i) / n);
}

function frame(title, desc, width, height, cls) {
  uid += 1;
  const titleId = `chart-title-${uid}`;
  const descId = `chart-desc-${uid}`;
  return svg("svg", {
    class: `chart ${cls}`,
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    role: "img",
    "aria-labelledby": `${titleId} ${descId}`,
    preserveAspectRatio: "xMinYMin meet",
  },
  svg("title", { id: titleId }, title),
  svg("desc", { id: descId }, desc));
}

/** Text cut to about `max` narrow characters (a Chinese character counts as two). */
function clip(text, max) {
  const s = String(text);
  let width = 0;
  for (let i = 0; i < s.length; i += 1) {
    width += s.charCodeAt(i) >= 0x2e80 ? 2 : 1;
    if (width > max) return `${s.slice(0, i)}…`;
  }
  return s;
}

function maxOf(items, series) {
  let max = 0;
  for (const item of items) {
    series.forEach((_, i) => {
      const v = item.values[i];
      if (typeof v === "number" && v > max) max = v;
    });
  }
  return max;
}

/**
 * Horizontal bars, one row per item, one bar per series:
 * hbars({title, desc, items: [{key, label, values: [n|null]}], series: [name], format, max})
 */
export function hbars({ title, desc, items, series, format = String, max, integer = false }) {
  const labelW = 200;
  const right = 70;
  const barH = series.length > 1 ? 12 : 18;
  const rowH = series.length * barH + 12;
  const top = 8;
  const axisH = 26;
  const height = top + Math.max(1, items.length) * rowH + axisH;
  const plotW = WIDTH - labelW - right;
  const top2 = niceMax(max !== undefined ? max : maxOf(items, series), integer);
  const x = (v) => labelW + (plotW * v) / top2;
  const root = frame(title, desc, WIDTH, height, "chart-hbars");
  const bottom = top + Math.max(1, items.length) * rowH;
  for (const tv of ticks(top2)) {
    root.append(
      svg("line", { class: "grid", x1: x(tv), x2: x(tv), y1: top, y2: bottom }),
      svg("text", { class: "tick", x: x(tv), y: bottom + 16, "text-anchor": "middle" }, format(tv)),
    );
  }
  items.forEach((item, row) => {
    const y0 = top + row * rowH + 6;
    root.append(svg("text", { class: "label", x: labelW - 8, y: y0 + (series.length * barH) / 2 + 4,
      "text-anchor": "end" }, svg("title", null, item.label), clip(item.label, 26)));
    series.forEach((name, i) => {
      const value = item.values[i];
      const y = y0 + i * barH;
      const has = typeof value === "number";
      const w = has ? Math.max(has && value > 0 ? 1 : 0, x(value) - labelW) : 0;
      root.append(
        svg("rect", {
          class: `bar series-${i}`, x: labelW, y, width: w, height: barH - 2, rx: 2,
          "data-key": item.key, "data-series": name, "data-value": has ? value : "",
        }, svg("title", null, `${item.label} · ${name}: ${has ? format(value) : t("none")}`)),
        svg("text", { class: "value", x: labelW + w + 4, y: y + barH - 5 }, has ? format(value) : t("none")),
      );
    });
  });
  root.append(svg("line", { class: "axis", x1: labelW, x2: labelW, y1: top, y2: bottom }));
  return root;
}

/**
 * Columns over periods, one group of columns per item:
 * columns({title, desc, items: [{key, label, values}], series: [name], format})
 */
export function columns({ title, desc, items, series, format = String, integer = false }) {
  const left = 64;
  const top = 18;
  const plotH = 180;
  const bottomH = 44;
  const height = top + plotH + bottomH;
  const plotW = WIDTH - left - 12;
  const slot = plotW / Math.max(1, items.length);
  const gap = Math.min(8, slot * 0.2);
  const barW = Math.max(1, (slot - gap) / series.length);
  const top2 = niceMax(maxOf(items, series), integer);
  const y = (v) => top + plotH - (plotH * v) / top2;
  const root = frame(title, desc, WIDTH, height, "chart-columns");
  for (const tv of ticks(top2)) {
    root.append(
      svg("line", { class: "grid", x1: left, x2: WIDTH - 12, y1: y(tv), y2: y(tv) }),
      svg("text", { class: "tick", x: left - 6, y: y(tv) + 4, "text-anchor": "end" }, format(tv)),
    );
  }
  const every = Math.ceil(items.length / 12); // at most ~12 axis labels
  items.forEach((item, col) => {
    const x0 = left + col * slot + gap / 2;
    series.forEach((name, i) => {
      const value = item.values[i];
      const has = typeof value === "number";
      const yy = has ? y(value) : y(0);
      const x = x0 + i * barW;
      root.append(svg("rect", {
        class: `bar series-${i}`, x, y: yy, width: Math.max(1, barW - 1), height: y(0) - yy,
        "data-key": item.key, "data-series": name, "data-value": has ? value : "",
      }, svg("title", null, `${item.label} · ${name}: ${has ? format(value) : t("none")}`)));
      if (has && value > 0 && barW >= 18) {
        root.append(svg("text", { class: "value", x: x + barW / 2, y: yy - 3, "text-anchor": "middle" },
          format(value)));
      }
    });
    if (col % every === 0) {
      root.append(svg("text", { class: "tick", x: x0 + (slot - gap) / 2, y: top + plotH + 16,
        "text-anchor": "middle" }, clip(item.label, 12)));
    }
  });
  root.append(svg("line", { class: "axis", x1: left, x2: WIDTH - 12, y1: y(0), y2: y(0) }));
  return root;
}

/** A legend for multi-series charts, colours matching the bars' series-N classes. */
export function legend(series) {
  if (series.length < 2) return null;
  return h("ul", { class: "chart-legend" }, series.map((name, i) =>
    h("li", null, h("span", { class: `swatch series-${i}`, "aria-hidden": "true" }), name)));
}

/** A plain data table: dataTable(caption, [{title, cell(row), num}], rows). */
export function dataTable(caption, cols, rows, attrs = {}) {
  return h("div", { class: "table-scroll" },
    h("table", { class: "data-table", ...attrs },
      h("caption", { class: "sr-only" }, caption),
      h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col", class: c.num ? "num" : null },
        c.title)))),
      h("tbody", null, rows.map((row) => h("tr", null, cols.map((c) =>
        h("td", { "data-label": c.title, class: c.num ? "num" : null }, c.cell(row))))))));
}

/** A chart card: heading, the chart, its legend, and the same figures as a table below. */
export function chartCard({ id, title, chart, series = [], table, empty, tools }) {
  const headId = `${id}-title`;
  return h("section", { class: "card chart-card", id, "aria-labelledby": headId },
    h("div", { class: "chart-head" }, h("h2", { id: headId }, title), tools || null),
    empty ? h("p", { class: "muted empty" }, empty) : [chart, legend(series),
      h("details", { class: "chart-table" }, h("summary", null, t("chart.table")), table)]);
}
