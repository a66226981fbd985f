"""Automatic ECG analysis for the reading centre: beats, rate and rhythm, intervals from the
median beat, frontal axis, per-lead signal quality and critical findings that raise a case to
STAT while the patient waits.

Everything here is *automated and unconfirmed* until a reader signs the report; the dictionary
form says so (``automated: True, confirmed: False``). Methods, thresholds and their reasons, and
the accuracy measured on PhysioNet records are in ``docs/ecg-analysis.md``; the benchmark is
``bench/ecg_accuracy.py``.

    from ecg.analysis import analyse
    result = analyse(ecg)          # ecg.model.ECG
    result.critical, result.to_dict()
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal as sps

from ecg.analysis_measure import (
    LIMB_ANGLES,
    delineate,
    frontal_axis,
    median_beat,
    qrs_areas,
    qtc,
    st_levels,
)
from ecg.analysis_qrs import (
    MATCH_CORR,
    Detection,
    bandpass,
    correlate,
    detect_qrs,
    learn_template,
    shape_signal,
)
from ecg.analysis_quality import (
    LeadQuality,
    assess,
    merge_windows,
    precheck,
    residual,
    window_index,
)
from ecg.model import ECG, STANDARD_12

ALGORITHM = "telehub-ecg"
VERSION = "1.0.0"

# Thresholds (reasons in docs/ecg-analysis.md).
BRADY_SEVERE_BPM = 40.0
TACHY_SEVERE_BPM = 150.0
BRADY_BPM = 50.0  # AHA/ACCF/HRS 2007: normal sinus rate 50-100/min
TACHY_BPM = 100.0
PAUSE_S = 3.0
FLAT_GAP_MV = 0.05
RATE_WINDOW_S = 10.0  # severe brady/tachycardia must hold over a 10-s stretch
WIDE_QRS_MS = 120.0
LONG_QTC_MS = 500.0
PROLONGED_QTC_MS = 460.0
AF_MIN_INTERVALS = 8
AF_WINDOW_S = 30.0  # longer records: judged in 30-s windows (the AF episode definition)
AF_NRMSSD = 0.10
AF_MEDIAN_DIFF = 0.08
AF_CLEAN_SHARE = 0.7
STE_LIMB_MV = 0.10
DIAGNOSTIC_BAND_HZ = (0.5, 150.0)
BEATS_IN_DICT_MAX = 1000
# Anatomically contiguous lead pairs for the ST-elevation criterion: within the inferior and
# the lateral groups, and neighbours in the precordial row.
_GROUPS = (("II", "III", "aVF"), ("I", "aVL", "V5", "V6"))
CONTIGUOUS_PAIRS = tuple(
    (a, b) for g in _GROUPS for i, a in enumerate(g) for b in g[i + 1 :]
) + tuple((f"V{i}", f"V{i + 1}") for i in range(1, 6))


@dataclass(frozen=True)
class RRStats:
    """RR intervals and their irregularity (intervals touching unreadable signal left out)."""

    n_intervals: int
    mean_ms: float
    sd_ms: float
    min_ms: float
    max_ms: float
    cv: float  # SD / mean
    rmssd_ms: float  # root mean square of successive differences
    nrmssd: float  # RMSSD / mean RR
    median_diff_ratio: float  # median |successive difference| / mean RR
    turning_point_ratio: float | None  # share of local extrema among inner intervals


@dataclass(frozen=True)
class Finding:
    code: str
    text: str
    text_zh: str
    critical: bool
    at_s: float | None = None  # where in the record (start), when it is an event
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "text": self.text,
            "text_zh": self.text_zh,
            "critical": self.critical,
        }
        if self.at_s is not None:
            out["at_s"] = round(self.at_s, 2)
        if self.details:
            out["details"] = _jsonable(self.details)
        return out


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of :func:`analyse`. Intervals in ms, amplitudes in mV, times in s; None where
    the signal did not allow the measurement."""

    sampling_rate: float
    duration_s: float
    lead_names: tuple[str, ...]
    beats: np.ndarray  # sample indices of the QRS complexes (int64)
    beat_corr: np.ndarray  # per beat: similarity to the dominant beat shape (-1..1)
    heart_rate_bpm: float | None
    rr: RRStats | None
    pr_ms: float | None
    qrs_ms: float | None
    qt_ms: float | None
    qtc_bazett_ms: float | None
    qtc_fridericia_ms: float | None
    axis_deg: float | None
    st_j_mv: dict[str, float]  # ST deviation at the J point, per lead
    median_beat_count: int  # beats averaged into the median beat the intervals come from
    p_wave_found: bool | None
    quality: dict[str, LeadQuality]
    noisy_segments: tuple[tuple[float, float], ...]  # most leads unreadable there
    leads_used: tuple[str, ...]  # leads the beat detector used
    findings: tuple[Finding, ...]
    automated: bool = True
    confirmed: bool = False
    algorithm: str = ALGORITHM
    version: str = VERSION
    qtc_formula: str = "bazett"  # the headline QTc; Fridericia is given alongside

    @property
    def beat_count(self) -> int:
        return int(len(self.beats))

    @property
    def qtc_ms(self) -> float | None:
        """Headline QTc (Bazett, the convention on printed ECGs and in the 500 ms rule)."""
        return self.qtc_bazett_ms

    @property
    def critical(self) -> bool:
        return any(f.critical for f in self.findings)

    @property
    def beat_times_s(self) -> np.ndarray:
        return self.beats / self.sampling_rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: plain floats rounded, None where not measurable."""
        rr = self.rr
        return {
            "algorithm": self.algorithm,
            "version": self.version,
            "automated": self.automated,
            "confirmed": self.confirmed,
            "sampling_rate_hz": _r(self.sampling_rate, 3),
            "duration_s": _r(self.duration_s, 3),
            "leads": list(self.lead_names),
            "leads_used": list(self.leads_used),
            "beat_count": self.beat_count,
            "beats_s": (
                [round(float(t), 3) for t in self.beat_times_s]
                if self.beat_count <= BEATS_IN_DICT_MAX
                else None
            ),
            "heart_rate_bpm": _r(self.heart_rate_bpm, 0),
            "rr_ms": (
                {
                    "mean": _r(rr.mean_ms, 0),
                    "sd": _r(rr.sd_ms, 0),
                    "min": _r(rr.min_ms, 0),
                    "max": _r(rr.max_ms, 0),
                    "n": rr.n_intervals,
                }
                if rr
                else None
            ),
            "rr_irregularity": (
                {
                    "cv": _r(rr.cv, 3),
                    "rmssd_ms": _r(rr.rmssd_ms, 0),
                    "nrmssd": _r(rr.nrmssd, 3),
                    "median_diff_ratio": _r(rr.median_diff_ratio, 3),
                    "turning_point_ratio": _r(rr.turning_point_ratio, 3),
                }
                if rr
                else None
            ),
            "pr_ms": _r(self.pr_ms, 0),
            "qrs_ms": _r(self.qrs_ms, 0),
            "qt_ms": _r(self.qt_ms, 0),
            "qtc_ms": _r(self.qtc_ms, 0),
            "qtc_formula": self.qtc_formula,
            "qtc_bazett_ms": _r(self.qtc_bazett_ms, 0),
            "qtc_fridericia_ms": _r(self.qtc_fridericia_ms, 0),
            "axis_deg": _r(self.axis_deg, 0),
            "st_j_mv": {k: _r(v, 2) for k, v in self.st_j_mv.items()},
            "p_wave_found": self.p_wave_found,
            "median_beat_count": self.median_beat_count,
            "quality": {
                name: {
                    "usable": q.usable,
                    "flags": list(q.flags),
                    "snr_db": _r(q.snr_db, 1),
                    "snr_db_worst": _r(q.snr_db_worst, 1),
                    "noisy_fraction": _r(q.noisy_fraction, 3),
                    "noisy_segments": [list(s) for s in q.noisy_segments],
                    "qrs_amplitude_mv": _r(q.qrs_amplitude_mv, 2),
                    "baseline_wander_mv": _r(q.baseline_wander_mv, 2),
                }
                for name, q in self.quality.items()
            },
            "noisy_segments": [list(s) for s in self.noisy_segments],
            "findings": [f.to_dict() for f in self.findings],
            "critical": self.critical,
        }


def _r(value: float | None, digits: int) -> float | int | None:
    if value is None or not math.isfinite(value):
        return None
    return int(round(value)) if digits == 0 else round(float(value), digits)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.floating | float):
        return _r(float(value), 3)
    return value


# ----- rhythm ----------------------------------------------------------------------------------
def rr_stats(rr_s: np.ndarray) -> RRStats | None:
    """Summary and irregularity of RR intervals (seconds in, ms out)."""
    if len(rr_s) < 1:
        return None
    rr = np.asarray(rr_s, dtype=np.float64) * 1000.0
    mean = float(rr.mean())
    diffs = np.diff(rr)
    rmssd = float(np.sqrt(np.mean(diffs**2))) if len(diffs) else 0.0
    tpr = None
    if len(rr) >= 3:
        inner = (rr[1:-1] > rr[:-2]) & (rr[1:-1] > rr[2:]) | (rr[1:-1] < rr[:-2]) & (
            rr[1:-1] < rr[2:]
        )
        tpr = float(inner.mean())
    return RRStats(
        n_intervals=len(rr),
        mean_ms=mean,
        sd_ms=float(rr.std(ddof=1)) if len(rr) > 1 else 0.0,
        min_ms=float(rr.min()),
        max_ms=float(rr.max()),
        cv=float(rr.std(ddof=1) / mean) if len(rr) > 1 else 0.0,
        rmssd_ms=rmssd,
        nrmssd=rmssd / mean,
        median_diff_ratio=float(np.median(np.abs(diffs)) / mean) if len(diffs) else 0.0,
        turning_point_ratio=tpr,
    )


def drop_ectopics(rr_s: np.ndarray) -> np.ndarray:
    """RR intervals without the two around each premature beat (an interval under 85 % of the
    median followed by one over 110 %: the prematurity and the pause after it), so that a few
    ectopic beats in sinus rhythm do not look like an irregular rhythm."""
    rr = np.asarray(rr_s, dtype=np.float64)
    if len(rr) < 3:
        return rr
    med = float(np.median(rr))
    keep = np.ones(len(rr), dtype=bool)
    i = 0
    while i < len(rr) - 1:
        if rr[i] < 0.85 * med and rr[i + 1] > 1.10 * med:
            keep[i] = keep[i + 1] = False
            i += 2
        else:
            i += 1
    return rr[keep]


def af_like(rr_s: np.ndarray) -> bool:
    """Irregularly irregular. After dropping the intervals around premature beats: most
    successive RRs differ by more than 8 % of the mean, RMSSD is above 10 % of the mean, and the
    turning points are as frequent as in a random series (within 1.96 SD): neither the steady
    drift of sinus arrhythmia nor the alternation of bigeminy."""
    if len(rr_s) < AF_MIN_INTERVALS:
        return False
    rr = drop_ectopics(rr_s)
    st = rr_stats(rr)
    if len(rr) < AF_MIN_INTERVALS - 2 or st is None or st.turning_point_ratio is None:
        return False
    n = len(rr)
    expected = (2 * n - 4) / 3.0
    sd = math.sqrt((16 * n - 29) / 90.0)
    turning = st.turning_point_ratio * (n - 2)
    return (
        st.nrmssd > AF_NRMSSD
        and st.median_diff_ratio > AF_MEDIAN_DIFF
        and abs(turning - expected) <= 1.96 * sd
    )


# ----- the pipeline ----------------------------------------------------------------------------
#: A trailing stretch this long (s) where every lead holds the same value is not signal.
CALIBRATION_MIN_S = 0.1


def signal_end(ecg: ECG) -> int:
    """Where the recorded signal ends: carts (Philips among them) append a calibration pulse,
    a flat line then 1 mV, identical in every lead, which a detector would count as a beat.
    No heart makes three or more leads exactly equal for 100 ms, so such a tail is cut."""
    n = ecg.n_samples
    if len(ecg.leads) < 3:
        return n
    x = ecg.matrix()
    same = np.ptp(x, axis=0) < 1e-6
    if same.all() or not same[-1]:
        return n
    start = n - int(np.argmin(same[::-1]))
    return start if n - start >= CALIBRATION_MIN_S * ecg.sampling_rate else n


def analyse(ecg: ECG) -> Analysis:
    """Analyse one ECG (any leads, any rate the model accepts). Never raises for a bad signal:
    what cannot be measured is None and the quality section says why."""
    fs = float(ecg.sampling_rate)
    names = ecg.lead_names
    end = signal_end(ecg)
    cleaned, checks = [], []
    for lead in ecg.leads:
        x_lead, chk = precheck(lead.samples[:end], fs)
        cleaned.append(x_lead)
        checks.append(chk)
    x = np.vstack(cleaned)
    n = x.shape[-1]
    usable = [i for i, c in enumerate(checks) if c.usable]
    if usable:
        det = detect_qrs(x, fs, usable)
    else:
        empty = np.zeros(0, dtype=np.int64)
        det = Detection(empty, np.zeros(0), empty, ())
    beats = det.beats
    xd = bandpass(x - np.median(x, axis=1, keepdims=True), fs, *DIAGNOSTIC_BAND_HZ)

    rr_all = np.diff(beats) / fs
    rr_med = float(np.median(rr_all)) if len(rr_all) else 1.0
    groups = _groups(x, fs, det, usable)
    templates: dict[int, np.ndarray] = {}
    qrs_pp = None
    res = count = odd = None
    pre = post = 0
    for g in (0, 1):
        members = np.flatnonzero(groups == g)
        if len(members):
            mb = median_beat(xd, beats[members], det.lag[members], fs, rr_med)
            if mb is not None:
                templates[g] = mb.samples
                pre, post = mb.centre, mb.samples.shape[-1] - mb.centre
    if 0 in templates:
        half = int(0.06 * fs)
        t0 = templates[0]
        qrs_pp = np.ptp(t0[:, max(0, pre - half) : pre + half + 1], axis=1)
        res, count, odd = residual(
            xd, beats, det.lag, groups, templates, pre, post, int(rr_med * fs)
        )
    quality_list, unreadable = assess(x, fs, checks, res, count, odd, qrs_pp)
    quality = dict(zip(names, quality_list, strict=True))
    overall = unreadable.sum(axis=0) > x.shape[0] / 2.0
    noisy_segments = merge_windows(overall, n, fs)

    # Beats in readable signal (most leads readable there) count for rate and RR statistics;
    # rhythm irregularity is judged only on beats where every usable lead is readable and
    # whose shape is one of the patient's (noise spikes and missed beats fake irregularity).
    win = window_index(beats, n, fs)
    good_rows = [i for i, q in enumerate(quality_list) if q.usable]
    any_bad = unreadable[good_rows].any(axis=0) if good_rows else overall
    beat_ok = ~overall[win]
    beat_clean = ~any_bad[win] & (groups >= 0)
    rr_ok = beat_ok[1:] & beat_ok[:-1]
    rr_use = rr_all[rr_ok] if rr_ok.sum() >= max(1, len(rr_all) // 2) else rr_all
    rr = rr_stats(rr_use)
    hr = 60000.0 / rr.mean_ms if rr else None
    rr_clean = beat_clean[1:] & beat_clean[:-1]

    # Median beat of the clean dominant beats, not premature ones.
    measured = _measure(ecg, xd, fs, det, groups, beat_ok, rr_med, quality)
    findings = _findings(
        ecg, x, beats, fs, rr_all, beat_ok, rr_clean, overall, quality, hr, measured
    )
    return Analysis(
        sampling_rate=fs,
        duration_s=n / fs,
        lead_names=names,
        beats=beats,
        beat_corr=det.corr,
        heart_rate_bpm=hr,
        rr=rr,
        pr_ms=measured.pr_ms,
        qrs_ms=measured.qrs_ms,
        qt_ms=measured.qt_ms,
        qtc_bazett_ms=measured.qtc_bazett_ms,
        qtc_fridericia_ms=measured.qtc_fridericia_ms,
        axis_deg=measured.axis_deg,
        st_j_mv=measured.st_j_mv,
        median_beat_count=measured.n_beats,
        p_wave_found=measured.p_wave_found,
        quality=quality,
        noisy_segments=noisy_segments,
        leads_used=tuple(names[i] for i in det.leads),
        findings=tuple(findings),
    )


def _groups(x: np.ndarray, fs: float, det: Detection, usable: list[int]) -> np.ndarray:
    """0: the dominant beat shape; 1: a second shape shared by several beats (e.g. the
    patient's ventricular ectopics); -1: matches neither."""
    groups = np.where(det.corr >= MATCH_CORR, 0, -1)
    others = np.flatnonzero(groups < 0)
    if len(others) >= 3 and usable:
        shape = shape_signal(x[usable], fs)
        template = learn_template(shape, det.beats[others], fs)
        if template is not None:
            c, _ = correlate(shape, det.beats[others], template, fs)
            groups[others[c >= MATCH_CORR]] = 1
    return groups


@dataclass(frozen=True)
class _Measured:
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_bazett_ms: float | None = None
    qtc_fridericia_ms: float | None = None
    axis_deg: float | None = None
    st_j_mv: dict[str, float] = field(default_factory=dict)
    n_beats: int = 0
    p_wave_found: bool | None = None


def _measure(
    ecg: ECG,
    xd: np.ndarray,
    fs: float,
    det: Detection,
    groups: np.ndarray,
    beat_ok: np.ndarray,
    rr_med: float,
    quality: dict[str, LeadQuality],
) -> _Measured:
    """Intervals, axis and ST from the median of the dominant-shape beats that lie in readable
    signal and are not premature (RR >= 80 % of the median), over the usable leads."""
    beats = det.beats
    names = ecg.lead_names
    rows = [i for i, nm in enumerate(names) if quality[nm].usable]
    if len(beats) < 2 or not rows:
        return _Measured()
    rr_prev = np.concatenate(([np.inf], np.diff(beats) / fs))
    chosen = (groups == 0) & beat_ok & (rr_prev >= 0.8 * rr_med)
    if chosen.sum() < 3:
        chosen = groups == 0
    if chosen.sum() < 1:
        return _Measured()
    rr_dom = np.diff(beats)[chosen[1:] & chosen[:-1]] / fs
    rr_s = float(np.mean(rr_dom)) if len(rr_dom) else rr_med
    mb = median_beat(xd[rows], beats[chosen], det.lag[chosen], fs, rr_med)
    if mb is None:
        return _Measured()
    waves = delineate(mb)
    used = [names[i] for i in rows]
    qrs = waves.ms(waves.qrs_onset, waves.qrs_offset, fs)
    if qrs is None or not 40.0 <= qrs <= 250.0:
        return _Measured(n_beats=mb.n_beats)
    qt = waves.ms(waves.qrs_onset, waves.t_end, fs)
    if qt is not None and not 200.0 <= qt <= 700.0:
        qt = None
    bazett, fridericia = qtc(qt, rr_s)
    pr = waves.ms(waves.p_onset, waves.qrs_onset, fs)
    if pr is not None and not 60.0 <= pr <= 400.0:
        pr = None
    areas = {k: v for k, v in qrs_areas(mb, waves, used).items() if k in LIMB_ANGLES}
    return _Measured(
        pr_ms=pr,
        qrs_ms=qrs,
        qt_ms=qt,
        qtc_bazett_ms=bazett,
        qtc_fridericia_ms=fridericia,
        axis_deg=frontal_axis(areas),
        st_j_mv=st_levels(mb, waves, used),
        n_beats=mb.n_beats,
        p_wave_found=waves.p_onset is not None,
    )


def _finding(code: str, critical: bool, at_s: float | None = None, **details: Any) -> Finding:
    text, text_zh = _TEXTS[code]
    return Finding(
        code=code,
        text=text.format(**details),
        text_zh=text_zh.format(**details),
        critical=critical,
        at_s=at_s,
        details=details,
    )


_TEXTS = {
    "no_usable_lead": (
        "No usable lead (flat line or lead off): repeat the recording",
        "无可用导联（直线或导联脱落）：请重新采集",
    ),
    "no_qrs": (
        "No QRS complex detected in {duration_s:.0f} s of usable signal: asystole or "
        "a recording problem",
        "{duration_s:.0f} 秒可用信号中未检出QRS波：心脏停搏或采集问题",
    ),
    "bradycardia_severe": (
        "Severe bradycardia: {bpm:.0f}/min (< 40)",
        "严重心动过缓：{bpm:.0f} 次/分（< 40）",
    ),
    "tachycardia_severe": (
        "Severe tachycardia: {bpm:.0f}/min (> 150)",
        "严重心动过速：{bpm:.0f} 次/分（> 150）",
    ),
    "bradycardia": ("Bradycardia: {bpm:.0f}/min", "心动过缓：{bpm:.0f} 次/分"),
    "tachycardia": ("Tachycardia: {bpm:.0f}/min", "心动过速：{bpm:.0f} 次/分"),
    "pause": (
        "Pause of {duration_s:.1f} s (> 3 s)",
        "长间歇 {duration_s:.1f} 秒（> 3 秒）",
    ),
    "pause_in_noise": (
        "Possible pause of {duration_s:.1f} s where the signal is too noisy to be sure",
        "信号噪声大处可能有 {duration_s:.1f} 秒长间歇，需核实",
    ),
    "possible_af": (
        "Irregularly irregular rhythm: possible atrial fibrillation",
        "绝对不规则心律：疑似心房颤动",
    ),
    "wide_qrs_tachycardia": (
        "Wide-QRS tachycardia ({bpm:.0f}/min, QRS {qrs_ms:.0f} ms): treat as possible "
        "ventricular tachycardia",
        "宽QRS心动过速（{bpm:.0f} 次/分，QRS {qrs_ms:.0f} ms）：疑似室性心动过速",
    ),
    "wide_qrs": ("Wide QRS ({qrs_ms:.0f} ms)", "QRS增宽（{qrs_ms:.0f} ms）"),
    "long_qtc": (
        "Long QTc: {qtc_ms:.0f} ms (Bazett), {qtc_f_ms:.0f} ms (Fridericia), both >= 500",
        "QTc显著延长：{qtc_ms:.0f} ms（Bazett），{qtc_f_ms:.0f} ms（Fridericia），均 >= 500",
    ),
    "qtc_prolonged": (
        "Prolonged QTc: {qtc_ms:.0f} ms (Bazett)",
        "QTc延长：{qtc_ms:.0f} ms（Bazett）",
    ),
    "st_elevation": (
        "ST elevation at the J point in contiguous leads {leads_text}: possible STEMI",
        "相邻导联 {leads_text} J点ST段抬高：疑似ST段抬高型心肌梗死",
    ),
    "poor_quality": (
        "{percent:.0f} % of the recording is too noisy to read: consider repeating it",
        "{percent:.0f}% 的记录噪声过大无法判读：建议重新采集",
    ),
}


def _rate_windows(
    beats: np.ndarray, fs: float, n: int, beat_ok: np.ndarray
) -> list[tuple[float, float]]:
    """(start_s, bpm) for 10-s stretches (every 5 s; the whole record if shorter) whose beats
    are all in readable signal."""
    t = beats / fs
    dur = n / fs
    starts = [0.0] if dur <= RATE_WINDOW_S * 1.5 else list(np.arange(0, dur - RATE_WINDOW_S, 5))
    span = max(dur, RATE_WINDOW_S) if dur <= RATE_WINDOW_S * 1.5 else RATE_WINDOW_S
    out = []
    for s in starts:
        inside = (t >= s) & (t < s + span)
        k = int(inside.sum())
        if k >= 3 and beat_ok[inside].all():
            tt = t[inside]
            out.append((float(s), 60.0 * (k - 1) / (tt[-1] - tt[0])))
    return out


def _findings(
    ecg: ECG,
    x: np.ndarray,
    beats: np.ndarray,
    fs: float,
    rr_all: np.ndarray,
    beat_ok: np.ndarray,
    rr_clean: np.ndarray,
    overall: np.ndarray,
    quality: dict[str, LeadQuality],
    hr: float | None,
    measured: _Measured,
) -> list[Finding]:
    out: list[Finding] = []
    n = x.shape[-1]  # without a trailing calibration pulse (signal_end)
    duration = n / fs
    rows = [i for i, q in enumerate(quality.values()) if q.usable] or list(range(len(quality)))
    if not any(q.usable for q in quality.values()) and all(
        ("flat_line" in q.flags or "lead_off" in q.flags) for q in quality.values()
    ):
        return [_finding("no_usable_lead", False)]
    noisy_share = float(overall.mean()) if len(overall) else 0.0
    if noisy_share >= 0.5:
        out.append(_finding("poor_quality", False, percent=100.0 * noisy_share))
    if len(beats) < 2:
        if duration >= PAUSE_S and noisy_share < 0.5 and any(q.usable for q in quality.values()):
            out.append(_finding("no_qrs", True, 0.0, duration_s=duration))
        return out

    # Rate: severe limits over a 10-s stretch of readable signal; the plain limits on the mean
    # rate, not stated when most of the record is unreadable.
    if noisy_share >= 0.5:
        hr = None
    windows_hr = _rate_windows(beats, fs, n, beat_ok)
    slow = [w for w in windows_hr if w[1] < BRADY_SEVERE_BPM]
    fast = [w for w in windows_hr if w[1] > TACHY_SEVERE_BPM]
    if slow:
        s, bpm = min(slow, key=lambda w: w[1])
        out.append(_finding("bradycardia_severe", True, s, bpm=bpm))
    elif hr is not None and hr < BRADY_BPM:
        out.append(_finding("bradycardia", False, bpm=hr))
    if fast:
        s, bpm = max(fast, key=lambda w: w[1])
        out.append(_finding("tachycardia_severe", True, s, bpm=bpm))
    elif hr is not None and hr > TACHY_BPM:
        out.append(_finding("tachycardia", False, bpm=hr))

    # Pauses: between beats, and before the first / after the last beat (asystole at an edge).
    win = window_index(beats, n, fs)
    edges = np.concatenate(([0], beats, [n - 1]))
    edge_win = np.concatenate(([0], win, [len(overall) - 1]))
    for i in np.flatnonzero(np.diff(edges) > PAUSE_S * fs):
        a, b = int(edges[i]), int(edges[i + 1])
        covered = overall[edge_win[i] : edge_win[i + 1] + 1]
        in_noise = bool(covered.mean() > 0.5) if len(covered) else False
        code = "pause_in_noise" if in_noise else "pause"
        # Between the last T wave and the next P wave: is anything there (linear drift aside)?
        inner = x[rows, a + int(0.6 * fs) : max(a + int(0.6 * fs) + 2, b - int(0.3 * fs))]
        inner = sps.detrend(inner, axis=1)
        spread = np.percentile(inner, 99, axis=1) - np.percentile(inner, 1, axis=1)
        flat = bool(spread.max() < FLAT_GAP_MV)
        out.append(
            _finding(
                code,
                not in_noise,
                a / fs,
                duration_s=(b - a) / fs,
                end_s=b / fs,
                flat_signal=flat,  # flat in every usable lead: asystole, or leads off
            )
        )

    # Atrial fibrillation: the whole record, or 30-s windows of a long one; judged only where
    # at least 70 % of the intervals are clean (see analyse()).
    t = beats / fs
    af_at = None
    spans = (
        [(0.0, duration + 1.0)]
        if duration <= 2 * AF_WINDOW_S
        else [(s, s + AF_WINDOW_S) for s in np.arange(0, duration - AF_WINDOW_S + 1e-9, 15.0)]
    )
    for s, e in spans:
        sel = (t[:-1] >= s) & (t[1:] < e)
        clean = sel & rr_clean
        if sel.sum() and clean.sum() >= AF_CLEAN_SHARE * sel.sum() and af_like(rr_all[clean]):
            af_at = max(float(s), float(t[0]))
            break
    if af_at is not None:
        out.append(_finding("possible_af", False, af_at, p_wave_found=measured.p_wave_found))

    qrs_ms = measured.qrs_ms
    if qrs_ms is not None and qrs_ms >= WIDE_QRS_MS:
        if hr is not None and hr > TACHY_BPM:
            out.append(_finding("wide_qrs_tachycardia", True, bpm=hr, qrs_ms=qrs_ms))
        else:
            out.append(_finding("wide_qrs", False, qrs_ms=qrs_ms))
    qb, qf = measured.qtc_bazett_ms, measured.qtc_fridericia_ms
    if qb is not None and qf is not None and qrs_ms is not None and qrs_ms < WIDE_QRS_MS:
        if qb >= LONG_QTC_MS and qf >= LONG_QTC_MS:
            out.append(_finding("long_qtc", True, qtc_ms=qb, qtc_f_ms=qf))
        elif qb >= PROLONGED_QTC_MS:
            out.append(_finding("qtc_prolonged", False, qtc_ms=qb))

    ste = _st_elevation(ecg, measured.st_j_mv, qrs_ms, quality)
    if ste:
        out.append(
            _finding(
                "st_elevation",
                True,
                leads=ste,
                leads_text=", ".join(ste),
                st_j_mv={k: measured.st_j_mv[k] for k in ste},
            )
        )
    return out


def _ste_limit(lead: str, sex: str, age: float | None) -> float:
    """Fourth Universal Definition of MI, J-point cut-points (mV)."""
    if lead not in ("V2", "V3"):
        return STE_LIMB_MV
    if sex == "F":
        return 0.15
    if sex == "M":
        return 0.25 if age is not None and age < 40 else 0.20
    return 0.15  # sex unknown: the lower cut-point, so no STEMI is missed


def _age_years(raw: str) -> float | None:
    """'081Y' (DICOM age string), '6M', '81' -> years; None when absent or unreadable."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", raw.upper())
    if not match:
        return None
    per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0, "": 1.0}[match.group(2)]
    return float(match.group(1)) / per_year


def _st_elevation(
    ecg: ECG, st: dict[str, float], qrs_ms: float | None, quality: dict[str, LeadQuality]
) -> list[str]:
    """Leads of the contiguous pairs meeting the STEMI cut-points, or [] (not judged when
    the QRS is wide, where ST shifts are secondary, or without the standard leads)."""
    if not ecg.is_12_lead or qrs_ms is None or qrs_ms >= WIDE_QRS_MS or not st:
        return []
    sex = (ecg.patient.sex or "").strip().upper()[:1]
    age = _age_years(ecg.patient.age or "")
    hits: list[str] = []
    for a, b in CONTIGUOUS_PAIRS:
        if a not in st or b not in st or not (quality[a].usable and quality[b].usable):
            continue
        if st[a] >= _ste_limit(a, sex, age) and st[b] >= _ste_limit(b, sex, age):
            hits.extend(x for x in (a, b) if x not in hits)
    return hits


__all__ = ["ALGORITHM", "VERSION", "Analysis", "Finding", "RRStats", "STANDARD_12", "analyse"]
