"""The SB3 LLM actor-critic: cached rollouts equal full forwards, stock PPO / MaskablePPO, save/load."""

from __future__ import annotations

import base64
import json
import pickle
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

import agents
import textgym  # noqa: F401  (registers the envs)
from agents import LLMActorCriticPolicy, MaskableLLMActorCriticPolicy
from textgym.envs import TextGenerationEnv
from textgym.models import load_tokenizer
from textgym.models.build_tiny import train_tokenizer
from textgym.models.cache import RowCache
from textgym.models.corpus import generate_documents

ENV_ID = "textgym/Sentiment-v0"
SMALL = {"n_steps": 8, "batch_size": 8, "n_epochs": 1, "device": "cpu", "seed": 0}


def make_ppo(algo=PPO, policy=LLMActorCriticPolicy, n_envs: int = 3, value_model=None, **env_kwargs):
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=0, env_kwargs={"max_new_tokens": 6, **env_kwargs})
    return algo(policy, env, policy_kwargs={"model": "tiny", "value_model": value_model}, **SMALL)


@pytest.mark.parametrize("value_model", [None, "tiny"], ids=["shared-trunk", "separate-critic"])
def test_cached_rollout_equals_full_forwards_across_autoresets_and_evaluation_calls(monkeypatch, value_model):
    model = make_ppo(value_model=value_model)
    policy, env = model.policy, model.get_env()
    restarted_rows = []
    original_restart = RowCache.restart

    def counting_restart(self, rows, ids, mask):
        restarted_rows.append((self.num_rows, len(rows)))
        return original_restart(self, rows, ids, mask)

    monkeypatch.setattr(RowCache, "restart", counting_restart)
    policy.set_training_mode(False)
    obs = env.reset()
    steps, episodes = 40, 0
    for _ in range(steps):
        tensor_obs = obs_as_tensor(obs, policy.device)
        with torch.no_grad():
            cached_logits, cached_values = policy._logits_and_values(tensor_obs)
            full_logits, full_values = policy._full_forward(*policy._tokens(tensor_obs))
            one = {k: v[:1] for k, v in tensor_obs.items()}  # an evaluation call with another batch size
            eval_logits, _ = policy._logits_and_values(one)
        torch.testing.assert_close(cached_logits, full_logits, atol=1e-5, rtol=1e-6)  # float32 sums: error grows with |logit|
        torch.testing.assert_close(cached_values, full_values, atol=1e-5, rtol=0)
        torch.testing.assert_close(eval_logits, full_logits[:1], atol=1e-5, rtol=1e-6)
        actions = torch.distributions.Categorical(logits=cached_logits).sample().numpy()
        obs, _, dones, _ = env.step(actions)  # DummyVecEnv resets finished envs itself
        episodes += int(dones.sum())
    assert episodes >= 6  # several autoresets happened
    trunks = 1 if value_model is None else 2
    rollout_restarts = sum(rows for cache_rows, rows in restarted_rows if cache_rows == 3)
    begun = 3 + episodes - int(dones.sum())  # an episode that began at the last step has not run yet
    assert rollout_restarts == trunks * begun  # rows ran in full only when an episode began


def test_stock_ppo_plays_a_conversation_and_its_cache_survives_the_replies(monkeypatch):
    """In a conversation the observation grows by a whole reply when a turn ends: the cache runs that
    row again in full, and the logits still equal full forwards; PPO trains on the game."""
    env = make_vec_env("textgym/GuessNumber-v0", n_envs=2, seed=0)
    model = PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, **SMALL)
    policy, restarts = model.policy, []
    original_restart = RowCache.restart
    monkeypatch.setattr(RowCache, "restart", lambda self, rows, ids, mask: (
        restarts.append(len(rows)), original_restart(self, rows, ids, mask))[1])
    policy.set_training_mode(False)
    obs, replies = env.reset(), 0
    for _ in range(24):
        tensor_obs = obs_as_tensor(obs, policy.device)
        with torch.no_grad():
            cached, _ = policy._logits_and_values(tensor_obs)
            full, _ = policy._full_forward(*policy._tokens(tensor_obs))
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-6)
        actions = torch.distributions.Categorical(logits=cached).sample().numpy()
        before = obs["attention_mask"].sum(1)
        obs, _, dones, _ = env.step(actions)
        replies += int(((obs["attention_mask"].sum(1) > before + 1) & ~dones).sum())
    assert replies > 0 and sum(restarts) >= 2 + replies  # replies were appended, and their rows ran in full
    model.learn(16)


@pytest.mark.parametrize("value_model", [None, "tiny"], ids=["shared-trunk", "separate-critic"])
def test_grouped_training_forward_equals_per_row_forwards(value_model):
    """evaluate_actions runs one forward per root of a shuffled minibatch; outputs must not change."""
    model = make_ppo(n_envs=4, value_model=value_model)
    model.learn(32)  # fills the rollout buffer with several episodes per env
    policy, checked = model.policy, 0
    for batch in model.rollout_buffer.get(16):
        ids, mask = policy._tokens(batch.observations)
        with torch.no_grad():  # grouped forwards and chunked log-probs against SB3's own distribution
            grouped = policy.evaluate_actions(batch.observations, batch.actions)
            logits, values = policy._full_forward(ids, mask)
            distribution = policy._distribution(logits)
            full = values, distribution.log_prob(batch.actions.flatten()), distribution.entropy()
        for a, b in zip(grouped, full):
            torch.testing.assert_close(a.flatten(), b.flatten(), atol=1e-5, rtol=1e-5)
        checked += len(ids)
    assert checked == 32


def test_a_separate_value_model_is_its_own_trunk(tmp_path):
    model = make_ppo(value_model="tiny")
    policy = model.policy
    assert policy.critic_lm is not None and policy.critic_lm is not policy.lm
    before = [p.clone() for p in policy.critic_lm.parameters()]
    model.learn(16)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.critic_lm.parameters()))  # it trains
    model.save(tmp_path / "critic")
    loaded = PPO.load(tmp_path / "critic", device="cpu")
    obs = model.get_env().reset()
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy.predict_values(obs_as_tensor(obs, "cpu")),
                                   policy.predict_values(obs_as_tensor(obs, "cpu")))


def test_stock_ppo_learns_and_save_load_round_trips(tmp_path):
    model = make_ppo()
    model.learn(16)
    obs = model.get_env().reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", device="cpu")
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[key], value)


def test_the_optimizer_is_sb3s_adam_fused_unless_told_otherwise():
    env = gym.make(ENV_ID, max_new_tokens=4)
    defaults = PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, **SMALL).policy.optimizer.defaults
    assert defaults["fused"] and defaults["eps"] == 1e-5  # SB3's eps for Adam is kept
    told = {"model": "tiny", "optimizer_kwargs": {"fused": False}}
    assert not PPO(LLMActorCriticPolicy, env, policy_kwargs=told, **SMALL).policy.optimizer.defaults["fused"]


def test_agents_save_keeps_the_weights_in_safetensors_and_load_reads_them(tmp_path):
    model = make_ppo()
    model.learn(16)
    path = agents.save(model, tmp_path / "ppo")
    weights = load_file(tmp_path / "ppo.safetensors")
    assert "value_head.weight" in weights
    torch.testing.assert_close(weights["value_head.weight"], model.policy.value_head.weight.detach())
    obs = model.get_env().reset()
    loaded = agents.load(PPO, path, device="cpu")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # The weights come from the safetensors file, not the zip: edit the file and load sees the edit.
    weights["value_head.bias"] = torch.full_like(weights["value_head.bias"], 7.0)
    save_file(weights, tmp_path / "ppo.safetensors")
    assert agents.load(PPO, path, device="cpu").policy.value_head.bias.item() == 7.0
    (tmp_path / "ppo.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="ppo.safetensors is missing"):
        agents.load(PPO, path)


def test_plain_ppo_never_chooses_pad():
    """Stock PPO passes no action mask, and the env rejects pad: the policy forbids it itself."""
    model = make_ppo(PPO, LLMActorCriticPolicy)
    obs = model.get_env().reset()
    distribution = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
    pad = model.get_env().get_attr("unwrapped")[0].tokenizer.pad_token_id
    assert (distribution.distribution.probs[:, pad] == 0).all()
    assert torch.isfinite(distribution.entropy()).all()


def test_maskable_ppo_respects_action_masks(tmp_path):
    model = make_ppo(MaskablePPO, MaskableLLMActorCriticPolicy, disallowed_token_ids=tuple(range(2, 1000)))
    model.learn(16)
    obs = model.get_env().reset()
    masks = np.stack(model.get_env().env_method("action_masks"))
    for _ in range(5):
        actions, _ = model.predict(obs, action_masks=masks)
        assert masks[np.arange(len(actions)), actions].all()
    model.save(tmp_path / "maskable")
    loaded = MaskablePPO.load(tmp_path / "maskable", device="cpu")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True, action_masks=masks)[0],
                                  loaded.predict(obs, deterministic=True, action_masks=masks)[0])


def test_bad_spaces_observations_and_vocabularies():
    with pytest.raises(TypeError, match="needs a Discrete action space"):
        LLMActorCriticPolicy(gym.make(ENV_ID).observation_space, gym.spaces.Box(0, 1, (3,)), lambda _: 1e-4)
    with pytest.raises(ValueError, match="Dict with keys"):
        LLMActorCriticPolicy(gym.spaces.Box(0, 1, (3,)), gym.spaces.Discrete(5), lambda _: 1e-4)
    other = train_tokenizer(generate_documents(300, seed=5), vocab_size=400)
    env = TextGenerationEnv(tokenizer=other, prompts=["Film review:"])
    tiny = len(load_tokenizer("tiny"))
    with pytest.raises(ValueError, match=rf"Discrete\({len(other)}\) actions, but model 'tiny'.*{tiny} tokens"):
        PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, **SMALL)
    policy = make_ppo().policy
    with pytest.raises(ValueError, match="keys \\['attention_mask', 'input_ids'\\]"):
        policy.predict_values({"input_ids": torch.zeros(1, 30)})
    with pytest.raises(ValueError, match="shape \\(batch, 30\\)"):
        policy.predict_values({"input_ids": torch.zeros(1, 7), "attention_mask": torch.zeros(1, 7)})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        PPO(LLMActorCriticPolicy, ENV_ID, policy_kwargs={"temperature": 0}, **SMALL)


def test_lora_adapters_train_a_small_share_and_round_trip(tmp_path):
    model = PPO(LLMActorCriticPolicy, ENV_ID, policy_kwargs={"lora": {"r": 4, "target_modules": ["c_attn"]}},
                **SMALL)
    lm = model.policy.lm
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in lm.parameters()) / 10
    model.learn(8)
    model.save(tmp_path / "lora")
    loaded = PPO.load(tmp_path / "lora", device="cpu")
    obs = model.get_env().reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0],
                                  loaded.predict(obs, deterministic=True)[0])


def test_lora_without_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ImportError, match='pip install "textgym\\[lora\\]"'):
        PPO(LLMActorCriticPolicy, ENV_ID, policy_kwargs={"lora": {"r": 4}}, **SMALL)


@pytest.mark.parametrize("example", ["sb3_ppo", "sb3_maskable_ppo"])
def test_examples_run_with_a_tiny_budget(example):
    import importlib

    model = importlib.import_module(f"agents.examples.{example}").main(["--steps", "64", "--n-envs", "2"])
    assert model.num_timesteps >= 64


class _Touch:
    """Unpickling this creates a file: what a hostile zip could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


def test_agents_load_unpickles_nothing_from_the_zip(tmp_path):
    model = make_ppo()
    model.learn(16)
    path = agents.save(model, tmp_path / "ppo")
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    archive = tmp_path / "ppo.zip"
    with zipfile.ZipFile(archive) as zipped:
        entries = {name: zipped.read(name) for name in zipped.namelist()}
    data = json.loads(entries["data"])
    for key, value in data.items():
        if isinstance(value, dict) and ":serialized:" in value:
            value[":serialized:"] = payload  # every pickled entry now runs code when unpickled
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, content in entries.items():
            zipped.writestr(name, content)
    loaded = agents.load(PPO, path, device="cpu")
    assert not marker.exists()
    assert isinstance(loaded.policy, LLMActorCriticPolicy) and loaded.action_space.n == model.action_space.n
    assert loaded.lr_schedule(1.0) == model.lr_schedule(1.0) and loaded.clip_range(1.0) == model.clip_range(1.0)
    loaded.set_env(model.get_env())
    loaded.learn(8)  # it trains on
    data["surprise"] = {":type:": "<class 'object'>", ":serialized:": payload}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, content in entries.items():
            zipped.writestr(name, content)
    with pytest.raises(ValueError, match="will not unpickle 'surprise'"):
        agents.load(PPO, path, device="cpu")
    assert not marker.exists()
