"""Sampling completions: the ``Sampler`` seam, its transformers implementation, and the draw itself.

Every sampling loop goes through a ``Sampler``: the trainers' rollout, ``evaluate``, the demo, the
reward sources' rollouts and the benchmarks. It samples whole completions for a batch of prompts
(ids and mask, ``max_new_tokens``, stop at EOS, logits processors, a generator); callers then step
their env column by column with the tokens. ``HFSampler`` runs a transformers causal LM with a
preallocated KV cache; a vLLM backend would be a second implementation of the same protocol.

``torch.multinomial`` draws an exponential variate for every vocabulary entry of every row; on CPU
that can cost more than a small model's forward pass. Inverse-CDF sampling needs one uniform number
per row and a binary search in the row's cumulative sums. ``action_logits`` cuts an LM's logits to
an env's action distribution.

Example:
    >>> import torch
    >>> from textgym.models.sampling import sample_categorical
    >>> probs = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    >>> tokens = sample_categorical(probs, torch.Generator().manual_seed(0))
    >>> tokens[0].item(), tokens[1].item() in (0, 2)
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from textgym.models.cache import autocast, cache_of, cached, positions, preallocated_cache


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (N, V), drawn with probability proportional to the row's
    entries, like ``torch.multinomial(probs, 1).squeeze(1)``.

    The cumulative sums are float64, so a token's share is exact to ~1e-16 even at V = 50k; a token of
    probability 0 is never drawn. A row without positive finite mass (NaN logits, say) is an error.
    """
    cdf = probs.double().cumsum(-1)
    total = cdf[:, -1:]
    empty = ~((total > 0) & torch.isfinite(total)).squeeze(1)
    if bool(empty.any()):
        raise ValueError(f"sample_categorical: rows {torch.nonzero(empty)[:, 0].tolist()} have no positive finite "
                         "probability mass (NaN or -inf logits?)")
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=torch.float64) * total
    # clamp: a draw that rounds up to the total would land one past the last index.
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def action_logits(logits: torch.Tensor, vocab: int, temperature: float = 1.0,
                  allowed: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """The env's action distribution from an LM's logits: the first ``vocab`` entries (models may pad
    their vocabulary), at ``temperature``, with the actions ``allowed`` excludes (an env's
    ``action_masks()``: ``(V,)`` or one row per logits row) at the lowest float: probability 0, but
    finite, so entropies and their gradients stay finite.

    Example:
        >>> logits = action_logits(torch.zeros(2, 4), vocab=3, allowed=np.array([True, False, True]))
        >>> torch.softmax(logits, -1)
        tensor([[0.5000, 0.0000, 0.5000],
                [0.5000, 0.0000, 0.5000]])
    """
    logits = logits[..., :vocab].float() / temperature
    if allowed is None:
        return logits
    allowed = torch.as_tensor(allowed, device=logits.device)
    return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)


class EnvActions(LogitsProcessor):
    """The logits processor of an env's action space: ``action_logits`` at temperature 1 (the cut to
    ``vocab`` and the env's ``action_masks()``); the warpers after it apply the temperature."""

    def __init__(self, vocab: int, allowed: torch.Tensor | np.ndarray | None = None):
        self.vocab, self.allowed = vocab, None if allowed is None else torch.as_tensor(allowed).bool()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return action_logits(scores, self.vocab, 1.0, self.allowed)


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn: transformers' own warpers, as ``generate(do_sample=True)`` applies them."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def from_config(cls, config) -> Sampling:
        """The sampling fields of a config (a ``TrainConfig``, say)."""
        return cls(config.temperature, config.top_k, config.top_p)

    def processors(self, vocab: int, allowed: torch.Tensor | np.ndarray | None = None) -> LogitsProcessorList:
        """The env's actions (``EnvActions``), then the temperature, top-k and top-p warpers."""
        processors = LogitsProcessorList([EnvActions(vocab, allowed)])
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            processors.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        return processors


class Completions(NamedTuple):
    """Sampled completions of a batch of prompts, as one rectangle of T columns.

    Row i is ``tokens[i, :lengths[i]]``: up to and including its first EOS, or all T tokens. The
    batch stays rectangular, as in ``generate()``, so a row that ended keeps drawing until every row
    has: the tokens past its length are valid actions that mean nothing (``mask`` hides them).
    """

    tokens: torch.Tensor  # (N, T)
    lengths: torch.Tensor  # (N,)

    @property
    def mask(self) -> torch.Tensor:
        """(N, T) bool: True for each row's own tokens."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) < self.lengths[:, None]


class Sampler(Protocol):
    """Samples completions for a batch of left-padded prompts."""

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
               eos_id: int | None, processors: LogitsProcessorList, generator: torch.Generator) -> Completions:
        """Up to ``max_new_tokens`` tokens per row; a row stops at ``eos_id`` (None: never). Each
        step's logits pass through ``processors``; the draws come from ``generator``."""
        ...


class HFSampler:
    """A ``Sampler`` that runs a transformers causal LM, one token per row per step.

    The KV cache is allocated once for the whole completion (``preallocated_cache``), the prompt's
    forward keeps only its last logits, and each draw takes one uniform number per row
    (``sample_categorical``) on the generator's device.

    Example:
        >>> from textgym.models import load_causal_lm
        >>> model = load_causal_lm("tiny", device="cpu")
        >>> ids = torch.tensor([[1, 1, 20, 21], [30, 31, 32, 33]]); mask = (ids != 1).long()
        >>> out = HFSampler(model).sample(ids, mask, 5, eos_id=2, processors=Sampling().processors(2240),
        ...                                generator=torch.Generator().manual_seed(0))
        >>> out.tokens.shape[0], bool((out.lengths <= 5).all())
        (2, True)
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
               eos_id: int | None, processors: LogitsProcessorList, generator: torch.Generator) -> Completions:
        device = self.model.device
        n, width = prompt_ids.shape
        ids = torch.empty(n, width + max_new_tokens, dtype=torch.long, device=device)  # what processors see
        ids[:, :width] = prompt_ids.to(device)
        mask = prompt_mask.to(device)
        lengths = torch.full((n,), max_new_tokens, dtype=torch.long, device=device)
        ended = torch.zeros(n, dtype=torch.bool, device=device)
        with autocast(device):
            out = self.model(input_ids=ids[:, :width], attention_mask=mask, position_ids=positions(mask),
                             use_cache=True, **cached(preallocated_cache(width + max_new_tokens)), logits_to_keep=1)
        for t in range(max_new_tokens):
            if t:
                position = mask.sum(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], dim=1)
                with autocast(device):
                    out = self.model(input_ids=ids[:, width + t - 1 : width + t], attention_mask=mask,
                                     position_ids=position, **cached(cache_of(out)), use_cache=True)
            scores = processors(ids[:, : width + t], out.logits[:, -1].float())
            token = sample_categorical(torch.softmax(scores, dim=-1).to(generator.device), generator)
            ids[:, width + t] = token.to(device)
            if eos_id is not None:
                stops = (ids[:, width + t] == eos_id) & ~ended
                lengths[stops] = t + 1
                ended |= stops
                if bool(ended.all()):
                    break
        return Completions(ids[:, width : width + t + 1], lengths)


def env_prompts(envs, seeds: int | list[int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Reset the textgym vector env ``envs`` with ``seeds``; the prompts as left-padded (ids, mask),
    without the columns that are padding in every row, and the reset info."""
    obs, info = envs.reset(seed=seeds)
    # At reset the first max_new_tokens columns are padding; then skip the columns no prompt reaches.
    ids = obs["input_ids"][:, envs.unwrapped.mdp.max_new_tokens :]
    mask = obs["attention_mask"][:, envs.unwrapped.mdp.max_new_tokens :]
    first = int(mask.any(0).nonzero()[0][0])
    return torch.tensor(ids[:, first:]), torch.tensor(mask[:, first:]), info  # copies: the env reuses its buffers


def sample_for(envs, sampler: Sampler, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: Sampling,
               generator: torch.Generator) -> Completions:
    """``sampler``'s completions of the prompts of the textgym vector env ``envs``, as its MDP says:
    its length limit, EOS (when EOS ends an episode) and action mask."""
    mdp = envs.unwrapped.mdp
    return sampler.sample(prompt_ids, prompt_mask, mdp.max_new_tokens, eos_id=mdp.eos_id if mdp.stop_on_eos else None,
                          processors=sampling.processors(mdp.vocab_size, mdp.action_mask), generator=generator)


def first_episodes(sampler: Sampler, envs, seed: int, sampling: Sampling = Sampling()
                   ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run every env of ``envs`` through its first episode: ``sampler`` samples the completions,
    then the envs step through them column by column.

    Returns the prompts (ids and mask, as ``env_prompts`` gives them) and, in env order, each first
    episode's ``prompt``, ``completion``, ``completion_ids``, ``score`` and ``ended_by`` ("EOS" or
    "length limit").
    """
    prompt_ids, prompt_mask, _ = env_prompts(envs, seed)
    completions = sample_for(envs, sampler, prompt_ids, prompt_mask, sampling, torch.Generator().manual_seed(seed))
    finished: dict[int, dict] = {}
    for column in completions.tokens.T.cpu().numpy():
        _, _, terminated, truncated, info = envs.step(column)
        for i in np.flatnonzero(terminated | truncated):
            if i not in finished:
                finished[i] = {key: info[key][i] for key in ("prompt", "completion", "completion_ids", "score")}
                finished[i]["ended_by"] = "EOS" if terminated[i] else "length limit"
        if len(finished) == envs.num_envs:
            break
    prompts = {"input_ids": prompt_ids.numpy(), "attention_mask": prompt_mask.numpy()}
    return prompts, [finished[i] for i in range(envs.num_envs)]


class Conversation(NamedTuple):
    """One finished episode of a ``MultiTurnTextEnv``: its first and last observations, the reward
    of each of the policy's tokens in order (the token that ended a turn holds the turn's score),
    whether it terminated (rather than ran out of room), and the final ``info`` (``score``,
    ``turn_scores``, ``transcript``)."""

    opening: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    rewards: list[float]
    terminated: bool
    info: dict


def play_conversations(sampler: Sampler, envs: list, seeds: list[int], sampling: Sampling,
                       generator: torch.Generator) -> list[Conversation]:
    """Play one episode of each single ``MultiTurnTextEnv`` of ``envs`` (env ``i`` reset with
    ``seeds[i]``), turn by turn: each round ``sampler`` writes the next turn of every conversation
    still running, in one batch, up to the end-of-turn token, and each env steps through its turn
    (then appends the other side's reply). A row's tokens after its turn ended are dropped."""
    openings = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    observations = list(openings)
    rewards: list[list[float]] = [[] for _ in envs]
    turn = [0] * len(envs)
    finished: dict[int, Conversation] = {}
    first = envs[0].unwrapped
    processors = sampling.processors(first.vocab_size, first.action_masks())
    while len(finished) < len(envs):
        running = [i for i in range(len(envs)) if i not in finished]
        ids = np.stack([observations[i]["input_ids"] for i in running])
        mask = np.stack([observations[i]["attention_mask"] for i in running])
        start = int(mask.any(0).nonzero()[0][0])  # the columns every row pads
        turns = sampler.sample(torch.from_numpy(ids[:, start:]), torch.from_numpy(mask[:, start:]),
                               first.max_turn_tokens, eos_id=first.end_of_turn_id, processors=processors,
                               generator=generator)
        for row, i in enumerate(running):
            for token in turns.tokens[row, : int(turns.lengths[row])].tolist():
                observations[i], reward, terminated, truncated, info = envs[i].step(token)
                rewards[i].append(float(reward))
                if terminated or truncated:
                    finished[i] = Conversation(openings[i], observations[i], rewards[i], bool(terminated), info)
                    break
                if info["turn"] != turn[i]:  # the turn ended; the reply is in the observation
                    turn[i] = info["turn"]
                    break
    return [finished[i] for i in range(len(envs))]


def first_conversations(sampler: Sampler, envs: list, seed: int, sampling: Sampling = Sampling()) -> list[dict]:
    """``play_conversations`` with env ``i`` reset with ``seed + i`` and the sampling seeded by
    ``seed``; each episode's final ``info``."""
    played = play_conversations(sampler, envs, [seed + i for i in range(len(envs))], sampling,
                                torch.Generator().manual_seed(seed))
    return [conversation.info for conversation in played]
