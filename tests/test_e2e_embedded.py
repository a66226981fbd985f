"""The foundation path, end to end, in the embedded default: a township clinic's modality
C-STOREs a study, the county reader claims and signs it, the clinic reads the report, and the
case's turnaround time is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom.send import send_paths
from tests.helpers import Api, Hub, dicom_file


def run_report_path(hub: Hub) -> None:
    """Shared by the embedded and scaled tests: send CT and MR, then the HTTP path."""
    api: Api = hub.api
    files = [dicom_file("CT_small.dcm"), dicom_file("MR_small.dcm")]
    result = send_paths(files, "127.0.0.1", hub.dicom_port, "CLINIC1")
    assert result.sent == 2, result.refused
    study_uids = {
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
        "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
    }

    reader = api.login("reader")
    items = api.wait_for(
        "/api/v1/worklist",
        reader,
        lambda body: (
            [c for c in body["cases"] if set(c["study_instance_uids"]) & study_uids]
            if len([c for c in body["cases"] if set(c["study_instance_uids"]) & study_uids]) == 2
            else None
        ),
    )
    assert {u for c in items for u in c["study_instance_uids"]} == study_uids
    for case in items:
        assert case["status"] == "routed"
        assert case["priority"] == "routine"
        assert case["origin"]["code"] == "T1"
        assert case["arrived_at"]
    ct_case = next(c for c in items if "CT" in c["modalities"])
    case_id = ct_case["id"]

    claimed = api.post(f"/api/v1/cases/{case_id}/claim", token=reader)
    assert claimed.status == 200, claimed.body
    assert claimed.body["status"] == "claimed"
    assert claimed.body["reader"]["username"] == "reader"

    prelim = api.post(
        f"/api/v1/cases/{case_id}/reports",
        {"text": "初步意见：未见明显异常。", "status": "preliminary"},
        reader,
    )
    assert prelim.status == 201, prelim.body
    final = api.post(
        f"/api/v1/cases/{case_id}/reports",
        {"text": "CT: no acute abnormality. 未见明显异常。", "status": "final"},
        reader,
    )
    assert final.status == 201, final.body
    assert final.body["version"] == 2

    clinic = api.login("clinic")
    mine = api.get("/api/v1/cases?limit=500", clinic)
    assert mine.status == 200
    assert case_id in [c["id"] for c in mine.body["cases"]]
    detail = api.get(f"/api/v1/cases/{case_id}", clinic)
    assert detail.status == 200, detail.body
    case = detail.body
    assert case["status"] == "final"
    assert case["reports"][-1]["status"] == "final"
    assert "no acute abnormality" in case["reports"][-1]["text"]
    # The image, then (once the worker stored it) the report as a Basic Text SR in the study.
    assert case["studies"][0]["instance_count"] in (1, 2)
    kinds = [e["kind"] for e in case["timeline"]]
    assert kinds[:4] == ["first_instance", "study_complete", "routed", "claimed"]
    assert kinds.index("report_final") < kinds.index("delivered")

    tat = case["tat"]
    for part in (
        "first_instance_to_complete",
        "complete_to_routed",
        "routed_to_claimed",
        "claimed_to_final",
        "complete_to_final",
    ):
        assert tat[part] is not None and tat[part] >= 0, tat
    parts = tat["complete_to_routed"] + tat["routed_to_claimed"] + tat["claimed_to_final"]
    assert parts == pytest.approx(tat["complete_to_final"], abs=0.005)

    # The MR case is still open on the worklist; the finished CT case left it.
    left = api.get("/api/v1/worklist", reader).body["cases"]
    assert case_id not in [c["id"] for c in left]


def test_clinic_send_to_signed_report_embedded(embedded_hub: Hub) -> None:
    run_report_path(embedded_hub)


def test_killed_embedded_worker_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    """kill -9 of the embedded worker and the DICOM receivers: the hub starts new ones and the
    case is still received and routed."""
    import os
    import signal
    import subprocess
    import time

    from tests.helpers import fresh_copy, start_hub, wait_port

    hub = start_hub(tmp_path)
    try:
        pid = hub.proc.popen.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        workers = [int(p) for p in children.stdout.split()]
        assert len(workers) >= 2, "the hub has no worker or receiver child"
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        time.sleep(0.5)
        wait_port(hub.dicom_port)
        path = fresh_copy("CT_small.dcm", tmp_path / "in")
        assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
        api = hub.api
        reader = api.login("reader")
        started = time.monotonic()
        api.wait_for("/api/v1/worklist", reader, lambda body: body["cases"] or None, timeout=60)
        assert time.monotonic() - started < 60
        assert "worker exited with" in hub.proc.output()
        assert "dicom-receiver-1 exited with" in hub.proc.output()
    finally:
        hub.proc.stop()
