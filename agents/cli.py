"""The ``textgym`` command line: ``train``, ``eval``, ``list`` and ``potential``.

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
from agents.trainers.checkpoint import check_new_run, last_checkpoint, read_state
from agents.trainers.config import TrainConfig, read_yaml
from textgym.rewards.potential import PotentialConfig
from textgym.tasks import TASKS, TRAINED_SOURCES

DESCRIPTIONS = {task.env_id: task.summary for task in TASKS.values()} | {
    "textgym/TextGeneration-v0": "free text generation from the shipped prompts; no score unless you pass a scorer"
}


class UsageError(Exception):
    """Bad input found before any work starts: reported as one line, exit status 2."""


NAMED = {"algo", "model", "steps", "out", "lora", "device", "seed"}  # the flags users reach for first


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``textgym train: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def json_object(text: str) -> dict:
    """A ``--env-kwargs`` value: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"max_new_tokens\": 32}}', got {text!r} "
                                         f"({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _flag_type(annotation: str):
    if annotation.startswith("bool"):
        return None
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    if annotation.startswith("dict"):
        return json_object
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
                               help=f"{f.metadata['help']} (default: {default})")
        else:
            metavar = "JSON" if kind is json_object else None
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar,
                               help=f"{f.metadata['help']} "
                                    f"(default: {json.dumps(default) if isinstance(default, dict) else default})")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="textgym", description="Text generation as a Gymnasium RL problem.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
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

    potential = commands.add_parser("potential", help="fit a learned potential for reward_mode 'learned'",
                                    description="Sample rollouts of a base model on an env's train prompts and fit "
                                                "Φ(prompt, prefix) ≈ E[final score | prefix] (textgym.rewards).")
    potential.add_argument("env_id", help="a registered id with a score; see `textgym list`")
    potential.add_argument("--out", required=True, type=Path, help="the new potential directory (never overwritten)")
    potential.add_argument("--env-kwargs", type=json_object, default={}, metavar="JSON",
                           help="more gym.make_vec arguments, as a JSON object")
    potential.add_argument("--quiet", action="store_true", help="no progress bar")
    for f in fields(PotentialConfig):
        potential.add_argument("--" + f.name.replace("_", "-"), type=_flag_type(str(f.type)), default=f.default,
                               help=f"(default: {f.default})")
    return parser


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user set: in ``--config``'s file, overridden by flags."""
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)}}
    return {**(read_yaml(args.config) if args.config is not None else {}), **flags}


RESUMABLE = ("steps", "out")  # --resume may raise the run's target; every other setting is the run's own


def resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The checkpoint's config with ``--steps`` applied; any other flag that differs is an error."""
    given = given_values(args)
    out = given.get("out", TrainConfig.out)
    saved = read_state(last_checkpoint(Path(out)))["config"]
    wanted = TrainConfig.from_dict({**saved, **given}, where="--resume").to_dict()
    changed = [f"--{k.replace('_', '-')} {wanted[k]!r} (the run's: {saved.get(k)!r})"
               for k in given if k not in RESUMABLE and wanted[k] != saved.get(k)]
    if changed:
        raise UsageError(f"--resume continues {out} with its own settings, and these flags differ: {', '.join(changed)}; "
                         "drop them, or start a new run in another --out")
    return TrainConfig.from_dict({**saved, "out": str(out), "steps": wanted["steps"]})


def train(args: argparse.Namespace) -> int:
    from agents.trainers import Trainer
    from agents.trainers.rollout import make_envs

    try:
        if args.resume:
            config = resumed_config(args)
        else:
            config = TrainConfig.from_dict(given_values(args), where=str(args.config or "the flags"))
            check_new_run(config.out)
        # an unknown id or a bad env argument fails here, before any model loads
        source = TRAINED_SOURCES.get(config.reward_mode)
        given = {source: getattr(config, source)} if source and getattr(config, source) else None
        # a source not given is trained first, into --out: until then the env is checked with sparse reward
        make_envs(config.env_id, 1, config.env_kwargs, sources=given,
                  reward_mode="sparse" if source and not given else config.reward_mode).close()
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(error) from error
    if config.algo.startswith("sb3"):
        from agents.trainers.sb3 import train_sb3

        train_sb3(config, progress=not args.quiet)
    else:
        try:  # a checkpoint file that is truncated or corrupt fails here, naming the file
            trainer = Trainer.resume(config.out, not args.quiet, steps=config.steps) if args.resume else Trainer(
                config, progress=not args.quiet)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(error) from error
        trainer.train()
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate, only the main process reports
        out = Path(config.out)
        samples = out / "samples.md"
        if samples.exists():
            print(samples.read_text().splitlines()[-1])
        outputs = sorted(p.name + "/" * p.is_dir() for p in out.iterdir())
        print(f"done: {out} ({', '.join(outputs)})")
    return 0


def _eval_target(target: str) -> tuple[str, dict[str, Any]]:
    """What to load for ``textgym eval``: the model (a path or a name) and the run's config (empty
    for a bare model)."""
    path = Path(target)
    if (path / "checkpoint").is_dir() or (path / "checkpoint.old").is_dir():
        run = read_state(last_checkpoint(path))["config"]
        if not (path / "model").is_dir():
            raise ValueError(f"{target} has no model/ yet (the run has not finished); train it to the end first")
        return str(path / "model"), run
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{target} is neither a textgym run (no checkpoint/) nor a saved model (no config.json)")
    return target, {}


def evaluate_command(args: argparse.Namespace) -> int:
    from agents.trainers.rollout import Sampling, evaluate, make_envs
    from textgym.models import load_causal_lm

    if args.episodes < 1 or args.seed < 0:
        raise UsageError(f"--episodes must be >= 1 and --seed >= 0, got {args.episodes} and {args.seed}")
    try:
        model, run = _eval_target(args.dir)
        env_id = args.env or run.get("env_id")
        if env_id is None:
            raise ValueError(f"{args.dir} is not a textgym run; pass --env ID")
        make_envs(env_id, 1, run.get("env_kwargs", {}), split=args.split).close()  # a bad id or split fails here
        lm = load_causal_lm(model, device=args.device)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(error) from error
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


def potential_command(args: argparse.Namespace) -> int:
    from agents.trainers.rollout import env_arguments
    from textgym.rewards import train_potential

    if args.out.exists():
        raise UsageError(f"--out {str(args.out)!r} already exists; choose a new directory (nothing is overwritten)")
    try:
        config = PotentialConfig(**{f.name: getattr(args, f.name) for f in fields(PotentialConfig)})
        kwargs = env_arguments(args.env_id, args.env_kwargs, reward_mode="sparse")
        trained = train_potential(args.env_id, config, progress=not args.quiet, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(error) from error
    trained.save(args.out)
    report = trained.record["report"]
    print(f"{args.env_id}: potential fitted on {trained.record['episodes']} rollouts "
          f"({trained.record['rollout_tokens']:,} tokens sampled), saved to {args.out}")
    print(f"correlation of Φ after k tokens with the final score ({report['heldout']} held-out rollouts):")
    for k, r in report["correlation"].items():
        if report["episodes_running"][k]:
            print(f"  {k:<5} {'-' if r is None else f'{r:+.3f}':>7}  ({report['episodes_running'][k]} still running)")
    return 0


def list_command() -> int:
    from agents.trainers.rollout import registered_ids

    ids = registered_ids()
    width = max(map(len, ids))
    for env_id in ids:
        print(f"{env_id:<{width}}  {DESCRIPTIONS.get(env_id, '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse's usage errors (status 2) and --help (0)
        return int(exit.code or 0)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "eval":
            return evaluate_command(args)
        if args.command == "potential":
            return potential_command(args)
        return list_command()
    except UsageError as error:
        print(f"textgym {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
