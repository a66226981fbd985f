"""The local spool in front of S3: ingest does not wait for (or fail with) the object store,
and spooled objects reach it, byte for byte, once it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom

from dicom.send import send_paths
from tests.helpers import S3Server, dataset_bytes, free_port, fresh_copy, start_hub, wait_port


def _moto(port: int):  # type: ignore[no-untyped-def]
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    return server


def _spooled(data: Path) -> list[Path]:
    root = data / "spool" / "objects"
    return [p for p in root.rglob("*.dcm") if ".tmp" not in p.parts]


def _bucket_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    if not client.bucket_exists(bucket):
        return {}
    out = {}
    for obj in client.list_objects(bucket, recursive=True):
        response = client.get_object(bucket, obj.object_name)
        try:
            out[obj.object_name.rsplit("/", 1)[1]] = response.read()
        finally:
            response.close()
            response.release_conn()
    return out


def test_s3_outage_does_not_stop_ingest_and_spool_drains_after(tmp_path: Path) -> None:
    port = free_port()
    s3 = S3Server(f"127.0.0.1:{port}")
    bucket = "spool-test"
    server = _moto(port)
    hub = start_hub(tmp_path, {"TELEHUB_STORAGE_URL": s3.url(bucket)})
    try:
        server.stop()  # the object store goes away
        study = None
        paths = []
        for _ in range(3):
            path = fresh_copy("CT_small.dcm", tmp_path / "in", study_uid=study)
            study = study or pydicom.dcmread(path).StudyInstanceUID
            paths.append(path)
        result = send_paths(paths, "127.0.0.1", hub.dicom_port, "CLINIC1")
        assert result.sent == 3, result.refused  # durable in the spool, so acknowledged
        assert len(_spooled(hub.data)) == 3

        # Routing does not wait for the object store either.
        api = hub.api
        reader = api.login("reader")
        api.wait_for(
            "/api/v1/worklist",
            reader,
            lambda body: [c for c in body["cases"] if study in c["study_instance_uids"]] or None,
        )

        server = _moto(port)  # back, and empty: the mover re-creates the bucket
        deadline = time.monotonic() + 30
        while _spooled(hub.data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _spooled(hub.data) == []
        stored = _bucket_objects(s3, bucket)
        for path in paths:
            sop_uid = pydicom.dcmread(path).SOPInstanceUID
            assert dataset_bytes(stored[f"{sop_uid}.dcm"]) == dataset_bytes(path.read_bytes())
        assert "could not move" in hub.proc.output()
    finally:
        hub.proc.stop()
        server.stop()
