"""``MultiTurnTextEnv``: a conversation as a token-level Gymnasium MDP.

The policy still acts one token at a time. Its turn ends at the end-of-turn token (or after
``max_turn_tokens``); the env then asks the other side of the conversation, an *interlocutor*,
for its reply, and appends the reply's tokens, rendered by the tokenizer's chat template, to the
state. The turn's score is the reward of the token that ended the turn, so each turn's reward stays
on its own token instead of being summed into one score at the end.

* observation: ``input_ids`` and ``attention_mask`` as in ``TextGenerationEnv``, plus
  ``policy_mask``, 1 on the tokens the policy wrote: trainers must not train on the env's tokens;
* ``terminated`` when the interlocutor ends the conversation, after ``max_turns`` turns, or at EOS;
  ``truncated`` when the row (``max_prompt_tokens + max_new_tokens``) cannot hold the next reply;
* ``info["turn"]`` at every step; at the episode's end ``info`` also holds the per-turn scores,
  their sum (``"score"``) and the transcript.

An interlocutor is one object per episode with ``opening`` (the conversation's first messages,
the prompt) and ``reply(said) -> Reply``. ``Scripted(openings, respond)`` makes a factory of them from any
callable of the transcript; textgym's games (``textgym.models.dialogues``) are others.

Example:
    >>> from textgym.envs import MultiTurnTextEnv, Scripted
    >>> env = MultiTurnTextEnv(interlocutor=Scripted(["Say hi."], lambda messages: "Again."), max_turns=2)
    >>> obs, info = env.reset(seed=0)
    >>> end = env.tokenizer.convert_tokens_to_ids("<|end|>")
    >>> turn = env.tokenizer(" hi")["input_ids"] + [end]
    >>> for token in turn:
    ...     obs, reward, terminated, truncated, info = env.step(token)
    >>> info["turn"], int(obs["policy_mask"].sum()) == len(turn), env.transcript()[-2:]
    (1, True, [{'role': 'assistant', 'content': ' hi'}, {'role': 'user', 'content': 'Again.'}])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from textgym.envs.core import check_render_mode
from textgym.envs.prompts import Message, chat_ids, check_messages
from textgym.envs.spaces import TokenSpace
from textgym.envs.vector import _autoreset_mode
from textgym.models import load_tokenizer
from textgym.models.cache import left_padded
from textgym.models.dialogues import END_OF_TURN, ROLES, Reply

if TYPE_CHECKING:  # textgym.models.sampling imports this module
    from textgym.models.sampling import CachedRows

ObsType = dict[str, np.ndarray]


class Interlocutor(Protocol):
    """The other side of one conversation."""

    opening: list[Message]

    def reply(self, said: str) -> Reply:
        """The answer to the policy's turn ``said``, that turn's score, and whether the conversation is over."""


class ScriptedConversation:
    """An interlocutor from any callable of the transcript: ``respond(messages) -> str | Reply``.
    ``generator``: the one its replies are drawn from, where they are random."""

    def __init__(self, opening: list[Message], respond: Callable[[list[Message]], str | Reply],
                 generator: torch.Generator | None = None):
        self.opening, self.respond, self.messages, self.generator = opening, respond, list(opening), generator

    def reply(self, said: str) -> Reply:
        self.hear(said)
        return self.record(self.respond(list(self.messages)))

    def hear(self, said: str) -> None:
        self.messages.append({"role": "assistant", "content": said})

    def record(self, answer: Any) -> Any:
        """``answer`` as a ``Reply`` (a str is a plain user reply), added to the transcript."""
        reply = Reply(answer, 0.0, False) if isinstance(answer, str) else answer
        if isinstance(reply, Reply):  # anything else is the env's error to report
            self.messages.append({"role": reply.role, "content": reply.text})
        return reply


class Scripted:
    """An interlocutor factory: each episode opens with one of ``openings`` (a user message, or
    messages), drawn with the env's generator, and ``respond(messages) -> str | Reply`` answers
    every turn."""

    def __init__(self, openings: Sequence[str | list[Message]], respond: Callable[[list[Message]], str | Reply]):
        self.conversations = [[{"role": "user", "content": o}] if isinstance(o, str) else check_messages(o)
                              for o in openings]
        if not self.conversations:
            raise ValueError("Scripted needs at least one opening")
        self.respond = respond

    def __call__(self, rng: np.random.Generator) -> ScriptedConversation:
        return ScriptedConversation(self.conversations[int(rng.integers(len(self.conversations)))], self.respond)


@dataclass
class _Read:
    """What a ``LanguageModelUser``'s model has read and written in one conversation: ``ids``, of
    which the first ``cached`` are in its KV cache, and the transcript's first ``messages`` in them."""

    ids: list[int] = field(default_factory=list)
    cached: int = 0
    messages: int = 0


class LanguageModelUser:
    """An interlocutor factory whose replies a frozen causal LM writes, as the user: it continues the
    transcript (rendered by the model's chat template) after a user marker, up to the end-of-turn
    token or ``max_reply_tokens``, sampling from a generator seeded by the env's. ``judge(messages)
    -> (score, done)`` scores each policy turn (default: 0, never done: the env's ``max_turns`` ends
    the episode).

    ``reply_all`` writes the replies of several conversations in one batch: a vector env
    (``MultiTurnTextVectorEnv``) and the trainer's rollout ask it for every turn that ends at one
    step. A batch draws from its first conversation's generator, so a vector env's replies follow
    from its seeds but differ from those of single envs with the same seeds.

    The model keeps its KV cache from one batch to the next (``HFSampler.session``) while a batch's
    conversations are among the previous batch's, as in the trainer's rollout, where every round
    answers the conversations still running: then only the new turn's tokens run. The model reads
    its own replies as it sampled them, not as the transcript's text would tokenize again.

    Example:
        >>> env = MultiTurnTextEnv(LanguageModelUser(["My parcel never arrived."]), max_turns=2)
        >>> obs, info = env.reset(seed=0)
        >>> end = env.tokenizer.convert_tokens_to_ids("<|end|>")
        >>> for token in env.tokenizer(" Sorry about that.")["input_ids"] + [end]:
        ...     obs, reward, terminated, truncated, info = env.step(token)
        >>> [m["role"] for m in env.transcript()]
        ['user', 'assistant', 'user']
    """

    def __init__(self, openings: Sequence[str | list[Message]], model: str = "tiny",
                 judge: Callable[[list[Message]], tuple[float, bool]] | None = None, max_reply_tokens: int = 24,
                 temperature: float = 1.0):
        from textgym.models import load_causal_lm
        from textgym.models.sampling import HFSampler, Sampling

        self.openings = Scripted(openings, lambda messages: "")  # checks and holds the openings
        self.tokenizer, self.sampler = load_tokenizer(model), HFSampler(load_causal_lm(model, device="cpu"))
        self.user = self.tokenizer.convert_tokens_to_ids("<|user|>")
        self.end = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if self.tokenizer.unk_token_id in (self.user, self.end) or None in (self.user, self.end):
            raise ValueError(f"model {model!r} has no <|user|> and {END_OF_TURN} tokens to write the user's turns with")
        self.judge = judge or (lambda messages: (0.0, False))
        self.max_reply_tokens = max_reply_tokens
        self.processors = Sampling(temperature).processors(len(self.tokenizer))
        self._reads: WeakKeyDictionary[ScriptedConversation, _Read] = WeakKeyDictionary()
        self._session: CachedRows | None = None  # the KV-cached rows of the last batch
        self._rows: list[ScriptedConversation] = []  # and their conversations

    def __call__(self, rng: np.random.Generator) -> ScriptedConversation:
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        conversation = ScriptedConversation(self.openings(rng).opening,
                                            lambda messages: self._replies([conversation])[0], generator)
        self._reads[conversation] = _Read()
        return conversation

    def reply_all(self, conversations: Sequence[ScriptedConversation], saids: Sequence[str]) -> list[Reply]:
        """The replies to the turns ``saids`` of ``conversations`` (this factory's), in one batch."""
        for conversation, said in zip(conversations, saids):
            conversation.hear(said)
        replies = self._replies(conversations)
        return [conversation.record(reply) for conversation, reply in zip(conversations, replies)]

    def _replies(self, conversations: Sequence[ScriptedConversation]) -> list[Reply]:
        judged = [self.judge(list(c.messages)) for c in conversations]
        reads = [self._read_up(c) for c in conversations]
        out = self._rows_for(conversations, reads).sample(self.max_reply_tokens, eos_id=self.end,
                                                           processors=self.processors,
                                                           generator=conversations[0].generator)
        texts = []
        for i, read in enumerate(reads):
            tokens = out.tokens[i, : int(out.lengths[i])].tolist()
            read.ids += tokens
            read.cached, read.messages = len(read.ids), read.messages + 1  # the reply joins the transcript
            if tokens[-1] != self.end:  # cut at max_reply_tokens: the transcript still ends the turn
                read.ids.append(self.end)
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return [Reply(text.strip(), float(score), bool(done)) for text, (score, done) in zip(texts, judged)]

    def _read_up(self, conversation: ScriptedConversation) -> _Read:
        """The conversation's tokens with its messages since the last reply, then the user marker."""
        read = self._reads[conversation]
        read.ids += [*chat_ids(self.tokenizer, conversation.messages[read.messages :], add_generation_prompt=False),
                     self.user]
        read.messages = len(conversation.messages)
        return read

    def _rows_for(self, conversations: Sequence[ScriptedConversation], reads: list[_Read]) -> CachedRows:
        """The KV-cached rows to sample the replies from: the last batch's, cut to these conversations
        and given their new tokens, if it had all of them; else new rows that run every token."""
        last = {id(c): row for row, c in enumerate(self._rows)}
        if self._session is not None and all(id(c) in last for c in conversations):
            index = [last[id(c)] for c in conversations]
            if index != list(range(len(self._rows))):
                self._session.keep(index)
            self._session.append([read.ids[read.cached :] for read in reads])
        else:
            self._session = self.sampler.session(*left_padded([read.ids for read in reads], pad_id=self.end))
        self._rows = list(conversations)
        return self._session


def _asked(ask: Callable[[], Any], interlocutor: Any, what: str) -> Any:
    try:
        return ask()
    except Exception as error:
        raise RuntimeError(f"interlocutor {interlocutor!r} raised {error!r} answering {what}") from error


def _checked(reply: Any, interlocutor: Any) -> Reply:
    if not isinstance(reply, Reply) or not isinstance(reply.text, str) or reply.role not in ROLES:
        raise TypeError(f"interlocutor {interlocutor!r} must reply with text (a Reply with a str text and a role in "
                        f"{list(ROLES)}), got {reply!r}")
    return reply


class MultiTurnTextEnv(gym.Env[ObsType, int]):
    """A conversation between the policy and an interlocutor, one policy token per step.

    Args:
        interlocutor: a factory ``rng -> Interlocutor``, called at every reset.
        tokenizer: ``"tiny"``, a path, an HF id or a tokenizer, with a chat template that renders
            each message on its own (as tiny's and ChatML's do).
        max_prompt_tokens: the opening's budget (its last tokens are kept).
        max_new_tokens: the rest of the conversation's budget: the policy's and the replies' tokens.
        max_turns: policy turns per episode.
        max_turn_tokens: a turn that reaches it ends, as if the policy had ended it.
        end_of_turn: the token that ends the policy's turn (default ``"<|end|>"``, else EOS).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, interlocutor: Callable[[np.random.Generator], Interlocutor], tokenizer: Any = "tiny",
                 max_prompt_tokens: int = 48, max_new_tokens: int = 96, max_turns: int = 4,
                 max_turn_tokens: int = 16, end_of_turn: str | None = None, render_mode: str | None = None):
        check_render_mode(render_mode, self.metadata["render_modes"])
        if not callable(interlocutor):
            raise TypeError(f"interlocutor must be a factory rng -> interlocutor (see Scripted), got {interlocutor!r}")
        for name, value in [("max_prompt_tokens", max_prompt_tokens), ("max_new_tokens", max_new_tokens),
                            ("max_turns", max_turns), ("max_turn_tokens", max_turn_tokens)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.tokenizer = tokenizer if not isinstance(tokenizer, (str, bytes)) and hasattr(tokenizer, "encode") \
            else load_tokenizer(tokenizer)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {self.tokenizer.name_or_path!r} has no chat template; a conversation needs one")
        self.interlocutor, self.render_mode = interlocutor, render_mode
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.max_turns, self.max_turn_tokens = max_turns, max_turn_tokens
        self.length = max_prompt_tokens + max_new_tokens
        self.vocab_size = len(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        names = [end_of_turn] if end_of_turn else [END_OF_TURN, self.tokenizer.eos_token]
        known = [n for n in names if n in self.tokenizer.get_vocab()]
        if not known:
            raise ValueError(f"end_of_turn {names[0]!r} is not a token of {self.tokenizer.name_or_path!r}")
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(known[0])
        box = spaces.Box(0, 1, (self.length,), np.int64)
        self.observation_space = spaces.Dict({"input_ids": spaces.Box(0, self.vocab_size - 1, (self.length,), np.int64),
                                              "attention_mask": box, "policy_mask": box})
        mask = np.ones(self.vocab_size, bool)
        if self.pad_id != self.eos_id:
            mask[self.pad_id] = False
        self.action_space = TokenSpace(mask)
        self._ids = np.full(self.length, self.pad_id, np.int64)
        self._real = np.zeros(self.length, np.int64)
        self._policy = np.zeros(self.length, np.int64)
        self._state = "unreset"

    # --- the conversation ------------------------------------------------------------------------

    def _append(self, ids: Sequence[int], by_policy: bool) -> None:
        k = len(ids)
        for row, value in [(self._ids, ids), (self._real, 1), (self._policy, int(by_policy))]:
            row[:-k] = row[k:].copy()
            row[-k:] = value

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; a conversation opens with its interlocutor's "
                             "opening")
        self._other = self.interlocutor(self.np_random)
        self._messages = check_messages(list(self._other.opening))
        opening = chat_ids(self.tokenizer, self._messages)[-self.max_prompt_tokens :]
        self._ids[:], self._real[:], self._policy[:] = self.pad_id, 0, 0
        self._append(opening, by_policy=False)
        self._turn, self._turn_ids, self._turn_scores, self._used = 0, [], [], 0
        self._prepared: tuple[str, Any] | None = None  # (turn, reply) asked for ahead of the step (answer_turns)
        self._state = "running"
        return self._observation(), {"turn": 0, "prompt": self.tokenizer.decode(opening)}

    def step(self, action: int) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        if self._state != "running":
            raise ResetNeeded("step() called before reset()" if self._state == "unreset"
                              else "step() called after the episode ended; call reset() first")
        token = int(action)
        if not (0 <= token < self.vocab_size and self.action_space.valid[token]):
            raise ValueError(f"action must be a valid token id in [0, {self.vocab_size}) (not pad), got {action!r}")
        said = self.turn_ending(token)
        self._append([token], by_policy=True)
        self._used += 1
        self._turn_ids.append(token)
        at_eos = token == self.eos_id and token != self.end_of_turn_id
        if said is None:
            if self._used >= self.max_new_tokens:
                return self._end(0.0, terminated=False)
            return self._observation(), 0.0, False, False, {"turn": self._turn}
        self._messages.append({"role": "assistant", "content": said})
        asked, self._prepared = self._prepared, None
        if asked is not None and asked[0] != said:
            raise RuntimeError(f"a reply was prepared for the turn {asked[0]!r}, but the turn said {said!r}")
        if asked is None:
            asked = said, _asked(lambda: self._other.reply(said), self._other, f"turn {self._turn + 1} ({said!r})")
        reply = _checked(asked[1], self._other)
        self._turn += 1
        self._turn_ids = []
        self._turn_scores.append(float(reply.score))
        if reply.done or at_eos or self._turn >= self.max_turns:
            return self._end(float(reply.score), terminated=True)
        self._messages.append({"role": reply.role, "content": reply.text})
        answer = reply_ids(self.tokenizer, reply.role, reply.text)
        if self._used + len(answer) >= self.max_new_tokens:  # no room for the reply and a token after it
            return self._end(float(reply.score), terminated=False)
        self._append(answer, by_policy=False)
        self._used += len(answer)
        return self._observation(), float(reply.score), False, False, {"turn": self._turn}

    def turn_ending(self, token: int) -> str | None:
        """What the policy's turn says if ``token`` ends it (end of turn, EOS, ``max_turn_tokens``), else None."""
        ends = (self.end_of_turn_id, self.eos_id)
        token = int(token)
        if self._state != "running" or not (token in ends or len(self._turn_ids) + 1 >= self.max_turn_tokens):
            return None
        return self.tokenizer.decode([t for t in [*self._turn_ids, token] if t not in ends])

    def _end(self, reward: float, terminated: bool):
        self._state = "done"
        info = {"turn": self._turn, "turn_scores": list(self._turn_scores), "score": float(sum(self._turn_scores)),
                "transcript": self.transcript()}
        return self._observation(), reward, terminated, not terminated, info

    def _observation(self) -> ObsType:
        return {"input_ids": self._ids.copy(), "attention_mask": self._real.copy(), "policy_mask": self._policy.copy()}

    def transcript(self) -> list[Message]:
        """The conversation so far, as messages."""
        return [dict(m) for m in self._messages]

    def action_masks(self) -> np.ndarray:
        return self.action_space.valid.copy()

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi'")
            return None
        return self.tokenizer.decode(self._ids[self._real == 1].tolist())


@lru_cache(maxsize=4096)
def reply_ids(tokenizer: Any, role: str, text: str) -> tuple[int, ...]:
    """The ids of one message, the assistant's generation prompt after it. Replies repeat (a host's
    "Higher.", a tool's error message), and rendering each once spares a run of the chat template
    at every turn: 10% of a GuessNumber rollout on "tiny"."""
    return tuple(chat_ids(tokenizer, [{"role": role, "content": text}]))


def answer_turns(envs: Sequence[MultiTurnTextEnv], tokens: Sequence[int]) -> None:
    """Before ``envs[i].step(tokens[i])``, ask for the replies to the turns those tokens end in one
    batch per interlocutor factory that answers in batches (``reply_all``, as ``LanguageModelUser``
    does); each env keeps its reply for that step. Other interlocutors answer at the step, one
    conversation at a time, as they would anyway."""
    pending: dict[int, list[tuple[MultiTurnTextEnv, str]]] = {}
    for env, token in zip(envs, tokens):
        env = env.unwrapped
        if hasattr(env.interlocutor, "reply_all") and (said := env.turn_ending(token)) is not None:
            pending.setdefault(id(env.interlocutor), []).append((env, said))
    for turns in pending.values():
        factory, saids = turns[0][0].interlocutor, [said for _, said in turns]
        replies = _asked(lambda: factory.reply_all([env._other for env, _ in turns], saids), factory,
                         f"{len(saids)} turns in a batch")
        if not isinstance(replies, list) or len(replies) != len(saids):
            raise TypeError(f"interlocutor {factory!r} must answer a batch of {len(saids)} turns with a list of "
                            f"as many replies, got {replies!r}")
        for (env, said), reply in zip(turns, replies):
            env._prepared = (said, reply)


class MultiTurnTextVectorEnv(SyncVectorEnv):
    """``num_envs`` conversations stepped together: ``SyncVectorEnv`` over ``MultiTurnTextEnv``s
    (the same observations, rewards and infos for the same seeds), except that an interlocutor
    factory that answers in batches (``LanguageModelUser``) writes the replies to every turn that
    ends at one step in one batch. ``gym.make_vec`` returns it for the registered conversations.

    Example:
        >>> import gymnasium as gym, numpy as np, textgym
        >>> envs = gym.make_vec("textgym/GuessNumber-v0", num_envs=3)
        >>> obs, info = envs.reset(seed=0)
        >>> end = envs.unwrapped.envs[0].end_of_turn_id
        >>> obs, reward, terminated, truncated, info = envs.step(np.full(3, end))  # three empty turns
        >>> obs["policy_mask"].shape, info["turn"].tolist()
        ((3, 144), [1, 1, 1])
    """

    def __init__(self, num_envs: int, interlocutor: Callable[[np.random.Generator], Interlocutor],
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **kwargs: Any):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        first = MultiTurnTextEnv(interlocutor, **kwargs)
        rest = kwargs | {"tokenizer": first.tokenizer}  # one tokenizer for all
        super().__init__([lambda: first] + [lambda: MultiTurnTextEnv(interlocutor, **rest)] * (int(num_envs) - 1),
                         autoreset_mode=_autoreset_mode(autoreset_mode))
        self._ended = np.zeros(self.num_envs, bool)  # under NEXT_STEP these reset instead of stepping

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._ended[(options or {}).get("reset_mask", slice(None))] = False
        return obs, info

    def step(self, actions: Any):
        actions = np.asarray(actions)
        stepping = ~self._ended if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP else \
            np.ones(self.num_envs, bool)
        answer_turns([self.envs[i] for i in np.flatnonzero(stepping)], actions[stepping].tolist())
        obs, rewards, terminated, truncated, infos = super().step(actions)
        self._ended = terminated | truncated
        return obs, rewards, terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        return np.stack([env.action_masks() for env in self.envs])
