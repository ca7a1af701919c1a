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

ALGOS = ("ppo", "grpo", "rloo", "sb3-ppo", "sb3-maskable-ppo")
REWARD_MODES = ("immediate", "sparse")
KL_ESTIMATORS = ("k1", "k3")
LR_SCHEDULES = ("constant", "linear")


@dataclass
class TrainConfig:
    """What to train, on what, and how.

    ``steps`` counts env steps, i.e. generated tokens, summed over all envs and processes. An
    iteration rolls out one episode in each of ``num_envs`` envs per process, then updates.
    """

    env_id: str = "textgym/Sentiment-v0"
    algo: str = "ppo"
    model: str = "tiny"
    steps: int = 40_000
    out: str = "runs/textgym"
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU; "cpu" or "cuda" 
    reward_mode: str = "immediate"  # task envs: "immediate" (potential shaping) or "sparse"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # more gym.make_vec arguments
    num_envs: int = 32  # episodes per iteration and process

    # LoRA (peft): the reference model is then the base with adapters disabled, not a second copy.
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0

    # Sampling; training log-probs use the same temperature.
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    # Optimisation.
    lr: float = 1e-5
    lr_schedule: str = "constant"
    epochs: int = 4
    minibatch_size: int = 16  # episodes per gradient step; num_envs must be a multiple of it
    max_grad_norm: float = 1.0

    # PPO.
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    normalize_values: bool = True  # the value head predicts returns scaled by their running mean and std

    # KL to the reference (base) model: a per-token reward penalty for PPO and RLOO, a loss term
    # (k3) for GRPO. Fixed at kl_coef, or adaptive towards kl_target over kl_horizon tokens.
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_target: float | None = None
    kl_horizon: int = 10_000

    # GRPO and RLOO: samples per prompt.
    group_size: int = 4

    # Bookkeeping.
    checkpoint_every: int = 10  # iterations
    sample_prompts: int = 8  # test prompts shown before/after in samples.md

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
        if self.algo in ("grpo", "rloo"):
            if self.group_size < 2:
                fail("group_size", f">= 2 for {self.algo} (its baseline compares samples of one prompt)")
            if self.num_envs % self.group_size:
                raise ValueError(f"num_envs ({self.num_envs}) must be a multiple of group_size ({self.group_size})")
        if not isinstance(self.env_kwargs, dict) or {"split", "reward_mode"} & set(self.env_kwargs):
            fail("env_kwargs", "a dict of gym.make_vec arguments (reward_mode is its own field; the trainer "
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
