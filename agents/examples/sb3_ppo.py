"""Stock stable-baselines3 PPO on textgym/Sentiment-v0, with the embedded LM as the policy.

    python -m agents.examples.sb3_ppo [--steps 2048]
"""

from __future__ import annotations

import argparse

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from agents import LLMActorCriticPolicy


def main(argv: list[str] | None = None) -> PPO:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--n-envs", type=int, default=8)
    args = parser.parse_args(argv)

    envs = make_vec_env("textgym/Sentiment-v0", n_envs=args.n_envs, env_kwargs={"reward_mode": "immediate"})
    model = PPO(LLMActorCriticPolicy, envs, n_steps=32, batch_size=64, learning_rate=1e-5,
                policy_kwargs={"model": "tiny"}, verbose=1)
    model.learn(args.steps)
    return model


if __name__ == "__main__":
    main()
