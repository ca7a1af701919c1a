"""Peak memory of LoRA training with the KL penalty versus LoRA training without a reference.

With LoRA the reference model is the policy with its adapters disabled, so the KL penalty should
cost only the activations of one extra no-grad forward, not a second model. Each contender runs
in its own process (peak memory cannot be reset within one): a few PPO iterations on
``textgym/Sentiment-v0`` with a randomly initialised GPT-2-small-shaped model (124M parameters,
50,257-token vocabulary). Peak memory is the process's peak RSS on CPU, or
``torch.cuda.max_memory_allocated`` on CUDA. Full fine-tuning with its frozen reference copy is
shown for scale. Goal: LoRA + KL <= 1.15 x LoRA without a reference.

Then our GRPO against TRL's ``GRPOTrainer`` (``vs_trl.py``'s two setups) on one generation of 64
completions of 128 tokens from the same random GPT-2-small-shaped model, one pass over it in
minibatches of 16, full fine-tuning with the KL to a frozen reference and activation checkpointing
(TRL's default) on both sides, each as it runs by default. Goal: our peak <= 0.6 x TRL's
(``peak_memory_ratio_vs_trl``). On CPU, glibc's allocator keeps freed heap memory (its mmap threshold
rises as large blocks are freed), so peak RSS counts memory no tensor holds; our trainer fixes the
threshold by default (``release_freed_memory``, ``agents/trainers/allocator.py``). So ours runs again
with that off (``peak_memory_ratio_vs_trl_glibc_default``: the allocator left as it comes), and both
sides with ``MALLOC_MMAP_THRESHOLD_=131072`` set (large blocks always mmapped, so returned when freed),
the reading nearer to live tensor memory: ``peak_memory_ratio_vs_trl_fixed_mmap``. On CUDA, where
peak memory is allocated tensor memory and glibc plays no part, those two runs are left out.

    python benchmarks/trainer_memory.py [--iterations 2] [--num-envs 16]
    python benchmarks/trainer_memory.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from common import gpt2_small_dir, machine, parse_args, peak_memory_mib, results_file, write_json
from vs_trl import Shape, save_embedded_model, train_textgym, train_trl

CONTENDERS = {
    "lora_without_reference": {"lora": True, "kl_coef": 0.0},
    "lora_with_kl": {"lora": True, "kl_coef": 0.05},
    "full_with_kl": {"lora": False, "kl_coef": 0.05},
}
AGAINST_TRL = {"textgym_grpo": lambda model, shape: train_textgym("grpo", model, 1, 0, shape),
               "trl_grpo": lambda model, shape: train_trl(model, 1, 0, shape)}
GLIBC_DEFAULT = {"textgym_grpo_glibc_default": lambda model, shape: train_textgym("grpo", model, 1, 0, shape,
                                                                                  release_freed_memory=False)}
GRPO_RUNS = AGAINST_TRL | GLIBC_DEFAULT
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc: no dynamic threshold, large blocks go back when freed
# Activation checkpointing on both sides: TRL's default, and what a user short of memory turns on.
TRL_SHAPE = Shape(completions=64, new_tokens=128, epochs=1, gradient_checkpointing=True)
QUICK_TRL_SHAPE = Shape(completions=8, new_tokens=8, minibatch=4, epochs=1, gradient_checkpointing=True)


def run_one(model: str, name: str, iterations: int, num_envs: int, quick: bool) -> dict:
    """In a child process: train ``iterations`` iterations, report peak memory in MiB."""
    import textgym  # noqa: F401
    from agents.trainers import TrainConfig, Trainer

    warnings.filterwarnings("ignore")
    if name in GRPO_RUNS:
        _, tokens, updates, _ = GRPO_RUNS[name](model, QUICK_TRL_SHAPE if quick else TRL_SHAPE)
        return {"peak_mib": peak_memory_mib(), "generated_tokens": tokens, "optimizer_steps": updates}
    config = TrainConfig(env_id="textgym/Sentiment-v0", model=model, num_envs=num_envs, minibatch_size=num_envs // 2,
                         steps=10**9, out=tempfile.mkdtemp(), env_kwargs={"tokenizer": model}, reward_mode="sparse",
                         **CONTENDERS[name])
    trainer = Trainer(config, progress=False)
    assert (trainer.reference is not None) == (config.kl_coef > 0)
    for _ in range(iterations):
        trainer.iterate()
    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    return {"peak_mib": peak_memory_mib(), "trainable_parameters": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "NAME"), help=argparse.SUPPRESS)
    args = parse_args(parser, quick={"iterations": 1, "num_envs": 4})  # and the embedded model, below
    if args.child:
        print(json.dumps(run_one(*args.child, args.iterations, args.num_envs, args.quick)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cpu = device == "cpu"  # glibc's heap matters to peak RSS only; CUDA counts allocated tensor memory
    results = {}
    with tempfile.TemporaryDirectory() as root:
        model = save_embedded_model(Path(root)) if args.quick else str(gpt2_small_dir(Path(root)))
        runs = [(name, name, {}) for name in [*CONTENDERS, *AGAINST_TRL, *(GLIBC_DEFAULT if on_cpu else [])]]
        runs += [(f"{name}_fixed_mmap", name, FIXED_MMAP) for name in AGAINST_TRL if on_cpu]
        for key, name, env in runs:
            out = subprocess.run([sys.executable, __file__, "--child", model, name, "--iterations",
                                  str(args.iterations), "--num-envs", str(args.num_envs),
                                  *(["--quick"] if args.quick else [])],
                                 capture_output=True, text=True, env=os.environ | env)
            if out.returncode != 0:
                raise RuntimeError(f"{key} failed:\n{out.stderr[-4000:]}")
            results[key] = json.loads(out.stdout.strip().splitlines()[-1])
            print(key, results[key], flush=True)
    ratio = results["lora_with_kl"]["peak_mib"] / results["lora_without_reference"]["peak_mib"]
    print(f"\n{'contender':<26}{'peak MiB':>10}{'trainable':>14}  ({device}, GPT-2-small shape, {args.num_envs} envs)")
    for name in CONTENDERS:
        print(f"{name:<26}{results[name]['peak_mib']:>10.0f}{results[name]['trainable_parameters']:>14,}")
    shape = QUICK_TRL_SHAPE if args.quick else TRL_SHAPE
    for name in [name for name in results if name not in CONTENDERS]:
        print(f"{name:<26}{results[name]['peak_mib']:>10.0f}{'all':>14}  "
              f"(one generation, {shape.completions} x {shape.new_tokens} tokens)")
    print(f"LoRA + KL / LoRA without reference: {ratio:.3f} (goal <= 1.15)")
    ratios = {key: results[ours]["peak_mib"] / results[theirs]["peak_mib"]
              for key, ours, theirs in [("peak_memory_ratio_vs_trl", "textgym_grpo", "trl_grpo"),
                                        ("peak_memory_ratio_vs_trl_glibc_default", "textgym_grpo_glibc_default",
                                         "trl_grpo"),
                                        ("peak_memory_ratio_vs_trl_fixed_mmap", "textgym_grpo_fixed_mmap",
                                         "trl_grpo_fixed_mmap")]
              if ours in results}
    print(f"our GRPO / TRL's GRPOTrainer, {shape.completions} completions of {shape.new_tokens} tokens: "
          + ", ".join(f"{key} {value:.3f}" for key, value in ratios.items()) + " (goal <= 0.6)")
    write_json(results_file(args.out, "trainer_memory", device=device),
               {"machine": machine(), "device": device, "num_envs": args.num_envs, "iterations": args.iterations,
                "ratio_lora_kl_vs_no_reference": ratio, **ratios, "against_trl_shape": vars(shape),
                "contenders": results})


if __name__ == "__main__":
    main()
