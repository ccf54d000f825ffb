"""Quiz logic: item sampling, instructor overrides, grading, exam timing, scoring and analytics.

Pure functions over :class:`core.records.Record` and small dataclasses; no Streamlit, no storage.
The pages load rows from storage, call these functions and save what they return. Spaced
repetition lives in :mod:`core.review`, CSV/JSON import and export in :mod:`core.quiz_import`,
figures in :mod:`core.charts`.

Times: every function takes ``now`` explicitly (never reads the clock) so that tests and resumed
attempts agree. Naive datetimes are taken to be UTC, because SQLite hands stored datetimes back
without a time zone.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from core.records import Record, mcq_answer

Mode = Literal["tutor", "exam"]
MODES: tuple[Mode, ...] = ("tutor", "exam")

STEP_TAGS: tuple[str, ...] = ("step1", "step2&3")
"""USMLE Step tags carried in ``Record.tags`` (MedQA items tagged from MedReason's ``meta_info``)."""

SelfGrade = Literal["correct", "partly", "wrong"]
SELF_GRADE_SCORES: dict[str, float] = {"correct": 1.0, "partly": 0.5, "wrong": 0.0}
"""Score of an open-ended item from the student's self-grade."""


# --------------------------------------------------------------------------- sampling


class NotEnoughItemsError(ValueError):
    """Fewer items match the filters than were asked for.

    ``available`` is how many do match, so a page can offer "start with the {available} that match"
    by calling :func:`sample_items` again with ``n=available``.
    """

    def __init__(self, requested: int, available: int) -> None:
        self.requested = requested
        self.available = available
        super().__init__(
            f"Only {available} item(s) match these filters, but {requested} were requested; "
            "widen the filters or ask for fewer questions."
        )


def is_flagged(record: Record) -> bool:
    """True for an item carrying any quality flag (``ocr-suspect`` and the like)."""
    return bool(record.flags)


def step_of(record: Record) -> str | None:
    """The item's USMLE Step tag (``step1`` / ``step2&3``), or None."""
    return next((t for t in record.tags if t in STEP_TAGS), None)


def facet_matcher(
    *,
    sources: Collection[str] | None = None,
    subjects: Collection[str] | None = None,
    steps: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
) -> Callable[[Record], bool]:
    """Whether a record's source, subject, kind and Step tags pass the filters (``None`` lets all through).

    Raises ``ValueError`` for a Step tag that is not one of :data:`STEP_TAGS`.
    """
    steps_set = None if steps is None else set(steps)
    unknown_steps = (steps_set or set()) - set(STEP_TAGS)
    if unknown_steps:
        raise ValueError(f"Unknown Step tag(s) {sorted(unknown_steps)}; expected one of {list(STEP_TAGS)}.")

    def matches(rec: Record) -> bool:
        return ((sources is None or rec.source in sources) and (subjects is None or rec.subject in subjects)
                and (kinds is None or rec.kind in kinds)
                and (steps_set is None or bool(steps_set.intersection(rec.tags))))

    return matches


def filter_items(
    bank: Iterable[Record],
    *,
    sources: Collection[str] | None = None,
    subjects: Collection[str] | None = None,
    steps: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    exclude_ids: Collection[str] = (),
    only_ids: Collection[str] | None = None,
    include_flagged: bool = False,
    retired_ids: Collection[str] = (),
) -> list[Record]:
    """The items of ``bank`` that pass every filter, one per id, sorted by id.

    A filter of ``None`` lets everything through; an empty collection lets nothing through.
    ``subjects`` matches ``Record.subject`` exactly, so ``""`` selects items without a subject.
    ``steps`` matches items carrying any of the given Step tags. Retired items never pass.
    """
    exclude = set(exclude_ids) | set(retired_ids)
    only = None if only_ids is None else set(only_ids)
    matches = facet_matcher(sources=sources, subjects=subjects, steps=steps, kinds=kinds)
    picked: dict[str, Record] = {}
    for rec in bank:
        if rec.id in picked or rec.id in exclude:
            continue
        if only is not None and rec.id not in only:
            continue
        if not matches(rec):
            continue
        if not include_flagged and is_flagged(rec):
            continue
        picked[rec.id] = rec
    # Sorting makes sampling independent of the order the bank was loaded in.
    return [picked[k] for k in sorted(picked)]


def sample_items(bank: Sequence[Record], *, n: int, seed: int, **filters: Any) -> list[Record]:
    """``n`` distinct items drawn at random from those passing :func:`filter_items` (``filters`` are its keywords).

    Deterministic: the same bank (in any order), filters and ``seed`` give the same items in the
    same order. For "only unseen" pass the seen ids as ``exclude_ids``; for "only previously
    missed" or "due for review" pass those ids as ``only_ids``.

    Raises :class:`NotEnoughItemsError` (carrying ``available``) when fewer than ``n`` match,
    rather than silently returning a shorter quiz; ``ValueError`` when ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"The number of questions must be at least 1 (got {n}).")
    pool = filter_items(bank, **filters)
    if len(pool) < n:
        raise NotEnoughItemsError(n, len(pool))
    return random.Random(seed).sample(pool, n)


@dataclass(frozen=True)
class FilterOptions:
    """What the ad-hoc quiz form can offer, each value with its item count."""

    sources: dict[str, int]
    subjects: dict[str, int]
    """Subject -> count; ``""`` counts items without a subject (MMLU rows carry none)."""
    steps: dict[str, int]
    kinds: dict[str, int]
    flagged: int
    """Items carrying a quality flag (offered only with ``include_flagged``)."""
    total: int


def available_filters(
    bank: Iterable[Record], *, include_flagged: bool = False, retired_ids: Collection[str] = ()
) -> FilterOptions:
    """Counts per source, subject, Step and kind over the items a quiz could use, keys sorted.

    Flagged items are counted in ``flagged`` always, and in the other counts only when
    ``include_flagged`` (matching what :func:`sample_items` would draw from).
    """
    retired = set(retired_ids)
    seen: set[str] = set()
    sources: Counter[str] = Counter()
    subjects: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    flagged = total = 0
    for rec in bank:
        if rec.id in seen or rec.id in retired:
            continue
        seen.add(rec.id)
        if is_flagged(rec):
            flagged += 1
            if not include_flagged:
                continue
        total += 1
        sources[rec.source] += 1
        subjects[rec.subject] += 1
        kinds[rec.kind] += 1
        for tag in rec.tags:
            if tag in STEP_TAGS:
                steps[tag] += 1
    return FilterOptions(
        sources=dict(sorted(sources.items())),
        subjects=dict(sorted(subjects.items())),
        steps=dict(sorted(steps.items())),
        kinds=dict(sorted(kinds.items())),
        flagged=flagged,
        total=total,
    )


# --------------------------------------------------------------------------- overrides

OVERRIDE_FIELDS: tuple[str, ...] = ("question", "options", "correct", "explanation")
"""Fields an instructor may override; everything else (id, source, license, ...) stays the original's."""

MAX_OPTIONS = 10


class OverrideError(ValueError):
    """An override that cannot be applied; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid override: " + "; ".join(problems))


_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""What an option key may be."""


def validate_override(record: Record, override: Mapping[str, Any]) -> list[str]:
    """Every problem with applying ``override`` to ``record`` (empty when it is fine)."""
    problems: list[str] = []
    unknown = sorted(set(override) - set(OVERRIDE_FIELDS))
    if unknown:
        problems.append(f"unknown field(s) {unknown}; allowed: {list(OVERRIDE_FIELDS)}")
    if "question" in override:
        q = override["question"]
        if not isinstance(q, str) or not q.strip():
            problems.append("question must be non-empty text")
    if "explanation" in override and not isinstance(override["explanation"], str):
        problems.append("explanation must be text")
    options = record.options
    if "options" in override:
        if record.kind != "mcq":
            problems.append("options can only be overridden on a multiple-choice item")
        opts = override["options"]
        if (
            not isinstance(opts, Mapping)
            or not 2 <= len(opts) <= MAX_OPTIONS
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
        ):
            problems.append(f"options must map 2-{MAX_OPTIONS} letters to text")
            opts = None
        else:
            if any(not v.strip() for v in opts.values()):
                problems.append("every option needs text")
            if any(k not in _LETTERS for k in opts):
                problems.append("option keys must be single capital letters")
        options = opts
    if "correct" in override:
        if record.kind != "mcq":
            problems.append("correct can only be overridden on a multiple-choice item")
        elif not isinstance(override["correct"], str):
            problems.append("correct must be an option letter")
    correct = override.get("correct", record.correct)
    if record.kind == "mcq" and options is not None and isinstance(correct, str) and correct not in options:
        problems.append(f"correct option {correct!r} is not among the options {list(options)}")
    return problems


def apply_override(record: Record, override: Mapping[str, Any] | None) -> Record:
    """The item as students see it: ``record`` with the instructor's edits applied.

    ``override`` maps any of :data:`OVERRIDE_FIELDS` to new values (``None`` or ``{}``: no edit).
    Returns a new Record; ``record`` itself is never modified, so the original stays viewable.
    For a multiple-choice item ``answer`` is recomputed as the text of the (new) correct option.
    Raises :class:`OverrideError` listing every problem.
    """
    if not override:
        return record
    problems = validate_override(record, override)
    if problems:
        raise OverrideError(problems)
    changes: dict[str, Any] = {k: override[k] for k in OVERRIDE_FIELDS if k in override}
    if "options" in changes:
        changes["options"] = dict(changes["options"])
    edited = dataclasses.replace(record, **changes)
    if edited.kind == "mcq" and edited.options and edited.correct in edited.options:
        edited = dataclasses.replace(edited, answer=mcq_answer(edited.options, edited.correct))
    # dataclasses.replace shares list fields; copy them so edits to one never leak to the other.
    return dataclasses.replace(edited, tags=list(record.tags), flags=list(record.flags))


def apply_overrides(
    bank: Iterable[Record],
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    retired_ids: Collection[str] = (),
) -> list[Record]:
    """The bank as students see it: overrides applied, retired items dropped, order kept."""
    retired = set(retired_ids)
    return [apply_override(r, overrides.get(r.id)) for r in bank if r.id not in retired]


@dataclass(frozen=True)
class ResolvedItems:
    """The items of a stored quiz set, looked up in the bank."""

    items: list[Record]
    """Usable items in quiz-set order, overrides applied."""
    retired: list[str]
    """Ids left out because the item was retired."""
    missing: list[str]
    """Ids left out because the bank no longer has them."""


def resolve_items(
    item_ids: Sequence[str],
    bank: Mapping[str, Record],
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    retired_ids: Collection[str] = (),
) -> ResolvedItems:
    """Turn a quiz set's ordered item ids into Records, reporting retired and missing ones."""
    overrides = overrides or {}
    retired = set(retired_ids)
    items: list[Record] = []
    gone_retired: list[str] = []
    missing: list[str] = []
    for item_id in dict.fromkeys(item_ids):
        if item_id in retired:
            gone_retired.append(item_id)
        elif item_id not in bank:
            missing.append(item_id)
        else:
            items.append(apply_override(bank[item_id], overrides.get(item_id)))
    return ResolvedItems(items=items, retired=gone_retired, missing=missing)


# --------------------------------------------------------------------------- grading


def grade_mcq(record: Record, chosen: str | None) -> bool:
    """Whether ``chosen`` (an option key, any case; None = unanswered) is the item's correct key."""
    if record.kind != "mcq" or not record.correct:
        raise ValueError(f"Item {record.id} is not a multiple-choice item with a correct key.")
    if not chosen:
        return False
    return chosen.strip().upper() == record.correct.strip().upper()


def self_grade_score(grade: str) -> float:
    """Score of an open-ended answer from the student's self-grade: correct 1, partly 0.5, wrong 0."""
    try:
        return SELF_GRADE_SCORES[grade]
    except KeyError:
        raise ValueError(f"Self-grade must be one of {list(SELF_GRADE_SCORES)}, got {grade!r}.") from None


# --------------------------------------------------------------------------- timing and modes


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Mode must be one of {list(MODES)}, got {mode!r}.")


def _check_limit(time_limit_s: float | None) -> None:
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"A time limit must be positive seconds or None (untimed), got {time_limit_s}.")


def elapsed_s(started_at: datetime, now: datetime) -> float:
    """Seconds from ``started_at`` to ``now`` (never negative: clock skew reads as zero)."""
    return max(0.0, (as_utc(now) - as_utc(started_at)).total_seconds())


def remaining_s(started_at: datetime, time_limit_s: float | None, now: datetime) -> float | None:
    """Seconds left on the exam clock, floored at 0; None for an untimed attempt.

    Computed from the stored start time, so a reload or a resumed attempt shows the true time left.
    """
    _check_limit(time_limit_s)
    if time_limit_s is None:
        return None
    return max(0.0, time_limit_s - elapsed_s(started_at, now))


def is_timed_out(started_at: datetime, time_limit_s: float | None, now: datetime) -> bool:
    """True once a timed attempt has used all its time (exactly at the limit counts as out)."""
    left = remaining_s(started_at, time_limit_s, now)
    return left is not None and left <= 0


def should_auto_submit(
    *, mode: str, started_at: datetime, time_limit_s: float | None, now: datetime, submitted: bool
) -> bool:
    """Submit on the student's behalf: an unsubmitted exam-mode attempt whose time is up.

    Tutor mode is never timed out: its time limit (if any) is shown as a guide only.
    """
    _check_mode(mode)
    return mode == "exam" and not submitted and is_timed_out(started_at, time_limit_s, now)


def feedback_visible(mode: str, *, submitted: bool, answered: bool) -> bool:
    """Whether the correct option and explanation of one item may be shown.

    Tutor mode: as soon as the item is answered. Exam mode: only after the attempt is submitted.
    """
    _check_mode(mode)
    if submitted:
        return True
    return mode == "tutor" and answered


def answer_locked(mode: str, *, submitted: bool, answered: bool, timed_out: bool = False) -> bool:
    """Whether the student may no longer change an item's answer.

    Always after submission. Tutor mode: once answered (the feedback has been seen). Exam mode:
    answers stay changeable until submission or time-out.
    """
    _check_mode(mode)
    if submitted:
        return True
    if mode == "tutor":
        return answered
    return timed_out


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Answer:
    """A student's saved answer to one item of an attempt."""

    item_id: str
    choice: str | None = None
    """Option key chosen (multiple choice); None while unanswered."""
    text: str = ""
    """Free-text answer (open-ended)."""
    self_grade: str | None = None
    """``correct`` / ``partly`` / ``wrong`` (open-ended), None until the student grades it."""
    flagged: bool = False
    """Marked for review by the student."""


@dataclass(frozen=True)
class ItemResult:
    """How one item of an attempt went."""

    item_id: str
    kind: str
    subject: str
    source: str
    answered: bool
    score: float
    """1 correct, 0.5 partly (self-graded open item), 0 wrong or unanswered."""
    chosen: str | None
    correct_key: str | None
    self_grade: str | None
    flagged: bool

    @property
    def is_correct(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True)
class GroupScore:
    """Score over the items of one subject or source."""

    n: int
    score: float

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.n if self.n else 0.0


@dataclass(frozen=True)
class AttemptResult:
    """The scored attempt: what the results page shows and what analytics aggregate."""

    items: list[ItemResult]
    raw_score: float
    n_items: int
    percent: float
    """0-100."""
    by_subject: dict[str, GroupScore]
    """Subject -> score; ``""`` holds items without a subject."""
    by_source: dict[str, GroupScore]
    time_taken_s: float | None
    passing_score: float | None
    passed: bool | None
    """None when the quiz has no passing score."""

    @property
    def wrong(self) -> list[ItemResult]:
        """Items not fully correct (wrong, partly right or unanswered), in quiz order."""
        return [r for r in self.items if not r.is_correct]

    @property
    def unanswered(self) -> list[ItemResult]:
        return [r for r in self.items if not r.answered]

    @property
    def ungraded(self) -> list[ItemResult]:
        """Open-ended items answered but not yet self-graded (scored 0 until they are)."""
        return [r for r in self.items if r.kind == "open" and r.answered and r.self_grade is None]


def _check_passing(passing_score: float | None) -> None:
    if passing_score is not None and not 0 <= passing_score <= 100:
        raise ValueError(f"Passing score is a percentage 0-100, got {passing_score}.")


def grade_item(record: Record, answer: Answer | None) -> ItemResult:
    """Score one item: multiple choice by the key, open-ended by the self-grade."""
    if record.kind == "mcq":
        chosen = answer.choice if answer else None
        answered = bool(chosen)
        score = 1.0 if grade_mcq(record, chosen) else 0.0
    else:
        chosen = None
        answered = bool(answer and (answer.text.strip() or answer.self_grade))
        score = self_grade_score(answer.self_grade) if answer and answer.self_grade else 0.0
    return ItemResult(
        item_id=record.id,
        kind=record.kind,
        subject=record.subject,
        source=record.source,
        answered=answered,
        score=score,
        chosen=chosen,
        correct_key=record.correct if record.kind == "mcq" else None,
        self_grade=answer.self_grade if answer and record.kind != "mcq" else None,
        flagged=bool(answer and answer.flagged),
    )


def score_attempt(
    items: Sequence[Record],
    answers: Mapping[str, Answer] | Iterable[Answer],
    *,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    time_limit_s: float | None = None,
    passing_score: float | None = None,
) -> AttemptResult:
    """Score an attempt over ``items`` (quiz order) from the saved ``answers``.

    ``answers`` may be a mapping item id -> Answer or an iterable of Answers; answers to items not
    in ``items`` (e.g. an item retired mid-attempt) are ignored. ``time_taken_s`` is from start to
    finish, capped at the time limit (an exam auto-submitted late, after a reload, still took only
    the limit). ``passing_score`` is a percentage; ``passed`` is ``percent >= passing_score``.
    """
    _check_passing(passing_score)
    _check_limit(time_limit_s)
    ids = [r.id for r in items]
    dupes = sorted(k for k, c in Counter(ids).items() if c > 1)
    if dupes:
        raise ValueError(f"An attempt lists items more than once: {dupes}.")
    by_id = dict(answers) if isinstance(answers, Mapping) else {a.item_id: a for a in answers}
    results = [grade_item(r, by_id.get(r.id)) for r in items]
    raw = sum(r.score for r in results)
    n = len(results)
    percent = 100.0 * raw / n if n else 0.0

    def groups(key: str) -> dict[str, GroupScore]:
        acc: dict[str, list[float]] = {}
        for r in results:
            acc.setdefault(getattr(r, key), []).append(r.score)
        return {k: GroupScore(n=len(v), score=sum(v)) for k, v in sorted(acc.items())}

    taken = None
    if started_at is not None and finished_at is not None:
        taken = elapsed_s(started_at, finished_at)
        if time_limit_s is not None:
            taken = min(taken, float(time_limit_s))
    return AttemptResult(
        items=results,
        raw_score=raw,
        n_items=n,
        percent=percent,
        by_subject=groups("subject"),
        by_source=groups("source"),
        time_taken_s=taken,
        passing_score=passing_score,
        passed=None if passing_score is None else percent >= passing_score,
    )


# --------------------------------------------------------------------------- analytics

DISCRIMINATION_FRACTION = 0.27
"""Kelley's upper/lower group fraction for the discrimination index."""
MIN_ATTEMPTS_FOR_DISCRIMINATION = 5
"""Below this many attempts the discrimination index is None (groups of one or two say nothing)."""


@dataclass(frozen=True)
class ItemStats:
    """How one item of a quiz set performed across attempts."""

    item_id: str
    attempts: int
    """Attempts that included the item."""
    percent_correct: float | None
    """Mean item score x 100 (a 'partly' counts half); None when no attempt included it."""
    discrimination: float | None
    """p(upper) - p(lower), from -1 to 1; None when there are too few attempts (see quiz_analytics)."""


@dataclass(frozen=True)
class QuizAnalytics:
    """Per-quiz-set numbers for the instructor."""

    attempts: int
    mean_percent: float | None
    pass_rate: float | None
    """Fraction 0-1 of attempts at or above the passing score; None without one or without attempts."""
    group_size: int | None
    """Attempts in each of the upper and lower groups; None when the index is not computed."""
    items: list[ItemStats] = field(default_factory=list)


def quiz_analytics(
    results: Sequence[AttemptResult],
    *,
    passing_score: float | None = None,
    item_ids: Sequence[str] | None = None,
    min_attempts: int = MIN_ATTEMPTS_FOR_DISCRIMINATION,
) -> QuizAnalytics:
    """Aggregate submitted attempts of one quiz set.

    Discrimination index (Kelley): rank attempts by percent, highest first (ties keep the order
    of ``results``, i.e. earlier attempts first); the upper group is the top
    ``k = max(1, round(0.27 * N))`` attempts and the lower group the bottom ``k``. For each item,
    ``D = p_upper - p_lower`` where ``p`` is the mean item score in that group over attempts that
    included the item. D is None for every item when ``N < min_attempts``, and for an item that no
    attempt of one of the groups included.

    ``item_ids`` fixes the item order (quiz-set order); by default items appear in the order first
    met. Every attempt counts, retakes included; pass only first attempts to analyse those.
    """
    _check_passing(passing_score)
    n = len(results)
    if item_ids is None:
        item_ids = list(dict.fromkeys(r.item_id for res in results for r in res.items))
    scores = [{r.item_id: r.score for r in res.items} for res in results]

    k: int | None = None
    upper: list[int] = []
    lower: list[int] = []
    if n >= max(2, min_attempts):
        k = max(1, round(DISCRIMINATION_FRACTION * n))
        ranked = sorted(range(n), key=lambda i: -results[i].percent)
        upper, lower = ranked[:k], ranked[n - k :]

    def mean_in(group: Iterable[int], item_id: str) -> float | None:
        vals = [scores[i][item_id] for i in group if item_id in scores[i]]
        return sum(vals) / len(vals) if vals else None

    stats = []
    for item_id in item_ids:
        p_all = mean_in(range(n), item_id)
        d = None
        if k is not None:
            p_up, p_low = mean_in(upper, item_id), mean_in(lower, item_id)
            if p_up is not None and p_low is not None:
                d = p_up - p_low
        stats.append(
            ItemStats(
                item_id=item_id,
                attempts=sum(1 for s in scores if item_id in s),
                percent_correct=None if p_all is None else 100.0 * p_all,
                discrimination=d,
            )
        )
    return QuizAnalytics(
        attempts=n,
        mean_percent=sum(r.percent for r in results) / n if n else None,
        pass_rate=(
            sum(1 for r in results if r.percent >= passing_score) / n if n and passing_score is not None else None
        ),
        group_size=k,
        items=stats,
    )


# -- class assignments: due dates, peer difficulty, percentile ----------------------------------------------------

SubmissionTiming = Literal["on_time", "late", "refused"]


def submission_timing(*, due_at: datetime, late_policy: str, now: datetime) -> SubmissionTiming:
    """Whether a submission at ``now`` is on time, accepted late, or refused (``late_policy`` "refuse").

    Exactly at the due time is still on time.
    """
    if late_policy not in ("accept", "refuse"):
        raise ValueError(f"Late policy must be 'accept' or 'refuse', got {late_policy!r}.")
    if as_utc(now) <= as_utc(due_at):
        return "on_time"
    return "late" if late_policy == "accept" else "refused"


DIFFICULTY_MIN_ANSWERS = 10
"""First answers (one per user) an item needs before its peer difficulty is shown.

With 10 answers the share correct has a standard error of at most 0.16 (p = 0.5), small enough
that an item rarely moves more than one band (easy/medium/hard) by chance; fewer would label items
mostly by noise, and many more would leave a small class's items unlabelled for a long time.
"""
EASY_AT, HARD_BELOW = 0.7, 0.4
"""Share of correct first answers: at least 0.7 is easy, below 0.4 is hard, in between medium."""
DIFFICULTIES = ("easy", "medium", "hard")

PERCENTILE_MIN_PEERS = 5
"""Submitted students (the student included) an assignment needs before a percentile is shown: with
fewer, a percentile is mostly about one or two named classmates and gives their scores away."""


def peer_difficulty(answered: int, correct: int, *, minimum: int = DIFFICULTY_MIN_ANSWERS) -> float | None:
    """Share of correct first answers, in [0, 1]; None below ``minimum`` answers (never a division by zero)."""
    if answered <= 0 or answered < max(1, minimum):
        return None
    return min(1.0, max(0.0, correct / answered))


def difficulty_label(share_correct: float | None) -> str | None:
    """``easy``, ``medium`` or ``hard`` for a share of correct first answers; None when it is not known."""
    if share_correct is None:
        return None
    if share_correct >= EASY_AT:
        return "easy"
    return "hard" if share_correct < HARD_BELOW else "medium"


def percentile(score: float, peer_scores: Sequence[float], *, minimum: int = PERCENTILE_MIN_PEERS) -> float | None:
    """The share of ``peer_scores`` below ``score`` (ties count half), in [0, 1]; None below ``minimum`` scores.

    ``peer_scores`` are every submitted student's scores, the student's own included.
    """
    n = len(peer_scores)
    if n == 0 or n < max(1, minimum):
        return None
    below = sum(1 for s in peer_scores if s < score)
    equal = sum(1 for s in peer_scores if s == score)
    return min(1.0, max(0.0, (below + 0.5 * equal) / n))


def weakest_subjects(results: Iterable[AttemptResult], *, limit: int = 3) -> list[tuple[str, GroupScore]]:
    """The subjects with the lowest pooled score over ``results`` (items without a subject left out)."""
    pooled: dict[str, list[float]] = {}
    for result in results:
        for subject, group in result.by_subject.items():
            if subject:
                n_score = pooled.setdefault(subject, [0.0, 0.0])
                n_score[0] += group.n
                n_score[1] += group.score
    groups = [(s, GroupScore(n=int(n), score=score)) for s, (n, score) in pooled.items() if n]
    return sorted(groups, key=lambda sg: (sg[1].score / sg[1].n, sg[0]))[:limit]


def in_zone(moment: datetime, zone: str | None) -> datetime:
    """``moment`` in the IANA time zone ``zone`` (the browser's); UTC when the zone is missing or unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(zone) if zone else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        tz = timezone.utc
    return as_utc(moment).astimezone(tz)


def local_to_utc(local: datetime, zone: str | None) -> datetime:
    """A wall-clock time entered in ``zone`` (naive) as aware UTC; unknown zones are taken as UTC."""
    if local.tzinfo is not None:
        return as_utc(local)
    zoned = in_zone(datetime.now(timezone.utc), zone).tzinfo
    return as_utc(local.replace(tzinfo=zoned))


LATE_POLICY_LABELS = {"accept": "Accept late work, marked late", "refuse": "Refuse late work"}
