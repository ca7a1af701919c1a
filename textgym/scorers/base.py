"""The scorer contract: ``scorer(prompts, completions, references=None) -> np.ndarray[float]``.

A scorer is batched and documents its range (``low``, ``high``). Reference-based scorers take one
reference (a string) or several (a list of strings) per completion, and refuse to run without
them. Every output passes through the same check as the env's: one finite float per completion,
or an error that names the scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from textgym.envs.core import validated_scores

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
