"""Fixtures for the trainer tests: a tiny Llama built from a config in code, a tiny tokenizer, small record files.

The tokenizer is a byte-level BPE trained in a few milliseconds on the fixture text, with
SmolLM2's chat template and special tokens, so prompts render exactly like the real model's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.prompts import SYSTEM_PROMPT
from core.records import Record, write_jsonl

SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

OPEN_CASES = [
    ("A 54-year-old man has crushing chest pain radiating to the left arm and ST elevation in II, III, aVF.",
     "Chest pain with ST elevation in the inferior leads points to an acute coronary occlusion. "
     "Inferior leads map to the right coronary artery.", "Inferior STEMI from right coronary artery occlusion"),
    ("A 23-year-old woman has fever, neck stiffness and a petechial rash.",
     "Fever with meningism and a petechial rash suggests meningococcal infection. Treat empirically at once.",
     "Meningococcal meningitis"),
    ("A 67-year-old smoker has painless jaundice, weight loss and a palpable gallbladder.",
     "Painless jaundice with a palpable gallbladder (Courvoisier sign) suggests a malignant biliary obstruction.",
     "Carcinoma of the head of the pancreas"),
    ("A 30-year-old has polyuria, polydipsia, weight loss and ketones in the urine.",
     "Osmotic symptoms with weight loss and ketonuria in a young adult suggest insulin deficiency.",
     "Type 1 diabetes mellitus"),
    ("A 45-year-old woman has heat intolerance, tremor, weight loss and a diffuse goitre with a bruit.",
     "Hyperthyroid symptoms with a diffuse vascular goitre suggest an autoimmune cause.", "Graves disease"),
    ("A 70-year-old has sudden painless loss of vision in one eye with a cherry-red spot.",
     "Sudden painless monocular loss with a cherry-red macula indicates arterial occlusion of the retina.",
     "Central retinal artery occlusion"),
]
MCQ_CASES = [
    ("Which drug reverses heparin?", {"A": "Vitamin K", "B": "Protamine sulfate", "C": "Naloxone", "D": "Flumazenil"},
     "B", "Heparin is a strongly acidic molecule; protamine is basic and binds it."),
    ("Which vitamin deficiency causes scurvy?", {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"},
     "C", "Scurvy comes from impaired collagen synthesis due to lack of ascorbic acid."),
]


def make_records(split: str, n_open: int = 6, n_mcq: int = 2, *, source: str = "fixture") -> list[Record]:
    recs = []
    for i, (q, r, a) in enumerate(OPEN_CASES[:n_open]):
        recs.append(Record(id=f"{source}:{split}-open-{i}", source=source, license="CC0", question=q,
                           kind="open", reasoning=r, answer=a, split=split))
    for i, (q, opts, key, r) in enumerate(MCQ_CASES[:n_mcq]):
        recs.append(Record(id=f"{source}:{split}-mcq-{i}", source=source, license="CC0", question=q, kind="mcq",
                           reasoning=r, answer=opts[key], options=opts, correct=key, split=split))
    return recs


def build_tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [SYSTEM_PROMPT, "Final answer: Options: Reason step by step, then give the letter of the best option"]
    for q, r, a in OPEN_CASES:
        corpus += [q, r, a]
    for q, opts, _, r in MCQ_CASES:
        corpus += [q, r, *opts.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (random weights) + tokenizer saved to ``folder``; loadable like any local model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A prepared-data folder like core.data writes: train/validation/test/bank.jsonl + manifest.json."""
    folder = tmp_path_factory.mktemp("work") / "data"
    write_jsonl(folder / "train.jsonl", make_records("train"))
    write_jsonl(folder / "validation.jsonl", make_records("validation", 3, 1))
    write_jsonl(folder / "test.jsonl", make_records("test", 4, 0))
    bank = make_records("bank", 0, 2, source="medqa") + make_records("bank", 0, 2, source="medmcqa")
    write_jsonl(folder / "bank.jsonl", bank)
    (folder / "manifest.json").write_text('{"fixture": true}\n')
    return folder


def tiny_overrides(model_dir: Path, data: Path, out: Path, **extra) -> dict:
    """Config values for a fast CPU run on the tiny model."""
    values = {
        "model_name": str(model_dir),
        "work_dir": str(data.parent),
        "output_dir": str(out),
        "device": "cpu",
        "max_steps": 4,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-3,
        "logging_steps": 1,
        "eval_steps": 2,
        "save_steps": 2,
        "max_seq_len": 256,
        "warmup_ratio": 0.0,
    }
    values.update(extra)
    return values


def param_snapshots():
    """A Trainer callback that copies every parameter at train begin and end (to compare them)."""
    from transformers import TrainerCallback

    class ParamSnapshots(TrainerCallback):
        def __init__(self):
            self.begin: dict = {}
            self.end: dict = {}

        @staticmethod
        def _copy(model):
            return {n: p.detach().float().clone() for n, p in model.named_parameters()}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.begin = self._copy(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.end = self._copy(model)

    return ParamSnapshots()


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir, data_dir, tmp_path_factory):
    """One short CPU run on the tiny model (shared by the smoke and evaluation tests)."""
    from trainer.config import load_config
    from trainer.train import train

    snap = param_snapshots()
    out = tmp_path_factory.mktemp("runs") / "smoke"
    cfg = load_config(None, tiny_overrides(tiny_model_dir, data_dir, out))
    result = train(cfg, extra_callbacks=[snap])
    return result, snap
