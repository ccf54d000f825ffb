"""services.accounts: what a viewer may open and export of the study history, and the sign-in lockout."""

from __future__ import annotations

import json

from sqlmodel import Session

from services import accounts
from storage import attempts, history, login_throttle


def test_entry_detail_and_export_show_only_what_the_viewer_may_see(session: Session, make_user) -> None:
    alice, bob, admin = make_user("alice"), make_user("bob"), make_user("root", "admin")
    run = history.save_case_run(session=session, user_id=alice.id, case_text="Fever and cough", reasoning="r",
                                answer="pneumonia", base_model="m", adapter="a")
    attempt = attempts.start_attempt(session=session, user_id=alice.id, item_ids=["medqa:q1"], mode="tutor")
    case_entry, quiz_entry = sorted(accounts.list_history(session=session, viewer=alice), key=lambda e: e.kind)

    detail, items = accounts.entry_detail(session=session, viewer=alice, entry=case_entry)
    assert detail["id"] == run.id and detail["answer"] == "pneumonia" and items == []
    detail, items = accounts.entry_detail(session=session, viewer=alice, entry=quiz_entry)
    assert detail["id"] == attempt.id and [i["item_id"] for i in items] == ["medqa:q1"]
    assert accounts.entry_detail(session=session, viewer=bob, entry=case_entry) == (None, [])
    assert accounts.entry_detail(session=session, viewer=bob, entry=quiz_entry) == (None, [])
    assert accounts.entry_detail(session=session, viewer=admin, entry=case_entry)[0] is not None

    exported = json.loads(accounts.export_history(session=session, viewer=bob, entries=[case_entry, quiz_entry],
                                                  fmt="json"))
    assert exported == []  # forged entries of someone else's history export nothing
    assert "pneumonia" in accounts.export_history(session=session, viewer=alice, entries=[case_entry], fmt="csv")


def test_locked_until_follows_the_sign_in_throttle(session: Session, make_user) -> None:
    user = make_user("carol")
    assert accounts.locked_until(session=session, username=user.username) is None
    for _ in range(login_throttle.MAX_FAILURES):
        login_throttle.record_failure(session=session, username=user.username)
    assert accounts.locked_until(session=session, username=user.username) is not None
    accounts.set_password(session=session, user_id=user.id, password="another long passphrase")
    assert accounts.locked_until(session=session, username=user.username) is None
