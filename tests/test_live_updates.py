"""Live updates over server-sent events, against a real hub: a reader's stream hears of a case
routed to its centre while a clinic of another facility hears nothing of it; one-time tickets
for EventSource; resuming with Last-Event-ID; the user's notifications."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from dicom.send import send_paths
from telehub.db import Database
from telehub.db.models import EventTicket, Notification, User
from telehub.db.types import utcnow
from tests.helpers import Api, Hub, fresh_copy
from tests.test_worklist_assignment import login, make_case, sqlite_db


@dataclass
class Event:
    id: str | None
    event: str
    data: Any


class Stream:
    """A server-sent event stream read line by line over a real HTTP connection."""

    def __init__(self, api: Api, path: str, headers: dict[str, str] | None = None) -> None:
        url = urllib.parse.urlsplit(api.base_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.seen: list[Event] = []

    @property
    def content_type(self) -> str:
        return self.response.getheader("Content-Type", "")

    def body(self) -> Any:
        return json.loads(self.response.read())

    def _next(self) -> Event | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            line = self.response.readline()
            if not line:
                return None  # the server closed the stream
            text = line.decode().rstrip("\r\n")
            if not text:
                if data or fields:
                    break
                continue
            if text.startswith(":"):
                continue  # a heartbeat comment
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
        return Event(fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data)))

    def until(self, predicate: Callable[[Event], bool], timeout: float = 30) -> Event:
        """Read until an event matches (all events read are kept in ``seen``)."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._next()
            if event is None:
                break
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event; saw {[(e.event, e.data) for e in self.seen]}")

    def close(self) -> None:
        self.conn.close()


def open_stream(api: Api, token: str, last_event_id: str | None = None) -> Stream:
    """Open the stream the way a browser does: a one-time ticket in the URL."""
    ticket = api.post("/api/v1/events/ticket", token=token)
    assert ticket.status == 200, ticket.body
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    stream = Stream(api, ticket.body["url"], headers)
    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    return stream


@pytest.fixture
def db(embedded_hub: Hub) -> Iterator[Database]:
    database = sqlite_db(embedded_hub)
    yield database
    database.dispose()


def _case_of_study(api: Api, token: str, study_uid: str) -> int:
    return api.wait_for(
        "/api/v1/cases?limit=500",
        token,
        lambda body: next(
            (c["id"] for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
    )


def _about(case_id: int) -> Callable[[Event], bool]:
    return lambda e: e.event == "case" and e.data["case_id"] == case_id


def test_reader_hears_of_a_routed_case_and_another_clinic_does_not(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    api = embedded_hub.api
    reader, clinic, other = login(api, "reader"), login(api, "clinic"), login(api, "clinic2")
    readers = open_stream(api, reader)
    sender = open_stream(api, clinic)
    # A non-browser client may use its bearer token instead of a ticket.
    outsider = Stream(api, "/api/v1/events", {"Authorization": f"Bearer {other}"})
    assert outsider.status == 200
    streams = (readers, sender, outsider)
    try:
        for stream in streams:
            hello = stream.until(lambda e: e.event == "hello")
            assert hello.id and hello.id.startswith("c")
        study = generate_uid()
        path = fresh_copy("CT_small.dcm", tmp_path / "t1", study_uid=study)
        assert send_paths([path], "127.0.0.1", embedded_hub.dicom_port, "CLINIC1").sent == 1
        case_id = _case_of_study(api, clinic, study)

        routed = readers.until(lambda e: _about(case_id)(e) and e.data["kind"] == "routed")
        assert routed.data["case"]["status"] in ("routed", "claimed")
        assert routed.data["case"]["centre_id"] is not None
        assert routed.id and routed.id.startswith("c")
        assert sender.until(lambda e: _about(case_id)(e) and e.data["kind"] == "routed")

        # The other clinic's own case comes after; nothing of the first one before it.
        marker = generate_uid()
        path = fresh_copy("CT_small.dcm", tmp_path / "t2", study_uid=marker)
        assert send_paths([path], "127.0.0.1", embedded_hub.dicom_port, "CLINIC2").sent == 1
        own = _case_of_study(api, other, marker)
        outsider.until(lambda e: _about(own)(e) and e.data["kind"] == "routed")
        assert not [e for e in outsider.seen if e.event == "case" and e.data["case_id"] == case_id]
        assert [e for e in outsider.seen if e.event == "case"]  # it did hear of its own
    finally:
        for stream in streams:
            stream.close()


def test_tickets_are_required_one_time_and_short_lived(embedded_hub: Hub, db: Database) -> None:
    api = embedded_hub.api
    reader = login(api, "reader")
    bare = Stream(api, "/api/v1/events")
    assert bare.status == 401 and bare.body()["error"] == "no_token"
    bogus = Stream(api, "/api/v1/events?ticket=not-a-ticket")
    assert bogus.status == 401 and bogus.body()["error"] == "invalid_ticket"
    assert api.post("/api/v1/events/ticket").status == 401

    issued = api.post("/api/v1/events/ticket", token=reader).body
    assert issued["expires_in"] == 60
    first = Stream(api, issued["url"])
    assert first.status == 200
    assert first.until(lambda e: e.event == "hello").data["user"] == "reader"
    first.close()
    again = Stream(api, issued["url"])  # a ticket opens one stream only
    assert again.status == 401 and again.body()["error"] == "invalid_ticket"

    late = api.post("/api/v1/events/ticket", token=reader).body
    with db.session() as session:
        session.execute(
            update(EventTicket)
            .where(EventTicket.used_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = Stream(api, late["url"])
    assert expired.status == 401 and expired.body()["error"] == "invalid_ticket"


def test_resume_with_last_event_id_and_notifications(embedded_hub: Hub, db: Database) -> None:
    api = embedded_hub.api
    reader = login(api, "reader")
    stream = open_stream(api, reader)
    mark = stream.until(lambda e: e.event == "hello").id
    stream.close()

    # While the reader is away: a case reaches the centre, is claimed, and a notification comes.
    case_id = make_case(db)
    assert api.post(f"/api/v1/cases/{case_id}/claim", token=reader).status == 200
    with db.session() as session:
        user_id = session.scalar(select(User.id).where(User.username == "reader"))
        session.add(
            Notification(
                user_id=user_id, kind="test", case_id=case_id, title="测试 Test", body="", detail={}
            )
        )

    fresh = open_stream(api, reader)  # no Last-Event-ID
    resumed = open_stream(api, reader, last_event_id=mark)
    try:
        assert resumed.until(lambda e: e.event == "hello").data["resumed"] is True
        kinds = [
            resumed.until(lambda e, k=k: _about(case_id)(e) and e.data["kind"] == k).data["kind"]
            for k in ("routed", "claimed")
        ]
        assert kinds == ["routed", "claimed"]
        note = resumed.until(lambda e: e.event == "notification" and e.data["case_id"] == case_id)
        assert note.data["title"] == "测试 Test"
        # Live again after the backfill: giving the case back is heard by both streams.
        assert api.post(f"/api/v1/cases/{case_id}/unclaim", token=reader).status == 200
        for stream in (resumed, fresh):
            stream.until(lambda e: _about(case_id)(e) and e.data["kind"] == "unclaimed")
        # A stream without Last-Event-ID carries only what follows its hello.
        start = int(fresh.until(lambda e: e.event == "hello").id[1:].split(".")[0])
        assert start >= int(mark[1:].split(".")[0])
        assert all(e.data["event_id"] > start for e in fresh.seen if e.event == "case")
        ids = [e.data["event_id"] for e in resumed.seen if _about(case_id)(e)]
        assert len(ids) == len(set(ids))  # backfill and live do not repeat each other
    finally:
        fresh.close()
        resumed.close()
