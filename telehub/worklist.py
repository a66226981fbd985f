"""A reading centre's worklist: the cases waiting for it, most urgent first, then oldest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from telehub import audit
from telehub.auth import Principal
from telehub.cases import OPEN_FOR_READING, summary
from telehub.db import Database
from telehub.db.models import Case, Role
from telehub.errors import Forbidden


def worklist(
    db: Database, principal: Principal, remote: str, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Unclaimed cases of the reader's centre plus those the reader has claimed."""
    if principal.role == Role.READER.value:
        scope = or_(
            (Case.centre_id == principal.centre_id) & Case.reader_id.is_(None),
            Case.reader_id == principal.user_id,
        )
    elif principal.role == Role.ADMIN.value:
        scope = Case.centre_id.is_not(None)
    else:
        raise Forbidden("worklists are for readers", "not_a_reader")
    query = (
        select(Case)
        .where(scope, Case.status.in_(OPEN_FOR_READING))
        .order_by(Case.priority_rank, Case.arrived_at, Case.id)
        .limit(limit)
        .offset(offset)
        .options(selectinload(Case.studies), selectinload(Case.ecgs))
    )
    with db.session() as session:
        cases = list(session.scalars(query))
        audit.record(
            session,
            principal.user_id,
            "list",
            "worklist",
            remote=remote,
            case_ids=[c.id for c in cases],
        )
        return [summary(c) for c in cases]
