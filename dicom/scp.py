"""The DICOM receiver: a pynetdicom AE with C-ECHO and C-STORE.

One handler per DIMSE event, state in plain objects (pynetdicom's own design): a
:class:`Receiver` holds the services, an :class:`AssociationState` what one association stored.
Received data sets are streamed by pynetdicom into a Part 10 file in the hub's spool folder
(bounded memory; on the data disk, so the folder store takes the file by hard link, no copy),
checked, stored as received, indexed, and only then acknowledged with 0x0000.

Several receiving processes can listen on the one port (SO_REUSEPORT; the kernel spreads
associations over them), since one pynetdicom process does not scale past one core.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pydicom.config
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom import negotiation, pynetdicom_tuning, store_stream, tls
from dicom.integrity import MalformedDataset
from dicom.meta import CANNOT_UNDERSTAND, InvalidInstance, check_and_read
from dicom.net import NODELAY_HANDLERS
from dicom.qr import QueryRetrieve
from dicom.receiver_load import LoadBoard
from telehub import ingest
from telehub.facilities import FacilityDirectory
from telehub.services import Services
from telehub.store import StoreError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
NOT_AUTHORISED = 0x0124

# Stream every received data set to a temporary file instead of memory.
_config.STORE_RECV_CHUNKED_DATASET = True


class TelehubAE(AE):
    """An AE whose accepted calling AE titles are the consortium's facilities, read live from
    the database (cached for seconds), so unknown callers get A-ASSOCIATE-RJ
    "calling AE title not recognised" and new facilities need no restart."""

    def __init__(self, ae_title: str, directory: FacilityDirectory) -> None:
        super().__init__(ae_title)
        self._directory = directory

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        # pynetdicom reads this while negotiating, on the association's own thread, so the
        # caller's address is at hand: a title registered for other networks is not accepted
        # from this one (A-ASSOCIATE-RJ "calling AE title not recognised", like a stranger).
        current = threading.current_thread()
        address = None
        if isinstance(current, Association) and current.is_acceptor:
            address = current.requestor.address
        # An empty list would mean "accept anyone" to pynetdicom; with no facility known,
        # a title no peer can send keeps everyone out.
        return self._directory.ae_titles(address) or ["\x00"]

    @require_calling_aet.setter
    def require_calling_aet(self, _value: list[str]) -> None:
        raise AttributeError("calling AE titles come from the facilities table")


@dataclass
class AssociationState:
    calling_aet: str
    facility_id: int
    studies: set[str] = field(default_factory=set)
    stored: int = 0
    failed: int = 0
    cache: ingest.IngestCache = field(default_factory=ingest.IngestCache)


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class Receiver:
    """Handlers for one running SCP; ``on_studies_complete`` is told when work is queued."""

    def __init__(
        self,
        services: Services,
        directory: FacilityDirectory,
        on_studies_complete: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.services = services
        self.directory = directory
        self.on_studies_complete = on_studies_complete
        self.duplicates = ingest.DuplicatePolicy(services.settings.dicom_duplicates)
        self._states: dict[int, AssociationState] = {}
        self._lock = threading.Lock()

    # ----- per-association state --------------------------------------------------------
    def _state(self, assoc: Association) -> AssociationState | None:
        with self._lock:
            state = self._states.get(id(assoc))
            if state is None:
                aet = assoc.requestor.ae_title.strip()
                facility_id = self.directory.facility_for_ae(aet)
                if facility_id is None:
                    return None
                state = self._states[id(assoc)] = AssociationState(aet, facility_id)
            return state

    def _pop(self, assoc: Association) -> AssociationState | None:
        with self._lock:
            return self._states.pop(id(assoc), None)

    # ----- handlers ---------------------------------------------------------------------
    def handle_echo(self, event: Event) -> int:
        return SUCCESS

    def handle_store(self, event: Event) -> int | Dataset:
        """pynetdicom's EVT_C_STORE, used where :mod:`dicom.store_stream` is not installed."""
        request = event.request
        code, comment = self.store(
            event.assoc,
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            store_stream.Received(event.dataset_path),
        )
        return _status(code, comment) if comment else code

    def store(
        self, assoc: Association, sop_class: str, sop_uid: str, received: store_stream.Received
    ) -> tuple[int, str]:
        """Check, store durably and index one received instance: its DIMSE status and error
        comment (empty on success)."""
        state = self._state(assoc)
        if state is None:  # the facility was removed while the association was open
            return NOT_AUTHORISED, "calling AE title no longer registered"
        try:
            meta = check_and_read(
                received.path,
                sop_class,
                sop_uid,
                self.services.settings.dicom_default_charset,
                received.content,
            )
            outcome = ingest.store_instance(
                self.services.db,
                self.services.store,
                state.facility_id,
                meta,
                received.path,
                source=f"dimse:{state.calling_aet}",
                cache=state.cache,
                duplicates=self.duplicates,
                known=received.known,
            )
        except MalformedDataset as exc:
            return self._refuse(state, sop_uid, CANNOT_UNDERSTAND, str(exc))
        except InvalidInstance as exc:
            return self._refuse(state, sop_uid, exc.status, str(exc))
        except ingest.ForeignStudy as exc:
            return self._refuse(state, sop_uid, exc.status, str(exc))
        except StoreError as exc:
            log.error("object store failed for %s: %s", sop_uid, exc)
            return self._refuse(state, sop_uid, OUT_OF_RESOURCES, "object store unavailable")
        except Exception:
            log.exception("could not store %s from %s", sop_uid, state.calling_aet)
            return self._refuse(state, sop_uid, PROCESSING_FAILURE, "could not index instance")
        state.stored += 1
        if not outcome.duplicate:
            state.studies.add(meta.study_uid)
        return SUCCESS, ""

    def _refuse(
        self, state: AssociationState, sop_uid: str, code: int, why: str
    ) -> tuple[int, str]:
        state.failed += 1
        log.warning("refused %s from %s: 0x%04X %s", sop_uid, state.calling_aet, code, why)
        return code, why[:64]

    def handle_end(self, event: Event) -> None:
        """Association released or aborted: what was acknowledged is stored, so its studies
        are complete either way (a later association can still add to them)."""
        state = self._pop(event.assoc)
        if state is None or not state.studies:
            return
        released = event.event is evt.EVT_RELEASED
        reason = "association released" if released else "association aborted"
        try:
            cases = ingest.complete_studies(
                self.services.db,
                state.studies,
                reason,
                self.services.settings.study_quiet_seconds,
            )
        except Exception:
            log.exception("could not mark studies complete: %s", sorted(state.studies))
            return
        log.info(
            "%s: %d stored, %d refused, %d case(s) ready for routing",
            state.calling_aet,
            state.stored,
            state.failed,
            len(cases),
        )
        if cases and self.on_studies_complete:
            self.on_studies_complete(cases)

    def _open(self, event: Event) -> None:
        store_stream.attach(event.assoc, self.store, self.services.settings.spool / "incoming")

    def handlers(self) -> list[tuple[evt.EventType, Callable[..., object]]]:
        return [
            *NODELAY_HANDLERS,
            (evt.EVT_CONN_OPEN, self._open),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_end),
            (evt.EVT_ABORTED, self.handle_end),
        ]


def build_ae(ae_title: str, directory: FacilityDirectory) -> TelehubAE:
    negotiation.install()  # take the sender's preferred transfer syntax: stored as received
    ae = TelehubAE(ae_title, directory)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    QueryRetrieve.add_contexts(ae)
    ae.maximum_associations = 64
    # Large enough for few PDUs per instance, small enough that a peer cannot make us hold a
    # huge PDU in memory (the data set itself streams to a file; see STORE_RECV_CHUNKED_DATASET).
    ae.maximum_pdu_size = 1024 * 1024
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 120
    return ae


#: Set by ``serve`` for its receiving processes: the listening socket they all accept from.
LISTEN_FD_ENV = "TELEHUB_DICOM_LISTEN_FD"


class SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's server on a port several processes share.

    Under ``serve``, every receiving process accepts from the one listening socket ``serve``
    opened and passed down, and one carrying more connections than another holds back so the
    idler one takes the next (see :mod:`dicom.receiver_load`; SO_REUSEPORT would spread them by
    a hash of the addresses, blind to load).
    A ``telehub receive`` started on its own binds with SO_REUSEPORT instead.
    """

    def server_bind(self) -> None:
        inherited = os.environ.get(LISTEN_FD_ENV)
        if not inherited:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()
            return
        self.socket.close()
        self.socket = socket.socket(fileno=int(inherited))
        # Non-blocking: a process that loses the race for a connection goes back to waiting
        # instead of blocking in accept() (and can shut down).
        self.socket.settimeout(0)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if not os.environ.get(LISTEN_FD_ENV):
            super().server_activate()

    def service_actions(self) -> None:
        # pynetdicom runs a full gc.collect() every 60 turns of the accept loop, as a work-around
        # for finished association threads lingering; each took 40-50 ms of a receiving
        # process's GIL, a stall for every association it carried. Python's own collector
        # finds those cycles; here a full pass runs at most once a minute, and only when idle.
        now = time.monotonic()
        idle = not self.ae.active_associations and now - self._last_accept > 1
        if idle and self.board is not None:
            self.board.reset()
        if idle and now - self._collected > 60:
            gc.collect()
            self._collected = now

    _collected = 0.0

    #: The receiving processes' shared connection counts (None: not started by ``serve``).
    board: LoadBoard | None = None
    _last_accept = 0.0

    def get_request(self):  # type: ignore[no-untyped-def]
        # Every process wakes for a new connection; one carrying more than another lets the
        # idler one take it (its own accept then finds nothing and it waits again).
        if self.board is not None:
            self.board.wait_turn()
        request = super().get_request()
        self._last_accept = time.monotonic()
        if self.board is not None:
            self.board.opened()
        return request

    def connection_closed(self, _event: Event) -> None:
        if self.board is not None:
            self.board.closed()

    def server_close(self) -> None:
        if self.board is not None:
            self.board.leave()
        if os.environ.get(LISTEN_FD_ENV):
            # The socket is shared: pynetdicom's shutdown() of it would stop the other
            # receiving processes listening too. Closing our descriptor leaves theirs open.
            self.socket.close()
            return
        super().server_close()


def listen(host: str, port: int) -> socket.socket:
    """The DICOM listening socket ``serve`` opens once and hands to its receiving processes."""
    sock = socket.create_server((host, port), backlog=128, reuse_port=False)
    sock.set_inheritable(True)
    return sock


def start_scp(
    services: Services,
    on_studies_complete: Callable[[list[int]], None] | None = None,
) -> ThreadedAssociationServer:
    """Start listening in background threads; stop with ``server.shutdown()``."""
    settings = services.settings
    # We read a received data set only to index it, and store it as it came: pydicom's
    # value validation (a regex per element read) would cost a third of that read.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    # pynetdicom's "standard" handlers format a debug description of every PDU and DIMSE
    # message, even with its logger at WARNING (as ours is); we log each association's outcome.
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom writes each received data set to a temporary file: put those on the data
    # disk, beside the folder store, so storing one is a hard link, not a copy.
    incoming = settings.spool / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(incoming)
    # Now, not at the first connection: that association's set-up already copies the contexts.
    pynetdicom_tuning.install()
    directory = FacilityDirectory(services.db)
    receiver = Receiver(services, directory, on_studies_complete)
    query_retrieve = QueryRetrieve(services, directory)
    ae = build_ae(settings.ae_title, directory)
    server = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        evt_handlers=[*receiver.handlers(), *query_retrieve.handlers()],
        server_class=SharedPortServer,
        ssl_context=tls.server_context(settings),
    )
    server.board = LoadBoard.from_environment()
    server._collected = time.monotonic()  # the first full collection a minute from now
    server.bind(evt.EVT_CONN_CLOSE, server.connection_closed)
    ae._servers.append(server)  # as start_server does; shutdown() removes it
    threading.Thread(
        target=server.serve_forever, name=f"dicom-accept-{settings.dicom_port}", daemon=True
    ).start()
    log.info(
        "DICOM SCP %s listening on %s:%s",
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
    )
    return server
