"""DICOM ECG waveforms (12-lead, General and Ambulatory ECG Waveform Storage) to :class:`ECG`.

The samples are decoded here rather than with pydicom's ``waveform_array``: that helper ignores
the sensitivity units (uV or mV), the padding value, truncated data and the byte order of the
transfer syntax. Per DICOM PS3.3 C.10.9.1.4 a channel's value is
``sample x Channel Sensitivity x Channel Sensitivity Correction Factor + Channel Baseline`` in
the units of the Channel Sensitivity Units Sequence; that is converted to millivolts.

The multiplex group read is the one with the most ECG-lead channels at a diagnostic sampling
rate, the first of equals, never a median/representative beat while a rhythm group exists.
Channels in that group that are not ECG leads (respiration, pacing) are skipped and listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ecg.formats.common import (
    MAX_SAMPLING_RATE,
    MIN_SAMPLING_RATE,
    DecodedECG,
    RawChannel,
    check_sampling_rate,
    is_voltage,
    normalise_age,
    normalise_sex,
    parse_ts,
)
from ecg.model import ECG, STANDARD_12, ECGError, Lead, PatientInfo, normalise_lead_name

ECG_WAVEFORM_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
}

# SCP-ECG (EN 1064) lead codes; the MDC_ECG_LEAD_* codes ("2:n") use the same numbers.
SCPECG_LEADS: dict[int, str] = {
    1: "I",
    2: "II",
    3: "V1",
    4: "V2",
    5: "V3",
    6: "V4",
    7: "V5",
    8: "V6",
    9: "V7",
    10: "V2R",
    11: "V3R",
    12: "V4R",
    13: "V5R",
    14: "V6R",
    15: "V7R",
    16: "X",
    17: "Y",
    18: "Z",
    19: "CC5",
    20: "CM5",
    21: "LA",
    22: "RA",
    23: "LL",
    61: "III",
    62: "aVR",
    63: "aVL",
    64: "aVF",
    65: "-aVR",
    66: "V8",
    67: "V9",
    68: "V8R",
    69: "V9R",
}
_KNOWN_NAMES = {*STANDARD_12, *SCPECG_LEADS.values(), "MLI", "MLII", "MLIII"}
_DTYPES = {(8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "i2", (16, "US"): "u2"}
_BEAT_GROUP = re.compile(r"median|representative|beat", re.IGNORECASE)


def _sop_class(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    if sop is None and getattr(ds, "file_meta", None) is not None:
        sop = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(sop or "")


def is_ecg_waveform(ds: Dataset) -> bool:
    """Whether a stored instance is an ECG waveform (by SOP class, so a header read suffices)."""
    return _sop_class(ds) in ECG_WAVEFORM_SOP_CLASSES


def _lead_name(channel: Dataset) -> str | None:
    """The lead a channel records, from its source code, its meaning, or its label."""
    source = channel.get("ChannelSourceSequence")
    item = source[0] if source else None
    if item is not None:
        scheme = str(item.get("CodingSchemeDesignator", "")).upper()
        value = str(item.get("CodeValue", "")).strip()
        pattern = {"SCPECG": r"5\.6\.3-9-(\d+)", "MDC": r"2:(\d+)"}.get(scheme)
        found = re.fullmatch(pattern, value) if pattern else None
        if found and int(found[1]) in SCPECG_LEADS:
            return SCPECG_LEADS[int(found[1])]
    for text in (
        str(item.get("CodeMeaning", "")) if item is not None else "",
        str(channel.get("ChannelLabel", "")),
    ):
        cleaned = re.sub(r"\s*\(.*?\)\s*", " ", text).strip()
        if not cleaned:
            continue
        name = normalise_lead_name(cleaned)
        if name in _KNOWN_NAMES:
            return name
        if re.match(r"lead\b", cleaned, re.IGNORECASE):
            return re.sub(r"^lead[\s_-]*", "", cleaned, flags=re.IGNORECASE) or None
    return None


def _channel_unit(channel: Dataset, label: str) -> str:
    units = channel.get("ChannelSensitivityUnitsSequence")
    if not units:
        raise ECGError(f"channel {label} has no Channel Sensitivity Units, so its mV are unknown")
    unit = str(units[0].get("CodeValue", "")).strip()
    if not is_voltage(unit):
        raise ECGError(f"channel {label}: sensitivity unit {unit!r} is not a voltage")
    return unit


def _rate(group: Dataset) -> float:
    try:
        return float(group.SamplingFrequency)
    except (AttributeError, TypeError, ValueError):
        return float("nan")


def _choose_group(groups: Sequence[Dataset]) -> int:
    scored: list[tuple[int, bool, int]] = []  # (ECG lead count, is a beat group, index)
    for index, group in enumerate(groups):
        channels = group.get("ChannelDefinitionSequence") or []
        leads = sum(1 for ch in channels if _lead_name(ch) is not None)
        if leads and MIN_SAMPLING_RATE <= _rate(group) <= MAX_SAMPLING_RATE:
            label = str(group.get("MultiplexGroupLabel", ""))
            scored.append((leads, bool(_BEAT_GROUP.search(label)), index))
    if not scored:
        rates = [f"{_rate(g):g} Hz" for g in groups]
        raise ECGError(
            "no multiplex group holds ECG leads at a diagnostic sampling rate "
            f"({MIN_SAMPLING_RATE:g}-{MAX_SAMPLING_RATE:g} Hz); groups are at {rates}"
        )
    if any(not beat for _, beat, _ in scored):
        scored = [entry for entry in scored if not entry[1]]
    best = max(leads for leads, _, _ in scored)
    return next(index for leads, _, index in scored if leads == best)


def _samples(ds: Dataset, group: Dataset, where: str) -> tuple[np.ndarray, int | None]:
    """The group's stored integers as (samples, channels), and its padding value if any."""
    try:
        bits = int(group.WaveformBitsAllocated)
        interpretation = str(group.WaveformSampleInterpretation)
        n_channels = int(group.NumberOfWaveformChannels)
        n_samples = int(group.NumberOfWaveformSamples)
        data = bytes(group.WaveformData)
    except AttributeError as exc:
        raise ECGError(f"{where} lacks a required waveform attribute: {exc}") from exc
    if (bits, interpretation) not in _DTYPES:
        raise ECGError(
            f"{where}: {bits}-bit {interpretation} samples are not supported "
            "(supported: 8-bit SB/UB, 16-bit SS/US)"
        )
    if n_samples == 0 or n_channels == 0:
        raise ECGError(f"{where} has zero samples")
    encoding = getattr(ds, "original_encoding", (None, True))
    little = encoding[1] is not False
    dtype = np.dtype(_DTYPES[(bits, interpretation)]).newbyteorder("<" if little else ">")
    expected = n_samples * n_channels * dtype.itemsize
    if not expected <= len(data) <= expected + 1:  # +1: OB padding to an even length
        raise ECGError(
            f"{where}: Waveform Data has {len(data)} bytes but {n_channels} channels x "
            f"{n_samples} samples x {bits} bits need {expected}"
        )
    matrix = np.frombuffer(data[:expected], dtype=dtype).reshape(n_samples, n_channels)
    padding = None
    raw_pad = group.get("WaveformPaddingValue")
    if raw_pad is not None and len(bytes(raw_pad)) >= dtype.itemsize:
        padding = int(np.frombuffer(bytes(raw_pad)[: dtype.itemsize], dtype=dtype)[0])
    return matrix.astype(np.int64), padding


def _acquired_at(ds: Dataset) -> datetime | None:
    zone = str(ds.get("TimezoneOffsetFromUTC", "") or "")
    text = str(ds.get("AcquisitionDateTime", "") or "")
    if not text and ds.get("AcquisitionDate"):
        text = f"{ds.AcquisitionDate}{ds.get('AcquisitionTime', '') or ''}"
    return parse_ts(text, "Acquisition Date Time", default_zone=zone)


def _patient(ds: Dataset) -> PatientInfo:
    return PatientInfo(
        patient_id=str(ds.get("PatientID", "") or ""),
        name=str(ds.get("PatientName", "") or ""),
        sex=normalise_sex(str(ds.get("PatientSex", "") or "")),
        birth_date=str(ds.get("PatientBirthDate", "") or ""),
        age=normalise_age(str(ds.get("PatientAge", "") or "")),
    )


def _dataset(path_or_dataset: str | Path | Dataset) -> Dataset:
    if isinstance(path_or_dataset, Dataset):
        return path_or_dataset
    try:
        return pydicom.dcmread(str(path_or_dataset))
    except InvalidDicomError as exc:
        raise ECGError(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # a damaged file fails anywhere in the parser
        raise ECGError(f"the DICOM file does not parse: {exc}") from exc


def decode_dicom_waveform(path_or_dataset: str | Path | Dataset) -> DecodedECG:
    """Read a DICOM ECG waveform (file or dataset) and keep the stored integers."""
    ds = _dataset(path_or_dataset)
    sop = _sop_class(ds)
    if sop not in ECG_WAVEFORM_SOP_CLASSES:
        name = pydicom.uid.UID(sop).name if sop else "none"
        raise ECGError(f"not an ECG waveform: SOP class is {name} ({sop or 'missing'})")
    groups = ds.get("WaveformSequence")
    if not groups:
        raise ECGError("the ECG waveform instance has no Waveform Sequence")
    index = _choose_group(groups)
    group = groups[index]
    label = str(group.get("MultiplexGroupLabel", "") or "")
    where = f"multiplex group {index + 1}" + (f" ({label})" if label else "")
    rate = check_sampling_rate(_rate(group), where)
    definitions = group.get("ChannelDefinitionSequence") or []
    matrix, padding = _samples(ds, group, where)
    if len(definitions) != matrix.shape[1]:
        raise ECGError(
            f"{where} declares {matrix.shape[1]} channels but defines {len(definitions)}"
        )
    channels: list[RawChannel] = []
    skipped: list[str] = []
    for number, channel in enumerate(definitions, 1):
        lead = _lead_name(channel)
        source = channel.get("ChannelSourceSequence")
        meaning = str(source[0].get("CodeMeaning", "")) if source else ""
        source_name = meaning or str(channel.get("ChannelLabel", "")) or f"channel {number}"
        if lead is None:
            skipped.append(source_name)
            continue
        if channel.get("ChannelSensitivity") in (None, ""):
            raise ECGError(f"channel {source_name} has no Channel Sensitivity; mV unknown")
        channels.append(
            RawChannel(
                source_name=source_name,
                lead=lead,
                digits=matrix[:, number - 1].copy(),
                unit=_channel_unit(channel, source_name),
                scale=float(channel.ChannelSensitivity)
                * float(channel.get("ChannelSensitivityCorrectionFactor", 1) or 1),
                offset=float(channel.get("ChannelBaseline", 0) or 0),
                invalid=padding,
            )
        )
    ecg = ECG(
        leads=tuple(Lead(ch.lead, ch.to_mv()) for ch in channels),
        sampling_rate=rate,
        acquired_at=_acquired_at(ds),
        patient=_patient(ds),
        source_format="dicom-waveform",
    )
    details: dict[str, str] = {
        "sop_class": ECG_WAVEFORM_SOP_CLASSES[sop],
        "multiplex_group": str(index),
        "multiplex_group_label": label,
        "groups": str(len(groups)),
    }
    return DecodedECG(ecg=ecg, channels=tuple(channels), skipped=tuple(skipped), details=details)


def read_dicom_waveform(path_or_dataset: str | Path | Dataset) -> ECG:
    """Read a DICOM ECG waveform (a Part 10 file path or a dataset) into the hub's ECG."""
    return decode_dicom_waveform(path_or_dataset).ecg


def waveform_groups(ds: Dataset) -> list[dict[str, Any]]:
    """A summary of every multiplex group (label, rate, channels, samples), for diagnostics."""
    return [
        {
            "label": str(g.get("MultiplexGroupLabel", "")),
            "sampling_rate": _rate(g),
            "channels": int(g.get("NumberOfWaveformChannels", 0) or 0),
            "samples": int(g.get("NumberOfWaveformSamples", 0) or 0),
            "leads": [_lead_name(ch) for ch in g.get("ChannelDefinitionSequence") or []],
        }
        for g in ds.get("WaveformSequence") or []
    ]
