"""The registered tasks: offline construction, splits, reward modes, policy invariance, bad kwargs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textgym
from textgym.scorers import run_scorer
from textgym.tasks import TASKS, make_task_env, make_task_vector_env
from textgym.wrappers import VectorTokenRewardWrapper
from tests.helpers import assert_tree_equal

TASK_IDS = [f"textgym/{name}-v0" for name in textgym.TASK_NAMES]


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")  # checking the wrapper is the point
@pytest.mark.parametrize("env_id", TASK_IDS)
@pytest.mark.parametrize("reward_mode", ["sparse", "immediate"])
def test_task_envs_pass_the_checkers_in_both_reward_modes(env_id, reward_mode):
    gym_check_env(gym.make(env_id, reward_mode=reward_mode).env, skip_render_check=True)
    sb3_check_env(gym.make(env_id, reward_mode=reward_mode), warn=True)


@pytest.mark.parametrize("name", list(TASKS))
def test_splits_are_seeded_disjoint_and_carry_references_when_scored_against_them(name):
    task = TASKS[name]
    train, test = task.data("train"), task.data("test")
    assert train == task.data("train") and len(train[0]) > len(test[0]) > 0
    assert not set(train[0]) & set(test[0])
    needs_references = getattr(task.scorer(), "needs_references", False)
    assert (train[1] is not None) == needs_references or name == "Arithmetic"


def play(env_id: str, reward_mode: str, prompt: str, references, actions) -> tuple[float, dict]:
    env = gym.make(env_id, reward_mode=reward_mode, split="test")
    env.reset(seed=0, options={"prompt": prompt, "references": references} if references is not None else
              {"prompt": prompt})
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            return total, info
    raise AssertionError("the episode did not end")


def candidate_actions(env_id: str, rng: np.random.Generator, references) -> list[list[int]]:
    """Random tokens, a few reference-shaped completions, and an immediate EOS."""
    tokenizer = textgym.models.load_tokenizer("tiny")
    eos = tokenizer.eos_token_id
    words = [" ".join(r) if isinstance(r, list) else str(r) for r in ([references] if references else [])]
    shaped = [tokenizer(" " + w)["input_ids"] + [eos] for w in words]
    random_ones = [list(rng.integers(2, len(tokenizer), 60)) for _ in range(3)]
    return [*shaped, *random_ones, [eos]]


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_immediate_minus_sparse_return_does_not_depend_on_the_actions(env_id):
    rng = np.random.default_rng(0)
    name = env_id.split("/")[1][:-3]
    prompts, references = TASKS[name].data("test")
    for k in range(3):
        prompt, refs = prompts[k], None if references is None else references[k]
        gaps = []
        for actions in candidate_actions(env_id, rng, refs):
            sparse, sparse_info = play(env_id, "sparse", prompt, refs, actions)
            immediate, info = play(env_id, "immediate", prompt, refs, actions)
            assert sparse == sparse_info["score"] == info["score"]
            gaps.append(immediate - sparse)
        assert np.allclose(gaps, gaps[0]), (env_id, prompt, gaps)  # −Φ(prompt, ""), for every policy


def test_arithmetic_rewards_digits_as_they_come():
    env = gym.make("textgym/Arithmetic-v0", reward_mode="immediate")
    env.reset(options={"prompt": "17 + 25 =", "references": "42"})
    tokenizer = env.unwrapped.tokenizer
    rewards = [env.step(t)[1] for t in tokenizer(" 42")["input_ids"] + [tokenizer.eos_token_id]]
    assert rewards == pytest.approx([0.0, 0.5, 0.5, 1.0 - 1.0])  # " ", "4", "2", then EOS: score 1 − Φ 1
    _, info = env.reset(options={"prompt": "17 + 25 =", "references": "42"})
    for t in tokenizer(" 43")["input_ids"] + [tokenizer.eos_token_id]:
        *_, info = env.step(t)
    assert info["score"] == 0.0


def test_make_vec_gives_the_wrapped_vector_env_equal_to_single_envs():
    envs = gym.make_vec("textgym/Arithmetic-v0", num_envs=3, reward_mode="immediate")
    assert isinstance(envs, VectorTokenRewardWrapper)
    singles = SyncVectorEnv([lambda: make_task_env("Arithmetic", reward_mode="immediate") for _ in range(3)])
    assert_tree_equal(envs.reset(seed=1), singles.reset(seed=1))
    tokenizer = envs.unwrapped.tokenizer
    rng = np.random.default_rng(0)
    digits = [tokenizer(str(d))["input_ids"][0] for d in range(10)] + [tokenizer.eos_token_id]
    for t in range(20):
        actions = rng.choice(digits, 3)
        assert_tree_equal(envs.step(actions), singles.step(actions), f"step {t}")


def test_task_kwargs_are_checked():
    with pytest.raises(TypeError, match=r"textgym/Sentiment-v0 got an unexpected keyword argument 'rewards'; valid arguments are"):
        gym.make("textgym/Sentiment-v0", rewards="dense")
    with pytest.raises(ValueError, match="reward_mode must be one of \\['sparse', 'immediate', .*\\], got 'dense'"):
        gym.make("textgym/Sentiment-v0", reward_mode="dense")
    with pytest.raises(ValueError, match="split must be one of \\['train', 'test'\\], got 'validation'"):
        gym.make("textgym/Summarize-v0", split="validation")
    with pytest.raises(ValueError, match="unknown task 'Poetry'"):
        make_task_vector_env(2, "Poetry")
    env = gym.make("textgym/Sentiment-v0", max_new_tokens=5)
    assert env.observation_space["input_ids"].shape == (TASKS["Sentiment"].max_prompt_tokens + 5,)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_gold_completions_outscore_floor_completions(name):
    """The Task record's good and bad completions bound the score from above and below."""
    task = TASKS[name]
    scorer = task.scorer()
    gold = run_scorer(scorer, *task.gold_completions("test", 32))
    floor = run_scorer(scorer, *task.floor_completions("test", 32))
    assert len(gold) == len(floor) == 32
    assert gold.mean() > floor.mean()
