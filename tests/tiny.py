"""Tiny Llama models built from a config in code (no hub), shared by tests."""

from __future__ import annotations

import json
from pathlib import Path

from core.prompts import FINAL_ANSWER_MARKER, PROMPT_FORMAT_VERSION, SYSTEM_PROMPT

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's ChatML layout, for tokenizers built in tests."""
CORPUS = [
    SYSTEM_PROMPT,
    "A 54-year-old woman has fever, dysuria and flank pain. The most likely diagnosis is pyelonephritis.",
    "Key findings point to an infection; the differential includes cholecystitis and renal colic.",
    f"{FINAL_ANSWER_MARKER} acute pyelonephritis. Final answer: B. Start antibiotics.",
]


def make_tiny_tokenizer(corpus: list[str] = CORPUS, *, vocab_size: int = 400):
    """A byte-level BPE tokenizer trained in code on ``corpus``, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_llama(folder: Path, *, seed: int = 0, vocab_size: int = 64) -> Path:
    """Save a randomly initialised 2-layer Llama (about 50k parameters) to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def make_lora_adapter(base_dir: Path, adapter_dir: Path, *, base_identity: str, seed: int = 1) -> Path:
    """A LoRA adapter for the tiny model with non-zero B weights and an adapter card."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # B starts at zero; make the adapter change outputs
    peft_model.save_pretrained(adapter_dir)
    card = {"base_model": base_identity, "prompt_format": PROMPT_FORMAT_VERSION}
    (adapter_dir / "adapter_card.json").write_text(json.dumps(card))
    return adapter_dir
