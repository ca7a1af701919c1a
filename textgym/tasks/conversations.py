"""The registered multi-turn tasks: the three games of ``textgym.models.dialogues``, played by
``MultiTurnTextEnv`` with a scripted other side.

| id | the policy must | turn scores |
| --- | --- | --- |
| ``textgym/GuessNumber-v0`` | find a number from 1 to 20 from "Higher." / "Lower." | −0.1 a miss (−0.2 for a non-number), 1 when found |
| ``textgym/Calculator-v0`` | answer a two-digit sum, using ``<calc>a+b</calc>`` if it likes | 0 for a call (the tool answers), then 1 for the right final answer, else 0 |
| ``textgym/Customer-v0`` | ask for the order number, then offer a refund or replacement | 0.5 for asking, 1 for the offer after it, −1 for rudeness |

An episode's ``info["score"]`` is the sum of its turn scores. Calculator questions are cut into
disjoint train and test splits (the corpus shows train questions only); the other games draw
their secret or customer from the env's generator.

Example:
    >>> import gymnasium as gym, textgym
    >>> env = gym.make("textgym/Calculator-v0", split="test")
    >>> obs, info = env.reset(seed=0)
    >>> info["prompt"].startswith("<|user|>What is "), info["turn"]
    (True, 0)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from textgym.envs.multi_turn import MultiTurnTextEnv, MultiTurnTextVectorEnv
from textgym.envs.prompts import Message
from textgym.models.dialogues import (
    CALL, CUSTOMER_SYSTEM, GUESS_HIGH, GUESS_LOW, GUESS_OPENING, Customer, Reply, calculator_problems,
    calculator_reply, customer_reply, host_reply,
)
from textgym.tasks.data import check_split

NUMBER = re.compile(r"-?\d+")


class GuessNumber:
    """The host of guess-the-number, for one secret."""

    def __init__(self, rng: np.random.Generator):
        self.secret = int(rng.integers(GUESS_LOW, GUESS_HIGH + 1))
        self.opening = [{"role": "user", "content": GUESS_OPENING}]

    def reply(self, said: str) -> Reply:
        return host_reply(self.secret, said)


class Calculator:
    """A user with one question and a calculator tool: a ``<calc>...</calc>`` call gets the tool's
    result (a call that does not parse gets an error message); any other turn is the final answer."""

    def __init__(self, question: str, answer: str):
        self.answer = answer
        self.opening = [{"role": "user", "content": question}]

    def reply(self, said: str) -> Reply:
        call = CALL.search(said)
        if call:
            return Reply(calculator_reply(call.group(1)), 0.0, False, role="tool")
        number = NUMBER.search(said)
        return Reply("", float(number is not None and number.group() == self.answer), True)


class CustomerChat:
    """A customer with a broken product."""

    def __init__(self, rng: np.random.Generator):
        self.customer = Customer.draw(_python_rng(rng))
        self.opening = [{"role": "system", "content": CUSTOMER_SYSTEM}, {"role": "user", "content": self.customer.opening}]

    def reply(self, said: str) -> Reply:
        return customer_reply(self.customer, said)


def _python_rng(rng: np.random.Generator) -> random.Random:
    """The games draw with ``random``; seed one from the env's generator."""
    return random.Random(int(rng.integers(2**32)))


class CalculatorQuestions:
    """Calculator games on the questions of one split (a class, not a closure: envs must pickle)."""

    def __init__(self, split: str):
        self.problems = calculator_problems(check_split(split))

    def __call__(self, rng: np.random.Generator) -> Calculator:
        return Calculator(*self.problems[int(rng.integers(len(self.problems)))])


GAMES = {  # name -> (split -> interlocutor factory, env defaults)
    "GuessNumber": (lambda split: GuessNumber, dict(max_turns=8, max_turn_tokens=4, max_new_tokens=96)),
    "Calculator": (CalculatorQuestions, dict(max_turns=3, max_turn_tokens=16, max_new_tokens=64)),
    "Customer": (lambda split: CustomerChat, dict(max_turns=4, max_turn_tokens=24, max_new_tokens=128)),
}


def gold_guess(messages: list[Message]) -> str:
    """Binary search on the host's answers so far."""
    low, high = GUESS_LOW, GUESS_HIGH
    for said, answer in zip(messages[1::2], messages[2::2]):
        guess = int(said["content"])
        low, high = (guess + 1, high) if answer["content"] == "Higher." else (low, guess - 1)
    return str((low + high) // 2)


def gold_sum(messages: list[Message]) -> str:
    """The question's answer, computed."""
    a, op, b = re.match(r"What is (\d+) (plus|minus) (\d+)\?", messages[0]["content"]).groups()
    return str(int(a) + int(b) if op == "plus" else int(a) - int(b))


def gold_service(messages: list[Message]) -> str:
    """Ask for the order number, then offer a refund."""
    asked = any(m["role"] == "assistant" for m in messages)
    return "I will refund your money today." if asked else "What is your order number, please?"


GOLD = {"GuessNumber": gold_guess, "Calculator": gold_sum, "Customer": gold_service}  # a good policy's turns


def play(env: gym.Env, seed: int, respond: Callable[[list[Message]], str]) -> dict:
    """One episode of the conversation env ``env``, each turn written by ``respond(transcript)``
    (``GOLD``, say, or ``lambda messages: ""`` for the floor); the final ``info``."""
    env.reset(seed=seed)
    end = env.unwrapped.end_of_turn_id
    while True:
        turn = env.unwrapped.tokenizer.encode(respond(env.unwrapped.transcript()), add_special_tokens=False)
        for token in [*turn, end]:
            _, _, terminated, truncated, info = env.step(token)
            if terminated or truncated:
                return info


def make_conversation_env(game: str, split: str = "train", **kwargs: Any) -> MultiTurnTextEnv:
    """The single env of the game ``game`` (the ``entry_point`` of its registered id)."""
    interlocutor, defaults = _game(game)
    return MultiTurnTextEnv(interlocutor(split), **defaults | kwargs)


def make_conversation_vector_env(num_envs: int, game: str, split: str = "train", **kwargs: Any
                                 ) -> MultiTurnTextVectorEnv:
    """The vector env of the game ``game`` (the ``vector_entry_point`` of its registered id)."""
    interlocutor, defaults = _game(game)
    return MultiTurnTextVectorEnv(num_envs, interlocutor(split), **defaults | kwargs)


def _game(game: str) -> tuple[Callable, dict[str, Any]]:
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; expected one of {sorted(GAMES)}")
    return GAMES[game]
