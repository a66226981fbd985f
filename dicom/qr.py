"""Query/Retrieve SCP: C-FIND, C-MOVE and C-GET over the index and the object store.

pynetdicom's handler design: each handler is a generator bound to ``EVT_C_FIND``/``EVT_C_MOVE``/
``EVT_C_GET`` that yields statuses (and, for retrieves, the destination and the number of
sub-operations first). The calling AE title names a facility; the facility sees what
``telehub.access.visible_to_facility`` allows (its own cases and those routed to its reading
centres), and every query and retrieval is audited as "AE@host".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom import nodes, qr_query, retrieve
from dicom.qr_query import QueryError
from telehub import audit
from telehub.access import visible_to_facility
from telehub.facilities import FacilityDirectory
from telehub.services import Services

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
NOT_AUTHORISED = 0x0124
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PROCESS = 0xC000

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}
_QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
_AUDIT_LIST_MAX = 1000  # case ids kept per audit row


@dataclass(frozen=True)
class Caller:
    ae_title: str
    facility_id: int
    remote: str  # "AE@host", as the audit trail shows it


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class QueryRetrieve:
    """Handlers for the Q/R services of one running SCP."""

    def __init__(self, services: Services, directory: FacilityDirectory) -> None:
        self.services = services
        self.directory = directory
        self.spool = services.settings.data / "tmp" / "retrieve"

    @staticmethod
    def add_contexts(ae: AE) -> None:
        """Add the Q/R presentation contexts (SCP role) to ``ae``, and accept C-GET requestors'
        SCP role for storage, so instances can go back over their own association."""
        for model in _QR_MODELS:
            ae.add_supported_context(model)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(
                context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )

    def handlers(self) -> list[tuple[evt.EventType, Callable[..., object]]]:
        return [
            (evt.EVT_C_FIND, self.handle_find),
            (evt.EVT_C_MOVE, self.handle_move),
            (evt.EVT_C_GET, self.handle_get),
        ]

    # ----- shared -----------------------------------------------------------------------
    def _caller(self, event: Event) -> Caller | None:
        requestor = event.assoc.requestor
        aet = requestor.ae_title.strip()
        facility_id = self.directory.facility_for_ae(aet)
        if facility_id is None:
            return None
        return Caller(aet, facility_id, f"{aet}@{requestor.address}")

    def _audit(self, caller: Caller, action: str, level: str, **detail: Any) -> None:
        try:
            with self.services.db.session() as session:
                audit.record(session, None, action, "dicom", level, remote=caller.remote, **detail)
        except Exception:
            log.exception("could not write the audit row for %s by %s", action, caller.remote)

    # ----- C-FIND -----------------------------------------------------------------------
    def handle_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        caller = self._caller(event)
        if caller is None:
            yield _status(NOT_AUTHORISED, "calling AE title no longer registered"), None
            return
        patient_root = event.request.AffectedSOPClassUID in PATIENT_ROOT
        try:
            identifier = event.identifier
            find = qr_query.build_find(
                identifier, patient_root, visible_to_facility(caller.facility_id)
            )
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", caller.remote, exc)
            yield _status(exc.status, str(exc)), None
            return
        except Exception as exc:
            log.warning("C-FIND from %s: cannot decode identifier: %s", caller.remote, exc)
            yield _status(UNABLE_TO_PROCESS, "cannot decode the identifier"), None
            return
        matches, case_ids, outcome = 0, set[int](), "success"
        aet = self.services.settings.ae_title
        try:
            with self.services.db.reader() as session:
                rows = session.execute(find.statement.execution_options(yield_per=256))
                for row in rows:
                    if event.is_cancelled:
                        outcome = "cancelled"
                        break
                    case_id = row._mapping.get("_case_id")
                    if case_id is not None and len(case_ids) < _AUDIT_LIST_MAX:
                        case_ids.add(case_id)
                    matches += 1
                    yield PENDING, find.answer(row, aet)
        except Exception:
            log.exception("C-FIND from %s failed", caller.remote)
            outcome = "failed"
        finally:
            self._audit(
                caller,
                "dicom_find",
                find.level,
                matching_keys=find.matching_keys,
                matches=matches,
                case_ids=sorted(case_ids),
                outcome=outcome,
            )
        if outcome == "cancelled":
            yield CANCEL, None
        elif outcome == "failed":
            yield _status(OUT_OF_RESOURCES, "query failed; see the hub's log"), None
        else:
            yield SUCCESS, None

    # ----- C-MOVE / C-GET ---------------------------------------------------------------
    def _select(self, event: Event, caller: Caller) -> list[qr_query.InstanceRef]:
        patient_root = event.request.AffectedSOPClassUID in PATIENT_ROOT
        statement = qr_query.build_retrieve(
            event.identifier, patient_root, visible_to_facility(caller.facility_id)
        )
        with self.services.db.reader() as session:
            return qr_query.instance_refs(list(session.execute(statement)))

    def _audit_retrieve(
        self, caller: Caller, action: str, refs: list[qr_query.InstanceRef], **detail: Any
    ) -> None:
        self._audit(
            caller,
            action,
            "",
            instances=len(refs),
            bytes=sum(r.size for r in refs),
            case_ids=sorted({r.case_id for r in refs})[:_AUDIT_LIST_MAX],
            study_uids=sorted({r.study_uid for r in refs})[:_AUDIT_LIST_MAX],
            **detail,
        )

    def handle_move(self, event: Event) -> Iterator[Any]:
        caller = self._caller(event)
        destination_aet = str(event.move_destination or "").strip()
        destination = nodes.destination(self.services.db, destination_aet)
        if caller is None or destination is None or destination.facility_id != caller.facility_id:
            # Another facility's node is as unknown to this caller as a missing one.
            log.warning(
                "C-MOVE from %s to unknown destination %r",
                caller.remote if caller else event.assoc.requestor.ae_title,
                destination_aet,
            )
            yield None, None
            return
        try:
            refs = self._select(event, caller)
        except Exception as exc:
            # pynetdicom can send a C-MOVE failure with our status only after it has connected
            # to the destination; raising instead makes it answer 0xC514 (unable to process)
            # at once, which is the lesser evil.
            _log_refusal(caller, exc)
            raise
        self._audit_retrieve(caller, "dicom_move", refs, destination=destination.ae_title)
        log.info("C-MOVE from %s: %d instance(s) to %s", caller.remote, len(refs), destination_aet)
        yield (
            destination.host,
            destination.port,
            {
                "contexts": retrieve.contexts_for(refs),
                "evt_handlers": [(evt.EVT_CONN_OPEN, retrieve.prepare_sub_association)],
            },
        )
        yield len(refs)
        yield from retrieve.sub_operations(refs, self.services.store, self.spool, event)

    def handle_get(self, event: Event) -> Iterator[Any]:
        caller = self._caller(event)
        if caller is None:
            yield 1
            yield _status(NOT_AUTHORISED, "calling AE title no longer registered"), None
            return
        try:
            refs = self._select(event, caller)
        except Exception as exc:
            yield from _failed_before_start(caller, exc)
            return
        self._audit_retrieve(caller, "dicom_get", refs)
        log.info("C-GET from %s: %d instance(s)", caller.remote, len(refs))
        retrieve.stream_stored_objects(event.assoc)
        yield len(refs)
        yield from retrieve.sub_operations(refs, self.services.store, self.spool, event)


def _log_refusal(caller: Caller, exc: Exception) -> None:
    if isinstance(exc, QueryError):
        log.warning("retrieve from %s refused: %s", caller.remote, exc)
    else:
        log.error("retrieve from %s failed: %s", caller.remote, exc, exc_info=exc)


def _failed_before_start(caller: Caller, exc: Exception) -> Iterator[Any]:
    """A C-GET whose identifier cannot be answered: pynetdicom only sends a failure status
    after a sub-operation count, so one (never attempted) is announced."""
    _log_refusal(caller, exc)
    if isinstance(exc, QueryError):
        status = _status(exc.status, str(exc))
    else:
        status = _status(UNABLE_TO_PROCESS, "cannot process the identifier")
    yield 1
    yield status, None
