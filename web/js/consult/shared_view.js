// Shared viewing (docs/consults.md "Shared viewing protocol"): the presenter's viewer reports
// its state, which travels as `sync`; the others apply it to the same study or ECG opened in
// the hub's own viewer, read-only. The viewers are separate modules (web/js/viewers/) with
//   mountDicomViewer(container, {studyUid, seriesUid, onChange, readOnly})
//   mountEcgViewer(container, {ecgId, onChange, readOnly})  -> {getState, setState, destroy}
// loaded on demand; without them a plain position display keeps the protocol working.

import { h } from "/static/js/dom.js";
import { t } from "/static/js/i18n.js";
import "/static/js/consult/strings.js";

const FIELDS = {
  dicom: ["mode", "study_uid", "series_uid", "instance", "window_center", "window_width", "zoom", "pan", "pointer"],
  ecg: ["mode", "ecg_id", "offset", "gain", "speed", "pointer"],
};
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const num = (v) => typeof v === "number" && Number.isFinite(v);

/** A viewer's state cut down to the protocol's fields and ranges (the hub rejects others). */
export function protocolState(state) {
  if (!state || !FIELDS[state.mode]) return null;
  const out = {};
  for (const key of FIELDS[state.mode]) if (state[key] !== undefined) out[key] = state[key];
  const point = (p, lo, hi) => (p && num(p.x) && num(p.y) ? { x: clamp(p.x, lo, hi), y: clamp(p.y, lo, hi) } : null);
  if ("pointer" in out) out.pointer = point(out.pointer, 0, 1);
  if (state.mode === "dicom") {
    if ("instance" in out) out.instance = Math.max(0, Math.round(Number(out.instance) || 0));
    if ("zoom" in out) out.zoom = num(out.zoom) ? clamp(out.zoom, 0.05, 64) : 1;
    if ("pan" in out) out.pan = point(out.pan, -10, 10) || { x: 0, y: 0 };
    if ("window_width" in out && !(num(out.window_width) && out.window_width > 0)) out.window_width = null;
    if ("window_center" in out && !num(out.window_center)) out.window_center = null;
  } else {
    out.ecg_id = Number(out.ecg_id);
    if ("offset" in out) out.offset = num(out.offset) ? clamp(out.offset, 0, 86400) : 0;
    if ("gain" in out) out.gain = num(out.gain) ? clamp(out.gain, 0.5, 100) : 10;
    if ("speed" in out) out.speed = num(out.speed) ? clamp(out.speed, 5, 200) : 25;
  }
  return out;
}

/** The material a view shows: two states with the same target share one mounted viewer. */
function target(state) {
  if (!state) return null;
  return state.mode === "dicom" ? `dicom:${state.study_uid}:${state.series_uid}` : `ecg:${state.ecg_id}`;
}

async function importViewer(kind) {
  try {
    const module = await import(`/static/js/viewers/${kind}_viewer.js`);
    return kind === "dicom" ? module.mountDicomViewer : module.mountEcgViewer;
  } catch (err) {
    console.warn("telehub consult: viewer module not available", kind, err);
    return null;
  }
}

/**
 * The shared-view area: show(state, {readOnly}) mounts the right viewer for the state's study
 * or ECG (again when the target or the read-only flag changes) and applies the state.
 * `onChange(state)` is called with protocol states while this side presents.
 */
export class SharedView {
  constructor(container, { onChange }) {
    this.container = container;
    this.onChange = onChange;
    this.viewer = null;
    this.key = null;
    this.readOnly = true;
    this.note = h("p", { class: "muted small", hidden: true }, t("consult.viewerMissing"));
    this.host = h("div", { class: "consult-viewer-host", "data-consult-viewer": "" });
    container.replaceChildren(this.note, this.host);
    this.pending = Promise.resolve();
  }

  /** Serialised: a remote update arriving during a mount waits for it. */
  show(state, { readOnly }) {
    this.pending = this.pending.then(() => this.apply(state, readOnly)).catch((err) => {
      console.error("telehub consult: shared view", err);
    });
    return this.pending;
  }

  async apply(state, readOnly) {
    const key = `${target(state)}|${readOnly}`;
    if (!this.viewer || this.key !== key) {
      this.unmount();
      this.key = key;
      this.readOnly = readOnly;
      const mount = (await importViewer(state.mode)) || mountFallback;
      this.note.hidden = mount !== mountFallback;
      const onChange = (s) => {
        if (!this.readOnly) {
          const clean = protocolState(s);
          if (clean) this.onChange(clean);
        }
      };
      const options = state.mode === "dicom"
        ? { studyUid: state.study_uid, seriesUid: state.series_uid, onChange, readOnly }
        : { ecgId: state.ecg_id, onChange, readOnly };
      this.viewer = await mount(this.host, options);
      this.host.telehubViewer = this.viewer; // tests read the view with getState()
      this.host.dataset.mode = state.mode;
      this.host.dataset.readonly = String(readOnly);
    }
    this.viewer.setState(state);
  }

  getState() {
    return this.viewer ? this.viewer.getState() : null;
  }

  get mounted() {
    return Boolean(this.viewer);
  }

  unmount() {
    if (this.viewer) {
      try {
        this.viewer.destroy();
      } catch (err) {
        console.error("telehub consult: viewer destroy", err);
      }
    }
    this.viewer = null;
    this.key = null;
    this.host.telehubViewer = null;
    this.host.replaceChildren();
    delete this.host.dataset.mode;
  }

  destroy() {
    this.unmount();
  }
}

/**
 * Stand-in with the viewers' API while web/js/viewers/ lacks them: the position as text, a few
 * buttons for the presenter, and the presenter's pointer as a dot.
 */
export function mountFallback(container, options) {
  let state = options.studyUid
    ? { mode: "dicom", study_uid: options.studyUid, series_uid: options.seriesUid, instance: 0,
      window_center: null, window_width: null, zoom: 1, pan: { x: 0, y: 0 }, pointer: null }
    : { mode: "ecg", ecg_id: Number(options.ecgId), offset: 0, gain: 10, speed: 25, pointer: null };
  const text = h("p", { class: "fallback-text" });
  const dot = h("span", { class: "fallback-pointer", hidden: true });
  const pad = h("div", { class: "fallback-pad" }, dot);
  const tools = h("div", { class: "actions" });
  const change = (partial) => {
    state = { ...state, ...partial };
    draw();
    options.onChange(state);
  };
  if (!options.readOnly) {
    if (state.mode === "dicom") {
      tools.append(
        h("button", { type: "button", class: "btn btn-secondary", onclick: () => change({ instance: Math.max(0, state.instance - 1) }) }, t("consult.fallback.prev")),
        h("button", { type: "button", class: "btn btn-secondary", onclick: () => change({ instance: state.instance + 1 }) }, t("consult.fallback.next")),
        h("button", { type: "button", class: "btn btn-secondary", onclick: () => change({ window_center: state.window_center ?? 40, window_width: (state.window_width ?? 400) * 1.5 }) }, t("consult.fallback.wider")));
    } else {
      tools.append(h("button", { type: "button", class: "btn btn-secondary", onclick: () => change({ offset: state.offset + 2.5 }) }, t("consult.fallback.later")));
    }
    pad.addEventListener("pointermove", (event) => {
      const r = pad.getBoundingClientRect();
      change({ pointer: { x: (event.clientX - r.left) / r.width, y: (event.clientY - r.top) / r.height } });
    });
    pad.addEventListener("pointerleave", () => change({ pointer: null }));
  }
  function draw() {
    text.textContent = state.mode === "dicom"
      ? `${t("consult.fallback.slice", { n: state.instance + 1 })} · ${t("consult.fallback.window", { c: state.window_center ?? "—", w: state.window_width ?? "—" })}`
      : `${t("consult.ecg", { id: state.ecg_id })} · ${t("consult.fallback.offset", { s: state.offset })}`;
    dot.hidden = !state.pointer;
    if (state.pointer) {
      dot.style.left = `${state.pointer.x * 100}%`;
      dot.style.top = `${state.pointer.y * 100}%`;
    }
  }
  container.replaceChildren(h("div", { class: "consult-fallback" }, text, pad, tools));
  draw();
  return {
    getState: () => ({ ...state }),
    setState: (partial) => {
      state = partial.mode && partial.mode !== state.mode ? { ...partial } : { ...state, ...partial };
      draw();
    },
    destroy: () => container.replaceChildren(),
  };
}
