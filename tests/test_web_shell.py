"""The front-end shell in a real browser: sign-in by the form, navigation by role, both
languages complete, every asset from the hub itself, no script errors."""

from __future__ import annotations

from typing import Any

from tests.browser import open_page, shot
from tests.helpers import Hub


def test_sign_in_by_form_lands_on_role_home_and_assets_are_local(
    browser: Any, web_hub: Hub
) -> None:
    context, page, problems = open_page(browser, web_hub, None, lang="en")
    try:
        page.fill("#login-username", "reader")
        page.fill("#login-password", "wrong")
        page.click("button[type=submit]")
        page.wait_for_selector(".alert-error")
        page.wait_for_timeout(300)
        errors_before = len(problems.console_errors)  # the refused login logs its 401
        page.fill("#login-password", "demo")
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-page=worklist]")
        assert page.locator("h1").first.inner_text() == "Worklist"
        shot(page, "shell-reader-worklist-en")
        assert not problems.foreign, problems.foreign
        assert not problems.page_errors, problems.page_errors
        page.wait_for_timeout(1000)  # the worklist's first load and the event stream
        assert problems.console_errors[errors_before:] == [], problems.console_errors
    finally:
        context.close()


def test_language_switch_and_both_dictionaries_complete(browser: Any, web_hub: Hub) -> None:
    context, page, problems = open_page(browser, web_hub, "clinic", lang="en")
    try:
        page.wait_for_selector("body[data-page=cases]")
        assert page.locator("h1").first.inner_text() == "Our cases"
        page.click(".lang-switch")
        page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        assert page.locator("h1").first.inner_text() == "本机构病例"
        shot(page, "shell-clinic-cases-zh")
        keys = page.evaluate("import('/static/js/i18n.js').then((m) => m.allKeys())")
        missing_zh = sorted(set(keys["en"]) - set(keys["zh-CN"]))
        missing_en = sorted(set(keys["zh-CN"]) - set(keys["en"]))
        assert not missing_zh and not missing_en, (missing_zh, missing_en)
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_browser_language_is_the_default(browser: Any, web_hub: Hub) -> None:
    context, page, _ = open_page(browser, web_hub, None, lang="zh-CN")
    try:
        page.wait_for_selector("#login-title")
        assert page.locator("#login-title").inner_text() == "登录"
    finally:
        context.close()
