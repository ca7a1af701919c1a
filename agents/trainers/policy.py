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
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from agents.lm import apply_lora, load_trunk, value_head
from textgym.models.cache import positions
from textgym.models.sampling import action_logits


class TokenOutputs(NamedTuple):
    logprobs: torch.Tensor  # (B, T): log pi(token_t | prefix), at the sampling temperature
    values: torch.Tensor | None  # (B, T): V(prefix before token_t)
    entropy: torch.Tensor  # (B, T)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def completion_logits(lm: nn.Module, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting the last ``completion_tokens`` columns, and the hidden states they come from.

    Only those positions leave the LM head: with a 50k vocabulary the prompt's logits would
    dominate memory for nothing."""
    with autocast(ids.device):
        out = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True,
                 logits_to_keep=completion_tokens + 1)
    hidden = out.hidden_states[-1][:, -completion_tokens - 1 : -1]
    return out.logits[:, :-1].float(), hidden


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``tokens`` under ``logits`` and the entropies of those distributions."""
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


class TokenPolicy(nn.Module):
    """A causal LM actor, with a value head on its last hidden state when ``with_value``."""

    def __init__(self, lm: nn.Module, vocab: int, with_value: bool, temperature: float = 1.0,
                 allowed: torch.Tensor | None = None):
        super().__init__()
        self.lm, self.vocab, self.temperature = lm, vocab, temperature
        self.allowed = allowed  # the env's action mask: what it forbids gets probability 0, as when sampling
        self.value_head = value_head(lm.config.hidden_size) if with_value else None  # peft forwards .config

    @classmethod
    def load(cls, model: str, with_value: bool, lora: dict | None = None, temperature: float = 1.0,
             dtype: torch.dtype | None = None, allowed: torch.Tensor | None = None) -> TokenPolicy:
        lm, tokenizer = load_trunk(model, dtype=dtype)
        if lora is not None:
            lm = apply_lora(lm, lora)
        return cls(lm, len(tokenizer), with_value, temperature, allowed)

    def action_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return action_logits(logits, self.vocab, self.temperature, self.allowed)

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.lm, "disable_adapter")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int) -> TokenOutputs:
        logits, hidden = completion_logits(self.lm, ids, mask, completion_tokens)
        logprobs, entropy = token_logprobs(self.action_logits(logits), ids[:, -completion_tokens:])
        values = None if self.value_head is None else self.value_head(hidden.float()).squeeze(-1)
        return TokenOutputs(logprobs, values, entropy)


class Reference:
    """Log-probs of the reference model: the LoRA base with adapters off, or a frozen copy."""

    def __init__(self, policy: TokenPolicy):
        self.policy = policy
        self.frozen = None if policy.uses_lora else copy.deepcopy(policy.lm).requires_grad_(False).eval()

    @torch.no_grad()
    def logprobs(self, ids: torch.Tensor, mask: torch.Tensor, completion_tokens: int) -> torch.Tensor:
        if self.frozen is not None:
            logits, _ = completion_logits(self.frozen, ids, mask, completion_tokens)
        else:
            with self.policy.lm.disable_adapter():
                logits, _ = completion_logits(self.policy.lm, ids, mask, completion_tokens)
        return token_logprobs(self.policy.action_logits(logits), ids[:, -completion_tokens:])[0]
