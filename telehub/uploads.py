"""Resumable upload sessions (the tus 1.0 model): a clinic behind a weak link sends a body in
chunks; each chunk is fsynced before its offset is acknowledged, so a dropped link costs at most
the chunk in flight, and the client resumes from the offset the hub reports.

The session is a database row (who owns it, how far it got, what came of it) plus a spool file
under ``<data>/spool/uploads``. When the last byte is there the body is processed once (STOW-RS
through :func:`dicom.web.stow.stow_from_file`; a zip is unpacked into such a body by
:mod:`telehub.upload_zip`) and the answer is kept, so completing again, or
after a lost response, returns the same answer. Abandoned sessions expire and are swept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.helpers import parse_mimetype
from sqlalchemy import delete, or_, select, update

from telehub import upload_meta, upload_zip
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import Upload, UploadState
from telehub.db.types import utcnow
from telehub.errors import (
    Conflict,
    Invalid,
    NotFound,
    TelehubError,
    TooLarge,
    UnsupportedMediaType,
)
from telehub.services import Services

log = logging.getLogger(__name__)

#: Largest body one session may declare (one batch of a study; a big multi-frame fits).
DEFAULT_MAX_BYTES = Settings.upload_max_bytes
#: An untouched session is swept after this long; every chunk pushes it forward.
EXPIRE_AFTER = timedelta(hours=24)
#: A processed session's answer is kept this long for repeated ``complete`` calls.
KEEP_DONE = timedelta(days=7)
#: A session "processing" for longer than this was abandoned by a crashed process.
STALE_PROCESSING = timedelta(minutes=15)

#: The body the hub processes: a STOW-RS request of Part 10 files (or a zip, see upload_zip).
ACCEPTED_TYPE = ("multipart", "related", "application/dicom")


class OffsetMismatch(Conflict):
    """The client's offset is not the hub's: the answer carries the hub's, to resume from."""

    def __init__(self, current: int) -> None:
        super().__init__(f"upload is at offset {current}", "offset_mismatch")
        self.current = current


@dataclass(frozen=True)
class UploadInfo:
    """A session as its owner sees it (detached from the database session)."""

    id: str
    size: int
    offset: int
    content_type: str
    state: str
    expires_at: datetime
    result: dict[str, Any] | None
    result_status: int | None

    @property
    def complete(self) -> bool:
        return self.offset == self.size

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"{base_url}/api/v1/uploads/{self.id}",
            "size": self.size,
            "offset": self.offset,
            "content_type": self.content_type,
            "state": self.state,
            "expires_at": self.expires_at.isoformat(),
            "status": self.result_status,
            "result": self.result,
        }


def _info(row: Upload) -> UploadInfo:
    return UploadInfo(
        row.id,
        row.size,
        row.offset,
        row.content_type,
        row.state,
        row.expires_at,
        row.result,
        row.result_status,
    )


def max_bytes(settings: Settings) -> int:
    return settings.upload_max_bytes


def spool_dir(settings: Settings) -> Path:
    return settings.spool / "uploads"


def spool_path(settings: Settings, upload_id: str) -> Path:
    return spool_dir(settings) / f"{upload_id}.part"


def check_content_type(content_type: str) -> None:
    """Refuse at creation what could never be processed, before any byte is sent."""
    if upload_zip.is_zip(content_type):
        return
    mime = parse_mimetype(content_type)
    if (mime.type, mime.subtype, mime.parameters.get("type", "").strip('"')) != ACCEPTED_TYPE:
        raise UnsupportedMediaType(
            'the upload must be a STOW-RS body (multipart/related; type="application/dicom")'
            " or a zip of DICOM files (application/zip)"
        )
    if not mime.parameters.get("boundary"):
        raise Invalid("multipart/related content type without a boundary", "bad_content_type")


def create(
    svc: Services,
    who: Principal,
    size: int,
    content_type: str,
    sha256: str | None = None,
    meta: dict[str, str] | None = None,
) -> UploadInfo:
    """Open a session: an empty, fsynced spool file and its row."""
    limit = max_bytes(svc.settings)
    if size > limit:
        raise TooLarge(f"upload of {size} bytes exceeds the limit of {limit} bytes")
    if size <= 0:
        raise Invalid("size must be a positive number of bytes", "bad_size")
    check_content_type(content_type)
    upload_meta.check(meta or {})
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise Invalid("sha256 must be 64 hexadecimal digits", "bad_sha256")
    upload_id = secrets.token_hex(16)
    folder = spool_dir(svc.settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(spool_path(svc.settings, upload_id), "xb") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(folder)
    row = Upload(
        id=upload_id,
        user_id=who.user_id,
        size=size,
        offset=0,
        content_type=content_type,
        sha256=sha256,
        meta=meta or {},
        state=UploadState.RECEIVING.value,
        expires_at=utcnow() + EXPIRE_AFTER,
    )
    with svc.db.session() as session:
        session.add(row)
    log.info("upload %s opened by %s: %d bytes", upload_id, who.username, size)
    return _info(row)


def get(db: Database, who: Principal, upload_id: str) -> UploadInfo:
    """The caller's own session; anyone else's, or an expired one, is not found."""
    with db.reader() as session:
        row = session.get(Upload, upload_id)
        if row is None or row.user_id != who.user_id or row.expires_at <= utcnow():
            raise NotFound("no such upload", "upload_not_found")
        return _info(row)


def advance(svc: Services, who: Principal, upload_id: str, old: int, new: int) -> UploadInfo:
    """Record bytes ``old..new`` as received (already fsynced by the caller).

    The update is conditional on the offset still being ``old``, so two writers (a retried
    request racing a stale one, two hub processes) can never both move it.
    """
    with svc.db.session() as session:
        changed = session.execute(
            update(Upload)
            .where(
                Upload.id == upload_id,
                Upload.user_id == who.user_id,
                Upload.offset == old,
                Upload.state == UploadState.RECEIVING.value,
            )
            .values(offset=new, expires_at=utcnow() + EXPIRE_AFTER)
        ).rowcount
    info = get(svc.db, who, upload_id)
    if not changed:
        raise OffsetMismatch(info.offset)
    return info


def remove(svc: Services, who: Principal, upload_id: str) -> None:
    """tus termination: the client gives up on a session (not while it is being processed)."""
    info = get(svc.db, who, upload_id)
    if info.state == UploadState.PROCESSING.value:
        raise Conflict("upload is being processed", "upload_processing")
    with svc.db.session() as session:
        session.execute(delete(Upload).where(Upload.id == upload_id))
    spool_path(svc.settings, upload_id).unlink(missing_ok=True)


def finish(
    svc: Services, who: Principal, upload_id: str, base_url: str = "", wait_s: float = 60.0
) -> UploadInfo:
    """Process the assembled body once; every later call returns the kept answer.

    The claim is a conditional UPDATE, so of two concurrent calls (or two hub processes) one
    processes and the other waits for its answer (up to ``wait_s``, then it answers with the
    session still ``processing``, for the client to ask again).
    """
    info = get(svc.db, who, upload_id)
    if info.state == UploadState.DONE.value:
        return info
    if not info.complete:
        raise Conflict(
            f"upload is incomplete: {info.offset} of {info.size} bytes received", "incomplete"
        )
    now = utcnow()
    with svc.db.session() as session:
        claimed = session.execute(
            update(Upload)
            .where(
                Upload.id == upload_id,
                Upload.offset == Upload.size,
                or_(
                    Upload.state == UploadState.RECEIVING.value,
                    (Upload.state == UploadState.PROCESSING.value)
                    & (Upload.processing_since < now - STALE_PROCESSING),
                ),
            )
            .values(state=UploadState.PROCESSING.value, processing_since=now)
        ).rowcount
    if not claimed:
        return _await_done(svc.db, who, upload_id, wait_s)
    try:
        status, result = _process(svc, who, upload_id, base_url)
    except BaseException:
        # Not the client's fault (database, store): leave it to be completed again.
        with svc.db.session() as session:
            session.execute(
                update(Upload)
                .where(Upload.id == upload_id)
                .values(state=UploadState.RECEIVING.value, processing_since=None)
            )
        raise
    with svc.db.session() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(
                state=UploadState.DONE.value,
                result=result,
                result_status=status,
                expires_at=utcnow() + KEEP_DONE,
            )
        )
    spool_path(svc.settings, upload_id).unlink(missing_ok=True)
    log.info("upload %s processed: HTTP %s", upload_id, status)
    return get(svc.db, who, upload_id)


def _process(
    svc: Services, who: Principal, upload_id: str, base_url: str
) -> tuple[int, dict[str, Any]]:
    """Verify the checksum, then hand the body to STOW-RS. Errors in the body itself are the
    answer (kept like a success); anything else propagates."""
    from dicom.web.stow import PREFIX, stow_from_file

    with svc.db.reader() as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        expected, content_type, meta = row.sha256, row.content_type, dict(row.meta or {})
    path = spool_path(svc.settings, upload_id)
    if expected is not None:
        actual = _sha256(path)
        if actual != expected:
            log.warning("upload %s: sha256 %s, declared %s", upload_id, actual, expected)
            return 400, {
                "error": "checksum_mismatch",
                "message": f"sha256 of the received body is {actual}, not {expected}",
            }

    def before_complete(study_uids: set[str]) -> None:
        if upload_meta.wanted(meta):
            upload_meta.apply(svc.db, svc.settings, who, study_uids, meta)

    refused_files: list[dict[str, Any]] = []
    try:
        if upload_zip.is_zip(content_type):
            with upload_zip.as_stow_body(path, svc.settings) as (body, body_type, refused_files):
                if body is None:
                    return 409, {
                        "error": "no_dicom",
                        "message": "the zip holds no DICOM Part 10 file",
                        "failures": refused_files,
                        "cases": [],
                    }
                outcome = stow_from_file(svc, who, body, body_type, None, "upload", before_complete)
        else:
            outcome = stow_from_file(svc, who, path, content_type, None, "upload", before_complete)
    except TelehubError as exc:
        log.info("upload %s refused: %s", upload_id, exc.message)
        return exc.http_status, {"error": exc.code, "message": exc.message}
    # The DICOM JSON answer, plus the hub's own words for each refusal (FailedSOPSequence
    # items carry only a code), so the clinic sees why, and the cases to follow.
    failures = refused_files + [
        {"sop_uid": f.sop_uid, "reason": f.reason, "message": f.message} for f in outcome.failed
    ]
    status = outcome.http_status
    if refused_files and status == 200:
        status = 202
    return status, {
        "stow": outcome.to_dicom_json(base_url + PREFIX),
        "failures": failures,
        "accepted": len(outcome.accepted),
        "cases": upload_meta.case_ids(svc.db, who, {i.study_uid for i in outcome.accepted}),
    }


def _await_done(db: Database, who: Principal, upload_id: str, wait_s: float) -> UploadInfo:
    deadline = time.monotonic() + wait_s
    while True:
        info = get(db, who, upload_id)
        if info.state != UploadState.PROCESSING.value or time.monotonic() >= deadline:
            return info
        time.sleep(0.2)


def sweep(svc: Services) -> int:
    """Delete expired sessions and their spool files, and spool files no session owns."""
    now = utcnow()
    with svc.db.session() as session:
        gone = list(
            session.scalars(
                select(Upload.id).where(
                    Upload.expires_at < now, Upload.state != UploadState.PROCESSING.value
                )
            )
        )
        if gone:
            session.execute(delete(Upload).where(Upload.id.in_(gone)))
    for upload_id in gone:
        spool_path(svc.settings, upload_id).unlink(missing_ok=True)
    folder = spool_dir(svc.settings)
    if folder.is_dir():
        with svc.db.reader() as session:
            live = set(session.scalars(select(Upload.id)))
        cutoff = time.time() - EXPIRE_AFTER.total_seconds()
        for path in folder.glob("*.part"):
            if path.stem not in live and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
    if gone:
        log.info("swept %d expired upload(s)", len(gone))
    return len(gone)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
