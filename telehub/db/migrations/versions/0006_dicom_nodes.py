"""dicom nodes: C-MOVE destinations for query/retrieve

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telehub.db.types

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'dicom_nodes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ae_title', sa.String(length=16), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('facility_id', sa.Integer(), nullable=False),
        sa.Column('description', sa.String(length=200), nullable=False),
        sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['facility_id'], ['facilities.id'], name=op.f('fk_dicom_nodes_facility_id_facilities')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dicom_nodes')),
        sa.UniqueConstraint('ae_title', name=op.f('uq_dicom_nodes_ae_title')),
    )
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_dicom_nodes_facility_id'), ['facility_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dicom_nodes_facility_id'))
    op.drop_table('dicom_nodes')
