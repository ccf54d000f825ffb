"""THE prompt format, shared by the trainer, the evaluation and inference.

A conversation is: a system prompt, the user's case (optionally with lettered options), and an
assistant turn that reasons step by step and ends with one marked final-answer line::

    <step-by-step reasoning>

    Final answer: <answer>

Everything that builds prompts or reads completions goes through this module, so a change of
format is one edit here plus a bump of :data:`PROMPT_FORMAT_VERSION` (adapters record the version
they were trained with and inference refuses a mismatch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

PROMPT_FORMAT_VERSION = "medcot-v1"

SYSTEM_PROMPT = (
    "You are a medical reasoning tutor for students. Read the case, think through it step by step "
    "(key findings, differential, what rules options in or out), then give your conclusion on a last "
    "line that starts with 'Final answer:'. This is for education only, not for patient care."
)

FINAL_ANSWER_MARKER = "Final answer:"

_MARKER_RE = re.compile(r"(?im)^[ \t>*#_]*final answer[ \t*_]*:[ \t*_]*")


def format_options(options: Mapping[str, str]) -> str:
    """Options as lines ``A. text`` in the order given."""
    return "\n".join(f"{key}. {text}" for key, text in options.items())


def format_references(passages: Sequence[tuple[str, str]]) -> str:
    """Retrieved reference passages as the user turn's context: numbered, each headed by its title.

    ``passages`` holds ``(title, text)`` pairs, best first. The trainer (retrieval-augmented examples),
    the evaluation and the case-study page all build the context with this one function.
    """
    return "\n\n".join(f"[{n}] {title.strip()}\n{text.strip()}" for n, (title, text) in enumerate(passages, start=1))


def user_message(question: str, options: Mapping[str, str] | None = None, *, context: str = "") -> str:
    """The user turn: optional context (e.g. a PubMedQA abstract), the case text, and for multiple
    choice the options plus an instruction to answer with a letter."""
    question = question.strip()
    if context.strip():
        question = f"Context:\n{context.strip()}\n\nQuestion: {question}"
    if not options:
        return question
    letters = ", ".join(options)
    return (
        f"{question}\n\nOptions:\n{format_options(options)}\n\n"
        f"Reason step by step, then give the letter of the best option ({letters}) on the final-answer line."
    )


def build_messages(
    question: str, options: Mapping[str, str] | None = None, *, context: str = ""
) -> list[dict[str, str]]:
    """System + user messages for generation (the tokenizer's chat template adds the assistant header)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_message(question, options, context=context)},
    ]


def format_completion(reasoning: str, answer: str) -> str:
    """The assistant turn the model is trained to produce."""
    return f"{reasoning.strip()}\n\n{FINAL_ANSWER_MARKER} {answer.strip()}"


def build_training_example(
    question: str, reasoning: str, answer: str, options: Mapping[str, str] | None = None, *, context: str = ""
) -> dict[str, list[dict[str, str]]]:
    """A prompt-completion conversational example (TRL's format): loss is computed on the completion only."""
    return {
        "prompt": build_messages(question, options, context=context),
        "completion": [{"role": "assistant", "content": format_completion(reasoning, answer)}],
    }


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split at the final-answer marker."""

    reasoning: str
    answer: str
    has_answer: bool
    """True when the final-answer marker was found (format adherence)."""

    @property
    def well_formed(self) -> bool:
        """Both a non-empty reasoning and a non-empty final answer are present."""
        return self.has_answer and bool(self.reasoning) and bool(self.answer)


def parse_completion(text: str) -> ParsedCompletion:
    """Split generated text into reasoning and final answer at the LAST final-answer marker."""
    matches = list(_MARKER_RE.finditer(text))
    if not matches:
        return ParsedCompletion(reasoning=text.strip(), answer="", has_answer=False)
    last = matches[-1]
    return ParsedCompletion(
        reasoning=text[: last.start()].strip(),
        answer=text[last.end():].strip(),
        has_answer=True,
    )


_LINE_LEAD_RE = re.compile(r"[ \t>*#_]*")
_MARKER_WORDS = "final answer"


def _could_become_marker(line: str) -> bool:
    """Whether more text appended to ``line`` (a whole last line) could make it a marker line.

    Mirrors :data:`_MARKER_RE`: optional markdown lead (``**``, ``> ``, ``## ``), the words
    ``final answer`` in any case, optional emphasis or spaces, then the colon.
    """
    rest = line[_LINE_LEAD_RE.match(line).end():].lower()  # type: ignore[union-attr]  # matches ""
    if len(rest) <= len(_MARKER_WORDS):
        return _MARKER_WORDS.startswith(rest)
    return rest.startswith(_MARKER_WORDS) and not rest[len(_MARKER_WORDS):].strip(" \t*_")


def marker_prefix_len(text: str) -> int:
    """Length of a trailing partial final-answer marker in ``text`` (for streaming).

    A streaming view must hold back e.g. ``"Final ans"`` at the end of the buffer until it knows
    whether it is the marker or ordinary reasoning text. That includes the spellings the parser
    accepts with emphasis or spaces before the colon (``"**Final answer**"``, ``"Final answer "``)
    and the markdown lead of the line (``"**"``, ``"> "``), which the marker would remove from the
    reasoning too; otherwise such text would flash up in the reasoning and then vanish.
    """
    tail = text[-len(FINAL_ANSWER_MARKER):].lower()
    target = FINAL_ANSWER_MARKER.lower()
    partial = 0
    for n in range(min(len(tail), len(target) - 1), 0, -1):
        if tail.endswith(target[:n]):
            partial = n
            break
    line = text[text.rfind("\n") + 1:]
    if line and _could_become_marker(line):
        return max(partial, len(line))
    return partial
