"""Per-lead signal quality for the automatic ECG analysis (used by :mod:`ecg.analysis`).

Two steps. Before QRS detection, :func:`precheck` finds leads that carry no ECG at all (flat
line, lead off / amplifier at its rail, missing samples) so they cannot vote in the detector.
After detection, :func:`assess` estimates the noise in every 2.5-s window (one column of the
usual 4 x 2.5 s printout) the way the MIT-BIH Noise Stress Test defines SNR: signal power
S = (QRS peak-to-peak)**2 / 8 from the lead's median beat, noise power N = mean square of what
remains after subtracting the median beat from every beat (0.5 Hz high-pass first, so baseline
wander is judged on its own). A window below 10 dB is "too noisy to read": noise RMS above ~1/9
of the QRS amplitude, so noise peak-to-peak is about half the QRS, and P waves and ST segments
(0.1 mV matters) are lost in it. So is a window holding an artefact as tall as the QRS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from ecg.analysis_qrs import bandpass

WINDOW_S = 2.5
NOISY_SNR_DB = 10.0
ARTEFACT_PP = 1.0  # residual peak-to-peak, in QRS amplitudes, that makes a window unreadable
FLAT_RANGE_MV = 0.05  # a lead whose 99.8 % range is under 50 uV carries no ECG
RAIL_RUN_S = 0.1
LEAD_OFF_FRACTION = 0.10
WANDER_MV = 0.5  # baseline moves more than this within one window
WANDER_FRACTION = 0.20
NOISE_FRACTION = 0.20  # "noise" flag from this share of noisy windows
UNUSABLE_FRACTION = 0.50  # not usable from this share of unreadable windows
POWERLINE_MV = 0.02
POWERLINE_RATIO = 3.0


@dataclass(frozen=True, eq=False)
class LeadQuality:
    usable: bool
    flags: tuple[str, ...]
    snr_db: float | None  # median of the windows' NST-style SNR estimates
    snr_db_worst: float | None  # the noisiest window's
    noisy_fraction: float  # share of the record in unreadable windows
    noisy_segments: tuple[tuple[float, float], ...]  # (start_s, end_s), merged
    qrs_amplitude_mv: float | None  # peak-to-peak QRS of the median beat
    baseline_wander_mv: float | None  # median within-window excursion of the baseline
    window_snr_db: np.ndarray  # per 2.5-s window (see window_bounds); NaN: not measured


@dataclass(frozen=True, eq=False)
class Precheck:
    flat: bool  # the whole lead
    lead_off: bool  # the whole lead
    missing: float  # share of non-finite samples
    rail_windows: np.ndarray  # bool per window: amplifier at its limit
    missing_windows: np.ndarray  # bool per window: >10 % samples missing

    @property
    def usable(self) -> bool:
        return not (self.flat or self.lead_off)

    @property
    def bad_windows(self) -> np.ndarray:
        """Windows without a readable signal. A flat stretch inside a live lead is not one: it
        may be asystole, which must be read, not discarded."""
        return self.rail_windows | self.missing_windows


def window_bounds(n: int, fs: float) -> list[tuple[int, int]]:
    """2.5-s windows covering the record; a trailing piece shorter than half a window joins
    the window before it (too short to judge on its own)."""
    w = max(1, int(round(WINDOW_S * fs)))
    starts = list(range(0, n, w))
    if len(starts) > 1 and n - starts[-1] < w // 2:
        starts.pop()
    return [(a, starts[i + 1] if i + 1 < len(starts) else n) for i, a in enumerate(starts)]


def window_index(samples: np.ndarray, n: int, fs: float) -> np.ndarray:
    """Index of the window each sample index falls in."""
    starts = np.asarray([a for a, _ in window_bounds(n, fs)])
    return np.searchsorted(starts, np.asarray(samples), side="right") - 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def precheck(raw: np.ndarray, fs: float) -> tuple[np.ndarray, Precheck]:
    """Clean copy of one lead (non-finite samples bridged) and what is wrong with it."""
    x = np.asarray(raw, dtype=np.float64)
    bounds = window_bounds(len(x), fs)
    nw = len(bounds)
    bad = ~np.isfinite(x)
    if bad.all():
        ones = np.ones(nw, dtype=bool)
        return np.zeros_like(x), Precheck(True, True, 1.0, ones, ones.copy())
    if bad.any():
        idx = np.arange(len(x))
        x = np.interp(idx, idx[~bad], x[~bad])
    lo, hi = np.percentile(x, [0.1, 99.9])
    flat = bool(hi - lo < FLAT_RANGE_MV)
    # Clipping: the amplifier sits at the lead's extreme value for 100 ms or longer.
    rail = np.zeros(len(x), dtype=bool)
    if not flat:
        at_edge = (x >= x.max() - 1e-6) | (x <= x.min() + 1e-6)
        for a, b in _runs(at_edge):
            if b - a >= RAIL_RUN_S * fs:
                rail[a:b] = True
    missing = float(bad.mean())
    lead_off = bool(rail.mean() >= LEAD_OFF_FRACTION or missing >= 0.5)
    rail_w = np.array([rail[a:b].mean() > 0.1 for a, b in bounds])
    miss_w = np.array([bad[a:b].mean() > 0.1 for a, b in bounds])
    return x, Precheck(flat, lead_off, missing, rail_w, miss_w)


def powerline(x: np.ndarray, fs: float) -> np.ndarray:
    """Per lead: mains interference, a 50 or 60 Hz line of at least 20 uV RMS (a visibly
    thickened trace) standing 3x above the neighbouring bands. Judged on the first minute."""
    found = np.zeros(x.shape[0], dtype=bool)
    seg = x[:, : int(60 * fs)]
    if fs < 130 or seg.shape[-1] < fs:
        return found
    for mains in (50.0, 60.0):
        line = _rms(bandpass(seg, fs, mains - 0.5, mains + 0.5, order=4))
        below = _rms(bandpass(seg, fs, mains - 8, mains - 3, order=4))
        above = _rms(bandpass(seg, fs, mains + 3, mains + 8, order=4))
        found |= (line >= POWERLINE_MV) & (line >= POWERLINE_RATIO * 0.5 * (below + above))
    return found


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(x**2, axis=-1))


def residual(
    xd: np.ndarray,
    beats: np.ndarray,
    lags: np.ndarray,
    groups: np.ndarray,
    templates: dict[int, np.ndarray],
    pre: int,
    post: int,
    rr: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What is left of each lead after subtracting the matching median beat (amplitude-fitted
    within 0.7-1.3) from each beat, the mask of samples that count as noise, and the mask of
    samples left out because the beat there matches no template.

    Each beat owns the samples from 35 % of the RR before its fiducial to 65 % after (so the
    beats tile the record). Beats that match no template (group -1) are left out over their
    whole window, so an unusual but real beat is not mistaken for noise. So are beats cut by
    the start or end of the recording, and the stretch before the first / after the last beat
    when it is shorter than 1.2 RR (it holds a piece of such a beat)."""
    n = xd.shape[-1]
    res = xd.copy()
    count = np.ones(n, dtype=bool)
    odd = np.zeros(n, dtype=bool)
    own_pre, own_post = int(0.35 * rr), int(0.65 * rr)
    first, last = n, 0
    for b, lag, g in zip(beats, lags, groups, strict=True):
        c = int(b + lag)
        a, z = max(0, c - min(pre, own_pre)), min(n, c + min(post, own_post))
        if z <= a:
            continue
        first, last = min(first, a), max(last, z)
        if a > c - min(pre, own_pre) or z < c + min(post, own_post):
            count[a:z] = False  # cut by the start or end of the recording
            continue
        if g < 0 or g not in templates:
            count[a:z] = False
            odd[a:z] = True
            continue
        t = templates[g][:, a - (c - pre) : z - (c - pre)]
        seg = xd[:, a:z]
        tt = np.sum(t * t, axis=1)
        gain = np.clip(np.sum(seg * t, axis=1) / np.maximum(tt, 1e-12), 0.7, 1.3)
        res[:, a:z] = seg - gain[:, None] * t
    if last > first:
        if first <= 1.2 * rr:
            count[:first] = False
        if n - last <= 1.2 * rr:
            count[last:] = False
    return res, count, odd


def merge_windows(flags: np.ndarray, n: int, fs: float) -> tuple[tuple[float, float], ...]:
    """Consecutive flagged windows as (start_s, end_s), rounded to 0.01 s."""
    bounds = window_bounds(n, fs)
    spans: list[tuple[float, float]] = []
    for a, b in _runs(np.asarray(flags, dtype=bool)):
        spans.append((round(bounds[a][0] / fs, 2), round(bounds[b - 1][1] / fs, 2)))
    return tuple(spans)


def assess(
    x: np.ndarray,
    fs: float,
    checks: list[Precheck],
    res: np.ndarray | None,
    count: np.ndarray | None,
    odd: np.ndarray | None,
    qrs_pp: np.ndarray | None,
) -> tuple[list[LeadQuality], np.ndarray]:
    """Quality of every lead, and the per-window unreadable flags (leads x windows)."""
    n = x.shape[-1]
    bounds = window_bounds(n, fs)
    sizes = np.array([b - a for a, b in bounds])
    low = bandpass(x - np.median(x, axis=1, keepdims=True), fs, 0.0, 0.5)
    mains = powerline(x, fs)
    out: list[LeadQuality] = []
    unreadable = np.zeros((x.shape[0], len(bounds)), dtype=bool)
    for lead in range(x.shape[0]):
        chk = checks[lead]
        flags: list[str] = []
        if chk.flat:
            flags.append("flat_line")
        if chk.lead_off or chk.rail_windows.any():
            flags.append("lead_off")
        if chk.missing > 0:
            flags.append("missing_samples")
        bad = chk.bad_windows.copy()
        snrs = np.full(len(bounds), np.nan)
        amp = wander = None
        if not chk.usable:
            bad[:] = True
        elif res is not None and count is not None and qrs_pp is not None and qrs_pp[lead] > 0:
            amp = float(qrs_pp[lead])
            signal_power = amp**2 / 8.0
            tall = np.zeros(len(bounds), dtype=bool)
            untrusted = np.zeros(len(bounds), dtype=bool)
            smooth = uniform_filter1d(res[lead], max(1, int(0.01 * fs)))
            for k, (a, b) in enumerate(bounds):
                m = count[a:b]
                if m.sum() >= 0.25 * (b - a):
                    p = float(np.mean(res[lead, a:b][m] ** 2))
                    snrs[k] = 10 * np.log10(signal_power / max(p, 1e-12))
                    tall[k] = np.ptp(smooth[a:b][m]) > ARTEFACT_PP * amp
                elif odd is not None:
                    untrusted[k] = odd[a:b].mean() >= 0.5
            # A window whose noise cannot be measured because the beats in it are unlike the
            # patient's usual ones is not trusted either; nor one holding an artefact as tall
            # as a QRS.
            noisy = ((snrs < NOISY_SNR_DB) | tall | untrusted) & ~chk.bad_windows
            bad |= noisy
            if sizes[noisy].sum() >= NOISE_FRACTION * n:
                flags.append("noise")
        if chk.usable:
            excursion = np.array([np.ptp(low[lead, a:b]) for a, b in bounds])
            wander = float(np.median(excursion))
            limit = max(WANDER_MV, 0.5 * amp) if amp else WANDER_MV
            if sizes[excursion > limit].sum() >= WANDER_FRACTION * n:
                flags.append("baseline_wander")
            if mains[lead]:
                flags.append("powerline")
        unreadable[lead] = bad
        fraction = float(sizes[bad].sum() / n)
        finite = snrs[np.isfinite(snrs)]
        out.append(
            LeadQuality(
                usable=chk.usable and fraction < UNUSABLE_FRACTION,
                flags=tuple(flags),
                snr_db=float(np.median(finite)) if len(finite) else None,
                snr_db_worst=float(np.min(finite)) if len(finite) else None,
                noisy_fraction=fraction,
                noisy_segments=merge_windows(bad, n, fs),
                qrs_amplitude_mv=amp,
                baseline_wander_mv=wander,
                window_snr_db=snrs,
            )
        )
    return out, unreadable
