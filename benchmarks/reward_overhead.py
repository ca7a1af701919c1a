"""Reward overhead: what each per-token reward component costs, in µs per token, at N = 64.

Every contender is the vector env with one component (or none, the bare env), measured side by
side in one run, round-robin; the overhead of a component is its µs/token minus the bare env's.
The trained sources (learned potential, implicit reward) are fitted on a few rollouts first: their
weights do not matter to their cost. Prints a table and writes JSON, with the learned potential's
overhead over ``ReferenceLogProb``'s (goal: at most 1.5).

    python benchmarks/reward_overhead.py [--rounds 5] [--seconds 0.5] [--num-envs 64]
    python benchmarks/reward_overhead.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common import Contender, machine, measure, parse_args, vector_runner, write_json
from textgym.data import prompt_file
from textgym.envs import TextGenerationVectorEnv, load_prompts
from textgym.models import load_causal_lm
from textgym.rewards import (
    PREFERENCE_MODEL, AttentionCredit, ImplicitConfig, ImplicitTokenReward, LearnedPotential, PotentialConfig,
    RewardModelScore, train_implicit_reward, train_potential,
)
from textgym.scorers import VaderSentiment, rouge
from textgym.wrappers import (
    KeywordHit,
    LengthPenalty,
    MissingEOSPenalty,
    PotentialShaping,
    ReferenceLogProb,
    RepetitionPenalty,
    TargetLength,
    TokenReward,
    VectorTokenRewardWrapper,
)

def components(sources: Path) -> dict[str, Callable[[], TokenReward | None]]:
    """Every contender's component, the trained ones read from ``sources`` (``train_sources``)."""
    return {
        "bare vector env": lambda: None,
        "LengthPenalty": lambda: LengthPenalty(0.01),
        "TargetLength(24)": lambda: TargetLength(24),
        "MissingEOSPenalty": lambda: MissingEOSPenalty(),
        "RepetitionPenalty(n=3)": lambda: RepetitionPenalty(3),
        "KeywordHit (3 words)": lambda: KeywordHit(),
        "PotentialShaping(VADER)": lambda: PotentialShaping(VaderSentiment()),
        "PotentialShaping(ROUGE-L)": lambda: PotentialShaping(rouge("rougeL")),
        "ReferenceLogProb(tiny)": lambda: ReferenceLogProb(load_causal_lm("tiny", device="cpu"), beta=0.05),
        "LearnedPotential(tiny)": lambda: PotentialShaping(LearnedPotential(sources / "potential", device="cpu")),
        "ImplicitTokenReward(tiny)": lambda: ImplicitTokenReward(sources / "implicit", device="cpu"),
        "AttentionCredit(preference RM)": lambda: AttentionCredit(RewardModelScore(PREFERENCE_MODEL, device="cpu")),
    }


def train_sources(root: Path) -> Path:
    small = dict(episodes=16, heldout=4, num_envs=8, epochs=1, device="cpu")
    train_potential("textgym/Sentiment-v0", PotentialConfig(**small), max_new_tokens=8).save(root / "potential")
    train_implicit_reward("textgym/Sentiment-v0", ImplicitConfig(**small), max_new_tokens=8).save(root / "implicit")
    return root


def make_envs(num_envs: int, component: TokenReward | None):
    prompts = load_prompts(prompt_file("text_generation"))
    references = [["dog", "ball", "park"]] * len(prompts)  # words for KeywordHit, a reference for ROUGE
    envs = TextGenerationVectorEnv(num_envs, prompts=prompts, references=references)
    return envs if component is None else VectorTokenRewardWrapper(envs, component)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender per round")
    parser.add_argument("--num-envs", type=int, default=64)
    args = parse_args(parser, quick={"rounds": 1, "seconds": 0.02, "num_envs": 8})

    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in components(train_sources(Path(tmp))).items():
            envs = make_envs(args.num_envs, make())
            valid = np.flatnonzero(envs.unwrapped.action_masks()[0])
            actions = np.random.default_rng(0).choice(valid, size=1 << 16)
            found.append(Contender(name, args.num_envs, vector_runner(envs, actions)))
        results = measure(found, args.rounds, args.seconds)
    bare = results["bare vector env"]["us_per_token"]
    for r in results.values():
        r["overhead_us_per_token"] = r["us_per_token"] - bare
    ratio = results["LearnedPotential(tiny)"]["overhead_us_per_token"] / results["ReferenceLogProb(tiny)"][
        "overhead_us_per_token"]

    print(f"{'N=' + str(args.num_envs):<31}{'µs/token':>10}{'overhead':>10}")
    for name, r in results.items():
        print(f"{name:<31}{r['us_per_token']:>10.2f}{r['overhead_us_per_token']:>10.2f}")
    print(f"LearnedPotential costs {ratio:.2f}x ReferenceLogProb's overhead (goal: at most 1.5)")
    write_json(args.out / "reward_overhead.json", {"benchmark": "reward_overhead", "settings": vars(args),
                          "machine": machine(), "results": results,
                          "learned_potential_vs_reference_logprob": ratio})


if __name__ == "__main__":
    main()
