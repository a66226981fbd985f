"""Consult media (issue 6 items 3, 4): the hub's aiortc peers relay and record.

In-process over real loopback ICE/DTLS/SRTP between aiortc peers: the signaling WebSocket
(telehub/api/consults.py) did not exist yet when these were written; the calls here are the
ones it makes (telehub.media.sessions).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import av
import pytest

from telehub.media import forwarding, sessions
from telehub.media.synthetic import SyntheticParticipant
from telehub.store import FilesystemStore

pytestmark = pytest.mark.timeout(60)

_ids = itertools.count(int(time.time()) % 100000 * 100)
LEVELS = {1: 40, 2: 120, 3: 200}


@pytest.fixture
def media(tmp_path: Path):
    """Configured sessions module with hooks recorded into lists."""
    store = FilesystemStore(tmp_path / "store")
    sessions.configure(store=store, work_dir=tmp_path / "work", ice_servers=[])
    seen: dict[str, list] = {"stored": [], "slots": [], "lost": []}
    sessions.on_recording_stored = lambda c, key, d: seen["stored"].append((c, key, d))
    sessions.on_slots_changed = lambda c, p, slots: seen["slots"].append((c, p, slots))
    sessions.on_participant_lost = lambda c, p: seen["lost"].append((c, p))
    yield store, seen
    sessions.on_recording_stored = sessions.on_slots_changed = None
    sessions.on_participant_lost = None


async def join(consult: int, pid: int, slots: int, **kw) -> tuple[SyntheticParticipant, dict]:
    client = SyntheticParticipant(LEVELS[pid], slots, **kw)
    answer = await sessions.handle_offer(consult, pid, **await client.offer())
    await client.accept(answer)
    return client, answer


def slot_owner(seen: dict, consult: int, pid: int, answer: dict) -> dict[str, int]:
    """mid -> participant id for ``pid``'s slots: the answer's map updated by the pushes."""
    owners = {mid: s["participant_id"] for mid, s in answer["slots"].items()}
    for c, p, slots in seen["slots"]:
        if (c, p) == (consult, pid):
            owners = {mid: s["participant_id"] for mid, s in slots.items()}
    return owners


async def wait_until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def probe(store: FilesystemStore, key: str, tmp_path: Path) -> tuple[int, int, float]:
    """Decode the whole recording: (video streams, audio streams, seconds of video)."""
    path = tmp_path / "probe.mkv"
    with store.open(key) as src:
        path.write_bytes(src.read())
    with av.open(str(path)) as container:
        videos = len(container.streams.video)
        audios = len(container.streams.audio)
        last = 0.0
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                assert (frame.width, frame.height) == (640, 480)
                last = max(last, float(frame.time))
    return videos, audios, last


def assert_sees_others(client: SyntheticParticipant, owners: dict[str, int], me: int, n: int):
    others = {pid for pid in owners.values()}
    assert others == set(range(1, n + 1)) - {me}
    for mid, pid in owners.items():
        got = client.received[mid]
        assert got.frames >= 5, (me, mid, got)
        if got.kind == "video":
            assert abs(got.levels[-1] - LEVELS[pid]) < 12, (me, pid, got.levels[-3:])


@pytest.mark.parametrize("parties", [2, 3])
def test_parties_see_each_other_and_recording_decodes(media, tmp_path, parties):
    asyncio.run(_parties_see_each_other_and_recording_decodes(media, tmp_path, parties))


async def _parties_see_each_other_and_recording_decodes(media, tmp_path, parties):
    store, seen = media
    consult = next(_ids)
    clients = {}
    for pid in range(1, parties + 1):
        clients[pid] = await join(consult, pid, slots=parties - 1)
    await sessions.set_recording(consult, True)
    started = time.monotonic()

    def all_flowing() -> bool:
        for pid, (client, answer) in clients.items():
            owners = slot_owner(seen, consult, pid, answer)
            if len(owners) != 2 * (parties - 1):
                return False
            if any(client.received[m].frames < 5 for m in owners):
                return False
        return True

    await wait_until(all_flowing)
    await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    for pid, (client, answer) in clients.items():
        assert_sees_others(client, slot_owner(seen, consult, pid, answer), pid, parties)
    await sessions.set_recording(consult, False)
    recorded = time.monotonic() - started
    await wait_until(lambda: any(c == consult for c, _, _ in seen["stored"]))
    [(_, key, duration)] = [s for s in seen["stored"] if s[0] == consult]
    assert key == f"consults/{consult}/1.mkv"
    videos, audios, seconds = await asyncio.to_thread(probe, store, key, tmp_path)
    assert (videos, audios) == (parties, parties)
    assert abs(seconds - recorded) < 1.0 and abs(duration - recorded) < 1.0
    await sessions.end(consult)
    for client, _ in clients.values():
        await client.close()
    assert consult not in sessions.active()


def test_media_is_forwarded_and_recorded_without_reencoding(media, tmp_path):
    asyncio.run(_media_is_forwarded_and_recorded_without_reencoding(media, tmp_path))


async def _media_is_forwarded_and_recorded_without_reencoding(media, tmp_path):
    """The hub hands on what the participants sent: nothing decoded for a two-party recorded
    consult at full quality, and the recording holds the received VP8 and Opus as they came."""
    store, seen = media
    consult = next(_ids)
    a, answer_a = await join(consult, 1, slots=1)
    b, answer_b = await join(consult, 2, slots=1)
    await wait_until(lambda: all(r.frames > 5 for r in a.received.values()))
    await wait_until(lambda: all(r.frames > 5 for r in b.received.values()))
    before = dict(forwarding.counts)
    await sessions.set_recording(consult, True)
    await asyncio.sleep(2.5)
    await sessions.set_recording(consult, False)
    assert forwarding.counts["decoded"] == before["decoded"]
    assert forwarding.counts["forwarded"] > before["forwarded"] + 100  # 2 x (15 video + 50 audio)/s
    assert_sees_others(a, slot_owner(seen, consult, 1, answer_a), 1, 2)
    assert_sees_others(b, slot_owner(seen, consult, 2, answer_b), 2, 2)
    await wait_until(lambda: any(c == consult for c, _, _ in seen["stored"]))
    key = next(k for c, k, _ in seen["stored"] if c == consult)
    path = tmp_path / "forwarded.mkv"
    with store.open(key) as src:
        path.write_bytes(src.read())
    with av.open(str(path)) as container:
        codecs = sorted(s.codec_context.name for s in container.streams)
        frames = sum(1 for _ in container.decode(video=0))
    assert codecs == ["opus", "opus", "vp8", "vp8"]
    assert frames >= 20  # starts at a keyframe: every frame of the segment decodes
    await sessions.end(consult)
    await a.close()
    await b.close()


def test_vanished_participant_leaves_finalised_recording(media, tmp_path):
    asyncio.run(_vanished_participant_leaves_finalised_recording(media, tmp_path))


async def _vanished_participant_leaves_finalised_recording(media, tmp_path):
    store, seen = media
    consult = next(_ids)
    a, answer_a = await join(consult, 1, slots=1)
    b, _ = await join(consult, 2, slots=1)
    await wait_until(lambda: any(r.frames > 5 for r in a.received.values()))
    await sessions.set_recording(consult, True)
    started = time.monotonic()
    await asyncio.sleep(2.5)
    await b.pc.close()  # vanishes: no leave on signaling
    vanished = time.monotonic()
    await wait_until(lambda: (consult, 2) in seen["lost"])
    await wait_until(lambda: any(c == consult for c, _, _ in seen["stored"]))
    key = next(k for c, k, _ in seen["stored"] if c == consult)
    videos, audios, seconds = await asyncio.to_thread(probe, store, key, tmp_path)
    assert (videos, audios) == (2, 2)
    assert abs(seconds - (vanished - started)) < 1.0
    # the one left keeps a recording of its own (next segment) and its slot is freed
    assert slot_owner(seen, consult, 1, answer_a) == {}
    await sessions.end(consult)
    await wait_until(lambda: len([s for s in seen["stored"] if s[0] == consult]) == 2)
    await a.close()


def test_bad_offer_is_refused_without_touching_other_consults(media):
    asyncio.run(_bad_offer_is_refused_without_touching_other_consults(media))


async def _bad_offer_is_refused_without_touching_other_consults(media):
    _, seen = media
    consult, other = next(_ids), next(_ids)
    a, _ = await join(other, 1, slots=1)
    b, _ = await join(other, 2, slots=1)
    with pytest.raises(ValueError, match="SDP"):
        await sessions.handle_offer(consult, 1, "v=0\r\nnonsense\r\n", "offer")
    with pytest.raises(ValueError, match="SDP"):
        await sessions.handle_offer(consult, 1, "v=0\r\nm=video 9 RTP/SAVPF 96\r\n", "offer")
    with pytest.raises(ValueError, match="offer"):
        await sessions.handle_offer(consult, 1, (await a.offer())["sdp"], "answer")
    before = sum(r.frames for r in a.received.values())
    await wait_until(lambda: sum(r.frames for r in a.received.values()) > before + 10)
    await sessions.end(consult)
    await sessions.end(other)
    await a.close()
    await b.close()


def test_weak_link_audio_only_reconnect_and_lower_resolution(media):
    asyncio.run(_weak_link_audio_only_reconnect_and_lower_resolution(media))


async def _weak_link_audio_only_reconnect_and_lower_resolution(media):
    _, seen = media
    consult = next(_ids)
    a, answer_a = await join(consult, 1, slots=1)
    b, _ = await join(consult, 2, slots=1)
    await sessions.set_quality(consult, 1, "low")  # a's link is weak: 240p from b
    await wait_until(lambda: any(r.heights and r.heights[-1] == 240 for r in a.received.values()))
    # b's link drops; it comes back audio-only with a new offer (replaces its peer)
    await b.pc.close()
    b2, answer_b2 = await join(consult, 2, slots=1, video=False)
    await wait_until(lambda: len(slot_owner(seen, consult, 2, answer_b2)) == 1)
    await wait_until(lambda: slot_owner(seen, consult, 1, answer_a) != {})
    owners = slot_owner(seen, consult, 1, answer_a)
    assert [a.received[m].kind for m in owners] == ["audio"]
    mid_b2 = next(iter(slot_owner(seen, consult, 2, answer_b2)))
    await wait_until(lambda: b2.received[mid_b2].frames > 10)
    audio_mid = next(iter(owners))
    before = a.received[audio_mid].frames
    await wait_until(lambda: a.received[audio_mid].frames > before + 10)
    await sessions.end(consult)
    await a.close()
    await b2.close()


# ----- through the running hub's signaling WebSocket -----------------------------------------
def test_two_parties_through_the_hub_recording_in_the_case(tmp_path_factory):
    from tests.helpers import start_hub
    from tests.test_consults import new_consult, send_case, timeline

    hub = start_hub(tmp_path_factory.mktemp("media-hub"))
    try:
        case_id = send_case(hub, tmp_path_factory.mktemp("media-case"))
        cid = new_consult(hub, case_id, invite=["reader"], auto_admit=True)["id"]
        recorded = asyncio.run(_through_hub(hub, cid))
        events = []

        def stored() -> bool:
            events[:] = [e for e in timeline(hub, case_id, cid) if "object_key" in e["detail"]]
            return bool(events)

        deadline = time.monotonic() + 15
        while not stored():
            assert time.monotonic() < deadline, timeline(hub, case_id, cid)
            time.sleep(0.2)
        [event] = events
        key = event["detail"]["object_key"]
        assert key == f"consults/{cid}/1.mkv"
        store = FilesystemStore(hub.data / "objects")
        videos, audios, seconds = probe(store, key, tmp_path_factory.mktemp("probe"))
        assert (videos, audios) == (2, 2)
        assert abs(seconds - recorded) < 1.0
        assert abs(event["detail"]["duration_seconds"] - recorded) < 1.0
    finally:
        hub.proc.stop()


async def _through_hub(hub, cid: int) -> float:
    """Clinic and county reader join over the WebSocket, exchange media through the hub,
    consent, talk ~3 s, then the host ends the consult; returns the recorded seconds."""
    import aiohttp

    from tests.test_consults import join as ws_join
    from tests.test_consults import login, until

    async with aiohttp.ClientSession() as http:
        host, hw = await ws_join(http, hub, cid, "clinic")
        guest, gw = await ws_join(http, hub, cid, "reader")
        ids = {hw["participant_id"]: 60, gw["participant_id"]: 190}
        clients = {}
        for peer, welcome in ((host, hw), (guest, gw)):
            client = SyntheticParticipant(ids[welcome["participant_id"]], 1)
            await peer.send(type="offer", **{"sdp": (await client.offer())["sdp"]})
            answer = await peer.expect("answer")
            await client.accept(answer)
            clients[welcome["participant_id"]] = (peer, client, answer)

        def owners(me: int) -> dict[str, int]:
            peer, _, answer = clients[me]
            slots = answer["slots"]
            for message in peer.seen:
                if message["type"] == "media-slots":
                    slots = message["slots"]
            return {mid: s["participant_id"] for mid, s in slots.items()}

        def flowing() -> bool:
            for me, (_peer, client, _) in clients.items():
                own = owners(me)
                if len(own) != 2 or any(client.received[m].frames < 5 for m in own):
                    return False
                for mid, other in own.items():
                    got = client.received[mid]
                    if got.kind == "video" and abs(got.levels[-1] - ids[other]) >= 12:
                        return False
            return True

        for peer, _, _ in clients.values():
            await peer.send(type="consent", given=True)
        await until(host, "consent_state", lambda m: m["recording"])
        started = time.monotonic()
        await wait_until(flowing)
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        resp = await asyncio.to_thread(
            hub.api.post, f"/api/v1/consults/{cid}/end", None, login(hub.api, "clinic")
        )
        recorded = time.monotonic() - started
        assert resp.status == 200, resp.body
        for _, client, _ in clients.values():
            await client.close()
        return recorded
