"""Outgoing webhooks end to end: a real hub, its real Celery worker, and a real HTTP receiver on
loopback that answers like the WeCom and DingTalk robots (checking DingTalk's signature the way
DingTalk does), like a signed generic endpoint, and like a broken one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp import web
from sqlalchemy import select

from dicom.send import send_paths
from telehub import timeline
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Study
from tests.helpers import Api, Hub, free_port, fresh_copy, start_hub

JSON_SECRET = "json-hmac-key"
DING_SECRET = "SECdingtalk-test-secret"


# ----- the receiver ----------------------------------------------------------------------------
@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp server in a thread of the test process; records every request."""

    port: int
    requests: list[Received] = field(default_factory=list)
    #: path -> how many more requests answer 500 before it answers like its kind
    failures_left: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} requests, expected {count}")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.requests.append(
                Received(request.path, dict(request.query), dict(request.headers), body)
            )
            left = self.failures_left.get(request.path, 0)
            if left:
                self.failures_left[request.path] = left - 1
        if left:
            return web.Response(status=500, text="receiver is down")
        kind = request.path.split("/")[1]
        if kind == "json":
            expected = "sha256=" + hmac.new(JSON_SECRET.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(request.headers.get("X-Telehub-Signature", ""), expected)
            return web.Response(status=204 if ok else 401)
        if kind == "wecom":
            return web.json_response({"errcode": 0, "errmsg": "ok"})
        if kind == "wecom-refuses":
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        if kind == "dingtalk":
            return web.json_response(dingtalk_check(request.query))
        if kind == "plain":
            return web.json_response({"ok": True})
        return web.Response(status=404)


def dingtalk_check(query: Any) -> dict[str, Any]:
    """What DingTalk's robot does with ``timestamp`` and ``sign``: recompute, compare, and
    refuse a timestamp more than an hour off (errcode 310000 is its "sign not match")."""
    try:
        ts = int(query["timestamp"])
    except (KeyError, ValueError):
        return {"errcode": 310000, "errmsg": "missing timestamp"}
    if abs(time.time() * 1000 - ts) > 3600_000:
        return {"errcode": 310000, "errmsg": "timestamp too old"}
    digest = hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256)
    expected = base64.b64encode(digest.digest()).decode()
    if not hmac.compare_digest(query.get("sign", ""), expected):  # query is URL-decoded
        return {"errcode": 310000, "errmsg": "sign not match"}
    return {"errcode": 0, "errmsg": "ok"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    port = free_port()
    rec = Receiver(port)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def serve() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", rec.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    yield rec
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub whose deliveries retry quickly: 0.2 s, 0.4 s, then failed after 3 attempts."""
    hub = start_hub(
        tmp_path_factory.mktemp("webhooks"),
        extra_env={
            "TELEHUB_WEBHOOK_BACKOFF_SECONDS": "0.2",
            "TELEHUB_WEBHOOK_MAX_ATTEMPTS": "3",
        },
    )
    yield hub
    hub.proc.stop()


@pytest.fixture(scope="module")
def admin(hub: Hub) -> str:
    return hub.api.login("admin")


# ----- helpers the notification tests share ----------------------------------------------------
def hub_db(hub: Hub) -> Database:
    return Database(f"sqlite:///{hub.data.resolve() / 'telehub.sqlite3'}")


def send_case(hub: Hub, folder: Path, aet: str = "CLINIC1", **changes: Any) -> int:
    """Send a CT study as a township clinic and wait until it is routed; returns the case id."""
    path = fresh_copy("CT_small.dcm", folder, **changes)
    study_uid = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", hub.dicom_port, aet).sent == 1
    db = hub_db(hub)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.reader() as session:
                case = session.scalar(
                    select(Case)
                    .join(Study, Study.case_id == Case.id)
                    .where(Study.study_uid == study_uid)
                )
                if case is not None and case.status == CaseStatus.ROUTED.value:
                    return case.id
            time.sleep(0.1)
    finally:
        db.dispose()
    raise AssertionError(f"study {study_uid} was not routed")


def record_event(
    hub: Hub, case_id: int, kind: str, change: dict[str, Any] | None = None, **detail: Any
) -> None:
    """Record a timeline event in the hub's own database, as a service of the hub would
    (timeline.record runs notifications.on_event in the same transaction)."""
    db = hub_db(hub)
    try:
        with db.session() as session:
            case = session.get_one(Case, case_id)
            for key, value in (change or {}).items():
                setattr(case, key, value)
            timeline.record(session, case_id, kind, **detail)
    finally:
        db.dispose()


def make_stat(hub: Hub, case_id: int) -> None:
    record_event(
        hub,
        case_id,
        timeline.Event.PRIORITY_CHANGED,
        change={"priority": "stat", "priority_rank": 0},
        to="stat",
        **{"from": "routine"},
    )


def add_webhook(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    resp = api.post("/api/v1/webhooks", {"name": f"hook-{uuid.uuid4().hex[:8]}", **fields}, token)
    assert resp.status == 201, resp.body
    return resp.body


def deactivate(api: Api, token: str, *hooks: dict[str, Any]) -> None:
    for hook in hooks:
        resp = api.request("PATCH", f"/api/v1/webhooks/{hook['id']}", token, {"active": False})
        assert resp.status == 200, resp.body


def deliveries(api: Api, token: str, hook: dict[str, Any], status: str = "") -> list[dict]:
    query = f"?webhook_id={hook['id']}" + (f"&status={status}" if status else "")
    resp = api.get(f"/api/v1/webhooks/deliveries{query}", token)
    assert resp.status == 200, resp.body
    return resp.body["deliveries"]


def wait_delivery(api: Api, token: str, hook: dict[str, Any], status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = deliveries(api, token, hook, status)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {status} delivery for {hook}: {deliveries(api, token, hook)}")


# ----- tests -----------------------------------------------------------------------------------
def test_webhooks_are_admin_only_and_validated(hub: Hub, admin: str, receiver: Receiver) -> None:
    api = hub.api
    reader = api.login("reader")
    assert api.get("/api/v1/webhooks", reader).status == 403
    assert api.get("/api/v1/webhooks/deliveries", reader).status == 403
    refused = api.post(
        "/api/v1/webhooks", {"name": "x", "kind": "json", "url": "http://a/"}, reader
    )
    assert refused.status == 403 and refused.body["error"] == "admin_only"

    for bad, code in (
        ({"kind": "json", "url": "ftp://example.org/hook"}, "bad_url"),
        ({"kind": "json", "url": "file:///etc/passwd"}, "bad_url"),
        ({"kind": "json", "url": "/relative"}, "bad_url"),
        ({"kind": "slack", "url": "http://example.org/"}, "bad_webhook"),
        ({"kind": "json", "url": "http://example.org/", "events": ["nope"]}, "unknown_event"),
        ({"kind": "json", "url": "http://example.org/", "facility_id": 999999}, "unknown_facility"),
        ({"kind": "json"}, "bad_webhook"),
    ):
        resp = api.post("/api/v1/webhooks", {"name": f"bad-{uuid.uuid4().hex[:6]}", **bad}, admin)
        assert resp.status == 400 and resp.body["error"] == code, (bad, resp.body)

    hook = add_webhook(
        api,
        admin,
        kind="wecom",
        url=receiver.url("/wecom/admin?key=robot-key-123"),
        secret="s3cret",
    )
    assert hook["secret"] == "set" and "s3cret" not in json.dumps(hook)
    assert "robot-key-123" not in hook["url"] and hook["url"].endswith("?key=***")
    listed = api.get("/api/v1/webhooks", admin).body["webhooks"]
    assert "s3cret" not in json.dumps(listed) and "robot-key-123" not in json.dumps(listed)
    again = api.post(
        "/api/v1/webhooks",
        {"name": hook["name"], "kind": "json", "url": "http://example.org/"},
        admin,
    )
    assert again.status == 409 and again.body["error"] == "webhook_exists"
    cleared = api.request("PATCH", f"/api/v1/webhooks/{hook['id']}", admin, {"secret": ""})
    assert cleared.status == 200 and cleared.body["secret"] == "unset"
    assert api.request("DELETE", f"/api/v1/webhooks/{hook['id']}", admin).status == 200
    assert api.get(f"/api/v1/webhooks/{hook['id']}", admin).status == 404


def test_stat_case_reaches_json_wecom_and_dingtalk(
    hub: Hub, admin: str, receiver: Receiver, tmp_path: Path
) -> None:
    api = hub.api
    hooks = [
        add_webhook(api, admin, kind="json", url=receiver.url("/json/stat"), secret=JSON_SECRET),
        add_webhook(api, admin, kind="wecom", url=receiver.url("/wecom/stat?key=k1")),
        add_webhook(
            api,
            admin,
            kind="dingtalk",
            url=receiver.url("/dingtalk/stat?access_token=t1"),
            secret=DING_SECRET,
        ),
        # allowed to carry the patient's name, and only report_signed
        add_webhook(
            api,
            admin,
            kind="json",
            url=receiver.url("/json/named"),
            secret=JSON_SECRET,
            include_patient_name=True,
            events=["report_signed"],
        ),
    ]
    try:
        patient_id = f"PID-{uuid.uuid4().hex[:8]}"
        case_id = send_case(hub, tmp_path, PatientName="Leaky^Name", PatientID=patient_id)
        make_stat(hub, case_id)
        for hook in hooks[:3]:
            assert wait_delivery(api, admin, hook, "delivered")["attempts"] == 1
        (plain,) = receiver.wait("/json/stat", 1)
        (wecom,) = receiver.wait("/wecom/stat", 1)
        (ding,) = receiver.wait("/dingtalk/stat", 1)

        body = plain.json
        assert body["event"] == "stat_case" and body["case_id"] == case_id
        assert body["priority"] == "stat" and body["modality"] == "CT"
        assert "Chengguan" in body["facility"] and "County Imaging" in body["centre"]
        assert body["title"] == "新的急诊病例 New STAT case" and body["at"]
        assert plain.headers["X-Telehub-Event"] == "stat_case"

        assert wecom.json["msgtype"] == "markdown"
        assert "New STAT case" in wecom.json["markdown"]["content"]
        assert wecom.query == {"key": "k1"}

        assert ding.json["msgtype"] == "markdown"
        assert ding.json["markdown"]["title"] == "新的急诊病例 New STAT case"
        assert f"#{case_id}" in ding.json["markdown"]["text"]
        assert ding.query["access_token"] == "t1" and ding.query["sign"]  # checked by receiver

        for got in (plain, wecom, ding):
            assert b"Leaky" not in got.body and patient_id.encode() not in got.body
        assert deliveries(api, admin, hooks[3]) == []  # not subscribed to stat_case

        # The final report (as the reports service records it): the name goes only where the
        # admin allowed it, never the ID.
        record_event(hub, case_id, timeline.Event.REPORT_FINAL, version=1)
        (named,) = receiver.wait("/json/named", 1)
        assert named.json["event"] == "report_signed" and named.json["patient_name"] == "Leaky Name"
        assert patient_id.encode() not in named.body
        signed_plain = [r for r in receiver.wait("/json/stat", 2) if r.json["event"] != "stat_case"]
        assert signed_plain[0].json["event"] == "report_signed"
        assert "patient_name" not in signed_plain[0].json and b"Leaky" not in signed_plain[0].body
    finally:
        deactivate(api, admin, *hooks)


def test_payload_is_kept_as_built_at_the_event(
    hub: Hub, admin: str, receiver: Receiver, tmp_path: Path
) -> None:
    """A delivery sends what the event said, even if the webhook changes before it is sent."""
    api = hub.api
    receiver.failures_left["/json/kept"] = 1  # first attempt fails, the retry succeeds
    hook = add_webhook(api, admin, kind="json", url=receiver.url("/json/kept"), secret=JSON_SECRET)
    try:
        case_id = send_case(hub, tmp_path, PatientName="Kept^Secret")
        make_stat(hub, case_id)
        receiver.wait("/json/kept", 1)
        api.request(
            "PATCH", f"/api/v1/webhooks/{hook['id']}", admin, {"include_patient_name": True}
        )
        delivered = wait_delivery(api, admin, hook, "delivered")
        assert delivered["attempts"] == 2
        first, second = receiver.wait("/json/kept", 2)
        assert first.body == second.body and b"Kept" not in second.body
    finally:
        deactivate(api, admin, hook)


def test_flaky_receiver_is_retried_until_delivered(
    hub: Hub, admin: str, receiver: Receiver, tmp_path: Path
) -> None:
    api = hub.api
    receiver.failures_left["/wecom/flaky"] = 2
    hook = add_webhook(api, admin, kind="wecom", url=receiver.url("/wecom/flaky?key=f"))
    try:
        case_id = send_case(hub, tmp_path)
        make_stat(hub, case_id)
        delivered = wait_delivery(api, admin, hook, "delivered")
        assert delivered["attempts"] == 3 and delivered["case_id"] == case_id
        assert delivered["last_error"] == ""
        assert len(receiver.wait("/wecom/flaky", 3)) == 3
        time.sleep(1.0)  # a delivered message is not sent again
        assert len(receiver.at("/wecom/flaky")) == 3
    finally:
        deactivate(api, admin, hook)


def test_always_failing_delivery_is_failed_visible_and_retryable(
    hub: Hub, admin: str, receiver: Receiver, tmp_path: Path
) -> None:
    api = hub.api
    receiver.failures_left["/json/down"] = 10**6
    down = add_webhook(api, admin, kind="json", url=receiver.url("/json/down"), secret=JSON_SECRET)
    refuses = add_webhook(api, admin, kind="wecom", url=receiver.url("/wecom-refuses/x?key=bad"))
    # A robot answering 200 with a non-zero errcode (or anything not JSON) has failed too.
    plain = add_webhook(api, admin, kind="dingtalk", url=receiver.url("/plain/x"))
    try:
        case_id = send_case(hub, tmp_path)
        make_stat(hub, case_id)
        failed = wait_delivery(api, admin, down, "failed")
        assert failed["attempts"] == 3 and failed["last_error"].startswith("HTTP 500")
        assert failed["payload"]["case_id"] == case_id
        assert len(receiver.at("/json/down")) == 3
        assert "93000" in wait_delivery(api, admin, refuses, "failed")["last_error"]
        assert "robot refused" in wait_delivery(api, admin, plain, "failed")["last_error"]

        listed = api.get("/api/v1/webhooks/deliveries?status=failed", admin).body["deliveries"]
        assert failed["id"] in {d["id"] for d in listed}
        assert all(d["status"] == "failed" for d in listed)
        assert api.get("/api/v1/webhooks/deliveries?status=bogus", admin).status == 400

        # The receiver is mended; the admin sends the failed message again.
        receiver.failures_left["/json/down"] = 0
        retried = api.post(f"/api/v1/webhooks/deliveries/{failed['id']}/retry", {}, admin)
        assert retried.status == 200 and retried.body["status"] == "pending"
        assert wait_delivery(api, admin, down, "delivered")["id"] == failed["id"]
        again = api.post(f"/api/v1/webhooks/deliveries/{failed['id']}/retry", {}, admin)
        assert again.status == 409 and again.body["error"] == "not_failed"
        assert api.post("/api/v1/webhooks/deliveries/999999/retry", {}, admin).status == 404
        reader = api.login("reader")
        assert (
            api.post(f"/api/v1/webhooks/deliveries/{failed['id']}/retry", {}, reader).status == 403
        )
    finally:
        deactivate(api, admin, down, refuses, plain)


def test_facility_scope_and_event_filter(
    hub: Hub, admin: str, receiver: Receiver, tmp_path: Path
) -> None:
    api = hub.api
    ids = _facility_ids(hub)
    t1 = add_webhook(
        api, admin, kind="wecom", url=receiver.url("/wecom/t1?key=a"), facility_id=ids["T1"]
    )
    t2 = add_webhook(
        api, admin, kind="wecom", url=receiver.url("/wecom/t2?key=b"), facility_id=ids["T2"]
    )
    county = add_webhook(
        api, admin, kind="wecom", url=receiver.url("/wecom/ch?key=c"), facility_id=ids["CH"]
    )
    sla_only = add_webhook(
        api, admin, kind="wecom", url=receiver.url("/wecom/sla?key=d"), events=["sla_breached"]
    )
    try:
        case_id = send_case(hub, tmp_path)  # from T1, read at the county (CH)
        make_stat(hub, case_id)
        record_event(hub, case_id, timeline.Event.SLA_BREACHED)
        assert wait_delivery(api, admin, t1, "delivered")["case_id"] == case_id
        assert wait_delivery(api, admin, county, "delivered")["case_id"] == case_id
        sla = wait_delivery(api, admin, sla_only, "delivered")
        assert sla["kind"] == "sla_breached"
        assert {d["kind"] for d in deliveries(api, admin, sla_only)} == {"sla_breached"}
        assert {d["kind"] for d in deliveries(api, admin, t1)} == {"stat_case", "sla_breached"}
        assert deliveries(api, admin, t2) == [] and receiver.at("/wecom/t2") == []
    finally:
        deactivate(api, admin, t1, t2, county, sla_only)


def test_test_message_answers_how_it_went(hub: Hub, admin: str, receiver: Receiver) -> None:
    api = hub.api
    ding = add_webhook(
        api,
        admin,
        kind="dingtalk",
        url=receiver.url("/dingtalk/test?access_token=x"),
        secret=DING_SECRET,
    )
    wrong = add_webhook(
        api,
        admin,
        kind="dingtalk",
        url=receiver.url("/dingtalk/wrong"),
        secret="SECnot-the-robot-secret",
    )
    try:
        ok = api.post(f"/api/v1/webhooks/{ding['id']}/test", {}, admin)
        assert ok.status == 200 and ok.body["status"] == "delivered", ok.body
        assert ok.body["kind"] == "test" and ok.body["attempts"] == 1
        (got,) = receiver.wait("/dingtalk/test", 1)
        assert "Test message" in got.json["markdown"]["title"]
        bad = api.post(f"/api/v1/webhooks/{wrong['id']}/test", {}, admin)
        assert bad.status == 200 and bad.body["status"] == "failed"
        assert "sign not match" in bad.body["last_error"]
        assert api.post("/api/v1/webhooks/999999/test", {}, admin).status == 404
        assert (
            api.post(f"/api/v1/webhooks/{ding['id']}/test", {}, api.login("clinic")).status == 403
        )
    finally:
        deactivate(api, admin, ding, wrong)


def _facility_ids(hub: Hub) -> dict[str, int]:
    from telehub.db.models import Facility

    db = hub_db(hub)
    try:
        with db.reader() as session:
            return {f.code: f.id for f in session.scalars(select(Facility))}
    finally:
        db.dispose()
