"""analytics: indexes for TAT aggregates, consortium figures, priors and referral lists

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_cases_arrived_at", "cases", ["arrived_at"])
    op.create_index("ix_case_events_kind_at", "case_events", ["kind", "at"])
    op.create_index("ix_patients_patient_id", "patients", ["patient_id"])
    op.create_index("ix_referrals_from", "referrals", ["from_facility_id", "created_at"])
    op.create_index("ix_referrals_to", "referrals", ["to_facility_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_referrals_to", table_name="referrals")
    op.drop_index("ix_referrals_from", table_name="referrals")
    op.drop_index("ix_patients_patient_id", table_name="patients")
    op.drop_index("ix_case_events_kind_at", table_name="case_events")
    op.drop_index("ix_cases_arrived_at", table_name="cases")
