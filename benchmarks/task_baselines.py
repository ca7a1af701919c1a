"""Task baselines: the embedded model's score on each task's test split, a bad policy's and a good one's.

The base score samples the tiny model at temperature 1 (``HFSampler``) for ``--episodes`` test
prompts, in batches of ``--num-envs``, and steps the task's vector env through the completions. "Gold" scores what a good policy writes: the reference
summary, the right answer, a scene that uses the three words once, and a plainly positive review
ending, a polite on-topic answer (Preference), for the same test prompts. "Floor" scores a bad
policy: the empty completion, and for Preference the held-out rejected answers (off-topic, cut
off, rude or repetitive). "Position" places the base on that scale, (base - floor) / (gold - floor):
between 10% and 65% leaves RL room to move without starting from nothing. The conversation games
(``textgym.tasks.conversations``) are measured the same way: the base model plays turn by turn
(``first_conversations``), gold is the scripted good player (``GOLD``) and floor writes empty
turns. Prints a table and writes JSON.

    python benchmarks/task_baselines.py [--episodes 256] [--num-envs 64]
    python benchmarks/task_baselines.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import textgym
from common import machine, parse_args, write_json
from textgym.models import load_causal_lm
from textgym.models.sampling import HFSampler, first_conversations, first_episodes
from textgym.scorers import run_scorer
from textgym.tasks import TASKS
from textgym.tasks.conversations import GOLD, play


def base_scores(env_id: str, model, episodes: int, num_envs: int, seed: int) -> list[float]:
    envs = gym.make_vec(env_id, num_envs=num_envs, split="test")
    scores: list[float] = []
    for batch in range(-(-episodes // num_envs)):  # env i of batch b is seeded seed + b * num_envs + i
        _, infos = first_episodes(HFSampler(model), envs, seed + batch * num_envs)
        scores += [float(info["score"]) for info in infos]
    return scores[:episodes]


def game_scores(game: str, model, episodes: int, num_envs: int, seed: int) -> dict[str, list[float]]:
    """Base, floor and gold scores of a conversation game on the test split, episode ``i`` seeded ``seed + i``."""
    envs = [gym.make(f"textgym/{game}-v0", split="test") for _ in range(num_envs)]
    base: list[float] = []
    for batch in range(-(-episodes // num_envs)):
        base += [float(info["score"]) for info in first_conversations(HFSampler(model), envs, seed + batch * num_envs)]
    played = {which: [float(play(envs[0], seed + i, respond)["score"]) for i in range(episodes)]
              for which, respond in [("floor", lambda messages: ""), ("gold", GOLD[game])]}
    return {"base": base[:episodes], **played}


def scores(name: str, which: str, episodes: int) -> list[float]:
    """The task score of its ``which`` ("gold" or "floor") completions for the first test prompts."""
    task = TASKS[name]
    completions = task.gold_completions if which == "gold" else task.floor_completions
    return run_scorer(task.scorer(), *completions("test", episodes)).tolist()


def summary(base: list[float], floor: float, gold: float) -> dict[str, float]:
    return {"floor_mean": float(floor), "base_mean": float(np.mean(base)), "base_std": float(np.std(base)),
            "gold_mean": float(gold), "base_position": float((np.mean(base) - floor) / (gold - floor)),
            "episodes": len(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, quick={"episodes": 8, "num_envs": 8})

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_causal_lm("tiny")
    results = {}
    for name in textgym.TASK_NAMES:
        base = base_scores(f"textgym/{name}-v0", model, args.episodes, args.num_envs, args.seed)
        floor, gold = (np.mean(scores(name, which, args.episodes)) for which in ("floor", "gold"))
        results[name] = summary(base, floor, gold)
    for game in GOLD:
        measured = game_scores(game, model, args.episodes, args.num_envs, args.seed)
        results[game] = summary(measured["base"], np.mean(measured["floor"]), np.mean(measured["gold"]))
    print(f"{'task (test split)':<20}{'floor':>8}{'base mean ± std':>20}{'gold':>8}{'position':>10}")
    for name, r in results.items():
        print(f"{name:<20}{r['floor_mean']:>8.3f}{r['base_mean']:>12.3f} ± {r['base_std']:.3f}{r['gold_mean']:>8.3f}"
              f"{r['base_position']:>10.0%}")
    write_json(args.out / "task_baselines.json", {"benchmark": "task_baselines", "settings": vars(args),
                          "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
