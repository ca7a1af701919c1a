"""Peak memory of LoRA training with the KL penalty versus LoRA training without a reference.

With LoRA the reference model is the policy with its adapters disabled, so the KL penalty should
cost only the activations of one extra no-grad forward, not a second model. Each contender runs
in its own process (peak memory cannot be reset within one): a few PPO iterations on
``textgym/Sentiment-v0`` with a randomly initialised GPT-2-small-shaped model (124M parameters,
50,257-token vocabulary). Peak memory is the process's peak RSS on CPU, or
``torch.cuda.max_memory_allocated`` on CUDA. Full fine-tuning with its frozen reference copy is
shown for scale. Goal: LoRA + KL <= 1.15 x LoRA without a reference.

    python benchmarks/trainer_memory.py [--iterations 2] [--num-envs 16]
    python benchmarks/trainer_memory.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from common import gpt2_small_dir, machine, parse_args, write_json

CONTENDERS = {
    "lora_without_reference": {"lora": True, "kl_coef": 0.0},
    "lora_with_kl": {"lora": True, "kl_coef": 0.05},
    "full_with_kl": {"lora": False, "kl_coef": 0.05},
}


def run_one(model: str, name: str, iterations: int, num_envs: int) -> dict:
    """In a child process: train ``iterations`` iterations, report peak memory in MiB."""
    import textgym  # noqa: F401
    from agents.trainers import TrainConfig, Trainer

    warnings.filterwarnings("ignore")
    config = TrainConfig(env_id="textgym/Sentiment-v0", model=model, num_envs=num_envs, minibatch_size=num_envs // 2,
                         steps=10**9, out=tempfile.mkdtemp(), env_kwargs={"tokenizer": model}, reward_mode="sparse",
                         **CONTENDERS[name])
    trainer = Trainer(config, progress=False)
    assert (trainer.reference is not None) == (config.kl_coef > 0)
    for _ in range(iterations):
        trainer.iterate()
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    return {"peak_mib": peak, "trainable_parameters": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "NAME"), help=argparse.SUPPRESS)
    args = parse_args(parser, quick={"iterations": 1, "num_envs": 4})  # and the embedded model, below
    if args.child:
        print(json.dumps(run_one(*args.child, args.iterations, args.num_envs)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as root:
        model = "tiny" if args.quick else str(gpt2_small_dir(Path(root)))
        for name in CONTENDERS:
            out = subprocess.run([sys.executable, __file__, "--child", model, name, "--iterations",
                                  str(args.iterations), "--num-envs", str(args.num_envs)],
                                 capture_output=True, text=True, check=True).stdout
            results[name] = json.loads(out.strip().splitlines()[-1])
            print(name, results[name], flush=True)
    ratio = results["lora_with_kl"]["peak_mib"] / results["lora_without_reference"]["peak_mib"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\n{'contender':<26}{'peak MiB':>10}{'trainable':>14}  ({device}, GPT-2-small shape, {args.num_envs} envs)")
    for name, r in results.items():
        print(f"{name:<26}{r['peak_mib']:>10.0f}{r['trainable_parameters']:>14,}")
    print(f"LoRA + KL / LoRA without reference: {ratio:.3f} (goal <= 1.15)")
    suffix = "" if device == "cpu" else f"_{device}"
    write_json(args.out / f"trainer_memory{suffix}.json", {"machine": machine(), "device": device,
                                                          "num_envs": args.num_envs, "iterations": args.iterations,
                                                          "ratio_lora_kl_vs_no_reference": ratio,
                                                          "contenders": results})


if __name__ == "__main__":
    main()
