"""PPO over tokens, as in RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Huang et al. 2024).

Each completion token is an action. Its reward is what the env's wrappers gave for it (the task
score at the last token, plus any immediate rewards) minus ``kl_coef`` times the per-token KL to
the reference model. A value head on the shared trunk estimates the return; GAE(gamma, lambda)
turns rewards and values into advantages, which are whitened over the batch. The loss is the
clipped surrogate, a clipped value loss and an entropy bonus.

With ``normalize_values`` (the default) the value head predicts returns normalised by their
running mean and std (value normalisation, as in MAPPO, Yu et al. 2022). Task scores come on any
scale: the Preference reward model's are about 6, and a head that must first climb from 0 to 6
sends gradients 20 times the policy's into the shared trunk, which then forgets how to write.

Example (``textgym train ENV_ID --algo ppo`` runs it; here GAE on one 3-token episode):
    >>> import torch
    >>> from agents.trainers.ppo import gae
    >>> rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]])
    >>> gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)  # return 1 minus each value
    tensor([[0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from agents.trainers.algorithms import Algorithm
from agents.trainers.core import RunningMoments, clipped_policy_loss, masked_mean, masked_whiten
from agents.trainers.policy import TokenOutputs
from agents.trainers.rollout import Batch

if TYPE_CHECKING:
    from agents.trainers.config import TrainConfig


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates over the tokens with ``mask`` 1, the policy's actions; the
    state after an episode's last action is worth 0. Tokens with ``mask`` 0 are skipped: padding,
    and in a conversation the other side's replies, so the state after a turn's last token is the
    next turn's first (its reply is part of the transition, not an action)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # the advantage of the next action
    next_value = torch.zeros_like(rewards[:, 0])  # the value of the next action's state
    for t in reversed(range(rewards.shape[1])):
        acts = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(acts, delta + gamma * lam * running, running)
        next_value = torch.where(acts, values[:, t], next_value)
        advantages[:, t] = running
    return advantages * mask


class PPO(Algorithm):
    uses_values = True
    kl_in_reward = True

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.returns = RunningMoments()  # identity (mean 0, std 1) until the first update

    def targets(self, batch: Batch, old: TokenOutputs, rewards: torch.Tensor, ref_logprobs: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        mask = batch.completion_mask
        if self.config.whiten_rewards:  # scale only: shifting would change the optimal policy's length
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        values = old.values * self.returns.std + self.returns.mean  # in reward units
        advantages = gae(rewards, values, mask, self.config.gamma, self.config.gae_lambda)
        returns = advantages + values
        if self.config.normalize_values:
            self.returns.update(returns, mask)
            returns = (returns - self.returns.mean) / self.returns.std * mask
        if self.config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        # The value loss compares the head's own outputs with the (normalised) returns.
        return {"old_logprobs": old.logprobs, "old_values": old.values, "advantages": advantages,
                "returns": returns}

    @property
    def trains_entropy(self) -> bool:
        return self.config.ent_coef != 0

    def state_dict(self) -> dict:
        return {"returns": self.returns.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "returns" in state:  # checkpoints of runs that had not updated yet may lack it
            self.returns.load_state_dict(state["returns"])

    def loss(self, new: TokenOutputs, rows: dict[str, torch.Tensor], mask: torch.Tensor, kl_coef: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        policy_loss, stats = clipped_policy_loss(new.logprobs, rows["old_logprobs"], rows["advantages"], mask,
                                                 c.clip_range)
        old_values, returns = rows["old_values"], rows["returns"]
        clipped_values = old_values + (new.values - old_values).clamp(-c.clip_range_value, c.clip_range_value)
        value_loss = 0.5 * masked_mean(torch.maximum((new.values - returns) ** 2, (clipped_values - returns) ** 2),
                                       mask)
        entropy = masked_mean(new.entropy, mask)
        loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        return loss, stats | {"val/value_loss": value_loss.item()}
