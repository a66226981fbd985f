"""QIDO-RS (PS3.18 10.6): search studies, series and instances, answered from the index alone.

The matching rules are those of PS3.4 C.2.2.2 as QIDO-RS uses them, shared with C-FIND
(``dicom.matching``); here are only QIDO-RS's parts: which attribute exists at which level,
values read from the query string, a value breaking the rules answered 400. Results are the
JSON model (PS3.18 F.2), built by pydicom, restricted to what the caller may see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from pydicom.datadict import dictionary_keyword, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute

from dicom import matching
from dicom.matching import MatchError
from telehub import audit
from telehub.access import visible_to
from telehub.api.common import principal, remote, run, services
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, Instance, Patient, Series, Study
from telehub.errors import Invalid, NotFound

routes = web.RouteTableDef()

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"
MAX_LIMIT = 1000
STUDY, SERIES, INSTANCE = 0, 1, 2
_LEVEL_NAMES = ("study", "series", "instance")

Row = dict[str, Any]
#: How one attribute's value is read from a result row (a mapping of model objects).
Getter = Callable[[Row], Any]


@dataclass(frozen=True)
class Attribute:
    """An attribute the index keeps: its level, VR, column (None: return only) and value."""

    tag: int
    vr: str
    level: int
    column: InstrumentedAttribute[Any] | None
    value: Getter


def _patient(field: str) -> Getter:
    return lambda row: getattr(row["patient"], field) if row["patient"] is not None else ""


ATTRIBUTES: dict[int, Attribute] = {
    a.tag: a
    for a in (
        Attribute(0x00080020, "DA", STUDY, Study.study_date, lambda r: r["study"].study_date),
        Attribute(0x00080030, "TM", STUDY, Study.study_time, lambda r: r["study"].study_time),
        Attribute(
            0x00080050, "SH", STUDY, Study.accession_number, lambda r: r["study"].accession_number
        ),
        Attribute(
            0x00080061,
            "CS",
            STUDY,
            Series.modality,  # matched through the study's series, see _condition
            lambda r: [m for m in r["study"].modalities.split("\\") if m],
        ),
        Attribute(0x00100010, "PN", STUDY, Patient.name, _patient("name")),
        Attribute(0x00100020, "LO", STUDY, Patient.patient_id, _patient("patient_id")),
        Attribute(0x00100021, "LO", STUDY, Patient.issuer, _patient("issuer")),
        Attribute(0x00100030, "DA", STUDY, Patient.birth_date, _patient("birth_date")),
        Attribute(0x00100040, "CS", STUDY, Patient.sex, _patient("sex")),
        Attribute(0x0020000D, "UI", STUDY, Study.study_uid, lambda r: r["study"].study_uid),
        Attribute(0x00081030, "LO", STUDY, Study.description, lambda r: r["study"].description),
        Attribute(0x00201206, "IS", STUDY, None, lambda r: r["series_count"]),
        Attribute(0x00201208, "IS", STUDY, None, lambda r: r["study"].instance_count),
        Attribute(0x00080060, "CS", SERIES, Series.modality, lambda r: r["series"].modality),
        Attribute(0x0020000E, "UI", SERIES, Series.series_uid, lambda r: r["series"].series_uid),
        Attribute(
            0x00200011, "IS", SERIES, Series.series_number, lambda r: r["series"].series_number
        ),
        Attribute(0x0008103E, "LO", SERIES, Series.description, lambda r: r["series"].description),
        Attribute(0x00180015, "CS", SERIES, Series.body_part, lambda r: r["series"].body_part),
        Attribute(0x00201209, "IS", SERIES, None, lambda r: r["series"].instance_count),
        Attribute(
            0x00080016,
            "UI",
            INSTANCE,
            Instance.sop_class_uid,
            lambda r: r["instance"].sop_class_uid,
        ),
        Attribute(0x00080018, "UI", INSTANCE, Instance.sop_uid, lambda r: r["instance"].sop_uid),
        Attribute(
            0x00200013,
            "IS",
            INSTANCE,
            Instance.instance_number,
            lambda r: r["instance"].instance_number,
        ),
        Attribute(
            0x00083002,
            "UI",
            INSTANCE,
            None,
            lambda r: r["instance"].transfer_syntax_uid,
        ),
    )
}
#: The UIDs every series/instance result carries, so a client can address what it found.
_KEYS = {STUDY: (0x0020000D,), SERIES: (0x0020000D, 0x0020000E), INSTANCE: (0x0020000D, 0x0020000E)}


@dataclass
class Query:
    """A parsed QIDO-RS request: conditions, what to return, paging, and what was ignored."""

    level: int
    conditions: list[ColumnElement[bool]]
    returned: set[int]
    limit: int
    offset: int
    ignored: list[str]
    text: dict[str, str]


# ----- parsing -------------------------------------------------------------------------------
def _tag(name: str) -> int:
    """A keyword (PatientName) or tag (00100010) as a tag; 400 for anything else."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        tag = int(name, 16)
        try:
            dictionary_keyword(tag)
        except KeyError:
            if not tag & 0x00010000:  # a private tag is a tag, just not one we index
                raise Invalid(f"unknown attribute {name}", "unknown_attribute") from None
        return tag
    tag = tag_for_keyword(name)
    if tag is None:
        raise Invalid(f"unknown attribute {name!r}", "unknown_attribute")
    return tag


#: How each indexed VR is matched (a UI value is a UID list, a PN a name...); others: as text.
_KINDS: dict[str, matching.Kind] = {
    "UI": "uid",
    "DA": "date",
    "TM": "time",
    "IS": "int",
    "PN": "pn",
}
_MODALITIES_IN_STUDY = 0x00080061


def _condition(attr: Attribute, value: str, name: str) -> ColumnElement[bool] | None:
    """One query parameter as a WHERE clause (None: universal), by the shared matching rules;
    a UID or modality list comes comma- or backslash-separated (PS3.18 8.3.4.1)."""
    if attr.tag == _MODALITIES_IN_STUDY:
        kind: matching.Kind = "modalities"
    else:
        kind = _KINDS.get(attr.vr, "text")
    values = re.split(r"[,\\]", value) if kind in ("uid", "modalities") else [value]
    try:
        return matching.condition(kind, attr.column, values, name)
    except MatchError as exc:
        raise Invalid(str(exc), "bad_parameter") from None


def _int(query: MultiMapping[str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise Invalid(f"{name} must be a non-negative integer", "bad_parameter")
    return int(raw)


def parse_query(query: MultiMapping[str], level: int) -> Query:
    """Turn the query string into conditions; 400 (Invalid) for what cannot be understood."""
    parsed = Query(level, [], set(), 0, 0, [], {})
    parsed.limit = min(_int(query, "limit", MAX_LIMIT), MAX_LIMIT)
    parsed.offset = _int(query, "offset", 0)
    for name, value in query.items():
        parsed.text[name] = value if name not in parsed.text else f"{parsed.text[name]},{value}"
        if name in ("limit", "offset", "fuzzymatching", "emptyvaluematching"):
            continue
        if name == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item == "all":
                    parsed.returned.update(t for t, a in ATTRIBUTES.items() if a.level <= level)
                elif item:
                    parsed.returned.add(_tag(item))  # one we do not keep is left out
            continue
        tag = _tag(name)
        attr = ATTRIBUTES.get(tag)
        if attr is None or attr.column is None or attr.level > level:
            parsed.ignored.append(name)
            continue
        if name in query and len(query.getall(name)) > 1:
            raise Invalid(f"{name} is given more than once", "bad_parameter")
        parsed.returned.add(tag)
        clause = _condition(attr, value, name)
        if clause is not None:  # None: universal matching, the attribute is only returned
            parsed.conditions.append(clause)
    return parsed


# ----- searching -----------------------------------------------------------------------------
def _returned(query: Query, path: dict[str, str]) -> list[Attribute]:
    """The level's attributes, those of each parent level the path does not fix (a search of
    all series shows their studies too), the keys, and what was matched on or asked for."""
    levels = {query.level}
    if "study" not in path:
        levels.add(STUDY)
    if query.level == INSTANCE and "series" not in path:
        levels.add(SERIES)
    tags = {t for t, a in ATTRIBUTES.items() if a.level in levels}
    tags |= set(_KEYS[query.level]) | query.returned
    if query.level != STUDY:
        tags.discard(0x00201206)  # counted for study results only
    return [ATTRIBUTES[t] for t in sorted(tags) if t in ATTRIBUTES]


def _url(base: str, row: Row, level: int) -> str:
    url = f"{base}/studies/{row['study'].study_uid}"
    if level >= SERIES:
        url += f"/series/{row['series'].series_uid}"
    if level == INSTANCE:
        url += f"/instances/{row['instance'].sop_uid}"
    return url


def _to_json(row: Row, attributes: list[Attribute], level: int, base: str) -> dict[str, Any]:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for attr in attributes:
        value = attr.value(row)
        ds.add_new(attr.tag, attr.vr, value if value not in ("", None, []) else None)
    ds.RetrieveURL = _url(base, row, level)
    return ds.to_json_dict()


def _statement(query: Query, principal: Principal, path: dict[str, str]) -> Any:
    entities: list[Any] = [Study, Patient]
    if query.level >= SERIES:
        entities.append(Series)
    if query.level == INSTANCE:
        entities.append(Instance)
    if query.level == STUDY:
        count = select(func.count(Series.id)).where(Series.study_id == Study.id)
        entities.append(count.scalar_subquery().label("series_count"))
    statement = select(*entities).select_from(Study).join(Case, Case.id == Study.case_id)
    statement = statement.outerjoin(Patient, Patient.id == Study.patient_id)
    if query.level >= SERIES:
        statement = statement.join(Series, Series.study_id == Study.id)
    if query.level == INSTANCE:
        statement = statement.join(Instance, Instance.series_id == Series.id)
    statement = statement.where(visible_to(principal), *query.conditions)
    if "study" in path:
        statement = statement.where(Study.study_uid == path["study"])
    if "series" in path:
        statement = statement.where(Series.series_uid == path["series"])
    order = {STUDY: (Study.id,), SERIES: (Series.id,), INSTANCE: (Instance.id,)}[query.level]
    return statement.order_by(*order).limit(query.limit).offset(query.offset)


def _check_path(db_session: Any, principal: Principal, path: dict[str, str]) -> None:
    """404 for a study (or series) in the path that is missing or not the caller's to see."""
    if "study" not in path:
        return
    statement = (
        select(Study.id)
        .join(Case, Case.id == Study.case_id)
        .where(Study.study_uid == path["study"], visible_to(principal))
    )
    if "series" in path:
        statement = statement.join(Series, Series.study_id == Study.id).where(
            Series.series_uid == path["series"]
        )
    if db_session.scalar(statement) is None:
        what = "series" if "series" in path else "study"
        raise NotFound(f"{what} {path.get('series') or path['study']} not found")


def search(
    db: Database,
    principal: Principal,
    query: Query,
    path: dict[str, str],
    base_url: str,
    remote_addr: str,
) -> list[dict[str, Any]]:
    """Run the search (visible studies only) and audit it; returns DICOM JSON objects."""
    attributes = _returned(query, path)
    with db.session() as session:
        _check_path(session, principal, path)
        rows: list[Row] = []
        for result in session.execute(_statement(query, principal, path)):
            mapping = result._mapping
            rows.append(
                {
                    "study": mapping[Study],
                    "patient": mapping[Patient],
                    "series": mapping[Series] if query.level >= SERIES else None,
                    "instance": mapping[Instance] if query.level == INSTANCE else None,
                    "series_count": mapping["series_count"] if query.level == STUDY else None,
                }
            )
        audit.record(
            session,
            principal.user_id,
            "search",
            _LEVEL_NAMES[query.level],
            path.get("series") or path.get("study", ""),
            remote=remote_addr,
            query=query.text,
            results=len(rows),
            study_uids=sorted({r["study"].study_uid for r in rows}),
        )
        return [_to_json(r, attributes, query.level, base_url) for r in rows]


# ----- HTTP ----------------------------------------------------------------------------------
def _describe(tags: Iterable[str]) -> str:
    return ", ".join(keyword_for_tag(_tag(t)) or t for t in tags)


async def _answer(request: web.Request, level: int) -> web.Response:
    path = dict(request.match_info)
    query = parse_query(request.query, level)
    base = f"{request.scheme}://{request.host}{PREFIX}"
    results = await run(
        request,
        search,
        services(request).db,
        principal(request),
        query,
        path,
        base,
        remote(request),
    )
    headers = {"Content-Type": DICOM_JSON}
    if query.ignored:
        headers["Warning"] = (
            f"299 {base}: The following attributes are not supported for matching "
            f"and were ignored: {_describe(query.ignored)}"
        )
    body = json.dumps(results, ensure_ascii=False).encode()
    return web.Response(body=body, status=200, headers=headers)


@routes.get(PREFIX + "/studies")
async def search_studies(request: web.Request) -> web.Response:
    return await _answer(request, STUDY)


@routes.get(PREFIX + "/series")
@routes.get(PREFIX + "/studies/{study}/series")
async def search_series(request: web.Request) -> web.Response:
    return await _answer(request, SERIES)


@routes.get(PREFIX + "/instances")
@routes.get(PREFIX + "/studies/{study}/instances")
@routes.get(PREFIX + "/studies/{study}/series/{series}/instances")
async def search_instances(request: web.Request) -> web.Response:
    return await _answer(request, INSTANCE)
