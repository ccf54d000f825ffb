"""Classes, enrolments, assignments (and attempts.assignment_id), per-user FSRS review settings.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("join_code", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_classes_owner_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_classes"),
        sa.UniqueConstraint("join_code", name="uq_classes_join_code"),
    )
    op.create_index("ix_classes_owner_id", "classes", ["owner_id"])
    op.create_table(
        "class_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["class_id"], ["classes.id"], name="fk_class_members_class_id_classes",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_class_members_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_class_members"),
        sa.UniqueConstraint("class_id", "user_id", name="uq_class_members_class_id_user_id"),
    )
    op.create_index("ix_class_members_user_id", "class_members", ["user_id"])
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("quiz_set_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("time_limit_s", sa.Integer(), nullable=True),
        sa.Column("attempts_allowed", sa.Integer(), nullable=True),
        sa.Column("late_policy", sa.String(16), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["class_id"], ["classes.id"], name="fk_assignments_class_id_classes",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["quiz_set_id"], ["quiz_sets.id"], name="fk_assignments_quiz_set_id_quiz_sets",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name="fk_assignments_created_by_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
    )
    op.create_index("ix_assignments_class_id", "assignments", ["class_id"])
    op.create_index("ix_assignments_quiz_set_id", "assignments", ["quiz_set_id"])
    op.create_table(
        "review_settings",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("desired_retention", sa.Float(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=True),
        sa.Column("optimised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviews_fitted", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_review_settings_user_id_users"),
        sa.PrimaryKeyConstraint("user_id", name="pk_review_settings"),
    )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("assignment_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_attempts_assignment_id_assignments", "assignments", ["assignment_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_attempts_assignment_id", ["assignment_id"])


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_assignment_id")
        batch.drop_constraint("fk_attempts_assignment_id_assignments", type_="foreignkey")
        batch.drop_column("assignment_id")
    op.drop_table("review_settings")
    op.drop_table("assignments")
    op.drop_table("class_members")
    op.drop_table("classes")
