"""Sampling: ``sample_categorical``, ``preallocated_cache``, the ``Sampler`` seam and its ``HFSampler``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

import gymnasium as gym

import textgym  # noqa: F401  (registers the envs)
from agents.trainers.rollout import Rollout
from textgym.models import load_causal_lm
from textgym.models.cache import cache_of, cached, left_padded, positions, preallocated_cache
from textgym.models.sampling import (
    CachedRows,
    Completions,
    HFSampler,
    Sampling,
    action_logits,
    env_prompts,
    first_episodes,
    sample_categorical,
)


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
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), **cached(cache), use_cache=True)
    logits = [out.logits[:, -1]]
    for t in range(steps):
        position, mask = mask.sum(-1, keepdim=True), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = lm(input_ids=torch.full((len(ids), 1), 100 + t), attention_mask=mask, position_ids=position,
                 **cached(cache_of(out)), use_cache=True)
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


@torch.no_grad()
def test_the_hf_sampler_draws_what_an_uncached_token_by_token_loop_draws():
    """Same generator, same draws: the KV cache, the processors and the stop at EOS change nothing."""
    lm = load_causal_lm("tiny", device="cpu")
    envs = gym.make_vec("textgym/Sentiment-v0", num_envs=6, max_new_tokens=12)
    ids, mask, _ = env_prompts(envs, list(range(6)))
    eos = envs.unwrapped.mdp.eos_id
    processors = Sampling(temperature=1.3, top_p=0.9).processors(len(envs.unwrapped.tokenizer))
    out = HFSampler(lm).sample(ids, mask, 12, eos_id=eos, processors=processors,
                               generator=torch.Generator().manual_seed(3))

    generator, rows, row_mask, ended = torch.Generator().manual_seed(3), ids, mask, torch.zeros(6, dtype=torch.bool)
    for t in range(out.tokens.shape[1]):
        logits = lm(input_ids=rows, attention_mask=row_mask, position_ids=positions(row_mask)).logits[:, -1]
        token = sample_categorical(torch.softmax(processors(rows, logits), -1), generator)
        assert torch.equal(out.tokens[:, t], token)
        rows = torch.cat([rows, token[:, None]], 1)
        row_mask = torch.cat([row_mask, torch.ones_like(row_mask[:, :1])], 1)
        ended |= token == eos
    assert ended.all() or out.tokens.shape[1] == 12  # it stopped when every row had ended, and not before
    first_eos = [(row == eos).nonzero()[0, 0].item() + 1 if (row == eos).any() else 12 for row in out.tokens]
    assert out.lengths.tolist() == first_eos
    assert out.mask.sum(1).tolist() == first_eos


@torch.no_grad()
def test_the_rollout_equals_sampling_while_stepping_the_env_token_by_token():
    """The rollout samples whole completions, then steps the env column by column; a loop that
    samples each token from the env's latest observation gives the same episodes and rewards."""
    lm = load_causal_lm("tiny", device="cpu")
    make = lambda: gym.make_vec("textgym/Sentiment-v0", num_envs=5, max_new_tokens=10, reward_mode="immediate")
    batch = Rollout(make(), Sampling()).collect(HFSampler(lm), seeds=list(range(5)),
                                                generator=torch.Generator().manual_seed(1))

    envs, generator = make(), torch.Generator().manual_seed(1)
    obs, _ = envs.reset(seed=list(range(5)))
    rewards, scores, alive = [[] for _ in range(5)], [None] * 5, np.ones(5, bool)
    while alive.any():
        ids, mask = torch.from_numpy(obs["input_ids"]), torch.from_numpy(obs["attention_mask"])
        logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]
        token = sample_categorical(torch.softmax(action_logits(logits, len(envs.unwrapped.tokenizer)), -1), generator)
        obs, reward, terminated, truncated, info = envs.step(token.numpy())
        for i in np.flatnonzero(alive):
            rewards[i].append(reward[i])
            if terminated[i] or truncated[i]:
                scores[i], alive[i] = info["score"][i], False
    assert batch.lengths.tolist() == [len(r) for r in rewards]
    for i in range(5):
        np.testing.assert_allclose(batch.rewards[i, : len(rewards[i])].numpy(), rewards[i], atol=1e-5)
    np.testing.assert_allclose(batch.scores.numpy(), scores, atol=1e-6)


class ScriptedSampler:
    """A ``Sampler`` that is not a model: every row writes ``script``."""

    def __init__(self, script: list[int]):
        self.script = script

    def sample(self, prompt_ids, prompt_mask, max_new_tokens, *, eos_id, processors, generator) -> Completions:
        tokens = torch.tensor(self.script[:max_new_tokens]).repeat(len(prompt_ids), 1)
        return Completions(tokens, torch.full((len(prompt_ids),), tokens.shape[1]))


def test_any_sampler_plugs_into_the_rollout_and_first_episodes():
    envs = gym.make_vec("textgym/Arithmetic-v0", num_envs=3)
    tokenizer = envs.unwrapped.tokenizer
    script = [*tokenizer.encode("42"), tokenizer.eos_token_id]
    batch = Rollout(envs, Sampling()).collect(ScriptedSampler(script), seeds=[0, 1, 2], generator=torch.Generator())
    assert batch.completions == ["42"] * 3 and batch.ended_by_eos.all()
    _, episodes = first_episodes(ScriptedSampler(script), envs, seed=0)
    assert [e["completion"] for e in episodes] == ["42"] * 3 and {e["ended_by"] for e in episodes} == {"EOS"}


class Recorded(LogitsProcessor):
    """Keeps the logits of every step it sees."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append(scores.clone())
        return scores


def test_cached_rows_continue_turn_after_turn_as_a_full_forward_of_the_real_tokens_would():
    """Sample a turn (one row stops early at "EOS"), drop a row, append replies of unequal length,
    sample again, with a cache that must grow: each step's logits equal the uncached model's on the
    rows' real tokens alone, although the cache keeps unused columns (masked) in between."""
    lm = load_causal_lm("tiny", device="cpu")
    ids = torch.tensor([[1, 1, 20, 21], [30, 31, 32, 33], [1, 40, 41, 42]])
    rows = CachedRows(lm, ids, (ids != 1).long(), capacity=5, grows=True)
    real = [row[row != 1].tolist() for row in ids]
    generator = torch.Generator().manual_seed(0)
    eos, step = 7, iter(range(4))

    def end_row_0_at_its_second_token(input_ids, scores):
        if next(step) == 1:
            scores[0] = torch.where(torch.arange(scores.shape[1]) == eos, 0.0, -torch.inf)
        return scores

    first = rows.sample(4, eos_id=eos, processors=LogitsProcessorList([end_row_0_at_its_second_token]),
                        generator=generator)
    assert first.lengths[0] == 2 and first.tokens.shape[1] == 4  # row 0's last 2 columns are unused
    for row, (tokens, length) in enumerate(zip(first.tokens.tolist(), first.lengths.tolist())):
        real[row] += tokens[:length]
    rows.keep([0, 2])
    real = [real[0] + [50], real[2] + [51, 52, 53]]
    rows.append([[50], [51, 52, 53]])
    recorded = Recorded()
    second = rows.sample(3, eos_id=None, processors=LogitsProcessorList([recorded]), generator=generator)
    for t, logits in enumerate(recorded.seen):
        for row in range(2):
            prefix = torch.tensor([real[row] + second.tokens[row, :t].tolist()])
            expected = lm(input_ids=prefix).logits[0, -1]
            torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-4)


def test_cached_rows_run_the_extra_columns_of_a_few_long_rows_apart_with_the_same_logits():
    """One row of four brings six new tokens where the others bring one, in its prompt (which runs as
    one block) and again in a reply: the reply's extra columns run in a forward of that row alone
    (``shared_width``), and every step's logits still equal the uncached model's on the rows' real
    tokens."""
    lm = load_causal_lm("tiny", device="cpu")
    batch_sizes = []
    lm.register_forward_pre_hook(lambda _, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]),
                                 with_kwargs=True)
    real = [[20], [21], [22], [30, 31, 32, 33, 34, 35]]
    rows = CachedRows(lm, *left_padded(real, pad_id=1), capacity=8, grows=True)
    generator = torch.Generator().manual_seed(0)
    for replies in [None, [[40], [41], [42, 43, 44, 45, 46, 47], [48]]]:
        if replies is not None:
            rows.append(replies)
            real = [row + reply for row, reply in zip(real, replies)]
        batch_sizes.clear()
        recorded = Recorded()
        turn = rows.sample(2, eos_id=None, processors=LogitsProcessorList([recorded]), generator=generator)
        assert batch_sizes[0] == (4 if replies is None else 1)  # the long reply's extra columns, on their own
        for t, logits in enumerate(recorded.seen):
            for row in range(4):
                expected = lm(input_ids=torch.tensor([real[row] + turn.tokens[row, :t].tolist()])).logits[0, -1]
                torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-4)
        real = [row + tokens for row, tokens in zip(real, turn.tokens.tolist())]
