"""Where a rollout's time goes: cProfile of ``rollout_throughput.py``'s loops, split into parts.

For one model (batch 64, 48 new tokens, as ``rollout_throughput.py``), it profiles rounds of the
trainer's env rollout (``env_rollout``), its sampler alone (``sampler``) and ``model.generate()``
(``generate``), interleaved, and splits each loop's profiled seconds into:

- ``forward``: the model's forward passes, of which ``cache_update`` (writing the KV cache: our
  preallocated buffers, or ``DynamicCache``'s ``torch.cat``) and ``attention`` (the
  ``scaled_dot_product_attention`` kernel) are parts;
- ``draw``: drawing the tokens (``torch.multinomial``, or our inverse-CDF ``sample_categorical``);
- ``processors``: the logits processors (the env's action mask, the warpers);
- ``env``: resetting and stepping the env through the sampled tokens (the rollout minus its sampler);
- ``other``: the rest (Python bookkeeping between the calls).

The figures are profiled seconds (cProfile slows Python-heavy code more than kernels); the tokens
per second of each round are printed too. Compare the parts of the loops side by side, not the
absolute times with ``rollout_throughput.py``'s.

    python benchmarks/rollout_profile.py [--rounds 3] [--model tiny]
    python benchmarks/rollout_profile.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import statistics
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import LogitsProcessorList

from agents.trainers.rollout import Rollout
from common import gpt2_small_dir, machine, parse_args, write_json
from rollout_throughput import contenders
from textgym.models import default_device, load_causal_lm
from textgym.models.cache import PreallocatedLayer
from textgym.models.sampling import sample_categorical, sample_for

LOOPS = ("env_rollout", "sampler", "generate")
PARTS = ("forward", "cache_update", "attention", "draw", "processors", "env", "other")


def code_key(function: Callable) -> tuple[str, int, str]:
    """The key pstats files a Python function's calls under."""
    code = inspect.unwrap(function).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def cumulative(stats: pstats.Stats, *functions: Callable) -> float:
    """Seconds spent in ``functions`` and what they called."""
    keys = {code_key(f) for f in functions}
    return sum(row[3] for key, row in stats.stats.items() if key in keys)


def builtin(stats: pstats.Stats, name: str) -> float:
    """Seconds spent in the built-in ``name`` (a torch kernel's Python binding)."""
    return sum(row[2] for key, row in stats.stats.items()
               if key[0] == "~" and key[2].startswith("<built-in method ") and key[2][:-1].split(".")[-1] == name)


def parts(profile: cProfile.Profile, forward: Callable) -> dict[str, float]:
    """A loop's profiled seconds, split into ``PARTS`` (``forward``'s include the cache and attention)."""
    stats = pstats.Stats(profile)
    collect = cumulative(stats, Rollout.collect)
    split = {
        "forward": cumulative(stats, forward),
        "cache_update": cumulative(stats, PreallocatedLayer.update, DynamicLayer.update),
        "attention": builtin(stats, "scaled_dot_product_attention"),
        "draw": builtin(stats, "multinomial") + cumulative(stats, sample_categorical),
        "processors": cumulative(stats, LogitsProcessorList.__call__),
        "env": collect - cumulative(stats, sample_for) if collect else 0.0,
    }
    split["other"] = stats.total_tt - sum(split[k] for k in ("forward", "draw", "processors", "env"))
    return {"total": stats.total_tt, **split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tiny", choices=["tiny", "gpt2-small"])
    args = parse_args(parser, quick={"rounds": 1})
    warnings.filterwarnings("ignore")
    device = default_device()
    with tempfile.TemporaryDirectory() as root:
        model = str(gpt2_small_dir(Path(root))) if args.model == "gpt2-small" else args.model
        runs = contenders(model, device)
        forward = type(load_causal_lm(model, device="cpu")).forward
        profiles = {loop: cProfile.Profile() for loop in LOOPS}
        rates = {loop: [] for loop in LOOPS}
        for loop in LOOPS:  # warm-up
            runs[loop]()
        for _ in range(args.rounds):
            for loop in LOOPS:
                profiles[loop].enable()
                rates[loop].append(runs[loop]())
                profiles[loop].disable()
    results = {loop: {"tokens_per_s": statistics.median(rates[loop]), "rounds": rates[loop],
                      "seconds": parts(profiles[loop], forward)} for loop in LOOPS}
    print(f"\n{'loop':<13}{'tokens/s':>9}{'total':>8}" + "".join(f"{p:>13}" for p in PARTS)
          + f"  (profiled seconds over {args.rounds} rounds, {args.model}, {device})")
    for loop, r in results.items():
        s = r["seconds"]
        print(f"{loop:<13}{r['tokens_per_s']:>9.0f}{s['total']:>8.2f}" + "".join(f"{s[p]:>13.3f}" for p in PARTS))
    write_json(args.out / f"rollout_profile_{args.model}.json",
               {"model": args.model, "device": str(device), "machine": machine(), "settings": vars(args),
                "parts": list(PARTS), "results": results})


if __name__ == "__main__":
    main()
