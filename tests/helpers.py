"""Small helpers shared by the test modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def length_scorer(prompts, completions):
    """A deterministic scorer that depends on the completion, so rewards can differ."""
    return [len(c) / 10 for c in completions]


def assert_tree_equal(a: Any, b: Any, where: str = "", atol: float = 0.0) -> None:
    """Deep equality over dicts, numpy arrays (object arrays too), lists and scalars; float
    arrays and floats within ``atol`` when it is given."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_tree_equal(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and a.shape == b.shape, f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, f"{where}: {a!r} != {b!r}"
        if atol and a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and atol:
        assert abs(a - b) <= atol, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class Killed(BaseException):
    """Raised by ``kill_at``: like a kill, no ``except Exception`` stops it."""


FS_OPS = 5  # the filesystem operations of ``atomic_directory`` over an existing directory


def kill_at(monkeypatch, n: int) -> None:
    """Make the ``n``-th filesystem operation of ``textgym.models``' atomic saves (renames and
    removals, counted from 0) die, as a kill at that moment would."""
    import shutil
    from pathlib import Path

    import textgym.models

    real_rename, real_rmtree, count = Path.rename, shutil.rmtree, [0]

    def step(operation):
        def run(*args, **kwargs):
            count[0] += 1
            if count[0] - 1 == n:
                raise Killed(f"killed at filesystem operation {n}")
            return operation(*args, **kwargs)
        return run

    monkeypatch.setattr(Path, "rename", step(real_rename))
    monkeypatch.setattr(textgym.models.shutil, "rmtree", step(real_rmtree))


class TurnSampler:
    """A ``Sampler`` that writes ``text`` and the end-of-turn token for every conversation."""

    def __init__(self, text: str, env):
        self.turn = [*env.unwrapped.tokenizer.encode(text), env.unwrapped.end_of_turn_id]

    def sample(self, prompt_ids, prompt_mask, max_new_tokens, *, eos_id, processors, generator):
        from textgym.models.sampling import Completions

        assert eos_id == self.turn[-1]
        tokens = torch.tensor(self.turn[:max_new_tokens]).repeat(len(prompt_ids), 1)
        return Completions(tokens, torch.full((len(prompt_ids),), tokens.shape[1]))
