"""Reports: preliminary, final and addendum versions, each an immutable row; co-signatures.

A report is written by the reader who holds the case. A final one needs a reader who may sign
and is qualified for the case; it closes the reading (case FINAL, lease cleared), goes back to
the origin clinic at once (timeline REPORT_FINAL then DELIVERED) and is stored with the study
as a DICOM SR by a Celery task. After the final only addenda follow; nothing already written
ever changes (a new version is a new row, and an UPDATE of a reports row is refused).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from telehub import audit, leases, outbox, report_templates, timeline
from telehub.access import visible_to
from telehub.assignment import is_qualified, required_qualifications
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseStatus,
    Facility,
    Report,
    ReportCosignature,
    ReportStatus,
    Role,
    Tier,
    User,
)
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

MAX_REPORT_CHARS = 100_000
MAX_COMMENT_CHARS = 2_000
STORE_SR_TASK = "telehub.store_report_sr"
SIGNED = (ReportStatus.FINAL.value, ReportStatus.ADDENDUM.value)


@event.listens_for(Report, "before_update")
def _refuse_update(_mapper: Any, _connection: Any, target: Report) -> None:
    """Every version is kept as written: a change is a new version, never an UPDATE."""
    raise RuntimeError(f"report {target.case_id}/v{target.version} is immutable")


# ----- rules ---------------------------------------------------------------------------------
def _load_case(session: Session, principal: Principal, case_id: int, lock: bool) -> Case:
    query = (
        select(Case)
        .where(Case.id == case_id, visible_to(principal))
        .options(selectinload(Case.studies), selectinload(Case.reports))
    )
    if lock and session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update(of=Case)
    case = session.scalar(query)
    if case is None:
        raise NotFound(f"case {case_id} not found")  # missing or not the caller's: same answer
    return case


def _body_text(
    session: Session, case: Case, text: Any, sections: Any, template: Any
) -> tuple[str, str, dict[str, str] | None]:
    """(text, template code, sections) from what the reader sent."""
    if template is not None and not isinstance(template, str):
        raise Invalid('"template" must be a template code', "bad_report")
    if sections is not None:
        if text is not None:
            raise Invalid('give "text" or "sections", not both', "text_or_sections")
        chosen = report_templates.template_for(session, case, template)
        composed, kept = report_templates.compose(chosen, sections)
        if len(composed) > MAX_REPORT_CHARS:
            raise Invalid(f"report is longer than {MAX_REPORT_CHARS} characters", "too_long")
        return composed, chosen.code, kept
    if not isinstance(text, str) or not text.strip():
        raise Invalid('the report needs "text" or "sections"', "empty_report")
    if len(text) > MAX_REPORT_CHARS:
        raise Invalid(f"report text is longer than {MAX_REPORT_CHARS} characters", "too_long")
    if template:
        report_templates.template_for(session, case, template)  # must exist
    return text.strip(), template or "", None


# ----- writing -------------------------------------------------------------------------------
def write_report(
    db: Database,
    settings: Settings,
    principal: Principal,
    case_id: int,
    status: Any,
    remote: str,
    text: Any = None,
    sections: Any = None,
    template: Any = None,
) -> dict[str, Any]:
    """Add a preliminary, final or addendum version; returns it."""
    if principal.role != Role.READER.value:
        raise Forbidden("only readers write reports", "not_a_reader")
    if not isinstance(status, str) or status not in {s.value for s in ReportStatus}:
        raise Invalid("status must be preliminary, final or addendum", "invalid_status")
    with db.session() as session:
        case = _load_case(session, principal, case_id, lock=True)
        user = session.get_one(User, principal.user_id)
        final = next((r for r in case.reports if r.status == ReportStatus.FINAL.value), None)
        if status == ReportStatus.ADDENDUM.value:
            if final is None:
                raise Conflict("an addendum follows a final report; there is none", "not_final")
            _may_add_addendum(user, case, final)
        else:
            if final is not None:
                raise Conflict(
                    f"case {case_id} has a final report; write an addendum", "already_final"
                )
            leases.require_holder(settings, case, user.id)  # 409 and renews the lease
            if status == ReportStatus.FINAL.value and not (
                user.may_sign_final and is_qualified(user, case)
            ):
                raise Forbidden(_why_not_qualified(user, case), "not_qualified")
        body, code, kept = _body_text(session, case, text, sections, template)
        version = max((r.version for r in case.reports), default=0) + 1
        report = Report(
            case_id=case.id,
            version=version,
            status=status,
            text=body,
            template=code,
            sections=kept,
            author_id=user.id,
        )
        session.add(report)
        session.flush()
        _after_write(session, case, report, user.id)
        audit.record(session, user.id, "write", "report", case.id, remote=remote, version=version)
        return describe(report, user)


def _may_add_addendum(user: User, case: Case, final: Report) -> None:
    if user.id == final.author_id:
        return
    if user.centre_id != case.centre_id or not user.may_sign_final or not is_qualified(user, case):
        raise Forbidden(
            "an addendum is written by the signer or a qualified reader of the case's centre",
            "not_qualified",
        )


def _why_not_qualified(user: User, case: Case) -> str:
    if not user.may_sign_final:
        return f"{user.username} writes preliminary reports only; a final needs a signing reader"
    have = {q.casefold() for q in user.qualifications}
    missing = {n for n in required_qualifications(case) if n.casefold() not in have}
    return f"{user.username} is not qualified for {', '.join(sorted(missing))}"


def _after_write(session: Session, case: Case, report: Report, user_id: int) -> None:
    """The case's state and timeline after a new version."""
    detail = {"version": report.version, "template": report.template}
    if report.status == ReportStatus.PRELIMINARY.value:
        case.status = CaseStatus.PRELIMINARY.value  # the lease was renewed by require_holder
        timeline.record(
            session, case.id, timeline.Event.REPORT_PRELIMINARY, actor_id=user_id, **detail
        )
        return
    if report.status == ReportStatus.FINAL.value:
        case.status = CaseStatus.FINAL.value
        case.lease_expires_at = None
        timeline.record(session, case.id, timeline.Event.REPORT_FINAL, actor_id=user_id, **detail)
        # Visible to the origin clinic from this commit on (its case detail shows it).
        timeline.record(
            session,
            case.id,
            timeline.Event.DELIVERED,
            actor_id=user_id,
            version=report.version,
            origin_facility_id=case.origin_facility_id,
        )
    else:
        timeline.record(
            session, case.id, timeline.Event.REPORT_ADDENDUM, actor_id=user_id, **detail
        )
    if case.studies:  # an uploaded ECG has no DICOM study to store an SR in
        outbox.enqueue(session, STORE_SR_TASK, case_id=case.id, version=report.version)


# ----- co-signature --------------------------------------------------------------------------
def cosign(
    db: Database,
    principal: Principal,
    case_id: int,
    version: int,
    remote: str,
    comment: Any = None,
) -> dict[str, Any]:
    """A tertiary reader countersigns a signed version; the version itself does not change."""
    if principal.role != Role.READER.value:
        raise Forbidden("only readers co-sign reports", "not_a_reader")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise Invalid(
            f"comment must be text of at most {MAX_COMMENT_CHARS} characters", "bad_comment"
        )
    with db.session() as session:
        case = _load_case(session, principal, case_id, lock=False)
        report = next((r for r in case.reports if r.version == version), None)
        if report is None:
            raise NotFound(f"case {case_id} has no report version {version}")
        if report.status not in SIGNED:
            raise Conflict("only a final report or an addendum is co-signed", "not_signed")
        tier = session.scalar(select(Facility.tier).where(Facility.id == principal.facility_id))
        if tier != Tier.TERTIARY.value:
            raise Forbidden("co-signature is for readers of a tertiary hospital", "not_tertiary")
        if report.author_id == principal.user_id:
            raise Forbidden("a reader does not co-sign their own report", "own_report")
        if any(c.user_id == principal.user_id for c in report.cosignatures):
            raise Conflict(f"you already co-signed version {version}", "already_cosigned")
        signature = ReportCosignature(
            report_id=report.id, user_id=principal.user_id, comment=(comment or "").strip()
        )
        session.add(signature)
        try:
            session.flush()
        except IntegrityError as exc:  # a concurrent second click
            raise Conflict(f"you already co-signed version {version}", "already_cosigned") from exc
        timeline.record(
            session,
            case.id,
            timeline.Event.REPORT_COSIGNED,
            actor_id=principal.user_id,
            version=version,
        )
        audit.record(
            session, principal.user_id, "cosign", "report", case.id, remote=remote, version=version
        )
        return _describe_cosignature(signature)


# ----- reading -------------------------------------------------------------------------------
def _visible_versions(case: Case, principal: Principal) -> list[Report]:
    """A clinic sees signed versions only; readers and admins see every version."""
    if principal.role == Role.CLINIC.value:
        return [r for r in case.reports if r.status in SIGNED]
    return list(case.reports)


def describe_all(case: Case, principal: Principal) -> list[dict[str, Any]]:
    """The versions of a loaded case the caller may see (for the case detail)."""
    return [describe(r) for r in _visible_versions(case, principal)]


def list_reports(
    db: Database, principal: Principal, case_id: int, remote: str
) -> list[dict[str, Any]]:
    with db.session() as session:
        case = _load_case(session, principal, case_id, lock=False)
        audit.record(session, principal.user_id, "read", "report", case.id, remote=remote)
        return describe_all(case, principal)


def get_report(
    db: Database, principal: Principal, case_id: int, version: int, remote: str
) -> dict[str, Any]:
    with db.session() as session:
        case, report = load_version(session, principal, case_id, version)
        audit.record(
            session, principal.user_id, "read", "report", case.id, remote=remote, version=version
        )
        return describe(report)


def load_version(
    session: Session, principal: Principal, case_id: int, version: int
) -> tuple[Case, Report]:
    """The case and one of its versions as the caller may see them, else 404."""
    case = _load_case(session, principal, case_id, lock=False)
    report = next((r for r in _visible_versions(case, principal) if r.version == version), None)
    if report is None:
        raise NotFound(f"case {case_id} has no report version {version}")
    return case, report


def _person(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "name": user.display_name}


def _describe_cosignature(signature: ReportCosignature) -> dict[str, Any]:
    return {
        "user": _person(signature.user),
        "comment": signature.comment,
        "at": signature.at.isoformat(),
    }


def describe(report: Report, author: User | None = None) -> dict[str, Any]:
    base = f"/api/v1/cases/{report.case_id}/reports/{report.version}"
    return {
        "case_id": report.case_id,
        "version": report.version,
        "status": report.status,
        "addendum": report.status == ReportStatus.ADDENDUM.value,
        "text": report.text,
        "template": report.template or None,
        "sections": report.sections,
        "author": _person(author or report.author),
        "created_at": report.created_at.isoformat(),
        "cosignatures": [_describe_cosignature(c) for c in report.cosignatures],
        "links": {"pdf": base + ".pdf", "fhir": base + "/fhir", "sr": base + "/sr"},
    }
