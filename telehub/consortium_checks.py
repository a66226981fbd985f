"""The checks on a whole consortium (the database with a definition merged over it): every
reference resolves, grids are trees led by higher tiers, centres, links, readers and routing
rules fit together. Pure functions over the definition's terms (codes, not ids)."""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any

from telehub.consortium_format import DICOM_MODALITIES, ECG_MODALITY, TIER_RANK
from telehub.db.models import CaseKind, Role, Service, Tier


@dataclass(frozen=True)
class Problem:
    section: str
    key: Any
    text: str
    #: Where to point instead of the entry (the grid that set a facility's lead).
    where: str | None = field(default=None, compare=False)


Entries = dict[str, dict[Any, dict[str, Any]]]
Say = Callable[..., None]


def check(
    entries: Entries,
    touched: Set[tuple[str, Any]] = frozenset(),
    parent_where: dict[str, str] | None = None,
) -> list[Problem]:
    """Every problem of a whole consortium. Entries the definition touched are looked at last,
    so a clash between an old and a new entry is blamed on the new one. A field that is None
    where a value is required failed its own check (already reported) and is skipped here."""
    problems: list[Problem] = []
    parent_where = parent_where or {}

    def ordered(section: str) -> list[tuple[Any, dict[str, Any]]]:
        return sorted(entries[section].items(), key=lambda kv: (section, kv[0]) in touched)

    def say(section: str, key: Any, text: str, where: str | None = None) -> None:
        problems.append(Problem(section, key, text, where))

    _facilities(entries, ordered("facilities"), parent_where, say)
    problems += _cycles(entries["facilities"], parent_where)
    _centres(entries, ordered("centres"), say)
    _links(entries, ordered("links"), say)
    _users(entries, ordered("users"), say)
    _rules(entries, ordered("rules"), say)
    return problems


def _facilities(
    entries: Entries,
    items: list[tuple[Any, dict[str, Any]]],
    parent_where: dict[str, str],
    say: Say,
) -> None:
    facilities = entries["facilities"]
    aet_owner: dict[str, str] = {}
    for code, f in items:
        if f["ae_title"]:
            owner = aet_owner.setdefault(f["ae_title"], code)
            if owner != code:
                say(
                    "facilities",
                    code,
                    f'AE title "{f["ae_title"]}" is also used by facility "{owner}"',
                )
        lead, where = f["parent"], parent_where.get(code)
        if lead is None:
            continue
        if lead == code:
            say("facilities", code, f'facility "{code}" leads itself', where)
        elif lead not in facilities:
            say("facilities", code, f'lead "{lead}" of "{code}" is not defined', where)
        elif f["tier"] and facilities[lead]["tier"] and _rank(facilities[lead]) <= _rank(f):
            say(
                "facilities",
                code,
                f'lead "{lead}" ({facilities[lead]["tier"]}) must be of a higher tier than '
                f'"{code}" ({f["tier"]})',
                where,
            )


def _rank(facility: dict[str, Any]) -> int:
    return TIER_RANK[Tier(facility["tier"])]


def _centres(entries: Entries, items: list[tuple[Any, dict[str, Any]]], say: Say) -> None:
    for code, c in items:
        if c["facility"] and c["facility"] not in entries["facilities"]:
            say("centres", code, f'facility "{c["facility"]}" is not defined')
        imaging = [m for m in c["modalities"] if m != ECG_MODALITY]
        if c["service"] == Service.ECG and imaging:
            say("centres", code, f"an ECG centre reads no imaging modality ({', '.join(imaging)})")
        if c["service"] == Service.IMAGING and ECG_MODALITY in c["modalities"]:
            say("centres", code, "ECG is read by an ECG centre, not an imaging centre")


def _links(entries: Entries, items: list[tuple[Any, dict[str, Any]]], say: Say) -> None:
    for key, link in items:
        if link["origin"] not in entries["facilities"]:
            say("links", key, f'facility "{link["origin"]}" is not defined')
        centre = entries["centres"].get(link["centre"])
        if centre is None:
            say("links", key, f'centre "{link["centre"]}" is not defined')
        elif link["modality"] and not reads(centre, link["modality"]):
            say("links", key, f'centre "{link["centre"]}" does not read {link["modality"]}')


def _users(entries: Entries, items: list[tuple[Any, dict[str, Any]]], say: Say) -> None:
    for name, u in items:
        if u["facility"] and u["facility"] not in entries["facilities"]:
            say("users", name, f'facility "{u["facility"]}" is not defined')
        centre = entries["centres"].get(u["centre"]) if u["centre"] else None
        if u["centre"] and centre is None:
            say("users", name, f'centre "{u["centre"]}" is not defined')
        if u["role"] is None:
            continue
        if u["role"] == Role.READER and not u["centre"]:
            say("users", name, "a reader needs a centre (the worklist they read from)")
        if u["role"] != Role.READER and u["centre"]:
            say("users", name, f"only readers work at a centre (role is {u['role']})")
        if u["role"] != Role.READER and u["qualifications"]:
            say("users", name, f"only readers have qualifications (role is {u['role']})")
        for q in u["qualifications"] if centre is not None else ():
            why = _qualification_problem(q, u["centre"], centre)
            if why:
                say("users", name, why)


def _rules(entries: Entries, items: list[tuple[Any, dict[str, Any]]], say: Say) -> None:
    for name, r in items:
        for origin in r["origins"]:
            if origin not in entries["facilities"]:
                say("rules", name, f'origin facility "{origin}" is not defined')
        centre = entries["centres"].get(r["centre"])
        if centre is None:
            if r["centre"]:
                say("rules", name, f'centre "{r["centre"]}" is not defined')
            continue
        for kind in r["kinds"]:
            if centre["service"] and service_of(kind) != centre["service"]:
                say(
                    "rules",
                    name,
                    f'kind "{kind}" cannot be read by {centre["service"]} centre "{r["centre"]}"',
                )
        for modality in r["modalities"]:
            if not reads(centre, modality):
                say("rules", name, f'centre "{r["centre"]}" does not read {modality}')
        for sub in r["subspecialties"]:
            if sub not in centre["subspecialties"]:
                say("rules", name, f'centre "{r["centre"]}" offers no subspecialty "{sub}"')


def _cycles(facilities: dict[str, dict[str, Any]], parent_where: dict[str, str]) -> list[Problem]:
    """Grid cycles longer than one (a facility leading itself is said on its own)."""
    found: list[Problem] = []
    seen: set[frozenset[str]] = set()
    for start in facilities:
        path: list[str] = []
        code: str | None = start
        while code is not None and code in facilities and code not in path:
            path.append(code)
            code = facilities[code]["parent"]
        if code is None or code not in path:
            continue
        loop = path[path.index(code) :]
        if len(loop) < 2 or frozenset(loop) in seen:
            continue
        seen.add(frozenset(loop))
        first = min(loop)
        loop = loop[loop.index(first) :] + loop[: loop.index(first)]
        text = " -> ".join(f'"{c}"' for c in [*loop, first])
        where = next((parent_where[c] for c in loop if c in parent_where), None)
        found.append(Problem("facilities", first, f"grid cycle {text} (each -> its lead)", where))
    return found


def service_of(kind: str) -> str:
    return Service.ECG.value if kind == CaseKind.ECG else Service.IMAGING.value


def reads(centre: dict[str, Any], modality: str) -> bool:
    """Whether a centre reads cases of this DICOM modality code (a centre whose service failed
    its check is given the benefit of the doubt)."""
    if centre["service"] is None:
        return True
    if centre["service"] == Service.ECG:
        return modality == ECG_MODALITY
    if modality == ECG_MODALITY:
        return False
    return not centre["modalities"] or modality in centre["modalities"]


def _qualification_problem(q: str, code: str, centre: dict[str, Any]) -> str | None:
    if q in DICOM_MODALITIES:
        if reads(centre, q):
            return None
        return f'qualification "{q}": centre "{code}" does not read {q}'
    if q in centre["subspecialties"]:
        return None
    return (
        f'qualification "{q}" is neither a DICOM modality code, "ECG", nor a subspecialty of '
        f'centre "{code}"'
    )
