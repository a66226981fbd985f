"""consults: live video consults on a case, their participants and join tokens

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from telehub.db.types import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=True),
        sa.Column("auto_admit", sa.Boolean(), nullable=False),
        sa.Column("scheduled_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("recording", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('adhoc', 'scheduled')", name="ck_consults_kind"),
        sa.CheckConstraint("status IN ('open', 'ended')", name="ck_consults_status"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_consults_case_id_cases"),
        sa.ForeignKeyConstraint(["host_id"], ["users.id"], name="fk_consults_host_id_users"),
        sa.ForeignKeyConstraint(
            ["centre_id"], ["reading_centres.id"], name="fk_consults_centre_id_reading_centres"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_consults"),
    )
    op.create_index("ix_consults_case_id", "consults", ["case_id"])
    op.create_table(
        "consult_participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consult_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("invited", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=True),
        sa.Column("consent_at", UTCDateTime(), nullable=True),
        sa.Column("admitted_at", UTCDateTime(), nullable=True),
        sa.Column("joined_at", UTCDateTime(), nullable=True),
        sa.Column("left_at", UTCDateTime(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.CheckConstraint(
            "state IN ('invited', 'waiting', 'admitted', 'left')",
            name="ck_consult_participants_state",
        ),
        sa.ForeignKeyConstraint(
            ["consult_id"], ["consults.id"], name="fk_consult_participants_consult_id_consults"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_consult_participants_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_consult_participants"),
        sa.UniqueConstraint("consult_id", "user_id", name="uq_consult_participants_consult_id"),
    )
    op.create_table(
        "consult_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("consult_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consult_id"], ["consults.id"], name="fk_consult_tokens_consult_id_consults"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_consult_tokens_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_consult_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_consult_tokens_token_hash"),
    )
    op.create_index("ix_consult_tokens_consult_id", "consult_tokens", ["consult_id"])


def downgrade() -> None:
    op.drop_index("ix_consult_tokens_consult_id", table_name="consult_tokens")
    op.drop_table("consult_tokens")
    op.drop_table("consult_participants")
    op.drop_index("ix_consults_case_id", table_name="consults")
    op.drop_table("consults")
