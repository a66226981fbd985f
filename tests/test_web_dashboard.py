"""The dashboard in a real browser (issue 7): after cases sent by C-STORE as two township
clinics were claimed and signed final by readers, the admin's SVG charts draw one bar per
origin facility with the API's counts (read from the bars and from the pixels), the period
and consortium-figure charts add up to the same totals, the table view and the CSV download
carry the same figures, and the page is complete in Chinese."""

from __future__ import annotations

import csv
import io
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser import open_page, shot
from tests.helpers import Hub
from tests.test_tat_analytics import read_case, routed_cases, send_studies

#: The first series' colour in web/css/dashboard.css (.series-0).
SERIES_0 = (0x0E, 0x66, 0x73)


@pytest.fixture(scope="module")
def reported(web_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three new CT cases from T1 and two from T2, all read and signed final."""
    api = web_hub.api
    readers = [api.login("reader"), api.login("reader2")]
    folder = tmp_path_factory.mktemp("dash")
    ids: list[int] = []
    for aet, n in (("CLINIC1", 3), ("CLINIC2", 2)):
        uids = send_studies(
            web_hub, folder, aet, [f"DASH-{uuid.uuid4().hex[:8]}" for _ in range(n)]
        )
        for i, case_id in enumerate(routed_cases(api, readers[0], uids)):
            read_case(api, readers[i % 2], case_id, prelim=False, final=True)
            ids.append(case_id)
    return {"case_ids": ids}


def _page_query(page: Any) -> dict[str, str]:
    return {
        "from": page.input_value("#dash-from"),
        "to": page.input_value("#dash-to"),
        "tz": page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone"),
    }


def _bars(page: Any, chart: str) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        f"#{chart} svg rect.bar",
        """rects => rects.map(r => ({key: r.dataset.key, series: r.dataset.series,
            value: r.dataset.value === '' ? null : Number(r.dataset.value),
            width: r.getBBox().width, height: r.getBBox().height}))""",
    )


def _colour_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < 24).sum())


def test_admin_dashboard_charts_match_the_api(
    browser: Any, web_hub: Hub, reported: dict[str, Any], tmp_path: Path
) -> None:
    api = web_hub.api
    admin = api.login("admin")
    context, page, problems = open_page(browser, web_hub, "admin", path="/#/dashboard")
    try:
        page.wait_for_selector("main[data-state=ready]")
        q = _page_query(page)
        tat = api.get(
            f"/api/v1/analytics/tat?{urllib.parse.urlencode({**q, 'group_by': 'origin'})}", admin
        ).body
        figures = api.get(
            f"/api/v1/analytics/figures?{urllib.parse.urlencode({**q, 'period': 'month'})}", admin
        ).body
        expected = {g["group"]["code"]: g["count"] for g in tat["groups"]}
        assert expected.get("T1", 0) >= 3 and expected.get("T2", 0) >= 2, expected

        # One bar per origin facility, each with the API's count, widths in proportion.
        bars = _bars(page, "chart-volume")
        assert {b["key"]: b["value"] for b in bars} == expected
        widths = {b["key"]: b["width"] for b in bars}
        assert widths["T1"] / widths["T2"] == pytest.approx(expected["T1"] / expected["T2"], 0.02)
        # ... and they are drawn: the chart's pixels hold the bar colour, about in proportion.
        png = page.locator("#chart-volume svg").screenshot()
        assert _colour_pixels(png, SERIES_0) > 200

        assert page.get_attribute("#tile-cases .dash-tile-value", "data-value") == str(
            tat["overall"]["count"]
        )
        # TAT bars: p50/p90/p95 of the chosen interval, per origin, as the API says.
        span = page.input_value("#dash-span")
        tat_bars = {(b["key"], b["series"]): b["value"] for b in _bars(page, "chart-tat")}
        for g in tat["groups"]:
            for p in ("p50", "p90", "p95"):
                assert tat_bars[(g["group"]["code"], p)] == g["tat"][span][p]
        # SLA compliance bars
        sla_bars = {b["key"]: b["value"] for b in _bars(page, "chart-sla")}
        assert sla_bars == {g["group"]["code"]: g["sla"]["compliance"] for g in tat["groups"]}

        # Per period: the columns add up to the period's total.
        period = _bars(page, "chart-period-volume")
        assert sum(b["value"] for b in period) == tat["overall"]["count"]
        assert max(b["height"] for b in period) > 0
        # Consortium figures: imaging diagnoses per month add up to the API's total.
        kind = [b for b in _bars(page, "chart-fig-kind") if b["series"] == "Imaging"]
        assert sum(b["value"] for b in kind) == figures["total"]["by_kind"]["imaging"]
        interactive = _bars(page, "chart-fig-interactive")
        assert sum(b["value"] for b in interactive) == figures["total"]["remote_diagnoses"]

        # The table view lists the same groups.
        page.click("#chart-volume details summary")
        rows = page.locator("#chart-volume details tbody tr")
        assert rows.count() == len(tat["groups"])
        shot(page, "dashboard-admin-en")

        # CSV download of the same report.
        with page.expect_download() as info:
            page.click("#dash-csv")
        path = tmp_path / "tat.csv"
        info.value.save_as(path)
        table = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert {r["code"]: int(r["count"]) for r in table if r["group_by"] == "origin"} == expected

        # Another grouping: by reader, through the form.
        page.select_option("#dash-group", "reader")
        page.click("#dash-apply")
        page.wait_for_selector("#chart-volume svg rect.bar[data-key=reader]")
        page.wait_for_selector("main[data-state=ready]")
        by_reader = api.get(
            f"/api/v1/analytics/tat?{urllib.parse.urlencode({**q, 'group_by': 'reader'})}", admin
        ).body
        assert {b["key"]: b["value"] for b in _bars(page, "chart-volume")} == {
            g["group"]["code"] or "-": g["count"] for g in by_reader["groups"]
        }
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_dashboard_in_chinese(browser: Any, web_hub: Hub, reported: dict[str, Any]) -> None:
    context, page, problems = open_page(browser, web_hub, "admin", path="/#/dashboard")
    try:
        page.wait_for_selector("main[data-state=ready]")
        page.select_option("#dash-group", "origin")
        page.click("#dash-apply")
        page.wait_for_selector("main[data-state=ready]")
        page.click(".lang-switch")
        page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        page.wait_for_selector("main[data-state=ready]")
        assert page.locator("h1").first.inner_text() == "统计看板"
        assert page.locator("[data-nav=dashboard]").inner_text() == "统计看板"
        assert page.locator("#chart-volume h2").inner_text() == "按申请机构统计病例量"
        assert page.locator("label[for=dash-from]").inner_text() == "开始日期"
        assert page.locator("#chart-tat .chart-legend").inner_text().split() == [
            "P50",
            "P90",
            "P95",
        ]
        assert page.locator("#chart-volume details summary").inner_text() == "以表格显示"
        # the chart's accessible title follows the language, the bars stay
        title = page.locator("#chart-volume svg > title").text_content()
        assert title == "按申请机构统计病例量"
        assert page.locator("#chart-volume svg rect.bar").count() >= 2
        kinds = page.locator("#chart-fig-kind .chart-legend").inner_text()
        assert "影像" in kinds and "会诊" in kinds
        shot(page, "dashboard-admin-zh")
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()


def test_reader_sees_their_centre_and_clinic_has_no_dashboard(
    browser: Any, web_hub: Hub, reported: dict[str, Any]
) -> None:
    api = web_hub.api
    context, page, problems = open_page(browser, web_hub, "ecgreader", path="/#/dashboard")
    try:
        page.wait_for_selector("main[data-state=ready]")
        q = _page_query(page)
        mine = api.get(
            f"/api/v1/analytics/tat?{urllib.parse.urlencode({**q, 'group_by': 'origin'})}",
            api.login("ecgreader"),
        ).body
        # The ECG centre's reader sees none of the new CT cases.
        bars = {b["key"]: b["value"] for b in _bars(page, "chart-volume")}
        assert bars == {g["group"]["code"]: g["count"] for g in mine["groups"]}
        assert page.get_attribute("#tile-cases .dash-tile-value", "data-value") == str(
            mine["overall"]["count"]
        )
        assert not problems.page_errors, problems.page_errors
    finally:
        context.close()
    context, page, _ = open_page(browser, web_hub, "clinic", path="/#/dashboard")
    try:
        page.wait_for_selector("body[data-page=cases]")
        assert page.locator("[data-nav=dashboard]").count() == 0
    finally:
        context.close()
