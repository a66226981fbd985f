"""DICOM attribute matching (PS3.4 C.2.2.2, as PS3.18 8.3.4 uses it) as SQL WHERE clauses.

C-FIND (``dicom.qr_query``) and QIDO-RS (``dicom.web.qido``) match the same index by the same
rules, so the rules live here once: universal (empty or ``*`` alone), single value, wildcard
``*``/``?`` (escaped for LIKE), UID lists, DA/TM single values and ranges (validated), integers,
PatientName case-insensitively and per name group, and ModalitiesInStudy. A value that breaks a
rule raises :class:`MatchError`; each protocol turns it into its own error (a DIMSE failure
status, an HTTP 400), and keeps to itself how values arrive and how results are answered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, exists, or_
from sqlalchemy.orm import aliased

from telehub.db.models import Series, Study

#: How an attribute is matched: by UID list, text, person name, date, time, integer, or
#: ModalitiesInStudy (any series of the study).
Kind = Literal["uid", "text", "pn", "date", "time", "int", "modalities"]

#: The LIKE escape character: "!" is neither a wildcard nor DICOM's value separator "\".
ESCAPE = "!"
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_INT = re.compile(r"[+-]?[0-9]{1,12}")
_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")


class MatchError(ValueError):
    """A matching key's value breaks the matching rules; the message names key and value."""


def is_universal(value: str) -> bool:
    """Empty or only ``*``: matches every entity, empty values included (PS3.4 C.2.2.2.3)."""
    return value.strip("*") == ""


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """``*``/``?`` as LIKE's ``%``/``_``; the value's own ``%``, ``_`` and ``!`` are escaped."""
    escaped = re.sub(r"([!%_])", r"!\1", value)
    return escaped.replace("*", "%").replace("?", "_")


def like(column: Any, pattern: str, fold_case: bool = False) -> ColumnElement[bool]:
    """LIKE with :data:`ESCAPE`; ``fold_case`` is ILIKE (PostgreSQL's LIKE is case-sensitive)."""
    if fold_case:
        return column.ilike(pattern, escape=ESCAPE)
    return column.like(pattern, escape=ESCAPE)


def text(column: Any, value: str) -> ColumnElement[bool]:
    """Single value (an equality, so the index serves it) or wildcard matching, case kept."""
    if has_wildcard(value):
        return like(column, like_pattern(value))
    return column == value


def person_name(column: Any, value: str) -> ColumnElement[bool]:
    """Case-insensitive; a value without ``=`` may match any component group (alphabetic,
    ideographic, phonetic), so "王^芳" finds "Wang^Fang=王^芳"."""
    pattern = like_pattern(value)
    if "=" in value:
        return like(column, pattern, fold_case=True)
    groups = (pattern, pattern + "=%", "%=" + pattern, "%=" + pattern + "=%")
    return or_(*(like(column, p, fold_case=True) for p in groups))


def check_date(value: str, name: str) -> str:
    """A real calendar date YYYYMMDD (20240230 is refused, not matched as text)."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise MatchError(f"{name}: {value!r} is not a date YYYYMMDD") from None
    return value


def check_time(value: str, name: str) -> str:
    """HH[MM[SS[.F{1,6}]]] with hours <= 23, minutes <= 59, seconds <= 60 (a leap second)."""
    match = _TIME.fullmatch(value)
    limits = (23, 59, 60)
    if match is None or any(
        part is not None and int(part) > limit
        for part, limit in zip(match.groups()[:3], limits, strict=True)
    ):
        raise MatchError(f"{name}: {value!r} is not a time HHMMSS.FFFFFF")
    return value


def _time_low(value: str) -> str:
    """The first instant a time denotes, written out in full, to compare bounds by."""
    whole, _, fraction = value.partition(".")
    return whole.ljust(6, "0") + "." + fraction.ljust(6, "0")


def _time_high(value: str) -> str:
    """The last instant a time denotes: "1230" runs to 123059.999999. A bound with a fraction
    is exact, written out to six digits so a stored "123000.500000" sorts within "123000.5"."""
    whole, _, fraction = value.partition(".")
    if not fraction:
        return whole + "5959"[: 6 - len(whole)] + ".999999"
    return whole + "." + fraction.ljust(6, "0")


def _span(column: Any, low: str | None, high: str | None) -> ColumnElement[bool]:
    """low <= column <= high as text (DA and TM sort as they read); an open end skips empty."""
    clauses: list[ColumnElement[bool]] = [column != ""]
    if low:
        clauses.append(column >= low)
    if high:
        clauses.append(column <= high)
    return and_(*clauses)


def date_range(column: Any, value: str, name: str) -> ColumnElement[bool]:
    """DA single value or range ("A-B", "A-", "-B"), PS3.4 C.2.2.2.5; low after high is refused."""
    if "-" not in value:
        return column == check_date(value, name)
    low, high = _bounds(value, name)
    if low:
        check_date(low, name)
    if high:
        check_date(high, name)
    if low and high and low > high:
        raise MatchError(f"{name}: range {value!r} ends before it starts")
    return _span(column, low, high)


def time_range(column: Any, value: str, name: str) -> ColumnElement[bool]:
    """TM single value or range; a value or upper bound runs to the end of what it names
    ("10" is 10:00 to 10:59:59.999999), so a single value is the range from it to itself."""
    low, high = _bounds(value, name) if "-" in value else (value, value)
    if low:
        check_time(low, name)
    if high:
        check_time(high, name)
        high = _time_high(high)
    if low and high and _time_low(low) > high:
        raise MatchError(f"{name}: range {value!r} ends before it starts")
    return _span(column, low, high)


def _bounds(value: str, name: str) -> tuple[str, str]:
    if value.count("-") != 1 or value == "-":
        raise MatchError(f"{name}: {value!r} is not a range FROM-TO")
    low, high = value.split("-")
    return low, high


def uid_list(values: Iterable[str], name: str) -> list[str]:
    """UIDs as given (list of UID matching, PS3.4 C.2.2.2.2); anything else is refused, as a
    wildcard in a UID is not matching PS3.4 allows."""
    uids = list(values)
    for uid in uids:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise MatchError(f"{name}: {uid[:70]!r} is not a UID")
    return uids


def integer(value: str, name: str) -> int:
    """An IS value: optional sign and digits within 32 bits (not Python's "1_000")."""
    if not _INT.fullmatch(value) or not -(2**31) <= int(value) < 2**31:
        raise MatchError(f"{name}: {value!r} is not an integer")
    return int(value)


def modalities_in_study(values: Iterable[str]) -> ColumnElement[bool]:
    """Some series of the study has one of the modalities (each value may use wildcards).

    The series are an alias of their own, so at series or instance level the test is still
    about the study's series, not only the one being returned."""
    other = aliased(Series)
    wanted = [text(other.modality, v) for v in values]
    return exists().where(other.study_id == Study.id, or_(*wanted))


def condition(
    kind: Kind, column: Any, values: Iterable[str], name: str
) -> ColumnElement[bool] | None:
    """The WHERE clause for one matching key whose values are alternatives (None: universal).

    ``column`` is the attribute's SQL expression (ignored for ModalitiesInStudy, matched
    through the study's series); values are stripped, and empty ones dropped."""
    given = [v.strip() for v in values]
    given = [v for v in given if v]
    if not given or any(is_universal(v) for v in given):
        return None
    if kind == "uid":
        return column.in_(uid_list(given, name))
    if kind == "modalities":
        return modalities_in_study(given)
    return or_(*(_single(kind, column, v, name) for v in given))


def _single(kind: Kind, column: Any, value: str, name: str) -> ColumnElement[bool]:
    if kind == "text":
        return text(column, value)
    if kind == "pn":
        return person_name(column, value)
    if kind == "date":
        return date_range(column, value, name)
    if kind == "time":
        return time_range(column, value, name)
    if kind == "int":
        return column == integer(value, name)
    raise AssertionError(f"no single-value matching for {kind}")
