"""Properties of the prompt format (core.prompts) and the streaming view built on it (core.inference.split_text).

tests/core/test_prompts.py already proves that any reasoning and answer survive format -> parse.
Here: parse_completion never raises and splits any text into pieces of that text; building messages
from any case text/options never raises and carries the text; and the streaming property: for every
prefix of a completion, whatever marker spelling the model uses ("Final answer:", "**Final answer:**",
"**Final answer**:", "> Final answer :"), the reasoning shown so far is a prefix of the final
reasoning (marker text never flashes up and vanishes) and the answer shown is a prefix of the final one.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.inference import split_text
from core.prompts import build_messages, marker_prefix_len, parse_completion
from tests.properties.strategies import odd_text

FAST = settings(max_examples=150, deadline=None)


@FAST
@given(text=st.one_of(st.text(max_size=300), odd_text))
def test_parse_completion_splits_any_text_into_its_own_pieces(text):
    parsed = parse_completion(text)
    assert parsed.reasoning in text and parsed.answer in text
    assert parsed.well_formed == (parsed.has_answer and bool(parsed.reasoning) and bool(parsed.answer))
    assert 0 <= marker_prefix_len(text) <= len(text)


@FAST
@given(question=st.one_of(st.text(max_size=200), odd_text),
       options=st.one_of(st.none(), st.dictionaries(st.sampled_from("ABCDE"), odd_text, max_size=5)),
       context=odd_text)
def test_messages_for_any_case_carry_the_text(question, options, context):
    messages = build_messages(question, options, context=context)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert question.strip() in messages[1]["content"]
    for text in (options or {}).values():
        assert text in messages[1]["content"]


MARKERS = ["Final answer:", "final answer:", "FINAL ANSWER:", "**Final answer:**", "**Final answer**:",
           "Final answer :", "> Final answer:", "## Final answer:", "_Final answer_:"]
# Reasoning and answers as a model writes them; no second marker (the last marker wins by design).
prose = st.text(alphabet=st.sampled_from(list("abcdefinlrsw FA.,*_>#:-\n") + ["é", "🩺", "م"]), max_size=60).filter(
    lambda t: "final answer" not in t.lower()
)


@settings(max_examples=200, deadline=None)
@given(reasoning=prose, answer=prose, marker=st.sampled_from(MARKERS), sep=st.sampled_from(["\n\n", "\n"]))
def test_streamed_text_never_shows_what_the_final_parse_takes_back(reasoning, answer, marker, sep):
    text = f"{reasoning.strip()}{sep}{marker} {answer.strip()}"
    final_reasoning, final_answer, has_answer = split_text(text, final=True)
    assert has_answer
    for cut in range(len(text) + 1):
        shown_reasoning, shown_answer, shown_has = split_text(text[:cut], final=False)
        assert final_reasoning.startswith(shown_reasoning), (text[:cut], shown_reasoning)
        if shown_has:
            assert shown_reasoning == final_reasoning and final_answer.startswith(shown_answer)
        else:
            assert shown_answer == ""
