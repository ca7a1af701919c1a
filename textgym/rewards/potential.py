"""Learned potentials: Φ(prompt, prefix) ≈ E[final score | prefix], fitted to a base model's rollouts.

Shaping with a task's own score on unfinished text helps little, because most scores misread a
prefix (a reward model has never seen half an answer). A learned potential is fitted to what the
prefix actually predicts: ``train_potential`` samples rollouts of a base model (default "tiny") on
an env's prompts and regresses the final score of each rollout on *every* prefix of it, from the
prompt alone to the last token but one, with one forward per sequence (a value model, as a PPO
critic is, but trained once, offline, on Monte-Carlo returns).

``LearnedPotential(dir)`` is that Φ as a potential for ``PotentialShaping``: batched over the
envs, with a KV cache kept across steps, so a step costs one token's forward per env, as
``ReferenceLogProb``'s does. With γ = 1 the shaping telescopes, so an episode's return is its
sparse return minus Φ(prompt): the optimal policy is unchanged, whatever Φ learned.

A potential directory is an HF causal LM (safetensors) and its tokenizer, plus
``value_head.safetensors`` and ``potential.json`` (what it was trained on, the rollout tokens it
consumed, and the fit report).

Example:
    >>> import gymnasium as gym, textgym, tempfile
    >>> from textgym.rewards import LearnedPotential, PotentialConfig, train_potential
    >>> from textgym.wrappers import PotentialShaping, TokenRewardWrapper
    >>> config = PotentialConfig(episodes=16, heldout=8, num_envs=8, epochs=1, device="cpu")
    >>> trained = train_potential("textgym/Sentiment-v0", config, max_new_tokens=8)
    >>> path = trained.save(tempfile.mkdtemp() + "/potential")
    >>> env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0", scorer=trained.scorer),
    ...                          PotentialShaping(LearnedPotential(path, device="cpu")))
    >>> _ = env.reset(seed=0)  # any env with the same tokenizer and score: here the shipped prompts
    >>> trained.record["rollout_tokens"] > 0, "k=0" in trained.record["report"]["correlation"]
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textgym.models import load_causal_lm
from textgym.models.cache import RowCache
from textgym.rewards.rollouts import (
    EnvSource, FitConfig, Rollout, RolloutBatch, check_source, correlation, fit, read_source, sample_for_fit,
    save_source, source_record,
)
from textgym.wrappers.base import Episodes, Transition
from textgym.wrappers.components import Potential

RECORD = "potential.json"
HEAD = "value_head.safetensors"
COMMAND = "textgym potential ENV_ID --out DIR"
REPORT_PREFIXES = (0, 1, 2, 4, 8, 16, 32)  # prefix lengths k at which the fit report correlates Φ with the score


@dataclass
class PotentialConfig(FitConfig):
    """How ``train_potential`` samples and fits (``FitConfig``'s fields)."""


class ValueModel(torch.nn.Module):
    """A causal LM trunk and a scalar head on its last hidden state: one value per position."""

    def __init__(self, lm: PreTrainedModel, head: torch.nn.Linear):
        super().__init__()
        self.lm, self.head = lm, head

    def forward(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The (standardized) value of each state s_k of ``batch``, and the mask of real states."""
        out = self.lm(input_ids=batch.ids, attention_mask=batch.mask, output_hidden_states=True)
        return batch.at_states(self.head(out.hidden_states[-1]).squeeze(-1))


@dataclass
class TrainedPotential:
    value_model: ValueModel
    tokenizer: PreTrainedTokenizerBase
    scorer: Any  # the env's, whose score Φ predicts
    record: dict

    def save(self, out: str | Path) -> Path:
        """Save in HF format (safetensors) with the head and ``potential.json``, atomically."""
        head = {k: v.contiguous() for k, v in self.value_model.head.state_dict().items()}
        return save_source(out, self.value_model.lm, self.tokenizer, RECORD, self.record,
                           lambda tmp: save_file(head, str(tmp / HEAD)))


def fit_report(value_model: ValueModel, rollouts: list[Rollout], mean: float, std: float) -> dict:
    """Pearson correlation between Φ after k completion tokens and the final score, on held-out rollouts."""
    with torch.no_grad():
        phi, real = value_model(RolloutBatch.of(rollouts, next(value_model.parameters()).device))
    phi, real = (phi * std + mean).cpu().numpy(), real.cpu().numpy() > 0
    scores = np.array([r.score for r in rollouts])
    report = {"correlation": {}, "episodes_running": {}, "heldout": len(rollouts)}
    for k in REPORT_PREFIXES:
        alive = np.flatnonzero(real[:, k]) if k < real.shape[1] else np.array([], int)
        report["episodes_running"][f"k={k}"] = len(alive)
        report["correlation"][f"k={k}"] = correlation(phi[alive, k], scores[alive]) if len(alive) else None
    return report


def train_potential(env: EnvSource, config: PotentialConfig | None = None, progress: bool = False,
                    **env_kwargs: Any) -> TrainedPotential:
    """Fit Φ(prompt, prefix) ≈ E[final score | prefix] to rollouts of ``config.model`` on ``env``.

    ``env`` is a registered id (``env_kwargs`` go to ``gym.make_vec``; task ids use their train
    split unless told) or a factory ``num_envs -> vector env``. The env must have a scorer: its
    ``info["score"]`` at episode end is the regression target.
    """
    config = config or PotentialConfig()
    sampled = sample_for_fit(env, config, env_kwargs, "train_potential", progress)
    train, heldout, device, mdp = sampled.train, sampled.heldout, sampled.device, sampled.mdp
    scores = np.array([r.score for r in train])
    mean, std = float(scores.mean()), float(scores.std()) or 1.0

    lm = load_causal_lm(config.model, device=device)
    head = torch.nn.Linear(lm.config.hidden_size, 1, device=device)
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    value_model = ValueModel(lm, head)

    def loss(batch: list[Rollout]) -> torch.Tensor:
        phi, real = value_model(RolloutBatch.of(batch, device))
        target = torch.tensor([(r.score - mean) / std for r in batch], device=device)[:, None]
        return ((phi - target) ** 2 * real).sum() / real.sum()  # every prefix is a target

    fit(value_model, train, loss, config, progress, "fitting Φ")
    record = source_record(env, mdp, config, sampled.all, score_mean=mean, score_std=std,
                           report=fit_report(value_model, heldout, mean, std))
    return TrainedPotential(value_model, mdp.tokenizer, mdp.scorer, record)


class LearnedPotential(Potential):
    """Φ from a ``train_potential`` directory, for ``PotentialShaping``: batched, with a KV cache.

    Example: see the module docstring. ``env_id`` (optional) is checked against the env the
    potential was trained on; the env's tokenizer and scorer are checked when it is bound.
    """

    name = "learned_potential"

    def __init__(self, path: str | Path, device: str | torch.device | None = None, env_id: str | None = None):
        self.path, self.record = Path(path), read_source(path, RECORD, (HEAD,), COMMAND)
        check_source(self.path, self.record, None, env_id)
        try:
            self.model = load_causal_lm(self.path, device=device).requires_grad_(False).eval()
            weights = load_file(str(self.path / HEAD), device=str(self.model.device))
        except (OSError, SafetensorError, RuntimeError) as error:
            raise ValueError(f"cannot load the potential in {str(path)!r} ({error}): truncated? train it again") from None
        self.head = torch.nn.Linear(self.model.config.hidden_size, 1, device=self.model.device)
        self.head.load_state_dict(weights)
        self.scale, self.shift = self.record["score_std"], self.record["score_mean"]

    def bind(self, mdp, num_slots: int) -> None:
        check_source(self.path, self.record, mdp)
        self.cache = RowCache(self.model, num_slots, mdp.length, mdp.pad_id)

    @torch.no_grad()
    def _values(self, hidden: torch.Tensor) -> np.ndarray:
        return (self.head(hidden).squeeze(-1) * self.scale + self.shift).double().cpu().numpy()

    def start(self, episodes: Episodes) -> np.ndarray:
        slots = torch.as_tensor(episodes.slots, device=self.cache.device)
        _, hidden = self.cache.restart(slots, torch.as_tensor(episodes.input_ids),
                                       torch.as_tensor(episodes.attention_mask))
        return self._values(hidden)

    def step(self, t: Transition) -> np.ndarray:
        _, hidden = self.cache.advance(self.cache.tokens_for(t.slots, t.new_tokens))
        return self._values(hidden)[t.slots]
