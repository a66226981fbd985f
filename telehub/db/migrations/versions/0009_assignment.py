"""assignment: one-time tickets for the live-update stream; readers start off duty

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telehub.db.types

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('event_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_event_tickets_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_tickets')),
    sa.UniqueConstraint('ticket_hash', name=op.f('uq_event_tickets_ticket_hash'))
    )
    with op.batch_alter_table('event_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_tickets_expires_at'), ['expires_at'], unique=False)
    # Push assignment goes only to readers on duty; nobody was "on duty" in that sense before
    # push existed, so every reader starts off duty (pull only) until turned on.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('on_duty', existing_type=sa.Boolean(), existing_nullable=False,
                              server_default='0')
    users = sa.table('users', sa.column('on_duty', sa.Boolean()))
    op.execute(users.update().values(on_duty=False))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('on_duty', existing_type=sa.Boolean(), existing_nullable=False,
                              server_default='1')
    with op.batch_alter_table('event_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_tickets_expires_at'))
    op.drop_table('event_tickets')
