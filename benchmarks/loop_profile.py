"""Where each GRPO training loop spends its time: ours against TRL's ``GRPOTrainer``, phase by phase.

Both loops train as in ``vs_trl.py`` (the same model directory, prompts, reward, shape and
settings: 32 completions of at most 48 tokens per generation, 4 passes in minibatches of 16). The
methods that carry each phase are wrapped with timers, and each phase counts its own time only
(a phase called inside another is taken out of it), so the phases add up to the loop's wall time:

| phase | ours | TRL |
| --- | --- | --- |
| generation | ``Rollout.collect`` (sampling, env steps, the reward at each episode's end) | ``_generate`` |
| reward | inside generation (the env scores each episode as it ends) | ``_calculate_rewards`` |
| scoring | ``Trainer._score``: old and reference log-probs | the rest of ``_generate_and_score_completions`` |
| update: forward and loss | the rest of ``Trainer._optimize`` | the rest of ``training_step`` |
| update: backward | ``accelerator.backward`` | ``accelerator.backward`` |
| update: optimizer step | the optimizer's ``step`` | the optimizer's ``step`` |
| other | the rest of the loop (advantages, logging) | the rest of ``train()`` (HF Trainer's loop, logging) |

Gradient clipping and ``zero_grad`` fall in "update: forward and loss" for ours (``_optimize`` runs
them) and in "other" for TRL (HF Trainer's loop runs them).

On CUDA every timer synchronizes first, so a phase is charged for the kernels it launched (this
adds a sync per phase boundary). The first generation is timed too: it carries the warm-up (lazy
CUDA modules, allocator growth), which ``--skip`` leaves out of the totals. Writes
``results/loop_profile[_gpt2-small][_cuda].json``: seconds per generation of each phase, for each
loop.

    python benchmarks/loop_profile.py [--model tiny|gpt2-small] [--generations 8] [--skip 2]
    python benchmarks/loop_profile.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import gpt2_small_dir, machine, parse_args, results_file, write_json
from vs_trl import Shape, save_embedded_model, train_textgym, train_trl

PHASES = ("generation", "reward", "scoring", "update: forward and loss", "update: backward", "update: optimizer step",
          "other")


class PhaseTimer:
    """Exclusive wall time per phase: starting a phase pauses the one it was called from."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []  # [phase, when it last resumed]
        self.generations: list[dict[str, float]] = []  # the totals at each generation's boundary

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self, phase: str) -> None:
        t = self.now()
        if self.stack:
            self.totals[self.stack[-1][0]] += t - self.stack[-1][1]
        self.stack.append([phase, t])

    def stop(self) -> None:
        t = self.now()
        phase, resumed = self.stack.pop()
        self.totals[phase] += t - resumed
        if self.stack:
            self.stack[-1][1] = t

    def wrap(self, owner: Any, method: str, phase: str) -> None:
        """Time every call of ``owner.method`` as ``phase`` (an attribute on the instance)."""
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            self.start(phase)
            try:
                return original(*args, **kwargs)
            finally:
                self.stop()

        setattr(owner, method, timed)

    def time_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(lambda *_: self.start("update: optimizer step"))
        optimizer.register_step_post_hook(lambda *_: self.stop())


def instrument_ours(timer: PhaseTimer) -> Callable[[Any], None]:
    def setup(trainer) -> None:
        timer.wrap(trainer.rollout, "collect", "generation")
        timer.wrap(trainer, "_score", "scoring")
        timer.wrap(trainer, "_optimize", "update: forward and loss")
        timer.wrap(trainer.accelerator, "backward", "update: backward")
        timer.time_optimizer(trainer.optimizer.optimizer)
        timer.wrap(trainer, "iterate", "other")  # the outermost phase: one call per generation
        timer.wrap(trainer.log, "log", "other")  # called between iterations
        iterate = trainer.iterate

        def counted():
            row = iterate()
            timer.generations.append(dict(timer.totals))
            return row

        trainer.iterate = counted

    return setup


def instrument_trl(timer: PhaseTimer) -> Callable[[Any], None]:
    def setup(trainer) -> None:
        timer.wrap(trainer, "_generate", "generation")
        timer.wrap(trainer, "_calculate_rewards", "reward")
        timer.wrap(trainer, "_generate_and_score_completions", "scoring")
        timer.wrap(trainer, "training_step", "update: forward and loss")
        timer.wrap(trainer.accelerator, "backward", "update: backward")
        create_optimizer = trainer.create_optimizer

        def timed_optimizer(*args, **kwargs):
            optimizer = create_optimizer(*args, **kwargs)
            timer.time_optimizer(optimizer)
            return optimizer

        trainer.create_optimizer = timed_optimizer
        generate_and_score = trainer._generate_and_score_completions

        def counted(*args, **kwargs):  # a generation starts: note the totals so far
            timer.generations.append(dict(timer.totals))
            return generate_and_score(*args, **kwargs)

        trainer._generate_and_score_completions = counted
        timer.wrap(trainer, "train", "other")  # the outermost phase

    return setup


def profile(loop: str, model_dir: str, generations: int, skip: int, shape: Shape, cuda: bool) -> dict:
    """Seconds per generation of each phase over generations ``skip + 1 .. generations``."""
    timer = PhaseTimer(cuda)
    if loop == "ours":
        _, tokens, _, seconds = train_textgym("grpo", model_dir, generations, 0, shape, setup=instrument_ours(timer))
        ends = timer.generations  # totals at the end of generation 1, 2, ...
        before = ends[skip - 1] if skip else {}
    else:
        _, tokens, _, seconds = train_trl(model_dir, generations, 0, shape, setup=instrument_trl(timer))
        starts = timer.generations  # totals at the start of generation 1, 2, ...
        before = starts[skip] if skip else {}
    counted = generations - skip
    phases = {phase: (timer.totals.get(phase, 0.0) - before.get(phase, 0.0)) / counted for phase in PHASES}
    return {"seconds_per_generation": phases, "total_per_generation": sum(phases.values()),
            "loop_seconds": seconds, "tokens": tokens, "generations_counted": counted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "gpt2-small"])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2,
                        help="first generations left out of the totals (warm-up; one was too few for steady figures)")
    args = parse_args(parser, quick={"generations": 2, "skip": 1})
    if not 0 <= args.skip < args.generations:
        parser.error(f"--skip must be in [0, --generations), got {args.skip} with --generations {args.generations}")
    warnings.filterwarnings("ignore")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    shape = Shape(completions=8, new_tokens=8, minibatch=4) if args.quick else Shape()
    with tempfile.TemporaryDirectory() as root:
        model_dir = str(gpt2_small_dir(Path(root))) if args.model == "gpt2-small" else save_embedded_model(Path(root))
        loops = {loop: profile(loop, model_dir, args.generations, args.skip, shape, cuda) for loop in ("ours", "trl")}
    device = "cuda" if cuda else "cpu"
    print(f"\n{'seconds per generation':<28}{'ours':>10}{'TRL':>10}   ({args.model}, {device}, generations "
          f"{args.skip + 1}-{args.generations})")
    for phase in (*PHASES, "total"):
        ours, trl = ((r["total_per_generation"] if phase == "total" else r["seconds_per_generation"][phase])
                     for r in loops.values())
        print(f"{phase:<28}{ours:>10.3f}{trl:>10.3f}")
    write_json(results_file(args.out, "loop_profile", args.model, device),
               {"machine": machine(), "device": device, "model": args.model, "generations": args.generations,
                "skipped": args.skip, "shape": vars(shape), "loops": loops})


if __name__ == "__main__":
    main()
