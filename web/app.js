// telehub browser front-end (foundation milestone): login, worklist, cases, case view.
// Plain ES modules, no build step. All data reaches the page through textContent, never innerHTML.

import {
  errorText,
  formatAgo,
  formatDateTime,
  formatDicomDate,
  formatDuration,
  formatPersonName,
  formatTime,
  getLang,
  label,
  otherLang,
  setLang,
  t,
} from "/static/i18n.js";

const API = "/api/v1";
const TOKEN_KEY = "telehub.token";
const USER_KEY = "telehub.user";
const WORKLIST_REFRESH_MS = 5000;
const CASES_LIMIT = 100;
const READER_EDITABLE = new Set(["claimed", "preliminary"]);
const TAT_PARTS = [
  "first_instance_to_complete",
  "complete_to_routed",
  "routed_to_claimed",
  "claimed_to_final",
  "complete_to_final",
];

// ---------------------------------------------------------------------------------------------
// DOM helper: h("p", {class: "x"}, "text", child). Strings become text nodes; never HTML.

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Replace a node's children (null/false children are skipped, strings become text). */
function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// Session (token in sessionStorage: it ends with the browser tab).

const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

const isReader = (user) => user && (user.role === "reader" || user.role === "admin");

// ---------------------------------------------------------------------------------------------
// API client. Errors become ApiError; a 401 (other than a failed login) ends the session.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

class SessionEnded extends Error {}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", t("error.network"));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && path !== "/auth/login") {
    endSession("session.expired");
    throw new SessionEnded();
  }
  if (!response.ok) {
    const code = (data && data.error) || `http_${response.status}`;
    const message = (data && data.message) || response.statusText || code;
    throw new ApiError(response.status, code, message);
  }
  return data;
}

/** An inline, accessible error box for an ApiError (translated when the code is known). */
function errorBox(err, heading) {
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

function notice(text, kind = "info") {
  return h("div", { class: `alert alert-${kind}`, role: "status" }, h("p", null, text));
}

// ---------------------------------------------------------------------------------------------
// App state and routing: #/worklist, #/cases, #/cases/<id>.

const root = document.getElementById("app");
const state = {
  view: null, // {name, id?}
  generation: 0, // bumps on every render; async work for an older view is dropped
  timer: null,
  loginMessage: null, // i18n key of a notice for the login form (e.g. session ended)
  lastList: null, // "#/worklist" or "#/cases", for the case view's back link
  drafts: new Map(), // case id -> unsaved report text (survives a language switch)
  cache: new Map(), // last data per view, shown at once on a re-render (language switch, back)
  flash: null, // {id, node, inPanel}: one-shot message for the next render of that case
};

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const parts = hash.split("/").filter(Boolean);
  if (parts[0] === "worklist" && parts.length === 1) return { name: "worklist" };
  if (parts[0] === "cases" && parts.length === 1) return { name: "cases" };
  if (parts[0] === "cases" && parts.length === 2 && /^\d+$/.test(parts[1])) {
    return { name: "case", id: Number(parts[1]) };
  }
  if (parts.length === 0) return { name: "home" };
  return { name: "notfound" };
}

function homeHash(user) {
  return isReader(user) ? "#/worklist" : "#/cases";
}

function stopTimer() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

function render() {
  stopTimer();
  state.generation += 1;
  document.title = t("app.name");
  const user = session.user;
  if (!session.token || !user) {
    renderLogin();
    return;
  }
  let route = parseRoute();
  if (route.name === "home" || (route.name === "worklist" && !isReader(user))) {
    history.replaceState(null, "", homeHash(user));
    route = parseRoute();
  }
  state.view = route;
  const main = h("main", { id: "main", class: "content", tabindex: "-1" });
  root.replaceChildren(renderHeader(user, route), main);
  if (route.name === "worklist") worklistView(main, state.generation);
  else if (route.name === "cases") casesView(main, state.generation, user);
  else if (route.name === "case") caseView(main, state.generation, user, route.id);
  else main.append(h("h1", { tabindex: "-1" }, t("app.name")), notice(t("notFound")));
  focusHeading(main);
}

/** After a page change, move focus to the page heading unless the user is focused elsewhere. */
function focusHeading(container) {
  const active = document.activeElement;
  if (active && active !== document.body && root.contains(active)) return;
  const heading = container.querySelector("h1");
  if (heading) heading.focus({ preventScroll: true });
}

function current(generation) {
  return generation === state.generation;
}

function endSession(messageKey) {
  stopTimer();
  session.clear();
  state.cache.clear(); // never show one user's data to the next
  state.flash = null;
  state.loginMessage = messageKey || null;
  render();
}

function langButton() {
  return h(
    "button",
    {
      type: "button",
      class: "btn btn-ghost lang-switch",
      "aria-label": t("lang.switchLabel"),
      onclick: () => {
        setLang(otherLang());
        render();
        const again = root.querySelector(".lang-switch");
        if (again) again.focus();
      },
    },
    h("span", { lang: otherLang() }, t("lang.switch")),
  );
}

// ---------------------------------------------------------------------------------------------
// Login

function renderLogin() {
  state.view = { name: "login" };
  const errorSlot = h("div", { class: "form-errors" });
  if (state.loginMessage) errorSlot.append(notice(t(state.loginMessage), "warn"));
  const username = h("input", {
    id: "login-username",
    name: "username",
    autocomplete: "username",
    required: true,
    autocapitalize: "none",
    spellcheck: "false",
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("login.submit"));

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = t("login.busy");
    errorSlot.replaceChildren();
    try {
      const data = await api("POST", "/auth/login", {
        username: username.value.trim(),
        password: password.value,
      });
      session.save(data.token, data.user);
      state.loginMessage = null;
      if (parseRoute().name === "home" || parseRoute().name === "notfound") {
        history.replaceState(null, "", homeHash(data.user));
      }
      render();
    } catch (err) {
      submit.disabled = false;
      submit.textContent = t("login.submit");
      errorSlot.replaceChildren(errorBox(err, t("login.failed")));
      password.select();
    }
  }

  const form = h(
    "form",
    { class: "card login-card", onsubmit: onSubmit, "aria-labelledby": "login-title", novalidate: false },
    h("div", { class: "login-brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "+"),
      h("div", null, h("div", { class: "brand-name" }, t("app.name")),
        h("div", { class: "muted small" }, t("app.tagline")))),
    h("h1", { id: "login-title" }, t("login.title")),
    h("p", { class: "muted" }, t("login.intro")),
    errorSlot,
    h("div", { class: "field" }, h("label", { for: "login-username" }, t("login.username")), username),
    h("div", { class: "field" }, h("label", { for: "login-password" }, t("login.password")), password),
    submit,
  );
  root.replaceChildren(
    h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()), form),
  );
  username.focus();
}

// ---------------------------------------------------------------------------------------------
// Header and navigation

function renderHeader(user, route) {
  const tabs = [];
  if (isReader(user)) tabs.push(["worklist", "#/worklist", t("nav.worklist")]);
  tabs.push(["cases", "#/cases", t("nav.cases")]);
  const active = route.name === "case" ? null : route.name;
  return h(
    "header",
    { class: "topbar" },
    h("div", { class: "topbar-inner" },
      h("a", { class: "brand", href: homeHash(user) },
        h("span", { class: "logo", "aria-hidden": "true" }, "+"),
        h("span", { class: "brand-name" }, t("app.name")),
        h("span", { class: "brand-tag" }, t("app.tagline"))),
      h("nav", { class: "tabs", "aria-label": t("nav.label") },
        tabs.map(([name, href, text]) =>
          h("a", { href, class: "tab", "aria-current": name === active ? "page" : null }, text))),
      h("div", { class: "userbox" },
        h("span", { class: "user" },
          h("span", { class: "sr-only" }, t("header.user")),
          h("strong", null, user.username),
          h("span", { class: "role-chip" }, label("role", user.role))),
        langButton(),
        h("button", { type: "button", class: "btn btn-ghost", onclick: logout }, t("header.logout")))),
  );
}

async function logout() {
  try {
    await api("POST", "/auth/logout");
  } catch {
    // the token may already be gone; logging out locally is what matters
  }
  state.drafts.clear();
  history.replaceState(null, "", "#/");
  endSession(null);
}

// ---------------------------------------------------------------------------------------------
// Shared bits for case lists

function priorityBadge(priority) {
  return h("span", { class: `badge prio prio-${priority}` }, label("priority", priority));
}

function statusBadge(status) {
  return h("span", { class: `badge status status-${status}` }, label("status", status));
}

function patientName(c) {
  return c.patient ? formatPersonName(c.patient.name) : t("none");
}

function modalities(c) {
  return c.modalities && c.modalities.length ? c.modalities.join(", ") : t("none");
}

function caseLink(c) {
  return h("a", { href: `#/cases/${c.id}`, class: "case-link", "aria-label": t("case.open", { id: c.id }) },
    `#${c.id}`);
}

/** A table that collapses into cards on narrow screens (each cell carries its column label). */
function caseTable(caption, columns, cases) {
  const head = h("thead", null, h("tr", null, columns.map((col) => h("th", { scope: "col" }, col.title))));
  const body = h("tbody", null, cases.map((c) =>
    h("tr", {
      class: `row-${c.priority}`,
      onclick: (event) => {
        if (event.target.closest("a, button")) return;
        location.hash = `#/cases/${c.id}`;
      },
    }, columns.map((col) => h("td", { "data-label": col.title, class: col.cls || null }, col.cell(c))))));
  return h("table", { class: "cases-table" }, h("caption", { class: "sr-only" }, caption), head, body);
}

function arrivedCell(c) {
  return h("span", null,
    h("time", { datetime: c.arrived_at }, formatDateTime(c.arrived_at, { seconds: false })),
    h("span", { class: "muted small block" }, formatAgo(c.arrived_at)));
}

// ---------------------------------------------------------------------------------------------
// Worklist (readers): auto-refresh every 5 s while it is on screen.

function worklistView(main, generation) {
  state.lastList = "#/worklist";
  const status = h("p", { class: "muted small", "aria-live": "polite" }, t("loading"));
  const body = h("div");
  main.append(
    h("div", { class: "page-head" },
      h("h1", { tabindex: "-1" }, t("worklist.title")),
      h("div", { class: "page-tools" }, h("span", { class: "muted small" }, t("worklist.auto")), status)),
    body,
  );
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
    if (document.hidden && state.cache.has("worklist")) {
      // a background tab does not poll; it catches up when shown again
      state.timer = setTimeout(load, WORKLIST_REFRESH_MS);
      return;
    }
    try {
      const data = await api("GET", "/worklist");
      if (!current(generation)) return;
      const entry = { cases: data.cases, at: new Date() };
      state.cache.set("worklist", entry);
      show(entry);
    } catch (err) {
      if (err instanceof SessionEnded || !current(generation)) return;
      fill(body, errorBox(err));
    }
    if (current(generation)) state.timer = setTimeout(load, WORKLIST_REFRESH_MS);
  }
  if (state.cache.has("worklist")) show(state.cache.get("worklist"));
  load();
}

// ---------------------------------------------------------------------------------------------
// Cases (a clinic's main view; readers see their centre's cases)

const STATUSES = ["receiving", "complete", "routed", "unroutable", "claimed", "preliminary", "final"];
let casesFilter = "";

function casesView(main, generation, user) {
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
    h("div", { class: "page-head" },
      h("h1", { tabindex: "-1" }, user.role === "clinic" ? t("cases.titleClinic") : t("cases.title")),
      h("div", { class: "page-tools" },
        h("label", { for: "cases-status", class: "inline-label" }, t("cases.status")), filter, refresh)),
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
    {
      title: t("col.report"),
      cell: (c) => (c.status === "final"
        ? h("span", { class: "badge ready" }, h("span", { "aria-hidden": "true" }, "✓ "), t("cases.reportReady"))
        : h("span", { class: "muted" }, t("none"))),
    },
  ];

  function show(cases) {
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
      if (!current(generation) || key !== `cases:${casesFilter}`) return;
      state.cache.set(key, data.cases);
      show(data.cases);
    } catch (err) {
      if (err instanceof SessionEnded || !current(generation)) return;
      fill(body, errorBox(err));
    } finally {
      refresh.disabled = false;
    }
  }
  if (state.cache.has(`cases:${casesFilter}`)) show(state.cache.get(`cases:${casesFilter}`));
  load();
}

// ---------------------------------------------------------------------------------------------
// Case view

function caseView(main, generation, user, id) {
  const back = h("a", { href: state.lastList || homeHash(user), class: "back-link" },
    h("span", { "aria-hidden": "true" }, "← "), t("case.back"));
  const body = h("div", null, h("p", { class: "muted" }, t("loading")));
  main.append(back, body);
  const key = `case:${id}`;

  async function load() {
    try {
      const c = await api("GET", `/cases/${id}`);
      if (!current(generation)) return;
      state.cache.set(key, c);
      const flash = state.flash && state.flash.id === id ? state.flash : null;
      state.flash = null;
      fill(body, caseDetail(c, user, load, flash));
      focusHeading(body);
    } catch (err) {
      if (err instanceof SessionEnded || !current(generation)) return;
      state.flash = null;
      fill(body, h("h1", { tabindex: "-1" }, t("case.title", { id })), errorBox(err));
      focusHeading(body);
    }
  }
  if (state.cache.has(key)) {
    fill(body, caseDetail(state.cache.get(key), user, load, null));
    focusHeading(body);
  }
  load();
}

function fields(pairs) {
  return h("dl", { class: "fields" }, pairs
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([name, value]) => h("div", { class: "field-pair" }, h("dt", null, name), h("dd", null, value))));
}

function section(titleKey, ...content) {
  const id = `sec-${titleKey.replace(/\W/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, t(titleKey)), content);
}

function caseDetail(c, user, reload, flash) {
  const p = c.patient;
  const head = h("div", { class: "case-head" },
    h("h1", { tabindex: "-1" }, t("case.title", { id: c.id })),
    h("div", { class: "badges" }, priorityBadge(c.priority), statusBadge(c.status),
      h("span", { class: "badge kind" }, label("kind", c.kind))));

  const summary = section("case.summary", fields([
    [t("case.patient"), p ? formatPersonName(p.name) : t("none")],
    [t("case.patientId"), p ? [p.patient_id || t("none"), p.issuer ? ` (${p.issuer})` : ""].join("") : t("none")],
    [t("case.sex"), p && p.sex ? label("sex", p.sex) : t("none")],
    [t("case.birthDate"), p ? formatDicomDate(p.birth_date) : t("none")],
    [t("case.origin"), c.origin.name],
    [t("case.centre"), c.centre ? c.centre.name : t("none")],
    [t("case.reader"), c.reader ? c.reader.name || c.reader.username : t("none")],
    [t("case.arrived"), formatDateTime(c.arrived_at)],
    [t("case.question"), c.clinical_question || t("none")],
  ]));

  const left = [summary, readerPanel(c, user, reload, flash), studiesSection(c), reportsSection(c)];
  const right = [tatSection(c), timelineSection(c)];
  return [
    head,
    flash && !flash.inPanel ? flash.node : null,
    h("div", { class: "case-grid" }, h("div", { class: "col-main" }, left), h("div", { class: "col-side" }, right)),
  ];
}

/** Claim button or report editor, only for readers and only when it applies. */
function readerPanel(c, user, reload, flash) {
  if (user.role !== "reader") return null;
  const mine = c.reader && c.reader.id === user.id;
  if (c.status === "routed" && !c.reader) return claimPanel(c, reload);
  if (mine && READER_EDITABLE.has(c.status)) return editorPanel(c, reload, flash);
  if (c.reader && !mine && READER_EDITABLE.has(c.status)) {
    return notice(t("case.claimedBy", { name: c.reader.name || c.reader.username }));
  }
  return null;
}

function claimPanel(c, reload) {
  const errors = h("div");
  const button = h("button", { type: "button", class: "btn btn-primary" }, t("case.claim"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = t("case.claiming");
    errors.replaceChildren();
    try {
      await api("POST", `/cases/${c.id}/claim`);
      state.flash = { id: c.id, node: notice(t("case.claimed"), "success"), inPanel: true };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      if (err.status === 409 || err.status === 404) {
        // the case moved on meanwhile: show where it is now, with the reason on top
        state.flash = { id: c.id, node: errorBox(err), inPanel: false };
        await reload();
        return;
      }
      button.disabled = false;
      button.textContent = t("case.claim");
      errors.replaceChildren(errorBox(err));
    }
  });
  return h("section", { class: "card action-card", "aria-label": t("case.claim") },
    h("p", null, t("case.claimHint")), errors, button);
}

function editorPanel(c, reload, flash) {
  const latest = [...(c.reports || [])].sort((a, b) => b.version - a.version)[0];
  const draft = state.drafts.has(c.id) ? state.drafts.get(c.id) : latest ? latest.text : "";
  const messages = h("div", { "aria-live": "polite" });
  if (flash && flash.inPanel) messages.append(flash.node);
  const text = h("textarea", { id: `report-text-${c.id}`, rows: "10", "aria-describedby": `report-hint-${c.id}` });
  text.value = draft;
  text.addEventListener("input", () => state.drafts.set(c.id, text.value));
  const savePrelim = h("button", { type: "button", class: "btn btn-secondary" }, t("editor.savePrelim"));
  const signFinal = h("button", { type: "button", class: "btn btn-primary" }, t("editor.signFinal"));

  async function save(status) {
    messages.replaceChildren();
    if (!text.value.trim()) {
      messages.append(h("div", { class: "alert alert-error", role: "alert" }, h("p", null, t("editor.empty"))));
      text.focus();
      return;
    }
    if (status === "final" && !window.confirm(t("editor.confirmFinal"))) return;
    const buttons = [savePrelim, signFinal];
    buttons.forEach((b) => { b.disabled = true; });
    const label0 = status === "final" ? signFinal : savePrelim;
    const original = label0.textContent;
    label0.textContent = t("editor.saving");
    try {
      const res = await api("POST", `/cases/${c.id}/reports`, { text: text.value, status });
      state.drafts.delete(c.id);
      state.flash = {
        id: c.id,
        node: notice(t(status === "final" ? "editor.signed" : "editor.saved", { v: res.version }), "success"),
        inPanel: status !== "final",
      };
      await reload();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      buttons.forEach((b) => { b.disabled = false; });
      label0.textContent = original;
      messages.replaceChildren(errorBox(err));
    }
  }
  savePrelim.addEventListener("click", () => save("preliminary"));
  signFinal.addEventListener("click", () => save("final"));

  return h("section", { class: "card editor", "aria-labelledby": `editor-title-${c.id}` },
    h("h2", { id: `editor-title-${c.id}` }, t("editor.title")),
    messages,
    h("label", { for: `report-text-${c.id}` }, t("editor.label")),
    text,
    h("p", { id: `report-hint-${c.id}`, class: "muted small" }, t("editor.hint")),
    h("div", { class: "actions" }, savePrelim, signFinal));
}

function studiesSection(c) {
  const studies = c.studies || [];
  if (!studies.length) return section("studies.title", h("p", { class: "muted" }, t("studies.none")));
  return section("studies.title", studies.map((s) => {
    const series = s.series || [];
    return h("article", { class: "study" },
      h("h3", null, s.description || t("study.untitled"),
        h("span", { class: "muted small" }, " · ", (s.modalities || []).join(", ") || t("none"))),
      h("p", { class: "muted small" }, t("study.counts", { series: series.length, images: s.instance_count })),
      fields([
        [t("study.date"), formatDicomDate(s.study_date)],
        [t("study.accession"), s.accession_number || t("none")],
        [t("study.completedAt"), formatDateTime(s.completed_at)],
      ]),
      series.length
        ? h("div", { class: "table-scroll" }, h("table", { class: "series-table" },
          h("caption", { class: "sr-only" }, t("series.caption")),
          h("thead", null, h("tr", null,
            [t("series.number"), t("series.modality"), t("series.description"), t("series.bodyPart"), t("series.images")]
              .map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", null, series.map((se) => h("tr", null,
            h("td", null, se.series_number ?? t("none")),
            h("td", null, se.modality || t("none")),
            h("td", null, se.description || t("none")),
            h("td", null, se.body_part || t("none")),
            h("td", { class: "num" }, se.instance_count))))))
        : null);
  }));
}

function reportsSection(c) {
  const reports = [...(c.reports || [])].sort((a, b) => b.version - a.version);
  if (!reports.length) return section("reports.title", h("p", { class: "muted" }, t("reports.none")));
  return section("reports.title", reports.map((r) =>
    h("article", { class: `report report-${r.status}` },
      h("header", { class: "report-head" },
        h("span", { class: `badge status status-${r.status}` }, label("report.status", r.status)),
        h("strong", null, t("report.version", { v: r.version })),
        h("span", { class: "muted small" }, r.author ? r.author.name || r.author.username : t("none"),
          " · ", h("time", { datetime: r.created_at }, formatDateTime(r.created_at)))),
      h("div", { class: "report-text" }, r.text))));
}

function tatSection(c) {
  const tat = c.tat || {};
  return section("tat.title", h("dl", { class: "tat" }, TAT_PARTS.map((part) =>
    h("div", { class: `tat-row${part === "complete_to_final" ? " tat-total" : ""}` },
      h("dt", null, t(`tat.${part}`)),
      h("dd", null, formatDuration(tat[part]))))));
}

const DETAIL_KEYS = ["centre", "instances", "version", "source"];

function timelineSection(c) {
  const events = [...(c.timeline || [])].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  if (!events.length) return section("timeline.title", h("p", { class: "muted" }, t("timeline.none")));
  const people = new Map();
  if (c.reader) people.set(c.reader.id, c.reader.name || c.reader.username);
  for (const r of c.reports || []) if (r.author) people.set(r.author.id, r.author.name || r.author.username);
  return section("timeline.title", h("ol", { class: "timeline" }, events.map((e) => {
    const detail = e.detail || {};
    const bits = DETAIL_KEYS.filter((k) => detail[k] !== undefined && detail[k] !== null && detail[k] !== "")
      .map((k) => `${t(`detail.${k}`)}: ${detail[k]}`);
    if (e.actor_id !== null && e.actor_id !== undefined && people.has(e.actor_id)) {
      bits.push(`${t("detail.by")}: ${people.get(e.actor_id)}`);
    }
    return h("li", { class: `event event-${e.kind}` },
      h("time", { datetime: e.at, class: "muted small" }, formatDateTime(e.at)),
      h("div", { class: "event-kind" }, label("event", e.kind)),
      bits.length ? h("div", { class: "muted small" }, bits.join(" · ")) : null);
  })));
}

// ---------------------------------------------------------------------------------------------

window.addEventListener("hashchange", render);
window.addEventListener("storage", (event) => {
  if (event.key === "telehub.lang" && event.newValue && event.newValue !== getLang()) {
    setLang(event.newValue);
    render();
  }
});
render();
