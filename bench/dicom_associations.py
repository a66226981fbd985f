"""Association set-up: one small instance per association, the hub against Orthanc and storescp.

Run: python3 bench/dicom_associations.py [--count 200] [--runs 3] [--only hub,orthanc,storescp]

Many modalities (CR/DX rooms, ultrasound carts) open an association for every image or every
study, so what a receiver spends on negotiation and set-up is paid per image. Each sender here
is one DCMTK ``storescu`` run per instance, sequentially (one association, one 15 kB CT
instance, release), against each receiver started fresh, interleaved over the runs. The figure
is associations per second and the median wall time of one whole ``storescu`` run (process
start, association, C-STORE, release), which bounds what a modality sees.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicom_ingest import CACHE, RECEIVERS, make_set, wait_stored  # noqa: E402

from tests.helpers import DCMTK_ENV  # noqa: E402


def run_once(kind: str, files: list[Path]) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp_name:
        receiver = RECEIVERS[kind](Path(tmp_name))
        try:
            cmd = ["storescu", "-aet", "CLINIC1", "-aec", receiver.aet, "127.0.0.1"]
            each: list[float] = []
            started = time.perf_counter()
            for path in files:
                t = time.perf_counter()
                proc = subprocess.run(
                    [*cmd, str(receiver.port), str(path)],
                    env=DCMTK_ENV,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"storescu failed against {kind}: {proc.stderr[-300:]!r}")
                each.append(time.perf_counter() - t)
            total = time.perf_counter() - started
            stored = wait_stored(receiver, len(files))
            if stored != len(files):
                raise SystemExit(f"{kind} stored {stored} of {len(files)}")
        finally:
            receiver.stop()
    return total, each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="storescp,orthanc,hub")
    args = parser.parse_args()
    kinds = args.only.split(",")
    CACHE.mkdir(exist_ok=True)
    files = sorted(make_set("small").rglob("*.dcm"))[: args.count]
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.runs):
        for kind in kinds:
            total, each = run_once(kind, files)
            rates[kind].append(len(files) / total)
            latencies[kind].extend(each)
            print(f"  {kind:8} {len(files) / total:6.1f} assoc./s", flush=True)
    print(f"\n{len(files)} associations of one 15 kB instance each, DCMTK storescu per instance")
    print(f"{'receiver':10} {'assoc./s':>9} {'storescu run p50 ms':>20} {'p95 ms':>8}")
    for kind in kinds:
        ms = sorted(x * 1000 for x in latencies[kind])
        p95 = ms[int(len(ms) * 0.95)]
        print(
            f"{kind:10} {statistics.median(rates[kind]):9.1f} "
            f"{statistics.median(ms):20.1f} {p95:8.1f}"
        )


if __name__ == "__main__":
    main()
