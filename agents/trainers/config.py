"""``TrainConfig``: every knob of the batched trainers, in one dataclass (the CLI's flags map onto it).

Example:
    >>> from agents.trainers import TrainConfig
    >>> TrainConfig(algo="grpo", group_size=4, num_envs=16).group_size
    4
    >>> TrainConfig(lr=0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be > 0, got 0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from agents.trainers.algorithms import ALGORITHMS, ALGOS
from textgym.tasks import REWARD_MODES, TRAINED_SOURCES

KL_ESTIMATORS = ("k1", "k3")
LR_SCHEDULES = ("constant", "linear")


def knob(default: Any, help: str) -> Any:
    """A field with its one line of ``--help`` (a callable default is a factory)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """What to train, on what, and how.

    ``steps`` counts env steps, i.e. generated tokens, summed over all envs and processes. An
    iteration rolls out one episode in each of ``num_envs`` envs per process, then updates.
    """

    env_id: str = knob("textgym/Sentiment-v0", "a registered env id (textgym list)")
    algo: str = knob("ppo", f"one of {', '.join(ALGOS)}")
    model: str = knob("tiny", "the policy's starting model: 'tiny', a local HF directory or a hub id")
    steps: int = knob(40_000, "env steps (generated tokens) to train for, over all envs and processes")
    out: str = knob("runs/textgym", "the run's output directory (never overwritten; see --resume)")
    seed: int = knob(0, "seeds the envs, the sampling and the updates")
    device: str | None = knob(None, "'cpu' or 'cuda'; unset: CUDA when present, else CPU")
    fsdp: bool = knob(False, "shard the weights, gradients and optimizer state across processes (FSDP2); "
                             "full fine-tuning only")
    gradient_checkpointing: bool = knob(False, "recompute each layer's activations in the backward pass instead of "
                                               "keeping them: less memory, about a third more compute")
    release_freed_memory: bool = knob(True, "CPU: glibc's malloc hands large freed blocks back to the OS instead of "
                                             "keeping them (agents.trainers.allocator): lower peak memory")
    reward_mode: str = knob("immediate", f"task envs: one of {', '.join(REWARD_MODES)} (sparse: the score at the end)")
    potential: str | None = knob(None, "reward_mode learned: a `textgym potential` dir; unset: one is trained "
                                       "into OUT/potential first")
    implicit: str | None = knob(None, "reward_mode implicit: a trained implicit-reward dir; unset: one is trained "
                                      "into OUT/implicit first")
    implicit_lr: float | None = knob(None, "reward_mode implicit: after every rollout, one PRIME step on the implicit "
                                           "reward's LM at this lr, from the rollout's scores; unset: it stays as trained")
    env_kwargs: dict[str, Any] = knob(dict, "more gym.make_vec arguments, as a JSON object")
    num_envs: int = knob(32, "episodes per iteration and process")

    # LoRA (peft): the reference model is then the base with adapters disabled, not a second copy.
    lora: bool = knob(False, "train LoRA adapters instead of every weight (needs peft)")
    lora_rank: int = knob(8, "LoRA rank r")
    lora_alpha: float = knob(16.0, "LoRA scaling alpha")

    # Sampling; training log-probs use the same temperature.
    temperature: float = knob(1.0, "sampling temperature, also applied to the training log-probs")
    top_k: int = knob(0, "sample from the k likeliest tokens only; 0: off")
    top_p: float = knob(1.0, "nucleus sampling mass; 1: off")

    # Optimisation.
    lr: float = knob(1e-5, "AdamW learning rate")
    lr_schedule: str = knob("constant", f"one of {', '.join(LR_SCHEDULES)}")
    epochs: int = knob(4, "passes over each iteration's episodes")
    minibatch_size: int = knob(16, "episodes per gradient step; num_envs must be a multiple of it")
    max_grad_norm: float = knob(1.0, "gradient clipping norm")

    # PPO.
    gamma: float = knob(1.0, "discount per token")
    gae_lambda: float = knob(0.95, "GAE lambda")
    clip_range: float = knob(0.2, "PPO's ratio clip")
    clip_range_value: float = knob(0.2, "the value loss's clip")
    vf_coef: float = knob(0.5, "value loss weight")
    ent_coef: float = knob(0.0, "entropy bonus weight")
    whiten_advantages: bool = knob(True, "normalise advantages per batch")
    whiten_rewards: bool = knob(False, "normalise rewards per batch")
    normalize_values: bool = knob(True, "the value head predicts returns scaled by their running mean and std")

    # KL to the reference (base) model: a per-token reward penalty for PPO and RLOO, a loss term
    # (k3) for GRPO. Fixed at kl_coef, or adaptive towards kl_target over kl_horizon tokens.
    kl_coef: float = knob(0.05, "KL coefficient (the start value when kl_target is set)")
    kl_estimator: str = knob("k1", f"KL estimator of PPO and RLOO's reward penalty: one of {', '.join(KL_ESTIMATORS)}")
    kl_target: float | None = knob(None, "adapt kl_coef towards this KL per episode; unset: fixed")
    kl_horizon: int = knob(10_000, "tokens over which the adaptive KL coefficient moves")

    # GRPO and RLOO: samples per prompt.
    group_size: int = knob(4, "GRPO and RLOO: samples per prompt")

    # Bookkeeping.
    checkpoint_every: int = knob(10, "iterations between checkpoints")
    sample_prompts: int = knob(8, "test prompts shown before and after training in samples.md")

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("float") and value is not None and not math.isfinite(value):
                fail(f.name, "a finite number")

        choices = {"algo": ALGOS, "kl_estimator": KL_ESTIMATORS, "lr_schedule": LR_SCHEDULES,
                   "reward_mode": REWARD_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"one of {list(allowed)}")
        for name in ("lr", "temperature", "lora_alpha", "clip_range", "clip_range_value", "max_grad_norm"):
            if not getattr(self, name) > 0:
                fail(name, "> 0")
        for name in ("steps", "num_envs", "epochs", "minibatch_size", "lora_rank", "kl_horizon",
                     "checkpoint_every", "sample_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "a positive int")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "an int >= 0")
        for name in ("vf_coef", "ent_coef"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if self.device not in (None, "cpu", "cuda"):
            fail("device", "None (CUDA when present), 'cpu' or 'cuda' (with several GPUs, launch one process per GPU)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch sees no CUDA device; use 'cpu' or None (auto)")
        if self.fsdp and self.lora:
            raise ValueError("fsdp shards full fine-tuning; with lora the trainable adapters are small: drop one of "
                             "fsdp and lora")
        if self.kl_target is not None and not self.kl_target > 0:
            fail("kl_target", "> 0 (or None for a fixed KL coefficient)")
        if self.kl_coef < 0:
            fail("kl_coef", ">= 0")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {self.gamma!r} and {self.gae_lambda!r}")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"top_p must lie in (0, 1] and top_k be >= 0, got {self.top_p!r} and {self.top_k!r}")
        if self.num_envs % self.minibatch_size:
            raise ValueError(f"num_envs (the batch, {self.num_envs}) must be a multiple of minibatch_size "
                             f"({self.minibatch_size})")
        if self.algo in ALGORITHMS and ALGORITHMS[self.algo].grouped:
            if self.group_size < 2:
                fail("group_size", f">= 2 for {self.algo} (its baseline compares samples of one prompt)")
            if self.num_envs % self.group_size:
                raise ValueError(f"num_envs ({self.num_envs}) must be a multiple of group_size ({self.group_size})")
        for mode, name in TRAINED_SOURCES.items():
            if getattr(self, name) is not None and self.reward_mode != mode:
                raise ValueError(f"{name} ({getattr(self, name)!r}) is the trained source of reward_mode {mode!r}; "
                                 f"got reward_mode {self.reward_mode!r}")
        if self.implicit_lr is not None and not (self.reward_mode == "implicit" and self.implicit_lr > 0):
            fail("implicit_lr", "> 0, with reward_mode 'implicit' (or None)")
        if not isinstance(self.env_kwargs, dict) or {"split", "reward_mode", *TRAINED_SOURCES.values()} & set(self.env_kwargs):
            fail("env_kwargs", "a dict of gym.make_vec arguments (reward_mode, potential and implicit are fields; the trainer "
                 "trains on split='train' and samples from 'test')")

    @property
    def uses_reference(self) -> bool:
        return self.kl_coef > 0 or self.kl_target is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from a mapping (a YAML file, a checkpoint); unknown keys are an error naming them,
        and each value is converted to its field's type (YAML reads ``1e-3`` as a string)."""
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise ValueError(f"{where} has unknown fields {unknown}; valid fields are {list(kinds)}")
        return cls(**{name: _converted(name, kinds[name], value, where) for name, value in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        return cls.from_dict({**read_yaml(path), **overrides}, where=str(path))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of TrainConfig fields in the YAML file ``path``, or an error naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} {'is a directory' if path.is_dir() else 'does not exist'}; "
                         "expected a YAML file of TrainConfig fields")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of TrainConfig fields, got {type(values).__name__}")
    return values


def _converted(name: str, kind: str, value: Any, where: str) -> Any:
    """``value`` as the type ``kind`` (a field's annotation) names, or an error naming the field."""
    if value is None and kind.endswith("| None"):
        return None
    base = kind.split(" |")[0]
    expected = {"int": int, "float": float, "bool": bool, "str": str}.get(base)
    if expected is None or isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value  # dicts are checked by __post_init__
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and expected in (int, float):
        try:
            return expected(value)
        except ValueError:
            pass
    raise ValueError(f"{where}: field {name} must be {kind}, got {type(value).__name__} {value!r}")
