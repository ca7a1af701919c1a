"""The trainers' model: a causal LM with an optional value head, and its reference for the KL.

``TokenPolicy`` scores whole sequences at once: for a batch of (prompt, completion) rows it gives
the log-prob of every completion token, the value of the state before it, and the entropy of the
distribution it was drawn from. The reference model is the same LM with its LoRA adapters
disabled when LoRA is on (no second copy in memory), else one frozen copy made at the start.

Example:
    >>> import torch
    >>> from agents.trainers.policy import TokenPolicy
    >>> policy = TokenPolicy.load("tiny", with_value=True)
    >>> ids = torch.tensor([[1, 1, 20, 21, 22, 23]]); mask = (ids != 1).long()
    >>> out = policy(ids, mask, completion_tokens=2)
    >>> out.logprobs.shape, out.values.shape
    (torch.Size([1, 2]), torch.Size([1, 2]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import nn

from agents.lm import apply_lora, chunked_logprobs, hidden_states, load_trunk, value_head
from textgym.models.cache import autocast, positions
from textgym.models.sampling import action_logits


class TokenOutputs(NamedTuple):
    logprobs: torch.Tensor  # (B, T): log pi(token_t | prefix), at the sampling temperature; 0 at padding
    values: torch.Tensor | None  # (B, T): V(prefix before token_t)
    entropy: torch.Tensor  # (B, T)


def completion_hidden(lm: nn.Module, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int) -> torch.Tensor:
    """The last hidden states that predict the last ``completion_tokens`` columns, (B, T, H).

    The LM head does not run here: ``completion_logprobs`` applies it in chunks, since at a 50k
    vocabulary a batch's logits would dominate memory."""
    with autocast(ids.device):
        return hidden_states(lm, ids, mask)[:, -completion_tokens - 1 : -1]


def completion_logprobs(lm: nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, real: torch.Tensor,
                        cut: Callable[[torch.Tensor], torch.Tensor], entropy_grad: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies (B, T) of ``tokens`` (B, T) after ``hidden`` (B, T, H), with ``cut``
    turning LM logits into action logits; chunked (``agents.lm.chunked_logprobs``).

    Both are 0 at padding (``real`` 0), whichever forward computes them: a padding token that ``cut``
    forbids has a log-prob of about -3.4e38, and the forwards that score a batch and those that
    update on it pad rows differently; a loss that squares or exponentiates the difference there
    meets inf, and inf times a mask of 0 is NaN."""
    batch, steps = tokens.shape
    with autocast(hidden.device):
        logprobs, entropy = chunked_logprobs(hidden.reshape(batch * steps, -1), lm.get_output_embeddings(),
                                             tokens.reshape(-1), lambda logits, rows: cut(logits), entropy_grad)
    real = real.bool()
    return logprobs.view(batch, steps).where(real, 0.0), entropy.view(batch, steps).where(real, 0.0)


@contextmanager
def train_mode(lm: nn.Module) -> Iterator[None]:
    """``lm`` in train mode, where HF's layers checkpoint; back in eval mode after, where they do
    not (transformers 5.0 would drop the KV cache of sampling in train mode, even without grad).
    Nothing else changes: ``load_trunk`` turned dropout off."""
    lm.train()
    try:
        yield
    finally:
        lm.eval()


class TokenPolicy(nn.Module):
    """A causal LM actor, with a value head on its last hidden state when ``with_value``."""

    def __init__(self, lm: nn.Module, vocab: int, with_value: bool, temperature: float = 1.0,
                 allowed: torch.Tensor | None = None, gradient_checkpointing: bool = False):
        super().__init__()
        self.lm, self.vocab, self.temperature = lm, vocab, temperature
        self.gradient_checkpointing = gradient_checkpointing
        self.allowed = allowed  # the env's action mask: what it forbids gets probability 0, as when sampling
        self.value_head = value_head(lm.config.hidden_size) if with_value else None  # peft forwards .config

    @classmethod
    def load(cls, model: str, with_value: bool, lora: dict | None = None, temperature: float = 1.0,
             dtype: torch.dtype | None = None, allowed: torch.Tensor | None = None,
             gradient_checkpointing: bool = False) -> TokenPolicy:
        lm, tokenizer = load_trunk(model, dtype=dtype)
        if lora is not None:
            lm = apply_lora(lm, lora)
        if gradient_checkpointing:
            # Newer transformers deprecate the old name; 5.0 has only it.
            enable = getattr(lm, "activation_checkpointing_enable", lm.gradient_checkpointing_enable)
            enable({"use_reentrant": False})
        return cls(lm, len(tokenizer), with_value, temperature, allowed, gradient_checkpointing)

    def action_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return action_logits(logits, self.vocab, self.temperature, self.allowed)

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.lm, "disable_adapter")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int,
                entropy_grad: bool = True) -> TokenOutputs:
        """``entropy_grad``: whether the loss differentiates the entropy (``Algorithm.trains_entropy``)."""
        with train_mode(self.lm) if self.gradient_checkpointing else nullcontext():
            hidden = completion_hidden(self.lm, ids, mask, completion_tokens)
        logprobs, entropy = completion_logprobs(self.lm, hidden, ids[:, -completion_tokens:],
                                                mask[:, -completion_tokens:], self.action_logits, entropy_grad)
        values = None if self.value_head is None else self.value_head(hidden.float()).squeeze(-1)
        return TokenOutputs(logprobs, values, entropy)


class Reference:
    """Log-probs of the reference model: the LoRA base with adapters off, or a frozen copy."""

    def __init__(self, policy: TokenPolicy):
        self.policy = policy
        self.frozen = None if policy.uses_lora else copy.deepcopy(policy.lm).requires_grad_(False).eval()

    @torch.no_grad()
    def logprobs(self, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int) -> torch.Tensor:
        lm = self.frozen if self.frozen is not None else self.policy.lm
        with nullcontext() if self.frozen is not None else lm.disable_adapter():
            hidden = completion_hidden(lm, ids, mask, completion_tokens)
            return completion_logprobs(lm, hidden, ids[:, -completion_tokens:], mask[:, -completion_tokens:],
                                       self.policy.action_logits)[0]
