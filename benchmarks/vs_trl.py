"""Our GRPO (and PPO) versus TRL's ``GRPOTrainer``, side by side, on the same problem.

Both train the embedded model, saved locally in HF format, on ``textgym/Sentiment-v0``'s train
prompts with its VADER reward, for the same number of optimizer steps:

| setting | ours | TRL (``GRPOConfig``) |
| --- | --- | --- |
| completions per generation | ``num_envs`` = 32 | ``generation_batch_size`` = 32 |
| group size | ``group_size`` = 4 | ``num_generations`` = 4 |
| completion length | 48 new tokens, stop at EOS | ``max_completion_length`` = 48 |
| minibatch | ``minibatch_size`` = 16 | ``per_device_train_batch_size`` = 16, ``steps_per_generation`` = 2 |
| passes over each generation | ``epochs`` = 4 | ``num_iterations`` = 4 |
| KL to the reference (full copy) | ``kl_coef`` = 0.05, k3 in the loss | ``beta`` = 0.05 (k3 in the loss) |
| loss | clipped, token mean over the minibatch | ``loss_type="bnpo"``, ``epsilon`` = 0.2 |
| optimiser | fused AdamW, lr 3e-5 constant, weight decay 0.01, clip 1.0 | the same (HF's default ``adamw_torch_fused``) |
| sampling | temperature 1, no top-k/top-p | the same |
| dropout | off (eval mode) | ``disable_dropout=True`` |
| activation checkpointing | off (``gradient_checkpointing``) | off (``gradient_checkpointing``; TRL's default is on) |
| model | the saved directory (its config: the fused tanh GELU) | the same directory |

What cannot be matched: TRL's rewards are per sequence, so ours runs with ``reward_mode="sparse"``
(the same final VADER score, no shaping). Our GRPO's group std runs over the group's tokens
(``agents/trainers/grpo.py`` says why), TRL's over the group's sequence rewards; with sparse
rewards the two differ only in weighting by length. TRL shuffles its generation batch once
(the same minibatch split on every pass); ours reshuffles each epoch.

Measured, each contender in its own process (peak memory cannot be reset within one), in rounds
that alternate contenders, round r training every contender with seed r: tokens/s over the whole
training loop (generated tokens, EOS included, over the wall time of the loop, setup excluded;
median over rounds), the final test score (``--episodes`` sampled test episodes, the same
episodes for every model; mean and std over the rounds' seeds, since one seed moves it by
hundredths), and peak memory (peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA). Writes ``results/vs_trl.json`` with
``throughput_ratio_vs_trl`` (our GRPO over TRL's; goal >= 1.5 with a test score no worse) and
``wall_time_ratio_trl_over_ours``: the policies write completions of different lengths as they
learn, so the same optimizer steps cover different token counts, and tokens/s alone would favour
the one that writes longer.

``--model gpt2-small`` runs the same comparison where compute dominates: a random model of
GPT-2-small's shape (124M parameters, a 50,257-token vocabulary: tiny's tokens plus fillers),
throughput only (a random model has no test score to compare), our GRPO against TRL's. It writes
``results/vs_trl_gpt2-small.json`` (goal: ``throughput_ratio_vs_trl`` >= 1.5).

    pip install -e ".[bench]"
    python benchmarks/vs_trl.py             # 20 generations (160 optimizer steps), 3 rounds
    python benchmarks/vs_trl.py --model gpt2-small --generations 2 --rounds 1
    python benchmarks/vs_trl.py --quick     # smoke run: 2 generations, 1 round
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common import gpt2_small_dir, machine, parse_args, peak_memory_mib, results_file, test_score, write_json

ENV_ID = "textgym/Sentiment-v0"
GENERATION_BATCH, GROUP, MINIBATCH, EPOCHS, NEW_TOKENS = 32, 4, 16, 4, 48


@dataclass(frozen=True)
class Shape:
    """A generation's shape, the same on both sides (``trainer_memory.py`` uses a larger one)."""

    completions: int = GENERATION_BATCH
    new_tokens: int = NEW_TOKENS
    minibatch: int = MINIBATCH
    epochs: int = EPOCHS
    # TRL turns it on by default (GRPOConfig), HF's Trainer and ours do not: say it on both sides.
    gradient_checkpointing: bool = False


LR, KL_COEF = 3e-5, 0.05
WEIGHT_DECAY = 0.01  # torch AdamW's default, which our trainer uses; TRL's default is 0
CONTENDERS = ("textgym-grpo", "textgym-ppo", "trl-grpo")


def optimizer_steps(generations: int, shape: Shape) -> int:
    return generations * shape.epochs * shape.completions // shape.minibatch


Trained = tuple[torch.nn.Module, int, int, float]  # the model, generated tokens, optimizer steps, seconds


def train_textgym(algo: str, model_dir: str, generations: int, seed: int, shape: Shape = Shape(),
                  setup: Callable[[Any], None] | None = None, **overrides: Any) -> Trained:
    """``setup``: called with the trainer before the timed loop (``loop_profile.py`` wraps its
    phases); ``overrides``: more ``TrainConfig`` fields (``trainer_memory.py`` turns one off)."""
    from agents.trainers import TrainConfig, Trainer

    config = TrainConfig(env_id=ENV_ID, algo=algo, model=model_dir,
                         env_kwargs={"tokenizer": model_dir, "max_new_tokens": shape.new_tokens},
                         reward_mode="sparse", num_envs=shape.completions, group_size=GROUP,
                         minibatch_size=shape.minibatch, epochs=shape.epochs, lr=LR, kl_coef=KL_COEF, seed=seed,
                         gradient_checkpointing=shape.gradient_checkpointing, steps=10**12, out=tempfile.mkdtemp(),
                         **overrides)
    trainer = Trainer(config, progress=False)
    updates = []
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: updates.append(1))
    if setup is not None:
        setup(trainer)
    start = time.perf_counter()
    for _ in range(generations):
        trainer.log.log(trainer.iterate())
    return trainer.policy.lm, trainer.steps, len(updates), time.perf_counter() - start


def train_trl(model_dir: str, generations: int, seed: int, shape: Shape = Shape(),
              setup: Callable[[Any], None] | None = None) -> Trained:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from textgym.scorers import VaderSentiment
    from textgym.tasks import data

    vader, generated = VaderSentiment(), []

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_) -> list[float]:
        generated.append(sum(len(ids) for ids in completion_ids))
        return [float(s) for s in vader(prompts, completions)]

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=shape.minibatch,
        steps_per_generation=shape.completions // shape.minibatch, num_generations=GROUP,
        num_iterations=shape.epochs, max_completion_length=shape.new_tokens,
        max_steps=optimizer_steps(generations, shape), learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=WEIGHT_DECAY, max_grad_norm=1.0, beta=KL_COEF, epsilon=0.2,
        loss_type="bnpo", scale_rewards="group", temperature=1.0, top_k=0, top_p=1.0, disable_dropout=True,
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(), seed=seed, report_to="none",
        gradient_checkpointing=shape.gradient_checkpointing, save_strategy="no",
        logging_steps=shape.epochs * shape.completions // shape.minibatch)
    prompts, _ = data.sentiment("train")
    trainer = GRPOTrainer(model=model_dir, reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": list(prompts)}))
    if setup is not None:
        setup(trainer)
    start = time.perf_counter()
    trainer.train()
    return trainer.model, sum(generated), trainer.state.global_step, time.perf_counter() - start


def run_one(name: str, model_dir: str, seed: str, generations: int, episodes: int) -> dict:
    """In a child process: train one contender, then score it on the test split."""
    import textgym  # noqa: F401  (registers the envs)
    from agents.trainers import TrainConfig

    warnings.filterwarnings("ignore")
    torch.manual_seed(int(seed))
    if name == "trl-grpo":
        lm, tokens, updates, seconds = train_trl(model_dir, generations, int(seed))
    else:
        lm, tokens, updates, seconds = train_textgym(name.removeprefix("textgym-"), model_dir, generations, int(seed))
    record = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_mib": peak_memory_mib(),
              "optimizer_steps": updates}
    if episodes:
        record["test_score"] = test_score(lm.eval(), TrainConfig(env_id=ENV_ID, env_kwargs={"tokenizer": model_dir}),
                                          episodes)
    return record


def save_embedded_model(root: Path) -> str:
    from textgym.models import load_causal_lm, load_tokenizer, save_pretrained_atomically

    out = root / "tiny"
    save_pretrained_atomically(out, load_causal_lm("tiny"), load_tokenizer("tiny"))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=20, help="rollouts of 32 completions per contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=256, help="test episodes per trained model")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--model", default="tiny", choices=["tiny", "gpt2-small"],
                        help="gpt2-small: throughput only, our GRPO against TRL's")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "MODEL_DIR", "SEED"), help=argparse.SUPPRESS)
    args = parse_args(parser, quick={"generations": 2, "rounds": 1, "episodes": 16})
    if args.child:
        print(json.dumps(run_one(*args.child, args.generations, args.episodes)))
        return
    if args.model == "gpt2-small":
        args.episodes, args.contenders = 0, [c for c in args.contenders if c != "textgym-ppo"]
    runs: dict[str, list[dict]] = {name: [] for name in args.contenders}
    with tempfile.TemporaryDirectory() as root:
        model_dir = str(gpt2_small_dir(Path(root))) if args.model == "gpt2-small" else save_embedded_model(Path(root))
        for seed in range(args.rounds):  # round r trains with seed r
            for name in args.contenders:
                out = subprocess.run([sys.executable, __file__, "--child", name, model_dir, str(seed),
                                      "--generations", str(args.generations), "--episodes", str(args.episodes)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{out.stderr[-4000:]}")
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = runs[name][-1]
                print(f"round {seed + 1} (seed {seed}) {name}: {r['tokens_per_s']:.0f} tok/s, "
                      f"test {r.get('test_score', float('nan')):.3f}, peak {r['peak_mib']:.0f} MiB", flush=True)
    results = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    for name, rs in runs.items():  # a score depends on the seed: average it over the rounds' seeds
        scores = [r["test_score"] for r in rs if "test_score" in r]
        if scores:
            results[name]["test_score"] = statistics.mean(scores)
            results[name]["test_score_std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\n{'contender':<15}{'tokens/s':>10}{'tokens':>8}{'seconds':>9}{'test score':>16}{'peak MiB':>10}"
          f"{'opt steps':>11}   ({device}, {args.generations} generations of {GENERATION_BATCH}, median of "
          f"{args.rounds} rounds; test score: mean +- std over their seeds)")
    for name, r in results.items():
        print(f"{name:<15}{r['tokens_per_s']:>10.0f}{r['tokens']:>8.0f}{r['seconds']:>9.1f}"
              f"{r.get('test_score', float('nan')):>10.3f} +- {r.get('test_score_std', float('nan')):.3f}"
              f"{r['peak_mib']:>10.0f}{r['optimizer_steps']:>11.0f}")
    record = {"machine": machine(), "device": device, "model": args.model, "generations": args.generations,
              "rounds": args.rounds,
              "test_episodes": args.episodes, "results": results, "runs": runs}
    if {"textgym-grpo", "trl-grpo"} <= set(results):
        ours, trl = results["textgym-grpo"], results["trl-grpo"]
        record["throughput_ratio_vs_trl"] = ours["tokens_per_s"] / trl["tokens_per_s"]
        record["wall_time_ratio_trl_over_ours"] = trl["seconds"] / ours["seconds"]  # same optimizer steps
        print(f"throughput ratio (our GRPO / TRL GRPO): {record['throughput_ratio_vs_trl']:.2f} (goal >= 1.5); "
              f"TRL's loop takes {record['wall_time_ratio_trl_over_ours']:.2f}x our time for the same optimizer "
              "steps")
        if "test_score" in ours:
            record["test_score_difference_vs_trl"] = ours["test_score"] - trl["test_score"]
            print(f"test score difference {record['test_score_difference_vs_trl']:+.3f} (goal >= 0)")
    write_json(results_file(args.out, "vs_trl", args.model, device), record)


if __name__ == "__main__":
    main()
