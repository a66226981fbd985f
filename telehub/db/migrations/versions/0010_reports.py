"""reports: the default report templates (CT, MR, CR, DX, US, any imaging, ECG) as data

No schema change: the reports, co-signature and template tables came with 0008. The defaults
are inserted once here (codes already present are left alone) and removed on downgrade.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from telehub.report_templates import DEFAULT_TEMPLATES

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

templates = sa.table(
    'report_templates',
    sa.column('id', sa.Integer),
    sa.column('code', sa.String),
    sa.column('name', sa.String),
    sa.column('kind', sa.String),
    sa.column('modality', sa.String),
    sa.column('language', sa.String),
    sa.column('sections', sa.JSON),
    sa.column('active', sa.Boolean),
)


def upgrade() -> None:
    bind = op.get_bind()
    present = set(bind.execute(sa.select(templates.c.code)).scalars())
    rows = [
        {**t, 'language': 'zh-CN', 'active': True}
        for t in DEFAULT_TEMPLATES
        if t['code'] not in present
    ]
    if rows:
        op.bulk_insert(templates, rows)


def downgrade() -> None:
    op.execute(
        templates.delete().where(templates.c.code.in_([t['code'] for t in DEFAULT_TEMPLATES]))
    )
