"""dicomweb series metadata: one row per series whose metadata is kept in the object store

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telehub.db.types

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dicomweb_series_metadata',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('instance_count', sa.Integer(), nullable=False),
    sa.Column('object_key', sa.String(length=512), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('built_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_dicomweb_series_metadata_series_id_series')),
    sa.PrimaryKeyConstraint('series_id', name=op.f('pk_dicomweb_series_metadata'))
    )


def downgrade() -> None:
    op.drop_table('dicomweb_series_metadata')
