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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401  (registers the envs)
from textgym.models import load_causal_lm

ENV_ID = "textgym/TextGeneration-v0"
RESULTS = Path(__file__).parent / "results" / "env_throughput.json"


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


@dataclass
class Contender:
    name: str
    num_envs: int
    run: Callable[[float], tuple[int, float]]  # (seconds) -> (tokens appended, elapsed)


def single_runner(env, actions: np.ndarray) -> Callable[[float], tuple[int, float]]:
    env.reset(seed=0)
    state = {"i": 0}

    def run(seconds: float) -> tuple[int, float]:
        step, reset, i, tokens = env.step, env.reset, state["i"], 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(1000):
                _, _, terminated, truncated, _ = step(actions[i])
                i = (i + 1) % len(actions)
                if terminated or truncated:
                    reset()
            tokens += 1000
        state["i"] = i
        return tokens, time.perf_counter() - start

    return run


def vector_runner(envs, actions: np.ndarray) -> Callable[[float], tuple[int, float]]:
    """Counts appended tokens only: under next-step autoreset, a step that resets an env appends
    nothing to it, and counting it would flatter the vector env."""
    envs.reset(seed=0)
    n = envs.num_envs
    batches = actions[: (len(actions) // n) * n].reshape(-1, n)
    state = {"i": 0, "resetting": 0}

    def run(seconds: float) -> tuple[int, float]:
        step, i, resetting, tokens = envs.step, state["i"], state["resetting"], 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(50):
                _, _, terminated, truncated, info = step(batches[i])
                tokens += n - resetting
                resetting = int(np.count_nonzero(terminated | truncated)) if info else 0
                i = (i + 1) % len(batches)
        state["i"], state["resetting"] = i, resetting
        return tokens, time.perf_counter() - start

    return run


def lm_runner(num_envs: int, length: int) -> Callable[[float], tuple[int, float]]:
    """Sample one token for every env from the tiny LM with a KV cache, like a rollout does."""
    model = load_causal_lm("tiny", device="cpu")
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def run(seconds: float) -> tuple[int, float]:
        tokens, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            prompt = torch.randint(2, vocab, (num_envs, 16), generator=generator)
            out = model(input_ids=prompt, use_cache=True)
            for _ in range(length - 16):  # decode until the cache holds a full observation
                probs = torch.softmax(out.logits[:, -1], dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                tokens += num_envs
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


def measure(found: list[Contender], rounds: int, seconds: float) -> dict[str, dict]:
    rates: dict[str, list[float]] = {c.name: [] for c in found}
    for c in found:  # warm-up: first calls pay for caches and lazy imports
        c.run(0.05)
    for _ in range(rounds):
        for c in found:
            tokens, elapsed = c.run(seconds)
            rates[c.name].append(tokens / elapsed)
    return {
        c.name: {
            "token_steps_per_s": statistics.median(rates[c.name]),
            "us_per_token": 1e6 / statistics.median(rates[c.name]),
            "num_envs": c.num_envs,
            "rounds": rates[c.name],
        }
        for c in found
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per contender per round")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

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

    record = {
        "benchmark": "env_throughput",
        "env_id": ENV_ID,
        "settings": vars(args) | {"out": str(args.out)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch.__version__, "gymnasium": gym.__version__},
        "results": results,
        "ratios": ratios,
        "goals": goals,
        "goals_met": {name: ratios[name] >= goal for name, goal in goals.items() if name in ratios},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
