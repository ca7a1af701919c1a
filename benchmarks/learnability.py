"""Learnability: does sparse-reward RL take each task from the embedded model's base to its threshold?

For every task in ``textgym.tasks.TASKS``, one algorithm of the batched trainer (``RUNS``) trains
the embedded model with ``reward_mode="sparse"`` over several seeds, until the training score,
averaged over the last ``SMOOTHING`` iterations, reaches the task's threshold, or until the run
has used ``--budget`` tokens. The threshold is fixed before any run: halfway from the base
model's test score to the gold score, both from ``results/task_baselines.json``
(``benchmarks/task_baselines.py``). A task in ``TIMED`` has a goal on its final score instead
(Arithmetic: +20 points in at most 10 minutes a run): its runs note when they pass the threshold
and train on for that many minutes.

Reported per task: how many seeds reached the threshold and after how many tokens, and the test
score (``--episodes`` sampled test episodes, the same prompts for the base and every trained
model) as mean ± std over seeds, with the gain over the base model. Writes
``results/learnability.json`` and ``results/learnability.png`` (training curves, one panel per
task); tasks left out of ``--tasks`` keep their recorded results.

    python benchmarks/learnability.py                 # 5 tasks x 3 seeds, 2 workers
    python benchmarks/learnability.py --tasks Arithmetic
    python benchmarks/learnability.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import product

import numpy as np

from common import (
    SMOOTHING, figure, machine, parse_args, quiet_worker, test_score, thresholds, tokens_to_threshold, write_json,
)

COMMON = dict(reward_mode="sparse", kl_coef=0.05, num_envs=32, minibatch_size=16, epochs=4, checkpoint_every=10**9)
RUNS = {  # task -> the trainer settings of its runs
    "Sentiment": dict(algo="ppo", lr=3e-5),
    # Tried on the current build (one seed, 200k tokens, test score): PPO 3e-5 0.58, PPO 1e-4 0.58; GRPO groups
    # of 8 over 64 envs: lr 5e-5 0.66, 1e-4 0.69, 2e-4 0.64, 5e-5 with kl_coef 0.01 0.68, 8 epochs 0.66,
    # 1e-4 with kl_coef 0.01 0.69; over 128 envs at 1e-4: groups of 8 0.68, of 16 0.64. RLOO g8/64 envs/1e-4, 3 seeds:
    # 1/3 reach the threshold (test 0.66-0.69).
    "Keywords": dict(algo="grpo", lr=1e-4, group_size=8, num_envs=64, minibatch_size=32),
    "Summarize": dict(algo="grpo", lr=3e-5, group_size=4),
    # Sums are ~4 tokens: many envs and big minibatches keep the update's fixed costs down.
    "Arithmetic": dict(algo="grpo", lr=5e-5, group_size=16, num_envs=256, minibatch_size=64, epochs=2),
    "Preference": dict(algo="ppo", lr=3e-5),
}
TIMED = {"Arithmetic": 10.0}  # task -> minutes each run trains, past its threshold and budget


@dataclass(frozen=True)
class Run:
    task: str
    seed: int
    threshold: float
    budget: int  # tokens, unless timed
    minutes: float | None  # None: stop at the threshold or the budget
    episodes: int


def train_one(run: Run) -> dict:
    """One run in a worker process: train until the threshold or the budget, or for its minutes."""
    quiet_worker()
    from agents.trainers import TrainConfig, Trainer
    from textgym.tasks import TASKS

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(env_id=TASKS[run.task].env_id, seed=run.seed, steps=run.budget, out=out, device="cpu",
                             **COMMON | RUNS[run.task])
        trainer = Trainer(config, progress=False)
        rows: list[dict] = []
        reached = None
        while (time.perf_counter() - start < run.minutes * 60 if run.minutes else
               reached is None and trainer.steps < run.budget):
            rows.append(trainer.iterate())
            reached = reached or tokens_to_threshold([r["step"] for r in rows], [r["objective/score"] for r in rows],
                                                     run.threshold)
        score = test_score(trainer.policy.lm, config, run.episodes)
    return {
        "task": run.task, "seed": run.seed, "config": {k: v for k, v in config.to_dict().items() if k != "out"},
        "tokens_to_threshold": reached, "tokens": trainer.steps, "test_score": score,
        "minutes": (time.perf_counter() - start) / 60,
        "curve": {"step": [r["step"] for r in rows], "score": [r["objective/score"] for r in rows],
                  "kl": [r["objective/kl"] for r in rows]},
    }


def base_score(task: str, episodes: int) -> float:
    """The embedded model's test score, on the same episodes as the trained models'."""
    quiet_worker()
    from agents.trainers import TrainConfig
    from textgym.models import load_causal_lm
    from textgym.tasks import TASKS

    config = TrainConfig(env_id=TASKS[task].env_id, **COMMON | RUNS[task])
    return test_score(load_causal_lm("tiny", device="cpu"), config, episodes)


def plot(results: dict, runs: list[dict], path) -> None:
    with figure(path, len(results), (3.6 * len(results), 3.2)) as axes:
        for ax, (task, r) in zip(axes, results.items()):
            for run in (run for run in runs if run["task"] == task):
                ax.plot(run["curve"]["step"], run["curve"]["score"], lw=1, label=f"seed {run['seed']}")
            ax.axhline(r["threshold"], color="gray", ls="--", lw=1, label=f"threshold {r['threshold']:.3g}")
            ax.axhline(r["base_test_score"], color="black", ls=":", lw=1, label=f"base {r['base_test_score']:.3g}")
            ax.set(title=f"{task}: {r['algo'].upper()}, sparse", xlabel="tokens", ylabel="training score")
            ax.legend(fontsize=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=200_000, help="tokens per run at most")
    parser.add_argument("--episodes", type=int, default=256, help="test episodes per model")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parse_args(parser, quick={"seeds": 1, "budget": 200, "episodes": 8})
    limits = thresholds()
    timed = {} if args.quick else TIMED
    runs = [Run(task, seed, limits[task], args.budget, timed.get(task), args.episodes)
            for task, seed in product(args.tasks, range(args.seeds))]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        bases = dict(zip(args.tasks, pool.map(base_score, args.tasks, [args.episodes] * len(args.tasks))))
        done = []
        for run, result in zip(runs, pool.map(train_one, runs)):
            done.append(result | {"base_test_score": bases[run.task]})
            print(f"{run.task}/seed{run.seed}: threshold at {result['tokens_to_threshold']} tokens, test "
                  f"{bases[run.task]:.3f} -> {result['test_score']:.3f}, {result['minutes']:.1f} min", flush=True)

    results = {}
    print(f"\n{'task':<11}{'algo':<6}{'threshold':>10}{'reached':>8}{'tokens to it':>14}{'base':>7}"
          f"{'test score':>17}{'gain':>8}")
    for task in args.tasks:
        cell = [r for r in done if r["task"] == task]
        hits = [r["tokens_to_threshold"] for r in cell if (r["tokens_to_threshold"] or math.inf) <= args.budget]
        test = [r["test_score"] for r in cell]
        results[task] = r = {
            "algo": RUNS[task]["algo"], "threshold": limits[task], "base_test_score": bases[task],
            "reached": f"{len(hits)}/{len(cell)}", "tokens_to_threshold": [x["tokens_to_threshold"] for x in cell],
            "tokens_to_threshold_mean": float(np.mean(hits)) if hits else None,
            "test_score_mean": float(np.mean(test)), "test_score_std": float(np.std(test)),
            "gain_mean": float(np.mean(test)) - bases[task], "minutes_max": max(x["minutes"] for x in cell),
        }
        tokens = r["tokens_to_threshold_mean"]
        print(f"{task:<11}{r['algo']:<6}{r['threshold']:>10.3f}{r['reached']:>8}"
              f"{'-' if tokens is None else f'{tokens:,.0f}':>14}{r['base_test_score']:>7.3f}"
              f"{r['test_score_mean']:>10.3f} ± {r['test_score_std']:.3f}{r['gain_mean']:>+8.3f}")
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(runs)} runs in {minutes:.1f} min with {args.workers} workers")
    path = args.out / "learnability.json"
    recorded = json.loads(path.read_text()) if path.exists() else {"results": {}, "runs": []}
    results = {task: results.get(task) or recorded["results"][task] for task in RUNS
               if task in results or task in recorded["results"]}
    done = [r for r in recorded["runs"] if r["task"] not in args.tasks] + done
    write_json(path, {
        "machine": machine(), "minutes": minutes, "workers": args.workers, "settings": vars(args), "common": COMMON,
        "runs_config": RUNS, "timed_minutes": timed, "smoothing_iterations": SMOOTHING, "results": results,
        "runs": done})
    plot(results, done, args.out / "learnability.png")


if __name__ == "__main__":
    main()
