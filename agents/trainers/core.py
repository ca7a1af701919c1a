"""Token-level math the algorithms share: masked statistics, returns-to-go, the clipped objective.

Every tensor is (episodes, completion tokens) with a float ``mask`` marking the tokens an episode
actually took; padding after an episode's end never enters a mean.

Example:
    >>> import torch
    >>> from agents.trainers.core import returns_to_go
    >>> returns_to_go(torch.tensor([[1.0, 0.0, 2.0]]), torch.ones(1, 3))
    tensor([[3., 2., 2.]])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Scale to unit variance over the masked entries (and centre them, if ``shift_mean``)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


@dataclass
class RunningMoments:
    """Mean and variance of every masked value seen so far, merged batch by batch (Chan et al.
    1979). Under torch.distributed the batch sums are all-reduced, so every process holds the
    same moments.

    Example:
        >>> moments = RunningMoments()
        >>> moments.update(torch.tensor([[1.0, 3.0]]), torch.ones(1, 2))
        >>> moments.update(torch.tensor([[5.0, 9.0]]), torch.tensor([[1.0, 0.0]]))
        >>> moments.mean, moments.var, moments.count
        (3.0, 2.6666666666666665, 3.0)
    """

    mean: float = 0.0
    var: float = 1.0
    count: float = 0.0

    @property
    def std(self) -> float:
        return max(self.var, 1e-8) ** 0.5

    def update(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        sums = torch.stack([mask.sum(), (values * mask).sum(), (values**2 * mask).sum()]).double()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        n, total, total_sq = sums.tolist()
        if n == 0:
            return
        batch_mean = total / n
        batch_var = max(total_sq / n - batch_mean**2, 0.0)
        merged, delta = self.count + n, batch_mean - self.mean
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / merged) / merged
        self.mean += delta * n / merged
        self.count = merged

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted sum of the rewards from each token to the episode's end."""
    rewards = rewards * mask
    return rewards.flip(1).cumsum(1).flip(1) * mask


def group_credit(rewards: torch.Tensor, mask: torch.Tensor, whole_episode: bool) -> torch.Tensor:
    """The return GRPO and RLOO credit each token with: the return from the token on, or with
    ``whole_episode`` the episode's return at every token.

    Token by token, a later token's return is measured against the group's return still to come at
    the same position (``group_baseline``), which fits a potential's rewards (shaping telescopes to
    score - Phi(prefix)). A conversation's turns differ in number and length between the samples, so
    a position is no common point in the game there, and every token gets the episode's return.
    """
    returns = returns_to_go(rewards, mask)
    return returns[:, :1] * mask if whole_episode else returns


def group_baseline(returns: torch.Tensor, mask: torch.Tensor, group_size: int, leave_one_out: bool = False
                   ) -> torch.Tensor:
    """GRPO's and RLOO's baseline at each token: the mean return still to come, at the same position,
    in the other samples of the group (``leave_one_out``, RLOO) or in the whole group (GRPO).

    A finished sample counts the return of its last token. With sparse rewards every token's return
    is the score, so the baseline is the group's mean score throughout, as in outcome-supervised
    GRPO and sequence-level RLOO. With dense rewards a late token is measured against what the group
    still had to earn at that point, not against the group's whole return: under potential shaping
    G_t = score - Phi(prefix) falls as a sample writes what scores, and the whole mean return as a
    baseline would push down every token written after the first hits. Rows of a group are adjacent.

    Example (a group of 2; the first sample earns its reward at its first token):
        >>> import torch
        >>> returns = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        >>> group_baseline(returns, torch.ones(2, 2), group_size=2)
        tensor([[0.5000, 0.0000],
                [0.5000, 0.0000]])
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    latest = torch.where(mask.bool(), positions, 0).cummax(1).values  # the last completion token so far
    to_come = returns.gather(1, latest).view(-1, group_size, returns.shape[1])
    total = to_come.sum(1, keepdim=True)
    mean = (total - to_come) / (group_size - 1) if leave_one_out else total.expand_as(to_come) / group_size
    return mean.reshape_as(returns)


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate (Schulman et al. 2017), averaged over tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {"policy/loss": loss.item(), "val/ratio": masked_mean(ratio, mask).item(),
             "val/clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
             "policy/approx_kl": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask).item()}
    return loss, stats


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(pi || ref) from sampled tokens (Schulman, "Approximating KL divergence", 2020).

    k1 = log pi - log ref is unbiased but can be negative; k3 = (r - 1) - log r with
    r = ref / pi is unbiased and never negative, with lower variance near pi = ref.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl estimator must be 'k1' or 'k3', got {estimator!r}")
