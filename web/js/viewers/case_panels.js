// The viewers in the case view: an "images" panel (the DICOM viewer, one study at a time) for
// cases with studies, and an "ECG" panel for cases with ECGs. The case view renders again after
// a claim or a saved report; each panel then takes over the previous viewer's state, so the
// reader keeps the slice, window and zoom.

import { h, loadStyle } from "/static/js/dom.js";
import { addStrings, t } from "/static/js/i18n.js";
import { addCasePanel } from "/static/js/views/case.js";
import { mountDicomViewer } from "/static/js/viewers/dicom_viewer.js";
import { mountEcgViewer } from "/static/js/viewers/ecg_viewer.js";

addStrings({
  en: {
    "viewer.images": "Images",
    "viewer.ecgTitle": "ECG",
    "viewer.study": "Study",
    "viewer.untitledStudy": "Study {n}",
    "viewer.ecgChoice": "ECG {n}",
  },
  "zh-CN": {
    "viewer.images": "影像",
    "viewer.ecgTitle": "心电图",
    "viewer.study": "检查",
    "viewer.untitledStudy": "检查 {n}",
    "viewer.ecgChoice": "心电图 {n}",
  },
});

const NOT_IMAGES = new Set(["SR", "KO", "PR", "ECG", "DOC", "REG", "SEG", "RWV", "AU", "HD"]);

/** The panel's current viewer, per panel name: replaced (and destroyed) on each render. */
const current = new Map();

function takeOver(name, caseId) {
  const previous = current.get(name);
  current.delete(name);
  if (!previous) return null;
  const state = previous.caseId === caseId ? previous.viewer.getState() : null;
  previous.viewer.destroy();
  return state;
}

function keep(name, caseId, viewer, ctx) {
  current.set(name, { caseId, viewer });
  ctx.onLeave(() => {
    viewer.destroy();
    if (current.get(name)?.viewer === viewer) current.delete(name);
  });
}

function hasImages(study) {
  const series = study.series || [];
  return series.some((se) => !NOT_IMAGES.has(se.modality));
}

/** Buttons to choose one of several studies or ECGs (none when there is only one). */
function chooser(items, labelOf, selected, onPick, hook) {
  if (items.length < 2) return null;
  const buttons = items.map((item, i) => h("button", {
    type: "button",
    class: "btn btn-ghost viewer-choice",
    "aria-pressed": i === selected ? "true" : "false",
    [hook]: String(i),
  }, labelOf(item, i)));
  buttons.forEach((b, i) => b.addEventListener("click", () => {
    buttons.forEach((x, j) => x.setAttribute("aria-pressed", j === i ? "true" : "false"));
    onPick(items[i]);
  }));
  return h("div", { class: "viewer-choices", role: "group" }, buttons);
}

function imagesPanel(c, ctx) {
  const studies = (c.studies || []).filter(hasImages);
  if (!studies.length) return null;
  loadStyle("viewer");
  const previous = takeOver("images", c.id);
  const host = h("div", { class: "viewer-host", "data-panel": "images" });
  const start = Math.max(0, previous ? studies.findIndex((s) => s.study_instance_uid === previous.study_uid) : 0);

  function mount(study, state) {
    const old = current.get("images");
    if (old) old.viewer.destroy();
    const viewer = mountDicomViewer(host, { studyUid: study.study_instance_uid, seriesUid: state ? state.series_uid : null });
    if (state) viewer.setState({ ...state, pointer: null });
    keep("images", c.id, viewer, ctx);
  }
  const pick = chooser(studies, (s, i) => [s.description || t("viewer.untitledStudy", { n: i + 1 }),
    (s.modalities || []).length ? ` · ${s.modalities.join(", ")}` : ""].join(""), start, (s) => mount(s, null), "data-study");
  mount(studies[start], previous);
  return h("section", { class: "card viewer-card", "aria-labelledby": `viewer-images-${c.id}` },
    h("h2", { id: `viewer-images-${c.id}` }, t("viewer.images")), pick, host);
}

function ecgPanel(c, ctx) {
  const ecgs = c.ecgs || [];
  if (!ecgs.length) return null;
  loadStyle("viewer");
  const previous = takeOver("ecg", c.id);
  const host = h("div", { class: "viewer-host", "data-panel": "ecg" });
  const start = Math.max(0, previous ? ecgs.findIndex((e) => e.id === previous.ecg_id) : 0);

  function mount(ecg, state) {
    const old = current.get("ecg");
    if (old) old.viewer.destroy();
    const viewer = mountEcgViewer(host, { ecgId: ecg.id });
    if (state) viewer.setState({ ...state, pointer: null });
    keep("ecg", c.id, viewer, ctx);
  }
  const pick = chooser(ecgs, (e, i) => t("viewer.ecgChoice", { n: i + 1 }), start, (e) => mount(e, null), "data-ecg-choice");
  mount(ecgs[start], previous);
  return h("section", { class: "card viewer-card", "aria-labelledby": `viewer-ecg-${c.id}` },
    h("h2", { id: `viewer-ecg-${c.id}` }, t("viewer.ecgTitle")), pick, host);
}

addCasePanel({ name: "images", column: "main", order: 30, render: imagesPanel });
addCasePanel({ name: "ecg", column: "main", order: 31, render: ecgPanel });
