"""Exports of a report version as services: who may read it, the audit row, then rendering.

The access check and the audit row share one short transaction; rendering (a PDF, reading the
study's first instance for the SR) happens after it, outside any transaction.
"""

from __future__ import annotations

from typing import Any

from telehub import audit
from telehub.auth import Principal
from telehub.errors import NotFound
from telehub.exports import document, fhir, pdf, sr
from telehub.reports import load_version
from telehub.services import Services


def _document(
    services: Services, principal: Principal, case_id: int, version: int, fmt: str, remote: str
) -> document.ReportDocument:
    with services.db.session() as session:
        case, report = load_version(session, principal, case_id, version)
        audit.record(
            session,
            principal.user_id,
            "export",
            "report",
            case.id,
            remote=remote,
            version=version,
            format=fmt,
        )
        return document.build(session, case, report)


def export_pdf(
    services: Services, principal: Principal, case_id: int, version: int, remote: str
) -> bytes:
    return pdf.render(_document(services, principal, case_id, version, "pdf", remote))


def export_fhir(
    services: Services, principal: Principal, case_id: int, version: int, remote: str
) -> dict[str, Any]:
    doc = _document(services, principal, case_id, version, "fhir", remote)
    return fhir.diagnostic_report(doc, pdf.render(doc))


def export_sr(
    services: Services, principal: Principal, case_id: int, version: int, remote: str
) -> bytes:
    doc = _document(services, principal, case_id, version, "sr", remote)
    if not doc.studies:
        raise NotFound(f"case {case_id} has no DICOM study, so its report has no SR")
    return sr.render(doc, services.store)
