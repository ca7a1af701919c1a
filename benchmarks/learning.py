"""Learning evidence for the batched trainers: test-split scores before and after training.

``textgym/Sentiment-v0`` with PPO and with GRPO: the goal is a mean test score >= 0.9, with the
KL to the base model reported. The runs use immediate rewards (the task's potential-based
shaping) and the KL penalty; every task's sparse-reward learnability, Arithmetic's included, is
``benchmarks/learnability.py``. Test scores are the mean over ``--episodes`` sampled test
episodes (temperature 1, fixed seeds, the same prompts for base and trained models). Writes
``results/learning.json`` and one curve PNG; runs left out of ``--runs`` keep their recorded results.

    python benchmarks/learning.py [--runs sentiment-ppo sentiment-grpo] [--episodes 256]
    python benchmarks/learning.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import numpy as np

import textgym  # noqa: F401  (registers the envs)
from agents.trainers import TrainConfig, Trainer
from common import figure, machine, parse_args, test_score, write_json
from textgym.models import load_causal_lm

RUNS = {
    "sentiment-ppo": dict(env_id="textgym/Sentiment-v0", algo="ppo", steps=40_000),
    "sentiment-grpo": dict(env_id="textgym/Sentiment-v0", algo="grpo", steps=60_000, kl_coef=0.1),
}


def plot(results: dict, path) -> None:
    with figure(path, len(results), (4.2 * len(results), 3.2)) as axes:
        for ax, (name, r) in zip(axes, results.items()):
            ax.plot(r["curve"]["step"], r["curve"]["score"], label="train score")
            ax.axhline(r["base_test_score"], color="gray", ls="--", label=f"base test {r['base_test_score']:.3f}")
            ax.axhline(r["test_score"], color="tab:green", ls=":", label=f"trained test {r['test_score']:.3f}")
            ax.set(title=name, xlabel="tokens", ylabel="task score")
            ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, quick={"episodes": 16})  # and one iteration per run, below
    warnings.filterwarnings("ignore")
    path = args.out / "learning.json"
    recorded = json.loads(path.read_text())["runs"] if path.exists() else {}
    results = {name: run for name, run in recorded.items() if name in RUNS}
    base = load_causal_lm("tiny", device="cpu")
    quick = {"steps": 1} if args.quick else {}  # one iteration
    for name in args.runs:
        config = TrainConfig(out=tempfile.mkdtemp(), seed=args.seed, **RUNS[name] | quick)
        start = time.perf_counter()
        trainer = Trainer(config, progress=False)
        trainer.train()
        rows = trainer.log.rows
        results[name] = {
            "config": {k: v for k, v in config.to_dict().items() if k != "out"},
            "base_test_score": test_score(base.to(trainer.policy.lm.device), config, args.episodes),
            "test_score": test_score(trainer.policy.lm, config, args.episodes),
            "final_kl_per_episode": float(np.mean([r["objective/kl"] for r in rows[-5:]])),
            "final_kl_per_token": float(np.mean([r["objective/kl_per_token"] for r in rows[-5:]])),
            "tokens": trainer.steps, "minutes": (time.perf_counter() - start) / 60,
            "curve": {"step": [r["step"] for r in rows], "score": [r["objective/score"] for r in rows],
                      "kl": [r["objective/kl"] for r in rows]},
        }
        r = results[name]
        print(f"{name}: test {r['base_test_score']:.3f} -> {r['test_score']:.3f}, KL {r['final_kl_per_episode']:.2f}"
              f"/episode ({r['final_kl_per_token']:.3f}/token), {r['tokens']} tokens, {r['minutes']:.1f} min",
              flush=True)
    print(f"\n{'run':<16}{'base test':>10}{'trained':>9}{'gain':>8}{'KL/ep':>8}{'KL/tok':>8}{'tokens':>9}{'min':>6}")
    for name, r in sorted(results.items()):
        print(f"{name:<16}{r['base_test_score']:>10.3f}{r['test_score']:>9.3f}"
              f"{r['test_score'] - r['base_test_score']:>+8.3f}{r['final_kl_per_episode']:>8.2f}"
              f"{r['final_kl_per_token']:>8.3f}{r['tokens']:>9}{r['minutes']:>6.1f}")
    write_json(path, {"machine": machine(), "episodes": args.episodes, "runs": results})
    plot(results, args.out / "learning.png")


if __name__ == "__main__":
    main()
