"""Philips Sierra / PhilipsECG XML (PageWriter, TraceMaster, HeartStart exports) to
:class:`ECG`, through ecgdatakit's reader.

Document types SierraECG and PhilipsECG, versions 1.03 to 1.04.02; rhythm data Base64 or plain,
uncompressed or XLI-compressed. In XLI data the devices store III, aVR, aVL and aVF as residuals
against the values computed from I and II; the reader adds them back, so all twelve leads are
the device's own integers at the file's resolution (uV per count).
"""

from __future__ import annotations

from pathlib import Path

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

WHAT = "Philips XML"
ROOT = "restingecgdata"
NAMESPACE = "http://www3.medical.philips.com"
SOURCE_FORMAT = "philips-sierra-xml"


def decode_philips(path: str | Path) -> DecodedECG:
    """Read a Philips Sierra/PhilipsECG XML file and keep each lead's stored integers."""
    from ecgdatakit.parsing.parsers.sierra_xml import SierraXMLParser

    path = Path(path)
    root = read_root(path, WHAT)
    if local_name(root.tag) != ROOT:
        raise ECGError(f"XML root element is <{local_name(root.tag)}>, not Philips <{ROOT}>")
    record, notes = run_parser(SierraXMLParser().parse, path, WHAT)
    if not record.leads:
        raise ECGError(f"{WHAT} has no rhythm waveform (<parsedwaveforms>)")
    rates = {lead.sampling_rate for lead in record.leads}
    if len(rates) != 1:
        raise ECGError(f"{WHAT} leads have different sampling rates: {sorted(rates)}")
    channels = [raw_channel(lead, WHAT) for lead in record.leads]
    channels, derived = complete_limb_leads(channels)
    signal = record.recording.acquisition.signal
    compression = (signal.compression or "").upper()
    details = {
        "document": f"{record.raw_metadata.get('document_type', '')} "
        f"{record.file_format.version or ''}".strip(),
        "compression": compression or "none",
        "device": record.recording.device.model or "",
    }
    if compression == "XLI":
        details["limb_leads"] = "III, aVR, aVL, aVF rebuilt from the XLI residuals and I, II"
    return finish(
        record, channels, float(rates.pop()), derived, notes, details, SOURCE_FORMAT, WHAT
    )
