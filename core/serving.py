"""Who writes the case study's text: the model in this process, or an OpenAI-compatible server.

Both backends hand the pages the same stream of :class:`core.inference.StreamEvent` for the same
prompt (the one format of :mod:`core.prompts`), with the same budget forcing, Stop and Conclude now:

- :class:`LocalBackend` generates in this process (:func:`core.inference.stream_case`): one generation
  at a time per model. It is the desktop default for the embedded model: nothing to install or start.
- :class:`OpenAIBackend` streams from a server's ``/v1/completions`` endpoint (llama.cpp's
  ``llama-server``, vLLM, SGLang, Ollama): the server batches concurrent students. The prompt is sent
  as text built by the app's tokenizer and chat template, so the server sees exactly the trained
  format. Budget forcing runs here, on the client: the app counts the streamed tokens with its
  tokenizer, abandons the stream when the reasoning's share of the budget is spent without a
  final-answer marker (or the student asks to conclude, or the model ends its turn without one), and
  sends a second request whose prompt is the first one plus the reasoning and the marker. A server
  with a prompt cache (llama.cpp's is on by default) re-reads only the new part.

Adapters on a server: llama.cpp's server holds every LoRA given at start-up (``make serve`` loads the
shipped adapter and every trained one) and takes per-request scales, so activating another adapter
switches the next request. vLLM loads adapters at run time through ``/v1/load_lora_adapter`` (when it
runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) and serves them by name. Where neither works,
:attr:`ServerInfo.note` says that the server must be restarted with the adapter.

Faults become :class:`core.inference.GenerationError` with a message fit for the page: a server that
is down, answers with an error, sends nothing for ``first_token_timeout_s`` (or, once started,
for ``stall_timeout_s``) or sends chunks that are not OpenAI completion chunks.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from core.inference import (
    FORCED_MARKER_TEXT,
    ForcedReason,
    FinishReason,
    GenerationError,
    GenerationSettings,
    GenerationStats,
    ModelServer,
    StreamEvent,
    answer_budget,
    answer_complete,
    answer_room,
    marker_ids,
    needs_forcing,
    prompt_text,
    split_text,
)
from core import inference
from core.prompts import parse_completion

BACKENDS = ("local", "openai")
_INFO_TTL_S = 10.0
"""How long a server's self-description (engine, adapters) is reused for captions before it is asked again."""
_ERROR_BODY_CHARS = 300


class Backend(Protocol):
    """What the pages need from whoever generates."""

    kind: str
    """``local`` or ``openai``."""
    base_model: str
    adapter: str
    """Name of the adapter served (``none (base model)`` without one)."""

    def describe(self) -> str:
        """One line for the page's caption: which backend and engine serve the answers."""

    def adapter_note(self) -> str | None:
        """Why the adapter asked for is not the one served, if it is not."""

    def stream(
        self,
        case_text: str,
        *,
        settings: GenerationSettings,
        stop: threading.Event | None = None,
        conclude: threading.Event | None = None,
        options: dict[str, str] | None = None,
        context: str = "",
    ) -> Iterator[StreamEvent]:
        """Events as in :func:`core.inference.stream_case`; raises :class:`GenerationError` for a failure."""


# -- in process ------------------------------------------------------------------------------------


@dataclass
class LocalBackend:
    """The model loaded in this process (a :class:`core.inference.ModelServer`): one generation at a time."""

    served: ModelServer
    base_model: str
    adapter: str
    engine: str
    """How the weights are served (``core.inference.ModelServer.describe``)."""
    adapter_problem: str | None = None
    """Why the requested adapter was left out (the base model is served alone); None when it was not."""
    requested_adapter: str | None = None
    kind: str = "local"

    def describe(self) -> str:
        return f"in-process ({self.engine})"

    def adapter_note(self) -> str | None:
        """Why the adapter asked for is not the one served, if it is not."""
        if self.adapter_problem is None:
            return None
        return f"Adapter {self.requested_adapter} cannot be used, so the base model is served alone: {self.adapter_problem}"

    def stream(self, case_text: str, *, settings: GenerationSettings, stop: threading.Event | None = None,
               conclude: threading.Event | None = None, options: dict[str, str] | None = None,
               context: str = "") -> Iterator[StreamEvent]:
        return inference.stream_case(case_text, served=self.served, settings=settings, stop=stop, conclude=conclude,
                           options=options, context=context)


# -- an OpenAI-compatible server ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What a server says about itself, and how a request selects the adapter."""

    engine: str
    """``owned_by`` of its first model: ``llamacpp``, ``vllm``, ``sglang``, ``ollama``… (``unknown`` if unsaid)."""
    model: str
    """The model name to send."""
    request: dict[str, Any] = field(default_factory=dict)
    """Extra request fields that select the adapter (llama.cpp: per-request LoRA scales)."""
    adapter_served: bool = False
    """Whether the requested adapter is what the server will apply."""
    note: str | None = None
    """Why the requested adapter is not served, and what to do (restart the server with it)."""


def _lora_matches(entry: dict[str, Any], adapter_dir: Path, manifest: dict[str, Any]) -> bool:
    """Whether a llama.cpp ``/lora-adapters`` entry is the GGUF export of ``adapter_dir``.

    ``make serve`` writes a manifest mapping each LoRA id to its adapter folder; without one (a server
    started by hand, or on another machine) the GGUF file's name must start with the folder's name.
    """
    for lora in manifest.get("loras", []):
        if lora.get("id") == entry.get("id") and lora.get("adapter_dir"):
            try:
                return Path(lora["adapter_dir"]).resolve() == adapter_dir.resolve()
            except OSError:
                return False
    name = Path(str(entry.get("path", ""))).name
    return name == adapter_dir.name or name.startswith((adapter_dir.name + ".", adapter_dir.name + "-"))


@dataclass(eq=False, kw_only=True)
class OpenAIBackend:
    """Streams completions from an OpenAI-compatible server at ``url`` (ending in ``/v1``).

    ``tokenizer`` is the base model's (the prompt is built and the generated tokens are counted with
    it); ``adapter_dir`` the adapter to serve, or None for the base model. The API key, if any, is read
    from the environment variable ``api_key_env`` at each request and never kept.
    """

    url: str
    tokenizer: Any
    base_model: str
    adapter_dir: Path | None
    model: str = ""
    """The model name to send; empty: the first the server lists."""
    api_key_env: str = "OPENAI_API_KEY"
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 60.0
    stall_timeout_s: float = 30.0
    manifest_path: Path | None = None
    """``make serve``'s ``server.json`` (which llama.cpp LoRA id is which adapter folder), if there is one."""
    request_extra: dict[str, Any] = field(default_factory=dict)
    """Extra fields for every completion request (a benchmark's ``ignore_eos``, a server's own options)."""
    poll_s: float = 0.2
    kind: str = field(default="openai", init=False)
    _info: tuple[float, ServerInfo] | None = field(default=None, init=False, repr=False)
    _info_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    @property
    def adapter(self) -> str:
        return self.adapter_dir.name if self.adapter_dir else "none (base model)"

    # -- the server's self-description ---------------------------------------------------------------

    @property
    def root(self) -> str:
        """The server's root URL (llama.cpp's own endpoints live there, not under ``/v1``)."""
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self, read_s: float) -> Any:
        import httpx

        return httpx.Client(timeout=httpx.Timeout(read_s, connect=self.connect_timeout_s), headers=self._headers())

    def _unreachable(self, exc: BaseException) -> GenerationError:
        return GenerationError(
            f"The inference server at {self.url} is not reachable ({type(exc).__name__}: {exc}). "
            "Check that it is running (`make serve` starts llama.cpp's server) and that serving_url is right."
        )

    def _get_json(self, client: Any, url: str) -> Any:
        import httpx

        try:
            response = client.get(url)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._unreachable(exc) from exc
            raise GenerationError(f"The inference server at {self.url} did not answer GET {url} in time "
                                  f"({type(exc).__name__}): it may be overloaded. Try again in a moment.") from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            raise GenerationError(f"The inference server answered {response.status_code} to GET {url}: "
                                  f"{response.text[:_ERROR_BODY_CHARS]}")
        try:
            return response.json()
        except ValueError as exc:
            raise GenerationError(f"The inference server sent something that is not JSON for GET {url}.") from exc

    def _manifest(self) -> dict[str, Any]:
        if self.manifest_path is None or not self.manifest_path.is_file():
            return {}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or str(data.get("url", "")).rstrip("/") not in (self.url, self.root):
            return {}  # the manifest of another server
        return data

    def info(self, *, fresh: bool = False) -> ServerInfo:
        """Ask the server what it is and how to select the adapter (cached for a few seconds)."""
        with self._info_lock:
            if not fresh and self._info is not None and time.monotonic() - self._info[0] < _INFO_TTL_S:
                return self._info[1]
            # A busy server answers its listing between decoding steps: allow as long as for a first token.
            with self._client(self.first_token_timeout_s) as client:
                info = self._probe(client)
            self._info = (time.monotonic(), info)
            return info

    def _probe(self, client: Any) -> ServerInfo:
        listing = self._get_json(client, f"{self.url}/models")
        models = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
            raise GenerationError(f"The inference server at {self.url} lists no model (GET /models).")
        engine = str(models[0].get("owned_by") or "unknown")
        ids = [str(m.get("id", "")) for m in models]
        model = self.model or ids[0]
        if engine == "llamacpp":
            return self._llamacpp_info(client, engine, model)
        if self.adapter_dir is None:
            return ServerInfo(engine, model, adapter_served=True)
        name = self.adapter_dir.name
        if name in ids:
            return ServerInfo(engine, name, adapter_served=True)
        if engine == "vllm":
            import httpx

            try:
                response = client.post(f"{self.url}/load_lora_adapter",
                                       json={"lora_name": name, "lora_path": str(self.adapter_dir)})
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            if response.status_code == 200:
                return ServerInfo(engine, name, adapter_served=True)
            return ServerInfo(engine, model, note=(
                f"vLLM could not load adapter {name} at run time ({response.status_code}: "
                f"{response.text[:_ERROR_BODY_CHARS]}). Start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, "
                f"or restart it with --lora-modules {name}={self.adapter_dir}."))
        return ServerInfo(engine, model, note=(
            f"This {engine} server cannot be told to switch adapters: it serves {model!r}. "
            f"Restart it with adapter {name} to serve it."))

    def _llamacpp_info(self, client: Any, engine: str, model: str) -> ServerInfo:
        loras = self._get_json(client, f"{self.root}/lora-adapters")
        if not isinstance(loras, list) or not all(isinstance(e, dict) and "id" in e for e in loras):
            raise GenerationError(f"The inference server at {self.url} sent a malformed adapter list.")
        if self.adapter_dir is None:
            return ServerInfo(engine, model, request={"lora": [{"id": e["id"], "scale": 0.0} for e in loras]},
                              adapter_served=True)
        manifest = self._manifest()
        chosen = next((e for e in loras if _lora_matches(e, self.adapter_dir, manifest)), None)
        scales = [{"id": e["id"], "scale": 1.0 if e is chosen else 0.0} for e in loras]
        if chosen is None:
            return ServerInfo(engine, model, request={"lora": scales}, note=(
                f"The llama.cpp server does not hold adapter {self.adapter_dir.name}, so it answers with the "
                "base model alone. Restart it (`make serve`) to load the adapter."))
        return ServerInfo(engine, model, request={"lora": scales}, adapter_served=True)

    def adapter_note(self) -> str | None:
        """Why the adapter asked for is not the one served (and what to do), if it is not; also when the
        server cannot be asked."""
        try:
            return self.info().note
        except GenerationError:
            return None  # describe() says the server is not reachable

    def describe(self) -> str:
        try:
            info = self.info()
        except GenerationError:
            return f"inference server at {self.url} (not reachable now)"
        return f"{info.engine} server at {self.url}, model {info.model}"

    # -- generation --------------------------------------------------------------------------------

    def stream(self, case_text: str, *, settings: GenerationSettings, stop: threading.Event | None = None,
               conclude: threading.Event | None = None, options: dict[str, str] | None = None,
               context: str = "") -> Iterator[StreamEvent]:
        stop = stop or threading.Event()
        conclude = conclude or threading.Event()
        t0 = time.perf_counter()
        tok = self.tokenizer
        try:
            prompt = prompt_text(tok, case_text, options, context=context)
            prompt_tokens = len(tok.encode(prompt, add_special_tokens=False))
            marker = marker_ids(tok) if settings.answer_allowance > 0 else []
        except Exception as exc:  # noqa: BLE001 - a tokenizer/template failure becomes a user-facing message
            raise GenerationError(f"Could not prepare the prompt: {exc}") from exc
        info = self.info()  # asked again every few seconds, not per request: a class asks at once
        budget = answer_budget(settings.max_new_tokens, marker, allowance=settings.answer_allowance)
        times: list[float] = []
        forced: ForcedReason | None = None
        state = {"text": "", "counted": 0}

        def stats(finish: FinishReason | None = None) -> GenerationStats:
            n = len(times)
            rate = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else None
            return GenerationStats(prompt_tokens=prompt_tokens, new_tokens=n,
                                   time_to_first_token_s=(times[0] - t0) if n else None, tokens_per_s=rate,
                                   elapsed_s=time.perf_counter() - t0, finish_reason=finish, forced=forced)

        def grow(piece: str) -> int:
            """Append ``piece`` to the text; the generated token count so far (the app's tokenizer's count)."""
            state["text"] += piece
            n = len(tok.encode(state["text"], add_special_tokens=False)) if state["text"] else 0
            now = time.perf_counter()
            times.extend([now] * max(0, n - len(times)))
            return n

        def event(kind: str = "text", finish: FinishReason | None = None) -> StreamEvent:
            reasoning, answer, has_answer = split_text(state["text"], final=kind == "done")
            return StreamEvent(kind, reasoning, answer, has_answer, state["text"], stats(finish))  # type: ignore[arg-type]

        yield StreamEvent("started", stats=stats())
        # Phase 1: reasoning, and the model's own answer if it writes one.
        finish: str | None = None
        marker_seen = False
        n = 0
        with contextlib.closing(self._completions(prompt, info, settings, max_tokens=budget.total, stop=stop)) as pieces:
            for piece, finish in pieces:
                if stop.is_set():
                    break
                if piece is None:  # no new text: a moment to notice Conclude now
                    if conclude.is_set() and not marker_seen and budget.can_force:
                        forced = "conclude"
                        break
                    continue
                n = grow(piece)
                if not marker_seen and budget.can_force:
                    if parse_completion(state["text"]).has_answer:
                        marker_seen = True  # a natural answer: it goes on to the full budget
                    elif conclude.is_set():
                        forced = "conclude"
                        break
                    elif needs_forcing(state["text"], n, budget):
                        forced = "budget"
                        break
                yield event()
        if stop.is_set():
            yield event("done", "stopped")
            return
        ended = finish == "stop"
        if forced is None and ended and needs_forcing(state["text"], n, budget, ended=True):
            forced = "conclude" if conclude.is_set() else "eos"
        room = answer_room(budget, n + (1 if ended else 0))  # an end-of-sequence was decoded, as in-process
        if forced is None or room <= 0:
            forced = None
            cut = finish == "length" or n >= settings.max_new_tokens
            yield event("done", "length" if cut else "eos")
            return
        # Phase 2: the marker, then at most the allowance of answer, ending at its paragraph's end.
        kept = state["text"]
        n = grow(FORCED_MARKER_TEXT)
        yield event()
        answer_from, cut_short = n, False
        follow_up = prompt + kept + FORCED_MARKER_TEXT
        with contextlib.closing(self._completions(follow_up, info, settings, max_tokens=room, stop=stop)) as pieces:
            for piece, finish in pieces:
                if stop.is_set():
                    break
                if piece is None:
                    continue
                n = grow(piece)
                yield event()
                if answer_complete(state["text"][len(follow_up) - len(prompt):]):
                    break
            else:
                cut_short = finish == "length" or n - answer_from >= room
        if stop.is_set():
            yield event("done", "stopped")
            return
        yield event("done", "length" if cut_short else "eos")

    def _completions(self, prompt: str, info: ServerInfo, settings: GenerationSettings, *, max_tokens: int,
                     stop: threading.Event) -> Iterator[tuple[str | None, str | None]]:
        """``(text, finish_reason)`` pairs of one streamed completion; ``(None, None)`` every ``poll_s``
        without new text. Closing the iterator abandons the request (the server stops generating)."""
        body: dict[str, Any] = {
            "model": info.model, "prompt": prompt, "max_tokens": int(max_tokens), "stream": True,
            "temperature": float(settings.temperature), **info.request, **self.request_extra,
        }
        if settings.temperature > 0:
            body["top_p"] = float(settings.top_p)
        chunks: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        cancel = threading.Event()
        holder: dict[str, Any] = {}
        reader = threading.Thread(target=self._read, args=(body, chunks, cancel, holder), daemon=True,
                                  name="openai-stream")
        reader.start()
        started = False
        last = time.monotonic()
        try:
            while True:
                try:
                    kind, piece, finish = chunks.get(timeout=self.poll_s)
                except queue.Empty:
                    waited = time.monotonic() - last
                    limit = self.stall_timeout_s if started else self.first_token_timeout_s
                    if not stop.is_set() and waited > limit:
                        what = "stopped sending text" if started else "sent no text"
                        raise GenerationError(
                            f"The inference server at {self.url} {what} for {waited:.0f} s (limit {limit:g} s): "
                            "it may be overloaded or stuck. Try again in a moment.")
                    yield None, None
                    continue
                if kind == "error":
                    raise piece
                if kind == "end":
                    return
                started = True
                last = time.monotonic()
                yield piece, finish
                if finish is not None:
                    return
        finally:
            cancel.set()
            response = holder.get("response")
            if response is not None:
                try:
                    response.close()  # the server notices the closed connection and frees the slot
                except Exception:  # noqa: BLE001 - closing a stream the reader is using may race; nothing to lose
                    pass

    def _read(self, body: dict[str, Any], chunks: "queue.Queue[tuple[str, Any, Any]]", cancel: threading.Event,
              holder: dict[str, Any]) -> None:
        """Reader thread: server-sent events of one completion into ``chunks``; never raises."""
        import httpx

        url = f"{self.url}/completions"
        backstop = max(self.first_token_timeout_s, self.stall_timeout_s) + 5
        try:
            with self._client(backstop) as client, client.stream("POST", url, json=body) as response:
                holder["response"] = response
                if response.status_code != 200:
                    text = response.read().decode("utf-8", "replace")[:_ERROR_BODY_CHARS]
                    chunks.put(("error", GenerationError(
                        f"The inference server answered {response.status_code}: {text}"), None))
                    return
                for line in response.iter_lines():
                    if cancel.is_set():
                        return
                    if not line.strip() or line.startswith(":"):
                        continue  # keep-alive comments and event separators
                    if not line.startswith("data:"):
                        chunks.put(("error", self._malformed(line), None))
                        return
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        break
                    try:
                        piece, finish = _parse_chunk(data)
                    except ValueError:
                        chunks.put(("error", self._malformed(data), None))
                        return
                    chunks.put(("chunk", piece, finish))
            chunks.put(("end", None, None))
        except httpx.HTTPError as exc:
            if cancel.is_set():
                return
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                chunks.put(("error", self._unreachable(exc), None))
            else:
                chunks.put(("error", GenerationError(
                    f"The connection to the inference server at {self.url} failed mid-stream "
                    f"({type(exc).__name__}: {exc})."), None))
        except Exception as exc:  # noqa: BLE001 - anything else still reaches the page as a message
            if not cancel.is_set():
                chunks.put(("error", GenerationError(f"Reading the inference server's stream failed: {exc}"), None))

    def _malformed(self, data: str) -> GenerationError:
        shown = data if len(data) <= 120 else data[:119] + "…"
        return GenerationError(
            f"The inference server at {self.url} sent a chunk that is not an OpenAI completion chunk: {shown!r}. "
            "Is serving_url the /v1 root of an OpenAI-compatible server?")


def _parse_chunk(data: str) -> tuple[str, str | None]:
    """Text and finish reason of one ``/v1/completions`` stream chunk; ValueError when it is not one."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    if "error" in obj:
        raise ValueError(str(obj["error"]))
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise ValueError("no choices")
    if not choices:  # a usage-only chunk
        return "", None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError("choice is not an object")
    text = choice.get("text") or ""
    finish = choice.get("finish_reason")
    if not isinstance(text, str) or (finish is not None and not isinstance(finish, str)):
        raise ValueError("text or finish_reason of the wrong type")
    return text, finish


def served_by(backend: Backend) -> dict[str, str]:
    """Which backend and engine generate (kept with each run, so history says who answered)."""
    if isinstance(backend, LocalBackend):
        return {"backend": backend.kind, "engine": f"in-process: {backend.engine}"}
    try:
        engine = backend.info().engine  # type: ignore[attr-defined]
    except (GenerationError, AttributeError):
        engine = "unknown"
    return {"backend": backend.kind, "engine": f"{engine} server"}


