"""Implicit token rewards (PRIME, Cui et al. 2025): r_t = β·log π_φ(a_t | s_t) / π_ref(a_t | s_t).

An outcome label says how good a whole completion was; PRIME turns it into a reward per token by
training an LM π_φ whose log-ratio to a frozen reference π_ref, summed over the completion,
predicts the outcome: the loss is the cross-entropy between σ(β·Σ_t log π_φ/π_ref) and the
label. After training, each token's own log-ratio is its reward: the tokens that π_φ learned to
favour over the reference are the ones that made outcomes good.

``train_implicit_reward`` fits π_φ offline, before RL, to rollouts of a base model (default
"tiny", also the reference and π_φ's starting point) labelled by the env's score, rescaled to
[0, 1] over the training rollouts. ``ImplicitTokenReward(dir)`` is the reward component: both
LMs run batched with KV caches, one token's forward each per env per step. It is not potential-
based shaping, so it can change which policy is optimal; with ``ReferenceLogProb``'s KL it is the
dense reward PRIME trains with.

Example:
    >>> import gymnasium as gym, textgym, tempfile
    >>> from textgym.rewards import ImplicitConfig, ImplicitTokenReward, train_implicit_reward
    >>> from textgym.wrappers import TokenRewardWrapper
    >>> config = ImplicitConfig(episodes=16, heldout=8, num_envs=8, epochs=1, device="cpu")
    >>> trained = train_implicit_reward("textgym/Sentiment-v0", config, max_new_tokens=8)
    >>> path = trained.save(tempfile.mkdtemp() + "/implicit")
    >>> env = gym.make("textgym/Sentiment-v0", reward_mode="implicit", implicit=str(path))
    >>> _ = env.reset(seed=0)
    >>> parts = env.step(env.action_space.sample())[-1]["reward_components"]
    >>> sorted(parts)
    ['implicit_reward', 'task']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textgym.models import load_causal_lm
from textgym.rewards.rollouts import (
    EnvSource, FitConfig, Rollout, RolloutBatch, check_source, correlation, fit, read_source, sample_for_fit,
    save_source, source_record,
)
from textgym.wrappers.base import Episodes, TokenReward, Transition
from textgym.wrappers.reference import ActionLogProbs

RECORD = "implicit_reward.json"
COMMAND = "textgym train ENV_ID --reward-mode implicit"


@dataclass
class ImplicitConfig(FitConfig):
    """How ``train_implicit_reward`` samples and fits (``FitConfig``'s fields), and its β."""

    beta: float = 0.05
    lr: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"ImplicitConfig.beta must be > 0, got {self.beta!r}")


@dataclass
class TrainedImplicitReward:
    lm: PreTrainedModel  # π_φ
    tokenizer: PreTrainedTokenizerBase
    record: dict

    def save(self, out: str | Path) -> Path:
        """Save π_φ in HF format (safetensors) with ``implicit_reward.json``, atomically."""
        return save_source(out, self.lm, self.tokenizer, RECORD, self.record)


def log_ratios(lm: PreTrainedModel, reference: PreTrainedModel, batch: RolloutBatch) -> torch.Tensor:
    """log π_φ(a_t | s_t) − log π_ref(a_t | s_t) of each completion token, (B, T_max), 0 past the end."""
    logprobs, _ = batch.action_logprobs(lm)
    with torch.no_grad():
        reference_logprobs, _ = batch.action_logprobs(reference)
    return logprobs - reference_logprobs


def train_implicit_reward(env: EnvSource, config: ImplicitConfig | None = None, progress: bool = False,
                          **env_kwargs: Any) -> TrainedImplicitReward:
    """Fit π_φ so that σ(β·Σ_t log π_φ/π_ref) predicts each rollout's score, rescaled to [0, 1].

    ``env`` is a registered id (``env_kwargs`` go to ``gym.make_vec``) or a factory
    ``num_envs -> vector env``; its scorer labels the rollouts of ``config.model``.
    """
    config = config or ImplicitConfig()
    reference = load_causal_lm(config.model, device=config.device).requires_grad_(False).eval()
    sampled = sample_for_fit(env, config, env_kwargs, "train_implicit_reward", progress, model=reference)
    train, heldout, device, mdp = sampled.train, sampled.heldout, sampled.device, sampled.mdp
    scores = np.array([r.score for r in train])
    low, high = float(scores.min()), float(scores.max())
    if high == low:
        raise ValueError(f"all {len(train)} training rollouts scored {low}: there is no outcome to learn from; "
                         "sample more episodes or at a higher temperature")

    lm = load_causal_lm(config.model, device=device)

    def loss(batch: list[Rollout]) -> torch.Tensor:
        implicit = config.beta * log_ratios(lm, reference, RolloutBatch.of(batch, device)).sum(1)
        labels = torch.tensor([(r.score - low) / (high - low) for r in batch], device=device).clamp(0, 1)
        return F.binary_cross_entropy_with_logits(implicit, labels)

    fit(lm, train, loss, config, progress, "fitting π_φ")
    with torch.no_grad():
        heldout_sums = (config.beta * log_ratios(lm, reference, RolloutBatch.of(heldout, device)).sum(1)).cpu().numpy()
    report = {"correlation_with_score": correlation(heldout_sums, np.array([r.score for r in heldout])),
              "heldout": len(heldout)}
    record = source_record(env, mdp, config, sampled.all, beta=config.beta, reference=config.model,
                           score_low=low, score_high=high, report=report)
    return TrainedImplicitReward(lm.eval(), mdp.tokenizer, record)


class ImplicitTokenReward(TokenReward):
    """r_t += β·(log π_φ(a_t | s_t) − log π_ref(a_t | s_t)), from a ``train_implicit_reward`` directory.

    ``ref`` and ``beta`` default to those it was trained with. Example: see the module docstring.
    """

    name = "implicit_reward"

    def __init__(self, path: str | Path, ref: str | Path | PreTrainedModel | None = None, beta: float | None = None,
                 device: str | torch.device | None = None, env_id: str | None = None):
        self.path, self.record = Path(path), read_source(path, RECORD, (), COMMAND)
        check_source(self.path, self.record, None, env_id)
        super().__init__(self.record["beta"] if beta is None else beta)  # the weight is β
        if not self.weight > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        try:
            self.policy = ActionLogProbs(load_causal_lm(self.path, device=device))
        except (OSError, RuntimeError) as error:
            raise ValueError(f"cannot load π_φ from {str(path)!r} ({error}): truncated? train it again") from None
        self.reference = ActionLogProbs(self.record["reference"] if ref is None else ref, self.policy.device)

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        check_source(self.path, self.record, mdp)
        self.policy.bind(mdp, num_slots)
        self.reference.bind(mdp, num_slots)

    def start(self, episodes: Episodes) -> None:
        self.policy.start(episodes)
        self.reference.start(episodes)

    def rewards(self, t: Transition) -> np.ndarray:
        return self.policy.taken(t) - self.reference.taken(t)
