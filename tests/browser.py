"""Browser tests' tools: Debian's Chromium driven by Playwright (no browser download is
possible here), a page signed in as a demo user, screenshots kept as test artifacts.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root (git-ignored); look
at them after a change to the front-end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import Hub, need_service

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
#: Fake camera and microphone, and no permission prompt, for consult tests.
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage",
]


def need_chromium() -> str:
    """Debian's Chromium, installed when missing (the suite runs as root on a fresh machine)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0 or not Path(CHROMIUM).exists():
        need_service("Chromium", result.stderr[-500:] or "apt-get install chromium failed")
    return CHROMIUM


def login_token(hub: Hub, username: str, password: str = "demo") -> dict[str, Any]:
    """The API's login answer ({token, user}) for a demo account."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{hub.http_port}/api/v1/auth/login",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


class PageProblems:
    """Console errors, failed requests and requests that leave the hub, seen by one page."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.console_errors: list[str] = []
        self.foreign: list[str] = []
        self.page_errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith((self.origin, "data:", "blob:"))
                else self.foreign.append(r.url)
            ),
        )


def open_page(
    browser: Any, hub: Hub, username: str | None, *, lang: str = "en", path: str = "/"
) -> tuple[Any, Any, PageProblems]:
    """A new browser context and page on the hub, signed in as `username` (by the login form
    when None is given, the page stays on it). Returns (context, page, problems)."""
    origin = f"http://127.0.0.1:{hub.http_port}"
    context = browser.new_context(
        locale=lang, viewport={"width": 1440, "height": 900}, permissions=["camera", "microphone"]
    )
    page = context.new_page()
    problems = PageProblems(origin)
    problems.attach(page)
    if username:
        answer = login_token(hub, username)
        token, user = json.dumps(answer["token"]), json.dumps(json.dumps(answer["user"]))
        context.add_init_script(
            f"sessionStorage.setItem('telehub.token', {token});"
            f"sessionStorage.setItem('telehub.user', {user});"
        )
    page.goto(origin + path)
    return context, page, problems


def shot(page: Any, name: str) -> Path:
    """Keep a full-page screenshot as a test artifact; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium under Playwright, closed afterwards."""
    from playwright.sync_api import sync_playwright

    executable = need_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def clear_artifacts() -> None:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
