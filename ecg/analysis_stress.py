"""Noise stress test and beat-by-beat scoring for the ECG analysis (bench and tests share them).

The MIT-BIH Noise Stress Test adds *recorded* noise to clean records at calibrated SNRs; we do not
have the noise records, so this module synthesises the three NST noise kinds (baseline wander,
muscle artefact, electrode motion) with a fixed seed and scales them with the NST's own SNR
definition. Scoring follows AAMI EC57 / PhysioNet ``bxb``: a detection within 150 ms of a
reference beat is a true positive, the first 5 minutes are not scored, only beat annotations
count. Nothing here downloads anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

# WFDB annotation codes that denote beats (AAMI EC57); rhythm changes '+', noise '~', artefact
# '|', comments '"', etc. are not beats and are never scored.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")

NOISE_KINDS = ("bw", "ma", "em", "mix")
NOISE_NAMES = {
    "bw": "baseline wander",
    "ma": "muscle (EMG-like)",
    "em": "electrode motion",
    "mix": "all three mixed",
}


@dataclass(frozen=True)
class BeatScore:
    """Beat-by-beat comparison against reference annotations (bxb-like)."""

    tp: int
    fn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


def reference_beats(samples: Sequence[int], symbols: Sequence[str]) -> np.ndarray:
    """Sample indices of the annotations that are beats (non-beat labels dropped)."""
    keep = [int(s) for s, sym in zip(samples, symbols, strict=True) if sym in BEAT_SYMBOLS]
    return np.asarray(keep, dtype=np.int64)


def score_beats(
    reference: np.ndarray,
    detected: np.ndarray,
    fs: float,
    *,
    skip_s: float = 300.0,
    end_s: float | None = None,
    tolerance_s: float = 0.150,
    windows: Sequence[tuple[float, float]] | None = None,
) -> BeatScore:
    """Match detections to reference beats one-to-one, nearest first, within ``tolerance_s``.

    Beats before ``skip_s`` (the EC57 learning period) and after ``end_s`` are not scored; with
    ``windows`` only beats inside those (start_s, end_s) spans count (e.g. the noisy blocks).
    A detection matched to an unscored reference beat is neither TP nor FP.
    """
    ref = np.sort(np.asarray(reference, dtype=np.int64))
    det = np.sort(np.asarray(detected, dtype=np.int64))
    tol = tolerance_s * fs
    pairs: list[tuple[float, int, int]] = []
    if len(det):
        for i, r in enumerate(ref):
            j = int(np.searchsorted(det, r))
            for k in (j - 2, j - 1, j, j + 1):
                if 0 <= k < len(det) and abs(det[k] - r) <= tol:
                    pairs.append((abs(float(det[k] - r)), i, k))
    pairs.sort()
    ref_match = np.full(len(ref), -1)
    det_match = np.full(len(det), -1)
    for _, i, k in pairs:
        if ref_match[i] < 0 and det_match[k] < 0:
            ref_match[i] = k
            det_match[k] = i

    def scored(times: np.ndarray) -> np.ndarray:
        t = times / fs
        ok = t >= skip_s
        if end_s is not None:
            ok &= t < end_s
        if windows is not None:
            inside = np.zeros(len(t), dtype=bool)
            for a, b in windows:
                inside |= (t >= a) & (t < b)
            ok &= inside
        return ok

    ref_ok = scored(ref)
    det_ok = scored(det)
    tp = int(np.sum(ref_ok & (ref_match >= 0)))
    fn = int(np.sum(ref_ok & (ref_match < 0)))
    fp = int(np.sum(det_ok & (det_match < 0)))
    return BeatScore(tp=tp, fn=fn, fp=fp)


# ----- signal power the NST way ------------------------------------------------------------------
def qrs_signal_power(x: np.ndarray, beats: np.ndarray, fs: float) -> float:
    """NST signal power of one lead: S = A**2 / 8, the power of a sine of peak-to-peak A, where A
    is the mean QRS peak-to-peak amplitude (window -60..+60 ms around each reference beat, the
    largest and smallest 5 % of amplitudes discarded)."""
    half = int(round(0.060 * fs))
    amps = []
    for b in beats:
        w = x[max(0, b - half) : b + half + 1]
        if len(w):
            amps.append(float(w.max() - w.min()))
    if not amps:
        raise ValueError("no reference beats to measure the QRS amplitude from")
    a = np.sort(np.asarray(amps))
    cut = len(a) // 20
    a = a[cut : len(a) - cut] if len(a) > 2 * cut else a
    return float(np.mean(a) ** 2 / 8.0)


def noise_power(n: np.ndarray) -> float:
    """Mean square of the (zero-mean) noise over the samples it is applied to."""
    n = np.asarray(n, dtype=np.float64)
    return float(np.mean((n - n.mean()) ** 2))


# ----- synthetic noise -------------------------------------------------------------------------
def _unit(n: np.ndarray) -> np.ndarray:
    n = n - n.mean()
    p = np.sqrt(np.mean(n**2))
    return n / p if p > 0 else n


def _bursts(
    rng: np.random.Generator,
    n: int,
    fs: float,
    per_minute: float,
    dur_s: tuple[float, float],
    gain: tuple[float, float],
) -> np.ndarray:
    """A 0-based envelope of Hann-shaped bursts at Poisson times."""
    env = np.zeros(n)
    count = rng.poisson(per_minute * n / fs / 60.0)
    for _ in range(count):
        length = max(3, int(rng.uniform(*dur_s) * fs))
        start = int(rng.integers(0, max(1, n - 1)))
        seg = np.hanning(length) * rng.uniform(*gain)
        stop = min(n, start + length)
        env[start:stop] += seg[: stop - start]
    return env


def baseline_wander(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Five sinusoids at 0.05-0.5 Hz (amplitude ~1/f) plus a respiration-like component
    (0.2-0.35 Hz with slowly drifting rate and depth). Unit power."""
    t = np.arange(n) / fs
    out = np.zeros(n)
    for _ in range(5):
        f = rng.uniform(0.05, 0.5)
        out += (0.05 / f) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    out = _unit(out)
    drift = np.cumsum(rng.normal(0, 1, n)) / np.sqrt(n)
    rate = 0.27 + 0.06 * np.tanh(drift)
    phase = 2 * np.pi * np.cumsum(rate) / fs
    depth = 1.0 + 0.4 * np.sin(2 * np.pi * t / rng.uniform(40, 90) + rng.uniform(0, 6.3))
    resp = depth * np.sin(phase)
    return _unit(out + 0.8 * _unit(resp))


def muscle_noise(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """EMG-like: Gaussian noise band-limited to 20-150 Hz (upper edge capped below Nyquist),
    on a steady floor with bursts of contraction (0.5-3 s, 2-5x). Unit power."""
    hi = min(150.0, 0.45 * fs)
    sos = sps.butter(4, [20.0, hi], btype="bandpass", fs=fs, output="sos")
    base = sps.sosfilt(sos, rng.normal(0, 1, n))
    env = 1.0 + _bursts(rng, n, fs, per_minute=6, dur_s=(0.5, 3.0), gain=(1.0, 4.0))
    return _unit(base * env)


def electrode_motion(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Electrode-motion-like: (1) baseline steps with exponential recovery (tau 0.2-1 s),
    (2) fast spikes (rise 4-15 ms) with slow decay (0.05-0.4 s), (3) bursts (1-4 s) of noise
    band-limited to 1-20 Hz, which overlaps the QRS band. The three parts have equal power."""
    t_len = n / fs

    def transients(per_minute: float, rise: tuple[float, float], decay: tuple[float, float]):
        out = np.zeros(n)
        for _ in range(rng.poisson(per_minute * t_len / 60.0)):
            start = int(rng.integers(0, n))
            tau_d = rng.uniform(*decay)
            length = min(n - start, int(6 * tau_d * fs) + 1)
            tt = np.arange(length) / fs
            shape = np.exp(-tt / tau_d)
            if rise[1] > 0:
                shape = shape * (1 - np.exp(-tt / rng.uniform(*rise)))
            out[start : start + length] += rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.5) * shape
        return out

    steps = transients(6, (0.0, 0.0), (0.2, 1.0))
    spikes = transients(6, (0.004, 0.015), (0.05, 0.4))
    sos = sps.butter(2, [1.0, 20.0], btype="bandpass", fs=fs, output="sos")
    burst = sps.sosfilt(sos, rng.normal(0, 1, n))
    burst *= _bursts(rng, n, fs, per_minute=4, dur_s=(1.0, 4.0), gain=(1.0, 1.0))
    parts = [_unit(p) if np.any(p) else p for p in (steps, spikes, burst)]
    return _unit(sum(parts))


def _one(kind: str, n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "bw":
        return baseline_wander(n, fs, rng)
    if kind == "ma":
        return muscle_noise(n, fs, rng)
    if kind == "em":
        return electrode_motion(n, fs, rng)
    mixed = baseline_wander(n, fs, rng) + muscle_noise(n, fs, rng)
    return _unit(mixed + electrode_motion(n, fs, rng))


def make_noise(
    kind: str,
    n_leads: int,
    n: int,
    fs: float,
    seed: int = 20261124,
    correlation: float = 0.0,
) -> np.ndarray:
    """Unit-power noise of one kind for each lead: (n_leads, n).

    Each lead gets its own realisation; with ``correlation`` r > 0 every lead is
    sqrt(r) * (one shared realisation) + sqrt(1 - r) * (its own), so any two leads' noises
    correlate by about r (an artefact at a shared electrode shows in several leads)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; one of {NOISE_KINDS}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError("correlation must be within 0..1")
    rng = np.random.default_rng([seed, NOISE_KINDS.index(kind)])
    rows = [_one(kind, n, fs, rng) for _ in range(n_leads)]
    if correlation > 0:
        shared = _one(kind, n, fs, rng)
        rows = [np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * r for r in rows]
    return np.vstack(rows)


def nst_blocks(duration_s: float, start_s: float = 300.0, block_s: float = 120.0):
    """The NST schedule: noise in alternate 2-minute blocks from 5:00 (5-7, 9-11, ... min)."""
    spans = []
    t = start_s
    while t < duration_s:
        spans.append((t, min(duration_s, t + block_s)))
        t += 2 * block_s
    return spans


def add_noise(
    signals: np.ndarray,
    fs: float,
    ref_beats: np.ndarray,
    kind: str,
    snr_db: float,
    *,
    seed: int = 20261124,
    blocks: Sequence[tuple[float, float]] | None = None,
    correlation: float = 0.0,
) -> np.ndarray:
    """``signals`` (n_leads, n) plus noise scaled per lead to ``snr_db`` (NST definition:
    10*log10(S/N), S from the reference beats' QRS amplitude, N the noise power where it is
    applied). ``blocks`` limits the noise to those spans (1 s raised-cosine edges);
    None applies it to the whole record. ``correlation``: see :func:`make_noise`."""
    x = np.asarray(signals, dtype=np.float64)
    n_leads, n = x.shape
    noise = make_noise(kind, n_leads, n, fs, seed, correlation)
    mask = np.ones(n)
    if blocks is not None:
        mask = np.zeros(n)
        edge = int(fs)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
        for a, b in blocks:
            i, j = int(a * fs), min(n, int(b * fs))
            mask[i:j] = 1.0
            k = min(edge, (j - i) // 2)
            mask[i : i + k] = ramp[:k]
            mask[j - k : j] = ramp[:k][::-1]
    out = x.copy()
    for lead in range(n_leads):
        s = qrs_signal_power(x[lead], ref_beats, fs)
        applied = noise[lead] * mask
        on = mask > 0.999
        p = noise_power(applied[on]) if np.any(on) else noise_power(applied)
        gain = np.sqrt(s / (p * 10 ** (snr_db / 10.0)))
        out[lead] = x[lead] + gain * applied
    return out
