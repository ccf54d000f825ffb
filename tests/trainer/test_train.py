"""Training on CPU with a tiny Llama: metrics, LoRA-only updates, the adapter card, stop, resume, refusals."""

from __future__ import annotations

import json

import pytest

from core.metrics import read_metrics
from core.model import BaseModel, check_adapter, load_model, read_adapter_card
from core.prompts import PROMPT_FORMAT_VERSION
from trainer.checkpoint import is_complete, last_complete_checkpoint
from trainer.config import ConfigError, load_config
from trainer.status import read_status

from .conftest import tiny_overrides


def test_smoke_run_writes_metrics_and_a_complete_run_dir(trained_run):
    result, _ = trained_run
    run = result.run_dir
    assert result.state == "completed" and result.global_step == 4
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert r["loss"] > 0 and r["learning_rate"] >= 0 and r["grad_norm"] >= 0
        assert 0 <= r["mean_token_accuracy"] <= 1
        assert r["tokens_per_s"] > 0 and r["elapsed_s"] >= 0 and r["peak_mem_gb"] > 0 and r["eta_s"] >= 0
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all(r["eval_loss"] > 0 for r in evals)
    assert records[0]["event"] == "start" and records[0]["trainable_params"] == result.trainable_params
    assert records[-1]["event"] == "completed"
    status = read_status(run)
    assert status["state"] == "completed" and status["step"] == 4 and status["total_steps"] == 4
    assert (run / "config.yaml").is_file() and is_complete(run / "checkpoint-4")


def test_lora_weights_changed_and_base_weights_did_not(trained_run):
    _, snap = trained_run
    lora = [n for n in snap.begin if "lora_" in n]
    base = [n for n in snap.begin if "lora_" not in n]
    assert len(lora) == 2 * 7 * 2  # A and B on seven projections in two layers
    assert all(not snap.begin[n].equal(snap.end[n]) for n in lora if "lora_B" in n)
    assert any(not snap.begin[n].equal(snap.end[n]) for n in lora if "lora_A" in n)
    assert base and all(snap.begin[n].equal(snap.end[n]) for n in base)


def test_adapter_card_and_loading(trained_run, tiny_model_dir):
    result, _ = trained_run
    card = read_adapter_card(result.adapter_dir)
    base = BaseModel(identity=tiny_model_dir.name, location=str(tiny_model_dir))
    check_adapter(card, base, result.adapter_dir)  # raises on a mismatch
    assert card["prompt_format"] == PROMPT_FORMAT_VERSION
    # r x (d_in + d_out) per projection: q 64+64, k 64+32, v 64+32, o 64+64, gate/up 64+128, down 128+64.
    assert card["trainable_params"] == 16 * (128 + 96 + 96 + 128 + 192 + 192 + 192) * 2 == result.trainable_params
    assert card["trainable_percent"] == pytest.approx(100 * result.trainable_params / result.total_params, abs=1e-3)
    assert card["data"]["manifest_sha256"] and card["data"]["train"]["examples"] == 8
    assert card["config"]["lora_r"] == 16 and card["runtime"]["device"] == "cpu"
    assert card["runtime"]["quantization"] == "none" and card["runtime"]["precision"] == "bf16"
    assert card["training"]["global_step"] == 4 and card["training"]["wall_time_s"] > 0
    assert card["metrics"]["eval_loss"] > 0 and card["status"] == "completed"
    assert card["hardware"]["libraries"]["trl"] == "1.16.0"
    assert (result.adapter_dir / "README.md").read_text().startswith("# LoRA adapter for")
    adapter_cfg = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == base.identity  # no machine-specific path
    from safetensors.torch import load_file

    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert len(weights) == 28 and all(str(t.dtype) == "torch.bfloat16" for t in weights.values())  # adapter_dtype
    assert not any("embed" in k for k in weights)

    import torch

    merged, tok = load_model(base, adapter_dir=result.adapter_dir, device="cpu")
    plain, _ = load_model(base, device="cpu")
    ids = torch.tensor([tok.encode("Final answer: chest pain")])
    with torch.no_grad():
        assert not torch.allclose(merged(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_stop_file_saves_a_loadable_adapter_then_resume_continues(tiny_model_dir, data_dir, tmp_path):
    from transformers import TrainerCallback

    from trainer.status import request_stop
    from trainer.train import train

    run = tmp_path / "run"

    class StopAfterTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                request_stop(run)  # seen at the end of the next step

    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=6, save_steps=100, eval_steps=0)
    result = train(load_config(None, values), extra_callbacks=[StopAfterTwo()])
    assert result.state == "stopped" and result.global_step == 3
    status = read_status(run)
    assert status["state"] == "stopped" and status["reason"] == "stop file found" and status["step"] == 3
    assert last_complete_checkpoint(run) == run / "checkpoint-3"
    base = BaseModel(identity=tiny_model_dir.name, location=str(tiny_model_dir))
    model, _ = load_model(base, adapter_dir=result.adapter_dir, device="cpu")
    assert model is not None and read_adapter_card(result.adapter_dir)["status"] == "stopped"
    assert read_metrics(run / "metrics.jsonl")[-1]["event"] == "stopped"
    (run / "STOP").write_text("stale")  # a stale request must not stop the resumed run

    resumed = train(load_config(run / "config.yaml", {"resume": "auto"}))
    assert resumed.state == "completed" and resumed.global_step == 6
    assert resumed.card["training"]["resumed_from_step"] == 3
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3, 4, 5, 6]
    resume = [r for r in records if r["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 3
    # elapsed time continues across the resume instead of restarting at zero
    after = [r for r in records if r["event"] == "train" and r["step"] == 4][0]
    before = [r for r in records if r["event"] == "train" and r["step"] == 3][0]
    assert after["elapsed_s"] >= before["elapsed_s"]
    assert read_status(run)["state"] == "completed"


def test_crash_then_resume_drops_lines_after_the_checkpoint(tiny_model_dir, data_dir, tmp_path):
    from transformers import TrainerCallback

    from trainer.train import train

    class Crash(TrainerCallback):  # dies right after step 3 is logged, before any step-3 checkpoint
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 3 and "loss" in (logs or {}):
                raise RuntimeError("simulated crash")

    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=5, eval_steps=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config(None, values), extra_callbacks=[Crash()])
    status = read_status(run)
    assert status["state"] == "failed" and "simulated crash" in status["reason"]
    raw_steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", raw=True) if r.get("event") == "train"]
    assert raw_steps == [1, 2, 3]  # step 3 was logged, but its checkpoint never saved

    with pytest.raises(ConfigError, match="already holds a run"):
        train(load_config(None, values))  # not without --resume
    with pytest.raises(ConfigError, match="lora_r differs"):
        train(load_config(None, {**values, "resume": "auto", "lora_r": 8}))

    resumed = train(load_config(None, {**values, "resume": "auto"}))
    assert resumed.global_step == 5 and resumed.card["training"]["resumed_from_step"] == 2
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5]
    raw = [r["step"] for r in read_metrics(run / "metrics.jsonl", raw=True) if r.get("event") == "train"]
    assert raw == [1, 2, 3, 3, 4, 5]  # the file is append-only; the reader hides the superseded line


def test_runtime_problems_are_reported_and_recorded(tiny_model_dir, data_dir, tmp_path, capsys):
    import torch

    from trainer.train import main

    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA message")
    run = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(tiny_model_dir, data_dir, run, device="cuda", liger="on"))
    assert main(cfg) == 2
    err = capsys.readouterr().err
    assert "no CUDA device is available" in err and "liger" in err
    assert read_status(run)["state"] == "failed"


def test_sft_config_mapping_for_cpu_and_early_stopping(tmp_path, data_dir):
    from trainer.modeling import resolve_runtime
    from trainer.train import _sft_config

    cfg = load_config(None, {"work_dir": str(data_dir.parent), "device": "cpu", "early_stopping_patience": 3,
                             "eval_steps": 10, "save_steps": 20, "precision": "fp32", "warmup_ratio": 0.1})
    args = _sft_config(cfg, resolve_runtime(cfg), tmp_path, has_eval=True)
    assert args.use_cpu and not args.bf16 and not args.fp16 and args.optim == "adamw_torch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    assert args.eval_strategy == "steps" and args.eval_steps == 10 and args.save_steps == 20
    assert args.completion_only_loss is True and args.assistant_only_loss is False
    assert args.max_length == cfg.max_seq_len and args.warmup_steps == 0.1 and args.logging_first_step
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    plain = load_config(None, {"work_dir": str(data_dir.parent), "device": "cpu", "eval_file": "none"})
    no_eval = _sft_config(plain, resolve_runtime(plain), tmp_path, has_eval=False)
    assert no_eval.eval_strategy == "no" and not no_eval.load_best_model_at_end and no_eval.bf16


def test_group_by_length_batches_similar_lengths_and_is_recorded(tiny_model_dir, data_dir, tmp_path):
    """group_by_length: the trainer's sampler groups examples of similar token length (less padding)."""
    from transformers import TrainerCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from trainer.train import train

    seen: dict = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen["sampler"] = train_dataloader.batch_sampler.sampler  # accelerate wraps the loader
            dataset = train_dataloader.dataset
            seen["lengths"] = [len(ids) for ids in dataset["input_ids"]]
            seen["order"] = list(iter(seen["sampler"]))

    values = tiny_overrides(tiny_model_dir, data_dir, tmp_path / "run", group_by_length="true", max_steps=2,
                            batch_size=2, eval_steps=0, save_steps=10)
    result = train(load_config(None, values), extra_callbacks=[Probe()])
    assert result.state == "completed" and result.card["runtime"]["group_by_length"] is True
    assert isinstance(seen["sampler"], LengthGroupedSampler)
    lengths, order = seen["lengths"], seen["order"]
    assert sorted(order) == list(range(len(lengths)))  # every example once per epoch
    assert lengths[order[0]] == max(lengths)  # the longest batch first: out of memory shows at once, not hours in
    plain = load_config(None, tiny_overrides(tiny_model_dir, data_dir, tmp_path / "plain"))
    from trainer.modeling import resolve_runtime

    assert resolve_runtime(plain).group_by_length is False  # auto: off on CPU


def test_resuming_a_run_saved_before_padding_free_existed_keeps_its_padded_batches(tmp_path):
    """Its config.yaml has no padding_free key: auto would switch it to padding-free batches (in another order) on
    CUDA mid-run; the resume pins padded batches instead. A run saved with the key, or a fresh run, is left alone."""
    import yaml

    from trainer.config import TrainConfig, save_config
    from trainer.train import _settings_of_older_run

    run = tmp_path / "run"
    save_config(TrainConfig(), run)
    cfg = TrainConfig(resume="auto")
    assert _settings_of_older_run(cfg, run, resuming=True).padding_free == "auto"  # saved with the key
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["padding_free"]
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert _settings_of_older_run(cfg, run, resuming=True).padding_free == "false"
    assert _settings_of_older_run(cfg, run, resuming=False).padding_free == "auto"  # not a resume
    assert _settings_of_older_run(TrainConfig(padding_free="true"), run, resuming=True).padding_free == "true"
