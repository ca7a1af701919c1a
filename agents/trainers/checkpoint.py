"""Checkpoints: everything needed to resume a run exactly, written atomically.

A checkpoint directory holds

- ``policy.safetensors``: the trainable weights (the whole LM and value head, or the LoRA
  adapters and value head);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors only: loaded with
  ``weights_only=True``);
- ``rng.pt``: torch's global RNG state; ``state.json``: the config, the step and iteration
  counters and the KL controller. The trainer's own randomness (env seeds, token sampling,
  minibatch order) is seeded from (seed, process, iteration), so the counters restore it exactly.

It is written into a temp directory and swapped in (``textgym.models.atomic_directory``), so a
crash mid-write keeps the previous checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from textgym.models import atomic_directory

WEIGHTS, STATE = "policy.safetensors", "state.json"


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates (tied weights appear once)."""
    return {name: p.detach().contiguous().cpu() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, path: Path) -> None:
    state = load_file(path)
    missing = sorted(set(trainable_state(module)) - set(state))
    unexpected = sorted(set(state) - {name for name, _ in module.named_parameters()})
    if missing or unexpected:
        raise ValueError(f"checkpoint weights {path} do not fit this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; was it written for another model or LoRA setting?")
    module.load_state_dict(state, strict=False)


def save_checkpoint(out: Path, policy: nn.Module, optimizer, scheduler, state: dict[str, Any]) -> Path:
    with atomic_directory(out) as tmp:
        save_file(trainable_state(policy), tmp / WEIGHTS)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=1))
    return out


def last_checkpoint(out: Path) -> Path:
    """``out/checkpoint``, or ``out/checkpoint.old`` when a crash hit between the two renames of
    ``atomic_directory`` and left only the previous checkpoint."""
    for candidate in (Path(out) / "checkpoint", Path(out) / "checkpoint.old"):
        if (candidate / STATE).is_file():
            return candidate
    raise FileNotFoundError(f"{out} holds no checkpoint to resume from (no checkpoint/{STATE})")


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a textgym checkpoint: {STATE} is missing")
    return json.loads(path.read_text())


def load_checkpoint(checkpoint: Path, policy: nn.Module, optimizer, scheduler) -> None:
    checkpoint = Path(checkpoint)
    load_trainable_state(policy, checkpoint / WEIGHTS)
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=True)["torch"])
