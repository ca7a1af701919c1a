"""``ReferenceLogProb``: the environment's half of a per-token KL penalty.

It adds β·log π_ref(a_t | s_t) from a frozen reference LM. With the policy's own half, −β·log
π(a_t | s_t), which the trainers add (through an entropy bonus, or the exact KL), the sum is the
per-token KL penalty −β·(log π − log π_ref) used by RLHF-style PPO.

The reference LM runs once per env step for the whole batch, on one new token per env, with a KV
cache kept across steps; a full forward happens only when an episode starts, for that env's row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from textgym.models import load_causal_lm
from textgym.wrappers.base import Episodes, TokenReward, Transition


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: real tokens count from 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


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
        self.model = model if isinstance(model, PreTrainedModel) else load_causal_lm(model, device=device)
        if device is not None:
            self.model.to(device)
        self.model.requires_grad_(False).eval()
        self.device = self.model.device

    def bind(self, mdp, num_slots: int) -> None:
        super().bind(mdp, num_slots)
        if self.model.config.vocab_size < mdp.vocab_size:
            raise ValueError(f"the reference LM has {self.model.config.vocab_size} logits but the env has "
                             f"{mdp.vocab_size} actions; use a reference LM with the env's tokenizer")
        self.cache = None  # KV for the last L columns of every env's row
        self.mask = torch.zeros(num_slots, mdp.length, dtype=torch.long, device=self.device)
        self.logprobs = torch.zeros(num_slots, self.model.config.vocab_size, device=self.device)

    @torch.no_grad()
    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache=None):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values

    def start(self, episodes: Episodes) -> None:
        """Run the new episodes' whole rows once, and write their KV into the batch cache."""
        slots = torch.as_tensor(episodes.slots, device=self.device)
        ids = torch.as_tensor(episodes.input_ids, device=self.device)
        mask = torch.as_tensor(episodes.attention_mask, device=self.device)
        logprobs, cache = self._forward(ids, mask, positions(mask))
        self.logprobs[slots], self.mask[slots] = logprobs, mask
        if self.cache is None:
            if len(episodes.slots) != self.num_slots:
                raise ValueError("the first reset must start every env")
            self.cache = cache
            return
        for layer, fresh in zip(self.cache.layers, cache.layers):
            layer.keys[slots], layer.values[slots] = fresh.keys.to(layer.keys.dtype), fresh.values.to(layer.values.dtype)

    def rewards(self, t: Transition) -> np.ndarray:
        slots = torch.as_tensor(t.slots, device=self.device)
        tokens = torch.as_tensor(t.new_tokens, device=self.device)
        rewards = self.logprobs[slots, tokens].cpu().numpy().astype(np.float64)
        # Advance every row by one column: stepping rows with their token, the others with pad,
        # attended to by nothing but itself (those rows restart before they are used again).
        new = torch.full((self.num_slots, 1), self.mdp.pad_id, dtype=torch.long, device=self.device)
        new[slots, 0] = tokens
        mask = torch.cat([self.mask, torch.ones(self.num_slots, 1, dtype=torch.long, device=self.device)], dim=1)
        logprobs, self.cache = self._forward(new, mask, self.mask.sum(-1, keepdim=True), self.cache)
        for layer in self.cache.layers:  # only the last L columns can hold real tokens
            layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]
        self.mask, self.logprobs = mask[:, 1:], logprobs
        return rewards
