"""The one internal ECG representation every format reader produces and every consumer reads.

Samples are float64 arrays in millivolts, one per lead, all at one sampling rate and of one
length. Lead names are normalised to the standard spellings (I, II, III, aVR, aVL, aVF, V1-V6)
where the source names a standard lead; other leads (MLII, V5 of a Holter strip, Frank X/Y/Z)
keep a cleaned-up version of their own name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

STANDARD_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_ALIASES = {
    "i": "I",
    "ii": "II",
    "iii": "III",
    "avr": "aVR",
    "avl": "aVL",
    "avf": "aVF",
    "v1": "V1",
    "v2": "V2",
    "v3": "V3",
    "v4": "V4",
    "v5": "V5",
    "v6": "V6",
    "mlii": "MLII",
    "mli": "MLI",
    "mliii": "MLIII",
    "vx": "X",
    "vy": "Y",
    "vz": "Z",
}


def normalise_lead_name(raw: str) -> str:
    """'lead ii', 'II', 'MDC_ECG_LEAD_II', 'avr' -> the standard spelling; others cleaned."""
    text = raw.strip()
    key = re.sub(r"^(mdc_ecg_lead_|lead[\s_-]*)", "", text.lower()).replace(" ", "")
    return _ALIASES.get(key, text)


class ECGError(ValueError):
    """The input is not an ECG the hub can accept; the message says exactly why."""


@dataclass(frozen=True)
class Lead:
    name: str
    samples: np.ndarray  # float64, millivolts


@dataclass(frozen=True)
class PatientInfo:
    patient_id: str = ""
    name: str = ""
    sex: str = ""
    birth_date: str = ""  # YYYYMMDD
    age: str = ""


@dataclass(frozen=True)
class ECG:
    leads: tuple[Lead, ...]
    sampling_rate: float  # Hz
    acquired_at: datetime | None = None
    patient: PatientInfo = field(default_factory=PatientInfo)
    source_format: str = ""  # "wfdb", "dicom-waveform", "hl7-aecg", ...
    units: str = "mV"

    def __post_init__(self) -> None:
        if not self.leads:
            raise ECGError("the record has no leads")
        if not (1.0 <= self.sampling_rate <= 20_000.0):
            raise ECGError(f"sampling rate {self.sampling_rate} Hz is outside 1-20000 Hz")
        lengths = {len(lead.samples) for lead in self.leads}
        if len(lengths) != 1:
            raise ECGError(f"leads have different lengths: {sorted(lengths)}")
        if 0 in lengths:
            raise ECGError("the record has zero samples")
        names = [lead.name for lead in self.leads]
        if len(set(names)) != len(names):
            raise ECGError(f"duplicate lead names: {names}")

    @property
    def n_samples(self) -> int:
        return len(self.leads[0].samples)

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.n_samples / self.sampling_rate

    @property
    def lead_names(self) -> tuple[str, ...]:
        return tuple(lead.name for lead in self.leads)

    def lead(self, name: str) -> Lead | None:
        wanted = normalise_lead_name(name)
        return next((lead for lead in self.leads if lead.name == wanted), None)

    @property
    def is_12_lead(self) -> bool:
        return set(STANDARD_12) <= set(self.lead_names)

    def matrix(self) -> np.ndarray:
        """Samples as a (n_leads, n_samples) array."""
        return np.vstack([lead.samples for lead in self.leads])
