"""The decoding helpers the rollout runs on: ``sample_categorical`` and ``preallocated_cache``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from textgym.models import load_causal_lm
from textgym.models.cache import positions, preallocated_cache
from textgym.models.sampling import sample_categorical


def test_sample_categorical_draws_from_the_given_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 0.0, 0.0, 1.0]]).repeat(10_000, 1)
    tokens = sample_categorical(probs, torch.Generator().manual_seed(0)).view(10_000, 2)
    first = np.bincount(tokens[:, 0].numpy(), minlength=4) / 10_000
    assert np.abs(first - [0.1, 0.0, 0.6, 0.3]).max() < 0.015  # ~3 standard errors
    assert first[1] == 0  # a zero-probability token is never drawn
    assert (tokens[:, 1] == 3).all()


def test_sample_categorical_takes_unnormalised_rows_and_is_seeded():
    probs = torch.softmax(torch.randn(64, 50_257, generator=torch.Generator().manual_seed(1)) * 3, -1) * 7.0
    first = sample_categorical(probs, torch.Generator().manual_seed(5))
    assert torch.equal(first, sample_categorical(probs, torch.Generator().manual_seed(5)))
    assert first.dtype == torch.long and first.shape == (64,) and int(first.max()) < 50_257


@pytest.mark.parametrize("bad", [float("nan"), 0.0])
def test_sample_categorical_rejects_rows_without_mass(bad):
    probs = torch.tensor([[0.5, 0.5], [bad, bad]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no positive finite probability mass"):
        sample_categorical(probs)


def decode_logits(lm, cache, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), past_key_values=cache, use_cache=True)
    logits = [out.logits[:, -1]]
    for t in range(steps):
        position, mask = mask.sum(-1, keepdim=True), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = lm(input_ids=torch.full((len(ids), 1), 100 + t), attention_mask=mask, position_ids=position,
                 past_key_values=out.past_key_values, use_cache=True)
        logits.append(out.logits[:, -1])
    return torch.stack(logits)


@torch.no_grad()
def test_preallocated_cache_decodes_exactly_like_the_dynamic_cache():
    lm = load_causal_lm("tiny", device="cpu")
    ids = torch.randint(3, 2000, (4, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = mask[1, :6] = 0  # left padding
    expected = decode_logits(lm, DynamicCache(), ids, mask, steps=8)
    assert torch.equal(decode_logits(lm, preallocated_cache(18), ids, mask, steps=8), expected)
    with pytest.raises(ValueError, match=r"preallocated_cache\(17\) cannot hold 18 positions"):
        decode_logits(lm, preallocated_cache(17), ids, mask, steps=8)
