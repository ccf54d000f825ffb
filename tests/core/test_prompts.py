"""The one prompt format: building messages and examples, and parsing completions (also mid-stream)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from core.prompts import (
    FINAL_ANSWER_MARKER, SYSTEM_PROMPT, build_messages, build_training_example, format_completion,
    marker_prefix_len, parse_completion,
)


def test_messages_carry_system_prompt_options_and_context():
    msgs = build_messages("Which drug?", {"A": "Aspirin", "B": "Heparin"}, context="Abstract text.")
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = msgs[1]["content"]
    assert user.startswith("Context:\nAbstract text.\n\nQuestion: Which drug?")
    assert "A. Aspirin\nB. Heparin" in user and "(A, B)" in user
    assert build_messages("  Plain case.  ")[1]["content"] == "Plain case."


def test_training_example_round_trips_through_the_parser():
    ex = build_training_example("Q?", "Step 1. Step 2.", "B. Heparin", {"A": "x", "B": "Heparin"})
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"]
    completion = ex["completion"][0]["content"]
    assert completion == format_completion("Step 1. Step 2.", "B. Heparin")
    parsed = parse_completion(completion)
    assert (parsed.reasoning, parsed.answer, parsed.well_formed) == ("Step 1. Step 2.", "B. Heparin", True)


def test_parser_uses_the_last_marker_and_tolerates_markdown():
    text = "I considered the final answer: maybe A.\n\n**Final answer:** C. Sepsis"
    parsed = parse_completion(text)
    assert parsed.answer == "C. Sepsis" and parsed.reasoning.endswith("maybe A.")
    missing = parse_completion("Only reasoning, no conclusion")
    assert not missing.has_answer and not missing.well_formed and missing.reasoning == "Only reasoning, no conclusion"
    assert not parse_completion("Final answer: A").well_formed  # no reasoning


def test_marker_prefix_is_held_back_while_streaming():
    assert marker_prefix_len("so the diagnosis is clear.\n\nFinal ans") == len("Final ans")
    assert marker_prefix_len("ends with F") == 1
    assert marker_prefix_len("nothing pending") == 0
    assert marker_prefix_len("Final answer:") == 0  # the whole marker is not a partial one


@given(st.text(max_size=300), st.text(max_size=100))
def test_any_reasoning_and_answer_survive_formatting(reasoning, answer):
    parsed = parse_completion(format_completion(reasoning, answer))
    assert parsed.has_answer
    # The marker tolerates markdown emphasis around it ("**Final answer:** X"), so an answer that
    # itself starts with * or _ loses those characters; every other answer survives unchanged.
    if FINAL_ANSWER_MARKER.lower() not in answer.lower() and not answer.strip().startswith(("*", "_")):
        assert parsed.answer == answer.strip()
