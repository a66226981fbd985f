"""open studies index: the recovery sweep reads only studies still to complete

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text(
    "(completed_at IS NULL OR "
    "(completed_instance_count > 0 AND instance_count > completed_instance_count))"
)


def upgrade() -> None:
    op.create_index(
        "ix_studies_open",
        "studies",
        ["last_received_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_studies_open", table_name="studies")
