"""Weighted sums of scorers: R_total = Σ λ_i R_i.

Example:
    >>> from textgym.scorers import Length, VaderSentiment, weighted
    >>> total = weighted({"sentiment": (VaderSentiment(), 1.0), "length": (Length(), -0.1)})
    >>> total(["Review:"], ["It was great fun."]).round(3)
    array([0.506])
    >>> {name: value.round(3).tolist() for name, value in total.components(["Review:"], ["It was great fun."]).items()}
    {'sentiment': [0.906], 'length': [4.0]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from textgym.scorers.base import References, SequenceScorer, run_scorer


class WeightedScorer(SequenceScorer):
    """Σ weight_i · scorer_i; ``components()`` gives each unweighted part, for reporting."""

    name = "weighted"

    def __init__(self, parts: Mapping[str, tuple[Callable, float]]):
        if not isinstance(parts, Mapping) or not parts:
            raise ValueError(f"weighted() needs a non-empty {{name: (scorer, weight)}} dict, got {parts!r}")
        for name, part in parts.items():
            ok = isinstance(part, tuple) and len(part) == 2 and callable(part[0])
            weight = part[1] if ok else None
            if not ok or isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"weighted() entry {name!r} must be (scorer, finite weight), got {part!r}")
        self.parts = {name: (scorer, float(weight)) for name, (scorer, weight) in parts.items()}
        self.needs_references = any(getattr(s, "needs_references", False) for s, _ in self.parts.values())
        self.low, self.high = self._range()

    def _range(self) -> tuple[float, float]:
        """The weighted range, from each part's documented range (unknown ranges are unbounded)."""
        low = high = 0.0
        for scorer, weight in self.parts.values():
            ends = [weight * getattr(scorer, "low", -math.inf), weight * getattr(scorer, "high", math.inf)]
            ends = [0.0 if math.isnan(e) else e for e in ends]  # 0 * inf: a zero weight adds nothing
            low, high = low + min(ends), high + max(ends)
        return low, high

    def components(self, prompts, completions, references: References = None) -> dict[str, np.ndarray]:
        """Each part's unweighted scores, by name."""
        return {name: run_scorer(scorer, prompts, completions, references) for name, (scorer, _) in self.parts.items()}

    def score(self, prompts, completions, references):
        components = self.components(prompts, completions, references)
        return sum(weight * components[name] for name, (_, weight) in self.parts.items())


def weighted(parts: Mapping[str, tuple[Callable, float]]) -> WeightedScorer:
    """Combine scorers with weights: ``weighted({"bleu": (bleu(), 0.01), "len": (Length(), -0.1)})``."""
    return WeightedScorer(parts)
