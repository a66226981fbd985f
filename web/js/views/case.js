// The case view: summary, the reader's claim and report editor, studies, reports, turnaround
// and timeline. Other features (image and ECG viewers, priors, consults) add their own panels
// with addCasePanel(), so this file does not grow with each of them.

import { api, SessionEnded } from "/static/js/api.js";
import { homeHash } from "/static/js/app.js";
import { fill, h } from "/static/js/dom.js";
import { formatDateTime, formatDicomDate, formatDuration, formatPersonName, label, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, fields, notice, priorityBadge, section, statusBadge } from "/static/js/ui.js";

const READER_EDITABLE = new Set(["claimed", "preliminary"]);
const TAT_PARTS = [
  "first_instance_to_complete",
  "complete_to_routed",
  "routed_to_claimed",
  "claimed_to_final",
  "complete_to_final",
];

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

function caseView(ctx) {
  const { main, state, user } = ctx;
  const id = Number(ctx.params.id);
  const back = h("a", { href: state.lastList || homeHash(user), class: "back-link" },
    h("span", { "aria-hidden": "true" }, "← "), t("case.back"));
  const body = h("div", null, h("p", { class: "muted" }, t("loading")));
  main.append(back, body);
  const key = `case:${id}`;

  async function load() {
    try {
      const c = await api("GET", `/cases/${id}`);
      if (!ctx.isCurrent()) return;
      state.cache.set(key, c);
      const flash = state.flash && state.flash.id === id ? state.flash : null;
      state.flash = null;
      fill(body, caseDetail(c, ctx, load, flash));
      ctx.focusHeading(body);
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
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
}

function caseDetail(c, ctx, reload, flash) {
  const { user, state } = ctx;
  const p = c.patient;
  const head = h("div", { class: "case-head" },
    h("h1", { tabindex: "-1" }, t("case.title", { id: c.id })),
    h("div", { class: "badges" }, priorityBadge(c.priority), statusBadge(c.status),
      h("span", { class: "badge kind" }, label("kind", c.kind))));

  const summary = section("case.summary", fields([
    [t("case.patient"), p ? formatPersonName(p.name) : t("none")],
    [t("case.patientId"), p ? [p.patient_id || t("none"), p.issuer ? ` (${p.issuer})` : ""].join("") : t("none")],
    [t("case.sex"), p && p.sex ? label("sex", p.sex) : t("none")],
    [t("case.birthDate"), p ? formatDicomDate(p.birth_date) : t("none")],
    [t("case.origin"), c.origin.name],
    [t("case.centre"), c.centre ? c.centre.name : t("none")],
    [t("case.reader"), c.reader ? c.reader.name || c.reader.username : t("none")],
    [t("case.arrived"), formatDateTime(c.arrived_at)],
    [t("case.question"), c.clinical_question || t("none")],
  ]));

  const left = [summary, readerPanel(c, ctx, reload, flash), panels("main", c, ctx, reload),
    studiesSection(c), reportsSection(c)];
  const right = [panels("side", c, ctx, reload), tatSection(c), timelineSection(c)];
  return [
    head,
    flash && !flash.inPanel ? flash.node : null,
    h("div", { class: "case-grid" }, h("div", { class: "col-main" }, left), h("div", { class: "col-side" }, right)),
  ];
}

/** Claim button or report editor, only for readers and only when it applies. */
function readerPanel(c, ctx, reload, flash) {
  const { user } = ctx;
  if (user.role !== "reader") return null;
  const mine = c.reader && c.reader.id === user.id;
  if (c.status === "routed" && !c.reader) return claimPanel(c, ctx, reload);
  if (mine && READER_EDITABLE.has(c.status)) return editorPanel(c, ctx, reload, flash);
  if (c.reader && !mine && READER_EDITABLE.has(c.status)) {
    return notice(t("case.claimedBy", { name: c.reader.name || c.reader.username }));
  }
  return null;
}

function claimPanel(c, ctx, reload) {
  const { state } = ctx;
  const errors = h("div");
  const button = h("button", { type: "button", class: "btn btn-primary" }, t("case.claim"));
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

function editorPanel(c, ctx, reload, flash) {
  const { state } = ctx;
  const latest = [...(c.reports || [])].sort((a, b) => b.version - a.version)[0];
  const draft = state.drafts.has(c.id) ? state.drafts.get(c.id) : latest ? latest.text : "";
  const messages = h("div", { "aria-live": "polite" });
  if (flash && flash.inPanel) messages.append(flash.node);
  const text = h("textarea", { id: `report-text-${c.id}`, rows: "10", "aria-describedby": `report-hint-${c.id}` });
  text.value = draft;
  text.addEventListener("input", () => state.drafts.set(c.id, text.value));
  const savePrelim = h("button", { type: "button", class: "btn btn-secondary" }, t("editor.savePrelim"));
  const signFinal = h("button", { type: "button", class: "btn btn-primary" }, t("editor.signFinal"));

  async function save(status) {
    messages.replaceChildren();
    if (!text.value.trim()) {
      messages.append(h("div", { class: "alert alert-error", role: "alert" }, h("p", null, t("editor.empty"))));
      text.focus();
      return;
    }
    if (status === "final" && !window.confirm(t("editor.confirmFinal"))) return;
    const buttons = [savePrelim, signFinal];
    buttons.forEach((b) => { b.disabled = true; });
    const label0 = status === "final" ? signFinal : savePrelim;
    const original = label0.textContent;
    label0.textContent = t("editor.saving");
    try {
      const res = await api("POST", `/cases/${c.id}/reports`, { text: text.value, status });
      state.drafts.delete(c.id);
      state.flash = {
        id: c.id,
        node: notice(t(status === "final" ? "editor.signed" : "editor.saved", { v: res.version }), "success"),
        inPanel: status !== "final",
      };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      buttons.forEach((b) => { b.disabled = false; });
      label0.textContent = original;
      messages.replaceChildren(errorBox(err));
    }
  }
  savePrelim.addEventListener("click", () => save("preliminary"));
  signFinal.addEventListener("click", () => save("final"));

  return h("section", { class: "card editor", "aria-labelledby": `editor-title-${c.id}` },
    h("h2", { id: `editor-title-${c.id}` }, t("editor.title")),
    messages,
    h("label", { for: `report-text-${c.id}` }, t("editor.label")),
    text,
    h("p", { id: `report-hint-${c.id}`, class: "muted small" }, t("editor.hint")),
    h("div", { class: "actions" }, savePrelim, signFinal));
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

function reportsSection(c) {
  const reports = [...(c.reports || [])].sort((a, b) => b.version - a.version);
  if (!reports.length) return section("reports.title", h("p", { class: "muted" }, t("reports.none")));
  return section("reports.title", reports.map((r) =>
    h("article", { class: `report report-${r.status}` },
      h("header", { class: "report-head" },
        h("span", { class: `badge status status-${r.status}` }, label("report.status", r.status)),
        h("strong", null, t("report.version", { v: r.version })),
        h("span", { class: "muted small" }, r.author ? r.author.name || r.author.username : t("none"),
          " · ", h("time", { datetime: r.created_at }, formatDateTime(r.created_at)))),
      h("div", { class: "report-text" }, r.text))));
}

function tatSection(c) {
  const tat = c.tat || {};
  return section("tat.title", h("dl", { class: "tat" }, TAT_PARTS.map((part) =>
    h("div", { class: `tat-row${part === "complete_to_final" ? " tat-total" : ""}` },
      h("dt", null, t(`tat.${part}`)),
      h("dd", null, formatDuration(tat[part]))))));
}

const DETAIL_KEYS = ["centre", "instances", "version", "source"];

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
