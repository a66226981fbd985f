"""The consult room in real browsers (issue 7): two Chromium contexts with fake cameras join a
consult on a fresh CT case through the hub's signaling socket and aiortc media peer; each sees
the other's live video; waiting room and admit; consent starts the recording; the presenter's
view of the CT follows on the other side; a dropped socket resumes; bad token and ended consult
show clear errors. Screenshots in English and Chinese."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom.send import send_paths
from tests.browser import login_token, open_page, shot
from tests.helpers import Hub, fresh_copy

pytestmark = pytest.mark.timeout(180)

VIDEO_STATS = """(sel) => {
  const v = document.querySelector(sel);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = 64; c.height = 48;
  const g = c.getContext("2d");
  g.drawImage(v, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data;
  let sum = 0, max = 0;
  for (let i = 0; i < d.length; i += 4) {
    const l = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += l; max = Math.max(max, l);
  }
  const mean = sum / (d.length / 4);
  return {width: v.videoWidth, time: v.currentTime, paused: v.paused, mean, max};
}"""
VIEW_STATE = (
    "document.querySelector('#consult-share [data-consult-viewer]').telehubViewer.getState()"
)


def send_ct_series(hub: Hub, folder: Path, images: int = 3) -> tuple[int, str, str]:
    """A fresh CT series of `images` slices from township centre 1 (CLINIC1), routed to the
    county imaging centre; returns (case id, study UID, series UID)."""
    study, series = generate_uid(), generate_uid()
    patient = f"WEBCONSULT-{uuid.uuid4().hex[:8]}"
    paths = [
        fresh_copy(
            "CT_small.dcm",
            folder,
            study_uid=study,
            SeriesInstanceUID=series,
            InstanceNumber=n + 1,
            PatientID=patient,
        )
        for n in range(images)
    ]
    assert pydicom.dcmread(paths[0]).SeriesInstanceUID == series
    assert send_paths(paths, "127.0.0.1", hub.dicom_port, "CLINIC1").sent == images
    admin = login_token(hub, "admin")["token"]
    case_id = hub.api.wait_for(
        "/api/v1/cases?limit=500",
        admin,
        lambda body: next(
            (
                c["id"]
                for c in body["cases"]
                if study in c["study_instance_uids"] and c["status"] != "receiving"
            ),
            None,
        ),
    )
    hub.api.wait_for(
        f"/api/v1/cases/{case_id}",
        admin,
        lambda c: sum(s["instance_count"] for s in c["studies"]) == images,
    )
    return case_id, study, series


def remote_video_live(page: Any, who: str) -> dict[str, Any]:
    """Wait until the remote tile plays real frames; returns two samples' statistics."""
    selector = "#consult-remotes .consult-tile video"
    page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel);"
        " return v && v.videoWidth > 0 && !v.paused && v.currentTime > 0; }",
        arg=selector,
        timeout=40_000,
    )
    first = page.evaluate(VIDEO_STATS, selector)
    page.wait_for_function(
        "([sel, t]) => document.querySelector(sel).currentTime > t",
        arg=[selector, first["time"] + 0.3],
        timeout=10_000,
    )
    second = page.evaluate(VIDEO_STATS, selector)
    assert first["width"] > 0 and not second["paused"], (who, first, second)
    assert second["time"] > first["time"], (who, first, second)
    # Chromium's fake camera draws a bright test pattern: a black frame would mean no video
    assert second["mean"] > 20 and second["max"] > 60, (who, second)
    return second


@pytest.fixture(scope="module")
def ct_case(web_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, str]:
    return send_ct_series(web_hub, tmp_path_factory.mktemp("ct"))


def test_two_browsers_consult_with_video_waiting_room_consent_and_shared_view(
    browser: Any, web_hub: Hub, ct_case: tuple[int, str, str]
) -> None:
    case_id, study, series = ct_case
    clinic_ctx, clinic, clinic_problems = open_page(
        browser, web_hub, "clinic", lang="en", path=f"/#/cases/{case_id}"
    )
    reader_ctx, reader, reader_problems = open_page(
        browser, web_hub, "reader", lang="zh-CN", path="/"
    )
    try:
        # the clinic starts a consult from the case and invites the county reader
        clinic.wait_for_selector("#consult-panel form[data-form=consult-start]")
        clinic.fill("#consult-panel [data-field=invite]", "reader")
        shot(clinic, "consult-case-panel-en")
        clinic.click("#consult-panel [data-action=start-consult]")
        clinic.wait_for_url(re.compile(r".*#/consults/\d+$"))
        consult_id = int(clinic.url.rsplit("/", 1)[1])
        clinic.wait_for_selector("#consult-status[data-state=connected]")
        clinic.wait_for_selector(".consult-call:not([hidden])")
        clinic.wait_for_function("document.querySelector('#consult-local video').videoWidth > 0")

        # the reader finds it under "My consults" and on the case, and joins: the waiting room
        reader.goto(f"http://127.0.0.1:{web_hub.http_port}/#/consults")
        reader.wait_for_selector(f"#consult-mine [data-consult='{consult_id}'][data-status=open]")
        reader.goto(f"http://127.0.0.1:{web_hub.http_port}/#/cases/{case_id}")
        join = reader.locator(f"#consult-panel [data-consult='{consult_id}'] [data-action=join]")
        join.click()
        reader.wait_for_selector("#consult-waiting-notice:not([hidden])")
        assert reader.locator(".consult-call").is_hidden()
        shot(reader, "consult-waiting-zh")

        # the host sees who waits and admits them
        admit = clinic.locator("#consult-waiting [data-participant] [data-action=admit]")
        admit.wait_for()
        shot(clinic, "consult-host-waiting-room-en")
        admit.click()
        reader.wait_for_selector(".consult-call:not([hidden])")
        assert reader.locator("#consult-waiting-notice").is_hidden()
        reader.wait_for_function(
            "document.querySelectorAll('#consult-participants [data-participant]').length === 2"
        )

        # each sees the other's live video from the hub's relay
        remote_video_live(clinic, "clinic")
        remote_video_live(reader, "reader")

        # consent: one agrees, the other is asked; recording only when both agreed
        clinic.click("#consult-consent-give")
        reader.wait_for_selector("#consult-consent.attention")
        assert clinic.get_attribute("#consult-recording", "data-recording") == "false"
        reader.click("#consult-consent-give")
        clinic.wait_for_selector("#consult-recording[data-recording=true]")
        reader.wait_for_selector("#consult-recording[data-recording=true]")
        clinic.wait_for_selector("#consult-participants [data-consent=yes] >> nth=1")

        # mute and camera off switch the local tracks (the hub keeps the slots)
        local_tracks = (
            "() => document.querySelector('#consult-local video').srcObject"
            ".getTracks().map((t) => t.kind + ':' + t.enabled).sort().join(',')"
        )
        reader.click("#consult-mic")
        reader.click("#consult-camera")
        assert reader.evaluate(local_tracks) == "audio:false,video:false"
        assert reader.get_attribute("#consult-mic", "aria-pressed") == "true"
        reader.click("#consult-mic")
        reader.click("#consult-camera")
        assert reader.evaluate(local_tracks) == "audio:true,video:true"

        # screen share replaces the camera in the same sender: the clinic's tile of the reader
        # turns from the camera's 4:3 to the (fake) screen's 16:9 without renegotiation
        aspect = (
            "(r) => { const v = document.querySelector('#consult-remotes video');"
            " return v.videoHeight > 0 && Math.abs(v.videoWidth / v.videoHeight - r) < 0.05; }"
        )
        reader.click("#consult-screen")
        reader.wait_for_selector("#consult-screen[aria-pressed=true]")
        clinic.wait_for_function(aspect, arg=16 / 9)
        reader.click("#consult-screen")
        clinic.wait_for_function(aspect, arg=4 / 3)

        # the host presents the CT; the reader's viewer follows slice and window
        clinic.click("#consult-present")
        clinic.wait_for_selector("#consult-share [data-viewer=dicom] canvas")
        clinic.wait_for_function(
            "() => { const s = document.querySelector('#consult-share [data-overlay=instance]');"
            " return Boolean(s) && s.textContent.includes('1/3'); }"
        )
        reader.wait_for_selector("#consult-share [data-viewer=dicom][data-readonly=true]")
        clinic.click("#consult-share [data-preset=lung]")
        clinic.focus("#consult-share canvas")
        clinic.keyboard.press("ArrowDown")
        clinic.keyboard.press("ArrowDown")
        presented = clinic.evaluate(VIEW_STATE)
        assert presented["instance"] == 2 and presented["series_uid"] == series
        assert presented["window_width"] and presented["window_width"] > 1000  # lung window
        reader.wait_for_function(
            f"(p) => {{ const s = {VIEW_STATE}; return s.instance === p.instance"
            " && s.window_width === p.window_width && s.window_center === p.window_center; }",
            arg=presented,
        )
        followed = reader.evaluate(VIEW_STATE)
        assert followed["study_uid"] == study and followed["series_uid"] == series
        # the presenter's pointer travels too (the reader's viewer draws it as a marker)
        for step in range(1, 30):
            box = clinic.locator("#consult-share canvas").bounding_box()
            x, y = box["x"] + box["width"] * (0.4 + step / 100), box["y"] + box["height"] * 0.5
            clinic.mouse.move(x, y)
            clinic.wait_for_timeout(100)
            if reader.evaluate(
                "() => { const s = document.querySelector('.consult-room').parentNode"
                ".telehubConsult.room.syncState; return Boolean(s && s.pointer); }"
            ):
                break
        else:
            raise AssertionError(
                f"no pointer reached the reader; presenter {clinic.evaluate(VIEW_STATE)}"
            )
        shot(clinic, "consult-presenting-en")
        shot(reader, "consult-following-zh")

        # the reader takes over presenting from where the view is; the clinic now follows
        reader.click("#consult-present")
        reader.wait_for_selector("#consult-share [data-viewer=dicom][data-readonly=false]")
        clinic.wait_for_selector("#consult-share [data-viewer=dicom][data-readonly=true]")
        reader.wait_for_function(
            "() => { const s = document.querySelector('#consult-share [data-overlay=instance]');"
            " return Boolean(s) && s.textContent.includes('3/3'); }"
        )
        assert reader.evaluate(VIEW_STATE)["instance"] == 2
        reader.focus("#consult-share canvas")
        reader.keyboard.press("ArrowUp")
        clinic.wait_for_function(f"() => {VIEW_STATE}.instance === 1")
        clinic.click("#consult-present")  # and back, for what follows
        clinic.wait_for_selector("#consult-share [data-viewer=dicom][data-readonly=false]")

        # a dropped socket resumes the same seat (the others see no leave)
        me = reader.evaluate(
            "document.querySelector('.consult-room').parentNode.telehubConsult.room.me"
        )
        reader.evaluate(
            "document.querySelector('.consult-room').parentNode.telehubConsult.dropSocket()"
        )
        reader.wait_for_selector("#consult-status[data-state=reconnecting]")
        reader.wait_for_selector("#consult-status[data-state=connected]", timeout=15_000)
        assert (
            reader.evaluate(
                "document.querySelector('.consult-room').parentNode.telehubConsult.room.me"
            )
            == me
        )
        assert clinic.locator(f"#consult-participants [data-participant='{me}']").count() == 1

        # audio only: the reader offers again without video (the hub replaces its peer); the
        # clinic's tile for the reader loses its picture, the reader still hears the clinic
        reader.click("#consult-audio-only")
        reader.wait_for_selector("#consult-audio-only[aria-pressed=true]")
        clinic.wait_for_selector(f"#consult-remotes [data-participant='{me}'][data-video=false]")
        reader.wait_for_function(
            "() => { const v = document.querySelector('#consult-remotes video');"
            " return Boolean(v && v.srcObject) && v.srcObject.getAudioTracks().length === 1"
            " && v.srcObject.getVideoTracks().length === 0; }"
        )
        reader.click("#consult-audio-only")
        clinic.wait_for_selector(f"#consult-remotes [data-participant='{me}'][data-video=true]")
        remote_video_live(clinic, "clinic, reader back from audio only")

        # leaving tells the others at once; coming back skips the waiting room (admitted
        # before) and, with both consents kept, the recording resumes
        count = "() => document.querySelectorAll('#consult-participants [data-participant]').length"
        reader.click("#consult-leave")
        reader.wait_for_selector("#consult-finished[data-reason=left]")
        clinic.wait_for_function(f"{count} === 1")
        clinic.wait_for_selector("#consult-recording[data-recording=false]")
        reader.click("#consult-rejoin")
        reader.wait_for_selector(".consult-call:not([hidden])")
        clinic.wait_for_function(f"{count} === 2")
        clinic.wait_for_selector("#consult-recording[data-recording=true]")
        remote_video_live(reader, "reader after rejoining")

        # a language switch renders the page again and keeps the seat: nobody sees a leave
        host = "() => document.querySelector('.consult-room').parentNode.telehubConsult.room.me"
        host_id = clinic.evaluate(host)
        clinic.click(".lang-switch")
        clinic.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
        clinic.wait_for_selector("#consult-status[data-state=connected]")
        assert clinic.evaluate(host) == host_id
        remote_video_live(clinic, "clinic after the language switch")
        assert reader.evaluate(f"{count}") == 2
        shot(clinic, "consult-host-zh")

        # a join link with a bad token is refused with a clear message
        bad = reader_ctx.new_page()
        bad.goto(f"http://127.0.0.1:{web_hub.http_port}/#/consults/{consult_id}?token=not-a-token")
        bad.wait_for_selector("#consult-error[data-code=invalid_token]")
        assert "无效" in bad.locator("#consult-error").inner_text()
        shot(bad, "consult-bad-token-zh")
        bad.close()

        # the host ends it: the reader is told, and the consult cannot be joined again
        clinic.on("dialog", lambda d: d.accept())
        clinic.click("#consult-end")
        reader.wait_for_selector("#consult-finished[data-reason=ended]")
        clinic.wait_for_selector("#consult-finished[data-reason=ended]")
        reader.reload()
        reader.wait_for_selector("#consult-error[data-code=consult_ended]")
        shot(reader, "consult-ended-zh")

        assert not clinic_problems.page_errors, clinic_problems.page_errors
        assert not reader_problems.page_errors, reader_problems.page_errors
        assert not clinic_problems.foreign and not reader_problems.foreign
        assert not clinic_problems.console_errors and not reader_problems.console_errors, (
            clinic_problems.console_errors,
            reader_problems.console_errors,
        )
    finally:
        clinic_ctx.close()
        reader_ctx.close()


#: A camera that cannot be opened (busy, broken): only video requests fail.
NO_CAMERA = """(() => {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => constraints && constraints.video
    ? Promise.reject(new DOMException("camera busy", "NotReadableError"))
    : original(constraints);
})();"""


def test_camera_failure_falls_back_to_audio_only(
    browser: Any, web_hub: Hub, ct_case: tuple[int, str, str]
) -> None:
    case_id = ct_case[0]
    token = login_token(web_hub, "clinic")["token"]
    created = web_hub.api.post(f"/api/v1/cases/{case_id}/consults", {"invite": []}, token)
    assert created.status == 201, created.body
    consult_id = created.body["id"]
    context, page, problems = open_page(browser, web_hub, "clinic", lang="zh-CN")
    try:
        context.add_init_script(NO_CAMERA)
        page.goto(f"http://127.0.0.1:{web_hub.http_port}/#/consults/{consult_id}")
        page.reload()  # a hash change alone would not run the init script
        page.wait_for_selector("#consult-audio-fallback")
        assert "NotReadableError" in page.locator("#consult-audio-fallback").inner_text()
        page.wait_for_selector("#consult-audio-only[aria-pressed=true]")
        page.wait_for_selector("#consult-status[data-state=connected]")
        # still in the call: the hub's media peer connected with our audio alone
        page.wait_for_selector(".consult-call[data-media=connected]", timeout=20_000)
        assert (
            page.evaluate(
                "() => document.querySelector('#consult-local video')"
                ".srcObject.getVideoTracks().length"
            )
            == 0
        )
        assert page.locator("#consult-camera").is_disabled()
        shot(page, "consult-audio-only-zh")
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()
        web_hub.api.post(f"/api/v1/consults/{consult_id}/end", token=token)


def test_automatic_quality_steps_down_at_once_and_up_after_headroom(
    browser: Any, web_hub: Hub
) -> None:
    """The client's weak-link rule (docs/consults.md): thresholds, hysteresis, one step up."""
    context, page, problems = open_page(browser, web_hub, "reader", lang="en")
    try:
        page.wait_for_selector("body[data-page]")
        levels = page.evaluate(
            """async () => {
              const m = await import("/static/js/consult/media.js");
              const g = new m.QualityGovernor({upAfterMs: 10000, downSamples: 2});
              const good = {bitrate: 2e6, loss: 0};
              const weak = {bitrate: 500e3, loss: 0};
              return [
                g.next(good, 0),                          // already high: no change
                g.next(weak, 1000),                       // one weak sample: wait
                g.next(good, 2000),                       // it passed
                g.next(weak, 3000),
                g.next(weak, 4000),                       // twice in a row: medium
                g.next({bitrate: 300e3, loss: 0}, 5000),
                g.next({bitrate: 2e6, loss: 0.2}, 6000),  // heavy loss: audio
                g.next(good, 7000),                       // headroom starts
                g.next(good, 12000),                      // not yet 10 s
                g.next(good, 17000),                      // one step up: low
                g.next(good, 18000),                      // the next step waits again
                g.next(good, 28000),                      // medium
                m.qualityFor({bitrate: null, loss: 0}),   // unknown bitrate: no reason to drop
                m.qualityFor({bitrate: 200e3, loss: 0}),
              ];
            }"""
        )
        assert levels == [
            *[None, None, None, None, "medium", None, "audio"],
            *[None, None, "low", None, "medium", "high", "audio"],
        ]
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()
