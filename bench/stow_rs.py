"""STOW-RS throughput: many ~0.5 MB CT instances in one request to an embedded hub.

Run: python3 bench/stow_rs.py [--instances 400] [--runs 3]

Data: CT_small.dcm scaled to 512x512 16-bit (~0.5 MB per instance), new UIDs per run, one
study, written once into a multipart/related body file. The body is sent with a declared
Content-Length from that file by http.client, so the client does no encoding during the run.
The time is from the first byte sent to the response, which the hub sends only after every
instance is fsynced, indexed and the study is marked complete. The hub runs its embedded
default (SQLite, folder store); each run uses a fresh hub.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.helpers import dicom_file, start_hub  # noqa: E402

SIZE = 512


def make_body(path: Path, count: int) -> str:
    """Write a multipart/related body of ``count`` CT instances; returns its Content-Type."""
    template = pydicom.dcmread(dicom_file("CT_small.dcm"))
    pixels = template.pixel_array
    reps = SIZE // pixels.shape[0]
    image = np.ascontiguousarray(np.kron(pixels, np.ones((reps, reps), dtype=pixels.dtype)))
    boundary = uuid.uuid4().hex
    study, series = generate_uid(), generate_uid()
    with open(path, "wb") as out:
        for i in range(count):
            ds = template.copy()
            ds.Rows, ds.Columns = image.shape
            ds.PixelData = image.tobytes()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            out.write(f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            ds.save_as(out, enforce_file_format=True)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def one_run(tmp: Path, count: int) -> dict[str, float]:
    body = tmp / "body.bin"
    content_type = make_body(body, count)
    size = body.stat().st_size
    hub = start_hub(tmp, name="stow-bench")
    try:
        token = hub.api.login("clinic")
        conn = http.client.HTTPConnection("127.0.0.1", hub.http_port, timeout=600)
        with open(body, "rb") as fh:
            started = time.perf_counter()
            conn.request(
                "POST",
                "/dicomweb/studies",
                body=fh,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": content_type,
                    "Content-Length": str(size),
                },
            )
            reply = conn.getresponse()
            answer = json.loads(reply.read())
            elapsed = time.perf_counter() - started
        conn.close()
        stored = len(answer.get("00081199", {}).get("Value", []))
        if reply.status != 200 or stored != count:
            raise RuntimeError(f"STOW answered {reply.status} with {stored}/{count} stored")
    finally:
        hub.proc.stop()
    return {"seconds": elapsed, "mb_per_s": size / 1e6 / elapsed, "inst_per_s": count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="telehub-stow-bench-") as tmp:
            result = one_run(Path(tmp), args.instances)
        results.append(result)
        print(
            f"run {run + 1}: {args.instances} instances in {result['seconds']:.2f} s, "
            f"{result['mb_per_s']:.1f} MB/s, {result['inst_per_s']:.0f} instances/s",
            flush=True,
        )
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"median over {args.runs} runs: {median['mb_per_s']:.1f} MB/s, "
        f"{median['inst_per_s']:.0f} instances/s ({args.instances} x ~0.5 MB in one request)"
    )


if __name__ == "__main__":
    main()
