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

PRIME also keeps fitting π_φ online, to the outcomes of the policy's own rollouts, so that the
policy cannot drift to text that π_φ favours but was never checked on. ``ImplicitTokenReward.learn``
is that step; the batched trainer takes it after every rollout when ``implicit_lr`` is set.

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
    EnvSource, FitConfig, Rollout, RolloutBatch, check_source, clipped_step, correlation, fit, read_source,
    sample_for_fit, save_source, source_record,
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


def outcome_loss(lm: PreTrainedModel, reference: PreTrainedModel, rollouts: list[Rollout], beta: float,
                 low: float, high: float, device: torch.device | str) -> torch.Tensor:
    """PRIME's loss: the cross-entropy between σ(β·Σ_t log π_φ/π_ref) and each rollout's score,
    rescaled from [low, high] to [0, 1] (and clipped there)."""
    implicit = beta * log_ratios(lm, reference, RolloutBatch.of(rollouts, device)).sum(1)
    labels = torch.tensor([(r.score - low) / (high - low) for r in rollouts], device=device).clamp(0, 1)
    return F.binary_cross_entropy_with_logits(implicit, labels)


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
    fit(lm, train, lambda batch: outcome_loss(lm, reference, batch, config.beta, low, high, device), config, progress,
        "fitting π_φ")
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
        self.optimizer: torch.optim.Optimizer | None = None  # made by the first online step

    def learn(self, rollouts: list[Rollout], lr: float) -> float:
        """One online PRIME step: AdamW at ``lr`` on ``outcome_loss`` of finished ``rollouts`` (the
        policy's, scored by the env), rescaled as in training. Call it between rollouts: episodes
        under way keep the KV caches of the old π_φ. Returns the loss.

        Example:
            >>> import tempfile
            >>> from textgym.rewards import ImplicitConfig, ImplicitTokenReward, train_implicit_reward
            >>> from textgym.rewards.rollouts import Rollout
            >>> config = ImplicitConfig(episodes=16, heldout=8, num_envs=8, epochs=1, device="cpu")
            >>> path = train_implicit_reward("textgym/Sentiment-v0", config, max_new_tokens=8).save(
            ...     tempfile.mkdtemp() + "/implicit")
            >>> reward = ImplicitTokenReward(path)
            >>> rollout = Rollout(np.array([5, 6]), np.array([7, 8, 9]), score=0.9)
            >>> reward.learn([rollout], lr=1e-4) > 0
            True
        """
        lm = self.policy.model
        if self.optimizer is None:
            self.optimizer = self._online_optimizer(lr)
        lm.requires_grad_(True)  # in eval mode: no dropout, π_φ learns as it rewards
        loss = outcome_loss(lm, self.reference.model, rollouts, self.weight, self.record["score_low"],
                            self.record["score_high"], self.policy.device)
        clipped_step(loss, lm, self.optimizer)
        lm.requires_grad_(False)
        return loss.item()

    def _online_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.policy.model.parameters(), lr=lr)

    def state_dict(self) -> dict[str, Any]:
        """π_φ's weights and its online optimizer's state (a trainer checkpoints them)."""
        return {"weights": self.policy.model.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], lr: float) -> None:
        self.policy.model.load_state_dict(state["weights"])
        if state["optimizer"] is not None:
            self.optimizer = self._online_optimizer(lr)
            self.optimizer.load_state_dict(state["optimizer"])

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
