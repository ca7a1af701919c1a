"""The per-token reward contract that single and vector wrappers share.

A ``TokenReward`` computes one reward per token for a *batch* of transitions (prompt, tokens so
far, new token). It keeps per-episode state in *slots*, one per env of the batch it is bound to,
so the same object serves a single env (one slot) and a vector env (N slots): the two adapters in
``textgym.wrappers.adapters`` only translate Gymnasium's step and reset calls into ``start`` and
``rewards`` calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from textgym.envs.core import TextMDP


@dataclass
class Episodes:
    """Episodes that start in ``slots``: their prompts, references and first observations."""

    slots: np.ndarray  # (k,)
    prompts: list[str]
    references: list | None  # one entry per prompt, or None when the prompt set has none
    input_ids: np.ndarray  # (k, L), left-padded
    attention_mask: np.ndarray  # (k, L)


@dataclass
class Transition:
    """One token step in each of ``slots``; rows are the observations *after* the step."""

    slots: np.ndarray  # (k,)
    prompts: list[str]
    references: list | None
    input_ids: np.ndarray  # (k, L): the new token is the last column
    attention_mask: np.ndarray  # (k, L)
    steps: np.ndarray  # (k,) tokens generated so far, the new one included
    terminated: np.ndarray  # (k,) bool
    truncated: np.ndarray  # (k,) bool

    @property
    def new_tokens(self) -> np.ndarray:
        return self.input_ids[:, -1]

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def completion_ids(self, i: int) -> np.ndarray:
        """The tokens generated so far in row ``i``."""
        return self.input_ids[i, self.input_ids.shape[1] - self.steps[i] :]


class TokenReward(ABC):
    """A per-token reward: ``weight * rewards(transition)`` is added to each step's reward.

    Subclasses set ``name`` and implement ``rewards``; those with per-episode state override
    ``bind`` (allocate it for ``num_slots`` envs) and ``start`` (reset it when episodes begin).
    An object serves one env (or one vector env): make one per env.
    """

    name: str = "token_reward"

    def __init__(self, weight: float = 1.0):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
            raise ValueError(f"{type(self).__name__} weight must be a finite number, got {weight!r}")
        self.weight = float(weight)
        self.mdp: TextMDP | None = None

    def bind(self, mdp: TextMDP, num_slots: int) -> None:
        if self.mdp is not None:
            raise ValueError(f"this {type(self).__name__} already serves an env; create one per env")
        self.mdp, self.num_slots = mdp, num_slots

    def start(self, episodes: Episodes) -> None:
        """Episodes begin in ``episodes.slots``; stateless rewards ignore this."""

    @abstractmethod
    def rewards(self, transition: Transition) -> np.ndarray:
        """The unweighted reward of each row of ``transition``, shape ``(k,)``."""

    def hindsight(self, transition: Transition) -> dict[int, np.ndarray]:
        """Credit that only the episode's end reveals: for rows of ``transition`` whose episode ended,
        row -> an unweighted, zero-sum array over the episode's tokens, first to last.

        A step's reward cannot change once the agent has it, so such credit moves reward between the
        episode's tokens afterwards: the adapters report it in ``info["reward_redistribution"]``, and
        agents that see whole episodes add it to the per-token rewards (the batched trainer does;
        ``agents.trainers.sb3.RedistributeRewards`` does it for SB3). Agents that ignore it get the
        same return. Most components have none.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"
