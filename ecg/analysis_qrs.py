"""Multi-lead QRS detection for the automatic ECG analysis (used by :mod:`ecg.analysis`).

The detector is Pan-Tompkins at heart (band-pass, derivative, squaring, moving-window
integration, adaptive signal/noise peak levels, search-back, T-wave rejection) with three
refinements that make it hold up in noise, measured with :mod:`ecg.analysis_stress`:

1. *Leads vote.* Each lead's integrated energy is scaled by its own typical QRS energy and the
   leads are fused by their lower median, so a moment counts as QRS-like only when at least half
   of the leads agree; an electrode artefact in one lead no longer looks like a beat.
2. *Local noise floor.* A peak must also stand out from the median energy around it (+-0.5 s),
   which rejects peaks inside bursts of noise that a slowly adapting threshold lets through.
3. *Morphology check.* The dominant beat shape (a median template) is learnt from the record;
   a detection that does not resemble it *and* whose removal leaves a normal RR interval is an
   artefact, not a premature beat (a real premature beat is followed by a longer interval);
   a gap of more than 1.5 local RR intervals is searched for a complex that matches the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal as sps
from scipy.ndimage import median_filter, uniform_filter1d

DETECT_BAND_HZ = (5.0, 20.0)  # QRS energy; excludes most T wave, baseline and EMG power
SHAPE_BAND_HZ = (1.0, 30.0)  # for comparing beat shapes
MWI_S = 0.12  # moving-window integration, about one QRS width
REFRACTORY_S = 0.20  # no two QRS complexes closer than this (HR 300/min)
T_WAVE_S = 0.36  # a candidate this soon after a beat may be its T wave
FLOOR_WINDOW_S = 1.0  # local noise floor: median energy over this window
FLOOR_RATIO = 2.0  # a peak must reach twice the local floor
SEARCH_BACK_RR = 1.66  # Pan-Tompkins: search back after 166 % of the average RR
TEMPLATE_PRE_S, TEMPLATE_POST_S = 0.08, 0.10
MAX_LAG_S = 0.03
ARTEFACT_CORR = 0.75  # below this a detection does not resemble the dominant beat
MATCH_CORR = 0.8  # at or above this it does
GAP_RR = 1.5  # a gap this many local RRs long is searched for a missed beat
MIN_QRS_ENERGY = 5.0  # (mV/s)**2 after integration: about a QRS of 0.1 mV


@dataclass(frozen=True)
class Detection:
    """QRS complexes found in a multi-lead signal."""

    beats: np.ndarray  # sample indices (int64), fiducial = centre of the QRS energy
    corr: np.ndarray  # per beat: correlation with the dominant-beat template (-1..1)
    lag: np.ndarray  # per beat: shift (samples) that best aligns it with the template
    leads: tuple[int, ...]  # the rows of the input that were used


@lru_cache(maxsize=64)
def _sos(fs: float, lo: float, hi: float, order: int) -> np.ndarray:
    hi = min(hi, 0.45 * fs)
    if lo <= 0:
        return sps.butter(order, hi, btype="lowpass", fs=fs, output="sos")
    return sps.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, lo: float, hi: float, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (high edge capped below Nyquist;
    ``lo`` <= 0 makes it a low-pass)."""
    sos = _sos(float(fs), float(lo), float(hi), order)
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)  # shorter for very short records
    return sps.sosfiltfilt(sos, x, axis=-1, padlen=padlen)


def _window_max_level(m: np.ndarray, fs: float, q: float = 80.0) -> np.ndarray:
    """Per row: the q-th percentile of the 2-s window maxima, a typical QRS peak level that
    tolerates a few beat-free windows (bradycardia) and a few artefacts."""
    w = max(1, int(2.0 * fs))
    n = m.shape[-1]
    nw = n // w
    if nw < 2:
        return m.max(axis=-1)
    maxima = m[..., : nw * w].reshape(*m.shape[:-1], nw, w).max(axis=-1)
    return np.percentile(maxima, q, axis=-1)


def energy(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead integrated QRS energy ((mV/s)**2), raw and scaled to the lead's own typical QRS
    peak (~1). A lead with less than the energy of a 0.1-mV QRS is scaled as if it had that
    much, so that a lead carrying only low noise cannot produce beats."""
    bp = bandpass(x, fs, *DETECT_BAND_HZ)
    d = np.diff(bp, axis=-1, prepend=bp[..., :1]) * fs
    m = uniform_filter1d(d * d, max(1, int(MWI_S * fs)), axis=-1, mode="nearest")
    scale = np.maximum(_window_max_level(m, fs), MIN_QRS_ENERGY)
    return m / scale[:, None], m


def fuse(m: np.ndarray) -> np.ndarray:
    """Lower median across leads: a value that at least half of the leads reach."""
    if m.shape[0] == 1:
        return m[0]
    return np.partition(m, (m.shape[0] - 1) // 2, axis=0)[(m.shape[0] - 1) // 2]


def _local_floor(f: np.ndarray, fs: float) -> np.ndarray:
    step = max(1, int(fs / 50))
    dec = f[::step]
    size = max(3, int(FLOOR_WINDOW_S * fs / step) | 1)
    floor = median_filter(dec, size=size, mode="reflect")
    return np.repeat(floor, step)[: len(f)]


def first_pass(f: np.ndarray, fs: float, loud: np.ndarray | None = None) -> np.ndarray:
    """Pan-Tompkins decision rules on the fused integrated energy ``f``; ``loud`` (bool per
    sample) marks where enough leads carry at least a minimal QRS's energy."""
    refractory = max(1, int(REFRACTORY_S * fs))
    padded = np.concatenate(([0.0], f, [0.0]))  # lets a complex at either edge be a peak
    peaks, _ = sps.find_peaks(padded, distance=refractory)
    peaks = peaks - 1
    if len(peaks) == 0:
        return peaks.astype(np.int64)
    heights = f[peaks]
    floor_ok = heights > FLOOR_RATIO * _local_floor(f, fs)[peaks]
    if loud is not None:
        floor_ok &= loud[peaks]
    spk = float(_window_max_level(f[None, :], fs)[0])
    npk = float(np.median(f))
    beats: list[int] = []
    rrs: list[int] = []
    pending: list[int] = []  # candidates rejected since the last beat, for search-back
    last = -(10**12)
    for j, (p, h) in enumerate(zip(peaks, heights, strict=True)):
        threshold = npk + 0.25 * (spk - npk)
        rr_avg = float(np.median(rrs[-8:])) if rrs else fs
        if beats and p - last > SEARCH_BACK_RR * rr_avg:
            back = [
                k
                for k in pending
                if peaks[k] - last > refractory
                and p - peaks[k] > refractory
                and heights[k] > 0.5 * threshold
                and floor_ok[k]
            ]
            if back:
                k = max(back, key=lambda i: heights[i])
                rrs.append(int(peaks[k] - last))
                last = int(peaks[k])
                beats.append(last)
                spk = 0.25 * heights[k] + 0.75 * spk
                pending = [i for i in pending if peaks[i] > last]
        if h > threshold and floor_ok[j]:
            if beats and p - last < T_WAVE_S * fs and h < 0.5 * f[last]:
                npk = 0.125 * h + 0.875 * npk  # a T wave (or noise) after the last beat
                pending.append(j)
                continue
            if beats:
                rrs.append(int(p - last))
            beats.append(int(p))
            last = int(p)
            spk = 0.125 * h + 0.875 * spk
            pending = []
        else:
            npk = 0.125 * h + 0.875 * npk
            pending.append(j)
    if beats:
        # Search back at the edges too: a complex cut by the start or the end of the
        # recording has less energy after filtering. It must lie at least 60 % of the average
        # RR away from the nearest beat (further than that beat's P or T wave).
        rr_avg = float(np.median(rrs[-8:])) if rrs else fs
        threshold = 0.5 * (npk + 0.25 * (spk - npk))
        away = max(refractory, int(0.6 * rr_avg))
        ok = floor_ok & (heights > threshold)
        lead = ok & (peaks <= beats[0] - away)
        if lead.any():
            beats.insert(0, int(peaks[lead][-1]))
        trail = ok & (peaks >= beats[-1] + away)
        if trail.any():
            beats.append(int(peaks[trail][0]))
    return np.asarray(beats, dtype=np.int64)


def windows(x: np.ndarray, centres: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Stack x[:, c+start : c+stop] for each centre (edge samples repeated): (n, leads, width)."""
    n = x.shape[-1]
    pos = np.clip(np.asarray(centres)[:, None] + np.arange(start, stop)[None, :], 0, n - 1)
    return x[:, pos].transpose(1, 0, 2)


def correlate(
    shape: np.ndarray, centres: np.ndarray, template: np.ndarray, fs: float
) -> tuple[np.ndarray, np.ndarray]:
    """Best Pearson correlation (all leads concatenated) of each window with the template
    over shifts of +-30 ms, and that shift."""
    a, b = -int(TEMPLATE_PRE_S * fs), int(TEMPLATE_POST_S * fs)
    t = template - template.mean(axis=1, keepdims=True)
    tn = t.ravel() / max(float(np.linalg.norm(t)), 1e-12)
    best = np.full(len(centres), -1.0)
    best_lag = np.zeros(len(centres), dtype=np.int64)
    max_lag = int(MAX_LAG_S * fs)
    for d in range(-max_lag, max_lag + 1):
        w = windows(shape, np.asarray(centres) + d, a, b)
        w = w - w.mean(axis=2, keepdims=True)
        flat = w.reshape(len(centres), -1)
        c = flat @ tn / np.maximum(np.linalg.norm(flat, axis=1), 1e-12)
        better = c > best
        best[better] = c[better]
        best_lag[better] = d
    return best, best_lag


def learn_template(shape: np.ndarray, beats: np.ndarray, fs: float) -> np.ndarray | None:
    """Median beat shape (QRS window), re-learnt from the beats that match the first guess."""
    if len(beats) < 3:
        return None
    a, b = -int(TEMPLATE_PRE_S * fs), int(TEMPLATE_POST_S * fs)
    template = np.median(windows(shape, beats, a, b), axis=0)
    corr, lag = correlate(shape, beats, template, fs)
    good = corr >= MATCH_CORR
    if good.sum() >= 3:
        template = np.median(windows(shape, beats[good] + lag[good], a, b), axis=0)
    return template


def _local_rr(beats: np.ndarray, i: int, k: int = 8) -> float:
    """Median RR around beat i, leaving out the two intervals that touch it."""
    rr = np.diff(beats)
    around = np.concatenate((rr[max(0, i - 1 - k) : max(0, i - 1)], rr[i + 1 : i + 1 + k]))
    return float(np.median(around if len(around) else rr))


def _remove_artefacts(beats: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Drop detections unlike the dominant beat whose removal leaves a normal RR interval."""
    keep = np.ones(len(beats), dtype=bool)
    for i in np.argsort(corr):
        if corr[i] >= ARTEFACT_CORR:
            break
        kept = np.flatnonzero(keep)
        pos = int(np.searchsorted(kept, i))
        if pos == 0 or pos >= len(kept) - 1:
            continue
        prev, nxt = beats[kept[pos - 1]], beats[kept[pos + 1]]
        if nxt - prev <= 1.3 * _local_rr(beats[keep], pos):
            keep[i] = False
    return keep


def _lead_corr(shape: np.ndarray, centres: np.ndarray, template: np.ndarray, fs: float):
    """Per-lead correlation with the lead's template at the given (already aligned) centres:
    (n, leads)."""
    a, b = -int(TEMPLATE_PRE_S * fs), int(TEMPLATE_POST_S * fs)
    w = windows(shape, centres, a, b)
    w = w - w.mean(axis=2, keepdims=True)
    t = template - template.mean(axis=1, keepdims=True)
    num = np.einsum("nlw,lw->nl", w, t)
    den = np.linalg.norm(w, axis=2) * np.linalg.norm(t, axis=1)[None, :]
    return num / np.maximum(den, 1e-12)


def _fill_gaps(
    beats: np.ndarray,
    shape: np.ndarray,
    m: np.ndarray,
    f: np.ndarray,
    loud: np.ndarray,
    template: np.ndarray,
    fs: float,
) -> list[int]:
    """Beats to add: in each gap longer than 1.5 local RRs, the best template match, if it
    carries QRS energy and matches well in all leads together (r >= 0.8) or very well in one
    lead that has its usual QRS energy there (r >= 0.9; a lead's QRS can shrink for a while
    with body position, which the lead vote alone would miss)."""
    added: list[int] = []
    if len(beats) < 4:
        return added
    level = float(np.median(f[beats]))
    lead_level = np.median(m[:, beats], axis=1)
    stack = [(int(beats[i]), int(beats[i + 1]), i) for i in range(len(beats) - 1)]
    while stack:
        lo, hi, i = stack.pop()
        rr_local = _local_rr(beats, min(i + 1, len(beats) - 1))
        if hi - lo <= GAP_RR * rr_local:
            continue
        margin = max(int(REFRACTORY_S * fs), int(0.3 * rr_local))
        candidates = np.arange(lo + margin, hi - margin + 1, max(1, int(fs / 250)))
        if len(candidates) == 0:
            continue
        c, lag = correlate(shape, candidates, template, fs)
        per_lead = _lead_corr(shape, candidates + lag, template, fs)
        pos = candidates + lag
        at = np.clip(pos, 0, len(f) - 1)
        strong = 0.3 * lead_level[None, :] <= m[:, at].T
        single = np.max(np.where(strong, per_lead, -1.0), axis=1)
        ok_all = (c >= MATCH_CORR) & (f[at] >= 0.2 * level) & loud[at]
        score = np.where(ok_all, c, np.where(single >= 0.9, single - 0.1, -1.0))
        k = int(np.argmax(score))
        p = int(pos[k])
        if score[k] >= MATCH_CORR and lo < p < hi:
            added.append(p)
            stack.append((lo, p, i))
            stack.append((p, hi, i))
    return added


def _refine(raw: np.ndarray, beats: np.ndarray, fs: float) -> np.ndarray:
    """Move each beat to the centre of its QRS energy (summed over leads) within +-75 ms."""
    if len(beats) == 0:
        return beats
    half = int(0.075 * fs)
    w = windows(raw[None, :], beats, -half, half + 1)[:, 0, :]
    return np.clip(beats - half + np.argmax(w, axis=1), 0, len(raw) - 1)


def shape_signal(x: np.ndarray, fs: float) -> np.ndarray:
    """1-30 Hz band, each lead scaled to its own amplitude so that all leads count alike."""
    shape = bandpass(x, fs, *SHAPE_BAND_HZ)
    amp = np.percentile(np.abs(shape), 99.5, axis=1)
    return shape / np.maximum(amp, 1e-9)[:, None]


def detect_qrs(x: np.ndarray, fs: float, leads: Sequence[int] | None = None) -> Detection:
    """QRS complexes in ``x`` (leads, samples) in mV at ``fs`` Hz, using the rows ``leads``
    (default all; pass only the usable ones)."""
    rows = tuple(range(x.shape[0])) if leads is None else tuple(leads)
    empty = np.zeros(0, dtype=np.int64)
    if not rows or x.shape[-1] < int(0.5 * fs):
        return Detection(empty, np.zeros(0), empty, rows)
    xs = np.asarray(x, dtype=np.float64)[list(rows)]
    m, m_raw = energy(xs, fs)
    f = fuse(m)
    loud = fuse(m_raw) >= MIN_QRS_ENERGY
    beats = first_pass(f, fs, loud)
    raw = uniform_filter1d(m.sum(axis=0), max(1, int(0.02 * fs)))
    beats = np.unique(_refine(raw, beats, fs))
    shape = shape_signal(xs, fs)
    template = learn_template(shape, beats, fs)
    if template is None:
        return Detection(beats, np.ones(len(beats)), np.zeros(len(beats), np.int64), rows)
    corr, _ = correlate(shape, beats, template, fs)
    beats = beats[_remove_artefacts(beats, corr)]
    added = _fill_gaps(beats, shape, m, f, loud, template, fs)
    if added:
        beats = np.unique(np.concatenate((beats, _refine(raw, np.asarray(added), fs))))
    corr, lag = correlate(shape, beats, template, fs)
    return Detection(beats.astype(np.int64), corr, lag, rows)
