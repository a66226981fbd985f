"""Report templates: named sections per modality and for ECG, bilingual (zh-CN with English).

The defaults are inserted by migration 0010 (data, once); admins add and edit templates over
the API afterwards. A report written from a template keeps its sections ({key: text}) and the
text composed from them, so a later template edit never changes a signed report.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, CaseKind, ReportTemplate, Role
from telehub.errors import Conflict, Forbidden, Invalid, NotFound
from telehub.modalities import acquired

#: Case kinds a template can serve.
TEMPLATE_KINDS = (CaseKind.IMAGING.value, CaseKind.ECG.value)
_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
MAX_SECTIONS = 20
MAX_SECTION_CHARS = 20_000
#: Modalities that are documents or annotations, not images a reader is qualified for.


def _imaging(title: str) -> list[dict[str, str]]:
    return [
        {"key": "technique", "title": "检查方法 Technique", "text": title},
        {"key": "findings", "title": "检查所见 Findings", "text": ""},
        {"key": "impression", "title": "诊断意见 Impression", "text": ""},
        {"key": "recommendation", "title": "建议 Recommendation", "text": ""},
    ]


#: The defaults (code, name, kind, modality, sections); seeded by migration 0010.
DEFAULT_TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "code": "ct",
        "name": "CT 检查报告 CT report",
        "kind": "imaging",
        "modality": "CT",
        "sections": _imaging("CT 平扫/增强 CT, plain / contrast-enhanced"),
    },
    {
        "code": "mr",
        "name": "MR 检查报告 MR report",
        "kind": "imaging",
        "modality": "MR",
        "sections": _imaging("MR 平扫/增强 MR, plain / contrast-enhanced"),
    },
    {
        "code": "cr",
        "name": "X 线检查报告 Radiograph report (CR)",
        "kind": "imaging",
        "modality": "CR",
        "sections": _imaging("X 线摄影 Radiography"),
    },
    {
        "code": "dx",
        "name": "DR 检查报告 Radiograph report (DX)",
        "kind": "imaging",
        "modality": "DX",
        "sections": _imaging("数字 X 线摄影 Digital radiography"),
    },
    {
        "code": "us",
        "name": "超声检查报告 Ultrasound report",
        "kind": "imaging",
        "modality": "US",
        "sections": _imaging("超声 Ultrasound"),
    },
    {
        "code": "imaging",
        "name": "影像检查报告 Imaging report (any modality)",
        "kind": "imaging",
        "modality": None,
        "sections": _imaging(""),
    },
    {
        "code": "ecg",
        "name": "心电图报告 ECG report",
        "kind": "ecg",
        "modality": None,
        "sections": [
            {"key": "rhythm", "title": "心律 Rhythm", "text": "窦性心律 Sinus rhythm"},
            {"key": "rate", "title": "心率 Rate", "text": "次/分 bpm"},
            {"key": "intervals", "title": "间期 Intervals", "text": "PR ms, QRS ms, QT/QTc ms"},
            {"key": "axis", "title": "电轴 Axis", "text": "QRS 电轴 axis °"},
            {"key": "conclusion", "title": "心电图诊断 Conclusion", "text": ""},
        ],
    },
)


def describe(template: ReportTemplate) -> dict[str, Any]:
    return {
        "id": template.id,
        "code": template.code,
        "name": template.name,
        "kind": template.kind,
        "modality": template.modality,
        "language": template.language,
        "sections": template.sections,
        "active": template.active,
    }


def list_templates(
    db: Database, principal: Principal, kind: str | None, modality: str | None
) -> list[dict[str, Any]]:
    """Templates a reader may write from: for a modality, its own and the generic ones."""
    if principal.role not in (Role.READER.value, Role.ADMIN.value):
        raise Forbidden("only readers and administrators use report templates", "forbidden")
    if kind is not None and kind not in TEMPLATE_KINDS:
        raise Invalid(f"kind must be one of {', '.join(TEMPLATE_KINDS)}", "bad_parameter")
    with db.reader() as session:
        query = select(ReportTemplate).order_by(ReportTemplate.kind, ReportTemplate.code)
        if principal.role != Role.ADMIN.value:
            query = query.where(ReportTemplate.active.is_(True))
        if kind:
            query = query.where(ReportTemplate.kind == kind)
        if modality:
            query = query.where(
                or_(ReportTemplate.modality == modality.upper(), ReportTemplate.modality.is_(None))
            )
        return [describe(t) for t in session.scalars(query)]


def _require_admin(principal: Principal) -> None:
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only administrators edit report templates", "not_admin")


def _sections(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SECTIONS:
        raise Invalid(f"sections must be a list of 1 to {MAX_SECTIONS} items", "bad_template")
    out: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise Invalid("each section is an object with key and title", "bad_template")
        key, title, text = item.get("key"), item.get("title"), item.get("text", "")
        if not isinstance(key, str) or not _KEY.match(key):
            raise Invalid(f"section key {key!r} must match {_KEY.pattern}", "bad_template")
        if not isinstance(title, str) or not title.strip() or len(title) > 200:
            raise Invalid(f"section {key!r} needs a title of 1 to 200 characters", "bad_template")
        if not isinstance(text, str) or len(text) > MAX_SECTION_CHARS:
            raise Invalid(f"section {key!r} starting text is not a short string", "bad_template")
        out.append({"key": key, "title": title.strip(), "text": text})
    if len({s["key"] for s in out}) != len(out):
        raise Invalid("section keys must be unique", "bad_template")
    return out


def _apply(template: ReportTemplate, body: dict[str, Any], creating: bool) -> None:
    if "name" in body or creating:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise Invalid("name must be 1 to 200 characters", "bad_template")
        template.name = name.strip()
    if "kind" in body or creating:
        if body.get("kind") not in TEMPLATE_KINDS:
            raise Invalid(f"kind must be one of {', '.join(TEMPLATE_KINDS)}", "bad_template")
        template.kind = body["kind"]
    if "modality" in body:
        modality = body["modality"]
        valid = isinstance(modality, str) and _MODALITY.match(modality)
        if modality is not None and not valid:
            raise Invalid("modality must be a DICOM modality code such as CT", "bad_template")
        template.modality = modality
    if "language" in body:
        if not isinstance(body["language"], str) or not 2 <= len(body["language"]) <= 16:
            raise Invalid("language must be a language tag such as zh-CN", "bad_template")
        template.language = body["language"]
    if "sections" in body or creating:
        template.sections = _sections(body.get("sections"))
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise Invalid("active must be true or false", "bad_template")
        template.active = body["active"]


def create_template(db: Database, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    _require_admin(principal)
    code = body.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise Invalid(f"code must match {_CODE.pattern}", "bad_template")
    with db.session() as session:
        if session.scalar(select(ReportTemplate.id).where(ReportTemplate.code == code)):
            raise Conflict(f"a template with code {code!r} exists", "template_exists")
        template = ReportTemplate(code=code, language="zh-CN", active=True, modality=None)
        _apply(template, body, creating=True)
        session.add(template)
        session.flush()
        return describe(template)


def update_template(
    db: Database, principal: Principal, template_id: int, body: dict[str, Any]
) -> dict[str, Any]:
    _require_admin(principal)
    if "code" in body:
        raise Invalid("a template's code cannot change (reports refer to it)", "bad_template")
    with db.session() as session:
        template = session.get(ReportTemplate, template_id)
        if template is None:
            raise NotFound(f"report template {template_id} not found")
        _apply(template, body, creating=False)
        session.flush()
        return describe(template)


def template_for(session: Session, case: Case, code: str | None) -> ReportTemplate:
    """The named template, or the default for the case (its modality's, else the generic)."""
    if code:
        template = session.scalar(select(ReportTemplate).where(ReportTemplate.code == code))
        if template is None or not template.active:
            raise Invalid(f"no active report template {code!r}", "unknown_template")
        return template
    kind = CaseKind.ECG.value if case.kind == CaseKind.ECG.value else CaseKind.IMAGING.value
    candidates = list(
        session.scalars(
            select(ReportTemplate)
            .where(ReportTemplate.kind == kind, ReportTemplate.active.is_(True))
            .order_by(ReportTemplate.id)
        )
    )
    modalities = sorted(acquired(case))
    for template in candidates:
        if template.modality and template.modality in modalities:
            return template
    for template in candidates:
        if template.modality is None:
            return template
    raise Invalid(f"no active report template for {kind} cases; give the text", "no_template")


def compose(template: ReportTemplate, sections: Any) -> tuple[str, dict[str, str]]:
    """The report text from {key: text}, in the template's order, headed by section titles.

    Unknown keys are refused (a typo would silently drop text); empty sections are left out.
    """
    if not isinstance(sections, dict) or not sections:
        raise Invalid('"sections" must be an object {key: text}', "bad_sections")
    known = {s["key"]: s["title"] for s in template.sections}
    unknown = sorted(set(sections) - set(known))
    if unknown:
        raise Invalid(
            f"template {template.code!r} has no section {', '.join(unknown)}", "unknown_section"
        )
    kept: dict[str, str] = {}
    for key in known:
        value = sections.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Invalid(f"section {key!r} must be text", "bad_sections")
        if value.strip():
            kept[key] = value.strip()
    if not kept:
        raise Invalid("every section is empty", "empty_report")
    text = "\n\n".join(f"{known[key]}：\n{value}" for key, value in kept.items())
    return text, kept


def section_titles(session: Session, code: str) -> dict[str, str]:
    """{key: title} of a template, for showing a report's stored sections."""
    if not code:
        return {}
    template = session.scalar(select(ReportTemplate).where(ReportTemplate.code == code))
    return {s["key"]: s["title"] for s in template.sections} if template else {}
