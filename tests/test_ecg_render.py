"""ECG paper rendering (SVG, PNG) and the viewer JSON, on real PTB and MIT-BIH records."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from functools import cache

import numpy as np
import pytest

from ecg import render
from ecg.model import ECG, STANDARD_12, ECGError, Lead, normalise_lead_name
from ecg.render import page_layout, render_png, render_svg, waveform_json
from tests.helpers import ECG_DATA

DATA = ECG_DATA
SVG = "{http://www.w3.org/2000/svg}"
ORDER_12 = ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II"]


@cache
def _record(name: str, seconds: float | None = None) -> ECG:
    wfdb = pytest.importorskip("wfdb")
    if not (DATA / f"{name}.hea").exists():
        pytest.skip(f"test record {name} not in {DATA}")
    header = wfdb.rdheader(str(DATA / name))
    sampto = None if seconds is None else int(seconds * header.fs)
    rec = wfdb.rdrecord(str(DATA / name), sampto=sampto)
    leads = tuple(
        Lead(normalise_lead_name(n), rec.p_signal[:, i].astype(np.float64))
        for i, n in enumerate(rec.sig_name)
    )
    return ECG(leads=leads, sampling_rate=float(rec.fs), source_format="wfdb")


def ptb15() -> ECG:
    return _record("s0010_re")


def ptb12() -> ECG:
    ecg = ptb15()
    return ECG(tuple(ecg.lead(n) for n in STANDARD_12), ecg.sampling_rate)  # type: ignore[misc]


def holter() -> ECG:
    return _record("100", 120)


def _points(d: str) -> np.ndarray:
    return np.array(re.findall(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)", d), dtype=float)


def _traces(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "trace"]


def _mm(value: str | None) -> float:
    assert value is not None and value.endswith("mm"), value
    return float(value[:-2])


# ----- SVG ------------------------------------------------------------------------------------
def test_12_lead_svg_is_standard_paper_layout() -> None:
    svg = render_svg(ptb12(), title="s0010_re", measurements={"HR": "72 bpm (automated)"})
    root = ET.fromstring(svg)
    width, height = _mm(root.get("width")), _mm(root.get("height"))
    assert root.get("viewBox") == f"0 0 {width:g} {height:g}"
    cal_area = 10.0  # a 5 mm pulse with 2.5 mm of baseline either side
    assert width == pytest.approx(2 * render.MARGIN_MM + cal_area + 4 * 2.5 * 25)

    traces = _traces(root)
    assert [g.get("data-lead") for g in traces] == ORDER_12
    labels = [g.find(f"{SVG}text") for g in traces]
    assert [t.text for t in labels] == ORDER_12  # type: ignore[union-attr]
    # Visible: the trace group has fill="none" for its path, so the label sets its own fill.
    assert all(t.get("fill") not in (None, "none") for t in labels)  # type: ignore[union-attr]
    header = [t.text or "" for t in root.iter(f"{SVG}text")][:3]
    assert not any("  " in line for line in header)  # SVG collapses runs of spaces
    assert [g.get("data-column") for g in traces] == ["0", "1", "2", "3"] * 3 + ["-1"]
    # Each column shows its own 2.5 s window; the strip shows the whole first 10 s.
    assert [float(g.get("data-start-s", "")) for g in traces[:4]] == [0.0, 2.5, 5.0, 7.5]
    spans = []
    for g in traces:
        path = g.find(f"{SVG}path")
        assert path is not None and path.get("clip-path", "").startswith("url(#row")
        pts = _points(path.get("d", ""))
        spans.append(pts[-1, 0] - pts[0, 0])
    assert spans[:12] == pytest.approx([2.5 * 25] * 12, abs=0.1)
    assert spans[12] == pytest.approx(10 * 25, abs=0.1)

    # Grid: a pattern, not thousands of lines; 1 mm minor inside a 5 mm tile.
    pattern = root.find(f".//{SVG}pattern")
    assert pattern is not None and pattern.get("width") == "5" and pattern.get("height") == "5"
    assert len(list(root.iter(f"{SVG}line"))) < 20
    assert "25 mm/s, 10 mm/mV" in svg and "HR: 72 bpm (automated)" in svg and "s0010_re" in svg

    cals = [p for p in root.iter(f"{SVG}path") if p.get("class") == "cal"]
    assert len(cals) == 4  # one per row
    for cal in cals:
        pts = _points(cal.get("d", ""))
        assert np.ptp(pts[:, 1]) == pytest.approx(10.0)  # 1 mV at 10 mm/mV
        top = pts[pts[:, 1] == pts[:, 1].min(), 0]
        assert np.ptp(top) == pytest.approx(5.0)  # 200 ms at 25 mm/s


def test_15_lead_adds_frank_leads_as_a_row_or_notes_them() -> None:
    root = ET.fromstring(render_svg(ptb15()))
    names = [g.get("data-lead") for g in _traces(root)]
    assert names == ORDER_12[:12] + ["X", "Y", "Z", "II"]

    omitted = render_svg(ptb15(), extra_leads="omit")
    assert [g.get("data-lead") for g in _traces(ET.fromstring(omitted))] == ORDER_12
    assert "Not shown: X, Y, Z" in omitted


def test_square_pulse_is_exactly_gain_mm_tall() -> None:
    fs = 500.0
    samples = np.zeros(int(4 * fs))
    samples[800:900] = 1.0  # 1 mV for 200 ms
    ecg = ECG((Lead("I", samples),), fs)
    for gain in (10, 20, 5):
        root = ET.fromstring(render_svg(ecg, gain_mm_mv=gain))
        (trace,) = _traces(root)
        pts = _points(trace.find(f"{SVG}path").get("d", ""))  # type: ignore[union-attr]
        assert np.ptp(pts[:, 1]) == pytest.approx(gain, abs=0.011)
        high = pts[pts[:, 1] < pts[:, 1].max() - gain / 2, 0]
        assert np.ptp(high) == pytest.approx(0.2 * 25 - 25 / fs, abs=0.011)


def test_downsampling_keeps_a_one_sample_spike() -> None:
    fs = 2000.0  # 20 samples per 0.1 mm-column at 25 mm/s... far more than can be drawn
    samples = np.zeros(int(10 * fs))
    samples[12345] = 1.5
    samples[15001] = -0.7
    ecg = ECG((Lead("V2", samples),), fs)
    page = page_layout(ecg)
    (trace,) = page.traces
    assert len(trace.x) < len(samples) / 5
    baseline = page.rows[0].baseline
    assert (baseline - trace.y).max() == pytest.approx(15.0)
    assert (trace.y - baseline).max() == pytest.approx(7.0)


def test_big_traces_are_clipped_to_their_row_and_noted() -> None:
    fs = 500.0
    samples = np.zeros(int(10 * fs))
    samples[1000:1010] = 4.0  # 4 mV: 40 mm at 10 mm/mV, more than the 20 mm above baseline
    ecg = ECG((Lead("V2", samples), Lead("V3", np.zeros_like(samples))), fs)
    page = page_layout(ecg)
    assert [t.clipped for t in page.traces] == [True, False]
    assert any("Clipped" in n and "V2" in n for n in page.notes)
    svg = render_svg(ecg)
    assert 'clip-path="url(#row0)"' in svg and '<clipPath id="row0">' in svg
    # At half gain the same beat fits: the band is fixed paper, as on a cart.
    assert not page_layout(ecg, gain_mm_mv=5).traces[0].clipped


def test_holter_two_leads_render_as_stacked_rhythm_rows() -> None:
    root = ET.fromstring(render_svg(holter()))
    assert [g.get("data-lead") for g in _traces(root)] == ["MLII", "V5"]
    assert all(g.get("data-column") == "-1" for g in _traces(root))

    longer = ET.fromstring(render_svg(holter(), max_seconds=30))
    traces = _traces(longer)
    assert [g.get("data-lead") for g in traces] == ["MLII", "V5"] * 3
    assert [float(g.get("data-start-s", "")) for g in traces] == [0, 0, 10, 10, 20, 20]
    assert _mm(longer.get("width")) == _mm(root.get("width"))  # 10 s per row
    assert _mm(longer.get("height")) > _mm(root.get("height")) + 4 * render.ROW_HEIGHT_MM - 1


def test_single_and_unknown_leads_stack_and_text_is_escaped() -> None:
    samples = np.sin(np.linspace(0, 60, 3000))
    ecg = ECG((Lead("Lead A<1>", samples), Lead("ECG2", samples)), 250.0)
    svg = render_svg(ecg, title='<script>alert("x")</script> & co')
    root = ET.fromstring(svg)
    assert [g.get("data-lead") for g in _traces(root)] == ["Lead A<1>", "ECG2"]
    assert "<script>" not in svg
    assert any(t.text == '<script>alert("x")</script> & co' for t in root.iter(f"{SVG}text"))
    with pytest.raises(ECGError):
        render_svg(ecg, layout="12lead")


def test_12_lead_svg_renders_fast() -> None:
    import time

    ecg = ptb12()
    render_svg(ecg)
    start = time.perf_counter()
    render_svg(ecg)
    assert time.perf_counter() - start < 0.5  # ~15 ms on a laptop; generous for slow CI


# ----- PNG ------------------------------------------------------------------------------------
def test_png_is_the_same_page_at_its_dpi() -> None:
    from PIL import Image

    caption = {"": "automated, unconfirmed / 自动测量，未经确认", "HR": "72"}
    page = page_layout(ptb12(), measurements=caption)
    for dpi in (100, 150):
        data = render_png(ptb12(), dpi=dpi, measurements=caption)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        h, w, _ = img.shape
        assert abs(w - page.width / 25.4 * dpi) <= 1
        assert abs(h - page.height / 25.4 * dpi) <= 1
    assert img.std() > 10

    def px(mm: float) -> int:
        return int(mm / 25.4 * 150)

    dark = img.sum(axis=2) < 200
    pink = (img[..., 0] > 200) & (img[..., 1] < 215) & (img[..., 2] < 215)
    gx, gy, gw, gh = page.grid
    assert pink[px(gy) : px(gy + gh), px(gx) : px(gx + gw)].mean() > 0.05  # the grid is there
    for trace in page.traces:  # ink inside every trace's box, near its own data
        row = page.rows[trace.row]
        x0, x1 = px(trace.x.min()), px(trace.x.max())
        assert dark[px(row.top) + 1 : px(row.bottom), x0:x1].sum() > (x1 - x0) / 2, trace.lead
    assert not dark[: px(gy) - px(20), px(page.width / 2) :].any()  # header is left-aligned


# ----- viewer JSON ----------------------------------------------------------------------------
def test_waveform_json_full_resolution() -> None:
    ecg = holter()
    data = waveform_json(ecg, leads=["mlii"], start_s=1.0, end_s=3.0)
    assert data["units"] == "mV" and data["sampling_rate"] == 360.0
    assert data["decimation"] == 1 and data["start_s"] == 1.0 and data["duration_s"] == 2.0
    (lead,) = data["leads"]
    assert lead["name"] == "MLII"
    expected = np.round(ecg.lead("MLII").samples[360:1080], 3)  # type: ignore[union-attr]
    assert lead["samples"] == expected.tolist()


@pytest.mark.parametrize("max_points", [1000, 999, 37])
def test_waveform_json_decimation_keeps_peaks(max_points: int) -> None:
    ecg = holter()
    data = waveform_json(ecg, max_points=max_points)
    assert data["decimation"] > 1 and data["method"] == "minmax"
    for lead, raw in zip(data["leads"], ecg.leads, strict=True):
        samples = np.array(lead["samples"])
        assert len(samples) <= max_points
        assert len(samples) * data["decimation"] >= ecg.n_samples  # covers the whole excerpt
        assert samples.max() == round(raw.samples.max(), 3)
        assert samples.min() == round(raw.samples.min(), 3)


def test_waveform_json_rejects_bad_requests() -> None:
    ecg = holter()
    with pytest.raises(ECGError):
        waveform_json(ecg, leads=["V9"])
    with pytest.raises(ECGError):
        waveform_json(ecg, start_s=5, end_s=5)
    with pytest.raises(ValueError):
        waveform_json(ecg, max_points=1)
