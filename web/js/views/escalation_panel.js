// Escalation and second opinion: a reader sends the case up to the higher-tier reading
// centre with a reason. The panel sits on top of the case view's side column; the notice it
// leaves stays on top of the page through live re-renders.

import { api, SessionEnded } from "/static/js/api.js";
import { h } from "/static/js/dom.js";
import { addStrings, t } from "/static/js/i18n.js";
import { errorBox } from "/static/js/ui.js";

addStrings({
  en: {
    "workspace.escalateTitle": "Escalate or ask for a second opinion",
    "workspace.escalateReason": "Reason",
    "workspace.escalateHint": "The case goes to the higher-tier reading centre with your reason; your claim is released.",
    "workspace.escalate": "Escalate to tertiary",
    "workspace.secondOpinion": "Ask for a second opinion",
    "workspace.escalated": "Case #{id} was sent up to {centre}.",
    "workspace.reasonNeeded": "Please give a reason.",
    "workspace.backToWorklist": "Back to the worklist",
  },
  "zh-CN": {
    "workspace.escalateTitle": "上转或申请第二意见",
    "workspace.escalateReason": "原因",
    "workspace.escalateHint": "病例将连同您填写的原因转至上级诊断中心，您的认领随之释放。",
    "workspace.escalate": "上转上级医院",
    "workspace.secondOpinion": "申请第二意见",
    "workspace.escalated": "病例 #{id} 已上转至{centre}。",
    "workspace.reasonNeeded": "请填写原因。",
    "workspace.backToWorklist": "返回工作列表",
  },
});

const OPEN_FOR_ESCALATION = new Set(["routed", "claimed", "preliminary"]);

/** What a reader sees once the case went up: the outcome and the way back to the worklist. */
export function escalatedNotice(text) {
  return h("div", { class: "alert alert-success", role: "status", id: "case-escalated" },
    h("p", null, text), h("a", { href: "#/worklist", class: "btn btn-secondary btn-small" }, t("workspace.backToWorklist")));
}

/** The escalate / second-opinion form, for the case's reader or a reader of its centre. */
export function escalatePanel(c, ctx) {
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
