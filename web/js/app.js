// The shell: sign-in, header and navigation, and the page life cycle. Pages live in views/ and
// register themselves with router.js; each is called as view(ctx) with
//   ctx.main        the <main> element to render into
//   ctx.user        the signed-in user ({id, username, role, facility, ...})
//   ctx.params      route parameters ({id: "12"}), ctx.query its URLSearchParams
//   ctx.isCurrent() false once the user has moved on (drop late answers)
//   ctx.onLeave(fn) cleanup when the page is left (timers, streams, calls, viewers)
//   ctx.every(ms, fn) a timer stopped on leave
//   ctx.state       app-wide memory: cache (Map), drafts (Map), flash, lastList
//   ctx.rerender()  render the page again (after a language switch, say)

import { api, setSessionEndHandler } from "/static/js/api.js";
import { h } from "/static/js/dom.js";
import { closeAll } from "/static/js/live.js";
import { getLang, label, otherLang, setLang, t } from "/static/js/i18n.js";
import { allRoutes, allowed, match } from "/static/js/router.js";
import { session } from "/static/js/session.js";
import { errorBox, notice } from "/static/js/ui.js";

const root = document.getElementById("app");

export const state = {
  generation: 0, // bumps on every render; async work for an older page is dropped
  cleanups: [],
  loginMessage: null, // i18n key of a notice for the login form (e.g. session ended)
  lastList: null, // where the case view's back link goes
  drafts: new Map(), // case id -> unsaved report text (survives a language switch)
  cache: new Map(), // last data per page, shown at once on a re-render (language switch, back)
  flash: null, // {id, node, inPanel}: one-shot message for the next render of that case
};

/** The page a user lands on: the first route that names the user's role in `home`. */
export function homeHash(user) {
  const route = allRoutes().find((r) => r.home && user && r.home.includes(user.role));
  return route ? `#/${route.path}` : "#/cases";
}

function leavePage() {
  const cleanups = state.cleanups;
  state.cleanups = [];
  for (const fn of cleanups.reverse()) {
    try {
      fn();
    } catch (err) {
      console.error("telehub cleanup", err);
    }
  }
}

export function render() {
  leavePage();
  state.generation += 1;
  const generation = state.generation;
  document.title = t("app.name");
  const user = session.user;
  if (!session.token || !user) {
    renderLogin();
    return;
  }
  let found = match();
  if (!found || !allowed(found.route, user)) {
    if (!location.hash || location.hash === "#/" || location.hash === "#" || (found && !allowed(found.route, user))) {
      history.replaceState(null, "", homeHash(user));
      found = match();
    }
  }
  const main = h("main", { id: "main", class: "content", tabindex: "-1" });
  root.replaceChildren(renderHeader(user, found ? found.route : null), main);
  if (!found) {
    main.append(h("h1", { tabindex: "-1" }, t("app.name")), notice(t("notFound")));
    focusHeading(main);
    return;
  }
  document.body.dataset.page = found.route.name;
  const ctx = {
    main,
    user,
    params: found.params,
    query: found.query,
    state,
    isCurrent: () => generation === state.generation,
    onLeave: (fn) => state.cleanups.push(fn),
    every: (ms, fn) => {
      const id = setInterval(fn, ms);
      state.cleanups.push(() => clearInterval(id));
      return id;
    },
    rerender: render,
    focusHeading,
  };
  try {
    found.route.view(ctx);
  } catch (err) {
    console.error(err);
    main.append(errorBox({ code: "ui", message: String(err) }));
  }
  focusHeading(main);
}

/** After a page change, move focus to the page heading unless the user is focused elsewhere. */
export function focusHeading(container) {
  const active = document.activeElement;
  if (active && active !== document.body && root.contains(active)) return;
  const heading = container.querySelector("h1");
  if (heading) heading.focus({ preventScroll: true });
}

export function endSession(messageKey) {
  leavePage();
  closeAll();
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
// Sign-in

function renderLogin() {
  document.body.dataset.page = "login";
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
      const found = match();
      if (!found || !allowed(found.route, data.user)) history.replaceState(null, "", homeHash(data.user));
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
    { class: "card login-card", onsubmit: onSubmit, "aria-labelledby": "login-title" },
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
// Header and navigation (tabs from the registered routes the user may open)

function renderHeader(user, active) {
  const tabs = allRoutes()
    .filter((r) => r.nav && allowed(r, user))
    .sort((a, b) => a.nav.order - b.nav.order);
  const activeName = active ? active.navAs || active.name : null;
  return h(
    "header",
    { class: "topbar" },
    h("div", { class: "topbar-inner" },
      h("a", { class: "brand", href: homeHash(user) },
        h("span", { class: "logo", "aria-hidden": "true" }, "+"),
        h("span", { class: "brand-name" }, t("app.name")),
        h("span", { class: "brand-tag" }, t("app.tagline"))),
      h("nav", { class: "tabs", "aria-label": t("nav.label") },
        tabs.map((r) => h("a", {
          href: `#/${r.path}`,
          class: "tab",
          "data-nav": r.name,
          "aria-current": r.name === activeName ? "page" : null,
        }, t(r.nav.label)))),
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
    // the token may already be gone; signing out locally is what matters
  }
  state.drafts.clear();
  history.replaceState(null, "", "#/");
  endSession(null);
}

/** Start the app once every page module has registered its routes. */
export function start() {
  setSessionEndHandler(endSession);
  window.addEventListener("hashchange", render);
  window.addEventListener("storage", (event) => {
    if (event.key === "telehub.lang" && event.newValue && event.newValue !== getLang()) {
      setLang(event.newValue);
      render();
    }
  });
  render();
}
