"""ECGs drawn on standard ECG paper (SVG for the viewer, PNG for reports) and as viewer JSON.

One function, `page_layout`, decides everything a reader sees -- which lead goes where, which time
window each lead shows, the calibration pulses, labels, header and notes -- in millimetres of
paper. The SVG and PNG backends only draw that `Page`, so the two can never disagree about lead
order or scale. Paper is real paper: 1 mm on the page is 1 mm of ECG paper (SVG width/height are
in mm; the PNG's pixel size follows from its dpi), so a cardiologist can measure with calipers.

Traces are downsampled for drawing only, keeping the minimum and maximum sample of every 0.1 mm
of paper, so no QRS peak or pacing spike is ever hidden. Traces that leave their row are clipped
at the row edge, as carts do, and the header says which leads were clipped.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ecg.model import ECG, STANDARD_12, ECGError, normalise_lead_name

__all__ = [
    "GRID_12",
    "MARGIN_MM",
    "ROW_HEIGHT_MM",
    "Page",
    "page_layout",
    "render_png",
    "render_svg",
    "waveform_json",
]

# The standard 3 x 4 cart layout, row by row; column c shows seconds 2.5c-2.5(c+1).
GRID_12: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
COLUMN_S = 2.5  # seconds per column of the 12-lead grid
STRIP_S = 10.0  # seconds per full-width row (rhythm strip, stacked rows)
MARGIN_MM = 10.0  # white paper around the grid
ROW_HEIGHT_MM = 40.0  # fixed paper band per row: halving the gain makes tall QRS fit, as on carts
CAL_MV = 1.0
CAL_S = 0.2
RESOLUTION_MM = 0.1  # drawing resolution for the min/max downsampling

_TRACE_MM = 0.3
_MINOR_MM = 0.1
_MAJOR_MM = 0.25
_MINOR_COLOUR = "#f4bcbc"
_MAJOR_COLOUR = "#e07b7b"
_PAPER_COLOUR = "#fffafa"
_INK = "#111111"
_GREY = "#555555"
_FONTS_SVG = "'DejaVu Sans', Arial, Helvetica, 'Noto Sans CJK SC', 'Microsoft YaHei', sans-serif"
_FONTS_PNG = (
    "DejaVu Sans",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Arial Unicode MS",
)
_MAX_PNG_PIXELS = 60_000_000
_SEP = "\u2002\u2002\u2002"  # en spaces: SVG would collapse runs of ordinary spaces
_MM_PER_PT = 25.4 / 72


# ----- the layout both backends draw --------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """A horizontal band of paper; traces in it are clipped to it."""

    top: float
    height: float
    baseline: float

    @property
    def bottom(self) -> float:
        return self.top + self.height


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline of the text
    text: str
    size: float  # mm (em size)
    bold: bool = False
    anchor: str = "start"  # "start" | "end"
    colour: str = _INK


@dataclass(frozen=True)
class Trace:
    """One lead's time window, already in paper millimetres (x right, y down)."""

    lead: str
    row: int
    column: int  # -1 for full-width rows
    start_s: float
    end_s: float
    x: np.ndarray
    y: np.ndarray
    clipped: bool
    label: Text


@dataclass(frozen=True)
class Page:
    """Everything on the sheet, in mm. `grid` is (x, y, width, height) of the ECG paper."""

    width: float
    height: float
    grid: tuple[float, float, float, float]
    rows: tuple[Row, ...]
    traces: tuple[Trace, ...]
    calibrations: tuple[tuple[np.ndarray, np.ndarray], ...]  # (x, y) polylines
    ticks: tuple[tuple[float, float, float, float], ...]  # column separators x0, y0, x1, y1
    texts: tuple[Text, ...]
    labels: tuple[Text, ...]  # other row labels (time of a row, leads without data)
    layout: str
    notes: tuple[str, ...] = field(default=())


def _check_params(speed_mm_s: float, gain_mm_mv: float) -> None:
    if not (math.isfinite(speed_mm_s) and 1.0 <= speed_mm_s <= 200.0):
        raise ValueError(f"paper speed {speed_mm_s} mm/s is outside 1-200 mm/s")
    if not (math.isfinite(gain_mm_mv) and 0.5 <= gain_mm_mv <= 200.0):
        raise ValueError(f"gain {gain_mm_mv} mm/mV is outside 0.5-200 mm/mV")


def _fmt(value: float) -> str:
    return f"{value:g}"


def _minmax_bins(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of k samples: the indices of its (earlier, later) extreme, so shape order holds.

    NaN (a gap in the recording) never wins against a real sample; an all-NaN bin stays NaN.
    """
    n = len(values)
    nbins = -(-n // k)
    padded = np.pad(values, (0, nbins * k - n), mode="edge").reshape(nbins, k)
    nan = np.isnan(padded)
    lo = np.argmin(np.where(nan, np.inf, padded), axis=1)
    hi = np.argmax(np.where(nan, -np.inf, padded), axis=1)
    base = np.arange(nbins) * k
    first = base + np.minimum(lo, hi)
    second = base + np.maximum(lo, hi)
    return np.minimum(first, n - 1), np.minimum(second, n - 1)


def _draw_indices(n: int, values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the samples worth drawing: every bin's min and max, first and last sample."""
    if k <= 2 or n <= 4:
        return np.arange(n)
    first, second = _minmax_bins(values, k)
    idx = np.concatenate(([0], first, second, [n - 1]))
    return np.unique(idx)


def _trace(
    ecg: ECG,
    name: str,
    row_index: int,
    row: Row,
    column: int,
    x0: float,
    start_s: float,
    seconds: float,
    speed: float,
    gain: float,
    centre: bool,
) -> Trace | None:
    """The lead's samples in [start_s, start_s + seconds), placed at x0 on the row's baseline."""
    lead = ecg.lead(name)
    fs = ecg.sampling_rate
    i0 = int(round(start_s * fs))
    i1 = min(ecg.n_samples, int(round((start_s + seconds) * fs)))
    if lead is None or i1 - i0 < 2:
        return None
    values = np.asarray(lead.samples[i0:i1], dtype=np.float64)
    # Display-only offset removal: carts filter baseline wander; a constant shift of the whole
    # window keeps every interval and ST level relative to its own PR/TP segment intact.
    offset = float(np.nanmedian(values)) if centre and not np.isnan(values).all() else 0.0
    k = int(fs * RESOLUTION_MM / speed)
    idx = _draw_indices(len(values), values, k)
    x = x0 + idx * (speed / fs)
    y = row.baseline - (values[idx] - offset) * gain
    finite = y[np.isfinite(y)]
    clipped = bool(finite.size and (finite.min() < row.top or finite.max() > row.bottom))
    label = Text(x0 + 1.5, row.top + 5.0, name, 3.5, bold=True)
    return Trace(name, row_index, column, i0 / fs, i1 / fs, x, y, clipped, label)


def _calibration(x0: float, baseline: float, speed: float, gain: float) -> tuple[np.ndarray, ...]:
    """The 1 mV, 200 ms square pulse a reader checks gain and speed against."""
    lead_in = 2.5
    width = CAL_S * speed
    top = baseline - CAL_MV * gain
    xs = [x0, x0 + lead_in, x0 + lead_in, x0 + lead_in + width, x0 + lead_in + width]
    xs.append(xs[-1] + lead_in)
    ys = [baseline, baseline, top, top, baseline, baseline]
    return np.array(xs), np.array(ys)


def _wrap(items: Sequence[str], width_mm: float, size: float) -> list[str]:
    """Greedy line filling; wide (CJK) characters count double."""
    per_line = max(20, int(width_mm / (0.6 * size)))
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = f"{current}{_SEP}{item}" if current else item
        if current and _text_units(candidate) > per_line:
            lines.append(current)
            current = item
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _text_units(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def page_layout(
    ecg: ECG,
    *,
    layout: str = "auto",
    speed_mm_s: float = 25,
    gain_mm_mv: float = 10,
    title: str = "",
    measurements: Mapping[str, str] | None = None,
    start_s: float = 0.0,
    max_seconds: float = 10.0,
    rhythm_lead: str = "II",
    extra_leads: str = "rows",
    centre_baseline: bool = True,
) -> Page:
    """Place every trace, pulse and label in paper millimetres; both backends draw the result.

    layout: "auto" (12-lead grid when the record has the 12 standard leads, else stacked),
    "12lead" (3 x 4 grid of 2.5 s columns from the first 10 s after start_s + a 10 s rhythm
    strip of `rhythm_lead`; max_seconds does not apply) or "rhythm" (every lead as full-width
    10 s rows; longer excerpts continue on further rows, leads interleaved so beats line up,
    up to max_seconds after start_s).
    extra_leads (12-lead grid only, e.g. Frank X/Y/Z or V4R): "rows" adds them as grid rows in
    the same 2.5 s columns, "omit" leaves them out with a note. Seconds per column and row are
    fixed, so a faster paper speed makes the sheet wider, never shorter in time.
    """
    _check_params(speed_mm_s, gain_mm_mv)
    if layout not in ("auto", "12lead", "rhythm"):
        raise ValueError(f"unknown layout {layout!r}: use 'auto', '12lead' or 'rhythm'")
    if extra_leads not in ("rows", "omit"):
        raise ValueError(f"extra_leads must be 'rows' or 'omit', not {extra_leads!r}")
    if not (math.isfinite(start_s) and 0.0 <= start_s < ecg.duration):
        raise ECGError(f"start {start_s} s is outside the record (0-{ecg.duration:.3f} s)")
    if not (math.isfinite(max_seconds) and 0.0 < max_seconds <= 3600.0):
        raise ValueError(f"max_seconds {max_seconds} is outside (0, 3600]")
    if layout == "auto":
        layout = "12lead" if ecg.is_12_lead else "rhythm"
    if layout == "12lead" and not ecg.is_12_lead:
        missing = [n for n in STANDARD_12 if n not in ecg.lead_names]
        raise ECGError(f"a 12-lead layout needs the 12 standard leads; missing {missing}")

    speed, gain = float(speed_mm_s), float(gain_mm_mv)
    cal_w = math.ceil((5.0 + CAL_S * speed) / 5.0) * 5.0  # traces start on a major line
    trace_w = STRIP_S * speed
    grid_w = cal_w + math.ceil(trace_w / 5.0) * 5.0
    notes: list[str] = []

    # Which rows exist: (kind, leads, start second) -- kind "grid" or "strip".
    plan: list[tuple[str, tuple[str, ...], float]] = []
    if layout == "12lead":
        plan += [("grid", names, start_s) for names in GRID_12]
        extras = tuple(n for n in ecg.lead_names if n not in STANDARD_12)
        if extras and extra_leads == "rows":
            plan += [("grid", extras[i : i + 4], start_s) for i in range(0, len(extras), 4)]
        elif extras:
            notes.append(f"Not shown: {', '.join(extras)}")
        strip = normalise_lead_name(rhythm_lead)
        if ecg.lead(strip) is None:
            raise ECGError(f"rhythm lead {rhythm_lead!r} is not in the record")
        plan.append(("strip", (strip,), start_s))
        shown_end = min(ecg.duration, start_s + STRIP_S)
    else:
        shown_end = min(ecg.duration, start_s + max_seconds)
        t = start_s
        while t < shown_end - 1e-9:
            plan += [("strip", (name,), t) for name in ecg.lead_names]
            t += STRIP_S
        if len(plan) > 400:
            raise ValueError(f"{len(plan)} rows is too many for one sheet; lower max_seconds")
    if shown_end - start_s < STRIP_S - 1e-9 and layout == "12lead":
        notes.append(f"Record ends at {ecg.duration:.1f} s; later columns are blank")

    rows: list[Row] = []
    traces: list[Trace] = []
    cals: list[tuple[np.ndarray, np.ndarray]] = []
    ticks: list[tuple[float, float, float, float]] = []
    labels: list[Text] = []
    grid_x = MARGIN_MM
    x_trace = grid_x + cal_w
    col_w = COLUMN_S * speed
    centre = centre_baseline
    # Rows are placed from the grid top (y = 0) and moved below the header once its height,
    # which depends on the clipping note, is known.
    for r, (kind, names, t0) in enumerate(plan):
        row = Row(r * ROW_HEIGHT_MM, ROW_HEIGHT_MM, (r + 0.5) * ROW_HEIGHT_MM)
        rows.append(row)
        cals.append(_calibration(grid_x, row.baseline, speed, gain))
        if kind == "grid":
            for c, name in enumerate(names):
                x0 = x_trace + c * col_w
                t = t0 + c * COLUMN_S
                tr = _trace(ecg, name, r, row, c, x0, t, COLUMN_S, speed, gain, centre)
                if tr is None:  # past the end of a short record: label the empty column
                    labels.append(Text(x0 + 1.5, row.top + 5.0, name, 3.5, bold=True))
                else:
                    traces.append(tr)
                if c:
                    ticks.append((x0, row.baseline - 3.0, x0, row.baseline + 3.0))
        else:
            name = names[0]
            tr = _trace(ecg, name, r, row, -1, x_trace, t0, STRIP_S, speed, gain, centre)
            if tr is None:
                labels.append(Text(x_trace + 1.5, row.top + 5.0, name, 3.5, bold=True))
            else:
                traces.append(tr)
            if layout == "rhythm":
                end = min(t0 + STRIP_S, shown_end)
                labels.append(
                    Text(
                        grid_x + grid_w - 1.5,
                        row.top + 4.5,
                        f"{t0:.1f}\u2013{end:.1f} s",
                        2.8,
                        anchor="end",
                        colour=_GREY,
                    )
                )
    clipped = sorted({t.lead for t in traces if t.clipped}, key=_lead_order(ecg))
    if clipped:
        limit = ROW_HEIGHT_MM / 2 / gain
        notes.append(f"Clipped at the row edge (beyond \u00b1{limit:.1f} mV): {', '.join(clipped)}")
    # Header: title, paper settings, measurements (the caller's wording), notes.
    header: list[Text] = []
    y = MARGIN_MM
    text_w = grid_w
    if title:
        y += 5.0
        header.append(Text(MARGIN_MM, y, title, 4.5, bold=True))
    settings = [
        f"{_fmt(speed)} mm/s, {_fmt(gain)} mm/mV",
        f"{_fmt(ecg.sampling_rate)} Hz",
        f"{len(ecg.leads)} leads",
        f"{start_s:.1f}\u2013{shown_end:.1f} s of {ecg.duration:.1f} s",
    ]
    if ecg.acquired_at is not None:
        settings.append(f"acquired {ecg.acquired_at.isoformat(sep=' ', timespec='seconds')}")
    y += 5.0
    header.append(Text(MARGIN_MM, y, _SEP.join(settings), 3.2))
    if measurements:
        items = [f"{k}: {v}" if k and v else (k or v) for k, v in measurements.items()]
        for line in _wrap([i for i in items if i], text_w, 3.2):
            y += 4.5
            header.append(Text(MARGIN_MM, y, line, 3.2))
    for note in notes:
        y += 4.0
        header.append(Text(MARGIN_MM, y, note, 2.9, colour=_GREY))
    grid_y = y + 4.0
    rows = [Row(row.top + grid_y, row.height, row.baseline + grid_y) for row in rows]
    traces = [
        replace(t, y=t.y + grid_y, label=replace(t.label, y=t.label.y + grid_y)) for t in traces
    ]
    cals = [(cx, cy + grid_y) for cx, cy in cals]
    ticks = [(a, b + grid_y, c, d + grid_y) for a, b, c, d in ticks]
    labels = [replace(t, y=t.y + grid_y) for t in labels]

    grid_h = len(rows) * ROW_HEIGHT_MM
    return Page(
        width=2 * MARGIN_MM + grid_w,
        height=grid_y + grid_h + MARGIN_MM,
        grid=(grid_x, grid_y, grid_w, grid_h),
        rows=tuple(rows),
        traces=tuple(traces),
        calibrations=tuple(cals),
        ticks=tuple(ticks),
        texts=tuple(header),
        labels=tuple(labels),
        layout=layout,
        notes=tuple(notes),
    )


def _lead_order(ecg: ECG) -> Callable[[str], int]:
    order = {name: i for i, name in enumerate(STANDARD_12 + ecg.lead_names)}
    return lambda name: order.get(name, 99)


# ----- SVG ------------------------------------------------------------------------------------
def _path_data(x: np.ndarray, y: np.ndarray) -> str:
    """'M x,y L x,y x,y ...' with a new M after every gap (NaN) in the recording."""
    ok = np.isfinite(y)
    if ok.all():
        runs = [(0, len(y))]
    else:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
        runs = list(zip(edges[::2], edges[1::2], strict=True))
    parts: list[str] = []
    for a, b in runs:
        pts = [
            f"{px:.2f},{py:.2f}" for px, py in zip(x[a:b].tolist(), y[a:b].tolist(), strict=True)
        ]
        parts.append("M" + pts[0] + ("L" + " ".join(pts[1:]) if len(pts) > 1 else ""))
    return "".join(parts)


def render_svg(
    ecg: ECG,
    *,
    layout: str = "auto",
    speed_mm_s: float = 25,
    gain_mm_mv: float = 10,
    title: str = "",
    measurements: Mapping[str, str] | None = None,
    start_s: float = 0.0,
    max_seconds: float = 10.0,
    rhythm_lead: str = "II",
    extra_leads: str = "rows",
    centre_baseline: bool = True,
) -> str:
    """The ECG on paper as a standalone SVG whose user unit is 1 mm (width/height in mm).

    Every trace is `<g class="trace" data-lead=.. data-row=.. data-column=..>` with one
    `<path>` (clipped to its row) and its label; calibration pulses are `path.cal`. Arguments
    are those of `page_layout`. Text is XML-escaped, so titles from user input are safe.
    """
    page = page_layout(
        ecg,
        layout=layout,
        speed_mm_s=speed_mm_s,
        gain_mm_mv=gain_mm_mv,
        title=title,
        measurements=measurements,
        start_s=start_s,
        max_seconds=max_seconds,
        rhythm_lead=rhythm_lead,
        extra_leads=extra_leads,
        centre_baseline=centre_baseline,
    )
    return _svg(page)


def _svg_text(t: Text) -> str:
    attrs = f'x="{t.x:.2f}" y="{t.y:.2f}" font-size="{_fmt(t.size)}"'
    if t.bold:
        attrs += ' font-weight="bold"'
    if t.anchor != "start":
        attrs += f' text-anchor="{t.anchor}"'
    if t.colour != _INK:
        attrs += f' fill="{t.colour}"'
    return f"<text {attrs}>{escape(t.text)}</text>"


def _svg(page: Page) -> str:
    gx, gy, gw, gh = page.grid
    w, h = page.width, page.height
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(w)}mm" height="{_fmt(h)}mm" '
        f'viewBox="0 0 {_fmt(w)} {_fmt(h)}" font-family={quoteattr(_FONTS_SVG)} fill="{_INK}">',
        "<defs>",
        # One 5 mm tile: four 1 mm minor lines and the major line on both tile edges (each edge
        # shows half its width, so neighbouring tiles join into one full-width major line).
        f'<pattern id="ecg-grid" x="{_fmt(gx)}" y="{_fmt(gy)}" width="5" height="5" '
        'patternUnits="userSpaceOnUse">'
        f'<path d="M1,0V5M2,0V5M3,0V5M4,0V5M0,1H5M0,2H5M0,3H5M0,4H5" stroke="{_MINOR_COLOUR}" '
        f'stroke-width="{_MINOR_MM}" fill="none"/>'
        f'<path d="M0,0V5M5,0V5M0,0H5M0,5H5" stroke="{_MAJOR_COLOUR}" '
        f'stroke-width="{_MAJOR_MM}" fill="none"/></pattern>',
    ]
    for i, row in enumerate(page.rows):
        out.append(
            f'<clipPath id="row{i}"><rect x="{_fmt(gx)}" y="{row.top:.2f}" width="{_fmt(gw)}" '
            f'height="{_fmt(row.height)}"/></clipPath>'
        )
    out.append("</defs>")
    out.append(f'<rect width="{_fmt(w)}" height="{_fmt(h)}" fill="#ffffff"/>')
    out.append(
        f'<rect class="paper" x="{_fmt(gx)}" y="{_fmt(gy)}" width="{_fmt(gw)}" height="{_fmt(gh)}" '
        f'fill="{_PAPER_COLOUR}"/>'
    )
    out.append(
        f'<rect class="grid" x="{_fmt(gx)}" y="{_fmt(gy)}" width="{_fmt(gw)}" height="{_fmt(gh)}" '
        f'fill="url(#ecg-grid)" stroke="{_MAJOR_COLOUR}" stroke-width="{_MAJOR_MM}"/>'
    )
    out.append('<g class="header">')
    out.extend(_svg_text(t) for t in page.texts)
    out.append("</g>")
    stroke = f'fill="none" stroke="{_INK}" stroke-width="{_TRACE_MM}" stroke-linejoin="round"'
    out.append(f'<g class="calibration" {stroke}>')
    for x, y in page.calibrations:
        out.append(f'<path class="cal" d="{_path_data(x, y)}"/>')
    out.append("</g>")
    if page.ticks:
        out.append(f'<g class="ticks" stroke="{_INK}" stroke-width="{_TRACE_MM}">')
        out.extend(
            f'<line x1="{a:.2f}" y1="{b:.2f}" x2="{c:.2f}" y2="{d:.2f}"/>'
            for a, b, c, d in page.ticks
        )
        out.append("</g>")
    out.append(f'<g class="traces" {stroke}>')
    for tr in page.traces:
        # The group's fill="none" (for the path) must not hide the label.
        label = _svg_text(tr.label).replace("<text ", f'<text stroke="none" fill="{_INK}" ', 1)
        out.append(
            f'<g class="trace" data-lead={quoteattr(tr.lead)} data-row="{tr.row}" '
            f'data-column="{tr.column}" data-start-s="{tr.start_s:.3f}">{label}'
            f'<path d="{_path_data(tr.x, tr.y)}" clip-path="url(#row{tr.row})"/></g>'
        )
    out.append("</g>")
    if page.labels:
        out.append('<g class="labels">')
        out.extend(_svg_text(t) for t in page.labels)
        out.append("</g>")
    out.append("</svg>\n")
    return "\n".join(out)


# ----- PNG ------------------------------------------------------------------------------------
def render_png(
    ecg: ECG,
    *,
    dpi: int = 150,
    layout: str = "auto",
    speed_mm_s: float = 25,
    gain_mm_mv: float = 10,
    title: str = "",
    measurements: Mapping[str, str] | None = None,
    start_s: float = 0.0,
    max_seconds: float = 10.0,
    rhythm_lead: str = "II",
    extra_leads: str = "rows",
    centre_baseline: bool = True,
) -> bytes:
    """The same page as `render_svg`, rasterised by matplotlib's Agg backend (no system libs).

    Pixel size is page mm / 25.4 * dpi, so a print at that dpi is true paper scale.
    """
    if not 10 <= dpi <= 1200:
        raise ValueError(f"dpi {dpi} is outside 10-1200")
    page = page_layout(
        ecg,
        layout=layout,
        speed_mm_s=speed_mm_s,
        gain_mm_mv=gain_mm_mv,
        title=title,
        measurements=measurements,
        start_s=start_s,
        max_seconds=max_seconds,
        rhythm_lead=rhythm_lead,
        extra_leads=extra_leads,
        centre_baseline=centre_baseline,
    )
    if (page.width / 25.4 * dpi) * (page.height / 25.4 * dpi) > _MAX_PNG_PIXELS:
        raise ValueError("the PNG would be too large; lower dpi or max_seconds")
    return _png(page, dpi)


def _png_fonts() -> list[str]:
    """The fallback chain that exists here: DejaVu for Latin, a CJK font for Chinese captions."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return [name for name in _FONTS_PNG if name in have] or ["sans-serif"]


def _png(page: Page, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    lw = 1.0 / _MM_PER_PT  # points per mm
    fig = Figure(figsize=(page.width / 25.4, page.height / 25.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0, page.width)
    ax.set_ylim(page.height, 0)
    gx, gy, gw, gh = page.grid
    ax.add_patch(Rectangle((gx, gy), gw, gh, facecolor=_PAPER_COLOUR, edgecolor="none"))
    for step, colour, width, z in (
        (1, _MINOR_COLOUR, _MINOR_MM, 1),
        (5, _MAJOR_COLOUR, _MAJOR_MM, 2),
    ):
        xs = [gx + i for i in range(0, int(round(gw)) + 1, step) if step == 5 or i % 5]
        ys = [gy + i for i in range(0, int(round(gh)) + 1, step) if step == 5 or i % 5]
        segs = [((x, gy), (x, gy + gh)) for x in xs] + [((gx, y), (gx + gw, y)) for y in ys]
        ax.add_collection(LineCollection(segs, colors=colour, linewidths=width * lw, zorder=z))
    fonts = _png_fonts()
    for t in page.texts + page.labels + tuple(tr.label for tr in page.traces):
        ax.text(
            t.x,
            t.y,
            t.text,
            fontsize=t.size / _MM_PER_PT,
            fontweight="bold" if t.bold else "normal",
            ha="right" if t.anchor == "end" else "left",
            va="baseline",
            color=t.colour,
            family=fonts,
            zorder=3,
        )
    ink = {"color": _INK, "linewidth": _TRACE_MM * lw, "solid_joinstyle": "round", "zorder": 4}
    for x, y in page.calibrations:
        ax.plot(x, y, **ink)
    if page.ticks:
        segs = [((a, b), (c, d)) for a, b, c, d in page.ticks]
        ax.add_collection(LineCollection(segs, colors=_INK, linewidths=_TRACE_MM * lw, zorder=4))
    clips = [
        Rectangle((gx, row.top), gw, row.height, transform=ax.transData, visible=False)
        for row in page.rows
    ]
    for tr in page.traces:
        (line,) = ax.plot(tr.x, tr.y, **ink)
        line.set_clip_path(clips[tr.row])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


# ----- JSON for the browser viewer ------------------------------------------------------------
def waveform_json(
    ecg: ECG,
    *,
    max_points: int | None = None,
    leads: Sequence[str] | None = None,
    start_s: float = 0,
    end_s: float | None = None,
) -> dict:
    """Samples in mV (rounded to 1 uV) for the viewer, min/max-decimated to max_points per lead.

    Decimation keeps each bin's minimum and maximum in time order, so QRS peaks and spikes
    survive any zoom level. Value j is at start_s + j * decimation / sampling_rate (the
    decimated series is uniform, with two values per bin of 2 * decimation samples). Gaps in
    the recording are null. Raises ECGError for unknown leads or an empty time range.
    """
    fs = ecg.sampling_rate
    if max_points is not None and max_points < 2:
        raise ValueError("max_points must be at least 2")
    if not math.isfinite(start_s) or start_s < 0 or start_s >= ecg.duration:
        raise ECGError(f"start {start_s} s is outside the record (0-{ecg.duration:.3f} s)")
    end = ecg.duration if end_s is None else min(float(end_s), ecg.duration)
    if not math.isfinite(end) or end <= start_s:
        raise ECGError(f"end {end_s} s must be after start {start_s} s")
    i0 = int(round(start_s * fs))
    i1 = max(i0 + 1, min(ecg.n_samples, int(round(end * fs))))
    names = list(ecg.lead_names) if leads is None else [normalise_lead_name(n) for n in leads]
    unknown = [n for n in names if ecg.lead(n) is None]
    if unknown:
        raise ECGError(f"no lead(s) {unknown} in this record; it has {list(ecg.lead_names)}")
    names = list(dict.fromkeys(names))
    n = i1 - i0
    decimation = 1
    if max_points is not None and n > max_points:
        k = -(-n // (max_points // 2))
        k += k % 2  # even bins: two output values per bin, each standing for k/2 samples
        decimation = k // 2
    out_leads = []
    for name in names:
        lead = ecg.lead(name)
        assert lead is not None
        values = np.asarray(lead.samples[i0:i1], dtype=np.float64)
        if decimation > 1:
            first, second = _minmax_bins(values, 2 * decimation)
            values = np.column_stack((values[first], values[second])).ravel()
        rounded = np.round(values, 3)
        samples: list[float | None] = rounded.tolist()
        if np.isnan(rounded).any():
            samples = [None if v != v else v for v in samples]
        out_leads.append({"name": name, "samples": samples})
    return {
        "sampling_rate": fs,
        "start_s": i0 / fs,
        "duration_s": n / fs,
        "record_duration_s": ecg.duration,
        "units": "mV",
        "decimation": decimation,
        "method": "minmax" if decimation > 1 else "none",
        "sample_interval_s": decimation / fs,
        "leads": out_leads,
    }
