"""Every database table of the app, in one module (SQLModel over SQLAlchemy 2).

The schema is owned by the Alembic migrations in ``storage/migrations/``: a change here needs a new
revision (``python -m storage.migrate revision -m "..." --autogenerate``), and
``tests/storage/test_migrations.py`` fails while the two disagree.

Conventions:
- Times are timezone-aware UTC (:class:`UTCDateTime`); a naive value is taken to be UTC.
- Enumerated values (roles, statuses, modes) are short strings validated by the repository
  functions, so a later issue can add a value without a table rebuild.
- Foreign keys to ``users`` never cascade: accounts are deactivated, not deleted, and nobody's work
  disappears with them. Deleting an attempt deletes its answers; deleting a quiz set keeps the
  attempts made on it (their ``quiz_set_id`` becomes NULL).
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Deterministic constraint names, so later migrations (SQLite batch mode included) can refer to them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("student", "instructor", "admin")
CASE_RUN_STATUSES = ("completed", "stopped", "error")
QUIZ_MODES = ("tutor", "exam")
ATTEMPT_STATUSES = ("in_progress", "submitted", "timed_out")
SELF_GRADES = ("correct", "partly", "wrong")
LATE_POLICIES = ("accept", "refuse")
"""What an assignment does with a submission after its due date: accept it marked late, or refuse it."""
DEFAULT_RETENTION = 0.9
TRAINING_STATUSES = ("queued", "running", "stopping", "stopped", "completed", "failed", "cancelled", "interrupted")

ITEM_ID = 128
"""Length of a bank item id (``<source>:<hash>``, see ``core.records.stable_id``)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive, PostgreSQL as timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite compares datetimes as text: one naive UTC spelling keeps the ordering right.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime(), nullable=False)


class User(SQLModel, table=True):
    """An account. The role here is the only source of authority (never an identity-provider claim)."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_type=String(64), unique=True, nullable=False)
    """Lower-case; letters, digits and ``._@-``."""
    password_hash: str | None = Field(default=None, sa_type=String(255), repr=False)
    """Argon2id hash; NULL for accounts that only sign in through OpenID Connect."""
    role: str = Field(default="student", sa_type=String(16), nullable=False)
    active: bool = Field(default=True, nullable=False)
    created_at: datetime = _created()
    acknowledged_disclaimer_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    oidc_subject: str | None = Field(default=None, sa_type=String(512), unique=True)
    """``<issuer>|<sub>`` of the linked OpenID Connect identity."""


class CaseRun(SQLModel, table=True):
    """One case-study generation: the case, what the model produced, and how."""

    __tablename__ = "case_runs"
    __table_args__ = (Index("ix_case_runs_user_id_created_at", "user_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", nullable=False)
    created_at: datetime = _created()
    case_text: str = Field(sa_type=Text(), nullable=False)
    reasoning: str = Field(default="", sa_type=Text(), nullable=False)
    answer: str = Field(default="", sa_type=Text(), nullable=False)
    base_model: str = Field(default="", sa_type=String(512), nullable=False)
    adapter: str = Field(default="", sa_type=String(1024), nullable=False)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON(), nullable=False)
    """Generation settings: max_new_tokens, temperature, top_p, ..."""
    timings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON(), nullable=False)
    """``ttft_s``, ``tokens``, ``tokens_per_s``, ``total_s``."""
    source_item_id: str | None = Field(default=None, sa_type=String(ITEM_ID))
    """Bank/test-split record id when the case came from the example picker."""
    status: str = Field(default="completed", sa_type=String(16), nullable=False)
    references: list[dict[str, Any]] = Field(
        default_factory=list, sa_type=JSON(), nullable=False, sa_column_kwargs={"server_default": "[]"}
    )
    """Reference passages shown beside the run (``core.retrieval.Passage.to_dict()``), best first.

    The server default fills the rows saved before references existed (migration 0004).
    """


class GenerationEvent(SQLModel, table=True):
    """One model generation by a user, for the hourly rate limit (kept when the history row is deleted)."""

    __tablename__ = "generation_events"
    __table_args__ = (Index("ix_generation_events_user_id_created_at", "user_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", nullable=False)
    kind: str = Field(default="case_study", sa_type=String(32), nullable=False)
    created_at: datetime = _created()


class QuizSet(SQLModel, table=True):
    """An instructor's quiz: an ordered list of bank items plus how it is taken."""

    __tablename__ = "quiz_sets"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", nullable=False, index=True)
    title: str = Field(sa_type=String(200), nullable=False)
    description: str = Field(default="", sa_type=Text(), nullable=False)
    mode: str = Field(default="tutor", sa_type=String(16), nullable=False)
    time_limit_s: int | None = None
    passing_score: float | None = None
    """Fraction of items correct needed to pass, 0..1."""
    attempts_allowed: int | None = None
    """None means unlimited."""
    published: bool = Field(default=False, nullable=False)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class QuizSetItem(SQLModel, table=True):
    __tablename__ = "quiz_set_items"
    __table_args__ = (UniqueConstraint("quiz_set_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    quiz_set_id: int = Field(foreign_key="quiz_sets.id", ondelete="CASCADE", nullable=False)
    item_id: str = Field(sa_type=String(ITEM_ID), nullable=False)
    position: int = Field(nullable=False)


class ItemOverride(SQLModel, table=True):
    """An instructor's edit of a bank item; the newest row per item wins, the bank file is never changed."""

    __tablename__ = "item_overrides"

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(sa_type=String(ITEM_ID), nullable=False, index=True)
    editor_id: int = Field(foreign_key="users.id", nullable=False)
    question: str | None = Field(default=None, sa_type=Text())
    options: dict[str, str] | None = Field(default=None, sa_type=JSON())
    explanation: str | None = Field(default=None, sa_type=Text())
    retired: bool = Field(default=False, nullable=False)
    created_at: datetime = _created()


class ImportedItem(SQLModel, table=True):
    """A quiz item an instructor imported, stored as a ``core.records.Record`` dict."""

    __tablename__ = "imported_items"

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(sa_type=String(ITEM_ID), unique=True, nullable=False)
    importer_id: int = Field(foreign_key="users.id", nullable=False)
    record: dict[str, Any] = Field(sa_type=JSON(), nullable=False)
    created_at: datetime = _created()


class Attempt(SQLModel, table=True):
    """One sitting of a quiz (a published set, or ad hoc when ``quiz_set_id`` is NULL)."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_user_id_started_at", "user_id", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", nullable=False)
    quiz_set_id: int | None = Field(default=None, foreign_key="quiz_sets.id", ondelete="SET NULL", index=True)
    mode: str = Field(default="tutor", sa_type=String(16), nullable=False)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON(), nullable=False)
    """How an ad-hoc quiz was sampled (sources, subjects, step, count, unseen/missed), or the set's settings."""
    started_at: datetime = _created()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    time_limit_s: int | None = None
    score: float | None = None
    """Fraction correct, 0..1, set when the attempt is finished."""
    status: str = Field(default="in_progress", sa_type=String(16), nullable=False)
    assignment_id: int | None = Field(default=None, foreign_key="assignments.id", ondelete="SET NULL", index=True)
    """The class assignment this attempt is for (migration 0005); NULL for practice and plain quiz sets."""


class AttemptItem(SQLModel, table=True):
    """One question of an attempt and the answer given (saved the moment it is given)."""

    __tablename__ = "attempt_items"
    __table_args__ = (UniqueConstraint("attempt_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int = Field(foreign_key="attempts.id", ondelete="CASCADE", nullable=False)
    position: int = Field(nullable=False)
    item_id: str = Field(sa_type=String(ITEM_ID), nullable=False, index=True)
    chosen: str | None = Field(default=None, sa_type=String(32))
    """Option key chosen (multiple choice)."""
    correct: bool | None = None
    flagged: bool = Field(default=False, nullable=False)
    free_text: str | None = Field(default=None, sa_type=Text())
    self_grade: str | None = Field(default=None, sa_type=String(16))
    rouge_l: float | None = None
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class ReviewCard(SQLModel, table=True):
    """A user's spaced-repetition card for one item (``fsrs.Card.to_dict()``)."""

    __tablename__ = "review_cards"
    __table_args__ = (
        UniqueConstraint("user_id", "item_id"),
        Index("ix_review_cards_user_id_due", "user_id", "due"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", nullable=False)
    item_id: str = Field(sa_type=String(ITEM_ID), nullable=False)
    card: dict[str, Any] = Field(sa_type=JSON(), nullable=False)
    due: datetime = Field(sa_type=UTCDateTime(), nullable=False)
    updated_at: datetime = _created()


class TrainingRun(SQLModel, table=True):
    """A fine-tuning job launched from the app (the trainer writes files; the app records them here)."""

    __tablename__ = "training_runs"

    id: int | None = Field(default=None, primary_key=True)
    run_dir: str = Field(sa_type=String(1024), unique=True, nullable=False)
    status: str = Field(default="running", sa_type=String(16), nullable=False)
    pid: int | None = None
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON(), nullable=False)
    started_by_id: int | None = Field(default=None, foreign_key="users.id")
    started_at: datetime = _created()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    final_metrics: dict[str, Any] | None = Field(default=None, sa_type=JSON())


class AdapterRecord(SQLModel, table=True):
    """A LoRA adapter folder known to the app; at most one is active."""

    __tablename__ = "adapters"

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(sa_type=String(1024), unique=True, nullable=False)
    name: str = Field(sa_type=String(200), nullable=False)
    base_model: str = Field(default="", sa_type=String(512), nullable=False)
    card: dict[str, Any] = Field(default_factory=dict, sa_type=JSON(), nullable=False)
    active: bool = Field(default=False, nullable=False)
    training_run_id: int | None = Field(default=None, foreign_key="training_runs.id", ondelete="SET NULL")
    created_at: datetime = _created()


class LoginFailure(SQLModel, table=True):
    """One sign-in attempt that has not (yet) succeeded, for the login throttle (``storage.login_throttle``).

    Keyed by the username as typed (normalised), not by account, so unknown usernames are throttled
    the same way and the table never says which accounts exist. Rows older than the throttle's window
    are pruned; a successful sign-in or a password reset deletes the username's rows.
    """

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_created_at", "username", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_type=String(128), nullable=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime(), nullable=False, index=True)


class StudyClass(SQLModel, table=True):
    """An instructor's class: students enrolled by the instructor or by entering its join code."""

    __tablename__ = "classes"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", nullable=False, index=True)
    name: str = Field(sa_type=String(200), nullable=False)
    join_code: str = Field(sa_type=String(16), unique=True, nullable=False)
    created_at: datetime = _created()


class ClassMember(SQLModel, table=True):
    """A student's enrolment in a class (a student may be in several)."""

    __tablename__ = "class_members"
    __table_args__ = (UniqueConstraint("class_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    class_id: int = Field(foreign_key="classes.id", ondelete="CASCADE", nullable=False)
    user_id: int = Field(foreign_key="users.id", nullable=False, index=True)
    joined_at: datetime = _created()


class Assignment(SQLModel, table=True):
    """A published quiz set given to a class, with an opening time, a due date and how it is taken."""

    __tablename__ = "assignments"

    id: int | None = Field(default=None, primary_key=True)
    class_id: int = Field(foreign_key="classes.id", ondelete="CASCADE", nullable=False, index=True)
    quiz_set_id: int = Field(foreign_key="quiz_sets.id", ondelete="CASCADE", nullable=False, index=True)
    title: str = Field(sa_type=String(200), nullable=False)
    opens_at: datetime = Field(sa_type=UTCDateTime(), nullable=False)
    due_at: datetime = Field(sa_type=UTCDateTime(), nullable=False)
    mode: str = Field(default="tutor", sa_type=String(16), nullable=False)
    time_limit_s: int | None = None
    attempts_allowed: int | None = None
    """None means unlimited."""
    late_policy: str = Field(default="accept", sa_type=String(16), nullable=False)
    created_by_id: int = Field(foreign_key="users.id", nullable=False)
    created_at: datetime = _created()


class ReviewSettings(SQLModel, table=True):
    """A user's FSRS settings: desired retention and, once optimised, parameters fitted to their own reviews."""

    __tablename__ = "review_settings"

    user_id: int = Field(foreign_key="users.id", primary_key=True)
    desired_retention: float = Field(default=DEFAULT_RETENTION, nullable=False)
    parameters: list[float] | None = Field(default=None, sa_type=JSON())
    """None: fsrs's default parameters."""
    optimised_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    reviews_fitted: int | None = None
    updated_at: datetime = _created()
