"""Checkpoints: everything needed to resume a run exactly, written atomically.

A checkpoint directory holds

- ``policy.safetensors``: the trainable weights (the whole LM and value head, or the LoRA
  adapters and value head);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors only: loaded with
  ``weights_only=True``);
- ``implicit_reward.pt``: with ``implicit_lr``, the online implicit reward's LM and optimizer;
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
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from agents.trainers.sharding import FULL, is_sharded
from textgym.models import atomic_directory, recover_directory

WEIGHTS, STATE = "policy.safetensors", "state.json"


def trainable_names(module: nn.Module) -> list[str]:
    """The names of the parameters the optimizer updates (tied weights appear once)."""
    return [name for name, p in module.named_parameters() if p.requires_grad]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates, as whole CPU tensors. A sharded module's are gathered
    to the main process (the others get none): every process must call this."""
    whole = get_model_state_dict(module, options=FULL) if is_sharded(module) else dict(module.named_parameters())
    return {name: whole[name].detach().contiguous().cpu() for name in trainable_names(module) if name in whole}


def optimizer_state(policy: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    """The optimizer's state dict; for a sharded policy gathered like ``trainable_state``, keyed by
    parameter name. Only after a step: torch fills an empty state by stepping with zero gradients."""
    return get_optimizer_state_dict(policy, optimizer, options=FULL) if is_sharded(policy) else optimizer.state_dict()


def read_weights(module: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The trainable weights in ``path``, refused if they do not fit ``module``'s parameters."""
    state = _readable(path, load_file)
    missing = sorted(set(trainable_names(module)) - set(state))
    unexpected = sorted(set(state) - {name for name, _ in module.named_parameters()})
    if missing or unexpected:
        raise ValueError(f"checkpoint weights {path} do not fit this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; was it written for another model or LoRA setting?")
    return state


def save_checkpoint(out: Path, weights: dict[str, torch.Tensor], optimizer_state: Any, scheduler,
                    state: dict[str, Any], tensors: dict[str, Any] | None = None) -> Path:
    """Write the ``trainable_state`` and ``optimizer_state``, the scheduler, the RNG, ``state`` and
    ``tensors`` (file name -> state dict), atomically."""
    with atomic_directory(out) as tmp:
        save_file(weights, tmp / WEIGHTS)
        for name, value in {"optimizer.pt": optimizer_state, **(tensors or {})}.items():
            torch.save(value, tmp / name)
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


def read_tensors(path: Path) -> Any:
    """A state dict that ``save_checkpoint`` wrote (tensors only), or an error naming the file."""
    return _readable(path, lambda path: torch.load(path, weights_only=True))


def load_checkpoint(checkpoint: Path, policy: nn.Module, optimizer, scheduler) -> None:
    checkpoint = Path(checkpoint)
    weights = read_weights(policy, checkpoint / WEIGHTS)
    optimizer_state = read_tensors(checkpoint / "optimizer.pt")
    if is_sharded(policy):  # each process keeps its shards of the whole tensors
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(policy, weights, options=options)
        set_optimizer_state_dict(policy, optimizer, optimizer_state, options=options)
    else:
        policy.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(read_tensors(checkpoint / "scheduler.pt"))
    torch.set_rng_state(read_tensors(checkpoint / "rng.pt")["torch"])
