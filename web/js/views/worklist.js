// Worklist (readers): the centre's and the reader's cases, most urgent first, refreshed while
// it is on screen.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h } from "/static/js/dom.js";
import { formatTime, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import {
  arrivedCell,
  caseLink,
  caseTable,
  errorBox,
  modalities,
  pageHead,
  patientName,
  priorityBadge,
  statusBadge,
} from "/static/js/ui.js";

const WORKLIST_REFRESH_MS = 5000;

function worklistView(ctx) {
  const { main, state } = ctx;
  state.lastList = "#/worklist";
  const status = h("p", { class: "muted small", "aria-live": "polite" }, t("loading"));
  const body = h("div");
  main.append(pageHead(t("worklist.title"), h("span", { class: "muted small" }, t("worklist.auto")), status), body);
  const columns = [
    { title: t("col.priority"), cell: (c) => priorityBadge(c.priority) },
    { title: t("col.case"), cell: caseLink },
    { title: t("col.patient"), cell: patientName, cls: "strong wide" },
    { title: t("col.origin"), cell: (c) => c.origin.name, cls: "wide" },
    { title: t("col.modalities"), cell: modalities },
    { title: t("col.arrived"), cell: arrivedCell },
    { title: t("col.status"), cell: (c) => statusBadge(c.status) },
  ];

  function show({ cases, at }) {
    fill(body, cases.length
      ? caseTable(t("worklist.caption"), columns, cases)
      : h("p", { class: "empty" }, t("worklist.empty")));
    status.textContent = t("worklist.updated", { time: formatTime(at) });
  }

  async function load() {
    if (document.hidden && state.cache.has("worklist")) return; // a background tab catches up when shown
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
  if (state.cache.has("worklist")) show(state.cache.get("worklist"));
  load();
  ctx.every(WORKLIST_REFRESH_MS, load);
}

addRoute({
  name: "worklist",
  path: "worklist",
  view: worklistView,
  roles: ["reader", "admin"],
  home: ["reader"],
  nav: { label: "nav.worklist", order: 10 },
});
