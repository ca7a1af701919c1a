"""``ReferenceLogProb``: the environment's half of a per-token KL penalty.

It adds β·log π_ref(a_t | s_t) from a frozen reference LM. With the policy's own half, −β·log
π(a_t | s_t), which the trainers add (through an entropy bonus, or the exact KL), the sum is the
per-token KL penalty −β·(log π − log π_ref) used by RLHF-style PPO.

The reference LM runs once per env step for the whole batch, on one new token per env, with a KV
cache kept across steps; a full forward happens only when an episode starts, for that env's row.
``ActionLogProbs`` is that mechanism, which ``textgym.rewards.ImplicitTokenReward`` uses too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from textgym.models import load_causal_lm
from textgym.models.cache import RowCache
from textgym.wrappers.base import Episodes, TokenReward, Transition


class ActionLogProbs:
    """log π(a_t | s_t) of each env's actions under a frozen LM, batched, with a KV cache."""

    def __init__(self, model: str | Path | PreTrainedModel, device: str | torch.device | None = None):
        self.model = model if isinstance(model, PreTrainedModel) else load_causal_lm(model, device=device)
        if device is not None:
            self.model.to(device)
        self.model.requires_grad_(False).eval()
        self.device = self.model.device

    def bind(self, mdp, num_slots: int) -> None:
        if self.model.config.vocab_size < mdp.vocab_size:
            raise ValueError(f"the LM {self.model.config.name_or_path!r} has {self.model.config.vocab_size} logits but "
                             f"the env has {mdp.vocab_size} actions; use an LM with the env's tokenizer")
        self.cache = RowCache(self.model, num_slots, mdp.length, mdp.pad_id)
        self.logprobs = torch.zeros(num_slots, self.model.config.vocab_size, device=self.device)

    def start(self, episodes: Episodes) -> None:
        """Run the new episodes' whole rows once, into the batch cache."""
        slots = torch.as_tensor(episodes.slots, device=self.device)
        logits, _ = self.cache.restart(slots, torch.as_tensor(episodes.input_ids),
                                       torch.as_tensor(episodes.attention_mask))
        self.logprobs[slots] = torch.log_softmax(logits, dim=-1)

    def taken(self, t: Transition) -> np.ndarray:
        """log π(a_t | s_t) of the transition's new tokens; then every row advances by its token."""
        slots = torch.as_tensor(t.slots, device=self.device)
        tokens = torch.as_tensor(t.new_tokens, device=self.device)
        logprobs = self.logprobs[slots, tokens].cpu().numpy().astype(np.float64)
        logits, _ = self.cache.advance(self.cache.tokens_for(slots, tokens))
        self.logprobs = torch.log_softmax(logits, dim=-1)
        return logprobs


class ReferenceLogProb(TokenReward):
    """r_t += β·log π_ref(a_t | s_t), from a frozen reference LM (``"tiny"``, a path, an id or a model).

    Example:
        >>> import gymnasium as gym, textgym
        >>> from textgym.wrappers import ReferenceLogProb, TokenRewardWrapper
        >>> env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0"), ReferenceLogProb("tiny", beta=0.1, device="cpu"))
        >>> _ = env.reset(seed=0, options={"prompt": "12 + 30 ="})
        >>> tok = env.unwrapped.tokenizer
        >>> likely, unlikely = tok(" ")["input_ids"][0], tok(" cake")["input_ids"][0]
        >>> env.step(likely)[1] > -0.1 > env.step(unlikely)[1]
        True
    """

    name = "reference_logprob"

    def __init__(self, model: str | Path | PreTrainedModel = "tiny", beta: float = 0.05,
                 device: str | torch.device | None = None):
        super().__init__(beta)  # the weight is β
        self.reference = ActionLogProbs(model, device)
        self.model = self.reference.model

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        self.reference.bind(mdp, num_slots)

    def start(self, episodes: Episodes) -> None:
        self.reference.start(episodes)

    def rewards(self, t: Transition) -> np.ndarray:
        return self.reference.taken(t)
