"""Conversations for the embedded model: its chat template, and three games whose rules both write
the corpus's dialogues and play the other side of textgym's multi-turn tasks.

A conversation is a list of messages ``{"role": ..., "content": ...}`` rendered by
``CHAT_TEMPLATE``: each message is ``<|role|>content<|end|>``, and a generation prompt is
``<|assistant|>``. The policy's turn ends at ``<|end|>``.

The games (each side's lines are fixed, so a 2M-parameter model can learn them):

* **Guess the number** (1..20): the assistant guesses, the host says "Higher.", "Lower." or
  "Correct!". Corpus guessers halve the range only some of the time.
* **Calculator**: the user asks for a two-digit sum or difference ("What is 47 plus 38?"); the
  assistant may write ``<calc>47+38</calc>``, the tool answers, and the assistant gives "The
  answer is 85.". The question says "plus", not "+", so these sums never look like
  Arithmetic-v0's ``a + b =`` (single-digit b), which a small model would otherwise confuse.
  Corpus assistants call the tool only some of the time, and a 2M model cannot add two-digit
  numbers in its head (see ``arithmetic_problems``), so the tool is the skill to learn.
* **Customer**: a customer reports a broken product; the agent should ask for the order number,
  then offer a refund or a replacement. Corpus agents are sometimes vague or rude.

Example:
    >>> import random
    >>> from textgym.models.dialogues import render, host_reply
    >>> render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|user|>Hi<|end|><|assistant|>'
    >>> host_reply(secret=7, guess="10")
    Reply(text='Lower.', score=-0.1, done=False, role='user')
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import jinja2

from textgym.models.corpus import REVIEW_KINDS, RUDE, seeded_split

ROLES = ("system", "user", "assistant", "tool")
END_OF_TURN = "<|end|>"
CHAT_TOKENS = [*(f"<|{role}|>" for role in ROLES), END_OF_TURN]
CHAT_TEMPLATE = (
    "{%- for message in messages -%}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
Message = dict[str, str]


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    return jinja2.Environment().from_string(CHAT_TEMPLATE)


def render(messages: list[Message], add_generation_prompt: bool = False) -> str:
    """``messages`` as text, exactly as the tokenizer's ``apply_chat_template`` renders them."""
    return _template().render(messages=messages, add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class Reply:
    """The other side's answer to one assistant turn, that turn's score, whether the game is over,
    and the answer's role (a tool's result, or the user)."""

    text: str
    score: float
    done: bool
    role: str = "user"


def _turns(opening: list[Message], moves: list[tuple[str, Reply]]) -> list[Message]:
    messages = list(opening)
    for said, reply in moves:
        messages += [{"role": "assistant", "content": said}, {"role": "user", "content": reply.text}]
    return messages


# --- guess the number ---------------------------------------------------------------------------

GUESS_LOW, GUESS_HIGH = 1, 20
GUESS_OPENING = f"I am thinking of a number from {GUESS_LOW} to {GUESS_HIGH}. Guess it!"
MISS_SCORE = -0.1  # per wrong guess; a found number scores 1


def host_reply(secret: int, guess: str) -> Reply:
    """The host's answer to the assistant's ``guess`` (text) of ``secret``."""
    text = guess.strip().rstrip(".")
    if not text.isdigit() or not GUESS_LOW <= int(text) <= GUESS_HIGH:
        return Reply(f"Please guess a number from {GUESS_LOW} to {GUESS_HIGH}.", 2 * MISS_SCORE, False)
    if int(text) == secret:
        return Reply("Correct!", 1.0, True)
    return Reply("Higher." if int(text) < secret else "Lower.", MISS_SCORE, False)


def guess_game(rng: random.Random, max_guesses: int = 8) -> list[Message]:
    """A game whose guesser halves the consistent range half of the time and otherwise guesses in it."""
    secret, low, high = rng.randint(GUESS_LOW, GUESS_HIGH), GUESS_LOW, GUESS_HIGH
    moves = []
    for _ in range(max_guesses):
        r = rng.random()
        guess = (low + high) // 2 if r < 0.5 else rng.randint(low, high) if r < 0.9 else rng.randint(GUESS_LOW, GUESS_HIGH)
        reply = host_reply(secret, str(guess))
        moves.append((str(guess), reply))
        if reply.done:
            break
        if reply.text == "Higher.":
            low = max(low, guess + 1)
        else:
            high = min(high, guess - 1)
    return _turns([{"role": "user", "content": GUESS_OPENING}], moves)


# --- calculator ---------------------------------------------------------------------------------

CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
EXPRESSION = re.compile(r"^\s*(\d{1,6})\s*([+\-*])\s*(\d{1,6})\s*$")


@functools.lru_cache(maxsize=None)
def calculator_problems(split: str) -> list[tuple[str, str]]:
    """``(question, answer)`` for every two-digit ``a plus b`` and ``a minus b`` (a >= b), cut 80/20
    into disjoint train and test splits; the corpus shows train problems only."""
    problems = [(f"What is {a} plus {b}?", str(a + b)) for a in range(10, 100) for b in range(10, 100)]
    problems += [(f"What is {a} minus {b}?", str(a - b)) for a in range(10, 100) for b in range(10, a + 1)]
    return seeded_split(problems, split, seed=15)


def calculator_reply(call: str) -> str:
    """The tool's answer to the inside of a ``<calc>...</calc>`` call: the result, or an error."""
    match = EXPRESSION.match(call)
    if not match:
        return f"Error: cannot read {call!r}; write <calc>a+b</calc>."
    a, op, b = int(match[1]), match[2], int(match[3])
    return str(a + b if op == "+" else a - b if op == "-" else a * b)


def calculator_dialogue(rng: random.Random) -> list[Message]:
    """A train question answered with the tool (80%), after a misspelt call (5%), or from memory."""
    question, answer = rng.choice(calculator_problems("train"))
    a, word, b = question.removeprefix("What is ").rstrip("?").split()
    messages = [{"role": "user", "content": question}]
    r = rng.random()
    if r < 0.85:
        if r >= 0.8:  # the question's words are no call: the tool says so, and the next call is right
            wrong = f"{a} {word} {b}"
            messages += [{"role": "assistant", "content": f"<calc>{wrong}</calc>"},
                         {"role": "tool", "content": calculator_reply(wrong)}]
        call = f"{a}{'+' if word == 'plus' else '-'}{b}"
        messages += [{"role": "assistant", "content": f"<calc>{call}</calc>"},
                     {"role": "tool", "content": calculator_reply(call)}]
    return [*messages, {"role": "assistant", "content": f"The answer is {answer}."}]


def product_dialogue(rng: random.Random) -> list[Message]:
    """A two-digit product ("What is 47 times 23?") answered with the tool.

    A 2M-parameter model cannot work a product out, so the only way to the answer is to copy the
    operands into the call and the tool's result into the answer: practice that sums, whose tool
    result the model can also roughly work out, do not give (the base model learnt to ignore the
    tool; ``benchmarks/calculator_habits.py``). Products are not a Calculator-v0 task, so they need
    no split.
    """
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    call = f"{a}*{b}"
    result = calculator_reply(call)
    return [{"role": "user", "content": f"What is {a} times {b}?"},
            {"role": "assistant", "content": f"<calc>{call}</calc>"},
            {"role": "tool", "content": result},
            {"role": "assistant", "content": f"The answer is {result}."}]


# --- customer -----------------------------------------------------------------------------------

CUSTOMER_SYSTEM = "You are a helpful shop assistant."
PRODUCT_PROBLEMS = ["stopped working", "arrived broken", "is missing a part", "makes a strange noise",
                    "is the wrong color", "does not turn on"]
ASKS = ["I am sorry to hear that. What is your order number?", "What is your order number, please?",
        "Sorry about that. Can you tell me your order number?"]
REMEDIES = ["I will send you a new {thing} today.", "I will refund your money today.",
            "We will replace your {thing} for free."]
VAGUE = ["Let me check.", "I understand.", "Please wait a moment.", "That is strange.",
         "Have you tried turning it off and on again?"]
RUDE_WORDS = ("idiot", "stupid", "go away", "who cares", "bothering me", "your own homework")


@dataclass
class Customer:
    """A customer with a broken ``thing``; ``customer_reply`` answers the agent and updates ``asked``."""

    thing: str
    problem: str
    order: str
    asked: bool = False

    @classmethod
    def draw(cls, rng: random.Random) -> Customer:
        return cls(rng.choice(REVIEW_KINDS["Product"]["things"]), rng.choice(PRODUCT_PROBLEMS),
                   str(rng.randint(1000, 9999)))

    @property
    def opening(self) -> str:
        return f"Hello. My new {self.thing} {self.problem}."


def customer_reply(customer: Customer, said: str) -> Reply:
    """The customer's answer to the agent's turn ``said``: rude ends it (-1), the first request for the
    order number earns 0.5, a refund or replacement after it ends it (+1); anything else earns 0."""
    text = said.lower()
    if any(word in text for word in RUDE_WORDS):
        return Reply("How rude! Goodbye.", -1.0, True)
    offers = "refund" in text or "replace" in text or f"new {customer.thing}" in text
    if offers and customer.asked:
        return Reply("Thank you, that helps. Goodbye.", 1.0, True)
    if "order number" in text and "?" in text:
        first, customer.asked = not customer.asked, True
        return Reply(f"It is {customer.order}." if first else f"I already told you: {customer.order}.",
                     0.5 if first else 0.0, False)
    if offers:
        return Reply("You do not even know my order number.", 0.0, False)
    return Reply("That does not help me.", 0.0, False)


def customer_dialogue(rng: random.Random, max_turns: int = 4) -> list[Message]:
    """A support chat whose agent does the right next thing about half the time."""
    customer = Customer.draw(rng)
    moves = []
    for _ in range(max_turns):
        right = rng.choice(REMEDIES).format(thing=customer.thing) if customer.asked else rng.choice(ASKS)
        early = rng.choice(ASKS) if customer.asked else rng.choice(REMEDIES).format(thing=customer.thing)
        said = rng.choices([right, early, rng.choice(VAGUE), rng.choice(RUDE)], [0.5, 0.12, 0.25, 0.13])[0]
        reply = customer_reply(customer, said)
        moves.append((said, reply))
        if reply.done:
            break
    opening = [{"role": "system", "content": CUSTOMER_SYSTEM}, {"role": "user", "content": customer.opening}]
    return _turns(opening, moves)


# --- corpus documents ---------------------------------------------------------------------------

# Shares of the corpus's documents (``corpus.iter_documents`` mixes them with the text kinds).
# About 17% of the tokens, the calculator's 12% (products 3%; counted on 2,000 documents of each
# kind): copying two operands into a call takes a 2M-parameter model many examples; at 1.5% of the
# tokens its calls copied neither and Calculator's base was 0.4%. Products decide the copy skill,
# and sharply: with none Calculator's base was 5%, with 0.035 of the documents 84% (2026-12-04).
# Builds with 15% left the single-turn skills under-learnt (Arithmetic's base accuracy fell from 68%
# to 8%, Keywords' position from 67% to 6-9%): a 2M-parameter model has little capacity to share.
DIALOGUES: list[tuple[Callable[[random.Random], list[Message]], float]] = [
    (guess_game, 0.007), (calculator_dialogue, 0.045), (product_dialogue, 0.015), (customer_dialogue, 0.009),
]
