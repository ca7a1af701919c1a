"""The ``textgym`` command line: ``train``, ``eval`` and ``list``.

Every field of ``TrainConfig`` is a ``train`` flag (``--num-envs 64``, ``--kl-target 6``), so the
dataclass is the one source of defaults; ``--config run.yaml`` sets fields from a file and flags
override the file.

Example:
    >>> from agents.cli import main
    >>> main(["list"])  # doctest: +ELLIPSIS
    textgym/Arithmetic-v0 ...
    0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np

import textgym  # noqa: F401  (registers the env ids)
from agents.trainers.config import TrainConfig
from textgym.tasks import TASKS

DESCRIPTIONS = {task.env_id: task.summary for task in TASKS.values()} | {
    "textgym/TextGeneration-v0": "free text generation from the shipped prompts; no score unless you pass a scorer"
}


class UsageError(Exception):
    """Bad input found before any work starts: reported as one line, exit status 2."""


NAMED = {"algo", "model", "steps", "out", "lora", "device", "seed"}  # the flags users reach for first


def _flag_type(annotation: str):
    if annotation.startswith("bool"):
        return None
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    if annotation.startswith("dict"):
        return json.loads
    return str


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field; unset flags stay out of the namespace (SUPPRESS), so the
    dataclass and the YAML file keep their say."""
    named = parser.add_argument_group("main options")
    more = parser.add_argument_group("TrainConfig fields (see agents/trainers/config.py)")
    for f in fields(TrainConfig):
        if f.name == "env_id":
            continue
        group = named if f.name in NAMED else more
        default = f.default if f.default is not MISSING else f.default_factory()
        kind = _flag_type(str(f.type))
        flag = "--" + f.name.replace("_", "-")
        if kind is None:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=f"(default: {default})")
        else:
            metavar = "JSON" if kind is json.loads else None
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar,
                               help=f"(default: {json.dumps(default) if isinstance(default, dict) else default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textgym", description="Text generation as a Gymnasium RL problem.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy on an env id",
                                description="Train with batched PPO / GRPO / RLOO, or stable-baselines3.")
    train.add_argument("env_id", nargs="?", default=argparse.SUPPRESS,
                       help=f"a registered id (default: {TrainConfig.env_id}); see `textgym list`")
    train.add_argument("--config", type=Path, help="a YAML file of TrainConfig fields; flags override it")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(train)

    evaluate = commands.add_parser("eval", help="score a trained model on an env's test prompts")
    evaluate.add_argument("dir", help="a `textgym train` output dir, an HF model dir, or 'tiny'")
    evaluate.add_argument("--env", help="env id (default: the one the run trained on)")
    evaluate.add_argument("--episodes", type=int, default=64)
    evaluate.add_argument("--split", default="test", help="task prompt split (default: test)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--samples", type=int, default=5, help="completions to print")
    evaluate.add_argument("--device", default=None)

    commands.add_parser("list", help="the registered env ids")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)}}
    if args.config is not None:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig(**overrides)


def train(args: argparse.Namespace) -> int:
    from agents.trainers import Trainer
    from agents.trainers.rollout import make_envs

    try:
        config = config_from_args(args)
        # an unknown id or a bad env argument fails here, before any model loads
        make_envs(config.env_id, 1, config.env_kwargs, reward_mode=config.reward_mode).close()
    except (ValueError, TypeError) as error:
        raise UsageError(error) from error
    if args.resume and config.algo.startswith("sb3"):
        raise UsageError(f"--resume continues the batched trainers; {config.algo} runs start afresh "
                         "(load a finished one with agents.load)")
    if config.algo.startswith("sb3"):
        from agents.trainers.sb3 import train_sb3

        checkpoint = train_sb3(config, progress=not args.quiet)
    else:
        if args.resume:
            more = {"steps": args.steps} if "steps" in vars(args) else {}  # the run's own target, unless raised
            trainer = Trainer.resume(config.out, progress=not args.quiet, **more)
        else:
            trainer = Trainer(config, progress=not args.quiet)
        checkpoint = trainer.train()
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate, only the main process reports
        print(f"done: {config.out} (metrics.csv, learning_curve.png, samples.md, {checkpoint.name}/)")
        samples = Path(config.out) / "samples.md"
        if samples.exists():
            print(samples.read_text().splitlines()[-1])
    return 0


def _load_for_eval(target: str, device: str | None) -> tuple[Any, dict[str, Any]]:
    """The LM to evaluate and the run's config (empty for a bare model)."""
    from agents.trainers.checkpoint import read_state
    from textgym.models import load_causal_lm

    path = Path(target)
    run = {}
    if (path / "checkpoint").is_dir():
        run = read_state(path / "checkpoint")["config"]
        path = path / "model"
        if not path.is_dir():
            raise ValueError(f"{target} has no model/ yet (the run has not finished); train it to the end first")
    return load_causal_lm(path if path.exists() else target, device=device), run


def evaluate_command(args: argparse.Namespace) -> int:
    from agents.trainers.rollout import Sampling, evaluate

    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    try:
        lm, run = _load_for_eval(args.dir, args.device)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(error) from error
    env_id = args.env or run.get("env_id")
    if env_id is None:
        raise UsageError(f"{args.dir} is not a textgym run; pass --env ID")
    sampling = Sampling.from_config(TrainConfig.from_dict(run)) if run else Sampling()
    results = evaluate(lm, env_id, run.get("env_kwargs", {}), args.episodes, sampling, args.seed, args.split)
    scores = np.array([r["score"] for r in results])
    quantiles = np.quantile(scores, [0, 0.25, 0.5, 0.75, 1])
    print(f"{env_id} ({args.split}), {len(scores)} episodes of {args.dir}")
    print(f"score mean {scores.mean():.4f} ± {scores.std():.4f} | min {quantiles[0]:.3f} q25 {quantiles[1]:.3f} "
          f"median {quantiles[2]:.3f} q75 {quantiles[3]:.3f} max {quantiles[4]:.3f}")
    counts, edges = np.histogram(scores, bins=10)
    for i, (count, low, high) in enumerate(zip(counts, edges, edges[1:])):
        close = "]" if i == len(counts) - 1 else ")"  # numpy's last bin includes its right edge
        print(f"  [{low:7.3f}, {high:7.3f}{close} {'#' * int(round(40 * count / len(scores)))} {count}")
    for r in results[: args.samples]:
        print(f"- {r['prompt']!r} -> {r['completion']!r} (score {r['score']:.3f})")
    return 0


def list_command() -> int:
    from agents.trainers.rollout import registered_ids

    ids = registered_ids()
    width = max(map(len, ids))
    for env_id in ids:
        print(f"{env_id:<{width}}  {DESCRIPTIONS.get(env_id, '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "eval":
            return evaluate_command(args)
        return list_command()
    except UsageError as error:
        print(f"textgym {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
