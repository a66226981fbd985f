"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with a multipart/related body of
application/dicom parts.

The HTTP handler only spools the body to disk (size-capped, bounded memory); the work is
:func:`stow_from_file`, a synchronous function the resumable upload calls on an assembled body
too. Each part goes through the same path as a C-STORE: structural check, identifying attributes
from the file itself, then ``ingest.store_instance``; at the end the studies are complete and
their routing queued, as at an association release.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from aiohttp import web
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from dicom.integrity import MalformedDataset
from dicom.meta import CANNOT_UNDERSTAND, InvalidInstance, check_and_read
from dicom.web.multipart import MultipartError, Part, parse_media_type, split_parts
from telehub import audit, ingest
from telehub.api.common import WORK_QUEUED, principal, run, services
from telehub.auth import Principal
from telehub.db.models import Role
from telehub.errors import Forbidden, Invalid, TooLarge, UnsupportedMediaType
from telehub.services import Services
from telehub.store import StoreError

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"
#: Failure Reason (0008,1197) values, PS3.18 table I.2-2.
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
#: Implementation-specific, in the "cannot understand" range (the code dcm4chee uses): the
#: instance's Study Instance UID is not the one in the request's target URI.
STUDY_UID_MISMATCH = 0xC409
SENDING_ROLES = frozenset({Role.CLINIC.value, Role.ADMIN.value})
_SPOOL_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class FailedInstance:
    sop_class_uid: str  # "" when the part could not be read far enough to know it
    sop_uid: str
    reason: int
    message: str


@dataclass
class StowResult:
    """What one Store Instances request did; ``to_dicom_json`` is the response payload."""

    study_uid: str | None = None
    accepted: list[StoredInstance] = field(default_factory=list)
    failed: list[FailedInstance] = field(default_factory=list)
    #: Cases that became complete (routing queued) at the end of the request.
    completed_cases: list[int] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        """200 all stored, 202 some failed, 409 none stored (PS3.18 table 10.5.3-1)."""
        if not self.accepted:
            return 409
        return 202 if self.failed else 200

    def to_dicom_json(self, base_url: str) -> dict[str, Any]:
        """The Store Instances Response Module (PS3.18 annex I) in the JSON model."""
        ds = Dataset()
        studies = {i.study_uid for i in self.accepted}
        target = self.study_uid or (next(iter(studies)) if len(studies) == 1 else None)
        if target:
            ds.RetrieveURL = f"{base_url}/studies/{target}"
        if self.accepted:
            ds.ReferencedSOPSequence = [_referenced(i, base_url) for i in self.accepted]
        if self.failed:
            ds.FailedSOPSequence = [_failed(f) for f in self.failed]
        return ds.to_json_dict()


def _referenced(instance: StoredInstance, base_url: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = instance.sop_class_uid
    item.ReferencedSOPInstanceUID = instance.sop_uid
    item.RetrieveURL = (
        f"{base_url}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_uid}"
    )
    return item


def _failed(failure: FailedInstance) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = failure.sop_class_uid or None
    item.ReferencedSOPInstanceUID = failure.sop_uid or None
    item.FailureReason = failure.reason
    return item


def _envelope_uids(path: Path) -> tuple[str, str]:
    """SOP Class and Instance UID as the file meta states them (the data set's as fallback):
    what a C-STORE request would carry; best effort, "" when unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            meta: Dataset = read_file_meta_info(path)  # the meta group only: cheap
            if not (meta.get("MediaStorageSOPClassUID") and meta.get("MediaStorageSOPInstanceUID")):
                ds = pydicom.dcmread(
                    path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"]
                )
                meta = Dataset()
                meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
                meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        except Exception:
            return "", ""
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    return sop_class.strip().rstrip("\x00"), sop_uid.strip().rstrip("\x00")


class _Request:
    """One Store Instances request being processed part by part."""

    def __init__(
        self, services: Services, principal: Principal, study_uid: str | None, source: str
    ) -> None:
        self.services = services
        self.principal = principal
        self.source = f"{source}:{principal.username}"
        self.result = StowResult(study_uid=study_uid)
        self.new_studies: set[str] = set()
        self.cache = ingest.IngestCache()  # the request's studies and series, looked up once
        self.parts = 0
        self.wrong_media = 0

    def handle(self, part: Part) -> None:
        self.parts += 1
        sop_class, sop_uid = _envelope_uids(part.path)
        if part.media_type != "application/dicom":
            self.wrong_media += 1
            self._fail(sop_class, sop_uid, CANNOT_UNDERSTAND, f"part is {part.media_type!r}")
            return
        try:
            meta = check_and_read(
                part.path, sop_class, sop_uid, self.services.settings.dicom_default_charset
            )
        except MalformedDataset as exc:
            self._fail(sop_class, sop_uid, CANNOT_UNDERSTAND, str(exc))
            return
        except InvalidInstance as exc:
            self._fail(sop_class, sop_uid, exc.status, str(exc))
            return
        target = self.result.study_uid
        if target is not None and meta.study_uid != target:
            self._fail(sop_class, sop_uid, STUDY_UID_MISMATCH, "Study Instance UID differs")
            return
        try:
            outcome = ingest.store_instance(
                self.services.db,
                self.services.store,
                self.principal.facility_id,
                meta,
                part.path,
                source=self.source,
                cache=self.cache,
            )
        except ingest.ForeignStudy as exc:
            self._fail(sop_class, sop_uid, exc.status, str(exc))
            return
        except StoreError as exc:
            log.error("object store failed for %s: %s", sop_uid, exc)
            self._fail(sop_class, sop_uid, OUT_OF_RESOURCES, "object store unavailable")
            return
        except Exception:
            log.exception("could not store %s from %s", sop_uid, self.source)
            self._fail(sop_class, sop_uid, PROCESSING_FAILURE, "could not index instance")
            return
        if not outcome.duplicate:
            self.new_studies.add(meta.study_uid)
        self.result.accepted.append(
            StoredInstance(meta.sop_class_uid, meta.sop_uid, meta.study_uid, meta.series_uid)
        )

    def _fail(self, sop_class: str, sop_uid: str, reason: int, message: str) -> None:
        log.warning("STOW %s refused %s: 0x%04X %s", self.source, sop_uid or "?", reason, message)
        self.result.failed.append(FailedInstance(sop_class, sop_uid, reason, message))


def _check_request(principal: Principal, content_type: str, study_uid: str | None) -> None:
    if principal.role not in SENDING_ROLES:
        raise Forbidden("only clinics and administrators store studies", "not_a_sender")
    media = parse_media_type(content_type)
    if media.media_type != "multipart/related":
        raise UnsupportedMediaType(
            'expected Content-Type multipart/related; type="application/dicom"'
        )
    if media.parameters.get("type", "application/dicom").lower() != "application/dicom":
        raise UnsupportedMediaType("only application/dicom parts are accepted")
    if not media.parameters.get("boundary"):
        raise Invalid("multipart Content-Type without a boundary", "bad_multipart")
    if study_uid is not None and not UID(study_uid).is_valid:
        raise Invalid(f"{study_uid[:70]!r} is not a valid Study Instance UID", "bad_uid")


def stow_from_file(
    services: Services,
    principal: Principal,
    body_path: Path,
    content_type: str,
    study_uid: str | None = None,
    source: str = "stow",
    before_complete: Callable[[set[str]], None] | None = None,
) -> StowResult:
    """Store every application/dicom part of the multipart/related body at ``body_path``.

    ``before_complete(study_uids)`` runs on the studies that got new instances before they are
    completed and routed (the resumable upload applies the clinic's priority there).

    Raises Forbidden (403), UnsupportedMediaType (415) or Invalid (400) for a request that
    cannot be processed at all; per-instance failures are in the result. The body file is
    the caller's; the part files this writes are removed in every case.
    """
    _check_request(principal, content_type, study_uid)
    request = _Request(services, principal, study_uid, source)
    spool = services.settings.spool
    spool.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="stow-parts-", dir=spool))
    try:
        split_parts(body_path, content_type, workdir, request.handle)
    except MultipartError as exc:
        if not request.parts:
            raise Invalid(f"malformed multipart body: {exc}", "bad_multipart") from exc
        request._fail("", "", CANNOT_UNDERSTAND, f"malformed multipart body: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = request.result
    if not request.parts:
        raise Invalid("the multipart body has no parts", "bad_multipart")
    if not result.accepted and request.wrong_media == request.parts:
        raise UnsupportedMediaType("no part is application/dicom")
    if request.new_studies and before_complete is not None:
        try:
            before_complete(set(request.new_studies))
        except Exception:  # what was stored stays stored and is routed as it is
            log.exception("before_complete failed for %s", sorted(request.new_studies))
    if request.new_studies:
        try:
            result.completed_cases = ingest.complete_studies(
                services.db,
                request.new_studies,
                "STOW-RS request ended",
                services.settings.study_quiet_seconds,
            )
        except Exception:  # what was stored stays stored; the quiet period will complete it
            log.exception("could not mark studies complete: %s", sorted(request.new_studies))
    _audit(services, principal, request)
    return result


def _audit(services: Services, principal: Principal, request: _Request) -> None:
    result = request.result
    per_study: dict[str, int] = {}
    for instance in result.accepted:
        per_study[instance.study_uid] = per_study.get(instance.study_uid, 0) + 1
    with services.db.session() as session:
        for study_uid, count in sorted(per_study.items()) or [("", 0)]:
            audit.record(
                session,
                principal.user_id,
                "store",
                "study",
                study_uid,
                via=request.source,
                instances=count,
                failed=len(result.failed),
            )


async def _spool(request: web.Request, target: Path, limit: int) -> None:
    """Write the request body to ``target``, refusing it once it passes ``limit`` bytes."""
    total = 0
    with open(target, "wb") as out:
        async for chunk in request.content.iter_chunked(_SPOOL_CHUNK):
            total += len(chunk)
            if total > limit:
                raise TooLarge(f"request body exceeds {limit} bytes")
            await run(request, out.write, chunk)


def dicomweb_base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{PREFIX}"


@routes.post(PREFIX + "/studies")
@routes.post(PREFIX + "/studies/{study}")
async def store_instances(request: web.Request) -> web.Response:
    who = principal(request)
    content_type = request.headers.get("Content-Type", "")
    study_uid = request.match_info.get("study")
    _check_request(who, content_type, study_uid)
    svc = services(request)
    limit = svc.settings.stow_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body of {request.content_length} bytes exceeds {limit}")
    spool = svc.settings.spool
    spool.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="stow-", dir=spool))
    try:
        body = workdir / "body"
        await _spool(request, body, limit)
        result = await run(
            request, stow_from_file, svc, who, body, content_type, study_uid, source="stow"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.accepted:
        request.app[WORK_QUEUED]()
    payload = json.dumps(result.to_dicom_json(dicomweb_base(request)), ensure_ascii=False)
    return web.Response(
        body=payload.encode(), status=result.http_status, headers={"Content-Type": DICOM_JSON}
    )
