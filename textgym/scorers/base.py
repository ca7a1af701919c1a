"""The scorer contract: ``scorer(prompts, completions, references=None) -> np.ndarray[float]``.

A scorer is batched and documents its range (``low``, ``high``). Reference-based scorers take one
reference (a string) or several (a list of strings) per completion, and refuse to run without
them. Any other callable ``(prompts, completions) -> scores`` is a scorer too: ``run_scorer`` calls
either kind and checks the output once, one finite float per completion, or an error that names
the scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
"""A batched task score: ``scorer(prompts, completions) -> one float per completion``."""


def scorer_name(scorer: Callable) -> str:
    return getattr(scorer, "name", None) or getattr(scorer, "__name__", None) or type(scorer).__name__


def validated_scores(name: str, scores: Any, count: int) -> np.ndarray:
    """``scores`` as a float array, or an error naming the scorer: wrong count, NaN/inf, not numbers."""
    try:
        raw = np.asarray(scores)
    except ValueError as error:  # ragged nesting
        raise TypeError(f"scorer {name} must return a flat sequence of floats, got {scores!r}") from error
    if raw.dtype.kind not in "biuf" or raw.ndim != 1:
        raise TypeError(f"scorer {name} must return a flat sequence of floats, got {scores!r}")
    values = raw.astype(np.float64)
    if len(values) != count:
        raise ValueError(f"scorer {name} returned {len(values)} scores for {count} completions")
    if not np.isfinite(values).all():
        raise ValueError(f"scorer {name} returned a non-finite score: {values.tolist()}")
    return values


References = Sequence[str | Sequence[str]] | None


class SequenceScorer(ABC):
    """Base class: subclasses set ``name``, ``low``, ``high``, ``needs_references`` and ``score``."""

    name: str = "scorer"
    low: float = 0.0
    high: float = 1.0
    needs_references: bool = False

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: References = None
    ) -> np.ndarray:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"scorer {self.name} got {len(prompts)} prompts for {len(completions)} completions")
        refs = self._references(references, len(completions)) if self.needs_references else None
        return validated_scores(self.name, self.score(prompts, completions, refs), len(completions))

    @abstractmethod
    def score(self, prompts: list[str], completions: list[str], references: list[list[str]] | None) -> Sequence[float]:
        """One score per completion; ``references`` is a list of reference lists, or None."""

    def _references(self, references: References, count: int) -> list[list[str]]:
        if references is None:
            raise ValueError(f"scorer {self.name} compares against references; pass references=[...] "
                             "with one string (or list of strings) per completion")
        if len(references) != count:
            raise ValueError(f"scorer {self.name} got {len(references)} references for {count} completions")
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        if any(not r or not all(isinstance(x, str) for x in r) for r in refs):
            raise TypeError(f"scorer {self.name}: each reference must be a str or a non-empty list of str")
        return refs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, range=[{self.low}, {self.high}])"


def run_scorer(scorer: Callable, prompts: list[str], completions: list[str], references: list | None = None
               ) -> np.ndarray:
    """Call ``scorer`` (with ``references`` when it takes them) and validate what it returns."""
    if getattr(scorer, "needs_references", False):
        values = scorer(prompts, completions, references)
    else:
        values = scorer(prompts, completions)
    if isinstance(scorer, SequenceScorer):  # it validated its own output: once per call is enough
        return values
    return validated_scores(scorer_name(scorer), values, len(completions))
