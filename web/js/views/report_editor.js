// The reader's side of a case: claiming it, the report editor (free text or a template's
// sections, kept as a draft across re-renders; preliminary, final, addendum) and co-signing a
// signed report. case.js places these; this file knows how they work.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h } from "/static/js/dom.js";
import { addStrings, getLang, t } from "/static/js/i18n.js";
import { errorBox, notice } from "/static/js/ui.js";

addStrings({
  en: {
    "workspace.template": "Template",
    "workspace.freeText": "Free text",
    "workspace.templatesLoading": "Loading templates…",
    "workspace.addendum": "Add an addendum",
    "workspace.addendumHint": "An addendum adds to the signed report; the signed text stays as it was.",
    "workspace.saveAddendum": "Sign addendum",
    "workspace.addendumSaved": "Addendum signed (version {v}).",
    "workspace.cosign": "Co-sign",
    "workspace.cosignComment": "Comment (optional)",
    "workspace.cosignDone": "You co-signed version {v}.",
  },
  "zh-CN": {
    "workspace.template": "报告模板",
    "workspace.freeText": "自由文本",
    "workspace.templatesLoading": "正在加载模板…",
    "workspace.addendum": "补充报告",
    "workspace.addendumHint": "补充报告附加在已签发报告之后，原报告内容保持不变。",
    "workspace.saveAddendum": "签发补充报告",
    "workspace.addendumSaved": "补充报告已签发（第 {v} 版）。",
    "workspace.cosign": "会签",
    "workspace.cosignComment": "意见（可选）",
    "workspace.cosignDone": "您已会签第 {v} 版。",
  },
});

const READER_EDITABLE = new Set(["claimed", "preliminary"]);
const SIGNED = new Set(["final", "addendum"]);

/** Claim button, report editor or addendum editor, only for readers and only when it applies. */
export function readerPanel(c, ctx, reload, flash) {
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

/** Co-signing is for a tertiary reader who got the case by escalation or second opinion. */
export function cosignForm(c, r, ctx, reload) {
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
