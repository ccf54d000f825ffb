"""Padding-free packing without flash-attn: packed examples must not see each other.

transformers 5 reads example boundaries from ``position_ids`` that restart at 0 (TRL's padding-free
collator writes them and leaves out the attention mask) and builds a per-example causal mask for
sdpa, eager and flex_attention alike (``masking_utils.find_packed_sequence_indices``). These tests
prove it on a tiny Llama: the packed row gives every example the loss and logits it gets alone, a
change in one example leaves the others untouched, and the trainer's ``packing: true`` counts every
real token once. FlexAttention has no backward on CPU in torch 2.13, so its training path is a CUDA
test; its forward runs here (marked slow: compiling the kernel takes ~15 s on two cores).
"""

from __future__ import annotations

import pytest
import torch

LENGTHS = (7, 12, 5, 9)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _tiny_llama(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         use_cache=False, attn_implementation=attn)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _examples(seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=gen).tolist() for n in LENGTHS]


def _packed_logits(model, examples: list[list[int]]):
    ids = torch.tensor([sum(examples, [])])
    positions = torch.cat([torch.arange(len(e)) for e in examples])[None]
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=positions).logits[0]
    return list(logits.split([len(e) for e in examples]))


def _alone_logits(model, example: list[int]):
    with torch.no_grad():
        return model(input_ids=torch.tensor([example])).logits[0]


def _loss(logits, example: list[int]) -> float:
    return torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(example[1:])).item()


@pytest.mark.parametrize("attn", ["sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.slow)])
def test_packed_row_gives_each_example_its_own_logits_and_loss(attn):
    model = _tiny_llama(attn)
    examples = _examples()
    packed = _packed_logits(model, examples)
    for example, logits in zip(examples, packed):
        alone = _alone_logits(model, example)
        assert torch.allclose(logits, alone, atol=1e-4), (attn, (logits - alone).abs().max().item())
        assert _loss(logits, example) == pytest.approx(_loss(alone, example), abs=1e-5)
    # Without the restarts (one long example) the later examples do see the earlier ones: the check can fail.
    ids = torch.tensor([sum(examples, [])])
    with torch.no_grad():
        unpacked = model(input_ids=ids).logits[0].split(list(LENGTHS))
    assert not torch.allclose(unpacked[1], packed[1], atol=1e-3)


@pytest.mark.parametrize("attn", ["sdpa", pytest.param("flex_attention", marks=pytest.mark.slow)])
def test_changing_one_packed_example_leaves_the_others_untouched(attn):
    model = _tiny_llama(attn)
    examples = _examples()
    before = _packed_logits(model, examples)
    changed = [list(e) for e in examples]
    changed[1] = [(t + 7) % 297 + 3 for t in changed[1]]  # example B, every token different
    after = _packed_logits(model, changed)
    assert not torch.allclose(before[1], after[1], atol=1e-3)  # B itself changed
    for i in (0, 2, 3):
        assert torch.allclose(before[i], after[i], atol=1e-6), i


def test_trl_padding_free_batch_trains_like_the_padded_batch():
    """TRL's padding-free collator (what ``packing: true`` uses) gives the padded batch's loss and gradients."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": ids, "labels": [-100] * 3 + ids[3:]} for ids in _examples(2)]
    grads = {}
    losses = {}
    for name, collator in (("padded", DataCollatorForLanguageModeling(pad_token_id=0)),
                           ("flat", DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))):
        batch = collator(examples)
        assert ("attention_mask" in batch) == (name == "padded")  # no mask: the restarts carry the boundaries
        model = _tiny_llama("sdpa").train()
        loss = model(**batch).loss
        loss.backward()
        losses[name] = loss.item()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert batch["input_ids"].shape == (1, sum(LENGTHS))  # one row, no padding
    assert losses["flat"] == pytest.approx(losses["padded"], abs=1e-5)
    assert torch.allclose(grads["flat"], grads["padded"], atol=1e-5)


def test_packing_run_on_cpu_counts_every_real_token_once(tiny_model_dir, data_dir, tmp_path):
    """``packing: true`` with sdpa: one epoch of packed rows trains on exactly the examples' tokens, no padding."""
    from core.metrics import read_metrics
    from trainer.config import load_config
    from trainer.dataset import chat_ids, load_examples
    from transformers import AutoTokenizer

    from trainer.train import train

    from .conftest import tiny_overrides

    values = tiny_overrides(tiny_model_dir, data_dir, tmp_path / "run", packing="true", max_steps=-1, num_epochs=1,
                            batch_size=2, eval_steps=0, save_steps=100, max_seq_len=512)
    result = train(load_config(None, values))
    assert result.state == "completed" and result.card["config"]["packing"] is True
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    lengths = [len(chat_ids(tokenizer, ex["prompt"] + ex["completion"], generation_prompt=False))
               for ex in load_examples(data_dir / "train.jsonl").examples]
    train_lines = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert train_lines[-1]["num_tokens"] == sum(lengths)
    # Rows of <= 512 tokens hold 2-3 of these ~170-token examples, two rows per step: fewer steps than the 4 of
    # eight examples two by two.
    assert result.global_step < len(lengths) // 2


@pytest.mark.gpu
@cuda
def test_flex_attention_padding_free_trains_like_the_padded_batch_on_cuda():
    """On CUDA, FlexAttention's block-sparse packed path matches sdpa on the padded batch, forward and backward."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": ids, "labels": [-100] * 3 + ids[3:]} for ids in _examples(3)]
    results = {}
    for attn, collator in (("sdpa", DataCollatorForLanguageModeling(pad_token_id=0)),
                           ("flex_attention", DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))):
        batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in collator(examples).items()}
        model = _tiny_llama(attn).cuda().train()
        loss = model(**batch).loss
        loss.backward()
        results[attn] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    # fp32 on both paths; the tolerance allows for different kernels' summation order, not for leaked attention
    # (attending across examples changes this tiny model's loss by ~1e-1: see the CPU test's control).
    assert results["flex_attention"][0] == pytest.approx(results["sdpa"][0], abs=1e-3)
    assert torch.allclose(results["flex_attention"][1], results["sdpa"][1], atol=1e-3, rtol=1e-2)


@pytest.mark.gpu
@cuda
def test_packing_with_flex_attention_trains_on_cuda(tiny_model_dir, data_dir, tmp_path):
    from core.metrics import read_metrics
    from trainer.config import load_config
    from trainer.train import train

    from .conftest import tiny_overrides

    values = tiny_overrides(tiny_model_dir, data_dir, tmp_path / "run", device="cuda", quantization="none",
                            packing="true", attn_implementation="flex_attention", max_steps=-1, num_epochs=2,
                            batch_size=2, eval_steps=0, save_steps=100)
    result = train(load_config(None, values))
    assert result.state == "completed" and result.card["runtime"]["attn_implementation"] == "flex_attention"
    losses = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert losses and all(loss > 0 for loss in losses)
