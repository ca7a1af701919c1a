"""Per-token reward components: potential-based shaping and penalties charged as they occur.

Each adds ``weight * value`` to the step's reward; penalties take a positive size and contribute
negatively. Apply them with ``TokenRewardWrapper`` (single env) or ``VectorTokenRewardWrapper``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from textgym.scorers.base import run_scorer, scorer_name
from textgym.scorers.rules import KeywordCoverage
from textgym.wrappers.base import Episodes, TokenReward, Transition


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class Potential(ABC):
    """Φ of every env's state, for ``PotentialShaping``: one value per row, batched over the envs.

    ``start`` gives Φ(s_0) of new episodes and ``step`` Φ of each row's state after a transition
    (``PotentialShaping`` sets Φ = 0 where the episode ended). Potentials that keep per-env state
    (a KV cache) allocate it in ``bind``.
    """

    name: str = "potential"

    def bind(self, mdp, num_slots: int) -> None:
        """Serve ``num_slots`` envs of ``mdp``; stateless potentials ignore this."""

    @abstractmethod
    def start(self, episodes: Episodes) -> np.ndarray:
        """Φ(prompt) of each new episode, shape ``(k,)``."""

    @abstractmethod
    def step(self, transition: Transition) -> np.ndarray:
        """Φ of each row's new state, shape ``(k,)``; rows that ended may hold anything."""


class ScorerPotential(Potential):
    """Φ(s) = a sequence scorer's score of the partial completion: one batched call per step, for the
    rows still running."""

    def __init__(self, scorer: Callable):
        if not callable(scorer):
            raise TypeError(f"PotentialShaping needs a scorer (prompts, completions) -> scores or a Potential, "
                            f"got {scorer!r}")
        self.scorer = scorer
        self.name = scorer_name(scorer)

    def bind(self, mdp, num_slots: int) -> None:
        self.mdp = mdp

    def start(self, episodes: Episodes) -> np.ndarray:
        return run_scorer(self.scorer, episodes.prompts, [""] * len(episodes.slots), episodes.references)

    def step(self, t: Transition) -> np.ndarray:
        values = np.zeros(len(t.slots))
        live = np.flatnonzero(~t.done)
        if len(live):
            texts = self.mdp.decode([t.completion_ids(i) for i in live])
            references = None if t.references is None else [t.references[i] for i in live]
            values[live] = run_scorer(self.scorer, [t.prompts[i] for i in live], texts, references)
        return values


class PotentialShaping(TokenReward):
    """r_t += γ·Φ(s_{t+1}) − Φ(s_t), with Φ(end) = 0.

    Φ is a ``Potential`` (``textgym.rewards.LearnedPotential``, say) or a sequence scorer, read
    on the partial completion. This is the shaping that provably leaves the optimal policy
    unchanged (Ng, Harada & Russell, 1999): with γ = 1 the shaping terms of an episode telescope
    to −Φ(s_0), which no action can change. Each token costs one batched call of Φ, because Φ of
    the previous state is cached per env.

    Example:
        >>> import gymnasium as gym, textgym
        >>> from textgym.scorers import VaderSentiment
        >>> from textgym.wrappers import PotentialShaping, TokenRewardWrapper
        >>> env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0"), PotentialShaping(VaderSentiment()))
        >>> obs, info = env.reset(seed=0, options={"prompt": "Film review:"})
        >>> tok = env.unwrapped.tokenizer
        >>> obs, reward, *_, info = env.step(tok(" great")["input_ids"][0])  # Φ: 0.5 (neutral) -> 0.81
        >>> round(reward, 3), info["reward_components"]["task"]
        (0.312, 0.0)
    """

    name = "potential_shaping"

    def __init__(self, potential: Potential | Callable, gamma: float = 1.0, weight: float = 1.0):
        super().__init__(weight)
        self.source = potential if isinstance(potential, Potential) else ScorerPotential(potential)
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.gamma = float(gamma)

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        self.source.bind(mdp, num_slots)
        self.potential = np.zeros(num_slots)  # Φ of each env's current state

    def start(self, episodes: Episodes) -> None:
        self.potential[episodes.slots] = self.source.start(episodes)

    def rewards(self, t: Transition) -> np.ndarray:
        following = np.where(t.done, 0.0, self.source.step(t))  # Φ(terminal) = 0
        shaping = self.gamma * following - self.potential[t.slots]
        self.potential[t.slots] = following
        return shaping

    def __repr__(self) -> str:
        return f"PotentialShaping({self.source.name}, gamma={self.gamma}, weight={self.weight})"


class RepetitionPenalty(TokenReward):
    """−penalty at each token that completes an n-gram already present in the completion.

    Example:
        >>> import gymnasium as gym, textgym
        >>> from textgym.wrappers import RepetitionPenalty, TokenRewardWrapper
        >>> env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0"), RepetitionPenalty(n=2, penalty=0.5))
        >>> _ = env.reset(seed=0)
        >>> [env.step(t)[1] for t in [7, 8, 7, 8, 9]]
        [0.0, 0.0, 0.0, -0.5, 0.0]
    """

    name = "repetition"

    def __init__(self, n: int = 3, penalty: float = 1.0):
        super().__init__(-_positive("penalty", penalty))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.n = n

    def rewards(self, t: Transition) -> np.ndarray:
        n, length = self.n, t.input_ids.shape[1]
        grams = sliding_window_view(t.input_ids, n, axis=1)  # (k, L - n + 1, n): grams[:, j] starts at j
        last = grams[:, -1:]  # the n-gram that ends with the new token
        same = (grams[:, :-1] == last).all(axis=-1)  # (k, L - n)
        # Only earlier n-grams that lie wholly inside the completion count.
        starts = np.arange(length - n)
        inside = starts[None, :] >= (length - t.steps)[:, None]
        return (same & inside).any(axis=1).astype(float)


class LengthPenalty(TokenReward):
    """−penalty for every generated token: a constant cost that favours shorter completions."""

    name = "length"

    def __init__(self, penalty: float = 0.01):
        super().__init__(-_positive("penalty", penalty))

    def rewards(self, t: Transition) -> np.ndarray:
        return np.ones(len(t.slots))


class TargetLength(TokenReward):
    """−penalty per token past ``target``, and −penalty per missing token when EOS comes early.

    Over an episode that ends at EOS after T tokens this charges penalty·|T − target|, as the
    tokens happen, rather than all at the end.
    """

    name = "target_length"

    def __init__(self, target: int, penalty: float = 0.05):
        super().__init__(-_positive("penalty", penalty))
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ValueError(f"target must be a positive int, got {target!r}")
        self.target = target

    def rewards(self, t: Transition) -> np.ndarray:
        over = (t.steps > self.target).astype(float)
        short = np.where(t.terminated, np.maximum(self.target - t.steps, 0), 0)
        return over + short


class MissingEOSPenalty(TokenReward):
    """−penalty when an episode is truncated at the length limit without having chosen EOS."""

    name = "missing_eos"

    def __init__(self, penalty: float = 1.0):
        super().__init__(-_positive("penalty", penalty))

    def rewards(self, t: Transition) -> np.ndarray:
        return t.truncated.astype(float)


class KeywordHit(TokenReward):
    """+bonus at the token where each required word first appears (inflection-tolerant stems).

    The words are ``keywords`` for every episode, or else each episode's references (a list of
    words, as in ``textgym/Keywords-v0``).
    """

    name = "keyword_hit"

    def __init__(self, keywords: Sequence[str] | None = None, bonus: float = 1.0):
        super().__init__(_positive("bonus", bonus))
        self.coverage = KeywordCoverage(keywords)  # one stemming rule for the scorer and the bonus

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        self.required: list[set[str]] = [set() for _ in range(num_slots)]
        self.found: list[set[str]] = [set() for _ in range(num_slots)]

    def start(self, episodes: Episodes) -> None:
        for j, slot in enumerate(episodes.slots):
            if self.coverage.keywords is not None:
                self.required[slot] = set(self.coverage.keywords)
            elif episodes.references is None:
                raise ValueError("KeywordHit without keywords takes each episode's references as its words; "
                                 "the env's prompts have no references")
            else:
                words = episodes.references[j]
                self.required[slot] = self.coverage.stems(" ".join([words] if isinstance(words, str) else words))
            self.found[slot] = set()

    def rewards(self, t: Transition) -> np.ndarray:
        texts = self.mdp.decode([t.completion_ids(i) for i in range(len(t.slots))])
        hits = np.zeros(len(t.slots))
        for i, (slot, text) in enumerate(zip(t.slots, texts)):
            new = (self.required[slot] & self.coverage.stems(text)) - self.found[slot]
            self.found[slot] |= new
            hits[i] = len(new)
        return hits
