"""Estimate vs measured wall time of the "CPU demo (minutes)" preset on this machine (issue 20).

    PYTHONPATH=. .venv/bin/python docs/bench-runs/2026-12-06-cpu-estimate/measure.py OUT_DIR

1. the data plan of configs/presets/cpu_demo.yaml (the trainer's own example builder and leave-out rule);
2. a calibration (trainer.launch.calibrate: 3 optimiser steps in a throwaway process, then removed);
3. the estimate (core.estimate.estimate) from 1 and 2, as the admin page's Check shows it;
4. the real run: `python -m trainer --config configs/presets/cpu_demo.yaml --output_dir OUT_DIR/run`, timed
   from process start to exit; its metrics.jsonl and train.log are kept next to this script's output.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from core import estimate as estimate_lib
from core.settings import PROJECT_ROOT, load_settings
from trainer import launch
from trainer.card import library_versions
from trainer.config import builtin_presets, preset_config


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    load_before = __import__("os").getloadavg()
    preset, _ = builtin_presets()["cpu-demo"]
    cfg, problems, notes = preset_config(preset)
    assert not problems and not notes, (problems, notes)
    t = time.time()
    plan = launch.dataset_plan(cfg)
    plan_s = time.time() - t
    cal = launch.calibrate(cfg, jobs_dir=settings.runs_dir, folder_root=settings.work_dir / "calibration")
    kept = [n for n in plan.lengths if n <= cfg.max_seq_len]
    est = estimate_lib.estimate(kept, steps=plan.total_steps, batch_size=cfg.batch_size,
                                gradient_accumulation_steps=cfg.gradient_accumulation_steps, eval_examples=0,
                                eval_steps=cfg.eval_steps,
                                throughput=estimate_lib.Throughput(cal.tokens_per_s, cal.startup_s, "calibration"))
    run_dir = out / "run"
    command = [sys.executable, "-m", "trainer", "--config", str(PROJECT_ROOT / "configs/presets/cpu_demo.yaml"),
               "--output_dir", str(run_dir)]
    with (out / "train.log").open("wb") as log:
        t0 = time.time()
        rc = subprocess.call(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        wall = time.time() - t0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(r for r in metrics if r.get("event") == "start")
    train = [r for r in metrics if r.get("event") == "train"]
    trained_tokens = train[-1].get("num_tokens") if train else None
    result = {
        "command": " ".join(["python", "-m", "trainer", "--config", "configs/presets/cpu_demo.yaml", "--output_dir",
                             "<out>/run"]),
        "returncode": rc,
        "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                    "cores": __import__("os").cpu_count(), "load_avg_at_end": __import__("os").getloadavg()},
        "libraries": library_versions(),
        "plan": {"examples": len(plan.lengths), "kept": plan.kept, "steps": plan.total_steps,
                 "tokens_per_step": plan.tokens_per_step, "tokens_per_epoch": est.tokens_per_epoch,
                 "plan_s": round(plan_s, 1)},
        "calibration": {"tokens_per_s": cal.tokens_per_s, "startup_s": cal.startup_s, "steps": cal.steps,
                        "wall_s": round(cal.wall_s, 1), "device": cal.device},
        "estimate": {"train_tokens": est.train_tokens, "startup_s": est.startup_s, "train_s": est.train_s,
                     "eval_s": est.eval_s, "total_s": est.total_s},
        "measured": {"wall_s": round(wall, 1), "to_start_line_s": round(start["time"] - t0, 1),
                     "train_s": train[-1]["elapsed_s"] if train else None, "trained_tokens": trained_tokens,
                     "tokens_per_s_median": __import__("core.runs", fromlist=["x"]).measured_tokens_per_s(metrics)},
    }
    result["load_avg_before"] = load_before
    result["error_pct"] = round(100 * (est.total_s - wall) / wall, 1) if est.total_s else None
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text())
    print(json.dumps(result, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
