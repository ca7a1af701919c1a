"""``textgym train --algo sb3-ppo | sb3-maskable-ppo``: stock stable-baselines3 with the LLM policy.

The same ``TrainConfig`` drives it: ``num_envs`` envs (``DummyVecEnv``) of ``max_new_tokens``
steps per rollout, ``minibatch_size`` episodes' worth of transitions per gradient step, and the
shared PPO fields. A callback writes the trainers' metric names to ``metrics.csv`` and
TensorBoard, and the run ends with a checkpoint (``agents.save``: SB3's zip plus the policy's
weights in safetensors beside it).

Fields SB3's PPO has no counterpart for are not used here: the KL fields (no reference model),
``top_k`` / ``top_p``, ``group_size``, ``whiten_rewards`` and ``lr_schedule``.

Example:
    >>> import tempfile
    >>> from agents.trainers import TrainConfig
    >>> from agents.trainers.sb3 import train_sb3
    >>> config = TrainConfig(env_id="textgym/Arithmetic-v0", algo="sb3-ppo", steps=64, num_envs=2,
    ...                      minibatch_size=1, epochs=1, out=tempfile.mkdtemp(), device="cpu")
    >>> sorted(p.name for p in train_sb3(config, progress=False).iterdir())
    ['model.safetensors', 'model.zip', 'state.json']
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from agents.policies import save
from agents.trainers.algorithms import SB3_ALGORITHMS
from agents.trainers.checkpoint import check_new_run
from agents.trainers.config import TrainConfig
from agents.trainers.metrics import MetricsLog, plot_learning_curve
from agents.trainers.rollout import env_arguments, reward_sources
from textgym.models import atomic_directory

SB3_NAMES = {"train/clip_fraction": "val/clipfrac", "train/value_loss": "val/value_loss",
             "train/policy_gradient_loss": "policy/loss", "train/approx_kl": "policy/approx_kl"}


class MetricsCallback(BaseCallback):
    """One metrics row per rollout + update, under the batched trainers' names."""

    def __init__(self, log: MetricsLog):
        super().__init__()
        self.log, self.scores, self.lengths, self.eos = log, [], [], []
        self.iteration, self.start = 0, time.perf_counter()

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done and "score" in info:
                self.scores.append(info["score"])
                self.lengths.append(len(info["completion_ids"]))
                self.eos.append(not info.get("TimeLimit.truncated", False))
        return True

    def _on_rollout_start(self) -> None:  # the previous rollout's update has just run: log both
        if self.scores:
            self._write_row()

    def _on_training_end(self) -> None:
        if self.scores:
            self._write_row()

    def _write_row(self) -> None:
        trained = self.model.logger.name_to_value
        self.iteration += 1
        row = {"step": self.num_timesteps, "iteration": self.iteration,
               "objective/score": float(np.mean(self.scores)), "objective/kl": float("nan"),
               "env/episode_len": float(np.mean(self.lengths)), "env/eos_rate": float(np.mean(self.eos)),
               "time/tokens_per_s": self.num_timesteps / (time.perf_counter() - self.start)}
        row |= {ours: float(trained[theirs]) for theirs, ours in SB3_NAMES.items() if theirs in trained}
        if "train/entropy_loss" in trained:
            row["policy/entropy"] = -float(trained["train/entropy_loss"])
        self.log.log(row)
        self.scores, self.lengths, self.eos = [], [], []


class RedistributeRewards(BaseCallback):
    """Apply the envs' hindsight credit (``info["reward_redistribution"]``, e.g. ``AttentionCredit``'s)
    to stock SB3's rollout buffer, then recompute its returns and advantages.

    SB3 calls ``on_step`` before it stores the step, so the last token's share goes into this step's
    reward and the earlier tokens' into the buffer rows of the episode. Tokens of an episode that
    began in an earlier rollout were already trained on: their share goes to the episode's first
    token in this rollout, so the episode's rewards still sum to its return.

    Example:
        >>> from stable_baselines3 import PPO
        >>> import gymnasium as gym, textgym
        >>> from agents import LLMActorCriticPolicy
        >>> env = gym.make("textgym/Preference-v0", reward_mode="attention", max_new_tokens=4)
        >>> model = PPO(LLMActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1, device="cpu")
        >>> _ = model.learn(8, callback=RedistributeRewards())
    """

    def _on_rollout_start(self) -> None:
        self.rows = [[] for _ in range(self.training_env.num_envs)]  # buffer rows of each env's episode
        self.changed = False

    def _on_step(self) -> bool:
        buffer, rewards = self.model.rollout_buffer, self.locals["rewards"]
        for env, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            self.rows[env].append(buffer.pos)
            if done and info.get("reward_redistribution") is not None:
                shift = np.asarray(info["reward_redistribution"], dtype=np.float64)
                k = min(len(self.rows[env]), len(shift))
                here = shift[len(shift) - k :].copy()
                here[0] += shift[: len(shift) - k].sum()
                for row, value in zip(self.rows[env][-k:-1], here[:-1]):
                    buffer.rewards[row, env] += value
                rewards[env] += here[-1]
                self.changed = True
            if done:
                self.rows[env] = []
        return True

    def _on_rollout_end(self) -> None:
        if self.changed:
            self.model.rollout_buffer.compute_returns_and_advantage(last_values=self.locals["values"],
                                                                    dones=self.locals["dones"])


def _named(path: str) -> Any:
    """The object that ``"module:name"`` names."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def train_sb3(config: TrainConfig, progress: bool = True) -> Path:
    """Train with stock SB3 PPO or MaskablePPO; returns the checkpoint directory."""
    algo, policy = (_named(path) for path in SB3_ALGORITHMS[config.algo])
    check_new_run(config.out)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = env_arguments(config.env_id, config.env_kwargs, reward_mode=config.reward_mode,
                               sources=reward_sources(config, progress))
    envs = make_vec_env(config.env_id, n_envs=config.num_envs, seed=config.seed, env_kwargs=env_kwargs)
    horizon = envs.get_attr("unwrapped")[0].mdp.max_new_tokens
    lora = {"r": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": 0.0} if config.lora else None
    model = algo(policy, envs, learning_rate=config.lr, n_steps=horizon, batch_size=config.minibatch_size * horizon,
                 n_epochs=config.epochs, gamma=config.gamma, gae_lambda=config.gae_lambda,
                 clip_range=config.clip_range, ent_coef=config.ent_coef, vf_coef=config.vf_coef,
                 max_grad_norm=config.max_grad_norm, seed=config.seed, device=config.device or "auto",
                 policy_kwargs={"model": config.model, "lora": lora, "temperature": config.temperature})
    log = MetricsLog(out, config.steps, progress=progress)
    model.learn(config.steps, callback=[MetricsCallback(log), RedistributeRewards()])
    log.close()
    with atomic_directory(out / "checkpoint") as tmp:
        save(model, tmp / "model")
        (tmp / "state.json").write_text(json.dumps({"config": config.to_dict(), "steps": model.num_timesteps}))
    if log.rows:
        plot_learning_curve(log.rows, out / "learning_curve.png", config.env_id)
    return out / "checkpoint"
