"""Reports: versioned, immutable rows; a final report closes the reading."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from telehub import audit, timeline
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Report, ReportStatus, Role
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

MAX_REPORT_CHARS = 100_000


def add_report(
    db: Database, principal: Principal, case_id: int, text: str, status: str, remote: str
) -> dict[str, Any]:
    if principal.role != Role.READER.value:
        raise Forbidden("only readers write reports", "not_a_reader")
    if status not in (ReportStatus.PRELIMINARY.value, ReportStatus.FINAL.value):
        raise Invalid("status must be 'preliminary' or 'final'", "invalid_status")
    if not isinstance(text, str) or not text.strip():
        raise Invalid("report text is empty", "empty_report")
    if len(text) > MAX_REPORT_CHARS:
        raise Invalid(f"report text is longer than {MAX_REPORT_CHARS} characters", "too_long")
    with db.session() as session:
        case = session.get(Case, case_id, with_for_update=not db.is_sqlite)
        if case is None or not (
            case.reader_id == principal.user_id or case.centre_id == principal.centre_id
        ):
            raise NotFound(f"case {case_id} not found")
        if case.status == CaseStatus.FINAL.value:
            raise Conflict("the case already has a final report", "already_final")
        if case.reader_id != principal.user_id:
            raise Conflict("claim the case before reporting on it", "not_claimed")
        version = (
            session.scalar(select(func.max(Report.version)).where(Report.case_id == case_id)) or 0
        ) + 1
        report = Report(
            case_id=case_id, version=version, status=status, text=text, author_id=principal.user_id
        )
        session.add(report)
        case.status = status  # ReportStatus values are also CaseStatus values
        kind = (
            timeline.Event.REPORT_FINAL
            if status == ReportStatus.FINAL.value
            else timeline.Event.REPORT_PRELIMINARY
        )
        timeline.record(session, case_id, kind, actor_id=principal.user_id, version=version)
        audit.record(
            session,
            principal.user_id,
            "write",
            "report",
            case_id,
            remote=remote,
            version=version,
            status=status,
        )
        session.flush()
        return {
            "case_id": case_id,
            "version": version,
            "status": status,
            "created_at": report.created_at.isoformat(),
        }
