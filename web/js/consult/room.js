// The consult room: joins over the signaling socket, keeps our camera and microphone and the
// media peer with the hub, the shared view, leaving and ending, and reconnecting after a dropped
// socket (docs/consults.md). The room's state and the hub's messages about it are in
// room_state.js; the page is drawn by room_view.js.

import { api, SessionEnded } from "/static/js/api.js";
import { HubPeer, localMedia, QualityGovernor, stopStream } from "/static/js/consult/media.js";
import {
  applyMessage,
  closeReason,
  isTransientError,
  materialKey,
  materials,
  newRoomState,
  others,
} from "/static/js/consult/room_state.js";
import { roomView } from "/static/js/consult/room_view.js";
import { protocolState, SharedView } from "/static/js/consult/shared_view.js";
import { Signaling } from "/static/js/consult/signaling.js";
import { t } from "/static/js/i18n.js";
import "/static/js/consult/strings.js";

export { materials };

const STATS_EVERY_MS = 5000;
const STATS_WARMUP_MS = 15_000;

/**
 * mountRoom(container, {consult, user, token?}) -> {destroy(), leave()}. `consult` is
 * GET /api/v1/consults/{id}; a `token` (a join link) is used instead of asking for one.
 */
export function mountRoom(container, { consult, user, token: givenToken }) {
  const room = newRoomState();
  const options = materials(consult.case);
  const view = roomView(consult, options, {
    toggleMic: () => toggleMic(),
    toggleCamera: () => toggleCamera(),
    toggleAudioOnly: () => switchAudioOnly(!room.audioOnly),
    toggleScreen: () => toggleScreen(),
    leave: () => leave(),
    end: () => endConsult(),
    consent: (given) => send({ type: "consent", given }),
    admit: (participantId) => send({ type: "admit", participant_id: participantId }),
    present: () => present(),
    closeView: () => closeView(),
  });
  const shared = new SharedView(view.viewArea, { onChange: (state) => sendSync(state) });
  const { quality } = view;
  const governor = new QualityGovernor();
  quality.addEventListener("change", () => {
    governor.level = "high";
    send({ type: "quality", level: quality.value === "auto" ? "high" : quality.value });
  });
  const statsTimer = setInterval(async () => {
    if (quality.value !== "auto" || !room.peer || room.peer.state !== "connected") return;
    if (!room.peer.connectedAt || Date.now() - room.peer.connectedAt < STATS_WARMUP_MS) return;
    try {
      const level = governor.next(await room.peer.linkStats(), Date.now());
      if (level) {
        send({ type: "quality", level });
        quality.dataset.level = level;
      }
    } catch {
      // stats are advisory
    }
  }, STATS_EVERY_MS);
  container.replaceChildren(view.body);
  container.telehubConsult = {
    room,
    shared,
    dropSocket: () => room.signaling && room.signaling.drop(),
    /** Change the presenter's view as its viewer would (tests; keyboard shortcuts later). */
    changeView: (partial) => {
      if (!shared.mounted) return false;
      shared.viewer.setState(partial);
      sendSync(shared.getState());
      return true;
    },
  };

  const renderAll = () => view.renderAll(room, shared);
  const renderPeople = () => view.renderPeople(room);
  const renderConsent = () => view.renderConsent(room);
  const renderControls = () => view.renderControls(room);
  const renderShare = () => view.renderShare(room, shared);

  function finish(kind, error) {
    if (room.finished) return;
    room.finished = true;
    clearInterval(statsTimer);
    teardownMedia();
    shared.destroy();
    view.showFinished(kind, error);
  }

  // ----- signaling
  function send(message) {
    if (!room.signaling || !room.signaling.send(message)) return false;
    return true;
  }

  function enterCall() {
    room.waiting = false;
    view.showCall();
    const peer = room.peer;
    // no peer yet, its offer never left, it failed, or its answer was lost with the socket
    if (!peer || !peer.offered || ["failed", "closed"].includes(peer.state) || !peer.pc.remoteDescription) {
      startPeer();
    }
    renderAll();
  }

  /** Back after a dropped socket: slot changes pushed meanwhile were lost; if someone in the
   * call has no slot here, offer again (the hub refills every slot of a new peer). */
  function checkSlotsAfterResume() {
    if (!room.peer || !room.peer.offered) return;
    const have = room.peer.tracksByParticipant();
    if (others(room).some((id) => !have.has(id))) startPeer();
  }

  function onMessage(msg) {
    if (room.finished) return;
    const hadPeer = Boolean(room.peer && room.peer.offered);
    applyMessage(room, msg);
    switch (msg.type) {
      case "welcome":
        if (msg.sync) applySync(msg.sync);
        if (msg.waiting) {
          view.showWaiting(); // a camera check while waiting
        } else {
          enterCall();
          if (msg.resumed && hadPeer) checkSlotsAfterResume();
        }
        break;
      case "admitted":
        if (msg.sync) applySync(msg.sync);
        enterCall();
        break;
      case "waiting":
        view.renderWaiting(room);
        break;
      case "participant_joined":
      case "participant_left":
        renderAll();
        break;
      case "presenter":
        // the new presenter's viewer becomes editable; everyone else's read-only
        if (shared.mounted && room.syncState) shared.show(room.syncState, { readOnly: room.presenter !== room.me }).then(renderShare);
        renderPeople();
        renderShare();
        break;
      case "consent_requested":
        renderConsent();
        break;
      case "consent_state":
        renderPeople();
        renderConsent();
        break;
      case "sync":
        applySync(msg.state);
        break;
      case "answer": {
        if (msg.from !== undefined) break; // direct media between browsers: not used here
        const peer = room.awaiting.shift(); // the hub answers offers in order
        if (peer && peer === room.peer) {
          peer.accept(msg).catch((err) => {
            // a late answer to an offer of before a dropped socket: wait for the next one
            console.warn("telehub consult: answer not applied", err);
            if (peer === room.peer) room.awaiting.unshift(peer);
          });
        }
        break;
      }
      case "media-slots":
        if (room.peer) room.peer.setSlots(msg.slots);
        break;
      case "ended":
        finish("ended");
        break;
      case "error":
        if (isTransientError(msg)) view.transient(msg);
        break;
      default:
        break;
    }
  }

  function onStatus(state, detail) {
    if (room.finished) return;
    if (state === "open") view.setStatus("connected", "ok");
    else if (state === "connecting") view.setStatus("connecting");
    else if (state === "reconnecting") {
      view.setStatus("reconnecting", "warn");
      // our own entry shows as away while the seat is held
      const me = room.participants.get(room.me);
      if (me) me.connected = false;
      renderPeople();
    } else if (state === "closed") {
      const reason = closeReason(detail);
      finish(reason, reason === "error" ? detail.error : undefined);
    }
  }

  // ----- media
  async function startLocal() {
    try {
      const got = await localMedia({ audioOnly: room.audioOnly });
      room.stream = got.stream;
      if (got.audioOnly && !room.audioOnly) {
        room.audioOnly = true;
        view.warn("consult-audio-fallback", t("consult.audioOnlyAuto", { reason: got.videoError ? got.videoError.name : "?" }));
      }
    } catch (err) {
      room.stream = new MediaStream();
      view.warn("consult-no-media", t("consult.noMedia", { reason: err.name || err.code || String(err) }));
    }
    view.setLocalSource(room.stream);
    applyTrackSwitches();
  }

  function applyTrackSwitches() {
    if (!room.stream) return;
    for (const track of room.stream.getAudioTracks()) track.enabled = room.micOn;
    for (const track of room.stream.getVideoTracks()) track.enabled = room.camOn;
  }

  function startPeer() {
    if (room.peer) room.peer.close();
    room.awaiting = []; // a late answer for an older offer fails to apply and is skipped
    if (!room.stream) return;
    room.remote = new Map();
    const peer = new HubPeer({
      stream: room.stream,
      audioOnly: room.audioOnly,
      iceServers: room.iceServers,
      send,
      onSlots: (byParticipant) => {
        if (peer !== room.peer) return;
        room.remote = byParticipant;
        view.renderTiles(room);
      },
      onState: (state) => {
        if (peer !== room.peer || room.finished) return;
        view.setMediaState(state);
        if (state === "failed") {
          view.transient({ message: t("consult.mediaFailed") });
          setTimeout(() => { if (peer === room.peer && !room.finished && room.signaling.open) startPeer(); }, 1000);
        }
      },
    });
    room.peer = peer;
    if (room.screen) peer.replaceVideo(room.screen.getVideoTracks()[0]);
    peer.offer()
      .then((sent) => {
        if (sent) room.awaiting.push(peer);
      })
      .catch((err) => view.transient({ code: "offer", message: String(err) }));
    renderControls();
  }

  function teardownMedia() {
    if (room.peer) room.peer.close();
    room.peer = null;
    stopStream(room.stream);
    stopStream(room.screen);
    room.stream = null;
    room.screen = null;
    view.setLocalSource(null);
  }

  function toggleMic() {
    room.micOn = !room.micOn;
    applyTrackSwitches();
    renderControls();
  }

  function toggleCamera() {
    room.camOn = !room.camOn;
    applyTrackSwitches();
    renderControls();
  }

  /** Audio only: offer again without video (the hub replaces our peer; no video slots). */
  async function switchAudioOnly(on) {
    view.audioButton.disabled = true;
    stopStream(room.screen);
    room.screen = null;
    stopStream(room.stream);
    room.audioOnly = on;
    if (!on) view.unwarn("consult-audio-fallback");
    await startLocal();
    view.audioButton.disabled = false;
    if (!room.waiting && !room.finished) startPeer();
    renderAll();
  }

  /** Screen share replaces the camera in our one video sender: no renegotiation needed. */
  async function toggleScreen() {
    if (room.screen) {
      stopStream(room.screen);
      room.screen = null;
      if (room.peer) room.peer.replaceVideo(room.stream.getVideoTracks()[0] || null);
      view.setLocalSource(room.stream);
      renderControls();
      return;
    }
    try {
      const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      room.screen = display;
      const track = display.getVideoTracks()[0];
      track.addEventListener("ended", () => { if (room.screen === display) toggleScreen(); });
      if (room.peer) room.peer.replaceVideo(track);
      view.setLocalSource(display);
    } catch (err) {
      if (err && err.name !== "NotAllowedError") view.transient({ message: String(err) });
    }
    renderControls();
  }

  // ----- shared view
  function materialState(key) {
    const found = options.find((m) => m.key === key);
    return found ? found.state : null;
  }

  async function present() {
    // taking over the material on screen keeps its position; another one starts fresh
    const current = room.syncState && materialKey(room.syncState) === view.selectedMaterial() && shared.mounted;
    const state = current ? room.syncState : materialState(view.selectedMaterial());
    if (!state) return;
    if (room.presenter !== room.me) send({ type: "present" });
    room.presenter = room.me;
    room.syncState = state;
    await shared.show(state, { readOnly: false });
    sendSync(shared.getState() || state);
    renderPeople();
    renderShare();
  }

  function sendSync(state) {
    if (room.presenter !== room.me) return;
    const clean = protocolState(state);
    if (!clean) return;
    room.syncState = clean;
    send({ type: "sync", state: clean });
  }

  function applySync(state) {
    if (!state) return;
    room.syncState = state;
    view.selectMaterial(materialKey(state));
    const mine = room.presenter === room.me;
    // our own view coming back (resume, re-render): no marker for our own old pointer
    shared.show(mine ? { ...state, pointer: null } : state, { readOnly: !mine }).then(renderShare);
  }

  function closeView() {
    shared.unmount();
    renderShare();
  }

  // ----- leaving
  function leave() {
    if (room.signaling) room.signaling.leave();
    finish("left");
  }

  async function endConsult() {
    if (!window.confirm(t("consult.endConfirm"))) return;
    view.endButton.disabled = true;
    try {
      await api("POST", `/consults/${consult.id}/end`);
      finish("ended");
    } catch (err) {
      if (err instanceof SessionEnded) return;
      view.endButton.disabled = false;
      view.error(err);
    }
  }

  // ----- start
  async function start() {
    view.setStatus("connecting");
    let token = givenToken;
    if (!token) {
      try {
        token = (await api("POST", `/consults/${consult.id}/token`)).token;
      } catch (err) {
        if (err instanceof SessionEnded) return;
        finish("error", { code: err.code, message: err.message });
        return;
      }
    }
    if (room.finished) return;
    await startLocal();
    if (room.finished) {
      teardownMedia();
      return;
    }
    renderControls();
    room.signaling = new Signaling({ consultId: consult.id, token, onMessage, onStatus });
    room.signaling.connect();
  }
  // closing the tab leaves at once rather than holding the seat for the reconnect window
  const onPageHide = () => {
    if (!room.finished && room.signaling) room.signaling.leave();
  };
  window.addEventListener("pagehide", onPageHide);

  start();

  return {
    leave,
    destroy() {
      // the same page rendered again (language switch): drop the socket but keep the seat, the
      // new render resumes it; leaving the page for another one leaves the consult
      const staying = location.hash.replace(/\?.*$/, "") === `#/consults/${consult.id}`;
      if (!room.finished && room.signaling) {
        if (staying) room.signaling.stop();
        else room.signaling.leave();
      }
      room.finished = true;
      clearInterval(statsTimer);
      window.removeEventListener("pagehide", onPageHide);
      if (room.signaling) room.signaling.stop();
      teardownMedia();
      shared.destroy();
    },
  };
}
