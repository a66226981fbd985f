"""The command line as an operator uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from telehub.db import Database
from telehub.db.migrate import current_revision, head_revision
from tests.helpers import Hub, dicom_file


def telehub(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "telehub", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    done = telehub("migrate", env={"TELEHUB_DATA": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert f"revision {head_revision()}" in done.stdout
    db = Database(f"sqlite:///{tmp_path / 'data' / 'telehub.sqlite3'}")
    assert current_revision(db) == head_revision()
    assert {"cases", "studies", "instances", "case_events", "outbox"} <= set(
        inspect(db.engine).get_table_names()
    )
    db.dispose()
    again = telehub("migrate", env={"TELEHUB_DATA": str(tmp_path / "data")})
    assert again.returncode == 0  # idempotent


def test_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    done = telehub("migrate", env={"TELEHUB_HTTP_PORT": "not-a-port"})
    assert done.returncode == 2
    assert "TELEHUB_HTTP_PORT" in done.stderr


def test_send_reports_what_was_refused(embedded_hub: Hub, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    done = telehub(
        "send",
        "--quiet",
        "--aet",
        "CLINIC1",
        "--port",
        str(embedded_hub.dicom_port),
        str(dicom_file("MR_small.dcm")),
        str(junk),
    )
    assert done.returncode == 1
    assert "sent 1 instance(s)" in done.stdout
    assert "notes.txt: not a DICOM file" in done.stderr


def test_send_uploads_ecg_records_over_http(embedded_hub: Hub, tmp_path: Path) -> None:
    """WFDB files go by HTTP upload (one upload per record), DICOM by C-STORE, in one command."""
    import shutil

    from tests.helpers import ECG_DATA

    for name in ("100.hea", "100.dat", "100.atr"):
        shutil.copy(ECG_DATA / name, tmp_path / name)
    shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    done = telehub(
        "send",
        "--quiet",
        "--aet",
        "CLINIC1",
        "--port",
        str(embedded_hub.dicom_port),
        "--http",
        f"http://127.0.0.1:{embedded_hub.http_port}",
        "--user",
        "clinic",
        str(tmp_path),
        env={"TELEHUB_PASSWORD": "demo"},
    )
    assert done.returncode == 0, done.stderr
    assert "uploaded 100.atr, 100.dat, 100.hea: case" in done.stdout
    assert "sent 1 instance(s)" in done.stdout
    missing = telehub("send", "--aet", "CLINIC1", str(tmp_path / "100.hea"))
    assert missing.returncode == 2 and "--http" in missing.stderr
