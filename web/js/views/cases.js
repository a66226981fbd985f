// Cases: a clinic's own cases; a reader's centre's cases. Newest first, filtered by status.
// Live: a case event on the hub's stream reloads the list (a slow poll covers a stream that is
// down), so a clinic sees its case claimed and its report arrive without reloading.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { label, t } from "/static/js/i18n.js";
import { subscribe } from "/static/js/live.js";
import { addRoute } from "/static/js/router.js";
import { slaCell, tickSla } from "/static/js/views/worklist.js";
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

const CASES_LIMIT = 100;
const FALLBACK_POLL_MS = 30_000;
const LIVE_DEBOUNCE_MS = 300;
export const STATUSES = ["receiving", "complete", "routed", "unroutable", "claimed", "preliminary", "final"];
let casesFilter = "";

function casesView(ctx) {
  loadStyle("workspace"); // SLA countdown
  const { main, state, user } = ctx;
  state.lastList = "#/cases";
  const filter = h("select", { id: "cases-status" },
    h("option", { value: "" }, t("cases.all")),
    STATUSES.map((s) => h("option", { value: s }, label("status", s))));
  filter.value = casesFilter;
  filter.addEventListener("change", () => {
    casesFilter = filter.value;
    load();
  });
  const refresh = h("button", { type: "button", class: "btn btn-secondary", onclick: () => load() },
    t("cases.refresh"));
  const body = h("div", null, h("p", { class: "muted" }, t("loading")));
  main.append(
    pageHead(user.role === "clinic" ? t("cases.titleClinic") : t("cases.title"),
      h("label", { for: "cases-status", class: "inline-label" }, t("cases.status")), filter, refresh),
    body,
  );
  const columns = [
    { title: t("col.case"), cell: caseLink },
    { title: t("col.priority"), cell: (c) => priorityBadge(c.priority) },
    { title: t("col.patient"), cell: patientName, cls: "strong wide" },
    user.role === "clinic"
      ? { title: t("col.kind"), cell: (c) => label("kind", c.kind) }
      : { title: t("col.origin"), cell: (c) => c.origin.name, cls: "wide" },
    { title: t("col.modalities"), cell: modalities },
    { title: t("col.arrived"), cell: arrivedCell },
    { title: t("col.status"), cell: (c) => statusBadge(c.status) },
    { title: t("workspace.sla"), cell: slaCell },
    {
      title: t("col.report"),
      cell: (c) => (c.status === "final"
        ? h("span", { class: "badge ready" }, h("span", { "aria-hidden": "true" }, "✓ "), t("cases.reportReady"))
        : h("span", { class: "muted" }, t("none"))),
    },
  ];

  let current = [];
  function show(cases) {
    current = cases;
    fill(body,
      cases.length ? caseTable(t("cases.caption"), columns, cases) : h("p", { class: "empty" }, t("cases.empty")),
      cases.length >= CASES_LIMIT ? h("p", { class: "muted small" }, t("cases.limited", { n: CASES_LIMIT })) : null);
  }

  async function load() {
    const key = `cases:${casesFilter}`;
    const query = new URLSearchParams({ limit: String(CASES_LIMIT) });
    if (casesFilter) query.set("status", casesFilter);
    refresh.disabled = true;
    try {
      const data = await api("GET", `/cases?${query}`);
      if (!ctx.isCurrent() || key !== `cases:${casesFilter}`) return;
      state.cache.set(key, data.cases);
      show(data.cases);
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(body, errorBox(err));
    } finally {
      refresh.disabled = false;
    }
  }
  if (state.cache.has(`cases:${casesFilter}`)) show(state.cache.get(`cases:${casesFilter}`));
  load();
  let pending = null;
  const unsubscribe = subscribe((type) => {
    if (type !== "case" || pending) return;
    pending = setTimeout(() => {
      pending = null;
      if (ctx.isCurrent()) load();
    }, LIVE_DEBOUNCE_MS);
  });
  ctx.onLeave(() => {
    unsubscribe();
    if (pending) clearTimeout(pending);
  });
  ctx.every(FALLBACK_POLL_MS, () => { if (!document.hidden) load(); });
  ctx.every(1000, () => tickSla(body, current));
}

addRoute({
  name: "cases",
  path: "cases",
  view: casesView,
  home: ["clinic", "admin"],
  nav: { label: "nav.cases", order: 20 },
});
