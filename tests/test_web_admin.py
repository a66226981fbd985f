"""Management and the audit log in a real browser (issues 7 and 8): the admin sees the demo
consortium's facilities, centres and readers; switches a reader's duty and edits their cap (the
API's problems shown one by one when refused); adds a facility and a DICOM node and deletes the
node; and finds a reader's read of a case in the audit log. Others have no such pages."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.browser import open_page, shot
from tests.helpers import Api, Hub, free_port
from tests.test_tat_analytics import routed_cases, send_studies


def _user(api: Api, token: str, username: str) -> dict[str, Any]:
    users = api.get("/api/v1/consortium/users", token).body["users"]
    return next(u for u in users if u["username"] == username)


def test_admin_sees_the_consortium_and_manages_readers(browser: Any, web_hub: Hub) -> None:
    api = web_hub.api
    admin = api.login("admin")
    context, page, problems = open_page(browser, web_hub, "admin", path="/#/admin?tab=facilities")
    try:
        page.wait_for_selector("main[data-state=ready]")
        codes = page.locator("#facilities-table tbody td:first-child").all_inner_texts()
        assert {"PH", "CH", "T1", "T2"} <= set(codes)
        assert "Provincial People's Hospital" in page.locator("#facilities-table").inner_text()

        page.click("[data-tab=centres]")
        page.wait_for_selector("#centres-table")
        centres = page.locator("#centres-table").inner_text()
        assert "CH-IMAGING" in centres and "PH-ECG" in centres

        page.click("[data-tab=users]")
        page.wait_for_selector("#users-table")
        page.wait_for_selector("main[data-state=ready]")
        for name in ("reader", "reader2", "resident", "ecgreader", "expert"):
            assert page.locator(f"#users-table tr[data-user={name}]").count() == 1
        row = page.locator("#users-table tr[data-user=resident]")
        assert "CR, DX, CT" in row.inner_text()
        shot(page, "admin-users-en")

        # Duty: one click switches it on, through the API; a second switches it back.
        before = _user(api, admin, "reader2")["on_duty"]
        duty = "#users-table tr[data-user=reader2] [data-action=duty]"
        assert page.get_attribute(duty, "aria-pressed") == str(before).lower()
        page.click(duty)
        page.wait_for_selector(f"{duty}[aria-pressed={str(not before).lower()}]")
        assert _user(api, admin, "reader2")["on_duty"] is (not before)
        page.click(duty)
        page.wait_for_selector(f"{duty}[aria-pressed={str(before).lower()}]")
        assert _user(api, admin, "reader2")["on_duty"] is before

        # Edit the cap and qualifications: a refused value shows the API's problems, nothing
        # changes; a good one is saved.
        page.click("#users-table tr[data-user=reader2] [data-action=edit]")
        form = page.locator("form[data-edit=reader2]")
        user_id = _user(api, admin, "reader2")["id"]
        form.locator(f"#edit-{user_id}-cap").fill("-3")
        form.locator(f"#edit-{user_id}-qual").fill("CT, MR")
        form.locator("button[type=submit]").click()
        page.wait_for_selector("form[data-edit=reader2] .problems li")
        assert "max open cases" in form.locator(".problems").inner_text()
        assert _user(api, admin, "reader2")["qualifications"] == []  # all or nothing
        form.locator(f"#edit-{user_id}-cap").fill("7")
        form.locator("button[type=submit]").click()
        form.wait_for(state="detached")  # saved: the table is shown again
        page.wait_for_selector("#admin-flash .alert-success")
        saved = _user(api, admin, "reader2")
        assert saved["max_open_cases"] == 7 and saved["qualifications"] == ["CT", "MR"]
        assert "CT, MR" in page.locator("#users-table tr[data-user=reader2]").inner_text()
        resp = api.request(
            "PATCH",
            f"/api/v1/consortium/users/{user_id}",
            admin,
            body={"max_open_cases": None, "qualifications": []},
        )
        assert resp.status == 200, resp.body

        # A new user with several mistakes: every problem is listed.
        page.fill("#user-username", "new reader")
        page.select_option("#user-role", "reader")
        page.click("#user-form button[type=submit]")
        page.wait_for_selector("#user-form .problems li")
        listed = page.locator("#user-form .problems li").all_inner_texts()
        assert len(listed) >= 2, listed
        shot(page, "admin-user-problems-en")
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_add_facility_and_dicom_node(browser: Any, web_hub: Hub) -> None:
    api = web_hub.api
    admin = api.login("admin")
    code = f"V{uuid.uuid4().hex[:5].upper()}"
    context, page, problems = open_page(browser, web_hub, "admin", path="/#/admin?tab=facilities")
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.wait_for_selector("#facility-form")
        page.fill("#fac-code", code)
        page.select_option("#fac-tier", "village")
        page.select_option("#fac-parent", "T1")
        page.click("#facility-form button[type=submit]")  # no name yet
        page.wait_for_selector("#facility-form .alert-error")
        page.fill("#fac-name", f"测试村卫生室 Test village {code}")
        page.click("#facility-form button[type=submit]")
        page.locator("#facilities-table tbody tr", has_text=code).wait_for()
        facilities = api.get("/api/v1/consortium/facilities", admin).body["facilities"]
        mine = next(f for f in facilities if f["code"] == code)
        assert mine["tier"] == "village" and mine["parent"] == "T1"

        page.click("[data-tab=nodes]")
        page.wait_for_selector("#node-form")
        ae = f"N{uuid.uuid4().hex[:8].upper()}"
        page.fill("#node-ae", ae)
        page.fill("#node-host", "127.0.0.1")
        page.fill("#node-port", "99999")
        page.click("#node-form button[type=submit]")
        page.wait_for_selector("#node-form .alert-error")
        assert "port" in page.locator("#node-form .alert-error").inner_text()
        page.fill("#node-port", "11112")
        page.click("#node-form button[type=submit]")
        page.wait_for_selector(f"[data-action=delete-node][data-node={ae}]")
        nodes = api.get("/api/v1/dicom-nodes", admin).body["nodes"]
        assert any(n["ae_title"] == ae and n["port"] == 11112 for n in nodes)
        shot(page, "admin-nodes-en")
        page.click(f"[data-action=delete-node][data-node={ae}]")
        page.wait_for_selector(f"[data-action=delete-node][data-node={ae}]", state="detached")
        assert all(n["ae_title"] != ae for n in api.get("/api/v1/dicom-nodes", admin).body["nodes"])

        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_failed_webhook_delivery_is_listed_and_retried(browser: Any, web_hub: Hub) -> None:
    """A test message to a closed port fails at once; the admin sends it again."""
    api = web_hub.api
    admin = api.login("admin")
    hook = api.post(
        "/api/v1/webhooks",
        {
            "name": f"hook-{uuid.uuid4().hex[:8]}",
            "kind": "json",
            "url": f"http://127.0.0.1:{free_port()}/closed",
            "secret": "s3cret-s3cret-s3cret",
        },
        admin,
    )
    assert hook.status == 201, hook.body
    hook_id = hook.body["id"]
    try:
        failed = api.post(f"/api/v1/webhooks/{hook_id}/test", {}, admin)
        assert failed.status == 200 and failed.body["status"] == "failed", failed.body
        delivery = failed.body["id"]
        context, page, problems = open_page(browser, web_hub, "admin", path="/#/admin?tab=webhooks")
        try:
            page.wait_for_selector("#webhooks-table")
            assert hook.body["name"] in page.locator("#webhooks-table").inner_text()
            retry = f"#failed-table [data-action=retry][data-delivery='{delivery}']"
            row = page.locator(
                "#failed-table tbody tr",
                has=page.locator(f"[data-action=retry][data-delivery='{delivery}']"),
            )
            assert row.locator("td").nth(4).inner_text() == str(failed.body["attempts"])
            shot(page, "admin-webhooks-en")
            page.click(retry)
            page.wait_for_selector(retry, state="detached")
            assert f"Delivery {delivery} queued again" in page.locator("#admin-flash").inner_text()
            listed = api.get(f"/api/v1/webhooks/deliveries?webhook_id={hook_id}", admin).body
            mine = next(d for d in listed["deliveries"] if d["id"] == delivery)
            # queued again, attempts counted afresh (the port is still closed: it stays pending,
            # eight attempts ten seconds apart and more, before it could fail again)
            assert mine["status"] == "pending", mine
            assert not problems.page_errors, problems.page_errors
        finally:
            context.close()
    finally:
        api.request("DELETE", f"/api/v1/webhooks/{hook_id}", admin)


def test_audit_log_lists_the_readers_read(browser: Any, web_hub: Hub, tmp_path: Path) -> None:
    api = web_hub.api
    reader = api.login("reader")
    (uid,) = send_studies(web_hub, tmp_path, "CLINIC1", [f"AUDW-{uuid.uuid4().hex[:8]}"])
    (case_id,) = routed_cases(api, reader, [uid])
    assert api.get(f"/api/v1/cases/{case_id}", reader).status == 200

    context, page, problems = open_page(browser, web_hub, "admin", lang="zh-CN", path="/#/audit")
    try:
        page.wait_for_selector("main[data-state=ready]")
        assert page.locator("h1").first.inner_text() == "审计日志"
        page.fill("#audit-case", str(case_id))
        page.click("#audit-search")
        page.wait_for_function(
            """id => {
                const rows = [...document.querySelectorAll('#audit-table tbody tr')];
                return rows.length > 0 && rows.every(r => r.dataset.object.endsWith(':' + id));
            }""",
            arg=str(case_id),
        )
        row = page.locator(
            f"#audit-table tr[data-user=reader][data-action=read][data-object='case:{case_id}']"
        )
        row.first.wait_for()
        text = row.first.inner_text()
        assert "127.0.0.1" in text and "阅片医生" in text
        objects = page.locator("#audit-table tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.object)"
        )
        assert objects and all(o.endswith(f":{case_id}") for o in objects)
        shot(page, "audit-case-zh")
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_management_is_for_admins_only(browser: Any, web_hub: Hub) -> None:
    for who, home in (("reader", "worklist"), ("clinic", "cases")):
        context, page, _ = open_page(browser, web_hub, who, path="/#/audit")
        try:
            page.wait_for_selector(f"body[data-page={home}]")
            assert page.locator("[data-nav=admin], [data-nav=audit]").count() == 0
        finally:
            context.close()
