"""C-STORE ingest: the hub against Orthanc and DCMTK storescp, same client, same data, same run.

Run: python3 bench/dicom_ingest.py [--runs 3] [--only hub,orthanc,storescp] [--sets ct,small]

The client is DCMTK ``storescu +sd +r`` with ``TCP_NODELAY=1`` (without it Debian's DCMTK
leaves Nagle on and the sender is what gets measured). Data, made once into a cache folder from
pydicom's CT_small.dcm: 600 CT instances of 512x512 16-bit (~0.5 MB) and 2,000 of ~10 kB,
each set in four study folders. "1 assoc." sends the whole set over one association; "4
assoc." runs four storescu at once, one per study folder. Every receiver starts empty for every
run; the hub runs its embedded default (SQLite, folder store) and acknowledges only what is
fsynced and indexed, as Orthanc does with its defaults. Figures are medians over the runs,
interleaved so that drift of the machine hits all receivers alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.helpers import DCMTK_ENV, dicom_file, free_port, start_hub, wait_port  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "telehub-bench-ingest"
SETS = {"ct": (600, 512), "small": (2000, 64)}  # instances, matrix size
FOLDERS = 4


def make_set(name: str) -> Path:
    count, size = SETS[name]
    root = CACHE / name
    if root.exists() and sum(1 for _ in root.rglob("*.dcm")) == count:
        return root
    shutil.rmtree(root, ignore_errors=True)
    template = pydicom.dcmread(dicom_file("CT_small.dcm"))
    pixels = template.pixel_array
    reps = max(1, size // pixels.shape[0])
    image = np.kron(pixels, np.ones((reps, reps), dtype=pixels.dtype))[:size, :size]
    image = np.ascontiguousarray(image)
    for folder in range(FOLDERS):
        out = root / f"study{folder}"
        out.mkdir(parents=True)
        study, series = generate_uid(), generate_uid()
        for i in range(count // FOLDERS):
            ds = template.copy()
            ds.Rows, ds.Columns = image.shape
            ds.PixelData = image.tobytes()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            ds.PatientID = f"BENCH{folder}"
            ds.save_as(out / f"{i:05d}.dcm", enforce_file_format=True)
    return root


@dataclass
class Receiver:
    name: str
    port: int
    aet: str
    stop: Callable[[], None]
    count: Callable[[], int]


def start_storescp(tmp: Path) -> Receiver:
    port, out = free_port(), tmp / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "--fork", "-od", str(out), "-aet", "STORESCP", str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return Receiver(
        "DCMTK storescp",
        port,
        "STORESCP",
        lambda: (proc.terminate(), proc.wait()),
        lambda: sum(1 for _ in out.iterdir()),
    )


def start_orthanc(tmp: Path) -> Receiver:
    port, http = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "Plugins": [],
    }
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["Orthanc", str(path)], env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port)

    def count() -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{http}/statistics") as resp:
            return int(json.load(resp)["CountInstances"])

    return Receiver("Orthanc", port, "ORTHANC", lambda: (proc.terminate(), proc.wait()), count)


def start_telehub(tmp: Path) -> Receiver:
    hub = start_hub(tmp, {"TELEHUB_LOG_LEVEL": "WARNING"})
    # start_hub returns once HTTP answers and every receiving process accepts; give the worker
    # time to finish starting too (importing takes CPU), so the run measures ingest only.
    time.sleep(3)

    def count() -> int:
        with sqlite3.connect(hub.data / "telehub.sqlite3") as conn:
            return conn.execute("SELECT count(*) FROM instances").fetchone()[0]

    return Receiver("telehub", hub.dicom_port, "TELEHUB", hub.proc.stop, count)


RECEIVERS = {"storescp": start_storescp, "orthanc": start_orthanc, "hub": start_telehub}


def send(receiver: Receiver, folders: list[Path]) -> float:
    cmd = ["storescu", "+sd", "+r", "-aet", "CLINIC1", "-aec", receiver.aet, "127.0.0.1"]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, str(receiver.port), str(folder)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for folder in folders
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed against {receiver.name}: {err.decode()[-400:]}")
    return time.perf_counter() - started


def wait_stored(receiver: Receiver, expected: int, timeout: float = 5.0) -> int:
    """How many instances the receiver holds once it holds ``expected`` (or time is up)."""
    deadline = time.monotonic() + timeout
    stored = receiver.count()
    while stored < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = receiver.count()
    return stored


def run_once(kind: str, data: Path, parallel: bool) -> tuple[float, int]:
    # storescp leaves ~300 MB of unwritten pages behind; flushed under the next receiver's run,
    # they would slow whichever receiver comes next. Every run starts with a quiet disk.
    os.sync()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp_name:
        receiver = RECEIVERS[kind](Path(tmp_name))
        try:
            folders = sorted(data.iterdir()) if parallel else [data]
            seconds = send(receiver, folders)
            stored = wait_stored(receiver, SETS[data.name][0])
        finally:
            receiver.stop()
    return seconds, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="storescp,orthanc,hub")
    parser.add_argument("--sets", default="ct,small")
    args = parser.parse_args()
    kinds = args.only.split(",")
    CACHE.mkdir(exist_ok=True)
    results: dict[tuple[str, str, bool], list[float]] = {}
    for name in args.sets.split(","):
        data = make_set(name)
        count = SETS[name][0]
        mb = sum(p.stat().st_size for p in data.rglob("*.dcm")) / 1e6
        for _ in range(args.runs):
            for parallel in (False, True):
                for kind in kinds:
                    seconds, stored = run_once(kind, data, parallel)
                    if stored != count:
                        raise SystemExit(f"{kind} stored {stored} of {count} ({name})")
                    results.setdefault((name, kind, parallel), []).append(seconds)
                    print(
                        f"  {name:5} {kind:8} {'4' if parallel else '1'} assoc.: "
                        f"{count / seconds:7.0f} inst/s",
                        flush=True,
                    )
        print(f"\n{name}: {count} instances, {mb / count * 1000:.0f} kB each, {mb:.0f} MB")
        print(
            f"{'receiver':16} {'assoc.':>6} {'inst/s':>8} {'MB/s':>7} {'vs Orthanc':>11} "
            f"{'vs storescp':>12}"
        )
        for parallel in (False, True):
            rates = {
                kind: count / statistics.median(results[(name, kind, parallel)]) for kind in kinds
            }
            for kind in kinds:
                rate = rates[kind]
                vs_o = f"{rate / rates['orthanc']:.2f}x" if "orthanc" in rates else "-"
                vs_s = f"{rate / rates['storescp']:.2f}x" if "storescp" in rates else "-"
                print(
                    f"{kind:16} {'4' if parallel else '1':>6} {rate:8.0f} "
                    f"{rate * mb / count:7.1f} {vs_o:>11} {vs_s:>12}"
                )
        if "hub" in kinds:
            one = count / statistics.median(results[(name, "hub", False)])
            four = count / statistics.median(results[(name, "hub", True)])
            print(f"hub: 4 associations / 1 = {four / one:.2f}x")


if __name__ == "__main__":
    main()
