"""HL7 v3 annotated ECG (FDA aECG, namespace ``urn:hl7-org:v3``) to and from :class:`ECG`.

Written here rather than taken from PyPI: ``aecg`` needs Python 3.12, and ``ecgdatakit`` (a
64 MB wheel with bundled neural-network weights) rounds the sampling rate to whole hertz and
writes no aECG; the format itself is small. The reader takes the rhythm series' first sequence
set: a ``TIME_ABSOLUTE`` (GLIST_TS) or ``TIME_RELATIVE`` (GLIST_PQ) sequence whose ``increment``
gives the sampling interval, and one ``SLIST_PQ`` sequence per ``MDC_ECG_LEAD_*`` code with
``value = origin + scale x digit``. The writer stores each lead's integer digits with the lead's
own resolution as ``scale``, so reading back gives the stored integers exactly.
"""

from __future__ import annotations

import math
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np

from ecg.formats._xml import parse_xml
from ecg.formats.common import (
    MV_PER_UNIT,
    DecodedECG,
    RawChannel,
    check_sampling_rate,
    mv_factor,
    normalise_sex,
    parse_ts,
)
from ecg.model import ECG, ECGError, Lead, PatientInfo, normalise_lead_name

NS = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_AECG_BYTES = 200 * 1024 * 1024  # digits as text: ~6 bytes a sample
_SECONDS_PER = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "μs": 1e-6}
_LEAD_PREFIX = "MDC_ECG_LEAD_"
_SPECIAL_CODES = {"AVRneg": "-aVR", "AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _find(element: ET.Element | None, path: str) -> ET.Element | None:
    if element is None:
        return None
    return element.find("/".join(_q(part) for part in path.split("/")))


def _findall(element: ET.Element, path: str) -> list[ET.Element]:
    return element.findall("/".join(_q(part) for part in path.split("/")))


def _attr(element: ET.Element | None, name: str) -> str:
    return "" if element is None else element.get(name, "").strip()


def _lead_from_code(code: str) -> str:
    suffix = code[len(_LEAD_PREFIX) :]
    if suffix in _SPECIAL_CODES:
        return _SPECIAL_CODES[suffix]
    return normalise_lead_name(suffix)


def _code_for_lead(name: str) -> str:
    reverse = {lead: code for code, lead in _SPECIAL_CODES.items()}
    return _LEAD_PREFIX + reverse.get(name, re.sub(r"[^A-Za-z0-9]", "_", name).upper())


def _digits(text: str | None, lead: str) -> np.ndarray:
    tokens = (text or "").split()
    if not tokens:
        raise ECGError(f"aECG lead {lead} has no digits")
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for position, token in enumerate(tokens, 1):
            if not re.fullmatch(r"[-+]?\d{1,18}", token):
                raise ECGError(
                    f"aECG lead {lead}: digit {position} ({token[:20]!r}) is not an integer"
                ) from None
        raise


def _pq(element: ET.Element | None, what: str, default: float | None = None) -> tuple[float, str]:
    if element is None or not element.get("value"):
        if default is None:
            raise ECGError(f"aECG {what} is missing")
        return default, ""
    try:
        value = float(element.get("value", ""))
    except ValueError:
        raise ECGError(f"aECG {what} {element.get('value')!r} is not a number") from None
    if not math.isfinite(value):
        raise ECGError(f"aECG {what} {element.get('value')!r} is not finite")
    return value, element.get("unit", "").strip()


def _rhythm_series(root: ET.Element) -> ET.Element:
    series = _findall(root, "component/series")
    if not series:
        raise ECGError("aECG has no <component><series> holding waveforms")
    for candidate in series:
        if _attr(_find(candidate, "code"), "code").upper() == "RHYTHM":
            return candidate
    for candidate in series:
        if _attr(_find(candidate, "code"), "code").upper() != "REPRESENTATIVE_BEAT":
            return candidate
    return series[0]


def _sampling(sequence: ET.Element) -> tuple[float, datetime | None]:
    value = _find(sequence, "value")
    increment = _find(value, "increment")
    if increment is None or not increment.get("value"):
        raise ECGError("aECG time sequence has no <increment>, so the sampling rate is unknown")
    step, unit = _pq(increment, "time increment")
    unit = unit or "s"
    if unit not in _SECONDS_PER:
        raise ECGError(f"aECG time increment unit {unit!r} is not s, ms or us")
    if step <= 0:
        raise ECGError(f"aECG time increment {step:g} {unit} is not positive")
    rate = 1.0 / (step * _SECONDS_PER[unit])
    if abs(rate - round(rate)) <= 1e-9 * rate:
        rate = float(round(rate))  # 1 / 0.002777... written for 360 Hz
    head = _find(value, "head")
    code = _attr(_find(sequence, "code"), "code").upper()
    started = parse_ts(_attr(head, "value"), "aECG time head") if code == "TIME_ABSOLUTE" else None
    return rate, started


def _patient(root: ET.Element) -> PatientInfo:
    subject = root.find(f".//{_q('trialSubject')}")
    if subject is None:
        return PatientInfo()
    person = _find(subject, "subjectDemographicPerson")
    name_el = _find(person, "name")
    name = ""
    if name_el is not None:
        name = " ".join(part.strip() for part in name_el.itertext() if part.strip())
    ident = _find(subject, "id")
    return PatientInfo(
        patient_id=_attr(ident, "extension") or _attr(ident, "root"),
        name=name,
        sex=normalise_sex(_attr(_find(person, "administrativeGenderCode"), "code")),
        birth_date=_attr(_find(person, "birthTime"), "value")[:8],
    )


def decode_aecg(path: str | Path) -> DecodedECG:
    """Read an HL7 aECG file and keep each lead's digits, scale and origin."""
    path = Path(path)
    if path.stat().st_size > MAX_AECG_BYTES:
        raise ECGError(f"aECG file is larger than {MAX_AECG_BYTES // 2**20} MB")
    root = parse_xml(path.read_bytes(), "aECG file")
    if root.tag != _q("AnnotatedECG"):
        raise ECGError(
            f"XML root element is <{root.tag}>, not an HL7 aECG <AnnotatedECG> in namespace {NS}"
        )
    series = _rhythm_series(root)
    sequence_set = _find(series, "component/sequenceSet")
    if sequence_set is None:
        raise ECGError("aECG rhythm series has no <sequenceSet>")
    rate: float | None = None
    started: datetime | None = None
    channels: list[RawChannel] = []
    skipped: list[str] = []
    for sequence in _findall(sequence_set, "component/sequence"):
        code = _attr(_find(sequence, "code"), "code")
        if code.upper().startswith("TIME_"):
            if rate is None:
                rate, started = _sampling(sequence)
            continue
        if not code.startswith(_LEAD_PREFIX):
            skipped.append(code or "(no code)")
            continue
        lead = _lead_from_code(code)
        value = _find(sequence, "value")
        scale, scale_unit = _pq(_find(value, "scale"), f"lead {lead} scale")
        if scale == 0:
            raise ECGError(f"aECG lead {lead} has scale 0, so every sample would read as 0")
        origin, origin_unit = _pq(_find(value, "origin"), f"lead {lead} origin", default=0.0)
        if not scale_unit:
            raise ECGError(f"aECG lead {lead} scale has no unit, so its mV are unknown")
        unit = scale_unit
        mv_factor(unit, f"aECG lead {lead}")
        if origin and origin_unit and origin_unit != unit:
            origin = (
                origin * mv_factor(origin_unit, f"aECG lead {lead}") / MV_PER_UNIT[unit.lower()]
            )
        digits_el = _find(value, "digits")
        digits = _digits(None if digits_el is None else digits_el.text, lead)
        channels.append(
            RawChannel(
                source_name=code, lead=lead, digits=digits, unit=unit, scale=scale, offset=origin
            )
        )
    if rate is None:
        raise ECGError("aECG sequence set has no TIME_ABSOLUTE/TIME_RELATIVE sequence")
    if not channels:
        raise ECGError("aECG sequence set has no MDC_ECG_LEAD_* sequence")
    first = channels[0]
    for channel in channels[1:]:
        if len(channel.digits) != len(first.digits):
            raise ECGError(
                f"aECG lead {channel.lead} has {len(channel.digits)} samples but lead "
                f"{first.lead} has {len(first.digits)}"
            )
    rate = check_sampling_rate(rate, "aECG")
    if started is None:
        started = parse_ts(_attr(_find(root, "effectiveTime/low"), "value"), "aECG effectiveTime")
    ecg = ECG(
        leads=tuple(Lead(ch.lead, ch.to_mv()) for ch in channels),
        sampling_rate=rate,
        acquired_at=started,
        patient=_patient(root),
        source_format="hl7-aecg",
    )
    details = {
        "series": _attr(_find(series, "code"), "code"),
        "document": _attr(_find(root, "id"), "root"),
    }
    return DecodedECG(ecg=ecg, channels=tuple(channels), skipped=tuple(skipped), details=details)


def read_aecg(path: str | Path) -> ECG:
    """Read an HL7 aECG (FDA annotated ECG) XML file into the hub's ECG."""
    return decode_aecg(path).ecg


def _fits(samples_uv: np.ndarray, step: float) -> bool:
    digits = np.round(samples_uv / step)
    return bool(np.abs(digits * step - samples_uv).max() <= step * 1e-6)


def _resolution_uv(samples_uv: np.ndarray) -> float | None:
    """The step between a lead's sample values (its stored integer resolution), in uV."""
    steps = np.diff(np.unique(samples_uv))
    steps = steps[steps > 0]
    if not steps.size:
        return 1.0
    step = float(steps.min())
    # the rounded step first (0.49999999999 -> 0.5), else the step as measured
    return next((s for s in (float(f"{step:.6g}"), step) if _fits(samples_uv, s)), None)


def _ts(moment: datetime) -> str:
    text = moment.strftime("%Y%m%d%H%M%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    if moment.utcoffset() is not None:
        text += moment.strftime("%z")
    return text


def write_aecg(
    ecg: ECG, path: str | Path, *, resolution_uv: float | Mapping[str, float] | None = None
) -> None:
    """Write ``ecg`` as an HL7 aECG file whose integer digits reproduce its samples.

    ``resolution_uv`` is each lead's quantum (uV per digit); by default it is found from the
    samples. An ECGError if a lead is not a whole number of quanta (then pass it explicitly) or
    has missing (NaN) samples, which aECG cannot store.
    """
    ET.register_namespace("", NS)
    ET.register_namespace("xsi", XSI)

    def sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
        return ET.SubElement(parent, _q(tag), attrs)

    root = ET.Element(_q("AnnotatedECG"))
    sub(root, "id", root=str(uuid.uuid4()))
    sub(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12", codeSystemName="CPT-4")
    if ecg.acquired_at is not None:
        sub(sub(root, "effectiveTime"), "low", value=_ts(ecg.acquired_at))
    subject = sub(
        sub(
            sub(
                sub(sub(sub(root, "componentOf"), "timepointEvent"), "componentOf"),
                "subjectAssignment",
            ),
            "subject",
        ),
        "trialSubject",
    )
    sub(subject, "id", extension=ecg.patient.patient_id)
    person = sub(subject, "subjectDemographicPerson")
    sub(person, "name").text = ecg.patient.name
    if ecg.patient.sex:
        sub(
            person,
            "administrativeGenderCode",
            code=ecg.patient.sex,
            codeSystem="2.16.840.1.113883.5.1",
        )
    if ecg.patient.birth_date:
        sub(person, "birthTime", value=ecg.patient.birth_date)

    series = sub(sub(root, "component"), "series")
    sub(series, "code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    sequence_set = sub(sub(series, "component"), "sequenceSet")
    time_sequence = sub(sub(sequence_set, "component"), "sequence")
    if ecg.acquired_at is not None:
        sub(time_sequence, "code", code="TIME_ABSOLUTE", codeSystem="2.16.840.1.113883.5.4")
        value = sub(time_sequence, "value", **{f"{{{XSI}}}type": "GLIST_TS"})
        sub(value, "head", value=_ts(ecg.acquired_at))
    else:
        sub(time_sequence, "code", code="TIME_RELATIVE", codeSystem="2.16.840.1.113883.5.4")
        value = sub(time_sequence, "value", **{f"{{{XSI}}}type": "GLIST_PQ"})
        sub(value, "head", value="0", unit="s")
    sub(value, "increment", value=repr(1.0 / ecg.sampling_rate), unit="s")

    for lead in ecg.leads:
        samples_uv = np.asarray(lead.samples, dtype=np.float64) * 1000.0
        if np.isnan(samples_uv).any():
            raise ECGError(f"lead {lead.name} has missing (NaN) samples; aECG cannot store them")
        if isinstance(resolution_uv, Mapping):
            step = float(resolution_uv[lead.name])
        elif resolution_uv is not None:
            step = float(resolution_uv)
        else:
            step = _resolution_uv(samples_uv)
        if step is None or step <= 0 or not _fits(samples_uv, step):
            found = "one step" if step is None else f"{step:g} uV steps"
            raise ECGError(
                f"lead {lead.name}'s samples are not whole numbers of {found}, so aECG digits "
                "would lose precision; pass resolution_uv for it"
            )
        digits = np.round(samples_uv / step)
        sequence = sub(sub(sequence_set, "component"), "sequence")
        sub(sequence, "code", code=_code_for_lead(lead.name), codeSystem="2.16.840.1.113883.6.24")
        value = sub(sequence, "value", **{f"{{{XSI}}}type": "SLIST_PQ"})
        sub(value, "origin", value="0", unit="uV")
        sub(value, "scale", value=repr(step), unit="uV")
        sub(value, "digits").text = " ".join(map(str, digits.astype(np.int64).tolist()))
    ET.ElementTree(root).write(str(path), encoding="utf-8", xml_declaration=True)
