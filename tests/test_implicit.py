"""Implicit token rewards (PRIME): fitting, the cached log-ratio, the reward mode and bad input;
and the trainers' reward sources, trained once into the run's output."""

import functools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import textgym  # noqa: F401
from agents.trainers import TrainConfig, Trainer
from agents.trainers import rollout as trainer_rollout
from agents.trainers.metrics import read_metrics
from textgym.envs import TextGenerationEnv
from textgym.models import load_causal_lm
from textgym.rewards import ImplicitConfig, ImplicitTokenReward, train_implicit_reward
from textgym.rewards.implicit import log_ratios
from textgym.rewards.rollouts import Rollout, RolloutBatch
from textgym.wrappers import TokenRewardWrapper

SMALL = dict(episodes=24, heldout=8, num_envs=8, epochs=2, batch_size=8, lr=1e-3, device="cpu")


@pytest.fixture(scope="module")
def implicit(tmp_path_factory):
    trained = train_implicit_reward("textgym/Sentiment-v0", ImplicitConfig(**SMALL), max_new_tokens=8)
    return trained, trained.save(tmp_path_factory.mktemp("implicit") / "sentiment")


def test_training_records_its_cost_and_report(implicit):
    trained, path = implicit
    record = json.loads((path / "implicit_reward.json").read_text())
    assert record["env_id"] == "textgym/Sentiment-v0" and record["reference"] == "tiny" and record["beta"] == 0.05
    assert record["rollout_tokens"] >= 32 and record["report"]["heldout"] == 8
    assert record["score_low"] < record["score_high"]


def test_the_cached_reward_is_beta_times_the_log_ratio_of_a_full_forward(implicit):
    trained, path = implicit
    env = gym.make("textgym/Sentiment-v0", reward_mode="implicit", implicit=str(path), max_new_tokens=8)
    _, info = env.reset(seed=1)
    prompt_ids = env.unwrapped.mdp.encode(info["prompt"])[0]
    tokens = [int(t) for t in np.random.default_rng(0).integers(10, 400, size=4)]
    rewards = [env.step(t)[-1]["reward_components"]["implicit_reward"] for t in tokens]
    batch = RolloutBatch.of([Rollout(np.asarray(prompt_ids), np.asarray(tokens), 0.0)], "cpu")
    with torch.no_grad():
        expected = 0.05 * log_ratios(trained.lm, load_causal_lm("tiny", device="cpu"), batch)[0].numpy()
    assert np.abs(expected).max() > 1e-4  # π_φ moved away from the reference
    np.testing.assert_allclose(rewards, expected, rtol=1e-3, atol=1e-6)


def test_bad_implicit_sources_are_refused(implicit, tmp_path):
    _, path = implicit
    with pytest.raises(ValueError, match="does not exist"):
        ImplicitTokenReward(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="beta must be > 0, got -1"):
        ImplicitTokenReward(path, beta=-1.0)
    with pytest.raises(ValueError, match="trained on textgym/Sentiment-v0, not textgym/Keywords-v0"):
        gym.make("textgym/Keywords-v0", reward_mode="implicit", implicit=str(path))
    with pytest.raises(ValueError, match="implicit=DIR goes with reward_mode='implicit'"):
        gym.make("textgym/Sentiment-v0", reward_mode="sparse", implicit=str(path))
    env = TextGenerationEnv(prompts=["Film review:"], scorer=lambda p, c: [0.0] * len(c))
    with pytest.raises(ValueError, match="trained on the score 'sentiment'"):
        TokenRewardWrapper(env, ImplicitTokenReward(path, device="cpu"))
    with pytest.raises(ValueError, match="beta must be > 0"):
        ImplicitConfig(beta=0.0)


def test_an_outcome_that_never_varies_is_an_error():
    def constant(prompts, completions):
        return [1.0] * len(completions)

    def envs(n):
        return gym.make_vec("textgym/TextGeneration-v0", num_envs=n, scorer=constant, max_new_tokens=4)

    with pytest.raises(ValueError, match="all 8 training rollouts scored 1.0"):
        train_implicit_reward(envs, ImplicitConfig(episodes=8, heldout=1, num_envs=8, device="cpu"))


@pytest.mark.parametrize("mode", ["learned", "implicit"])
def test_the_trainer_trains_its_reward_source_once_into_the_run(mode, tmp_path, monkeypatch):
    small = {name: (train, functools.partial(settings, episodes=8, heldout=4, num_envs=8, epochs=1), record)
             for name, (train, settings, record) in trainer_rollout.SOURCE_TRAINERS.items()}
    monkeypatch.setattr(trainer_rollout, "SOURCE_TRAINERS", small)
    config = TrainConfig(env_id="textgym/Sentiment-v0", reward_mode=mode, steps=64, num_envs=8, minibatch_size=8,
                         epochs=1, out=str(tmp_path / "run"), device="cpu", env_kwargs={"max_new_tokens": 8})
    trainer = Trainer(config, progress=False)
    name = {"learned": "potential", "implicit": "implicit"}[mode]
    source = tmp_path / "run" / name
    assert source.is_dir()
    row = trainer.iterate()
    assert np.isfinite(row["objective/reward"])
    stamp = (source / "config.json").stat().st_mtime_ns
    trainer_rollout.reward_sources(config)  # a second call (a resumed run) reuses it
    assert (source / "config.json").stat().st_mtime_ns == stamp


def test_an_online_step_fits_the_outcomes_and_the_env_rewards_with_the_new_pi_phi(implicit):
    _, path = implicit
    env = gym.make("textgym/Sentiment-v0", reward_mode="implicit", implicit=str(path), max_new_tokens=8)
    reward = env.get_wrapper_attr("components")[0]
    _, info = env.reset(seed=1)
    prompt_ids = np.asarray(env.unwrapped.mdp.encode(info["prompt"])[0])
    good, bad = Rollout(prompt_ids, np.array([11, 12, 13]), 1.0), Rollout(prompt_ids, np.array([21, 22, 23]), -1.0)
    losses = [reward.learn([good, bad], lr=1e-3) for _ in range(6)]
    assert losses[-1] < losses[0]
    env.reset(seed=1)  # the same prompt, with π_φ's new caches
    rewards = [env.step(t)[-1]["reward_components"]["implicit_reward"] for t in good.completion_ids]
    assert sum(rewards) > 0  # the good completion's tokens now earn reward
    batch = RolloutBatch.of([good], "cpu")
    with torch.no_grad():
        expected = 0.05 * log_ratios(reward.policy.model, load_causal_lm("tiny", device="cpu"), batch)[0].numpy()
    np.testing.assert_allclose(rewards, expected, rtol=1e-3, atol=1e-6)


def test_online_implicit_training_resumes_exactly(implicit, tmp_path):
    _, path = implicit
    settings = dict(env_id="textgym/Sentiment-v0", reward_mode="implicit", implicit=str(path), implicit_lr=1e-3,
                    num_envs=8, minibatch_size=8, epochs=1, device="cpu", env_kwargs={"max_new_tokens": 8})
    direct = Trainer(TrainConfig(out=str(tmp_path / "direct"), steps=150, **settings), progress=False)
    before = {k: v.clone() for k, v in direct.implicit.policy.model.state_dict().items()}
    direct.train()
    first = Trainer(TrainConfig(out=str(tmp_path / "split"), steps=150, **settings), progress=False)
    first.train(until=60)
    resumed = Trainer.resume(tmp_path / "split", progress=False)
    assert 60 <= resumed.steps < 150
    resumed.train()
    rows = read_metrics(tmp_path / "direct" / "metrics.csv")
    assert all(np.isfinite(row["implicit/loss"]) for row in rows)
    weights = [t.implicit.policy.model.state_dict() for t in (direct, resumed)]
    assert any(not torch.equal(before[name], weights[0][name]) for name in before)  # π_φ learned online
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_implicit_lr_goes_with_the_implicit_mode_only():
    with pytest.raises(ValueError, match="implicit_lr must be > 0, with reward_mode 'implicit'"):
        TrainConfig(reward_mode="sparse", implicit_lr=1e-4)
