"""consortium (placeholder: schema changes of the issue-5 consortium work, if any)

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
