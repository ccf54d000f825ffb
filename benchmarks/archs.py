"""Model architectures the GPU benchmarks build from a config in code (random weights; no hub access).

Speed does not depend on weight values, so a config is all a throughput benchmark needs. Token ids
0, 1 and 2 are SmolLM2's ``<|endoftext|>``, ``<|im_start|>`` and ``<|im_end|>``: every config here
names them as bos/eos/pad, so any of these models works with the embedded model's chat tokenizer
(all of its ids are below every vocabulary size here).
"""

from __future__ import annotations

from typing import Any

SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


# (vocab, hidden, intermediate, layers, heads, kv heads, head dim, max positions, RMSNorm eps); every
# one ties its embeddings.
_DIMS = {
    "llama-1b": (128256, 2048, 8192, 16, 32, 8, 64, 131072, 1e-5),
    "smollm2-135m": (49152, 576, 1536, 30, 9, 3, 64, 8192, 1e-5),
    "tiny": (49152, 64, 128, 2, 4, 2, 16, 2048, 1e-6),
}
_ROPE = {
    # meta-llama/Llama-3.2-1B's config.json
    "llama-1b": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    # SmolLM2-135M-Instruct's, as the embedded GGUF converts to
    "smollm2-135m": {"rope_type": "default", "rope_theta": 100000.0},
    "tiny": {"rope_type": "default", "rope_theta": 10000.0},
}


def config(name: str, *, special: dict[str, int] = SPECIAL_IDS) -> Any:
    """The ``LlamaConfig`` of architecture ``name`` (a key of :data:`ARCHS`)."""
    from transformers import LlamaConfig

    vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, positions, eps = _DIMS[name]
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                       max_position_embeddings=positions, rms_norm_eps=eps, rope_parameters=dict(_ROPE[name]),
                       tie_word_embeddings=True, **special)


def llama_1b_config(*, smollm2_tokens: bool = False) -> Any:
    """meta-llama/Llama-3.2-1B's config. ``smollm2_tokens``: SmolLM2's special token ids (else Llama 3's)."""
    return config("llama-1b", special=SPECIAL_IDS if smollm2_tokens else {"bos_token_id": 128000, "eos_token_id": 128001})


def smollm2_135m_config() -> Any:
    """SmolLM2-135M-Instruct's config (as the embedded GGUF converts to)."""
    return config("smollm2-135m")


def tiny_config() -> Any:
    """A few-MB Llama for checking the benchmark scripts on a CPU."""
    return config("tiny")


ARCHS = {
    "llama-1b": ("Llama-3.2-1B architecture", lambda: llama_1b_config(smollm2_tokens=True)),
    "smollm2-135m": ("SmolLM2-135M architecture", smollm2_135m_config),
    "tiny": ("tiny Llama (script check)", tiny_config),
}
