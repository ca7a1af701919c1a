"""sb3-contrib MaskablePPO on textgym/Arithmetic-v0: the env's action mask allows digits and EOS only.

    python -m agents.examples.sb3_maskable_ppo [--steps 2048]
"""

from __future__ import annotations

import argparse

from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from agents import MaskableLLMActorCriticPolicy
from textgym.models import load_tokenizer


def all_but_digits_and_eos() -> tuple[int, ...]:
    """Every token id but the digits, the space before them and EOS: what the mask forbids."""
    tokenizer = load_tokenizer("tiny")
    allowed = {tokenizer.convert_tokens_to_ids(t) for t in [*"0123456789", "Ġ"]} | {tokenizer.eos_token_id}
    return tuple(i for i in range(len(tokenizer)) if i not in allowed)


def main(argv: list[str] | None = None) -> MaskablePPO:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--n-envs", type=int, default=8)
    args = parser.parse_args(argv)

    envs = make_vec_env("textgym/Arithmetic-v0", n_envs=args.n_envs,
                        env_kwargs={"reward_mode": "immediate", "disallowed_token_ids": all_but_digits_and_eos()})
    model = MaskablePPO(MaskableLLMActorCriticPolicy, envs, n_steps=32, batch_size=64, learning_rate=1e-5,
                        policy_kwargs={"model": "tiny"}, verbose=1)
    model.learn(args.steps)
    return model


if __name__ == "__main__":
    main()
