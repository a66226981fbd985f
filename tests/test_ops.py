"""Operations endpoints: readiness names the dependency that is down; metrics are read from the
database, so every hub process shows the same consortium-wide figures."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pydicom
from prometheus_client.parser import text_string_to_metric_families

from dicom.send import send_paths
from tests.helpers import Hub, free_port, fresh_copy, start_hub


def _metrics(hub: Hub) -> dict[str, list]:
    resp = hub.api.get("/metrics")  # no token: a Prometheus scraper has none
    assert resp.status == 200
    text = resp.body.decode() if isinstance(resp.body, bytes) else resp.body
    return {m.name: m.samples for m in text_string_to_metric_families(text)}


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_ready_when_everything_answers(embedded_hub: Hub) -> None:
    resp = embedded_hub.api.get("/readyz")
    assert resp.status == 200, resp.body
    assert resp.body["status"] == "ready"
    assert {name for name, c in resp.body["checks"].items() if c["ok"]} == {
        "database",
        "object_store",
        "broker",
        "dicom_receivers",
    }


def test_not_ready_names_the_dependency_that_is_down(tmp_path: Path) -> None:
    dead = free_port()
    hub = start_hub(
        tmp_path,
        extra_env={
            "TELEHUB_STORAGE_URL": f"s3://k:s@127.0.0.1:{dead}/telehub",
            "TELEHUB_BROKER_URL": f"redis://127.0.0.1:{dead}/0",
            "TELEHUB_EMBEDDED_WORKER": "false",
        },
    )
    try:
        resp = hub.api.get("/readyz")
        assert resp.status == 503
        checks = resp.body["checks"]
        assert checks["database"]["ok"]
        assert not checks["object_store"]["ok"] and checks["object_store"]["error"]
        assert not checks["broker"]["ok"] and checks["broker"]["error"]
        assert hub.api.get("/healthz").status == 200  # alive, just not ready
    finally:
        hub.proc.stop()


def test_metrics_count_ingest_cases_and_turnaround(embedded_hub: Hub, tmp_path: Path) -> None:
    before = _metrics(embedded_hub)
    received = _value(
        before["telehub_instances_received"], "telehub_instances_received_total", protocol="dimse"
    )
    path = fresh_copy("CT_small.dcm", tmp_path, PatientID=f"OPS-{uuid.uuid4().hex[:8]}")
    study_uid = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", embedded_hub.dicom_port, "CLINIC1").sent == 1
    api = embedded_hub.api
    reader = api.login("reader")
    case_id = api.wait_for(
        "/api/v1/worklist",
        reader,
        lambda body: next(
            (c["id"] for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
    )
    assert api.post(f"/api/v1/cases/{case_id}/claim", token=reader).status == 200
    signed = api.post(
        f"/api/v1/cases/{case_id}/reports", {"text": "正常 Normal.", "status": "final"}, reader
    )
    assert signed.status == 201, signed.body

    time.sleep(10.5)  # the figures are cached for 10 s
    after = _metrics(embedded_hub)
    assert (
        _value(
            after["telehub_instances_received"],
            "telehub_instances_received_total",
            protocol="dimse",
        )
        >= received + 1
    )
    assert (
        _value(after["telehub_instance_bytes_received"], "telehub_instance_bytes_received_total")
        > 0
    )
    assert _value(after["telehub_cases"], "telehub_cases", status="final") >= 1
    assert "telehub_queue_depth" in after and "telehub_sla_breaches" in after
    tat = after["telehub_report_turnaround_seconds"]
    assert _value(tat, "telehub_report_turnaround_seconds_count", priority="routine") >= 1
    inf = _value(tat, "telehub_report_turnaround_seconds_bucket", priority="routine", le="+Inf")
    assert inf == _value(tat, "telehub_report_turnaround_seconds_count", priority="routine")
    text = api.get("/metrics").body
    assert b"PatientName" not in text and study_uid.encode() not in text


def test_json_logs_one_object_per_line_without_patient_names(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, extra_env={"TELEHUB_LOG_FORMAT": "json"})
    try:
        name = f"LOGTEST^{uuid.uuid4().hex[:6].upper()}"
        path = fresh_copy("CT_small.dcm", tmp_path / "in", PatientName=name, PatientID="LOG-1")
        assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
        reader = hub.api.login("reader")
        hub.api.wait_for("/api/v1/worklist", reader, lambda body: body["cases"])
        assert hub.api.post("/api/v1/auth/login", {"username": "x", "password": "y"}).status == 401
    finally:
        hub.proc.stop()
    records = []
    for line in hub.proc.output().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert len(records) >= 5
    assert {"time", "level", "logger", "message"} <= set(records[0])
    loggers = {r["logger"] for r in records}
    assert "telehub.serve" in loggers and "dicom.scp" in loggers  # hub and receiver children
    assert name.split("^")[1] not in hub.proc.output()  # no patient name in ordinary logs
