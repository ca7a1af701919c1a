"""The KL coefficient: fixed, or adaptive towards a target (Ziegler et al. 2019, section 2.2).

Example:
    >>> from agents.trainers.kl import KLController
    >>> kl = KLController(coef=0.1, target=6.0, horizon=10_000)
    >>> kl.update(observed=12.0, tokens=1_000)  # twice the target: the coefficient grows
    >>> round(kl.coef, 4)
    0.102
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class KLController:
    """``coef`` stays put without a ``target``; with one, it moves by up to 20% per ``horizon`` tokens
    in proportion to how far the observed KL (per episode) is from the target."""

    coef: float
    target: float | None = None
    horizon: int = 10_000

    def update(self, observed: float, tokens: int) -> None:
        if self.target is None:
            return
        error = min(max(observed / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * tokens / self.horizon

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.coef, self.target, self.horizon = state["coef"], state["target"], state["horizon"]
