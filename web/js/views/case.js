// The case view: the page's life cycle (load, live reload, focus kept), summary, studies,
// reports, turnaround and timeline. The reader's claim and report editor (report_editor.js),
// escalation (escalation_panel.js) and other features' panels (viewers, priors, consults, added
// with addCasePanel()) live in their own modules, so this file does not grow with each of them.

import { api, download, SessionEnded } from "/static/js/api.js";
import { homeHash } from "/static/js/app.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import {
  addStrings,
  formatAgo,
  formatDateTime,
  formatDicomDate,
  formatDuration,
  formatPersonName,
  label,
  t,
} from "/static/js/i18n.js";
import { subscribe } from "/static/js/live.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, fields, priorityBadge, section, statusBadge } from "/static/js/ui.js";
import { escalatedNotice, escalatePanel } from "/static/js/views/escalation_panel.js";
import { cosignForm, readerPanel } from "/static/js/views/report_editor.js";
import { slaCell } from "/static/js/views/worklist.js";

addStrings({
  en: {
    "workspace.liveCase": "This page updates by itself.",
    "workspace.waiting": "Waiting",
    "workspace.slaDeadline": "Report due by",
    "workspace.pdf": "Download PDF",
    "workspace.pdfOf": "Download version {v} as PDF",
    "workspace.cosigned": "Co-signed by {name} · {at}",
    "report.status.addendum": "Addendum",
    "event.priority_raised": "Priority raised",
    "event.priority_changed": "Priority changed",
    "event.escalated": "Escalated",
    "event.second_opinion_requested": "Second opinion requested",
    "event.sla_warning": "Report deadline near",
    "event.sla_breached": "Report deadline passed",
    "event.assigned": "Assigned to reader",
    "event.unclaimed": "Released by reader",
    "event.lease_expired": "Claim expired",
    "event.opened": "Opened by reader",
    "event.report_addendum": "Addendum signed",
    "event.report_cosigned": "Report co-signed",
    "event.delivered": "Report delivered to the clinic",
    "event.sr_stored": "Report stored with the study",
    "event.ecg_analysed": "ECG analysed",
    "event.marked_complete": "Marked complete by the clinic",
    "event.instance_resent": "Image sent again",
    "detail.reason": "Reason",
    "detail.to": "To",
  },
  "zh-CN": {
    "workspace.liveCase": "本页面会自动更新。",
    "workspace.waiting": "已等待",
    "workspace.slaDeadline": "报告时限",
    "workspace.pdf": "下载 PDF",
    "workspace.pdfOf": "下载第 {v} 版 PDF",
    "workspace.cosigned": "{name} 已会签 · {at}",
    "report.status.addendum": "补充报告",
    "event.priority_raised": "紧急程度已提高",
    "event.priority_changed": "紧急程度已更改",
    "event.escalated": "已上转",
    "event.second_opinion_requested": "已申请第二意见",
    "event.sla_warning": "报告即将超时",
    "event.sla_breached": "报告已超时",
    "event.assigned": "已分派给诊断医生",
    "event.unclaimed": "诊断医生已释放",
    "event.lease_expired": "认领已过期",
    "event.opened": "诊断医生已打开",
    "event.report_addendum": "补充报告已签发",
    "event.report_cosigned": "报告已会签",
    "event.delivered": "报告已送达申请机构",
    "event.sr_stored": "报告已随检查归档",
    "event.ecg_analysed": "心电图已自动分析",
    "event.marked_complete": "申请机构已确认发送完毕",
    "event.instance_resent": "影像已重发",
    "detail.reason": "原因",
    "detail.to": "至",
  },
});

const TAT_PARTS = [
  "first_instance_to_complete",
  "complete_to_routed",
  "routed_to_claimed",
  "claimed_to_final",
  "complete_to_final",
];
const LIVE_DEBOUNCE_MS = 300;

const casePanels = [];

/**
 * A panel in the case view: addCasePanel({name, column: "main" | "side", order,
 * render(c, ctx, reload) -> Node | null}). `c` is GET /api/v1/cases/{id}; `reload()` fetches
 * it again and re-renders the page. Panels that hold resources use ctx.onLeave().
 */
export function addCasePanel(panel) {
  casePanels.push(panel);
  casePanels.sort((a, b) => (a.order ?? 50) - (b.order ?? 50));
}

function panels(column, c, ctx, reload) {
  return casePanels
    .filter((p) => (p.column || "main") === column)
    .map((p) => {
      try {
        return p.render(c, ctx, reload);
      } catch (err) {
        console.error("telehub case panel", p.name, err);
        return errorBox({ code: "ui", message: `${p.name}: ${err}` });
      }
    });
}

/** Where the keyboard was (an editor field), to put it back after a live re-render. */
function focusMark() {
  const el = document.activeElement;
  if (!el || !el.id || !(el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement
    || el instanceof HTMLSelectElement)) return null;
  return { id: el.id, start: el.selectionStart, end: el.selectionEnd };
}

function restoreFocus(mark) {
  if (!mark) return;
  const el = document.getElementById(mark.id);
  if (!el) return;
  el.focus({ preventScroll: true });
  if (typeof mark.start === "number" && el.setSelectionRange) {
    try {
      el.setSelectionRange(mark.start, mark.end);
    } catch {
      // not a text field
    }
  }
}

function caseView(ctx) {
  loadStyle("workspace");
  const { main, state, user } = ctx;
  const id = Number(ctx.params.id);
  const back = h("a", { href: state.lastList || homeHash(user), class: "back-link" },
    h("span", { "aria-hidden": "true" }, "← "), t("case.back"));
  const body = h("div", null, h("p", { class: "muted" }, t("loading")));
  main.append(back, body);
  const key = `case:${id}`;
  let loads = 0;

  async function load({ live = false } = {}) {
    const mine = ++loads;
    try {
      const c = await api("GET", `/cases/${id}`);
      if (!ctx.isCurrent() || mine !== loads) return;
      state.cache.set(key, c);
      const flash = state.flash && state.flash.id === id ? state.flash : null;
      state.flash = null;
      const mark = live ? focusMark() : null;
      const scroll = window.scrollY;
      fill(body, caseDetail(c, ctx, load, flash));
      if (live) {
        window.scrollTo(0, scroll);
        restoreFocus(mark);
      } else ctx.focusHeading(body);
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      if (live) return; // a live refresh that failed: the page shown stays
      state.flash = null;
      fill(body, h("h1", { tabindex: "-1" }, t("case.title", { id })), errorBox(err));
      ctx.focusHeading(body);
    }
  }
  if (state.cache.has(key)) {
    fill(body, caseDetail(state.cache.get(key), ctx, load, null));
    ctx.focusHeading(body);
  }
  load();

  // Live: the case's own events (a report signed, a claim, more images) reload it.
  let pending = null;
  const unsubscribe = subscribe((type, data) => {
    if (type !== "case" || !data || Number(data.case_id) !== id || pending) return;
    pending = setTimeout(() => {
      pending = null;
      if (ctx.isCurrent()) load({ live: true });
    }, LIVE_DEBOUNCE_MS);
  });
  ctx.onLeave(() => {
    unsubscribe();
    if (pending) clearTimeout(pending);
  });
}

function caseDetail(c, ctx, reload, flash) {
  const p = c.patient;
  const head = h("div", { class: "case-head" },
    h("h1", { tabindex: "-1" }, t("case.title", { id: c.id })),
    h("div", { class: "badges", id: "case-badges", "data-status": c.status, "data-priority": c.priority },
      priorityBadge(c.priority), statusBadge(c.status),
      h("span", { class: "badge kind" }, label("kind", c.kind))),
    h("span", { class: "muted small live-note" }, t("workspace.liveCase")));

  const summary = section("case.summary", fields([
    [t("case.patient"), p ? formatPersonName(p.name) : t("none")],
    [t("case.patientId"), p ? [p.patient_id || t("none"), p.issuer ? ` (${p.issuer})` : ""].join("") : t("none")],
    [t("case.sex"), p && p.sex ? label("sex", p.sex) : t("none")],
    [t("case.birthDate"), p ? formatDicomDate(p.birth_date) : t("none")],
    [t("case.origin"), c.origin.name],
    [t("case.centre"), c.centre ? c.centre.name : t("none")],
    [t("case.reader"), c.reader ? c.reader.name || c.reader.username : t("none")],
    [t("case.arrived"), formatDateTime(c.arrived_at)],
    [t("case.question"), h("span", { id: "case-question" }, c.clinical_question || t("none"))],
  ]));

  const left = [summary, readerPanel(c, ctx, reload, flash), panels("main", c, ctx, reload),
    studiesSection(c), reportsSection(c, ctx, reload)];
  const right = [escalatePanel(c, ctx), panels("side", c, ctx, reload), tatSection(c), timelineSection(c)];
  const escalated = ctx.state.drafts.get(`escalated:${c.id}`);
  return [
    head,
    flash && !flash.inPanel ? flash.node : null,
    escalated ? escalatedNotice(escalated) : null,
    h("div", { class: "case-grid" }, h("div", { class: "col-main" }, left), h("div", { class: "col-side" }, right)),
  ];
}

function studiesSection(c) {
  const studies = c.studies || [];
  if (!studies.length) return section("studies.title", h("p", { class: "muted" }, t("studies.none")));
  return section("studies.title", studies.map((s) => {
    const series = s.series || [];
    return h("article", { class: "study" },
      h("h3", null, s.description || t("study.untitled"),
        h("span", { class: "muted small" }, " · ", (s.modalities || []).join(", ") || t("none"))),
      h("p", { class: "muted small" }, t("study.counts", { series: series.length, images: s.instance_count })),
      fields([
        [t("study.date"), formatDicomDate(s.study_date)],
        [t("study.accession"), s.accession_number || t("none")],
        [t("study.completedAt"), formatDateTime(s.completed_at)],
      ]),
      series.length
        ? h("div", { class: "table-scroll" }, h("table", { class: "series-table" },
          h("caption", { class: "sr-only" }, t("series.caption")),
          h("thead", null, h("tr", null,
            [t("series.number"), t("series.modality"), t("series.description"), t("series.bodyPart"), t("series.images")]
              .map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", null, series.map((se) => h("tr", null,
            h("td", null, se.series_number ?? t("none")),
            h("td", null, se.modality || t("none")),
            h("td", null, se.description || t("none")),
            h("td", null, se.body_part || t("none")),
            h("td", { class: "num" }, se.instance_count))))))
        : null);
  }));
}

function reportsSection(c, ctx, reload) {
  const reports = [...(c.reports || [])].sort((a, b) => b.version - a.version);
  if (!reports.length) return section("reports.title", h("p", { class: "muted", id: "reports-none" }, t("reports.none")));
  return section("reports.title", reports.map((r) =>
    h("article", { class: `report report-${r.status}`, "data-report": r.version, "data-status": r.status },
      h("header", { class: "report-head" },
        h("span", { class: `badge status status-${r.status}` }, label("report.status", r.status)),
        h("strong", null, t("report.version", { v: r.version })),
        h("span", { class: "muted small" }, r.author ? r.author.name || r.author.username : t("none"),
          " · ", h("time", { datetime: r.created_at }, formatDateTime(r.created_at))),
        h("span", { class: "report-tools" }, pdfButton(c, r))),
      h("div", { class: "report-text" }, r.text),
      (r.cosignatures || []).map((s) => h("p", { class: "cosignature small" },
        h("span", { "aria-hidden": "true" }, "✓ "),
        t("workspace.cosigned", { name: s.user.name || s.user.username, at: formatDateTime(s.at) }),
        s.comment ? h("span", { class: "muted" }, ` — ${s.comment}`) : null)),
      cosignForm(c, r, ctx, reload))));
}

function pdfButton(c, r) {
  const errors = h("span");
  const button = h("button", {
    type: "button",
    class: "btn btn-ghost btn-small",
    "data-pdf": r.version,
    "aria-label": t("workspace.pdfOf", { v: r.version }),
  }, t("workspace.pdf"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    errors.replaceChildren();
    try {
      await download(`/cases/${c.id}/reports/${r.version}.pdf`, `telehub-case-${c.id}-v${r.version}.pdf`, "application/pdf");
    } catch (err) {
      if (!(err instanceof SessionEnded)) errors.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  return [button, errors];
}

function tatSection(c) {
  const tat = c.tat || {};
  const open = c.status !== "final";
  return section("tat.title",
    h("dl", { class: "tat", id: "case-tat" },
      TAT_PARTS.map((part) =>
        h("div", { class: `tat-row${part === "complete_to_final" ? " tat-total" : ""}`, "data-tat": part },
          h("dt", null, t(`tat.${part}`)),
          h("dd", null, formatDuration(tat[part])))),
      open ? h("div", { class: "tat-row" }, h("dt", null, t("workspace.waiting")),
        h("dd", null, formatAgo(c.arrived_at))) : null,
      open && c.sla_deadline ? h("div", { class: "tat-row" }, h("dt", null, t("workspace.slaDeadline")),
        h("dd", null, formatDateTime(c.sla_deadline, { seconds: false }), h("br"), slaCell(c))) : null));
}

const DETAIL_KEYS = ["centre", "instances", "version", "source", "reason", "to"];

function timelineSection(c) {
  const events = [...(c.timeline || [])].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  if (!events.length) return section("timeline.title", h("p", { class: "muted" }, t("timeline.none")));
  const people = new Map();
  if (c.reader) people.set(c.reader.id, c.reader.name || c.reader.username);
  for (const r of c.reports || []) if (r.author) people.set(r.author.id, r.author.name || r.author.username);
  return section("timeline.title", h("ol", { class: "timeline" }, events.map((e) => {
    const detail = e.detail || {};
    const bits = DETAIL_KEYS.filter((k) => detail[k] !== undefined && detail[k] !== null && detail[k] !== "")
      .map((k) => `${t(`detail.${k}`)}: ${detail[k]}`);
    if (e.actor_id !== null && e.actor_id !== undefined && people.has(e.actor_id)) {
      bits.push(`${t("detail.by")}: ${people.get(e.actor_id)}`);
    }
    return h("li", { class: `event event-${e.kind}` },
      h("time", { datetime: e.at, class: "muted small" }, formatDateTime(e.at)),
      h("div", { class: "event-kind" }, label("event", e.kind)),
      bits.length ? h("div", { class: "muted small" }, bits.join(" · ")) : null);
  })));
}

addRoute({ name: "case", path: "cases/:id", view: caseView, navAs: "cases" });
