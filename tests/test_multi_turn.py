"""Multi-turn envs: turns, replies, the policy mask, per-turn rewards, the games, and bad input."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from transformers import AutoTokenizer

import textgym  # noqa: F401
from textgym.envs import MultiTurnTextEnv, MultiTurnTextVectorEnv, Scripted
from textgym.models import load_causal_lm, tiny_path

from tests.helpers import TurnSampler

GAMES = ["textgym/GuessNumber-v0", "textgym/Calculator-v0", "textgym/Customer-v0"]


def say(env, text):
    """Play one policy turn: ``text``'s tokens, then end-of-turn."""
    tokenizer = env.unwrapped.tokenizer
    for token in tokenizer(text)["input_ids"] + [env.unwrapped.end_of_turn_id]:
        result = env.step(token)
        if result[2] or result[3]:
            break
    return result


@pytest.mark.parametrize("env_id", GAMES)
def test_registered_conversations_pass_gymnasium_and_sb3_checks(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id))


def test_the_policy_mask_marks_exactly_the_policys_tokens_and_replies_are_appended():
    env = MultiTurnTextEnv(Scripted(["Count."], lambda messages: "More."), max_turns=3)
    obs, _ = env.reset(seed=0)
    assert obs["policy_mask"].sum() == 0 and obs["attention_mask"].sum() > 0
    written = 0
    for turn in (" one", " two"):
        obs, reward, terminated, truncated, info = say(env, turn)
        written += len(env.tokenizer(turn)["input_ids"]) + 1
        assert obs["policy_mask"].sum() == written
    ids, policy = obs["input_ids"], obs["policy_mask"] == 1
    assert env.tokenizer.decode(ids[policy]) == " one<|end|> two<|end|>"
    assert env.tokenizer.decode(ids[(obs["attention_mask"] == 1) & ~policy]).endswith("<|user|>More.<|end|><|assistant|>")
    assert [m["role"] for m in env.transcript()] == ["user", "assistant", "user", "assistant", "user"]


def test_a_turns_score_lands_on_the_token_that_ends_it():
    env = gym.make("textgym/Customer-v0")
    env.reset(seed=0)
    tokenizer, rewards = env.unwrapped.tokenizer, []
    for token in tokenizer("What is your order number, please?")["input_ids"] + [env.unwrapped.end_of_turn_id]:
        rewards.append(env.step(token)[1])
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and rewards[-1] == 0.5
    _, reward, terminated, _, info = say(env, "I will send you a new one today. I will refund your money today.")
    assert terminated and reward == 1.0 and info["turn_scores"] == [0.5, 1.0] and info["score"] == 1.5


def test_the_calculator_answers_calls_and_errors_and_scores_the_final_answer():
    env = gym.make("textgym/Calculator-v0", split="test")
    _, info = env.reset(seed=0)
    question = info["prompt"].split("What is ")[1].split("?")[0]
    a, word, b = question.split()
    answer = int(a) + int(b) if word == "plus" else int(a) - int(b)
    _, reward, terminated, _, info = say(env, "<calc>what</calc>")
    assert not terminated and reward == 0 and env.unwrapped.transcript()[-1]["content"].startswith("Error: cannot read")
    say(env, f"<calc>{a}{'+' if word == 'plus' else '-'}{b}</calc>")
    assert env.unwrapped.transcript()[-1] == {"role": "tool", "content": str(answer)}
    _, reward, terminated, _, info = say(env, f"The answer is {answer}.")
    assert terminated and reward == 1.0 and info["turn"] == 3


def test_conversations_end_at_max_turns_and_truncate_when_the_row_is_full():
    env = MultiTurnTextEnv(Scripted(["Hi."], lambda messages: "Go on."), max_turns=2)
    env.reset(seed=0)
    assert not say(env, " a")[2]
    _, _, terminated, truncated, info = say(env, " b")
    assert terminated and not truncated and info["turn"] == 2
    short = MultiTurnTextEnv(Scripted(["Hi."], lambda messages: "A long reply " * 4), max_new_tokens=12, max_turns=9)
    short.reset(seed=0)
    _, _, terminated, truncated, _ = say(short, " a")
    assert truncated and not terminated  # the reply does not fit


def test_vector_conversations_step_like_single_ones():
    envs = gym.make_vec("textgym/GuessNumber-v0", num_envs=2)
    single = gym.make("textgym/GuessNumber-v0")
    obs, _ = envs.reset(seed=[3, 4])
    expected, _ = single.reset(seed=4)
    np.testing.assert_array_equal(obs["input_ids"][1], expected["input_ids"])
    for token in single.unwrapped.tokenizer(" 7")["input_ids"]:
        obs, *_ = envs.step(np.array([token, token]))
        expected, *_ = single.step(token)
    np.testing.assert_array_equal(obs["policy_mask"][1], expected["policy_mask"])


@pytest.mark.parametrize("env_id, mode", [*((game, AutoresetMode.NEXT_STEP) for game in GAMES),
                                           (GAMES[0], AutoresetMode.SAME_STEP)])
def test_the_native_vector_env_equals_sync_vector_env_step_for_step(env_id, mode):
    """Random turns of digits, words and ends of turn, across autoresets: the same observations,
    rewards, ends and infos as gymnasium's SyncVectorEnv over the single envs."""
    native = gym.make_vec(env_id, num_envs=3, autoreset_mode=mode)
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
    assert type(native.unwrapped).__name__ == "MultiTurnTextVectorEnv"
    tokenizer = native.unwrapped.envs[0].tokenizer
    choices = [*tokenizer(" 5 3+4 <calc>2*3</calc> sorry")["input_ids"], native.unwrapped.envs[0].end_of_turn_id] * 2
    rng = np.random.default_rng(0)
    outputs = [envs.reset(seed=[1, 2, 3]) for envs in (native, sync)]
    ends = 0
    for _ in range(80):
        actions = rng.choice(choices, 3)
        outputs = [envs.step(actions) for envs in (native, sync)]
        (obs, *rest, info), (expected_obs, *expected_rest, expected_info) = outputs
        for key in obs:
            np.testing.assert_array_equal(obs[key], expected_obs[key])
        for got, want in zip(rest, expected_rest):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(info["turn"], expected_info["turn"])
        ends += int((rest[1] | rest[2]).sum())
    assert ends >= 3  # the episodes ended and reset along the way


def test_a_language_model_user_answers_the_turns_that_end_together_in_one_batch():
    from textgym.envs import LanguageModelUser

    user = LanguageModelUser(["My parcel never arrived.", "My laptop is broken."], max_reply_tokens=6)
    calls = []
    rows_for = user._rows_for
    user._rows_for = lambda conversations, reads: calls.append(len(conversations)) or rows_for(conversations, reads)

    def play(seed):
        envs = MultiTurnTextVectorEnv(4, user, max_turns=3)
        envs.reset(seed=seed)
        end = envs.envs[0].end_of_turn_id
        for tokens in ([end] * 4, [7, 7, end, end], [end, end, 7, 7]):
            envs.step(np.array(tokens))
        return [env.transcript() for env in envs.envs]

    transcripts = play(5)
    assert calls == [4, 2, 2]  # every turn that ended at a step, in one batch
    assert all([m["role"] for m in t] == ["user", "assistant", "user", "assistant", "user"] for t in transcripts[2:])
    assert all(m["content"] for t in transcripts for m in t if m["role"] == "user")
    assert play(5) == transcripts  # the seeds fix the openings and the users' words
    # The trainer's rollout batches them too: the turns that end at the end of a sampled round in one call
    # (a turn that ends mid-round, at an EOS, is answered on its own).
    from textgym.models.sampling import HFSampler, first_conversations

    calls.clear()
    envs = MultiTurnTextVectorEnv(4, user, max_turns=2)
    played = first_conversations(HFSampler(user.sampler.model), envs.envs, seed=0)
    assert sum(calls) == sum(info["turn"] for info in played) and max(calls) > 1


def test_a_language_model_user_keeps_its_cache_between_rounds_and_replies_as_without_it():
    """In the trainer's rollout each round answers the conversations still running: the user's model
    runs only the new turns' tokens, and writes what it writes when it reads every token again."""
    from textgym.envs import LanguageModelUser
    from textgym.models.sampling import HFSampler, first_conversations

    def play(user):
        read = []
        hook = user.sampler.model.register_forward_pre_hook(lambda m, a, kw: read.append(kw["input_ids"].numel()),
                                                            with_kwargs=True)
        envs = MultiTurnTextVectorEnv(4, user, max_turns=4, max_turn_tokens=6)
        played = first_conversations(HFSampler(load_causal_lm("tiny", device="cpu")), envs.envs, seed=0)
        hook.remove()
        return [info["transcript"] for info in played], sum(read)

    openings = ["My parcel never arrived.", "My laptop is broken.", "I want a refund."]
    cached, read_cached = play(LanguageModelUser(openings, max_reply_tokens=8))
    fresh_user = LanguageModelUser(openings, max_reply_tokens=8)
    rows_for = fresh_user._rows_for

    def fresh_rows(conversations, reads):
        fresh_user._session = None  # forget the cache: every token runs again
        return rows_for(conversations, reads)

    fresh_user._rows_for = fresh_rows
    fresh, read_fresh = play(fresh_user)
    assert cached == fresh and max(len(t) for t in cached) >= 7  # several replies each
    assert read_cached < 0.6 * read_fresh


def test_bad_conversations_are_clear_errors():
    with pytest.raises(ValueError, match="unknown role 'narrator'"):
        MultiTurnTextEnv(Scripted([[{"role": "narrator", "content": "x"}]], lambda m: "y"))
    with pytest.raises(ValueError, match="has no text content"):
        MultiTurnTextEnv(Scripted([[{"role": "user"}]], lambda m: "y"))
    env = MultiTurnTextEnv(Scripted(["Hi."], lambda m: 42))
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must reply with text.*got 42"):
        say(env, " a")

    def broken(messages):
        raise KeyError("no")

    env = MultiTurnTextEnv(Scripted(["Hi."], broken))
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="raised KeyError\\('no'\\) answering turn 1"):
        say(env, " a")
    plain = AutoTokenizer.from_pretrained(tiny_path())
    plain.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        MultiTurnTextEnv(Scripted(["Hi."], lambda m: "y"), tokenizer=plain)

    class Batched(Scripted):  # answers a batch of turns with one reply
        def reply_all(self, conversations, saids):
            return ["Again."]

    envs = MultiTurnTextVectorEnv(2, Batched(["Hi."], lambda m: "y"))
    envs.reset(seed=0)
    end = envs.envs[0].end_of_turn_id
    with pytest.raises(TypeError, match="must answer a batch of 2 turns with a list of as many replies, got"):
        envs.step(np.array([end, end]))
    with pytest.raises(ValueError, match="num_envs must be a positive int, got 0"):
        MultiTurnTextVectorEnv(0, Batched(["Hi."], lambda m: "y"))


def test_the_gold_players_win_every_game_and_empty_turns_win_nothing():
    from textgym.tasks.conversations import GOLD, play

    for game, gold in GOLD.items():
        env = gym.make(f"textgym/{game}-v0", split="test")
        golds = [play(env, seed, gold)["score"] for seed in range(20)]
        floors = [play(env, seed, lambda messages: "")["score"] for seed in range(20)]
        if game == "GuessNumber":  # binary search finds 1..20 in at most 5 guesses
            assert min(golds) >= 1 + 4 * -0.1 - 1e-9 and max(floors) < 0
        else:
            assert golds == [1.0 if game == "Calculator" else 1.5] * 20 and floors == [0.0] * 20


@pytest.mark.parametrize("game", ["GuessNumber", "Customer"])
def test_first_conversations_plays_turn_by_turn_like_a_scripted_player(game):
    """A batched sampler plays each conversation a turn per round: the episodes equal ``play``'s."""
    from textgym.models.sampling import first_conversations
    from textgym.tasks.conversations import play

    envs = [gym.make(f"textgym/{game}-v0", split="test") for _ in range(3)]
    text = "10" if game == "GuessNumber" else "What is your order number?"
    episodes = first_conversations(TurnSampler(text, envs[0]), envs, seed=5)
    for i, episode in enumerate(episodes):
        expected = play(gym.make(f"textgym/{game}-v0", split="test"), 5 + i, lambda messages: text)
        assert episode["transcript"] == expected["transcript"] and episode["turn_scores"] == expected["turn_scores"]
    assert len(episodes[0]["transcript"]) > 3  # several turns were played


def test_rounds_that_end_early_play_every_conversation_as_full_rounds_do(monkeypatch):
    """Greedy, each token is a function of the conversation so far. Ending a round once a quarter of
    the turns have ended (the others go on in the next round, beside new turns) plays every game as
    rounds that wait for the longest turn do, in more rounds."""
    import torch

    from textgym.models import sampling

    lm = load_causal_lm("tiny", device="cpu")
    sample = sampling.CachedRows.sample

    def play(share: float) -> tuple[list, int]:
        rounds = []
        monkeypatch.setattr(sampling, "ROUND_SHARE", share)
        monkeypatch.setattr(sampling.CachedRows, "sample", lambda *a, **k: rounds.append(1) or sample(*a, **k))
        envs = [gym.make("textgym/Calculator-v0", split="test") for _ in range(8)]
        played = sampling.play_conversations(sampling.HFSampler(lm), envs, list(range(8)), sampling.Sampling(top_k=1),
                                             torch.Generator().manual_seed(0))
        return [c.info["transcript"] for c in played], len(rounds)

    (waiting, full_rounds), (early, rounds) = play(1.0), play(0.25)
    assert rounds > full_rounds and early == waiting


def test_a_language_model_user_replies_reproducibly_and_its_judge_scores_the_turn():
    from textgym.envs import LanguageModelUser

    judged = []

    def judge(messages):
        judged.append(messages[-1]["content"])
        return (1.0, True) if "refund" in messages[-1]["content"] else (0.25, False)

    user = LanguageModelUser(["My parcel never arrived.", "My laptop is broken."], judge=judge, max_reply_tokens=12)
    env = MultiTurnTextEnv(user, max_turns=3)
    end = env.tokenizer.convert_tokens_to_ids("<|end|>")

    def play(seed):
        env.reset(seed=seed)
        rewards = []
        for text in [" Sorry.", " I will refund you."]:
            for token in env.tokenizer(text)["input_ids"] + [end]:
                _, reward, terminated, truncated, info = env.step(token)
                rewards.append(reward)
        return env.transcript(), rewards, terminated

    transcript, rewards, terminated = play(3)
    assert [m["role"] for m in transcript] == ["user", "assistant", "user", "assistant"]
    assert transcript[2]["content"] and len(env.tokenizer(transcript[2]["content"])["input_ids"]) <= 12
    assert judged[-2:] == [" Sorry.", " I will refund you."] and terminated
    assert [r for r in rewards if r] == [0.25, 1.0]  # each turn's score on the token that ended it
    assert play(3)[0] == transcript  # the env's seed fixes the opening and the user's words
    check_env(MultiTurnTextEnv(user, max_turns=2), skip_render_check=True)
