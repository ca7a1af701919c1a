"""The algorithm registry: every ``--algo``, and what the trainer asks of each.

``Algorithm`` is the protocol the batched trainer drives: ``targets`` turns a rollout into the
per-token tensors the update needs, ``loss`` is the objective of one minibatch, and the flags say
whether the policy needs a value head, where the KL penalty goes and whether prompts are sampled
in groups. ``ALGORITHMS`` lists the batched ones and ``SB3_ALGORITHMS`` the stable-baselines3
ones; the config's choices and checks and the CLI's help derive from them, so adding an
algorithm is one class and one entry here.

Example:
    >>> from agents.trainers.algorithms import ALGORITHMS, ALGOS
    >>> ALGOS
    ('ppo', 'grpo', 'rloo', 'sb3-ppo', 'sb3-maskable-ppo')
    >>> [name for name, algo in ALGORITHMS.items() if algo.grouped]
    ['grpo', 'rloo']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from agents.trainers.config import TrainConfig
    from agents.trainers.policy import TokenOutputs
    from agents.trainers.rollout import Batch


class Algorithm:
    """What the batched trainer asks of an algorithm (``PPO``, ``GRPO`` and ``RLOO`` subclass it)."""

    uses_values: bool = False  # the policy needs a value head
    kl_in_reward: bool = True  # the KL penalty is a per-token reward; else the loss adds it
    grouped: bool = False  # each prompt is sampled ``group_size`` times, in adjacent rows
    trains_entropy: bool = False  # the loss differentiates the policy's entropy

    def __init__(self, config: TrainConfig):
        self.config = config

    def targets(self, batch: Batch, old: TokenOutputs, rewards: torch.Tensor, ref_logprobs: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        """Per-token tensors (episodes, tokens) for the update, from the rollout and its rewards."""
        raise NotImplementedError

    def loss(self, new: TokenOutputs, rows: dict[str, torch.Tensor], mask: torch.Tensor, kl_coef: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective of one minibatch of ``targets`` rows, and its statistics."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep (PPO's return normaliser); most algorithms keep nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _batched() -> dict[str, type[Algorithm]]:
    from agents.trainers.grpo import GRPO
    from agents.trainers.ppo import PPO
    from agents.trainers.rloo import RLOO

    return {"ppo": PPO, "grpo": GRPO, "rloo": RLOO}


ALGORITHMS: dict[str, type[Algorithm]] = _batched()
SB3_ALGORITHMS = {  # name -> (SB3 algorithm, agents policy), by import path: SB3 loads only when used
    "sb3-ppo": ("stable_baselines3:PPO", "agents.policies:LLMActorCriticPolicy"),
    "sb3-maskable-ppo": ("sb3_contrib:MaskablePPO", "agents.policies:MaskableLLMActorCriticPolicy"),
}
ALGOS = (*ALGORITHMS, *SB3_ALGORITHMS)
