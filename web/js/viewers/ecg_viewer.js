// The hub's 12-lead ECG viewer: the waveform (GET /api/v1/ecg/{id}/waveform, mV) drawn as SVG
// on ECG paper (1 mm / 5 mm grid) at the chosen speed and gain, in the standard 3×4 layout with
// a lead II rhythm strip (one row per lead for other records), with the automated measurements
// beside it, labelled as unconfirmed until a physician signs the report.
//
// State: {mode: "ecg", ecg_id, offset (s), gain (mm/mV), speed (mm/s), pointer (0..1 of the
// paper) | null}, mirrored by consults through getState/setState.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h, loadStyle, svg } from "/static/js/dom.js";
import { addStrings, getLang, t } from "/static/js/i18n.js";
import { errorBox } from "/static/js/ui.js";
import { clamp, remotePointerOf } from "/static/js/viewers/view_state.js";

addStrings({
  en: {
    "viewer.ecg.loading": "Loading ECG…",
    "viewer.ecg.paper": "12-lead ECG on paper",
    "viewer.ecg.gain": "Gain",
    "viewer.ecg.speed": "Speed",
    "viewer.ecg.mmPerMv": "{v} mm/mV",
    "viewer.ecg.mmPerS": "{v} mm/s",
    "viewer.ecg.earlier": "Earlier",
    "viewer.ecg.later": "Later",
    "viewer.ecg.time": "Time in the record",
    "viewer.ecg.range": "{from}–{to} s of {total} s",
    "viewer.ecg.measurements": "Measurements",
    "viewer.ecg.automated": "Automated",
    "viewer.ecg.automatedNote": "Automated measurement, to be confirmed by a physician.",
    "viewer.ecg.pending": "Automated analysis is still running…",
    "viewer.ecg.hr": "Heart rate",
    "viewer.ecg.pr": "PR",
    "viewer.ecg.qrs": "QRS",
    "viewer.ecg.qtqtc": "QT / QTc",
    "viewer.ecg.axis": "QRS axis",
    "viewer.ecg.bpm": "{v} bpm",
    "viewer.ecg.ms": "{v} ms",
    "viewer.ecg.deg": "{v}°",
    "viewer.ecg.findings": "Findings",
    "viewer.ecg.noFindings": "No automated findings.",
    "viewer.ecg.critical": "Critical",
    "viewer.ecg.at": "at {s} s",
    "viewer.ecg.footer": "{speed} mm/s · {gain} mm/mV · {fs} Hz",
  },
  "zh-CN": {
    "viewer.ecg.loading": "正在加载心电图…",
    "viewer.ecg.paper": "十二导联心电图",
    "viewer.ecg.gain": "增益",
    "viewer.ecg.speed": "走纸速度",
    "viewer.ecg.mmPerMv": "{v} mm/mV",
    "viewer.ecg.mmPerS": "{v} mm/s",
    "viewer.ecg.earlier": "向前",
    "viewer.ecg.later": "向后",
    "viewer.ecg.time": "记录中的时间",
    "viewer.ecg.range": "{from}–{to} 秒（共 {total} 秒）",
    "viewer.ecg.measurements": "测量值",
    "viewer.ecg.automated": "自动测量",
    "viewer.ecg.automatedNote": "自动测量，需医师确认。",
    "viewer.ecg.pending": "自动分析仍在进行…",
    "viewer.ecg.hr": "心率",
    "viewer.ecg.pr": "PR 间期",
    "viewer.ecg.qrs": "QRS 时限",
    "viewer.ecg.qtqtc": "QT / QTc",
    "viewer.ecg.axis": "QRS 电轴",
    "viewer.ecg.bpm": "{v} 次/分",
    "viewer.ecg.ms": "{v} 毫秒",
    "viewer.ecg.deg": "{v}°",
    "viewer.ecg.findings": "自动分析提示",
    "viewer.ecg.noFindings": "无自动分析提示。",
    "viewer.ecg.critical": "危急值",
    "viewer.ecg.at": "位于 {s} 秒",
    "viewer.ecg.footer": "{speed} mm/s · {gain} mm/mV · {fs} Hz",
  },
});

const GAINS = [5, 10, 20];
const SPEEDS = [25, 50];
const LAYOUT_12 = [
  ["I", "aVR", "V1", "V4"],
  ["II", "aVL", "V2", "V5"],
  ["III", "aVF", "V3", "V6"],
];
const STANDARD_12 = LAYOUT_12.flat();
const TRACE_MM = 250; // width of the traces on the paper (10 s at 25 mm/s)
const LEFT_MM = 14; // room for the calibration pulse
const RIGHT_MM = 4;
const TOP_MM = 4;
const FOOT_MM = 7;
const MAX_POINTS = 5000;
const ANALYSIS_POLL_MS = 5000;
const ANALYSIS_POLLS = 60;

const r2 = (v) => Math.round(v * 100) / 100;

/** Mount the viewer in `container`; returns {getState, setState, destroy}. */
export function mountEcgViewer(container, { ecgId, onChange = null, readOnly = false }) {
  loadStyle("viewer");
  const abort = new AbortController();
  let destroyed = false;
  const view = { ecg_id: Number(ecgId), offset: 0, gain: 10, speed: 25 };
  let pointer = null;
  let remotePointer = null;
  let info = null; // GET /ecg/{id}
  let wave = null; // the last waveform window
  let fetchToken = 0;
  let fetchTimer = null;
  let pollTimer = null;
  let polls = 0;

  const paperBox = h("div", { class: "ecg-paper-box" },
    h("p", { class: "muted" }, t("viewer.ecg.loading")));
  const messages = h("div", { "aria-live": "polite" });

  function select(name, values, unit, current) {
    const el = h("select", { class: "ecg-select", "data-control": name, disabled: readOnly },
      values.map((v) => h("option", { value: String(v) }, t(unit, { v }))));
    el.value = String(current);
    return el;
  }
  const gainSel = select("gain", GAINS, "viewer.ecg.mmPerMv", view.gain);
  const speedSel = select("speed", SPEEDS, "viewer.ecg.mmPerS", view.speed);
  const earlier = h("button", { type: "button", class: "btn btn-ghost ecg-btn", "data-action": "earlier",
    "aria-label": t("viewer.ecg.earlier"), title: t("viewer.ecg.earlier"), disabled: readOnly }, "‹");
  const later = h("button", { type: "button", class: "btn btn-ghost ecg-btn", "data-action": "later",
    "aria-label": t("viewer.ecg.later"), title: t("viewer.ecg.later"), disabled: readOnly }, "›");
  const slider = h("input", { type: "range", class: "ecg-slider", min: "0", max: "0", step: "0.1", value: "0",
    "aria-label": t("viewer.ecg.time"), disabled: readOnly });
  const rangeText = h("span", { class: "ecg-range small muted", "data-overlay": "range" });
  const timeGroup = h("div", { class: "ecg-time" }, earlier, slider, later, rangeText);
  const toolbar = h("div", { class: "ecg-toolbar", role: "toolbar" },
    h("label", { class: "ecg-control" }, h("span", null, t("viewer.ecg.gain")), gainSel),
    h("label", { class: "ecg-control" }, h("span", null, t("viewer.ecg.speed")), speedSel),
    timeGroup);
  const measureBox = h("aside", { class: "ecg-measure", "data-automated": "true",
    "aria-label": t("viewer.ecg.measurements") });
  const root = h("div", { class: "ev", "data-viewer": "ecg", "data-ecg": String(view.ecg_id), tabindex: "0" },
    toolbar, messages, h("div", { class: "ev-body" }, measureBox, paperBox));
  fill(container, root);

  // ----- geometry -----
  function windowSeconds() {
    const total = info ? info.duration_s : 10;
    return Math.min(TRACE_MM / view.speed, total);
  }

  function maxOffset() {
    return info ? Math.max(0, r2(info.duration_s - windowSeconds())) : 0;
  }

  function isTwelveLead() {
    return info && STANDARD_12.every((n) => info.lead_names.includes(n));
  }

  function rhythmLead() {
    const names = info ? info.lead_names : [];
    return ["II", "MLII"].find((n) => names.includes(n)) || names[0];
  }

  function rowHeight() {
    return Math.max(20, view.gain * 3.5);
  }

  // ----- drawing -----
  function gridPath(width, height, step) {
    const parts = [];
    for (let x = 0; x <= width + 1e-6; x += step) parts.push(`M${r2(x)} 0V${r2(height)}`);
    for (let y = 0; y <= height + 1e-6; y += step) parts.push(`M0 ${r2(y)}H${r2(width)}`);
    return parts.join("");
  }

  /** Path data of one lead between t0 and t1 (s), placed at x0 (mm) on baseline y0 (mm). */
  function tracePath(samples, t0, t1, x0, y0) {
    const dt = wave.sample_interval_s;
    const start = wave.start_s;
    const j0 = Math.max(0, Math.floor((t0 - start) / dt));
    const j1 = Math.min(samples.length - 1, Math.ceil((t1 - start) / dt));
    const out = [];
    let pen = false;
    for (let j = j0; j <= j1; j += 1) {
      const v = samples[j];
      if (v === null || v === undefined) {
        pen = false;
        continue;
      }
      const x = x0 + (start + j * dt - t0) * view.speed;
      const y = y0 - v * view.gain;
      out.push(`${pen ? "L" : "M"}${r2(x)} ${r2(y)}`);
      pen = true;
    }
    return out.join("");
  }

  function draw() {
    if (!info || !wave) return;
    const leads = new Map(wave.leads.map((l) => [l.name, l.samples]));
    const seconds = windowSeconds();
    const rowH = rowHeight();
    const rows = []; // [{y, segments: [{name, t0, t1, x}]}]
    const t0 = view.offset;
    if (isTwelveLead()) {
      const col = seconds / 4;
      for (const names of LAYOUT_12) {
        rows.push(names.map((name, k) => ({ name, t0: t0 + k * col, t1: t0 + (k + 1) * col, x: LEFT_MM + k * col * view.speed })));
      }
      rows.push([{ name: rhythmLead(), t0, t1: t0 + seconds, x: LEFT_MM }]);
    } else {
      for (const name of info.lead_names) rows.push([{ name, t0, t1: t0 + seconds, x: LEFT_MM }]);
    }
    const width = LEFT_MM + TRACE_MM + RIGHT_MM;
    const height = TOP_MM + rows.length * rowH + FOOT_MM;
    const pulseW = Math.min(0.2 * view.speed, LEFT_MM - 4);
    const traces = [];
    const labels = [];
    const pulses = [];
    const ticks = [];
    rows.forEach((segments, i) => {
      const base = TOP_MM + i * rowH + rowH * 0.62;
      pulses.push(`M1 ${r2(base)}H2V${r2(base - view.gain)}H${r2(2 + pulseW)}V${r2(base)}H${r2(3 + pulseW)}`);
      segments.forEach((seg, k) => {
        const samples = leads.get(seg.name);
        if (samples) {
          traces.push(svg("path", { class: "ecg-trace", d: tracePath(samples, seg.t0, seg.t1, seg.x, base), "data-lead": seg.name }));
        }
        labels.push(svg("text", { class: "ecg-label", x: r2(seg.x + 1), y: r2(base - rowH * 0.42) }, seg.name));
        if (k > 0) ticks.push(`M${r2(seg.x)} ${r2(base - 3)}V${r2(base + 3)}`);
      });
    });
    const paper = svg("svg", {
      class: "ecg-paper",
      viewBox: `0 0 ${width} ${r2(height)}`,
      role: "img",
      "aria-label": t("viewer.ecg.paper"),
      "data-offset": String(view.offset),
      "data-gain": String(view.gain),
      "data-speed": String(view.speed),
    },
    svg("rect", { class: "ecg-bg", x: 0, y: 0, width, height: r2(height) }),
    svg("path", { class: "ecg-grid-minor", d: gridPath(width, height - FOOT_MM, 1) }),
    svg("path", { class: "ecg-grid-major", d: gridPath(width, height - FOOT_MM, 5) }),
    svg("path", { class: "ecg-pulse", d: pulses.join("") }),
    svg("path", { class: "ecg-tick", d: ticks.join("") }),
    traces,
    labels,
    svg("text", { class: "ecg-foot", x: LEFT_MM, y: r2(height - 2) },
      t("viewer.ecg.footer", { speed: view.speed, gain: view.gain, fs: Math.round(info.sampling_rate) })),
    remotePointer ? svg("circle", { class: "ecg-remote-pointer", cx: r2(remotePointer.x * width), cy: r2(remotePointer.y * height), r: 2.5 }) : null);
    paper.addEventListener("pointermove", (event) => onPointer(event, paper));
    paper.addEventListener("pointerleave", () => {
      if (readOnly || pointer === null) return;
      pointer = null;
      emit(true);
    });
    fill(paperBox, paper);
    root.dataset.offset = String(view.offset);
  }

  function updateControls() {
    gainSel.value = String(view.gain);
    if (gainSel.value !== String(view.gain)) {
      gainSel.append(h("option", { value: String(view.gain) }, t("viewer.ecg.mmPerMv", { v: view.gain })));
      gainSel.value = String(view.gain);
    }
    speedSel.value = String(view.speed);
    if (speedSel.value !== String(view.speed)) {
      speedSel.append(h("option", { value: String(view.speed) }, t("viewer.ecg.mmPerS", { v: view.speed })));
      speedSel.value = String(view.speed);
    }
    const max = maxOffset();
    slider.max = String(max);
    slider.value = String(view.offset);
    timeGroup.hidden = max <= 0;
    if (info) {
      rangeText.textContent = t("viewer.ecg.range", {
        from: view.offset.toFixed(1),
        to: (view.offset + windowSeconds()).toFixed(1),
        total: info.duration_s.toFixed(1),
      });
    }
    if (!readOnly) {
      earlier.disabled = view.offset <= 0;
      later.disabled = view.offset >= max;
    }
  }

  // ----- measurements -----
  function value(v, key) {
    return v === null || v === undefined ? "—" : t(key, { v });
  }

  function renderMeasurements() {
    const a = info && info.analysis;
    const head = h("header", { class: "ecg-measure-head" },
      h("h3", null, t("viewer.ecg.measurements")),
      h("span", { class: "badge ecg-auto-badge" }, t("viewer.ecg.automated")),
      h("p", { class: "ecg-auto-note", "data-note": "automated" }, t("viewer.ecg.automatedNote")));
    if (!a) {
      fill(measureBox, head, h("p", { class: "muted small" }, t("viewer.ecg.pending")));
      return;
    }
    const zh = getLang() === "zh-CN";
    const qt = a.qt_ms === null || a.qt_ms === undefined ? "—" : String(a.qt_ms);
    const qtc = a.qtc_ms === null || a.qtc_ms === undefined ? "—" : String(a.qtc_ms);
    const rows = [
      ["hr", t("viewer.ecg.hr"), value(a.heart_rate_bpm, "viewer.ecg.bpm")],
      ["pr", t("viewer.ecg.pr"), value(a.pr_ms, "viewer.ecg.ms")],
      ["qrs", t("viewer.ecg.qrs"), value(a.qrs_ms, "viewer.ecg.ms")],
      ["qt", t("viewer.ecg.qtqtc"), t("viewer.ecg.ms", { v: `${qt} / ${qtc}` })],
      ["axis", t("viewer.ecg.axis"), value(a.axis_deg, "viewer.ecg.deg")],
    ];
    const findings = a.findings || [];
    fill(measureBox, head,
      h("dl", { class: "ecg-values" }, rows.map(([key, name, text]) =>
        h("div", { class: "ecg-value", "data-measure": key }, h("dt", null, name), h("dd", null, text)))),
      h("div", { class: "ecg-findings-row" }, h("h4", null, t("viewer.ecg.findings")), findings.length
        ? h("ul", { class: "ecg-findings" }, findings.map((f) =>
          h("li", { class: f.critical ? "ecg-finding critical" : "ecg-finding", "data-code": f.code },
            f.critical ? h("span", { class: "badge ecg-critical" }, t("viewer.ecg.critical")) : null,
            " ", zh ? f.text_zh || f.text : f.text,
            f.at_s !== undefined && f.at_s !== null ? h("span", { class: "muted small" }, " · ", t("viewer.ecg.at", { s: f.at_s })) : null)))
        : h("p", { class: "muted small" }, t("viewer.ecg.noFindings"))));
  }

  // ----- data -----
  function fail(err) {
    if (destroyed || err instanceof SessionEnded || (err && err.name === "AbortError")) return;
    messages.replaceChildren(errorBox(err));
  }

  async function loadInfo() {
    info = await api("GET", `/ecg/${view.ecg_id}`, undefined, { signal: abort.signal });
    if (destroyed) return;
    root.dataset.analysed = info.analysis ? "true" : "false";
    renderMeasurements();
    if (!info.analysis && polls < ANALYSIS_POLLS) {
      polls += 1;
      pollTimer = setTimeout(() => loadInfo().then(() => draw()).catch(fail), ANALYSIS_POLL_MS);
    }
  }

  /** Fetch the window on screen (the latest asked for wins). */
  async function loadWave() {
    const token = ++fetchToken;
    const start = view.offset;
    const end = Math.min(info.duration_s, start + windowSeconds());
    const query = `start=${start}&end=${r2(end)}&max_points=${MAX_POINTS}`;
    const data = await api("GET", `/ecg/${view.ecg_id}/waveform?${query}`, undefined, { signal: abort.signal });
    if (destroyed || token !== fetchToken) return;
    wave = data;
    messages.replaceChildren();
    draw();
  }

  function refresh({ debounce = false } = {}) {
    view.offset = clamp(r2(view.offset), 0, maxOffset());
    updateControls();
    clearTimeout(fetchTimer);
    if (!info) return;
    // redraw at once with what we have; the new window follows
    if (wave && wave.start_s <= view.offset && wave.start_s + wave.duration_s >= view.offset + windowSeconds() - 0.01) draw();
    if (debounce) fetchTimer = setTimeout(() => loadWave().catch(fail), 120);
    else loadWave().catch(fail);
  }

  const ready = (async () => {
    await loadInfo();
    updateControls();
    await loadWave();
  })().catch(fail);

  // ----- input -----
  let pendingEmit = null;
  let scheduled = false;
  function emit(pointerOnly) {
    if (!onChange || destroyed) return;
    pendingEmit = pendingEmit === null ? pointerOnly : pendingEmit && pointerOnly;
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const only = pendingEmit;
      pendingEmit = null;
      if (destroyed || only === null) return;
      try {
        onChange(getState(), { pointerOnly: only });
      } catch (err) {
        console.error("telehub viewer onChange", err);
      }
    });
  }

  function onPointer(event, paper) {
    if (readOnly) return;
    const rect = paper.getBoundingClientRect();
    const x = (event.clientX - rect.left) / Math.max(1, rect.width);
    const y = (event.clientY - rect.top) / Math.max(1, rect.height);
    pointer = { x: Number(clamp(x, 0, 1).toFixed(4)), y: Number(clamp(y, 0, 1).toFixed(4)) };
    emit(true);
  }

  function step(direction) {
    view.offset += (direction * windowSeconds()) / 2;
    refresh();
    emit(false);
  }

  gainSel.addEventListener("change", () => {
    view.gain = Number(gainSel.value);
    refresh();
    emit(false);
  });
  speedSel.addEventListener("change", () => {
    view.speed = Number(speedSel.value);
    refresh();
    emit(false);
  });
  earlier.addEventListener("click", () => step(-1));
  later.addEventListener("click", () => step(1));
  slider.addEventListener("input", () => {
    view.offset = Number(slider.value);
    refresh({ debounce: true });
    emit(false);
  });
  root.addEventListener("keydown", (event) => {
    if (readOnly || event.target !== root) return;
    if (event.key === "ArrowRight") step(1);
    else if (event.key === "ArrowLeft") step(-1);
    else return;
    event.preventDefault();
  });

  // ----- the API -----
  function getState() {
    return {
      mode: "ecg",
      ecg_id: view.ecg_id,
      offset: view.offset,
      gain: view.gain,
      speed: view.speed,
      pointer: pointer ? { ...pointer } : null,
    };
  }

  /** Apply a (remote) state: the fields given; never calls onChange. */
  function setState(partial) {
    if (!partial || destroyed) return ready;
    const p = partial;
    if ("pointer" in p) {
      remotePointer = remotePointerOf(p.pointer);
    }
    if (Number.isFinite(p.gain)) view.gain = clamp(p.gain, 0.5, 100);
    if (Number.isFinite(p.speed)) view.speed = clamp(p.speed, 5, 200);
    if (Number.isFinite(p.offset)) view.offset = clamp(p.offset, 0, 86_400);
    if (Number.isInteger(p.ecg_id) && p.ecg_id !== view.ecg_id) {
      // another ECG: start over with it
      view.ecg_id = p.ecg_id;
      root.dataset.ecg = String(p.ecg_id);
      info = null;
      wave = null;
      clearTimeout(pollTimer);
      polls = 0;
      return loadInfo().then(() => refresh()).catch(fail);
    }
    return ready.then(() => {
      if (destroyed) return;
      const onlyPointer = Object.keys(p).every((k) => k === "pointer" || k === "mode" || k === "ecg_id");
      if (onlyPointer) {
        draw();
        return;
      }
      refresh();
    });
  }

  function destroy() {
    if (destroyed) return;
    destroyed = true;
    abort.abort();
    clearTimeout(fetchTimer);
    clearTimeout(pollTimer);
    root.remove();
    if (container.viewer === viewer) container.viewer = null;
  }

  const viewer = { getState, setState, destroy, ready: () => ready };
  container.viewer = viewer;
  return viewer;
}
