// Clinic portal, "Send a case": a DICOM folder, a zip or single files (through the hub's
// resumable uploads, so a dropped link resumes) or an ECG, with priority and clinical question;
// then what the hub accepted and refused, and links to the case(s).

import { ApiError, SessionEnded, apiFetch } from "/static/js/api.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { addStrings, has, label, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, notice, pageHead } from "/static/js/ui.js";
import { isDicomFile, resumableUpload, stowBody } from "/static/js/upload.js";

addStrings({
  en: {
    "portal.nav": "Send a case",
    "portal.title": "Send a case",
    "portal.intro": "Send images or an ECG to the reading centre. Large uploads continue by themselves if the connection drops.",
    "portal.kind": "Type of case",
    "portal.priority": "Priority",
    "portal.question": "Clinical question",
    "portal.questionHint": "Symptoms, history and what the reader should answer.",
    "portal.source": "Images",
    "portal.folder": "DICOM folder",
    "portal.zip": "Zip file",
    "portal.files": "Single files",
    "portal.ecgFiles": "ECG file(s)",
    "portal.ecgHint": "WFDB (.hea with its .dat), DICOM ECG waveform, HL7 aECG, Philips or GE MUSE XML, or a .zip of one of these.",
    "portal.chosen": "{n} file(s), {size}",
    "portal.chosenZip": "{name}, {size}",
    "portal.none": "Nothing chosen yet.",
    "portal.clear": "Clear",
    "portal.send": "Send",
    "portal.sending": "Sending…",
    "portal.another": "Send another case",
    "portal.needFiles": "Choose a folder, a zip file or files to send.",
    "portal.noDicom": "None of the chosen files is a DICOM file.",
    "portal.progress": "Upload progress",
    "portal.bytes": "{sent} of {total} ({pct} %)",
    "portal.state.checking": "Checking the files…",
    "portal.state.uploading": "Uploading…",
    "portal.state.reconnecting": "Connection lost — reconnecting; the upload will resume where it stopped.",
    "portal.state.processing": "Upload complete; the hub is checking the images…",
    "portal.state.done": "Done.",
    "portal.state.failed": "The upload failed.",
    "portal.result": "Result",
    "portal.accepted": "Accepted: {n} image(s)",
    "portal.acceptedEcg": "ECG accepted.",
    "portal.refused": "Refused: {n}",
    "portal.refusedCaption": "Files the hub refused, with the reason",
    "portal.refusedFile": "File",
    "portal.refusedReason": "Reason",
    "portal.notDicom": "not a DICOM file (not sent)",
    "portal.refusal.not_dicom": "not a DICOM file",
    "portal.refusal.encrypted": "encrypted in the zip (cannot be read)",
    "portal.refusal.unreadable": "damaged in the zip (cannot be unpacked)",
    "portal.cases": "Case(s) created or updated:",
    "portal.openCase": "Open case #{id}",
    "portal.unit.B": "B",
    "portal.unit.KB": "KB",
    "portal.unit.MB": "MB",
    "portal.unit.GB": "GB",
  },
  "zh-CN": {
    "portal.nav": "发起申请",
    "portal.title": "发起远程诊断申请",
    "portal.intro": "向诊断中心发送影像或心电图。网络中断后，大文件上传会自动续传。",
    "portal.kind": "申请类型",
    "portal.priority": "紧急程度",
    "portal.question": "临床问题",
    "portal.questionHint": "症状、病史以及希望诊断医生回答的问题。",
    "portal.source": "影像",
    "portal.folder": "DICOM 文件夹",
    "portal.zip": "压缩包（zip）",
    "portal.files": "单个文件",
    "portal.ecgFiles": "心电图文件",
    "portal.ecgHint": "WFDB（.hea 及其 .dat）、DICOM 心电波形、HL7 aECG、飞利浦或 GE MUSE XML，或其 .zip 压缩包。",
    "portal.chosen": "{n} 个文件，{size}",
    "portal.chosenZip": "{name}，{size}",
    "portal.none": "尚未选择文件。",
    "portal.clear": "清除",
    "portal.send": "发送",
    "portal.sending": "正在发送…",
    "portal.another": "再发起一个申请",
    "portal.needFiles": "请选择要发送的文件夹、压缩包或文件。",
    "portal.noDicom": "所选文件中没有 DICOM 文件。",
    "portal.progress": "上传进度",
    "portal.bytes": "{sent} / {total}（{pct}%）",
    "portal.state.checking": "正在检查文件…",
    "portal.state.uploading": "正在上传…",
    "portal.state.reconnecting": "网络已断开，正在重新连接；恢复后将从中断处继续上传。",
    "portal.state.processing": "上传完成，平台正在核对影像…",
    "portal.state.done": "已完成。",
    "portal.state.failed": "上传失败。",
    "portal.result": "结果",
    "portal.accepted": "已接收：{n} 幅影像",
    "portal.acceptedEcg": "心电图已接收。",
    "portal.refused": "被拒收：{n}",
    "portal.refusedCaption": "平台拒收的文件及原因",
    "portal.refusedFile": "文件",
    "portal.refusedReason": "原因",
    "portal.notDicom": "不是 DICOM 文件（未发送）",
    "portal.refusal.not_dicom": "不是 DICOM 文件",
    "portal.refusal.encrypted": "压缩包内已加密，无法读取",
    "portal.refusal.unreadable": "压缩包内文件已损坏，无法解压",
    "portal.cases": "已创建或更新的病例：",
    "portal.openCase": "打开病例 #{id}",
    "portal.unit.B": "B",
    "portal.unit.KB": "KB",
    "portal.unit.MB": "MB",
    "portal.unit.GB": "GB",
  },
});

const PRIORITIES = ["routine", "urgent", "stat"];
const KINDS = ["imaging", "ecg"];
const SKIP = new Set(["DICOMDIR", ".DS_Store", "Thumbs.db"]);
// One upload session carries at most this much (the hub's limit is far higher; smaller
// sessions are processed as they arrive, so a long upload shows cases early).
const BATCH_BYTES = 512 * 1024 * 1024;

// The form and the running upload live outside the page, so a language switch (a re-render)
// neither loses what was typed nor the upload in flight.
const form = { kind: "imaging", priority: "routine", question: "", dicom: null, ecg: null };
let job = null; // {phase, sent, total, error, result, kind, localRefused, listeners:Set}

export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let value = n;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${i ? value.toFixed(1) : value} ${t(`portal.unit.${units[i]}`)}`;
}

function update(patch) {
  Object.assign(job, patch);
  for (const fn of [...job.listeners]) fn();
}

function portalView(ctx) {
  loadStyle("portal");
  const { main } = ctx;
  const body = h("div", { class: "portal" });
  main.append(pageHead(t("portal.title")), body);
  if (job) {
    fill(body, jobPanel(ctx));
    return;
  }
  fill(body, formPanel(ctx, body));
}

function radios(name, values, current, group, onchange) {
  return h("div", { class: "choice-row", role: "radiogroup" }, values.map((v) => {
    const id = `portal-${name}-${v}`;
    const input = h("input", { type: "radio", name, id, value: v, checked: v === current, "data-value": v });
    input.addEventListener("change", () => onchange(v));
    return h("label", { for: id, class: `choice choice-${v}` }, input, h("span", null, label(group, v)));
  }));
}

function formPanel(ctx, body) {
  const errors = h("div", { "aria-live": "polite" });
  const question = h("textarea", { id: "portal-question", rows: "3", maxlength: "4000", "aria-describedby": "portal-question-hint" });
  question.value = form.question;
  question.addEventListener("input", () => { form.question = question.value; });
  const chosen = h("p", { id: "portal-chosen", class: "muted small", "aria-live": "polite" });
  const sourceSlot = h("div");

  function showChosen() {
    const sel = form.kind === "ecg" ? form.ecg : form.dicom;
    if (!sel) {
      fill(chosen, t("portal.none"));
      return;
    }
    const size = formatBytes(sel.files.reduce((sum, f) => sum + f.size, 0));
    fill(chosen,
      sel.zip ? t("portal.chosenZip", { name: sel.files[0].name, size }) : t("portal.chosen", { n: sel.files.length, size }),
      " ",
      h("button", { type: "button", class: "btn btn-ghost btn-small", id: "portal-clear", onclick: () => {
        if (form.kind === "ecg") form.ecg = null;
        else form.dicom = null;
        renderSource();
      } }, t("portal.clear")));
  }

  function fileInput(id, props, onfiles) {
    const input = h("input", { type: "file", id, class: "file-input", ...props });
    input.addEventListener("change", () => {
      const files = [...input.files];
      if (files.length) onfiles(files);
      showChosen();
    });
    return input;
  }

  function renderSource() {
    if (form.kind === "ecg") {
      fill(sourceSlot, h("div", { class: "field" },
        h("label", { for: "portal-ecg" }, t("portal.ecgFiles")),
        fileInput("portal-ecg", { multiple: true }, (files) => { form.ecg = { files }; }),
        h("p", { class: "muted small" }, t("portal.ecgHint"))));
    } else {
      const folder = fileInput("portal-folder", { multiple: true }, (files) => { form.dicom = { files }; });
      folder.webkitdirectory = true;
      fill(sourceSlot, h("fieldset", { class: "sources" },
        h("legend", null, t("portal.source")),
        h("div", { class: "source-grid" },
          h("div", { class: "field" }, h("label", { for: "portal-folder" }, t("portal.folder")), folder),
          h("div", { class: "field" }, h("label", { for: "portal-zip" }, t("portal.zip")),
            fileInput("portal-zip", { accept: ".zip,application/zip" }, (files) => { form.dicom = { files, zip: true }; })),
          h("div", { class: "field" }, h("label", { for: "portal-files" }, t("portal.files")),
            fileInput("portal-files", { multiple: true }, (files) => { form.dicom = { files }; })))));
    }
    showChosen();
  }

  const send = h("button", { type: "submit", class: "btn btn-primary", id: "portal-send" }, t("portal.send"));
  async function onSubmit(event) {
    event.preventDefault();
    errors.replaceChildren();
    const sel = form.kind === "ecg" ? form.ecg : form.dicom;
    if (!sel || !sel.files.length) {
      errors.append(h("div", { class: "alert alert-error", role: "alert" }, h("p", null, t("portal.needFiles"))));
      return;
    }
    startJob(ctx, sel);
    fill(body, jobPanel(ctx));
  }

  renderSource();
  return h("form", { class: "card portal-form", id: "portal-form", onsubmit: onSubmit, novalidate: true },
    h("p", { class: "muted" }, t("portal.intro")),
    errors,
    h("fieldset", null, h("legend", null, t("portal.kind")),
      radios("kind", KINDS, form.kind, "kind", (v) => { form.kind = v; renderSource(); })),
    h("fieldset", null, h("legend", null, t("portal.priority")),
      radios("priority", PRIORITIES, form.priority, "priority", (v) => { form.priority = v; })),
    h("div", { class: "field" },
      h("label", { for: "portal-question" }, t("portal.question")),
      question,
      h("p", { id: "portal-question-hint", class: "muted small" }, t("portal.questionHint"))),
    sourceSlot,
    chosen,
    h("div", { class: "actions" }, send));
}

function startJob(ctx, sel) {
  const metadata = { priority: form.priority, clinical_question: form.question.trim() };
  job = { phase: "checking", sent: 0, total: 0, error: null, result: null, kind: form.kind, localRefused: [], listeners: new Set() };
  // Leaving the page would stop the upload: the browser asks first.
  const stay = (event) => {
    event.preventDefault();
    event.returnValue = "";
  };
  window.addEventListener("beforeunload", stay);
  const run = form.kind === "ecg" ? sendEcg(sel.files, metadata) : sendDicom(sel, metadata);
  run.catch((err) => {
    if (err instanceof SessionEnded) {
      job = null; // signed out: the next user starts with an empty form
      return;
    }
    update({ phase: "failed", error: err });
  }).finally(() => window.removeEventListener("beforeunload", stay));
}

async function sendDicom(sel, metadata) {
  let batches; // [{blob, contentType}]: one upload session each
  if (sel.zip) {
    batches = [{ blob: sel.files[0], contentType: "application/zip" }];
  } else {
    const dicom = [];
    const refused = [];
    for (const file of sel.files) {
      if (SKIP.has(file.name) || file.name.startsWith("._")) continue;
      if (await isDicomFile(file)) dicom.push(file);
      else refused.push({ file: file.webkitRelativePath || file.name, message: t("portal.notDicom") });
    }
    job.localRefused = refused;
    if (!dicom.length) {
      update({ phase: "failed", error: new ApiError(400, "no_dicom", t("portal.noDicom")) });
      return;
    }
    batches = inBatches(dicom).map(stowBody);
  }
  const total = batches.reduce((sum, b) => sum + b.blob.size, 0);
  update({ phase: "uploading", total });
  const result = { status: 200, accepted: 0, failures: [], cases: [] };
  let before = 0;
  for (const { blob, contentType } of batches) {
    const answer = await resumableUpload(blob, contentType, {
      metadata,
      onProgress: (sent) => update({ sent: before + sent }),
      onState: (phase) => update({ phase }),
    });
    before += blob.size;
    const r = answer.result || {};
    if (r.error && !r.failures) Object.assign(result, { error: r.error, message: r.message });
    result.status = Math.max(result.status, answer.status || 200);
    result.accepted += r.accepted || 0;
    result.failures.push(...(r.failures || []));
    for (const id of r.cases || []) if (!result.cases.includes(id)) result.cases.push(id);
  }
  if (result.accepted) delete result.error; // one batch refused outright, others stored
  update({ phase: "done", sent: total, result });
}

/** Files in groups of at most BATCH_BYTES (a big folder is several sessions, each resumable). */
function inBatches(files) {
  const batches = [];
  let current = [];
  let size = 0;
  for (const file of files) {
    if (current.length && size + file.size > BATCH_BYTES) {
      batches.push(current);
      current = [];
      size = 0;
    }
    current.push(file);
    size += file.size;
  }
  if (current.length) batches.push(current);
  return batches;
}

async function sendEcg(files, metadata) {
  const data = new FormData();
  for (const file of files) data.append("file", file, file.name);
  data.append("priority", metadata.priority);
  data.append("clinical_question", metadata.clinical_question);
  const total = files.reduce((sum, f) => sum + f.size, 0);
  update({ phase: "uploading", total });
  const response = await apiFetch("/ecg", { method: "POST", body: data });
  const answer = await response.json();
  update({ phase: "done", sent: total, result: { status: response.status, ecg: true, cases: [answer.case_id] } });
}

function jobPanel(ctx) {
  const panel = h("section", { class: "card upload-job", id: "portal-job", "aria-labelledby": "portal-job-title" });
  function draw() {
    if (!ctx.isCurrent()) {
      job.listeners.delete(draw);
      return;
    }
    const { phase, sent, total } = job;
    const pct = total ? Math.floor((sent / total) * 100) : 0;
    const bar = h("progress", { id: "portal-progress", max: "100", value: String(phase === "done" ? 100 : pct), "aria-labelledby": "portal-job-title" });
    fill(panel,
      h("h2", { id: "portal-job-title" }, t("portal.progress")),
      h("div", { class: `upload-state state-${phase}`, id: "portal-state", "data-phase": phase, role: "status" },
        t(`portal.state.${phase}`)),
      bar,
      h("p", { class: "small", id: "portal-bytes", "data-sent": sent, "data-total": total },
        t("portal.bytes", { sent: formatBytes(sent), total: formatBytes(total), pct: phase === "done" ? 100 : pct })),
      phase === "failed" && job.error ? errorBox(job.error) : null,
      phase === "done" ? resultView(job) : null,
      phase === "done" || phase === "failed"
        ? h("div", { class: "actions" }, h("button", { type: "button", class: "btn btn-secondary", id: "portal-again", onclick: () => {
          job = null;
          form.dicom = null;
          form.ecg = null;
          form.question = "";
          ctx.rerender();
        } }, t("portal.another")))
        : null);
  }
  job.listeners.add(draw);
  ctx.onLeave(() => job && job.listeners.delete(draw));
  draw();
  return panel;
}

function resultView(done) {
  const r = done.result;
  if (r.error && !(r.failures && r.failures.length)) {
    return h("div", { class: "upload-result", id: "portal-result" }, errorBox({ code: r.error, message: r.message }));
  }
  const refused = [
    ...done.localRefused,
    ...(r.failures || []).map((f) => ({
      file: f.file || f.sop_uid || "—",
      message: f.code && has(`portal.refusal.${f.code}`) ? t(`portal.refusal.${f.code}`) : f.message,
    })),
  ];
  const cases = r.cases || [];
  return h("div", { class: "upload-result", id: "portal-result", "data-accepted": r.ecg ? 1 : r.accepted || 0, "data-refused": refused.length },
    h("h3", null, t("portal.result")),
    r.ecg
      ? notice(t("portal.acceptedEcg"), "success")
      : notice(t("portal.accepted", { n: r.accepted || 0 }), r.accepted ? "success" : "warn"),
    refused.length
      ? h("div", { class: "refused" },
        h("p", { class: "strong" }, t("portal.refused", { n: refused.length })),
        h("div", { class: "table-scroll" }, h("table", { class: "refused-table", id: "portal-refused" },
          h("caption", { class: "sr-only" }, t("portal.refusedCaption")),
          h("thead", null, h("tr", null, h("th", { scope: "col" }, t("portal.refusedFile")), h("th", { scope: "col" }, t("portal.refusedReason")))),
          h("tbody", null, refused.map((f) => h("tr", null, h("td", { class: "mono" }, f.file), h("td", null, f.message)))))))
      : null,
    cases.length
      ? h("p", { class: "case-links" }, t("portal.cases"), " ",
        cases.map((id) => h("a", { href: `#/cases/${id}`, class: "btn btn-primary btn-small", "data-case-link": id }, t("portal.openCase", { id }))))
      : null);
}

addRoute({
  name: "portal",
  path: "new",
  view: portalView,
  roles: ["clinic"],
  nav: { label: "portal.nav", order: 15 },
});
