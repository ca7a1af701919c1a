"""KV caches for running a causal LM one token at a time over a batch of rows.

``preallocated_cache(capacity)``: for decoding that only appends (a rollout). transformers'
``DynamicCache`` concatenates every layer's keys and values at each step, copying the whole cache
(O(T^2) over T steps, a visible share of a CPU rollout in a profile); this
cache writes each step into buffers allocated once and hands the model views of the filled part.

``RowCache``: a causal LM run one token at a time over N left-padded rows, with a KV cache.

textgym observations are rows of length L = max_prompt_tokens + max_new_tokens with the newest
token in the last column, and a row never outgrows L. So the KV of the last L columns is all a
row needs: each step appends one column for every row and drops the oldest (always padding), and
a row whose episode restarts is run again in full and written over its slot. Every forward is
batched over all rows; the reference-model reward and the SB3 policy share this one mechanism.

Example:
    >>> import torch
    >>> from textgym.models import load_causal_lm
    >>> from textgym.models.cache import RowCache
    >>> model = load_causal_lm("tiny", device="cpu")
    >>> ids = torch.tensor([[1, 1, 20, 21], [30, 31, 32, 33]]); mask = (ids != 1).long()
    >>> cache = RowCache(model, num_rows=2, length=4, pad_id=1)
    >>> logits, hidden = cache.restart(torch.arange(2), ids, mask)
    >>> logits, hidden = cache.advance(torch.tensor([40, 41]))  # one new token per row
    >>> logits.shape, hidden.shape
    (torch.Size([2, 2256]), torch.Size([2, 192]))
    >>> out = model(input_ids=ids, attention_mask=mask, **cached(preallocated_cache(6)), use_cache=True)
    >>> out = model(input_ids=torch.tensor([[40], [41]]), attention_mask=torch.ones(2, 5, dtype=torch.long),
    ...             **cached(cache_of(out)), use_cache=True)
    >>> cache_of(out).get_seq_length()
    5
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from transformers import Cache, PreTrainedModel
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.2x renamed the forward's ``past_key_values`` argument and output field to
# ``cache`` (the old name warns, and goes in 5.40); older versions know only the old name.
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def cached(kv: Cache | None) -> dict[str, Any]:
    """The keyword argument that hands the KV cache ``kv`` to a model's forward."""
    return {CACHE: kv}


def cache_of(out: Any) -> Cache:
    """The KV cache a model's forward returned."""
    return getattr(out, CACHE)


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (the models' forward passes there); full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: real tokens count from 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def left_padded(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as a left-padded batch: (ids, attention mask).

    Example:
        >>> left_padded([[5, 6], [7]])
        (tensor([[5, 6],
                [0, 7]]), tensor([[1, 1],
                [0, 1]]))
    """
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(row)) + list(row) for row in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return ids, mask


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes new keys and values into buffers of ``capacity`` positions
    (that double when full, if it ``grows``)."""

    def __init__(self, capacity: int, grows: bool = False):
        super().__init__()
        self.capacity, self.grows = capacity, grows

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        batch, heads = key_states.shape[:2]
        self.key_buffer = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self.value_buffer = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if end > self.capacity:
            if not self.grows:
                raise ValueError(f"preallocated_cache({self.capacity}) cannot hold {end} positions")
            self._reallocate(slice(None), max(end, 2 * self.capacity))
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


    def _reallocate(self, rows: slice | torch.Tensor, capacity: int) -> None:
        """New buffers of ``capacity`` positions holding the filled columns of ``rows``."""
        filled = self.get_seq_length()
        for name in ("key_buffer", "value_buffer"):
            kept = getattr(self, name)[rows, :, :filled]
            buffer = kept.new_empty(kept.shape[0], kept.shape[1], capacity, kept.shape[3])
            buffer[:, :, :filled] = kept
            setattr(self, name, buffer)
        self.capacity = capacity
        self.keys, self.values = self.key_buffer[:, :, :filled], self.value_buffer[:, :, :filled]

    def select_rows(self, rows: torch.Tensor) -> None:
        if self.is_initialized:
            self._reallocate(rows, self.capacity)


def preallocated_cache(capacity: int, grows: bool = False) -> Cache:
    """A KV cache for up to ``capacity`` positions (prompt + new tokens) that never reallocates
    (or, if it ``grows``, that doubles its buffers when they are full)."""
    return Cache(layer_class_to_replicate=partial(PreallocatedLayer, capacity, grows))


def select_rows(kv: Cache, rows: torch.Tensor) -> None:
    """Keep only ``rows`` of the ``preallocated_cache`` ``kv``."""
    for layer in kv.layers:
        layer.select_rows(rows)


def check_positions(model: PreTrainedModel, length: int) -> None:
    """Refuse rows of ``length`` tokens that ``model`` has no position embeddings for (they would
    fail mid-run with an IndexError)."""
    config = model.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(f"the env's rows hold up to {length} tokens (max_prompt_tokens + max_new_tokens) but "
                         f"model {config.name_or_path or config.model_type!r} has {limit} positions; "
                         f"lower max_new_tokens or max_prompt_tokens so that they sum to at most {limit}")


class RowCache:
    """The KV of the last ``length`` columns of ``num_rows`` rows, and their latest outputs."""

    def __init__(self, model: PreTrainedModel, num_rows: int, length: int, pad_id: int):
        check_positions(model, length)
        self.model, self.num_rows, self.length, self.pad_id = model, num_rows, length, pad_id
        self.device = model.device
        self.kv = None
        self.mask = torch.zeros(num_rows, length, dtype=torch.long, device=self.device)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, kv=None):
        with autocast(self.device):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **cached(kv),
                             use_cache=True, output_hidden_states=True)
        return out.logits[:, -1].float(), out.hidden_states[-1][:, -1].float(), cache_of(out)

    @torch.no_grad()
    def restart(self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``rows`` in full from their (k, length) observations; their last logits and hidden states."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits, hidden, kv = self._forward(ids, mask, positions(mask))
        self.mask[rows] = mask
        if self.kv is None:
            if len(rows) != self.num_rows:
                raise ValueError("the first restart must cover every row")
            self.kv = kv
        else:
            for layer, fresh in zip(self.kv.layers, kv.layers):
                layer.keys[rows], layer.values[rows] = fresh.keys.to(layer.keys.dtype), fresh.values.to(layer.values.dtype)
        return logits, hidden

    def tokens_for(self, rows: np.ndarray | torch.Tensor, tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The ``advance`` argument when only ``rows`` stepped: their ``tokens``, and pad in the other
        rows (they restart next, and ``restart`` overwrites them)."""
        new = torch.full((self.num_rows,), self.pad_id, dtype=torch.long, device=self.device)
        new[torch.as_tensor(rows, device=self.device)] = torch.as_tensor(tokens, device=self.device)
        return new

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token to every row; all rows' new last logits and hidden states.

        A row that is about to restart may take any token (pad, say): it attends to nothing but
        itself here, and its slot is overwritten before it is read again.
        """
        tokens = tokens.to(self.device).view(self.num_rows, 1)
        mask = torch.cat([self.mask, torch.ones(self.num_rows, 1, dtype=torch.long, device=self.device)], dim=1)
        logits, hidden, self.kv = self._forward(tokens, mask, self.mask.sum(-1, keepdim=True), self.kv)
        for layer in self.kv.layers:  # only the last `length` columns can hold real tokens
            layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]
        self.mask = mask[:, 1:]
        return logits, hidden


def extends_by_one(last_ids: torch.Tensor, last_mask: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Which rows of (ids, mask) are the rows (last_ids, last_mask) plus exactly one new token."""
    return ((ids[:, :-1] == last_ids[:, 1:]).all(1) & (mask[:, :-1] == last_mask[:, 1:]).all(1)
            & (mask[:, -1] == 1))
