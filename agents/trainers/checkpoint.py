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
kill at any point keeps the previous checkpoint or the new one. A new run never starts in a
directory that holds one (``check_new_run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from textgym.models import atomic_directory, recover_directory

WEIGHTS, STATE = "policy.safetensors", "state.json"


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates (tied weights appear once)."""
    return {name: p.detach().contiguous().cpu() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, path: Path) -> None:
    state = _readable(path, load_file)
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
    """``out/checkpoint``, after repairing a swap that a kill interrupted (``recover_directory``)."""
    checkpoint = Path(out) / "checkpoint"
    recover_directory(checkpoint)
    if (checkpoint / "model.zip").is_file():
        raise ValueError(f"{out} holds a stable-baselines3 run, which cannot be resumed; load it with agents.load")
    if not (checkpoint / STATE).is_file():
        raise FileNotFoundError(f"{out} holds no checkpoint to resume from (no checkpoint/{STATE})")
    return checkpoint


RUN_FILES = ("checkpoint", "checkpoint.old", "metrics.csv", "model")


def check_new_run(out: str | Path) -> None:
    """Refuse to start a new run in ``out`` when it holds one, before anything is written there."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file; expected a directory for the run")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise ValueError(f"out {str(out)!r} already holds a run ({', '.join(found)}); resume it "
                         "(textgym train --resume, Trainer.resume) or choose a new out directory")


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a textgym checkpoint: {STATE} is missing")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"checkpoint file {path} is corrupt (truncated?): {error}") from None


def _readable(path: Path, load):
    """``load(path)``, or an error that names the file when it is truncated or corrupt."""
    try:
        return load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except Exception as error:  # safetensors, pickle and zip each raise their own types
        raise ValueError(f"checkpoint file {path} is corrupt (truncated?): {type(error).__name__}: {error}") from None


def _tensors(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def load_checkpoint(checkpoint: Path, policy: nn.Module, optimizer, scheduler) -> None:
    checkpoint = Path(checkpoint)
    load_trainable_state(policy, checkpoint / WEIGHTS)
    optimizer.load_state_dict(_readable(checkpoint / "optimizer.pt", _tensors))
    scheduler.load_state_dict(_readable(checkpoint / "scheduler.pt", _tensors))
    torch.set_rng_state(_readable(checkpoint / "rng.pt", _tensors)["torch"])
