"""What the two vendor XML readers (Philips Sierra, GE MUSE) share: a safe first parse, running
an ``ecgdatakit`` parser with its errors and warnings turned into :class:`ECGError`, converting
its leads to :class:`RawChannel` without losing a digit, and completing the limb leads.

``ecgdatakit`` (Apache-2.0) does the format work: Philips XLI decompression (LZW plus
second-order deltas, with III/aVR/aVL/aVF stored as residuals) and GE MUSE's per-lead Base64
little-endian integers with their own amplitude units. Its leads keep the stored counts with
``physical = counts x resolution + offset``, which is exactly a :class:`RawChannel`.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecg.formats.common import (
    DecodedECG,
    RawChannel,
    aware,
    check_sampling_rate,
    mv_factor,
    normalise_age,
    normalise_sex,
)
from ecg.model import ECG, STANDARD_12, ECGError, Lead, PatientInfo, normalise_lead_name

# A 10 s 12-lead is about 100-400 kB of vendor XML; a long rhythm strip a few MB.
MAX_VENDOR_XML_BYTES = 50 * 1024 * 1024

DERIVED_FORMULAE = "III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2"


def read_root(path: Path, what: str) -> ET.Element:
    """The document's root element, namespaces stripped from its tag.

    Vendor exports carry a DOCTYPE (MUSE: ``<!DOCTYPE RestingECG SYSTEM "restecg.dtd">``), so
    unlike aECG a DTD is allowed; entity declarations and external references are not
    (defusedxml's defaults), so neither entity expansion nor XXE can happen.
    """
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if path.stat().st_size > MAX_VENDOR_XML_BYTES:
        raise ECGError(f"{what} file is larger than {MAX_VENDOR_XML_BYTES // 2**20} MB")
    data = path.read_bytes()
    try:
        root = fromstring(data)
    except ET.ParseError as exc:
        raise ECGError(f"{what} file is not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        raise ECGError(f"{what} file: refused unsafe XML ({exc})") from exc
    return root


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def run_parser(parse: Callable[[Path], Any], path: Path, what: str) -> tuple[Any, list[str]]:
    """Run an ecgdatakit parser; its errors become ECGError, its warnings are returned."""
    from ecgdatakit.exceptions import ECGDataKitError, MissingElementError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record = parse(path)
        except MissingElementError as exc:
            raise ECGError(f"{what}: required element <{exc}> is missing") from exc
        except (ECGDataKitError, ET.ParseError, ValueError, KeyError, IndexError) as exc:
            raise ECGError(f"{what}: {exc}".replace(str(path), path.name)) from exc
    return record, [str(w.message).replace(str(path), path.name) for w in caught]


def raw_channel(lead: Any, what: str) -> RawChannel:
    """One ecgdatakit lead as the integers the file stored plus their calibration."""
    name = normalise_lead_name(str(lead.label))
    if not lead.resolution_unit:
        raise ECGError(f"{what} lead {name} has no amplitude unit, so its millivolts are unknown")
    mv_factor(lead.resolution_unit, f"{what} lead {name}")
    counts = np.asarray(lead.samples, dtype=np.float64)
    digits = counts.astype(np.int64)
    if not np.array_equal(digits, counts):
        raise ECGError(f"{what} lead {name}: stored samples are not whole numbers")
    return RawChannel(
        source_name=str(lead.label),
        lead=name,
        digits=digits,
        unit=lead.resolution_unit,
        scale=float(lead.resolution),
        offset=float(lead.offset),
    )


def complete_limb_leads(channels: list[RawChannel]) -> tuple[list[RawChannel], list[str]]:
    """Add III, aVR, aVL, aVF from I and II where the file left them out (as MUSE does).

    Einthoven and Goldberger in stored integers: III's digits are II - I at the same scale; the
    augmented leads' digits are -(I + II), 2I - II and 2II - I at half the scale, so every
    derived sample is exact, not rounded. Only when I and II share one calibration.
    """
    by_name = {ch.lead: ch for ch in channels}
    lead_i, lead_ii = by_name.get("I"), by_name.get("II")
    missing = [name for name in ("III", "aVR", "aVL", "aVF") if name not in by_name]
    if lead_i is None or lead_ii is None or not missing:
        return channels, []
    same = (lead_i.unit, lead_i.scale, lead_i.offset, lead_i.baseline, lead_i.gain) == (
        lead_ii.unit,
        lead_ii.scale,
        lead_ii.offset,
        lead_ii.baseline,
        lead_ii.gain,
    )
    if not same or lead_i.offset or lead_i.baseline or len(lead_i.digits) != len(lead_ii.digits):
        return channels, []
    i, ii = lead_i.digits, lead_ii.digits
    formulae = {
        "III": (ii - i, 1.0, "II - I"),
        "aVR": (-(i + ii), 0.5, "-(I + II)/2"),
        "aVL": (2 * i - ii, 0.5, "I - II/2"),
        "aVF": (2 * ii - i, 0.5, "II - I/2"),
    }
    derived = [
        RawChannel(
            source_name=f"derived: {formulae[name][2]}",
            lead=name,
            digits=formulae[name][0],
            unit=lead_i.unit,
            scale=lead_i.scale * formulae[name][1],
            gain=lead_i.gain,
        )
        for name in missing
    ]
    return channels + derived, missing


def standard_order(channels: Iterable[RawChannel]) -> list[RawChannel]:
    """I, II, III, aVR, aVL, aVF, V1-V6 first, any other lead after them in file order."""
    rank = {name: index for index, name in enumerate(STANDARD_12)}
    indexed = list(enumerate(channels))
    indexed.sort(key=lambda pair: (rank.get(pair[1].lead, len(rank)), pair[0]))
    return [channel for _, channel in indexed]


def patient(info: Any) -> PatientInfo:
    """ecgdatakit's patient as the hub's: DICOM-style 'Last^First', M/F/O, YYYYMMDD, '050Y'."""
    last, first = (info.last_name or "").strip(), (info.first_name or "").strip()
    birth: datetime | None = info.birth_date
    return PatientInfo(
        patient_id=(info.patient_id or "").strip(),
        name=f"{last}^{first}" if first else last,
        sex=normalise_sex(info.sex or ""),
        birth_date=birth.strftime("%Y%m%d") if birth else "",
        age=normalise_age("" if info.age is None else str(info.age)),
    )


def finish(
    record: Any,
    channels: list[RawChannel],
    rate: float,
    derived: list[str],
    notes: list[str],
    details: dict[str, str],
    source_format: str,
    what: str,
) -> DecodedECG:
    """The ECG of an ecgdatakit record: leads in standard order, the derived leads and the
    reader's warnings noted in the details."""
    if derived:
        details["derived_leads"] = f"{', '.join(derived)} computed ({DERIVED_FORMULAE})"
    if notes:
        details["reader_warnings"] = "; ".join(notes)
    return build(
        standard_order(channels),
        rate,
        record.recording.date,
        patient(record.patient),
        source_format,
        what,
        details,
    )


def build(
    channels: list[RawChannel],
    rate: float,
    acquired: datetime | None,
    patient_info: PatientInfo,
    source_format: str,
    what: str,
    details: dict[str, str],
) -> DecodedECG:
    if not channels:
        raise ECGError(f"{what} holds no ECG lead")
    rate = check_sampling_rate(rate, what)
    first = channels[0]
    for channel in channels[1:]:
        if len(channel.digits) != len(first.digits):
            raise ECGError(
                f"{what} lead {channel.lead} has {len(channel.digits)} samples but lead "
                f"{first.lead} has {len(first.digits)}"
            )
    ecg = ECG(
        leads=tuple(Lead(ch.lead, ch.to_mv()) for ch in channels),
        sampling_rate=rate,
        acquired_at=aware(acquired),
        patient=patient_info,
        source_format=source_format,
    )
    return DecodedECG(ecg=ecg, channels=tuple(channels), details=details)
