"""ECG analysis accuracy and speed: beat detection on MIT-BIH record 100 (AAMI EC57 / bxb rules),
the same under synthetic NST-style noise, PTB s0010_re's heart rate against a hand count, and the
time to analyse a 10-s 12-lead ECG at 500 Hz.

Run: python3 bench/ecg_accuracy.py [--runs 50] [--seeds 20261124] [--no-xqrs]
Needs ../shared/data/ecg beside the repository; prints markdown tables (about 1 min).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import wfdb  # noqa: E402
from scipy import signal as sps  # noqa: E402

from ecg.analysis import analyse  # noqa: E402
from ecg.analysis_quality import window_bounds  # noqa: E402
from ecg.analysis_stress import (  # noqa: E402
    NOISE_KINDS,
    NOISE_NAMES,
    add_noise,
    nst_blocks,
    reference_beats,
    score_beats,
)
from ecg.model import ECG, Lead, normalise_lead_name  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ecg"
LEVELS_DB = (12.0, 6.0, 0.0)

# Hand count of PTB s0010_re (docs/ecg-analysis.md): lead II plotted in four 9.6-s strips on a
# 0.2-s grid, 13 QRS complexes counted in each; on zoomed 2-s plots (0.1-s grid) the first
# complex is at ~0.65 s and the last at ~38.1 s.
PTB_HAND_BEATS = 52
PTB_HAND_FIRST_S, PTB_HAND_LAST_S = 0.65, 38.1


def load(name: str) -> tuple[np.ndarray, float, tuple[str, ...]]:
    rec = wfdb.rdrecord(str(DATA / name))
    return (
        rec.p_signal.T.astype(np.float64),
        float(rec.fs),
        tuple(normalise_lead_name(n) for n in rec.sig_name),
    )


def ecg_of(x: np.ndarray, fs: float, names: tuple[str, ...]) -> ECG:
    return ECG(leads=tuple(Lead(n, r) for n, r in zip(names, x, strict=True)), sampling_rate=fs)


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def overlap(segments, spans) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in segments for c, d in spans)


def xqrs(x: np.ndarray, fs: float) -> np.ndarray:
    from wfdb import processing

    detector = processing.XQRS(sig=x, fs=fs)
    detector.detect(verbose=False)
    return np.asarray(detector.qrs_inds, dtype=np.int64)


def record_100(use_xqrs: bool) -> None:
    x, fs, names = load("100")
    ann = wfdb.rdann(str(DATA / "100"), "atr")
    ref = reference_beats(ann.sample, ann.symbol)
    print("## 1. MIT-BIH record 100, beat detection (bxb rules: +-150 ms, first 5 min unscored)\n")
    print("| detector | leads | Se % | PPV % | TP | FP | FN | time s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [("analyse()", "MLII+V5", [0, 1]), ("analyse()", "MLII", [0]), ("analyse()", "V5", [1])]
    for label, lead_label, idx in rows:
        t0 = time.perf_counter()
        result = analyse(ecg_of(x[idx], fs, tuple(names[i] for i in idx)))
        dt = time.perf_counter() - t0
        s = score_beats(ref, result.beats, fs)
        print(
            f"| {label} | {lead_label} | {pct(s.sensitivity)} | {pct(s.ppv)} | {s.tp} | {s.fp} "
            f"| {s.fn} | {dt:.2f} |"
        )
    whole = score_beats(ref, analyse(ecg_of(x, fs, names)).beats, fs, skip_s=0.0)
    print(
        f"| analyse(), whole 30 min scored | MLII+V5 | {pct(whole.sensitivity)} | "
        f"{pct(whole.ppv)} | {whole.tp} | {whole.fp} | {whole.fn} | |"
    )
    if use_xqrs:
        t0 = time.perf_counter()
        s = score_beats(ref, xqrs(x[0], fs), fs)
        dt = time.perf_counter() - t0
        print(
            f"| wfdb XQRS (reference) | MLII | {pct(s.sensitivity)} | {pct(s.ppv)} | {s.tp} "
            f"| {s.fp} | {s.fn} | {dt:.2f} |"
        )
    print()


def noise_table(seeds: list[int], use_xqrs: bool) -> None:
    x, fs, names = load("100")
    ann = wfdb.rdann(str(DATA / "100"), "atr")
    ref = reference_beats(ann.sample, ann.symbol)
    duration = x.shape[1] / fs
    blocks = nst_blocks(duration)
    noisy_time = sum(b - a for a, b in blocks)
    clean_time = duration - 300.0 - noisy_time
    print("## 2. Record 100 under synthetic noise (NST schedule: noise in 5-7, 9-11, ... min)\n")
    in_blocks = score_beats(ref, ref, fs, windows=blocks).tp
    print(
        f"Se/PPV over the {in_blocks} reference beats inside the {len(blocks)} noisy blocks "
        f"({noisy_time:.0f} s); 'flagged' = share of the noisy / clean time inside the record's "
        "`noisy_segments` (most leads unreadable), 'MLII flagged' = the same for MLII's own "
        "segments; 'est. SNR' = median of MLII's per-window SNR estimate inside the noisy "
        "blocks; r = correlation of the noise between the two leads.\n"
    )
    for seed in seeds:
        for corr in (0.0, 0.3):
            print(f"### seed {seed}, r = {corr}\n")
            print(
                "| noise | SNR dB | Se % | PPV % | FP | FN | flagged noisy % | flagged clean % "
                "| MLII flagged noisy % | est. SNR dB |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for kind in NOISE_KINDS:
                for snr in LEVELS_DB:
                    y = add_noise(x, fs, ref, kind, snr, seed=seed, blocks=blocks, correlation=corr)
                    result = analyse(ecg_of(y, fs, names))
                    s = score_beats(ref, result.beats, fs, windows=blocks)
                    segs = result.noisy_segments
                    in_noise = overlap(segs, blocks) / noisy_time
                    in_clean = (overlap(segs, [(300.0, duration)]) - overlap(segs, blocks)) / (
                        clean_time
                    )
                    est = _estimated_snr(result, blocks)
                    lead = overlap(result.quality["MLII"].noisy_segments, blocks) / noisy_time
                    print(
                        f"| {NOISE_NAMES[kind]} | {snr:.0f} | {pct(s.sensitivity)} | "
                        f"{pct(s.ppv)} | {s.fp} | {s.fn} | {100 * in_noise:.0f} | "
                        f"{100 * in_clean:.1f} | {100 * lead:.0f} | {est} |"
                    )
            print()
    if use_xqrs:
        print("### wfdb XQRS on MLII alone, for reference (seed 20261124, r = 0.3)\n")
        print("| noise | SNR dB | Se % | PPV % |")
        print("| --- | --- | --- | --- |")
        for kind in NOISE_KINDS:
            for snr in (6.0, 0.0):
                y = add_noise(x, fs, ref, kind, snr, blocks=blocks, correlation=0.3)
                s = score_beats(ref, xqrs(y[0], fs), fs, windows=blocks)
                print(f"| {NOISE_NAMES[kind]} | {snr:.0f} | {pct(s.sensitivity)} | {pct(s.ppv)} |")
        print()


def _estimated_snr(result, blocks) -> str:
    """Median of MLII's per-window SNR estimates over the windows inside the noisy blocks."""
    q = result.quality.get("MLII")
    n = int(round(result.duration_s * result.sampling_rate))
    bounds = window_bounds(n, result.sampling_rate)
    mid = np.array([(a + b) / 2 / result.sampling_rate for a, b in bounds])
    inside = np.zeros(len(mid), dtype=bool)
    for a, b in blocks:
        inside |= (mid >= a) & (mid < b)
    values = q.window_snr_db[inside] if q is not None else np.zeros(0)
    values = values[np.isfinite(values)]
    return f"{np.median(values):.1f}" if len(values) else "-"


def ptb() -> None:
    x, fs, names = load("s0010_re")
    result = analyse(ecg_of(x, fs, names))
    hand_hr = 60.0 * (PTB_HAND_BEATS - 1) / (PTB_HAND_LAST_S - PTB_HAND_FIRST_S)
    print("## 3. PTB s0010_re (15 leads, 1000 Hz, 38.4 s): heart rate against a hand count\n")
    print("| | beats | heart rate /min |")
    print("| --- | --- | --- |")
    print(f"| hand count, lead II | {PTB_HAND_BEATS} | {hand_hr:.1f} |")
    print(f"| analyse() | {result.beat_count} | {result.heart_rate_bpm:.1f} |")
    d = result.to_dict()
    print(
        f"\nanalyse(): PR {d['pr_ms']} ms, QRS {d['qrs_ms']} ms, QT {d['qt_ms']} ms, QTc "
        f"{d['qtc_bazett_ms']} ms (Bazett) / {d['qtc_fridericia_ms']} ms (Fridericia), axis "
        f"{d['axis_deg']} deg, findings {[f['code'] for f in d['findings']]}\n"
    )


def speed(runs: int) -> None:
    x, fs, names = load("s0010_re")
    twelve = sps.resample_poly(x[:12, : int(10 * fs)], 1, 2, axis=1)  # 10 s, 1000 -> 500 Hz
    ecg = ecg_of(twelve, 500.0, names[:12])
    analyse(ecg)  # warm-up (imports, filter design cache)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        analyse(ecg)
        times.append(1000.0 * (time.perf_counter() - t0))
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print("## 4. Speed: 10-s 12-lead ECG at 500 Hz (s0010_re resampled), analyse() end to end\n")
    print(f"{runs} runs: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[20261124])
    parser.add_argument("--no-xqrs", action="store_true", help="skip the wfdb XQRS comparison")
    args = parser.parse_args()
    t0 = time.perf_counter()
    record_100(not args.no_xqrs)
    noise_table(args.seeds, not args.no_xqrs)
    ptb()
    speed(args.runs)
    print(f"(bench total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
