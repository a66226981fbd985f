"""The same foundation path in the scaled mode, over real connections: PostgreSQL, an S3 server,
Redis (or RabbitMQ) as broker, and the Celery worker as a separate process. Only configuration
differs from the embedded test."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from kombu import Connection

from tests.helpers import Hub, Proc, S3Server, dataset_bytes, dicom_file, start_hub
from tests.test_e2e_embedded import run_report_path


def _purge(broker_url: str) -> None:
    """Drop messages a previous, interrupted run may have left on the shared test broker."""
    # The queue may not exist yet.
    with Connection(broker_url, connect_timeout=3) as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_purge("telehub")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "rabbitmq_url")
    _purge(url)
    return url


@pytest.fixture
def scaled_hub(
    tmp_path: Path, postgres_url: str, s3_server: S3Server, broker_url: str
) -> Iterator[tuple[Hub, Proc, str]]:
    bucket = f"telehub-{tmp_path.name.lower().replace('_', '-')[-40:]}".strip("-")
    env = {
        "TELEHUB_DATABASE_URL": postgres_url,
        "TELEHUB_STORAGE_URL": s3_server.url(bucket),
        "TELEHUB_BROKER_URL": broker_url,
        "TELEHUB_EMBEDDED_WORKER": "false",
    }
    hub = start_hub(tmp_path, env)
    worker = Proc(
        ["worker", "--pool", "prefork", "--concurrency", "2"], hub.env, tmp_path / "worker.log"
    ).start()
    try:
        yield hub, worker, bucket
    finally:
        worker.stop()
        hub.proc.stop()


def test_clinic_send_to_signed_report_scaled(
    scaled_hub: tuple[Hub, Proc, str], s3_server: S3Server
) -> None:
    hub, worker, bucket = scaled_hub
    assert "worker external" in hub.proc.output()  # no embedded worker: routing is the worker's
    run_report_path(hub)

    # The instances are objects in the S3 bucket, stored as received.
    # (They reach it through the hub's local spool, moved within moments of arriving.)
    client = s3_server.client()
    deadline = time.monotonic() + 30
    while True:
        keys = [o.object_name for o in client.list_objects(bucket, "dicom/", recursive=True)]
        if len(keys) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(keys) == 2, keys
    stored = {}
    for key in keys:
        response = client.get_object(bucket, key)
        try:
            stored[key.rsplit("/", 1)[1]] = response.read()
        finally:
            response.close()
            response.release_conn()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        sop_uid = pydicom.dcmread(dicom_file(name)).SOPInstanceUID
        assert dataset_bytes(stored[f"{sop_uid}.dcm"]) == dataset_bytes(
            dicom_file(name).read_bytes()
        )
    assert "telehub.route_case" in worker.output()
