// telehub UI strings and locale-aware formatting. Every visible string goes through t().
// Two languages: zh-CN and en. The choice is kept in localStorage; the default follows the browser.

const STORAGE_KEY = "telehub.lang";
export const LANGS = ["zh-CN", "en"];

const en = {
  "app.name": "telehub",
  "app.tagline": "Remote diagnosis hub",
  "lang.switch": "中文",
  "lang.switchLabel": "Switch language to Chinese",

  "login.title": "Sign in",
  "login.intro": "Sign in with your consortium account.",
  "login.username": "Username",
  "login.password": "Password",
  "login.submit": "Sign in",
  "login.busy": "Signing in…",
  "login.failed": "Sign-in failed",
  "session.expired": "Your session has ended. Please sign in again.",

  "header.user": "Signed in as",
  "header.logout": "Sign out",
  "nav.label": "Main",
  "nav.worklist": "Worklist",
  "nav.cases": "Cases",

  "role.clinic": "Clinic",
  "role.reader": "Reader",
  "role.admin": "Administrator",

  "worklist.title": "Worklist",
  "worklist.auto": "Refreshes every 5 s",
  "worklist.updated": "Updated {time}",
  "worklist.empty": "No cases are waiting for reading.",
  "worklist.caption": "Cases waiting for reading, most urgent first",

  "cases.title": "Cases",
  "cases.titleClinic": "Our cases",
  "cases.caption": "Cases, newest first",
  "cases.status": "Status",
  "cases.all": "All",
  "cases.refresh": "Refresh",
  "cases.empty": "No cases.",
  "cases.limited": "Showing the latest {n} cases.",
  "cases.reportReady": "Report ready",

  "col.case": "Case",
  "col.priority": "Priority",
  "col.patient": "Patient",
  "col.origin": "Origin facility",
  "col.kind": "Type",
  "col.modalities": "Modality",
  "col.arrived": "Arrived",
  "col.status": "Status",
  "col.reader": "Reader",
  "col.report": "Report",

  "priority.stat": "STAT",
  "priority.urgent": "Urgent",
  "priority.routine": "Routine",

  "status.receiving": "Receiving",
  "status.complete": "Received",
  "status.routed": "Awaiting claim",
  "status.unroutable": "Unroutable",
  "status.claimed": "Claimed",
  "status.preliminary": "Preliminary",
  "status.final": "Final",

  "kind.imaging": "Imaging",
  "kind.ecg": "ECG",
  "kind.consultation": "Consultation",

  "sex.M": "Male",
  "sex.F": "Female",
  "sex.O": "Other",

  "case.title": "Case #{id}",
  "case.back": "Back to list",
  "case.open": "Open case {id}",
  "case.summary": "Summary",
  "case.patient": "Patient",
  "case.patientId": "Patient ID",
  "case.sex": "Sex",
  "case.birthDate": "Date of birth",
  "case.kind": "Type",
  "case.origin": "Origin facility",
  "case.centre": "Reading centre",
  "case.reader": "Reader",
  "case.arrived": "Arrived",
  "case.question": "Clinical question",
  "case.claimedBy": "Claimed by {name}.",
  "case.claimHint": "This case is waiting on your reading centre's worklist.",
  "case.claim": "Claim case",
  "case.claiming": "Claiming…",
  "case.claimed": "You claimed this case.",

  "studies.title": "Studies",
  "studies.none": "No studies.",
  "study.untitled": "Study",
  "study.date": "Study date",
  "study.accession": "Accession no.",
  "study.completedAt": "Received completely",
  "study.counts": "Series: {series} · Images: {images}",
  "series.caption": "Series of this study",
  "series.number": "No.",
  "series.modality": "Modality",
  "series.description": "Description",
  "series.bodyPart": "Body part",
  "series.images": "Images",

  "reports.title": "Reports",
  "reports.none": "No report yet.",
  "report.version": "Version {v}",
  "report.status.preliminary": "Preliminary",
  "report.status.final": "Final",

  "editor.title": "Write report",
  "editor.label": "Report text",
  "editor.hint": "A preliminary report can be replaced later; a final report closes the case.",
  "editor.savePrelim": "Save preliminary",
  "editor.signFinal": "Sign final",
  "editor.saving": "Saving…",
  "editor.confirmFinal": "Sign the final report? It cannot be changed afterwards.",
  "editor.saved": "Preliminary report saved (version {v}).",
  "editor.signed": "Final report signed (version {v}).",
  "editor.empty": "Please write the report text first.",

  "timeline.title": "Timeline",
  "timeline.none": "No events yet.",
  "event.first_instance": "First image received",
  "event.study_complete": "Study received completely",
  "event.study_grew": "More images arrived",
  "event.routed": "Routed to reading centre",
  "event.unroutable": "No reading centre covers this case",
  "event.claimed": "Claimed by reader",
  "event.report_preliminary": "Preliminary report saved",
  "event.report_final": "Final report signed",
  "detail.centre": "Centre",
  "detail.instances": "Images",
  "detail.version": "Version",
  "detail.rule": "Rule",
  "detail.source": "Source",
  "detail.by": "By",

  "tat.title": "Turnaround time (TAT)",
  "tat.first_instance_to_complete": "First image → study received",
  "tat.complete_to_routed": "Received → routed",
  "tat.routed_to_claimed": "Routed → claimed",
  "tat.claimed_to_final": "Claimed → final report",
  "tat.complete_to_final": "Total: received → final report",

  "unit.d": "d",
  "unit.h": "h",
  "unit.min": "min",
  "unit.s": "s",
  "none": "—",
  "loading": "Loading…",
  "retry": "Retry",
  "notFound": "Page not found.",
  "error.network": "Cannot reach the hub. Please check the network connection.",
  "error.server": "Server message: {msg}",
  "err.invalid_credentials": "Wrong username or password.",
  "err.missing_credentials": "Enter your username and password.",
  "err.invalid_token": "Your sign-in is no longer valid. Please sign in again.",
  "err.token_expired": "Your sign-in has expired. Please sign in again.",
  "err.already_claimed": "This case has already been claimed.",
  "err.not_claimable": "This case cannot be claimed now.",
  "err.already_final": "This case already has a final report.",
  "err.not_claimed": "Claim the case before writing a report.",
  "err.empty_report": "The report is empty.",
  "err.too_long": "The report is too long.",
  "err.not_found": "Not found.",
  "err.not_a_reader": "Only readers can do this.",
  "err.forbidden": "You are not allowed to do this.",
};

const zh = {
  "app.name": "telehub",
  "app.tagline": "远程诊断平台",
  "lang.switch": "English",
  "lang.switchLabel": "切换为英文界面",

  "login.title": "登录",
  "login.intro": "请使用医联体账号登录。",
  "login.username": "用户名",
  "login.password": "密码",
  "login.submit": "登录",
  "login.busy": "正在登录…",
  "login.failed": "登录失败",
  "session.expired": "登录已失效，请重新登录。",

  "header.user": "当前用户",
  "header.logout": "退出登录",
  "nav.label": "主导航",
  "nav.worklist": "工作列表",
  "nav.cases": "病例",

  "role.clinic": "申请机构",
  "role.reader": "阅片医生",
  "role.admin": "管理员",

  "worklist.title": "工作列表",
  "worklist.auto": "每 5 秒自动刷新",
  "worklist.updated": "更新于 {time}",
  "worklist.empty": "暂无待阅片病例。",
  "worklist.caption": "待阅片病例，按紧急程度排序",

  "cases.title": "病例",
  "cases.titleClinic": "本机构病例",
  "cases.caption": "病例列表，最新在前",
  "cases.status": "状态",
  "cases.all": "全部",
  "cases.refresh": "刷新",
  "cases.empty": "暂无病例。",
  "cases.limited": "仅显示最近 {n} 个病例。",
  "cases.reportReady": "报告已出",

  "col.case": "病例号",
  "col.priority": "优先级",
  "col.patient": "患者",
  "col.origin": "申请机构",
  "col.kind": "类型",
  "col.modalities": "检查设备",
  "col.arrived": "到达时间",
  "col.status": "状态",
  "col.reader": "阅片医生",
  "col.report": "诊断报告",

  "priority.stat": "急诊",
  "priority.urgent": "加急",
  "priority.routine": "常规",

  "status.receiving": "接收中",
  "status.complete": "已接收",
  "status.routed": "待认领",
  "status.unroutable": "无法分派",
  "status.claimed": "已认领",
  "status.preliminary": "初步报告",
  "status.final": "终审报告",

  "kind.imaging": "影像",
  "kind.ecg": "心电",
  "kind.consultation": "会诊",

  "sex.M": "男",
  "sex.F": "女",
  "sex.O": "其他",

  "case.title": "病例 #{id}",
  "case.back": "返回列表",
  "case.open": "打开病例 {id}",
  "case.summary": "概况",
  "case.patient": "患者",
  "case.patientId": "患者编号",
  "case.sex": "性别",
  "case.birthDate": "出生日期",
  "case.kind": "类型",
  "case.origin": "申请机构",
  "case.centre": "影像中心",
  "case.reader": "阅片医生",
  "case.arrived": "到达时间",
  "case.question": "临床问题",
  "case.claimedBy": "已由 {name} 认领。",
  "case.claimHint": "该病例正在本影像中心的工作列表中等待认领。",
  "case.claim": "认领病例",
  "case.claiming": "正在认领…",
  "case.claimed": "您已认领该病例。",

  "studies.title": "检查",
  "studies.none": "暂无检查。",
  "study.untitled": "检查",
  "study.date": "检查日期",
  "study.accession": "检查号",
  "study.completedAt": "接收完成时间",
  "study.counts": "{series} 个序列 · {images} 幅图像",
  "series.caption": "本检查的序列",
  "series.number": "序号",
  "series.modality": "设备",
  "series.description": "描述",
  "series.bodyPart": "部位",
  "series.images": "图像数",

  "reports.title": "诊断报告",
  "reports.none": "尚无诊断报告。",
  "report.version": "第 {v} 版",
  "report.status.preliminary": "初步",
  "report.status.final": "终审",

  "editor.title": "撰写诊断报告",
  "editor.label": "报告内容",
  "editor.hint": "初步报告之后可以更新；终审报告签发后病例即完成。",
  "editor.savePrelim": "保存初步报告",
  "editor.signFinal": "签发终审报告",
  "editor.saving": "正在保存…",
  "editor.confirmFinal": "确认签发终审报告？签发后不可修改。",
  "editor.saved": "初步报告已保存（第 {v} 版）。",
  "editor.signed": "终审报告已签发（第 {v} 版）。",
  "editor.empty": "请先填写报告内容。",

  "timeline.title": "时间线",
  "timeline.none": "暂无记录。",
  "event.first_instance": "收到首幅图像",
  "event.study_complete": "检查接收完成",
  "event.study_grew": "检查追加图像",
  "event.routed": "已分派至影像中心",
  "event.unroutable": "无影像中心可接收该病例",
  "event.claimed": "阅片医生已认领",
  "event.report_preliminary": "已保存初步报告",
  "event.report_final": "已签发终审报告",
  "detail.centre": "中心",
  "detail.instances": "图像数",
  "detail.version": "版本",
  "detail.rule": "规则",
  "detail.source": "来源",
  "detail.by": "操作人",

  "tat.title": "报告周转时间（TAT）",
  "tat.first_instance_to_complete": "首幅图像 → 接收完成",
  "tat.complete_to_routed": "接收完成 → 分派",
  "tat.routed_to_claimed": "分派 → 认领",
  "tat.claimed_to_final": "认领 → 终审报告",
  "tat.complete_to_final": "合计：接收完成 → 终审报告",

  "unit.d": "天",
  "unit.h": "小时",
  "unit.min": "分",
  "unit.s": "秒",
  "none": "—",
  "loading": "加载中…",
  "retry": "重试",
  "notFound": "页面不存在。",
  "error.network": "无法连接到平台，请检查网络连接。",
  "error.server": "服务器信息：{msg}",

  // Server error codes. English has none on purpose: the server's own message is English.
  "err.invalid_credentials": "用户名或密码错误。",
  "err.missing_credentials": "请输入用户名和密码。",
  "err.invalid_token": "登录已失效，请重新登录。",
  "err.token_expired": "登录已过期，请重新登录。",
  "err.already_claimed": "该病例已被认领。",
  "err.not_claimable": "该病例当前不可认领。",
  "err.already_final": "该病例已有终审报告。",
  "err.not_claimed": "请先认领病例再撰写报告。",
  "err.empty_report": "报告内容为空。",
  "err.too_long": "报告内容过长。",
  "err.not_found": "未找到。",
  "err.not_a_reader": "仅阅片医生可执行此操作。",
  "err.forbidden": "无权执行此操作。",
};

const DICTS = { "zh-CN": zh, en };

/**
 * A feature module's own strings: addStrings({ en: {...}, "zh-CN": {...} }). Every key must be
 * in both languages (tests/test_web_i18n.py checks); a key defined twice is a mistake.
 */
export function addStrings(dicts) {
  for (const code of LANGS) {
    for (const [key, text] of Object.entries(dicts[code] || {})) {
      if (Object.prototype.hasOwnProperty.call(DICTS[code], key)) {
        console.warn("telehub i18n: key defined twice", key);
      }
      DICTS[code][key] = text;
    }
  }
}

/** Every key of each language (the language test compares them). */
export function allKeys() {
  return Object.fromEntries(LANGS.map((code) => [code, Object.keys(DICTS[code]).sort()]));
}

function initialLang() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (LANGS.includes(saved)) return saved;
  } catch {
    // storage blocked: fall through to the browser's language
  }
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || "";
  return nav.toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let lang = initialLang();

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!LANGS.includes(next)) return;
  lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // not fatal: the choice just will not survive a reload
  }
  document.documentElement.lang = next;
}

export function otherLang() {
  return lang === "zh-CN" ? "en" : "zh-CN";
}

/** Is there a string for this key in the current language? */
export function has(key) {
  return Object.prototype.hasOwnProperty.call(DICTS[lang], key);
}

/** The string for key in the current language, with {name} placeholders filled in. */
export function t(key, params = {}) {
  const dict = DICTS[lang];
  let text = has(key) ? dict[key] : en[key];
  if (text === undefined) {
    console.warn("telehub i18n: missing key", key);
    text = key;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** A translated label for an enumerated value (status, priority, kind …), or the raw value. */
export function label(group, value) {
  const key = `${group}.${value}`;
  return has(key) || key in en ? t(key) : String(value ?? t("none"));
}

/** The text to show for an API error: a translation of its code when there is one. */
export function errorText(code, serverMessage) {
  const key = `err.${code}`;
  return has(key) ? t(key) : serverMessage;
}

const pad = (n) => String(n).padStart(2, "0");

/** Local date and time, unambiguous in both languages: 2025-03-14 09:05:07. */
export function formatDateTime(iso, { seconds = true } = {}) {
  if (!iso) return t("none");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
  return `${date} ${time}`;
}

/** Local time of day only: 09:05:07. */
export function formatTime(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** "5 minutes ago" / "5 分钟前", for how long a case has waited. */
export function formatAgo(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return "";
  const secs = Math.round((then - now) / 1000);
  const rtf = new Intl.RelativeTimeFormat(lang, { numeric: "auto", style: "short" });
  const abs = Math.abs(secs);
  if (abs < 60) return rtf.format(secs, "second");
  if (abs < 3600) return rtf.format(Math.round(secs / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(secs / 3600), "hour");
  return rtf.format(Math.round(secs / 86400), "day");
}

/** A duration in seconds as "2 min 05 s" / "2 分 05 秒"; null or undefined as "—". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return t("none");
  let s = Math.max(0, Math.round(Number(seconds)));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const u = (k) => t(`unit.${k}`);
  if (d > 0) return `${d} ${u("d")} ${pad(h)} ${u("h")} ${pad(m)} ${u("min")}`;
  if (h > 0) return `${h} ${u("h")} ${pad(m)} ${u("min")} ${pad(s)} ${u("s")}`;
  if (m > 0) return `${m} ${u("min")} ${pad(s)} ${u("s")}`;
  return `${s} ${u("s")}`;
}

/** DICOM dates (YYYYMMDD) as YYYY-MM-DD; anything else unchanged. */
export function formatDicomDate(value) {
  if (!value) return t("none");
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(value));
  return m ? `${m[1]}-${m[2]}-${m[3]}` : String(value);
}

/** DICOM person names (Family^Given^Middle) as readable text. */
export function formatPersonName(value) {
  if (!value) return t("none");
  return String(value)
    .split("=")[0]
    .split("^")
    .filter(Boolean)
    .join(" ");
}

document.documentElement.lang = lang;
