// The consult room's page: the layout (status bar, videos, controls, participants, waiting
// room, consent, the shared view's card) and drawing the room state into it. It holds no
// state of its own and talks to nobody: the buttons call the actions room.js hands in.

import { fill, h } from "/static/js/dom.js";
import { t } from "/static/js/i18n.js";
import { errorBox } from "/static/js/ui.js";
import { consentOf, consentPending, others, personName } from "/static/js/consult/room_state.js";

// "auto" is opt-in: the browser's bandwidth estimate starts low and ramps up, and the
// estimate is of our uplink, so it only hints at what we can take in.
const QUALITIES = ["high", "medium", "low", "auto"];
const TRANSIENT_MS = 8000;

function button(id, text, onclick, cls = "btn btn-secondary") {
  return h("button", { type: "button", id, class: cls, onclick }, text);
}

/**
 * roomView(consult, options, actions) -> the page of a room; `options` is materials(), the
 * actions are {toggleMic, toggleCamera, toggleAudioOnly, toggleScreen, leave, end, consent(given),
 * admit(participantId), present, closeView}. render*(room[, shared]) draw the state.
 */
export function roomView(consult, options, actions) {
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
  const shareInfo = h("p", { id: "consult-share-info", class: "muted small" }, t("consult.nothingShared"));
  const videos = h("div", { class: "consult-videos" }, tiles, localTile);
  const stage = h("div", { class: "consult-stage" }, viewArea, videos);

  const micButton = button("consult-mic", t("consult.micOn"), () => actions.toggleMic());
  const camButton = button("consult-camera", t("consult.camOn"), () => actions.toggleCamera());
  const audioButton = button("consult-audio-only", t("consult.audioOnly"), () => actions.toggleAudioOnly());
  const screenButton = button("consult-screen", t("consult.screen"), () => actions.toggleScreen());
  const quality = h("select", { id: "consult-quality" },
    QUALITIES.map((q) => h("option", { value: q }, t(`consult.quality.${q}`))));
  const leaveButton = button("consult-leave", t("consult.leave"), () => actions.leave(), "btn btn-secondary");
  const endButton = button("consult-end", t("consult.end"), () => actions.end(), "btn btn-danger");
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
  const consentGive = button("consult-consent-give", t("consult.consentGive"), () => actions.consent(true), "btn btn-primary");
  const consentNo = button("consult-consent-no", t("consult.consentDecline"), () => actions.consent(false));
  const consentCard = h("section", { class: "card consult-consent", id: "consult-consent" },
    h("h2", null, t("consult.consentTitle")), consentText, h("div", { class: "actions" }, consentGive, consentNo));
  const presentSelect = h("select", { id: "consult-present-select" },
    options.map((m) => h("option", { value: m.key }, m.text)));
  const presentButton = button("consult-present", t("consult.present"), () => actions.present(), "btn btn-primary");
  const closeViewButton = button("consult-close-view", t("consult.stopPresent"), () => actions.closeView());
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

  const view = {
    body,
    viewArea,
    quality,
    audioButton,
    endButton,

    setStatus(key, kind = "info") {
      status.dataset.state = key;
      status.className = `consult-status consult-status-${kind}`;
      status.textContent = t(`consult.${key}`);
    },

    /** A warning that goes away by itself (a hub error, a media failure). */
    transient(message) {
      const box = h("div", { class: "alert alert-warn", role: "status" },
        h("p", null, t("consult.error.transient", { msg: message.message || message.code })));
      alerts.append(box);
      setTimeout(() => box.remove(), TRANSIENT_MS);
    },

    /** A warning that stays (no camera, audio only by necessity), found again by its id. */
    warn(id, text) {
      alerts.append(h("div", { class: "alert alert-warn", role: "status", id }, h("p", null, text)));
    },

    unwarn(id) {
      const box = alerts.querySelector(`#${id}`);
      if (box) box.remove();
    },

    error(err) {
      alerts.append(errorBox(err));
    },

    /** The room is over: left (with a way back in), ended, or an error. */
    showFinished(kind, error) {
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
    },

    /** In the waiting room: our own camera as a check, the call hidden. */
    showWaiting() {
      waitingPanel.append(localTile);
      recordingBadge.hidden = true;
      waitingPanel.hidden = false;
      call.hidden = true;
    },

    showCall() {
      videos.append(localTile);
      recordingBadge.hidden = false;
      waitingPanel.hidden = true;
      call.hidden = false;
    },

    setMediaState(state) {
      call.dataset.media = state;
    },

    setLocalSource(stream) {
      localVideo.srcObject = stream;
    },

    selectedMaterial() {
      return presentSelect.value;
    },

    selectMaterial(key) {
      if (options.some((m) => m.key === key)) presentSelect.value = key;
    },

    renderPeople(room) {
      fill(people, [...room.participants.values()].map((p) => {
        const consentKey = consentOf(room, p.participant_id);
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
    },

    renderWaiting(room) {
      const host = room.role === "host";
      waitingCard.hidden = !host;
      endButton.hidden = !host;
      const waiting = [...room.waitingRoom.values()];
      fill(waitingList, waiting.length
        ? waiting.map((p) => h("li", { "data-participant": p.participant_id },
          h("span", { class: "who" }, h("strong", null, personName(p))),
          h("button", { type: "button", class: "btn btn-primary", "data-action": "admit",
            onclick: () => actions.admit(p.participant_id) }, t("consult.admit"))))
        : h("li", { class: "muted small" }, t("consult.waitingNone")));
      waitingCard.classList.toggle("attention", waiting.length > 0);
    },

    renderConsent(room) {
      const mine = consentOf(room, room.me);
      const asked = consentPending(room);
      consentText.textContent = t(asked ? "consult.consentAsked" : "consult.consentAsk");
      consentCard.classList.toggle("attention", asked);
      consentGive.textContent = t("consult.consentGive");
      consentGive.hidden = mine === "yes";
      consentNo.textContent = t(mine === "yes" ? "consult.consentWithdraw" : "consult.consentDecline");
      consentNo.hidden = mine === "no";
      recordingBadge.dataset.recording = String(room.recording);
      recordingBadge.classList.toggle("on", room.recording);
      recordingBadge.querySelector(".rec-text").textContent = t(room.recording ? "consult.recording" : "consult.notRecording");
    },

    /** One tile per other participant, fed from the hub's media slots. */
    renderTiles(room) {
      const ids = others(room);
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
    },

    renderControls(room) {
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
    },

    renderShare(room, shared) {
      const presenter = room.presenter !== null ? room.participants.get(room.presenter) : null;
      const mine = room.presenter === room.me && room.me !== null;
      shareInfo.textContent = mine
        ? t("consult.youPresent")
        : presenter ? t("consult.presenterIs", { name: personName(presenter) }) : t("consult.nothingShared");
      presentButton.textContent = t(mine || room.presenter === null ? "consult.present" : "consult.takeOver");
      closeViewButton.hidden = !shared.mounted;
      viewArea.hidden = !shared.mounted;
      stage.classList.toggle("sharing", shared.mounted);
    },

    renderAll(room, shared) {
      view.renderPeople(room);
      view.renderWaiting(room);
      view.renderConsent(room);
      view.renderTiles(room);
      view.renderControls(room);
      view.renderShare(room, shared);
    },
  };
  return view;
}
