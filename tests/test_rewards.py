"""Reward-model training (Bradley-Terry), saving, scoring, and tokenizers that differ from the env's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textgym.envs import TextGenerationEnv
from textgym.models.build_tiny import train_tokenizer
from textgym.models.corpus import generate_documents
from textgym.rewards import PREFERENCE_MODEL as SHIPPED
from textgym.rewards import RewardModelConfig, RewardModelScore, load_pairs, pairwise_accuracy, train_reward_model
from textgym.tasks.data import preference_pairs


@pytest.fixture(scope="module")
def trained():
    """A few optimizer steps on the synthetic preference set."""
    return train_reward_model(preference_pairs("train"),
                              config=RewardModelConfig(steps=25, batch_size=16, lr=1e-3, device="cpu"))


def test_a_few_steps_lift_held_out_accuracy_above_chance(trained):
    held_out = preference_pairs("test")[:200]
    accuracy = pairwise_accuracy(trained.model, trained.tokenizer, held_out)
    assert accuracy > 0.75, accuracy  # chance is 0.5
    assert np.mean(trained.losses[-5:]) < np.mean(trained.losses[:5])  # and the loss fell


def test_save_load_round_trip_gives_the_same_rewards(trained, tmp_path):
    path = trained.save(tmp_path / "rm")
    assert (path / "model.safetensors").is_file() and not (tmp_path / "rm.tmp").exists()
    scorer = RewardModelScore(path, device="cpu")
    prompts, completions = ["Film review: I watched this film."] * 2, [" The acting was great.", " Go away"]
    with torch.no_grad():
        batch = trained.tokenizer([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True)
        expected = trained.model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(scorer(prompts, completions), expected, rtol=1e-5, atol=1e-6)
    trained.save(path)  # saving again, twice, replaces the model in place
    trained.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    np.testing.assert_allclose(RewardModelScore(path, device="cpu")(prompts, completions), expected, rtol=1e-5, atol=1e-6)


def test_the_shipped_preference_model_meets_its_record():
    record = json.loads((SHIPPED / "build_record.json").read_text())
    assert record["test_pairwise_accuracy"] >= 0.9
    scorer = RewardModelScore(SHIPPED, device="cpu")
    held_out = preference_pairs("test")[:100]
    chosen = scorer([p for p, _, _ in held_out], [c for _, c, _ in held_out])
    rejected = scorer([p for p, _, _ in held_out], [r for _, _, r in held_out])
    assert np.mean(chosen > rejected) >= 0.9


def test_a_reward_model_with_another_tokenizer_scores_text_re_tokenized():
    """The env speaks a different BPE than the reward model; scores go through text."""
    env_tokenizer = train_tokenizer(generate_documents(300, seed=5), vocab_size=400)
    scorer = RewardModelScore(SHIPPED, device="cpu")
    assert len(env_tokenizer) != len(scorer.tokenizer)
    env = TextGenerationEnv(tokenizer=env_tokenizer, prompts=["Film review: I watched this film."],
                            scorer=scorer, max_new_tokens=40)
    env.reset(seed=0)
    for token in env_tokenizer(" The acting was great. I loved every minute of it.")["input_ids"]:
        *_, info = env.step(token)
    *_, info = env.step(env_tokenizer.eos_token_id)
    direct = scorer(["Film review: I watched this film."], [" The acting was great. I loved every minute of it."])
    assert info["completion"] == " The acting was great. I loved every minute of it."
    assert info["score"] == pytest.approx(direct[0], abs=1e-5)


def test_preference_inputs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "chosen": " yes.", "rejected": " no"}) + "\n")
    assert load_pairs(path) == [("Q:", " yes.", " no")]
    with pytest.raises(ValueError, match=r"preference 0 lacks \['rejected'\]"):
        load_pairs([{"prompt": "Q:", "chosen": " yes."}])
    with pytest.raises(ValueError, match="must be \\(prompt, chosen, rejected\\) strings"):
        load_pairs([("Q:", " yes.")])
    with pytest.raises(ValueError, match="empty"):
        load_pairs([])
    with pytest.raises(ValueError, match="preference 0 must be \\(prompt, chosen, rejected\\) strings, got 'abc'"):
        train_reward_model(["abc"])  # a string is not a triple of strings
    with pytest.raises(ValueError, match="preference 0 has an empty answer"):
        load_pairs([("Q:", " yes.", "  ")])
    with pytest.warns(UserWarning, match="chosen == rejected"):
        load_pairs([("Q:", " yes.", " yes.")])
    with pytest.raises(ValueError, match="does not exist"):
        load_pairs(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_reward_model([("Q:", " a", " b")], config=RewardModelConfig(lr=0.0))
