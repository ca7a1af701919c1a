"""Roll out episodes of a textgym env with the embedded model as the policy, and print them.

    python -m textgym.demo [--env-id textgym/TextGeneration-v0] [--episodes 6] [--seed 0]

The env never runs a model: here the LM samples each token from the observation, and the vector
env appends it, exactly as an RL agent would.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import gymnasium as gym

import textgym  # noqa: F401  (registers the envs)
from textgym.models import load_causal_lm
from textgym.models.sampling import HFSampler, Sampling, first_episodes


@dataclass
class DemoConfig:
    env_id: str = "textgym/TextGeneration-v0"
    model: str = "tiny"
    episodes: int = 6
    seed: int = 0
    temperature: float = 1.0


def rollout(cfg: DemoConfig) -> list[dict]:
    """The first episode of each of ``cfg.episodes`` envs, as their end-of-episode infos."""
    envs = gym.make_vec(cfg.env_id, num_envs=cfg.episodes)
    _, infos = first_episodes(HFSampler(load_causal_lm(cfg.model)), envs, cfg.seed, Sampling(cfg.temperature))
    envs.close()
    return [{key: info[key] for key in ("prompt", "completion", "score", "ended_by")} for info in infos]


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
