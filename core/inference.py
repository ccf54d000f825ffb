"""Streaming generation for the case study: one case in, a stream of reasoning / final-answer events out.

:func:`stream_case` is a generator. It takes the shared model's lock (one generation at a time
per model; a caller that has to wait first gets a ``"waiting"`` event), decodes on a worker thread
(the lean decoder's loop, or ``model.generate``) into a :class:`~transformers.TextIteratorStreamer`, and yields
:class:`StreamEvent` objects as text arrives, already split into reasoning and final answer with
the one prompt format of :mod:`core.prompts`. Setting the ``stop`` event (or closing the
generator) ends generation at the next token.

A final answer every time (budget forcing): the model reasons freely until ``max_new_tokens``
less an answer allowance (:data:`ANSWER_ALLOWANCE`); if by then it has not written the final-answer
marker, or when the ``conclude`` event is set ("Conclude now"), or when it ends its turn
(end-of-sequence) without having written the marker, the reasoning ends, the marker is appended as
tokens and the model writes its answer, one paragraph of at most the allowance. That
second phase re-runs the prompt, the reasoning and the marker through the same decoder (a new
prefill: measured with the embedded model and adapter on the 2-core CPU, one decoding thread, 0.4 s
for 420-540 tokens and 1.0-1.8 s for 920-1,000, i.e. the pause before the marker appears, against
5 decoding steps, about 0.2 s, had the reasoning's KV cache been extended instead). The evaluation
(``trainer.evaluate``) forces with the same rules (:func:`answer_budget`, :func:`needs_forcing`,
:func:`answer_room`, :func:`answer_complete`), so its numbers describe what the page serves.

Serving speed: :func:`serving_plan` says how a merged model is served on a device and
:func:`prepare_for_serving` applies it once, at load time. Decoding runs in the lean Llama decoder
of :mod:`core.decoder` (checked against transformers at load; ``generate`` with the same streamer
stays the fallback for any model or request it cannot serve). On CPU the decoding weights are the
base's own 4-bit codes plus the adapter unmerged when the base is 4-bit native (the embedded GGUF
model), else int8 weights with one bf16 scale per output row (``torch.ops.aten._weight_int8pack_mm``);
the prompt (prefill) uses bf16 copies, where bf16 matrix products are faster. On CUDA the weights
are bf16 and the decoder's one-token step replays as a CUDA graph. ``benchmarks/bench_generation.py``
measures each choice against the eager fp32 baseline (and top-1 agreement with fp32);
docs/BENCHMARKS.md has the numbers.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

from core.prompts import FINAL_ANSWER_MARKER, build_messages, marker_prefix_len, parse_completion, user_message
from core.records import Record, read_jsonl

if TYPE_CHECKING:  # heavy imports stay inside functions
    import torch

_log = logging.getLogger(__name__)

EventKind = Literal["waiting", "started", "text", "done"]
FinishReason = Literal["eos", "length", "stopped"]
ForcedReason = Literal["budget", "conclude", "eos"]
WeightFormat = Literal["fp32", "bf16", "int8"]


class GenerationError(RuntimeError):
    """Generation failed; the message is fit to show to the user."""


# -- budget forcing --------------------------------------------------------------------------------

ANSWER_ALLOWANCE = 64
"""Tokens kept back from ``max_new_tokens`` for a forced final answer, the appended marker included.

Measured on the training split (``.work/data/train.jsonl``, 881 examples, SmolLM2 tokenizer): the
final-answer line of a multiple-choice example (``C. <option text>``) is at most 45 tokens in 99%
of them; an open-ended reference answer is a whole explanatory paragraph (median 114, p95 267
tokens), but its first sentence, which carries the conclusion, is at most 57-59 tokens in 95%. A
forced answer is meant to be that conclusion, not the explanation (the reasoning before it already
is one), so 64 = the 5 marker tokens plus 59 answer tokens: the p95 of those first sentences.
"""

FORCED_MARKER_TEXT = "\n\n" + FINAL_ANSWER_MARKER
"""What a forced answer starts with: a blank line, then the marker (tokenised as in the trained
completions, where the reasoning's last token is followed by two newline tokens and the marker)."""

_PARAGRAPH_END = re.compile(r"\S[ \t]*\n[ \t]*\n")


def marker_ids(tokenizer: Any) -> list[int]:
    """Token ids of :data:`FORCED_MARKER_TEXT` (no special tokens)."""
    return [int(i) for i in tokenizer.encode(FORCED_MARKER_TEXT, add_special_tokens=False)]


@dataclass(frozen=True)
class AnswerBudget:
    """How one request's ``max_new_tokens`` splits into reasoning and a forced final answer."""

    total: int
    """``max_new_tokens``: reasoning, marker and answer together never exceed it."""
    reasoning: int
    """Generated tokens after which, with no final-answer marker yet, the answer is forced."""
    marker: tuple[int, ...]
    """Token ids appended to force the answer (:func:`marker_ids`)."""
    answer: int
    """Most tokens generated after a forced marker; 0 when the budget is too small to force."""

    @property
    def can_force(self) -> bool:
        return self.answer > 0


def answer_budget(max_new_tokens: int, marker: Sequence[int], *, allowance: int = ANSWER_ALLOWANCE) -> AnswerBudget:
    """Split ``max_new_tokens``: the allowance (at most half the budget, so a small budget still
    reasons) goes to marker + answer, the rest to reasoning. ``allowance`` 0 never forces."""
    total = int(max_new_tokens)
    kept = max(0, min(int(allowance), total // 2))
    answer = kept - len(marker)
    if answer <= 0:
        return AnswerBudget(total=total, reasoning=total, marker=tuple(marker), answer=0)
    return AnswerBudget(total=total, reasoning=total - kept, marker=tuple(marker), answer=answer)


def needs_forcing(text: str, n_tokens: int, budget: AnswerBudget, *, ended: bool = False) -> bool:
    """Whether reasoning ``text`` (``n_tokens`` generated tokens) gets a forced final answer: it has no
    final-answer marker and has used up its share of the budget, or (``ended``) the model ended its
    turn with an end-of-sequence token before writing one."""
    if not budget.can_force or parse_completion(text).has_answer:
        return False
    return ended or n_tokens >= budget.reasoning


def answer_room(budget: AnswerBudget, generated: int) -> int:
    """Most answer tokens after the marker is appended to ``generated`` tokens (an end-of-sequence
    token counted: it was decoded), so that all of them stay within ``budget.total``.

    It is the whole allowance (``budget.answer``) in every case that forces: reasoning without a
    marker is cut at ``budget.reasoning`` tokens, so a model that ends its turn earlier leaves at least
    the allowance. The minimum only guards the total. A budget that cannot force (allowance 0: never
    force; or ``max_new_tokens`` too small to hold the marker and an answer) forces neither at the
    budget nor after an early end, rather than appending a marker with almost no room behind it.
    """
    if not budget.can_force:
        return 0
    return max(0, min(budget.answer, budget.total - int(generated) - len(budget.marker)))


def answer_complete(answer: str) -> bool:
    """Whether a forced answer's text (what follows the marker) has ended: a blank line after some text."""
    return _PARAGRAPH_END.search(answer) is not None


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """Per-request sampling settings. ``temperature == 0`` means greedy decoding.

    ``max_new_tokens`` defaults to 768: the p95 length of the training split's reference completions
    (reasoning + final answer: 758 tokens with the SmolLM2 tokenizer, ``.work/data/train.jsonl``),
    rounded up to a multiple of 64, so a model that writes like its training data has room to end
    on its own. It is to be re-set from the shipped adapter's own evaluation samples (the lengths
    of its generations). It must stay at most ``core.settings.Settings.max_new_tokens`` (768), the
    app's cap, which :meth:`clamped` applies.
    """

    max_new_tokens: int = 768
    temperature: float = 0.3
    top_p: float = 0.9
    answer_allowance: int = ANSWER_ALLOWANCE
    """Tokens of ``max_new_tokens`` kept for a forced final answer (:func:`answer_budget`); 0 never forces."""

    def clamped(self, *, cap: int) -> "GenerationSettings":
        """The same settings forced into valid ranges, with ``max_new_tokens`` at most ``cap``."""
        return GenerationSettings(
            max_new_tokens=max(1, min(int(self.max_new_tokens), cap)),
            temperature=min(max(float(self.temperature), 0.0), 2.0),
            top_p=min(max(float(self.top_p), 0.05), 1.0),
            answer_allowance=max(0, int(self.answer_allowance)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationStats:
    """Timings of one generation. Rates exclude the time spent waiting for the model."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token_s: float | None = None
    """From taking the model (tokenising included) to the first generated token."""
    tokens_per_s: float | None = None
    """Decoding rate after the first token: (new_tokens - 1) / (last token time - first token time)."""
    elapsed_s: float = 0.0
    """From taking the model to now (or to the end)."""
    waited_s: float = 0.0
    """Time spent waiting for another generation on the same model to finish."""
    finish_reason: FinishReason | None = None
    forced: ForcedReason | None = None
    """Why the final answer was forced (``budget``, ``conclude``, or ``eos``: the model ended its turn without
    one); None while the model writes on its own."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StreamEvent:
    """One update of the stream. ``reasoning``/``answer`` are the whole text so far, not a delta."""

    kind: EventKind
    reasoning: str = ""
    answer: str = ""
    has_answer: bool = False
    """The final-answer marker has been seen."""
    text: str = ""
    """Raw completion so far (a partial marker at the end is included here, held back from ``reasoning``)."""
    stats: GenerationStats = field(default_factory=GenerationStats)

    @property
    def stopped(self) -> bool:
        return self.stats.finish_reason == "stopped"

    @property
    def forced(self) -> ForcedReason | None:
        """Why the final answer was forced (set from the moment the marker is appended); None if not."""
        return self.stats.forced


# -- stopping and streaming ----------------------------------------------------------------------


def _stop_when(check: Callable[["torch.Tensor"], bool]) -> Any:
    """A ``generate`` stopping criterion: ends generation after the token at which ``check(sequence)`` is true.

    Checked once per decoding step, batch 1 (``sequence`` is the whole (1, n) sequence, prompt included).
    """
    from transformers import StoppingCriteria

    class StopWhen(StoppingCriteria):
        def __call__(self, input_ids: "torch.LongTensor", scores: Any, **kwargs: Any) -> "torch.BoolTensor":
            import torch

            return torch.full((input_ids.shape[0],), bool(check(input_ids)), dtype=torch.bool, device=input_ids.device)

    return StopWhen()


def _timed_streamer(tokenizer: Any, timeout: float | None) -> Any:
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        """A TextIteratorStreamer that also records when each generated token arrived, and that stays
        open across the two phases of a forced answer (``generate`` ends its stream after each call)."""

        def __init__(self) -> None:
            super().__init__(
                tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            self.token_times: list[float] = []
            self.hold_end = True
            """While true, ``end()`` (called by ``generate``) flushes the text but does not end the stream."""

        def put(self, value: "torch.Tensor") -> None:
            if not self.next_tokens_are_prompt:
                now = time.perf_counter()
                self.token_times.extend([now] * int(value.numel()))
            super().put(value)

        def put_generated(self, ids: Sequence[int]) -> None:
            """Stream ``ids`` as generated text (the appended marker), whatever came before."""
            import torch

            self.next_tokens_are_prompt = False
            self.put(torch.tensor(list(ids), dtype=torch.long))

        def end(self) -> None:
            if not self.hold_end:
                super().end()
                return
            if self.token_cache:
                text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
                self.on_finalized_text(text[self.print_len :])
            self.token_cache, self.print_len = [], 0
            self.next_tokens_are_prompt = True

        def finish(self) -> None:
            """End the stream for real (the consumer's loop stops after the remaining text)."""
            self.hold_end = False
            self.end()

    return TimedStreamer()


class _ReasoningGate:
    """Decides after each reasoning token whether the reasoning phase ends (runs on the worker thread).

    It ends at ``stop``; and, while no final-answer marker has been written, when the reasoning has used
    its share of the budget or ``conclude`` is set: then :attr:`forced` says why. The generated text
    is decoded only when one of those could apply (at most once per token after ``conclude``, once at
    the budget), and a marker once seen is remembered: text only grows, so it stays there. An
    end-of-sequence ends the phase by itself; whether it is forced then is decided after the phase.
    """

    def __init__(
        self, tokenizer: Any, budget: AnswerBudget, *, stop: threading.Event, conclude: threading.Event
    ) -> None:
        self.tokenizer, self.budget, self.stop, self.conclude = tokenizer, budget, stop, conclude
        self.forced: ForcedReason | None = None
        self._marker_seen = False

    def ends(self, n: int, ids: Callable[[], list[int]]) -> bool:
        if self.stop.is_set():
            return True
        if self._marker_seen or not self.budget.can_force:
            return False
        concluding = self.conclude.is_set()
        if not concluding and n < self.budget.reasoning:
            return False
        text = self.tokenizer.decode(ids(), skip_special_tokens=True)
        if parse_completion(text).has_answer:
            self._marker_seen = True  # a natural answer: it goes on to the full budget
            return False
        self.forced = "conclude" if concluding else "budget" if needs_forcing(text, n, self.budget) else None
        return self.forced is not None


# CUDA graphs recorded in one thread fail to record in a second thread of the same process (torch 2.11:
# an AssertionError in the CUDA-graph trees; seen on the GPU machine when a second model compiled), so
# every CUDA model of the process records and replays on this one thread. A property of the process,
# hence process-wide; CPU models each own their thread (:class:`ModelServer`).
_CUDA_WORKER: ThreadPoolExecutor | None = None
_CUDA_WORKER_LOCK = threading.Lock()


def _cuda_worker() -> ThreadPoolExecutor:
    global _CUDA_WORKER
    with _CUDA_WORKER_LOCK:
        if _CUDA_WORKER is None:
            _CUDA_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate-cuda")
        return _CUDA_WORKER


@dataclass(eq=False)
class ModelServer:
    """One model served in this process: it owns the model, the lock that one generation holds, the
    thread it decodes on and the lean decoder built for it (:meth:`prepare`).

    Generations on a model are serialised by its lock anyway, so one long-lived thread per model
    serves them; CUDA models share the process's one CUDA thread (see ``_CUDA_WORKER``).
    """

    model: Any
    tokenizer: Any
    plan: "ServingPlan | None" = None
    """How the weights are served; None for a model served as loaded."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held by :func:`stream_case` for the whole of one generation."""
    decoder: Any = None
    """The lean decoder (:class:`core.decoder.Decoder`) when :meth:`prepare` built one that passed its check."""
    _own_worker: ThreadPoolExecutor | None = field(default=None, repr=False)
    _worker_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def worker(self) -> ThreadPoolExecutor:
        """The thread that runs this model's generations."""
        try:
            on_cuda = next(self.model.parameters()).device.type == "cuda"
        except (AttributeError, StopIteration, TypeError):
            on_cuda = False
        if on_cuda:
            return _cuda_worker()
        with self._worker_lock:
            if self._own_worker is None:
                self._own_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
            return self._own_worker

    def prepare(self, plan: "ServingPlan", *, adapter_dir: Path | None = None) -> "ModelServer":
        """Apply ``plan`` to the (merged, eval-mode) model once, before it is shared; returns self.

        ``adapter_dir`` is the adapter merged into the model (None: the base alone); the 4-bit native
        plan reads its LoRA factors to take them back out of the merged weights.
        """
        self.plan = plan
        self.decoder = _apply_plan(self.model, plan, adapter_dir=adapter_dir, worker=self.worker)
        return self

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` torch threads where this model decodes (CPU).

        ``torch.set_num_threads`` acts on the calling thread (OpenMP keeps the count per thread), and
        generation runs on the model's own worker thread: setting it anywhere else leaves that thread
        with its own count (measured: 24-29 instead of 32-34 tokens/s with one thread on 2 cores).
        """
        import torch

        self.worker.submit(torch.set_num_threads, max(1, int(threads))).result()

    def warm_up(self, *, new_tokens: int = 4) -> None:
        """Generate a few greedy tokens so one-time costs (allocation, compilation) do not land on the first user."""
        _warm_up(self, new_tokens=new_tokens)

    def describe(self) -> str:
        """What really serves the model (the plan's intent, minus what the model did not allow), for the page."""
        if self.plan is None:
            return "as loaded"
        if self.decoder is None:
            return replace(self.plan, decoder=False, compile_decoder=False, int4_native=False).describe()
        graph = ", step compiled to a CUDA graph" if self.decoder.module.compiled else ""
        return f"lean decoder: {self.decoder.decoding_weights} decoding, {self.decoder.module.dtype} prompt pass{graph}".replace(
            "torch.", "")

    def close(self) -> None:
        """Let this model's own decoding thread end (a CUDA model's thread is the process's)."""
        if self._own_worker is not None:
            self._own_worker.shutdown(wait=False)


def split_text(text: str, *, final: bool) -> tuple[str, str, bool]:
    """Reasoning, answer and marker flag for ``text``; while streaming (``final`` false) a partial marker at
    the end is held back, so the page never flashes "Final ans" as reasoning."""
    visible = text if final else text[: len(text) - marker_prefix_len(text)]
    parsed = parse_completion(visible)
    return parsed.reasoning, parsed.answer, parsed.has_answer


def prompt_text(tokenizer: Any, case_text: str, options: dict[str, str] | None = None, *, context: str = "") -> str:
    """The chat prompt for ``case_text`` as text (the one prompt format), what a server is sent."""
    return tokenizer.apply_chat_template(
        build_messages(case_text, options, context=context), add_generation_prompt=True, tokenize=False)


def prompt_ids(
    tokenizer: Any, case_text: str, options: dict[str, str] | None = None, *, context: str = ""
) -> "torch.Tensor":
    """Token ids of the chat prompt for ``case_text`` (the one prompt format), shape (1, n)."""
    enc = tokenizer.apply_chat_template(
        build_messages(case_text, options, context=context), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return enc["input_ids"]


def stream_case(
    case_text: str,
    *,
    served: "ModelServer",
    settings: GenerationSettings,
    stop: threading.Event | None = None,
    conclude: threading.Event | None = None,
    options: dict[str, str] | None = None,
    context: str = "",
    poll_s: float = 0.2,
) -> Iterator[StreamEvent]:
    """Generate reasoning and a final answer for ``case_text``, yielding events as text is produced.

    Events: ``waiting`` (only if another generation holds the model; repeated every ``poll_s``),
    ``started`` (the model is ours), ``text`` (new text arrived), and exactly one ``done`` at the
    end whose stats carry the finish reason. ``settings`` must already be clamped to the app's cap.
    Errors inside generation are raised as :class:`GenerationError`; the lock is always released.

    Budget forcing (see the module docstring): when the reasoning reaches its share of the budget
    (:func:`answer_budget`) without a final-answer marker, or ``conclude`` is set while no marker has
    been written, the marker is appended and streamed, and the model writes at most the allowance,
    ending at end-of-sequence or at the end of the answer's paragraph. The same happens when the model
    ends its turn (end-of-sequence) before writing a marker: the end-of-sequence token is dropped from
    what the second phase sees (it stays counted in ``new_tokens``), and the answer gets
    :func:`answer_room`. Events from then on carry ``forced`` (``"budget"``, ``"conclude"``, or
    ``"eos"`` for a model that stopped without concluding; ``"conclude"`` if the student had asked).
    The second phase re-runs prompt + reasoning + marker from scratch (see the module docstring for
    what that prefill costs). ``stop`` still ends generation without an answer.
    """
    stop = stop or threading.Event()
    conclude = conclude or threading.Event()
    waited_from = time.perf_counter()
    acquired = served.lock.acquire(blocking=False)
    while not acquired:
        waited = time.perf_counter() - waited_from
        if stop.is_set():
            yield StreamEvent("done", stats=GenerationStats(waited_s=waited, finish_reason="stopped"))
            return
        yield StreamEvent("waiting", stats=GenerationStats(waited_s=waited))
        acquired = served.lock.acquire(timeout=poll_s)
    waited = time.perf_counter() - waited_from
    try:
        yield from _generate_locked(
            case_text, served=served, settings=settings, stop=stop, conclude=conclude, options=options,
            context=context, waited=waited,
        )
    finally:
        served.lock.release()


def _generate_locked(
    case_text: str,
    *,
    served: "ModelServer",
    settings: GenerationSettings,
    stop: threading.Event,
    conclude: threading.Event,
    options: dict[str, str] | None,
    context: str,
    waited: float,
) -> Iterator[StreamEvent]:
    import torch

    t0 = time.perf_counter()
    model, tokenizer = served.model, served.tokenizer
    try:
        device = next(model.parameters()).device
        input_ids = prompt_ids(tokenizer, case_text, options, context=context).to(device)
        marker = marker_ids(tokenizer) if settings.answer_allowance > 0 else []
    except Exception as exc:  # noqa: BLE001 - a tokenizer/template failure becomes a user-facing message
        raise GenerationError(f"Could not prepare the prompt: {exc}") from exc
    budget = answer_budget(settings.max_new_tokens, marker, allowance=settings.answer_allowance)
    prompt_len = int(input_ids.shape[1])
    streamer = _timed_streamer(tokenizer, timeout=None)
    eos = eos_ids(model)
    sampling: dict[str, Any] = (
        dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        if settings.temperature > 0 else dict(do_sample=False)
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gate = _ReasoningGate(tokenizer, budget, stop=stop, conclude=conclude)
    forced: list[ForcedReason] = []  # set by the worker before the marker is streamed
    answer_cut_short: list[bool] = []
    failure: list[BaseException] = []

    decoder = served.decoder
    if decoder is not None and not decoder.fits(prompt_len, settings.max_new_tokens):
        decoder = None  # longer than the decoder's cache: generate (dynamic cache) serves it

    def run(ids: "torch.Tensor", max_new: int, ends: Callable[[int, Callable[[], list[int]]], bool]) -> list[int]:
        """One phase: up to ``max_new`` tokens after ``ids`` into the streamer; ``ends(n, ids)`` is asked after
        each token (EOS ends it too). Returns the phase's tokens."""
        if decoder is not None:
            out: list[int] = []

            def on_token(token: int) -> None:
                out.append(token)
                streamer.put(torch.tensor([token]))

            decoder.generate(ids, max_new_tokens=max_new, temperature=settings.temperature, top_p=settings.top_p,
                             should_stop=lambda: ends(len(out), lambda: out), on_token=on_token, eos=eos)
            return out
        start = int(ids.shape[1])
        streamer.next_tokens_are_prompt = True  # generate puts the input first
        with torch.inference_mode():
            seq = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, streamer=streamer,
                stopping_criteria=[_stop_when(lambda s: ends(int(s.shape[1]) - start, lambda: s[0, start:].tolist()))],
                pad_token_id=pad_id, **sampling,
            )
        return [int(t) for t in seq[0, start:].tolist()]

    def answer_ends(n: int, ids: Callable[[], list[int]]) -> bool:
        return stop.is_set() or answer_complete(tokenizer.decode(ids(), skip_special_tokens=True))

    def work() -> None:
        try:
            if decoder is not None:
                streamer.put(input_ids.cpu())  # the prompt first, as generate does (the streamer skips it)
            reasoning = run(input_ids, budget.total, gate.ends)
            if stop.is_set() or not reasoning:
                return
            why: ForcedReason | None = gate.forced
            kept = reasoning
            if reasoning[-1] in eos:
                # The model ended its turn. Without a marker that is no answer at all, so it is asked
                # for one; the second phase continues the reasoning, not the closed turn.
                kept = reasoning[:-1]
                text = tokenizer.decode(kept, skip_special_tokens=True)
                ended_unanswered = needs_forcing(text, len(reasoning), budget, ended=True)
                why = ("conclude" if conclude.is_set() else "eos") if ended_unanswered else None
            room = answer_room(budget, len(reasoning))
            if why is None or room <= 0:
                return
            forced.append(why)
            streamer.put_generated(budget.marker)
            tail = torch.tensor([kept + list(budget.marker)], dtype=input_ids.dtype, device=input_ids.device)
            answer = run(torch.cat([input_ids, tail], dim=1), room, answer_ends)
            ended = bool(answer) and (answer[-1] in eos or answer_ends(len(answer), lambda: answer))
            answer_cut_short.append(len(answer) >= room and not ended)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread below
            failure.append(exc)
        finally:
            streamer.finish()  # unblock the consumer whatever happened

    def stats(finish: FinishReason | None = None, *, marked: bool = True) -> GenerationStats:
        # ``marked``: the text read so far holds the final-answer marker. The worker decides to force
        # before the consumer has read the reasoning's last chunks; those events are not forced yet.
        times = list(streamer.token_times)
        n = len(times)
        rate = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else None
        return GenerationStats(
            prompt_tokens=prompt_len,
            new_tokens=n,
            time_to_first_token_s=(times[0] - t0) if n else None,
            tokens_per_s=rate,
            elapsed_s=time.perf_counter() - t0,
            waited_s=waited,
            finish_reason=finish,
            forced=forced[0] if forced and marked else None,
        )

    future = served.worker.submit(work)
    text = ""
    streamed_to_end = False
    try:
        yield StreamEvent("started", stats=stats())
        for chunk in streamer:
            if not chunk:
                continue
            text += chunk
            reasoning, answer, has_answer = split_text(text, final=False)
            yield StreamEvent("text", reasoning, answer, has_answer, text, stats(marked=has_answer))
        streamed_to_end = True
    finally:
        if not streamed_to_end:
            # The consumer abandoned the stream (page rerun, generator closed): stop the worker at
            # the next token; the lock is released only once the model is really free.
            stop.set()
        future.result()
    stop_requested = stop.is_set()
    if failure:
        raise GenerationError(f"Generation failed: {type(failure[0]).__name__}: {failure[0]}") from failure[0]
    final = stats()
    if stop_requested:
        finish: FinishReason = "stopped"
    elif forced:
        finish = "length" if answer_cut_short and answer_cut_short[0] else "eos"
    elif final.new_tokens >= settings.max_new_tokens:
        finish = "length"
    else:
        finish = "eos"
    reasoning, answer, has_answer = split_text(text, final=True)
    yield StreamEvent("done", reasoning, answer, has_answer, text, replace(final, finish_reason=finish))


# -- a finished run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRun:
    """Everything worth keeping about one finished (or stopped) generation: what history stores."""

    case_text: str
    reasoning: str
    answer: str
    has_answer: bool
    completion: str
    """The raw generated text."""
    base_model: str
    adapter: str
    settings: dict[str, Any]
    stats: dict[str, Any]
    stopped: bool
    example_id: str | None = None
    """Id of the test-split record the case came from, if it was picked as an example."""
    forced: ForcedReason | None = None
    """Why the final answer was forced (``budget``, ``conclude`` or ``eos``); None when the model wrote it
    unprompted."""
    references: list[dict[str, Any]] = field(default_factory=list)
    """Reference passages given to the model as context (``core.retrieval.Passage.to_dict()``), best first."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def history_fields(self) -> dict[str, Any]:
        """Keyword arguments for saving this run to history (``storage.history.save_case_run``)."""
        return {
            "case_text": self.case_text,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "base_model": self.base_model,
            "adapter": self.adapter,
            "settings": dict(self.settings),
            "timings": {
                "ttft_s": self.stats.get("time_to_first_token_s"),
                "tokens": self.stats.get("new_tokens"),
                "tokens_per_s": self.stats.get("tokens_per_s"),
                "total_s": self.stats.get("elapsed_s"),
                "waited_s": self.stats.get("waited_s"),
                "finish_reason": self.stats.get("finish_reason"),
                "forced": self.forced,
            },
            "status": "stopped" if self.stopped else "completed",
            "source_item_id": self.example_id,
            "references": [dict(r) for r in self.references],
        }


def case_run(
    event: StreamEvent,
    *,
    case_text: str,
    base_model: str,
    adapter: str,
    settings: GenerationSettings,
    example_id: str | None = None,
    stopped: bool | None = None,
    references: Sequence[dict[str, Any]] = (),
) -> CaseRun:
    """The run record for the last event of a stream (``stopped`` overrides the event's finish reason).

    ``references`` are the passages the prompt's context was built from (``Passage.to_dict()``).
    """
    is_stopped = event.stopped if stopped is None else stopped
    stats = replace(event.stats, finish_reason="stopped") if is_stopped else event.stats
    reasoning, answer, has_answer = split_text(event.text, final=True) if event.text else ("", "", False)
    return CaseRun(
        case_text=case_text,
        reasoning=reasoning,
        answer=answer,
        has_answer=has_answer,
        completion=event.text,
        base_model=base_model,
        adapter=adapter,
        settings=settings.to_dict(),
        stats=stats.to_dict(),
        stopped=is_stopped,
        example_id=example_id,
        forced=event.forced,
        references=[dict(r) for r in references],
    )


# -- serving plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingPlan:
    """How a merged model is served on one device (applied once by :func:`prepare_for_serving`)."""

    weights: WeightFormat
    static_cache: bool = False
    """Static KV cache in ``generate``; on CUDA this also makes transformers compile the decoding step."""
    max_cache_len: int | None = None
    """Static cache size for every request (prompt + new tokens), so later requests reuse one compiled graph;
    with ``decoder``, the lean decoder's cache size (longer requests fall back to ``generate``)."""
    decoder: bool = False
    """Decode with the lean Llama decoder (:mod:`core.decoder`) when the model passes its check."""
    compile_decoder: bool = False
    """Compile the lean decoder's one-token step into a CUDA graph (CUDA only)."""
    int4_native: bool = False
    """CPU: when the base weights already lie on a 4-bit grid (the embedded GGUF model), the lean decoder
    decodes with those 4-bit codes plus the adapter unmerged (:func:`core.decoder.native_int4`)."""

    def describe(self) -> str:
        parts = {
            "fp32": "fp32 weights",
            "bf16": "bf16 weights",
            "int8": "int8 weight-only decoding (bf16 prefill and embeddings)",
        }[self.weights]
        if self.int4_native:
            parts = "4-bit native base + unmerged LoRA for decoding where the base allows, else " + parts
        if self.decoder:
            return parts + (", lean decoder, step compiled to a CUDA graph" if self.compile_decoder else ", lean decoder")
        return parts + (", static KV cache + torch.compile" if self.static_cache else ", eager")


def serving_plan(device: str, *, max_cache_len: int = 4096) -> ServingPlan:
    """The fastest measured plan for ``device`` (see docs/BENCHMARKS.md)."""
    if device.startswith("cuda"):
        return ServingPlan(weights="bf16", max_cache_len=max_cache_len, decoder=True, compile_decoder=True)
    return ServingPlan(weights="int8", max_cache_len=max_cache_len, decoder=True, int4_native=True)


@functools.cache
def _int8_linear_class() -> Any:
    """``nn.Linear`` replacement for decoding: int8 weights with one bf16 scale per output row.

    The int8 kernel (``_weight_int8pack_mm``) halves the bytes read per decoded token, which is
    what bounds decoding on a CPU. For prompts (many rows at once) it is slower than a bf16
    matrix product, so a bf16 copy of the weight serves the prefill. Built lazily (imports torch).
    """
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
        def __init__(self, linear: nn.Linear) -> None:
            super().__init__()
            weight = linear.weight.detach().float()
            # Symmetric per-row scale; 127 (not 128) keeps the grid symmetric around zero.
            scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
            self.register_buffer("scale", scale.to(torch.bfloat16))
            self.register_buffer("weight_bf16", linear.weight.detach().to(torch.bfloat16))
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            if flat.shape[0] <= DECODE_ROWS:
                out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scale)
                if self.bias is not None:
                    out = out + self.bias
            else:
                out = torch.nn.functional.linear(flat, self.weight_bf16, self.bias)
            return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8 decode / bf16 prefill"

    return Int8Linear


DECODE_ROWS = 4
"""Up to this many rows (tokens x batch) an int8 linear uses the int8 kernel; above, the bf16 weight."""


def quantize_linears_int8(module: Any) -> int:
    """Replace every ``nn.Linear`` under ``module`` with an int8 weight-only linear; returns the count."""
    from torch import nn

    cls = _int8_linear_class()
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, cls(child))
                count += 1
    return count


def prepare_for_serving(model: Any, plan: ServingPlan, *, tokenizer: Any = None,
                        adapter_dir: Path | None = None) -> ModelServer:
    """A :class:`ModelServer` for ``model`` with ``plan`` applied (in place, once, before it is shared)."""
    return ModelServer(model, tokenizer).prepare(plan, adapter_dir=adapter_dir)


def _apply_plan(model: Any, plan: ServingPlan, *, adapter_dir: Path | None, worker: ThreadPoolExecutor) -> Any:
    """Apply ``plan`` to ``model`` in place; returns the lean decoder built for it, or None."""
    import torch

    native = None
    if plan.decoder and plan.int4_native and next(model.parameters()).device.type == "cpu":
        from core.decoder import native_int4

        native, why = native_int4(model, adapter_dir)  # from the fp32 merged weights, before any rounding
        _log.info("4-bit native decoding: %s", why if native is None else "yes, " + why)
    if plan.weights in ("bf16", "int8"):
        model.to(torch.bfloat16)
    if plan.weights == "int8":
        quantize_linears_int8(model.model.layers)
        # The output head reads a vocabulary-sized matrix per token (a fifth of SmolLM2's weights).
        # It is tied to the embedding table: the int8 head gets its own copy, the embeddings stay bf16.
        model.set_output_embeddings(_int8_linear_class()(model.get_output_embeddings()))
    model.eval()
    if plan.decoder:
        from core.decoder import build_decoder

        # Built (and checked, which compiles its step) on the thread that will serve the model:
        # CUDA graphs recorded by torch.compile belong to their thread.
        decoder = worker.submit(
            build_decoder, model, max_len=plan.max_cache_len or 4096, compile_step=plan.compile_decoder,
            native=native, log=_log.info,
        ).result()
        if decoder is not None:
            return decoder
    if plan.static_cache or plan.compile_decoder:  # also generate's fallback when the decoder can't serve
        model.generation_config.cache_implementation = "static"
        model.generation_config.max_cache_len = plan.max_cache_len
    return None


def eos_ids(model: Any) -> set[int]:
    """The model's end-of-sequence ids, read at call time (a benchmark may switch them off)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def _warm_up(server: ModelServer, *, new_tokens: int) -> None:
    import torch

    model, tokenizer, decoder = server.model, server.tokenizer, server.decoder
    ids = prompt_ids(tokenizer, "Warm-up.").to(next(model.parameters()).device)

    def work() -> None:
        if decoder is not None and decoder.fits(int(ids.shape[1]), new_tokens):
            decoder.generate(ids, max_new_tokens=new_tokens, temperature=0.0, top_p=1.0,
                             should_stop=lambda: False, on_token=lambda _t: None, eos=set())
            return
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )

    # On the thread that will serve this model (compiled CUDA graphs are per thread).
    server.worker.submit(work).result()


# -- examples and reference comparison -----------------------------------------------------------


def load_test_cases(prepared_dir: Path) -> list[Record] | None:
    """Records of the held-out test split, or None when the data has not been prepared."""
    path = prepared_dir / "test.jsonl"
    if not path.is_file():
        return None
    return [r for r in read_jsonl(path) if r.question.strip()]


def case_text_for(record: Record) -> str:
    """The text a student would type for ``record`` (options and instruction included for MCQ)."""
    return user_message(record.question, record.options)
