"""Conversation throughput: a multi-turn rollout against the single-turn rollout, on one model.

With batch 64 on the embedded "tiny" model, round after round in one run, it measures the policy's
tokens per second (the other side's tokens are not counted) of:

- ``single_turn``: ``agents.trainers.rollout.Rollout`` through ``gym.make_vec("textgym/Sentiment-v0")``
  (sparse reward), one sampled token per env per step with a KV cache;
- ``<game>``: ``ConversationRollout`` through ``gym.make_vec("textgym/<game>-v0")`` for each
  multi-turn game: every round the sampler writes one turn of every running conversation, then
  each env steps through its turn and appends the other side's reply;
- ``lm_user``: the same against ``LanguageModelUser``, the "tiny" model writing the customer's
  replies (Customer's openings, 4 turns, 24 tokens a turn each side), batched across the 64 envs,
  its KV cache kept from round to round: the cost of a simulated user that is a model, not a script.

``ratio_vs_single_turn`` per game = its policy tokens per second / single_turn's. Goal: >= 0.8.
``all_tokens_per_s`` also counts the other side's tokens, which the model must read as well.

    python benchmarks/conversation_throughput.py [--rounds 5]
    python benchmarks/conversation_throughput.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import random
import statistics
import warnings

import gymnasium as gym
import torch

import textgym  # noqa: F401  (registers the envs)
from agents.trainers.rollout import rollout_for
from common import machine, parse_args, results_file, write_json
from textgym import CONVERSATION_NAMES
from textgym.envs import LanguageModelUser, MultiTurnTextVectorEnv
from textgym.models.dialogues import CUSTOMER_SYSTEM, Customer
from textgym.models import default_device, load_causal_lm
from textgym.models.sampling import HFSampler, Sampling

BATCH, SINGLE_TURN = 64, "textgym/Sentiment-v0"


def lm_user_envs() -> MultiTurnTextVectorEnv:
    """Customer's openings, the customer's replies written by "tiny" (no judge: every turn scores 0)."""
    openings = [[{"role": "system", "content": CUSTOMER_SYSTEM},
                 {"role": "user", "content": Customer.draw(random.Random(i)).opening}] for i in range(BATCH)]
    return MultiTurnTextVectorEnv(BATCH, LanguageModelUser(openings, max_reply_tokens=24), max_turns=4,
                                  max_turn_tokens=24, max_new_tokens=192)


def tokens_per_s(rollout, sampler, generator: torch.Generator, seed: int) -> tuple[float, float]:
    """The policy's tokens per second, and all tokens after the prompts (the other side's too)."""
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    batch = rollout.collect(sampler, [seed + i for i in range(BATCH)], generator)
    written = batch.mask[:, -batch.completion_tokens :].sum().item()
    return batch.completion_mask.sum().item() / batch.seconds, written / batch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--games", nargs="+", default=list(CONVERSATION_NAMES), choices=CONVERSATION_NAMES)
    args = parse_args(parser, quick={"rounds": 1, "games": ["GuessNumber"]})
    warnings.filterwarnings("ignore")
    device = default_device()
    sampler = HFSampler(load_causal_lm("tiny", device=device))
    generator = torch.Generator(device).manual_seed(0)
    env_ids = {"single_turn": SINGLE_TURN} | {game: f"textgym/{game}-v0" for game in args.games}
    envs = {name: gym.make_vec(env_id, num_envs=BATCH) for name, env_id in env_ids.items()}
    env_ids["lm_user"], envs["lm_user"] = "LanguageModelUser (Customer openings)", lm_user_envs()
    rollouts = {name: rollout_for(vector_env, Sampling()) for name, vector_env in envs.items()}
    rates = {name: [] for name in rollouts}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, rollout in rollouts.items():
            rate = tokens_per_s(rollout, sampler, generator, seed=1000 * round_)
            if round_:
                rates[name].append(rate)
    results = {name: {"env_id": env_ids[name], "policy_tokens_per_s": statistics.median(p for p, _ in r),
                      "all_tokens_per_s": statistics.median(a for _, a in r), "rounds": r}
               for name, r in rates.items()}
    single = results["single_turn"]["policy_tokens_per_s"]
    print(f"\n{'rollout':<14}{'policy tokens/s':>17}{'ratio':>8}{'all tokens/s':>14}  (batch {BATCH}, tiny, {device})")
    for name, r in results.items():
        r["ratio_vs_single_turn"] = r["policy_tokens_per_s"] / single
        print(f"{name:<14}{r['policy_tokens_per_s']:>17.0f}{r['ratio_vs_single_turn']:>8.2f}{r['all_tokens_per_s']:>14.0f}")
    write_json(results_file(args.out, "conversation_throughput", device=device.type), {
        "batch": BATCH, "device": str(device), "machine": machine(), "settings": vars(args), "results": results,
        "ratio_vs_single_turn": {name: results[name]["ratio_vs_single_turn"] for name in [*args.games, "lm_user"]}})


if __name__ == "__main__":
    main()
