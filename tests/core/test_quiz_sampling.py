"""Sampling, filter counts, instructor overrides and retired items (core.quiz)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.quiz import (
    NotEnoughItemsError,
    OverrideError,
    apply_override,
    apply_overrides,
    available_filters,
    filter_items,
    resolve_items,
    sample_items,
)
from core.records import read_jsonl

BANK = list(read_jsonl(Path(__file__).parents[1] / "fixtures" / "quiz" / "bank.jsonl"))
BY_ID = {r.id: r for r in BANK}
FLAGGED = {r.id for r in BANK if r.flags}


def ids(records):
    return [r.id for r in records]


def test_fixture_bank_has_what_the_tests_rely_on():
    assert len(BANK) == 13 and len(FLAGGED) == 1
    assert {r.source for r in BANK} == {"medqa", "medmcqa", "mmlu", "pubmedqa", "medical-o1"}


def test_same_seed_same_items_in_same_order_and_bank_order_does_not_matter():
    shuffled = BANK[:]
    random.Random(1).shuffle(shuffled)
    a = sample_items(BANK, n=5, seed=42)
    b = sample_items(shuffled, n=5, seed=42)
    assert ids(a) == ids(b)
    assert len(set(ids(a))) == 5


def test_different_seeds_give_different_quizzes():
    draws = {tuple(ids(sample_items(BANK, n=5, seed=s))) for s in range(10)}
    assert len(draws) > 1


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_sample_has_no_duplicates_and_never_flagged_by_default(n, seed):
    got = sample_items(BANK + BANK[:3], n=n, seed=seed)  # duplicate ids in the bank are collapsed
    assert len(got) == n == len(set(ids(got)))
    assert not FLAGGED & set(ids(got))


def test_filters_by_source_subject_step_and_kind():
    got = filter_items(BANK, sources={"medqa"}, steps={"step1"})
    assert {r.source for r in got} == {"medqa"} and all("step1" in r.tags for r in got)
    assert len(got) == 3
    assert ids(filter_items(BANK, subjects={"Anatomy"})) == ids(
        [r for r in sorted(BANK, key=lambda r: r.id) if r.subject == "Anatomy" and not r.flags]
    )
    assert {r.kind for r in filter_items(BANK, kinds={"open"})} == {"open"}
    # "" selects items without a subject (MMLU, PubMedQA here)
    assert {r.source for r in filter_items(BANK, subjects={""})} == {"mmlu", "pubmedqa"}
    assert filter_items(BANK, sources=set()) == []


def test_unknown_step_tag_is_refused():
    with pytest.raises(ValueError, match="step3"):
        filter_items(BANK, steps={"step3"})


def test_only_unseen_and_only_missed():
    seen = ids(BANK[:6])
    unseen = sample_items(BANK, n=6, seed=0, exclude_ids=seen)
    assert not set(seen) & set(ids(unseen))
    missed = [BANK[0].id, BANK[3].id]
    got = sample_items(BANK, n=2, seed=0, only_ids=missed)
    assert sorted(ids(got)) == sorted(missed)


def test_flagged_items_only_on_request_and_retired_never():
    flagged_id = next(iter(FLAGGED))
    with_flagged = filter_items(BANK, include_flagged=True)
    assert flagged_id in ids(with_flagged) and len(with_flagged) == 13
    retired = {BANK[0].id, flagged_id}
    got = filter_items(BANK, include_flagged=True, retired_ids=retired)
    assert not retired & set(ids(got)) and len(got) == 11


def test_not_enough_items_is_a_clear_error_with_the_count():
    with pytest.raises(NotEnoughItemsError) as info:
        sample_items(BANK, n=5, seed=0, sources={"mmlu"})
    assert info.value.available == 2 and info.value.requested == 5
    assert "Only 2 item(s) match" in str(info.value)
    # the page can then start with what there is
    assert len(sample_items(BANK, n=info.value.available, seed=0, sources={"mmlu"})) == 2


def test_n_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        sample_items(BANK, n=0, seed=0)


def test_available_filters_counts():
    opts = available_filters(BANK)
    assert opts.total == 12 and opts.flagged == 1
    assert opts.sources == {"medical-o1": 2, "medmcqa": 2, "medqa": 5, "mmlu": 2, "pubmedqa": 1}
    assert opts.steps == {"step1": 3, "step2&3": 2}
    assert opts.kinds == {"mcq": 10, "open": 2}
    assert opts.subjects["Anatomy"] == 1 and opts.subjects[""] == 3
    with_flagged = available_filters(BANK, include_flagged=True, retired_ids={BANK[0].id})
    assert with_flagged.total == 12 and with_flagged.subjects["Anatomy"] == 2
    assert with_flagged.sources["medqa"] == 4


# ---------------------------------------------------------------- overrides


def test_override_changes_what_students_see_and_keeps_the_original():
    original = BY_ID[BANK[0].id]
    before = dataclasses.asdict(original)
    new_opts = dict(original.options, A="Iron deficiency anemia")
    edited = apply_override(
        original, {"question": "Edited stem?", "options": new_opts, "explanation": "Edited explanation."}
    )
    assert edited.question == "Edited stem?" and edited.explanation == "Edited explanation."
    assert edited.options["A"] == "Iron deficiency anemia" and edited.answer == "A. Iron deficiency anemia"
    assert edited.id == original.id and edited.source == original.source
    assert dataclasses.asdict(original) == before
    edited.options["B"] = "mutated"
    edited.tags.append("x")
    assert dataclasses.asdict(original) == before


def test_override_of_correct_key_updates_answer_text():
    rec = BANK[0]
    edited = apply_override(rec, {"correct": "B"})
    assert edited.correct == "B" and edited.answer == f"B. {rec.options['B']}"


def test_no_override_returns_the_record():
    assert apply_override(BANK[0], None) is BANK[0]
    assert apply_override(BANK[0], {}) is BANK[0]


def test_invalid_override_lists_every_problem():
    with pytest.raises(OverrideError) as info:
        apply_override(BANK[0], {"question": "  ", "correct": "Z", "source": "me"})
    problems = info.value.problems
    assert len(problems) == 3
    assert any("source" in p for p in problems)
    assert any("question" in p for p in problems)
    assert any("'Z'" in p for p in problems)


def test_options_override_refused_on_open_item():
    open_item = next(r for r in BANK if r.kind == "open")
    with pytest.raises(OverrideError, match="multiple-choice"):
        apply_override(open_item, {"options": {"A": "x", "B": "y"}})


def test_options_override_must_keep_the_correct_key():
    rec = BANK[4]  # correct E
    with pytest.raises(OverrideError, match="'E' is not among"):
        apply_override(rec, {"options": {"A": "x", "B": "y"}})


def test_apply_overrides_drops_retired_and_edits_the_rest():
    overrides = {BANK[1].id: {"explanation": "new"}}
    got = apply_overrides(BANK, overrides, retired_ids={BANK[2].id})
    assert len(got) == 12 and BANK[2].id not in ids(got)
    assert got[1].explanation == "new" and BANK[1].explanation == ""


def test_resolve_items_keeps_quiz_order_and_reports_retired_and_missing():
    order = [BANK[3].id, "medqa:gone", BANK[0].id, BANK[5].id, BANK[0].id]
    res = resolve_items(order, BY_ID, overrides={BANK[0].id: {"question": "Q?"}}, retired_ids={BANK[5].id})
    assert ids(res.items) == [BANK[3].id, BANK[0].id]
    assert res.items[1].question == "Q?"
    assert res.retired == [BANK[5].id] and res.missing == ["medqa:gone"]
