"""TextGenerationVectorEnv behaves exactly like N single envs, and is what gym.make_vec returns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import textgym  # noqa: F401  (registers the envs)
from textgym.envs import TextGenerationEnv, TextGenerationVectorEnv
from textgym.models import load_tokenizer
from tests.helpers import assert_tree_equal, length_scorer

ENV_ID = "textgym/TextGeneration-v0"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


def env_kwargs(tokenizer) -> dict:
    prompts = [f"{a} + {b} =" for a in range(6) for b in range(5)] + ["Scene:", "Film review: I watched this film."]
    return {"tokenizer": tokenizer, "prompts": prompts, "scorer": length_scorer, "max_prompt_tokens": 8,
            "max_new_tokens": 5}


def random_actions(rng: np.random.Generator, n: int, eos: int, vocab: int) -> np.ndarray:
    """Mostly ordinary tokens, EOS often enough that episodes end at different times."""
    actions = rng.integers(2, vocab, size=n)
    return np.where(rng.random(n) < 0.25, eos, actions)


def test_make_vec_returns_the_batched_env():
    envs = gym.make_vec(ENV_ID, num_envs=3)
    assert isinstance(envs, TextGenerationVectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] == envs.autoreset_mode == AutoresetMode.NEXT_STEP  # TorchRL reads the attribute
    assert gym.make_vec("textgym/Arithmetic-v0", num_envs=2).autoreset_mode == AutoresetMode.NEXT_STEP  # wrapped too
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert envs.action_masks().shape == (3, len(envs.unwrapped.tokenizer))
    assert envs.action_space == gym.spaces.MultiDiscrete([len(envs.unwrapped.tokenizer)] * 3)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_equals_n_single_envs_across_autoresets(tokenizer, mode):
    n, kwargs = 4, env_kwargs(tokenizer)
    vector = TextGenerationVectorEnv(n, autoreset_mode=mode, **kwargs)
    singles = SyncVectorEnv([lambda: TextGenerationEnv(**kwargs) for _ in range(n)], autoreset_mode=mode)
    assert_tree_equal(vector.reset(seed=11), singles.reset(seed=11), "reset")
    rng = np.random.default_rng(0)
    episodes_ended = 0
    for t in range(60):
        actions = random_actions(rng, n, tokenizer.eos_token_id, len(tokenizer))
        got, want = vector.step(actions), singles.step(actions)
        assert_tree_equal(got, want, f"step {t}")
        episodes_ended += int(np.sum(got[2] | got[3]))
    assert episodes_ended > 3 * n  # the run really crossed many autoresets, at different steps


def test_make_vec_matches_gymnasiums_own_sync_vectorization():
    fast = gym.make_vec(ENV_ID, num_envs=3)
    slow = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync")
    assert_tree_equal(fast.reset(seed=5), slow.reset(seed=5))
    tokenizer = fast.unwrapped.tokenizer
    rng = np.random.default_rng(1)
    for t in range(100):
        actions = random_actions(rng, 3, tokenizer.eos_token_id, len(tokenizer))
        assert_tree_equal(fast.step(actions), slow.step(actions), f"step {t}")


def test_list_seeds_and_reset_options(tokenizer):
    envs = TextGenerationVectorEnv(2, **env_kwargs(tokenizer))
    _, info = envs.reset(seed=[3, 3])
    assert info["prompt"][0] == info["prompt"][1]
    _, info = envs.reset(options={"prompt": "Scene:"})
    assert list(info["prompt"]) == ["Scene:", "Scene:"]
    with pytest.raises(ValueError, match="list of 2 seeds, got 3"):
        envs.reset(seed=[1, 2, 3])


def test_disabled_autoreset_needs_reset_mask(tokenizer):
    envs = TextGenerationVectorEnv(2, autoreset_mode="disabled", **env_kwargs(tokenizer))
    envs.reset(seed=0)
    eos = tokenizer.eos_token_id
    _, _, terminated, _, _ = envs.step(np.array([eos, 5]))
    assert terminated.tolist() == [True, False]
    with pytest.raises(ResetNeeded, match=r"envs \[0\]"):
        envs.step(np.array([5, 5]))
    obs, info = envs.reset(options={"reset_mask": np.array([True, False])})
    assert info["_prompt"].tolist() == [True, False]
    assert obs["attention_mask"][1].sum() > obs["attention_mask"][0].sum()  # env 1 kept its tokens
    envs.step(np.array([5, 5]))


def test_step_before_reset(tokenizer):
    with pytest.raises(ResetNeeded, match="before step"):
        TextGenerationVectorEnv(2, **env_kwargs(tokenizer)).step(np.array([5, 5]))


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        (np.array([1, 2, 3]), ValueError, r"shape \(2,\), got shape \(3,\)"),
        (np.array([[1, 2]]), ValueError, r"shape \(2,\), got shape \(1, 2\)"),
        (np.array([1.0, 2.0]), TypeError, "integer token ids, got dtype float64"),
        (np.array([-1, 2]), ValueError, r"token ids in \[0, \d+\)"),
        (np.array([5, 10**6]), ValueError, r"token ids in \[0, \d+\)"),
    ],
)
def test_bad_vector_actions(tokenizer, actions, error, match):
    envs = TextGenerationVectorEnv(2, **env_kwargs(tokenizer))
    envs.reset(seed=0)
    with pytest.raises(error, match=match):
        envs.step(actions)


def test_bad_vector_arguments(tokenizer):
    with pytest.raises(ValueError, match="num_envs must be a positive int, got 0"):
        TextGenerationVectorEnv(0, **env_kwargs(tokenizer))
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        TextGenerationVectorEnv(2, autoreset_mode="sometimes", **env_kwargs(tokenizer))
    envs = TextGenerationVectorEnv(2, **env_kwargs(tokenizer))
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.array([1, 0])})


def test_render_ansi(tokenizer):
    envs = TextGenerationVectorEnv(2, render_mode="ansi", **env_kwargs(tokenizer))
    envs.reset(options={"prompt": "12 + 30 ="})
    for token in tokenizer(" 42")["input_ids"]:
        envs.step(np.array([token, token]))
    assert envs.render() == ("12 + 30 = 42", "12 + 30 = 42")
