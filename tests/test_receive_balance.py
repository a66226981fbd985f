"""Associations that arrive together are shared out evenly among the receiving processes.

Four modalities connecting at the same moment used to land three on one process now and then,
and one process (one GIL) then carried three quarters of the load.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from dicom import receiver_load
from tests.helpers import Hub, poll, start_hub


@pytest.fixture(scope="module")
def two_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = start_hub(tmp_path_factory.mktemp("balance"), {"TELEHUB_DICOM_PROCESSES": "2"})
    yield hub
    hub.proc.stop()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _receivers(hub: Hub) -> list[int]:
    assert hub.proc.popen is not None
    return [
        pid
        for pid in _children(hub.proc.popen.pid)
        if b"receive" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _board(receiver: int) -> list[int]:
    """The shared connection counts, read through a receiving process's descriptor."""
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{receiver}/environ").read_text().split("\0")
        if "=" in item
    )
    raw = Path(f"/proc/{receiver}/fd/{environ[receiver_load.LOAD_FD_ENV]}").read_bytes()
    return [count for (count,) in struct.iter_unpack("i", raw)]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _server_sockets(port: int) -> dict[int, int]:
    """Established connections on the hub's DICOM port: client port -> socket inode."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                found[remote_port] = int(fields[9])
    return found


def _open_together(hub: Hub, count: int) -> list[Association]:
    start = threading.Barrier(count)
    opened: list[Association] = []

    def one() -> None:
        ae = AE("CLINIC1")
        ae.add_requested_context(Verification)
        start.wait()
        opened.append(ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB"))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return opened


def test_associations_arriving_together_are_spread_evenly(two_receivers: Hub) -> None:
    receivers = _receivers(two_receivers)
    assert len(receivers) == 2
    # Both accept (start_hub waited for that); its probe of the port has closed too.
    poll("no connection open", lambda: _board(receivers[0]) == [0, 0], timeout=10)
    for _ in range(3):
        opened = _open_together(two_receivers, 4)
        try:
            assert all(assoc.is_established for assoc in opened)
            sockets = _server_sockets(two_receivers.dicom_port)
            owner = {inode: pid for pid in receivers for inode in _socket_inodes(pid)}
            per_process = Counter(
                owner[sockets[assoc.dul.socket.socket.getsockname()[1]]] for assoc in opened
            )
            assert sorted(per_process.values()) == [2, 2], per_process
            assert _board(receivers[0]) == [2, 2]
        finally:
            for assoc in opened:
                assoc.release()
        poll("connections closed", lambda: _board(receivers[0]) == [0, 0], timeout=10)


def test_a_receiver_that_dies_is_not_waited_for_and_readiness_says_so(two_receivers: Hub) -> None:
    doomed, survivor = _receivers(two_receivers)
    os.kill(doomed, signal.SIGKILL)
    # serve notices (within a second), marks its slot, and /readyz names the cause.
    resp = poll(
        "readiness to notice the dead receiver",
        lambda: (r := two_receivers.api.get("/readyz")).status == 503 and r,
        timeout=10,
    )
    assert "1 of 2 DICOM receiving processes" in resp.body["checks"]["dicom_receivers"]["error"]
    # Meanwhile the survivor takes associations without holding back for the dead one.
    ae = AE("CLINIC1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", two_receivers.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    # The restarted receiver accepts again and the hub is ready.
    poll("ready again", lambda: two_receivers.api.get("/readyz").status == 200, timeout=60)
    restarted = set(_receivers(two_receivers)) - {survivor}
    assert len(restarted) == 1 and doomed not in restarted
