"""Reading centres' service hours: parsing and "is it open at this moment".

The format is one or more ``DAYS TIMES`` entries separated by ``;``::

    mon-fri 08:00-17:30; sat 08:00-12:00
    daily 00:00-24:00
    mon-sun 20:00-08:00              (overnight: from 20:00 until 08:00 the next morning)
    mon,wed,fri 08:00-12:00,14:00-17:00

DAYS is ``daily``, a day (``mon`` .. ``sun``), a range (``mon-fri``, ``fri-mon`` wraps) or a
comma list of those. TIMES is one or more ``HH:MM-HH:MM`` ranges in the centre's local wall-clock
time (``24:00`` only as an end); an end before its start runs past midnight. Empty text means
always open. Hand-written rather than an OSM ``opening_hours`` library: the grammar is tiny and
those libraries are unmaintained or speak another syntax.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SECONDS = 24 * 3600
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Span:
    """Open from ``start`` to ``end`` seconds after the local midnight that begins ``day``
    (0 = Monday); ``end`` beyond 24 h runs into the next day."""

    day: int
    start: int
    end: int


def validate(text: str) -> None:
    """Raise ValueError with a specific message when ``text`` is not valid service hours."""
    parse(text)


def is_open(text: str, timezone: str, at: datetime) -> bool:
    """Whether a centre with these hours is open at ``at`` (aware; naive is taken as UTC);
    empty: always. Hours are local wall-clock times of ``timezone``, so DST shifts them."""
    spans = parse(text)
    if not spans:
        return True
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(zone)
    weekday = local.weekday()
    second = local.hour * 3600 + local.minute * 60 + local.second
    for span in spans:
        if span.day == weekday and span.start <= second < span.end:
            return True
        if (span.day + 1) % 7 == weekday and second + _DAY_SECONDS < span.end:
            return True  # the overnight tail of yesterday's span
    return False


@functools.lru_cache(maxsize=256)
def parse(text: str) -> tuple[Span, ...]:
    """The spans ``text`` describes; raises ValueError naming the bad part."""
    spans: list[Span] = []
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        days_text, _, times_text = entry.partition(" ")
        times_text = times_text.replace(" ", "")
        if not times_text:
            raise ValueError(f'"{entry}" needs days and times, e.g. "mon-fri 08:00-17:30"')
        days = _days(days_text.lower(), entry)
        for part in times_text.split(","):
            start, end = _range(part, entry)
            spans.extend(Span(day, start, end) for day in days)
    return tuple(spans)


def _days(text: str, entry: str) -> list[int]:
    if text == "daily":
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ValueError(
                f'unknown days "{part}" in "{entry}" (use mon..sun, a range like mon-fri, or daily)'
            )
        a = DAYS.index(first)
        b = DAYS.index(last) if dash else a
        days.extend((a + i) % 7 for i in range((b - a) % 7 + 1))
    return sorted(set(days))


def _range(text: str, entry: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    if not dash:
        raise ValueError(f'"{text}" in "{entry}" is not a time range like 08:00-17:30')
    start, end = _time(first, entry), _time(last, entry)
    if start == _DAY_SECONDS:
        raise ValueError(f'"{text}" in "{entry}": 24:00 can only end a range')
    if start == end:
        raise ValueError(f'"{text}" in "{entry}" is empty (start equals end)')
    if end < start:
        end += _DAY_SECONDS  # overnight
    return start, end


def _time(text: str, entry: str) -> int:
    match = _TIME.match(text)
    if not match:
        raise ValueError(f'"{text}" in "{entry}" is not a time (HH:MM)')
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f'"{text}" in "{entry}" is not a time of day (00:00 to 24:00)')
    return hours * 3600 + minutes * 60
