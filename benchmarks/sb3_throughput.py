"""SB3 throughput: stock PPO with our cached LLM policy versus a naive full-forward LM policy.

Both run ``stable_baselines3.PPO`` (its default epochs and minibatch size) on ``textgym/Sentiment-v0``
with the embedded model, 8 envs and 48 new tokens, rollout plus update, taking turns round after
round in one run; env-steps/s is timesteps over wall time, median over rounds. Goal: ours >= 5x naive.

    python benchmarks/sb3_throughput.py [--rounds 3] [--n-envs 8]
    python benchmarks/sb3_throughput.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from agents import LLMActorCriticPolicy
from common import machine, parse_args, write_json

ENV_ID = "textgym/Sentiment-v0"


def make_model(cache: bool, args) -> PPO:
    """SB3's PPO defaults (10 epochs, minibatches of 64), but rollouts of one 48-token episode length.
    ``cache=False`` is the naive policy: without its two tricks, every env step re-runs the whole
    sequence (no KV cache) and every training sample runs its own full forward (no prefix grouping)."""
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=args.seed, env_kwargs={"max_new_tokens": 48})
    return PPO(LLMActorCriticPolicy, env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
               policy_kwargs={"model": "tiny", "cache": cache}, device="cpu", seed=args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=48, help="rollout length per env per update")
    parser.add_argument("--n-epochs", type=int, default=10, help="SB3's default")
    parser.add_argument("--batch-size", type=int, default=64, help="SB3's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, quick={"rounds": 1, "n_envs": 2, "n_steps": 8, "n_epochs": 1, "batch_size": 16})

    torch.set_num_threads(min(2, torch.get_num_threads()))
    contenders = {"LLMActorCriticPolicy (prefix KV cache)": True, "naive full-forward LM policy": False}
    models = {name: make_model(cache, args) for name, cache in contenders.items()}
    per_round = args.n_envs * args.n_steps  # one rollout and one update
    for model in models.values():  # warm-up
        model.learn(per_round, reset_num_timesteps=False)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(per_round, reset_num_timesteps=False)
            rates[name].append(per_round / (time.perf_counter() - start))
    results = {name: {"env_steps_per_s": statistics.median(r), "rounds": r} for name, r in rates.items()}
    ours, naive = (results[name]["env_steps_per_s"] for name in contenders)
    ratio = ours / naive

    print(f"{'policy (stock PPO, ' + str(args.n_envs) + ' envs, 48 tokens)':<46}{'env-steps/s':>12}")
    for name, r in results.items():
        print(f"{name:<46}{r['env_steps_per_s']:>12.1f}")
    print(f"{'ratio (goal >= 5)':<46}{ratio:>12.2f}")
    write_json(args.out / "sb3_throughput.json", {
        "benchmark": "sb3_throughput", "env_id": ENV_ID, "settings": vars(args), "machine": machine(),
        "results": results, "ratio": ratio, "goal": 5.0, "goal_met": ratio >= 5.0,
    })


if __name__ == "__main__":
    main()
