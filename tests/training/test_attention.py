"""Packed rows attend per sequence (training/attention.py): the same logits and gradients as each
example run alone, and generation through the same model is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.helpers import QA, chat
from tuneforge.training import attention
from tuneforge.training.batches import pack
from tuneforge.training.render import render_example


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    packed = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention.register())
    return plain, packed


def test_a_packed_row_gives_each_example_the_logits_and_gradients_it_has_alone(
    models, tiny_tokenizer
) -> None:
    plain, packed = models
    examples = [render_example(tiny_tokenizer, chat(q, a), None) for q, a in QA[:4]]
    (row,) = pack(examples, 1 << 20)
    assert len(set(row.lengths)) > 1 and sum(row.lengths) == row.n_tokens

    logits = packed(
        input_ids=row.input_ids,
        position_ids=row.position_ids,
        cu_seq_lens_q=attention.cu_seq_lens(row.lengths),
        use_cache=False,
    ).logits[0]
    logits.float().pow(2).mean().backward()
    grad_packed = [p.grad.clone() for p in packed.parameters()]

    alone = []
    for r in examples:
        ids = torch.tensor([r.input_ids])
        alone.append(plain(input_ids=ids, use_cache=False).logits[0])
    reference = torch.cat(alone)
    assert torch.allclose(logits, reference, atol=1e-4), (logits - reference).abs().max()
    reference.float().pow(2).mean().backward()
    for p, g in zip(plain.parameters(), grad_packed):
        assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-3), (p.grad - g).abs().max()


def test_without_boundaries_it_is_transformers_sdpa(models, tiny_tokenizer) -> None:
    plain, packed = models
    ids = torch.tensor([render_example(tiny_tokenizer, chat(*QA[0]), None).input_ids[:-3]])
    with torch.no_grad():
        a = plain.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
        )
        b = packed.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
        )
    assert torch.equal(a, b)
