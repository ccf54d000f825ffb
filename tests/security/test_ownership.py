"""Role bypass at the repository: nobody reads, answers or deletes another user's history rows or attempts.

Runs on SQLite and PostgreSQL. The pages call only the viewer-checked functions exercised here
(the last test checks that statically), so a forged id in a widget or the session state gets a
refusal, and the rows stay exactly as they were.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.quiz_bank import Bank
from services import quiz
from storage import attempts, history, quizzes
from storage.attempts import AttemptError
from storage.history import HistoryEntry, HistoryError
from storage.models import Attempt, AttemptItem, CaseRun
from services.quiz import AdHocSpec
from tests.pages.quiz_harness import BANK

ROOT = Path(__file__).resolve().parents[2]
BANK_INDEX = Bank.from_records(BANK)


def _catalog(session: Session):
    return quiz.load_catalog(session=session, bank=BANK_INDEX)


def _snapshot(session: Session) -> tuple:
    session.expire_all()
    runs = [r.model_dump() for r in session.exec(select(CaseRun).order_by(CaseRun.id))]
    tries = [a.model_dump() for a in session.exec(select(Attempt).order_by(Attempt.id))]
    items = [i.model_dump() for i in session.exec(select(AttemptItem).order_by(AttemptItem.id))]
    return runs, tries, items


@pytest.fixture
def world(session: Session, make_user):
    """Alice (student) has a case run and an open attempt with one answer; Bob (student) and Tess (instructor)
    have their own. Tess owns the quiz set Alice's second attempt was made at."""
    alice, bob, tess = make_user("alice"), make_user("bob"), make_user("tess", "instructor")
    other_teacher = make_user("otto", "instructor")
    run = history.save_case_run(session=session, user_id=alice.id, case_text="Alice's private case", reasoning="r",
                                answer="a", base_model="m", adapter="")
    catalog = _catalog(session)
    open_attempt = quiz.start_ad_hoc(session=session, catalog=catalog, user_id=alice.id,
                                             spec=AdHocSpec(n=2, sources=["medqa"], seed=3))
    first = quiz.load_sitting(session=session, catalog=catalog, attempt_id=open_attempt,
                                      user_id=alice.id).items[0]
    quiz.choose(session=session, catalog=catalog, attempt_id=open_attempt, user_id=alice.id,
                        position=first.position, choice=first.record.correct, now=datetime.now(UTC))
    qs = quizzes.create_quiz_set(session=session, owner_id=tess.id, title="Tess's set")
    quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=["medqa:q1", "medqa:q2"])
    quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
    set_attempt = quiz.start_quiz_set(session=session, catalog=catalog, user_id=alice.id, quiz_set_id=qs.id)
    history.save_case_run(session=session, user_id=bob.id, case_text="Bob's case", reasoning="", answer="",
                          base_model="m", adapter="")
    return dict(alice=alice, bob=bob, tess=tess, otto=other_teacher, run=run.id, open_attempt=open_attempt,
                set_attempt=set_attempt, position=first.position)


def test_another_student_cannot_see_or_delete_history(session: Session, world) -> None:
    bob, alice = world["bob"], world["alice"]
    before = _snapshot(session)
    assert history.visible_case_run(session=session, viewer=bob, run_id=world["run"]) is None
    assert history.visible_attempt(session=session, viewer=bob, attempt_id=world["open_attempt"]) is None
    listed = history.list_history(session=session, viewer=bob)
    assert {e.user_id for e in listed} == {bob.id} and "Alice's private case" not in str(listed)
    assert history.list_history(session=session, viewer=bob, search="private") == []
    # Deleting someone else's entry gets the same answer as deleting one that does not exist.
    messages = set()
    for kind, entry_id in [("case", world["run"]), ("quiz", world["open_attempt"]), ("quiz", world["set_attempt"]),
                           ("case", 999_999), ("quiz", 999_999)]:
        with pytest.raises(HistoryError) as refused:
            history.delete_history_entry(session=session, viewer=bob, kind=kind, entry_id=entry_id)
        messages.add(str(refused.value))
    assert messages == {"This entry does not exist or you may not delete it."}
    assert _snapshot(session) == before
    # The owner can delete their own entry.
    history.delete_history_entry(session=session, viewer=alice, kind="case", entry_id=world["run"])
    assert history.visible_case_run(session=session, viewer=alice, run_id=world["run"]) is None


def test_forged_export_entries_leak_nothing(session: Session, world) -> None:
    bob = world["bob"]
    forged = [
        HistoryEntry("case", world["run"], bob.id, "bob", datetime.now(UTC), "x", "completed"),
        HistoryEntry("quiz", world["open_attempt"], bob.id, "bob", datetime.now(UTC), "x", "in_progress"),
    ]
    records = history.export_records(session=session, viewer=bob, entries=forged)
    assert records == []
    assert "Alice's private case" not in history.to_csv(records) + history.to_json(records)


def test_instructors_see_attempts_at_their_own_quizzes_only_and_delete_none(session: Session, world) -> None:
    tess, otto = world["tess"], world["otto"]
    before = _snapshot(session)
    assert history.visible_attempt(session=session, viewer=tess, attempt_id=world["set_attempt"]) is not None
    assert history.visible_attempt(session=session, viewer=tess, attempt_id=world["open_attempt"]) is None
    assert history.visible_case_run(session=session, viewer=tess, run_id=world["run"]) is None
    assert history.visible_attempt(session=session, viewer=otto, attempt_id=world["set_attempt"]) is None
    for viewer in (tess, otto):
        with pytest.raises(HistoryError):
            history.delete_history_entry(session=session, viewer=viewer, kind="quiz", entry_id=world["set_attempt"])
    assert _snapshot(session) == before


def test_another_user_cannot_answer_flag_grade_or_submit_an_attempt(session: Session, world) -> None:
    bob, tess = world["bob"], world["tess"]
    catalog = _catalog(session)
    before = _snapshot(session)
    now = datetime.now(UTC)
    for intruder in (bob, tess):
        common = dict(session=session, catalog=catalog, attempt_id=world["open_attempt"], user_id=intruder.id,
                      position=world["position"], now=now)
        assert quiz.load_sitting(session=session, catalog=catalog, attempt_id=world["open_attempt"],
                                         user_id=intruder.id) is None
        for action, extra in [(quiz.choose, {"choice": "A"}), (quiz.set_flag, {"flagged": True}),
                              (quiz.save_text, {"text": "mine now"}),
                              (quiz.self_grade, {"grade": "correct"})]:
            with pytest.raises(AttemptError, match="does not exist or is not yours"):
                action(**common, **extra)
        with pytest.raises(AttemptError, match="does not exist or is not yours"):
            quiz.submit(session=session, catalog=catalog, attempt_id=world["open_attempt"],
                                user_id=intruder.id, now=now)
        assert quiz.enforce_deadline(session=session, catalog=catalog, attempt_id=world["open_attempt"],
                                             user_id=intruder.id, now=now) is False
        with pytest.raises(AttemptError, match="does not exist or is not yours"):
            attempts.record_answer(session=session, attempt_id=world["open_attempt"], user_id=intruder.id,
                                   position=world["position"], chosen="B", correct=True)
        with pytest.raises(AttemptError, match="does not exist or is not yours"):
            attempts.finish_attempt(session=session, attempt_id=world["open_attempt"], user_id=intruder.id)
    assert _snapshot(session) == before
    assert quiz.resume_id(session=session, user_id=bob.id) is None  # Alice's attempt is never offered to Bob


UNCHECKED = {"delete_case_run", "delete_attempt", "get_case_run", "get_attempt", "record_answer", "finish_attempt",
             "start_attempt"}
"""Repository primitives that take an id but no viewer: pages must go through the checked functions."""


@pytest.mark.parametrize("page", sorted((ROOT / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_only_use_ownership_checked_functions(page: Path) -> None:
    tree = ast.parse(page.read_text())
    called = {node.func.attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert called & UNCHECKED == set(), f"{page.name} calls unchecked repository functions"
    if "attempt_items" in called:  # reading answers is only done after the viewer check
        assert "visible_attempt" in called
