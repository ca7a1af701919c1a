"""Attention credit: hindsight credit that sums to the sparse score, in single and vector envs, the
batched trainer and stock SB3."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import textgym  # noqa: F401
from agents import LLMActorCriticPolicy
from agents.trainers.rollout import Rollout
from textgym.models.sampling import HFSampler, Sampling
from agents.trainers.sb3 import RedistributeRewards
from textgym.models import load_causal_lm
from textgym.rewards import PREFERENCE_MODEL, AttentionCredit, RewardModelScore
from textgym.scorers import VaderSentiment
from textgym.wrappers import TokenRewardWrapper


def play(env, actions):
    rewards, info = [], {}
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(rewards), info


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_an_episodes_credited_rewards_sum_to_its_sparse_score(alpha):
    env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0", scorer=RewardModelScore(PREFERENCE_MODEL),
                                      max_new_tokens=6), AttentionCredit(RewardModelScore(PREFERENCE_MODEL), alpha))
    env.reset(seed=0, options={"prompt": "Film review:"})
    rewards, info = play(env, [300, 301, 302, 303, 304, 305])
    shift = np.array(info["reward_redistribution"])
    assert rewards[:-1].tolist() == [0.0] * 5 and rewards[-1] == pytest.approx(info["score"])  # the env stays sparse
    assert len(shift) == 6 and shift.sum() == pytest.approx(0.0, abs=1e-9)
    credited = rewards + shift
    assert credited.sum() == pytest.approx(info["score"], rel=1e-6)
    # alpha of the score is spread in shares of one sign; 1 - alpha of it stays at the last token
    assert np.all(credited[:-1] * np.sign(info["score"]) >= -1e-9)
    assert credited[:-1].sum() <= alpha * abs(info["score"]) + 1e-6
    if alpha == 0.0:
        assert np.all(shift == 0)
    else:
        assert np.abs(shift[:-1]).sum() > 0


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_a_vector_env_reports_each_finished_envs_credit(mode):
    envs = gym.make_vec("textgym/Preference-v0", num_envs=2, reward_mode="attention", max_new_tokens=3,
                        autoreset_mode=mode)
    single = gym.make("textgym/Preference-v0", reward_mode="attention", max_new_tokens=3)
    _, infos = envs.reset(seed=0)
    single.reset(seed=0, options={"prompt": infos["prompt"][1]})
    for action in [300, 301, 302]:
        _, _, _, _, info = envs.step(np.array([300, action]))
        _, _, _, _, expected = single.step(action)
    found = info["final_info"] if mode == "same_step" else info
    assert found["_reward_redistribution"].tolist() == [True, True]
    np.testing.assert_allclose(found["reward_redistribution"][1], expected["reward_redistribution"], atol=1e-6)


def test_the_batched_trainer_applies_the_credit():
    envs = gym.make_vec("textgym/Preference-v0", num_envs=4, reward_mode="attention", max_new_tokens=6)
    batch = Rollout(envs, Sampling()).collect(HFSampler(load_causal_lm("tiny", device="cpu")), [0, 1, 2, 3],
                                               torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch.rewards.sum(1), batch.scores, atol=1e-4, rtol=1e-4)
    before_last = batch.rewards * batch.completion_mask
    before_last[torch.arange(4), batch.completion_mask.sum(1).long() - 1] = 0
    assert before_last.abs().sum() > 0  # credit reached tokens before the last


def test_stock_sb3_gets_the_credit_through_the_callback():
    env = gym.make("textgym/Preference-v0", reward_mode="attention", max_new_tokens=4)
    model = PPO(LLMActorCriticPolicy, env, n_steps=12, batch_size=12, n_epochs=1, device="cpu", seed=0)
    model.learn(12, callback=RedistributeRewards())
    buffer = model.rollout_buffer
    rewards, starts = buffer.rewards[:, 0], buffer.episode_starts[:, 0]
    begins = [int(i) for i in np.flatnonzero(starts)] + [len(starts)]
    complete = [(a, b) for a, b in zip(begins, begins[1:]) if b < len(starts) or b - a == 4]
    assert complete
    assert any(np.abs(rewards[a : b - 1]).sum() > 0 for a, b in complete)  # credit before the last token


def test_bad_attention_credit_input():
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\].*got 1.5"):
        AttentionCredit(RewardModelScore(PREFERENCE_MODEL), alpha=1.5)
    with pytest.raises(TypeError, match="needs a RewardModelScore, got"):
        AttentionCredit(VaderSentiment())
    with pytest.raises(ValueError, match="reward_mode 'attention' spreads a reward model's score.*'sentiment'"):
        gym.make("textgym/Sentiment-v0", reward_mode="attention")
