// The consult's signaling socket (docs/consults.md): JSON messages over a WebSocket that the
// join token authenticates. A socket that drops without `leave` keeps its seat on the hub for
// consult_reconnect_seconds (30 s), so we reconnect with the same token within that window;
// closes that mean "do not come back" (refused, ended, left, replaced, full) are final.

const FINAL_CLOSES = new Set([4000, 4001, 4002, 4009, 4010]);
const RECONNECT_WINDOW_MS = 30_000;
const RETRY_MS = [500, 1000, 2000, 3000, 5000];

/**
 * new Signaling({consultId, token, onMessage(msg), onStatus(status, detail)}):
 * status is "connecting", "open", "reconnecting", "closed" (detail: {code, error}).
 */
export class Signaling {
  constructor({ consultId, token, onMessage, onStatus }) {
    this.consultId = consultId;
    this.token = token;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.ws = null;
    this.stopped = false;
    this.lastError = null; // the server's last `error` before a close names the reason
    this.droppedAt = null;
    this.attempt = 0;
    this.timer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = encodeURIComponent(this.token);
    return `${scheme}//${location.host}/api/v1/consults/${this.consultId}/ws?token=${token}`;
  }

  connect() {
    if (this.stopped) return;
    this.onStatus(this.droppedAt ? "reconnecting" : "connecting", {});
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.droppedAt = null;
      this.onStatus("open", {});
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && message.type === "error") this.lastError = message;
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.closed(event.code);
    });
  }

  closed(code) {
    if (this.stopped) return;
    const error = this.lastError;
    this.lastError = null;
    if (FINAL_CLOSES.has(code)) {
      this.stopped = true;
      this.onStatus("closed", { code, error });
      return;
    }
    const now = Date.now();
    if (this.droppedAt === null) this.droppedAt = now;
    if (now - this.droppedAt > RECONNECT_WINDOW_MS) {
      this.stopped = true;
      this.onStatus("closed", { code, error: error || { code: "connection_lost" } });
      return;
    }
    this.onStatus("reconnecting", { code });
    const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Send a message; false when the socket is not open (the caller may retry after resume). */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  get open() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  /** Drop the socket as a network failure would (tests, and a stuck connection). */
  drop() {
    if (this.ws) this.ws.close();
  }

  /** Leave for good: tell the hub (CONSULT_LEFT at once) and stop reconnecting. */
  leave() {
    this.send({ type: "leave" });
    this.stop();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }
}
