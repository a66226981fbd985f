"""The clinic portal in a real browser against a real hub: a DICOM folder, a zip and an upload
whose link drops half-way, each with priority and clinical question, through the hub's
resumable upload sessions and its real STOW-RS ingest."""

from __future__ import annotations

import json
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from tests.browser import login_token, open_page, shot
from tests.helpers import Hub, fresh_copy


def api_get(hub: Hub, path: str, token: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{hub.http_port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def study(folder: Path, *names: str) -> tuple[str, list[Path]]:
    uid = generate_uid()
    return uid, [fresh_copy(name, folder, study_uid=uid) for name in names]


def open_portal(browser: Any, hub: Hub, lang: str = "en") -> tuple[Any, Any, Any]:
    context, page, problems = open_page(browser, hub, "clinic", lang=lang, path="/#/new")
    page.wait_for_selector("body[data-page=portal] #portal-form")
    return context, page, problems


def fill_form(page: Any, priority: str, question: str) -> None:
    page.check(f"#portal-priority-{priority}")
    page.fill("#portal-question", question)


def finished(page: Any) -> dict[str, Any]:
    page.wait_for_selector("#portal-state[data-phase=done]", timeout=60_000)
    result = page.locator("#portal-result")
    return {
        "accepted": int(result.get_attribute("data-accepted")),
        "refused": int(result.get_attribute("data-refused")),
        "cases": [
            int(a.get_attribute("data-case-link")) for a in page.locator("[data-case-link]").all()
        ],
        "progress": page.locator("#portal-progress").evaluate("p => p.value"),
        "bytes": page.locator("#portal-bytes").inner_text(),
    }


def test_clinic_sends_a_dicom_folder_with_priority_and_question(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    folder = tmp_path / "CT-2025-0314"
    uid, files = study(folder, "CT_small.dcm", "MR_small.dcm", "CT_small.dcm")
    (folder / "notes.txt").write_text("handwritten request, scanned")
    question = "Chest pain for 2 hours; rule out aortic dissection."
    context, page, problems = open_portal(browser, web_hub)
    try:
        assert page.locator("[data-nav=portal]").inner_text() == "Send a case"
        fill_form(page, "stat", question)
        page.set_input_files("#portal-folder", str(folder))
        assert "4 file(s)" in page.locator("#portal-chosen").inner_text()
        shot(page, "portal-form-en")
        page.click("#portal-send")
        done = finished(page)
        shot(page, "portal-folder-done-en")
        assert done["progress"] == 100 and "(100 %)" in done["bytes"]
        assert done["accepted"] == 3 and done["refused"] == 1
        assert "notes.txt" in page.locator("#portal-refused").inner_text()
        [case_id] = done["cases"]
        token = login_token(web_hub, "clinic")["token"]
        case = api_get(web_hub, f"/api/v1/cases/{case_id}", token)
        assert uid in [s["study_instance_uid"] for s in case["studies"]]
        assert case["priority"] == "stat" and case["clinical_question"] == question
        # The case link opens the case with the clinic's question on it.
        page.click(f"[data-case-link='{case_id}']")
        page.wait_for_selector("body[data-page=case] .case-head")
        assert question in page.locator("#main").inner_text()
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_clinic_sends_a_zip_in_chinese(browser: Any, web_hub: Hub, tmp_path: Path) -> None:
    uid, files = study(tmp_path / "s", "CT_small.dcm", "MR_small.dcm")
    archive = tmp_path / "检查.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, f in enumerate(files):
            zf.write(f, f"DICOM/IM{i:04d}")
        zf.writestr("DICOMDIR", b"\0" * 300)
        zf.writestr("viewer/readme.txt", "CD viewer")
    context, page, problems = open_portal(browser, web_hub, lang="zh-CN")
    try:
        assert page.locator("h1").first.inner_text() == "发起远程诊断申请"
        fill_form(page, "urgent", "外伤后腕部疼痛，排除骨折")
        page.set_input_files("#portal-zip", str(archive))
        page.click("#portal-send")
        done = finished(page)
        shot(page, "portal-zip-done-zh")
        assert done["accepted"] == 2 and done["refused"] == 1
        refused = page.locator("#portal-refused tbody tr").inner_text()
        assert "viewer/readme.txt" in refused and "不是 DICOM 文件" in refused
        token = login_token(web_hub, "clinic")["token"]
        [case_id] = done["cases"]
        case = api_get(web_hub, f"/api/v1/cases/{case_id}", token)
        assert case["priority"] == "urgent"
        assert case["clinical_question"] == "外伤后腕部疼痛，排除骨折"
        assert [s["study_instance_uid"] for s in case["studies"]] == [uid]
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_a_dropped_link_resumes_from_the_hubs_offset_and_stores_each_image_once(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    names = (
        "examples_ybr_color.dcm",
        "examples_rgb_color.dcm",
        "examples_palette.dcm",
        "examples_overlay.dcm",
        "examples_jpeg2k.dcm",
    )
    uid, files = study(tmp_path / "big", *names)  # about 1.2 MB: more than one 1 MiB chunk
    context, page, problems = open_portal(browser, web_hub)
    link = {"down": False, "cut": 0, "patches": []}

    def weak_link(route: Any) -> None:
        request = route.request
        if request.method == "PATCH":
            offset = int(request.headers.get("upload-offset", "0"))
            if offset > 0 and link["cut"] == 0:
                link["down"] = True  # the link drops as the second chunk goes out
        if link["down"]:
            link["cut"] += 1
            route.abort("internetdisconnected")
            return
        if request.method == "PATCH":
            link["patches"].append(int(request.headers["upload-offset"]))
        route.continue_()

    page.route("**/api/v1/uploads/*", weak_link)
    try:
        fill_form(page, "routine", "Follow-up after pneumonia")
        page.set_input_files("#portal-files", [str(f) for f in files])
        page.click("#portal-send")
        page.wait_for_selector("#portal-state[data-phase=reconnecting]")
        shot(page, "portal-reconnecting-en")
        sent = int(page.locator("#portal-bytes").get_attribute("data-sent"))
        total = int(page.locator("#portal-bytes").get_attribute("data-total"))
        assert 0 < sent < total  # a first chunk was acknowledged before the drop
        link["down"] = False
        done = finished(page)
        assert link["cut"] >= 1
        assert done["accepted"] == len(files) and done["refused"] == 0
        # Resumed from the hub's offset: no chunk was sent twice from the start.
        assert link["patches"][0] == 0 and link["patches"][1:] and 0 not in link["patches"][1:]
        [case_id] = done["cases"]
        token = login_token(web_hub, "clinic")["token"]
        case = api_get(web_hub, f"/api/v1/cases/{case_id}", token)
        assert [s["instance_count"] for s in case["studies"]] == [len(files)]
        assert [s["study_instance_uid"] for s in case["studies"]] == [uid]
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_clinic_sends_an_ecg_with_its_priority_and_question(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    ecg = fresh_copy("waveform_ecg.dcm", tmp_path / "ecg")
    context, page, problems = open_portal(browser, web_hub)
    try:
        page.check("#portal-kind-ecg")
        fill_form(page, "stat", "Chest pain 30 min, sweating")
        page.set_input_files("#portal-ecg", str(ecg))
        page.click("#portal-send")
        done = finished(page)
        shot(page, "portal-ecg-done-en")
        [case_id] = done["cases"]
        token = login_token(web_hub, "clinic")["token"]
        case = api_get(web_hub, f"/api/v1/cases/{case_id}", token)
        assert case["kind"] == "ecg" and case["priority"] == "stat"
        assert case["clinical_question"] == "Chest pain 30 min, sweating"
        assert len(case["ecgs"]) == 1
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_an_offline_browser_waits_for_the_network_and_then_resumes(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    names = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm")
    names += ("examples_overlay.dcm", "examples_jpeg2k.dcm")
    uid, files = study(tmp_path / "big", *names)
    context, page, problems = open_portal(browser, web_hub, lang="zh-CN")
    seen = {"offsets": []}

    def go_offline_at_second_chunk(route: Any) -> None:
        request = route.request
        if request.method == "PATCH":
            offset = int(request.headers["upload-offset"])
            seen["offsets"].append(offset)
            if offset > 0 and len(seen["offsets"]) == 2:
                context.set_offline(True)  # the clinic's network goes away
                route.abort("internetdisconnected")
                return
        route.continue_()

    page.route("**/api/v1/uploads/*", go_offline_at_second_chunk)
    try:
        fill_form(page, "urgent", "复查")
        page.set_input_files("#portal-files", [str(f) for f in files])
        page.click("#portal-send")
        page.wait_for_selector("#portal-state[data-phase=reconnecting]")
        assert page.evaluate("navigator.onLine") is False
        assert "正在重新连接" in page.locator("#portal-state").inner_text()
        shot(page, "portal-offline-zh")
        context.set_offline(False)  # back online: the upload goes on by itself
        done = finished(page)
        assert done["accepted"] == len(files)
        assert seen["offsets"][1] == seen["offsets"][2] > 0  # resumed at the hub's offset
        token = login_token(web_hub, "clinic")["token"]
        [case_id] = done["cases"]
        case = api_get(web_hub, f"/api/v1/cases/{case_id}", token)
        assert [s["instance_count"] for s in case["studies"]] == [len(files)]
        assert [s["study_instance_uid"] for s in case["studies"]] == [uid]
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()
