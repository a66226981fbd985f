"""A durable local spool in front of a slow object store (dcm4chee's "receive cache").

S3 costs tens of milliseconds per object, so writing each received instance straight to it
would bound ingest by the store's latency (Orthanc: ~42 MB/s to disk, ~1.9 MB/s to S3 for
many small files). Instead a write lands in a folder store on the hub's own disk (fsync and
atomic rename: durable, acknowledged at once) and a :class:`SpoolMover` thread uploads it and
only then removes the local copy. Reads look in the spool first, then the remote store, so an
object is readable at every moment of its move. After a crash the spool folder itself is the
list of what is left to move: nothing is lost if a process dies, only delayed.

Limits: a spooled object lives on one machine until moved (seconds); a process on another
machine that needs it meanwhile gets ObjectNotFound and retries. A lost disk loses what it had
not yet moved, as with any receive cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from telehub.store import FilesystemStore, ObjectNotFound, ObjectStore, Stored

log = logging.getLogger(__name__)


class SpoolingStore:
    """The object store interface over a local spool and a remote store."""

    def __init__(self, spool: FilesystemStore, remote: ObjectStore) -> None:
        self.spool = spool
        self.remote = remote

    #: Called after each write (the mover's kick), so uploads start at once.
    on_write: Callable[[], None] = staticmethod(lambda: None)

    def put_file(self, key: str, path: Path, known: Stored | None = None) -> Stored:
        stored = self.spool.put_file(key, path, known)
        self.on_write()
        return stored

    def put_bytes(self, key: str, data: bytes) -> Stored:
        stored = self.spool.put_bytes(key, data)
        self.on_write()
        return stored

    def open(self, key: str) -> BinaryIO:
        try:
            return self.spool.open(key)
        except ObjectNotFound:
            return self.remote.open(key)

    def exists(self, key: str) -> bool:
        return self.spool.exists(key) or self.remote.exists(key)

    def delete(self, key: str) -> None:
        self.spool.delete(key)
        self.remote.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        seen = set(self.spool.keys(prefix))
        yield from sorted(seen)
        yield from (key for key in self.remote.keys(prefix) if key not in seen)

    def check(self) -> None:
        self.spool.check()
        self.remote.check()


class SpoolMover:
    """Moves spooled objects to the remote store: woken by ``kick()``, else every
    ``poll_seconds``; several uploads at once, since each waits mostly on the network."""

    def __init__(self, store: SpoolingStore, uploads: int = 8, poll_seconds: float = 0.5) -> None:
        self.store = store
        store.on_write = self.kick
        self.poll_seconds = poll_seconds
        self._failed = False
        self._pool = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="spool-upload")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-mover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    def move_all(self) -> int:
        """Move everything in the spool now; returns how many objects moved."""
        if self._failed:
            try:
                self.store.remote.check()  # e.g. re-create a bucket the server lost
            except Exception as exc:
                log.warning("object store still unavailable: %s", exc)
                return 0
        keys = list(self.store.spool.keys())
        results = list(self._pool.map(self._move, keys))
        self._failed = None in results
        return sum(1 for moved in results if moved)

    def _move(self, key: str) -> bool | None:
        """True: moved; False: nothing to do; None: failed, try again later.

        Several processes may move one spool at once (each hub and worker process has a mover):
        the upload is idempotent, and the local copy is removed only if it is still the file
        that was uploaded (a replacing write in between keeps its new copy for the next pass).
        """
        path = self.store.spool.path_of(key)
        try:
            before = os.stat(path)
            self.store.remote.put_file(key, path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            log.warning("could not move %s to the object store yet: %s", key, exc)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == before.st_ino:
                os.unlink(path)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.move_all()
                if moved:
                    log.debug("moved %d spooled objects", moved)
            except Exception:
                log.exception("spool pass failed; will retry")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
