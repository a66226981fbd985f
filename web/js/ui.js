// Shared widgets: alerts, badges, case tables, field lists, cards. Feature modules use these
// instead of their own copies.

import { h } from "/static/js/dom.js";
import { errorText, formatAgo, formatDateTime, formatPersonName, label, t } from "/static/js/i18n.js";

/** An inline, accessible error box for an ApiError (translated when the code is known). */
export function errorBox(err, heading) {
  const main = errorText(err.code, err.message);
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    heading ? h("strong", null, heading) : null,
    h("p", null, main),
    main !== err.message && err.code !== "network"
      ? h("p", { class: "muted small" }, t("error.server", { msg: err.message }))
      : null,
  );
}

export function notice(text, kind = "info") {
  return h("div", { class: `alert alert-${kind}`, role: "status" }, h("p", null, text));
}

export function priorityBadge(priority) {
  return h("span", { class: `badge prio prio-${priority}` }, label("priority", priority));
}

export function statusBadge(status) {
  return h("span", { class: `badge status status-${status}` }, label("status", status));
}

export function patientName(c) {
  return c.patient ? formatPersonName(c.patient.name) : t("none");
}

export function modalities(c) {
  return c.modalities && c.modalities.length ? c.modalities.join(", ") : t("none");
}

export function caseLink(c) {
  return h("a", { href: `#/cases/${c.id}`, class: "case-link", "aria-label": t("case.open", { id: c.id }) },
    `#${c.id}`);
}

/** A table that collapses into cards on narrow screens (each cell carries its column label). */
export function caseTable(caption, columns, cases) {
  const head = h("thead", null, h("tr", null, columns.map((col) => h("th", { scope: "col" }, col.title))));
  const body = h("tbody", null, cases.map((c) =>
    h("tr", {
      class: `row-${c.priority}`,
      "data-case": c.id,
      onclick: (event) => {
        if (event.target.closest("a, button")) return;
        location.hash = `#/cases/${c.id}`;
      },
    }, columns.map((col) => h("td", { "data-label": col.title, class: col.cls || null }, col.cell(c))))));
  return h("table", { class: "cases-table" }, h("caption", { class: "sr-only" }, caption), head, body);
}

export function arrivedCell(c) {
  return h("span", null,
    h("time", { datetime: c.arrived_at }, formatDateTime(c.arrived_at, { seconds: false })),
    h("span", { class: "muted small block" }, formatAgo(c.arrived_at)));
}

export function fields(pairs) {
  return h("dl", { class: "fields" }, pairs
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([name, value]) => h("div", { class: "field-pair" }, h("dt", null, name), h("dd", null, value))));
}

/** A card with a heading from an i18n key. */
export function section(titleKey, ...content) {
  const id = `sec-${titleKey.replace(/\W/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, t(titleKey)), content);
}

/** A page heading with tools on the right. */
export function pageHead(title, ...tools) {
  return h("div", { class: "page-head" },
    h("h1", { tabindex: "-1" }, title),
    tools.length ? h("div", { class: "page-tools" }, tools) : null);
}
