// Camera, microphone and the connection to the hub's media peer (docs/consults.md, "Media
// topology"): we offer our own tracks send-only plus fixed receive "slots", the hub answers
// and later points each slot at another participant (`slots`: {mid: {participant_id, kind}}),
// so nobody renegotiates when someone joins or leaves.

/** Slots for everyone else in a consult of consult_max_participants (hub default 6). */
export const DEFAULT_SLOTS = 5;
const GATHER_WAIT_MS = 2000;
const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 15 } };

/**
 * The local camera and microphone. Video failing (no camera, refused, busy) falls back to
 * audio only rather than keeping the user out of the call: {stream, audioOnly, videoError}.
 */
export async function localMedia({ audioOnly = false } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw Object.assign(new Error("getUserMedia unavailable"), { code: "no_media_devices" });
  }
  if (!audioOnly) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: VIDEO });
      return { stream, audioOnly: false, videoError: null };
    } catch (err) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      return { stream, audioOnly: true, videoError: err };
    }
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  return { stream, audioOnly: true, videoError: null };
}

/** Stop every track of a stream (camera light off). */
export function stopStream(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

/**
 * One RTCPeerConnection to the hub's media peer. `send(message)` goes to the signaling socket;
 * `onSlots(map)` is called with participant_id -> {audio, video} MediaStreamTracks.
 */
export class HubPeer {
  constructor({ stream, audioOnly, iceServers, send, onSlots, onState, slots = DEFAULT_SLOTS }) {
    this.stream = stream;
    this.audioOnly = audioOnly;
    this.send = send;
    this.onSlots = onSlots;
    this.onState = onState || (() => {});
    this.slotMap = {};
    this.pc = new RTCPeerConnection({ iceServers: iceServers || [], bundlePolicy: "max-bundle" });
    const audio = stream.getAudioTracks()[0];
    const video = audioOnly ? null : stream.getVideoTracks()[0];
    if (video) this.pc.addTransceiver(video, { direction: "sendonly", streams: [stream] });
    if (audio) this.pc.addTransceiver(audio, { direction: "sendonly", streams: [stream] });
    for (let i = 0; i < slots; i += 1) {
      this.pc.addTransceiver("audio", { direction: "recvonly" });
      if (!audioOnly) this.pc.addTransceiver("video", { direction: "recvonly" });
    }
    this.offered = false;
    this.pc.addEventListener("icecandidate", (event) => {
      // late candidates (after the offer left) are trickled; the hub's peer takes them
      if (event.candidate && this.offered) this.send({ type: "candidate", candidate: event.candidate.toJSON() });
    });
    this.connectedAt = null;
    this.pc.addEventListener("connectionstatechange", () => {
      if (this.pc.connectionState === "connected" && this.connectedAt === null) this.connectedAt = Date.now();
      this.onState(this.pc.connectionState);
    });
  }

  /** Offer to the hub with the candidates gathered so far (aiortc starts its checks with
   * what the offer carries); the answer comes back on the socket (accept()). False when the
   * socket was down (offer again once it is back). */
  async offer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await gathered(this.pc, GATHER_WAIT_MS);
    this.offered = this.send({ type: "offer", sdp: this.pc.localDescription.sdp }) !== false;
    return this.offered;
  }

  async accept(message) {
    await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    this.setSlots(message.slots || {});
  }

  /** The hub moved its slots: regroup the received tracks by participant. */
  setSlots(slots) {
    this.slotMap = slots || {};
    this.onSlots(this.tracksByParticipant());
  }

  tracksByParticipant() {
    const byMid = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid !== null && tr.receiver && tr.receiver.track) byMid.set(String(tr.mid), tr.receiver.track);
    }
    const out = new Map();
    for (const [mid, slot] of Object.entries(this.slotMap)) {
      const track = byMid.get(mid);
      if (!track || slot.participant_id === null || slot.participant_id === undefined) continue;
      const entry = out.get(slot.participant_id) || {};
      entry[slot.kind] = track;
      out.set(slot.participant_id, entry);
    }
    return out;
  }

  /** The link as getStats() sees it: {bitrate: available outgoing bit/s or null, loss: the
   * fraction of received packets lost since the last call}. */
  async linkStats() {
    const stats = await this.pc.getStats();
    let bitrate = null;
    let lost = 0;
    let received = 0;
    stats.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.availableOutgoingBitrate) bitrate = s.availableOutgoingBitrate;
      if (s.type === "inbound-rtp") {
        lost += s.packetsLost || 0;
        received += s.packetsReceived || 0;
      }
    });
    const last = this.lastCounts || { lost: 0, received: 0 };
    this.lastCounts = { lost, received };
    const dLost = Math.max(0, lost - last.lost);
    const dAll = dLost + Math.max(0, received - last.received);
    return { bitrate, loss: dAll ? dLost / dAll : 0 };
  }

  /** Send another picture (screen share, back to the camera) without renegotiating. */
  replaceVideo(track) {
    const own = this.pc.getTransceivers()
      .find((tr) => tr.direction === "sendonly" && tr.receiver.track.kind === "video");
    if (own) own.sender.replaceTrack(track).catch(() => {});
  }

  get state() {
    return this.pc.connectionState;
  }

  close() {
    try {
      this.pc.close();
    } catch {
      // already closed
    }
  }
}

const LEVELS = ["audio", "low", "medium", "high"];

/** What to ask the hub for on this link (docs/consults.md "Weak links"). */
export function qualityFor({ bitrate, loss }) {
  if (loss > 0.1 || (bitrate !== null && bitrate < 250_000)) return "audio";
  if (bitrate !== null && bitrate < 350_000) return "low";
  if (bitrate !== null && bitrate < 600_000) return "medium";
  return "high";
}

/**
 * Automatic quality: step down after `downSamples` bad samples in a row (one noisy sample is
 * no reason), back up one step at a time after `upAfterMs` of headroom.
 * next(stats, now) -> the level to ask for, or null (no change).
 */
export class QualityGovernor {
  constructor({ upAfterMs = 10_000, downSamples = 2 } = {}) {
    this.level = "high";
    this.upAfterMs = upAfterMs;
    this.downSamples = downSamples;
    this.betterSince = null;
    this.worse = 0;
  }

  next(stats, now) {
    const want = qualityFor(stats);
    const diff = LEVELS.indexOf(want) - LEVELS.indexOf(this.level);
    if (diff < 0) {
      this.betterSince = null;
      this.worse += 1;
      if (this.worse < this.downSamples) return null;
      this.worse = 0;
      this.level = want;
      return want;
    }
    this.worse = 0;
    if (diff === 0) {
      this.betterSince = null;
      return null;
    }
    if (this.betterSince === null) this.betterSince = now;
    if (now - this.betterSince < this.upAfterMs) return null;
    this.betterSince = null;
    this.level = LEVELS[LEVELS.indexOf(this.level) + 1];
    return this.level;
  }
}
