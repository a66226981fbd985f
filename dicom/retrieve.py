"""C-STORE sub-operations of C-MOVE and C-GET: stored objects go out exactly as received.

pynetdicom's Q/R service classes send what the handler yields with ``send_c_store``, and for a
``Dataset`` that means re-encoding it, which changes bytes for many valid files (deflate,
big-endian, encapsulated pixel data, undefined lengths). So the handler yields a
:class:`StoredObject` placeholder, and the association it goes out on has its
``send_c_store`` wrapped (:func:`stream_stored_objects`) to send the placeholder's temporary
Part 10 file instead, streamed from disk by pynetdicom (``STORE_SEND_CHUNKED_DATASET``): the
data set bytes are the stored bytes, and memory holds no more than a PDU.

Objects are copied from the object store to a temporary file one at a time, just before their
sub-operation, and removed right after it, so a study of any size costs one instance on disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config, build_context
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from dicom.net import set_nodelay
from dicom.qr_query import InstanceRef
from telehub.store import CHUNK, ObjectStore

log = logging.getLogger(__name__)

# Send files' data set bytes from disk as they are (also set by dicom/send.py for the SCU).
_config.STORE_SEND_CHUNKED_DATASET = True

PENDING = 0xFF00
CANCEL = 0xFE00
MAX_CONTEXTS = 128
_LE_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class StoredObject(Dataset):
    """Placeholder for one stored instance on its way out (see the module docstring).

    It carries the SOP Class/Instance UIDs (pynetdicom lists failed instances by them) and
    the path of the temporary copy, or why there is none.
    """

    def __init__(self, ref: InstanceRef, path: Path | None, problem: str = "") -> None:
        super().__init__()
        self.SOPClassUID = ref.sop_class_uid
        self.SOPInstanceUID = ref.sop_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = ref.transfer_syntax_uid
        self.__dict__["_stored_path"] = path
        self.__dict__["_problem"] = problem

    def to_send(self, assoc: Association) -> Path | Dataset:
        """The argument for pynetdicom's ``send_c_store`` on ``assoc``: the file itself when a
        context in its own transfer syntax was accepted; a decoded data set (re-encoded by
        pynetdicom) only for uncompressed little endian without such a context."""
        path: Path | None = self.__dict__["_stored_path"]
        if path is None:
            raise ValueError(self.__dict__["_problem"] or "object not available")
        sop_class = UID(self.SOPClassUID)
        own = UID(self.file_meta.TransferSyntaxUID)
        usable = {
            cx.transfer_syntax[0]
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu
        }
        if own in usable:
            return path
        if _is_le_uncompressed(own) and usable & set(_LE_UNCOMPRESSED):
            return dcmread(path)
        raise ValueError(f"no accepted presentation context for {sop_class} in {own.name}")


def _is_le_uncompressed(ts: UID) -> bool:
    return ts.is_transfer_syntax and not ts.is_encapsulated and ts.is_little_endian


def _syntaxes(ts: UID) -> list[UID]:
    """Transfer syntaxes to propose for an instance, its stored one first."""
    if not _is_le_uncompressed(ts):
        return [ts]
    return [ts, *(other for other in _LE_UNCOMPRESSED if other != ts)]


def contexts_for(refs: list[InstanceRef]) -> list[PresentationContext]:
    """Single-syntax contexts per (SOP class, syntax) pair, each instance's own syntax first,
    so the destination can accept the stored encoding rather than pick its favourite."""
    pairs: dict[tuple[str, str], None] = {}
    for ref in refs:
        for ts in _syntaxes(UID(ref.transfer_syntax_uid)):
            pairs[(ref.sop_class_uid, ts)] = None
    if len(pairs) > MAX_CONTEXTS:
        log.warning("%d presentation contexts needed, proposing the first 128", len(pairs))
    return [build_context(sop_class, [ts]) for sop_class, ts in list(pairs)[:MAX_CONTEXTS]]


def stream_stored_objects(assoc: Association) -> None:
    """Make ``assoc.send_c_store`` send a :class:`StoredObject`'s file as it is stored."""
    if assoc.__dict__.get("_telehub_streaming"):
        return
    original = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, StoredObject):
            dataset = dataset.to_send(assoc)
        return original(dataset, *args, **kwargs)

    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
    assoc.__dict__["_telehub_streaming"] = True


def prepare_sub_association(event: Event) -> None:
    """``EVT_CONN_OPEN`` of a C-MOVE sub-association: TCP_NODELAY and as-stored sending."""
    set_nodelay(event)
    stream_stored_objects(event.assoc)


def _fetch(store: ObjectStore, ref: InstanceRef, spool: Path) -> StoredObject:
    """Copy one object to a temporary file (streamed in chunks)."""
    spool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=spool, suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as out, store.open(ref.object_key) as src:
            shutil.copyfileobj(src, out, CHUNK)
    except Exception as exc:
        with contextlib.suppress(OSError):
            os.unlink(name)
        log.error("cannot read stored object %s: %s", ref.object_key, exc)
        return StoredObject(ref, None, f"stored object unavailable: {exc}")
    return StoredObject(ref, Path(name))


def sub_operations(
    refs: list[InstanceRef], store: ObjectStore, spool: Path, event: Event
) -> Iterator[tuple[int, Dataset | None]]:
    """The (status, dataset) pairs pynetdicom's C-MOVE/C-GET SCP expects, one instance at a
    time; stops with Cancel when the requestor sent C-CANCEL."""
    for ref in refs:
        if event.is_cancelled:
            yield CANCEL, None
            return
        stored = _fetch(store, ref, spool)
        try:
            yield PENDING, stored
        finally:
            path = stored.__dict__["_stored_path"]
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
