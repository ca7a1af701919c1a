"""Rule-based scorers: keyword coverage, exact and numeric answers, length.

Example:
    >>> from textgym.scorers import KeywordCoverage, NumericMatch
    >>> KeywordCoverage()(["Words: dog, throw, ball."], ["The boy throws the balls."], [["dog", "throw", "ball"]])
    array([0.66666667])
    >>> NumericMatch()(["17 + 25 ="] * 2, [" 42", " 41 or 42"], ["42", "42"])
    array([1., 0.])
    >>> AnswerDigits()(["17 + 25 ="] * 3, [" 4", " 43", " 42"], ["42"] * 3)
    array([0.5, 0.5, 1. ])
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence

from nltk.stem.porter import PorterStemmer

from textgym.scorers.base import SequenceScorer

WORD = re.compile(r"[A-Za-z]+")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Porter stemming is slow and completions reuse a small vocabulary: stem each word once. The cache
# lives at module level so that scorers (and the envs that hold them) pickle.
stem = functools.lru_cache(maxsize=1 << 16)(PorterStemmer().stem)


class KeywordCoverage(SequenceScorer):
    """The share in [0, 1] of required words that the completion uses.

    Matching is on Porter stems, so regular inflections count ("throws", "throwing" match
    "throw"); irregular ones ("threw") do not. The required words are ``keywords`` for every
    completion, or, if ``keywords`` is None, each completion's references (a list of words).
    """

    name = "keywords"

    def __init__(self, keywords: Sequence[str] | None = None):
        if isinstance(keywords, str) or keywords is not None and not all(isinstance(k, str) for k in keywords):
            raise TypeError(f"keywords must be a list of words (or None: each episode's references), got {keywords!r}")
        self.keywords = None if keywords is None else self.stems(" ".join(keywords))
        if self.keywords is not None and not self.keywords:
            raise ValueError(f"keywords must hold at least one word, got {keywords!r}")
        self.needs_references = keywords is None

    def stems(self, text: str) -> set[str]:
        return {stem(word.lower()) for word in WORD.findall(text)}

    def score(self, prompts, completions, references):
        required = [self.keywords] * len(completions) if references is None else [
            self.stems(" ".join(refs)) for refs in references
        ]
        return [len(words & self.stems(c)) / max(len(words), 1) for c, words in zip(completions, required)]


def normalize_answer(text: str) -> str:
    """Lower case, single spaces, no surrounding whitespace or final punctuation."""
    return " ".join(text.lower().split()).rstrip(".!?,;:").strip()


class ExactMatch(SequenceScorer):
    """1 if the normalized completion equals a normalized reference, else 0."""

    name = "exact_match"
    needs_references = True

    def score(self, prompts, completions, references):
        return [
            float(normalize_answer(c) in {normalize_answer(r) for r in refs})
            for c, refs in zip(completions, references)
        ]


class NumericMatch(SequenceScorer):
    """1 if the completion's first number equals a reference number, else 0."""

    name = "numeric_match"
    needs_references = True

    def score(self, prompts, completions, references):
        scores = []
        for completion, refs in zip(completions, references):
            found = NUMBER.search(completion)
            answers = [self._number(r) for r in refs]
            scores.append(float(found is not None and float(found.group()) in answers))
        return scores

    def _number(self, reference: str) -> float:
        try:
            return float(reference)
        except ValueError:
            raise ValueError(f"scorer {self.name}: reference {reference!r} is not a number") from None


class Length(SequenceScorer):
    """The completion's length in [0, inf): ``"words"``, ``"chars"`` or ``"tokens"`` (needs a tokenizer)."""

    name = "length"
    high = float("inf")
    units = ("words", "chars", "tokens")

    def __init__(self, unit: str = "words", tokenizer=None):
        if unit not in self.units:
            raise ValueError(f"unit must be one of {list(self.units)}, got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("unit='tokens' needs a tokenizer")
        self.unit, self.tokenizer = unit, tokenizer

    def score(self, prompts, completions, references):
        if self.unit == "words":
            return [len(c.split()) for c in completions]
        if self.unit == "chars":
            return [len(c) for c in completions]
        return [len(ids) for ids in self.tokenizer(completions, add_special_tokens=False)["input_ids"]]


class Repetition(SequenceScorer):
    """The share in [0, 1] of the completion's word n-grams that repeat an earlier one."""

    name = "repetition"

    def __init__(self, n: int = 2):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.n = n

    def score(self, prompts, completions, references):
        scores = []
        for completion in completions:
            words = WORD.findall(completion.lower())
            grams = [tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
            scores.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
        return scores


class AnswerDigits(SequenceScorer):
    """The share in [0, 1] of the reference answer spelled correctly so far, from the left.

    The completion's leading number (after spaces) is compared with the answer character by
    character: for the answer 42, " 4" scores 0.5 and " 42" or " 421" score 1. It is a potential
    for partial answers: unlike ``NumericMatch`` it rewards progress, digit by digit.
    """

    name = "answer_digits"
    needs_references = True

    def score(self, prompts, completions, references):
        scores = []
        for completion, refs in zip(completions, references):
            written = re.match(r"\s*(-?\d*)", completion).group(1)
            scores.append(max(len(os.path.commonprefix([written, r.strip()])) / len(r.strip()) for r in refs))
        return scores
