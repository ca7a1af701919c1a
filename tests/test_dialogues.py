"""The embedded model's chat template and the rules of its three dialogue games."""

from __future__ import annotations

import random

import pytest

from textgym.models import load_tokenizer
from textgym.models.dialogues import (
    CHAT_TOKENS, Customer, calculator_dialogue, calculator_problems, calculator_reply, customer_dialogue,
    customer_reply, guess_game, host_reply, product_dialogue, render,
)

CONVERSATION = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "What is 12 plus 30?"},
                {"role": "assistant", "content": "<calc>12+30</calc>"}, {"role": "tool", "content": "42"}]


def test_render_is_what_the_shipped_tokenizer_renders():
    tokenizer = load_tokenizer("tiny")
    for prompt in (False, True):
        assert render(CONVERSATION, prompt) == tokenizer.apply_chat_template(
            CONVERSATION, tokenize=False, add_generation_prompt=prompt)
    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False)
    specials = {tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS}
    assert sum(i in specials for i in ids) == 2 * len(CONVERSATION) + 1  # each role marker and end is one token


@pytest.mark.parametrize(("guess", "text", "score", "done"), [
    ("7", "Correct!", 1.0, True), ("3", "Higher.", -0.1, False), ("12.", "Lower.", -0.1, False),
    ("seven", "Please guess a number from 1 to 20.", -0.2, False), ("25", "Please guess a number from 1 to 20.", -0.2, False),
])
def test_host_reply(guess, text, score, done):
    reply = host_reply(7, guess)
    assert (reply.text, reply.score, reply.done) == (text, score, done)


def test_guess_games_follow_the_hosts_answers():
    for seed in range(50):
        messages = guess_game(random.Random(seed))
        guesses = [int(m["content"]) for m in messages if m["role"] == "assistant"]
        answers = [m["content"] for m in messages[2::2]]
        if answers[-1] == "Correct!":
            secret = guesses[-1]
            assert all(host_reply(secret, str(g)).text == a for g, a in zip(guesses, answers))


def test_calculator_tool_and_splits():
    assert calculator_reply("47+38") == "85" and calculator_reply(" 90 - 12 ") == "78"
    assert calculator_reply("47 plus 38").startswith("Error: cannot read '47 plus 38'")
    train, test = calculator_problems("train"), calculator_problems("test")
    assert not set(train) & set(test) and len(test) > 0.2 * len(train)
    for seed in range(30):
        dialogue = calculator_dialogue(random.Random(seed))
        question = dialogue[0]["content"]
        answer = dict(train)[question]
        assert dialogue[-1] == {"role": "assistant", "content": f"The answer is {answer}."}
        assert question in dict(train)  # the corpus never shows a test problem


def test_product_dialogues_copy_the_operands_into_the_call_and_the_result_into_the_answer():
    for seed in range(30):
        question, call, result, answer = (m["content"] for m in product_dialogue(random.Random(seed)))
        a, b = question.removeprefix("What is ").rstrip("?").split(" times ")
        assert call == f"<calc>{a}*{b}</calc>" and result == str(int(a) * int(b))
        assert answer == f"The answer is {result}."


def test_customer_rewards_asking_first_then_a_remedy():
    customer = Customer("kettle", "arrived broken", "1234")
    assert customer_reply(customer, "I will refund your money today.").score == 0  # no order number yet
    asked = customer_reply(customer, "What is your order number, please?")
    assert (asked.text, asked.score, asked.done) == ("It is 1234.", 0.5, False)
    assert customer_reply(customer, "What is your order number?").score == 0  # only the first ask earns
    done = customer_reply(customer, "We will replace your kettle for free.")
    assert (done.score, done.done) == (1.0, True)
    rude = customer_reply(Customer("kettle", "arrived broken", "1234"), "Go away, you idiot.")
    assert (rude.score, rude.done) == (-1.0, True)


def test_customer_dialogues_open_with_the_system_prompt():
    dialogue = customer_dialogue(random.Random(0))
    assert [m["role"] for m in dialogue[:3]] == ["system", "user", "assistant"]
