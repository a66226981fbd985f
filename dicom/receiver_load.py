"""How many connections each receiving process carries, shared between them.

``serve`` starts several receiving processes accepting from one listening socket. Left to the
race for ``accept()``, four modalities connecting at the same moment landed three on one
process now and then: that process (one GIL) then carried three quarters of the load while the
other idled. With this board each process publishes its open connections in its own slot of a
small shared memory block (a memfd ``serve`` creates and passes down), and a process with more
than the least loaded one holds back from accepting for a moment, so an idler one takes the
connection.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time

LOAD_FD_ENV = "TELEHUB_DICOM_LOAD_FD"
LOAD_SLOT_ENV = "TELEHUB_DICOM_LOAD_SLOT"
#: Longest a busier process holds back: a sibling that is stuck (a long GIL hold, a full
#: garbage collection) must not stall new associations for longer than this. 20 ms was too
#: short on a loaded 2-core machine: the idle sibling did not get to its accept in time.
MAX_DEFER = 0.1
_SLOT = 4  # bytes: one int32 per process
#: A slot's value while its process is not accepting (not started yet, restarting, stopped).
NOT_LISTENING = -1


def create(processes: int) -> int:
    """A board of ``processes`` slots, none listening yet; the fd to pass to the receiving
    processes."""
    fd = os.memfd_create("telehub-dicom-load", 0)
    os.write(fd, struct.pack(f"{processes}i", *[NOT_LISTENING] * processes))
    os.set_inheritable(fd, True)
    return fd


class LoadBoard:
    """A view of the board: a receiving process's, with its own slot to write (``slot``), or
    ``serve``'s, which reads every slot and marks a receiver that exited (``slot=None``)."""

    def __init__(self, fd: int, slot: int | None = None) -> None:
        size = os.fstat(fd).st_size
        if slot is not None and not 0 <= slot < size // _SLOT:
            raise ValueError(f"load slot {slot} outside a board of {size // _SLOT}")
        self._map = mmap.mmap(fd, size)
        self._counts = memoryview(self._map).cast("i")
        self._slot = slot
        self._lock = threading.Lock()
        if slot is not None:
            self._counts[slot] = 0

    @classmethod
    def from_environment(cls) -> LoadBoard | None:
        fd, slot = os.environ.get(LOAD_FD_ENV), os.environ.get(LOAD_SLOT_ENV)
        return cls(int(fd), int(slot)) if fd and slot else None

    def counts(self) -> list[int]:
        """Every process's open connections (NOT_LISTENING for one that is not accepting)."""
        return list(self._counts)

    @property
    def mine(self) -> int:
        assert self._slot is not None
        return self._counts[self._slot]

    def least_of_others(self) -> int | None:
        others = [c for i, c in enumerate(self._counts) if i != self._slot and c >= 0]
        return min(others) if others else None

    def opened(self) -> None:
        self._add(1)

    def closed(self) -> None:
        self._add(-1)

    def _add(self, delta: int) -> None:
        assert self._slot is not None
        with self._lock:
            self._counts[self._slot] = max(0, self._counts[self._slot] + delta)

    def reset(self) -> None:
        """Nothing is open (the process is idle): undo any drift of the count."""
        self._set(0)

    def leave(self, slot: int | None = None) -> None:
        """A process stops accepting (this one, or for ``serve`` the one in ``slot`` that
        exited): the others must not wait for it."""
        self._set(NOT_LISTENING, slot)

    def _set(self, value: int, slot: int | None = None) -> None:
        slot = self._slot if slot is None else slot
        assert slot is not None
        with self._lock:
            self._counts[slot] = value

    def wait_turn(self) -> None:
        """Hold back while another process carries fewer connections (at most MAX_DEFER)."""
        deadline = time.monotonic() + MAX_DEFER
        while time.monotonic() < deadline:
            least = self.least_of_others()
            if least is None or self.mine <= least:
                return
            time.sleep(0.001)
