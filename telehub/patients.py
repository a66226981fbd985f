"""Patient identity: (issuer, patient ID), the issuer defaulting to the sending facility."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from telehub.db.models import Facility, Patient


def patient_for(
    session: Session,
    facility_id: int,
    patient_id: str,
    issuer: str = "",
    name: str = "",
    birth_date: str = "",
    sex: str = "",
) -> Patient | None:
    """Find or create the patient; None when the source gave no patient ID."""
    if not patient_id:
        return None
    # Without an issuer, a patient ID is only unique within the facility that assigned it.
    if not issuer:
        issuer = session.scalar(select(Facility.code).where(Facility.id == facility_id)) or ""
    patient = session.scalar(
        select(Patient).where(Patient.issuer == issuer, Patient.patient_id == patient_id)
    )
    if patient is None:
        patient = Patient(
            issuer=issuer, patient_id=patient_id, name=name, birth_date=birth_date, sex=sex
        )
        session.add(patient)
        session.flush()
    return patient
