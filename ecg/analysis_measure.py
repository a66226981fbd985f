"""Interval, axis and ST measurements from the median beat (used by :mod:`ecg.analysis`).

Measuring one median beat per lead instead of single beats averages the noise down, the way
diagnostic 12-lead programs do. Waves are delineated *globally*, over all usable leads at once
(earliest onset to latest end, as the AHA/ACCF/HRS 2009 recommendations ask for intervals):

* QRS onset/offset: where the spatial velocity (root sum of squared slopes of all leads,
  smoothed 10 ms) leaves / returns to within 5 % of its QRS peak above the PR-segment level
  (dips shorter than 20 ms, at an R or S apex, bridged);
* T end: tangent method on the RMS-over-leads curve of the 15-Hz low-passed beat (the steepest
  descent after the T peak, extended to the isoelectric level);
* P onset: tangent method on the RMS curve of the 15-Hz low-passed beat before the QRS, only if a
  P wave of at least 40 uV stands out there (none in AF or junctional rhythm);
* frontal axis from the net QRS areas of leads I and aVF; ST level at the J point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from ecg.analysis_qrs import bandpass, windows

VELOCITY_SMOOTH_S = 0.010
QRS_GAP_S = 0.020  # a dip of the velocity this short does not end the QRS
QRS_THRESHOLD = 0.05  # fraction of the peak spatial velocity that marks QRS onset / offset
P_MIN_MV = 0.04  # a P wave smaller than this (RMS over leads) is "not found"
T_MIN_MV = 0.03  # a T wave smaller than this (RMS over leads) makes QT unmeasurable


@dataclass(frozen=True)
class MedianBeat:
    """Median of the aligned dominant beats, per lead, baseline not yet removed."""

    samples: np.ndarray  # (leads, width) in mV
    centre: int  # index of the QRS fiducial within the width
    n_beats: int
    fs: float
    rr_s: float  # median RR of the beats it was built from


@dataclass(frozen=True)
class Waves:
    """Delineation of the median beat (indices into :class:`MedianBeat` samples)."""

    p_onset: int | None
    qrs_onset: int | None
    qrs_offset: int | None
    t_peak: int | None
    t_end: int | None
    baseline: np.ndarray  # per lead, the PR-segment level (mV)

    def ms(self, a: int | None, b: int | None, fs: float) -> float | None:
        return None if a is None or b is None else 1000.0 * (b - a) / fs


def median_beat(
    xd: np.ndarray, beats: np.ndarray, lags: np.ndarray, fs: float, rr_s: float
) -> MedianBeat | None:
    """Median beat over ``beats`` (already chosen: dominant shape, clean), aligned by ``lags``.

    The window is 0.30 s (at most 45 % of the RR) before the fiducial and 0.60 s (at most
    75 % of the RR) after it, enough for the P wave and the end of T at any heart rate."""
    if len(beats) == 0:
        return None
    pre = int(min(0.30, 0.45 * rr_s) * fs)
    post = int(min(0.60, 0.75 * rr_s) * fs)
    centres = np.asarray(beats) + np.asarray(lags)
    inside = (centres - pre >= 0) & (centres + post < xd.shape[-1])
    if inside.sum() >= 1:
        centres = centres[inside]
    w = windows(xd, centres, -pre, post)
    return MedianBeat(np.median(w, axis=0), pre, len(centres), fs, rr_s)


def _tangent_end(curve: np.ndarray, peak: int, stop: int, level: float) -> int | None:
    """Tangent method: the steepest descent of ``curve`` after ``peak`` (up to ``stop``),
    extended to ``level``."""
    if stop - peak < 3:
        return None
    slope = np.gradient(curve[peak:stop])
    k = int(np.argmin(slope))
    s = float(slope[k])
    if s >= 0:
        return None
    t = peak + k + (level - curve[peak + k]) / s
    return int(round(min(max(t, peak + k), stop)))


def _tangent_start(curve: np.ndarray, start: int, peak: int, level: float) -> int | None:
    """Tangent method on the ascending limb: the steepest rise before ``peak`` back to
    ``level``."""
    if peak - start < 3:
        return None
    slope = np.gradient(curve[start:peak])
    k = int(np.argmax(slope))
    s = float(slope[k])
    if s <= 0:
        return None
    t = start + k - (curve[start + k] - level) / s
    return int(round(max(min(t, start + k), start)))


def _first_major_peak(curve: np.ndarray, level: float, share: float = 0.6) -> int:
    """Index of the first local maximum reaching ``share`` of the highest one above ``level``
    (the T wave, not a later U wave that happens to be a little taller in a lead or two)."""
    top = float(curve.max()) - level
    peaks, _ = find_peaks(curve)
    for p in peaks:
        if curve[p] - level >= share * top:
            return int(p)
    return int(np.argmax(curve))


def _extent(vel: np.ndarray, peak: int, limit: int, thr: float, gap: int, step: int) -> int:
    """From ``peak`` towards ``limit``: the last sample above ``thr`` before the velocity has
    stayed below it for more than ``gap`` samples (bridges the instant of zero slope at an R
    or S apex, which a one- or two-lead record shows)."""
    last = i = peak
    while i != limit:
        i += step
        if vel[i] > thr:
            last = i
        elif abs(i - last) > gap:
            break
    return last if abs(i - last) > gap else limit


def delineate(beat: MedianBeat) -> Waves:
    """Global wave boundaries of the median beat (see the module docstring)."""
    m = beat.samples
    fs = beat.fs
    c = beat.centre
    width = m.shape[-1]
    ms = fs / 1000.0
    none = Waves(None, None, None, None, None, np.zeros(m.shape[0]))
    vel = np.sqrt(np.sum(np.gradient(m, axis=-1) ** 2, axis=0)) * fs  # mV/s
    vel = uniform_filter1d(vel, max(1, int(VELOCITY_SMOOTH_S * fs)))
    lo, hi = max(0, c - int(80 * ms)), min(width, c + int(80 * ms) + 1)
    if hi - lo < 3:
        return none
    peak = lo + int(np.argmax(vel[lo:hi]))
    pr_lo, pr_hi = max(0, c - int(200 * ms)), max(1, c - int(50 * ms))
    base = float(np.percentile(vel[pr_lo:pr_hi], 10)) if pr_hi > pr_lo else 0.0
    thr = base + QRS_THRESHOLD * (vel[peak] - base)
    gap = int(QRS_GAP_S * fs)
    limit_on = max(0, c - int(150 * ms))
    limit_off = min(width - 1, c + int(200 * ms))
    on = _extent(vel, peak, limit_on, thr, gap, -1)
    off = _extent(vel, peak, limit_off, thr, gap, +1)
    if on <= limit_on or off >= limit_off:
        return none
    pr_seg = slice(max(0, on - int(20 * ms)), max(1, on - int(4 * ms)))
    baseline = np.median(m[:, pr_seg], axis=1)
    mc = m - baseline[:, None]

    # T wave: RMS over leads of the 15-Hz low-passed beat (the T wave is slower than that, the
    # residual noise mostly faster), tangent method on the descending limb after its peak.
    smooth = bandpass(mc, fs, 0.0, 15.0)
    t_end = t_peak = None
    rms = np.sqrt(np.mean(smooth**2, axis=0))
    t_lo = off + int(60 * ms)
    t_hi = width - 1
    if t_hi - t_lo > int(60 * ms):
        level = float(np.min(rms[max(0, on - int(50 * ms)) : max(1, on - int(4 * ms))]))
        t_peak = _first_major_peak(rms[t_lo:t_hi], level) + t_lo
        if rms[t_peak] - level >= T_MIN_MV and t_peak < t_hi - 2:
            # The descending limb ends where the curve first comes down to 10 % of the T
            # amplitude above the isoelectric level (or the window ends).
            limb_end = t_peak
            floor = level + 0.1 * (rms[t_peak] - level)
            while limb_end < t_hi and rms[limb_end] > floor:
                limb_end += 1
            t_end = _tangent_end(rms, t_peak, limb_end + 1, level)
        else:
            t_peak = None

    # P wave: the same RMS curve in the 300 ms before the QRS.
    p_onset = None
    p_rms = rms
    p_lo, p_hi = max(0, on - int(300 * ms)), on - int(30 * ms)
    if p_hi - p_lo > int(40 * ms):
        p_peak = p_lo + int(np.argmax(p_rms[p_lo:p_hi]))
        level = float(np.min(p_rms[p_lo:p_hi]))
        level = min(level, float(np.median(p_rms[on - int(20 * ms) : on])))
        if p_rms[p_peak] - level >= P_MIN_MV and p_lo < p_peak < p_hi - 1:
            p_onset = _tangent_start(p_rms, p_lo, p_peak, level)
            if p_onset is not None and p_onset <= p_lo:
                p_onset = None  # the rise started before the window: not a distinct P wave
    return Waves(p_onset, on, off, t_peak, t_end, baseline)


def qtc(qt_ms: float | None, rr_s: float | None) -> tuple[float | None, float | None]:
    """(Bazett, Fridericia): QT/RR**(1/2) and QT/RR**(1/3), RR in seconds."""
    if qt_ms is None or rr_s is None or rr_s <= 0:
        return None, None
    return qt_ms / math.sqrt(rr_s), qt_ms / rr_s ** (1.0 / 3.0)


LIMB_ANGLES = {"I": 0.0, "II": 60.0, "III": 120.0, "aVR": -150.0, "aVL": -30.0, "aVF": 90.0}


def frontal_axis(areas: Mapping[str, float]) -> float | None:
    """Frontal QRS axis (degrees, -180..180) from net QRS areas of the limb leads.

    Uses I and aVF: with the heart vector at angle a, I ~ cos a and aVF ~ (sqrt 3 / 2) sin a,
    so a = atan2(2 aVF / sqrt 3, I). Without aVF it is rebuilt from II and III (aVF = (II+III)/2)
    or from I and II (aVF = II - I/2); without I, from II and III (I = II - III)."""
    i, ii, iii, avf = (areas.get(k) for k in ("I", "II", "III", "aVF"))
    if i is None and ii is not None and iii is not None:
        i = ii - iii
    if avf is None:
        if ii is not None and iii is not None:
            avf = (ii + iii) / 2.0
        elif ii is not None and i is not None:
            avf = ii - i / 2.0
    if i is None or avf is None or (abs(i) < 1e-9 and abs(avf) < 1e-9):
        return None
    return math.degrees(math.atan2(2.0 * avf / math.sqrt(3.0), i))


def qrs_areas(beat: MedianBeat, waves: Waves, names: Sequence[str]) -> dict[str, float]:
    """Net QRS area (mV*s) per lead between QRS onset and offset, baseline removed."""
    if waves.qrs_onset is None or waves.qrs_offset is None:
        return {}
    seg = slice(waves.qrs_onset, waves.qrs_offset + 1)
    mc = beat.samples - waves.baseline[:, None]
    return {n: float(np.sum(mc[i, seg]) / beat.fs) for i, n in enumerate(names)}


def st_levels(beat: MedianBeat, waves: Waves, names: Sequence[str], after_s: float = 0.0):
    """ST deviation (mV) per lead at the J point + ``after_s``, against the PR segment."""
    if waves.qrs_offset is None:
        return {}
    k = waves.qrs_offset + int(after_s * beat.fs)
    if k >= beat.samples.shape[-1]:
        return {}
    return {n: float(beat.samples[i, k] - waves.baseline[i]) for i, n in enumerate(names)}
