"""Reward models: a causal-LM backbone with a scalar head, trained on preferences (Bradley-Terry).

``train_reward_model(pairs)`` fits r(prompt + answer) so that chosen answers outscore rejected
ones: loss = −log σ(r(chosen) − r(rejected)). The model saves in HF format (safetensors) and
``RewardModelScore`` turns it into a batched scorer on any device. Scoring works on text, so a
reward model with a different tokenizer than the env's is fine: the text is re-tokenized.

Example:
    >>> from textgym.rewards import RewardModelConfig, pairwise_accuracy, train_reward_model
    >>> pairs = [("Q:", " A polite and complete answer.", " Go away")] * 8
    >>> trained = train_reward_model(pairs, config=RewardModelConfig(steps=20, batch_size=8, lr=1e-3, device="cpu"))
    >>> pairwise_accuracy(trained.model, trained.tokenizer, pairs)
    1.0
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from textgym.models import default_device, save_pretrained_atomically, tiny_path
from textgym.scorers.learned import SequenceClassifierScore, classifier_logits, classifier_tokenizer
from textgym.rewards.attention import AttentionCredit
from textgym.rewards.implicit import ImplicitConfig, ImplicitTokenReward, TrainedImplicitReward, train_implicit_reward
from textgym.rewards.potential import LearnedPotential, PotentialConfig, TrainedPotential, train_potential
from textgym.rewards.rollouts import clipped_step

Pair = tuple[str, str, str]  # (prompt, chosen, rejected)
PREFERENCE_MODEL = Path(__file__).parent / "preference_model"  # built by build_preference_model


def load_pairs(source: Sequence[Pair] | Sequence[dict] | str | Path) -> list[Pair]:
    """Preference triples from a list (of tuples or dicts) or a JSONL file with keys
    ``prompt``, ``chosen`` and ``rejected``."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"preference file {str(path)!r} does not exist")
        source = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = []
    for i, item in enumerate(source):
        if isinstance(item, dict):
            missing = {"prompt", "chosen", "rejected"} - set(item)
            if missing:
                raise ValueError(f"preference {i} lacks {sorted(missing)}; expected prompt, chosen and rejected")
            item = (item["prompt"], item["chosen"], item["rejected"])
        if not isinstance(item, (tuple, list)) or len(item) != 3 or not all(isinstance(x, str) for x in item):
            raise ValueError(f"preference {i} must be (prompt, chosen, rejected) strings, got {item!r}")
        if not (item[1].strip() and item[2].strip()):
            raise ValueError(f"preference {i} has an empty answer: {item!r}; chosen and rejected need text")
        if item[1] == item[2]:
            warnings.warn(f"preference {i} has chosen == rejected ({item[1]!r}): it teaches nothing", stacklevel=2)
        pairs.append(tuple(item))
    if not pairs:
        raise ValueError("the preference set is empty; expected at least one (prompt, chosen, rejected)")
    return pairs


@dataclass
class RewardModelConfig:
    lr: float = 3e-4
    steps: int = 400
    batch_size: int = 32
    max_length: int = 128
    weight_decay: float = 0.01
    seed: int = 0
    device: str | None = None  # default: CUDA when present, else CPU


@dataclass
class TrainedRewardModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    losses: list[float] = field(default_factory=list)

    def save(self, out: str | Path, extra_files: dict[str, str] | None = None) -> Path:
        """Save in HF format (safetensors), atomically: a temp dir renamed into place."""
        return save_pretrained_atomically(out, self.model, self.tokenizer, extra_files)


def _rewards(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    return classifier_logits(model, tokenizer, texts, max_length)[:, 0]


def train_reward_model(pairs, base: str | Path = "tiny", config: RewardModelConfig | None = None) -> TrainedRewardModel:
    """Fit a scalar reward head and the backbone on ``(prompt, chosen, rejected)`` triples."""
    config = config or RewardModelConfig()
    if config.lr <= 0 or config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"lr must be > 0 and steps, batch_size >= 1, got {config}")
    pairs = load_pairs(pairs)
    torch.manual_seed(config.seed)
    tokenizer = classifier_tokenizer(base)
    source = str(tiny_path()) if str(base) == "tiny" else str(base)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(config.device or default_device()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    losses = []
    for _ in range(config.steps):
        batch = rng.sample(pairs, min(config.batch_size, len(pairs)))
        chosen = _rewards(model, tokenizer, [p + c for p, c, _ in batch], config.max_length)
        rejected = _rewards(model, tokenizer, [p + r for p, _, r in batch], config.max_length)
        loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()  # Bradley-Terry
        clipped_step(loss, model, optimizer)
        losses.append(loss.item())
    return TrainedRewardModel(model.eval(), tokenizer, losses)


@torch.no_grad()
def pairwise_accuracy(model, tokenizer, pairs, batch_size: int = 64, max_length: int = 128) -> float:
    """The share of held-out pairs whose chosen answer gets the higher reward."""
    pairs = load_pairs(pairs)
    wins = []
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i : i + batch_size]
        chosen = _rewards(model, tokenizer, [p + c for p, c, _ in batch], max_length)
        rejected = _rewards(model, tokenizer, [p + r for p, _, r in batch], max_length)
        wins += (chosen > rejected).tolist()
    return float(np.mean(wins))


class RewardModelScore(SequenceClassifierScore):
    """A trained reward model as a batched scorer: r(prompt + completion), a real number.

    ``model`` is a directory saved by ``TrainedRewardModel.save`` (or any HF sequence-classifier
    with one output). Text is re-tokenized with the reward model's own tokenizer, so it need not
    be the env's.
    """

    name = "reward_model"
    low, high = float("-inf"), float("inf")

    def __init__(self, model: str | Path, device: str | torch.device | None = None, batch_size: int = 64,
                 max_length: int = 128):
        super().__init__(model, device, batch_size, max_length, with_prompt=True)
        if self.model.config.num_labels != 1:
            raise ValueError(f"a reward model has one output; {str(model)!r} has {self.model.config.num_labels}")

    def score(self, prompts, completions, references):
        return self.logits(prompts, completions)[:, 0].tolist()
