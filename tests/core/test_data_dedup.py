"""Normalisation, shingles, the exact similarity join (checked against brute force) and grouping."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np

from core import data, dedup


def test_shingles_normalise_case_punctuation_and_spacing():
    a = dedup.shingles("A 45-year-old man, with chest pain; what is the most likely diagnosis?")
    b = dedup.shingles("a 45 year old man with   chest pain what is the MOST likely diagnosis")
    assert a == b
    assert len(a) == 14 - 8 + 1


def test_short_texts_are_one_shingle_and_match_only_exactly():
    assert dedup.shingles("Which is true?") == frozenset({"which is true"})
    assert dedup.jaccard(dedup.shingles("Which is true?"), dedup.shingles("which is TRUE")) == 1.0
    assert dedup.jaccard(dedup.shingles("Which is true?"), dedup.shingles("Which is false?")) == 0.0
    assert dedup.shingles("  ...  ") == frozenset()


def test_jaccard():
    assert dedup.jaccard(frozenset("abcd"), frozenset("abce")) == pytest.approx(3 / 5)
    assert dedup.jaccard(frozenset(), frozenset("a")) == 0.0


def brute_force(sets, threshold):
    return sorted(
        (i, j, dedup.jaccard(sets[i], sets[j]))
        for i, j in itertools.combinations(range(len(sets)), 2)
        if dedup.jaccard(sets[i], sets[j]) >= threshold
    )


def _corpus(seed: int, n: int) -> list[str]:
    """Sentences from a tiny vocabulary plus edited copies, so many pairs sit near any threshold."""
    rng = random.Random(seed)
    words = "the a patient man woman fever pain chest acute chronic renal cardiac lung drug dose".split()
    base = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(n)]
    out = list(base)
    for text in base[: n // 2]:
        tokens = text.split()
        for _ in range(rng.randint(0, 3)):
            if tokens:
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
        out.append(" ".join(tokens))
    return out


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 1.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_similar_pairs_equals_brute_force(seed, threshold):
    sets = [dedup.shingles(t, n=3) for t in _corpus(seed, 60)]
    assert dedup.similar_pairs(sets, threshold) == brute_force(sets, threshold)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.frozensets(st.integers(0, 12).map(str), max_size=15), max_size=25), st.sampled_from([0.3, 0.6, 0.8, 0.85]))
def test_similar_pairs_never_misses_a_pair(sets, threshold):
    assert dedup.similar_pairs(sets, threshold) == brute_force(sets, threshold)


def test_near_duplicate_vignettes_are_found_at_08():
    vignette = (
        "A 61-year-old woman, administrative, with a history of overweight, hypertension, dyslipidemia and "
        "metabolic syndrome, who consults for pain in both buttocks that worsens when walking and improves at rest."
    )
    near = vignette.replace("improves at rest.", "improves with rest.")
    far = "A 30-year-old man with fever and cough for three days, no history of interest, consults the doctor."
    sets = [dedup.shingles(t) for t in (vignette, near, far)]
    pairs = dedup.similar_pairs(sets)
    assert [(a, b) for a, b, _ in pairs] == [(0, 1)]
    assert 0.8 <= pairs[0][2] < 1.0


def test_groups_key_is_the_smallest_member_and_order_independent():
    keys = ["m:3", "m:1", "m:2", "m:9"]
    g = dedup.Groups(keys)
    g.union(0, 2)
    g.union(2, 1)
    assert {g.group_key(i) for i in (0, 1, 2)} == {"m:1"}
    assert g.group_key(3) == "m:9"
    h = dedup.Groups(keys)
    h.union(1, 2)
    h.union(0, 1)
    assert [h.group_key(i) for i in range(4)] == [g.group_key(i) for i in range(4)]
    assert sorted(map(sorted, g.members().values())) == [[0, 1, 2], [3]]


def test_item_matches_use_any_text_of_an_item():
    long_mcq = "which drug is the first line treatment of absence seizures in a child of seven years old"
    texts = [["an open question rewritten from an exam", long_mcq], ["something else entirely here", long_mcq + " today"], ["unrelated"]]
    groups, matches = dedup.group_items(texts, ["a", "b", "c"])
    assert [(m.a, m.b) for m in matches] == [(0, 1)]
    assert groups.group_key(1) == "a" and groups.group_key(2) == "c"


# -- near copies in other words -----------------------------------------------------------------------

RETRANSLATED = (
    "An 84-year-old woman consults for a loss of central vision in her right eye with metamorphopsia "
    "that began two weeks ago. Fundus examination shows a grey-green membrane under the macula.",
    "An 84-year-old woman consults for loss of central vision in the right eye with metamorphopsias "
    "which started two weeks ago. Examination of the fundus shows a greyish-green membrane below the macula.",
)


def test_char_copies_catch_a_re_translation_that_word_shingles_miss():
    a, b = RETRANSLATED
    assert dedup.jaccard(dedup.shingles(a), dedup.shingles(b)) < 0.3 < dedup.THRESHOLD
    found = dedup.char_copies([[a], ["An unrelated question about renal physiology and clearance."], [b]], n_search=1)
    assert list(found) == [(0, 2)]
    assert found[(0, 2)].measure == "char5" and found[(0, 2)].score >= dedup.CHAR_THRESHOLD


def test_near_copies_are_only_searched_from_the_first_items():
    a, b = RETRANSLATED
    # items 1 and 2 are copies of each other, but neither is among the searched (trainable) items
    assert dedup.char_copies([["Something else entirely, about the heart."], [a], [b]], n_search=1) == {}


def test_embedding_copies_use_the_given_encoder_and_threshold():
    vectors = {"p": [1.0, 0.0], "q": [0.8, 0.6], "r": [0.0, 1.0]}  # cos(p, q) = 0.8, cos(p, r) = 0

    def embed(texts):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    found = dedup.embedding_copies([["p"], ["q"], ["r"]], 1, embed, threshold=0.8)
    assert list(found) == [(0, 1)] and found[(0, 1)].measure == "embedding"
    assert dedup.embedding_copies([["p"], ["q"], ["r"]], 1, embed, threshold=0.81) == {}


def test_split_keeps_the_held_out_copy_and_drops_the_training_one():
    from core.records import Record

    a, b = RETRANSLATED
    options = {"A": "Wet macular degeneration", "B": "Cataract"}
    train = Record(id="t1", source="casimedicos", license="CC BY 4.0", kind="mcq", question=a, options=options, correct="A", answer="A. x", reasoning="r")
    held = Record(id="h1", source="casimedicos", license="CC BY 4.0", kind="mcq", question=b, options=options, correct="B", answer="B. y")
    result = data.split_and_dedup([train], [held])
    assert not any(result.splits.values()) and [r.id for r in result.bank] == ["h1"]
    (pair,) = result.stats["leak_pairs"]
    assert pair["match"] == "char5" and pair["conflicting_key"] is True
