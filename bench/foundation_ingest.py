"""Ingest baseline in the embedded hub: C-STORE rate, association release to worklist, and ECG
upload to the ECG centre's worklist.

Run: python3 bench/foundation_ingest.py [--instances 500] [--studies 30]
Starts its own hub (embedded mode) in a temporary folder and prints its figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402

from dicom.send import send_paths  # noqa: E402
from tests.helpers import ECG_DATA, fresh_copy, start_hub  # noqa: E402
from tests.test_ecg_api import multipart  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--studies", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hub = start_hub(tmp)
        try:
            api = hub.api
            token = api.login("reader")
            # 1. ingest rate: one study of N small CT instances over one association
            folder = tmp / "one-study"
            study = None
            for _ in range(args.instances):
                path = fresh_copy("CT_small.dcm", folder, study_uid=study)
                study = study or pydicom.dcmread(path).StudyInstanceUID
            size = sum(p.stat().st_size for p in folder.iterdir())
            result = send_paths(sorted(folder.iterdir()), "127.0.0.1", hub.dicom_port, "CLINIC1")
            assert result.sent == args.instances, result.refused[:3]
            print(
                f"ingest, 1 association, {args.instances} x {size // args.instances // 1000} kB"
                f" CT: {result.sent / result.seconds:.0f} instances/s, "
                f"{size / result.seconds / 1e6:.1f} MB/s (durable, indexed)"
            )

            # 2. release -> worklist latency, one study per association
            latencies = []
            for i in range(args.studies):
                path = fresh_copy("CT_small.dcm", tmp / f"s{i}")
                uid = pydicom.dcmread(path).StudyInstanceUID
                assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
                released = time.perf_counter()
                while True:
                    body = api.get("/api/v1/worklist?limit=500", token).body
                    if any(uid in c["study_instance_uids"] for c in body["cases"]):
                        break
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - released)
            q = statistics.quantiles(latencies, n=20)
            print(
                f"release -> on worklist ({args.studies} studies): p50 "
                f"{statistics.median(latencies) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )

            # 3. ECG upload (WFDB 12-lead, 38 s at 1000 Hz) -> on the ECG centre's worklist
            clinic, ecg_reader = api.login("clinic"), api.login("ecgreader")
            files = {
                n: (ECG_DATA / n).read_bytes()
                for n in ("s0010_re.hea", "s0010_re.dat", "s0010_re.xyz")
            }
            body, content_type = multipart(files)
            ecg_latencies = []
            for _ in range(args.studies):
                started = time.perf_counter()
                resp = api.request(
                    "POST", "/api/v1/ecg", clinic, raw=body, content_type=content_type
                )
                assert resp.status == 201, resp.body
                case_id = resp.body["case_id"]
                while not any(
                    c["id"] == case_id
                    for c in api.get("/api/v1/worklist?limit=500", ecg_reader).body["cases"]
                ):
                    time.sleep(0.01)
                ecg_latencies.append(time.perf_counter() - started)
            q = statistics.quantiles(ecg_latencies, n=20)
            print(
                f"ECG upload -> on ECG worklist ({args.studies} uploads, 15 leads at 1000 Hz): "
                f"p50 {statistics.median(ecg_latencies) * 1000:.0f} ms, "
                f"p95 {q[18] * 1000:.0f} ms, max {max(ecg_latencies) * 1000:.0f} ms"
            )
        finally:
            hub.proc.stop()


if __name__ == "__main__":
    main()
