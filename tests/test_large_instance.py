"""Bounded memory: a 1 GiB multi-frame instance is received, stored and indexed while every hub
process stays under 200 MB resident.

Measured as each process's peak resident set size (VmHWM in /proc/PID/status, which the kernel
keeps for the life of the process) after the transfer, for the hub and all its children (DICOM
receivers, worker). The sender is DCMTK's storescu, in its own process.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.helpers import DCMTK_ENV, dicom_file, start_hub

ROWS = COLUMNS = 1024
FRAMES = 512  # 2 MiB each: 1 GiB of pixel data
LIMIT_BYTES = 200 * 1024 * 1024


def write_large_multiframe(path: Path) -> str:
    """Write the data set without pixels with pydicom, then append the pixel data element
    frame by frame, so the test never holds the gigabyte either."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"), stop_before_pixels=True)
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Word SC
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, FRAMES
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(path, enforce_file_format=True)
    frame = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256)
    with open(path, "ab") as out:
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(frame) * FRAMES))
        for _ in range(FRAMES):
            out.write(frame)
    return ds.SOPInstanceUID


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return [pid] + [q for c in children for q in _tree(c)]


def _command(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(a.decode() for a in args[2:4] if a)  # "telehub serve", "telehub worker"


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_1gib_instance_with_bounded_memory(tmp_path: Path, dcmtk: None) -> None:
    big = tmp_path / "big.dcm"
    sop_uid = write_large_multiframe(big)
    assert big.stat().st_size > 1024**3
    hub = start_hub(tmp_path, {"TELEHUB_LOG_LEVEL": "WARNING"})
    try:
        result = subprocess.run(
            ["storescu", "-aet", "CLINIC1", "-aec", "TELEHUB", "127.0.0.1", str(hub.dicom_port)]
            + [str(big)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        processes = _tree(hub.proc.popen.pid)
        peaks = {
            f"{pid} {_command(pid)}": _peak_rss(pid)
            for pid in processes  # name says which
        }

        import sqlite3

        with sqlite3.connect(hub.data / "telehub.sqlite3") as conn:
            key, size = conn.execute(
                "SELECT object_key, size FROM instances WHERE sop_uid = ?", (sop_uid,)
            ).fetchone()
        stored = hub.data / "objects" / key
        assert stored.stat().st_size == size
        with open(stored, "rb") as fh, open(big, "rb") as sent:
            fh.seek(size - 4096)
            sent.seek(big.stat().st_size - 4096)
            assert fh.read() == sent.read()  # the tail of the pixel data arrived intact
        print("peak RSS per hub process (MB):", {p: round(v / 1e6) for p, v in peaks.items()})
        assert max(peaks.values()) < LIMIT_BYTES, peaks
    finally:
        hub.proc.stop()
        big.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _enough_disk(tmp_path: Path) -> None:
    import shutil

    if shutil.disk_usage(tmp_path).free < 4 * 1024**3:
        pytest.skip("needs 4 GB of free disk for the 1 GiB instance, its copy and the spool")
