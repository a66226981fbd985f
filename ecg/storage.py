"""The normalised waveform as stored beside the original: a compressed ``.npz`` of float64
millivolts with its lead names and rate, so rendering and analysis never re-parse the upload."""

from __future__ import annotations

import io
import json
from datetime import datetime

import numpy as np

from ecg.model import ECG, ECGError, Lead, PatientInfo


def dumps(ecg: ECG) -> bytes:
    meta = {
        "sampling_rate": ecg.sampling_rate,
        "leads": list(ecg.lead_names),
        "acquired_at": ecg.acquired_at.isoformat() if ecg.acquired_at else None,
        "patient": vars(ecg.patient),
        "source_format": ecg.source_format,
        "units": ecg.units,
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        samples=ecg.matrix().astype(np.float64),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    return buffer.getvalue()


def loads(data: bytes) -> ECG:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            samples = npz["samples"]
            meta = json.loads(npz["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise ECGError(f"stored waveform is unreadable: {exc}") from exc
    acquired = meta.get("acquired_at")
    return ECG(
        leads=tuple(Lead(name, samples[i]) for i, name in enumerate(meta["leads"])),
        sampling_rate=float(meta["sampling_rate"]),
        acquired_at=datetime.fromisoformat(acquired) if acquired else None,
        patient=PatientInfo(**meta.get("patient", {})),
        source_format=meta.get("source_format", ""),
        units=meta.get("units", "mV"),
    )
