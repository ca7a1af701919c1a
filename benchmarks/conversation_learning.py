"""Conversation learning: do PPO and GRPO from the batched trainer raise every game's test score?

Each multi-turn game (``textgym.CONVERSATION_NAMES``: GuessNumber, Calculator, Customer) is
trained from the embedded model by PPO and by GRPO (group 4: four games of one opening), over
several seeds, for ``--budget`` policy tokens each. The turn scores stay on the tokens that end the
turns; the other side's tokens are context only. Reported per game and algorithm: the test score
(``--episodes`` test conversations, the same ones for the base and every trained model) as mean ±
std over seeds, and its gain over the base. Writes ``results/conversation_learning.json`` and
``results/conversation_learning.png`` (training score per iteration, one panel per game).

    python benchmarks/conversation_learning.py                 # 3 games x 2 algorithms x 3 seeds
    python benchmarks/conversation_learning.py --games Customer --seeds 1
    python benchmarks/conversation_learning.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import product

import numpy as np

from common import figure, machine, parse_args, quiet_worker, test_score, write_json

GAMES = ["GuessNumber", "Calculator", "Customer"]
COMMON = dict(lr=1e-4, kl_coef=0.05, num_envs=32, minibatch_size=16, epochs=4, checkpoint_every=10**9)
ALGOS = {"ppo": {}, "grpo": dict(group_size=4)}  # algorithm -> its settings besides COMMON


@dataclass(frozen=True)
class Run:
    game: str
    algo: str
    seed: int
    budget: int  # policy tokens
    episodes: int


def config_of(game: str, algo: str, seed: int = 0, budget: int = 1, out: str = ""):
    from agents.trainers import TrainConfig

    return TrainConfig(env_id=f"textgym/{game}-v0", algo=algo, seed=seed, steps=budget, out=out, device="cpu",
                       **COMMON | ALGOS[algo])


def train_one(run: Run) -> dict:
    """One run in a worker process: train for the budget, then score the test conversations."""
    quiet_worker()
    from agents.trainers import Trainer

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        config = config_of(run.game, run.algo, run.seed, run.budget, out)
        trainer = Trainer(config, progress=False)
        rows = []
        while trainer.steps < run.budget:
            rows.append(trainer.iterate())
        score = test_score(trainer.policy.lm, config, run.episodes)
    return {"game": run.game, "algo": run.algo, "seed": run.seed, "tokens": trainer.steps, "test_score": score,
            "minutes": (time.perf_counter() - start) / 60,
            "curve": {key: [r[name] for r in rows] for key, name in
                      [("step", "step"), ("score", "objective/score"), ("kl", "objective/kl"),
                       ("policy_tokens", "env/episode_len")]}}


def base_score(game: str, episodes: int) -> float:
    """The embedded model's test score, on the same conversations as the trained models'."""
    quiet_worker()
    from textgym.models import load_causal_lm

    return test_score(load_causal_lm("tiny", device="cpu"), config_of(game, "ppo"), episodes)


def plot(runs: list[dict], bases: dict[str, float], path) -> None:
    games = list(bases)
    with figure(path, len(games), (3.8 * len(games), 3.2)) as axes:
        for ax, game in zip(axes, games):
            for run in (r for r in runs if r["game"] == game):
                ax.plot(run["curve"]["step"], run["curve"]["score"], lw=1, color="C0" if run["algo"] == "ppo" else "C1",
                        label=f"{run['algo'].upper()} seed {run['seed']}")
            ax.axhline(bases[game], color="black", ls=":", lw=1, label=f"base (test) {bases[game]:.3g}")
            ax.set(title=f"{game}-v0", xlabel="policy tokens", ylabel="training score")
            ax.legend(fontsize=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", nargs="+", default=GAMES, choices=GAMES)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=20_000, help="policy tokens per run")
    parser.add_argument("--episodes", type=int, default=256, help="test conversations per model")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parse_args(parser, quick={"seeds": 1, "budget": 100, "episodes": 8})
    runs = [Run(game, algo, seed, args.budget, args.episodes)
            for game, algo, seed in product(args.games, args.algos, range(args.seeds))]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        bases = dict(zip(args.games, pool.map(base_score, args.games, [args.episodes] * len(args.games))))
        done = []
        for run, result in zip(runs, pool.map(train_one, runs)):
            done.append(result)
            print(f"{run.game}/{run.algo}/seed{run.seed}: test {bases[run.game]:.3f} -> {result['test_score']:.3f}, "
                  f"{result['tokens']:,} tokens, {result['minutes']:.1f} min", flush=True)

    results = {}
    print(f"\n{'game':<13}{'algo':<6}{'base':>8}{'trained test score':>22}{'gain':>9}{'raised':>8}")
    for game, algo in product(args.games, args.algos):
        test = [r["test_score"] for r in done if (r["game"], r["algo"]) == (game, algo)]
        results[f"{game}/{algo}"] = r = {
            "game": game, "algo": algo, "base_test_score": bases[game], "test_scores": test,
            "test_score_mean": float(np.mean(test)), "test_score_std": float(np.std(test)),
            "gain_mean": float(np.mean(test)) - bases[game], "raised": f"{sum(t > bases[game] for t in test)}/{len(test)}"}
        print(f"{game:<13}{algo:<6}{bases[game]:>8.3f}{r['test_score_mean']:>13.3f} ± {r['test_score_std']:.3f}"
              f"{r['gain_mean']:>+9.3f}{r['raised']:>8}")
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(runs)} runs in {minutes:.1f} min with {args.workers} workers")
    write_json(args.out / "conversation_learning.json", {
        "machine": machine(), "minutes": minutes, "workers": args.workers, "settings": vars(args),
        "common": COMMON, "algos": ALGOS, "bases": bases, "results": results, "runs": done})
    plot(done, bases, args.out / "conversation_learning.png")


if __name__ == "__main__":
    main()
