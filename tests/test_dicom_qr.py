"""Query/Retrieve over real associations: DCMTK's findscu/movescu/getscu (and pynetdicom where
a status must be read exactly) against a running hub; C-MOVE destinations registered over the
admin API and received by a real Storage SCP on loopback."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from dicom.send import send_paths
from telehub.db.models import AuditEntry
from tests.helpers import DCMTK_ENV, Hub, dataset_bytes, free_port, fresh_copy
from tests.test_dicom_receiver import hub_db

PN_UTF8 = "张^三"


@dataclass
class Sent:
    study_uid: str
    patient_id: str
    files: dict[str, Path]  # SOP Instance UID -> file as sent
    series_uids: list[str]


def _send(hub: Hub, aet: str, files: list[Path]) -> None:
    result = send_paths(files, "127.0.0.1", hub.dicom_port, aet)
    assert result.sent == len(files), result.refused


def _study(tmp: Path, names: list[str], **changes: object) -> Sent:
    study_uid = pydicom.uid.generate_uid()
    files: dict[str, Path] = {}
    series: list[str] = []
    for name in names:
        path = fresh_copy(name, tmp, study_uid=study_uid, **changes)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        files[ds.SOPInstanceUID] = path
        series.append(ds.SeriesInstanceUID)
    return Sent(study_uid, str(changes["PatientID"]), files, series)


@pytest.fixture(scope="module")
def studies(embedded_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sent]:
    """Clinic 1's study (a Chinese name; explicit LE, big endian and deflated instances) and
    clinic 2's study, both routed to the county imaging centre."""
    tmp = tmp_path_factory.mktemp("qr")
    tag = uuid.uuid4().hex[:8].upper()
    one = _study(
        tmp / "one",
        ["CT_small.dcm", "MR_small.dcm", "image_dfl.dcm"],
        PatientName=PN_UTF8,
        PatientID=f"QR1-{tag}",
        SpecificCharacterSet="ISO_IR 192",
        StudyDate="20240105",
        StudyTime="101500",
    )
    two = _study(
        tmp / "two",
        ["CT_small.dcm"],
        PatientName="Li^Si",
        PatientID=f"QR2-{tag}",
        StudyDate="20230610",
    )
    _send(embedded_hub, "CLINIC1", list(one.files.values()))
    _send(embedded_hub, "CLINIC2", list(two.files.values()))
    api = embedded_hub.api
    reader = api.login("reader")
    for sent in (one, two):
        api.wait_for(
            "/api/v1/worklist",
            reader,
            lambda body, uid=sent.study_uid: any(
                uid in c["study_instance_uids"] for c in body["cases"]
            ),
        )
    return {"one": one, "two": two}


# ----- a real Storage SCP as C-MOVE destination ---------------------------------------------
@dataclass
class Destination:
    ae_title: str
    port: int
    received: dict[str, bytes] = field(default_factory=dict)  # SOP UID -> data set bytes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


def _storage_scp(ae_title: str) -> tuple[Destination, object]:
    dest = Destination(ae_title, free_port())

    def on_store(event: evt.Event) -> int:
        # The data set bytes exactly as they came over the wire.
        with dest.lock:
            dest.received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", dest.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    return dest, server


def _register(hub: Hub, dest: Destination, facility_user: str) -> None:
    api = hub.api
    facility_id = api.post(
        "/api/v1/auth/login", {"username": facility_user, "password": "demo"}
    ).body["user"]["facility_id"]
    resp = api.post(
        "/api/v1/dicom-nodes",
        {
            "ae_title": dest.ae_title,
            "host": "127.0.0.1",
            "port": dest.port,
            "facility_id": facility_id,
            "description": "test workstation",
        },
        api.login("admin"),
    )
    assert resp.status == 201, resp.body


@pytest.fixture(scope="module")
def destinations(embedded_hub: Hub) -> Iterator[dict[str, Destination]]:
    tag = uuid.uuid4().hex[:6].upper()
    made = {}
    servers = []
    for user, name in (("clinic", "WS1"), ("clinic2", "WS2")):
        dest, server = _storage_scp(f"{name}{tag}")
        _register(embedded_hub, dest, user)
        made[user] = dest
        servers.append(server)
    yield made
    for server in servers:
        server.shutdown()  # type: ignore[attr-defined]


# ----- DCMTK helpers -----------------------------------------------------------------------
def _dcmtk(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)


def findscu(hub: Hub, tmp: Path, aet: str, keys: list[str], model: str = "-S") -> list[Dataset]:
    """Run findscu with --extract; returns the response identifiers, read by pydicom."""
    out = tmp / f"find-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    args = ["findscu", model, "-aet", aet, "-aec", "TELEHUB", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    proc = _dcmtk([*args, "127.0.0.1", str(hub.dicom_port)])
    assert proc.returncode == 0, proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def _audited(hub: Hub, action: str, remote: str) -> list[AuditEntry]:
    db = hub_db(hub)
    with db.reader() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == action, AuditEntry.remote == remote)
        ).all()
    db.dispose()
    return list(entries)


# ----- C-FIND --------------------------------------------------------------------------------
def test_find_study_wildcard_date_range_and_chinese_name(
    embedded_hub: Hub, studies: dict[str, Sent], tmp_path: Path, dcmtk: None
) -> None:
    one = studies["one"]
    found = findscu(
        embedded_hub,
        tmp_path,
        "CLINIC1",
        [
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName=张*",
            f"PatientID={one.patient_id[:5]}*",
            "StudyDate=20240101-20240131",
            "StudyTime=1000-1100",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "AccessionNumber",
            "ReferringPhysicianName",
        ],
    )
    ours = [ds for ds in found if ds.StudyInstanceUID == one.study_uid]
    assert len(ours) == 1
    ds = ours[0]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == PN_UTF8
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.RetrieveAETitle == "TELEHUB"
    assert sorted(ds.ModalitiesInStudy) == ["CT", "MR", "OT"]
    assert int(ds.NumberOfStudyRelatedSeries) == 3
    assert int(ds.NumberOfStudyRelatedInstances) == 3
    assert "ReferringPhysicianName" in ds and not ds.ReferringPhysicianName  # asked, not kept
    finds = _audited(embedded_hub, "dicom_find", "CLINIC1@127.0.0.1")
    assert any(e.detail["matches"] >= 1 and e.user_id is None for e in finds)
    # A date outside the range matches nothing.
    assert not findscu(
        embedded_hub,
        tmp_path,
        "CLINIC1",
        ["QueryRetrieveLevel=STUDY", f"PatientID={one.patient_id}", "StudyDate=-20231231"],
    )


def test_find_at_each_level(
    embedded_hub: Hub, studies: dict[str, Sent], tmp_path: Path, dcmtk: None
) -> None:
    one = studies["one"]
    patients = findscu(
        embedded_hub,
        tmp_path,
        "CLINIC1",
        [
            "QueryRetrieveLevel=PATIENT",
            f"PatientID={one.patient_id[:-2]}??",
            "PatientName",
            "NumberOfPatientRelatedStudies",
        ],
        model="-P",
    )
    assert [(p.PatientID, str(p.PatientName)) for p in patients] == [(one.patient_id, PN_UTF8)]
    assert int(patients[0].NumberOfPatientRelatedStudies) == 1

    series = findscu(
        embedded_hub,
        tmp_path,
        "CLINIC1",
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={one.study_uid}",
            "SeriesInstanceUID",
            "Modality=C*",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    assert {s.Modality for s in series} == {"CT"}
    assert len(series) == 1 and int(series[0].NumberOfSeriesRelatedInstances) == 1

    wanted = sorted(one.files)[:2]
    images = findscu(
        embedded_hub,
        tmp_path,
        "CLINIC1",
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={one.study_uid}",
            f"SOPInstanceUID={wanted[0]}\\{wanted[1]}",
            "SOPClassUID",
            "InstanceNumber",
        ],
    )
    assert sorted(i.SOPInstanceUID for i in images) == wanted
    assert all(i.SOPClassUID for i in images)


def test_facilities_see_only_their_cases(
    embedded_hub: Hub, studies: dict[str, Sent], tmp_path: Path, dcmtk: None
) -> None:
    one, two = studies["one"], studies["two"]
    uids = f"StudyInstanceUID={one.study_uid}\\{two.study_uid}"

    def seen(aet: str) -> set[str]:
        found = findscu(embedded_hub, tmp_path, aet, ["QueryRetrieveLevel=STUDY", uids])
        return {ds.StudyInstanceUID for ds in found}

    assert seen("CLINIC1") == {one.study_uid}
    assert seen("CLINIC2") == {two.study_uid}
    # The county hospital reads for both townships: both cases were routed to its centre.
    assert seen("COUNTYHOSP") == {one.study_uid, two.study_uid}


def _find_status(hub: Hub, identifier: Dataset, model: str = "study") -> list[int]:
    ae = AE("CLINIC1")
    sop = (
        StudyRootQueryRetrieveInformationModelFind
        if model == "study"
        else PatientRootQueryRetrieveInformationModelFind
    )
    ae.add_requested_context(sop)
    assoc = ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    try:
        return [int(status.Status) for status, _ in assoc.send_c_find(identifier, sop)]
    finally:
        assoc.release()


def test_bad_find_identifiers_get_failure_statuses(embedded_hub: Hub) -> None:
    no_level = Dataset()
    no_level.PatientName = "*"
    assert _find_status(embedded_hub, no_level) == [0xA900]

    patient_in_study_root = Dataset()
    patient_in_study_root.QueryRetrieveLevel = "PATIENT"
    assert _find_status(embedded_hub, patient_in_study_root) == [0xA900]

    bad_date = Dataset()
    bad_date.QueryRetrieveLevel = "STUDY"
    bad_date.StudyDate = "2024-01-0X"
    assert _find_status(embedded_hub, bad_date) == [0xC000]


# ----- C-MOVE --------------------------------------------------------------------------------
def test_movescu_sends_the_study_as_received(
    embedded_hub: Hub,
    studies: dict[str, Sent],
    destinations: dict[str, Destination],
    dcmtk: None,
) -> None:
    one, dest = studies["one"], destinations["clinic"]
    dest.clear()
    proc = _dcmtk(
        [
            "movescu",
            "-S",
            "-aet",
            "CLINIC1",
            "-aec",
            "TELEHUB",
            "-aem",
            dest.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={one.study_uid}",
            "127.0.0.1",
            str(embedded_hub.dicom_port),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(dest.received) == sorted(one.files)
    for sop_uid, path in one.files.items():
        assert dest.received[sop_uid] == dataset_bytes(path.read_bytes()), sop_uid
    moves = _audited(embedded_hub, "dicom_move", "CLINIC1@127.0.0.1")
    assert any(
        one.study_uid in e.detail["study_uids"] and e.detail["destination"] == dest.ae_title
        for e in moves
    )


def _move(hub: Hub, aet: str, destination: str, study_uid: str) -> list[Dataset]:
    ae = AE(aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        return [
            status
            for status, _ in assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
        ]
    finally:
        assoc.release()


def test_move_to_unknown_or_other_facilitys_destination_gives_a801(
    embedded_hub: Hub, studies: dict[str, Sent], destinations: dict[str, Destination]
) -> None:
    one = studies["one"]
    assert [int(s.Status) for s in _move(embedded_hub, "CLINIC1", "NOSUCHAE", one.study_uid)] == [
        0xA801
    ]
    other = destinations["clinic2"].ae_title
    assert [int(s.Status) for s in _move(embedded_hub, "CLINIC1", other, one.study_uid)] == [0xA801]


def test_clinic2_cannot_retrieve_clinic1s_study(
    embedded_hub: Hub, studies: dict[str, Sent], destinations: dict[str, Destination]
) -> None:
    dest = destinations["clinic2"]
    dest.clear()
    statuses = _move(embedded_hub, "CLINIC2", dest.ae_title, studies["one"].study_uid)
    assert int(statuses[-1].Status) == 0x0000
    assert int(statuses[-1].NumberOfCompletedSuboperations) == 0
    assert dest.received == {}


# ----- C-GET ---------------------------------------------------------------------------------
def test_getscu_retrieves_a_series(
    embedded_hub: Hub, studies: dict[str, Sent], tmp_path: Path, dcmtk: None
) -> None:
    one = studies["one"]
    ct = next(p for p in one.files.values() if pydicom.dcmread(p).Modality == "CT")
    ct_ds = pydicom.dcmread(ct)
    proc = _dcmtk(
        [
            "getscu",
            "-S",
            "-aet",
            "CLINIC1",
            "-aec",
            "TELEHUB",
            "-od",
            str(tmp_path),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={one.study_uid}",
            "-k",
            f"SeriesInstanceUID={ct_ds.SeriesInstanceUID}",
            "127.0.0.1",
            str(embedded_hub.dicom_port),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    got = [pydicom.dcmread(p) for p in tmp_path.iterdir()]
    assert [g.SOPInstanceUID for g in got] == [ct_ds.SOPInstanceUID]
    assert got[0].PixelData == ct_ds.PixelData


def test_get_over_the_same_association_is_byte_identical(
    embedded_hub: Hub, studies: dict[str, Sent]
) -> None:
    one = studies["one"]
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE("CLINIC1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    # Each SOP class in the syntax it was stored in, so the SCP can send the stored bytes.
    pairs = {
        (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        for ds in map(pydicom.dcmread, one.files.values())
    }
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, [syntax])
    for sop_class in {sop_class for sop_class, _ in pairs}:
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1",
        embedded_hub.dicom_port,
        ae_title="TELEHUB",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = one.study_uid
    try:
        statuses = [
            s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    final = statuses[-1]
    assert int(final.Status) == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 3
    assert sorted(received) == sorted(one.files)
    for sop_uid, path in one.files.items():
        assert received[sop_uid] == dataset_bytes(path.read_bytes()), sop_uid


# ----- admin API -----------------------------------------------------------------------------
def test_dicom_nodes_api_is_admin_only_and_validates(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    admin, clinic = api.login("admin"), api.login("clinic")
    facility_id = api.post("/api/v1/auth/login", {"username": "clinic", "password": "demo"}).body[
        "user"
    ]["facility_id"]
    good = {"ae_title": "APITEST1", "host": "127.0.0.1", "port": 11113, "facility_id": facility_id}

    for method, path in (("GET", "/api/v1/dicom-nodes"), ("DELETE", "/api/v1/dicom-nodes/1")):
        resp = api.request(method, path, clinic)
        assert resp.status == 403 and resp.body["error"] == "not_an_admin"
    resp = api.post("/api/v1/dicom-nodes", good, clinic)
    assert resp.status == 403 and resp.body["error"] == "not_an_admin"

    for change, code in (
        ({"port": 70000}, "bad_port"),
        ({"port": "104"}, "bad_port"),
        ({"ae_title": ""}, "bad_ae_title"),
        ({"ae_title": "WAY-TOO-LONG-AE-TITLE"}, "bad_ae_title"),
        ({"ae_title": "BACK\\SLASH"}, "bad_ae_title"),
        ({"host": "bad host"}, "bad_host"),
        ({"facility_id": 999999}, "bad_facility"),
    ):
        resp = api.post("/api/v1/dicom-nodes", {**good, **change}, admin)
        assert resp.status == 400, (change, resp.body)
        assert resp.body["error"] == code and resp.body["message"]
    assert api.request("POST", "/api/v1/dicom-nodes", admin, raw=b"{no").status == 400

    created = api.post("/api/v1/dicom-nodes", good, admin)
    assert created.status == 201 and created.body["ae_title"] == "APITEST1"
    assert api.post("/api/v1/dicom-nodes", good, admin).status == 409
    listed = api.get("/api/v1/dicom-nodes", admin).body["nodes"]
    assert any(n["ae_title"] == "APITEST1" for n in listed)
    node = f"/api/v1/dicom-nodes/{created.body['id']}"
    assert api.request("DELETE", node, admin).status == 200
    assert api.request("DELETE", node, admin).status == 404
    spec = api.get("/api/v1/openapi.json", admin).body
    assert {"/api/v1/dicom-nodes", "/api/v1/dicom-nodes/{id}"} <= set(spec["paths"])


def test_bad_retrieve_identifiers_get_failure_statuses(
    embedded_hub: Hub, destinations: dict[str, Destination]
) -> None:
    ae = AE("CLINIC1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    no_key = Dataset()
    no_key.QueryRetrieveLevel = "SERIES"  # but no SeriesInstanceUID
    try:
        moved = list(
            assoc.send_c_move(
                no_key,
                destinations["clinic"].ae_title,
                StudyRootQueryRetrieveInformationModelMove,
            )
        )
        got = list(assoc.send_c_get(no_key, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert int(moved[-1][0].Status) == 0xC514  # pynetdicom: unable to process
    assert int(got[-1][0].Status) == 0xA900
