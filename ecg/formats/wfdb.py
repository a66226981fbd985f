"""PhysioNet WFDB records (a ``.hea`` header plus the signal files it names) to :class:`ECG`.

The header is parsed strictly here first, because the ``wfdb`` package is lenient in ways that
hide broken uploads (it reads ``fs=1e7`` as 1 Hz, ignores a signal count that disagrees with the
signal lines, and turns an uncalibrated gain of 0 into 200). Only a header that passes, with
signal files of exactly the size it implies, is handed to ``wfdb.rdrecord`` (``pn_dir=None``, in
a private folder holding only the uploaded files, so it never reaches the network). Samples are
the stored integers from ``wfdb`` converted with the header's own gain, baseline and units.

Signal formats read: 8, 16, 24, 32, 61, 80, 160, 212, 310, 311 and FLAC 508/516/524.
Not read (each with its own ECGError): multi-segment records, multi-frequency signals
(``samps_per_frame`` > 1, which ``wfdb`` would average), skewed signals,
uncalibrated signals (gain 0 or absent: their millivolts are unknown), and headers that do not
state the sampling frequency (WFDB's default 250 Hz is a guess a diagnosis must not rest on).
Signals in units that are not voltages (mmHg, NU) are skipped and listed in ``skipped``.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import wfdb as wfdb_lib

from ecg.formats.common import (
    DecodedECG,
    RawChannel,
    aware,
    check_sampling_rate,
    is_voltage,
    normalise_age,
    normalise_sex,
    plain_name,
)
from ecg.model import ECG, ECGError, Lead, PatientInfo, normalise_lead_name

MAX_HEADER_BYTES = 1024 * 1024

# Format code -> (samples per group, bytes per group): how many bytes n samples take.
_PACKING: dict[str, tuple[int, int]] = {
    "8": (1, 1),
    "80": (1, 1),
    "16": (1, 2),
    "61": (1, 2),
    "160": (1, 2),
    "24": (1, 3),
    "32": (1, 4),
    "212": (2, 3),
    "310": (3, 4),
    "311": (3, 4),
}
_FLAC = ("508", "516", "524")  # compressed: sizes are checked from the FLAC stream info
SUPPORTED_FORMATS = (*sorted(_PACKING, key=int), *_FLAC)
_KNOWN_UNSUPPORTED = {"0": "format 0 is a null signal with no samples"}
# The stored value WFDB uses for "no sample" (format 8, first differences, has none).
_INVALID: dict[str, int | None] = {
    "8": None,
    "80": -128,
    "16": -32768,
    "61": -32768,
    "160": -32768,
    "24": -8388608,
    "32": -2147483648,
    "212": -2048,
    "310": -512,
    "311": -512,
    "508": -128,
    "516": -32768,
    "524": -8388608,
}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RECORD_LINE = re.compile(
    rf"^(?P<name>[^\s/]+)(?:/(?P<nseg>\d+))?\s+(?P<nsig>\d+)"
    rf"(?:\s+(?P<fs>{_NUMBER})(?:/(?P<cf>{_NUMBER})(?:\((?P<bc>{_NUMBER})\))?)?"
    r"(?:\s+(?P<siglen>\d+)(?:\s+(?P<time>\S+)(?:\s+(?P<date>\S+))?)?)?)?\s*$"
)
_FORMAT_FIELD = re.compile(
    r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<off>\d+))?$"
)
_GAIN_FIELD = re.compile(rf"^(?P<gain>{_NUMBER})(?:\((?P<base>[-+]?\d+)\))?(?:/(?P<units>\S+))?$")


@dataclass(frozen=True)
class WfdbSignal:
    file_name: str
    fmt: str
    byte_offset: int
    gain: float
    baseline: int
    units: str
    description: str


@dataclass(frozen=True)
class WfdbHeader:
    record_name: str
    n_sig: int
    fs: float
    sig_len: int | None
    base_time: str
    base_date: str
    signals: tuple[WfdbSignal, ...]
    comments: tuple[str, ...]


def parse_header(text: str, what: str = "header") -> WfdbHeader:
    """Parse a WFDB header strictly; every deviation is an ECGError naming the line."""
    lines: list[str] = []
    comments: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
            continue
        lines.append(line)
    if not lines:
        raise ECGError(f"{what} does not parse: it has no record line")
    match = _RECORD_LINE.match(lines[0])
    if not match:
        raise ECGError(f"{what} does not parse: bad record line {lines[0][:120]!r}")
    if match["nseg"]:
        raise ECGError(f"{what} is a multi-segment record; only single-segment records are read")
    n_sig = int(match["nsig"])
    if n_sig == 0:
        raise ECGError(f"{what} declares no signals")
    if match["fs"] is None:
        raise ECGError(f"{what} does not state the sampling frequency")
    fs = check_sampling_rate(float(match["fs"]), what)
    signal_lines = lines[1:]
    if len(signal_lines) != n_sig:
        raise ECGError(
            f"{what} declares {n_sig} signals but lists {len(signal_lines)} signal lines"
        )
    signals = tuple(
        _parse_signal_line(line, number, what) for number, line in enumerate(signal_lines, 1)
    )
    return WfdbHeader(
        record_name=match["name"],
        n_sig=n_sig,
        fs=fs,
        sig_len=int(match["siglen"]) if match["siglen"] is not None else None,
        base_time=match["time"] or "",
        base_date=match["date"] or "",
        signals=signals,
        comments=tuple(comments),
    )


def _parse_signal_line(line: str, number: int, what: str) -> WfdbSignal:
    fields = line.split(None, 8)
    where = f"{what}, signal {number}"
    if len(fields) < 2:
        raise ECGError(f"{where}: the signal line names no format ({line[:120]!r})")
    file_name = fields[0]
    if file_name == "-" or "/" in file_name or "\\" in file_name or file_name in (".", ".."):
        raise ECGError(f"{where}: signal file {file_name!r} is not a plain file name")
    fmt_match = _FORMAT_FIELD.match(fields[1])
    if not fmt_match:
        raise ECGError(f"{where}: format field {fields[1]!r} does not parse")
    fmt = str(int(fmt_match["fmt"]))
    if fmt in _KNOWN_UNSUPPORTED:
        raise ECGError(f"{where}: {_KNOWN_UNSUPPORTED[fmt]}")
    if fmt not in SUPPORTED_FORMATS:
        raise ECGError(
            f"{where}: WFDB signal format {fmt} is not supported "
            f"(supported: {', '.join(SUPPORTED_FORMATS)})"
        )
    if fmt_match["spf"] and int(fmt_match["spf"]) != 1:
        raise ECGError(
            f"{where}: {fmt_match['spf']} samples per frame; multi-frequency records are not read"
        )
    if fmt_match["skew"] and int(fmt_match["skew"]) != 0:
        raise ECGError(f"{where}: skewed signals are not read")
    if len(fields) < 3:
        raise ECGError(f"{where}: no gain, so the signal is uncalibrated and its mV are unknown")
    gain_match = _GAIN_FIELD.match(fields[2])
    if not gain_match:
        raise ECGError(f"{where}: gain field {fields[2]!r} does not parse")
    gain = float(gain_match["gain"])
    if gain == 0 or not math.isfinite(gain):
        raise ECGError(f"{where}: gain {fields[2]!r} means uncalibrated; its mV are unknown")
    ints: list[int] = []
    for index, name in ((3, "ADC resolution"), (4, "ADC zero"), (5, "initial value")):
        if len(fields) > index:
            try:
                ints.append(int(fields[index]))
            except ValueError:
                raise ECGError(f"{where}: {name} {fields[index]!r} is not an integer") from None
    adc_zero = ints[1] if len(ints) > 1 else 0
    baseline = int(gain_match["base"]) if gain_match["base"] is not None else adc_zero
    return WfdbSignal(
        file_name=file_name,
        fmt=fmt,
        byte_offset=int(fmt_match["off"] or 0),
        gain=gain,
        baseline=baseline,
        units=gain_match["units"] or "mV",
        description=fields[8].strip() if len(fields) > 8 else "",
    )


def _bytes_needed(fmt: str, n_samples: int) -> tuple[int, int]:
    """Smallest and largest byte count that hold n samples (packed formats may pad a group)."""
    per_group, group_bytes = _PACKING[fmt]
    if per_group == 1:
        return n_samples * group_bytes, n_samples * group_bytes
    if fmt == "212":
        smallest = math.ceil(n_samples * 3 / 2)
    elif fmt == "310" and n_samples % 3 == 2:
        smallest = math.ceil(n_samples * 4 / 3 / 4) * 4
    else:
        smallest = math.ceil(n_samples * 4 / 3)
    return smallest, math.ceil(n_samples / per_group) * group_bytes


def _groups(header: WfdbHeader) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, signal in enumerate(header.signals):
        groups.setdefault(signal.file_name, []).append(index)
    for name, members in groups.items():
        fmts = {header.signals[i].fmt for i in members}
        offsets = {header.signals[i].byte_offset for i in members}
        if len(fmts) > 1 or len(offsets) > 1:
            raise ECGError(f"signals stored in {name} disagree on format or byte offset")
    return groups


def _flac_length(name: str, path: Path, n_signals: int, sig_len: int | None) -> int:
    """Frames in a FLAC signal file, which must carry one channel per signal and sig_len frames."""
    import soundfile  # a dependency of wfdb, which reads these formats with it

    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile's errors have no common useful base
        raise ECGError(f"{name} is not a readable FLAC signal file: {exc}") from exc
    if info.format != "FLAC" or info.channels != n_signals:
        raise ECGError(
            f"{name} is a {info.format} stream with {info.channels} channel(s); the header "
            f"describes {n_signals} FLAC-compressed signal(s)"
        )
    if sig_len is not None and info.frames != sig_len:
        raise ECGError(
            f"{name} holds {info.frames} samples per signal but the header says {sig_len}"
        )
    return int(info.frames)


def _check_sizes(header: WfdbHeader, files: Mapping[str, Path]) -> int:
    """Check every signal file holds exactly what the header says; return samples per signal."""
    lengths: dict[str, int] = {}
    for name, members in _groups(header).items():
        first = header.signals[members[0]]
        if first.fmt in _FLAC:
            lengths[name] = _flac_length(name, files[name], len(members), header.sig_len)
            continue
        size = files[name].stat().st_size
        payload = size - first.byte_offset
        if payload < 0:
            raise ECGError(
                f"{name} has {size} bytes, fewer than its {first.byte_offset}-byte offset"
            )
        if header.sig_len is not None:
            n = header.sig_len
        else:
            per_group, group_bytes = _PACKING[first.fmt]
            n = (payload * per_group // group_bytes) // len(members)
        lo, hi = _bytes_needed(first.fmt, n * len(members))
        described = f"{len(members)} signal(s) x {n} samples in format {first.fmt}" + (
            f" after a {first.byte_offset}-byte offset" if first.byte_offset else ""
        )
        if header.sig_len is None and not lo <= payload <= hi:
            raise ECGError(f"{name} has {size} bytes, not a whole number of frames of {described}")
        if payload < lo:
            raise ECGError(
                f"{name} is truncated: it has {size} bytes but the header describes "
                f"{first.byte_offset + lo} ({described})"
            )
        if payload > hi:
            raise ECGError(
                f"{name} has {size} bytes, more than the {first.byte_offset + hi} the header "
                f"describes ({described})"
            )
        lengths[name] = n
    if len(set(lengths.values())) > 1:
        raise ECGError(f"signal files hold different numbers of samples: {lengths}")
    n_samples = next(iter(lengths.values()))
    if n_samples == 0:
        raise ECGError("the record has zero samples")
    return n_samples


def _acquired_at(header: WfdbHeader) -> datetime | None:
    """Base date and time of the header; a time without a date says nothing about when."""
    if not header.base_date:
        return None
    text = f"{header.base_date} {header.base_time}"
    for pattern in ("%d/%m/%Y %H:%M:%S.%f", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"):
        try:
            return aware(datetime.strptime(text, pattern))
        except ValueError:
            continue
    raise ECGError(f"header base date/time {text!r} is not DD/MM/YYYY HH:MM:SS")


def _patient(comments: tuple[str, ...]) -> PatientInfo:
    """PTB-style ``age: 81`` / ``sex: female`` comments, or MIT-BIH's ``69 M ...`` line."""
    age = sex = ""
    for comment in comments:
        found = re.match(r"^(age|sex|gender)\s*:\s*(\S+)", comment, re.IGNORECASE)
        if found and found[1].lower() == "age":
            age = age or normalise_age(found[2])
        elif found:
            sex = sex or normalise_sex(found[2])
    if not (age or sex):
        for comment in comments:
            mit = re.match(r"^(\d{1,3}) ([MF])(?:\s|$)", comment)
            if mit:
                age, sex = normalise_age(mit[1]), mit[2]
                break
    return PatientInfo(age=age, sex=sex)


def _header_file(files: Mapping[str, Path]) -> str:
    headers = [name for name in files if name.lower().endswith(".hea")]
    if not headers:
        raise ECGError("a WFDB record needs a .hea header file; none was uploaded")
    if len(headers) > 1:
        raise ECGError(f"upload one WFDB record at a time; got several headers: {sorted(headers)}")
    return headers[0]


def _header_bytes(path: Path) -> bytes:
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf")


def _read_header(files: Mapping[str, Path], hea: str) -> WfdbHeader:
    path = files[hea]
    if path.stat().st_size > MAX_HEADER_BYTES:
        raise ECGError(f"{hea} is larger than {MAX_HEADER_BYTES} bytes; not a WFDB header")
    raw = _header_bytes(path)
    if b"\x00" in raw:
        raise ECGError(f"{hea} does not parse: it is binary, not a text header")
    return parse_header(raw.decode("latin-1"), hea)


def decode_wfdb(files: Mapping[str, Path]) -> DecodedECG:
    """Read one WFDB record from uploaded files (name -> path); keep the stored integers."""
    files = {plain_name(Path(name).name): Path(path) for name, path in files.items()}
    hea = _header_file(files)
    header = _read_header(files, hea)
    missing = sorted({s.file_name for s in header.signals} - set(files))
    if missing:
        raise ECGError(f"{hea} names signal file(s) that were not uploaded: {missing}")
    sig_len = _check_sizes(header, files)
    stem = hea[: -len(".hea")]
    with tempfile.TemporaryDirectory(prefix="wfdb-") as tmp:
        # the header as parsed (no BOM, a lower-case .hea), beside exactly the files it names
        (Path(tmp) / f"{stem}.hea").write_bytes(_header_bytes(files[hea]))
        for name in {s.file_name for s in header.signals}:
            shutil.copyfile(files[name], Path(tmp) / name)
        try:
            record = wfdb_lib.rdrecord(
                str(Path(tmp) / stem), pn_dir=None, physical=False, return_res=64
            )
        except Exception as exc:  # wfdb raises anything from ValueError to IndexError
            raise ECGError(f"{hea}: the WFDB library could not read the record: {exc}") from exc
    digital = record.d_signal
    if digital is None or digital.shape != (sig_len, header.n_sig):
        shape = None if digital is None else digital.shape
        raise ECGError(f"{hea}: decoded {shape} samples, expected ({sig_len}, {header.n_sig})")
    if (
        [str(f) for f in record.fmt] != [s.fmt for s in header.signals]
        or list(record.baseline) != [s.baseline for s in header.signals]
        or list(record.adc_gain) != [s.gain for s in header.signals]
        or float(record.fs) != header.fs
    ):
        raise ECGError(f"{hea}: the WFDB library reads this header differently; refusing it")

    channels: list[RawChannel] = []
    skipped: list[str] = []
    for index, signal in enumerate(header.signals):
        label = signal.description or f"signal {index + 1}"
        if not is_voltage(signal.units):
            skipped.append(f"{label} ({signal.units})")
            continue
        channels.append(
            RawChannel(
                source_name=label,
                lead=normalise_lead_name(label),
                digits=digital[:, index].astype("int64"),
                unit=signal.units,
                baseline=signal.baseline,
                gain=signal.gain,
                invalid=_INVALID[signal.fmt],
            )
        )
    if not channels:
        raise ECGError(f"{hea}: no ECG lead; every signal is in non-voltage units: {skipped}")
    ecg = ECG(
        leads=tuple(Lead(ch.lead, ch.to_mv()) for ch in channels),
        sampling_rate=header.fs,
        acquired_at=_acquired_at(header),
        patient=_patient(header.comments),
        source_format="wfdb",
    )
    details = {
        "record": header.record_name,
        "formats": ",".join(sorted({s.fmt for s in header.signals}, key=int)),
        "files": ",".join(sorted({s.file_name for s in header.signals})),
    }
    return DecodedECG(ecg=ecg, channels=tuple(channels), skipped=tuple(skipped), details=details)


def read_wfdb(files: Mapping[str, Path]) -> ECG:
    """Read one WFDB record from uploaded files (name -> path) into the hub's ECG."""
    return decode_wfdb(files).ecg


def read_wfdb_annotations(files: Mapping[str, Path]) -> dict[str, wfdb_lib.Annotation]:
    """Annotation files uploaded with a record (``100.atr`` ...), keyed by extension."""
    files = {plain_name(Path(name).name): Path(path) for name, path in files.items()}
    hea = _header_file(files)
    header = _read_header(files, hea)
    stem = hea[: -len(".hea")]
    signal_files = {s.file_name for s in header.signals}
    wanted = {
        name[len(stem) + 1 :]: name
        for name in files
        if name.startswith(stem + ".") and name != hea and name not in signal_files
    }
    result: dict[str, wfdb_lib.Annotation] = {}
    with tempfile.TemporaryDirectory(prefix="wfdb-ann-") as tmp:
        (Path(tmp) / f"{stem}.hea").write_bytes(_header_bytes(files[hea]))
        for extension, name in sorted(wanted.items()):
            shutil.copyfile(files[name], Path(tmp) / name)
            try:
                result[extension] = wfdb_lib.rdann(str(Path(tmp) / stem), extension, pn_dir=None)
            except Exception as exc:
                raise ECGError(f"{name} is not a readable WFDB annotation file: {exc}") from exc
    return result
