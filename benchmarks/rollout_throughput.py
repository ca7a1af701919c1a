"""Rollout throughput: the trainer's env-driven rollout versus plain ``model.generate()``.

For each model (the embedded "tiny" GPT-2, and a randomly initialised GPT-2-small-shaped model
with a 50,257-token vocabulary), batch 64 and 48 new tokens, it measures side by side, round
after round in one run:

- ``env_rollout``: ``agents.trainers.rollout.Rollout`` through ``gym.make_vec("textgym/Sentiment-v0")``
  and its reward adapter (sparse: the VADER score at each episode's end), a sampled token per env
  per step with a KV cache;
- ``env_rollout_immediate``: the same with ``reward_mode="immediate"`` (VADER potential shaping
  at every token);
- ``sampler``: the rollout's ``HFSampler`` alone, on the same prompts (the rollout minus the env);
- ``generate``: ``model.generate(do_sample=True)`` on the same prompts, batch and sampling;
- ``iteration``: a full PPO iteration of ``agents.trainers.Trainer`` (rollout, scoring forward,
  reference forward, 4 epochs of updates).

Every episode runs all 48 tokens (``stop_on_eos=False``, and ``generate`` without an EOS id), so
each contender makes 64 x 48 tokens. ``ratio_vs_generate`` = env_rollout / generate for "tiny".
Goal: >= 0.85.

    python benchmarks/rollout_throughput.py [--rounds 5] [--gpt2-rounds 1] [--models tiny gpt2-small]
    python benchmarks/rollout_throughput.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import torch

import textgym  # noqa: F401  (registers the envs)
from agents.trainers import TrainConfig, Trainer
from agents.trainers.rollout import Rollout
from common import gpt2_small_dir, machine, parse_args, results_file, write_json
from textgym.models import default_device, load_causal_lm
from textgym.models.sampling import HFSampler, Sampling, env_prompts, sample_for

ENV_ID, BATCH, NEW_TOKENS = "textgym/Sentiment-v0", 64, 48


def contenders(model: str, device: torch.device) -> dict:
    env_kwargs = {"stop_on_eos": False, "tokenizer": model}
    lm = load_causal_lm(model, device=device)
    rollouts = {name: Rollout(gym.make_vec(ENV_ID, num_envs=BATCH, reward_mode=mode, **env_kwargs), Sampling())
                for name, mode in [("env_rollout", "sparse"), ("env_rollout_immediate", "immediate")]}
    envs = rollouts["env_rollout"].envs
    prompt_ids, prompt_mask, _ = env_prompts(envs, list(range(BATCH)))
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    sampler = HFSampler(lm)
    generator = torch.Generator(device).manual_seed(0)
    trainer = Trainer(TrainConfig(env_id=ENV_ID, model=model, num_envs=BATCH, minibatch_size=16, steps=10**9,
                                  reward_mode="sparse", env_kwargs=env_kwargs, lr=1e-6,
                                  out=tempfile.mkdtemp(), device=device.type), progress=False)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return BATCH * NEW_TOKENS / (time.perf_counter() - start)

    def generate():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            out = lm.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, top_k=0,
                              max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, eos_token_id=None,
                              pad_token_id=1)
        assert out.shape[1] == prompt_ids.shape[1] + NEW_TOKENS

    runs = {name: (lambda r=r: r.collect(sampler, list(range(BATCH)), generator)) for name, r in rollouts.items()}
    runs["sampler"] = lambda: sample_for(envs, sampler, prompt_ids, prompt_mask, Sampling(), generator)
    runs["generate"] = generate
    runs["iteration"] = trainer.iterate
    return {name: (lambda fn=fn: timed(fn)) for name, fn in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpt2-rounds", type=int, default=1, help="rounds for gpt2-small (slow on CPU)")
    parser.add_argument("--models", nargs="+", default=["tiny", "gpt2-small"])
    args = parse_args(parser, quick={"models": ["tiny"], "rounds": 1})
    warnings.filterwarnings("ignore")
    device = default_device()
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for name in args.models:
            model = str(gpt2_small_dir(Path(root))) if name == "gpt2-small" else name
            runs = contenders(model, device)
            for key, run in runs.items():  # warm-up (a full iteration warms up nothing the rollouts did not)
                if key != "iteration":
                    run()
            rates = {key: [] for key in runs}
            for _ in range(args.gpt2_rounds if name == "gpt2-small" else args.rounds):
                for key, run in runs.items():
                    rates[key].append(run())
            results[name] = {key: {"tokens_per_s": statistics.median(r), "rounds": r} for key, r in rates.items()}
            results[name]["ratio_vs_generate"] = (results[name]["env_rollout"]["tokens_per_s"]
                                                  / results[name]["generate"]["tokens_per_s"])
            results[name]["ratio_immediate_vs_generate"] = (results[name]["env_rollout_immediate"]["tokens_per_s"]
                                                            / results[name]["generate"]["tokens_per_s"])
    print(f"\n{'model':<12}{'env rollout':>14}{'+immediate':>12}{'sampler':>10}{'generate':>11}{'iteration':>11}"
          f"{'ratio':>8}"
          f"  (tokens/s, batch {BATCH}, {NEW_TOKENS} new tokens, {device})")
    for name, r in results.items():
        print(f"{name:<12}{r['env_rollout']['tokens_per_s']:>14.0f}{r['env_rollout_immediate']['tokens_per_s']:>12.0f}"
              f"{r['sampler']['tokens_per_s']:>10.0f}{r['generate']['tokens_per_s']:>11.0f}{r['iteration']['tokens_per_s']:>11.0f}"
              f"{r['ratio_vs_generate']:>8.2f}")
    record = {"env_id": ENV_ID, "batch": BATCH, "new_tokens": NEW_TOKENS, "device": str(device), "machine": machine(),
              "ratio_vs_generate": results.get("tiny", {}).get("ratio_vs_generate"), "models": results}
    write_json(results_file(args.out, "rollout_throughput", device=device.type), record)


if __name__ == "__main__":
    main()
