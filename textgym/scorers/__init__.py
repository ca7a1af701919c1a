"""Batched sequence scorers: ``scorer(prompts, completions, references=None) -> np.ndarray[float]``.

| scorer | range | references | source |
| --- | --- | --- | --- |
| ``bleu()``, ``chrf()`` | [0, 100] | yes | sacrebleu |
| ``ter()`` | [0, inf), lower is better | yes | sacrebleu |
| ``rouge("rouge1" / "rouge2" / "rougeL")`` | [0, 1] | yes | rouge-score |
| ``VaderSentiment()`` | [0, 1], 0.5 neutral | no | vaderSentiment |
| ``SemanticSimilarity()`` | [-1, 1] | yes | all-MiniLM-L6-v2 (extra ``similarity``) |
| ``ClassifierScore(model, label)`` | [0, 1] | no | any HF sequence classifier |
| ``KeywordCoverage(keywords=None)`` | [0, 1] | the words, if no ``keywords`` | nltk's Porter stemmer |
| ``ExactMatch()``, ``NumericMatch()`` | {0, 1} | yes | |
| ``AnswerDigits()`` | [0, 1], the answer's correct leading share | yes | |
| ``Repetition(n)`` | [0, 1], share of repeated word n-grams | no | |
| ``Length(unit)`` | [0, inf) | no | |
| ``weighted({name: (scorer, weight)})`` | Σ λ_i R_i | if any part needs them | |
"""

from textgym.scorers.base import Scorer, SequenceScorer, run_scorer
from textgym.scorers.combine import WeightedScorer, weighted
from textgym.scorers.learned import ClassifierScore, SemanticSimilarity
from textgym.scorers.overlap import Rouge, SacreBleuScore, bleu, chrf, rouge, ter
from textgym.scorers.rules import AnswerDigits, ExactMatch, KeywordCoverage, Length, NumericMatch, Repetition
from textgym.scorers.sentiment import VaderSentiment

__all__ = [
    "AnswerDigits", "ClassifierScore", "ExactMatch", "KeywordCoverage", "Length", "NumericMatch", "Repetition", "Rouge", "SacreBleuScore",
    "Scorer", "SemanticSimilarity", "SequenceScorer", "VaderSentiment", "WeightedScorer", "bleu", "chrf", "rouge",
    "run_scorer", "ter", "weighted",
]
