"""The consortium over the admin API: lists, and writes as one-entry definitions.

Every write goes through :mod:`telehub.consortium` (the same checks, the same audit rows as a
file load): creating a facility applies ``{"facilities": [body]}``, updating one applies its
key plus the fields sent. Keys (facility and centre codes, usernames, rule names) cannot be
changed: the file and the rules refer to entities by them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telehub import audit, consortium, service_hours
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Facility, ReadingCentre, ReadingLink, Role, RoutingRule, User
from telehub.errors import Conflict, Forbidden, Invalid, NotFound
from telehub.passwords import DEFAULT_POLICY, Policy

#: The entity types of the API, as URL words: definition section and model.
KINDS: dict[str, tuple[str, type[Any]]] = {
    "facilities": ("facilities", Facility),
    "centres": ("centres", ReadingCentre),
    "links": ("links", ReadingLink),
    "users": ("users", User),
    "rules": ("rules", RoutingRule),
}
#: What anybody signed in may list (the UI needs them for referrals and escalation).
PUBLIC_KINDS = frozenset({"facilities", "centres"})
DELETABLE = frozenset({"links", "rules"})


def require_admin(principal: Principal) -> None:
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only administrators manage the consortium", "not_an_admin")


# ----- reading ---------------------------------------------------------------------------------
def list_items(db: Database, principal: Principal, kind: str) -> list[dict[str, Any]]:
    """All entities of a kind, as the API shows them (never a password hash)."""
    if kind not in PUBLIC_KINDS:
        require_admin(principal)
    admin = principal.role == Role.ADMIN.value
    with db.reader() as session:
        names = _names(session)
        _, model = KINDS[kind]
        rows = session.scalars(select(model).order_by(*_order(model))).all()
        return [describe(kind, row, names, admin) for row in rows]


def definition(db: Database, principal: Principal) -> dict[str, Any]:
    """The whole consortium as a definition (JSON), as ``telehub consortium export`` writes."""
    require_admin(principal)
    with db.reader() as session:
        return consortium.export(session)


def _order(model: type[Any]) -> tuple[Any, ...]:
    if model is RoutingRule:
        return (RoutingRule.position, RoutingRule.id)
    return (model.id,)


class _Names:
    """Codes of facilities and centres by id, to show references as the file writes them."""

    def __init__(self, facilities: dict[int, str], centres: dict[int, str]) -> None:
        self.facilities = facilities
        self.centres = centres


def _names(session: Session) -> _Names:
    return _Names(
        {i: code for i, code in session.execute(select(Facility.id, Facility.code))},
        {i: code for i, code in session.execute(select(ReadingCentre.id, ReadingCentre.code))},
    )


def describe(kind: str, row: Any, names: _Names, admin: bool = True) -> dict[str, Any]:
    fac, cen = names.facilities.get, names.centres.get
    if kind == "facilities":
        out = {
            "id": row.id,
            "code": row.code,
            "name": row.name,
            "tier": row.tier,
            "parent": fac(row.parent_id) if row.parent_id else None,
            "parent_id": row.parent_id,
        }
        if admin:
            out |= {"ae_title": row.ae_title, "dicom_networks": row.dicom_networks}
        return out
    if kind == "centres":
        return {
            "id": row.id,
            "code": row.code,
            "name": row.name,
            "facility": fac(row.facility_id),
            "facility_id": row.facility_id,
            "service": row.service,
            "modalities": list(row.modalities or []),
            "subspecialties": list(row.subspecialties or []),
            "service_hours": row.service_hours,
            "timezone": row.timezone,
            "open_now": _open_now(row),
        }
    if kind == "links":
        return {
            "id": row.id,
            "origin": fac(row.origin_facility_id),
            "origin_facility_id": row.origin_facility_id,
            "centre": cen(row.centre_id),
            "centre_id": row.centre_id,
            "modality": row.modality,
        }
    if kind == "users":
        return {
            "id": row.id,
            "username": row.username,
            "display_name": row.display_name,
            "role": row.role,
            "facility": fac(row.facility_id),
            "facility_id": row.facility_id,
            "centre": cen(row.centre_id) if row.centre_id else None,
            "centre_id": row.centre_id,
            "qualifications": list(row.qualifications or []),
            "may_sign_final": row.may_sign_final,
            "max_open_cases": row.max_open_cases,
            "on_duty": row.on_duty,
            "active": row.active,
            "last_seen_at": row.last_seen_at.isoformat() if row.last_seen_at else None,
        }
    return {
        "id": row.id,
        "name": row.name,
        "position": row.position,
        "enabled": row.enabled,
        "kinds": list(row.kinds or []),
        "modalities": list(row.modalities or []),
        "body_parts": list(row.body_parts or []),
        "subspecialties": list(row.subspecialties or []),
        "priorities": list(row.priorities or []),
        "origins": [fac(i) for i in row.origin_facility_ids or []],
        "origin_facility_ids": list(row.origin_facility_ids or []),
        "origin_tiers": list(row.origin_tiers or []),
        "centre": cen(row.centre_id),
        "centre_id": row.centre_id,
    }


def _open_now(centre: ReadingCentre) -> bool | None:
    """Whether the centre is within its service hours now; None if they do not parse (set
    before they were checked)."""
    try:
        return service_hours.is_open(centre.service_hours, centre.timezone, datetime.now(UTC))
    except ValueError:
        return None


# ----- writing ---------------------------------------------------------------------------------
def load(
    db: Database,
    principal: Principal,
    body: Any,
    dry_run: bool,
    remote: str,
    password_policy: Policy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """A whole definition (TOML parsed, or JSON), checked and applied like a file load."""
    require_admin(principal)
    outcome = consortium.load(
        db,
        body,
        dry_run=dry_run,
        actor_id=principal.user_id,
        remote=remote,
        password_policy=password_policy,
    )
    return outcome.to_json()


def create(
    db: Database,
    principal: Principal,
    kind: str,
    body: dict[str, Any],
    remote: str,
    password_policy: Policy = DEFAULT_POLICY,
) -> dict[str, Any]:
    require_admin(principal)
    section, model = KINDS[kind]
    _refuse_hash(kind, body)
    with _writing(db) as session:
        if kind == "links":
            key = _link_key(body)
            if key is not None and _link_row(session, key) is not None:
                raise Conflict("this reading link exists", "exists")
        else:
            field = consortium.SPECS[section].key
            if _row_by_key(session, kind, body.get(field)) is not None:
                what = consortium.SINGULAR[section]
                raise Conflict(f'{what} "{body.get(field)}" exists', "exists")
        _apply(session, principal, {section: [body]}, remote, policy=password_policy)
        row = (
            _link_row(session, _link_key(body))
            if kind == "links"
            else _row_by_key(session, kind, body.get(consortium.SPECS[section].key))
        )
        return describe(kind, row, _names(session))


def update(
    db: Database,
    principal: Principal,
    kind: str,
    row_id: int,
    body: dict[str, Any],
    remote: str,
    password_policy: Policy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """Change the fields sent; for a user, ``password`` sets a new one. A link has no fields
    of its own: an update replaces it (it gets a new id)."""
    require_admin(principal)
    section, model = KINDS[kind]
    _refuse_hash(kind, body)
    with _writing(db) as session:
        row = session.get(model, row_id)
        if row is None:
            raise NotFound(f"{consortium.SINGULAR[section]} {row_id} not found")
        names = _names(session)
        if kind == "links":
            return _replace_link(session, principal, row, names, body, remote)
        field = consortium.SPECS[section].key
        key = getattr(row, field)
        if field in body and body[field] != key:
            raise Invalid(f"{field} cannot be changed (it is how entries refer to each other)")
        _apply(
            session,
            principal,
            {section: [{**body, field: key}]},
            remote,
            reset=True,
            policy=password_policy,
        )
        session.refresh(row)
        return describe(kind, row, _names(session))


def delete(db: Database, principal: Principal, kind: str, row_id: int, remote: str) -> None:
    """Remove a reading link or a routing rule (facilities, centres and users stay: cases
    refer to them; a user is deactivated with ``active: false``)."""
    require_admin(principal)
    section, model = KINDS[kind]
    if kind not in DELETABLE:
        raise Invalid(f"{section} cannot be deleted", "not_deletable")
    with _writing(db) as session:
        row = session.get(model, row_id)
        if row is None:
            raise NotFound(f"{consortium.SINGULAR[section]} {row_id} not found")
        _audit_delete(session, principal, kind, row, _names(session), remote)
        session.delete(row)


def reorder_rules(
    db: Database, principal: Principal, order: Any, remote: str
) -> list[dict[str, Any]]:
    """Rules in the order given (positions 10, 20, ...), the rules not named after them in
    their current order."""
    require_admin(principal)
    if not isinstance(order, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in order
    ):
        raise Invalid('body needs "order": a list of rule ids', "bad_order")
    if len(set(order)) != len(order):
        raise Invalid("a rule id appears twice in the order", "bad_order")
    with _writing(db) as session:
        rules = session.scalars(select(RoutingRule).order_by(*_order(RoutingRule))).all()
        by_id = {r.id: r for r in rules}
        unknown = [i for i in order if i not in by_id]
        if unknown:
            raise Invalid(f"no routing rule has the id {unknown[0]}", "bad_order")
        ordered = [by_id[i] for i in order] + [r for r in rules if r.id not in set(order)]
        positions = [{"name": r.name, "position": 10 * (n + 1)} for n, r in enumerate(ordered)]
        _apply(session, principal, {"rules": positions}, remote)
        names = _names(session)
        return [describe("rules", r, names) for r in ordered]


# ----- helpers ---------------------------------------------------------------------------------
@contextmanager
def _writing(db: Database) -> Iterator[Session]:
    """A write transaction whose unique-constraint races answer 409."""
    try:
        with db.session() as session:
            yield session
    except IntegrityError as err:
        raise Conflict("the consortium changed meanwhile; try again", "conflict") from err


def _apply(
    session: Session,
    principal: Principal,
    definition: dict[str, Any],
    remote: str,
    reset: bool = False,
    policy: Policy = DEFAULT_POLICY,
) -> None:
    consortium.apply_definition(
        session,
        definition,
        actor_id=principal.user_id,
        remote=remote,
        single=True,
        reset_passwords=reset,
        password_policy=policy,
    )


def _refuse_hash(kind: str, body: dict[str, Any]) -> None:
    if kind == "users" and "password_hash" in body:
        raise Invalid("set a password; hashes are taken from consortium files only", "bad_user")


def _row_by_key(session: Session, kind: str, key: Any) -> Any:
    if not isinstance(key, str):
        return None
    section, model = KINDS[kind]
    column = getattr(model, consortium.SPECS[section].key)
    return session.scalar(select(model).where(column == key.strip()))


def _link_key(body: dict[str, Any]) -> tuple[str, str, str | None] | None:
    origin, centre, modality = body.get("origin"), body.get("centre"), body.get("modality")
    if not isinstance(origin, str) or not isinstance(centre, str):
        return None
    if modality is not None and not isinstance(modality, str):
        return None
    return origin.strip(), centre.strip(), (modality.strip().upper() or None) if modality else None


def _link_row(session: Session, key: tuple[str, str, str | None] | None) -> ReadingLink | None:
    if key is None:
        return None
    origin, centre, modality = key
    query = (
        select(ReadingLink)
        .join(Facility, Facility.id == ReadingLink.origin_facility_id)
        .join(ReadingCentre, ReadingCentre.id == ReadingLink.centre_id)
        .where(Facility.code == origin, ReadingCentre.code == centre)
    )
    query = query.where(
        ReadingLink.modality.is_(None) if modality is None else ReadingLink.modality == modality
    )
    return session.scalar(query)


def _replace_link(
    session: Session,
    principal: Principal,
    row: ReadingLink,
    names: _Names,
    body: dict[str, Any],
    remote: str,
) -> dict[str, Any]:
    old = describe("links", row, names)
    new = {k: old[k] for k in ("origin", "centre", "modality") if old[k] is not None}
    new |= body
    key = _link_key(new)
    if key == (old["origin"], old["centre"], old["modality"]):
        return old
    _audit_delete(session, principal, "links", row, names, remote)
    session.delete(row)
    session.flush()
    if key is not None and _link_row(session, key) is not None:
        raise Conflict("this reading link exists", "exists")
    _apply(session, principal, {"links": [new]}, remote)
    return describe("links", _link_row(session, key), _names(session))


def _audit_delete(
    session: Session, principal: Principal, kind: str, row: Any, names: _Names, remote: str
) -> None:
    section, _ = KINDS[kind]
    audit.record(
        session,
        principal.user_id,
        "delete",
        consortium.RESOURCE[section],
        row.id,
        remote=remote,
        fields=describe(kind, row, names),
        via="consortium",
    )
