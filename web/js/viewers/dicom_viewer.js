// The hub's own DICOM viewer: one study from the hub's DICOMweb (QIDO-RS series, WADO-RS series
// metadata, thumbnails and rendered frames), drawn into a <canvas>. The hub renders each frame
// at the asked window (PNG, lossless); the browser only scales and pans the decoded bitmap, so
// the viewer needs no DICOM decoder. Its state is small and plain (getState/setState) so a
// consult can mirror it to the other side.
//
// State: {mode: "dicom", study_uid, series_uid, instance, window_center, window_width, zoom,
// pan: {x, y}, pointer}. `instance` is the 0-based position in the series' stack: instances in
// InstanceNumber order, a multi-frame instance contributing each of its frames (for a series of
// single-frame instances it is the instance's index). window_center/width null = the image's
// own window. pan is in units of the canvas size, pointer in 0..1 of the image.

import { apiFetch, SessionEnded } from "/static/js/api.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { addStrings, t } from "/static/js/i18n.js";
import { errorBox } from "/static/js/ui.js";
import { clamp, remotePointerOf } from "/static/js/viewers/view_state.js";

addStrings({
  en: {
    "viewer.loading": "Loading images…",
    "viewer.noImages": "No viewable image series in this study.",
    "viewer.series": "Series",
    "viewer.seriesLabel": "S{number} · {modality} · {count} img",
    "viewer.toolWl": "W/L",
    "viewer.toolWlHint": "Window/level tool: drag to change (right-drag always does)",
    "viewer.toolPan": "Pan",
    "viewer.toolPanHint": "Pan tool: drag to move the image",
    "viewer.zoomIn": "Zoom in",
    "viewer.zoomOut": "Zoom out",
    "viewer.reset": "Reset",
    "viewer.fullscreen": "Full screen",
    "viewer.exitFullscreen": "Exit full screen",
    "viewer.presets": "Window presets",
    "viewer.preset.default": "Default",
    "viewer.preset.soft": "Soft tissue",
    "viewer.preset.lung": "Lung",
    "viewer.preset.bone": "Bone",
    "viewer.preset.brain": "Brain",
    "viewer.slice": "Image",
    "viewer.image": "Im {n}/{total}",
    "viewer.instanceNumber": "Inst #{n}",
    "viewer.frame": "Fr {n}/{total}",
    "viewer.wl": "W {w} L {c}",
    "viewer.wlAuto": "W/L auto",
    "viewer.zoom": "Zoom {z}×",
    "viewer.canvas": "Image viewer: wheel or arrow keys scroll, ctrl+wheel zooms, drag pans, right-drag sets window/level",
    "viewer.frameError": "This image could not be rendered.",
  },
  "zh-CN": {
    "viewer.loading": "正在加载影像…",
    "viewer.noImages": "此检查没有可显示的影像序列。",
    "viewer.series": "序列",
    "viewer.seriesLabel": "S{number} · {modality} · {count} 幅",
    "viewer.toolWl": "窗宽窗位",
    "viewer.toolWlHint": "窗宽窗位工具：拖动调节（右键拖动始终可调）",
    "viewer.toolPan": "平移",
    "viewer.toolPanHint": "平移工具：拖动移动图像",
    "viewer.zoomIn": "放大",
    "viewer.zoomOut": "缩小",
    "viewer.reset": "复位",
    "viewer.fullscreen": "全屏",
    "viewer.exitFullscreen": "退出全屏",
    "viewer.presets": "窗宽窗位预设",
    "viewer.preset.default": "默认",
    "viewer.preset.soft": "软组织窗",
    "viewer.preset.lung": "肺窗",
    "viewer.preset.bone": "骨窗",
    "viewer.preset.brain": "脑窗",
    "viewer.slice": "图像",
    "viewer.image": "图像 {n}/{total}",
    "viewer.instanceNumber": "实例号 {n}",
    "viewer.frame": "帧 {n}/{total}",
    "viewer.wl": "窗宽 {w} 窗位 {c}",
    "viewer.wlAuto": "窗宽窗位 自动",
    "viewer.zoom": "缩放 {z}×",
    "viewer.canvas": "影像查看器：滚轮或方向键翻页，Ctrl+滚轮缩放，拖动平移，右键拖动调节窗宽窗位",
    "viewer.frameError": "此图像无法显示。",
  },
});

/** CT presets as [center, width]; "default" is the image's own window. */
export const PRESETS = [
  ["default", null],
  ["soft", [40, 400]],
  ["lung", [-600, 1500]],
  ["bone", [400, 1800]],
  ["brain", [40, 80]],
];
const NOT_IMAGES = new Set(["SR", "KO", "PR", "ECG", "DOC", "REG", "SEG", "RWV", "AU", "HD"]);
const ZOOM_MIN = 0.05;
const ZOOM_MAX = 64;
const PAN_MAX = 10;
const CACHE_MAX = 240; // decoded bitmaps kept (a 512² CT slice is 1 MB of GPU memory)
const PARALLEL = 4;
const PREFETCH_AHEAD = 4;
const PREFETCH_BEHIND = 2;
const WL_REQUEST_MS = 90; // at most one new render per this while dragging window/level
const MAX_SIDE = 2048; // larger images (CR, DX, mammography) are rendered down to this


function first(item, tag) {
  const el = item && item[tag];
  return el && Array.isArray(el.Value) && el.Value.length ? el.Value[0] : undefined;
}

function num(value) {
  const n = typeof value === "string" ? Number(value) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : null;
}

/** Window values rounded so near-identical requests share a cached render. */
function roundWindow(center, width) {
  const step = width >= 20 ? 1 : 0.01;
  const r = (v) => Math.round(v / step) * step;
  return [Number(r(center).toFixed(2)), Number(Math.max(step, r(width)).toFixed(2))];
}

/** The series' stack from its WADO-RS metadata: one entry per frame, InstanceNumber order. */
export function buildStack(metadata) {
  const instances = metadata
    .filter((item) => first(item, "00280010") !== undefined) // Rows: has pixels
    .map((item) => ({
      sop: first(item, "00080018"),
      number: num(first(item, "00200013")),
      frames: Math.max(1, num(first(item, "00280008")) || 1),
      center: num(first(item, "00281050")),
      width: num(first(item, "00281051")),
      bits: num(first(item, "00280101")) || 12,
      slope: num(first(item, "00281053")) ?? 1,
      intercept: num(first(item, "00281052")) ?? 0,
      modality: first(item, "00080060") || "",
      large: Math.max(num(first(item, "00280010")) || 0, num(first(item, "00280011")) || 0) > MAX_SIDE,
    }))
    .filter((i) => typeof i.sop === "string");
  instances.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || (a.sop < b.sop ? -1 : a.sop > b.sop ? 1 : 0));
  const stack = [];
  for (const inst of instances) {
    for (let f = 1; f <= inst.frames; f += 1) stack.push({ ...inst, frame: f });
  }
  return stack;
}

/** Mount the viewer in `container`; returns {getState, setState, destroy}. */
export function mountDicomViewer(container, { studyUid, seriesUid = null, onChange = null, readOnly = false }) {
  loadStyle("viewer");
  const abort = new AbortController();
  const thumbUrls = [];
  let destroyed = false;

  // ----- state -----
  const view = {
    study_uid: studyUid,
    series_uid: seriesUid,
    instance: 0,
    window_center: null,
    window_width: null,
    zoom: 1,
    pan: { x: 0, y: 0 },
  };
  let pointer = null; // the local pointer over the image (0..1), for getState
  let remotePointer = null; // a pointer received by setState, drawn as a marker
  let seriesList = [];
  let stack = [];
  let bitmap = null; // the bitmap on screen (may be an older frame/window while loading)
  let shownKey = null;
  let tool = "pan";
  let fullscreen = false;
  let loadToken = 0;

  // ----- DOM -----
  const canvas = h("canvas", {
    class: "dv-canvas",
    tabindex: "0",
    role: "img",
    "aria-label": t("viewer.canvas"),
    "data-testid": "dicom-canvas",
  });
  const g = canvas.getContext("2d");
  const overlay = {
    tl: h("div", { class: "dv-ov dv-ov-tl" }),
    bl: h("div", { class: "dv-ov dv-ov-bl", "data-overlay": "instance" }),
    br: h("div", { class: "dv-ov dv-ov-br", "data-overlay": "window" }),
  };
  const status = h("div", { class: "dv-status", "aria-live": "polite" });
  const stage = h("div", { class: "dv-stage" }, canvas, overlay.tl, overlay.bl, overlay.br, status);
  const slider = h("input", {
    type: "range",
    class: "dv-slider",
    min: "0",
    max: "0",
    value: "0",
    step: "1",
    "aria-label": t("viewer.slice"),
    disabled: readOnly,
  });
  const strip = h("div", { class: "dv-strip", role: "listbox", "aria-label": t("viewer.series") });

  const btn = (label, attrs, onclick) =>
    h("button", { type: "button", class: "btn btn-ghost dv-btn", disabled: readOnly, ...attrs, onclick }, label);
  const wlTool = btn(t("viewer.toolWl"), { title: t("viewer.toolWlHint"), "aria-pressed": "false", "data-tool": "wl" },
    () => setTool("wl"));
  const panTool = btn(t("viewer.toolPan"), { title: t("viewer.toolPanHint"), "aria-pressed": "true", "data-tool": "pan" },
    () => setTool("pan"));
  const presetButtons = PRESETS.map(([name, values]) =>
    btn(t(`viewer.preset.${name}`), { "data-preset": name }, () => {
      if (values) setWindow(values[0], values[1]);
      else setWindow(null, null);
      emit(false);
    }));
  const fsButton = h("button", { type: "button", class: "btn btn-ghost dv-btn", "data-action": "fullscreen",
    "aria-pressed": "false", onclick: () => setFullscreen(!fullscreen) }, t("viewer.fullscreen"));
  const toolbar = h("div", { class: "dv-toolbar", role: "toolbar" },
    h("div", { class: "dv-group" }, wlTool, panTool),
    h("div", { class: "dv-group", role: "group", "aria-label": t("viewer.presets") }, presetButtons),
    h("div", { class: "dv-group" },
      btn("−", { title: t("viewer.zoomOut"), "aria-label": t("viewer.zoomOut"), "data-action": "zoom-out" },
        () => { zoomAt(1 / 1.25); emit(false); }),
      btn("+", { title: t("viewer.zoomIn"), "aria-label": t("viewer.zoomIn"), "data-action": "zoom-in" },
        () => { zoomAt(1.25); emit(false); }),
      btn(t("viewer.reset"), { "data-action": "reset" }, () => { reset(); emit(false); })),
    h("div", { class: "dv-group dv-right" }, fsButton));
  const root = h("div", { class: "dv", "data-viewer": "dicom", "data-readonly": readOnly ? "true" : "false" },
    toolbar, h("div", { class: "dv-body" }, strip, h("div", { class: "dv-main" }, stage, slider)));
  fill(container, root);
  container.viewer = null; // set below, once the API object exists

  // ----- frame loading: cache, queue, prefetch -----
  const cache = new Map(); // key -> ImageBitmap; insertion order = least recently used first
  const inflight = new Map(); // key -> Promise<ImageBitmap>
  const queue = []; // [{key, run}] waiting for a free slot
  let active = 0;

  function windowParam() {
    if (view.window_center === null || view.window_width === null) return null;
    const fn = view.window_width >= 1 ? "linear" : "linear_exact";
    return `${view.window_center},${view.window_width},${fn}`;
  }

  function keyOf(index, win = windowParam()) {
    const item = stack[index];
    return item ? `${item.sop}/${item.frame}@${win || "default"}` : null;
  }

  function urlOf(index, win) {
    const item = stack[index];
    const base = `/dicomweb/studies/${view.study_uid}/series/${view.series_uid}/instances/${item.sop}/frames/${item.frame}/rendered`;
    const query = [win ? `window=${encodeURIComponent(win)}` : "", item.large ? `viewport=${MAX_SIDE},${MAX_SIDE}` : ""]
      .filter(Boolean).join("&");
    return query ? `${base}?${query}` : base;
  }

  function remember(key, bmp) {
    cache.set(key, bmp);
    while (cache.size > CACHE_MAX) {
      const [oldKey, old] = cache.entries().next().value;
      cache.delete(oldKey);
      if (old !== bitmap) old.close();
    }
  }

  function pump() {
    while (active < PARALLEL && queue.length) {
      const job = queue.shift();
      if (!job.wanted()) {
        job.reject(new Error("stale"));
        continue;
      }
      active += 1;
      job.run().then(job.resolve, job.reject).finally(() => {
        active -= 1;
        pump();
      });
    }
  }

  /** The decoded bitmap of a stack entry at a window (cached, deduplicated, queued). */
  function loadFrame(index, win, { urgent = false, wanted = () => true } = {}) {
    const key = keyOf(index, win);
    if (cache.has(key)) {
      const bmp = cache.get(key);
      cache.delete(key);
      cache.set(key, bmp);
      return Promise.resolve(bmp);
    }
    if (inflight.has(key)) return inflight.get(key);
    const url = urlOf(index, win);
    const promise = new Promise((resolve, reject) => {
      const job = {
        key,
        wanted,
        resolve,
        reject,
        run: async () => {
          const response = await apiFetch(url, { headers: { Accept: "image/png" }, signal: abort.signal });
          const bmp = await createImageBitmap(await response.blob());
          if (destroyed) {
            bmp.close();
            throw new Error("destroyed");
          }
          remember(key, bmp);
          return bmp;
        },
      };
      if (urgent) queue.unshift(job);
      else queue.push(job);
    }).finally(() => inflight.delete(key));
    inflight.set(key, promise);
    pump();
    return promise;
  }

  function prefetch(direction) {
    const win = windowParam();
    const want = new Set();
    const ahead = direction >= 0 ? PREFETCH_AHEAD : PREFETCH_BEHIND;
    const behind = direction >= 0 ? PREFETCH_BEHIND : PREFETCH_AHEAD;
    for (let d = 1; d <= Math.max(ahead, behind); d += 1) {
      if (d <= ahead && view.instance + d < stack.length) want.add(view.instance + d);
      if (d <= behind && view.instance - d >= 0) want.add(view.instance - d);
    }
    const keys = new Set([...want].map((i) => keyOf(i, win)));
    for (const i of want) {
      loadFrame(i, win, { wanted: () => windowParam() === win && keys.has(keyOf(i, win)) && nearby(i) }).catch(() => {});
    }
  }

  const nearby = (i) => Math.abs(i - view.instance) <= PREFETCH_AHEAD;

  // ----- showing a frame -----
  let wlTimer = null;
  let wlInflight = false;
  let lastDirection = 1;

  /** Show the current (instance, window): at once when cached, else when it arrives. */
  function request({ throttle = false } = {}) {
    if (!stack.length) return;
    const index = view.instance;
    const win = windowParam();
    const key = keyOf(index, win);
    if (key === shownKey) {
      draw();
      return;
    }
    if (cache.has(key)) {
      show(key, cache.get(key));
      prefetch(lastDirection);
      return;
    }
    draw(); // the previous bitmap stays on screen (new zoom/pan applied) until the new one arrives
    if (throttle) {
      if (wlInflight || wlTimer) {
        if (!wlTimer) wlTimer = setTimeout(() => { wlTimer = null; request({ throttle: true }); }, WL_REQUEST_MS);
        return;
      }
      wlInflight = true;
    }
    // while scrolling fast, frames passed by are dropped from the queue unless still near
    const wanted = () => keyOf(view.instance, windowParam()) === key || (windowParam() === win && nearby(index));
    loadFrame(index, win, { urgent: true, wanted })
      .then((bmp) => {
        if (keyOf(view.instance, windowParam()) === key) {
          show(key, bmp);
          prefetch(lastDirection);
        }
      })
      .catch((err) => {
        if (destroyed || err instanceof SessionEnded || (err && (err.name === "AbortError" || err.message === "stale"))) return;
        status.replaceChildren(errorBox(err, t("viewer.frameError")));
      })
      .finally(() => {
        if (throttle) {
          wlInflight = false;
          if (keyOf(view.instance, windowParam()) !== shownKey && !wlTimer) {
            wlTimer = setTimeout(() => { wlTimer = null; request({ throttle: true }); }, WL_REQUEST_MS);
          }
        }
      });
  }

  function show(key, bmp) {
    bitmap = bmp;
    shownKey = key;
    status.replaceChildren();
    root.dataset.shown = key;
    draw();
  }

  // ----- geometry and drawing -----
  function layout() {
    const rect = stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr));
    const hgt = Math.max(1, Math.round(rect.height * dpr));
    if (canvas.width !== w || canvas.height !== hgt) {
      canvas.width = w;
      canvas.height = hgt;
    }
    draw();
  }

  /** Where the image sits on the canvas (canvas pixels): origin and scale. */
  function placement() {
    if (!bitmap) return null;
    const cw = canvas.width;
    const ch = canvas.height;
    const iw = bitmap.width;
    const ih = bitmap.height;
    const s = Math.min(cw / iw, ch / ih) * view.zoom;
    return { x: cw / 2 + view.pan.x * cw - (iw * s) / 2, y: ch / 2 + view.pan.y * ch - (ih * s) / 2, s, iw, ih };
  }

  function draw() {
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.fillStyle = "#000";
    g.fillRect(0, 0, canvas.width, canvas.height);
    const p = placement();
    if (p) {
      g.imageSmoothingEnabled = p.s < 3;
      g.imageSmoothingQuality = "high";
      g.drawImage(bitmap, p.x, p.y, p.iw * p.s, p.ih * p.s);
      if (remotePointer) {
        const x = p.x + remotePointer.x * p.iw * p.s;
        const y = p.y + remotePointer.y * p.ih * p.s;
        const r = 9 * (window.devicePixelRatio || 1);
        g.lineWidth = 2 * (window.devicePixelRatio || 1);
        g.strokeStyle = "#ffb300";
        g.beginPath();
        g.arc(x, y, r, 0, Math.PI * 2);
        g.moveTo(x - 2 * r, y);
        g.lineTo(x - r, y);
        g.moveTo(x + r, y);
        g.lineTo(x + 2 * r, y);
        g.moveTo(x, y - 2 * r);
        g.lineTo(x, y - r);
        g.moveTo(x, y + r);
        g.lineTo(x, y + 2 * r);
        g.stroke();
      }
    }
    updateOverlay();
  }

  function shownWindow() {
    if (view.window_center !== null) return [view.window_center, view.window_width];
    const item = stack[view.instance];
    return item && item.center !== null && item.width !== null ? [item.center, item.width] : null;
  }

  function updateOverlay() {
    const item = stack[view.instance];
    const series = seriesList.find((s) => s.uid === view.series_uid);
    overlay.tl.textContent = series ? [series.modality, series.number !== null ? `S${series.number}` : "", series.description].filter(Boolean).join(" · ") : "";
    if (item) {
      const lines = [t("viewer.image", { n: view.instance + 1, total: stack.length })];
      if (item.number !== null) lines.push(t("viewer.instanceNumber", { n: item.number }));
      if (item.frames > 1) lines.push(t("viewer.frame", { n: item.frame, total: item.frames }));
      overlay.bl.textContent = lines.join("  ");
    } else overlay.bl.textContent = "";
    const win = shownWindow();
    overlay.br.textContent = [
      win ? t("viewer.wl", { w: fmt(win[1]), c: fmt(win[0]) }) : t("viewer.wlAuto"),
      t("viewer.zoom", { z: view.zoom.toFixed(2) }),
    ].join("  ");
    root.dataset.instance = String(view.instance);
    slider.value = String(view.instance);
    for (const b of presetButtons) {
      const preset = PRESETS.find(([n]) => n === b.dataset.preset)[1];
      const on = preset ? view.window_center === preset[0] && view.window_width === preset[1] : view.window_center === null;
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  const fmt = (v) => (Math.abs(v) >= 20 ? String(Math.round(v)) : String(Number(v.toFixed(2))));

  // ----- state changes -----
  function setIndex(index) {
    if (!stack.length) return;
    const next = clamp(Math.round(index), 0, stack.length - 1);
    if (next !== view.instance) lastDirection = next > view.instance ? 1 : -1;
    view.instance = next;
    request();
  }

  function setWindow(center, width, { throttle = false } = {}) {
    if (center === null || width === null) {
      view.window_center = null;
      view.window_width = null;
    } else {
      [view.window_center, view.window_width] = roundWindow(clamp(center, -1e6, 1e6), clamp(width, 0.01, 1e6));
    }
    request({ throttle });
  }

  function zoomAt(factor, cx = canvas.width / 2, cy = canvas.height / 2) {
    const p = placement();
    const next = clamp(view.zoom * factor, ZOOM_MIN, ZOOM_MAX);
    if (p && next !== view.zoom) {
      // keep the image point under (cx, cy) where it is
      const ix = (cx - p.x) / p.s;
      const iy = (cy - p.y) / p.s;
      const s2 = (p.s / view.zoom) * next;
      const x2 = cx - ix * s2;
      const y2 = cy - iy * s2;
      const cw = canvas.width;
      const ch = canvas.height;
      view.pan = {
        x: clamp((x2 + (p.iw * s2) / 2 - cw / 2) / cw, -PAN_MAX, PAN_MAX),
        y: clamp((y2 + (p.ih * s2) / 2 - ch / 2) / ch, -PAN_MAX, PAN_MAX),
      };
    }
    view.zoom = next;
    draw();
  }

  function reset() {
    view.zoom = 1;
    view.pan = { x: 0, y: 0 };
    view.window_center = null;
    view.window_width = null;
    request();
  }

  function setTool(name) {
    tool = name;
    wlTool.setAttribute("aria-pressed", name === "wl" ? "true" : "false");
    panTool.setAttribute("aria-pressed", name === "pan" ? "true" : "false");
    root.dataset.tool = name;
  }

  function setFullscreen(on) {
    fullscreen = on;
    root.classList.toggle("dv-fullscreen", on);
    document.body.classList.toggle("viewer-fullscreen-open", on);
    fsButton.setAttribute("aria-pressed", on ? "true" : "false");
    fsButton.textContent = t(on ? "viewer.exitFullscreen" : "viewer.fullscreen");
    if (on) document.addEventListener("keydown", escapeFullscreen);
    else document.removeEventListener("keydown", escapeFullscreen);
    layout();
    canvas.focus();
  }

  function escapeFullscreen(event) {
    if (event.key === "Escape" && fullscreen) setFullscreen(false);
  }

  /** The window to start a drag from when the image's own window is unknown. */
  function startWindow() {
    const win = shownWindow();
    if (win) return win;
    const item = stack[view.instance];
    if (item && item.modality === "CT") return [40, 400];
    const range = 2 ** ((item && item.bits) || 12);
    const slope = item ? item.slope : 1;
    const intercept = item ? item.intercept : 0;
    return [(range / 2) * slope + intercept, range * Math.abs(slope)];
  }

  // ----- change notifications (coalesced per animation frame) -----
  let pendingEmit = null;
  function emit(pointerOnly) {
    if (!onChange || destroyed) return;
    pendingEmit = pendingEmit === null ? pointerOnly : pendingEmit && pointerOnly;
    if (emit.scheduled) return;
    emit.scheduled = true;
    requestAnimationFrame(() => {
      emit.scheduled = false;
      const only = pendingEmit;
      pendingEmit = null;
      if (!destroyed && only !== null) {
        try {
          onChange(getState(), { pointerOnly: only });
        } catch (err) {
          console.error("telehub viewer onChange", err);
        }
      }
    });
  }
  emit.scheduled = false;

  // ----- input -----
  let drag = null;

  function imagePoint(event) {
    const p = placement();
    if (!p) return null;
    const rect = canvas.getBoundingClientRect();
    const dpr = canvas.width / Math.max(1, rect.width);
    const x = ((event.clientX - rect.left) * dpr - p.x) / (p.iw * p.s);
    const y = ((event.clientY - rect.top) * dpr - p.y) / (p.ih * p.s);
    return x >= 0 && x <= 1 && y >= 0 && y <= 1 ? { x: Number(x.toFixed(4)), y: Number(y.toFixed(4)) } : null;
  }

  function onPointerDown(event) {
    if (readOnly) return;
    canvas.focus();
    const wl = event.button === 2 || (event.button === 0 && (tool === "wl" || event.shiftKey));
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    drag = {
      kind: wl ? "wl" : "pan",
      x: event.clientX,
      y: event.clientY,
      pan: { ...view.pan },
      win: wl ? startWindow() : null,
    };
  }

  function onPointerMove(event) {
    if (readOnly) return;
    pointer = imagePoint(event);
    if (!drag) {
      emit(true);
      return;
    }
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.kind === "pan") {
      const rect = canvas.getBoundingClientRect();
      view.pan = {
        x: clamp(drag.pan.x + dx / Math.max(1, rect.width), -PAN_MAX, PAN_MAX),
        y: clamp(drag.pan.y + dy / Math.max(1, rect.height), -PAN_MAX, PAN_MAX),
      };
      draw();
    } else {
      const [c0, w0] = drag.win;
      const sensitivity = Math.max(Math.abs(w0), 2) / 300;
      setWindow(c0 + dy * sensitivity, Math.max(1, w0 + dx * sensitivity), { throttle: true });
    }
    emit(false);
  }

  function onPointerUp(event) {
    if (!drag) return;
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    const wasWl = drag.kind === "wl";
    drag = null;
    if (wasWl) request(); // the exact window of the last move, unthrottled
  }

  function onPointerLeave() {
    if (readOnly || drag) return;
    if (pointer !== null) {
      pointer = null;
      emit(true);
    }
  }

  let wheelRest = 0;
  function onWheel(event) {
    if (readOnly || !stack.length) return;
    event.preventDefault();
    if (event.ctrlKey || event.metaKey) {
      const rect = canvas.getBoundingClientRect();
      const dpr = canvas.width / Math.max(1, rect.width);
      zoomAt(Math.exp(-event.deltaY * 0.0025), (event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr);
      emit(false);
      return;
    }
    // one image per notch (deltaY ±100 with a mouse, smaller steps with a touchpad)
    wheelRest += event.deltaMode === 1 ? event.deltaY * 33 : event.deltaY;
    const steps = Math.trunc(wheelRest / 50);
    if (!steps) return;
    wheelRest -= steps * 50;
    setIndex(view.instance + Math.sign(steps) * Math.max(1, Math.round(Math.abs(steps) / 2)));
    emit(false);
  }

  function onKey(event) {
    if (readOnly || !stack.length) return;
    if (event.target !== canvas && event.target !== root) return;
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (event.key in moves) setIndex(view.instance + moves[event.key]);
    else if (event.key === "Home") setIndex(0);
    else if (event.key === "End") setIndex(stack.length - 1);
    else if (event.key === "+" || event.key === "=") zoomAt(1.25);
    else if (event.key === "-") zoomAt(1 / 1.25);
    else if (event.key === "r" || event.key === "R") reset();
    else return;
    event.preventDefault();
    emit(false);
  }

  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("pointerleave", onPointerLeave);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  root.addEventListener("keydown", onKey);
  slider.addEventListener("input", () => {
    setIndex(Number(slider.value));
    emit(false);
  });
  const resizer = new ResizeObserver(() => layout());
  resizer.observe(stage);

  // ----- loading the study and series -----
  async function getJson(path) {
    const response = await apiFetch(path, { headers: { Accept: "application/dicom+json" }, signal: abort.signal });
    const text = await response.text();
    return text ? JSON.parse(text) : [];
  }

  function fail(err) {
    if (destroyed || err instanceof SessionEnded || (err && err.name === "AbortError")) return;
    status.replaceChildren(errorBox(err));
  }

  async function loadStudy() {
    status.replaceChildren(h("p", { class: "dv-msg" }, t("viewer.loading")));
    const found = await getJson(`/dicomweb/studies/${view.study_uid}/series`);
    seriesList = found
      .map((s) => ({
        uid: first(s, "0020000E"),
        modality: first(s, "00080060") || "",
        number: num(first(s, "00200011")),
        description: first(s, "0008103E") || "",
        count: num(first(s, "00201209")) || 0,
      }))
      .filter((s) => s.uid && !NOT_IMAGES.has(s.modality))
      .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
    if (destroyed) return;
    renderStrip();
    if (!seriesList.length) {
      status.replaceChildren(h("p", { class: "dv-msg" }, t("viewer.noImages")));
      return;
    }
    const start = seriesList.find((s) => s.uid === view.series_uid) || seriesList[0];
    await loadSeries(start.uid, view.series_uid === start.uid ? view.instance : 0);
  }

  function renderStrip() {
    fill(strip, seriesList.map((s) => {
      const img = h("img", { alt: "", class: "dv-thumb-img", width: "96", height: "96" });
      const item = h("button", {
        type: "button",
        class: "dv-thumb",
        role: "option",
        "data-series": s.uid,
        "aria-selected": s.uid === view.series_uid ? "true" : "false",
        disabled: readOnly,
        onclick: () => {
          if (s.uid === view.series_uid) return;
          loadSeries(s.uid, 0).then(() => emit(false)).catch(fail);
        },
      }, img, h("span", { class: "dv-thumb-label" },
        t("viewer.seriesLabel", { number: s.number ?? "–", modality: s.modality || "?", count: s.count }),
        s.description ? h("span", { class: "dv-thumb-desc" }, s.description) : null));
      s.img = img;
      return item;
    }));
    loadThumbnails();
  }

  async function loadThumbnails() {
    for (const s of seriesList) {
      if (destroyed) return;
      try {
        const response = await apiFetch(`/dicomweb/studies/${view.study_uid}/series/${s.uid}/thumbnail`,
          { headers: { Accept: "image/jpeg" }, signal: abort.signal });
        const url = URL.createObjectURL(await response.blob());
        if (destroyed) {
          URL.revokeObjectURL(url);
          return;
        }
        thumbUrls.push(url);
        s.img.src = url;
      } catch (err) {
        if (err instanceof SessionEnded || destroyed) return;
        s.img.classList.add("dv-thumb-missing");
      }
    }
  }

  async function loadSeries(uid, index) {
    const token = ++loadToken;
    const metadata = await getJson(`/dicomweb/studies/${view.study_uid}/series/${uid}/metadata`);
    if (destroyed || token !== loadToken) return;
    view.series_uid = uid;
    stack = buildStack(metadata);
    for (const b of strip.querySelectorAll(".dv-thumb")) {
      b.setAttribute("aria-selected", b.dataset.series === uid ? "true" : "false");
    }
    root.dataset.series = uid;
    root.dataset.count = String(stack.length);
    slider.max = String(Math.max(0, stack.length - 1));
    slider.disabled = readOnly || stack.length < 2;
    const ct = stack.length > 0 && stack[0].modality === "CT";
    for (const b of presetButtons) b.hidden = !ct && b.dataset.preset !== "default";
    shownKey = null;
    view.instance = clamp(index, 0, Math.max(0, stack.length - 1));
    status.replaceChildren();
    if (!stack.length) {
      bitmap = null;
      status.replaceChildren(h("p", { class: "dv-msg" }, t("viewer.noImages")));
      draw();
      return;
    }
    request();
  }

  let ready = loadStudy().catch(fail);

  // ----- the API -----
  function getState() {
    return {
      mode: "dicom",
      study_uid: view.study_uid,
      series_uid: view.series_uid,
      instance: view.instance,
      window_center: view.window_center,
      window_width: view.window_width,
      zoom: Number(view.zoom.toFixed(4)),
      pan: { x: Number(view.pan.x.toFixed(4)), y: Number(view.pan.y.toFixed(4)) },
      pointer: pointer ? { ...pointer } : null,
    };
  }

  /** Apply a (remote) state: the fields given, validated loosely; never calls onChange. */
  function setState(partial) {
    if (!partial || destroyed) return ready;
    const p = partial;
    if ("pointer" in p) {
      remotePointer = remotePointerOf(p.pointer);
    }
    if (Number.isFinite(p.zoom)) view.zoom = clamp(p.zoom, ZOOM_MIN, ZOOM_MAX);
    if (p.pan && Number.isFinite(p.pan.x) && Number.isFinite(p.pan.y)) {
      view.pan = { x: clamp(p.pan.x, -PAN_MAX, PAN_MAX), y: clamp(p.pan.y, -PAN_MAX, PAN_MAX) };
    }
    if ("window_center" in p || "window_width" in p) {
      const c = "window_center" in p ? p.window_center : view.window_center;
      const w = "window_width" in p ? p.window_width : view.window_width;
      if (c === null || w === null) {
        view.window_center = null;
        view.window_width = null;
      } else if (Number.isFinite(c) && Number.isFinite(w) && w > 0) {
        view.window_center = c;
        view.window_width = w;
      }
    }
    const index = Number.isInteger(p.instance) ? p.instance : view.instance;
    if (p.study_uid && p.study_uid !== view.study_uid) {
      view.study_uid = p.study_uid;
      view.series_uid = p.series_uid || null;
      view.instance = index;
      cache.forEach((b) => b !== bitmap && b.close());
      cache.clear();
      ready = loadStudy().catch(fail);
      return ready;
    }
    if (p.series_uid && p.series_uid !== view.series_uid) {
      ready = ready.then(() => loadSeries(p.series_uid, index)).catch(fail);
      return ready;
    }
    if (Number.isInteger(p.instance)) view.instance = stack.length ? clamp(index, 0, stack.length - 1) : index;
    request();
    return ready;
  }

  function destroy() {
    if (destroyed) return;
    destroyed = true;
    abort.abort();
    resizer.disconnect();
    clearTimeout(wlTimer);
    if (fullscreen) document.body.classList.remove("viewer-fullscreen-open");
    document.removeEventListener("keydown", escapeFullscreen);
    for (const url of thumbUrls) URL.revokeObjectURL(url);
    for (const bmp of cache.values()) bmp.close();
    cache.clear();
    queue.length = 0;
    bitmap = null;
    root.remove();
    if (container.viewer === api) container.viewer = null;
  }

  const api = { getState, setState, destroy, ready: () => ready };
  container.viewer = api;
  return api;
}
