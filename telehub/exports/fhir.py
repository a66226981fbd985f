"""The report as a FHIR R4 DiagnosticReport (JSON), for hospital information systems.

References are logical (identifiers, not resource URLs): the hub is not a FHIR server, so the
patient, the reading facility and the reader are named by identifier and display text, and the
study by its Study Instance UID (``urn:dicom:uid``), which a FHIR ImagingStudy also carries.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from telehub.exports.document import ReportDocument

LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
#: A stable namespace for the report identifiers (uuid5 of case and version).
REPORT_NAMESPACE = uuid.UUID("6f1f3c1e-5a55-4d38-9f0e-7e1e4b0c0de5")
#: hub report status -> DiagnosticReport.status. A final report is never changed after
#: signing, only added to, so "amended"/"corrected" do not arise; an addendum is "appended".
STATUS = {"preliminary": "preliminary", "final": "final", "addendum": "appended"}


def _code(doc: ReportDocument) -> dict[str, Any]:
    if doc.case_kind == "ecg":
        return {
            "coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}],
            "text": "心电图 ECG",
        }
    return {
        "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
        "text": "影像诊断 Diagnostic imaging",
    }


def _category(doc: ReportDocument) -> list[dict[str, Any]]:
    code, display = ("EC", "Electrocardiac") if doc.case_kind == "ecg" else ("RAD", "Radiology")
    return [{"coding": [{"system": V2_0074, "code": code, "display": display}]}]


def _instant(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def _date(value: str) -> str | None:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return None


def report_identifier(case_id: int, version: int) -> str:
    return f"urn:uuid:{uuid.uuid5(REPORT_NAMESPACE, f'{case_id}/{version}')}"


def diagnostic_report(doc: ReportDocument, pdf: bytes | None = None) -> dict[str, Any]:
    """The DiagnosticReport of one version; ``pdf`` goes into presentedForm when given."""
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"case-{doc.case_id}-v{doc.version}",
        "identifier": [
            {"system": "urn:ietf:rfc:3986", "value": report_identifier(doc.case_id, doc.version)}
        ],
        "status": STATUS[doc.status],
        "category": _category(doc),
        "code": _code(doc),
        "issued": _instant(doc.created_at),
        "performer": [
            {
                "type": "Organization",
                "identifier": {"value": doc.reading_facility_code},
                "display": doc.reading_facility,
            }
        ],
        "resultsInterpreter": [
            {
                "type": "Practitioner",
                "identifier": {"value": doc.author.username},
                "display": doc.author.name,
            }
        ],
        "conclusion": doc.full_text,
    }
    if doc.patient_id:
        resource["subject"] = {
            "type": "Patient",
            "identifier": {
                "value": doc.patient_id,
                "assigner": {"display": doc.patient_issuer or doc.origin_facility},
            },
            "display": doc.patient_name or doc.patient_id,
        }
    effective = next((d for d in (_date(s.date) for s in doc.studies) if d), None)
    if effective:
        resource["effectiveDateTime"] = effective
    if doc.studies:
        resource["imagingStudy"] = [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{s.study_uid}"},
                "display": s.description or ", ".join(s.modalities),
            }
            for s in doc.studies
        ]
    if pdf is not None:
        resource["presentedForm"] = [
            {
                "contentType": "application/pdf",
                "language": "zh-CN",
                "data": base64.b64encode(pdf).decode("ascii"),
                "title": f"诊断报告 Report case {doc.case_id} v{doc.version}.pdf",
                "creation": _instant(doc.created_at),
            }
        ]
    return resource
