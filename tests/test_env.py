"""TextGenerationEnv: the Gymnasium API, the MDP's semantics, and bad input."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textgym
from textgym.envs import MultiTurnTextEnv, TextGenerationEnv, TextGenerationVectorEnv
from textgym.models import load_tokenizer
from tests.helpers import assert_tree_equal, length_scorer

TEXTGYM_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("textgym/"))
END_KEYS = {"prompt", "completion", "completion_ids", "score"}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


def make_env(tokenizer, **kwargs) -> TextGenerationEnv:
    kwargs = {"prompts": ["Film review: I watched this movie last night.", "12 + 30 ="], **kwargs}
    return TextGenerationEnv(tokenizer=tokenizer, **kwargs)


# --- registration and the API checkers ---------------------------------------------------------

def test_import_registers_the_text_generation_env():
    assert "textgym/TextGeneration-v0" in TEXTGYM_IDS
    assert textgym.__version__


@pytest.mark.parametrize("env_id", TEXTGYM_IDS)
def test_registered_envs_pass_gymnasium_check_env(env_id):
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", TEXTGYM_IDS)
def test_registered_envs_pass_sb3_check_env(env_id):
    sb3_check_env(gym.make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", TEXTGYM_IDS)
def test_registered_envs_follow_the_design_contract(env_id):
    env = gym.make(env_id)
    tokenizer = env.unwrapped.tokenizer
    vocab = len(tokenizer)
    limits = getattr(env.unwrapped, "mdp", env.unwrapped)  # a conversation holds its limits itself
    length = limits.max_prompt_tokens + limits.max_new_tokens
    assert env.action_space == gym.spaces.Discrete(vocab)
    expected = {
        "input_ids": gym.spaces.Box(0, vocab - 1, (length,), np.int64),
        "attention_mask": gym.spaces.Box(0, 1, (length,), np.int64),
    }
    if isinstance(env.unwrapped, MultiTurnTextEnv):  # it also marks the policy's own tokens
        expected["policy_mask"] = gym.spaces.Box(0, 1, (length,), np.int64)
    assert env.observation_space == gym.spaces.Dict(expected)
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].dtype == np.int64 and obs["attention_mask"].dtype == np.int64
    assert env.unwrapped.action_masks().shape == (vocab,)


# --- reset --------------------------------------------------------------------------------------

def test_reset_is_left_padded_and_seeded(tokenizer):
    env = make_env(tokenizer, prompts=[f"{a} + {a} =" for a in range(40)])
    first = [env.reset(seed=s)[1]["prompt"] for s in range(10)]
    second = [env.reset(seed=s)[1]["prompt"] for s in range(10)]
    assert first == second and len(set(first)) > 1  # seeded draws, and not one fixed prompt
    obs, info = env.reset(seed=3)
    ids = tokenizer(info["prompt"])["input_ids"]
    n = len(ids)
    np.testing.assert_array_equal(obs["input_ids"][-n:], ids)
    assert (obs["input_ids"][:-n] == tokenizer.pad_token_id).all()
    assert obs["attention_mask"].tolist() == [0] * (env.mdp.length - n) + [1] * n


def test_reset_option_fixes_the_prompt(tokenizer):
    env = make_env(tokenizer)
    for seed in range(3):
        _, info = env.reset(seed=seed, options={"prompt": "Scene: The boy"})
        assert info == {"prompt": "Scene: The boy", "prompt_truncated": False}


def test_long_prompt_keeps_its_last_tokens(tokenizer):
    env = make_env(tokenizer, max_prompt_tokens=4, max_new_tokens=2)
    prompt = "Restaurant review: We had dinner at this cafe."
    obs, info = env.reset(options={"prompt": prompt})
    assert info["prompt_truncated"] is True
    assert len(tokenizer(prompt)["input_ids"]) > 4
    np.testing.assert_array_equal(obs["input_ids"][-4:], tokenizer(prompt)["input_ids"][-4:])
    assert obs["attention_mask"].tolist() == [0, 0, 1, 1, 1, 1]


# --- step ---------------------------------------------------------------------------------------

def test_eos_terminates_and_scores_the_decoded_completion(tokenizer):
    calls = []

    def scorer(prompts, completions):
        calls.append((list(prompts), list(completions)))
        return [7.5]

    env = make_env(tokenizer, scorer=scorer)
    env.reset(seed=0, options={"prompt": "12 + 30 ="})
    answer = tokenizer(" 42")["input_ids"]
    for token in answer:
        obs, reward, terminated, truncated, info = env.step(token)
        assert (reward, terminated, truncated, info) == (0.0, False, False, {})
        assert obs["input_ids"][-1] == token
    obs, reward, terminated, truncated, info = env.step(tokenizer.eos_token_id)
    assert (reward, terminated, truncated) == (7.5, True, False)
    assert info == {"prompt": "12 + 30 =", "completion": " 42", "completion_ids": [*answer, tokenizer.eos_token_id],
                    "score": 7.5}
    assert calls == [(["12 + 30 ="], [" 42"])]  # scored once, at the end


def test_truncation_at_max_new_tokens(tokenizer):
    env = make_env(tokenizer, max_new_tokens=3, scorer=length_scorer)
    env.reset(seed=0)
    token = tokenizer(" good")["input_ids"][0]
    results = [env.step(token) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert results[-1][1] == pytest.approx(len(" good good good") / 10)


def test_stop_on_eos_false_keeps_going_after_eos(tokenizer):
    env = make_env(tokenizer, max_new_tokens=3, stop_on_eos=False)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(tokenizer.eos_token_id)
    assert not terminated and not truncated


def test_action_masks_forbid_pad_and_disallowed_tokens(tokenizer):
    env = make_env(tokenizer, disallowed_token_ids=(5, 6))
    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (len(tokenizer),)
    assert not mask[tokenizer.pad_token_id] and not mask[5] and not mask[6]
    assert mask[tokenizer.eos_token_id] and mask.sum() == len(tokenizer) - 3


def test_stepping_a_masked_action_is_an_error_unless_allowed(tokenizer):
    env = make_env(tokenizer, disallowed_token_ids=(5, 6))
    env.reset(seed=0)
    for token in (tokenizer.pad_token_id, 5):
        with pytest.raises(ValueError, match=rf"action {token} .* is masked by action_masks\(\).*allow_masked_actions"):
            env.step(token)
    envs = TextGenerationVectorEnv(num_envs=3, tokenizer=tokenizer, prompts=["12 + 30 ="], disallowed_token_ids=(5, 6))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 6 .* is masked"):
        envs.step(np.array([7, 6, 8]))
    permissive = make_env(tokenizer, disallowed_token_ids=(5, 6), allow_masked_actions=True)
    permissive.reset(seed=0)
    assert permissive.step(5)[0]["input_ids"][-1] == 5
    with pytest.raises(TypeError, match="allow_masked_actions must be True or False, got 'yes'"):
        make_env(tokenizer, allow_masked_actions="yes")


def test_action_space_samples_only_valid_actions(tokenizer):
    mask = np.zeros(len(tokenizer), bool)
    mask[[0, 7, 9]] = True
    disallowed = tuple(np.flatnonzero(~mask))
    env = make_env(tokenizer, disallowed_token_ids=disallowed)
    env.action_space.seed(0)
    assert {int(env.action_space.sample()) for _ in range(100)} == {0, 7, 9}
    assert env.action_space == gym.spaces.Discrete(len(tokenizer))  # still Discrete(V) to every library
    envs = TextGenerationVectorEnv(num_envs=4, tokenizer=tokenizer, prompts=["12 + 30 ="], disallowed_token_ids=disallowed)
    envs.action_space.seed(0)
    assert set(np.concatenate([envs.action_space.sample() for _ in range(30)]).tolist()) == {0, 7, 9}


def test_pad_equal_to_eos(tokenizer):
    tok = load_tokenizer("tiny")
    tok.pad_token = tok.eos_token
    env = make_env(tok, max_new_tokens=4)
    assert env.action_masks()[tok.eos_token_id]  # masking pad must not forbid ending
    obs, info = env.reset(options={"prompt": "12 + 30 ="})
    n = len(tok(info["prompt"])["input_ids"])
    assert (obs["input_ids"][:-n] == tok.eos_token_id).all() and obs["attention_mask"][:-n].sum() == 0
    obs, _, terminated, _, info = env.step(tok.eos_token_id)
    assert terminated and info["completion"] == ""
    assert obs["attention_mask"].sum() == n + 1 and obs["input_ids"][-1] == tok.eos_token_id


def test_tokenizer_without_pad_uses_eos_as_pad():
    tok = load_tokenizer("tiny")
    tok.pad_token = None
    assert tok.pad_token_id is None
    env = make_env(tok)
    assert env.mdp.pad_id == tok.eos_token_id and env.action_masks()[tok.eos_token_id]
    obs, _ = env.reset(options={"prompt": "12 + 30 ="})
    n = int(obs["attention_mask"].sum())
    assert (obs["input_ids"][:-n] == tok.eos_token_id).all()


def test_render_human_prints_each_finished_episode(tokenizer, capsys):
    env = make_env(tokenizer, render_mode="human", max_new_tokens=2)
    env.reset(options={"prompt": "12 + 30 ="})
    for token in tokenizer(" 42")["input_ids"][:2]:
        env.step(token)
    assert capsys.readouterr().out == "12 + 30 = 4\n"


def test_render_ansi_shows_prompt_and_completion(tokenizer):
    env = make_env(tokenizer, render_mode="ansi")
    env.reset(options={"prompt": "12 + 30 ="})
    for token in tokenizer(" 42")["input_ids"]:
        env.step(token)
    assert env.render() == "12 + 30 = 42"


# --- property-based: any action sequence --------------------------------------------------------

NON_EOS = st.integers(min_value=2, max_value=2000)  # ids 0 and 1 are the tiny EOS and pad


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    actions=st.lists(NON_EOS, min_size=0, max_size=8),
    end=st.sampled_from(["eos", "never"]),
)
def test_any_action_sequence_keeps_the_invariants(tokenizer, seed, actions, end):
    env = make_env(tokenizer, max_new_tokens=6, scorer=length_scorer)
    vocab = len(tokenizer)
    actions = [a % vocab for a in actions] + ([tokenizer.eos_token_id] if end == "eos" else [])

    def run():
        obs, info = env.reset(seed=seed)
        n_prompt = int(obs["attention_mask"].sum())
        trace = [obs]
        for steps, action in enumerate(actions, start=1):
            obs, reward, terminated, truncated, info = env.step(action)
            trace.append((obs, reward, terminated, truncated, info))
            assert env.observation_space.contains(obs)
            assert obs["attention_mask"].sum() == n_prompt + steps  # the mask counts the real tokens
            assert (obs["input_ids"][obs["attention_mask"] == 0] == tokenizer.pad_token_id).all()
            assert obs["input_ids"][-1] == action
            if terminated or truncated:
                assert END_KEYS <= set(info) and info["completion_ids"] == list(actions[:steps])
                assert terminated == (action == tokenizer.eos_token_id)
                assert truncated == (not terminated and steps == 6)
                break
            assert info == {} and reward == 0.0
        return trace

    assert_tree_equal(run(), run())  # deterministic given the seed


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (-1, ValueError, r"\[0, \d+\)"),
        (10**6, ValueError, r"\[0, \d+\)"),
        (3.0, TypeError, "integer token id"),
        ("7", TypeError, "integer token id"),
        (True, TypeError, "integer token id"),
        (np.array([1, 2]), ValueError, "scalar token id.*shape \\(2,\\)"),
        (np.array(2.5), TypeError, "integer token id"),
    ],
)
def test_bad_actions_are_rejected(tokenizer, action, error, match):
    env = make_env(tokenizer)
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_numpy_integer_actions_are_accepted(tokenizer):
    env = make_env(tokenizer)
    env.reset(seed=0)
    for action in (np.int64(5), np.int32(6), np.array(7), np.uint16(8)):
        assert env.step(action)[0]["input_ids"][-1] == int(action)


def test_step_before_reset_and_after_the_end(tokenizer):
    env = make_env(tokenizer, max_new_tokens=1)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(5)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        env.step(5)
    env.reset(seed=0)
    env.step(5)  # a reset makes it steppable again


def test_unknown_tokenizer_lists_what_is_accepted():
    with pytest.raises(ValueError, match="tiny.*local directory.*hub id"):
        TextGenerationEnv(tokenizer="./no/such/tokenizer", prompts=["hi"])
    with pytest.raises(ValueError, match="tiny.*local directory.*hub id.*HF_HUB_OFFLINE"):
        TextGenerationEnv(tokenizer="textgym-test/no-such-model", prompts=["hi"])


@pytest.mark.parametrize("prompts", [[], "empty.txt"])
def test_empty_prompt_set(tokenizer, tmp_path, prompts):
    if prompts == "empty.txt":
        prompts = tmp_path / "empty.txt"
        prompts.write_text("\n\n")
    with pytest.raises(ValueError, match="empty; expected at least one prompt"):
        make_env(tokenizer, prompts=prompts)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), (None, TypeError)])
def test_max_new_tokens_must_be_a_positive_int(tokenizer, value, error):
    with pytest.raises(error, match="max_new_tokens"):
        make_env(tokenizer, max_new_tokens=value)


def test_unknown_arguments_list_the_valid_ones():
    with pytest.raises(TypeError, match=r"TextGenerationEnv got an unexpected keyword argument 'max_new_token'; valid.*'max_new_tokens'"):
        gym.make("textgym/TextGeneration-v0", max_new_token=5)
    with pytest.raises(TypeError, match=r"TextGenerationVectorEnv got an unexpected keyword argument 'promts'"):
        gym.make_vec("textgym/TextGeneration-v0", num_envs=2, promts=["hi"])


def test_default_prompts_are_the_shipped_set():
    assert TextGenerationEnv().mdp.prompts == gym.make("textgym/TextGeneration-v0").unwrapped.mdp.prompts


def test_other_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="max_prompt_tokens must be >= 1, got 0"):
        make_env(tokenizer, max_prompt_tokens=0)
    with pytest.raises(ValueError, match="render_mode"):
        make_env(tokenizer, render_mode="rgb_array")
    with pytest.raises(TypeError, match="scorer must be callable"):
        make_env(tokenizer, scorer="vader")
    with pytest.raises(ValueError, match="encodes to no tokens"):
        make_env(tokenizer, prompts=[""])
    with pytest.raises(ValueError, match="includes EOS"):
        make_env(tokenizer, disallowed_token_ids=(tokenizer.eos_token_id,))
    env = make_env(tokenizer)
    with pytest.raises(ValueError, match="unknown reset options \\['promt'\\]"):
        env.reset(options={"promt": "typo"})


@pytest.mark.parametrize(
    ("scorer", "match"),
    [
        (lambda p, c: [1.0, 2.0], "returned 2 scores for 1 completions"),
        (lambda p, c: [float("nan")], "returned a non-finite score"),
        (lambda p, c: ["high"], "must return a flat sequence of floats"),
    ],
)
def test_bad_scorer_output_names_the_scorer(tokenizer, scorer, match):
    env = make_env(tokenizer, scorer=scorer, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match=f"scorer <lambda> {match}"):
        env.step(5)


# --- references ---------------------------------------------------------------------------------

def test_references_reach_the_scorer_and_the_reset_info(tokenizer):
    from textgym.scorers import rouge

    env = make_env(tokenizer, references=["a good movie", ["forty two", "42"]], scorer=rouge("rouge1"),
                   max_new_tokens=2)
    _, info = env.reset(options={"prompt": "12 + 30 =", "references": ["42"]})
    assert info["references"] == ["42"]
    for token in tokenizer(" 42")["input_ids"][:2]:
        *_, info = env.step(token)
    assert info["completion"] == " 4" and info["score"] == 0.0  # "4" is not "42"
    prompts = {env.reset(seed=s)[1]["prompt"]: env.reset(seed=s)[1]["references"] for s in range(20)}
    assert prompts == {"Film review: I watched this movie last night.": "a good movie", "12 + 30 =": ["forty two", "42"]}


def test_bad_references(tokenizer):
    from textgym.scorers import rouge

    with pytest.raises(ValueError, match="got 1 references for 2 prompts"):
        make_env(tokenizer, references=["only one"])
    with pytest.raises(ValueError, match="scorer rougeL compares against references; pass references"):
        make_env(tokenizer, scorer=rouge())
    env = make_env(tokenizer, references=["a", "b"])
    with pytest.raises(ValueError, match="have references; pass options=\\{'prompt': ..., 'references': ...\\}"):
        env.reset(options={"prompt": "x"})
    with pytest.raises(ValueError, match="'references' without the 'prompt'"):
        env.reset(options={"references": ["a"]})


# --- prompt sources -----------------------------------------------------------------------------

PROMPTS = ["Film review: I watched this movie.", "7 + 8 ="]


def test_prompts_from_txt_jsonl_csv_and_datasets(tokenizer, tmp_path):
    import datasets

    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"prompt": p, "id": i}) for i, p in enumerate(PROMPTS)))
    (tmp_path / "p.csv").write_text('id,text\n0,"Film review: I watched this movie."\n1,7 + 8 =\n')
    sources = [tmp_path / "p.txt", str(tmp_path / "p.jsonl"), tmp_path / "p.csv",
               datasets.Dataset.from_dict({"prompt": PROMPTS})]
    for source in sources:
        assert make_env(tokenizer, prompts=source).mdp.prompts == PROMPTS, source


CHAT = [{"role": "system", "content": "You are a helpful shop assistant."},
        {"role": "user", "content": "Hello. My new lamp stopped working."}]


def test_conversation_prompts_are_rendered_with_the_chat_template(tokenizer, tmp_path):
    import datasets

    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|end|><|assistant|>")
    (tmp_path / "chat.jsonl").write_text(json.dumps({"prompt": CHAT}) + "\n" + json.dumps({"prompt": "7 + 8 ="}))
    sources = [[CHAT, "7 + 8 ="], tmp_path / "chat.jsonl", datasets.Dataset.from_dict({"messages": [CHAT]})]
    for source in sources:
        env = make_env(tokenizer, prompts=source)
        assert env.mdp.prompts[0] == rendered, source
    # The prompt's ids are the template's ids: role markers are single special tokens, not text.
    expected = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)["input_ids"]
    obs, info = env.reset(seed=0)
    assert obs["input_ids"][-len(expected):].tolist() == expected and info["prompt"] == rendered
    obs, info = env.reset(options={"prompt": CHAT[1:]})
    assert info["prompt"] == "<|user|>Hello. My new lamp stopped working.<|end|><|assistant|>"


@pytest.mark.parametrize("messages, match", [
    ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
    ([{"role": "user"}], "has no text content"),
    ([{"role": "user", "content": None}], "has no text content"),
    ([], "non-empty list of messages"),
    (["hi"], "must be a dict with 'role' and 'content'"),
])
def test_bad_conversations_name_the_message(tokenizer, messages, match):
    with pytest.raises(ValueError, match=match):
        make_env(tokenizer, prompts=[messages])


def test_conversations_need_a_chat_template(tokenizer):
    plain = load_tokenizer("tiny")
    plain.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        make_env(plain, prompts=[CHAT])


def test_prompt_files_from_excel_and_windows_read_cleanly(tokenizer, tmp_path):
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(PROMPTS).encode() + b"\r\n")
    (tmp_path / "p.csv").write_bytes(b'\xef\xbb\xbfprompt,id\r\n"Film review: I watched this movie.",0\r\n7 + 8 =,1\r\n')
    (tmp_path / "p.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps({"prompt": p}).encode() for p in PROMPTS))
    for name in ("p.txt", "p.csv", "p.jsonl"):
        assert make_env(tokenizer, prompts=tmp_path / name).mdp.prompts == PROMPTS, name


def test_bad_prompt_files_name_the_file_and_line(tokenizer, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "ok"}\n\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"p.jsonl:3: not valid JSON"):
        make_env(tokenizer, prompts=tmp_path / "p.jsonl")
    (tmp_path / "p.txt").write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"p.txt:2: not UTF-8"):
        make_env(tokenizer, prompts=tmp_path / "p.txt")
    with pytest.raises(TypeError, match="every prompt must be a str or a list of messages, got NoneType at 1"):
        make_env(tokenizer, prompts=["ok", None])


def test_bad_prompt_sources(tokenizer, tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"question": "hi"}))
    with pytest.raises(ValueError, match="columns \\['question'\\]; expected a column named one of"):
        make_env(tokenizer, prompts=tmp_path / "p.jsonl")
    (tmp_path / "p.parquet").write_text("")
    with pytest.raises(ValueError, match="suffix '.parquet'"):
        make_env(tokenizer, prompts=tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="does not exist"):
        make_env(tokenizer, prompts=tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="every prompt must be a str or a list of messages"):
        make_env(tokenizer, prompts=["ok", 3])
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        make_env(tokenizer, prompts=42)


def test_a_long_env_stays_small(tokenizer):
    """Nothing in an env grows with the square of its length: 8,192 new tokens fit in < 50 MB."""
    import tracemalloc

    tracemalloc.start()
    env = make_env(tokenizer, max_new_tokens=8192)
    obs, info = env.reset(seed=0)
    for token in (5, 6, 7):
        obs, *_ = env.step(token)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB"
    real = len(tokenizer(info["prompt"])["input_ids"]) + 3
    assert obs["attention_mask"].tolist() == [0] * (len(obs["attention_mask"]) - real) + [1] * real


def test_silent_coercions_are_errors(tokenizer):
    from textgym.scorers import KeywordCoverage

    with pytest.raises(TypeError, match="keywords must be a list of words"):
        KeywordCoverage(keywords="cat")
    with pytest.raises(TypeError, match="stop_on_eos must be True or False, got 'no'"):
        make_env(tokenizer, stop_on_eos="no")
    with pytest.raises(TypeError, match="disallowed_token_ids must be a list of token ids, got 5"):
        make_env(tokenizer, disallowed_token_ids=5)
    for bad in (["0.5"], [[0.5]]):
        env = make_env(tokenizer, scorer=lambda prompts, completions, bad=bad: bad, max_new_tokens=1)
        env.reset(seed=0)
        with pytest.raises(TypeError, match="must return a flat sequence of floats"):
            env.step(5)


def test_special_token_strings_in_a_prompt_are_text(tokenizer):
    env = make_env(tokenizer, prompts=["Say <|endoftext|> and <|pad|>"])
    obs, _ = env.reset(seed=0)
    real = obs["input_ids"][obs["attention_mask"] == 1]
    assert tokenizer.eos_token_id not in real and tokenizer.pad_token_id not in real
    assert tokenizer.decode(real) == "Say <|endoftext|> and <|pad|>"


@pytest.mark.parametrize("env_id", TEXTGYM_IDS)
def test_every_registered_env_pickles_mid_episode_and_continues_identically(env_id):
    import pickle

    import cloudpickle

    env = gym.make(env_id)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    actions = [int(a) for a in rng.choice(np.flatnonzero(env.unwrapped.action_masks()), size=6)]
    env.step(actions[0])
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        copy = loads(dumps(env))
        for action in actions[1:]:
            assert_tree_equal(copy.step(action), env.step(action), env_id)
        env.reset(seed=3)
        env.step(actions[0])
