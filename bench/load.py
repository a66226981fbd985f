"""Mixed load on one hub: parallel DICOM associations storing small instances while hundreds of
readers refresh their worklists.

Run: python bench/load.py --associations 20 --clients 200 --duration 30 [--cases 10000]

What it does (figures for docs/benchmarks.md, "Issue 8: mixed load"):
1. Seeds a fresh PostgreSQL database (bench/seed_cases.py: the bench consortium, ``--cases``
   cases, 5 % of them open on worklists) and starts one real hub on it (``python -m telehub
   serve``: HTTP, the DICOM receiving processes, the embedded worker; filesystem broker and
   object folder in a temporary data folder).
2. Writes ``--associations`` x ``--files`` copies of pydicom's CT_small.dcm (39 kB) with new
   UIDs, one folder per sender.
3. For ``--duration`` s (after ``--warmup`` s, not counted), at the same time:
   - each of ``--associations`` senders runs DCMTK's storescu (a DICOM peer we did not write;
     Debian's /usr/bin/storescu, not pynetdicom's same-named app) as the facility CLINIC1,
     one association per ``--batch`` instances, one association after another;
   - ``--clients`` reader accounts each refresh GET /api/v1/worklist?limit=50 on their own
     1-2 s timer (open loop, bench/worklist.py).
4. Reports instances/s and MB/s stored, association latency (a storescu run: connect,
   negotiate, ``--batch`` C-STOREs, release), worklist latency percentiles and every error:
   a storescu that failed, a worklist answer that was not 200, and instances sent but not in
   the index afterwards.
The load generator runs on the same machine as the hub and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

import bench.worklist  # noqa: E402
from bench.seed_cases import PG_ADMIN_URL, create_database, drop_database, seed  # noqa: E402
from bench.worklist import (  # noqa: E402
    Client,
    login_all,
    machine,
    pg_version,
    worklist_open_loop,
)
from tests.helpers import DCMTK_ENV, dcmtk_tool, fresh_copy, start_hub  # noqa: E402

SOURCE = "CT_small.dcm"
CALLING_AET = "CLINIC1"


@dataclass
class Sender:
    """One storescu after another over its own folder of instances."""

    files: list[Path]
    latencies: list[float] = field(default_factory=list)
    stored: int = 0  # acknowledged inside the measured window
    acked: int = 0  # acknowledged in all, warm-up included
    ran_out: bool = False  # every file sent before the end: the rate is too low, add --files
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


def write_instances(folder: Path, senders: int, per_sender: int) -> list[list[Path]]:
    out = []
    for s in range(senders):
        sub = folder / f"sender{s:02d}"
        out.append([fresh_copy(SOURCE, sub) for _ in range(per_sender)])
    return out


def run_sender(
    sender: Sender, port: int, batch: int, start: float, counted_from: float, end: float
) -> None:
    storescu = dcmtk_tool("storescu")
    queue = list(sender.files)
    while queue and time.monotonic() < end:
        files, queue = queue[:batch], queue[batch:]
        began = time.monotonic()
        result = subprocess.run(
            [storescu, "-aet", CALLING_AET, "-aec", "TELEHUB", "127.0.0.1", str(port)]
            + [str(f) for f in files],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        latency = time.monotonic() - began
        if result.returncode != 0 or "E:" in result.stderr:
            sender.errors.append(result.stderr.strip()[-300:] or f"exit {result.returncode}")
            continue
        sender.acked += len(files)
        if began < counted_from:
            continue
        sender.latencies.append(latency)
        sender.stored += len(files)
        sender.bytes += sum(f.stat().st_size for f in files)
    sender.ran_out = not queue and time.monotonic() < end


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values) * 1000, q)), 1) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10, help="instances per association")
    parser.add_argument("--files", type=int, default=200, help="instances per sender")
    parser.add_argument(
        "--refresh",
        default="1,2",
        help="seconds between one client's worklist refreshes, LO,HI (uniform); 1,2 is the "
        "issue-5 stress figure, 5,10 closer to browsers that also follow the live events",
    )
    parser.add_argument("--admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lo, hi = (float(x) for x in args.refresh.split(","))
    bench.worklist.REFRESH = (lo, hi)

    info = machine() | {"postgresql": pg_version(), "command": " ".join(sys.argv)}
    print(f"machine: {info}", flush=True)
    name = f"telehub_load_{uuid.uuid4().hex[:8]}"
    url = create_database(args.admin_url, name)
    try:
        consortium, counts = seed(url, args.cases)
        print(f"seeded {name}: {counts}", flush=True)
        with tempfile.TemporaryDirectory(prefix="telehub-load-") as tmp:
            folders = write_instances(Path(tmp) / "send", args.associations, args.files)
            hub = start_hub(
                Path(tmp), {"TELEHUB_DATABASE_URL": url, "TELEHUB_LOG_LEVEL": "WARNING"}
            )
            try:
                results = run(args, hub, consortium, folders, url)
            finally:
                hub.proc.stop()
    finally:
        drop_database(args.admin_url, name)
    results["machine"] = info
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def run(args: argparse.Namespace, hub: Any, consortium: Any, folders: list, url: str) -> dict:
    accounts = random.Random(5).sample(
        consortium.readers, min(args.clients, len(consortium.readers))
    )
    base = f"http://127.0.0.1:{hub.http_port}"
    clients = [Client(n, uid, centre, base) for n, uid, centre in accounts]
    senders = [Sender(files) for files in folders]
    engine = create_engine(url)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()

    load_before = os.getloadavg()
    start = time.monotonic() + 3.0  # the worklist clients log in meanwhile
    counted_from, end = start + args.warmup, start + args.warmup + args.duration
    threads = [
        threading.Thread(
            target=lambda s=s: (
                time.sleep(max(0.0, start - time.monotonic())),
                run_sender(s, hub.dicom_port, args.batch, start, counted_from, end),
            )
        )
        for s in senders
    ]
    for t in threads:
        t.start()

    async def worklist_phase() -> Any:
        await login_all(clients)
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        try:
            return await worklist_open_loop(clients, args.duration, args.warmup, random.Random(8))
        finally:
            for c in clients:
                await c.close()

    series = asyncio.run(worklist_phase())
    for t in threads:
        t.join()
    load_after = os.getloadavg()
    time.sleep(2)  # the last association's study completion
    with engine.connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()
    engine.dispose()

    attempted = sum(s.stored for s in senders)
    acked = sum(s.acked for s in senders)
    latencies = [x for s in senders for x in s.latencies]
    store_errors = [e for s in senders for e in s.errors]
    mb = sum(s.bytes for s in senders) / 1e6
    row = series.row()
    return {
        "dicom": {
            "associations_in_parallel": len(senders),
            "instances_per_association": args.batch,
            "instance_bytes": folders[0][0].stat().st_size if folders else 0,
            "stored_in_window": attempted,
            "instances_per_s": round(attempted / args.duration, 1),
            "mb_per_s": round(mb / args.duration, 2),
            "association_p50_ms": ms(latencies, 50),
            "association_p95_ms": ms(latencies, 95),
            "association_p99_ms": ms(latencies, 99),
            "association_max_ms": ms(latencies, 100),
            "storescu_errors": len(store_errors),
            "error_samples": store_errors[:3],
            "senders_out_of_files": sum(s.ran_out for s in senders),
            "acknowledged_in_all": acked,
            "index_rows_added": after - before,
            "acknowledged_but_not_indexed": max(0, acked - (after - before)),
        },
        "worklist": row,
        "load_avg_before": [round(x, 1) for x in load_before],
        "load_avg_after": [round(x, 1) for x in load_after],
        "duration_s": args.duration,
    }


if __name__ == "__main__":
    main()
