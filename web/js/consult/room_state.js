// The consult room's state as the hub tells it over the signaling socket: who we are, who is in
// the call and in the waiting room, who presents, consents and recording. applyMessage() keeps
// it up to date; room.js decides what each message means for media and the page, and
// room_view.js draws it. Nothing here touches the DOM.

import { formatPersonName, t } from "/static/js/i18n.js";

/** Errors after which the hub closes the socket (the close says why): no passing warning. */
const FATAL_ERRORS = new Set([
  "invalid_token",
  "token_expired",
  "token_other_consult",
  "consult_not_found",
  "consult_ended",
  "too_many_participants",
  "replaced",
]);

/** A fresh room: waiting for the hub's welcome. Tests read it (container.telehubConsult.room). */
export function newRoomState() {
  return {
    me: null, // participant id
    role: null,
    waiting: true,
    participants: new Map(), // id -> participant (describe())
    waitingRoom: new Map(),
    presenter: null,
    consents: {},
    recording: false,
    iceServers: [],
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
}

export function personName(p) {
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

/** The material a shared view state shows (the key of materials()). */
export function materialKey(state) {
  return state.mode === "dicom" ? `dicom:${state.series_uid}` : `ecg:${state.ecg_id}`;
}

/** A participant's answer to recording: "yes", "no" or "none" (not answered). */
export function consentOf(room, participantId) {
  const consent = room.consents[String(participantId)];
  return consent === true ? "yes" : consent === false ? "no" : "none";
}

/** Someone agreed to record and we have not answered yet. */
export function consentPending(room) {
  return room.consentAsked && consentOf(room, room.me) === "none";
}

/** The other participants in the call (those with a video tile). */
export function others(room) {
  return [...room.participants.keys()].filter((id) => id !== room.me);
}

/** The hub's whole picture of the room (welcome, admitted, a resume) replaces ours. */
function catchUp(room, msg) {
  room.participants = new Map((msg.participants || []).map((p) => [p.participant_id, p]));
  room.waitingRoom = new Map((msg.waiting_room || []).map((p) => [p.participant_id, p]));
  room.presenter = msg.presenter ?? null;
  room.consents = msg.consents || {};
  room.recording = Boolean(msg.recording);
}

/**
 * Apply a signaling message to the room state. Media (answers, slots), the shared view's
 * position (sync) and the end of the consult are room.js's to handle.
 */
export function applyMessage(room, msg) {
  switch (msg.type) {
    case "welcome":
      room.me = msg.participant_id;
      room.role = msg.role;
      room.iceServers = msg.ice_servers || [];
      catchUp(room, msg);
      if (msg.waiting) room.waiting = true;
      break;
    case "admitted":
      catchUp(room, msg);
      break;
    case "waiting":
      room.waitingRoom.set(msg.participant.participant_id, msg.participant);
      break;
    case "participant_joined":
      room.waitingRoom.delete(msg.participant.participant_id);
      room.participants.set(msg.participant.participant_id, msg.participant);
      break;
    case "participant_left":
      room.waitingRoom.delete(msg.participant_id);
      room.participants.delete(msg.participant_id);
      room.remote.delete(msg.participant_id);
      delete room.consents[String(msg.participant_id)];
      break;
    case "presenter":
      room.presenter = msg.participant_id;
      break;
    case "consent_requested":
      room.consentAsked = true;
      break;
    case "consent_state":
      room.consents = msg.consents || {};
      room.recording = Boolean(msg.recording);
      break;
    default:
      break;
  }
}

/** An error from the hub worth a passing warning: the fatal ones end the room on close. */
export function isTransientError(msg) {
  return !FATAL_ERRORS.has(msg.code);
}

/** How a socket closed for good ended the room: "ended", "left" or "error". */
export function closeReason(detail) {
  if (detail.code === 4010 || (detail.error && detail.error.code === "consult_ended")) return "ended";
  if (detail.code === 4000) return "left";
  return "error";
}
