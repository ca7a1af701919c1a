"""NLPO-style top-k masks: the mask is the mask model's top k, and the callback refreshes it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from agents import MaskableLLMActorCriticPolicy
from agents.nlpo import RefreshTopKMask, TopKActionMask
from textgym.models import load_causal_lm, load_tokenizer
from textgym.models.cache import positions


def test_the_mask_is_the_mask_models_top_k_at_every_step():
    model = load_causal_lm("tiny", device="cpu")
    env = TopKActionMask(gym.make("textgym/Sentiment-v0", max_new_tokens=8), model, k=5)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(8):
        mask = env.action_masks()
        with torch.no_grad():
            ids, attention = (torch.as_tensor(obs[k])[None] for k in ("input_ids", "attention_mask"))
            logits = model(input_ids=ids, attention_mask=attention, position_ids=positions(attention)).logits[0, -1]
        logits[~torch.as_tensor(env.unwrapped.action_masks())] = float("-inf")
        assert mask.sum() == 5 and set(np.flatnonzero(mask)) == set(logits.topk(5).indices.tolist())
        obs, _, terminated, truncated, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if terminated or truncated:
            obs, _ = env.reset()


class PolicyAtRolloutStart(BaseCallback):
    """Records the policy LM's weights when each rollout starts (after the refresh runs)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def _on_rollout_start(self) -> None:
        self.states.append({k: v.clone() for k, v in self.model.policy.lm.state_dict().items()})

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize(("every", "refreshed"), [(1, True), (3, False)])
def test_the_callback_refreshes_every_k_updates(every, refreshed):
    envs = make_vec_env("textgym/Sentiment-v0", n_envs=2, seed=0, env_kwargs={"max_new_tokens": 6},
                        wrapper_class=TopKActionMask, wrapper_kwargs={"mask_model": "tiny", "k": 10})
    model = MaskablePPO(MaskableLLMActorCriticPolicy, envs, n_steps=8, batch_size=8, n_epochs=2,
                        learning_rate=1e-3, device="cpu", seed=0)
    spy = PolicyAtRolloutStart()
    model.learn(24, callback=CallbackList([RefreshTopKMask(every=every), spy]))  # 2 rollouts, 1 update between
    expected = spy.states[-1] if refreshed else spy.states[0]  # after the update, or the initial weights
    for mask_model in envs.get_attr("model"):
        assert all(torch.equal(mask_model.state_dict()[k], v) for k, v in expected.items())
    assert not all(torch.equal(spy.states[0][k], v) for k, v in spy.states[-1].items())  # the update moved it
    obs, masks = envs.reset(), np.stack(envs.env_method("action_masks"))
    actions, _ = model.predict(obs, action_masks=masks)
    assert masks[np.arange(2), actions].all() and (masks.sum(1) == 10).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match=rf"k must be an int in \[1, {len(load_tokenizer('tiny'))}\], got 0"):
        TopKActionMask(gym.make("textgym/Sentiment-v0"), "tiny", k=0)
    with pytest.raises(ValueError, match="every must be a positive int"):
        RefreshTopKMask(every=0)
    with pytest.raises(gym.error.ResetNeeded):
        TopKActionMask(gym.make("textgym/Sentiment-v0"), "tiny", k=3).action_masks()
