// The case view: summary, the reader's claim and report editor, studies, reports, turnaround
// and timeline. Other features (image and ECG viewers, priors, consults) add their own panels
// with addCasePanel(), so this file does not grow with each of them.

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
  getLang,
  label,
  t,
} from "/static/js/i18n.js";
import { subscribe } from "/static/js/live.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, fields, notice, priorityBadge, section, statusBadge } from "/static/js/ui.js";
import { slaCell } from "/static/js/views/worklist.js";

addStrings({
  en: {
    "workspace.liveCase": "This page updates by itself.",
    "workspace.waiting": "Waiting",
    "workspace.slaDeadline": "Report due by",
    "workspace.template": "Template",
    "workspace.freeText": "Free text",
    "workspace.templatesLoading": "Loading templates…",
    "workspace.addendum": "Add an addendum",
    "workspace.addendumHint": "An addendum adds to the signed report; the signed text stays as it was.",
    "workspace.saveAddendum": "Sign addendum",
    "workspace.addendumSaved": "Addendum signed (version {v}).",
    "workspace.pdf": "Download PDF",
    "workspace.pdfOf": "Download version {v} as PDF",
    "workspace.cosign": "Co-sign",
    "workspace.cosignComment": "Comment (optional)",
    "workspace.cosigned": "Co-signed by {name} · {at}",
    "workspace.cosignDone": "You co-signed version {v}.",
    "workspace.escalateTitle": "Escalate or ask for a second opinion",
    "workspace.escalateReason": "Reason",
    "workspace.escalateHint": "The case goes to the higher-tier reading centre with your reason; your claim is released.",
    "workspace.escalate": "Escalate to tertiary",
    "workspace.secondOpinion": "Ask for a second opinion",
    "workspace.escalated": "Case #{id} was sent up to {centre}.",
    "workspace.reasonNeeded": "Please give a reason.",
    "workspace.backToWorklist": "Back to the worklist",
    "workspace.priors": "Prior examinations",
    "workspace.priorsNone": "No prior examinations of this patient in the consortium.",
    "workspace.priorsLoading": "Looking for prior examinations…",
    "workspace.priorFinal": "Final report ({author}, {at})",
    "workspace.priorNoReport": "No final report",
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
    "workspace.template": "报告模板",
    "workspace.freeText": "自由文本",
    "workspace.templatesLoading": "正在加载模板…",
    "workspace.addendum": "补充报告",
    "workspace.addendumHint": "补充报告附加在已签发报告之后，原报告内容保持不变。",
    "workspace.saveAddendum": "签发补充报告",
    "workspace.addendumSaved": "补充报告已签发（第 {v} 版）。",
    "workspace.pdf": "下载 PDF",
    "workspace.pdfOf": "下载第 {v} 版 PDF",
    "workspace.cosign": "会签",
    "workspace.cosignComment": "意见（可选）",
    "workspace.cosigned": "{name} 已会签 · {at}",
    "workspace.cosignDone": "您已会签第 {v} 版。",
    "workspace.escalateTitle": "上转或申请第二意见",
    "workspace.escalateReason": "原因",
    "workspace.escalateHint": "病例将连同您填写的原因转至上级诊断中心，您的认领随之释放。",
    "workspace.escalate": "上转上级医院",
    "workspace.secondOpinion": "申请第二意见",
    "workspace.escalated": "病例 #{id} 已上转至{centre}。",
    "workspace.reasonNeeded": "请填写原因。",
    "workspace.backToWorklist": "返回工作列表",
    "workspace.priors": "既往检查",
    "workspace.priorsNone": "医联体内未找到该患者的既往检查。",
    "workspace.priorsLoading": "正在查找既往检查…",
    "workspace.priorFinal": "审核报告（{author}，{at}）",
    "workspace.priorNoReport": "尚无审核报告",
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

const READER_EDITABLE = new Set(["claimed", "preliminary"]);
const OPEN_FOR_ESCALATION = new Set(["routed", "claimed", "preliminary"]);
const SIGNED = new Set(["final", "addendum"]);
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

/** Claim button, report editor or addendum editor, only for readers and only when it applies. */
function readerPanel(c, ctx, reload, flash) {
  const { user } = ctx;
  if (user.role !== "reader") return null;
  const mine = c.reader && c.reader.id === user.id;
  if (c.status === "routed" && !c.reader) return claimPanel(c, ctx, reload);
  if (mine && READER_EDITABLE.has(c.status)) return editorPanel(c, ctx, reload, flash, "report");
  if (c.reader && !mine && READER_EDITABLE.has(c.status)) {
    return notice(t("case.claimedBy", { name: c.reader.name || c.reader.username }));
  }
  if (c.status === "final" && mayAddAddendum(c, user)) return editorPanel(c, ctx, reload, flash, "addendum");
  return flash && flash.inPanel ? flash.node : null;
}

function mayAddAddendum(c, user) {
  const final = (c.reports || []).find((r) => r.status === "final");
  if (!final) return false;
  return (final.author && final.author.id === user.id) || (c.centre && c.centre.id === user.centre_id);
}

function claimPanel(c, ctx, reload) {
  const { state } = ctx;
  const errors = h("div");
  const button = h("button", { type: "button", class: "btn btn-primary", id: "case-claim" }, t("case.claim"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = t("case.claiming");
    errors.replaceChildren();
    try {
      await api("POST", `/cases/${c.id}/claim`);
      state.flash = { id: c.id, node: notice(t("case.claimed"), "success"), inPanel: true };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      if (err.status === 409 || err.status === 404) {
        // the case moved on meanwhile: show where it is now, with the reason on top
        state.flash = { id: c.id, node: errorBox(err), inPanel: false };
        await reload();
        return;
      }
      button.disabled = false;
      button.textContent = t("case.claim");
      errors.replaceChildren(errorBox(err));
    }
  });
  return h("section", { class: "card action-card", "aria-label": t("case.claim") },
    h("p", null, t("case.claimHint")), errors, button);
}

// ----- the report editor (free text, or a template's sections) -------------------------------

/** The draft of a case: {template, text, sections}; kept across re-renders in ctx.state.drafts. */
function draftOf(c, state, mode) {
  const key = `${mode}:${c.id}`;
  if (state.drafts.has(key)) return state.drafts.get(key);
  const latest = [...(c.reports || [])].filter((r) => r.status === "preliminary").sort((a, b) => b.version - a.version)[0];
  const draft = mode === "report" && latest
    ? { template: latest.template || "", text: latest.text, sections: latest.sections || {}, fromReport: true }
    : { template: null, text: "", sections: {} }; // template null: not chosen yet
  state.drafts.set(key, draft);
  return draft;
}

function templatesFor(c, state) {
  const modality = c.kind === "imaging" ? (c.modalities || []).find((m) => m !== "SR") || "" : "";
  const cacheKey = `templates:${c.kind}:${modality}`;
  if (state.cache.has(cacheKey)) return Promise.resolve(state.cache.get(cacheKey));
  const query = new URLSearchParams({ kind: c.kind });
  if (modality) query.set("modality", modality);
  return api("GET", `/report-templates?${query}`).then((data) => {
    const list = (data.templates || []).filter((tpl) => tpl.active !== false);
    // the case's own modality first, then the interface language, then the rest
    const lang = getLang();
    list.sort((a, b) => (b.modality === modality) - (a.modality === modality)
      || (b.language === lang) - (a.language === lang));
    state.cache.set(cacheKey, list);
    return list;
  });
}

function editorPanel(c, ctx, reload, flash, mode) {
  const { state } = ctx;
  const draftKey = `${mode}:${c.id}`;
  const draft = draftOf(c, state, mode);
  const messages = h("div", { "aria-live": "polite" });
  if (flash && flash.inPanel) messages.append(flash.node);
  const templateSelect = h("select", { id: `report-template-${c.id}`, disabled: true },
    h("option", { value: "" }, t("workspace.templatesLoading")));
  const fieldsSlot = h("div", { class: "report-fields" });
  let templates = [];

  function currentTemplate() {
    return templates.find((tpl) => tpl.code === draft.template) || null;
  }

  function drawFields() {
    const tpl = currentTemplate();
    if (!tpl) {
      const text = h("textarea", { id: `report-text-${c.id}`, rows: "10", "aria-describedby": `report-hint-${c.id}` });
      text.value = draft.text;
      text.addEventListener("input", () => { draft.text = text.value; });
      fill(fieldsSlot, h("label", { for: `report-text-${c.id}` }, t("editor.label")), text);
      return;
    }
    fill(fieldsSlot, tpl.sections.map((sec) => {
      const id = `report-section-${c.id}-${sec.key}`;
      const area = h("textarea", { id, rows: sec.key === "findings" || sec.key === "conclusion" ? "5" : "2", "data-section": sec.key });
      area.value = sec.key in draft.sections ? draft.sections[sec.key] : sec.text || "";
      draft.sections[sec.key] = area.value;
      area.addEventListener("input", () => { draft.sections[sec.key] = area.value; });
      return h("div", { class: "field report-section" }, h("label", { for: id }, sec.title), area);
    }));
  }

  templateSelect.addEventListener("change", () => {
    draft.template = templateSelect.value;
    draft.sections = {};
    drawFields();
  });

  if (mode === "report") {
    templatesFor(c, state).then((list) => {
      if (!ctx.isCurrent()) return;
      templates = list;
      if (draft.template === null) draft.template = list.length ? list[0].code : "";
      if (draft.template && !currentTemplate()) draft.template = "";
      fill(templateSelect, h("option", { value: "" }, t("workspace.freeText")),
        list.map((tpl) => h("option", { value: tpl.code }, tpl.name)));
      templateSelect.value = draft.template;
      templateSelect.disabled = false;
      drawFields();
    }).catch((err) => {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      draft.template = "";
      templateSelect.replaceChildren(h("option", { value: "" }, t("workspace.freeText")));
      templateSelect.disabled = false;
      drawFields();
    });
  } else {
    draft.template = "";
  }
  drawFields();

  function body(status) {
    const tpl = currentTemplate();
    if (tpl) {
      const sections = {};
      for (const sec of tpl.sections) sections[sec.key] = draft.sections[sec.key] ?? "";
      const filled = Object.entries(sections).some(([k, v]) => v.trim() && v.trim() !== (tpl.sections.find((x) => x.key === k).text || "").trim());
      return filled ? { status, template: tpl.code, sections } : null;
    }
    return draft.text.trim() ? { status, text: draft.text } : null;
  }

  const savePrelim = h("button", { type: "button", class: "btn btn-secondary", id: `report-prelim-${c.id}` }, t("editor.savePrelim"));
  const signFinal = h("button", { type: "button", class: "btn btn-primary", id: `report-final-${c.id}` },
    mode === "addendum" ? t("workspace.saveAddendum") : t("editor.signFinal"));

  async function save(status) {
    messages.replaceChildren();
    const payload = body(status);
    if (!payload) {
      messages.append(h("div", { class: "alert alert-error", role: "alert" }, h("p", null, t("editor.empty"))));
      const first = fieldsSlot.querySelector("textarea");
      if (first) first.focus();
      return;
    }
    if (status === "final" && !window.confirm(t("editor.confirmFinal"))) return;
    const buttons = [savePrelim, signFinal];
    buttons.forEach((b) => { b.disabled = true; });
    const clicked = status === "preliminary" ? savePrelim : signFinal;
    const original = clicked.textContent;
    clicked.textContent = t("editor.saving");
    try {
      const res = await api("POST", `/cases/${c.id}/reports`, payload);
      state.drafts.delete(draftKey);
      const key = status === "final" ? "editor.signed" : status === "addendum" ? "workspace.addendumSaved" : "editor.saved";
      state.flash = { id: c.id, node: notice(t(key, { v: res.version }), "success"), inPanel: status === "preliminary" };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      buttons.forEach((b) => { b.disabled = false; });
      clicked.textContent = original;
      messages.replaceChildren(errorBox(err));
    }
  }
  savePrelim.addEventListener("click", () => save("preliminary"));
  signFinal.addEventListener("click", () => save(mode === "addendum" ? "addendum" : "final"));

  const title = mode === "addendum" ? t("workspace.addendum") : t("editor.title");
  return h("section", { class: `card editor editor-${mode}`, id: `editor-${c.id}`, "aria-labelledby": `editor-title-${c.id}` },
    h("h2", { id: `editor-title-${c.id}` }, title),
    messages,
    mode === "report"
      ? h("div", { class: "field template-field" }, h("label", { for: `report-template-${c.id}` }, t("workspace.template")), templateSelect)
      : null,
    fieldsSlot,
    h("p", { id: `report-hint-${c.id}`, class: "muted small" }, mode === "addendum" ? t("workspace.addendumHint") : t("editor.hint")),
    h("div", { class: "actions" }, mode === "report" ? savePrelim : null, signFinal));
}

// ----- escalation and second opinion ---------------------------------------------------------

function escalatedNotice(text) {
  return h("div", { class: "alert alert-success", role: "status", id: "case-escalated" },
    h("p", null, text), h("a", { href: "#/worklist", class: "btn btn-secondary btn-small" }, t("workspace.backToWorklist")));
}

function escalatePanel(c, ctx) {
  const { user } = ctx;
  if (user.role !== "reader" || !OPEN_FOR_ESCALATION.has(c.status)) return null;
  const mine = c.reader && c.reader.id === user.id;
  const atMyCentre = !c.reader && c.centre && c.centre.id === user.centre_id;
  if (!mine && !atMyCentre) return null;
  // Open state and reason survive a re-render (a live update, a language switch).
  const kept = ctx.state.drafts.get(`escalate:${c.id}`) || { open: false, reason: "" };
  ctx.state.drafts.set(`escalate:${c.id}`, kept);
  const messages = h("div", { "aria-live": "polite" });
  const reason = h("textarea", { id: `escalate-reason-${c.id}`, rows: "3", maxlength: "2000", "aria-describedby": `escalate-hint-${c.id}` });
  reason.value = kept.reason;
  reason.addEventListener("input", () => { kept.reason = reason.value; });
  const up = h("button", { type: "button", class: "btn btn-secondary", id: `escalate-${c.id}` }, t("workspace.escalate"));
  const second = h("button", { type: "button", class: "btn btn-ghost", id: `second-opinion-${c.id}` }, t("workspace.secondOpinion"));
  const panel = h("details", { class: "card escalate", id: `escalate-panel-${c.id}` },
    h("summary", null, t("workspace.escalateTitle")),
    messages,
    h("div", { class: "field" }, h("label", { for: `escalate-reason-${c.id}` }, t("workspace.escalateReason")), reason),
    h("p", { id: `escalate-hint-${c.id}`, class: "muted small" }, t("workspace.escalateHint")),
    h("div", { class: "actions" }, second, up));
  panel.open = kept.open;
  panel.addEventListener("toggle", () => { kept.open = panel.open; });

  async function send(path) {
    messages.replaceChildren();
    if (!reason.value.trim()) {
      messages.append(h("div", { class: "alert alert-error", role: "alert" }, h("p", null, t("workspace.reasonNeeded"))));
      reason.focus();
      return;
    }
    up.disabled = true;
    second.disabled = true;
    try {
      const res = await api("POST", `/cases/${c.id}/${path}`, { reason: reason.value.trim() });
      ctx.state.drafts.delete(`report:${c.id}`);
      ctx.state.drafts.delete(`escalate:${c.id}`);
      const done = t("workspace.escalated", { id: c.id, centre: res.centre ? res.centre.name : "" });
      ctx.state.drafts.set(`escalated:${c.id}`, done); // shown on top, through live re-renders
      panel.replaceWith(escalatedNotice(done));
    } catch (err) {
      if (err instanceof SessionEnded) return;
      up.disabled = false;
      second.disabled = false;
      messages.replaceChildren(errorBox(err));
    }
  }
  up.addEventListener("click", () => send("escalate"));
  second.addEventListener("click", () => send("second-opinion"));
  return panel;
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

/** Co-signing is for a tertiary reader who got the case by escalation or second opinion. */
function cosignForm(c, r, ctx, reload) {
  const { user, state } = ctx;
  if (user.role !== "reader" || !SIGNED.has(r.status)) return null;
  if (r.author && r.author.id === user.id) return null;
  if ((r.cosignatures || []).some((s) => s.user.id === user.id)) return null;
  if (!(c.escalations > 0 || c.second_opinion) || !c.centre || c.centre.id !== user.centre_id) return null;
  const comment = h("input", { id: `cosign-comment-${c.id}-${r.version}`, maxlength: "2000" });
  const errors = h("div");
  const button = h("button", { type: "button", class: "btn btn-secondary btn-small", "data-cosign": r.version }, t("workspace.cosign"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    errors.replaceChildren();
    try {
      await api("POST", `/cases/${c.id}/reports/${r.version}/cosign`, comment.value.trim() ? { comment: comment.value.trim() } : {});
      state.flash = { id: c.id, node: notice(t("workspace.cosignDone", { v: r.version }), "success"), inPanel: false };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      button.disabled = false;
      errors.replaceChildren(errorBox(err));
    }
  });
  return h("div", { class: "cosign" }, errors,
    h("label", { for: `cosign-comment-${c.id}-${r.version}`, class: "small" }, t("workspace.cosignComment")), comment, button);
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

// ----- priors (检查结果互认): the patient's other examinations in the consortium -------------

function priorsPanel(c, ctx) {
  if (ctx.user.role !== "reader" && ctx.user.role !== "admin") return null;
  const key = `priors:${c.id}`;
  const list = h("div", { id: `priors-${c.id}` }, h("p", { class: "muted small" }, t("workspace.priorsLoading")));
  function show(data) {
    const priors = data.priors || [];
    if (!priors.length) {
      fill(list, h("p", { class: "muted small" }, t("workspace.priorsNone")));
      return;
    }
    fill(list, h("ol", { class: "priors" }, priors.map((p) => h("li", { class: "prior", "data-prior": p.case_id },
      h("div", { class: "prior-head" },
        h("a", { href: `#/cases/${p.case_id}` }, p.date),
        " · ", (p.modalities || []).join(", ") || label("kind", p.kind),
        h("span", { class: "muted small" }, " · ", p.facility.name)),
      p.final_report
        ? h("details", null,
          h("summary", { class: "small" }, t("workspace.priorFinal", { author: p.final_report.author, at: formatDateTime(p.final_report.signed_at, { seconds: false }) })),
          h("div", { class: "report-text small" }, p.final_report.text))
        : h("p", { class: "muted small" }, t("workspace.priorNoReport"))))));
  }
  if (ctx.state.cache.has(key)) show(ctx.state.cache.get(key));
  api("GET", `/cases/${c.id}/priors`).then((data) => {
    if (!ctx.isCurrent()) return;
    ctx.state.cache.set(key, data);
    show(data);
  }).catch((err) => {
    if (err instanceof SessionEnded || !ctx.isCurrent()) return;
    fill(list, errorBox(err));
  });
  return section("workspace.priors", list);
}

addCasePanel({ name: "priors", column: "side", order: 20, render: priorsPanel });

addRoute({ name: "case", path: "cases/:id", view: caseView, navAs: "cases" });
