"""Helpers the tests share: a JSON client, hub processes, services, DICOM test data."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "TELEHUB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TELEHUB_TEST_REDIS", "redis://127.0.0.1:6379/7")


def need_service(name: str, problem: str) -> None:
    message = f"{name} is not available: {problem}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def poll(what: str, check: Any, timeout: float = 40.0) -> Any:
    """Call ``check()`` until it returns a truthy value; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"timed out waiting for {what}"
            return value
        time.sleep(0.2)


# ----- HTTP client ---------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    body: Any


class Api:
    """A tiny JSON client over urllib: real HTTP requests to the running hub."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Response(resp.status, _decode(resp.read(), resp.headers))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, _decode(exc.read(), exc.headers))

    def get(self, path: str, token: str | None = None) -> Response:
        return self.request("GET", path, token)

    def post(self, path: str, body: Any = None, token: str | None = None) -> Response:
        return self.request("POST", path, token, body=body if body is not None else {})

    def login(self, username: str, password: str = "demo") -> str:
        resp = self.post("/api/v1/auth/login", {"username": username, "password": password})
        assert resp.status == 200, resp.body
        return resp.body["token"]

    def wait_for(self, path: str, token: str, predicate, timeout: float = 30.0) -> Any:
        """Poll ``path`` until ``predicate(body)`` is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            resp = self.get(path, token)
            last = resp.body
            if resp.status == 200:
                found = predicate(resp.body)
                if found:
                    return found
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}; last answer: {last}")


def _decode(data: bytes, headers: Any) -> Any:
    if "json" in (headers.get("Content-Type") or ""):
        return json.loads(data)
    return data


# ----- processes -----------------------------------------------------------------------------
@dataclass
class Proc:
    """A telehub command running as a child process, its output kept in a log file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "telehub", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._log:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Hub:
    proc: Proc
    http_port: int
    dicom_port: int
    env: dict[str, str]
    data: Path

    @property
    def api(self) -> Api:
        return Api(f"http://127.0.0.1:{self.http_port}")


def start_hub(tmp: Path, extra_env: dict[str, str] | None = None, name: str = "hub") -> Hub:
    http_port, dicom_port = free_port(), free_port()
    data = tmp / f"{name}-data"
    env = {
        **os.environ,
        "TELEHUB_DATA": str(data),
        "TELEHUB_HTTP_PORT": str(http_port),
        "TELEHUB_DICOM_PORT": str(dicom_port),
        "TELEHUB_DICOM_HOST": "127.0.0.1",
        **(extra_env or {}),
    }
    proc = Proc(["serve", "--demo"], env, tmp / f"{name}.log").start()
    hub = Hub(proc, http_port, dicom_port, env, data)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.popen and proc.popen.poll() is not None:
            raise RuntimeError(f"hub exited early:\n{proc.output()}")
        resp = None
        with contextlib.suppress(OSError):
            resp = hub.api.get("/healthz")
        if resp is not None and resp.status == 200 and _receivers_accepting(hub):
            wait_port(dicom_port)
            return hub
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"hub did not become healthy:\n{proc.output()}")


def _receivers_accepting(hub: Hub) -> bool:
    """Every DICOM receiving process accepts (the port itself listens from the start, held by
    ``serve``); /readyz may still be 503 for a dependency a test left down on purpose."""
    resp = None
    with contextlib.suppress(OSError):
        resp = hub.api.get("/readyz")
    return resp is not None and resp.body["checks"].get("dicom_receivers", {}).get("ok", True)


# ----- DICOM data ----------------------------------------------------------------------------
def dicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom test file {name} is not bundled"
    return Path(path)


def fresh_copy(name: str, folder: Path, study_uid: str | None = None, **changes: Any) -> Path:
    """A pydicom test file with new UIDs (so tests don't collide), written as Part 10."""
    ds = pydicom.dcmread(dicom_file(name))
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class S3Server:
    endpoint: str
    access_key: str = "telehub-test"
    secret_key: str = "telehub-test-secret"

    def url(self, bucket: str) -> str:
        return f"s3://{self.access_key}:{self.secret_key}@{self.endpoint}/{bucket}"

    def client(self):  # type: ignore[no-untyped-def]
        from minio import Minio

        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded data set of a Part 10 file, without preamble and file meta: what a C-STORE
    carries, so "stored as received" compares these bytes."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(part10)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return part10[fp.tell() :]


#: Real PhysioNet records shipped beside the repository (../shared/data/ecg).
ECG_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ecg"


def need_dcmtk() -> None:
    """DCMTK's command-line tools are real DICOM peers we did not write; install them from
    Debian when missing (the suite runs as root on a fresh machine)."""
    import subprocess

    if Path(DCMTK_BIN, "storescu").exists() and Path(DCMTK_BIN, "findscu").exists():
        return
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "dcmtk"], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0 or not Path(DCMTK_BIN, "storescu").exists():
        need_service("DCMTK", result.stderr[-500:] or "apt-get install dcmtk failed")


def dcmtk_tool(name: str) -> str:
    """Path of a DCMTK tool (installed first if missing), never pynetdicom's same-named app."""
    need_dcmtk()
    return f"{DCMTK_BIN}/{name}"


#: Debian's DCMTK. pynetdicom installs apps of the same names (storescu, findscu...) that come
#: first on a pyenv PATH, so DCMTK_ENV puts DCMTK's folder first.
DCMTK_BIN = "/usr/bin"
#: Environment for DCMTK tools: without TCP_NODELAY=1 Debian's DCMTK leaves Nagle on and crawls.
DCMTK_ENV = {
    **os.environ,
    "TCP_NODELAY": "1",
    "PATH": f"{DCMTK_BIN}:{os.environ.get('PATH', '')}",
}
