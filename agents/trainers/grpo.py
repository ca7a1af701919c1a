"""GRPO (Shao et al. 2024, DeepSeekMath): k samples per prompt, advantages normalised in the group.

No critic: each prompt is sampled ``group_size`` times and a completion's advantage is its return
minus the group's mean, over the group's standard deviation. Textgym's rewards arrive per token,
so the advantage of token t uses the return from t on (the process-supervision form of the paper),
against the group's mean return still to come at the same position (``core.group_baseline``):

    A_t = (G_t - mean_group G_t) / std,    G_t = sum of the rewards from token t on,

where a finished sample counts the return of its last token, and the standard deviation runs over
every token of the group. With sparse rewards G_t = G_0 and this is outcome-supervised GRPO (its
std weighted by episode length). With potential-based shaping G_t = score - Phi(prefix before t),
the score still to earn. Against the whole mean return instead, every token written after a hit
would be pushed down: on Keywords that made GRPO with shaping collapse (KL to the base model above
100 nats); with the position's mean it reaches the sparse threshold. Taking the spread over tokens,
not just outcomes, matters there: when every sample of a prompt scores the same, the outcomes'
std is 0 while the potentials still differ, and dividing by it would blow the advantages up. In a
conversation every token is credited with its episode's return, G_t = G_0 (``core.group_credit``).
The KL to the reference is a loss term with the k3 estimator, weighted by the KL coefficient.

Example (``textgym train ENV_ID --algo grpo``; here a group of 2 samples, sparse rewards):
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from agents.trainers import TrainConfig
    >>> from agents.trainers.grpo import GRPO
    >>> rewards, mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.ones(2, 2)
    >>> old = SimpleNamespace(logprobs=torch.zeros(2, 2))
    >>> grpo = GRPO(TrainConfig(algo="grpo", group_size=2, num_envs=2, minibatch_size=2))
    >>> grpo.targets(SimpleNamespace(completion_mask=mask, conversation=False), old, rewards, None)["advantages"]
    tensor([[ 0.8659,  0.8659],
            [-0.8659, -0.8659]])
"""

from __future__ import annotations

import torch

from agents.trainers.algorithms import Algorithm
from agents.trainers.core import clipped_policy_loss, group_baseline, group_credit, kl_estimate, masked_mean
from agents.trainers.policy import TokenOutputs
from agents.trainers.rollout import Batch


class GRPO(Algorithm):
    uses_values = False
    kl_in_reward = False
    grouped = True

    def targets(self, batch: Batch, old: TokenOutputs, rewards: torch.Tensor, ref_logprobs: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        mask = batch.completion_mask
        returns = group_credit(rewards, mask, batch.conversation)
        k = self.config.group_size
        centred = (returns - group_baseline(returns, mask, k)).view(-1, k * returns.shape[1])
        group_mask = mask.view(-1, k * mask.shape[1])  # rows of one group are adjacent
        tokens = group_mask.sum(1, keepdim=True)
        token_mean = (centred * group_mask).sum(1, keepdim=True) / tokens
        std = (((centred - token_mean) ** 2 * group_mask).sum(1, keepdim=True) / (tokens - 1).clamp(min=1)).sqrt()
        advantages = (centred / (std + 1e-4) * group_mask).view_as(returns)
        targets = {"old_logprobs": old.logprobs, "advantages": advantages}
        if ref_logprobs is not None:
            targets["ref_logprobs"] = ref_logprobs
        return targets

    def loss(self, new: TokenOutputs, rows: dict[str, torch.Tensor], mask: torch.Tensor, kl_coef: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = clipped_policy_loss(new.logprobs, rows["old_logprobs"], rows["advantages"], mask,
                                          self.config.clip_range)
        if "ref_logprobs" in rows:
            kl = masked_mean(kl_estimate(new.logprobs, rows["ref_logprobs"], "k3"), mask)
            loss = loss + kl_coef * kl
        return loss, stats
