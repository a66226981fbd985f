"""Socket tuning shared by every pynetdicom association the hub opens or accepts.

pynetdicom writes each PDU with its own ``sendall`` and then waits for the peer's
reply. With Nagle's algorithm on, the small trailing write of every C-STORE (and every
C-STORE-RSP) sits in the kernel until the peer's delayed ACK fires (~40 ms on Linux),
so a sender crawls at ~20 instances/s. Disabling Nagle removes that stall.

Where to hook it (checked against pynetdicom 3.0.4, ``transport.py``):

* Requestor (SCU): ``AssociationSocket.connect()`` triggers ``EVT_CONN_OPEN`` right
  after ``socket.connect()`` (and the TLS handshake) and *before* it queues Evt2, the
  event that makes the DUL send the A-ASSOCIATE-RQ. ``ApplicationEntity.associate()``
  binds ``evt_handlers`` before ``Association.request()``, so the handler runs on the
  DUL thread before the first byte of DICOM is written.
* Acceptor (SCP): ``RequestHandler.handle()`` triggers ``EVT_CONN_OPEN`` after the
  server-level handlers are bound and before ``assoc.start()``.

The same hook prepares the association for :mod:`dicom.pynetdicom_tuning` (event-driven loops).

Bind with ``ae.associate(..., evt_handlers=NODELAY_HANDLERS)`` or
``ae.start_server(..., evt_handlers=[*NODELAY_HANDLERS, ...])``.
"""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt
from pynetdicom.events import Event

from dicom import pynetdicom_tuning

__all__ = ["NODELAY_HANDLERS", "set_nodelay"]

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """``EVT_CONN_OPEN`` handler: turn off Nagle on the association's TCP socket.

    Best effort: a socket that is already gone or refuses the option only costs speed,
    so the error is logged and the association proceeds.
    """
    if pynetdicom_tuning.install():
        pynetdicom_tuning.prepare(event.assoc)
    dul_socket = getattr(event.assoc.dul, "socket", None)  # pynetdicom AssociationSocket
    sock = getattr(dul_socket, "socket", None)  # socket.socket, or ssl.SSLSocket with TLS
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY: %s", exc)


def _closed(event: Event) -> None:
    pynetdicom_tuning.release(event.assoc)


NODELAY_HANDLERS = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_CONN_CLOSE, _closed)]
"""Event handlers to bind to an association or server: TCP_NODELAY and woken loops."""
