"""Decoding completions at episode end: ``tokenizer.batch_decode(ids, skip_special_tokens=True)``, fast.

Decoding is the env's one per-episode cost, and for a short completion the Python wrapper around
the Rust decoder costs more than the decode itself. For byte-level BPE tokenizers (GPT-2, Llama 3,
Qwen, "tiny") every token id stands for a fixed byte string, so a completion decodes as one join
of table lookups. That path is taken only when it reproduces the tokenizer on a probe of random
ids; any other tokenizer decodes through ``batch_decode`` as usual.

Example:
    >>> import numpy as np
    >>> from textgym.models import load_tokenizer
    >>> tokenizer = load_tokenizer("tiny")
    >>> decode = CompletionDecoder(tokenizer)
    >>> decode([np.array(tokenizer(" 42")["input_ids"] + [tokenizer.eos_token_id])]), decode.fast
    ([' 42'], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import decoders
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode


def byte_table(tokenizer: PreTrainedTokenizerBase) -> np.ndarray | None:
    """Each id's bytes (``b""`` for special tokens), or None if the tokenizer is not byte-level."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.decoder, decoders.ByteLevel):
        return None
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    table = np.empty(len(tokenizer), dtype=object)
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special:
            table[token_id] = b""
        elif token is None or not all(char in byte_of for char in token):
            return None  # e.g. an added plain-text token: leave it to the tokenizer
        else:
            table[token_id] = bytes(byte_of[char] for char in token)
    return table


class CompletionDecoder:
    """Batched ``tokenizer.batch_decode(ids, skip_special_tokens=True)`` over id arrays."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, probe_size: int = 32):
        self.tokenizer = tokenizer
        self.table = byte_table(tokenizer)
        if self.table is not None and not self._reproduces_tokenizer(probe_size):
            self.table = None

    @property
    def fast(self) -> bool:
        return self.table is not None

    def __call__(self, id_arrays: Sequence[np.ndarray]) -> list[str]:
        if self.table is None:
            return self.tokenizer.batch_decode([ids.tolist() for ids in id_arrays], skip_special_tokens=True)
        # "replace" matches the Rust decoder's lossy UTF-8 for byte sequences cut mid-character.
        return [b"".join(self.table[ids]).decode("utf-8", "replace") for ids in id_arrays]

    def _reproduces_tokenizer(self, probe_size: int) -> bool:
        rng = np.random.default_rng(0)
        probe = [rng.integers(0, len(self.tokenizer), rng.integers(1, 48)) for _ in range(probe_size)]
        expected = self.tokenizer.batch_decode([ids.tolist() for ids in probe], skip_special_tokens=True)
        return self(probe) == expected
