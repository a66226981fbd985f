"""The reader's viewers in a real browser against a real hub: a CT series sent by C-STORE is
shown from the hub's own DICOMweb on a canvas (pixels read back), window presets, slice
scrolling and the consult state API change what is drawn; a real 12-lead ECG uploaded over
HTTP is drawn on ECG paper with its automated measurements labelled as unconfirmed."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicom.send import send_paths
from tests.browser import ARTIFACTS, open_page, shot
from tests.helpers import Hub, dicom_file, fresh_copy
from tests.test_ecg_api import analysed, record_files, upload

SLICES = 4

#: A summary of what the viewer's canvas shows: mean, spread and a coarse fingerprint.
CANVAS_STATS = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sum2 = 0, n = 0; const seen = new Set(); const grid = [];
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i]; sum += v; sum2 += v * v; n += 1; seen.add(v);
  }
  for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) {
    const px = Math.floor((x + 0.5) * c.width / 16), py = Math.floor((y + 0.5) * c.height / 16);
    grid.push(d[(py * c.width + px) * 4]);
  }
  const mean = sum / n;
  const std = Math.sqrt(sum2 / n - mean * mean);
  return {mean, std, distinct: seen.size, grid, w: c.width, h: c.height};
}"""
CANVAS = "[data-panel=images] canvas.dv-canvas"
VIEWER = "[data-panel=images] [data-viewer=dicom]"


def ct_series(tmp: Path) -> dict[str, Any]:
    """A CT series of SLICES images with different pixels (CT_small shifted and scaled), plus a
    one-image series after it, all in one new study; written in reverse InstanceNumber order."""
    study, series = generate_uid(), generate_uid()
    pid = f"VIEW-{uuid.uuid4().hex[:8]}"
    paths = []
    for number in range(SLICES, 0, -1):
        ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
        pixels = ds.pixel_array.astype(np.int32)
        pixels = np.roll(pixels, 24 * (number - 1), axis=1)
        pixels = np.clip(pixels + 150 * (number - 1), 0, 4095).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.SeriesNumber = 2
        ds.SeriesDescription = "AXIAL VIEWER TEST"
        ds.PatientID, ds.PatientName = pid, f"Viewer^{pid[5:]}"
        path = tmp / f"slice-{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    extra = pydicom.dcmread(dicom_file("CT_small.dcm"))
    extra.StudyInstanceUID, extra.SeriesInstanceUID = study, generate_uid()
    extra.SOPInstanceUID = generate_uid()
    extra.file_meta.MediaStorageSOPInstanceUID = extra.SOPInstanceUID
    extra.SeriesNumber = 3  # after the axial series, which the viewer opens first
    extra.SeriesDescription = "SINGLE"
    extra.PatientID, extra.PatientName = pid, f"Viewer^{pid[5:]}"
    extra.save_as(tmp / "single.dcm", enforce_file_format=True)
    paths.append(tmp / "single.dcm")
    return {"study": study, "series": series, "paths": paths}


@pytest.fixture(scope="module")
def ct_case(web_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = ct_series(tmp_path_factory.mktemp("viewer-ct"))
    result = send_paths(data["paths"], "127.0.0.1", web_hub.dicom_port, "CLINIC1")
    assert result.sent == SLICES + 1, result.refused
    api = web_hub.api
    reader = api.login("reader")
    case = api.wait_for(
        "/api/v1/worklist",
        reader,
        lambda body: next(
            (c for c in body["cases"] if data["study"] in c["study_instance_uids"]), None
        ),
        timeout=60,
    )
    # every image indexed before the page asks for the series
    api.wait_for(
        f"/api/v1/cases/{case['id']}",
        reader,
        lambda body: sum(s["instance_count"] for s in body["studies"]) == SLICES + 1,
    )
    return {**data, "case_id": case["id"]}


def canvas_stats(page: Any) -> dict[str, Any]:
    return page.evaluate(CANVAS_STATS, CANVAS)


def wait_shown(page: Any, contains: str) -> str:
    page.wait_for_function(
        "([sel, part]) => (document.querySelector(sel)?.dataset.shown || '').includes(part)",
        arg=[VIEWER, contains],
    )
    return page.get_attribute(VIEWER, "data-shown")


def differs(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(1 for x, y in zip(a["grid"], b["grid"], strict=True) if abs(x - y) > 8)


def test_dicom_viewer_shows_scrolls_and_windows_a_ct_series(
    browser: Any, web_hub: Hub, ct_case: dict[str, Any]
) -> None:
    context, page, problems = open_page(
        browser, web_hub, "reader", lang="en", path=f"/#/cases/{ct_case['case_id']}"
    )
    try:
        page.wait_for_selector(f"{VIEWER}[data-shown]")
        viewer = page.locator(VIEWER)
        # the series in InstanceNumber order, thumbnails for both series, slice 1 first
        assert viewer.get_attribute("data-series") == ct_case["series"]
        assert viewer.get_attribute("data-count") == str(SLICES)
        assert page.locator("[data-panel=images] .dv-thumb").count() == 2
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-panel=images] .dv-thumb-img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        overlay = page.locator("[data-panel=images] [data-overlay=instance]")
        assert "Im 1/4" in overlay.inner_text() and "Inst #1" in overlay.inner_text()

        first = canvas_stats(page)
        assert first["w"] > 400 and first["h"] > 300
        assert first["std"] > 20 and first["distinct"] > 50, first  # an image, not a blank
        shot(page, "viewer-ct-en")

        # window preset: the same slice rendered at the lung window looks different
        page.click("[data-panel=images] [data-preset=lung]")
        wait_shown(page, "@-600,1500,linear")
        lung = canvas_stats(page)
        assert differs(first, lung) > 20, (first["grid"], lung["grid"])
        assert "W 1500 L -600" in page.inner_text("[data-panel=images] [data-overlay=window]")

        # next slice by the keyboard: index, overlay and pixels change
        shown = page.get_attribute(VIEWER, "data-shown")
        page.focus(CANVAS)
        page.keyboard.press("ArrowDown")
        page.wait_for_function(
            "([sel, old]) => { const v = document.querySelector(sel);"
            " return v.dataset.instance === '1' && v.dataset.shown !== old; }",
            arg=[VIEWER, shown],
        )
        assert "Im 2/4" in overlay.inner_text() and "Inst #2" in overlay.inner_text()
        second = canvas_stats(page)
        assert differs(lung, second) > 20

        # the mouse wheel scrolls on; ctrl+wheel zooms instead
        box = page.locator(CANVAS).bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 100)
        page.wait_for_function(
            "(sel) => document.querySelector(sel).dataset.instance === '2'", arg=VIEWER
        )
        page.keyboard.down("Control")
        page.mouse.wheel(0, -200)
        page.keyboard.up("Control")
        state = page.evaluate("document.querySelector('[data-panel=images]').viewer.getState()")
        assert state["instance"] == 2 and state["zoom"] > 1.2, state

        # right-drag changes window/level from the lung preset
        page.mouse.down(button="right")
        page.mouse.move(
            box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 60, steps=6
        )
        page.mouse.up(button="right")
        state = page.evaluate("document.querySelector('[data-panel=images]').viewer.getState()")
        assert state["window_width"] > 1500 and state["window_center"] > -600, state

        # the consult state API: setState then getState round-trips, and the view follows
        page.mouse.move(0, 0)  # the local pointer leaves the image
        wanted = {
            "instance": 3,
            "window_center": 40,
            "window_width": 400,
            "zoom": 2,
            "pan": {"x": 0.1, "y": -0.05},
        }
        page.evaluate(
            "(s) => document.querySelector('[data-panel=images]').viewer.setState(s)", wanted
        )
        state = page.evaluate("document.querySelector('[data-panel=images]').viewer.getState()")
        assert state == {
            "mode": "dicom",
            "study_uid": ct_case["study"],
            "series_uid": ct_case["series"],
            "pointer": None,
            **wanted,
        }
        wait_shown(page, "@40,400,linear")
        assert viewer.get_attribute("data-instance") == "3"
        assert "Im 4/4" in overlay.inner_text()
        assert "Zoom 2.00×" in page.inner_text("[data-panel=images] [data-overlay=window]")
        assert (
            page.locator("[data-panel=images] [data-preset=soft]").get_attribute("aria-pressed")
            == "true"
        )
        zoomed = canvas_stats(page)
        assert zoomed["std"] > 20
        shot(page, "viewer-ct-soft-zoomed-en")

        # full screen: the canvas takes the window, Escape gives it back
        page.click("[data-panel=images] [data-action=fullscreen]")
        page.wait_for_selector("[data-panel=images] .dv.dv-fullscreen")
        page.wait_for_function(
            "([sel, w]) => document.querySelector(sel).width > w", arg=[CANVAS, zoomed["w"]]
        )
        assert canvas_stats(page)["std"] > 20
        page.screenshot(path=str(ARTIFACTS / "viewer-ct-fullscreen-en.png"))  # the viewport
        page.focus(CANVAS)
        page.keyboard.press("Escape")
        page.wait_for_selector("[data-panel=images] .dv:not(.dv-fullscreen)")

        # the other series by its thumbnail
        page.click("[data-panel=images] .dv-thumb[aria-selected=false]")
        page.wait_for_function(
            "([sel, uid]) => { const v = document.querySelector(sel);"
            " return v.dataset.series !== uid && v.dataset.count === '1'; }",
            arg=[VIEWER, ct_case["series"]],
        )
        assert not problems.page_errors, problems.page_errors
        assert not problems.foreign, problems.foreign
    finally:
        context.close()


def test_dicom_viewer_reports_local_changes_not_remote_ones(
    browser: Any, web_hub: Hub, ct_case: dict[str, Any]
) -> None:
    """What a consult relies on: onChange after a local interaction (with pointerOnly), never
    after setState; readOnly ignores the user."""
    context, page, problems = open_page(
        browser, web_hub, "reader", lang="zh-CN", path=f"/#/cases/{ct_case['case_id']}"
    )
    try:
        page.wait_for_selector(f"{VIEWER}[data-shown]")
        shot(page, "viewer-ct-zh")
        page.evaluate(
            """async (study) => {
              const m = await import('/static/js/viewers/dicom_viewer.js');
              const box = document.createElement('div');
              box.id = 'probe'; box.style.width = '600px'; box.style.height = '500px';
              document.body.append(box);
              window.changes = [];
              m.mountDicomViewer(box, {studyUid: study,
                onChange: (s, o) => window.changes.push([s, o])});
              const ro = document.createElement('div'); ro.id = 'probe-ro';
              document.body.append(ro);
              m.mountDicomViewer(ro, {studyUid: study, readOnly: true});
            }""",
            ct_case["study"],
        )
        page.wait_for_selector("#probe [data-viewer=dicom][data-shown]")
        page.wait_for_selector("#probe-ro [data-viewer=dicom][data-shown]")
        page.evaluate("document.getElementById('probe').viewer.setState({instance: 2})")
        page.wait_for_function(
            "() => document.querySelector('#probe [data-viewer]').dataset.instance === '2'"
        )
        page.wait_for_timeout(100)  # let a (wrong) notification's animation frame pass
        assert page.evaluate("window.changes.length") == 0

        page.hover("#probe canvas")
        page.wait_for_function("() => window.changes.length > 0")
        state, options = page.evaluate("window.changes.at(-1)")
        assert options == {"pointerOnly": True}
        assert 0 <= state["pointer"]["x"] <= 1 and 0 <= state["pointer"]["y"] <= 1

        page.focus("#probe canvas")
        page.keyboard.press("ArrowUp")
        page.wait_for_function(
            "() => window.changes.some(([s, o]) => !o.pointerOnly && s.instance === 1)"
        )

        page.focus("#probe-ro canvas")
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.getElementById('probe-ro').viewer.getState().instance") == 0
        page.evaluate("document.getElementById('probe').viewer.destroy()")
        assert page.locator("#probe [data-viewer]").count() == 0
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


# ----- ECG -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ecg_case(web_hub: Hub) -> dict[str, Any]:
    api = web_hub.api
    clinic = api.login("clinic")
    resp = upload(api, clinic, record_files("s0010_re", ".hea", ".dat", ".xyz"))
    assert resp.status == 201, resp.body
    ecg_reader = api.login("ecgreader")
    analysis = analysed(api, ecg_reader, resp.body["ecg_id"])["analysis"]
    return {**resp.body, "analysis": analysis}


ECG = "[data-panel=ecg] [data-viewer=ecg]"


def paper_pixels(page: Any) -> np.ndarray:
    png = page.locator(f"{ECG} svg.ecg-paper").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_ecg_viewer_draws_twelve_leads_on_paper_with_automated_measurements(
    browser: Any, web_hub: Hub, ecg_case: dict[str, Any], lang: str
) -> None:
    context, page, problems = open_page(
        browser, web_hub, "ecgreader", lang=lang, path=f"/#/cases/{ecg_case['case_id']}"
    )
    try:
        page.wait_for_selector(f"{ECG} svg.ecg-paper .ecg-trace")
        traces = page.locator(f"{ECG} .ecg-trace")
        assert traces.count() == 13  # 3×4 leads and the lead II rhythm strip
        leads = [traces.nth(i).get_attribute("data-lead") for i in range(13)]
        assert sorted(set(leads)) == sorted(
            ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        )
        assert leads[-1] == "II"
        assert all(len(traces.nth(i).get_attribute("d")) > 500 for i in range(13))

        # pink grid and dark traces on the screen, not just in the DOM
        pixels = paper_pixels(page)
        r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        pink = (r > 220) & (g < 215) & (b < 225) & (r - g > 25)
        dark = (r < 90) & (g < 90) & (b < 90)
        assert pink.mean() > 0.02, pink.mean()
        assert dark.mean() > 0.005, dark.mean()

        box = page.locator(f"{ECG} [data-automated=true]")
        note = box.locator("[data-note=automated]").inner_text()
        expected = (
            "自动测量，需医师确认"
            if lang == "zh-CN"
            else "Automated measurement, to be confirmed by a physician"
        )
        assert expected in note
        hr = ecg_case["analysis"]["heart_rate_bpm"]
        assert str(hr) in box.locator("[data-measure=hr]").inner_text()
        shot(page, f"viewer-ecg-{lang}")

        # gain 20 mm/mV doubles the traces' height on the paper
        before = page.evaluate(f"document.querySelector('{ECG} .ecg-trace').getBBox().height")
        page.select_option(f"{ECG} [data-control=gain]", "20")
        page.wait_for_selector(f"{ECG} svg.ecg-paper[data-gain='20']")
        after = page.evaluate(f"document.querySelector('{ECG} .ecg-trace').getBBox().height")
        assert 1.8 < after / before < 2.2, (before, after)

        # 50 mm/s shows 5 s; "later" moves half a screen on; getState/setState round-trip
        page.select_option(f"{ECG} [data-control=speed]", "50")
        page.wait_for_selector(f"{ECG} svg.ecg-paper[data-speed='50']")
        page.click(f"{ECG} [data-action=later]")
        page.wait_for_selector(f"{ECG} svg.ecg-paper[data-offset='2.5']")
        get = "document.querySelector('[data-panel=ecg]').viewer.getState()"
        assert page.evaluate(get) == {
            "mode": "ecg",
            "ecg_id": ecg_case["ecg_id"],
            "offset": 2.5,
            "gain": 20,
            "speed": 50,
            "pointer": None,
        }
        page.evaluate(
            "document.querySelector('[data-panel=ecg]').viewer.setState("
            "{offset: 30, gain: 10, speed: 25, pointer: {x: 0.5, y: 0.5}})"
        )
        # 38.4 s record, 10 s on screen: the offset stops at 28.4
        page.wait_for_selector(f"{ECG} svg.ecg-paper[data-offset='28.4'][data-speed='25']")
        assert page.locator(f"{ECG} .ecg-remote-pointer").count() == 1
        assert page.evaluate(get)["offset"] == 28.4

        # local changes are reported (the consult relies on it), remote ones are not
        page.evaluate(
            """async (id) => {
              const m = await import('/static/js/viewers/ecg_viewer.js');
              const box = document.createElement('div'); box.id = 'ecg-probe';
              document.querySelector('main').append(box);
              window.ecgChanges = [];
              const v = m.mountEcgViewer(box, {ecgId: id,
                onChange: (s, o) => window.ecgChanges.push([s, o])});
              await v.ready();
              await v.setState({gain: 5});
            }""",
            ecg_case["ecg_id"],
        )
        page.wait_for_selector("#ecg-probe svg.ecg-paper[data-gain='5']")
        page.wait_for_timeout(100)  # let a (wrong) notification's animation frame pass
        assert page.evaluate("window.ecgChanges.length") == 0
        page.select_option("#ecg-probe [data-control=speed]", "50")
        page.wait_for_function("() => window.ecgChanges.length > 0")
        state, options = page.evaluate("window.ecgChanges.at(-1)")
        assert options == {"pointerOnly": False} and state["speed"] == 50 and state["gain"] == 5
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_dicom_viewer_scrolls_the_frames_of_a_multiframe_instance(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    """A 30-frame colour ultrasound cine (JPEG baseline): one instance, scrolled frame by frame."""
    pid = f"CINE-{uuid.uuid4().hex[:8]}"
    path = fresh_copy("examples_ybr_color.dcm", tmp_path, PatientID=pid)
    study = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
    result = send_paths([path], "127.0.0.1", web_hub.dicom_port, "CLINIC1")
    assert result.sent == 1, result.refused
    api = web_hub.api
    case = api.wait_for(
        "/api/v1/worklist",
        api.login("reader"),
        lambda body: next((c for c in body["cases"] if study in c["study_instance_uids"]), None),
        timeout=60,
    )
    context, page, problems = open_page(
        browser, web_hub, "reader", lang="en", path=f"/#/cases/{case['id']}"
    )
    try:
        page.wait_for_selector(f"{VIEWER}[data-shown]")
        assert page.get_attribute(VIEWER, "data-count") == "30"
        overlay = page.locator("[data-panel=images] [data-overlay=instance]")
        assert "Fr 1/30" in overlay.inner_text()
        # CT window presets are for CT only
        assert page.locator("[data-panel=images] [data-preset=lung]").is_hidden()
        assert page.locator("[data-panel=images] [data-preset=default]").is_visible()
        first = canvas_stats(page)
        assert first["std"] > 10, first
        page.focus(CANVAS)
        for _ in range(5):
            page.keyboard.press("ArrowDown")
        wait_shown(page, "/6@default")  # frame 6 of the one instance
        assert page.get_attribute(VIEWER, "data-instance") == "5"
        assert "Fr 6/30" in overlay.inner_text() and "Im 6/30" in overlay.inner_text()
        assert differs(first, canvas_stats(page)) > 0
        shot(page, "viewer-us-cine-en")
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()
