// Live updates: the hub's server-sent event stream (GET /api/v1/events), opened with a one-time
// ticket because EventSource cannot send a token. One stream per page; views subscribe to it and
// unsubscribe when they leave. The browser reconnects by itself; a new ticket is fetched when the
// old one was spent.

import { api, SessionEnded } from "/static/js/api.js";

const listeners = new Set();
let source = null;
let opening = null;
let retryTimer = null;
let lastEventId = null; // resume from here after a reconnect (nothing missed)

function dispatch(type, event) {
  if (event.lastEventId) lastEventId = event.lastEventId;
  let data = null;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  for (const listener of [...listeners]) {
    try {
      listener(type, data);
    } catch (err) {
      console.error("telehub live listener", err);
    }
  }
}

async function open() {
  if (source || opening) return;
  opening = (async () => {
    try {
      const { url } = await api("POST", "/events/ticket");
      if (!listeners.size) return;
      source = new EventSource(
        lastEventId ? `${url}&last_event_id=${encodeURIComponent(lastEventId)}` : url,
      );
      for (const type of ["case", "notification", "hello"]) {
        source.addEventListener(type, (event) => dispatch(type, event));
      }
      source.onerror = () => {
        // a ticket is good for one connection: reopen with a new one
        if (source) source.close();
        source = null;
        if (listeners.size && !retryTimer) retryTimer = setTimeout(() => { retryTimer = null; open(); }, 3000);
      };
    } catch (err) {
      if (!(err instanceof SessionEnded) && listeners.size && !retryTimer) {
        retryTimer = setTimeout(() => { retryTimer = null; open(); }, 5000);
      }
    } finally {
      opening = null;
    }
  })();
}

/**
 * Call listener(type, data) for every live event ("case": a case's timeline changed, with
 * {case_id, kind, ...}; "notification": a new notification for this user). Returns unsubscribe.
 */
export function subscribe(listener) {
  listeners.add(listener);
  open();
  return () => {
    listeners.delete(listener);
    if (!listeners.size) closeAll();
  };
}

/** Close the stream (sign-out). */
export function closeAll() {
  listeners.clear();
  lastEventId = null;
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = null;
}
