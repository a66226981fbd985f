// Dashboard (issue 7): turnaround times, volumes and SLA compliance by origin facility, reading
// centre, reader, modality, priority or type, per day/week/month, and the consortium figures.
// Admins see the consortium; a reader sees their centre (the API decides what is visible).

import { api, download, SessionEnded } from "/static/js/api.js";
import { chartCard, columns, dataTable, hbars } from "/static/js/charts.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { addStrings, formatDuration, getLang, label, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, notice, pageHead } from "/static/js/ui.js";

addStrings({
  en: {
    "nav.dashboard": "Dashboard",
    "dash.title": "Dashboard",
    "dash.intro": "Cases by arrival time in the chosen period; times are turnaround times (TAT).",
    "dash.from": "From",
    "dash.to": "To",
    "dash.groupBy": "Group by",
    "dash.period": "Per",
    "dash.priority": "Priority",
    "dash.kind": "Type",
    "dash.span": "TAT interval",
    "dash.all": "All",
    "dash.apply": "Show",
    "dash.csv": "Download CSV",
    "dash.group.origin": "Origin facility",
    "dash.group.centre": "Reading centre",
    "dash.group.reader": "Reader",
    "dash.group.modality": "Modality",
    "dash.group.priority": "Priority",
    "dash.group.kind": "Type",
    "dash.period.day": "Day",
    "dash.period.week": "Week",
    "dash.period.month": "Month",
    "dash.period.quarter": "Quarter",
    "dash.period.year": "Year",
    "dash.span.first_instance_to_complete": "First image → study received",
    "dash.span.complete_to_routed": "Received → routed",
    "dash.span.routed_to_claimed": "Routed → claimed",
    "dash.span.claimed_to_final": "Claimed → final report",
    "dash.span.routed_to_opened": "Routed → opened",
    "dash.span.claimed_to_preliminary": "Claimed → preliminary report",
    "dash.span.preliminary_to_final": "Preliminary → final report",
    "dash.span.final_to_delivered": "Final report → delivered",
    "dash.span.arrival_to_final": "Arrival → final report",
    "dash.span.complete_to_final": "Received → final report",
    "dash.cases": "Cases",
    "dash.p50": "p50",
    "dash.p90": "p90",
    "dash.p95": "p95",
    "dash.n": "Timed",
    "dash.compliance": "SLA compliance",
    "dash.met": "Met",
    "dash.breached": "Breached",
    "dash.pending": "Pending",
    "dash.median": "Median TAT",
    "dash.group": "Group",
    "dash.periodCol": "Period",
    "dash.volumeBy": "Case volume by {group}",
    "dash.tatBy": "TAT by {group}: {span}",
    "dash.slaBy": "SLA compliance by {group}",
    "dash.slaPriority": "SLA compliance by priority",
    "dash.volumePer": "Case volume per {period}",
    "dash.tatPer": "TAT per {period}: {span}",
    "dash.figKind": "Remote diagnoses by type, per {period}",
    "dash.figInteractive": "Interactive and non-interactive, per {period}",
    "dash.figUpDown": "Upward and downward, per {period}",
    "dash.figures": "Consortium figures",
    "dash.figTotal": "Total",
    "dash.interactive": "Interactive",
    "dash.nonInteractive": "Non-interactive",
    "dash.upward": "Upward (escalations, referrals)",
    "dash.downward": "Downward referrals",
    "dash.referralsUp": "Upward referrals",
    "dash.referralsDown": "Downward referrals",
    "dash.escalations": "Escalations, second opinions",
    "dash.noData": "No cases in this period.",
    "dash.desc.bars": "{n} groups; the table below lists the same figures.",
    "dash.desc.columns": "{n} periods; the table below lists the same figures.",
    "dash.tooMany": "Showing the last {n} periods; choose a longer period to see the whole range.",
    "dash.unassigned": "Unassigned",
    "dash.unknown": "Unknown",
    "dash.figuresByMonth": "The consortium figures are counted per month at the finest.",
    "dash.loadingPeriods": "Loading periods…",
  },
  "zh-CN": {
    "nav.dashboard": "统计看板",
    "dash.title": "统计看板",
    "dash.intro": "按病例到达时间统计所选时段；时间均为周转时间（TAT）。",
    "dash.from": "开始日期",
    "dash.to": "结束日期",
    "dash.groupBy": "分组",
    "dash.period": "统计周期",
    "dash.priority": "优先级",
    "dash.kind": "类型",
    "dash.span": "周转时间区间",
    "dash.all": "全部",
    "dash.apply": "查询",
    "dash.csv": "下载 CSV",
    "dash.group.origin": "申请机构",
    "dash.group.centre": "诊断中心",
    "dash.group.reader": "阅片医生",
    "dash.group.modality": "检查设备",
    "dash.group.priority": "优先级",
    "dash.group.kind": "类型",
    "dash.period.day": "日",
    "dash.period.week": "周",
    "dash.period.month": "月",
    "dash.period.quarter": "季度",
    "dash.period.year": "年",
    "dash.span.first_instance_to_complete": "首幅图像 → 检查接收完成",
    "dash.span.complete_to_routed": "接收完成 → 分派",
    "dash.span.routed_to_claimed": "分派 → 认领",
    "dash.span.claimed_to_final": "认领 → 终审报告",
    "dash.span.routed_to_opened": "分派 → 打开",
    "dash.span.claimed_to_preliminary": "认领 → 初步报告",
    "dash.span.preliminary_to_final": "初步报告 → 终审报告",
    "dash.span.final_to_delivered": "终审报告 → 送达",
    "dash.span.arrival_to_final": "到达 → 终审报告",
    "dash.span.complete_to_final": "接收完成 → 终审报告",
    "dash.cases": "病例数",
    "dash.p50": "P50",
    "dash.p90": "P90",
    "dash.p95": "P95",
    "dash.n": "计时病例",
    "dash.compliance": "SLA 达标率",
    "dash.met": "达标",
    "dash.breached": "超时",
    "dash.pending": "未到期",
    "dash.median": "周转时间中位数",
    "dash.group": "分组",
    "dash.periodCol": "周期",
    "dash.volumeBy": "按{group}统计病例量",
    "dash.tatBy": "按{group}统计周转时间：{span}",
    "dash.slaBy": "按{group}统计 SLA 达标率",
    "dash.slaPriority": "按优先级统计 SLA 达标率",
    "dash.volumePer": "每{period}病例量",
    "dash.tatPer": "每{period}周转时间：{span}",
    "dash.figKind": "每{period}远程诊断量（按类型）",
    "dash.figInteractive": "每{period}交互式与非交互式诊断",
    "dash.figUpDown": "每{period}上转与下转",
    "dash.figures": "医联体统计",
    "dash.figTotal": "合计",
    "dash.interactive": "交互式",
    "dash.nonInteractive": "非交互式",
    "dash.upward": "上转（升级会诊、转诊）",
    "dash.downward": "下转",
    "dash.referralsUp": "上转转诊",
    "dash.referralsDown": "下转转诊",
    "dash.escalations": "升级会诊、第二意见",
    "dash.noData": "所选时段内没有病例。",
    "dash.desc.bars": "共 {n} 组；下方表格列出相同数据。",
    "dash.desc.columns": "共 {n} 个周期；下方表格列出相同数据。",
    "dash.tooMany": "仅显示最近 {n} 个周期；如需查看全部，请选择更长的统计周期。",
    "dash.unassigned": "未分配",
    "dash.unknown": "未知",
    "dash.figuresByMonth": "医联体统计最细按月统计。",
    "dash.loadingPeriods": "正在加载各周期数据…",
  },
});

const GROUPS = ["origin", "centre", "reader", "modality", "priority", "kind"];
const PERIODS = ["day", "week", "month", "quarter", "year"];
const SPANS = [
  "arrival_to_final", "complete_to_final", "first_instance_to_complete", "complete_to_routed",
  "routed_to_claimed", "routed_to_opened", "claimed_to_preliminary", "claimed_to_final",
  "preliminary_to_final", "final_to_delivered",
];
const PCTS = ["p50", "p90", "p95"];
const MAX_BUCKETS = 62;
const PARALLEL = 4;

function isoDay(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function daysAgo(n) {
  const d = new Date();
  d.setDate(d.getDate() - n);
  return isoDay(d);
}

/** The dashboard's choices survive page changes and language switches. */
const filters = {
  from: daysAgo(29),
  to: isoDay(new Date()),
  groupBy: "origin",
  period: "week",
  priority: "",
  kind: "",
  span: "arrival_to_final",
};

const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function percent(v) {
  return v === null || v === undefined ? t("none") : `${Math.round(v * 1000) / 10}%`;
}

function count(v) {
  return new Intl.NumberFormat(getLang()).format(Math.round(v));
}

/** Durations: "2 min 05 s"; under a minute with one decimal (tests run in seconds). */
function duration(v) {
  if (typeof v === "number" && v > 0 && v < 60) return `${Math.round(v * 10) / 10} ${t("unit.s")}`;
  return formatDuration(v);
}

function groupLabel(groupBy, g) {
  if (groupBy === "priority") return label("priority", g.code);
  if (groupBy === "kind") return label("kind", g.code);
  if (g.id === null && g.code === "") return t(groupBy === "modality" ? "dash.unknown" : "dash.unassigned");
  return g.name || g.code;
}

function groupKey(g) {
  return g.code === "" || g.code === null ? "-" : String(g.code);
}

function query(extra = {}) {
  const q = new URLSearchParams({ from: filters.from, to: filters.to, tz });
  if (filters.priority) q.set("priority", filters.priority);
  if (filters.kind) q.set("kind", filters.kind);
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  return q;
}

// ----- periods: buckets of the chosen range, each a TAT request -----------------------------------
function parseDay(s) {
  const [y, m, d] = s.split("-").map(Number);
  return new Date(y, m - 1, d);
}

function bucketStart(d, period) {
  const x = new Date(d.getFullYear(), d.getMonth(), d.getDate());
  if (period === "week") x.setDate(x.getDate() - ((x.getDay() + 6) % 7)); // Monday
  if (period === "month") x.setDate(1);
  if (period === "quarter") x.setMonth(Math.floor(x.getMonth() / 3) * 3, 1);
  if (period === "year") x.setMonth(0, 1);
  return x;
}

function nextStart(d, period) {
  const x = new Date(d);
  if (period === "day") x.setDate(x.getDate() + 1);
  if (period === "week") x.setDate(x.getDate() + 7);
  if (period === "month") x.setMonth(x.getMonth() + 1);
  if (period === "quarter") x.setMonth(x.getMonth() + 3);
  if (period === "year") x.setFullYear(x.getFullYear() + 1);
  return x;
}

function bucketLabel(start, period) {
  const iso = isoDay(start);
  if (period === "day" || period === "week") return iso.slice(5);
  if (period === "month") return iso.slice(0, 7);
  if (period === "quarter") return `${start.getFullYear()}-Q${Math.floor(start.getMonth() / 3) + 1}`;
  return String(start.getFullYear());
}

/** [{key, label, from, to}] with dates inclusive, clipped to the chosen range. */
export function buckets(from, to, period) {
  const first = parseDay(from);
  const last = parseDay(to);
  const out = [];
  for (let s = bucketStart(first, period); s <= last; s = nextStart(s, period)) {
    const end = nextStart(s, period);
    end.setDate(end.getDate() - 1);
    const a = s < first ? first : s;
    const b = end > last ? last : end;
    out.push({ key: isoDay(s), label: bucketLabel(s, period), from: isoDay(a), to: isoDay(b) });
  }
  return out;
}

async function inBatches(items, fn) {
  const out = new Array(items.length);
  for (let i = 0; i < items.length; i += PARALLEL) {
    const part = await Promise.all(items.slice(i, i + PARALLEL).map(fn));
    part.forEach((r, j) => { out[i + j] = r; });
  }
  return out;
}

// ----- the page ------------------------------------------------------------------------------
function select(id, options, value, onchange) {
  const node = h("select", { id }, options.map(([v, text]) => h("option", { value: v }, text)));
  node.value = value;
  node.addEventListener("change", () => onchange(node.value));
  return node;
}

function field(id, labelText, control) {
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control);
}

function filterForm(onApply) {
  const from = h("input", { id: "dash-from", type: "date", value: filters.from, required: true });
  const to = h("input", { id: "dash-to", type: "date", value: filters.to, required: true });
  const groupBy = select("dash-group", GROUPS.map((g) => [g, t(`dash.group.${g}`)]), filters.groupBy,
    (v) => { filters.groupBy = v; });
  const period = select("dash-period", PERIODS.map((p) => [p, t(`dash.period.${p}`)]), filters.period,
    (v) => { filters.period = v; });
  const priority = select("dash-priority", [["", t("dash.all")],
    ...["stat", "urgent", "routine"].map((p) => [p, label("priority", p)])], filters.priority,
  (v) => { filters.priority = v; });
  const kind = select("dash-kind", [["", t("dash.all")],
    ...["imaging", "ecg", "consultation"].map((k) => [k, label("kind", k)])], filters.kind,
  (v) => { filters.kind = v; });
  const span = select("dash-span", SPANS.map((s) => [s, t(`dash.span.${s}`)]), filters.span,
    (v) => { filters.span = v; });
  return h("form", {
    class: "card dash-filters",
    id: "dash-filters",
    onsubmit: (event) => {
      event.preventDefault();
      filters.from = from.value;
      filters.to = to.value;
      onApply();
    },
  },
  field("dash-from", t("dash.from"), from),
  field("dash-to", t("dash.to"), to),
  field("dash-group", t("dash.groupBy"), groupBy),
  field("dash-period", t("dash.period"), period),
  field("dash-priority", t("dash.priority"), priority),
  field("dash-kind", t("dash.kind"), kind),
  field("dash-span", t("dash.span"), span),
  h("div", { class: "field dash-apply" }, h("button", { type: "submit", class: "btn btn-primary", id: "dash-apply" },
    t("dash.apply"))));
}

function tile(id, name, value, sub) {
  return h("div", { class: "dash-tile", id },
    h("div", { class: "dash-tile-name" }, name),
    h("div", { class: "dash-tile-value", "data-value": value.raw ?? "" }, value.text),
    sub ? h("div", { class: "muted small" }, sub) : null);
}

function summary(tat) {
  const o = tat.overall;
  const span = o.tat ? o.tat[filters.span] : null;
  const sla = o.sla;
  return h("div", { class: "dash-tiles", id: "dash-summary" },
    tile("tile-cases", t("dash.cases"), { raw: o.count, text: count(o.count) }),
    tile("tile-median", t("dash.median"), { raw: span ? span.p50 : "", text: duration(span ? span.p50 : null) },
      t(`dash.span.${filters.span}`)),
    tile("tile-p90", t("dash.p90"), { raw: span ? span.p90 : "", text: duration(span ? span.p90 : null) },
      t(`dash.span.${filters.span}`)),
    tile("tile-sla", t("dash.compliance"), { raw: sla.compliance ?? "", text: percent(sla.compliance) },
      `${t("dash.met")} ${sla.met} · ${t("dash.breached")} ${sla.breached} · ${t("dash.pending")} ${sla.pending}`));
}

function groupCharts(tat) {
  const gb = tat.group_by;
  const groupName = t(`dash.group.${gb}`);
  const groups = tat.groups;
  const empty = groups.length ? null : t("dash.noData");
  const items = (pick) => groups.map((g) => ({ key: groupKey(g.group), label: groupLabel(gb, g.group), values: pick(g) }));
  const desc = t("dash.desc.bars", { n: groups.length });
  const nameCol = { title: groupName, cell: (g) => groupLabel(gb, g.group) };
  const spanName = t(`dash.span.${filters.span}`);
  const pctNames = PCTS.map((p) => t(`dash.${p}`));

  const volumeTitle = t("dash.volumeBy", { group: groupName });
  const volume = chartCard({
    id: "chart-volume",
    title: volumeTitle,
    empty,
    series: [t("dash.cases")],
    chart: hbars({ title: volumeTitle, desc, items: items((g) => [g.count]), series: [t("dash.cases")], format: count, integer: true }),
    table: dataTable(volumeTitle, [nameCol, { title: t("dash.cases"), cell: (g) => count(g.count), num: true }], groups),
  });

  const tatTitle = t("dash.tatBy", { group: groupName, span: spanName });
  const tatChart = chartCard({
    id: "chart-tat",
    title: tatTitle,
    empty,
    series: pctNames,
    chart: hbars({
      title: tatTitle, desc, series: pctNames, format: duration,
      items: items((g) => PCTS.map((p) => g.tat[filters.span][p])),
    }),
    table: dataTable(tatTitle, [
      nameCol,
      { title: t("dash.n"), cell: (g) => count(g.tat[filters.span].n), num: true },
      ...PCTS.map((p) => ({ title: t(`dash.${p}`), cell: (g) => duration(g.tat[filters.span][p]), num: true })),
    ], groups),
  });

  const slaTitle = t("dash.slaBy", { group: groupName });
  const sla = chartCard({
    id: "chart-sla",
    title: slaTitle,
    empty,
    series: [t("dash.compliance")],
    chart: hbars({
      title: slaTitle, desc, series: [t("dash.compliance")], format: percent, max: 1,
      items: items((g) => [g.sla.compliance]),
    }),
    table: slaTable(slaTitle, nameCol, groups),
  });
  return [volume, tatChart, sla];
}

function slaTable(caption, nameCol, rows) {
  return dataTable(caption, [
    nameCol,
    { title: t("dash.cases"), cell: (g) => count(g.count), num: true },
    { title: t("dash.met"), cell: (g) => count(g.sla.met), num: true },
    { title: t("dash.breached"), cell: (g) => count(g.sla.breached), num: true },
    { title: t("dash.pending"), cell: (g) => count(g.sla.pending), num: true },
    { title: t("dash.compliance"), cell: (g) => percent(g.sla.compliance), num: true },
  ], rows);
}

function slaPriorityChart(sla) {
  const title = t("dash.slaPriority");
  const rows = sla.by_priority;
  return chartCard({
    id: "chart-sla-priority",
    title,
    empty: rows.length ? null : t("dash.noData"),
    series: [t("dash.compliance")],
    chart: hbars({
      title, desc: t("dash.desc.bars", { n: rows.length }), series: [t("dash.compliance")], format: percent, max: 1,
      items: rows.map((g) => ({ key: g.group.code, label: label("priority", g.group.code), values: [g.sla.compliance] })),
    }),
    table: slaTable(title, { title: t("dash.priority"), cell: (g) => label("priority", g.group.code) }, rows),
  });
}

function periodCharts(rows, period, clipped) {
  const periodName = t(`dash.period.${period}`);
  const spanName = t(`dash.span.${filters.span}`);
  const desc = t("dash.desc.columns", { n: rows.length });
  const pctNames = PCTS.map((p) => t(`dash.${p}`));
  const periodCol = { title: t("dash.periodCol"), cell: (r) => `${r.from} – ${r.to}` };
  const volumeTitle = t("dash.volumePer", { period: periodName });
  const tatTitle = t("dash.tatPer", { period: periodName, span: spanName });
  const note = clipped ? notice(t("dash.tooMany", { n: MAX_BUCKETS }), "info") : null;
  return [note, h("div", { class: "chart-grid" },
    chartCard({
      id: "chart-period-volume",
      title: volumeTitle,
      series: [t("dash.cases")],
      chart: columns({
        title: volumeTitle, desc, series: [t("dash.cases")], format: count, integer: true,
        items: rows.map((r) => ({ key: r.key, label: r.label, values: [r.data.overall.count] })),
      }),
      table: dataTable(volumeTitle, [periodCol,
        { title: t("dash.cases"), cell: (r) => count(r.data.overall.count), num: true }], rows),
    }),
    chartCard({
      id: "chart-period-tat",
      title: tatTitle,
      series: pctNames,
      chart: columns({
        title: tatTitle, desc, series: pctNames, format: duration,
        items: rows.map((r) => ({ key: r.key, label: r.label, values: PCTS.map((p) => r.data.overall.tat[filters.span][p]) })),
      }),
      table: dataTable(tatTitle, [periodCol,
        { title: t("dash.n"), cell: (r) => count(r.data.overall.tat[filters.span].n), num: true },
        ...PCTS.map((p) => ({ title: t(`dash.${p}`), cell: (r) => duration(r.data.overall.tat[filters.span][p]), num: true })),
        { title: t("dash.compliance"), cell: (r) => percent(r.data.overall.sla.compliance), num: true },
      ], rows),
    }))];
}

function figureCharts(fig) {
  const periodName = t(`dash.period.${fig.period}`);
  const rows = fig.periods;
  const desc = t("dash.desc.columns", { n: rows.length });
  const periodCol = { title: t("dash.periodCol"), cell: (r) => r.period };
  const chart = (id, titleKey, series, pick) => {
    const title = t(titleKey, { period: periodName });
    const rowsWithTotal = [...rows, { ...fig.total, period: t("dash.figTotal") }];
    return chartCard({
      id,
      title,
      series: series.map(([name]) => name),
      chart: columns({
        title, desc, format: count, integer: true, series: series.map(([name]) => name),
        items: rows.map((r) => ({ key: r.period, label: r.period, values: series.map(([, fn]) => fn(r)) })),
      }),
      table: dataTable(title, [periodCol, ...series.map(([name, fn]) => ({ title: name, cell: (r) => count(fn(r)), num: true }))],
        rowsWithTotal),
    });
  };
  return [
    h("h2", { class: "dash-section" }, t("dash.figures")),
    filters.period === "day" || filters.period === "week" ? h("p", { class: "muted small" }, t("dash.figuresByMonth")) : null,
    h("div", { class: "chart-grid" }, chart("chart-fig-kind", "dash.figKind",
      ["imaging", "ecg", "consultation"].map((k) => [label("kind", k), (r) => r.by_kind[k]])),
    chart("chart-fig-interactive", "dash.figInteractive", [
      [t("dash.interactive"), (r) => r.interactive],
      [t("dash.nonInteractive"), (r) => r.non_interactive],
    ]),
    chart("chart-fig-updown", "dash.figUpDown", [
      [t("dash.escalations"), (r) => r.upward.escalations],
      [t("dash.referralsUp"), (r) => r.referrals.up],
      [t("dash.referralsDown"), (r) => r.referrals.down],
    ])),
  ];
}

function dashboardView(ctx) {
  loadStyle("dashboard");
  const { main, state } = ctx;
  const csv = h("button", {
    type: "button",
    class: "btn btn-secondary",
    id: "dash-csv",
    onclick: async () => {
      csv.disabled = true;
      try {
        const q = query({ group_by: filters.groupBy });
        await download(`/analytics/tat.csv?${q}`, `tat-${filters.groupBy}-${filters.from}-${filters.to}.csv`, "text/csv");
      } catch (err) {
        if (!(err instanceof SessionEnded) && ctx.isCurrent()) status.replaceChildren(errorBox(err));
      } finally {
        csv.disabled = false;
      }
    },
  }, t("dash.csv"));
  const status = h("div", { id: "dash-status", "aria-live": "polite" });
  const top = h("div", { id: "dash-groups" });
  const periods = h("div", { id: "dash-periods" });
  const figs = h("div", { id: "dash-figures" });
  main.append(
    pageHead(t("dash.title"), csv),
    h("p", { class: "muted" }, t("dash.intro")),
    filterForm(load),
    status,
    top,
    periods,
    figs,
  );

  function showGroups(tat, sla) {
    fill(top, summary(tat), h("div", { class: "chart-grid" }, groupCharts(tat), slaPriorityChart(sla)));
  }

  async function load() {
    const key = JSON.stringify(filters);
    main.dataset.state = "loading";
    status.replaceChildren();
    const cached = state.cache.get(`dashboard:${key}`);
    if (cached) {
      showGroups(cached.tat, cached.sla);
      fill(periods, periodCharts(cached.rows, cached.period, cached.clipped));
      fill(figs, figureCharts(cached.fig));
    }
    const figPeriod = ["quarter", "year"].includes(filters.period) ? filters.period : "month";
    try {
      const [tat, sla, fig] = await Promise.all([
        api("GET", `/analytics/tat?${query({ group_by: filters.groupBy })}`),
        api("GET", `/analytics/sla?${query()}`),
        api("GET", `/analytics/figures?${query({ period: figPeriod })}`),
      ]);
      if (!ctx.isCurrent() || key !== JSON.stringify(filters)) return;
      showGroups(tat, sla);
      fill(figs, figureCharts(fig));
      if (!cached) fill(periods, h("p", { class: "muted" }, t("dash.loadingPeriods")));
      let all = buckets(filters.from, filters.to, filters.period);
      const clipped = all.length > MAX_BUCKETS;
      if (clipped) all = all.slice(-MAX_BUCKETS);
      const rows = await inBatches(all, async (b) => {
        const q = new URLSearchParams(query());
        q.set("from", b.from);
        q.set("to", b.to);
        return { ...b, data: await api("GET", `/analytics/tat?${q}`) };
      });
      if (!ctx.isCurrent() || key !== JSON.stringify(filters)) return;
      fill(periods, periodCharts(rows, filters.period, clipped));
      state.cache.set(`dashboard:${key}`, { tat, sla, fig, rows, period: filters.period, clipped });
      main.dataset.state = "ready";
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      main.dataset.state = "error";
      status.replaceChildren(errorBox(err));
    }
  }
  load();
}

addRoute({
  name: "dashboard",
  path: "dashboard",
  view: dashboardView,
  roles: ["admin", "reader"],
  nav: { label: "nav.dashboard", order: 60 },
});
