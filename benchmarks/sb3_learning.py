"""Learning evidence: stock SB3 PPO (or MaskablePPO) with the LLM policy on textgym/Sentiment-v0.

Trains within a wall-clock budget on CPU, and evaluates on the *test* split before training and
after every chunk: the mean task score of sampled completions, and the per-token KL from the
policy to the base model on those completions, KL(π || π_base) = Σ_a π(a|s) (log π − log π_base).
Writes the curve (PNG) and the numbers (JSON). Goal: the test score rises by >= 0.2.

    python benchmarks/sb3_learning.py [--algo ppo|maskable] [--minutes 15]
    python benchmarks/sb3_learning.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

import textgym  # noqa: F401  (registers the envs)
from agents import LLMActorCriticPolicy, MaskableLLMActorCriticPolicy
from common import figure, machine, parse_args, write_json
from textgym.models import load_causal_lm
from textgym.models.cache import positions

ENV_ID = "textgym/Sentiment-v0"
ALGOS = {"ppo": (PPO, LLMActorCriticPolicy), "maskable": (MaskablePPO, MaskableLLMActorCriticPolicy)}


@torch.no_grad()
def evaluate(model, base, episodes: int, seed: int) -> dict[str, float]:
    """Mean test score of ``episodes`` sampled completions, and the mean per-token KL to ``base``."""
    policy = model.policy
    policy.set_training_mode(False)
    envs = gym.make_vec(ENV_ID, num_envs=min(episodes, 64), split="test")
    obs, _ = envs.reset(seed=seed)
    torch.manual_seed(seed)
    scores, kls, samples, stepping = [], [], [], np.ones(envs.num_envs, bool)
    while len(scores) < episodes:
        tensors = obs_as_tensor(obs, policy.device)
        logits = policy.get_distribution(tensors).distribution.logits
        ids, mask = tensors["input_ids"].long(), tensors["attention_mask"].long()
        base_logits = base(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1].float()
        log_p, log_q = torch.log_softmax(logits, -1), torch.log_softmax(base_logits[:, : logits.shape[1]], -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).numpy()
        kls += kl[stepping].tolist()  # under next-step autoreset, a resetting env takes no action
        actions = torch.distributions.Categorical(logits=logits).sample().numpy()
        obs, _, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        scores += [float(info["score"][i]) for i in np.flatnonzero(done)]
        samples += [info["prompt"][i] + info["completion"][i] for i in np.flatnonzero(done)]
        stepping = ~done
    return {"test_score": float(np.mean(scores[:episodes])), "kl_to_base": float(np.mean(kls)),
            "samples": samples[:3]}


def plot(curve: list[dict], out: Path, title: str) -> None:
    steps = [point["env_steps"] for point in curve]
    with figure(out, 1, (6, 3.5)) as (left,):
        left.plot(steps, [p["test_score"] for p in curve], "o-", color="tab:blue", label="test score")
        left.set_xlabel("env steps (tokens)")
        left.set_ylabel("mean test score (VADER, [0, 1])", color="tab:blue")
        right = left.twinx()
        right.plot(steps, [p["kl_to_base"] for p in curve], "s--", color="tab:red", label="KL to base")
        right.set_ylabel("per-token KL to base", color="tab:red")
        left.set_title(title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=sorted(ALGOS), default="ppo")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=4096, help="env steps between evaluations")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--eval-episodes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, quick={"minutes": 0, "n_envs": 2, "chunk": 128, "eval_episodes": 8})

    torch.set_num_threads(min(2, torch.get_num_threads()))
    algo, policy = ALGOS[args.algo]
    envs = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=args.seed, env_kwargs={"reward_mode": "immediate"})
    model = algo(policy, envs, n_steps=64, batch_size=128, n_epochs=4, learning_rate=args.learning_rate,
                 gamma=1.0, gae_lambda=0.95, ent_coef=0.0, policy_kwargs={"model": "tiny"}, device="cpu",
                 seed=args.seed)
    base = load_causal_lm("tiny", device="cpu")
    curve = [{"env_steps": 0, "minutes": 0.0, **evaluate(model, base, args.eval_episodes, args.seed)}]
    print({k: v for k, v in curve[-1].items() if k != "samples"})
    start = time.time()
    while len(curve) == 1 or time.time() - start < args.minutes * 60:
        model.learn(args.chunk, reset_num_timesteps=False)
        point = {"env_steps": model.num_timesteps, "minutes": (time.time() - start) / 60}
        curve.append({**point, **evaluate(model, base, args.eval_episodes, args.seed)})
        print({k: v for k, v in curve[-1].items() if k != "samples"}, flush=True)
    gain = curve[-1]["test_score"] - curve[0]["test_score"]
    name = f"sb3_learning_{args.algo}"
    plot(curve, args.out / f"{name}.png",
         f"{'PPO' if args.algo == 'ppo' else 'MaskablePPO'} on Sentiment-v0 (tiny, 2 CPU cores)")
    write_json(args.out / f"{name}.json", {"benchmark": name, "env_id": ENV_ID, "settings": vars(args),
                                           "machine": machine(), "curve": curve, "score_gain": gain,
                                           "goal": 0.2, "goal_met": gain >= 0.2})
    print(f"test score {curve[0]['test_score']:.3f} -> {curve[-1]['test_score']:.3f} (gain {gain:+.3f}), "
          f"KL to base {curve[-1]['kl_to_base']:.3f}")


if __name__ == "__main__":
    main()
