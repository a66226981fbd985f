"""GE MUSE XML (``<RestingECG>``, restecg.dtd; MAC carts' exports through MUSE) to :class:`ECG`,
through ecgdatakit's reader.

A MUSE file holds a ``Median`` waveform (one representative beat per lead) and a ``Rhythm``
waveform (the recording); the hub reads the Rhythm one. Each ``LeadData`` is Base64 of
little-endian signed integers (``LeadSampleSize`` bytes, normally 2) times
``LeadAmplitudeUnitsPerBit`` in ``LeadAmplitudeUnits``, with a CRC-32 of the bytes. MUSE stores
8 leads (I, II, V1-V6); III, aVR, aVL and aVF are computed from I and II here, exactly.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from ecg.formats.common import DecodedECG
from ecg.formats.vendor_xml import (
    complete_limb_leads,
    finish,
    local_name,
    raw_channel,
    read_root,
    run_parser,
)
from ecg.model import ECGError

WHAT = "GE MUSE XML"
ROOT = "RestingECG"
SOURCE_FORMAT = "ge-muse-xml"


def _text(element: Element | None, tag: str) -> str:
    child = None if element is None else element.find(tag)
    return "" if child is None or child.text is None else child.text.strip()


def _rhythm(root: Element) -> Element:
    """The Rhythm waveform, after checking its declared lead count against its LeadData."""
    waveforms = root.findall("Waveform")
    kinds = [_text(wf, "WaveformType") or "(no type)" for wf in waveforms]
    rhythm = next(
        (wf for wf, k in zip(waveforms, kinds, strict=True) if k.lower() == "rhythm"), None
    )
    if rhythm is None:
        found = ", ".join(kinds) or "none"
        raise ECGError(f"{WHAT} has no Rhythm waveform (waveforms found: {found})")
    declared, stored = _text(rhythm, "NumberofLeads"), len(rhythm.findall("LeadData"))
    if not stored:
        raise ECGError(f"{WHAT} Rhythm waveform holds no LeadData")
    if declared and (not declared.isdigit() or int(declared) != stored):
        raise ECGError(
            f"{WHAT} Rhythm waveform declares NumberofLeads {declared} but holds {stored} leads"
        )
    return rhythm


def decode_muse(path: str | Path) -> DecodedECG:
    """Read a GE MUSE XML file's Rhythm waveform and keep each lead's stored integers."""
    from ecgdatakit.parsing.parsers.ge_muse_xml import GEMuseXMLParser

    path = Path(path)
    root = read_root(path, WHAT)
    if local_name(root.tag) != ROOT:
        raise ECGError(f"XML root element is <{local_name(root.tag)}>, not GE MUSE <{ROOT}>")
    _rhythm(root)
    record, notes = run_parser(GEMuseXMLParser().parse, path, WHAT)
    if record.raw_metadata.get("checksum_valid") is False:
        damaged = [note for note in notes if "CRC32" in note]
        raise ECGError(
            f"{WHAT}: waveform bytes do not match their stored CRC-32, so the file was damaged "
            f"({'; '.join(damaged)})"
        )
    rates = {lead.sampling_rate for lead in record.leads}
    if len(rates) != 1:
        raise ECGError(f"{WHAT} Rhythm leads have different sampling rates: {sorted(rates)}")
    channels = [raw_channel(lead, WHAT) for lead in record.leads]
    stored = [ch.lead for ch in channels]
    channels, derived = complete_limb_leads(channels)
    details = {
        "waveform": "Rhythm",
        "stored_leads": ", ".join(stored),
        "median_beats": str(len(record.median_beats)),
        "muse_version": record.file_format.version or "",
    }
    return finish(
        record, channels, float(rates.pop()), derived, notes, details, SOURCE_FORMAT, WHAT
    )
