"""consortium workflow: rules, SLA, leases, reports, notifications, referrals

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telehub.db.types

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('report_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('sections', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_templates')),
    sa.UniqueConstraint('code', name=op.f('uq_report_templates_code'))
    )
    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('url', sa.String(length=1000), nullable=False),
    sa.Column('secret', sa.String(length=200), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('facility_id', sa.Integer(), nullable=True),
    sa.Column('include_patient_name', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('json', 'wecom', 'dingtalk')", name=op.f('ck_webhooks_kind')),
    sa.ForeignKeyConstraint(['facility_id'], ['facilities.id'], name=op.f('fk_webhooks_facility_id_facilities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    sa.UniqueConstraint('name', name=op.f('uq_webhooks_name'))
    )
    op.create_table('routing_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('kinds', sa.JSON(), nullable=False),
    sa.Column('modalities', sa.JSON(), nullable=False),
    sa.Column('body_parts', sa.JSON(), nullable=False),
    sa.Column('subspecialties', sa.JSON(), nullable=False),
    sa.Column('priorities', sa.JSON(), nullable=False),
    sa.Column('origin_facility_ids', sa.JSON(), nullable=False),
    sa.Column('origin_tiers', sa.JSON(), nullable=False),
    sa.Column('centre_id', sa.Integer(), nullable=False),
    sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['centre_id'], ['reading_centres.id'], name=op.f('fk_routing_rules_centre_id_reading_centres')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_routing_rules')),
    sa.UniqueConstraint('name', name=op.f('uq_routing_rules_name'))
    )
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('read_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_notifications_case_id_cases')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notifications_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_user_unread', ['user_id', 'read_at', 'id'], unique=False)

    op.create_table('referrals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('from_facility_id', sa.Integer(), nullable=False),
    sa.Column('to_facility_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('booking_kind', sa.String(length=16), nullable=True),
    sa.Column('booking_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('booking_ref', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("direction IN ('up', 'down')", name=op.f('ck_referrals_direction')),
    sa.CheckConstraint("status IN ('requested', 'accepted', 'booked', 'completed', 'declined', 'cancelled')", name=op.f('ck_referrals_status')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_referrals_case_id_cases')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_referrals_created_by_users')),
    sa.ForeignKeyConstraint(['from_facility_id'], ['facilities.id'], name=op.f('fk_referrals_from_facility_id_facilities')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_referrals_patient_id_patients')),
    sa.ForeignKeyConstraint(['to_facility_id'], ['facilities.id'], name=op.f('fk_referrals_to_facility_id_facilities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referrals'))
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_referrals_created', ['created_at'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f('ck_webhook_deliveries_status')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_webhook_deliveries_case_id_cases')),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_status', ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_webhook_id'), ['webhook_id'], unique=False)

    op.create_table('report_cosignatures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('at', telehub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_cosignatures_report_id_reports')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_report_cosignatures_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_cosignatures')),
    sa.UniqueConstraint('report_id', 'user_id', name=op.f('uq_report_cosignatures_report_id'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_part', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('subspecialty', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('sla_deadline', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalate_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sla_warned_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sla_breached_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalations', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('second_opinion', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('claim_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f('ix_cases_centre_worklist'))
        batch_op.create_index('ix_cases_centre_worklist', ['centre_id', 'status', 'priority_rank', 'sla_deadline', 'id'], unique=False)
        batch_op.create_index('ix_cases_lease', ['lease_expires_at'], unique=False)
        batch_op.create_index('ix_cases_reader_worklist', ['reader_id', 'status', 'priority_rank', 'sla_deadline'], unique=False)
        batch_op.create_index('ix_cases_status_deadline', ['status', 'sla_deadline'], unique=False)
        batch_op.create_index('ix_cases_status_escalate', ['status', 'escalate_at'], unique=False)

    # Existing centres get a code from their facility and service, and empty lists.
    with op.batch_alter_table('reading_centres', schema=None) as batch_op:
        batch_op.add_column(sa.Column('code', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('modalities', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('subspecialties', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('service_hours', sa.String(length=200), server_default='', nullable=False))
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), server_default='Asia/Shanghai', nullable=False))
    op.execute(
        "UPDATE reading_centres SET modalities = '[]', subspecialties = '[]', code = "
        "(SELECT facilities.code FROM facilities WHERE facilities.id = reading_centres.facility_id)"
        " || '-' || UPPER(service)"
    )
    with op.batch_alter_table('reading_centres', schema=None) as batch_op:
        batch_op.alter_column('code', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('modalities', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column('subspecialties', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_constraint(batch_op.f('uq_reading_centres_facility_id'), type_='unique')
        batch_op.create_index(batch_op.f('ix_reading_centres_facility_id'), ['facility_id'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_reading_centres_code'), ['code'])

    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('sections', sa.JSON(), nullable=True))
        batch_op.drop_constraint(op.f('ck_reports_status'), type_='check')
        batch_op.create_check_constraint(
            'status', "status IN ('preliminary', 'final', 'addendum')"
        )

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qualifications', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('may_sign_final', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('max_open_cases', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('on_duty', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('last_seen_at', telehub.db.types.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET qualifications = '[]'")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('qualifications', existing_type=sa.JSON(), nullable=False)



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
        batch_op.drop_column('on_duty')
        batch_op.drop_column('max_open_cases')
        batch_op.drop_column('may_sign_final')
        batch_op.drop_column('qualifications')

    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_reports_status'), type_='check')
        batch_op.create_check_constraint('status', "status IN ('preliminary', 'final')")
        batch_op.drop_column('sections')
        batch_op.drop_column('template')

    with op.batch_alter_table('reading_centres', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_reading_centres_code'), type_='unique')
        batch_op.drop_index(batch_op.f('ix_reading_centres_facility_id'))
        batch_op.create_unique_constraint(batch_op.f('uq_reading_centres_facility_id'), ['facility_id', 'service'])
        batch_op.drop_column('timezone')
        batch_op.drop_column('service_hours')
        batch_op.drop_column('subspecialties')
        batch_op.drop_column('modalities')
        batch_op.drop_column('code')

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_status_escalate')
        batch_op.drop_index('ix_cases_status_deadline')
        batch_op.drop_index('ix_cases_reader_worklist')
        batch_op.drop_index('ix_cases_lease')
        batch_op.drop_index('ix_cases_centre_worklist')
        batch_op.create_index(batch_op.f('ix_cases_centre_worklist'), ['centre_id', 'status', 'priority_rank', 'arrived_at'], unique=False)
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('claim_kind')
        batch_op.drop_column('second_opinion')
        batch_op.drop_column('escalations')
        batch_op.drop_column('sla_breached_at')
        batch_op.drop_column('sla_warned_at')
        batch_op.drop_column('escalate_at')
        batch_op.drop_column('sla_deadline')
        batch_op.drop_column('subspecialty')
        batch_op.drop_column('body_part')

    op.drop_table('report_cosignatures')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_webhook_id'))
        batch_op.drop_index('ix_webhook_deliveries_status')

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index('ix_referrals_created')
        batch_op.drop_index(batch_op.f('ix_referrals_case_id'))

    op.drop_table('referrals')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_unread')

    op.drop_table('notifications')
    op.drop_table('routing_rules')
    op.drop_table('webhooks')
    op.drop_table('report_templates')
