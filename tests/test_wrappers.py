"""Per-token reward components: their definitions, and single- and vector-env adapters agreeing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from textgym.envs import TextGenerationEnv, TextGenerationVectorEnv
from textgym.models import load_causal_lm, load_tokenizer
from textgym.models.cache import positions
from textgym.scorers import VaderSentiment, rouge
from textgym.wrappers import (
    KeywordHit,
    LengthPenalty,
    MissingEOSPenalty,
    PotentialShaping,
    ReferenceLogProb,
    RepetitionPenalty,
    TargetLength,
    TokenRewardWrapper,
    VectorTokenRewardWrapper,
    token_rewards,
)
from tests.helpers import assert_tree_equal

PROMPTS = ["Film review: I watched this film.", "Passage: Tom went to the market. Summary:", "Words: dog, ball."]
REFERENCES = [["a great film"], ["Tom went to the market."], ["dog", "ball", "throw"]]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def reference_model():
    return load_causal_lm("tiny", device="cpu")


def env_kwargs(tokenizer, **extra) -> dict:
    return {"tokenizer": tokenizer, "prompts": PROMPTS, "references": REFERENCES, "max_prompt_tokens": 16,
            "max_new_tokens": 6, **extra}


def sampled_actions(tokenizer, rng: np.random.Generator, shape) -> np.ndarray:
    """Actions from a small pool of words (so n-grams repeat and keywords appear) plus EOS."""
    pool = [tokenizer(w)["input_ids"][0] for w in [" dog", " ball", " the", " great", " Tom", " market", " throws"]]
    actions = rng.choice(pool, size=shape)
    return np.where(rng.random(shape) < 0.1, tokenizer.eos_token_id, actions)


def run_episode(env, actions) -> tuple[list[float], list[dict], float]:
    rewards, infos = [], []
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return rewards, infos, info["score"]
    raise AssertionError("the episode did not end")


# --- potential shaping --------------------------------------------------------------------------

@pytest.mark.parametrize("scorer", [VaderSentiment(), rouge("rougeL")], ids=["vader", "rouge"])
def test_potential_shaping_telescopes_to_minus_phi_of_the_empty_completion(tokenizer, scorer):
    rng = np.random.default_rng(0)
    for seed in range(6):
        env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer, scorer=scorer)), PotentialShaping(scorer))
        _, info = env.reset(seed=seed)
        refs = [info["references"]]
        phi_empty = scorer([info["prompt"]], [""], refs)[0] if scorer.needs_references else scorer([info["prompt"]], [""])[0]
        rewards, infos, score = run_episode(env, sampled_actions(tokenizer, rng, 6))
        shaping = [i["reward_components"]["potential_shaping"] for i in infos]
        assert sum(shaping) == pytest.approx(-phi_empty)  # γ = 1: Σ shaping = Φ(end) − Φ(s_0) = −Φ(s_0)
        assert sum(rewards) == pytest.approx(score - phi_empty)  # the sparse score plus that constant


def test_potential_shaping_is_the_change_in_the_partial_score(tokenizer):
    scorer = VaderSentiment()
    env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), PotentialShaping(scorer, gamma=0.9))
    _, info = env.reset(seed=0, options={"prompt": "Film review:", "references": ["x"]})
    words = [" great", " fun", " awful", " film"]
    previous = scorer(["Film review:"], [""])[0]
    for step, word in enumerate(words, start=1):
        _, reward, terminated, truncated, info = env.step(tokenizer(word)["input_ids"][0])
        current = 0.0 if terminated or truncated else scorer(["Film review:"], ["".join(words[:step])])[0]
        assert reward == pytest.approx(0.9 * current - previous)
        previous = current


def test_potential_shaping_calls_the_scorer_once_per_token(tokenizer):
    calls = []

    def scorer(prompts, completions):
        calls.append(len(completions))
        return [0.0] * len(completions)

    envs = VectorTokenRewardWrapper(TextGenerationVectorEnv(4, **env_kwargs(tokenizer)), PotentialShaping(scorer))
    envs.reset(seed=0)
    assert calls == [4]  # Φ of the four empty completions, in one batch
    envs.step(np.full(4, tokenizer(" dog")["input_ids"][0]))
    assert calls == [4, 4]  # one batched call for the step, not one per env or two per token


# --- penalties and bonuses ----------------------------------------------------------------------

def step_words(env, tokenizer, words: list[str]) -> list[dict]:
    return [env.step(tokenizer(w)["input_ids"][0])[4]["reward_components"] for w in words]


def test_repetition_penalty_charges_the_repeating_token(tokenizer):
    env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), RepetitionPenalty(n=2, penalty=0.5))
    env.reset(seed=0)
    parts = step_words(env, tokenizer, [" the", " dog", " the", " dog", " the", " ball"])
    assert [p["repetition"] for p in parts] == [0.0, 0.0, 0.0, -0.5, -0.5, 0.0]


def test_repetition_ignores_the_prompt(tokenizer):
    env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), RepetitionPenalty(n=1, penalty=1.0))
    env.reset(options={"prompt": "the dog", "references": ["x"]})
    parts = step_words(env, tokenizer, [" dog", " dog"])
    assert [p["repetition"] for p in parts] == [0.0, -1.0]  # " dog" from the prompt does not count


def test_length_target_length_and_missing_eos(tokenizer):
    env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer, max_new_tokens=4)),
                             LengthPenalty(0.01), TargetLength(2, penalty=0.5), MissingEOSPenalty(2.0))
    env.reset(seed=0)
    parts = step_words(env, tokenizer, [" the", " dog", " the", " dog"])  # truncated at 4, no EOS
    assert [p["length"] for p in parts] == [-0.01] * 4
    assert [p["target_length"] for p in parts] == [0.0, 0.0, -0.5, -0.5]
    assert [p["missing_eos"] for p in parts] == [0.0, 0.0, 0.0, -2.0]
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(tokenizer.eos_token_id)  # EOS after 1 token: 1 short of 2
    assert terminated and info["reward_components"]["target_length"] == -0.5
    assert info["reward_components"]["missing_eos"] == 0.0


def test_keyword_hit_pays_each_word_once_with_inflections(tokenizer):
    env = TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), KeywordHit(bonus=1.0))
    env.reset(options={"prompt": "Words: dog, ball, throw.", "references": ["dog", "ball", "throw"]})
    parts = step_words(env, tokenizer, [" dog", " throws", " dog", " ball"])
    assert [p["keyword_hit"] for p in parts] == [1.0, 1.0, 0.0, 1.0]
    fixed = TokenRewardWrapper(TextGenerationEnv(tokenizer=tokenizer, prompts=["Go:"]), KeywordHit(["market"], 0.5))
    fixed.reset(seed=0)
    assert [p["keyword_hit"] for p in step_words(fixed, tokenizer, [" the", " market"])] == [0.0, 0.5]


# --- the reference log-prob and its KV cache ----------------------------------------------------

@torch.no_grad()
def full_forward_logprobs(model, obs) -> torch.Tensor:
    ids, mask = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    if ids.dim() == 1:
        ids, mask = ids[None], mask[None]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def vector_part(info: dict, name: str, i: int) -> float | None:
    """Env ``i``'s part ``name`` of this step: at the top level, or in ``final_info`` after a
    same-step autoreset; None when env ``i`` took no action."""
    for where in (info, info.get("final_info", {})):
        if where.get("_reward_components", np.zeros(i + 1, bool))[i]:
            return where["reward_components"][name][i]
    return None


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_reference_logprob_with_kv_cache_equals_a_full_forward(tokenizer, reference_model, mode):
    n, beta = 3, 0.5
    envs = VectorTokenRewardWrapper(TextGenerationVectorEnv(n, autoreset_mode=mode, **env_kwargs(tokenizer)),
                                    ReferenceLogProb(reference_model, beta=beta))
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(1)
    restarting = np.zeros(n, bool)
    ended = 0
    for _ in range(30):
        expected = beta * full_forward_logprobs(reference_model, obs)  # π_ref(· | s_t), from scratch
        actions = sampled_actions(tokenizer, rng, n)
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for i in range(n):
            got = vector_part(info, "reference_logprob", i)
            if restarting[i]:
                assert got is None  # the env only reset on this step: no action, no reward
            else:
                assert got == pytest.approx(expected[i, actions[i]].item(), abs=1e-5), i
        done = terminated | truncated
        ended += int(done.sum())
        restarting = done if mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
    assert ended >= 2 * n  # the cache survived several resets per env


def test_reference_logprob_refuses_rows_longer_than_its_positions(tokenizer, reference_model):
    env = TextGenerationEnv(tokenizer=tokenizer, prompts=["Film review:"], max_new_tokens=250)
    with pytest.raises(ValueError, match=r"rows hold up to 314 tokens .* has 256 positions"):
        TokenRewardWrapper(env, ReferenceLogProb(reference_model))


# --- single and vector adapters agree -----------------------------------------------------------

COMPONENT_SETS = {
    "shaping+penalties": lambda model: [PotentialShaping(rouge("rougeL")), RepetitionPenalty(2, 0.3),
                                        LengthPenalty(0.01), TargetLength(3, 0.1), MissingEOSPenalty(1.0),
                                        KeywordHit(bonus=0.5)],
    "reference": lambda model: [ReferenceLogProb(model, beta=0.1)],
}


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("components", sorted(COMPONENT_SETS))
def test_vector_adapter_equals_sync_vector_env_of_single_adapters(tokenizer, reference_model, mode, components):
    n, make = 3, COMPONENT_SETS[components]
    kwargs = env_kwargs(tokenizer, scorer=rouge("rougeL"))
    vector = VectorTokenRewardWrapper(TextGenerationVectorEnv(n, autoreset_mode=mode, **kwargs), *make(reference_model))
    singles = SyncVectorEnv([lambda: TokenRewardWrapper(TextGenerationEnv(**kwargs), *make(reference_model))
                             for _ in range(n)], autoreset_mode=mode)
    atol = 1e-5 if components == "reference" else 0.0  # batched vs one-row forwards differ in the last bits
    assert_tree_equal(vector.reset(seed=3), singles.reset(seed=3), "reset")
    rng = np.random.default_rng(2)
    for t in range(25):
        actions = sampled_actions(tokenizer, rng, n)
        assert_tree_equal(vector.step(actions), singles.step(actions), f"step {t}", atol)


# --- composition, gymnasium's reward wrappers, and bad input --------------------------------------

def test_parts_sum_to_the_reward_and_gymnasium_reward_wrappers_apply(tokenizer):
    env = token_rewards(TextGenerationEnv(**env_kwargs(tokenizer, scorer=VaderSentiment())),
                        PotentialShaping(VaderSentiment()), LengthPenalty(0.05))
    env.reset(seed=0)
    rewards, infos, _ = run_episode(env, sampled_actions(tokenizer, np.random.default_rng(3), 6))
    for reward, info in zip(rewards, infos):
        assert reward == pytest.approx(sum(info["reward_components"].values()))
    clipped = gym.wrappers.ClipReward(env, -0.01, 0.01)
    clipped.reset(seed=0)
    assert abs(clipped.step(tokenizer(" great")["input_ids"][0])[1]) <= 0.01
    vector = token_rewards(TextGenerationVectorEnv(2, **env_kwargs(tokenizer)), LengthPenalty(0.05))
    assert isinstance(vector, VectorTokenRewardWrapper)
    normalized = gym.wrappers.vector.NormalizeReward(vector)
    normalized.reset(seed=0)
    assert normalized.step(np.array([5, 6]))[1].shape == (2,)


def test_bad_components_and_arguments(tokenizer):
    env = TextGenerationEnv(**env_kwargs(tokenizer))
    assert TokenRewardWrapper(env).components == ()  # no components: it only reports the "task" part
    with pytest.raises(TypeError, match="TokenReward instances"):
        TokenRewardWrapper(env, VaderSentiment())
    with pytest.raises(ValueError, match="names must differ"):
        TokenRewardWrapper(env, LengthPenalty(), LengthPenalty())
    shared = LengthPenalty()
    TokenRewardWrapper(env, shared)
    with pytest.raises(ValueError, match="already serves an env; create one per env"):
        TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), shared)
    with pytest.raises(ValueError, match="already has token rewards"):
        TokenRewardWrapper(TokenRewardWrapper(TextGenerationEnv(**env_kwargs(tokenizer)), LengthPenalty()),
                           MissingEOSPenalty())
    for make, match in [(lambda: RepetitionPenalty(n=0), "n must be a positive int"),
                        (lambda: LengthPenalty(-1.0), "penalty must be a positive number"),
                        (lambda: TargetLength(0), "target must be a positive int"),
                        (lambda: PotentialShaping(VaderSentiment(), gamma=1.5), r"gamma must be in \[0, 1\]"),
                        (lambda: PotentialShaping("vader"), "needs a scorer")]:
        with pytest.raises((ValueError, TypeError), match=match):
            make()
    no_refs = TokenRewardWrapper(TextGenerationEnv(tokenizer=tokenizer, prompts=["Go:"]), KeywordHit())
    with pytest.raises(ValueError, match="references as its words; the env's prompts have no references"):
        no_refs.reset(seed=0)
