"""RLOO (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline over k samples per prompt.

Each prompt is sampled ``group_size`` times; a completion's baseline is the mean return of the
*other* samples of its prompt, so it is unbiased without a critic. As in PPO, the KL to the
reference enters the reward, and per-token rewards give per-token returns:

    A_t = G_t - mean_{j != i} G_t^j,    G_t = sum of the (KL-penalised) rewards from token t on,

the other samples' return still to come at the same position, a finished one counting the return
of its last token (``core.group_baseline``). With sparse rewards and no KL this is sequence-level
RLOO exactly; in a conversation G_t = G_0 for every token (``core.group_credit``), as in GRPO.
Updates use the clipped surrogate, so several epochs over a batch stay safe; advantages are
whitened when ``whiten_advantages``.

Example (``textgym train ENV_ID --algo rloo``; here one prompt, three samples, sparse rewards):
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from agents.trainers import TrainConfig
    >>> from agents.trainers.rloo import RLOO
    >>> rewards = torch.tensor([[1.0], [2.0], [6.0]])
    >>> rloo = RLOO(TrainConfig(algo="rloo", group_size=3, num_envs=3, minibatch_size=3, whiten_advantages=False))
    >>> batch = SimpleNamespace(completion_mask=torch.ones(3, 1), conversation=False)
    >>> old = SimpleNamespace(logprobs=torch.zeros(3, 1))
    >>> rloo.targets(batch, old, rewards, None)["advantages"].flatten()  # each minus the mean of the others
    tensor([-3.0000, -1.5000,  4.5000])
"""

from __future__ import annotations

import torch

from agents.trainers.algorithms import Algorithm
from agents.trainers.core import clipped_policy_loss, group_baseline, group_credit, masked_whiten
from agents.trainers.policy import TokenOutputs
from agents.trainers.rollout import Batch


class RLOO(Algorithm):
    uses_values = False
    kl_in_reward = True
    grouped = True

    def targets(self, batch: Batch, old: TokenOutputs, rewards: torch.Tensor, ref_logprobs: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        mask, k = batch.completion_mask, self.config.group_size
        returns = group_credit(rewards, mask, batch.conversation)
        advantages = (returns - group_baseline(returns, mask, k, leave_one_out=True)) * mask
        if self.config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return {"old_logprobs": old.logprobs, "advantages": advantages}

    def loss(self, new: TokenOutputs, rows: dict[str, torch.Tensor], mask: torch.Tensor, kl_coef: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
        return clipped_policy_loss(new.logprobs, rows["old_logprobs"], rows["advantages"], mask,
                                   self.config.clip_range)
