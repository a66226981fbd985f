// The one HTTP client of the front-end. JSON calls go through api(); anything else (images,
// PDFs, upload chunks) through apiFetch(), which adds the token. Errors become ApiError; a 401
// (other than a failed login) ends the session.

import { t } from "/static/js/i18n.js";
import { session } from "/static/js/session.js";

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, data = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

/** Thrown after a 401 ended the session; callers just stop. */
export class SessionEnded extends Error {}

let onSessionEnd = () => {};

/** The shell says what a 401 does (back to the login page). */
export function setSessionEndHandler(handler) {
  onSessionEnd = handler;
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  return headers;
}

/** A request with the token; `path` is absolute ("/dicomweb/...") or under /api/v1. */
export async function apiFetch(path, init = {}) {
  const url = path.startsWith("/api/") || path.startsWith("/dicomweb") ? path : API + path;
  let response;
  try {
    response = await fetch(url, { cache: "no-store", ...init, headers: authHeaders(init.headers) });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", t("error.network"));
  }
  if (response.status === 401 && path !== "/auth/login") {
    onSessionEnd("session.expired");
    throw new SessionEnded();
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    const code = (data && data.error) || `http_${response.status}`;
    const message = (data && data.message) || response.statusText || code;
    throw new ApiError(response.status, code, message, data);
  }
  return response;
}

/** A JSON call: api("POST", "/cases/1/claim", body) -> parsed answer (null when empty). */
export async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await apiFetch(path, {
    method,
    headers,
    signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** A blob: URL for an authenticated image or file (revoke it when done). */
export async function objectUrl(path, accept) {
  const response = await apiFetch(path, { headers: accept ? { Accept: accept } : {} });
  return URL.createObjectURL(await response.blob());
}

/** Download an authenticated file under a file name (PDF reports, CSV exports). */
export async function download(path, filename, accept) {
  const url = await objectUrl(path, accept);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
