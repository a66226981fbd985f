"""The issue's journey in two real browsers against one real hub: a clinic sends a study from the
portal; the reader, with the worklist open, sees it arrive without reloading (the live event
stream), claims it from the list, writes the report from the CT template and signs it final;
the clinic's open case page shows the report as it is signed and downloads the PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from tests.browser import open_page, shot
from tests.helpers import Hub, fresh_copy


def test_clinic_sends_reader_reports_live_and_clinic_downloads_the_pdf(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    study = generate_uid()
    folder = tmp_path / "ct"
    for _ in range(2):
        fresh_copy("CT_small.dcm", folder, study_uid=study)
    question = "咳嗽伴发热 1 周，排除肺炎"

    r_ctx, reader, r_problems = open_page(browser, web_hub, "reader", lang="en", path="/#/worklist")
    c_ctx, clinic, c_problems = open_page(browser, web_hub, "clinic", lang="zh-CN", path="/#/new")
    try:
        # The reader's worklist is open and listening; the duty switch shows the hub's state
        # (off), and a second device of the same reader sees the change made on the first.
        reader.wait_for_selector("#worklist-live[data-live=on]")
        reader.evaluate("window.__sameDocument = true")
        reader.wait_for_selector("#duty-switch[aria-checked=false]")
        switch = reader.locator("#duty-switch")
        switch.click()
        reader.wait_for_selector("#duty-switch[aria-checked=true]")
        d_ctx, device2, _ = open_page(browser, web_hub, "reader", lang="en", path="/#/worklist")
        try:
            device2.wait_for_selector("#duty-switch[aria-checked=true]")
        finally:
            d_ctx.close()
        switch.click()
        reader.wait_for_selector("#duty-switch[aria-checked=false]")

        # The clinic sends the study (Chinese interface) and opens the case it made.
        clinic.wait_for_selector("#portal-form")
        clinic.check("#portal-priority-urgent")
        clinic.fill("#portal-question", question)
        clinic.set_input_files("#portal-folder", str(folder))
        clinic.click("#portal-send")
        clinic.wait_for_selector("#portal-state[data-phase=done]", timeout=60_000)
        link = clinic.locator("[data-case-link]")
        case_id = int(link.get_attribute("data-case-link"))
        link.click()
        clinic.wait_for_selector("body[data-page=case] #case-badges")
        assert clinic.locator("#case-question").inner_text() == question
        assert clinic.locator("#reports-none").count() == 1
        clinic.evaluate("window.__sameDocument = true")

        # It arrives on the reader's worklist by itself (live), with its priority and SLA.
        row = reader.locator(f"tr[data-case='{case_id}']")
        row.wait_for(timeout=20_000)  # the fallback poll is 30 s: only the stream is this quick
        assert reader.evaluate("window.__sameDocument") is True
        assert "prio-urgent" in row.locator(".badge.prio").get_attribute("class")
        row.locator(f"[data-sla='{case_id}']").wait_for()
        shot(reader, "workspace-worklist-en")
        sla_class = row.locator(f"[data-sla='{case_id}']").get_attribute("class")
        assert "sla-ok" in sla_class, sla_class  # 2 h target, just arrived: neither near nor late
        # Amber when less than a fifth of the target is left, red once it has passed.
        classes = reader.evaluate(
            """() => import('/static/js/views/worklist.js').then((m) => {
                const at = (s) => new Date(Date.now() + s * 1000).toISOString();
                const c = (s, priority) => ({ sla_deadline: at(s), priority, status: 'routed' });
                return [m.slaState(c(20 * 60, 'urgent')).cls, m.slaState(c(5 * 60, 'stat')).cls,
                        m.slaState(c(-90, 'routine')).cls, m.slaState(c(3 * 3600, 'routine')).cls];
            })"""
        )
        assert classes == ["sla-near", "sla-near", "sla-breached", "sla-near"]
        red = row.locator(f"[data-sla='{case_id}']").evaluate(
            "n => { n.className = 'sla sla-breached'; return getComputedStyle(n).backgroundColor; }"
        )
        assert red == "rgb(198, 40, 40)"  # --stat
        # the countdown's next tick puts the true state back
        reader.wait_for_selector(f"[data-sla='{case_id}'].sla-ok")

        # Claim from the list, then write from the CT template.
        row.locator(f"[data-claim='{case_id}']").click()
        reader.wait_for_selector(f"#editor-{case_id}")
        template = reader.locator(f"#report-template-{case_id}")
        reader.wait_for_function(
            "id => !document.getElementById(`report-template-${id}`).disabled", arg=case_id
        )
        assert template.input_value() == "ct"
        findings = reader.locator(f"#report-section-{case_id}-findings")
        findings.fill("双肺纹理清晰，未见实变影。Lungs clear, no consolidation.")
        # The draft survives a language switch (a full re-render of the page).
        reader.click(".lang-switch")
        reader.wait_for_function("document.documentElement.lang === 'zh-CN'")
        assert "Lungs clear" in reader.locator(f"#report-section-{case_id}-findings").input_value()
        reader.click(".lang-switch")
        reader.wait_for_function("document.documentElement.lang === 'en'")
        reader.locator(f"#report-section-{case_id}-impression").fill("未见肺炎征象。No pneumonia.")
        shot(reader, "workspace-editor-en")
        reader.once("dialog", lambda dialog: dialog.accept())
        reader.click(f"#report-final-{case_id}")
        reader.wait_for_selector("article[data-report][data-status=final]")
        shot(reader, "workspace-signed-en")

        # The clinic's page (not reloaded) shows the final report, and its PDF downloads.
        final = clinic.locator("article[data-status=final]")
        final.wait_for(timeout=20_000)
        assert clinic.evaluate("window.__sameDocument") is True
        assert clinic.locator("#case-badges").get_attribute("data-status") == "final"
        text = final.locator(".report-text").inner_text()
        assert "Lungs clear" in text and "No pneumonia" in text
        shot(clinic, "workspace-clinic-report-zh")
        version = final.get_attribute("data-report")
        with clinic.expect_download() as info:
            final.locator(f"[data-pdf='{version}']").click()
        pdf = Path(info.value.path()).read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 1000
        assert info.value.suggested_filename == f"telehub-case-{case_id}-v{version}.pdf"

        # The clinic's case list shows it done, live too.
        clinic.click("[data-nav=cases]")
        clinic.locator(f"tr[data-case='{case_id}'] .badge.ready").wait_for()
        shot(clinic, "workspace-clinic-cases-zh")
        for problems in (r_problems, c_problems):
            assert not problems.page_errors, problems.page_errors
            assert not problems.foreign, problems.foreign
    finally:
        r_ctx.close()
        c_ctx.close()


def stow_case(hub: Hub, tmp: Path) -> int:
    """A CT study sent by the clinic over STOW-RS; the routed case's id."""
    study = generate_uid()
    part = fresh_copy("CT_small.dcm", tmp, study_uid=study).read_bytes()
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--b--\r\n"
    token = hub.api.login("clinic")
    sent = hub.api.request(
        "POST",
        "/dicomweb/studies",
        token,
        raw=body,
        content_type='multipart/related; type="application/dicom"; boundary=b',
    )
    assert sent.status == 200, sent.body
    return hub.api.wait_for(
        "/api/v1/cases?limit=500",
        token,
        lambda b: next(
            (
                c["id"]
                for c in b["cases"]
                if study in c["study_instance_uids"] and c["status"] == "routed"
            ),
            None,
        ),
    )


def test_reader_escalates_with_a_reason_and_the_expert_signs_and_adds_an_addendum(
    browser: Any, web_hub: Hub, tmp_path: Path
) -> None:
    case_id = stow_case(web_hub, tmp_path)
    r_ctx, reader, r_problems = open_page(
        browser, web_hub, "reader", lang="zh-CN", path=f"/#/cases/{case_id}"
    )
    e_ctx, expert, e_problems = open_page(browser, web_hub, "expert", lang="en", path="/#/worklist")
    try:
        reader.click("#case-claim")
        reader.wait_for_selector(f"#editor-{case_id}")
        reader.click(f"#escalate-panel-{case_id} summary")
        reader.click(f"#escalate-{case_id}")
        assert (
            reader.locator(f"#escalate-panel-{case_id} .alert-error").inner_text() == "请填写原因。"
        )
        reader.fill(f"#escalate-reason-{case_id}", "疑似颅内病变，需神经影像专家会诊")
        reader.click(f"#escalate-{case_id}")
        reader.wait_for_selector("#case-escalated")
        shot(reader, "workspace-escalated-zh")
        assert "已上转" in reader.locator("#case-escalated").inner_text()

        # The tertiary expert's worklist shows it (live), with the reason in the timeline.
        expert.locator(f"tr[data-case='{case_id}']").wait_for(timeout=20_000)
        expert.locator(f"[data-claim='{case_id}']").click()
        expert.wait_for_selector(f"#editor-{case_id}")
        assert "疑似颅内病变" in expert.locator(".timeline").inner_text()
        expert.wait_for_function(
            "id => !document.getElementById(`report-template-${id}`).disabled", arg=case_id
        )
        expert.select_option(f"#report-template-{case_id}", "")  # free text instead
        expert.fill(f"#report-text-{case_id}", "No intracranial abnormality.")
        expert.click(f"#report-prelim-{case_id}")
        expert.wait_for_selector("article[data-status=preliminary]")
        expert.once("dialog", lambda dialog: dialog.accept())
        expert.click(f"#report-final-{case_id}")
        expert.wait_for_selector("article[data-status=final]")
        # After the final only an addendum can follow, and the signed text stays.
        expert.wait_for_selector(f"#editor-{case_id}.editor-addendum")
        expert.fill(f"#report-text-{case_id}", "Addendum: compared with the prior CT, unchanged.")
        expert.click(f"#report-final-{case_id}")
        expert.wait_for_selector("article[data-status=addendum]")
        shot(expert, "workspace-addendum-en")
        statuses = expert.locator("article[data-report]").evaluate_all(
            "nodes => nodes.map((n) => n.dataset.status)"
        )
        assert statuses == ["addendum", "final", "preliminary"]
        for problems in (r_problems, e_problems):
            assert not problems.page_errors, problems.page_errors
    finally:
        r_ctx.close()
        e_ctx.close()
