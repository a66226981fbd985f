"""HTTP security basics over real HTTP: security headers, password policy, login lockout.

Own hubs (not the shared one): the lockout tests lock usernames on purpose.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from telehub.db import Database
from telehub.db.models import AuditEntry
from tests.helpers import Hub, start_hub

LOCK_SECONDS = 2
STRONG = "Kf8-river-lamp"


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    hub: Hub,
    path: str,
    method: str = "GET",
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{hub.http_port}{path}", data=data, method=method
    )
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def login(hub: Hub, username: str, password: str) -> Answer:
    return fetch(
        hub, "/api/v1/auth/login", "POST", body={"username": username, "password": password}
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(
        tmp_path_factory.mktemp("http-security"),
        extra_env={
            "TELEHUB_TRUST_FORWARDED_PROTO": "true",
            "TELEHUB_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
            "TELEHUB_LOGIN_LOCKOUT_SECONDS": str(LOCK_SECONDS),
        },
    )
    yield started
    started.proc.stop()


@pytest.fixture(scope="module")
def admin(hub: Hub) -> str:
    return login(hub, "admin", "demo").json()["token"]


def new_user(hub: Hub, admin: str, username: str, password: str) -> Answer:
    return fetch(
        hub,
        "/api/v1/consortium/users",
        "POST",
        admin,
        {"username": username, "role": "clinic", "facility": "T1", "password": password},
    )


# ----- headers ---------------------------------------------------------------------------------
def assert_basic_headers(answer: Answer) -> None:
    h = answer.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    csp = h["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_json_answers_carry_headers_and_no_store(hub: Hub, admin: str) -> None:
    answer = fetch(hub, "/api/v1/consortium/users", token=admin)
    assert answer.status == 200
    assert_basic_headers(answer)
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in answer.headers  # plain HTTP


def test_static_files_and_page_carry_headers(hub: Hub) -> None:
    for path in ("/", "/static/js/main.js", "/static/style.css"):
        answer = fetch(hub, path)
        assert answer.status == 200, path
        assert_basic_headers(answer)
    # The CSP allows no inline code: the page must not need any.
    page = fetch(hub, "/").body.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script in index.html"
    assert "<style" not in page and " style=" not in page and "javascript:" not in page


def test_error_answers_carry_headers(hub: Hub, admin: str) -> None:
    unauthenticated = fetch(hub, "/api/v1/consortium/users")
    assert unauthenticated.status == 401
    assert_basic_headers(unauthenticated)
    assert unauthenticated.headers["Cache-Control"] == "no-store"
    missing = fetch(hub, "/no/such/page", token=admin)
    assert missing.status == 404
    assert_basic_headers(missing)
    assert fetch(hub, "/static/no-such-file.js").status == 404
    assert_basic_headers(fetch(hub, "/static/no-such-file.js"))


def test_hsts_only_over_https_from_a_trusted_proxy(hub: Hub, admin: str) -> None:
    https = fetch(hub, "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert https.status == 200
    assert https.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    plain = fetch(hub, "/healthz", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers
    assert "Strict-Transport-Security" not in fetch(hub, "/healthz").headers


def last_worklist_audit_address(hub: Hub) -> str:
    db = sqlite3.connect(f"file:{hub.data / 'telehub.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT remote FROM audit_log WHERE resource_type = 'worklist' ORDER BY id DESC"
        ).fetchone()
    finally:
        db.close()
    return row[0]


def test_audit_records_the_client_behind_a_trusted_proxy(hub: Hub) -> None:
    reader = login(hub, "reader", "demo").json()["token"]
    # The client wrote the first entry itself; our proxies (127.0.0.1, 10.0.0.0/8) the rest.
    chain = {"X-Forwarded-For": "203.0.113.66, 198.51.100.7, 10.1.2.3"}
    assert fetch(hub, "/api/v1/worklist", token=reader, headers=chain).status == 200
    assert last_worklist_audit_address(hub) == "198.51.100.7"
    assert fetch(hub, "/api/v1/worklist", token=reader).status == 200
    assert last_worklist_audit_address(hub) == "127.0.0.1"


def test_forwarded_headers_ignored_unless_trusted(tmp_path: Path) -> None:
    untrusting = start_hub(tmp_path, name="untrusting")
    try:
        answer = fetch(untrusting, "/healthz", headers={"X-Forwarded-Proto": "https"})
        assert answer.status == 200
        assert_basic_headers(answer)
        assert "Strict-Transport-Security" not in answer.headers
        reader = login(untrusting, "reader", "demo").json()["token"]
        spoofed = {"X-Forwarded-For": "198.51.100.7"}
        assert fetch(untrusting, "/api/v1/worklist", token=reader, headers=spoofed).status == 200
        assert last_worklist_audit_address(untrusting) == "127.0.0.1"
    finally:
        untrusting.proc.stop()


# ----- password policy -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("Ab3-xyz", "at least 10 characters"),
        ("abcdefghijkl", "two kinds of characters"),
        ("aaaaaaaaaaaa", "repeat one or two characters"),
        ("policyuser1", "may not be the username"),
        ("Password123!", "most common passwords"),
        ("lanzhou-clinic7", None),  # acceptable: long, letters and a digit, not on the list
    ],
)
def test_weak_passwords_are_refused_by_the_admin_api(
    hub: Hub, admin: str, password: str, words: str | None
) -> None:
    username = "policyuser1" if words else f"policyok{len(password)}"
    answer = new_user(hub, admin, username, password)
    if words is None:
        assert answer.status == 201, answer.body
        assert login(hub, username, password).status == 200
        return
    assert answer.status == 400, answer.body
    error = answer.json()
    assert error["error"] == "weak_password" and words in error["message"]
    if password != username:
        assert password not in error["message"]  # the message never echoes a password
    users = fetch(hub, "/api/v1/consortium/users", token=admin).json()["users"]
    names = [u["username"] for u in users]
    assert "policyuser1" not in names


def test_a_password_reset_obeys_the_policy(hub: Hub, admin: str) -> None:
    made = new_user(hub, admin, "resetuser", STRONG)
    assert made.status == 201, made.body
    path = f"/api/v1/consortium/users/{made.json()['id']}"
    weak = fetch(hub, path, "PATCH", admin, {"password": "short"})
    assert weak.status == 400 and weak.json()["error"] == "weak_password"
    assert login(hub, "resetuser", STRONG).status == 200  # unchanged
    whole = fetch(
        hub,
        "/api/v1/consortium",
        "POST",
        admin,
        {"users": [{"username": "fileuser", "role": "clinic", "facility": "T1", "password": "x"}]},
    )
    assert whole.status == 400 and whole.json()["error"] == "weak_password"


# ----- lockout ---------------------------------------------------------------------------------
def test_lockout_after_five_failures(hub: Hub, admin: str) -> None:
    assert new_user(hub, admin, "lockme", STRONG).status == 201
    for _ in range(5):
        failed = login(hub, "lockme", "wrong-guess-1")
        assert failed.status == 401 and failed.json()["error"] == "invalid_credentials"
    locked = login(hub, "lockme", STRONG)  # the right password does not help now
    assert locked.status == 429, locked.body
    assert locked.json()["error"] == "account_locked"
    assert 1 <= int(locked.headers["Retry-After"]) <= LOCK_SECONDS
    assert_basic_headers(locked)
    # Other accounts are not affected.
    assert login(hub, "reader", "demo").status == 200
    time.sleep(LOCK_SECONDS + 0.5)
    assert login(hub, "lockme", STRONG).status == 200
    # Success resets the count: four more failures do not lock.
    for _ in range(4):
        assert login(hub, "lockme", "wrong-guess-2").status == 401
    assert login(hub, "lockme", STRONG).status == 200

    db = Database(f"sqlite:///{hub.data / 'telehub.sqlite3'}")
    try:
        with db.reader() as session:
            rows = session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "lock", AuditEntry.resource_id == "lockme"
                )
            ).all()
            assert len(rows) == 1 and rows[0].user_id is not None
            assert rows[0].detail["failures"] == 5
    finally:
        db.dispose()
    log = hub.proc.output()
    assert "login locked for username 'lockme'" in log
    assert "wrong-guess-1" not in log and STRONG not in log


def test_unknown_usernames_lock_the_same_way(hub: Hub) -> None:
    answers = [login(hub, "nobody-here", "wrong-guess-3") for _ in range(5)]
    assert [a.status for a in answers] == [401] * 5
    assert {a.json()["error"] for a in answers} == {"invalid_credentials"}
    locked = login(hub, "nobody-here", "anything")
    assert locked.status == 429 and locked.json()["error"] == "account_locked"
    assert "Retry-After" in locked.headers
