"""Immediate versus sparse reward: the same algorithm, token budget and hyperparameters, both modes.

For every task in ``textgym.tasks.TASKS``, PPO and then GRPO train the embedded model with
``reward_mode="sparse"`` (the task score at the last token) and ``"immediate"`` (the same score,
potential-shaped: a reward at every token), over several seeds. Everything else is equal,
including the KL penalty to the base model.

Reported per task, algorithm and mode (mean ± std over seeds):

- tokens to reach the task's threshold: the first step at which the training score, averaged over
  the last ``SMOOTHING`` iterations, reaches it (None: not within the budget);
- the final test score (``--episodes`` sampled episodes of the test split, the same for all runs);
- the final KL to the base model, per episode.

The thresholds are fixed before any run: halfway from the base model's test score to the gold
score, both from ``results/task_baselines.json`` (``benchmarks/task_baselines.py``).

Runs go to a pool of ``--workers`` processes with one torch thread each (on small models, two
single-threaded runs beat one two-threaded run). Writes ``results/immediate_vs_sparse.json`` and
one PNG of learning curves per task (``results/immediate_vs_sparse_<task>.png``, mean over seeds
with a ±1 std band).

    python benchmarks/immediate_vs_sparse.py            # the study: ~60 min on 2 cores
    python benchmarks/immediate_vs_sparse.py --quick    # a smoke run: 1 seed, tiny budgets
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from common import (
    SMOOTHING, figure, machine, parse_args, quiet_worker, test_score, thresholds, tokens_to_threshold, write_json,
)
from textgym.tasks import TASKS

ALGOS = ("ppo", "grpo")
MODES = ("sparse", "immediate")  # TODO(study v2): the dense sources, each trained once per task
HYPERPARAMETERS = dict(lr=3e-5, kl_coef=0.05, num_envs=32, minibatch_size=16, epochs=4, group_size=4,
                       checkpoint_every=10**9)  # no periodic checkpoints: the study only needs the end
BUDGETS = {name: task.study_tokens for name, task in TASKS.items()}


@dataclass(frozen=True)
class Run:
    task: str
    algo: str
    mode: str
    seed: int
    steps: int
    episodes: int

    @property
    def name(self) -> str:
        return f"{self.task}/{self.algo}/{self.mode}/seed{self.seed}"


def train_one(run: Run) -> dict:
    """One training run in a worker process; its curve, final test score and KL."""
    quiet_worker()
    from agents.trainers import TrainConfig, Trainer
    from textgym.tasks import TASKS

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(env_id=TASKS[run.task].env_id, algo=run.algo, reward_mode=run.mode, seed=run.seed,
                             steps=run.steps, out=out, device="cpu", **HYPERPARAMETERS)
        trainer = Trainer(config, progress=False)
        trainer.train()
        rows = trainer.log.rows
        score = test_score(trainer.policy.lm, config, run.episodes)
    return {
        "task": run.task, "algo": run.algo, "mode": run.mode, "seed": run.seed,
        "steps": [r["step"] for r in rows], "score": [r["objective/score"] for r in rows],
        "kl": [r["objective/kl"] for r in rows],
        "test_score": score,
        "final_kl": float(np.mean([r["objective/kl"] for r in rows[-SMOOTHING:]])),
        "minutes": (time.perf_counter() - start) / 60,
    }


def summarise(runs: list[dict], threshold: float) -> dict:
    """One (task, algo, mode) cell over its seeds."""
    reached = [tokens_to_threshold(r["steps"], r["score"], threshold) for r in runs]
    hits = [t for t in reached if t is not None]
    test = [r["test_score"] for r in runs]
    kl = [r["final_kl"] for r in runs]
    return {
        "tokens_to_threshold": reached,
        "tokens_to_threshold_mean": float(np.mean(hits)) if hits else None,
        "reached": f"{len(hits)}/{len(reached)}",
        "test_score_mean": float(np.mean(test)), "test_score_std": float(np.std(test)),
        "final_kl_mean": float(np.mean(kl)), "final_kl_std": float(np.std(kl)),
    }


def band(runs: list[dict], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of the training score, interpolated onto a shared token grid."""
    curves = np.stack([np.interp(grid, r["steps"], r["score"]) for r in runs])
    return curves.mean(0), curves.std(0)


def plot_task(task: str, cells: dict[tuple[str, str], list[dict]], threshold: float, path: Path) -> None:
    with figure(path, len(ALGOS), (5 * len(ALGOS), 3.4), sharey=True) as axes:
        for ax, algo in zip(axes, ALGOS):
            for mode, color in zip(MODES, ("tab:blue", "tab:orange")):
                runs = cells[algo, mode]
                grid = np.linspace(0, min(r["steps"][-1] for r in runs), 100)
                mean, std = band(runs, grid)
                ax.plot(grid, mean, color=color, label=f"{mode} ({len(runs)} seeds)")
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold:.3g}")
            ax.set(title=f"{task}: {algo.upper()}", xlabel="tokens", ylabel="training score")
            ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=128, help="test episodes per run")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every task's token budget")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parse_args(parser, quick={"seeds": 1, "episodes": 16, "budget_scale": 1 / 40})
    limits = thresholds()
    runs = [Run(task, algo, mode, seed, int(BUDGETS[task] * args.budget_scale), args.episodes)
            for task, algo, mode, seed in product(args.tasks, ALGOS, MODES, range(args.seeds))]
    start = time.perf_counter()
    cells: dict[tuple[str, str, str], list[dict]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for run, result in zip(runs, pool.map(train_one, runs)):
            cells.setdefault((run.task, run.algo, run.mode), []).append(result)
            print(f"{run.name}: test {result['test_score']:.3f}, KL {result['final_kl']:.2f}, "
                  f"{result['minutes']:.1f} min", flush=True)
    minutes = (time.perf_counter() - start) / 60

    table = {}
    print(f"\n{'task':<11}{'algo':<6}{'mode':<10}{'threshold':>10}{'reached':>8}{'tokens to it':>14}"
          f"{'test score':>16}{'KL/episode':>14}")
    for (task, algo, mode), cell in cells.items():
        stats = table.setdefault(task, {}).setdefault(algo, {})[mode] = summarise(cell, limits[task])
        tokens = stats["tokens_to_threshold_mean"]
        print(f"{task:<11}{algo:<6}{mode:<10}{limits[task]:>10.3f}{stats['reached']:>8}"
              f"{'-' if tokens is None else f'{tokens:,.0f}':>14}"
              f"{stats['test_score_mean']:>9.3f} ± {stats['test_score_std']:.3f}"
              f"{stats['final_kl_mean']:>8.2f} ± {stats['final_kl_std']:.2f}")
    print(f"\n{len(runs)} runs in {minutes:.1f} min with {args.workers} workers")
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        plot_task(task, {(a, m): cells[task, a, m] for a, m in product(ALGOS, MODES)}, limits[task],
                  args.out / f"immediate_vs_sparse_{task.lower()}.png")
    write_json(args.out / "immediate_vs_sparse.json", {
        "machine": machine(), "minutes": minutes, "workers": args.workers, "seeds": args.seeds,
        "test_episodes": args.episodes, "hyperparameters": HYPERPARAMETERS,
        "budgets": {t: int(BUDGETS[t] * args.budget_scale) for t in args.tasks}, "thresholds": limits,
        "smoothing_iterations": SMOOTHING, "results": table,
        "runs": [r for cell in cells.values() for r in cell]})


if __name__ == "__main__":
    main()
