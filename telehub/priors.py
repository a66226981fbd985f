"""Priors: the patient's other cases, with their studies and final reports, from anywhere in the
consortium (mutual recognition of results, 检查结果互认): a study read once need not be repeated,
and the reader compares with it.

Whoever may see a case sees its patient's priors, wherever they were sent from or read; that is
the point of mutual recognition. Matching follows ``settings.patient_match``: "issuer" finds the
same patient row (issuer + patient ID, the issuer defaulting to the sending facility), "id" the
same patient ID under any issuer (a consortium-wide identifier such as the resident ID card).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from telehub import audit
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, Patient, Report, ReportStatus
from telehub.errors import NotFound
from telehub.modalities import NON_IMAGE

MATCHES = ("issuer", "id")


def _date(study_date: str) -> str:
    """DICOM DA (YYYYMMDD) as ISO; anything else as given."""
    if len(study_date) == 8 and study_date.isdigit():
        return f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    return study_date


def _final_report(reports: list[Report]) -> dict[str, Any] | None:
    finals = [r for r in reports if r.status == ReportStatus.FINAL.value]
    if not finals:
        return None
    final = finals[-1]
    addenda = [
        {"version": r.version, "text": r.text, "created_at": r.created_at.isoformat()}
        for r in reports
        if r.status == ReportStatus.ADDENDUM.value and r.version > final.version
    ]
    return {
        "version": final.version,
        "text": final.text,
        "signed_at": final.created_at.isoformat(),
        "author": final.author.display_name or final.author.username,
        "addenda": addenda,
    }


def describe(case: Case) -> dict[str, Any]:
    studies = [
        {
            "study_instance_uid": s.study_uid,
            "study_date": _date(s.study_date),
            "description": s.description,
            "modalities": [m for m in s.modalities.split("\\") if m],
            "instance_count": s.instance_count,
        }
        for s in case.studies
    ]
    dates = sorted(s["study_date"] for s in studies if s["study_date"])
    # What was examined: the report stored back as a DICOM SR is not a modality of the exam.
    modalities = sorted({m for s in studies for m in s["modalities"] if m not in NON_IMAGE})
    if not modalities and case.ecgs:
        modalities = ["ECG"]
    return {
        "case_id": case.id,
        "kind": case.kind,
        "status": case.status,
        "date": dates[0] if dates else case.arrived_at.date().isoformat(),
        "arrived_at": case.arrived_at.isoformat(),
        "facility": {
            "id": case.origin.id,
            "code": case.origin.code,
            "name": case.origin.name,
            "tier": case.origin.tier,
        },
        "read_at": (
            {"id": case.centre.id, "code": case.centre.code, "name": case.centre.name}
            if case.centre
            else None
        ),
        "patient": {"patient_id": case.patient.patient_id, "issuer": case.patient.issuer}
        if case.patient
        else None,
        "modalities": modalities,
        "study_instance_uids": [s["study_instance_uid"] for s in studies],
        "studies": studies,
        "ecgs": [
            {"id": e.id, "acquired_at": e.acquired_at.isoformat() if e.acquired_at else None}
            for e in case.ecgs
        ],
        "final_report": _final_report(case.reports),
    }


def priors(
    db: Database, principal: Principal, case_id: int, match: str, remote: str, limit: int = 100
) -> dict[str, Any]:
    """The case's patient's other cases, newest first (404 if the caller may not see the case)."""
    if match not in MATCHES:
        raise ValueError(f"patient_match must be one of {MATCHES}")
    with db.session() as session:
        case = session.scalar(select(Case).where(Case.id == case_id, visible_to(principal)))
        if case is None:
            raise NotFound(f"case {case_id} not found")
        found: list[Case] = []
        patient = case.patient
        if patient is not None:
            if match == "issuer":
                same = Case.patient_id == patient.id
            else:
                same = Case.patient_id.in_(
                    select(Patient.id).where(Patient.patient_id == patient.patient_id)
                )
            found = list(
                session.scalars(
                    select(Case)
                    .where(same, Case.id != case.id)
                    .order_by(Case.arrived_at.desc(), Case.id.desc())
                    .limit(limit)
                    .options(
                        selectinload(Case.studies),
                        selectinload(Case.ecgs),
                        selectinload(Case.reports).selectinload(Report.author),
                        selectinload(Case.origin),
                        selectinload(Case.centre),
                        selectinload(Case.patient),
                    )
                )
            )
        audit.record(
            session,
            principal.user_id,
            "read",
            "priors",
            case.id,
            remote,
            match=match,
            prior_case_ids=[c.id for c in found],
        )
        return {
            "case_id": case.id,
            "match": match,
            "patient": {"patient_id": patient.patient_id, "issuer": patient.issuer}
            if patient
            else None,
            "priors": [describe(c) for c in found],
        }
