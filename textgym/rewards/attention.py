"""Attention credit (Chan et al. 2024, "Dense Reward for Free in RLHF"): a reward model's score,
spread over the completion's tokens by the model's own attention.

A reward model scores a whole text from its final token. That token's attention in the last layer
(averaged over heads) says which tokens the score was read from; giving each completion token a
share of the score proportional to that attention is a dense reward that costs one forward per
episode. ``AttentionCredit(scorer, alpha)`` gives a share α of the score this way and leaves
1 − α at the last token, where the sparse score is; an episode's rewards still sum to the score.

The shares exist only once the episode has ended, and a step's reward cannot change afterwards.
So the env's rewards stay as they are (the score at the last token) and the component reports the
shift, a zero-sum array over the episode's tokens, in ``info["reward_redistribution"]``
(``TokenReward.hindsight``). The batched trainer applies it; ``agents.trainers.sb3.RedistributeRewards``
applies it for SB3; an agent that ignores it trains on the sparse reward.

Example:
    >>> import gymnasium as gym, textgym
    >>> env = gym.make("textgym/Preference-v0", reward_mode="attention", max_new_tokens=4)
    >>> _ = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    ...     done = terminated or truncated
    >>> shift = info["reward_redistribution"]
    >>> len(shift) == len(info["completion_ids"]), abs(sum(shift)) < 1e-6
    (True, True)
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from textgym.models.cache import positions
from textgym.rewards.rollouts import tokenizer_fingerprint
from textgym.scorers.learned import SequenceClassifierScore
from textgym.wrappers.base import TokenReward, Transition


class AttentionCredit(TokenReward):
    """Spread α of a reward model's score over the completion by the model's last-layer attention.

    Args:
        reward_model: a ``RewardModelScore`` (or another one-output ``SequenceClassifierScore``)
            whose tokenizer is the env's: the attention is read over the env's own tokens.
        alpha: the share of the score spread, in [0, 1]; the rest stays at the last token.
    """

    name = "attention_credit"

    def __init__(self, reward_model: SequenceClassifierScore, alpha: float = 0.5):
        super().__init__(1.0)
        if not isinstance(reward_model, SequenceClassifierScore) or reward_model.model.config.num_labels != 1:
            raise TypeError(f"AttentionCredit spreads a reward model's score; it needs a RewardModelScore, "
                            f"got {reward_model!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1] (the share of the score spread), got {alpha!r}")
        self.alpha = float(alpha)
        self.tokenizer = reward_model.tokenizer
        # Attention weights come only from the eager implementation (SDPA fuses them away).
        self.model = AutoModelForSequenceClassification.from_pretrained(
            reward_model.model.name_or_path, attn_implementation="eager").to(reward_model.model.device).eval()

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        if tokenizer_fingerprint(self.tokenizer) != tokenizer_fingerprint(mdp.tokenizer):
            raise ValueError(f"AttentionCredit reads the reward model's attention over the env's tokens, so the reward "
                             f"model's tokenizer ({self.tokenizer.name_or_path!r}) must be the env's "
                             f"({mdp.tokenizer.name_or_path!r})")

    def rewards(self, t: Transition) -> np.ndarray:
        return np.zeros(len(t.slots))  # the score itself is the env's, at the last token

    @torch.no_grad()
    def hindsight(self, t: Transition) -> dict[int, np.ndarray]:
        rows = np.flatnonzero(t.done)
        if not len(rows):
            return {}
        ids = torch.as_tensor(t.input_ids[rows], device=self.model.device)
        mask = torch.as_tensor(t.attention_mask[rows], device=self.model.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_attentions=True)
        scores = out.logits[:, 0].double().cpu().numpy()
        attention = out.attentions[-1][:, :, -1].mean(1).double().cpu().numpy()  # (k, L): the final token's, per column
        credit = {}
        for j, row in enumerate(rows):
            shares = attention[j, -int(t.steps[row]) :]  # rows are left-padded: the completion is the last columns
            shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1 / len(shares))
            last = np.zeros(len(shares))
            last[-1] = 1.0
            credit[int(row)] = self.alpha * scores[j] * (shares - last)
        return credit
