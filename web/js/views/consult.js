// Video consults (会诊): the case panel that lists a case's consults and starts one, and the
// consult page (#/consults/:id) with the room. Protocol: docs/consults.md.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { formatDateTime, formatDuration, formatPersonName, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, pageHead } from "/static/js/ui.js";
import { addCasePanel } from "/static/js/views/case.js";
import { mountRoom } from "/static/js/consult/room.js";
import "/static/js/consult/strings.js";

// ----- the consult page

function consultView(ctx) {
  loadStyle("consult");
  const { main, user } = ctx;
  const id = Number(ctx.params.id);
  const head = pageHead(t("consult.title", { id }));
  const body = h("div", null, h("p", { class: "muted" }, t("loading")));
  main.append(head, body);
  let room = null;
  ctx.onLeave(() => {
    if (room) room.destroy();
  });

  (async () => {
    let consult;
    try {
      consult = await api("GET", `/consults/${id}`);
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(body, h("div", { id: "consult-error", "data-code": err.code }, errorBox(err, t("consult.error.title"))));
      return;
    }
    if (!ctx.isCurrent()) return;
    const caseLink = h("a", { href: `#/cases/${consult.case_id}`, class: "back-link", id: "consult-case-link" },
      h("span", { "aria-hidden": "true" }, "← "), t("consult.caseLink", { id: consult.case_id }));
    const patient = consult.case && consult.case.patient;
    head.after(h("p", { class: "muted consult-sub" }, caseLink,
      patient ? ` · ${formatPersonName(patient.name)}` : "",
      consult.case && consult.case.clinical_question ? ` · ${consult.case.clinical_question}` : ""));
    if (consult.status === "ended") {
      fill(body, h("div", { class: "alert alert-info", role: "alert", id: "consult-error", "data-code": "consult_ended" },
        h("p", null, t("consult.err.consult_ended"), " ", t("consult.duration", { d: formatDuration(consult.duration_seconds) })),
        h("div", { class: "actions" },
          h("a", { class: "btn btn-secondary", href: `#/cases/${consult.case_id}` }, t("consult.backToCase")))));
      return;
    }
    body.replaceChildren();
    room = mountRoom(body, { consult, user, token: ctx.query.get("token") || null });
  })();
}

addRoute({ name: "consult", path: "consults/:id", view: consultView, navAs: "cases" });

// ----- the case panel: this case's consults, and "consult now"

function consultRow(consult, user) {
  const host = consult.participants.find((p) => p.role === "host");
  const open = consult.status === "open";
  return h("li", { class: "consult-item", "data-consult": consult.id, "data-status": consult.status },
    h("div", null,
      h("strong", null, t("consult.title", { id: consult.id })), " ",
      h("span", { class: `badge consult-${consult.status}` }, t(`consult.status.${consult.status}`)),
      h("span", { class: "muted small block" },
        t(`consult.kind.${consult.kind}`), " · ",
        host ? formatPersonName(host.display_name) || host.username : "", " · ",
        t("consult.created", { time: formatDateTime(consult.created_at, { seconds: false }) }), " · ",
        t("consult.people", { n: consult.participants.length }))),
    open
      ? h("a", { class: "btn btn-primary", href: `#/consults/${consult.id}`, "data-action": "join" }, t("consult.join"))
      : null);
}

function startForm(c, ctx) {
  const kind = h("select", { id: `consult-invite-kind-${c.id}`, "data-field": "invite-kind" },
    h("option", { value: "user" }, t("consult.inviteUser")),
    h("option", { value: "centre" }, t("consult.inviteCentre")));
  const value = h("input", { id: `consult-invite-${c.id}`, "data-field": "invite", autocomplete: "off",
    spellcheck: "false", autocapitalize: "none", "aria-describedby": `consult-invite-hint-${c.id}` });
  const autoAdmit = h("input", { type: "checkbox", id: `consult-auto-${c.id}`, "data-field": "auto-admit" });
  const errors = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "start-consult" }, t("consult.start"));

  async function onSubmit(event) {
    event.preventDefault();
    errors.replaceChildren();
    const who = value.value.trim();
    const body = { kind: "adhoc", auto_admit: autoAdmit.checked };
    if (who) body.invite = kind.value === "centre" ? { centre: who } : who.split(/[\s,，]+/).filter(Boolean);
    submit.disabled = true;
    submit.textContent = t("consult.starting");
    try {
      const consult = await api("POST", `/cases/${c.id}/consults`, body);
      if (!ctx.isCurrent()) return;
      location.hash = `#/consults/${consult.id}`;
    } catch (err) {
      if (err instanceof SessionEnded) return;
      submit.disabled = false;
      submit.textContent = t("consult.start");
      errors.replaceChildren(errorBox(err));
    }
  }

  return h("form", { class: "consult-start", onsubmit: onSubmit, "data-form": "consult-start" },
    h("h3", null, t("consult.startTitle")),
    errors,
    h("div", { class: "field" }, h("label", { for: kind.id }, t("consult.inviteKind")), kind),
    h("div", { class: "field" }, h("label", { for: value.id }, t("consult.inviteValue")), value,
      h("p", { class: "muted small", id: `consult-invite-hint-${c.id}` }, t("consult.inviteHint"))),
    h("div", { class: "check" }, autoAdmit, h("label", { for: autoAdmit.id }, t("consult.autoAdmit"))),
    h("div", { class: "actions" }, submit));
}

function consultsPanel(c, ctx) {
  loadStyle("consult");
  const list = h("ul", { class: "consult-list", id: `consult-list-${c.id}` }, h("li", { class: "muted" }, t("loading")));
  (async () => {
    try {
      const data = await api("GET", `/consults?case=${c.id}`);
      if (!ctx.isCurrent()) return;
      const items = sortConsults(data.consults);
      fill(list, items.length ? items.map((x) => consultRow(x, ctx.user)) : h("li", { class: "muted" }, t("consult.none")));
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(list, h("li", null, errorBox(err)));
    }
  })();
  return h("section", { class: "card consult-panel", id: "consult-panel", "aria-labelledby": "consult-panel-title" },
    h("h2", { id: "consult-panel-title" }, t("consult.panel")), list, startForm(c, ctx));
}

addCasePanel({ name: "consults", column: "side", order: 10, render: consultsPanel });

// ----- my consults: where an invited specialist finds the call (open ones first)

function sortConsults(items) {
  return [...items].sort((a, b) => (a.status === b.status ? b.id - a.id : a.status === "open" ? -1 : 1));
}

function consultsView(ctx) {
  loadStyle("consult");
  const { main, user } = ctx;
  const list = h("ul", { class: "consult-list card", id: "consult-mine" }, h("li", { class: "muted" }, t("loading")));
  main.append(pageHead(t("consult.mine")), list);
  async function load() {
    try {
      const data = await api("GET", "/consults");
      if (!ctx.isCurrent()) return;
      const items = sortConsults(data.consults);
      fill(list, items.length
        ? items.map((x) => {
          const row = consultRow(x, user);
          row.firstChild.prepend(h("a", { href: `#/cases/${x.case_id}`, class: "case-link" },
            t("consult.caseLink", { id: x.case_id })), " · ");
          return row;
        })
        : h("li", { class: "muted" }, t("consult.noneMine")));
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(list, h("li", null, errorBox(err)));
    }
  }
  load();
  ctx.every(15_000, load);
}

addRoute({ name: "consults", path: "consults", view: consultsView, nav: { label: "nav.consults", order: 50 } });
