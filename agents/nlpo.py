"""NLPO-style action masking: only the k most likely next tokens under a periodically refreshed
copy of the policy may be chosen (Ramamurthy et al., 2023, "Is Reinforcement Learning (Not) for
Natural Language Processing?").

``TopKActionMask`` is an env wrapper whose ``action_masks()`` (what sb3-contrib's MaskablePPO
reads) is the env's own mask intersected with the mask model's top k. ``RefreshTopKMask`` is an
SB3 callback that copies the policy's weights into every env's mask model every K updates; it goes
through ``env_method``, so it works with ``DummyVecEnv`` and ``SubprocVecEnv`` alike.

Example:
    >>> from sb3_contrib import MaskablePPO
    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> from agents import MaskableLLMActorCriticPolicy
    >>> from agents.nlpo import RefreshTopKMask, TopKActionMask
    >>> envs = make_vec_env("textgym/Sentiment-v0", n_envs=2, wrapper_class=TopKActionMask,
    ...                     wrapper_kwargs={"mask_model": "tiny", "k": 20})
    >>> model = MaskablePPO(MaskableLLMActorCriticPolicy, envs, n_steps=8, batch_size=8, n_epochs=1, device="cpu")
    >>> _ = model.learn(16, callback=RefreshTopKMask(every=1))
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from transformers import PreTrainedModel

from textgym.models import load_causal_lm
from textgym.models.cache import RowCache, extends_by_one


class TopKActionMask(gym.Wrapper):
    """Allow only the ``k`` likeliest next tokens of ``mask_model`` (and what the env allows)."""

    def __init__(self, env: gym.Env, mask_model: str | Path | PreTrainedModel = "tiny", k: int = 50):
        super().__init__(env)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= env.action_space.n:
            raise ValueError(f"k must be an int in [1, {env.action_space.n}], got {k!r}")
        model = mask_model if isinstance(mask_model, PreTrainedModel) else load_causal_lm(mask_model, device="cpu")
        self.model, self.k = model.requires_grad_(False).eval(), k
        self._obs: dict[str, np.ndarray] | None = None
        self._cached: tuple[RowCache, torch.Tensor, torch.Tensor] | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs = obs
        return obs, reward, terminated, truncated, info

    @torch.no_grad()
    def _next_token_logits(self) -> torch.Tensor:
        """The mask model's next-token logits for the current observation, one token per step."""
        ids = torch.as_tensor(self._obs["input_ids"])[None]
        mask = torch.as_tensor(self._obs["attention_mask"])[None]
        if self._cached is not None and extends_by_one(self._cached[1], self._cached[2], ids, mask)[0]:
            cache = self._cached[0]
            logits, _ = cache.advance(ids[:, -1])
        else:
            cache = RowCache(self.model, 1, ids.shape[1], pad_id=0)
            logits, _ = cache.restart(torch.arange(1), ids, mask)
        self._cached = (cache, ids, mask)
        return logits[0, : self.env.action_space.n]

    def action_masks(self) -> np.ndarray:
        if self._obs is None:
            raise gym.error.ResetNeeded("action_masks() before reset()")
        allowed = self.env.unwrapped.action_masks()
        logits = self._next_token_logits().masked_fill(torch.as_tensor(~allowed), float("-inf"))
        top = np.zeros_like(allowed)
        top[logits.topk(min(self.k, int(allowed.sum()))).indices.numpy()] = True
        return top

    def refresh_mask_model(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the policy's current weights; the cached KV came from the old ones."""
        self.model.load_state_dict(state_dict)
        self._cached = None


class RefreshTopKMask(BaseCallback):
    """Copy the policy LM's weights into every env's ``TopKActionMask`` every ``every`` updates."""

    def __init__(self, every: int = 1):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every, self.updates = every, 0

    def _on_rollout_start(self) -> None:
        if self.num_timesteps == 0:  # the first rollout comes before any update
            return
        self.updates += 1
        if self.updates % self.every == 0:
            state = {name: value.detach().cpu() for name, value in self.model.policy.lm.state_dict().items()}
            self.training_env.env_method("refresh_mask_model", state)

    def _on_step(self) -> bool:
        return True
