"""Accounts and case-study history: users, case_runs, generation_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_disclaimer_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("oidc_subject", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("oidc_subject", name="uq_users_oidc_subject"),
    )
    op.create_table(
        "case_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("case_text", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("base_model", sa.String(512), nullable=False),
        sa.Column("adapter", sa.String(1024), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("source_item_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_case_runs_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_case_runs"),
    )
    op.create_index("ix_case_runs_user_id_created_at", "case_runs", ["user_id", "created_at"])
    op.create_table(
        "generation_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_generation_events_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_generation_events"),
    )
    op.create_index("ix_generation_events_user_id_created_at", "generation_events", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_table("generation_events")
    op.drop_table("case_runs")
    op.drop_table("users")
