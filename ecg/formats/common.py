"""What every format reader shares: the stored-integer record that proves a conversion is
lossless, the limits a diagnostic ECG must meet, and small parsing helpers.

Every reader computes its millivolt samples *from* a :class:`RawChannel` (``to_mv``), so the
integers and calibration kept beside the :class:`~ecg.model.ECG` reproduce its samples bit for
bit, and a test or an auditor can check the arithmetic against the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ecg.model import ECG, ECGError

# A diagnostic or ambulatory ECG is sampled at 50 Hz at the very least (older Holter: 128 Hz)
# and at 20 kHz at most (pacemaker-spike detection); anything outside is a broken header.
MIN_SAMPLING_RATE = 50.0
MAX_SAMPLING_RATE = 20_000.0

# Physical units a lead may be stored in, and the factor that takes them to millivolts.
MV_PER_UNIT: dict[str, float] = {
    "mv": 1.0,
    "millivolt": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,  # the micro sign, as files write it
    "μv": 1e-3,  # and the Greek mu
    "microvolt": 1e-3,
    "nv": 1e-6,
    "nanovolt": 1e-6,
    "v": 1e3,
    "volt": 1e3,
}


class UnrecognisedFormatError(ECGError):
    """The upload is none of the formats the hub reads."""


class UnsupportedFormatError(ECGError):
    """The format is recognised, but this variant of it (codec, vendor XML) is not read."""


class UploadTooLargeError(ECGError):
    """The upload, or an archive once unpacked, exceeds the hub's size limits."""


class UnsafeArchiveError(ECGError):
    """A zip archive tries to escape its folder, hides links, or is a decompression bomb."""


@dataclass(frozen=True)
class RawChannel:
    """One lead as stored in the file: its integers and the calibration that makes them mV.

    ``physical = (digits - baseline) * scale / gain + offset`` in ``unit``, then
    ``mV = physical * MV_PER_UNIT[unit]``. Each format sets only the terms it has, so the
    arithmetic is the file format's own (WFDB divides by its gain; DICOM and aECG multiply by
    their sensitivity or scale and add their baseline or origin). ``invalid`` marks the stored
    value that means "no sample" (WFDB's invalid value, DICOM's padding); it becomes NaN.
    """

    source_name: str
    lead: str
    digits: np.ndarray  # int64, the integers exactly as stored
    unit: str
    baseline: float = 0.0
    scale: float = 1.0
    gain: float = 1.0
    offset: float = 0.0
    invalid: int | None = None

    def to_mv(self) -> np.ndarray:
        factor = mv_factor(self.unit, self.source_name)
        values = (self.digits - self.baseline) * self.scale / self.gain + self.offset
        values = np.asarray(values, dtype=np.float64) * factor
        if self.invalid is not None:
            values[self.digits == self.invalid] = np.nan
        return values


@dataclass(frozen=True)
class DecodedECG:
    """A reader's full result: the ECG plus the stored integers it was computed from."""

    ecg: ECG
    channels: tuple[RawChannel, ...]  # one per lead of ``ecg``, same order
    skipped: tuple[str, ...] = ()  # channels in the file that are not ECG leads
    details: Mapping[str, str] = field(default_factory=dict)  # format-specific facts


def mv_factor(unit: str, what: str) -> float:
    """Millivolts per ``unit``; an ECGError for a unit that is not a voltage."""
    key = unit.strip().lower()
    if key not in MV_PER_UNIT:
        raise ECGError(f"{what}: unit {unit!r} is not a voltage (expected mV, uV or V)")
    return MV_PER_UNIT[key]


def is_voltage(unit: str) -> bool:
    return unit.strip().lower() in MV_PER_UNIT


def check_sampling_rate(rate: float, what: str) -> float:
    """Reject rates no diagnostic ECG has (see MIN_/MAX_SAMPLING_RATE) before decoding."""
    if not math.isfinite(rate) or not (MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE):
        raise ECGError(
            f"{what}: sampling rate {rate:g} Hz is outside the "
            f"{MIN_SAMPLING_RATE:g}-{MAX_SAMPLING_RATE:g} Hz a diagnostic ECG uses"
        )
    return float(rate)


def aware(moment: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC: no format here says otherwise, and the hub stores
    aware UTC datetimes only."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


_HL7_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6})\d*)?([+-]\d{4})?$"
)


def parse_ts(text: str, what: str, default_zone: str = "") -> datetime | None:
    """HL7 TS and DICOM DT: ``YYYY[MM[DD[HH[MM[SS[.ffffff]]]]]][+-ZZZZ]``; blank is None.

    ``default_zone`` (``+0100``, e.g. DICOM's Timezone Offset From UTC) applies when the value
    carries no offset of its own; with neither, the time is taken as UTC (see ``aware``)."""
    text = text.strip()
    if not text:
        return None
    match = _HL7_TS.match(text)
    if not match:
        raise ECGError(f"{what}: {text!r} is not a timestamp (YYYYMMDDHHMMSS[.f][+ZZZZ])")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    zone = zone or default_zone.strip()
    if zone and not re.fullmatch(r"[+-]\d{4}", zone):
        raise ECGError(f"{what}: time zone offset {zone!r} is not +HHMM or -HHMM")
    tz = None
    if zone:
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise ECGError(f"{what}: {text!r} is not a valid date and time ({exc})") from exc
    return aware(moment)


def normalise_sex(raw: str) -> str:
    """DICOM's M/F/O from 'M', 'female', 'Male', HL7 'F', ...; unknown gives ''."""
    key = raw.strip().lower()
    if key in ("m", "male", "man"):
        return "M"
    if key in ("f", "female", "woman"):
        return "F"
    if key in ("o", "other"):
        return "O"
    return ""


def normalise_age(raw: str) -> str:
    """Ages as DICOM AS ('081Y'); a bare number is years; 'n/a', '?' and the like give ''."""
    text = raw.strip().upper()
    if re.fullmatch(r"\d{1,3}", text):
        return f"{int(text):03d}Y"
    return text if re.fullmatch(r"\d{3}[DWMY]", text) else ""


def total_size(files: Mapping[str, Path]) -> int:
    return sum(Path(path).stat().st_size for path in files.values())


def plain_name(name: str) -> str:
    """An uploaded or referenced file name that is safe to create in a private folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ECGError(f"file name {name!r} is not a plain file name")
    return name
