"""``RowCache``: a causal LM run one token at a time over N left-padded rows, with a KV cache.

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
    (torch.Size([2, 2098]), torch.Size([2, 192]))
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: real tokens count from 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class RowCache:
    """The KV of the last ``length`` columns of ``num_rows`` rows, and their latest outputs."""

    def __init__(self, model: PreTrainedModel, num_rows: int, length: int, pad_id: int):
        self.model, self.num_rows, self.length, self.pad_id = model, num_rows, length, pad_id
        self.device = model.device
        self.kv = None
        self.mask = torch.zeros(num_rows, length, dtype=torch.long, device=self.device)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, kv=None):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=kv,
                             use_cache=True, output_hidden_states=True)
        return out.logits[:, -1].float(), out.hidden_states[-1][:, -1].float(), out.past_key_values

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
