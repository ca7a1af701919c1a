"""Train and ship the reward model of ``textgym/Preference-v0``.

    python -m textgym.rewards.build_preference_model

It fits ``train_reward_model`` (tiny backbone, Bradley-Terry) on the seeded synthetic preference
set's train split (polite, on-topic, complete answers preferred over off-topic, cut-off, rude or
repetitive ones), measures pairwise accuracy on the disjoint test split, and writes the model with
``build_record.json`` into ``textgym/rewards/preference_model``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from textgym.rewards import PREFERENCE_MODEL, RewardModelConfig, pairwise_accuracy, train_reward_model
from textgym.tasks.data import preference_pairs


def build(out: Path = PREFERENCE_MODEL, config: RewardModelConfig | None = None) -> dict:
    config = config or RewardModelConfig(device="cpu")
    torch.set_num_threads(2)
    start = time.time()
    trained = train_reward_model(preference_pairs("train"), config=config)
    accuracy = pairwise_accuracy(trained.model, trained.tokenizer, preference_pairs("test"))
    record = {
        "command": "python -m textgym.rewards.build_preference_model",
        "config": dataclasses.asdict(config),
        "train_pairs": len(preference_pairs("train")),
        "test_pairs": len(preference_pairs("test")),
        "final_loss": round(float(sum(trained.losses[-20:]) / 20), 4),
        "test_pairwise_accuracy": round(accuracy, 4),
        "train_minutes": round((time.time() - start) / 60, 2),
    }
    trained.save(out, {"build_record.json": json.dumps(record, indent=2) + "\n"})
    return record


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]) if len(sys.argv) > 1 else PREFERENCE_MODEL), indent=2))
