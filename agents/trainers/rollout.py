"""The rollouts every trainer shares: one episode per env, sampled, then stepped through the env.

A ``Sampler`` samples the completions of the N envs' prompts (``HFSampler``: the policy with a
KV cache, like ``generate()``); then the envs step through them column by column, so every token
goes through the Gymnasium vector env and its immediate-reward wrappers, and their per-token
rewards come back. An env whose episode has ended keeps receiving (ignored) tokens until every env
is done: the batch stays rectangular, as in ``generate()``. The result is a ``Batch`` of
(prompt, completion) rows ready for one full forward.

A conversation env (``MultiTurnTextEnv``, whose observations carry ``policy_mask``) appends the
other side's reply when a turn ends, so ``ConversationRollout`` samples turn by turn instead
(``play_conversations``): its ``Batch`` rows are (opening, rest of the conversation), and
``completion_mask`` marks only the policy's tokens in the rest, so the other side's tokens are
context the loss, the entropy, the KL and the advantages never see. ``rollout_for`` picks one.

Example:
    >>> import gymnasium as gym, torch, textgym
    >>> from agents.trainers.rollout import Rollout
    >>> from textgym.models import load_causal_lm
    >>> from textgym.models.sampling import HFSampler, Sampling
    >>> envs = gym.make_vec("textgym/Arithmetic-v0", num_envs=4, reward_mode="immediate")
    >>> sampler = HFSampler(load_causal_lm("tiny", device="cpu"))
    >>> batch = Rollout(envs, Sampling()).collect(sampler, seeds=[0, 1, 2, 3],
    ...                                         generator=torch.Generator().manual_seed(0))
    >>> batch.ids.shape[0], batch.rewards.shape == batch.completion_mask.shape, len(batch.completions)
    (4, True, 4)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from textgym import CONVERSATION_NAMES
from textgym.models.sampling import HFSampler, Sampler, Sampling, env_prompts, play_conversations, sample_for
from textgym.rewards import ImplicitConfig, PotentialConfig, implicit, potential, train_implicit_reward, train_potential
from textgym.rewards.rollouts import Rollout as FinishedRollout
from textgym.tasks import TASKS, TRAINED_SOURCES


@dataclass
class Batch:
    """N finished episodes as left-padded prompt + right-padded completion rows. In a conversation
    the completion is the rest of it: the policy's turns and the other side's replies."""

    ids: torch.Tensor  # (N, P + T)
    mask: torch.Tensor  # (N, P + T): prompt tokens and the episode's own completion tokens
    completion_mask: torch.Tensor  # (N, T) float: 1 for the tokens the policy took (its actions)
    rewards: torch.Tensor  # (N, T): the env's per-token rewards (wrappers included)
    scores: torch.Tensor  # (N,): the task score of each episode
    ended_by_eos: torch.Tensor  # (N,) bool
    prompts: list[str]
    completions: list[str]
    seconds: float  # wall time of the rollout
    conversation: bool = False  # rows hold the other side's replies; GRPO and RLOO credit whole episodes

    @property
    def completion_tokens(self) -> int:
        return self.completion_mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """The policy's tokens (actions) per episode."""
        return self.completion_mask.sum(1)

    def minibatch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The ``rows``' ids and mask without the columns that are padding in all of them (prompt
        padding on the left, completion columns past their longest episode), and how many
        completion columns remain: the same sequences, for less compute in the update."""
        prompt_width = self.ids.shape[1] - self.completion_tokens
        mask = self.mask[rows]
        longest_prompt = int(mask[:, :prompt_width].sum(1).max())
        width = int(mask[:, prompt_width:].sum(1).max())
        columns = slice(prompt_width - longest_prompt, prompt_width + width)
        return self.ids[rows, columns], mask[:, columns], width

    def rollouts(self) -> list[FinishedRollout]:
        """Each single-turn episode as prompt and completion ids (no padding) with its score."""
        prompt_width = self.ids.shape[1] - self.completion_tokens
        ids, mask = self.ids.cpu().numpy(), self.mask.cpu().bool().numpy()
        return [FinishedRollout(row[:prompt_width][real[:prompt_width]], row[prompt_width:][real[prompt_width:]], score)
                for row, real, score in zip(ids, mask, self.scores.tolist())]


TASK_IDS = {task.env_id for task in TASKS.values()}
GAME_IDS = {f"textgym/{name}-v0" for name in CONVERSATION_NAMES}


def registered_ids() -> list[str]:
    """Every env id registered under the ``textgym/`` namespace."""
    return sorted(i for i in gym.registry if i.startswith("textgym/"))


def env_arguments(env_id: str, env_kwargs: dict | None = None, split: str | None = None,
                  reward_mode: str | None = None, sources: dict[str, str] | None = None) -> dict:
    """``env_kwargs`` plus ``split``, ``reward_mode`` and the trained ``sources`` (``reward_sources``),
    which only task ids take (other ids have no task score to shape; the games take ``split``); an
    unknown id is an error listing the known ones."""
    if env_id not in gym.registry:
        raise ValueError(f"unknown env id {env_id!r}; registered textgym ids are {registered_ids()}")
    kwargs = dict(env_kwargs or {})
    if env_id in GAME_IDS and split is not None:
        kwargs["split"] = split
    if env_id in TASK_IDS:
        kwargs |= {k: v for k, v in [("split", split), ("reward_mode", reward_mode)] if v is not None}
        kwargs |= sources or {}
    return kwargs


def make_envs(env_id: str, num_envs: int, env_kwargs: dict | None = None, split: str | None = None,
              reward_mode: str | None = None, sources: dict[str, str] | None = None):
    """``gym.make_vec(env_id, num_envs)`` with ``env_arguments``."""
    return gym.make_vec(env_id, num_envs=num_envs, **env_arguments(env_id, env_kwargs, split, reward_mode, sources))


SOURCE_TRAINERS = {  # env kwarg -> (how to train it, its config, the record that marks it complete)
    "potential": (train_potential, PotentialConfig, potential.RECORD),
    "implicit": (train_implicit_reward, ImplicitConfig, implicit.RECORD),
}


def reward_sources(config, progress: bool = False) -> dict[str, str]:
    """The trained source of ``config.reward_mode``, as env kwargs: ``{"potential": DIR}`` for
    "learned", ``{"implicit": DIR}`` for "implicit", nothing for the other modes. A source the config
    does not name is trained into ``OUT/<name>`` first, from rollouts of ``config.model``, once: a
    resumed run reuses it."""
    name = TRAINED_SOURCES.get(config.reward_mode)
    if name is None:
        return {}
    if getattr(config, name) is not None:
        return {name: getattr(config, name)}
    train, settings, record = SOURCE_TRAINERS[name]
    path = Path(config.out) / name
    if not (path / record).is_file():
        kwargs = env_arguments(config.env_id, config.env_kwargs, reward_mode="sparse")
        train(config.env_id, settings(model=config.model, seed=config.seed, device=config.device), progress=progress,
              **kwargs).save(path)
    return {name: str(path)}


class Rollout:
    """Drives a textgym vector env with a ``Sampler``'s completions, one column per step."""

    def __init__(self, envs, sampling: Sampling):
        self.envs, self.sampling = envs, sampling
        mdp = envs.unwrapped.mdp
        self.pad_id, self.tokenizer, self.length = mdp.pad_id, envs.unwrapped.tokenizer, mdp.length
        self.allowed = torch.from_numpy(mdp.action_mask)  # the env's action_masks(), for every row

    def collect(self, sampler: Sampler, seeds: list[int], generator: torch.Generator) -> Batch:
        """One episode per env, env ``i`` reset with ``seeds[i]`` (equal seeds: the same prompt)."""
        start = time.perf_counter()
        prompt_ids, prompt_mask, info = env_prompts(self.envs, seeds)
        tokens = sample_for(self.envs, sampler, prompt_ids, prompt_mask, self.sampling, generator).tokens
        device = tokens.device
        n, width = tokens.shape
        rewards = np.zeros((n, width), np.float32)
        taken = np.zeros((n, width), bool)
        scores, eos = np.zeros(n), np.zeros(n, bool)
        prompts, completions = [str(p) for p in info["prompt"]], [""] * n
        alive = np.ones(n, bool)
        for t, column in enumerate(tokens.T.cpu().numpy()):
            _, reward, terminated, truncated, info = self.envs.step(column)
            rewards[alive, t], taken[alive, t] = reward[alive], True
            ended = alive & (terminated | truncated)
            credited = info.get("_reward_redistribution")  # hindsight credit (AttentionCredit), when any
            for i in np.flatnonzero(ended):
                scores[i], completions[i], eos[i] = info["score"][i], info["completion"][i], terminated[i]
                if credited is not None and credited[i]:
                    rewards[i, : t + 1] += np.asarray(info["reward_redistribution"][i], np.float32)
            alive &= ~ended
            if not alive.any():
                break
        steps = int(taken.any(0).sum())
        completion_mask = torch.from_numpy(taken[:, :steps]).to(device)
        tokens = torch.where(completion_mask, tokens[:, :steps], self.pad_id)
        return Batch(
            ids=torch.cat([prompt_ids.to(device), tokens], dim=1),
            mask=torch.cat([prompt_mask.to(device), completion_mask.long()], dim=1),
            completion_mask=completion_mask.float(),
            rewards=torch.from_numpy(rewards[:, :steps]).to(device),
            scores=torch.from_numpy(scores).float().to(device),
            ended_by_eos=torch.from_numpy(eos).to(device),
            prompts=prompts,
            completions=completions,
            seconds=time.perf_counter() - start,
        )


class ConversationRollout:
    """Plays the conversations of a vector env's single ``MultiTurnTextEnv``s turn by turn
    (``play_conversations``): a vector env steps every env at once, while here each conversation
    waits for its own reply between turns.

    Example:
        >>> import gymnasium as gym, torch, textgym
        >>> from agents.trainers.rollout import ConversationRollout
        >>> from textgym.models import load_causal_lm
        >>> from textgym.models.sampling import HFSampler, Sampling
        >>> rollout = ConversationRollout(gym.make_vec("textgym/GuessNumber-v0", num_envs=2), Sampling())
        >>> batch = rollout.collect(HFSampler(load_causal_lm("tiny", device="cpu")), seeds=[0, 1],
        ...                         generator=torch.Generator().manual_seed(0))
        >>> bool((batch.lengths < batch.mask[:, -batch.completion_tokens:].sum(1)).all())  # replies too
        True
    """

    def __init__(self, envs, sampling: Sampling):
        if not isinstance(envs.unwrapped, gym.vector.SyncVectorEnv):
            raise ValueError(f"conversations are played through the single envs of a SyncVectorEnv, got "
                             f"{type(envs.unwrapped).__name__}; drop vectorization_mode from the env kwargs")
        self.envs, self.sampling = envs.unwrapped.envs, sampling
        first = self.envs[0].unwrapped
        self.pad_id, self.tokenizer, self.length = first.pad_id, first.tokenizer, first.length
        self.allowed = torch.from_numpy(first.action_masks().astype(bool))

    def collect(self, sampler: Sampler, seeds: list[int], generator: torch.Generator) -> Batch:
        """One conversation per env, env ``i`` reset with ``seeds[i]`` (equal seeds: the same game);
        the batch on ``generator``'s device."""
        start = time.perf_counter()
        played = play_conversations(sampler, self.envs, seeds, self.sampling, generator)
        openings = [int(c.opening["attention_mask"].sum()) for c in played]
        spans = [int(c.final["attention_mask"].sum()) - n for c, n in zip(played, openings)]
        n, width, rest = len(played), max(openings), max(spans)
        ids = np.full((n, width + rest), self.pad_id, np.int64)
        mask = np.zeros((n, width + rest), np.int64)
        actions = np.zeros((n, rest), np.float32)
        rewards = np.zeros((n, rest), np.float32)
        for i, (c, opening, span) in enumerate(zip(played, openings, spans)):
            row = slice(len(c.final["input_ids"]) - opening - span, None)  # the env right-aligns the conversation
            ids[i, width - opening : width + span] = c.final["input_ids"][row]
            mask[i, width - opening : width + span] = 1
            actions[i, :span] = c.final["policy_mask"][row][opening:]
            rewards[i, actions[i] == 1] = c.rewards
        device = generator.device  # the trainer's device
        completions = [self.tokenizer.decode(ids[i, width : width + span]) for i, span in enumerate(spans)]
        return Batch(
            ids=torch.from_numpy(ids).to(device),
            mask=torch.from_numpy(mask).to(device),
            completion_mask=torch.from_numpy(actions).to(device),
            rewards=torch.from_numpy(rewards).to(device),
            scores=torch.tensor([float(c.info["score"]) for c in played], device=device),
            ended_by_eos=torch.tensor([c.terminated for c in played], device=device),
            prompts=[self.tokenizer.decode(ids[i, width - opening : width]) for i, opening in enumerate(openings)],
            completions=completions,
            seconds=time.perf_counter() - start,
            conversation=True,
        )


def rollout_for(envs, sampling: Sampling) -> Rollout | ConversationRollout:
    """The rollout of the vector env ``envs``: turn by turn for conversations (observations with a
    ``policy_mask``), else one column of tokens per step."""
    conversation = "policy_mask" in envs.single_observation_space.spaces
    return (ConversationRollout if conversation else Rollout)(envs, sampling)


def evaluate(lm, env_id: str, env_kwargs: dict | None, episodes: int, sampling: Sampling, seed: int = 0,
             split: str = "test") -> list[dict]:
    """``episodes`` episodes of ``lm`` on the ``split`` prompts of ``env_id`` (seeded: the same prompts
    for every model); each a dict of prompt, completion and score."""
    envs = make_envs(env_id, episodes, env_kwargs, split=split)
    batch = rollout_for(envs, sampling).collect(HFSampler(lm), [seed + i for i in range(episodes)],
                                            torch.Generator(lm.device).manual_seed(seed))
    envs.close()
    return [{"prompt": p, "completion": c, "score": float(s)}
            for p, c, s in zip(batch.prompts, batch.completions, batch.scores.tolist())]
