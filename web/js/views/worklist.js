// Worklist (readers): the centre's and the reader's cases, most urgent first. Live: every case
// event on the hub's stream reloads it (a slow poll covers a stream that is down), the SLA
// countdown ticks every second, a duty switch says whether the hub may push cases, and a case
// can be claimed from the list.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { addStrings, formatDuration, formatTime, t } from "/static/js/i18n.js";
import { subscribe } from "/static/js/live.js";
import { addRoute } from "/static/js/router.js";
import {
  arrivedCell,
  caseLink,
  caseTable,
  errorBox,
  modalities,
  notice,
  pageHead,
  patientName,
  priorityBadge,
  statusBadge,
} from "/static/js/ui.js";

addStrings({
  en: {
    "workspace.live": "Live",
    "workspace.connecting": "Connecting to live updates…",
    "workspace.sla": "Report due",
    "workspace.slaLeft": "{time} left",
    "workspace.slaOver": "{time} overdue",
    "workspace.slaNone": "No deadline yet",
    "workspace.claim": "Claim",
    "workspace.claimCase": "Claim case #{id}",
    "workspace.claimedFlash": "You claimed case #{id}.",
    "workspace.duty": "On duty",
    "workspace.dutyOn": "On duty: new cases may be assigned to you.",
    "workspace.dutyOff": "Off duty: no cases are assigned to you.",
    "workspace.dutyUnknown": "Checking duty state…",
    "workspace.critical": "Critical finding",
  },
  "zh-CN": {
    "workspace.live": "实时",
    "workspace.connecting": "正在连接实时更新…",
    "workspace.sla": "报告时限",
    "workspace.slaLeft": "剩余 {time}",
    "workspace.slaOver": "已超时 {time}",
    "workspace.slaNone": "尚无时限",
    "workspace.claim": "认领",
    "workspace.claimCase": "认领病例 #{id}",
    "workspace.claimedFlash": "您已认领病例 #{id}。",
    "workspace.duty": "值班",
    "workspace.dutyOn": "值班中：平台可向您分派新病例。",
    "workspace.dutyOff": "未值班：平台不会向您分派病例。",
    "workspace.dutyUnknown": "正在查询值班状态…",
    "workspace.critical": "危急值",
  },
});

const FALLBACK_POLL_MS = 30_000;
const LIVE_DEBOUNCE_MS = 300;
// Near breach once less than this share of the priority's target is left: the hub's default
// warn fraction (0.8 of the target elapsed) over its default targets.
const NEAR_SHARE = 0.2;
const SLA_TARGET_S = { stat: 30 * 60, urgent: 2 * 3600, routine: 24 * 3600 };

/** The SLA countdown of a case: {cls, text}; red when breached, amber when near. */
export function slaState(c, now = Date.now()) {
  if (!c.sla_deadline) return { cls: "sla-none", text: t("workspace.slaNone"), left: null };
  const left = Math.round((new Date(c.sla_deadline).getTime() - now) / 1000);
  if (c.status === "final") return { cls: "sla-done", text: t("none"), left };
  if (left < 0 || c.sla_breached) {
    return { cls: "sla-breached", text: t("workspace.slaOver", { time: formatDuration(Math.abs(left)) }), left };
  }
  const near = left < (SLA_TARGET_S[c.priority] || SLA_TARGET_S.routine) * NEAR_SHARE;
  return { cls: near ? "sla-near" : "sla-ok", text: t("workspace.slaLeft", { time: formatDuration(left) }), left };
}

export function slaCell(c) {
  const s = slaState(c);
  return h("span", { class: `sla ${s.cls}`, "data-sla": c.id, "data-deadline": c.sla_deadline || "" }, s.text);
}

/** Tick every countdown on the page (no re-render: the rows keep focus and hover). */
export function tickSla(container, cases) {
  const byId = new Map(cases.map((c) => [String(c.id), c]));
  for (const node of container.querySelectorAll("[data-sla]")) {
    const c = byId.get(node.dataset.sla);
    if (!c) continue;
    const s = slaState(c);
    node.className = `sla ${s.cls}`;
    node.textContent = s.text;
  }
}

/** The duty switch shows the hub's state (GET), so every device of the reader agrees. */
function dutySwitch(ctx) {
  const hint = h("span", { class: "muted small duty-hint", id: "duty-hint" });
  const button = h("button", { type: "button", role: "switch", id: "duty-switch", class: "duty-switch", "aria-describedby": "duty-hint" },
    h("span", { class: "duty-knob", "aria-hidden": "true" }), h("span", null, t("workspace.duty")));
  function show(value) {
    button.setAttribute("aria-checked", value === null ? "mixed" : String(value));
    hint.textContent = value === null ? t("workspace.dutyUnknown") : t(value ? "workspace.dutyOn" : "workspace.dutyOff");
  }
  button.addEventListener("click", async () => {
    const next = button.getAttribute("aria-checked") !== "true";
    button.disabled = true;
    try {
      const answer = await api("POST", "/readers/me/duty", { on_duty: next });
      show(answer.on_duty);
    } catch (err) {
      if (err instanceof SessionEnded) return;
      hint.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  show(null);
  api("GET", "/readers/me/duty")
    .then((answer) => { if (ctx.isCurrent()) show(answer.on_duty); })
    .catch(() => {}); // the switch stays "unknown"; clicking it sets the state
  return h("div", { class: "duty" }, button, hint);
}

function worklistView(ctx) {
  loadStyle("workspace");
  const { main, state, user } = ctx;
  state.lastList = "#/worklist";
  const status = h("p", { class: "muted small", "aria-live": "polite", id: "worklist-updated" }, t("loading"));
  const liveDot = h("span", { class: "live-dot", id: "worklist-live", "data-live": "off" }, t("workspace.connecting"));
  const messages = h("div", { "aria-live": "polite" });
  const body = h("div");
  main.append(
    pageHead(t("worklist.title"), user.role === "reader" ? dutySwitch(ctx) : null, liveDot, status),
    messages,
    body,
  );
  let current = [];

  function claimCell(c) {
    if (user.role !== "reader" || c.status !== "routed" || c.reader) return null;
    return h("button", {
      type: "button",
      class: "btn btn-secondary btn-claim",
      "data-claim": c.id,
      "aria-label": t("workspace.claimCase", { id: c.id }),
      onclick: async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        messages.replaceChildren();
        try {
          await api("POST", `/cases/${c.id}/claim`);
          state.flash = { id: c.id, node: notice(t("workspace.claimedFlash", { id: c.id }), "success"), inPanel: true };
          location.hash = `#/cases/${c.id}`;
        } catch (err) {
          if (err instanceof SessionEnded) return;
          button.disabled = false;
          messages.replaceChildren(errorBox(err));
          load();
        }
      },
    }, t("workspace.claim"));
  }

  const columns = [
    { title: t("col.priority"), cell: (c) => priorityBadge(c.priority) },
    { title: t("col.case"), cell: caseLink },
    { title: t("col.patient"), cell: (c) => [patientName(c), c.critical_findings && c.critical_findings.length
      ? h("span", { class: "badge critical" }, t("workspace.critical")) : null], cls: "strong wide" },
    { title: t("col.origin"), cell: (c) => c.origin.name, cls: "wide" },
    { title: t("col.modalities"), cell: modalities },
    { title: t("col.arrived"), cell: arrivedCell },
    { title: t("workspace.sla"), cell: slaCell },
    { title: t("col.status"), cell: (c) => statusBadge(c.status) },
    { title: "", cell: claimCell, cls: "actions-cell" },
  ];

  function show({ cases, at }) {
    current = cases;
    fill(body, cases.length
      ? caseTable(t("worklist.caption"), columns, cases)
      : h("p", { class: "empty" }, t("worklist.empty")));
    status.textContent = t("worklist.updated", { time: formatTime(at) });
  }

  async function load() {
    try {
      const data = await api("GET", "/worklist");
      if (!ctx.isCurrent()) return;
      const entry = { cases: data.cases, at: new Date() };
      state.cache.set("worklist", entry);
      show(entry);
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(body, errorBox(err));
    }
  }

  let pending = null;
  const unsubscribe = subscribe((type) => {
    if (type === "hello") {
      liveDot.dataset.live = "on";
      liveDot.textContent = t("workspace.live");
      return;
    }
    if (type !== "case" || pending) return;
    pending = setTimeout(() => { pending = null; if (ctx.isCurrent()) load(); }, LIVE_DEBOUNCE_MS);
  });
  ctx.onLeave(() => {
    unsubscribe();
    if (pending) clearTimeout(pending);
  });
  if (state.cache.has("worklist")) show(state.cache.get("worklist"));
  load();
  ctx.every(FALLBACK_POLL_MS, () => { if (!document.hidden) load(); });
  ctx.every(1000, () => tickSla(body, current));
}

addRoute({
  name: "worklist",
  path: "worklist",
  view: worklistView,
  roles: ["reader", "admin"],
  home: ["reader"],
  nav: { label: "nav.worklist", order: 10 },
});
