"""C-STORE DICOM files to a hub (or any Storage SCP), the way a clinic's modality would.

This is the engine behind ``telehub send PATH...``. Files are sent as they are on disk:
only the File Meta Information is read up front, and the dataset bytes are streamed from
the file by pynetdicom (``STORE_SEND_CHUNKED_DATASET``), so a 2 GB multi-frame study
costs no more memory than a 50 kB CT slice and pixel data is never decoded or transcoded.

Presentation contexts are proposed one per (SOP class, transfer syntax) pair, each with a
single transfer syntax. Single-syntax contexts matter: an acceptor picks the transfer
syntax from *its* preference list (pynetdicom's default prefers Implicit VR Little
Endian), and a streamed file can only go out under a context accepted with its own
syntax. For little-endian uncompressed files, Explicit and Implicit VR Little Endian
contexts are proposed as well, so a conservative SCP that refuses the file's own syntax
still gets the instance, re-encoded by pynetdicom (VR/deflate change only; pixel data is
untouched). Big-endian and compressed files are only offered in their own syntax:
pynetdicom cannot convert those without decoding (big-endian pixel data would be
corrupted), so they are refused if the SCP does not take them as they are.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import (
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)
from pynetdicom.utils import set_ae
from tqdm import tqdm

from dicom.net import NODELAY_HANDLERS

__all__ = ["Refused", "SendResult", "find_dicom_files", "send_paths"]

TIMEOUT_S = 30.0
"""ACSE, DIMSE, network and TCP connect timeout: a dead or hung hub fails the run
within about this long instead of hanging it."""

MAX_CONTEXTS = 128
"""PS3.8: presentation context IDs are odd numbers 1..255, so at most 128 per association."""

_LE_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass
class Refused:
    """A file that was not stored, and why (shown to the clinic user as is)."""

    path: str
    reason: str


@dataclass
class SendResult:
    """Outcome of :func:`send_paths`.

    ``sent`` counts instances the SCP acknowledged with a Success or Warning status
    (a warning such as 0xB000 "coercion of data elements" still means stored);
    ``bytes_sent`` is the on-disk size of those files.
    """

    sent: int = 0
    refused: list[Refused] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Instance:
    """What the File Meta Information told us about one file."""

    path: Path
    sop_class: UID
    sop_instance: UID
    transfer_syntax: UID
    size: int
    streamable: bool  # complete File Meta: pynetdicom can stream the file from disk


class _Fatal(Exception):
    """Nothing more can be sent in this run (hub unreachable, permanent rejection)."""


def find_dicom_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Yield candidate files: files as given, folders walked recursively in sorted order.

    Nothing is opened here (deciding what is DICOM means reading it, which is
    :func:`send_paths`' job, so that non-DICOM files can be reported rather than
    silently dropped). Hidden entries inside folders (``.DS_Store``, ``.git``) are
    skipped; a path given twice, or a file also inside a given folder, is yielded once.
    """
    seen: set[Path] = set()

    def first_time(p: Path) -> bool:
        key = p.resolve()
        if key in seen:
            return False
        seen.add(key)
        return True

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            if first_time(path):
                yield path
            continue
        found: list[Path] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(root, f) for f in files if not f.startswith("."))
        for file in sorted(found):
            if first_time(file):
                yield file


def send_paths(
    paths: Iterable[str | Path],
    host: str,
    port: int,
    calling_aet: str,
    called_aet: str = "TELEHUB",
    progress: bool = False,
    tls: ssl.SSLContext | None = None,
    max_per_association: int = 10_000,
) -> SendResult:
    """C-STORE every DICOM file under ``paths`` to ``called_aet`` at ``host:port``.

    Never raises for a bad file, a refused instance or an unreachable hub: every file
    that was not stored ends up in ``SendResult.refused`` with a reason a user can act
    on. Invalid AE titles raise ``ValueError`` (that is a usage error, not a send error).
    ``tls`` wraps each association in TLS, verifying the hub as ``host``. Associations
    carry at most ``max_per_association`` instances, so one dropped connection does not
    take a whole day's batch with it.
    """
    if max_per_association < 1:
        raise ValueError("max_per_association must be at least 1")
    start = time.monotonic()
    result = SendResult()

    set_ae(called_aet, "called_aet", False, False)  # fail before scanning, not after
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = TIMEOUT_S
    ae.network_timeout = TIMEOUT_S
    ae.connection_timeout = TIMEOUT_S
    # Stream datasets from disk instead of decoding and re-encoding them.
    _config.STORE_SEND_CHUNKED_DATASET = True

    instances: list[_Instance] = []
    for path in find_dicom_files(paths):
        found = _inspect(path)
        if isinstance(found, Refused):
            result.refused.append(found)
        else:
            instances.append(found)

    with tqdm(
        total=len(instances),
        unit="inst",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        batches = _plan_associations(instances, max_per_association)
        for index, batch in enumerate(batches):
            pending = batch
            try:
                while pending:
                    pending = _send_association(
                        ae, pending, host, port, called_aet, tls, result, bar
                    )
            except _Fatal as exc:
                rest = [i for b in batches[index + 1 :] for i in b]
                _refuse_all(pending + rest, str(exc), result, bar)
                break

    result.seconds = time.monotonic() - start
    return result


def _inspect(path: Path) -> _Instance | Refused:
    """Learn SOP class, SOP instance and transfer syntax while reading as little as we can.

    The File Meta Information is enough for well-formed Part 10 files. Files without it
    (raw datasets written by old modalities) or with an incomplete one are read up to
    the pixel data instead, and are later sent decoded rather than streamed.
    """
    try:
        size = path.stat().st_size
        meta: FileMetaDataset | None = read_file_meta_info(path)
    except InvalidDicomError:
        meta = None  # no 'DICM' prefix: maybe a raw dataset, sniffed below
    except OSError as exc:
        return Refused(str(path), f"cannot read file: {exc.strerror or exc}")
    except Exception:  # garbage after 'DICM' can raise anything
        return Refused(str(path), "not a DICOM file (unreadable File Meta Information)")

    keys = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    if meta is not None and all(meta.get(k) for k in keys):
        instance = _Instance(
            path=path,
            sop_class=UID(meta.MediaStorageSOPClassUID),
            sop_instance=UID(meta.MediaStorageSOPInstanceUID),
            transfer_syntax=UID(meta.TransferSyntaxUID),
            size=size,
            streamable=True,
        )
    else:
        if meta is None and not _looks_like_raw_dataset(path):
            return Refused(str(path), "not a DICOM file")
        try:
            ds = dcmread(path, stop_before_pixels=True, force=meta is None)
        except Exception:  # pydicom raises many types on garbage
            return Refused(str(path), "not a DICOM file")
        if not (ds.get("SOPClassUID") and ds.get("SOPInstanceUID")):
            return Refused(str(path), "not a DICOM file (no SOP Class/Instance UID)")
        instance = _Instance(
            path=path,
            sop_class=UID(ds.SOPClassUID),
            sop_instance=UID(ds.SOPInstanceUID),
            transfer_syntax=_dataset_syntax(ds),
            size=size,
            streamable=False,
        )

    if instance.sop_class == MediaStorageDirectoryStorage:
        return Refused(str(path), "DICOMDIR (media index), not an instance to store")
    return instance


def _looks_like_raw_dataset(path: Path) -> bool:
    """Cheap guard before ``dcmread(force=True)``, which would happily parse any file
    (and may read a huge non-DICOM file into memory): a raw dataset starts with a group
    0x0002 or 0x0008 tag, little- or big-endian."""
    try:
        with path.open("rb") as fp:
            head = fp.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _dataset_syntax(ds: Dataset) -> UID:
    """The transfer syntax a dataset read without (usable) File Meta is encoded in."""
    meta = getattr(ds, "file_meta", None)
    declared = meta.get("TransferSyntaxUID") if meta is not None else None
    if declared:
        return UID(declared)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def _is_le_uncompressed(ts: UID) -> bool:
    """True if pynetdicom can re-encode this syntax as Explicit/Implicit VR LE losslessly."""
    return ts.is_transfer_syntax and not ts.is_encapsulated and ts.is_little_endian


def _syntaxes_for(instance: _Instance) -> list[UID]:
    """Transfer syntaxes to propose for this instance, its own first."""
    own = instance.transfer_syntax
    if not _is_le_uncompressed(own):
        return [own]
    return [own, *(ts for ts in _LE_UNCOMPRESSED if ts != own)]


def _plan_associations(
    instances: list[_Instance], max_per_association: int
) -> list[list[_Instance]]:
    """Split instances into associations of at most 128 contexts and N instances.

    Instances are grouped by SOP class (in order of first appearance) so that a
    split falls between SOP classes, and each association proposes only the
    contexts its own instances need.
    """
    by_class: dict[UID, list[_Instance]] = {}
    for instance in instances:
        by_class.setdefault(instance.sop_class, []).append(instance)

    batches: list[list[_Instance]] = []
    batch: list[_Instance] = []
    pairs: set[tuple[UID, UID]] = set()
    for group in by_class.values():
        for instance in group:
            needed = {(instance.sop_class, ts) for ts in _syntaxes_for(instance)}
            if batch and (len(batch) >= max_per_association or len(pairs | needed) > MAX_CONTEXTS):
                batches.append(batch)
                batch, pairs = [], set()
            batch.append(instance)
            pairs |= needed
    if batch:
        batches.append(batch)
    return batches


def _contexts(batch: list[_Instance]) -> list[PresentationContext]:
    """One single-syntax context per (SOP class, transfer syntax) pair the batch needs."""
    pairs: dict[tuple[UID, UID], None] = {}
    for instance in batch:
        for ts in _syntaxes_for(instance):
            pairs[(instance.sop_class, ts)] = None
    return [build_context(sop_class, [ts]) for sop_class, ts in pairs]


def _send_association(
    ae: AE,
    batch: list[_Instance],
    host: str,
    port: int,
    called_aet: str,
    tls: ssl.SSLContext | None,
    result: SendResult,
    bar: tqdm,
) -> list[_Instance]:
    """Send one batch over one association.

    Returns the instances still to send if a local error forced us to abort the
    association half-way (they get a fresh one); raises :class:`_Fatal` if nothing more
    can be sent in this run.
    """
    connected = threading.Event()

    def on_open(event: Event) -> None:
        connected.set()

    asked = time.monotonic()
    assoc = ae.associate(
        host,
        port,
        contexts=_contexts(batch),
        ae_title=called_aet,
        tls_args=(tls, host) if tls is not None else None,
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_CONN_OPEN, on_open)],
    )
    if not assoc.is_established:
        _association_failed(assoc, batch, connected.is_set(), asked, host, port, result, bar)
        return []

    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for position, instance in enumerate(batch):
            if not assoc.is_established:
                _refuse_all(batch[position:], "association aborted by the peer", result, bar)
                return []
            try:
                how = _how_to_send(instance, accepted)
            except Exception as exc:  # corrupt dataset: nothing was sent, carry on
                _refuse(instance, f"cannot read dataset: {exc}", result, bar)
                continue
            if how is None:
                _refuse(instance, _no_context_reason(instance), result, bar)
                continue
            sending = time.monotonic()
            try:
                status = assoc.send_c_store(how, msg_id=position % 65535 + 1)
            except Exception as exc:  # file vanished, unreadable, bad encoding
                # A half-written message leaves the DIMSE stream unusable: drop this
                # association and carry on with the rest on a new one.
                _refuse(instance, f"could not send: {exc}", result, bar)
                assoc.abort()
                return batch[position + 1 :]
            if "Status" not in status:
                waited = time.monotonic() - sending
                reason = (
                    f"association aborted: no C-STORE response within {TIMEOUT_S:.0f} s"
                    if waited >= TIMEOUT_S - 1
                    else "association aborted by the peer"
                )
                _refuse_all(batch[position:], reason, result, bar)
                return []
            _record_status(instance, int(status.Status), status, result, bar)
    finally:
        if assoc.is_established:
            assoc.release()
    return []


def _how_to_send(instance: _Instance, accepted: set[tuple[UID, UID]]) -> Path | Dataset | None:
    """The argument for ``send_c_store``: the path to stream, a dataset to re-encode, or
    ``None`` if no accepted context can carry this instance."""
    own = (instance.sop_class, instance.transfer_syntax)
    if own in accepted and instance.streamable:
        return instance.path
    if own in accepted or (
        _is_le_uncompressed(instance.transfer_syntax)
        and any((instance.sop_class, ts) in accepted for ts in _LE_UNCOMPRESSED)
    ):
        ds = dcmread(instance.path, force=not instance.streamable)
        if not ds.file_meta.get("TransferSyntaxUID"):
            ds.file_meta.TransferSyntaxUID = instance.transfer_syntax
        return ds
    return None


def _no_context_reason(instance: _Instance) -> str:
    return (
        f"no accepted presentation context for {instance.sop_class.name} "
        f"in {instance.transfer_syntax.name}"
    )


def _association_failed(
    assoc: Association,
    batch: list[_Instance],
    connected: bool,
    asked: float,
    host: str,
    port: int,
    result: SendResult,
    bar: tqdm,
) -> None:
    """Explain why an association did not come up: per file, or by raising _Fatal."""
    if not connected:
        raise _Fatal(f"cannot connect to {host}:{port} (refused, unreachable or TLS failure)")
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        reason = answer.reason_str
        reason = reason[:1].lower() + reason[1:]
        text = (
            f"association rejected: {reason} "
            f"({answer.result_str.lower()}, by {answer.source_str.lower()})"
        )
        if answer.result == 0x01:  # permanent: retrying the next batch would be refused too
            raise _Fatal(text)
        _refuse_all(batch, text, result, bar)
        return
    if answer is not None and answer.result == 0x00 and not assoc.accepted_contexts:
        # pynetdicom aborts an accepted association that has no usable context.
        for instance in batch:
            _refuse(instance, _no_context_reason(instance), result, bar)
        return
    if answer is None and time.monotonic() - asked >= TIMEOUT_S - 1:
        raise _Fatal(f"no answer to the association request within {TIMEOUT_S:.0f} s")
    _refuse_all(batch, "association aborted by the peer during negotiation", result, bar)


def _record_status(
    instance: _Instance, code: int, status: Dataset, result: SendResult, bar: tqdm
) -> None:
    category = code_to_category(code)
    if category in (STATUS_SUCCESS, STATUS_WARNING):
        result.sent += 1
        result.bytes_sent += instance.size
        bar.update(1)
        bar.set_postfix_str(f"{result.bytes_sent / 1e6:.1f} MB", refresh=False)
        return
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, (category, ""))[1] or category
    reason = f"status 0x{code:04X}: {meaning}"
    comment = status.get("ErrorComment")
    if comment:
        reason += f" ({comment})"
    _refuse(instance, reason, result, bar)


def _refuse(instance: _Instance, reason: str, result: SendResult, bar: tqdm) -> None:
    result.refused.append(Refused(str(instance.path), reason))
    bar.update(1)


def _refuse_all(instances: list[_Instance], reason: str, result: SendResult, bar: tqdm) -> None:
    for instance in instances:
        _refuse(instance, reason, result, bar)
