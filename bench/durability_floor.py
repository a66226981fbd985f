"""What the hub's durability rules cost on this disk, with no DICOM and almost no Python work.

Run: python3 bench/durability_floor.py [--count 500]

For each instance, the syscalls the receiver cannot skip before it may answer Success, in the
hub's order: write the received bytes to a spool file, link it to its final name, fsync the file
(one journal commit for data and name) and the folder, and commit one index row in SQLite (WAL,
synchronous=FULL, as the hub runs it). DCMTK storescp does
none of this (it writes files and never fsyncs), so its rate plus this wait bounds what any
receiver that acknowledges only durable data can reach per association:

    best rate = 1 / (1 / storescp rate + wait per instance)

The figures are wall time per instance, one at a time (one association's sequence).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"small": 15_000, "ct": 531_000}


def one_set(root: Path, size: int, count: int) -> list[float]:
    spool, objects = root / "spool", root / "objects" / "study" / "series"
    spool.mkdir(parents=True)
    objects.mkdir(parents=True)
    db = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY, sop_uid TEXT UNIQUE, size INT)")
    payload = os.urandom(size)
    folder = os.open(objects, os.O_RDONLY)
    times = []
    for i in range(count):
        started = time.perf_counter()
        path = spool / f"{i}.dcm"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.link(path, objects / f"{i}.dcm")
        os.fsync(fd)
        os.close(fd)
        os.fsync(folder)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO instances (sop_uid, size) VALUES (?, ?)", (f"1.2.{i}", size))
        db.execute("COMMIT")
        os.unlink(path)
        times.append(time.perf_counter() - started)
    os.close(folder)
    db.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="on the disk measured")
    args = parser.parse_args()
    print(f"{'set':6} {'bytes':>8} {'median ms':>10} {'p95 ms':>8} {'per s':>7}")
    for name, size in SIZES.items():
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            times = sorted(one_set(Path(tmp), size, args.count))
        median = statistics.median(times)
        p95 = times[int(len(times) * 0.95)]
        print(f"{name:6} {size:8} {median * 1000:10.3f} {p95 * 1000:8.3f} {1 / median:7.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
