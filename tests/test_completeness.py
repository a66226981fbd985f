"""Study completeness kept in the database: a quiet period after the transfer ends, an operator's
"complete now", a study that grows afterwards; and the policy for re-sent instances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom.send import send_paths
from tests.helpers import Api, Hub, dataset_bytes, fresh_copy, start_hub

QUIET = 2.0


@pytest.fixture(scope="module")
def quiet_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = start_hub(
        tmp_path_factory.mktemp("quiet"), {"TELEHUB_STUDY_QUIET_SECONDS": str(QUIET)}, "quiet"
    )
    yield hub
    hub.proc.stop()


def _send(hub: Hub, path: Path) -> None:
    assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1


def _case(api: Api, token: str, study_uid: str) -> dict:
    cases = api.get("/api/v1/cases?limit=500", token).body["cases"]
    found = [c for c in cases if study_uid in c["study_instance_uids"]]
    assert len(found) == 1
    return found[0]


def _events(api: Api, token: str, case_id: int, kind: str) -> list[dict]:
    timeline = api.get(f"/api/v1/cases/{case_id}", token).body["timeline"]
    return [e for e in timeline if e["kind"] == kind]


def test_quiet_period_then_growth(quiet_hub: Hub, tmp_path: Path) -> None:
    api = quiet_hub.api
    clinic = api.login("clinic")
    first = fresh_copy("CT_small.dcm", tmp_path)
    study = pydicom.dcmread(first).StudyInstanceUID
    _send(quiet_hub, first)
    time.sleep(QUIET / 2)
    _send(quiet_hub, fresh_copy("CT_small.dcm", tmp_path, study_uid=study))  # a 2nd association
    last_sent = time.monotonic()
    assert _case(api, clinic, study)["status"] == "receiving"

    while (case := _case(api, clinic, study))["status"] == "receiving":
        assert time.monotonic() - last_sent < 30, "never completed"
        time.sleep(0.1)
    assert time.monotonic() - last_sent >= QUIET - 0.2  # not before the quiet period
    assert case["instance_count"] == 2
    complete = _events(api, clinic, case["id"], "study_complete")
    assert len(complete) == 1
    assert complete[0]["detail"]["instances"] == 2
    assert "quiet" in complete[0]["detail"]["reason"]

    # A later instance joins the same case, and the timeline says the study grew.
    _send(quiet_hub, fresh_copy("CT_small.dcm", tmp_path, study_uid=study))
    deadline = time.monotonic() + 30
    while not (grew := _events(api, clinic, case["id"], "study_grew")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert grew[0]["detail"]["added"] == 1
    assert _case(api, clinic, study)["instance_count"] == 3
    assert len(_events(api, clinic, case["id"], "study_complete")) == 1


def test_operator_marks_complete_at_once(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, {"TELEHUB_STUDY_QUIET_SECONDS": "600"})
    try:
        api = hub.api
        clinic, reader = api.login("clinic"), api.login("reader")
        path = fresh_copy("CT_small.dcm", tmp_path)
        study = pydicom.dcmread(path).StudyInstanceUID
        _send(hub, path)
        case_id = _case(api, clinic, study)["id"]
        assert api.post(f"/api/v1/cases/{case_id}/complete", {}, reader).status == 403
        other = api.post(f"/api/v1/cases/{case_id}/complete", {}, api.login("clinic2"))
        assert other.status == 404
        done = api.post(f"/api/v1/cases/{case_id}/complete", {}, clinic)
        assert done.status == 200, done.body
        api.wait_for(
            "/api/v1/worklist",
            reader,
            lambda body: [c for c in body["cases"] if c["id"] == case_id] or None,
            timeout=15,
        )
        marked = _events(api, clinic, case_id, "marked_complete")
        assert len(marked) == 1
    finally:
        hub.proc.stop()


def _stored_bytes(hub: Hub, sop_uid: str) -> bytes:
    import sqlite3

    with sqlite3.connect(hub.data / "telehub.sqlite3") as conn:
        key = conn.execute(
            "SELECT object_key FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()[0]
    objects = list((hub.data / "objects").glob("**/" + key.rsplit("/", 1)[1]))
    assert len(objects) == 1  # never a second copy
    return objects[0].read_bytes()


@pytest.mark.parametrize("policy", ["keep", "replace"])
def test_resent_instance_with_other_content(policy: str, tmp_path: Path) -> None:
    hub = start_hub(tmp_path, {"TELEHUB_DICOM_DUPLICATES": policy})
    try:
        api = hub.api
        clinic = api.login("clinic")
        first = fresh_copy("CT_small.dcm", tmp_path / "a")
        ds = pydicom.dcmread(first)
        _send(hub, first)
        _send(hub, first)  # the same bytes again: nothing to record
        changed = tmp_path / "b.dcm"
        ds.StudyDescription = "corrected"
        ds.save_as(changed)
        _send(hub, changed)  # same SOP Instance UID, other content: still success

        case = _case(api, clinic, ds.StudyInstanceUID)
        assert case["instance_count"] == 1
        resent = _events(api, clinic, case["id"], "instance_resent")
        assert len(resent) == 1
        expected = {"keep": "kept_first", "replace": "replaced"}[policy]
        assert resent[0]["detail"]["action"] == expected
        stored = _stored_bytes(hub, ds.SOPInstanceUID)
        kept = first if policy == "keep" else changed
        assert dataset_bytes(stored) == dataset_bytes(kept.read_bytes())
    finally:
        hub.proc.stop()
