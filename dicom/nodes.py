"""C-MOVE destinations: the DICOM nodes an administrator registered, and nothing else.

A C-MOVE names its destination by AE title only; the hub looks the address up here, so a
request can never make the hub connect to an address of the requestor's choosing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from telehub import audit
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import DicomNode, Facility, Role
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

#: PS3.5 AE: 1-16 characters of the default repertoire, no backslash or control characters;
#: leading/trailing spaces are not significant (we refuse them to keep titles unambiguous).
_AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,255}$")


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE goes: resolved from the table, detached from any session."""

    ae_title: str
    host: str
    port: int
    facility_id: int


def describe(node: DicomNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "ae_title": node.ae_title,
        "host": node.host,
        "port": node.port,
        "facility_id": node.facility_id,
        "description": node.description,
        "created_at": node.created_at.isoformat(),
    }


def require_admin(principal: Principal) -> None:
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only administrators manage DICOM nodes", "not_an_admin")


def validate(body: dict[str, Any]) -> dict[str, Any]:
    """Check a node as posted; raises :class:`Invalid` naming the first bad field."""
    ae_title, host, port = body.get("ae_title"), body.get("host"), body.get("port")
    facility_id, description = body.get("facility_id"), body.get("description", "")
    if not isinstance(ae_title, str) or not _AE_RE.match(ae_title):
        raise Invalid(
            "ae_title must be 1-16 printable ASCII characters, no backslash, "
            "no leading or trailing space",
            "bad_ae_title",
        )
    if not isinstance(host, str) or not _HOST_RE.match(host):
        raise Invalid("host must be a host name or IP address", "bad_host")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise Invalid("port must be an integer from 1 to 65535", "bad_port")
    if isinstance(facility_id, bool) or not isinstance(facility_id, int):
        raise Invalid("facility_id must be the id of a facility", "bad_facility")
    if not isinstance(description, str) or len(description) > 200:
        raise Invalid("description must be a string of at most 200 characters", "bad_description")
    return {
        "ae_title": ae_title,
        "host": host,
        "port": port,
        "facility_id": facility_id,
        "description": description,
    }


def list_nodes(db: Database, principal: Principal) -> list[dict[str, Any]]:
    require_admin(principal)
    with db.reader() as session:
        return [describe(n) for n in session.scalars(select(DicomNode).order_by(DicomNode.id))]


def add_node(
    db: Database, principal: Principal, body: dict[str, Any], remote: str
) -> dict[str, Any]:
    require_admin(principal)
    fields = validate(body)
    try:
        with db.session() as session:
            if session.get(Facility, fields["facility_id"]) is None:
                raise Invalid(f"facility {fields['facility_id']} does not exist", "bad_facility")
            node = DicomNode(**fields)
            session.add(node)
            session.flush()
            audit.record(
                session,
                principal.user_id,
                "create",
                "dicom_node",
                node.id,
                remote=remote,
                ae_title=node.ae_title,
            )
            return describe(node)
    except IntegrityError as exc:
        raise Conflict(
            f"a DICOM node with AE title {fields['ae_title']!r} exists", "duplicate_ae_title"
        ) from exc


def delete_node(db: Database, principal: Principal, node_id: int, remote: str) -> None:
    require_admin(principal)
    with db.session() as session:
        node = session.get(DicomNode, node_id)
        if node is None:
            raise NotFound(f"DICOM node {node_id} not found")
        audit.record(
            session,
            principal.user_id,
            "delete",
            "dicom_node",
            node.id,
            remote=remote,
            ae_title=node.ae_title,
        )
        session.delete(node)


def destination(db: Database, ae_title: str) -> Destination | None:
    """The registered node with this AE title (read on every C-MOVE: no restart needed)."""
    with db.reader() as session:
        node = session.scalar(select(DicomNode).where(DicomNode.ae_title == ae_title.strip()))
        if node is None:
            return None
        return Destination(node.ae_title, node.host, node.port, node.facility_id)
