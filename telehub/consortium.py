"""The consortium as one document: facilities, grids, reading centres, reading links, users and
routing rules, loaded from TOML (``telehub consortium load``) or JSON (the admin API), checked,
applied and exported.

One validator serves every path: a file, ``POST /api/v1/consortium`` and each admin API write
(a one-entry definition), so they refuse the same mistakes in the same words. The definition is
merged over what the database holds (upsert by facility/centre code, username and rule name;
entities it does not mention are left alone) and the merged whole is checked, reporting every
problem at once and only problems the definition would introduce. Applying is one transaction,
audited entity by entity, and idempotent: loading the same definition again changes nothing.
See docs/consortium.md for the format.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telehub import audit, passwords
from telehub.consortium_checks import check
from telehub.consortium_format import (
    ENTITIES,
    SECTIONS,
    SINGULAR,
    SPECS,
    Entry,
    Error,
    link_key,
    read_sections,
    show_key,
)
from telehub.db import Database
from telehub.db.models import Facility, ReadingCentre, ReadingLink, Role, RoutingRule, User
from telehub.errors import Conflict, Invalid
from telehub.passwords import Policy

#: resource_type of the audit rows each entity's writes leave.
RESOURCE = {
    "facilities": "facility",
    "centres": "reading_centre",
    "links": "reading_link",
    "users": "user",
    "rules": "routing_rule",
}
#: Turns a password into its stored hash; None: telehub.auth.hash_password (imported when
#: needed: it computes an argon2 hash at import, which a load without passwords can skip).
Hasher = Callable[[str], str]


class ConsortiumError(Invalid):
    """A definition that cannot be applied; ``problems`` lists every reason, each naming its
    entry (``grids[1]: facility "T9" is not defined``)."""

    def __init__(self, problems: list[str]) -> None:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        super().__init__(
            f"consortium definition refused ({count}): " + "; ".join(problems), "bad_consortium"
        )
        self.problems = problems


# ----- the database as a definition ------------------------------------------------------------
@dataclass
class Snapshot:
    """The consortium in the database, in the definition's terms (codes, not ids), with the ids
    of its rows: section -> key -> fields, and section -> key -> id."""

    entries: dict[str, dict[Any, dict[str, Any]]]
    ids: dict[str, dict[Any, int]]


def snapshot(session: Session) -> Snapshot:
    entries: dict[str, dict[Any, dict[str, Any]]] = {s: {} for s in ENTITIES}
    ids: dict[str, dict[Any, int]] = {s: {} for s in ENTITIES}
    facilities = session.scalars(select(Facility).order_by(Facility.id)).all()
    code_of = {f.id: f.code for f in facilities}
    for f in facilities:
        entries["facilities"][f.code] = {
            "code": f.code,
            "name": f.name,
            "tier": f.tier,
            "ae_title": f.ae_title,
            "dicom_networks": f.dicom_networks or "",
            "parent": code_of.get(f.parent_id) if f.parent_id else None,
        }
        ids["facilities"][f.code] = f.id
    centres = session.scalars(select(ReadingCentre).order_by(ReadingCentre.id)).all()
    centre_of = {c.id: c.code for c in centres}
    for c in centres:
        entries["centres"][c.code] = {
            "code": c.code,
            "facility": code_of[c.facility_id],
            "service": c.service,
            "name": c.name,
            "modalities": list(c.modalities or []),
            "subspecialties": list(c.subspecialties or []),
            "service_hours": c.service_hours or "",
            "timezone": c.timezone,
        }
        ids["centres"][c.code] = c.id
    for link in session.scalars(select(ReadingLink).order_by(ReadingLink.id)):
        entry = {
            "origin": code_of[link.origin_facility_id],
            "centre": centre_of[link.centre_id],
            "modality": link.modality,
        }
        entries["links"][link_key(entry)] = entry
        ids["links"][link_key(entry)] = link.id
    for u in session.scalars(select(User).order_by(User.id)):
        entries["users"][u.username] = {
            "username": u.username,
            "display_name": u.display_name,
            "role": u.role,
            "facility": code_of[u.facility_id],
            "centre": centre_of.get(u.centre_id) if u.centre_id else None,
            "qualifications": list(u.qualifications or []),
            "may_sign_final": u.may_sign_final,
            "max_open_cases": u.max_open_cases,
            "on_duty": u.on_duty,
            "active": u.active,
        }
        ids["users"][u.username] = u.id
    rules = session.scalars(select(RoutingRule).order_by(RoutingRule.position, RoutingRule.id))
    for r in rules:
        entries["rules"][r.name] = {
            "name": r.name,
            "position": r.position,
            "enabled": r.enabled,
            "kinds": list(r.kinds or []),
            "modalities": list(r.modalities or []),
            "body_parts": list(r.body_parts or []),
            "subspecialties": list(r.subspecialties or []),
            "priorities": list(r.priorities or []),
            "origins": [code_of[i] for i in r.origin_facility_ids or [] if i in code_of],
            "origin_tiers": list(r.origin_tiers or []),
            "centre": centre_of[r.centre_id],
        }
        ids["rules"][r.name] = r.id
    return Snapshot(entries, ids)


# ----- merging a definition over the database --------------------------------------------------
@dataclass
class Change:
    action: str  # create, update, delete
    section: str
    key: Any
    #: create: the new entry; update: the changed fields' new values.
    values: dict[str, Any]
    #: update: the changed fields' old values.
    old: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "type": SINGULAR[self.section],
            "key": list(self.key) if self.section == "links" else self.key,
        }
        if self.action == "update":
            out["fields"] = {k: {"from": self.old.get(k), "to": v} for k, v in self.values.items()}
        else:
            out["fields"] = self.values
        return out

    def __str__(self) -> str:
        head = f"{self.action} {SINGULAR[self.section]} {show_key(self.section, self.key)}"
        if self.action != "update":
            return head
        parts = [
            f"{k} {_show(self.old.get(k))} -> {_show(v)}" if k != "password" else "password reset"
            for k, v in self.values.items()
        ]
        return f"{head}: " + ", ".join(parts)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Plan:
    """What applying a definition would change."""

    changes: list[Change]
    notes: list[str]
    #: username -> ("password" | "password_hash", value) to set.
    secrets: dict[str, tuple[str, str]]
    current: Snapshot


@dataclass
class Outcome:
    changes: list[Change]
    notes: list[str]
    applied: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "changes": [c.to_json() for c in self.changes],
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [str(c) for c in self.changes] + [f"note: {n}" for n in self.notes]
        count = len(self.changes)
        if not count:
            lines.append("nothing to change")
        elif self.applied:
            lines.append(f"{count} change(s) applied")
        else:
            lines.append(f"dry run: {count} change(s) would be made; nothing was written")
        return "\n".join(lines)


def parse_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConsortiumError([f"not valid TOML: {exc}"]) from exc


def plan(
    session: Session,
    definition: Any,
    *,
    single: bool = False,
    reset_passwords: bool = False,
    password_policy: Policy | None = None,
) -> Plan:
    """Check ``definition`` merged over the database; raises ConsortiumError listing every
    problem it would introduce. ``single``: label entries "facility "X"" (an admin API call);
    ``reset_passwords``: a password given for an existing user replaces the old one;
    ``password_policy``: passwords set must pass it (WeakPassword); None: not checked."""
    current = snapshot(session)
    errors: list[Error] = []
    inputs = read_sections(definition, errors, single)
    merge = _Merge(copy.deepcopy(current.entries), errors, reset_passwords)
    for section in ("facilities", "centres", "users", "rules"):
        merge.keyed(section, inputs[section])
    merge.grids(inputs["grids"])
    merge.links(inputs["links"])
    merge.default_links()

    before = set(check(current.entries))
    for problem in check(merge.entries, merge.touched, merge.parent_where):
        if problem in before:
            continue  # there already: not this definition's doing
        label = problem.where or merge.labels.get((problem.section, problem.key))
        if label is None:
            label = f"{SINGULAR[problem.section]} {show_key(problem.section, problem.key)}"
        errors.append((label, problem.text))
    if errors:
        # Each entry's problems together, in the order the entries were written.
        order = {e.label: i for i, e in enumerate(e for s in SECTIONS for e in inputs[s])}
        errors.sort(key=lambda err: order.get(err[0], -1 if not err[0] else len(order)))
        raise ConsortiumError([f"{label}: {text}" if label else text for label, text in errors])
    notes = []
    if merge.kept:
        notes.append(
            f"passwords are set for new users only: {len(merge.kept)} existing user(s) keep "
            f"theirs ({', '.join(merge.kept)})"
        )
    if password_policy is not None:
        for username, (kind, value) in merge.secrets.items():
            if kind == "password":
                passwords.check(value, username, password_policy)
    return Plan(_diff(current, merge.entries, merge.secrets), notes, merge.secrets, current)


class _Merge:
    """A definition's entries merged over the database's, remembering which entries it touched
    and where each was written, for the checks and their messages."""

    def __init__(
        self, entries: dict[str, dict[Any, dict[str, Any]]], errors: list[Error], reset: bool
    ) -> None:
        self.entries = entries
        self.errors = errors
        self.reset_passwords = reset
        self.labels: dict[tuple[str, Any], str] = {}
        self.touched: set[tuple[str, Any]] = set()
        #: facility code -> label of the entry that set its lead (a grid or the facility).
        self.parent_where: dict[str, str] = {}
        #: username -> ("password" | "password_hash", value) to set.
        self.secrets: dict[str, tuple[str, str]] = {}
        #: existing users given a password that is not set (passwords are for new users).
        self.kept: list[str] = []
        #: origins of the links the definition lists (they get no default links).
        self.linked: set[str] = set()

    def _touch(self, section: str, key: Any, label: str) -> None:
        self.labels.setdefault((section, key), label)
        self.touched.add((section, key))

    def keyed(self, section: str, items: list[Entry]) -> None:
        """Upsert by key: a new entry needs its required fields, an existing one is updated
        with the fields given (others stay as they are)."""
        spec = SPECS[section]
        seen: dict[Any, str] = {}
        for item in items:
            fields = dict(item.fields)
            key = fields.get(spec.key)
            if key is None:
                if spec.key not in item.bad:
                    self.errors.append((item.label, f"{spec.key} is missing"))
                continue
            if key in seen:
                self.errors.append((item.label, f'duplicate {spec.key} "{key}" (also {seen[key]})'))
                continue
            seen[key] = item.label
            given = {k: fields.pop(k) for k in spec.secret if k in fields}
            existing = self.entries[section].get(key)
            if existing is None:
                missing = [f for f in spec.required if f not in fields and f not in item.bad]
                if missing:
                    verb = "is" if len(missing) == 1 else "are"
                    what = f"{', '.join(missing)} {verb} needed for a new {SINGULAR[section]}"
                    self.errors.append((item.label, what))
                    continue
                # A required field that failed its check (reported) is None: the checks skip it.
                bad = {f: None for f in item.bad if f in spec.required}
                entry = {**copy.deepcopy(spec.defaults), **bad, **fields}
                self.entries[section][key] = {f: entry[f] for f in spec.checks if f in entry}
            else:
                existing.update(fields)
            self._touch(section, key, item.label)
            if section == "facilities" and "parent" in fields:
                self.parent_where[key] = item.label
            if section == "users":
                self._secret(key, item.label, given, existing is None)

    def _secret(self, username: str, label: str, given: dict[str, str], new: bool) -> None:
        if len(given) > 1:
            self.errors.append((label, "give a password or a password_hash, not both"))
        elif new and not given:
            self.errors.append((label, "a new user needs a password (or password_hash)"))
        elif given and (new or self.reset_passwords):
            (kind, value), *_ = given.items()
            self.secrets[username] = (kind, value)
        elif given:
            self.kept.append(username)

    def grids(self, items: list[Entry]) -> None:
        """A grid sets the lead (Facility.parent) of each facility it covers."""
        facilities = self.entries["facilities"]
        covered: dict[str, tuple[str, str]] = {}
        for item in items:
            lead, covers, label = item.fields.get("lead"), item.fields.get("covers"), item.label
            if lead is None or covers is None:
                if not item.bad:
                    self.errors.append((label, "lead and covers are both needed"))
                continue
            if lead not in facilities:
                self.errors.append((label, f'facility "{lead}" is not defined'))
            for code in covers:
                if code not in facilities:
                    self.errors.append((label, f'facility "{code}" is not defined'))
                elif code == lead:
                    self.errors.append((label, f'facility "{code}" leads itself'))
                elif code in covered:
                    other, where = covered[code]
                    self.errors.append(
                        (label, f'facility "{code}" is also covered by "{other}" ({where})')
                    )
                elif code in self.parent_where and facilities[code]["parent"] != lead:
                    self.errors.append(
                        (
                            label,
                            f'facility "{code}" names "{facilities[code]["parent"]}" as its '
                            f"lead ({self.parent_where[code]})",
                        )
                    )
                elif lead in facilities:
                    covered[code] = (lead, label)
                    facilities[code]["parent"] = lead
                    self.parent_where[code] = label
                    self._touch("facilities", code, label)

    def links(self, items: list[Entry]) -> None:
        """Links are created when missing (they have nothing to update)."""
        seen: dict[Any, str] = {}
        for item in items:
            if "origin" not in item.fields or "centre" not in item.fields:
                if not item.bad:
                    self.errors.append((item.label, "origin and centre are both needed"))
                continue
            entry = {"modality": None, **item.fields}
            key = link_key(entry)
            if key in seen:
                self.errors.append((item.label, f"duplicate link (also {seen[key]})"))
                continue
            seen[key] = item.label
            self.entries["links"].setdefault(key, entry)
            self._touch("links", key, item.label)
            self.linked.add(entry["origin"])

    def default_links(self) -> None:
        """A facility the definition puts in a grid, with no links of its own in it, is read
        by every centre of its lead: the missing links are added."""
        facilities, centres = self.entries["facilities"], self.entries["centres"]
        links = self.entries["links"]
        for code, where in self.parent_where.items():
            lead = facilities.get(code, {}).get("parent")
            if code in self.linked or lead is None or lead not in facilities:
                continue
            have = {centre for origin, centre, _ in links if origin == code}
            for centre_code, centre in centres.items():
                if centre["facility"] == lead and centre_code not in have:
                    key = (code, centre_code, None)
                    links[key] = {"origin": code, "centre": centre_code, "modality": None}
                    self._touch("links", key, f"{where} (default link)")


def _diff(
    current: Snapshot,
    entries: dict[str, dict[Any, dict[str, Any]]],
    secrets: dict[str, tuple[str, str]],
) -> list[Change]:
    changes: list[Change] = []
    for section in ENTITIES:
        for key, entry in entries[section].items():
            old = current.entries[section].get(key)
            if old is None:
                changes.append(Change("create", section, key, dict(entry)))
                continue
            new = {k: v for k, v in entry.items() if old.get(k) != v}
            if section == "users" and key in secrets:
                new["password"] = "(reset)"
            if new:
                changes.append(Change("update", section, key, new, {k: old.get(k) for k in new}))
    return changes


# ----- applying ------------------------------------------------------------------------------
_MODELS: dict[str, type[Any]] = {
    "facilities": Facility,
    "centres": ReadingCentre,
    "links": ReadingLink,
    "users": User,
    "rules": RoutingRule,
}


def _columns(section: str, values: dict[str, Any], ids: dict[str, dict[Any, int]]) -> dict:
    """Definition fields -> ORM attributes (codes become ids)."""
    facility_id, centre_id = ids["facilities"].get, ids["centres"].get
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "password":
            continue
        if section == "facilities" and name == "parent":
            continue  # set once every facility exists
        if name == "facility":
            out["facility_id"] = facility_id(value)
        elif name == "origin":
            out["origin_facility_id"] = facility_id(value)
        elif name == "centre":
            out["centre_id"] = centre_id(value) if value else None
        elif name == "origins":
            out["origin_facility_ids"] = [facility_id(o) for o in value]
        else:
            out[name] = value
    return out


def apply_plan(
    session: Session,
    plan: Plan,
    *,
    actor_id: int | None,
    remote: str,
    hasher: Hasher | None = None,
) -> None:
    """Write the plan's changes in ``session``'s transaction, one audit row each."""
    ids = {s: dict(plan.current.ids[s]) for s in ENTITIES}
    by_section = {s: [c for c in plan.changes if c.section == s] for s in ENTITIES}
    # An AE title moving from one facility to another must be free before it is taken.
    moving = [
        c for c in by_section["facilities"] if c.action == "update" and "ae_title" in c.values
    ]
    for change in moving:
        session.get(Facility, ids["facilities"][change.key]).ae_title = None  # type: ignore[union-attr]
    if moving:
        session.flush()
    for section in ENTITIES:
        model = _MODELS[section]
        for change in by_section[section]:
            cols = _columns(section, change.values, ids)
            if section == "users":
                cols.update(_password_column(change.key, plan.secrets, hasher))
            if change.action == "create":
                row = model(**cols)
                session.add(row)
                session.flush()
                ids[section][change.key] = row.id
            else:
                row = session.get(model, ids[section][change.key])
                for name, value in cols.items():
                    setattr(row, name, value)
            if section == "facilities":
                continue  # audited below, with the parent
            _audit(session, change, row.id, actor_id, remote)
        if section == "facilities":
            for change in by_section[section]:
                row = session.get(Facility, ids["facilities"][change.key])
                if "parent" in change.values:
                    parent = change.values["parent"]
                    row.parent_id = ids["facilities"][parent] if parent else None  # type: ignore[union-attr]
                _audit(session, change, row.id, actor_id, remote)  # type: ignore[union-attr]
            session.flush()
    session.flush()


def _password_column(
    username: str, secrets: dict[str, tuple[str, str]], hasher: Hasher | None
) -> dict[str, str]:
    if username not in secrets:
        return {}
    kind, value = secrets[username]
    if kind == "password_hash":
        return {"password_hash": value}
    if hasher is None:
        from telehub.auth import hash_password

        hasher = hash_password
    return {"password_hash": hasher(value)}


def _audit(
    session: Session, change: Change, row_id: int, actor_id: int | None, remote: str
) -> None:
    detail = change.to_json()
    audit.record(
        session,
        actor_id,
        change.action,
        RESOURCE[change.section],
        row_id,
        remote=remote,
        key=detail["key"],
        fields=detail["fields"],
        via="consortium",
    )


def apply_definition(
    session: Session,
    definition: Any,
    *,
    actor_id: int | None,
    remote: str,
    dry_run: bool = False,
    single: bool = False,
    reset_passwords: bool = False,
    hasher: Hasher | None = None,
    password_policy: Policy | None = None,
) -> Outcome:
    """Check and (unless ``dry_run``) apply ``definition`` in the caller's transaction."""
    p = plan(
        session,
        definition,
        single=single,
        reset_passwords=reset_passwords,
        password_policy=password_policy,
    )
    if not dry_run and p.changes:
        apply_plan(session, p, actor_id=actor_id, remote=remote, hasher=hasher)
    return Outcome(p.changes, p.notes, applied=not dry_run and bool(p.changes))


def load(
    db: Database,
    definition: Any,
    *,
    dry_run: bool = False,
    actor_id: int | None = None,
    remote: str = "",
    hasher: Hasher | None = None,
    password_policy: Policy | None = None,
) -> Outcome:
    """Check and apply a whole definition in one transaction: all of it or nothing."""
    try:
        if dry_run:
            with db.reader() as session:
                return apply_definition(
                    session,
                    definition,
                    actor_id=actor_id,
                    remote=remote,
                    dry_run=True,
                    password_policy=password_policy,
                )
        with db.session() as session:
            return apply_definition(
                session,
                definition,
                actor_id=actor_id,
                remote=remote,
                hasher=hasher,
                password_policy=password_policy,
            )
    except IntegrityError as exc:
        raise Conflict(
            "the consortium changed while the definition was applied; nothing was written, "
            "try again",
            "consortium_conflict",
        ) from exc


# ----- exporting -------------------------------------------------------------------------------
def export(session: Session, *, with_password_hashes: bool = False) -> dict[str, Any]:
    """The consortium as a definition that loads back to the same state (no hashes unless
    asked; without them the users must exist where it is loaded, or get passwords added)."""
    snap = snapshot(session)
    facilities = list(snap.entries["facilities"].values())
    out: dict[str, Any] = {"facilities": [], "grids": []}
    for f in facilities:
        out["facilities"].append(
            _without_empty(
                {k: v for k, v in f.items() if k != "parent"}, ("ae_title", "dicom_networks")
            )
        )
    for lead in facilities:
        covers = [f["code"] for f in facilities if f["parent"] == lead["code"]]
        if covers:
            out["grids"].append({"lead": lead["code"], "covers": covers})
    out["centres"] = list(snap.entries["centres"].values())
    out["links"] = [_without_empty(e, ("modality",)) for e in snap.entries["links"].values()]
    hashes: dict[str, str] = {}
    if with_password_hashes:
        hashes = {name: h for name, h in session.execute(select(User.username, User.password_hash))}
    out["users"] = []
    for name, u in snap.entries["users"].items():
        entry = _without_empty(u, ("centre", "max_open_cases"))
        if u["role"] != Role.READER:  # reader settings at their defaults say nothing
            for key in ("qualifications", "may_sign_final", "on_duty"):
                if entry[key] == SPECS["users"].defaults[key]:
                    del entry[key]
        if with_password_hashes:
            entry["password_hash"] = hashes[name]
        out["users"].append(entry)
    out["rules"] = list(snap.entries["rules"].values())
    return {section: items for section, items in out.items() if items}


def _without_empty(entry: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not (k in optional and v in (None, ""))}


def to_toml(definition: dict[str, Any]) -> str:
    """A definition as TOML: one ``[[section]]`` table per entry, in the documented order.

    Written by hand rather than with tomli-w, which puts short entries inline at the top of the
    file and spreads every list over several lines; values are JSON literals, which are valid
    TOML for the strings, booleans, integers and flat lists a definition holds."""
    lines = ["# telehub consortium definition; load with: telehub consortium load FILE"]
    for section in SECTIONS:
        for entry in definition.get(section, []):
            lines += ["", f"[[{section}]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    # JSON leaves DEL unescaped; TOML does not allow it raw in a string.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
