"""Reference-overlap metrics from sacrebleu (BLEU, chrF, TER) and rouge-score (ROUGE-1/2/L).

Example:
    >>> from textgym.scorers import bleu, rouge
    >>> rouge("rougeL")(["Summarize:"], ["Tom bought bread."], [["Tom bought bread at the market."]]).round(3)
    array([0.667])
    >>> bleu()(["p"], ["the cat sat on the mat"], ["the cat sat on the mat"]).round(1)
    array([100.])
"""

from __future__ import annotations

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF, TER

from textgym.scorers.base import SequenceScorer


class SacreBleuScore(SequenceScorer):
    """Sentence-level score of a sacrebleu metric object; several references are allowed."""

    needs_references = True

    def __init__(self, metric: BLEU | CHRF | TER, name: str, high: float):
        self.metric, self.name, self.high = metric, name, high

    def score(self, prompts, completions, references):
        return [self.metric.sentence_score(c, refs).score for c, refs in zip(completions, references)]


def bleu(**kwargs) -> SacreBleuScore:
    """Sentence BLEU in [0, 100] (``effective_order=True``, as sacrebleu advises for sentences)."""
    return SacreBleuScore(BLEU(effective_order=True, **kwargs), "bleu", 100.0)


def chrf(**kwargs) -> SacreBleuScore:
    """Sentence chrF in [0, 100]."""
    return SacreBleuScore(CHRF(**kwargs), "chrf", 100.0)


def ter(**kwargs) -> SacreBleuScore:
    """Sentence TER in [0, inf): an edit rate, so *lower* is better (weight it negatively)."""
    return SacreBleuScore(TER(**kwargs), "ter", float("inf"))


class Rouge(SequenceScorer):
    """ROUGE-1, ROUGE-2 or ROUGE-L F-measure (or precision/recall) in [0, 1], best over references."""

    needs_references = True
    variants = ("rouge1", "rouge2", "rougeL")
    measures = ("fmeasure", "precision", "recall")

    def __init__(self, variant: str = "rougeL", measure: str = "fmeasure", use_stemmer: bool = True):
        if variant not in self.variants:
            raise ValueError(f"ROUGE variant must be one of {list(self.variants)}, got {variant!r}")
        if measure not in self.measures:
            raise ValueError(f"ROUGE measure must be one of {list(self.measures)}, got {measure!r}")
        self.variant, self.measure, self.name = variant, measure, variant
        self.scorer = rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer)

    def score(self, prompts, completions, references):
        return [
            getattr(self.scorer.score_multi(refs, c)[self.variant], self.measure)
            for c, refs in zip(completions, references)
        ]


def rouge(variant: str = "rougeL", **kwargs) -> Rouge:
    return Rouge(variant, **kwargs)


__all__ = ["Rouge", "SacreBleuScore", "bleu", "chrf", "rouge", "ter"]
