"""Acceptance: the served model (embedded SmolLM2 + the shipped adapter) ends every held-out case with a final answer.

Ten open-ended cases of the held-out test split (the reasoning test items, evenly spaced through the
file so both of its open-ended sources are in) go through
the app's own generation path: ``app.resources.get_served_model`` (adapter merged, CPU serving plan,
one decoding thread on two cores, warm-up) and :func:`core.inference.stream_case` with the default
:class:`~core.inference.GenerationSettings` (768 new tokens, temperature 0.3, top-p 0.9, the answer
allowance). Sampling is seeded per case, so a run is repeatable. Whether each answer was natural or
forced (and why) is printed and written to ``test-artifacts/final_answers.json``.

Marked slow: about 5 minutes on two cores (up to 768 tokens per case at 20-30 tokens/s), plus a
minute to prepare the data where ``.work/data`` has not been prepared (as in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import inference
from core.inference import GenerationSettings
from core.settings import Settings, load_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "test-artifacts" / "final_answers.json"
CASES = 10


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """The app's default settings (environment ignored), with prepared data: the project's own when it
    is there, else prepared into a fresh work dir by ``python -m core.data prepare``, as a deployment does."""
    default = load_settings(env={})
    if inference.load_test_cases(default.prepared_dir):
        return default
    work = tmp_path_factory.mktemp("work")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTUDY_")}
    # The project's model cache: the embedded model is converted once per checkout, not per run.
    env |= {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_MODEL_CACHE": str(default.model_cache_dir)}
    done = subprocess.run([sys.executable, "-m", "core.data", "prepare"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return Settings(work_dir=work, model_cache=default.model_cache_dir)


@pytest.fixture(scope="module")
def served(settings):
    """The model the app serves by default, loaded once through the app's cached loader."""
    import torch

    from app import resources
    from core import model as model_lib

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resources, "get_settings", lambda: settings)
        loaded = resources.get_served_model(settings.base_model, settings.adapter, "cpu")
        try:
            assert loaded.adapter_problem is None and loaded.adapter_dir == model_lib.DEFAULT_ADAPTER_DIR
            assert loaded.base.identity == model_lib.EMBEDDED_BASE_ID
            yield loaded
        finally:
            resources.get_served_model.clear()
            resources.get_base_model.clear()
            torch.set_num_threads(threads)  # the loader sets the process-wide count for serving


def test_every_held_out_case_ends_with_a_final_answer(settings, served):
    import torch

    open_ended = [r for r in inference.load_test_cases(settings.prepared_dir) if r.kind == "open"]
    cases = open_ended[:: max(1, len(open_ended) // CASES)][:CASES]
    assert len(cases) == CASES
    generation = GenerationSettings()  # the page's defaults: the app's budget and sampling
    assert generation == generation.clamped(cap=settings.max_new_tokens)
    rows = []
    started = time.perf_counter()
    for seed, record in enumerate(cases):
        torch.manual_seed(seed)  # the decoding thread samples from torch's default generator
        done = list(inference.stream_case(inference.case_text_for(record), served=served, settings=generation))[-1]
        assert done.kind == "done" and not done.stopped
        rows.append({
            "id": record.id,
            "final_answer": done.forced or "natural",
            "has_answer": done.has_answer,
            "answer": done.answer,
            "new_tokens": done.stats.new_tokens,
            "finish_reason": done.stats.finish_reason,
            "tokens_per_s": done.stats.tokens_per_s,
            "elapsed_s": round(done.stats.elapsed_s, 2),
            "seed": seed,
        })
    seconds = time.perf_counter() - started

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps({
        "base_model": served.base.identity, "adapter": served.adapter_name, "serving": served.describe(), "settings": generation.to_dict(), "seconds": round(seconds, 1), "cases": rows,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'case':<36} {'final answer':<12} {'tokens':>6} {'tok/s':>5} {'finish':<7} answer")
    for row in rows:
        print(f"{row['id']:<36} {row['final_answer']:<12} {row['new_tokens']:>6} {row['tokens_per_s'] or 0:>5.1f} "
              f"{row['finish_reason']:<7} {row['answer'][:60]!r}")
    kinds = {k: sum(r["final_answer"] == k for r in rows) for k in ("natural", "budget", "eos", "conclude")}
    print(f"{CASES} cases in {seconds:.0f} s: " + ", ".join(f"{n} {k}" for k, n in kinds.items() if n))

    unanswered = [r["id"] for r in rows if not (r["has_answer"] and r["answer"].strip())]
    assert not unanswered, f"no final answer for {unanswered} (see {ARTIFACT})"
    assert all(r["new_tokens"] <= generation.max_new_tokens for r in rows)
