"""WADO-RS against a real hub, spoken to by dicomweb-client (a client we did not write) and by
plain HTTP: instances come back as sent, frames as the pixel bytes, rendered images track the
data, metadata points at bulk data that can be fetched, and access, audit and CORS hold."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import get_frame
from sqlalchemy import func, select

from dicom.send import send_paths
from telehub.db.models import AuditEntry, SeriesMetadata
from tests.helpers import Hub, dataset_bytes, fresh_copy, start_hub
from tests.test_dicom_receiver import hub_db

ORIGIN = "https://viewer.example.org"
JPEG = "1.2.840.10008.1.2.4.50"
FILES = [
    "CT_small.dcm",  # uncompressed, explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "SC_rgb_rle_2frame.dcm",  # multi-frame RLE, RGB
    "rtdose.dcm",  # multi-frame, implicit VR little endian (15 frames)
    "waveform_ecg.dcm",  # waveform data inside a sequence: bulk data below the top level
]


@dataclass
class Sent:
    study_uid: str
    paths: dict[str, Path]  # test file name -> the Part 10 file sent

    def ds(self, name: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.paths[name])

    def uids(self, name: str) -> tuple[str, str, str]:
        ds = self.ds(name)
        return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("wado")
    hub = start_hub(tmp, {"TELEHUB_CORS_ORIGINS": f"{ORIGIN}, https://other-allowed.example"})
    yield hub
    hub.proc.stop()


@pytest.fixture(scope="module")
def sent(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Sent:
    folder = tmp_path_factory.mktemp("wado-in")
    study_uid = pydicom.uid.generate_uid()
    patient = f"WADO-{uuid.uuid4().hex[:8]}"
    paths = {
        name: fresh_copy(name, folder, study_uid=study_uid, PatientID=patient) for name in FILES
    }
    # One association per file: the study completes, then grows (the metadata task reruns).
    for path in paths.values():
        assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1, path
    return Sent(study_uid, paths)


def client(hub: Hub, user: str = "clinic") -> DICOMwebClient:
    token = hub.api.login(user)
    return DICOMwebClient(
        f"http://127.0.0.1:{hub.http_port}/dicomweb", headers={"Authorization": f"Bearer {token}"}
    )


def split_multipart(resp: requests.Response) -> list[tuple[str, bytes]]:
    """(content type, body) of each part of a multipart/related answer."""
    boundary = resp.headers["Content-Type"].split("boundary=")[1].strip('"')
    parts = []
    for chunk in resp.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        content_type = head.decode().split(":", 1)[1].strip()
        parts.append((content_type, body[:-2]))
    return parts


# ----- retrieve ------------------------------------------------------------------------------
def test_retrieve_study_is_byte_identical_to_what_was_sent(hub: Hub, sent: Sent) -> None:
    token = hub.api.login("clinic")
    resp = requests.get(
        f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{sent.study_uid}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    parts = split_multipart(resp)
    assert len(parts) == len(FILES)
    by_uid = {pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID: body for _, body in parts}
    for name, path in sent.paths.items():
        ds = sent.ds(name)
        body = by_uid[ds.SOPInstanceUID]
        assert dataset_bytes(body) == dataset_bytes(path.read_bytes()), name
        retrieved = pydicom.dcmread(io.BytesIO(body))
        assert retrieved.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_dicomweb_client_retrieves_study_series_instance(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    study = web.retrieve_study(sent.study_uid)
    assert {d.SOPInstanceUID for d in study} == {sent.ds(n).SOPInstanceUID for n in FILES}
    for name in ("MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm"):
        st, se, sop = sent.uids(name)
        (series_ds,) = web.retrieve_series(st, se)
        instance = web.retrieve_instance(st, se, sop)
        original = sent.ds(name)
        assert series_ds.SOPInstanceUID == sop
        assert instance.PixelData == original.PixelData
        assert instance.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


# ----- frames --------------------------------------------------------------------------------
def test_native_frames_are_the_pixel_bytes(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    ct = sent.ds("CT_small.dcm")
    (frame,) = web.retrieve_instance_frames(*sent.uids("CT_small.dcm"), frame_numbers=[1])
    assert frame == ct.PixelData
    dose = sent.ds("rtdose.dcm")
    size = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    frames = web.retrieve_instance_frames(*sent.uids("rtdose.dcm"), frame_numbers=[2, 15])
    assert frames == [dose.PixelData[size : 2 * size], dose.PixelData[14 * size : 15 * size]]


def test_big_endian_frames_as_stored_or_little_endian(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    uids = sent.uids("MR_small_bigendian.dcm")
    ds = sent.ds("MR_small_bigendian.dcm")
    (stored,) = web.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert stored == ds.PixelData
    (native,) = web.retrieve_instance_frames(
        *uids,
        frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert native == ds.pixel_array.astype("<u2").tobytes()


def test_compressed_frames_are_the_encapsulated_frames(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    token = hub.api.login("clinic")
    for name, media_type in (
        ("SC_rgb_jpeg_dcmtk.dcm", "image/jpeg"),
        ("MR_small_jp2klossless.dcm", "image/jp2"),
        ("MR_small_RLE.dcm", "image/dicom-rle"),
        ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
    ):
        ds = sent.ds(name)
        count = int(ds.get("NumberOfFrames", 1))
        st, se, sop = sent.uids(name)
        frames = web.retrieve_instance_frames(st, se, sop, frame_numbers=list(range(1, count + 1)))
        assert frames == [
            get_frame(ds.PixelData, i, number_of_frames=count) for i in range(count)
        ], name
        url = f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{st}/series/{se}/instances/{sop}"
        resp = requests.get(
            f"{url}/frames/1",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": f'multipart/related; type="{media_type}"',
            },
            timeout=30,
        )
        (part_type, _), *_ = split_multipart(resp)
        assert part_type == f"{media_type}; transfer-syntax={ds.file_meta.TransferSyntaxUID}"
    # Decoded to native on request: lossless JPEG 2000 gives back the exact pixels.
    ds = sent.ds("MR_small_jp2klossless.dcm")
    (native,) = web.retrieve_instance_frames(
        *sent.uids("MR_small_jp2klossless.dcm"),
        frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert native == ds.pixel_array.tobytes()


# ----- rendered ------------------------------------------------------------------------------
def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_rendered_png_tracks_the_data(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    ct = sent.ds("CT_small.dcm")
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    lo, hi = float(hu.min()), float(hu.max())
    data = web.retrieve_instance_rendered(
        *sent.uids("CT_small.dcm"),
        media_types=("image/png",),
        params={"window": f"{(lo + hi) / 2 + 0.5},{hi - lo + 1},linear"},
    )
    image = _png(data)
    assert image.size == (ct.Columns, ct.Rows) and image.mode == "L"
    pixels = np.asarray(image)
    assert pixels.flat[int(np.argmax(hu))] == 255 and pixels.flat[int(np.argmin(hu))] == 0
    assert np.corrcoef(pixels.ravel(), hu.ravel())[0, 1] > 0.99
    # A narrow window saturates: everything above it is white.
    narrow = np.asarray(
        _png(
            web.retrieve_instance_rendered(
                *sent.uids("CT_small.dcm"), media_types=("image/png",), params={"window": "0,100"}
            )
        )
    )
    assert (narrow[hu > 50] == 255).all() and (narrow[hu < -50] == 0).all()


def test_rendered_compressed_viewport_and_jpeg(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    mr = sent.ds("MR_small_jp2klossless.dcm")
    image = _png(
        web.retrieve_instance_rendered(
            *sent.uids("MR_small_jp2klossless.dcm"), media_types=("image/png",)
        )
    )
    assert image.size == (mr.Columns, mr.Rows)
    # The file's own window (WindowCenter/Width) is the default: brighter where the data is.
    assert np.corrcoef(np.asarray(image).ravel(), mr.pixel_array.ravel())[0, 1] > 0.9
    small = _png(
        web.retrieve_instance_rendered(
            *sent.uids("MR_small_jp2klossless.dcm"),
            media_types=("image/png",),
            params={"viewport": "32,32"},
        )
    )
    assert small.size == (32, 32)
    rgb = Image.open(
        io.BytesIO(web.retrieve_instance_rendered(*sent.uids("SC_rgb_jpeg_dcmtk.dcm")))
    )
    assert rgb.format == "JPEG" and rgb.mode == "RGB" and rgb.size == (100, 100)
    sc = sent.ds("SC_rgb_jpeg_dcmtk.dcm").pixel_array  # RGB after pydicom's conversion
    assert np.abs(np.asarray(rgb).astype(int) - sc.astype(int)).mean() < 8


def test_monochrome1_is_inverted(hub: Hub, tmp_path: Path) -> None:
    path = fresh_copy("CT_small.dcm", tmp_path, PhotometricInterpretation="MONOCHROME1")
    ds = pydicom.dcmread(path)
    assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
    web = client(hub)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    pixels = np.asarray(_png(web.retrieve_instance_rendered(*uids, media_types=("image/png",))))
    data = ds.pixel_array
    assert pixels.flat[int(np.argmax(data))] == 0 and pixels.flat[int(np.argmin(data))] == 255


def test_thumbnail_is_small(hub: Hub, sent: Sent) -> None:
    token = hub.api.login("clinic")
    st, se, sop = sent.uids("CT_small.dcm")
    base = f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{st}"
    for url in (f"{base}/series/{se}/thumbnail", f"{base}/series/{se}/instances/{sop}/thumbnail"):
        resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(resp.content)).size) == 128


# ----- metadata and bulk data ----------------------------------------------------------------
def test_metadata_has_bulkdata_uris_that_return_the_bytes(hub: Hub, sent: Sent) -> None:
    web = client(hub)
    st, se, sop = sent.uids("CT_small.dcm")
    (meta,) = web.retrieve_series_metadata(st, se)
    assert meta["00080018"]["Value"] == [sop]
    assert meta["00100020"]["Value"] == [sent.ds("CT_small.dcm").PatientID]
    assert meta["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/")
    assert web.retrieve_bulkdata(uri) == [sent.ds("CT_small.dcm").PixelData]
    # Waveform data lives inside a sequence item: its URI names the path to it.
    ecg = sent.ds("waveform_ecg.dcm")
    ecg_meta = web.retrieve_instance_metadata(*sent.uids("waveform_ecg.dcm"))
    waveforms = ecg_meta["54000100"]["Value"]
    assert len(waveforms) == len(ecg.WaveformSequence)
    for i, item in enumerate(waveforms):
        assert web.retrieve_bulkdata(item["54001010"]["BulkDataURI"]) == [
            ecg.WaveformSequence[i].WaveformData
        ]
    study = web.retrieve_study_metadata(st)
    assert len(study) == len(FILES)
    assert {m["00080018"]["Value"][0] for m in study} == {sent.ds(n).SOPInstanceUID for n in FILES}


def test_series_metadata_is_kept_and_rebuilt_when_the_series_grows(
    hub: Hub, sent: Sent, tmp_path: Path
) -> None:
    st, se, _ = sent.uids("CT_small.dcm")
    db = hub_db(hub)
    try:
        series_id = _series_id(db, se)
        deadline = time.monotonic() + 20
        while _kept(db, series_id) is None:  # built by the worker when the study completed
            assert time.monotonic() < deadline, "the worker did not build the series metadata"
            time.sleep(0.1)
        assert _kept(db, series_id) == 1
        path = fresh_copy("CT_small.dcm", tmp_path, study_uid=st, SeriesInstanceUID=se)
        assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
        metas = client(hub).retrieve_series_metadata(st, se)  # stale now: rebuilt at once
        assert len(metas) == 2
        assert _kept(db, series_id) == 2
    finally:
        db.dispose()


def _series_id(db, series_uid: str) -> int:  # type: ignore[no-untyped-def]
    from telehub.db.models import Series

    with db.reader() as session:
        return session.scalar(select(Series.id).where(Series.series_uid == series_uid))


def _kept(db, series_id: int) -> int | None:  # type: ignore[no-untyped-def]
    with db.reader() as session:
        return session.scalar(
            select(SeriesMetadata.instance_count).where(SeriesMetadata.series_id == series_id)
        )


# ----- access, audit, errors, CORS -----------------------------------------------------------
def _get(hub: Hub, path: str, token: str | None = None, **headers: str) -> requests.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(
        f"http://127.0.0.1:{hub.http_port}/dicomweb{path}", headers=headers, timeout=30
    )


def test_other_clinic_gets_404_and_no_token_401(hub: Hub, sent: Sent) -> None:
    st, se, sop = sent.uids("CT_small.dcm")
    other = hub.api.login("clinic2")
    for path in (
        f"/studies/{st}",
        f"/studies/{st}/metadata",
        f"/studies/{st}/series/{se}/metadata",
        f"/studies/{st}/series/{se}/instances/{sop}/frames/1",
        f"/studies/{st}/series/{se}/instances/{sop}/rendered",
    ):
        resp = _get(hub, path, other)
        assert resp.status_code == 404 and resp.json()["error"].endswith("not_found"), path
        assert _get(hub, path).status_code == 401
    assert _get(hub, f"/studies/{st}/metadata", hub.api.login("clinic")).status_code == 200


def test_each_read_is_audited_once(hub: Hub, sent: Sent) -> None:
    st, se, sop = sent.uids("CT_small.dcm")
    token = hub.api.login("clinic")
    db = hub_db(hub)

    def count() -> int:
        with db.reader() as session:
            return session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.resource_type == "study", AuditEntry.resource_id == st)
            )

    try:
        for path, what in (
            (f"/studies/{st}/series/{se}/metadata", "metadata"),
            (f"/studies/{st}/series/{se}/instances/{sop}/frames/1", "frames"),
            (f"/studies/{st}/series/{se}/instances/{sop}", "instances"),
        ):
            before = count()
            assert _get(hub, path, token).status_code == 200
            assert count() == before + 1
            with db.reader() as session:
                last = session.scalars(
                    select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)
                ).one()
            assert last.detail["what"] == what and last.detail["series_uid"] == se
    finally:
        db.dispose()


def test_errors_are_specific_json(hub: Hub, sent: Sent) -> None:
    st, se, sop = sent.uids("rtdose.dcm")
    token = hub.api.login("clinic")
    inst = f"/studies/{st}/series/{se}/instances/{sop}"
    cases = [
        ("/studies/1.2.3.999/metadata", {}, 404, "study_not_found"),
        (f"/studies/{st}/series/1.2.3.999/metadata", {}, 404, "series_not_found"),
        (f"{inst}/frames/0", {}, 400, "bad_frame_list"),
        (f"{inst}/frames/1,x", {}, 400, "bad_frame_list"),
        (f"{inst}/frames/16", {}, 404, "frame_not_found"),
        (f"{inst}/metadata", {"Accept": "application/dicom+xml"}, 406, "not_acceptable"),
        (
            f"{inst}",
            {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}'},
            406,
            "not_acceptable",
        ),
        (f"{inst}/rendered", {"Accept": "image/gif"}, 406, "not_acceptable"),
        (f"{inst}/rendered?window=1", {}, 400, "bad_window"),
        (f"{inst}/bulkdata/7FE00011", {}, 404, "bulkdata_not_found"),
    ]
    for path, headers, status, code in cases:
        resp = _get(hub, path, token, **headers)
        assert resp.status_code == status, (path, resp.text)
        assert resp.json()["error"] == code, (path, resp.text)


def test_cors_preflight_only_for_allowed_origins(hub: Hub, sent: Sent) -> None:
    url = f"http://127.0.0.1:{hub.http_port}/dicomweb/studies/{sent.study_uid}/metadata"
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = requests.options(url, headers={"Origin": ORIGIN, **preflight}, timeout=10)
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert "GET" in ok.headers["Access-Control-Allow-Methods"]
    other = requests.options(
        url, headers={"Origin": "https://evil.example", **preflight}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    token = hub.api.login("clinic")
    real = _get(hub, f"/studies/{sent.study_uid}/metadata", token, Origin=ORIGIN)
    assert real.status_code == 200 and real.headers["Access-Control-Allow-Origin"] == ORIGIN
    denied = _get(hub, f"/studies/{sent.study_uid}/metadata", Origin=ORIGIN)
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    foreign = _get(hub, f"/studies/{sent.study_uid}/metadata", token, Origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in foreign.headers
