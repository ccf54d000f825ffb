"""Review cards (FSRS storage) and the training-run / adapter records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from storage import reviews, training
from storage.training import TrainingRecordError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_review_cards_upsert_and_due(session: Session, make_user) -> None:
    user, other = make_user("stu"), make_user("other")
    card = {"card_id": 1, "state": 1, "step": 0, "stability": None, "difficulty": None}
    first = reviews.save_review_card(session=session, user_id=user.id, item_id="a", card=card, due=NOW - timedelta(days=1))
    again = reviews.save_review_card(session=session, user_id=user.id, item_id="a", card={**card, "step": 1},
                                     due=NOW - timedelta(hours=1))
    assert again.id == first.id and again.card["step"] == 1
    reviews.save_review_card(session=session, user_id=user.id, item_id="b", card=card, due=NOW - timedelta(days=2))
    reviews.save_review_card(session=session, user_id=user.id, item_id="c", card=card, due=NOW + timedelta(days=3))
    reviews.save_review_card(session=session, user_id=other.id, item_id="a", card=card, due=NOW - timedelta(days=5))
    assert [c.item_id for c in reviews.due_review_cards(session=session, user_id=user.id, now=NOW)] == ["b", "a"]
    assert [c.item_id for c in reviews.due_review_cards(session=session, user_id=user.id, now=NOW, limit=1)] == ["b"]
    assert reviews.count_due_review_cards(session=session, user_id=user.id, now=NOW) == 2
    assert reviews.get_review_card(session=session, user_id=user.id, item_id="c").due == NOW + timedelta(days=3)
    assert reviews.get_review_card(session=session, user_id=user.id, item_id="zzz") is None


def test_training_runs(session: Session, make_user) -> None:
    admin = make_user("boss", "admin")
    run = training.create_training_run(session=session, run_dir="/w/runs/1", config={"lora_r": 16}, pid=123,
                                       started_by_id=admin.id)
    assert run.status == "running" and run.pid == 123 and run.started_at.tzinfo is not None
    with pytest.raises(TrainingRecordError, match="Unknown training status"):
        training.create_training_run(session=session, run_dir="/w/runs/2", config={}, status="exploded")
    done = training.update_training_run(session=session, run_id=run.id, status="completed", finished_at=NOW,
                                        final_metrics={"eval_loss": 1.23})
    assert done.status == "completed" and done.finished_at == NOW and done.final_metrics == {"eval_loss": 1.23}
    assert done.pid == 123  # untouched
    with pytest.raises(TrainingRecordError, match="No training run"):
        training.update_training_run(session=session, run_id=9999, status="failed")
    second = training.create_training_run(session=session, run_dir="/w/runs/3", config={})
    training.update_training_run(session=session, run_id=second.id, pid=456)
    assert [r.id for r in training.list_training_runs(session=session, statuses=("running",))] == [second.id]
    assert {r.id for r in training.list_training_runs(session=session)} == {run.id, second.id}
    assert training.get_training_run(session=session, run_id=run.id).config == {"lora_r": 16}
    assert training.get_training_run_by_dir(session=session, run_dir="/w/runs/3").pid == 456


def test_adapter_registry_has_one_active(session: Session) -> None:
    run = training.create_training_run(session=session, run_dir="/w/runs/9", config={})
    a = training.register_adapter(session=session, path="/w/adapters/a", name="a", base_model="smollm2", card={"v": 1})
    b = training.register_adapter(session=session, path="/w/adapters/b", name="b", base_model="smollm2", card={},
                                  training_run_id=run.id)
    again = training.register_adapter(session=session, path="/w/adapters/a", name="a2", base_model="smollm2", card={"v": 2})
    assert again.id == a.id and again.card == {"v": 2} and again.name == "a2"
    assert {x.id for x in training.list_adapters(session=session)} == {a.id, b.id}
    assert training.active_adapter(session=session) is None
    assert training.activate_adapter(session=session, adapter_id=a.id).active
    assert training.activate_adapter(session=session, adapter_id=b.id).id == b.id
    assert training.active_adapter(session=session).id == b.id
    assert [x.active for x in sorted(training.list_adapters(session=session), key=lambda x: x.id)] == [False, True]
    assert training.activate_adapter(session=session, adapter_id=None) is None
    assert training.active_adapter(session=session) is None
    with pytest.raises(TrainingRecordError, match="No adapter"):
        training.activate_adapter(session=session, adapter_id=9999)
