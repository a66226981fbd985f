"""The audit trail over real HTTP (issue 8): a reader's work on a case, sent by C-STORE as a
township clinic, shows up for an administrator with who, what, when and from where; nobody
else may read the trail; each filter narrows it; paging walks it newest first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from telehub import audit, audit_query
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import User
from telehub.errors import Forbidden
from tests.helpers import Api, Hub
from tests.test_tat_analytics import read_case, routed_cases, send_studies


@pytest.fixture(scope="module")
def read_by_reader(embedded_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One fresh CT case, claimed, opened and signed final by ``reader``."""
    api = embedded_hub.api
    reader = api.login("reader")
    pid = f"AUD-{uuid.uuid4().hex[:8]}"
    uids = send_studies(embedded_hub, tmp_path_factory.mktemp("audit"), "CLINIC1", [pid])
    (case_id,) = routed_cases(api, reader, uids)
    read_case(api, reader, case_id, prelim=False, final=True)
    return {"case_id": case_id, "patient": pid}


def _entries(api: Api, token: str, query: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/audit?{query}", token)
    assert resp.status == 200, resp.body
    return resp.body["entries"]


def test_admin_sees_who_read_the_case_when_and_from_where(
    embedded_hub: Hub, read_by_reader: dict[str, Any]
) -> None:
    api, case_id = embedded_hub.api, read_by_reader["case_id"]
    admin = api.login("admin")
    entries = _entries(api, admin, f"case={case_id}")
    got = {(e["user"]["username"], e["action"], e["resource_type"]) for e in entries}
    assert {
        ("reader", "claim", "case"),
        ("reader", "read", "case"),
        ("reader", "write", "report"),
    } <= got, got
    read = next(e for e in entries if e["action"] == "read" and e["resource_type"] == "case")
    assert read["resource_id"] == str(case_id)
    assert read["user"]["role"] == "reader"
    assert read["remote"] == "127.0.0.1"
    at = datetime.fromisoformat(read["at"])
    assert timedelta(0) <= datetime.now(UTC) - at < timedelta(hours=1)
    # newest first
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    # every entry is about this case
    assert all(e["resource_id"] == str(case_id) for e in entries)


@pytest.mark.parametrize("who", ["clinic", "reader", "ecgexpert"])
def test_only_administrators_read_the_trail(embedded_hub: Hub, who: str) -> None:
    api = embedded_hub.api
    resp = api.get("/api/v1/audit", api.login(who))
    assert resp.status == 403, resp.body
    assert resp.body["error"] == "not_an_admin"
    assert api.get("/api/v1/audit").status == 401


def test_filters_narrow_the_trail(embedded_hub: Hub, read_by_reader: dict[str, Any]) -> None:
    api, case_id = embedded_hub.api, read_by_reader["case_id"]
    admin = api.login("admin")

    claims = _entries(api, admin, "user=reader&action=claim&limit=500")
    assert claims and all(
        e["user"]["username"] == "reader" and e["action"] == "claim" for e in claims
    )
    assert str(case_id) in {e["resource_id"] for e in claims}
    reader_id = claims[0]["user"]["id"]
    assert [e["id"] for e in _entries(api, admin, f"user={reader_id}&action=claim&limit=500")] == [
        e["id"] for e in claims
    ]

    by_patient = _entries(api, admin, f"patient={read_by_reader['patient']}")
    assert {e["id"] for e in by_patient} == {
        e["id"] for e in _entries(api, admin, f"case={case_id}")
    }
    assert _entries(api, admin, "patient=NO-SUCH-PATIENT") == []

    report = _entries(api, admin, f"resource_type=report&resource_id={case_id}")
    assert report and {e["resource_type"] for e in report} == {"report"}

    assert _entries(api, admin, f"case={case_id}&remote=127.0.") != []
    assert _entries(api, admin, f"case={case_id}&remote=10.9.") == []

    today = datetime.now(UTC).date()
    assert _entries(api, admin, f"case={case_id}&from={today - timedelta(days=1)}") != []
    later = today + timedelta(days=2)
    assert _entries(api, admin, f"case={case_id}&from={later}") == []
    assert _entries(api, admin, f"case={case_id}&to={today - timedelta(days=2)}") == []


def test_paging_walks_newest_first_without_gaps(embedded_hub: Hub, read_by_reader: Any) -> None:
    api = embedded_hub.api
    admin = api.login("admin")
    everything = _entries(api, admin, "user=reader&limit=500")
    assert len(everything) >= 3
    seen: list[int] = []
    query = "user=reader&limit=2"
    while True:
        resp = api.get(f"/api/v1/audit?{query}", admin)
        assert resp.status == 200, resp.body
        seen += [e["id"] for e in resp.body["entries"]]
        if resp.body["next_before"] is None:
            break
        query = f"user=reader&limit=2&before={resp.body['next_before']}"
    # (the reader did nothing meanwhile, so both walks see the same rows)
    assert seen == [e["id"] for e in everything]
    by_offset = _entries(api, admin, "user=reader&limit=2&offset=2")
    assert [e["id"] for e in by_offset] == seen[2:4]


def test_reading_the_trail_is_audited(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    admin = api.login("admin")
    marker = f"10.{uuid.uuid4().int % 200}.0."
    _entries(api, admin, f"remote={marker}")
    reads = _entries(api, admin, "user=admin&action=read&resource_type=audit&limit=50")
    assert any(e["detail"]["filters"].get("remote") == marker for e in reads), reads[:3]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=x",
        "case=abc",
        "from=yesterday",
        "from=2024-02-02&to=2024-01-01",
        "resource_id=3",
        "tz=Mars/Base",
    ],
)
def test_bad_filters_are_refused_clearly(embedded_hub: Hub, query: str) -> None:
    api = embedded_hub.api
    resp = api.get(f"/api/v1/audit?{query}", api.login("admin"))
    assert resp.status == 400, (query, resp.body)
    assert resp.body["error"] in {"bad_parameter", "bad_period"}
    assert resp.body["message"]


def test_the_same_query_on_sqlite_and_postgresql(db: Database) -> None:
    """The filters' SQL (LIKE with escapes, the user join, keyset paging) on both databases."""
    with db.reader() as session:
        users = {u.username: u.id for u in session.scalars(select(User))}
    with db.session() as session:
        audit.record(session, users["reader"], "read", "case", 41, remote="10.1_2.3")
        audit.record(session, users["reader"], "read", "report", 41, remote="10.112.3")
        audit.record(session, users["reader2"], "claim", "case", 42, remote="10.1%.9")
        audit.record(session, None, "route", "case", 42, remote="")
    admin = Principal(users["admin"], "admin", "admin", 1, None)

    def ids(**params: str) -> list[tuple[str, str]]:
        body = audit_query.search(db, admin, audit_query.parse(params), "test")
        return [(e["action"], e["resource_type"] + e["resource_id"]) for e in body["entries"]]

    assert ids(case="41") == [("read", "report41"), ("read", "case41")]
    assert ids(remote="10.1_") == [("read", "case41")]  # "_" is no wildcard
    assert ids(remote="10.1%") == [("claim", "case42")]
    assert ids(user="reader2") == [("claim", "case42")]
    assert ids(user=str(users["reader"]), resource_type="case") == [("read", "case41")]
    assert ids(case="42", action="route") == [("route", "case42")]
    page = audit_query.search(db, admin, audit_query.parse({"case": "41", "limit": "1"}), "t")
    assert page["next_before"] == page["entries"][0]["id"]
    rest = ids(case="41", before=str(page["next_before"]))
    assert rest == [("read", "case41")]
    assert ids(case="41", to="2000-01-01") == []
    with pytest.raises(Forbidden):
        audit_query.search(
            db, Principal(users["reader"], "reader", "reader", 2, 3), audit_query.parse({}), "t"
        )
