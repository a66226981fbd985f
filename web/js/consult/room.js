// The consult room: own camera and microphone, the others' video from the hub's media slots,
// participants and waiting room, consent and the recording indicator, the shared view, leave
// and end, and reconnecting after a dropped socket (docs/consults.md).

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h } from "/static/js/dom.js";
import { formatPersonName, t } from "/static/js/i18n.js";
import { errorBox } from "/static/js/ui.js";
import { HubPeer, localMedia, QualityGovernor, stopStream } from "/static/js/consult/media.js";
import { protocolState, SharedView } from "/static/js/consult/shared_view.js";
import { Signaling } from "/static/js/consult/signaling.js";
import "/static/js/consult/strings.js";

// "auto" is opt-in: the browser's bandwidth estimate starts low and ramps up, and the
// estimate is of our uplink, so it only hints at what we can take in.
const QUALITIES = ["high", "medium", "low", "auto"];
const STATS_EVERY_MS = 5000;
const STATS_WARMUP_MS = 15_000;

function button(id, text, onclick, cls = "btn btn-secondary") {
  return h("button", { type: "button", id, class: cls, onclick }, text);
}

function personName(p) {
  return p.display_name ? formatPersonName(p.display_name) : p.username;
}

/** What the case offers to present: each series of each study, each ECG. */
export function materials(caseBrief) {
  const out = [];
  for (const study of (caseBrief && caseBrief.studies) || []) {
    for (const se of study.series || []) {
      out.push({
        key: `dicom:${se.series_instance_uid}`,
        text: `${study.description ? `${study.description} · ` : ""}${t("consult.series", { modality: se.modality || "?", n: se.instance_count })}`,
        state: { mode: "dicom", study_uid: study.study_instance_uid, series_uid: se.series_instance_uid },
      });
    }
  }
  for (const ecg of (caseBrief && caseBrief.ecgs) || []) {
    out.push({ key: `ecg:${ecg.id}`, text: t("consult.ecg", { id: ecg.id }), state: { mode: "ecg", ecg_id: ecg.id } });
  }
  return out;
}

/**
 * mountRoom(container, {consult, user, token?}) -> {destroy(), leave()}. `consult` is
 * GET /api/v1/consults/{id}; a `token` (a join link) is used instead of asking for one.
 */
export function mountRoom(container, { consult, user, token: givenToken }) {
  const room = {
    me: null, // participant id
    role: null,
    waiting: true,
    participants: new Map(), // id -> participant (describe())
    waitingRoom: new Map(),
    presenter: null,
    consents: {},
    recording: false,
    stream: null,
    audioOnly: false,
    peer: null,
    remote: new Map(), // participant id -> {audio, video}
    micOn: true,
    camOn: true,
    screen: null,
    finished: false,
    signaling: null,
    syncState: null,
    awaiting: [], // peers whose offer the hub has not answered yet, oldest first
    consentAsked: false, // someone agreed to record and we have not answered yet
  };

  // ----- layout
  const status = h("div", { id: "consult-status", class: "consult-status", role: "status", "aria-live": "polite" });
  const alerts = h("div", { id: "consult-alerts", "aria-live": "polite" });
  const recordingBadge = h("span", { id: "consult-recording", class: "consult-rec", "data-recording": "false" },
    h("span", { class: "rec-dot", "aria-hidden": "true" }), h("span", { class: "rec-text" }, t("consult.notRecording")));
  const localVideo = h("video", { autoplay: true, playsinline: true, muted: true });
  localVideo.muted = true;
  const localNoVideo = h("span", { class: "no-video" }, t("consult.noVideo"));
  const localTile = h("figure", { id: "consult-local", class: "consult-tile local" }, localVideo, localNoVideo,
    h("figcaption", null, t("consult.me")));
  const tiles = h("div", { id: "consult-remotes", class: "consult-remotes" });
  const viewArea = h("section", { id: "consult-share", class: "card consult-share", hidden: true });
  const shared = new SharedView(viewArea, { onChange: (state) => sendSync(state) });
  const shareInfo = h("p", { id: "consult-share-info", class: "muted small" }, t("consult.nothingShared"));
  const videos = h("div", { class: "consult-videos" }, tiles, localTile);
  const stage = h("div", { class: "consult-stage" }, viewArea, videos);

  const micButton = button("consult-mic", t("consult.micOn"), () => toggleMic());
  const camButton = button("consult-camera", t("consult.camOn"), () => toggleCamera());
  const audioButton = button("consult-audio-only", t("consult.audioOnly"), () => switchAudioOnly(!room.audioOnly));
  const screenButton = button("consult-screen", t("consult.screen"), () => toggleScreen());
  const quality = h("select", { id: "consult-quality" },
    QUALITIES.map((q) => h("option", { value: q }, t(`consult.quality.${q}`))));
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
  const leaveButton = button("consult-leave", t("consult.leave"), () => leave(), "btn btn-secondary");
  const endButton = button("consult-end", t("consult.end"), () => endConsult(), "btn btn-danger");
  endButton.hidden = true;
  const controls = h("div", { class: "consult-controls", role: "toolbar", "aria-label": t("consult.title", { id: consult.id }) },
    micButton, camButton, audioButton, screenButton,
    h("label", { class: "inline-label", for: "consult-quality" }, t("consult.quality")), quality,
    h("span", { class: "spacer" }), leaveButton, endButton);

  const people = h("ul", { id: "consult-participants", class: "consult-people" });
  const waitingList = h("ul", { id: "consult-waiting", class: "consult-people" });
  const waitingCard = h("section", { class: "card", id: "consult-waiting-card", hidden: true },
    h("h2", null, t("consult.waitingRoom")), waitingList);
  const consentText = h("p", { class: "small" }, t("consult.consentAsk"));
  const consentGive = button("consult-consent-give", t("consult.consentGive"), () => send({ type: "consent", given: true }), "btn btn-primary");
  const consentNo = button("consult-consent-no", t("consult.consentDecline"), () => send({ type: "consent", given: false }));
  const consentCard = h("section", { class: "card consult-consent", id: "consult-consent" },
    h("h2", null, t("consult.consentTitle")), consentText, h("div", { class: "actions" }, consentGive, consentNo));
  const options = materials(consult.case);
  const presentSelect = h("select", { id: "consult-present-select" },
    options.map((m) => h("option", { value: m.key }, m.text)));
  const presentButton = button("consult-present", t("consult.present"), () => present(), "btn btn-primary");
  const closeViewButton = button("consult-close-view", t("consult.stopPresent"), () => closeView());
  closeViewButton.hidden = true;
  const shareCard = h("section", { class: "card", id: "consult-share-card" }, h("h2", null, t("consult.share")), shareInfo,
    options.length
      ? [h("label", { for: "consult-present-select" }, t("consult.presentWhat")), presentSelect,
        h("div", { class: "actions" }, presentButton, closeViewButton)]
      : h("p", { class: "muted small" }, t("consult.noMaterial")));
  const side = h("div", { class: "consult-side" },
    waitingCard,
    h("section", { class: "card" }, h("h2", null, t("consult.participants")), people),
    consentCard, shareCard);

  const waitingPanel = h("section", { id: "consult-waiting-notice", class: "card consult-wait", hidden: true },
    h("div", { class: "spinner", "aria-hidden": "true" }),
    h("h2", null, t("consult.waitingHost")), h("p", { class: "muted" }, t("consult.waitingHint")));
  const call = h("div", { class: "consult-call", hidden: true },
    h("div", { class: "consult-main" }, stage, controls), side);
  const body = h("div", { class: "consult-room", "data-consult": consult.id },
    h("div", { class: "consult-bar" }, status, recordingBadge), alerts, waitingPanel, call);
  container.replaceChildren(body);
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

  // ----- status and errors
  function setStatus(key, kind = "info") {
    status.dataset.state = key;
    status.className = `consult-status consult-status-${kind}`;
    status.textContent = t(`consult.${key}`);
  }

  function transient(message) {
    const box = h("div", { class: "alert alert-warn", role: "status" },
      h("p", null, t("consult.error.transient", { msg: message.message || message.code })));
    alerts.append(box);
    setTimeout(() => box.remove(), 8000);
  }

  function finish(kind, error) {
    if (room.finished) return;
    room.finished = true;
    clearInterval(statsTimer);
    teardownMedia();
    shared.destroy();
    const back = h("a", { class: "btn btn-secondary", href: `#/cases/${consult.case_id}` }, t("consult.backToCase"));
    let node;
    if (kind === "left") {
      const again = h("button", { type: "button", class: "btn btn-primary", id: "consult-rejoin", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, t("consult.rejoin"));
      node = h("div", { class: "alert alert-info", role: "status", id: "consult-finished", "data-reason": "left" },
        h("p", null, t("consult.left")), h("div", { class: "actions" }, again, back));
    } else if (kind === "ended") {
      node = h("div", { class: "alert alert-info", role: "status", id: "consult-finished", "data-reason": "ended" },
        h("p", null, t("consult.endedMsg")), h("div", { class: "actions" }, back));
    } else {
      const code = (error && error.code) || "connection_lost";
      const key = `consult.err.${code}`;
      const text = t(key) === key ? (error && error.message) || code : t(key);
      node = h("div", { class: "alert alert-error", role: "alert", id: "consult-error", "data-code": code },
        h("strong", null, t("consult.error.title")), h("p", null, text), h("div", { class: "actions" }, back));
    }
    fill(body, node);
  }

  // ----- rendering of people, tiles, consent, recording
  function renderPeople() {
    fill(people, [...room.participants.values()].map((p) => {
      const consent = room.consents[String(p.participant_id)];
      const consentKey = consent === true ? "yes" : consent === false ? "no" : "none";
      return h("li", {
        "data-participant": p.participant_id,
        "data-connected": String(p.connected !== false),
        "data-consent": consentKey,
      },
      h("span", { class: `dot ${p.connected !== false ? "on" : "away"}`, "aria-hidden": "true" }),
      h("span", { class: "who" }, h("strong", null, personName(p)),
        p.participant_id === room.me ? h("span", { class: "muted" }, ` (${t("consult.you")})`) : null,
        h("span", { class: "muted small block" },
          p.role === "host" ? t("consult.host") : t("consult.guest"), " · ",
          t(p.connected !== false ? "consult.state.in" : "consult.state.away"), " · ",
          t("consult.consentTitle"), ": ", t(`consult.consent.${consentKey}`))),
      room.presenter === p.participant_id ? h("span", { class: "badge presenting" }, t("consult.presenting")) : null);
    }));
  }

  function renderWaiting() {
    const host = room.role === "host";
    waitingCard.hidden = !host;
    endButton.hidden = !host;
    const waiting = [...room.waitingRoom.values()];
    fill(waitingList, waiting.length
      ? waiting.map((p) => h("li", { "data-participant": p.participant_id },
        h("span", { class: "who" }, h("strong", null, personName(p))),
        h("button", { type: "button", class: "btn btn-primary", "data-action": "admit",
          onclick: () => send({ type: "admit", participant_id: p.participant_id }) }, t("consult.admit"))))
      : h("li", { class: "muted small" }, t("consult.waitingNone")));
    waitingCard.classList.toggle("attention", waiting.length > 0);
  }

  function renderConsent() {
    const mine = room.consents[String(room.me)];
    const asked = room.consentAsked && mine !== true && mine !== false;
    consentText.textContent = t(asked && mine !== true ? "consult.consentAsked" : "consult.consentAsk");
    consentCard.classList.toggle("attention", asked);
    consentGive.textContent = t("consult.consentGive");
    consentGive.hidden = mine === true;
    consentNo.textContent = t(mine === true ? "consult.consentWithdraw" : "consult.consentDecline");
    consentNo.hidden = mine === false;
    recordingBadge.dataset.recording = String(room.recording);
    recordingBadge.classList.toggle("on", room.recording);
    recordingBadge.querySelector(".rec-text").textContent = t(room.recording ? "consult.recording" : "consult.notRecording");
  }

  function renderTiles() {
    const ids = [...room.participants.keys()].filter((id) => id !== room.me);
    for (const tile of [...tiles.children]) {
      if (!ids.includes(Number(tile.dataset.participant))) tile.remove();
    }
    for (const id of ids) {
      const p = room.participants.get(id);
      let tile = tiles.querySelector(`[data-participant="${id}"]`);
      if (!tile) {
        const video = h("video", { autoplay: true, playsinline: true });
        tile = h("figure", { class: "consult-tile", "data-participant": id }, video,
          h("span", { class: "no-video" }, t("consult.noVideo")), h("figcaption"));
        tiles.append(tile);
      }
      tile.querySelector("figcaption").textContent = personName(p);
      const tracks = room.remote.get(id) || {};
      const video = tile.querySelector("video");
      const wanted = [tracks.video, tracks.audio].filter(Boolean);
      const current = video.srcObject ? video.srcObject.getTracks() : [];
      if (wanted.length !== current.length || wanted.some((tr) => !current.includes(tr))) {
        video.srcObject = wanted.length ? new MediaStream(wanted) : null;
        if (wanted.length) video.play().catch(() => {});
      }
      tile.dataset.video = String(Boolean(tracks.video));
    }
    tiles.dataset.count = String(ids.length);
  }

  function renderControls() {
    const audio = room.stream ? room.stream.getAudioTracks()[0] : null;
    const video = room.stream ? room.stream.getVideoTracks()[0] : null;
    micButton.disabled = !audio;
    micButton.textContent = t(room.micOn ? "consult.micOn" : "consult.micOff");
    micButton.setAttribute("aria-pressed", String(!room.micOn));
    camButton.disabled = !video || room.audioOnly;
    camButton.textContent = t(room.camOn ? "consult.camOn" : "consult.camOff");
    camButton.setAttribute("aria-pressed", String(!room.camOn));
    audioButton.textContent = t(room.audioOnly ? "consult.audioOnlyOff" : "consult.audioOnly");
    audioButton.setAttribute("aria-pressed", String(room.audioOnly));
    screenButton.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    screenButton.disabled = room.audioOnly || !room.peer;
    screenButton.textContent = t(room.screen ? "consult.screenStop" : "consult.screen");
    screenButton.setAttribute("aria-pressed", String(Boolean(room.screen)));
    localTile.classList.toggle("screen", Boolean(room.screen));
    localTile.dataset.video = String(Boolean(video) && !room.audioOnly && room.camOn);
    localNoVideo.textContent = t(room.audioOnly ? "consult.audioOnly" : "consult.noVideo");
  }

  function renderShare() {
    const presenter = room.presenter !== null ? room.participants.get(room.presenter) : null;
    const mine = room.presenter === room.me && room.me !== null;
    shareInfo.textContent = mine
      ? t("consult.youPresent")
      : presenter ? t("consult.presenterIs", { name: personName(presenter) }) : t("consult.nothingShared");
    presentButton.textContent = t(mine || room.presenter === null ? "consult.present" : "consult.takeOver");
    closeViewButton.hidden = !shared.mounted;
    viewArea.hidden = !shared.mounted;
    stage.classList.toggle("sharing", shared.mounted);
  }

  function renderAll() {
    renderPeople();
    renderWaiting();
    renderConsent();
    renderTiles();
    renderControls();
    renderShare();
  }

  // ----- signaling
  function send(message) {
    if (!room.signaling || !room.signaling.send(message)) return false;
    return true;
  }

  function catchUp(msg) {
    room.participants = new Map((msg.participants || []).map((p) => [p.participant_id, p]));
    room.waitingRoom = new Map((msg.waiting_room || []).map((p) => [p.participant_id, p]));
    room.presenter = msg.presenter ?? null;
    room.consents = msg.consents || {};
    room.recording = Boolean(msg.recording);
    if (msg.sync) applySync(msg.sync);
  }

  function enterCall() {
    room.waiting = false;
    videos.append(localTile);
    recordingBadge.hidden = false;
    waitingPanel.hidden = true;
    call.hidden = false;
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
    if ([...room.participants.keys()].some((id) => id !== room.me && !have.has(id))) startPeer();
  }

  function onMessage(msg) {
    if (room.finished) return;
    switch (msg.type) {
      case "welcome":
        room.me = msg.participant_id;
        room.role = msg.role;
        room.iceServers = msg.ice_servers || [];
        catchUp(msg);
        if (msg.waiting) {
          room.waiting = true;
          waitingPanel.append(localTile); // a camera check while waiting
          recordingBadge.hidden = true;
          waitingPanel.hidden = false;
          call.hidden = true;
        } else {
          const hadPeer = Boolean(room.peer && room.peer.offered);
          enterCall();
          if (msg.resumed && hadPeer) checkSlotsAfterResume();
        }
        break;
      case "admitted":
        catchUp(msg);
        enterCall();
        break;
      case "waiting":
        room.waitingRoom.set(msg.participant.participant_id, msg.participant);
        renderWaiting();
        break;
      case "participant_joined":
        room.waitingRoom.delete(msg.participant.participant_id);
        room.participants.set(msg.participant.participant_id, msg.participant);
        renderAll();
        break;
      case "participant_left":
        room.waitingRoom.delete(msg.participant_id);
        room.participants.delete(msg.participant_id);
        room.remote.delete(msg.participant_id);
        delete room.consents[String(msg.participant_id)];
        renderAll();
        break;
      case "presenter":
        room.presenter = msg.participant_id;
        // the new presenter's viewer becomes editable; everyone else's read-only
        if (shared.mounted && room.syncState) shared.show(room.syncState, { readOnly: room.presenter !== room.me }).then(renderShare);
        renderPeople();
        renderShare();
        break;
      case "consent_requested":
        room.consentAsked = true;
        renderConsent();
        break;
      case "consent_state":
        room.consents = msg.consents || {};
        room.recording = Boolean(msg.recording);
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
        if (!["invalid_token", "token_expired", "token_other_consult", "consult_not_found", "consult_ended",
          "too_many_participants", "replaced"].includes(msg.code)) transient(msg);
        break;
      default:
        break;
    }
  }

  function onStatus(state, detail) {
    if (room.finished) return;
    if (state === "open") setStatus("connected", "ok");
    else if (state === "connecting") setStatus("connecting");
    else if (state === "reconnecting") {
      setStatus("reconnecting", "warn");
      // our own entry shows as away while the seat is held
      const me = room.participants.get(room.me);
      if (me) me.connected = false;
      renderPeople();
    } else if (state === "closed") {
      if (detail.code === 4010 || (detail.error && detail.error.code === "consult_ended")) finish("ended");
      else if (detail.code === 4000) finish("left");
      else finish("error", detail.error);
    }
  }

  // ----- media
  async function startLocal() {
    try {
      const got = await localMedia({ audioOnly: room.audioOnly });
      room.stream = got.stream;
      if (got.audioOnly && !room.audioOnly) {
        room.audioOnly = true;
        alerts.append(h("div", { class: "alert alert-warn", role: "status", id: "consult-audio-fallback" },
          h("p", null, t("consult.audioOnlyAuto", { reason: got.videoError ? got.videoError.name : "?" }))));
      }
    } catch (err) {
      room.stream = new MediaStream();
      alerts.append(h("div", { class: "alert alert-warn", role: "status", id: "consult-no-media" },
        h("p", null, t("consult.noMedia", { reason: err.name || err.code || String(err) }))));
    }
    localVideo.srcObject = room.stream;
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
        renderTiles();
      },
      onState: (state) => {
        if (peer !== room.peer || room.finished) return;
        call.dataset.media = state;
        if (state === "failed") {
          transient({ message: t("consult.mediaFailed") });
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
      .catch((err) => transient({ code: "offer", message: String(err) }));
    renderControls();
  }

  function teardownMedia() {
    if (room.peer) room.peer.close();
    room.peer = null;
    stopStream(room.stream);
    stopStream(room.screen);
    room.stream = null;
    room.screen = null;
    localVideo.srcObject = null;
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
    audioButton.disabled = true;
    stopStream(room.screen);
    room.screen = null;
    stopStream(room.stream);
    room.audioOnly = on;
    if (!on) {
      const fallback = alerts.querySelector("#consult-audio-fallback");
      if (fallback) fallback.remove();
    }
    await startLocal();
    audioButton.disabled = false;
    if (!room.waiting && !room.finished) startPeer();
    renderAll();
  }

  /** Screen share replaces the camera in our one video sender: no renegotiation needed. */
  async function toggleScreen() {
    if (room.screen) {
      stopStream(room.screen);
      room.screen = null;
      if (room.peer) room.peer.replaceVideo(room.stream.getVideoTracks()[0] || null);
      localVideo.srcObject = room.stream;
      renderControls();
      return;
    }
    try {
      const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      room.screen = display;
      const track = display.getVideoTracks()[0];
      track.addEventListener("ended", () => { if (room.screen === display) toggleScreen(); });
      if (room.peer) room.peer.replaceVideo(track);
      localVideo.srcObject = display;
    } catch (err) {
      if (err && err.name !== "NotAllowedError") transient({ message: String(err) });
    }
    renderControls();
  }

  // ----- shared view
  function materialState(key) {
    const found = options.find((m) => m.key === key);
    return found ? found.state : null;
  }

  function materialKey(state) {
    return state.mode === "dicom" ? `dicom:${state.series_uid}` : `ecg:${state.ecg_id}`;
  }

  async function present() {
    // taking over the material on screen keeps its position; another one starts fresh
    const current = room.syncState && materialKey(room.syncState) === presentSelect.value && shared.mounted;
    const state = current ? room.syncState : materialState(presentSelect.value);
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
    if (options.some((m) => m.key === materialKey(state))) presentSelect.value = materialKey(state);
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
    endButton.disabled = true;
    try {
      await api("POST", `/consults/${consult.id}/end`);
      finish("ended");
    } catch (err) {
      if (err instanceof SessionEnded) return;
      endButton.disabled = false;
      alerts.append(errorBox(err));
    }
  }

  // ----- start
  async function start() {
    setStatus("connecting");
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
