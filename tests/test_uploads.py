"""Resumable HTTP uploads and ``telehub send --http``, against a real hub process: real HTTP on
loopback, a real TCP proxy that cuts the link, the real STOW-RS processing behind it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicom.send_http import send_http
from telehub.uploads import DEFAULT_MAX_BYTES
from tests.helpers import Hub, fresh_copy

MULTIPART = 'multipart/related; type="application/dicom"; boundary=b0und4ry'
CHUNK = "application/offset+octet-stream"


# ----- a raw HTTP client that can send tus headers -----------------------------------------
def call(
    hub: Hub,
    method: str,
    path: str,
    token: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    url = path if path.startswith("http") else hub.api.base_url + path
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, head, data = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, head, data = exc.code, dict(exc.headers), exc.read()
    parsed = json.loads(data) if data and "json" in head.get("Content-Type", "") else data
    return status, head, parsed


def open_upload(hub: Hub, token: str, body: bytes, **extra: Any) -> str:
    request = {"size": len(body), "content_type": MULTIPART, **extra}
    status, head, answer = call(
        hub,
        "POST",
        "/api/v1/uploads",
        token,
        json.dumps(request).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, answer
    assert head["Location"] == answer["url"] and answer["offset"] == 0
    return answer["url"]


def patch(hub: Hub, url: str, token: str, offset: int, data: bytes) -> tuple[int, dict, Any]:
    headers = {"Content-Type": CHUNK, "Upload-Offset": str(offset), "Tus-Resumable": "1.0.0"}
    return call(hub, "PATCH", url, token, data, headers)


def stow_body(*files: Path) -> bytes:
    parts = [
        b"--b0und4ry\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n"
        for f in files
    ]
    return b"".join(parts) + b"--b0und4ry--\r\n"


@pytest.fixture(scope="module")
def tokens(embedded_hub: Hub) -> dict[str, str]:
    return {u: embedded_hub.api.login(u) for u in ("clinic", "clinic2", "reader")}


# ----- a link that drops ---------------------------------------------------------------------
class CuttingProxy:
    """A TCP proxy to the hub that resets its first ``cuts`` connections once ``after`` bytes
    went upstream: the socket-level fault of a weak rural link, not a mock."""

    def __init__(self, target_port: int, after: int, cuts: int) -> None:
        self.target_port, self.after, self.left = target_port, after, cuts
        self.cut = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                limit = self.after if self.left > 0 else None
                self.left -= 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        moved = 0
        try:
            while data := src.recv(65536):
                if limit is not None and moved + len(data) > limit:
                    dst.sendall(data[: limit - moved])
                    with self.lock:
                        self.cut += 1
                    for s in (src, dst):  # reset both ways, as a dropped link does
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv
                        s.close()
                    return
                dst.sendall(data)
                moved += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def study_folder(folder: Path, *names: str) -> tuple[str, list[Path]]:
    study = generate_uid()
    return study, [fresh_copy(name, folder, study_uid=study) for name in names]


def cases_of(hub: Hub, token: str, study: str) -> list[dict[str, Any]]:
    cases = hub.api.get("/api/v1/cases?limit=500", token).body["cases"]
    return [c for c in cases if study in c["study_instance_uids"]]


# ----- the client and the CLI ----------------------------------------------------------------
def telehub_send(hub: Hub, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "telehub",
            "send",
            "--quiet",
            "--http",
            hub.api.base_url,
            "--user",
            "clinic",
            "--journal",
            str(tmp / "journal.sqlite3"),
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TELEHUB_PASSWORD": "demo"},
        timeout=120,
    )


def test_send_uploads_a_folder_in_batches_and_a_rerun_skips_it(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    study, files = study_folder(
        folder, "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"
    )
    # Batches of ~40 kB and chunks of ~16 kB: several sessions, several chunks each.
    done = telehub_send(
        embedded_hub, tmp_path, "--batch-mb", "0.04", "--chunk-mb", "0.016", str(folder)
    )
    assert done.returncode == 0, done.stderr
    assert "accepted 4 instance(s), already on the hub 0, refused 0" in done.stdout

    found = embedded_hub.api.wait_for(
        "/api/v1/worklist?limit=500",
        tokens["reader"],
        lambda body: [c for c in body["cases"] if study in c["study_instance_uids"]],
    )
    assert len(found) == 1
    detail = embedded_hub.api.get(f"/api/v1/cases/{found[0]['id']}", tokens["clinic"]).body
    assert detail["studies"][0]["instance_count"] == len(files)

    again = telehub_send(embedded_hub, tmp_path, str(folder))
    assert again.returncode == 0, again.stderr
    assert "accepted 0 instance(s), already on the hub 4, refused 0" in again.stdout


def test_malformed_file_is_refused_with_the_hubs_reason(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    study, files = study_folder(folder, "CT_small.dcm", "MR_small.dcm", "CT_small.dcm")
    truncated = files[2]
    truncated.write_bytes(truncated.read_bytes()[:-5000])  # cut inside the pixel data
    (folder / "notes.txt").write_text("not an image")

    done = telehub_send(embedded_hub, tmp_path, str(folder))
    assert done.returncode == 1
    assert "accepted 2 instance(s), already on the hub 0, refused 2" in done.stdout
    refused = {
        Path(line.split(": ", 1)[0].removeprefix("  refused ")).name: line.split(": ", 1)[1]
        for line in done.stderr.splitlines()
        if line.startswith("  refused ")
    }
    assert refused["notes.txt"].startswith("not a DICOM Part 10 file")
    # Failure Reason from the FailedSOPSequence, with the hub's own comment.
    assert refused[truncated.name].startswith("FailureReason 0xC000 cannot understand: ")
    assert len(refused[truncated.name]) > len("FailureReason 0xC000 cannot understand: ")
    [case] = cases_of(embedded_hub, tokens["clinic"], study)
    detail = embedded_hub.api.get(f"/api/v1/cases/{case['id']}", tokens["clinic"]).body
    assert detail["studies"][0]["instance_count"] == 2


def test_dropped_link_resumes_and_stores_each_instance_once(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    names = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm")
    study, files = study_folder(folder, *names)
    proxy = CuttingProxy(embedded_hub.http_port, after=150_000, cuts=2)
    try:
        result = send_http(
            [folder],
            f"http://127.0.0.1:{proxy.port}",
            "clinic",
            "demo",
            chunk_bytes=64 * 1024,
            journal=tmp_path / "journal.sqlite3",
            max_backoff_s=0.5,
        )
    finally:
        proxy.close()
    assert proxy.cut >= 1  # the link really dropped mid-upload
    assert result.refused == [] and result.accepted == len(files)
    [case] = cases_of(embedded_hub, tokens["clinic"], study)
    detail = embedded_hub.api.get(f"/api/v1/cases/{case['id']}", tokens["clinic"]).body
    assert [s["instance_count"] for s in detail["studies"]] == [len(files)]


def test_a_later_run_resumes_the_session_a_dead_link_left(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    study, files = study_folder(folder, "examples_ybr_color.dcm", "examples_palette.dcm")
    journal = tmp_path / "journal.sqlite3"
    proxy = CuttingProxy(embedded_hub.http_port, after=200_000, cuts=100)
    hub_url = f"http://127.0.0.1:{proxy.port}"
    try:
        first = send_http(
            [folder],
            hub_url,
            "clinic",
            "demo",
            chunk_bytes=64 * 1024,
            journal=journal,
            retries=2,
            max_backoff_s=0.1,
        )
        assert first.accepted == 0 and len(first.refused) == len(files)
        assert all(r.reason.startswith("upload failed") for r in first.refused)
        with sqlite3.connect(journal) as db:
            [(url,)] = db.execute("SELECT url FROM sessions").fetchall()
        upload_path = url.split(str(proxy.port), 1)[1]
        status, head, _ = call(embedded_hub, "HEAD", upload_path, tokens["clinic"])
        assert status == 200 and 0 < int(head["Upload-Offset"]) < int(head["Upload-Length"])

        proxy.left = 0  # the link is back: the next run resumes that session
        second = send_http([folder], hub_url, "clinic", "demo", journal=journal)
    finally:
        proxy.close()
    assert second.refused == [] and second.accepted == len(files)
    status, _, answer = call(embedded_hub, "GET", upload_path, tokens["clinic"])
    assert status == 200 and answer["state"] == "done" and answer["status"] == 200
    assert len(cases_of(embedded_hub, tokens["clinic"], study)) == 1


# ----- the API ------------------------------------------------------------------------------
def test_chunks_at_the_wrong_offset_are_409_with_the_current_offset(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    _, files = study_folder(tmp_path, "MR_small.dcm")
    body = stow_body(*files)
    url = open_upload(embedded_hub, tokens["clinic"], body)
    status, _, answer = patch(embedded_hub, url, tokens["clinic"], 100, body[100:200])
    assert status == 409 and answer == {
        "error": "offset_mismatch",
        "message": "upload is at offset 0",
        "offset": 0,
    }
    status, head, _ = patch(embedded_hub, url, tokens["clinic"], 0, body[:1000])
    assert status == 204 and head["Upload-Offset"] == "1000"
    status, head, answer = patch(embedded_hub, url, tokens["clinic"], 0, body[:1000])
    assert status == 409 and answer["offset"] == 1000 and head["Upload-Offset"] == "1000"
    status, head, _ = call(embedded_hub, "HEAD", url, tokens["clinic"])
    assert status == 200 and head["Upload-Offset"] == "1000"
    status, _, answer = call(embedded_hub, "POST", url + "/complete", tokens["clinic"])
    assert status == 409 and answer["error"] == "incomplete"


def test_another_users_session_is_not_found(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    _, files = study_folder(tmp_path, "MR_small.dcm")
    body = stow_body(*files)
    url = open_upload(embedded_hub, tokens["clinic"], body)
    other = tokens["clinic2"]
    assert call(embedded_hub, "HEAD", url, other)[0] == 404
    assert call(embedded_hub, "GET", url, other)[2]["error"] == "upload_not_found"
    assert patch(embedded_hub, url, other, 0, body)[0] == 404
    assert call(embedded_hub, "POST", url + "/complete", other)[0] == 404
    assert call(embedded_hub, "DELETE", url, other)[0] == 404
    assert call(embedded_hub, "HEAD", url, tokens["clinic"])[1]["Upload-Offset"] == "0"


def test_oversize_uploads_and_chunks_are_refused(embedded_hub: Hub, tokens: dict[str, str]) -> None:
    request = {"size": DEFAULT_MAX_BYTES + 1, "content_type": MULTIPART}
    status, _, answer = call(
        embedded_hub,
        "POST",
        "/api/v1/uploads",
        tokens["clinic"],
        json.dumps(request).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 413 and answer["error"] == "too_large"
    url = open_upload(embedded_hub, tokens["clinic"], b"x" * 10)
    status, _, answer = patch(embedded_hub, url, tokens["clinic"], 0, b"x" * 11)
    assert status == 400 and answer["error"] == "past_end"
    status, _, answer = call(
        embedded_hub,
        "POST",
        "/api/v1/uploads",
        tokens["clinic"],
        json.dumps({"size": 10, "content_type": "application/x-tar"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 415 and answer["error"] == "unsupported_media_type"
    assert "application/zip" in answer["message"]  # says what it does take


def test_completing_twice_gives_the_same_answer_and_checks_the_sha256(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    study, files = study_folder(tmp_path, "CT_small.dcm", "MR_small.dcm")
    body = stow_body(*files)
    token = tokens["clinic"]
    url = open_upload(embedded_hub, token, body, sha256=hashlib.sha256(body).hexdigest())
    half = len(body) // 2
    assert patch(embedded_hub, url, token, 0, body[:half])[0] == 204
    assert patch(embedded_hub, url, token, half, body[half:])[0] == 204  # processed here
    first = call(embedded_hub, "POST", url + "/complete", token)
    second = call(embedded_hub, "POST", url + "/complete", token)
    assert first[0] == second[0] == 200 and first[2] == second[2]
    answer = first[2]
    assert answer["state"] == "done" and answer["status"] == 200
    stored = answer["result"]["stow"]["00081199"]["Value"]
    assert sorted(i["00081155"]["Value"][0] for i in stored) == sorted(p.stem for p in files)
    assert len(cases_of(embedded_hub, token, study)) == 1

    bad = open_upload(embedded_hub, token, body, sha256="0" * 64)
    assert patch(embedded_hub, bad, token, 0, body)[0] == 204
    status, _, answer = call(embedded_hub, "POST", bad + "/complete", token)
    assert status == 200 and answer["status"] == 400
    assert answer["result"]["error"] == "checksum_mismatch"


def test_a_stock_tus_client_can_create_an_upload(embedded_hub: Hub, tokens: dict[str, str]) -> None:
    """tus creation: ``Upload-Length`` and base64 ``Upload-Metadata`` instead of JSON."""
    status, head, _ = call(embedded_hub, "OPTIONS", "/api/v1/uploads", tokens["clinic"])
    assert status == 204 and "creation" in head["Tus-Extension"]
    meta = "content_type " + __import__("base64").b64encode(MULTIPART.encode()).decode()
    status, head, answer = call(
        embedded_hub,
        "POST",
        "/api/v1/uploads",
        tokens["clinic"],
        b"",
        {"Upload-Length": "123", "Upload-Metadata": meta, "Tus-Resumable": "1.0.0"},
    )
    assert status == 201 and head["Tus-Resumable"] == "1.0.0"
    assert head["Location"].endswith(f"/api/v1/uploads/{answer['id']}")
    assert call(embedded_hub, "DELETE", head["Location"], tokens["clinic"])[0] == 204
    assert call(embedded_hub, "HEAD", head["Location"], tokens["clinic"])[0] == 404


def test_uploads_need_a_token_and_are_documented(embedded_hub: Hub, tokens: dict[str, str]) -> None:
    assert embedded_hub.api.post("/api/v1/uploads", {"size": 1}).status == 401
    spec = embedded_hub.api.get("/api/v1/openapi.json", tokens["clinic"]).body
    assert {"/api/v1/uploads", "/api/v1/uploads/{id}", "/api/v1/uploads/{id}/complete"} <= set(
        spec["paths"]
    )


def test_abandoned_sessions_are_swept(tmp_path: Path) -> None:
    """The sweep on the hub's own database and spool folder: expired rows and files go, live
    ones stay."""
    from sqlalchemy import update

    from telehub import uploads
    from telehub.auth import login
    from telehub.config import Settings
    from telehub.db.migrate import upgrade
    from telehub.db.models import Upload
    from telehub.db.types import utcnow
    from telehub.demo import seed_demo
    from telehub.services import Services

    svc = Services.from_settings(Settings(data=tmp_path / "data"))
    try:
        upgrade(svc.db)
        seed_demo(svc.db)
        _, who = login(svc.db, "clinic", "demo", 60)
        old = uploads.create(svc, who, 10, MULTIPART)
        live = uploads.create(svc, who, 10, MULTIPART)
        with svc.db.session() as session:
            session.execute(update(Upload).where(Upload.id == old.id).values(expires_at=utcnow()))
        assert uploads.sweep(svc) == 1
        assert not uploads.spool_path(svc.settings, old.id).exists()
        assert uploads.spool_path(svc.settings, live.id).exists()
        with pytest.raises(uploads.NotFound):
            uploads.get(svc.db, who, old.id)
        assert uploads.get(svc.db, who, live.id).offset == 0
    finally:
        svc.close()


def test_stow_only_posts_plain_stow_rs(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    """The fallback for archives without resumable uploads, here the hub's own /dicomweb."""
    study, _ = study_folder(tmp_path / "study", "CT_small.dcm", "MR_small.dcm")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "telehub",
            "send",
            "--quiet",
            "--stow-only",
            "--http",
            embedded_hub.api.base_url + "/dicomweb",
            "--user",
            "clinic",
            "--journal",
            str(tmp_path / "journal.sqlite3"),
            str(tmp_path / "study"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TELEHUB_PASSWORD": "demo"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "accepted 2 instance(s)" in done.stdout
    assert len(cases_of(embedded_hub, tokens["clinic"], study)) == 1


# ----- what the clinic says about an upload, and zips ----------------------------------------
def routed_case(hub: Hub, token: str, study: str) -> dict[str, Any]:
    """The case once routing has run (it is queued when the upload completes)."""
    import time

    for _ in range(300):
        [case] = cases_of(hub, token, study)
        if case["sla_deadline"]:
            return case
        time.sleep(0.1)
    raise AssertionError(f"case of {study} was never routed: {case}")


def test_priority_and_question_reach_the_new_case_before_routing(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    from datetime import datetime

    study, files = study_folder(tmp_path, "CT_small.dcm", "MR_small.dcm")
    body = stow_body(*files)
    token = tokens["clinic"]
    question = "胸痛 2 小时，排除主动脉夹层 / chest pain, rule out dissection"
    url = open_upload(
        embedded_hub,
        token,
        body,
        metadata={"priority": "stat", "clinical_question": question, "filename": "x"},
    )
    assert patch(embedded_hub, url, token, 0, body)[0] == 204
    status, _, answer = call(embedded_hub, "POST", url + "/complete", token)
    assert status == 200 and answer["status"] == 200
    assert answer["result"]["accepted"] == 2 and answer["result"]["failures"] == []
    case = routed_case(embedded_hub, token, study)
    assert answer["result"]["cases"] == [case["id"]]
    assert case["priority"] == "stat"
    detail = embedded_hub.api.get(f"/api/v1/cases/{case['id']}", token).body
    assert detail["clinical_question"] == question
    # The SLA is the STAT target (30 min) from the study's completion, not the routine 24 h.
    complete = next(e["at"] for e in detail["timeline"] if e["kind"] == "study_complete")
    due = datetime.fromisoformat(case["sla_deadline"]) - datetime.fromisoformat(complete)
    assert due.total_seconds() == 30 * 60
    # Sending more images of that study later only raises a priority, never lowers it.
    more = stow_body(fresh_copy("CT_small.dcm", tmp_path / "more", study_uid=study))
    url = open_upload(embedded_hub, token, more, metadata={"priority": "routine"})
    assert patch(embedded_hub, url, token, 0, more)[0] == 204
    assert cases_of(embedded_hub, token, study)[0]["priority"] == "stat"


def test_bad_upload_metadata_is_refused_at_creation(
    embedded_hub: Hub, tokens: dict[str, str]
) -> None:
    for metadata, code in (
        ({"priority": "asap"}, "bad_priority"),
        ({"clinical_question": "x" * 4001}, "too_long"),
        ({"priority": 1}, "bad_metadata"),
    ):
        status, _, answer = call(
            embedded_hub,
            "POST",
            "/api/v1/uploads",
            tokens["clinic"],
            json.dumps({"size": 10, "content_type": MULTIPART, "metadata": metadata}).encode(),
            {"Content-Type": "application/json"},
        )
        assert (status, answer["error"]) == (400, code), answer


def test_a_zip_is_unpacked_member_by_member_with_bad_members_refused_by_name(
    embedded_hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    import zipfile

    study, files = study_folder(tmp_path / "study", "CT_small.dcm", "MR_small.dcm")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, f in enumerate(files):
            zf.write(f, f"PATIENT/STUDY/IM{i}")
        zf.writestr("README.TXT", "burnt by the CD viewer")
        zf.writestr("DICOMDIR", b"\0" * 200)  # the CD index: skipped, not refused
        zf.writestr("PATIENT/", b"")
    body = archive.read_bytes()
    token = tokens["clinic"]
    status, _, answer = call(
        embedded_hub,
        "POST",
        "/api/v1/uploads",
        token,
        json.dumps(
            {
                "size": len(body),
                "content_type": "application/zip",
                "metadata": {"priority": "urgent", "clinical_question": "fall, wrist pain"},
            }
        ).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, answer
    half = len(body) // 3
    assert patch(embedded_hub, answer["url"], token, 0, body[:half])[0] == 204
    assert patch(embedded_hub, answer["url"], token, half, body[half:])[0] == 204
    status, _, done = call(embedded_hub, "POST", answer["url"] + "/complete", token)
    assert status == 200 and done["status"] == 202, done
    result = done["result"]
    assert result["accepted"] == 2
    assert [(f["file"], f["code"], f["message"]) for f in result["failures"]] == [
        ("README.TXT", "not_dicom", "not a DICOM Part 10 file")
    ]
    [case] = cases_of(embedded_hub, token, study)
    assert result["cases"] == [case["id"]] and case["priority"] == "urgent"
    detail = embedded_hub.api.get(f"/api/v1/cases/{case['id']}", token).body
    assert detail["clinical_question"] == "fall, wrist pain"

    # A zip with no DICOM at all is an answer too (409), and a non-zip a clear 400.
    for data, error in ((b"PK\x05\x06" + b"\0" * 18, "no_dicom"), (b"not a zip", "bad_zip")):
        url = call(
            embedded_hub,
            "POST",
            "/api/v1/uploads",
            token,
            json.dumps({"size": len(data), "content_type": "application/zip"}).encode(),
            {"Content-Type": "application/json"},
        )[2]["url"]
        assert patch(embedded_hub, url, token, 0, data)[0] == 204
        done = call(embedded_hub, "POST", url + "/complete", token)[2]
        assert done["result"]["error"] == error, done
        assert done["status"] == (409 if error == "no_dicom" else 400)
