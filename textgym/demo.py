"""Roll out episodes of a textgym env with the embedded model as the policy, and print them.

    python -m textgym.demo [--env-id textgym/TextGeneration-v0] [--episodes 6] [--seed 0]

The env never runs a model: here the LM samples each token from the observation, and the vector
env appends it, exactly as an RL agent would.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401  (registers the envs)
from textgym.models import load_causal_lm
from textgym.models.cache import positions
from textgym.models.sampling import action_logits, sample_categorical


@dataclass
class DemoConfig:
    env_id: str = "textgym/TextGeneration-v0"
    model: str = "tiny"
    episodes: int = 6
    seed: int = 0
    temperature: float = 1.0


@torch.no_grad()
def sample_tokens(model, envs: gym.vector.VectorEnv, obs: dict[str, np.ndarray], temperature: float,
                  generator: torch.Generator) -> np.ndarray:
    """One token per env from the LM's next-token distribution at the last (newest) position, among
    the actions the envs' ``action_masks()`` allow."""
    ids = torch.from_numpy(obs["input_ids"]).to(model.device)
    mask = torch.from_numpy(obs["attention_mask"]).to(model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]
    logits = action_logits(logits, envs.single_action_space.n, temperature, envs.unwrapped.action_masks())
    return sample_categorical(torch.softmax(logits, dim=-1).cpu(), generator).numpy()


def rollout(cfg: DemoConfig) -> list[dict]:
    """The first episode of each of ``cfg.episodes`` envs, as their end-of-episode infos."""
    envs = gym.make_vec(cfg.env_id, num_envs=cfg.episodes)
    model = load_causal_lm(cfg.model)
    generator = torch.Generator().manual_seed(cfg.seed)
    obs, _ = envs.reset(seed=cfg.seed)
    finished: dict[int, dict] = {}
    while len(finished) < cfg.episodes:
        obs, _, terminated, truncated, info = envs.step(sample_tokens(model, envs, obs, cfg.temperature, generator))
        for i in np.flatnonzero(terminated | truncated):
            if i not in finished:
                finished[i] = {key: info[key][i] for key in ("prompt", "completion", "score")}
                finished[i]["ended_by"] = "EOS" if terminated[i] else "length limit"
    envs.close()
    return [finished[i] for i in sorted(finished)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in vars(DemoConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    cfg = DemoConfig(**vars(parser.parse_args(argv)))
    for n, episode in enumerate(rollout(cfg), start=1):
        print(f"--- episode {n} (ended by {episode['ended_by']}, score {episode['score']:.2f})")
        print(f"prompt:     {episode['prompt']}")
        print(f"completion: {episode['completion']}")


if __name__ == "__main__":
    main()
