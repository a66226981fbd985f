"""Fuzzing the running hub: its HTTP API against its own OpenAPI document (schemathesis), and
mutated DICOM (C-STORE, STOW-RS) and ECG uploads. Whatever arrives, the hub answers with a
proper status, keeps serving, and stores either a complete, readable object or nothing.

Seeded and bounded (a minute or two); TELEHUB_FUZZ_EXAMPLES runs the API part for longer."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import sqlite3
import struct
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from pydicom.filereader import read_file_meta_info
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.status import code_to_category
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import ECG_DATA, Hub, dataset_bytes, dicom_file, start_hub
from tests.test_dicomweb_wado import split_multipart
from tests.test_ecg_api import upload as ecg_upload

SEED = 20261125
#: Generated requests per API operation; TELEHUB_FUZZ_EXAMPLES=50 for a longer run.
EXAMPLES = int(os.environ.get("TELEHUB_FUZZ_EXAMPLES", "3"))
#: Streams that never end: the server-sent events feed and the consult signalling WebSocket
#: (an HTTP upgrade). A generated request would hold a connection open until its timeout and
#: check nothing; both have their own tests (test_live_updates.py, test_consults.py).
STREAMS = r"^/api/v1/events$|^/api/v1/consults/\{id\}/ws$"
STOW_MEDIA = 'multipart/related; type="application/dicom"'
BOUNDARY = "fuzz-boundary-7d1c"
#: The users the API is fuzzed as: a clinic (sees its own cases) and an administrator.
USERS = ("clinic", "admin")


# ----- hubs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of its own: the administrator's fuzzing run changes the consortium at random."""
    hub = start_hub(tmp_path_factory.mktemp("fuzz"), name="fuzz")
    yield hub
    hub.proc.stop()


@pytest.fixture(scope="module")
def media_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A second hub for mutated DICOM and ECG: its index is compared before and after each
    upload, so no other test may store into it."""
    hub = start_hub(tmp_path_factory.mktemp("fuzz-media"), name="media")
    yield hub
    hub.proc.stop()


def index(hub: Hub, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the hub's SQLite index (read-only) to see what was really stored."""
    db = sqlite3.connect(f"file:{hub.data / 'telehub.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# ----- 1. the HTTP API against its OpenAPI document ------------------------------------------
@pytest.fixture(scope="module")
def tokens(fuzz_hub: Hub) -> dict[str, str]:
    return {user: fuzz_hub.api.login(user) for user in USERS}


@pytest.fixture(scope="module")
def user_ids(fuzz_hub: Hub, tokens: dict[str, str]) -> set[int]:
    """The accounts the fuzzing must not disable: its own, and the reader used afterwards."""
    users = fuzz_hub.api.get("/api/v1/consortium/users", tokens["admin"]).body["users"]
    return {u["id"] for u in users if u["username"] in (*USERS, "reader")}


@pytest.fixture(scope="module")
def api_schema(fuzz_hub: Hub, tokens: dict[str, str]) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{fuzz_hub.http_port}/api/v1/openapi.json",
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        document = json.load(resp)
    return schemathesis.openapi.from_dict(document)


def _small_instance() -> bytes:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _related(parts: list[bytes]) -> bytes:
    body = b"".join(
        f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
        for part in parts
    )
    return body + f"\r\n--{BOUNDARY}--\r\n".encode()


# STOW-RS bodies: a real instance, random bytes, or both, as multipart/related parts.
schemathesis.openapi.media_type(
    STOW_MEDIA,
    st.lists(
        st.one_of(st.builds(_small_instance), st.binary(max_size=512)), min_size=0, max_size=3
    ).map(_related),
)


def _without_our_token(response: Any) -> bool:
    sent = response.request.headers.get("Authorization", "")
    return not sent.startswith("Bearer ") or len(sent) < 20


def documented_status(ctx: Any, response: Any, case: Any) -> bool | None:
    """status_code_conformance, except where the document cannot be complete: a 401 to a
    request schemathesis sent without our token (every route but health needs one), and any
    4xx refusal of a request that breaks the document itself (e.g. 400 for "null,null" where
    the path wants an integer id)."""
    if response.status_code == 401 and _without_our_token(response):
        return None
    if 400 <= response.status_code < 500 and case.meta and _negative(case):
        return None
    return status_code_conformance(ctx, response, case)


def _negative(case: Any) -> bool:
    mode = getattr(case.meta.generation, "mode", None)
    return getattr(mode, "value", "") == "negative"


CHECKS = [
    not_a_server_error,
    documented_status,
    content_type_conformance,
    response_schema_conformance,
]
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=STREAMS)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: Any, fuzz_hub: Hub, tokens: dict[str, str], user_ids: set[int]) -> None:
    """Every operation, as a clinic and as an administrator: no 5xx, documented statuses,
    content types and bodies. Logout gets a spare token; the fuzzing accounts themselves are
    not edited."""
    base_url = f"http://127.0.0.1:{fuzz_hub.http_port}"
    if case.operation.path == "/api/v1/consortium/users/{id}":
        # Disabling or demoting the fuzzing accounts would turn the rest of the run into 401s.
        assume((case.path_parameters or {}).get("id") not in user_ids)
    if case.media_type == STOW_MEDIA:
        case.headers = {
            **(case.headers or {}),
            "Content-Type": f"{STOW_MEDIA}; boundary={BOUNDARY}",
        }
    logout = case.operation.path == "/api/v1/auth/logout"
    for user in USERS:
        token = tokens[user]
        if logout:  # logging out revokes the token it is sent with: a spare one, then
            token = _SPARE.get(user) or _SPARE.setdefault(user, fuzz_hub.api.login(user))
        response = case.call_and_validate(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            checks=CHECKS,
            timeout=30,
        )
        if logout and response.status_code < 300:
            _SPARE.pop(user, None)


#: Tokens handed to the logout operation, until one is revoked.
_SPARE: dict[str, str] = {}


def test_api_still_serves_after_fuzz(fuzz_hub: Hub, tokens: dict[str, str]) -> None:
    api = fuzz_hub.api
    assert api.get("/healthz").status == 200
    assert api.get("/api/v1/cases?limit=5", tokens["clinic"]).status == 200
    assert api.get("/api/v1/consortium/users", tokens["admin"]).status == 200


# ----- 2. mutated DICOM over C-STORE and STOW-RS ---------------------------------------------
#: Small pydicom test files: explicit VR little endian CT, big endian MR, an ECG waveform.
DICOM_SOURCES = ("CT_small.dcm", "MR_small_bigendian.dcm", "waveform_ecg.dcm")
#: Elements whose length field gets corrupted (found by their tag in the encoded bytes).
LENGTH_TAGS = ((0x0008, 0x0018), (0x0010, 0x0010), (0x0020, 0x000D), (0x0028, 0x0010))
#: Required or important attributes removed one at a time.
DELETED = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "SOPClassUID")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}


def _fresh(name: str, **delete: bool) -> tuple[bytes, int]:
    """Part 10 bytes of a test file with new UIDs, and where its data set starts."""
    ds = pydicom.dcmread(dicom_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in delete:
        delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data, len(data) - len(dataset_bytes(data))


def _corrupt_length(data: bytes, start: int, rng: random.Random, ts: str) -> bytes:
    """Overwrite the length field of one element found by its tag (explicit or implicit VR,
    either byte order)."""
    big = ts == "1.2.840.10008.1.2.2"
    order = ">" if big else "<"
    found = [
        (tag, pos)
        for tag in LENGTH_TAGS
        if (pos := data.find(struct.pack(order + "HH", *tag), start)) >= 0
    ]
    _, pos = rng.choice(found)
    out = bytearray(data)
    value = rng.choice([0, 1, 3, 0xFFFF, 0xFFFFFFFF, len(data), 0x7FFFFFFF])
    if ts == "1.2.840.10008.1.2":  # implicit VR: a 4-byte length after the tag
        out[pos + 4 : pos + 8] = struct.pack("<I", value)
    elif bytes(out[pos + 4 : pos + 6]) in _LONG_VRS:
        out[pos + 8 : pos + 12] = struct.pack(order + "I", value)
    else:
        out[pos + 6 : pos + 8] = struct.pack(order + "H", value & 0xFFFF)
    return bytes(out)


def dicom_mutations(seed: int, per_source: int) -> list[tuple[str, bytes, int]]:
    """(what was done, Part 10 bytes, where the data set starts): seeded byte flips,
    truncations, corrupt length fields and deleted attributes. The File Meta Information is
    left alone so that an SCU can still propose the instance; STOW-RS adds its own."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes, int]] = []
    for name in DICOM_SOURCES:
        ts = str(
            pydicom.dcmread(dicom_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
        )
        for i in range(per_source):
            kind = ("flip", "truncate", "length", "delete")[i % 4]
            data, start = _fresh(name)
            if kind == "flip":
                buf = bytearray(data)
                count = rng.choice([1, 4, 32])
                for pos in rng.sample(range(start, len(buf)), count):
                    buf[pos] = rng.randrange(256)
                out.append((f"{name}: {count} bytes flipped", bytes(buf), start))
            elif kind == "truncate":
                cut = rng.randrange(start + 1, len(data))
                out.append((f"{name}: cut at {cut} of {len(data)}", data[:cut], start))
            elif kind == "length":
                out.append((f"{name}: length field", _corrupt_length(data, start, rng, ts), start))
            else:
                keyword = DELETED[(i // 4) % len(DELETED)]
                data, start = _fresh(name, **{keyword: True})
                out.append((f"{name}: no {keyword}", data, start))
    return out


def instance_rows(hub: Hub) -> dict[str, tuple[str, str]]:
    """Every stored instance: SOP UID -> (study UID, series UID)."""
    rows = index(
        hub,
        "SELECT i.sop_uid, st.study_uid, se.series_uid FROM instances i "
        "JOIN series se ON se.id = i.series_id JOIN studies st ON st.id = se.study_id",
    )
    return {sop: (study, series) for sop, study, series in rows}


def retrieve(hub: Hub, token: str, study: str, series: str, sop: str) -> bytes:
    """The instance as WADO-RS returns it (one part of a multipart/related answer)."""
    url = (
        f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    )
    resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200, (sop, resp.status_code, resp.text[:200])
    ((_, body),) = split_multipart(resp)
    return body


def check_stored(
    hub: Hub, token: str, sop: str, where: tuple[str, str], sent: bytes | None
) -> None:
    """An instance the hub reported as stored is complete: WADO-RS gives back the data set
    bytes that were sent (where the sent file can be split into meta and data set), pydicom
    reads every element of it, and QIDO-RS finds it."""
    body = retrieve(hub, token, *where, sop)
    expected = None
    with contextlib.suppress(Exception):
        expected = dataset_bytes(sent) if sent else None
    if expected is not None:
        assert dataset_bytes(body) == expected
    ds = pydicom.dcmread(io.BytesIO(body))
    for element in ds.iterall():
        _ = element.value
    assert ds.SOPInstanceUID == sop
    found = hub.api.get(f"/dicomweb/instances?SOPInstanceUID={sop}", token)
    assert found.status == 200 and len(found.body) == 1, found.body


def check_not_stored(hub: Hub, token: str, sop: str) -> None:
    found = hub.api.get(f"/dicomweb/instances?SOPInstanceUID={sop}", token)
    if found.status == 400:  # a mutated UID that is no UID: QIDO refuses the query itself,
        # and ingest refuses such UIDs, so nothing can be stored under it
        assert found.body["error"] == "bad_parameter", found.body
        assert not re.fullmatch(r"[0-9]+(\.[0-9]+)*", sop) or len(sop) > 64, sop
        return
    assert found.status == 200 and found.body == [], found.body


def test_mutated_dicom_over_c_store(media_hub: Hub, tmp_path: Path) -> None:
    """Each mutated instance on its own association: the hub answers every C-STORE with a
    status; what it reports stored is complete, what it refuses is not in the index."""
    token = media_hub.api.login("clinic")
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes as they are, never re-encoded
    ae = AE(ae_title="CLINIC1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    outcomes: dict[str, int] = {}
    for n, (what, data, _) in enumerate(dicom_mutations(SEED, per_source=8)):
        path = tmp_path / f"m{n}.dcm"
        path.write_bytes(data)
        meta = read_file_meta_info(path)
        ae.requested_contexts = []
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
        before = instance_rows(media_hub)
        assoc = ae.associate("127.0.0.1", media_hub.dicom_port, ae_title="TELEHUB")
        assert assoc.is_established, what
        status = assoc.send_c_store(path)
        assoc.release()
        assert "Status" in status, f"{what}: no C-STORE response (association dropped)"
        category = code_to_category(status.Status)
        outcomes[category] = outcomes.get(category, 0) + 1
        new = {k: v for k, v in instance_rows(media_hub).items() if k not in before}
        if category in ("Success", "Warning"):
            assert len(new) == 1, (what, hex(status.Status), new)
            ((sop, where),) = new.items()
            check_stored(media_hub, token, sop, where, data)
        else:
            assert category == "Failure", (what, hex(status.Status))
            assert not new, (what, new)
            check_not_stored(media_hub, token, str(meta.MediaStorageSOPInstanceUID))
    assert outcomes.get("Failure") and outcomes.get("Success"), outcomes  # both paths taken
    assert media_hub.api.get("/healthz").status == 200


def _stow(hub: Hub, token: str, parts: list[bytes]) -> requests.Response:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
        for part in parts
    )
    body += f"\r\n--{boundary}--\r\n".encode()
    return requests.post(
        f"http://127.0.0.1:{hub.http_port}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'{STOW_MEDIA}; boundary="{boundary}"',
        },
        timeout=60,
    )


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom reading the mutated files
def test_mutated_dicom_over_stow_rs(media_hub: Hub) -> None:
    """Mutated instances (file meta broken too), three to a request: 200, 202 with failures,
    409 or another 4xx; every ReferencedSOP is complete, every FailedSOP absent."""
    token = media_hub.api.login("clinic")
    rng = random.Random(SEED + 1)
    items = dicom_mutations(SEED + 1, per_source=8)
    for what, data, start in list(items[:6]):  # also break the File Meta Information
        buf = bytearray(data)
        for pos in rng.sample(range(128, start), 4):
            buf[pos] = rng.randrange(256)
        items.append((f"{what}, meta broken", bytes(buf), start))
    items.append(("no DICM prefix", _fresh("CT_small.dcm")[0][132:], 0))
    rng.shuffle(items)
    answered: dict[int, int] = {}
    totals = {"stored": 0, "failed": 0}
    for i in range(0, len(items), 3):
        batch = items[i : i + 3]
        before = instance_rows(media_hub)
        resp = _stow(media_hub, token, [data for _, data, _ in batch])
        answered[resp.status_code] = answered.get(resp.status_code, 0) + 1
        whats = [w for w, _, _ in batch]
        assert 200 <= resp.status_code < 500, (whats, resp.status_code, resp.text[:300])
        assert resp.status_code in (200, 202, 409) or resp.status_code >= 400, whats
        new = {k: v for k, v in instance_rows(media_hub).items() if k not in before}
        if resp.status_code not in (200, 202, 409):
            assert resp.headers["Content-Type"].startswith("application/json"), whats
            assert {"error", "message"} <= resp.json().keys()
            assert not new, whats
            continue
        answer = resp.json()
        stored = [
            item["00081155"]["Value"][0] for item in answer.get("00081199", {}).get("Value", [])
        ]
        failed = [
            item["00081155"]["Value"][0]
            for item in answer.get("00081198", {}).get("Value", [])
            if item.get("00081155", {}).get("Value")
        ]
        assert set(stored) == set(new), (whats, stored, new)
        by_sop = {}
        for _, data, _ in batch:
            with contextlib.suppress(Exception):
                by_sop[str(pydicom.dcmread(io.BytesIO(data), force=True).SOPInstanceUID)] = data
        for sop in stored:
            check_stored(media_hub, token, sop, new[sop], by_sop.get(sop))
        for sop in failed:
            if sop not in stored:
                check_not_stored(media_hub, token, sop)
        totals["stored"] += len(stored)
        totals["failed"] += len(failed)
    assert media_hub.api.get("/healthz").status == 200
    assert totals["stored"] and totals["failed"], (totals, answered)  # both paths taken


# ----- 3. mutated ECG uploads ----------------------------------------------------------------
FIELD_VALUES = ("0", "-1", "nan", "inf", "1e308", "abc", "", "99999999999", "16x", "１２", "0/0")


def hea_mutations(seed: int, count: int) -> list[tuple[str, dict[str, bytes]]]:
    """Seeded changes to the WFDB headers of real records: fields replaced by odd values,
    lines dropped or repeated, bytes flipped, the file cut short; the signal file unchanged."""
    rng = random.Random(seed)
    records = {
        stem: {s: (ECG_DATA / f"{stem}{s}").read_bytes() for s in (".hea", ".dat")}
        for stem in ("100", "s0010_re")
    }
    out: list[tuple[str, dict[str, bytes]]] = []
    for i in range(count):
        stem = ("100", "s0010_re")[i % 2]
        hea = records[stem][".hea"]
        lines = hea.decode().split("\n")
        kind = ("field", "field", "line", "flip", "cut")[i % 5]
        if kind == "field":
            n = rng.randrange(0, min(len(lines), 4))
            fields = lines[n].split(" ")
            f = rng.randrange(len(fields))
            fields[f] = rng.choice(FIELD_VALUES)
            lines[n] = " ".join(fields)
            what, new = f"{stem}.hea line {n} field {f} = {fields[f]!r}", "\n".join(lines).encode()
        elif kind == "line":
            n = rng.randrange(len(lines))
            if rng.random() < 0.5:
                what, rest = f"{stem}.hea line {n} dropped", lines[:n] + lines[n + 1 :]
            else:
                what, rest = f"{stem}.hea line {n} twice", lines[: n + 1] + lines[n:]
            new = "\n".join(rest).encode()
        elif kind == "flip":
            buf = bytearray(hea)
            for pos in rng.sample(range(len(buf)), 3):
                buf[pos] = rng.randrange(256)
            what, new = f"{stem}.hea 3 bytes flipped", bytes(buf)
        else:
            cut = rng.randrange(1, len(hea))
            what, new = f"{stem}.hea cut at {cut}", hea[:cut]
        out.append((what, {f"{stem}.hea": new, f"{stem}.dat": records[stem][".dat"]}))
    for what, data, _ in dicom_mutations(seed, per_source=8):
        if what.startswith("waveform_ecg.dcm"):
            out.append((what, {"ecg.dcm": data}))
    return out


def ecg_counts(hub: Hub) -> tuple[int, int]:
    """ECG records and cases of the Hexi clinic (T2): the ECG uploads come from its account,
    while the C-STORE fuzzing (as CLINIC1) may still be turning waveforms into ECGs."""
    ((records, cases),) = index(
        hub,
        "SELECT (SELECT count(*) FROM ecg_records e JOIN cases c ON c.id = e.case_id "
        "WHERE c.origin_facility_id = f.id), "
        "(SELECT count(*) FROM cases c WHERE c.origin_facility_id = f.id) "
        "FROM facilities f WHERE f.code = 'T2'",
    )
    return records, cases


def test_mutated_ecg_uploads(media_hub: Hub) -> None:
    """Every mutated upload is refused with a 4xx and a JSON message, storing nothing, or
    accepted with a complete, readable ECG."""
    api = media_hub.api
    token = api.login("clinic2")
    outcomes: dict[int, int] = {}
    for what, files in hea_mutations(SEED, count=20):
        before = ecg_counts(media_hub)
        resp = ecg_upload(api, token, files)
        outcomes[resp.status] = outcomes.get(resp.status, 0) + 1
        assert resp.status == 201 or 400 <= resp.status < 500, (what, resp.status, resp.body)
        if resp.status != 201:
            assert isinstance(resp.body, dict) and resp.body.get("message"), (what, resp.body)
            assert ecg_counts(media_hub) == before, what
            continue
        assert ecg_counts(media_hub) == (before[0] + 1, before[1] + 1), what
        ecg_id = resp.body["ecg_id"]
        described = api.get(f"/api/v1/ecg/{ecg_id}", token)
        assert described.status == 200, (what, described.body)
        waveform = api.get(f"/api/v1/ecg/{ecg_id}/waveform", token)
        assert waveform.status == 200 and waveform.body.get("leads"), (what, waveform.status)
        svg = api.get(f"/api/v1/ecg/{ecg_id}/ecg.svg", token)
        assert svg.status == 200, (what, svg.status, svg.body)
    assert outcomes.get(201) and len(outcomes) > 1, outcomes
    assert api.get("/healthz").status == 200


# ----- what the fuzzing found, pinned ----------------------------------------------------------
BAD_PART = (
    b'--b\r\nContent-Disposition: form-data; name="\x1e\xf0\xbf"\r\n\r\nx\r\n--b--\r\n',
    "multipart/form-data; boundary=b",
)


@pytest.mark.parametrize(
    ("user", "method", "path", "body", "status"),
    [
        ("admin", "GET", f"/api/v1/centres/{2**110}/worklist", None, 404),  # was 500
        ("clinic", "POST", "/api/v1/cases/1/referrals", {"booking": {"kind": {}}}, 400),
        (
            "clinic",
            "POST",
            "/api/v1/referrals/1",
            {"status": "booked", "booking": {"kind": []}},
            400,
        ),
        ("clinic", "POST", "/api/v1/cases/1/consults", {"kind": {}}, 400),
        ("reader", "POST", "/api/v1/cases/1/reports", {"status": {}}, 400),
        ("admin", "POST", "/api/v1/webhooks", {"name": "x", "kind": {}, "url": "http://x"}, 400),
        ("clinic", "POST", "/api/v1/ecg", (b"", "multipart/form-data"), 400),  # no boundary
        ("clinic", "POST", "/api/v1/ecg", BAD_PART, 400),  # a control character in a part header
    ],
)
def test_fuzzing_findings_are_4xx(
    fuzz_hub: Hub, user: str, method: str, path: str, body: Any, status: int
) -> None:
    """Each was a 500 (an unhandled exception) until the fuzzing above found it."""
    api = fuzz_hub.api
    token = api.login(user)
    if isinstance(body, tuple):
        resp = api.request(method, path, token, raw=body[0], content_type=body[1])
    else:
        resp = api.request(method, path, token, body=body)
    assert resp.status == status, resp.body
    assert isinstance(resp.body, dict) and resp.body.get("message"), resp.body
