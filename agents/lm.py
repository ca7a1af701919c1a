"""What both policy stacks (the SB3 actor-critic and the batched trainers) share: loading the LM
trunk, LoRA, the value head, the ids a policy must never choose, and log-probs computed without
the vocabulary-sized logits of a whole batch. The cut from an LM's logits
to the env's action distribution, ``textgym.models.sampling.action_logits``, is shared with
textgym's own sampling loops.

Example:
    >>> import torch
    >>> from agents.lm import load_trunk, valid_actions
    >>> from textgym.models.sampling import action_logits
    >>> lm, tokenizer = load_trunk("tiny")
    >>> allowed = valid_actions(tokenizer)  # pad is never a valid action
    >>> logits = action_logits(torch.zeros(1, lm.config.vocab_size), len(tokenizer), 1.0, allowed)
    >>> bool(torch.softmax(logits, -1)[0, tokenizer.pad_token_id] == 0)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from textgym.models import load_causal_lm, load_tokenizer
from textgym.models.cache import positions


def load_trunk(name: str, vocab: int | None = None, dtype=None) -> tuple[nn.Module, object]:
    """A causal LM and its tokenizer (loaded once), with dropout off: dropout would make PPO's ratio
    differ from 1 before any update. ``vocab`` is the env's ``Discrete(vocab)``, checked against
    the tokenizer."""
    model = load_causal_lm(name, device="cpu", dtype=dtype)
    tokenizer = load_tokenizer(name)
    if vocab is not None and (len(tokenizer) != vocab or model.config.vocab_size < vocab):
        raise ValueError(
            f"vocabulary mismatch: the env has Discrete({vocab}) actions, but model {name!r} "
            f"({model.config.vocab_size} logits) comes with tokenizer {tokenizer.name_or_path!r} of "
            f"{len(tokenizer)} tokens; use the env's tokenizer and a model trained on it"
        )
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model, tokenizer


def apply_lora(model, lora):
    """Wrap ``model`` with peft LoRA adapters from a ``LoraConfig`` or a dict of its fields."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError('lora= needs peft: pip install "textgym[lora]"') from error
    from transformers.pytorch_utils import Conv1D

    if not isinstance(lora, LoraConfig):
        # GPT-2's layers are Conv1D (weights stored transposed): say so, or peft warns and flips it.
        conv1d = any(isinstance(m, Conv1D) for m in model.modules())
        lora = LoraConfig(**{"fan_in_fan_out": conv1d, **dict(lora)})
    with warnings.catch_warnings():
        # peft itself still calls transformers' deprecated is_gradient_checkpointing.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, lora)


def value_head(hidden_size: int) -> nn.Linear:
    """The critic: a linear map of the last hidden state, zero at the start, so the first
    advantages are the returns themselves."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def valid_actions(tokenizer) -> torch.Tensor:
    """``(V,)`` bool: every token but pad (unless pad is EOS), as a textgym env's ``action_masks()``
    without ``disallowed_token_ids``."""
    allowed = torch.ones(len(tokenizer), dtype=torch.bool)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        allowed[tokenizer.pad_token_id] = False
    return allowed


LOGITS_PER_CHUNK = 1 << 22  # floats of logits held at once: 16 MB, whatever the vocabulary
NO_LOGITS = torch.empty(0, dtype=torch.long)  # logits_to_keep that keeps no position: the head does not run


def hidden_states(lm: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The LM's last hidden states (B, L, H) of left-padded rows, without running its head: the
    head's logits are what ``chunked_logprobs`` computes a chunk at a time."""
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True,
             logits_to_keep=NO_LOGITS, use_cache=False)  # a whole sequence: no cache to keep
    return out.hidden_states[-1]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, entropy_grad: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``tokens`` under ``logits`` and the entropies of those distributions (without a
    gradient unless ``entropy_grad``: a loss that leaves the entropy out would never free what
    autograd saved for it, a [rows, vocab] tensor or two)."""
    logp = torch.log_softmax(logits, dim=-1)
    with nullcontext() if entropy_grad else torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


def chunked_logprobs(hidden: torch.Tensor, head: nn.Module, tokens: torch.Tensor,
                     cut: Callable[[torch.Tensor, slice], torch.Tensor], entropy_grad: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs(cut(head(hidden)), tokens, entropy_grad)`` without ever holding the logits of
    every row.

    ``hidden`` is (rows, H) and ``tokens`` (rows,); ``cut(logits, rows)`` turns a chunk's LM
    logits into action logits (temperature, masks). The rows go through the LM head in chunks of
    ``LOGITS_PER_CHUNK`` logits; under autograd each chunk is checkpointed, so its logits are
    recomputed in the backward pass instead of kept: memory grows with H, not with the vocabulary.
    Rows that fit in one chunk are not checkpointed: keeping that chunk's logits holds no more than
    the forward pass does anyway, and the recomputation would be pure cost.

    Example:
        >>> head = nn.Linear(4, 50_000, bias=False)
        >>> hidden, tokens = torch.randn(100, 4), torch.randint(0, 50_000, (100,))
        >>> full = token_logprobs(head(hidden), tokens)
        >>> chunked = chunked_logprobs(hidden, head, tokens, lambda logits, rows: logits)
        >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full, chunked))
        True
    """
    step = max(1, LOGITS_PER_CHUNK // head.weight.shape[0])

    def chunk(start: int, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs(cut(head(h).float(), slice(start, start + len(h))), t, entropy_grad)

    recompute = torch.is_grad_enabled() and len(hidden) > step
    parts = [checkpoint(chunk, start, hidden[start : start + step], tokens[start : start + step], use_reentrant=False)
             if recompute else chunk(start, hidden[start : start + step], tokens[start : start + step])
             for start in range(0, len(hidden), step)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
