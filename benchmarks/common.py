"""What the benchmarks share: contenders measured round-robin in one run, and JSON results.

These machines are noisy, so contenders take turns, round after round, and each figure is the
median over rounds; ratios are taken between figures of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from textgym.models import load_tokenizer

RESULTS = Path(__file__).parent / "results"


@dataclass
class Contender:
    name: str
    num_envs: int
    run: Callable[[float], tuple[int, float]]  # (seconds) -> (tokens appended, elapsed)


def single_runner(env, actions: np.ndarray) -> Callable[[float], tuple[int, float]]:
    env.reset(seed=0)
    state = {"i": 0}

    def run(seconds: float) -> tuple[int, float]:
        step, reset, i, tokens = env.step, env.reset, state["i"], 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(1000):
                _, _, terminated, truncated, _ = step(actions[i])
                i = (i + 1) % len(actions)
                if terminated or truncated:
                    reset()
            tokens += 1000
        state["i"] = i
        return tokens, time.perf_counter() - start

    return run


def vector_runner(envs, actions: np.ndarray) -> Callable[[float], tuple[int, float]]:
    """Counts appended tokens only: under next-step autoreset, a step that resets an env appends
    nothing to it, and counting it would flatter the vector env."""
    envs.reset(seed=0)
    n = envs.num_envs
    batches = actions[: (len(actions) // n) * n].reshape(-1, n)
    state = {"i": 0, "resetting": 0}

    def run(seconds: float) -> tuple[int, float]:
        step, i, resetting, tokens = envs.step, state["i"], state["resetting"], 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(50):
                _, _, terminated, truncated, info = step(batches[i])
                tokens += n - resetting
                resetting = int(np.count_nonzero(terminated | truncated)) if info else 0
                i = (i + 1) % len(batches)
        state["i"], state["resetting"] = i, resetting
        return tokens, time.perf_counter() - start

    return run


def measure(found: list[Contender], rounds: int, seconds: float) -> dict[str, dict]:
    rates: dict[str, list[float]] = {c.name: [] for c in found}
    for c in found:  # warm-up: first calls pay for caches and lazy imports
        c.run(0.05)
    for _ in range(rounds):
        for c in found:
            tokens, elapsed = c.run(seconds)
            rates[c.name].append(tokens / elapsed)
    return {
        c.name: {
            "token_steps_per_s": statistics.median(rates[c.name]),
            "us_per_token": 1e6 / statistics.median(rates[c.name]),
            "num_envs": c.num_envs,
            "rounds": rates[c.name],
        }
        for c in found
    }


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def peak_memory_mib() -> float:
    """This process's peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, else peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine() -> dict[str, object]:
    """What a figure was measured on: figures from different machines must be told apart."""
    return {"platform": platform.platform(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            # torch's intra-op threads are its BLAS threads too (MKL or OpenBLAS, whichever it was built with)
            "torch_threads": torch.get_num_threads(), "mkl": torch.backends.mkl.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def test_score(lm, config, episodes: int) -> float:
    """Mean task score of ``lm`` over ``episodes`` sampled test-split episodes of ``config``'s env,
    with its sampling settings; seeded alike for every model, so scores compare."""
    from agents.trainers.rollout import Sampling, evaluate

    samples = evaluate(lm, config.env_id, config.env_kwargs, episodes, Sampling.from_config(config), seed=10_000)
    return float(np.mean([s["score"] for s in samples]))


def quiet_worker() -> None:
    """Set up a benchmark's worker process: one torch thread (on small models, two single-threaded
    runs beat one two-threaded run), no warnings or progress bars in the log, the envs registered."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # e.g. early k1 KL estimates below 0: the JSON keeps every KL
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import textgym  # noqa: F401  (registers the envs)


SMOOTHING = 4  # iterations in the running mean of the training score that must reach a threshold


def thresholds(share: float = 0.5) -> dict[str, float]:
    """``share`` of the way from each task's base test score to its gold score."""
    baselines = json.loads((RESULTS / "task_baselines.json").read_text())["results"]
    return {task: b["base_mean"] + share * (b["gold_mean"] - b["base_mean"]) for task, b in baselines.items()}


def tokens_to_threshold(steps: list[int], scores: list[float], threshold: float) -> int | None:
    running = np.convolve(scores, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
    reached = np.flatnonzero(running >= threshold)
    return None if reached.size == 0 else int(steps[reached[0] + SMOOTHING - 1])


@contextmanager
def figure(path: Path, columns: int, size: tuple[float, float], **subplots) -> Iterator[list]:
    """A row of ``columns`` axes to draw on, saved to ``path`` on exit (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size, squeeze=False, **subplots)
    yield list(axes[0])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(parser: argparse.ArgumentParser, quick: dict[str, Any]) -> argparse.Namespace:
    """Add every benchmark's ``--quick`` (a smoke run with the ``quick`` settings; CI runs it) and
    ``--out`` (the results directory: a smoke run must not overwrite the recorded results), then parse."""
    settings = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in quick.items())
    parser.add_argument("--quick", action="store_true", help=f"smoke run (CI): {settings}")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(quick)
    return args


def write_json(path: Path, record: dict) -> None:
    """Write atomically: a temporary file renamed into place. Paths (in settings) become strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


def results_file(out: Path, benchmark: str, model: str = "tiny", device: str = "cpu") -> Path:
    """Where ``benchmark`` writes its JSON: ``<benchmark>[_<model>][_<device>].json``, the suffixes
    left out for "tiny" and the CPU, so that runs on another model or a GPU never overwrite them."""
    suffixes = "".join(f"_{part}" for part, default in ((model, "tiny"), (device, "cpu")) if part != default)
    return out / f"{benchmark}{suffixes}.json"


def gpt2_small_dir(root: Path) -> Path:
    """A random GPT-2-small-shaped model and a 50,257-token tokenizer (tiny's plus filler tokens),
    saved locally in HF format: no download, the full-size vocabulary and LM head."""
    tokenizer = load_tokenizer("tiny")
    tokenizer.add_tokens([f"<filler_{i}>" for i in range(50257 - len(tokenizer))])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root / "gpt2-small")
    tokenizer.save_pretrained(root / "gpt2-small")
    return root / "gpt2-small"
