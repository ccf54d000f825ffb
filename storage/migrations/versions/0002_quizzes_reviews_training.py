"""Quizzes, answers, spaced repetition, training runs and adapters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quiz_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("time_limit_s", sa.Integer(), nullable=True),
        sa.Column("passing_score", sa.Float(), nullable=True),
        sa.Column("attempts_allowed", sa.Integer(), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_quiz_sets_owner_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_quiz_sets"),
    )
    op.create_index("ix_quiz_sets_owner_id", "quiz_sets", ["owner_id"])
    op.create_table(
        "quiz_set_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("quiz_set_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["quiz_set_id"], ["quiz_sets.id"], name="fk_quiz_set_items_quiz_set_id_quiz_sets", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_quiz_set_items"),
        sa.UniqueConstraint("quiz_set_id", "position", name="uq_quiz_set_items_quiz_set_id_position"),
    )
    op.create_table(
        "item_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("editor_id", sa.Integer(), nullable=False),
        sa.Column("question", sa.Text(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=True),
        sa.Column("explanation", sa.Text(), nullable=True),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["editor_id"], ["users.id"], name="fk_item_overrides_editor_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_item_overrides"),
    )
    op.create_index("ix_item_overrides_item_id", "item_overrides", ["item_id"])
    op.create_table(
        "imported_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("importer_id", sa.Integer(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["importer_id"], ["users.id"], name="fk_imported_items_importer_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_imported_items"),
        sa.UniqueConstraint("item_id", name="uq_imported_items_item_id"),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("quiz_set_id", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("time_limit_s", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_attempts_user_id_users"),
        sa.ForeignKeyConstraint(
            ["quiz_set_id"], ["quiz_sets.id"], name="fk_attempts_quiz_set_id_quiz_sets", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
    )
    op.create_index("ix_attempts_quiz_set_id", "attempts", ["quiz_set_id"])
    op.create_index("ix_attempts_user_id_started_at", "attempts", ["user_id", "started_at"])
    op.create_table(
        "attempt_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("chosen", sa.String(32), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("free_text", sa.Text(), nullable=True),
        sa.Column("self_grade", sa.String(16), nullable=True),
        sa.Column("rouge_l", sa.Float(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_attempt_items_attempt_id_attempts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_attempt_items"),
        sa.UniqueConstraint("attempt_id", "position", name="uq_attempt_items_attempt_id_position"),
    )
    op.create_index("ix_attempt_items_item_id", "attempt_items", ["item_id"])
    op.create_table(
        "review_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_review_cards_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_review_cards"),
        sa.UniqueConstraint("user_id", "item_id", name="uq_review_cards_user_id_item_id"),
    )
    op.create_index("ix_review_cards_user_id_due", "review_cards", ["user_id", "due"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_dir", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_by_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final_metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["started_by_id"], ["users.id"], name="fk_training_runs_started_by_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_training_runs"),
        sa.UniqueConstraint("run_dir", name="uq_training_runs_run_dir"),
    )
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("base_model", sa.String(512), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("training_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["training_run_id"],
            ["training_runs.id"],
            name="fk_adapters_training_run_id_training_runs",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_adapters"),
        sa.UniqueConstraint("path", name="uq_adapters_path"),
    )


def downgrade() -> None:
    for table in (
        "adapters",
        "training_runs",
        "review_cards",
        "attempt_items",
        "attempts",
        "imported_items",
        "item_overrides",
        "quiz_set_items",
        "quiz_sets",
    ):
        op.drop_table(table)
