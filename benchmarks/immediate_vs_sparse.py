"""Immediate versus sparse reward: the same algorithm, token budget and hyperparameters, every
reward mode.

For every task in ``textgym.tasks.TASKS``, PPO and then GRPO train the embedded model in each
reward mode of ``MODES``, over several seeds: ``"sparse"`` (the task score at the last token),
``"immediate"`` (the same score, potential-shaped with the score of the partial text),
``"learned"`` (shaped with a learned potential), ``"implicit"`` (PRIME's implicit token reward),
``"online"`` (the same, its π_φ also fitted to every rollout's scores at the run's learning rate, as
PRIME does: ``TrainConfig.implicit_lr``) and, on reward-model tasks, ``"attention"`` (the score
spread by the reward model's attention).
Within a task everything else is equal, including the KL penalty to the base model; the tasks
sparse reward learns slowly (Keywords, Arithmetic) get their own learning rate, batch and budget
(``TASK_HYPERPARAMETERS``, ``study_tokens``) so that sparse reward can reach the threshold. The two
trained sources are fitted once per task, before any run, to rollouts of the base model
(``--sources`` caches them until the model's tokenizer changes); their rollout tokens and minutes
are reported, since they are a one-time cost the runs share.

Reported per task, algorithm and mode (mean ± std over seeds):

- tokens to reach the task's threshold: the first step at which the training score, averaged over
  the last ``SMOOTHING`` iterations, reaches it (None: not within the budget); and the same plus
  the source's training rollouts;
- wall-clock minutes to the threshold (runs share the machine side by side, so modes compare);
- the final test score (``--episodes`` sampled episodes of the test split, the same for all runs);
- the final KL to the base model, per episode.

The goal (issue 13): on at least 3 of the 5 tasks, the best dense mode reaches the threshold with
at most half of sparse's RL tokens, for PPO and for GRPO alike, and never ends below sparse by
more than one standard deviation. A run that does not reach the threshold counts as the whole
budget, a lower bound on its true tokens: when sparse runs fall short the ratio is an upper bound,
and a dense mode meets the goal only if all its runs reach the threshold. The script prints, per
task and algorithm, whether it is met.

The thresholds are fixed before any run: halfway from the base model's test score to the gold
score, both from ``results/task_baselines.json`` (``benchmarks/task_baselines.py``).

Runs go to a pool of ``--workers`` processes with one torch thread each (on small models, two
single-threaded runs beat one two-threaded run). Writes ``results/immediate_vs_sparse.json`` and
one PNG of learning curves per task (``results/immediate_vs_sparse_<task>.png``, mean over seeds
with a ±1 std band).

    python benchmarks/immediate_vs_sparse.py                    # the study: about 3 hours on 2 cores
    python benchmarks/immediate_vs_sparse.py --tasks Keywords --update   # re-run one task, keep the others
    python benchmarks/immediate_vs_sparse.py --tasks Keywords --algos grpo --modes online --update  # one cell
    python benchmarks/immediate_vs_sparse.py --quick            # a smoke run: 1 seed, tiny budgets
    python benchmarks/immediate_vs_sparse.py --reanalyse        # tables, goal and figures again from the saved runs

Each run is logged to ``results/immediate_vs_sparse.runs.jsonl`` as it ends; the same command run
again after a kill (or to continue a study split over sessions) runs only the missing runs.

The goal also records whether the study can resolve it: a run crosses the threshold no earlier than
its ``SMOOTHING``-th iteration, so where that is more than half of sparse's tokens no source can
meet the goal, whatever its credit (``floor_ratio`` > 0.5, ``resolvable`` false).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from common import (
    SMOOTHING, figure, machine, parse_args, quiet_worker, test_score, thresholds, tokens_to_threshold, write_json,
)
from textgym.tasks import TASKS

ALGOS = ("ppo", "grpo")
MODES = ("sparse", "immediate", "learned", "implicit", "online", "attention")
COLORS = dict(zip(MODES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:brown", "tab:purple")))
ONLINE = "online"  # reward_mode "implicit" with implicit_lr: not an env mode, a trainer setting


def modes(task: str) -> list[str]:
    """The reward modes that apply to ``task``: attention credit needs a reward-model score."""
    from textgym.rewards import RewardModelScore

    return [m for m in MODES if m != "attention" or isinstance(TASKS[task].scorer(), RewardModelScore)]


def env_mode(mode: str) -> str:
    """The env's ``reward_mode`` of a study mode."""
    return "implicit" if mode == ONLINE else mode


def used_source(sources: dict, mode: str) -> dict | None:
    """Of a task's trained ``sources``, the one that ``mode`` uses (None: it uses none)."""
    from textgym.tasks import TRAINED_SOURCES

    return sources.get(TRAINED_SOURCES.get(env_mode(mode), ""))


HYPERPARAMETERS = dict(lr=3e-5, kl_coef=0.05, num_envs=32, minibatch_size=16, epochs=4, group_size=4,
                       checkpoint_every=10**9)  # no periodic checkpoints: the study only needs the end
# Tasks that sparse reward learns slowly get the settings with which learnability.py (and its one-seed
# sweeps) took them to their threshold, and budgets to match (``study_tokens``); every mode shares them.
TASK_HYPERPARAMETERS = {
    "Keywords": {"ppo": dict(lr=1e-4), "grpo": dict(lr=1e-4, group_size=8, num_envs=64, minibatch_size=32)},
    "Arithmetic": dict.fromkeys(ALGOS, dict(lr=5e-5, group_size=16, num_envs=256, minibatch_size=64, epochs=2)),
}
BUDGETS = {name: task.study_tokens for name, task in TASKS.items()}
PER_TASK = ("budgets", "thresholds", "sources", "hyperparameters")  # keys by task; "study" too, a list
QUICK_SOURCES = dict(episodes=16, heldout=8, num_envs=8, epochs=1)


def hyperparameters(task: str, algo: str) -> dict:
    """The trainer settings of ``task``'s runs with ``algo``."""
    return HYPERPARAMETERS | TASK_HYPERPARAMETERS.get(task, {}).get(algo, {})


def train_sources(task: str, root: Path, quick: bool) -> dict:
    """The task's learned potential and implicit reward (trained once, or read from ``root``):
    their directories, rollout tokens, training minutes and fit reports."""
    quiet_worker()
    from agents.trainers.rollout import SOURCE_TRAINERS
    from textgym.models import load_tokenizer
    from textgym.rewards.rollouts import tokenizer_fingerprint

    fingerprint = tokenizer_fingerprint(load_tokenizer("tiny"))  # a source cached before a model rebuild is stale
    sources = {}
    for name, (train, settings, record) in SOURCE_TRAINERS.items():
        path = root / task / name
        if not ((path / record).is_file() and json.loads((path / record).read_text())["tokenizer"] == fingerprint):
            start = time.perf_counter()
            config = settings(device="cpu", **QUICK_SOURCES if quick else {})
            trained = train(TASKS[task].env_id, config, reward_mode="sparse")
            trained.record["minutes"] = (time.perf_counter() - start) / 60
            trained.save(path)
        saved = json.loads((path / record).read_text())
        sources[name] = {"path": str(path), "rollout_tokens": saved["rollout_tokens"], "minutes": saved["minutes"],
                         "report": saved["report"]}
    return sources


@dataclass(frozen=True)
class Run:
    task: str
    algo: str
    mode: str
    seed: int
    steps: int
    episodes: int
    sources: dict  # env kwarg -> directory of the trained sources

    @property
    def name(self) -> str:
        return f"{self.task}/{self.algo}/{self.mode}/seed{self.seed}"


def train_one(run: Run) -> dict:
    """One training run in a worker process; its curve (with wall-clock minutes), final test score and KL."""
    quiet_worker()
    from agents.trainers import TrainConfig, Trainer
    from textgym.tasks import TRAINED_SOURCES

    start = time.perf_counter()
    settings = hyperparameters(run.task, run.algo)
    source = TRAINED_SOURCES.get(env_mode(run.mode))
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(env_id=TASKS[run.task].env_id, algo=run.algo, reward_mode=env_mode(run.mode),
                             seed=run.seed, steps=run.steps, out=out, device="cpu", **settings,
                             **{source: run.sources[source]} if source else {},
                             implicit_lr=settings["lr"] if run.mode == ONLINE else None)
        trainer = Trainer(config, progress=False)
        rows, minutes = [], []
        while trainer.steps < run.steps:
            rows.append(trainer.iterate())
            minutes.append((time.perf_counter() - start) / 60)
        score = test_score(trainer.policy.lm, config, run.episodes)
    return {
        "task": run.task, "algo": run.algo, "mode": run.mode, "seed": run.seed,
        "steps": [r["step"] for r in rows], "score": [r["objective/score"] for r in rows],
        "kl": [r["objective/kl"] for r in rows], "elapsed_minutes": minutes,
        "test_score": score,
        "final_kl": float(np.mean([r["objective/kl"] for r in rows[-SMOOTHING:]])),
        "minutes": (time.perf_counter() - start) / 60,
    }


def summarise(runs: list[dict], threshold: float, source: dict | None) -> dict:
    """One (task, algo, mode) cell over its seeds; ``source``: the trained source the mode used."""
    reached = [tokens_to_threshold(r["steps"], r["score"], threshold) for r in runs]
    hits = [t for t in reached if t is not None]
    minutes = [r["elapsed_minutes"][r["steps"].index(t)] for r, t in zip(runs, reached) if t is not None]
    test = [r["test_score"] for r in runs]
    kl = [r["final_kl"] for r in runs]
    tokens = float(np.mean(hits)) if hits else None
    return {
        "earliest_tokens_mean": float(np.mean([r["steps"][min(SMOOTHING, len(r["steps"])) - 1] for r in runs])),
        "tokens_to_threshold": reached,
        "tokens_to_threshold_mean": tokens,
        "tokens_to_threshold_with_source_mean": None if tokens is None else tokens + (source or {}).get(
            "rollout_tokens", 0),
        "minutes_to_threshold_mean": float(np.mean(minutes)) if minutes else None,
        "reached": f"{len(hits)}/{len(reached)}",
        "test_score_mean": float(np.mean(test)), "test_score_std": float(np.std(test)),
        "final_kl_mean": float(np.mean(kl)), "final_kl_std": float(np.std(kl)),
    }


def censored_mean(reached: list[int | None], budget: int) -> float:
    """Mean tokens to the threshold, a run that did not reach it counted as ``budget`` (a lower bound)."""
    return float(np.mean([budget if t is None else t for t in reached]))


def goal(cells: dict[str, dict], budget: int) -> dict:
    """Issue 13's goal for one (task, algo): the best dense mode's token ratio to sparse (censored
    means), and whether all its runs reach the threshold with at most half of sparse's tokens,
    without ending below sparse by more than one std. ``floor_ratio``: the earliest any dense mode's
    runs could cross the threshold, as a share of sparse's tokens; above 0.5 the goal cannot be met
    by any source (``resolvable``)."""
    sparse = cells["sparse"]
    sparse_tokens = censored_mean(sparse["tokens_to_threshold"], budget)
    floor = min(c["earliest_tokens_mean"] for m, c in cells.items() if m != "sparse") / sparse_tokens
    verdict = {"floor_ratio": floor, "resolvable": bool(floor <= 0.5), "sparse_reached": sparse["reached"]}
    dense = {m: censored_mean(c["tokens_to_threshold"], budget) for m, c in cells.items()
             if m != "sparse" and any(t is not None for t in c["tokens_to_threshold"])}
    if not dense:
        return {"best": None, "token_ratio": None, "met": False, **verdict}
    best = min(dense, key=dense.get)
    ratio = dense[best] / sparse_tokens
    all_reached = None not in cells[best]["tokens_to_threshold"]
    not_worse = cells[best]["test_score_mean"] >= sparse["test_score_mean"] - sparse["test_score_std"]
    return {"best": best, "token_ratio": ratio, "met": bool(ratio <= 0.5 and all_reached and not_worse), **verdict}


def goals(record: dict) -> dict[str, dict]:
    """The goal per task and algorithm of a results record, where sparse and a dense mode both ran."""
    return {task: {algo: goal(cells, record["budgets"][task]) for algo, cells in algos.items()
                   if "sparse" in cells and len(cells) > 1}
            for task, algos in record["results"].items()}


def cell_of(run: dict) -> tuple[str, str, str]:
    return run["task"], run["algo"], run["mode"]


def planned_cells(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The (task, algorithm, mode) cells that ``args`` runs."""
    return [(task, algo, mode) for task in args.tasks for algo, mode in product(args.algos, modes(task))
            if mode in args.modes]


def stale_cells(old: dict, cells: list[tuple[str, str, str]], limits: dict[str, float], budgets: dict[str, int]
                ) -> list[str]:
    """The cells ``old`` would keep beside ``cells`` (``--update``) whose task this run gives another
    threshold or budget (a model rebuild moves the baselines): kept and new cells of one task must
    share them. Checked before any run, so that hours of runs are not refused at the end."""
    return sorted({"/".join(cell_of(r)) + f" (threshold {old['thresholds'][r['task']]:.3f}, budget "
                   f"{old['budgets'][r['task']]:,})" for r in old["runs"]
                   if r["task"] in budgets and cell_of(r) not in cells
                   and (old["thresholds"][r["task"]], old["budgets"][r["task"]]) != (limits[r["task"]],
                                                                                      budgets[r["task"]])})


def updated(old: dict, new: dict) -> dict:
    """``old``'s record with ``new``'s runs in place of its own of the same cells (task, algorithm,
    mode), and the runs of the cells ``new`` did not run kept (``--update``; ``analyse`` then
    summarises them all)."""
    ran = {cell_of(r) for r in new["runs"]}
    kept = [r for r in old["runs"] if cell_of(r) not in ran]
    record = dict(new)
    for key in PER_TASK:
        record[key] = old[key] | new[key]
    record["runs"] = kept + new["runs"]
    record["study"] = {**old["study"], **{task: still_standing(old["study"].get(task, []), task, kept) + entries
                                          for task, entries in new["study"].items()}}
    return record


def still_standing(studies: list[dict], task: str, kept: list[dict]) -> list[dict]:
    """The ``studies`` of ``task`` (each invocation of the study that ran some of its cells) that the
    ``kept`` runs still hold a cell of: a task's record says where each of its cells came from."""
    cells = {cell_of(r) for r in kept if r["task"] == task}
    return [study for study in studies if any((task, algo, mode) in cells
                                              for algo in study["algos"] for mode in study["modes"])]


def meeting_goal(goals: dict[str, dict]) -> int:
    return sum(all(g["met"] for g in algos.values()) for algos in goals.values())


def describe(g: dict) -> str:
    best = ("no dense mode reached it" if g["best"] is None else
            f"{g['best']} at {g['token_ratio']:.2f}x sparse's tokens (sparse reached {g['sparse_reached']})")
    floor = "" if g["resolvable"] else f"; unresolvable: no run crosses before {g['floor_ratio']:.2f}x"
    return f"{best}, {'met' if g['met'] else 'not met'}{floor}"


def band(runs: list[dict], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of the training score, interpolated onto a shared token grid."""
    curves = np.stack([np.interp(grid, r["steps"], r["score"]) for r in runs])
    return curves.mean(0), curves.std(0)


def plot_task(task: str, cells: dict[tuple[str, str], list[dict]], threshold: float, path: Path) -> None:
    with figure(path, len(ALGOS), (5 * len(ALGOS), 3.4), sharey=True) as axes:
        for ax, algo in zip(axes, ALGOS):
            for mode in (m for m in MODES if (algo, m) in cells):
                runs, color = cells[algo, mode], COLORS[mode]
                grid = np.linspace(0, min(r["steps"][-1] for r in runs), 100)
                mean, std = band(runs, grid)
                ax.plot(grid, mean, color=color, label=f"{mode} ({len(runs)} seeds)")
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold:.3g}")
            ax.set(title=f"{task}: {algo.upper()}", xlabel="tokens", ylabel="training score")
            ax.legend(fontsize=7)


def analyse(record: dict, out: Path) -> dict:
    """``record`` summarised from its runs, thresholds and sources, every task's (kept ones
    included): its results table and goal, printed, and one figure per task drawn into ``out``."""
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in record["runs"]:
        cells[cell_of(run)].append(run)
    tasks = [t for t in TASKS if t in {task for task, _, _ in cells}]
    table = {}
    print(f"\n{'task':<11}{'algo':<6}{'mode':<10}{'threshold':>10}{'reached':>8}{'tokens to it':>14}{'+ source':>10}"
          f"{'minutes':>8}{'test score':>16}{'KL/episode':>14}")
    for task, algo, mode in (key for key in product(tasks, ALGOS, MODES) if key in cells):
        limit, source = record["thresholds"][task], used_source(record["sources"][task], mode)
        stats = table.setdefault(task, {}).setdefault(algo, {})[mode] = summarise(cells[task, algo, mode], limit, source)
        tokens, total, took = (stats[k] for k in ("tokens_to_threshold_mean", "tokens_to_threshold_with_source_mean",
                                                  "minutes_to_threshold_mean"))
        print(f"{task:<11}{algo:<6}{mode:<10}{limit:>10.3f}{stats['reached']:>8}"
              f"{'-' if tokens is None else f'{tokens:,.0f}':>14}{'-' if total is None else f'{total:,.0f}':>10}"
              f"{'-' if took is None else f'{took:.2f}':>8}"
              f"{stats['test_score_mean']:>9.3f} ± {stats['test_score_std']:.3f}"
              f"{stats['final_kl_mean']:>8.2f} ± {stats['final_kl_std']:.2f}")
    for task in tasks:
        plot_task(task, {(a, m): runs for (t, a, m), runs in cells.items() if t == task}, record["thresholds"][task],
                  out / f"immediate_vs_sparse_{task.lower()}.png")
    record["results"] = table
    record["goal"] = goals(record)
    print("\ngoal: the best dense mode reaches the threshold with <= 0.5x sparse's tokens, not below sparse - 1 std")
    for task, by_algo in record["goal"].items():
        print(f"{task:<11}" + "  ".join(f"{algo}: {describe(g)}" for algo, g in by_algo.items()))
    record["tasks_meeting_goal"] = met = meeting_goal(record["goal"])
    print(f"tasks meeting the goal for PPO and GRPO alike: {met} of {len(record['goal'])} (goal: 3)")
    return record


class RunLog:
    """Finished runs, one JSON line each, appended and flushed to disk as each run ends: a study that
    is killed, or stopped to be continued in another session, resumes from it and runs only what is
    missing. A logged run is reused only if it ran on the same embedded model, with the same
    hyperparameters and, where its mode uses a trained source, one that fitted to the same figures
    (a source trained again after its cache was lost must be the same source). ``main`` removes the
    log once the results file holds its runs."""

    def __init__(self, path: Path):
        from textgym.models import tiny_path

        self.path = path
        self.model = hashlib.sha256((tiny_path() / "model.safetensors").read_bytes()).hexdigest()[:16]
        self.logged = {}
        text = path.read_text() if path.is_file() else ""
        self.line_cut_short = bool(text) and not text.endswith("\n")  # the next entry starts a line of its own
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # cut short by a kill while it was written: that run runs again
                continue
            self.logged[entry["key"]] = entry

    def setting(self, run: Run, sources: dict) -> dict:
        """What a logged run must share with ``run`` to stand for it: of ``sources`` (its task's), the
        fit of the one its mode uses."""
        used = used_source(sources, run.mode)
        return {"key": f"{run.name}/{run.steps}-tokens/{run.episodes}-episodes", "model": self.model,
                "hyperparameters": hyperparameters(run.task, run.algo),
                "source": None if used is None else [used["rollout_tokens"], used["report"]]}

    def finished(self, run: Run, sources: dict) -> dict | None:
        """``run``'s logged result, if it ran in the same setting."""
        setting = self.setting(run, sources)
        entry = self.logged.get(setting["key"])
        return entry["result"] if entry and {k: entry[k] for k in setting} == setting else None

    def add(self, run: Run, sources: dict, result: dict) -> None:
        entry = {**self.setting(run, sources), "result": result}
        with self.path.open("a") as log:
            log.write(("\n" if self.line_cut_short else "") + json.dumps(entry) + "\n")
            log.flush()
            os.fsync(log.fileno())
        self.line_cut_short = False


def run_study(args: argparse.Namespace, limits: dict[str, float], budgets: dict[str, int], log: RunLog) -> dict:
    """Train the sources and run every cell of ``args`` that ``log`` has not finished; the record of
    these cells' runs alone."""
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        sources_root = args.sources / "quick" if args.quick else args.sources
        sources = dict(zip(args.tasks, pool.map(train_sources, args.tasks, [sources_root] * len(args.tasks),
                                                [args.quick] * len(args.tasks))))
        for task, trained in sources.items():
            print(f"{task}: " + ", ".join(f"{name} {s['rollout_tokens']:,} rollout tokens, {s['minutes']:.1f} min"
                                          for name, s in trained.items()), flush=True)
        runs = [Run(task, algo, mode, seed, budgets[task], args.episodes,
                    {name: s["path"] for name, s in sources[task].items()})
                for (task, algo, mode), seed in product(planned_cells(args), range(args.seeds))]
        results = [log.finished(run, sources[run.task]) for run in runs]
        resumed = [run.task for run, result in zip(runs, results) if result is not None]
        if resumed:
            print(f"resuming: {len(resumed)} of {len(runs)} runs finished before ({log.path})", flush=True)
        futures = {pool.submit(train_one, run): i for i, (run, result) in enumerate(zip(runs, results)) if result is None}
        for future in as_completed(futures):  # logged as each ends, not in order: a kill loses only runs under way
            run, result = runs[futures[future]], future.result()
            log.add(run, sources[run.task], result)
            results[futures[future]] = result
            print(f"{run.name}: test {result['test_score']:.3f}, KL {result['final_kl']:.2f}, "
                  f"{result['minutes']:.1f} min", flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(futures)} runs in {minutes:.1f} min with {args.workers} workers ({len(resumed)} resumed)")
    return {
        "machine": machine(), "minutes": minutes, "workers": args.workers, "seeds": args.seeds,
        "test_episodes": args.episodes, "smoothing_iterations": SMOOTHING,
        "hyperparameters": {t: {a: hyperparameters(t, a) for a in ALGOS} for t in args.tasks},
        "budgets": budgets, "thresholds": limits, "sources": sources,
        "study": {task: [{"finished": time.strftime("%Y-%m-%d %H:%M"), "minutes": minutes, "tasks": args.tasks,
                          "algos": args.algos, "modes": args.modes, "resumed_runs": resumed.count(task)}]
                  for task in args.tasks},
        "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="of those that apply to each task")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=128, help="test episodes per run")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every task's token budget")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sources", type=Path, default=Path(tempfile.gettempdir()) / "textgym-study-sources",
                        help="where the trained sources are cached, one directory per task")
    parser.add_argument("--update", action="store_true",
                        help="keep the results of the tasks not run from the existing results file")
    parser.add_argument("--reanalyse", action="store_true",
                        help="run nothing: summarise the existing results file's runs again (after a change to the "
                             "analysis), with the thresholds and budgets they were run with")
    args = parse_args(parser, quick={"seeds": 1, "episodes": 16, "budget_scale": 1 / 200})
    path, log = args.out / "immediate_vs_sparse.json", RunLog(args.out / "immediate_vs_sparse.runs.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reanalyse:
        if not path.is_file():
            parser.error(f"--reanalyse reads {path}, which does not exist; run the study first")
        record = json.loads(path.read_text())
    else:
        limits = {t: limit for t, limit in thresholds().items() if t in args.tasks}
        budgets = {t: int(BUDGETS[t] * args.budget_scale) for t in args.tasks}
        old = json.loads(path.read_text()) if args.update and path.is_file() else None
        if old is not None and (stale := stale_cells(old, planned_cells(args), limits, budgets)):
            parser.error(f"--update would keep cells run with another threshold or budget than this run's: "
                         f"{'; '.join(stale)}; run their modes and algorithms too, or remove their runs from {path}")
        record = run_study(args, limits, budgets, log)
        if old is not None:
            record = updated(old, record)
    write_json(path, analyse(record, args.out))
    if not args.reanalyse:
        log.path.unlink(missing_ok=True)  # its runs are in the results file now


if __name__ == "__main__":
    main()
