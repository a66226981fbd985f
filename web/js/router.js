// Hash routes (#/worklist, #/cases/12, ...). Each feature module registers its pages here; the
// shell builds the navigation from them, so adding a page never means editing the shell.

const routes = [];

/**
 * addRoute({name, path: "cases/:id", view, roles, nav}):
 * - view(ctx) renders into ctx.main (see app.js for ctx);
 * - roles: who may open it (default: everyone signed in);
 * - nav: {label: i18n key, order} to show a tab in the header.
 */
export function addRoute(route) {
  const names = [];
  const pattern = route.path
    .split("/")
    .map((part) => {
      if (part.startsWith(":")) {
        names.push(part.slice(1));
        return "([^/]+)";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  routes.push({ ...route, regex: new RegExp(`^${pattern}$`), names });
}

export function allRoutes() {
  return routes;
}

export function allowed(route, user) {
  return !route.roles || (user && route.roles.includes(user.role));
}

/** The route for the current hash: {route, params, query} or null. */
export function match(hash = location.hash) {
  const [path, queryString] = hash.replace(/^#\/?/, "").split("?");
  const clean = path.replace(/\/$/, "");
  for (const route of routes) {
    const m = route.regex.exec(clean);
    if (!m) continue;
    const params = {};
    route.names.forEach((name, i) => {
      params[name] = decodeURIComponent(m[i + 1]);
    });
    return { route, params, query: new URLSearchParams(queryString || "") };
  }
  return null;
}
