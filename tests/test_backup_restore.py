"""Backup while the hub runs and takes more studies, wipe, restore into a fresh data folder,
start a hub on it: the same cases and reports, and byte-identical instances over WADO-RS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from dicom.send import send_paths
from tests.helpers import Hub, fresh_copy, start_hub
from tests.test_dicomweb_wado import split_multipart
from tests.test_reports import claim, send_case, write


def telehub(data: Path, *args: str) -> dict[str, Any]:
    """Run the real command line on a data folder; its JSON answer."""
    result = subprocess.run(
        [sys.executable, "-m", "telehub", *args],
        env={**_env(), "TELEHUB_DATA": str(data)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TELEHUB_")}


def study_bytes(hub: Hub, token: str, study_uid: str) -> dict[str, bytes]:
    """SOP Instance UID -> the Part 10 bytes WADO-RS returns for the study."""
    import io

    import pydicom

    resp = requests.get(
        f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{study_uid}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:300]
    return {
        pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID: body for _, body in split_multipart(resp)
    }


def cases(hub: Hub, token: str) -> dict[int, dict[str, Any]]:
    body = hub.api.get("/api/v1/cases?limit=500", token).body
    return {
        c["id"]: {k: c[k] for k in ("status", "priority", "kind", "study_instance_uids")}
        for c in body["cases"]
    }


def reports(hub: Hub, token: str, case_id: int) -> list[dict[str, Any]]:
    body = hub.api.get(f"/api/v1/cases/{case_id}/reports", token).body["reports"]
    return [{k: r.get(k) for k in ("version", "status", "text", "signed_at")} for r in body]


def wait_for_instances(hub: Hub, token: str, study_uid: str, count: int) -> None:
    """The signed report's DICOM SR joins the study in the background: wait for it."""
    deadline = time.monotonic() + 60
    while len(study_bytes(hub, token, study_uid)) < count:
        assert time.monotonic() < deadline, f"study {study_uid} never had {count} instances"
        time.sleep(0.2)


def test_backup_while_running_then_restore(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, name="original")
    try:
        api = hub.api
        admin, reader = api.login("admin"), api.login("reader")
        made = dict(send_case(hub, tmp_path / f"s{i}") for i in range(3))
        reported = next(iter(made))
        claim(api, reader, reported)
        assert write(api, reader, reported, "preliminary", text="初步意见 draft").status == 201
        assert write(api, reader, reported, "final", text="右肺结节，良性 benign").status == 201
        wait_for_instances(hub, admin, made[reported], 2)  # the CT and the report's SR
        before_cases = cases(hub, admin)
        before_reports = reports(hub, reader, reported)
        before_bytes = {uid: study_bytes(hub, admin, uid) for uid in made.values()}

        # More studies keep arriving while the backup is taken.
        late = [fresh_copy("MR_small.dcm", tmp_path / "late") for _ in range(6)]
        sender = threading.Thread(
            target=lambda: [send_paths([p], "127.0.0.1", hub.dicom_port, "CLINIC1") for p in late]
        )
        sender.start()
        manifest = telehub(hub.data, "backup", str(tmp_path / "backup"))
        sender.join()
        assert manifest["instances"] >= 4 and manifest["cases"] >= 3, manifest
        late_bytes = {
            uid: study_bytes(hub, admin, uid)
            for case_id, c in cases(hub, admin).items()
            if case_id not in made
            for uid in c["study_instance_uids"]
        }
    finally:
        hub.proc.stop()
    shutil.rmtree(hub.data)  # the disk is gone

    restored_data = tmp_path / "restored-data"
    again = telehub(restored_data, "restore", str(tmp_path / "backup"))
    assert again == manifest
    with pytest.raises(AssertionError, match="already holds a hub"):
        telehub(restored_data, "restore", str(tmp_path / "backup"))

    restored = start_hub(tmp_path, name="restored")
    try:
        api = restored.api
        admin, reader = api.login("admin"), api.login("reader")
        after_cases = cases(restored, admin)
        assert len(after_cases) == manifest["cases"]
        # The cases made before the backup are back as they were, with their reports.
        for case_id, study_uid in made.items():
            assert after_cases[case_id] == before_cases[case_id]
            assert study_bytes(restored, admin, study_uid) == before_bytes[study_uid]
        assert reports(restored, reader, reported) == before_reports
        assert [r["status"] for r in before_reports] == ["preliminary", "final"]
        # A study that arrived during the backup is there whole, byte for byte, or not at all.
        instances = sum(len(b) for b in before_bytes.values())
        for case_id, case in after_cases.items():
            if case_id in made:
                continue
            for uid in case["study_instance_uids"]:
                got = study_bytes(restored, admin, uid)
                assert got == late_bytes[uid], uid
                instances += len(got)
        assert instances == manifest["instances"]
    finally:
        restored.proc.stop()


@pytest.mark.parametrize(
    ("setting", "value", "tool"),
    [
        ("TELEHUB_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/telehub", "pg_dump"),
        ("TELEHUB_STORAGE_URL", "s3://k:s@127.0.0.1:1/bucket", "mc mirror"),
    ],
)
def test_backup_refuses_scaled_mode(tmp_path: Path, setting: str, value: str, tool: str) -> None:
    """Scaled mode is backed up with its own systems' tools; the command says which."""
    result = subprocess.run(
        [sys.executable, "-m", "telehub", "backup", str(tmp_path / "b")],
        env={**_env(), "TELEHUB_DATA": str(tmp_path / "data"), setting: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and tool in result.stderr, result.stderr
    assert not (tmp_path / "b").exists()
