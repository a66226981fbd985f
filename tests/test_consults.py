"""Consult sessions (issue 6 items 1, 2, 6): REST, join tokens and the signaling WebSocket of a
real hub, spoken to over real HTTP and real WebSockets on loopback. No media here (the hub's
aiortc peer has its own tests in test_consult_media.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest

from dicom.send import send_paths
from tests.helpers import Api, Hub, fresh_copy, start_hub

pytestmark = pytest.mark.timeout(120)

TOKEN_TTL = 4
RECONNECT = 3
ICE = [{"urls": ["stun:stun.example.cn:3478"]}]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub with short token and reconnect windows and room for three participants."""
    hub = start_hub(
        tmp_path_factory.mktemp("consults"),
        extra_env={
            "TELEHUB_CONSULT_TOKEN_TTL_SECONDS": str(TOKEN_TTL),
            "TELEHUB_CONSULT_RECONNECT_SECONDS": str(RECONNECT),
            "TELEHUB_CONSULT_MAX_PARTICIPANTS": "3",
            "TELEHUB_ICE_SERVERS": json.dumps(ICE),
        },
    )
    yield hub
    hub.proc.stop()


_tokens: dict[tuple[str, str], str] = {}


def login(api: Api, username: str) -> str:
    key = (api.base_url, username)
    if key not in _tokens:
        _tokens[key] = api.login(username)
    return _tokens[key]


def send_case(hub: Hub, folder: Path) -> int:
    """A CT sent by township centre 1 (clinic), routed to the county imaging centre."""
    path = fresh_copy("CT_small.dcm", folder, PatientID=f"CONSULT-{uuid.uuid4().hex[:8]}")
    study_uid = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
    return hub.api.wait_for(
        "/api/v1/cases?limit=500",
        login(hub.api, "admin"),
        lambda body: next(
            (c["id"] for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
    )


@pytest.fixture(scope="module")
def case_id(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> int:
    return send_case(hub, tmp_path_factory.mktemp("case"))


def new_consult(hub: Hub, case_id: int, host: str = "clinic", **body: Any) -> dict[str, Any]:
    resp = hub.api.post(f"/api/v1/cases/{case_id}/consults", body, login(hub.api, host))
    assert resp.status == 201, resp.body
    return resp.body


def join_token(hub: Hub, consult_id: int, username: str) -> str:
    resp = hub.api.post(f"/api/v1/consults/{consult_id}/token", token=login(hub.api, username))
    assert resp.status == 200, resp.body
    return resp.body["token"]


def timeline(hub: Hub, case_id: int, consult_id: int) -> list[dict[str, Any]]:
    body = hub.api.get(f"/api/v1/cases/{case_id}", login(hub.api, "admin")).body
    return [
        e
        for e in body["timeline"]
        if e["kind"].startswith("consult_") and e["detail"].get("consult_id") == consult_id
    ]


class Peer:
    """One signaling connection: every message it received, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._read = 0

    async def send(self, **message: Any) -> None:
        await self.ws.send_json(message)

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next unread message of this type (earlier ones of other types are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._read, len(self.seen)):
                if self.seen[i]["type"] == kind:
                    self._read = i + 1
                    return self.seen[i]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} message; got {self.seen}")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed ({msg.type}) waiting for {kind}: {self.seen}")
            self.seen.append(json.loads(msg.data))

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.seen.append(json.loads(msg.data))
                continue
            return self.ws.close_code

    def types(self) -> list[str]:
        return [m["type"] for m in self.seen]


async def until(peer: Peer, kind: str, predicate: Any) -> dict[str, Any]:
    """The next message of this type for which ``predicate`` holds."""
    while not predicate(message := await peer.expect(kind)):
        pass
    return message


async def connect(
    session: aiohttp.ClientSession, hub: Hub, consult_id: int, token: str
) -> tuple[Peer, dict[str, Any]]:
    url = f"http://127.0.0.1:{hub.http_port}/api/v1/consults/{consult_id}/ws?token={token}"
    peer = Peer(await session.ws_connect(url))
    return peer, await peer.expect("welcome")


async def connect_error(
    session: aiohttp.ClientSession, hub: Hub, consult_id: Any, token: str
) -> tuple[dict[str, Any], int | None]:
    url = f"http://127.0.0.1:{hub.http_port}/api/v1/consults/{consult_id}/ws?token={token}"
    peer = Peer(await session.ws_connect(url))
    code = await peer.closed()
    assert peer.types() == ["error"], peer.seen
    return peer.seen[0], code


async def join(
    session: aiohttp.ClientSession, hub: Hub, consult_id: int, username: str
) -> tuple[Peer, dict[str, Any]]:
    return await connect(session, hub, consult_id, join_token(hub, consult_id, username))


# ----- REST ----------------------------------------------------------------------------------
def test_create_read_list_and_invitee_sees_the_case_while_the_consult_is_open(
    hub: Hub, case_id: int
) -> None:
    api = hub.api
    consult = new_consult(hub, case_id, invite=["expert"])
    assert consult["kind"] == "adhoc" and consult["status"] == "open"
    people = {p["username"]: p for p in consult["participants"]}
    assert people["clinic"]["role"] == "host" and people["expert"]["role"] == "guest"
    assert people["expert"]["state"] == "invited"

    expert = login(api, "expert")  # provincial reader: the case is the county's, but he is
    assert api.get(f"/api/v1/cases/{case_id}", expert).status == 200  # invited to look at it
    detail = api.get(f"/api/v1/consults/{consult['id']}", expert)
    assert detail.status == 200, detail.body
    assert detail.body["case"]["id"] == case_id
    assert detail.body["case"]["studies"][0]["series"], detail.body["case"]
    assert detail.body["case"]["patient"]["patient_id"].startswith("CONSULT-")

    # another facility's clinic: neither the consult nor a token, and the same 404 as missing
    other = login(api, "clinic2")
    assert api.get(f"/api/v1/consults/{consult['id']}", other).status == 404
    assert api.post(f"/api/v1/consults/{consult['id']}/token", token=other).status == 404
    assert api.get("/api/v1/consults/999999", other).body["error"] == "consult_not_found"
    assert api.post(f"/api/v1/cases/{case_id}/consults", {}, other).status == 404

    listed = api.get(f"/api/v1/consults?case={case_id}", login(api, "clinic")).body["consults"]
    assert consult["id"] in [c["id"] for c in listed]
    assert consult["id"] in [c["id"] for c in api.get("/api/v1/consults", expert).body["consults"]]
    theirs = api.get("/api/v1/consults", other).body["consults"]
    assert consult["id"] not in [c["id"] for c in theirs]

    # the invitation opens the case only while the consult is open
    ended = api.post(f"/api/v1/consults/{consult['id']}/end", token=login(api, "clinic"))
    assert ended.status == 200
    assert api.get(f"/api/v1/cases/{case_id}", expert).status == 404


def test_scheduled_and_centre_invitations_and_bad_requests(hub: Hub, case_id: int) -> None:
    api = hub.api
    clinic = login(api, "clinic")
    scheduled = new_consult(
        hub,
        case_id,
        kind="scheduled",
        scheduled_at="2026-12-01T09:30:00+08:00",
        invite={"centre": "PH-ECG"},
    )
    assert scheduled["invite_centre"] == "PH-ECG"
    assert scheduled["scheduled_at"].startswith("2026-12-01T01:30:00")
    # any reader of the invited centre may join; a reader of another centre may not
    ok = api.post(f"/api/v1/consults/{scheduled['id']}/token", token=login(api, "ecgexpert"))
    assert ok.status == 200 and ok.body["url"].endswith(ok.body["token"])
    denied = api.post(f"/api/v1/consults/{scheduled['id']}/token", token=login(api, "ecgreader"))
    assert denied.status == 404

    path = f"/api/v1/cases/{case_id}/consults"
    for body, code in (
        ({"kind": "video"}, "bad_kind"),
        ({"kind": "scheduled"}, "bad_scheduled_at"),
        ({"kind": "scheduled", "scheduled_at": "tomorrow"}, "bad_scheduled_at"),
        ({"kind": "scheduled", "scheduled_at": "2026-12-01T09:30:00"}, "bad_scheduled_at"),
        ({"invite": ["expert", "nobody-here"]}, "unknown_user"),
        ({"invite": {"centre": "NOPE"}}, "unknown_centre"),
        ({"invite": "expert"}, "bad_invite"),
        ({"auto_admit": "yes"}, "bad_auto_admit"),
    ):
        resp = api.post(path, body, clinic)
        assert resp.status == 400 and resp.body["error"] == code, (body, resp.body)


def test_openapi_lists_the_consult_routes(hub: Hub) -> None:
    spec = hub.api.get("/api/v1/openapi.json", login(hub.api, "admin")).body
    assert "/api/v1/consults/{id}/ws" in spec["paths"]
    assert "post" in spec["paths"]["/api/v1/cases/{id}/consults"]


# ----- tokens --------------------------------------------------------------------------------
def test_tokens_are_bound_to_their_consult_and_expire(hub: Hub, case_id: int) -> None:
    first = new_consult(hub, case_id)["id"]
    second = new_consult(hub, case_id)["id"]
    token = join_token(hub, first, "clinic")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            error, code = await connect_error(s, hub, second, token)
            assert error["code"] == "token_other_consult" and code == 4001
            error, _ = await connect_error(s, hub, first, "not-a-token")
            assert error["code"] == "invalid_token"
            error, _ = await connect_error(s, hub, 999999, token)
            assert error["code"] == "consult_not_found"
            error, _ = await connect_error(s, hub, "abc", token)
            assert error["code"] == "bad_parameter"
            peer, welcome = await connect(s, hub, first, token)
            assert welcome["role"] == "host" and welcome["waiting"] is False
            assert welcome["ice_servers"] == ICE
            await peer.send(type="leave")
            await peer.closed()
            await asyncio.sleep(TOKEN_TTL + 0.5)
            error, _ = await connect_error(s, hub, first, token)
            assert error["code"] == "token_expired"

    asyncio.run(scenario())
    # no bearer token needed for the socket, but every other consult route needs one
    assert hub.api.get(f"/api/v1/consults/{first}").status == 401


# ----- waiting room --------------------------------------------------------------------------
def test_waiting_room_admit_and_timeline(hub: Hub, case_id: int) -> None:
    consult = new_consult(hub, case_id, invite=["expert"])
    cid = consult["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, welcome = await join(s, hub, cid, "clinic")
            assert welcome["waiting"] is False and welcome["presenter"] == welcome["participant_id"]
            # the county reader may see the case but was not invited: the waiting room
            reader, waiting = await join(s, hub, cid, "reader")
            assert waiting["waiting"] is True
            assert waiting["participants"] == [] and waiting["sync"] is None
            note = await host.expect("waiting")
            assert note["participant"]["username"] == "reader"
            await reader.send(type="consent", given=True)
            assert (await reader.expect("error"))["code"] == "not_admitted"
            # an invited guest without auto-admit waits too; only the host admits
            expert, w2 = await join(s, hub, cid, "expert")
            assert w2["waiting"] is True
            await host.expect("waiting")
            await host.send(type="admit", participant_id=waiting["participant_id"])
            admitted = await reader.expect("admitted")
            assert [p["username"] for p in admitted["participants"]] == ["clinic", "reader"]
            joined = await host.expect("participant_joined")
            assert joined["participant"]["username"] == "reader"
            await reader.send(type="admit", participant_id=w2["participant_id"])
            assert (await reader.expect("error"))["code"] == "not_host"
            await host.send(type="admit", participant_id=12345678)
            assert (await host.expect("error"))["code"] == "not_waiting"
            for peer in (host, reader, expert):
                await peer.send(type="leave")
                await peer.closed()

    asyncio.run(scenario())
    events = timeline(hub, case_id, cid)
    kinds = [e["kind"] for e in events]
    assert kinds.count("consult_joined") == 2  # the expert never got in
    assert kinds.count("consult_started") == 1
    assert kinds.index("consult_started") > kinds.index("consult_joined")
    left = [e for e in events if e["kind"] == "consult_left"]
    assert len(left) == 2 and all(e["detail"]["duration_seconds"] >= 0 for e in left)
    states = {
        p["username"]: p["state"]
        for p in hub.api.get(f"/api/v1/consults/{cid}", login(hub.api, "clinic")).body[
            "participants"
        ]
    }
    assert states == {"clinic": "left", "reader": "left", "expert": "left"}


def test_auto_admit_and_too_many_participants(hub: Hub, case_id: int) -> None:
    cid = new_consult(hub, case_id, invite=["reader", "reader2", "expert"], auto_admit=True)["id"]
    other = new_consult(hub, case_id)["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            bystander, _ = await join(s, hub, other, "clinic")
            host, _ = await join(s, hub, cid, "clinic")
            one, w1 = await join(s, hub, cid, "reader")
            two, w2 = await join(s, hub, cid, "reader2")
            assert w1["waiting"] is False and w2["waiting"] is False
            assert len(w2["participants"]) == 3
            error, code = await connect_error(s, hub, cid, join_token(hub, cid, "expert"))
            assert error["code"] == "too_many_participants" and code == 4009
            for peer in (host, one, two, bystander):
                await peer.send(type="ping", t=1)
                assert (await peer.expect("pong"))["t"] == 1
            assert "participant_joined" not in bystander.types()

    asyncio.run(scenario())


# ----- bad input -----------------------------------------------------------------------------
def test_invalid_messages_get_errors_and_the_connection_stays(hub: Hub, case_id: int) -> None:
    cid = new_consult(hub, case_id, invite=["reader"], auto_admit=True)["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, hw = await join(s, hub, cid, "clinic")
            guest, gw = await join(s, hub, cid, "reader")
            cases = [
                ("{not json", "bad_json"),
                ("[1, 2]", "bad_message"),
                ('{"no": "type"}', "bad_message"),
                ('{"type": "teleport"}', "unknown_type"),
                ('{"type": "offer", "sdp": "hello"}', "invalid_sdp"),
                ('{"type": "offer"}', "invalid_sdp"),
                ('{"type": "answer", "sdp": "v=0\\r\\n", "to": 1}', "invalid_sdp"),
                ('{"type": "candidate", "candidate": {}, "to": 987654}', "unknown_participant"),
                ('{"type": "consent", "given": "maybe"}', "bad_consent"),
                ('{"type": "quality", "level": "ultra"}', "bad_quality"),
            ]
            for raw, code in cases:
                await host.ws.send_str(raw)
                error = await host.expect("error")
                assert error["code"] == code, (raw, error)
                assert error["message"]
            await host.ws.send_bytes(b"\x00\x01")
            assert (await host.expect("error"))["code"] == "bad_message"
            await host.send(type="ping", t="still here")
            assert (await host.expect("pong"))["t"] == "still here"
            assert "error" not in guest.types()
            # direct media between browsers: an offer addressed to a participant is relayed
            sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
            await host.send(type="offer", sdp=sdp, to=gw["participant_id"])
            relayed = await guest.expect("offer")
            assert relayed["sdp"] == sdp and relayed["from"] == hw["participant_id"]

    asyncio.run(scenario())


# ----- consent and recording -----------------------------------------------------------------
def test_consent_flow_drives_recording_and_is_kept(hub: Hub, case_id: int) -> None:
    cid = new_consult(hub, case_id, invite=["reader", "reader2"], auto_admit=True)["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, hw = await join(s, hub, cid, "clinic")
            guest, _ = await join(s, hub, cid, "reader")
            await host.send(type="consent", given=True)
            assert (await guest.expect("consent_requested"))["by"] == hw["participant_id"]
            state = await guest.expect("consent_state")
            assert state["recording"] is False
            await guest.send(type="consent", given=True)
            state = await until(host, "consent_state", lambda m: m["recording"])
            assert set(state["consents"].values()) == {True}
            # a third participant who has not consented stops the recording
            third, w3 = await join(s, hub, cid, "reader2")
            assert w3["recording"] is False
            await third.expect("consent_requested")
            await until(host, "consent_state", lambda m: not m["recording"])
            await third.send(type="consent", given=True)
            await until(guest, "consent_state", lambda m: m["recording"])
            # withdrawn: recording stops at once
            await guest.send(type="consent", given=False)
            await until(host, "consent_state", lambda m: not m["recording"])
            await host.send(type="ping")
            await host.expect("pong")

    asyncio.run(scenario())
    events = timeline(hub, case_id, cid)
    consents = [
        (e["detail"]["user_id"], e["detail"]["given"])
        for e in events
        if e["kind"] == "consult_consent"
    ]
    assert [given for _, given in consents] == [True, True, True, False]
    recorded = [e["detail"]["recording"] for e in events if e["kind"] == "consult_recorded"]
    assert recorded == [True, False, True, False]
    body = hub.api.get(f"/api/v1/consults/{cid}", login(hub.api, "clinic")).body
    consent = {p["username"]: p["consent"] for p in body["participants"]}
    assert consent == {"clinic": True, "reader": False, "reader2": True}
    assert body["recording"] is False


# ----- reconnect and end ---------------------------------------------------------------------
def test_reconnect_resumes_then_a_lasting_drop_leaves(hub: Hub, case_id: int) -> None:
    cid = new_consult(hub, case_id, invite=["reader"], auto_admit=True)["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, _ = await join(s, hub, cid, "clinic")
            guest, first = await join(s, hub, cid, "reader")
            await guest.ws.close()  # the link dropped: no leave
            back, again = await join(s, hub, cid, "reader")
            assert again["resumed"] is True
            assert again["participant_id"] == first["participant_id"]
            assert [p["username"] for p in again["participants"]] == ["clinic", "reader"]
            await back.send(type="ping")
            await back.expect("pong")
            assert "participant_left" not in host.types()
            await back.ws.close()
            left = await host.expect("participant_left", timeout=RECONNECT + 10)
            assert left["participant_id"] == first["participant_id"]
            assert left["duration_seconds"] >= 0

    asyncio.run(scenario())
    events = timeline(hub, case_id, cid)
    reader_joins = [
        e for e in events if e["kind"] == "consult_joined" and e["detail"]["role"] == "guest"
    ]
    assert len(reader_joins) == 1
    assert [e["kind"] for e in events].count("consult_left") == 1


def test_end_closes_the_room_and_records_the_duration(hub: Hub, case_id: int) -> None:
    cid = new_consult(hub, case_id, invite=["reader"], auto_admit=True)["id"]
    api = hub.api

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, _ = await join(s, hub, cid, "clinic")
            guest, _ = await join(s, hub, cid, "reader")
            await asyncio.sleep(0.3)
            assert api.post(f"/api/v1/consults/{cid}/end", token=login(api, "reader")).status == 403
            resp = api.post(f"/api/v1/consults/{cid}/end", token=login(api, "clinic"))
            assert resp.status == 200 and resp.body["status"] == "ended"
            for peer in (host, guest):
                assert await peer.closed() == 4010
                assert peer.types()[-1] == "ended"

    asyncio.run(scenario())
    again = api.post(f"/api/v1/consults/{cid}/end", token=login(api, "clinic"))
    assert again.status == 409 and again.body["error"] == "consult_ended"
    token = api.post(f"/api/v1/consults/{cid}/token", token=login(api, "clinic"))
    assert token.status == 409
    events = timeline(hub, case_id, cid)
    kinds = [e["kind"] for e in events]
    assert kinds.count("consult_left") == 2 and kinds[-1] == "consult_ended"
    assert events[-1]["detail"]["duration_seconds"] >= 0.3
