"""Case-run references: the retrieved passages shown beside a case study run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL needs a default for the rows already there: runs saved before references existed had none.
    with op.batch_alter_table("case_runs") as batch:
        batch.add_column(sa.Column("references", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("case_runs") as batch:
        batch.drop_column("references")
