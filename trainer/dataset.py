"""Canonical records -> chat-formatted prompt-completion examples, through the ONE prompt format in core.prompts.

Training and evaluation read the prepared split files (``<work_dir>/data/train.jsonl``,
``validation.jsonl``, ``test.jsonl``, ``bank.jsonl``: one :class:`core.records.Record` per line).
A record becomes TRL's conversational prompt-completion example (system + user turn as the
prompt, the assistant's reasoning and marked final answer as the completion, so the loss falls
on the completion only). Multiple-choice records show their options in the prompt and answer
with the letter and the option text (``Final answer: C. <text>``).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.prompts import build_messages, build_training_example
from core.records import Record

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Example = dict[str, list[dict[str, str]]]


class DataError(ValueError):
    """A records file cannot be used; the message names the file, line and problem."""


def question_text(rec: Record) -> str:
    """The case as the model sees it: the extra context (e.g. an abstract) first, then the question."""
    if rec.context.strip():
        return f"{rec.context.strip()}\n\n{rec.question.strip()}"
    return rec.question.strip()


def mcq_options(rec: Record) -> dict[str, str] | None:
    return rec.options if rec.kind == "mcq" and rec.options else None


def final_answer(rec: Record) -> str:
    """The final-answer line's text: for multiple choice, the letter then the option text."""
    if rec.kind == "mcq" and rec.correct:
        text = rec.answer.strip() or (rec.options or {}).get(rec.correct, "")
        return f"{rec.correct}. {text}".strip() if text else rec.correct
    return rec.answer.strip()


def prompt_messages(rec: Record) -> list[dict[str, str]]:
    """System + user messages for generation (the tokenizer's template adds the assistant header)."""
    return build_messages(question_text(rec), mcq_options(rec))


def to_example(rec: Record, *, references: str = "") -> Example | None:
    """The training example for a record, or None when it has no reasoning or answer to learn.

    ``references``: a context block of retrieved passages (:func:`core.retrieval.prompt_context`)
    put before the case, as the case-study page does when "use references" is on.
    """
    answer = final_answer(rec)
    if not rec.question.strip() or not rec.reasoning.strip() or not answer:
        return None
    return build_training_example(question_text(rec), rec.reasoning, answer, mcq_options(rec), context=references)


ContextFor = Callable[[Record], str]


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def raft_references(index: Any, *, fraction: float, seed: int) -> ContextFor:
    """Which records get references, and which (RAFT-style, Zhang et al. 2024).

    A seeded hash of the record id picks ``fraction`` of the records. Each gets the best retrieved
    passages for its question, minus any passage made from the record itself (the index holds the
    training split's reasoning: the model must not learn to copy its own answer), with one random
    distractor put at a random place among them, so it also learns that a passage can be off topic.
    """
    from core.retrieval import PROMPT_PASSAGES, prompt_context

    def context_for(rec: Record) -> str:
        if fraction <= 0 or _unit(seed, rec.id) >= fraction:
            return ""
        own = f"train:{rec.id}:"
        hits = [p for p in index.search(rec.question, k=PROMPT_PASSAGES + 4) if not p.id.startswith(own)]
        passages = hits[: PROMPT_PASSAGES - 1]
        rng = random.Random(f"{seed}:{rec.id}")
        for _ in range(8):  # a distractor that is neither a hit nor the record's own passage
            candidate = index.passage(rng.randrange(len(index)))
            if candidate.id not in {p.id for p in hits} and not candidate.id.startswith(own):
                passages.insert(rng.randrange(len(passages) + 1), candidate)
                break
        return prompt_context(passages)

    return context_for


def read_records(path: Path) -> list[Record]:
    """Records from a JSONL file; raises :class:`DataError` naming every bad line (up to 10)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
    records: list[Record] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            rec = Record.from_dict(data)
            if not isinstance(rec.question, str) or not isinstance(rec.reasoning, str):
                raise ValueError("question and reasoning must be text")
            if rec.options is not None and not isinstance(rec.options, dict):
                raise ValueError("options must be an object of letter: text")
            records.append(rec)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            errors.append(f"{path.name}:{number}: {exc}")
    if errors:
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{path}: {len(errors)} bad line(s):\n  " + "\n  ".join(errors[:10]) + more)
    return records


@dataclass
class ExampleSet:
    """Examples built from one records file, with what was left out and why."""

    path: Path
    examples: list[Example]
    ids: list[str]
    n_records: int
    skipped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def summary(self) -> dict[str, Any]:
        return {"file": str(self.path), "sha256": self.sha256, "records": self.n_records,
                "examples": len(self.examples), "skipped": dict(self.skipped)}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_examples(path: Path, *, references: ContextFor | None = None) -> ExampleSet:
    """Training examples from a records file; records without reasoning or answer are counted, not used.

    ``references``: record -> context block ("" for none), e.g. :func:`raft_references`.
    """
    records = read_records(path)
    examples, ids = [], []
    skipped: dict[str, int] = {}
    for rec in records:
        ex = to_example(rec, references=references(rec) if references else "")
        if ex is None:
            skipped["no reasoning or answer"] = skipped.get("no reasoning or answer", 0) + 1
            continue
        examples.append(ex)
        ids.append(rec.id)
    if not examples:
        raise DataError(f"{path}: none of its {len(records)} records has both reasoning and an answer to train on")
    return ExampleSet(Path(path), examples, ids, len(records), skipped, file_sha256(path))


# -- tokenisation for evaluation (mirrors TRL's prompt-completion handling) -----------------------------


def chat_ids(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def encode_example(tokenizer: "PreTrainedTokenizerBase", example: Example, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for one example, cut to ``max_len`` from the start.

    Like TRL: the completion starts where the tokenised prompt (with the assistant header) and
    the tokenised prompt + completion first differ.
    """
    prompt = chat_ids(tokenizer, example["prompt"], generation_prompt=True)
    full = chat_ids(tokenizer, example["prompt"] + example["completion"], generation_prompt=False)
    n = 0
    for a, b in zip(prompt, full):
        if a != b:
            break
        n += 1
    labels = [-100] * n + full[n:]
    return full[:max_len], labels[:max_len]


def drop_overlong(
    tokenizer: "PreTrainedTokenizerBase", examples: ExampleSet, max_len: int
) -> ExampleSet:
    """Leave out examples longer than ``max_len`` tokens (counted in ``skipped``).

    Truncating them instead would cut off the final answer, teaching the model to ramble on
    without ever concluding; leaving them out keeps every training target complete.
    """
    kept, ids = [], []
    for ex, rec_id in zip(examples.examples, examples.ids):
        if len(chat_ids(tokenizer, ex["prompt"] + ex["completion"], generation_prompt=False)) <= max_len:
            kept.append(ex)
            ids.append(rec_id)
    dropped = len(examples.examples) - len(kept)
    skipped = dict(examples.skipped)
    if dropped:
        skipped[f"longer than {max_len} tokens"] = dropped
    if not kept:
        raise DataError(f"{examples.path}: all {len(examples.examples)} examples are longer than max_seq_len={max_len}")
    return ExampleSet(examples.path, kept, ids, examples.n_records, skipped, examples.sha256)

