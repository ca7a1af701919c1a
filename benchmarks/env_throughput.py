"""Env throughput: is the MDP ever the bottleneck of a rollout?

Measures, side by side in one run (contenders take turns, round after round, because these
machines are noisy; each figure is the median over rounds):

* a minimal numpy env that only appends a token to a left-padded row (the floor),
* ``TextGenerationEnv`` (raw, and through ``gym.make`` with its default wrappers),
* ``TextGenerationVectorEnv`` at N = 1, 16, 64, 256 (token-steps/s: tokens appended per second),
* for scale: gymnasium's ``SyncVectorEnv`` over 64 single envs, and one KV-cached sampling step of
  the embedded model at batch 64 (the cheapest policy there is),

with random valid actions and no model in the envs. Prints a table and writes JSON.

Goals: single env >= 0.5x the minimal env; vector env at N=64 >= 10x the single env.

    python benchmarks/env_throughput.py [--rounds 7] [--seconds 0.3]
    python benchmarks/env_throughput.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401  (registers the envs)
from common import Contender, machine, measure, parse_args, single_runner, vector_runner, write_json
from textgym.models import load_causal_lm
from textgym.models.sampling import HFSampler, Sampling

ENV_ID = "textgym/TextGeneration-v0"


class MinimalAppendEnv:
    """The floor: shift a left-padded row, write the token, return copies. Nothing else."""

    def __init__(self, length: int, prompt_len: int, max_new_tokens: int):
        self.ids = np.zeros(length, np.int64)
        self.mask = np.zeros(length, np.int64)
        self.prompt_len, self.max_new_tokens, self.steps = prompt_len, max_new_tokens, 0

    def reset(self, seed: int | None = None):
        self.ids[:] = 0
        self.ids[-self.prompt_len :] = 1
        self.mask[:] = 0
        self.mask[-self.prompt_len :] = 1
        self.steps = 0
        return {"input_ids": self.ids.copy(), "attention_mask": self.mask.copy()}, {}

    def step(self, action):
        self.ids[:-1] = self.ids[1:]
        self.ids[-1] = action
        self.mask[:-1] = self.mask[1:]
        self.mask[-1] = 1
        self.steps += 1
        obs = {"input_ids": self.ids.copy(), "attention_mask": self.mask.copy()}
        return obs, 0.0, False, self.steps >= self.max_new_tokens, {}


def lm_runner(num_envs: int, length: int) -> Callable[[float], tuple[int, float]]:
    """Sample one token for every env from the tiny LM with the rollout's ``HFSampler`` (KV cache)."""
    model = load_causal_lm("tiny", device="cpu")
    sampler, processors = HFSampler(model), Sampling().processors(model.config.vocab_size)
    generator = torch.Generator().manual_seed(0)

    def run(seconds: float) -> tuple[int, float]:
        tokens, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            prompt = torch.randint(2, model.config.vocab_size, (num_envs, 16), generator=generator)
            # decode until the cache holds a full observation
            out = sampler.sample(prompt, torch.ones_like(prompt), length - 16, eos_id=None, processors=processors,
                                 generator=generator)
            tokens += out.tokens.numel()
        return tokens, time.perf_counter() - start

    return run


def contenders(sizes: list[int]) -> list[Contender]:
    env = gym.make(ENV_ID)
    mdp = env.unwrapped.mdp
    valid = np.flatnonzero(env.unwrapped.action_masks())
    actions = np.random.default_rng(0).choice(valid, size=1 << 16)  # np.int64, as SB3 passes them
    mean_prompt = int(np.mean([len(ids) for ids in mdp.prompt_ids]))
    minimal = MinimalAppendEnv(mdp.length, mean_prompt, mdp.max_new_tokens)
    found = [
        Contender("minimal numpy env", 1, single_runner(minimal, actions)),
        Contender("TextGenerationEnv", 1, single_runner(env.unwrapped, actions)),
        Contender("gym.make(TextGeneration-v0)", 1, single_runner(env, actions)),
    ]
    for n in sizes:
        envs = gym.make_vec(ENV_ID, num_envs=n)
        found.append(Contender(f"TextGenerationVectorEnv N={n}", n, vector_runner(envs, actions)))
    sync = gym.make_vec(ENV_ID, num_envs=64, vectorization_mode="sync")
    found.append(Contender("SyncVectorEnv N=64 (gymnasium)", 64, vector_runner(sync, actions)))
    found.append(Contender("tiny LM sampling step N=64", 64, lm_runner(64, mdp.length)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per contender per round")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    args = parse_args(parser, quick={"rounds": 1, "seconds": 0.02, "sizes": [1, 64]})

    results = measure(contenders(args.sizes), args.rounds, args.seconds)
    single = results["TextGenerationEnv"]["token_steps_per_s"]
    ratios = {
        "single_vs_minimal": single / results["minimal numpy env"]["token_steps_per_s"],
        "gym_make_vs_minimal": results["gym.make(TextGeneration-v0)"]["token_steps_per_s"]
        / results["minimal numpy env"]["token_steps_per_s"],
    }
    if "TextGenerationVectorEnv N=64" in results:
        vector64 = results["TextGenerationVectorEnv N=64"]["token_steps_per_s"]
        ratios["vector64_vs_single"] = vector64 / single
        ratios["vector64_vs_sync_vector64"] = vector64 / results["SyncVectorEnv N=64 (gymnasium)"]["token_steps_per_s"]
        ratios["vector64_vs_tiny_lm64"] = vector64 / results["tiny LM sampling step N=64"]["token_steps_per_s"]
    goals = {"single_vs_minimal": 0.5, "vector64_vs_single": 10.0}

    print(f"{'contender':<34}{'token-steps/s':>16}{'us/token':>10}")
    for name, r in results.items():
        print(f"{name:<34}{r['token_steps_per_s']:>16,.0f}{r['us_per_token']:>10.2f}")
    for name, value in ratios.items():
        goal = f"  (goal >= {goals[name]})" if name in goals else ""
        print(f"{name:<34}{value:>16.2f}{goal}")

    write_json(args.out / "env_throughput.json", {
        "benchmark": "env_throughput",
        "env_id": ENV_ID,
        "settings": vars(args),
        "machine": machine(),
        "results": results,
        "ratios": ratios,
        "goals": goals,
        "goals_met": {name: ratios[name] >= goal for name, goal in goals.items() if name in ratios},
    })


if __name__ == "__main__":
    main()
