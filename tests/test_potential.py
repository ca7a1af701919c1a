"""Learned potentials: fitting, saving, the cached Φ, policy invariance and bad input."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import textgym  # noqa: F401
from agents.cli import main
from textgym.envs import TextGenerationEnv
from textgym.rewards import LearnedPotential, PotentialConfig, train_potential
from textgym.rewards.rollouts import Rollout, RolloutBatch
from textgym.scorers import VaderSentiment
from textgym.wrappers import PotentialShaping, TokenRewardWrapper

SMALL = PotentialConfig(episodes=24, heldout=8, num_envs=8, epochs=3, batch_size=8, lr=1e-3, device="cpu")


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    trained = train_potential("textgym/Sentiment-v0", SMALL, max_new_tokens=8)
    return trained, trained.save(tmp_path_factory.mktemp("potential") / "sentiment")


def test_training_records_its_rollouts_and_fit_report(potential):
    trained, path = potential
    meta = json.loads((path / "potential.json").read_text())
    assert meta["env_id"] == "textgym/Sentiment-v0" and meta["episodes"] == 24
    assert 24 <= meta["rollout_tokens"] <= 32 * 8  # every sampled token counted, train and held-out
    assert meta["report"]["heldout"] == 8 and meta["report"]["episodes_running"]["k=0"] == 8
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "value_head.safetensors"}


def test_the_cached_potential_equals_a_full_forward_of_each_prefix(potential):
    """Φ read token by token through the KV cache is Φ of the whole prefix run at once."""
    trained, path = potential
    env = gym.make("textgym/Sentiment-v0", max_new_tokens=8, reward_mode="learned", potential=str(path))
    _, info = env.reset(seed=3)
    prompt_ids = env.unwrapped.mdp.encode(info["prompt"])[0]
    tokens, rewards = [], []
    for action in np.random.default_rng(0).integers(10, 400, size=5):
        tokens.append(int(action))
        rewards.append(env.step(int(action))[1])
    rollout = Rollout(np.asarray(prompt_ids), np.asarray(tokens), 0.0)
    with torch.no_grad():
        phi = trained.value_model(RolloutBatch.of([rollout], "cpu"))[0][0].numpy()
    phi = phi * trained.record["score_std"] + trained.record["score_mean"]
    assert np.abs(np.diff(phi)).max() > 1e-3  # the fitted Φ varies along the completion
    np.testing.assert_allclose(rewards[:-1], np.diff(phi), rtol=1e-3, atol=1e-6)  # r_t = Φ(s_{t+1}) − Φ(s_t)


def test_learned_shaping_leaves_the_return_minus_the_sparse_return_independent_of_the_actions(potential):
    _, path = potential
    differences = []
    for seed in range(3):
        returns = {}
        for mode in ("sparse", "learned"):
            kwargs = {"potential": str(path)} if mode == "learned" else {}
            env = gym.make("textgym/Sentiment-v0", reward_mode=mode, max_new_tokens=8, **kwargs)
            env.reset(seed=0)  # the same prompt for every action sequence
            env.action_space.seed(seed)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total, done = total + reward, terminated or truncated
            returns[mode] = total
        differences.append(returns["learned"] - returns["sparse"])
    np.testing.assert_allclose(differences, differences[0], atol=1e-5)  # −Φ(prompt), whatever the actions


def test_a_vector_env_and_a_single_env_get_the_same_shaping(potential):
    _, path = potential
    envs = gym.make_vec("textgym/Sentiment-v0", num_envs=2, reward_mode="learned", potential=str(path),
                        max_new_tokens=8)
    env = gym.make("textgym/Sentiment-v0", reward_mode="learned", potential=str(path), max_new_tokens=8)
    _, infos = envs.reset(seed=0)
    env.reset(seed=0, options={"prompt": infos["prompt"][0]})
    for action in [50, 60, 70]:
        vector_reward = envs.step(np.array([action, action]))[1][0]
        assert vector_reward == pytest.approx(env.step(action)[1], abs=1e-4)


def test_bad_potentials_are_refused_with_their_path(potential, tmp_path):
    _, path = potential
    with pytest.raises(ValueError, match="does not exist"):
        LearnedPotential(tmp_path / "nowhere")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name in ("potential.json", "config.json", "value_head.safetensors"):
        (truncated / name).write_bytes((path / name).read_bytes())
    with pytest.raises(ValueError, match=r"lacks \['model.safetensors'\]"):
        LearnedPotential(truncated)
    (truncated / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot load the potential"):
        LearnedPotential(truncated, device="cpu")
    with pytest.raises(ValueError, match="trained on textgym/Sentiment-v0, not textgym/Keywords-v0"):
        gym.make("textgym/Keywords-v0", reward_mode="learned", potential=str(path))
    with pytest.raises(ValueError, match="potential=DIR goes with reward_mode='learned'"):
        gym.make("textgym/Sentiment-v0", reward_mode="learned")


def test_a_potential_checks_the_envs_score_and_tokenizer(potential):
    _, path = potential
    env = TextGenerationEnv(prompts=["Film review:"], scorer=lambda p, c: [0.0] * len(c))
    with pytest.raises(ValueError, match="trained on the score 'sentiment'"):
        TokenRewardWrapper(env, PotentialShaping(LearnedPotential(path, device="cpu")))
    potential_ = LearnedPotential(path, device="cpu")
    potential_.record = dict(potential_.record, tokenizer="0" * 16)
    with pytest.raises(ValueError, match="another tokenizer"):
        TokenRewardWrapper(TextGenerationEnv(prompts=["x"], scorer=VaderSentiment()), PotentialShaping(potential_))


def test_train_potential_needs_a_score():
    with pytest.raises(ValueError, match="needs a textgym env with a scorer"):
        train_potential("textgym/TextGeneration-v0", SMALL)
    with pytest.raises(ValueError, match="episodes must be a positive int, got 0"):
        PotentialConfig(episodes=0)


def test_the_potential_command_writes_a_new_directory_only(potential, tmp_path, capsys):
    _, path = potential
    assert main(["potential", "textgym/Arithmetic-v0", "--out", str(tmp_path / "p"), "--episodes", "8",
                 "--heldout", "8", "--num-envs", "8", "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    assert "correlation of Φ" in capsys.readouterr().out
    assert (tmp_path / "p" / "potential.json").is_file()
    assert main(["potential", "textgym/Arithmetic-v0", "--out", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
