"""Model architectures the GPU benchmarks build from a config in code (random weights; no hub access).

Speed does not depend on weight values, so a config is all a throughput benchmark needs. Token ids
0, 1 and 2 are SmolLM2's ``<|endoftext|>``, ``<|im_start|>`` and ``<|im_end|>``: every config here
names them as bos/eos/pad, so any of these models works with the embedded model's chat tokenizer
(all of its ids are below every vocabulary size here).
"""

from __future__ import annotations

from typing import Any

SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def llama_1b_config(*, smollm2_tokens: bool = False) -> Any:
    """meta-llama/Llama-3.2-1B's config.json, written out. ``smollm2_tokens``: SmolLM2's special token ids."""
    from transformers import LlamaConfig

    special = SPECIAL_IDS if smollm2_tokens else {"bos_token_id": 128000, "eos_token_id": 128001}
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        tie_word_embeddings=True,
        **special,
    )


def smollm2_135m_config() -> Any:
    """SmolLM2-135M-Instruct's config (as the embedded GGUF converts to)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        tie_word_embeddings=True,
        **SPECIAL_IDS,
    )


def tiny_config() -> Any:
    """A few-MB Llama for checking the benchmark scripts on a CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **SPECIAL_IDS,
    )


ARCHS = {
    "llama-1b": ("Llama-3.2-1B architecture", lambda: llama_1b_config(smollm2_tokens=True)),
    "smollm2-135m": ("SmolLM2-135M architecture", smollm2_135m_config),
    "tiny": ("tiny Llama (script check)", tiny_config),
}
