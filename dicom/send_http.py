"""Send DICOM files to a hub over HTTPS, for clinics whose C-STORE cannot reach it (NAT, weak
links): ``telehub send --http URL --user U PATHS...``.

Files are grouped into batches (about 16 MB, a study's files together); each batch becomes a
STOW-RS ``multipart/related`` body written to a spool file (streamed: memory stays bounded),
then goes up through the hub's resumable upload API (tus 1.0, driven by the ``aiotus`` client)
in chunks. A chunk that fails on a connection error or a 5xx is retried with exponential
backoff, and every retry resumes from the offset the hub reports, so a dropped link costs at
most one chunk. A small journal (SQLite, in the user's cache folder) remembers which files the
hub accepted, keyed by hub + path + size + mtime, so a re-run skips them, and which upload
session a batch body belongs to, so a re-run after a crash resumes it.

``stow_only`` posts each batch in one request to a plain STOW-RS service instead (Orthanc,
dcm4chee, or the hub's own ``/dicomweb``), retried whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import tenacity
from aiotus import core as tus
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from tqdm import tqdm
from yarl import URL

from dicom.send import Refused, find_dicom_files

__all__ = ["HttpSendResult", "send_http", "default_journal"]

BATCH_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
RETRIES = 8
MAX_BACKOFF_S = 30.0
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_read=120)

#: Failure Reason (0008,1197) values, PS3.18 table I.2-2 and PS3.4 annex B.
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "SOP class not supported",
    0xC409: "Study Instance UID differs from the request's",
}
_REFERENCED = "00081199"
_FAILED = "00081198"
_SOP_UID = "00081155"
_REASON = "00081197"


@dataclass
class HttpSendResult:
    """``accepted`` counts instances the hub stored in this run, ``skipped`` those the journal
    says it already has; every file not stored is in ``refused`` with the hub's reason."""

    accepted: int = 0
    skipped: int = 0
    refused: list[Refused] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Item:
    path: Path
    size: int
    mtime_ns: int
    sop_uid: str
    study_uid: str


class _Fatal(Exception):
    """This batch cannot go (the hub refused the request itself); the message says why."""


def default_journal() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "telehub" / "send-journal.sqlite3"


def send_http(
    paths: Iterable[str | Path],
    base_url: str,
    username: str | None,
    password: str | None,
    *,
    batch_bytes: int = BATCH_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
    stow_only: bool = False,
    journal: Path | None = None,
    retries: int = RETRIES,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> HttpSendResult:
    """Upload every DICOM file under ``paths``; never raises for a bad file, a refused instance
    or an unreachable hub (those end up in ``refused``)."""
    start = time.monotonic()
    result = HttpSendResult()
    hub = base_url.rstrip("/")
    with closing(_Journal(journal or default_journal())) as log:
        items: list[_Item] = []
        for path in find_dicom_files(paths):
            found = _identify(path)
            if isinstance(found, Refused):
                result.refused.append(found)
            elif log.accepted(hub, found):
                result.skipped += 1
            else:
                items.append(found)
        batches = _plan(items, batch_bytes)
        sender = _Sender(hub, username, password, chunk_bytes, retries, max_backoff_s, log)
        total = sum(_body_size(b, _boundary(b)) for b in batches)
        with tqdm(
            total=total, unit="B", unit_scale=True, file=sys.stderr, disable=not progress
        ) as bar:
            asyncio.run(sender.run(batches, stow_only, bar, result))
    result.seconds = time.monotonic() - start
    return result


# ----- what to send ----------------------------------------------------------------------
def _identify(path: Path) -> _Item | Refused:
    """SOP Instance and Study UID of a Part 10 file (STOW-RS carries Part 10 files only)."""
    try:
        stat = path.stat()
        meta = read_file_meta_info(path)
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except InvalidDicomError:
        return Refused(str(path), "not a DICOM Part 10 file (no File Meta Information)")
    except OSError as exc:
        return Refused(str(path), f"cannot read file: {exc.strerror or exc}")
    except Exception:  # garbage after 'DICM' can raise anything
        return Refused(str(path), "not a DICOM file (unreadable header)")
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip("\x00 ")
    if not sop_uid:
        return Refused(str(path), "no Media Storage SOP Instance UID in the File Meta")
    study = str(ds.get("StudyInstanceUID", "") or "")
    return _Item(path, stat.st_size, stat.st_mtime_ns, sop_uid, study)


def _plan(items: list[_Item], batch_bytes: int) -> list[list[_Item]]:
    """Batches of about ``batch_bytes``, each study's files together (in order of first
    appearance), so a study is split only when it is larger than a batch."""
    by_study: dict[str, list[_Item]] = {}
    for item in items:
        by_study.setdefault(item.study_uid, []).append(item)
    batches: list[list[_Item]] = []
    batch: list[_Item] = []
    size = 0
    for group in by_study.values():
        for item in group:
            if batch and size + item.size > batch_bytes:
                batches.append(batch)
                batch, size = [], 0
            batch.append(item)
            size += item.size
    if batch:
        batches.append(batch)
    return batches


def _boundary(batch: list[_Item]) -> str:
    """Derived from the files, so rebuilding the same batch gives the same body (and hash),
    and a re-run can resume its upload session."""
    keys = "\n".join(f"{i.path.resolve()}|{i.size}|{i.mtime_ns}" for i in batch)
    return "telehub-" + hashlib.sha256(keys.encode()).hexdigest()[:40]


def _part_header(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def _body_size(batch: list[_Item], boundary: str) -> int:
    per_part = len(_part_header(boundary)) + 2
    return sum(i.size + per_part for i in batch) + len(f"--{boundary}--\r\n")


def content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def _build_body(batch: list[_Item], boundary: str, folder: Path) -> tuple[Path, str]:
    """Write the multipart/related body to a spool file, hashing as it goes."""
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(prefix="stow-", suffix=".body", dir=folder)
    with os.fdopen(fd, "wb") as out:

        def put(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        for item in batch:
            put(_part_header(boundary))
            with open(item.path, "rb") as src:
                while block := src.read(1024 * 1024):
                    put(block)
            put(b"\r\n")
        put(f"--{boundary}--\r\n".encode())
    return Path(name), digest.hexdigest()


# ----- the journal -----------------------------------------------------------------------
class _Journal:
    """Accepted files and open upload sessions, per hub; SQLite so a crash leaves it whole."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS accepted (hub TEXT, path TEXT, size INTEGER,"
            " mtime_ns INTEGER, sop_uid TEXT, PRIMARY KEY (hub, path, size, mtime_ns));"
            "CREATE TABLE IF NOT EXISTS sessions (hub TEXT, sha256 TEXT, url TEXT,"
            " PRIMARY KEY (hub, sha256));"
        )

    def accepted(self, hub: str, item: _Item) -> bool:
        row = self.db.execute(
            "SELECT sop_uid FROM accepted WHERE hub=? AND path=? AND size=? AND mtime_ns=?",
            (hub, str(item.path.resolve()), item.size, item.mtime_ns),
        ).fetchone()
        return row is not None and row[0] == item.sop_uid

    def record(self, hub: str, items: Iterable[_Item]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO accepted VALUES (?, ?, ?, ?, ?)",
                [(hub, str(i.path.resolve()), i.size, i.mtime_ns, i.sop_uid) for i in items],
            )

    def session(self, hub: str, sha256: str) -> str | None:
        row = self.db.execute(
            "SELECT url FROM sessions WHERE hub=? AND sha256=?", (hub, sha256)
        ).fetchone()
        return row[0] if row else None

    def open_session(self, hub: str, sha256: str, url: str | None) -> None:
        with self.db:
            if url is None:
                self.db.execute("DELETE FROM sessions WHERE hub=? AND sha256=?", (hub, sha256))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", (hub, sha256, url)
                )

    def close(self) -> None:
        self.db.close()


# ----- the wire --------------------------------------------------------------------------
def _transient(exc: BaseException) -> bool:
    """Worth another try: the link (connection errors, timeouts) or the hub's state (5xx,
    409 offset mismatch, 423 busy); every retry first asks the hub for its offset."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status in (409, 423)
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


class _Progress(io.RawIOBase):
    """The body file as aiotus reads it, moving the bar to the position read up to (a resume
    after a drop moves it back to the hub's offset)."""

    def __init__(self, fh: io.BufferedReader, bar: tqdm, base: int) -> None:
        self.fh, self.bar, self.base = fh, bar, base

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self.fh.seek(offset, whence)
        if whence == io.SEEK_SET:
            self._at(position)
        return position

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self._at(self.fh.tell())
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _at(self, position: int) -> None:
        self.bar.update(self.base + position - self.bar.n)


class _Sender:
    def __init__(
        self,
        hub: str,
        username: str | None,
        password: str | None,
        chunk_bytes: int,
        retries: int,
        max_backoff_s: float,
        journal: _Journal,
    ) -> None:
        self.hub, self.username, self.password = hub, username, password
        self.chunk_bytes = chunk_bytes
        self.journal = journal
        self.retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_transient),
            wait=tenacity.wait_exponential(multiplier=0.25, max=max_backoff_s),
            stop=tenacity.stop_after_attempt(retries),
            reraise=True,
        )
        self.headers: dict[str, str] = {}
        self.auth: aiohttp.BasicAuth | None = None

    async def run(
        self, batches: list[list[_Item]], stow_only: bool, bar: tqdm, result: HttpSendResult
    ) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            try:
                await self._login(http, stow_only)
            except (TimeoutError, _Fatal, aiohttp.ClientError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                for batch in batches:
                    _refuse(batch, f"cannot log in to {self.hub}: {reason}", result)
                return
            with tempfile.TemporaryDirectory(prefix="telehub-send-") as spool:
                for batch in batches:
                    base = bar.n
                    boundary = _boundary(batch)
                    size = _body_size(batch, boundary)
                    body, sha = await asyncio.to_thread(_build_body, batch, boundary, Path(spool))
                    try:
                        if stow_only:
                            answer = await self._stow(http, body, boundary)
                        else:
                            answer = await self._upload(http, body, boundary, sha, bar, base)
                        self._settle(batch, answer, result)
                        result.bytes_sent += size
                    except _Fatal as exc:
                        _refuse(batch, str(exc), result)
                    except Exception as exc:  # retries exhausted, or a protocol surprise
                        _refuse(batch, f"upload failed: {_describe(exc)}", result)
                    finally:
                        body.unlink(missing_ok=True)
                        bar.update(base + size - bar.n)

    async def _login(self, http: aiohttp.ClientSession, stow_only: bool) -> None:
        if not self.username:
            if not stow_only:
                raise _Fatal("an account (--user) is needed")
            return
        login = f"{self.hub}/api/v1/auth/login"
        if stow_only:  # the DICOMweb root of the hub, or of another archive (HTTP Basic)
            login = str(URL(self.hub).origin()) + "/api/v1/auth/login"
        body = {"username": self.username, "password": self.password or ""}
        async for attempt in self.retrying:
            with attempt:
                async with http.post(login, json=body) as resp:
                    if stow_only and resp.status in (404, 405):
                        self.auth = aiohttp.BasicAuth(self.username, self.password or "")
                        return
                    answer = await _json(resp)
                    if resp.status >= 500:
                        resp.raise_for_status()
                    if resp.status != 200:
                        raise _Fatal(answer.get("message") or f"HTTP {resp.status}")
        self.headers = {"Authorization": f"Bearer {answer['token']}"}

    async def _upload(
        self,
        http: aiohttp.ClientSession,
        body: Path,
        boundary: str,
        sha: str,
        bar: tqdm,
        base: int,
    ) -> dict[str, Any]:
        url = self.journal.session(self.hub, sha)
        if url is not None and not await self._still_open(http, url):
            url = None
        if url is None:
            url = await self._create(http, body, boundary, sha)
            self.journal.open_session(self.hub, sha, url)
        with open(body, "rb") as fh:
            reader = _Progress(fh, bar, base)
            async for attempt in self.retrying:
                with attempt:
                    # Asks the hub for its offset first, so every attempt resumes.
                    await tus.upload_buffer(
                        http,
                        URL(url),
                        reader,  # type: ignore[arg-type]
                        chunksize=self.chunk_bytes,
                        headers=self.headers,
                    )
        envelope = await self._complete(http, url)
        self.journal.open_session(self.hub, sha, None)
        return envelope

    async def _still_open(self, http: aiohttp.ClientSession, url: str) -> bool:
        async with http.head(url, headers=self.headers) as resp:
            return resp.status == 200

    async def _create(
        self, http: aiohttp.ClientSession, body: Path, boundary: str, sha: str
    ) -> str:
        request = {
            "size": body.stat().st_size,
            "content_type": content_type(boundary),
            "sha256": sha,
        }
        async for attempt in self.retrying:
            with attempt:
                async with http.post(
                    f"{self.hub}/api/v1/uploads", json=request, headers=self.headers
                ) as resp:
                    answer = await _json(resp)
                    if resp.status >= 500:
                        resp.raise_for_status()
                    if resp.status != 201:
                        raise _Fatal(_hub_says(resp.status, answer))
        return answer["url"]

    async def _complete(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        """The hub processes at the last byte; this fetches its answer (idempotent), waiting
        while it is still processing."""
        while True:
            async for attempt in self.retrying:
                with attempt:
                    async with http.post(f"{url}/complete", headers=self.headers) as resp:
                        answer = await _json(resp)
                        if resp.status >= 500:
                            resp.raise_for_status()
            if resp.status == 202:
                await asyncio.sleep(1.0)
                continue
            if resp.status != 200:
                raise _Fatal(_hub_says(resp.status, answer))
            result = answer.get("result") or {}
            if "error" in result:
                raise _Fatal(_hub_says(answer.get("status") or 400, result))
            return result

    async def _stow(self, http: aiohttp.ClientSession, body: Path, boundary: str) -> dict[str, Any]:
        """Plain STOW-RS: the whole batch in one request, retried whole (stores are
        idempotent on SOP Instance UID)."""
        async for attempt in self.retrying:
            with attempt, open(body, "rb") as fh:
                async with http.post(
                    f"{self.hub}/studies",
                    data=fh,
                    headers={**self.headers, "Content-Type": content_type(boundary)},
                    auth=self.auth,
                ) as resp:
                    answer = await _json(resp)
                    if resp.status >= 500:
                        resp.raise_for_status()
        if resp.status not in (200, 202, 409) or "error" in answer:
            raise _Fatal(_hub_says(resp.status, answer))
        return {"stow": answer, "failures": []}

    def _settle(self, batch: list[_Item], answer: dict[str, Any], result: HttpSendResult) -> None:
        """Match the STOW-RS answer to the files: accepted ones go to the journal, failed
        ones are refused with the Failure Reason and the hub's comment."""
        stow = answer.get("stow") or {}
        stored = {_uid(i) for i in stow.get(_REFERENCED, {}).get("Value", [])}
        comments = {f.get("sop_uid"): f.get("message", "") for f in answer.get("failures", [])}
        failed: dict[str, str] = {}
        for entry in stow.get(_FAILED, {}).get("Value", []):
            code = (entry.get(_REASON, {}).get("Value") or [None])[0]
            uid = _uid(entry)
            words = FAILURE_REASONS.get(code, "refused") if code is not None else "refused"
            reason = f"FailureReason 0x{code:04X} {words}" if code is not None else words
            comment = comments.get(uid) or ""
            failed[uid] = f"{reason}: {comment}" if comment else reason
        accepted = [i for i in batch if i.sop_uid in stored]
        self.journal.record(self.hub, accepted)
        result.accepted += len(accepted)
        for item in batch:
            if item.sop_uid in stored:
                continue
            reason = failed.get(item.sop_uid) or failed.get("") or "not in the hub's answer"
            result.refused.append(Refused(str(item.path), reason))


def _uid(item: dict[str, Any]) -> str:
    return str((item.get(_SOP_UID, {}).get("Value") or [""])[0])


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        answer = json.loads(await resp.read() or b"{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _hub_says(status: int, answer: dict[str, Any]) -> str:
    message = answer.get("message") or answer.get("error") or ""
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    return str(exc) or type(exc).__name__


def _refuse(batch: list[_Item], reason: str, result: HttpSendResult) -> None:
    result.refused.extend(Refused(str(i.path), reason) for i in batch)
