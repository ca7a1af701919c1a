"""Sentiment from VADER's lexicon (vaderSentiment, offline).

Example:
    >>> from textgym.scorers import VaderSentiment
    >>> VaderSentiment()(["Review:"] * 2, ["The food was wonderful.", "The food was awful."]).round(2)
    array([0.79, 0.27])
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from textgym.scorers.base import SequenceScorer


class VaderSentiment(SequenceScorer):
    """VADER's compound score mapped from [-1, 1] to [0, 1]: 0.5 is neutral, 1 most positive."""

    name = "sentiment"

    def __init__(self):
        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts, completions, references):
        return [(self.analyzer.polarity_scores(c)["compound"] + 1) / 2 for c in completions]
