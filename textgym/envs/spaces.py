"""Action spaces whose ``sample()`` draws valid tokens only.

The action space stays ``Discrete(V)`` (any library that checks for ``Discrete`` or compares spaces
sees one), but a bare ``sample()``, as ``check_env`` and random-policy loops call it, draws from
the env's ``action_masks()`` instead of all V ids: the env rejects pad and disallowed ids.

Example:
    >>> import numpy as np
    >>> space = TokenSpace(np.array([True, False, True]), seed=0)
    >>> bool(space == Discrete(3)), {int(space.sample()) for _ in range(50)}
    (True, {0, 2})
"""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Discrete, MultiDiscrete


class TokenSpace(Discrete):
    """``Discrete(len(valid))`` that samples only ids where ``valid`` is True (unless given a mask)."""

    def __init__(self, valid: np.ndarray, seed: int | None = None):
        super().__init__(len(valid), seed=seed)
        self.valid = np.asarray(valid, dtype=np.int8)

    def sample(self, mask: np.ndarray | None = None, probability: np.ndarray | None = None) -> np.int64:
        if mask is None and probability is None:
            mask = self.valid
        return super().sample(mask, probability)


class TokenBatchSpace(MultiDiscrete):
    """``MultiDiscrete([V] * num_envs)``, a vector env's actions, sampling valid ids per env."""

    def __init__(self, valid: np.ndarray, num_envs: int, seed: int | None = None):
        super().__init__(np.full(num_envs, len(valid)), seed=seed)
        self.valid = np.asarray(valid, dtype=np.int8)

    def sample(self, mask: tuple | None = None, probability: tuple | None = None) -> np.ndarray:
        if mask is None and probability is None:
            mask = (self.valid,) * len(self.nvec)
        return super().sample(mask, probability)
