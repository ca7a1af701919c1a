"""Adapters that add ``TokenReward`` components to a single env or a vector env.

Both call the same components the same way; they differ only in how Gymnasium reports resets.
Each step's ``info["reward_components"]`` maps ``"task"`` (the env's own reward) and each
component's name to its weighted part, so the parts sum to the step's reward. When an episode
ends, components with credit that only the end reveals (``TokenReward.hindsight``) report it in
``info["reward_redistribution"]``: a list over the episode's tokens that sums to 0, for agents that
rewrite a whole episode's rewards (a list, as ``completion_ids`` is: episodes differ in length).

Normalizing and clipping are not rewritten here: wrap the result in gymnasium's
``NormalizeReward`` / ``ClipReward`` (``gymnasium.wrappers.vector`` for vector envs).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorWrapper

from textgym.wrappers.base import Episodes, TokenReward, Transition


def _bind(env, components: tuple[TokenReward, ...], num_slots: int) -> tuple[TokenReward, ...]:
    bad = [c for c in components if not isinstance(c, TokenReward)]
    if bad:
        raise TypeError(f"components must be TokenReward instances, got {bad!r}")
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ValueError(f"component names must differ, got {names}; set .name on one of them")
    layer = env
    while layer is not layer.unwrapped:
        if isinstance(layer, (TokenRewardWrapper, VectorTokenRewardWrapper)):
            raise ValueError("this env already has token rewards; pass all components to one wrapper")
        layer = layer.env
    mdp = getattr(env.unwrapped, "mdp", None)
    if mdp is None:
        raise TypeError(f"token rewards need a textgym env underneath, got {env.unwrapped!r}")
    for component in components:
        component.bind(mdp, num_slots)
    return components


def _redistribution(components: tuple[TokenReward, ...], transition: Transition) -> dict[int, list[float]]:
    """Row -> the weighted sum of the components' hindsight credit, for rows whose episode ended."""
    total: dict[int, np.ndarray] = {}
    for component in components:
        for row, credit in component.hindsight(transition).items():
            total[row] = total.get(row, 0.0) + component.weight * np.asarray(credit, dtype=np.float64)
    return {row: credit.tolist() for row, credit in total.items()}


class TokenRewardWrapper(gym.Wrapper):
    """Add per-token reward components to a single textgym env.

    Example:
        >>> import gymnasium as gym, textgym
        >>> from textgym.wrappers import LengthPenalty, MissingEOSPenalty, TokenRewardWrapper
        >>> env = TokenRewardWrapper(gym.make("textgym/TextGeneration-v0", max_new_tokens=2),
        ...                          LengthPenalty(0.1), MissingEOSPenalty(1.0))
        >>> _ = env.reset(seed=0)
        >>> _ = env.step(5)
        >>> obs, reward, terminated, truncated, info = env.step(5)
        >>> truncated, round(reward, 2), info["reward_components"]
        (True, -1.1, {'task': 0.0, 'length': -0.1, 'missing_eos': -1.0})
    """

    def __init__(self, env: gym.Env, *components: TokenReward):
        super().__init__(env)
        self.components = _bind(env, components, 1)
        self._slot = np.zeros(1, np.int64)
        # The episode as a batch of one, as components take it.
        self._prompts, self._references, self._steps = [""], None, np.zeros(1, np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._prompts = [info["prompt"]]
        self._references = [info["references"]] if "references" in info else None
        self._steps[0] = 0
        episodes = Episodes(self._slot, self._prompts, self._references, obs["input_ids"][None],
                            obs["attention_mask"][None])
        for component in self.components:
            component.start(episodes)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        transition = Transition(self._slot, self._prompts, self._references, obs["input_ids"][None],
                                obs["attention_mask"][None], self._steps.copy(), np.array([terminated]),
                                np.array([truncated]))
        total = float(reward)
        parts = {"task": total}
        for component in self.components:  # accumulate in the vector adapter's order: same floats
            parts[component.name] = float(component.weight * component.rewards(transition)[0])
            total += parts[component.name]
        info = {**info, "reward_components": parts}
        redistribution = _redistribution(self.components, transition).get(0)
        if redistribution is not None:
            info["reward_redistribution"] = redistribution
        return obs, total, terminated, truncated, info


class VectorTokenRewardWrapper(VectorWrapper):
    """Add per-token reward components to a textgym vector env (any autoreset mode).

    Example:
        >>> import gymnasium as gym, numpy as np, textgym
        >>> from textgym.wrappers import LengthPenalty, VectorTokenRewardWrapper
        >>> envs = VectorTokenRewardWrapper(gym.make_vec("textgym/TextGeneration-v0", num_envs=3), LengthPenalty(0.1))
        >>> _ = envs.reset(seed=0)
        >>> obs, rewards, terminated, truncated, info = envs.step(np.array([5, 6, 7]))
        >>> rewards, info["reward_components"]["length"]
        (array([-0.1, -0.1, -0.1]), array([-0.1, -0.1, -0.1]))
    """

    def __init__(self, env: gym.vector.VectorEnv, *components: TokenReward):
        super().__init__(env)
        self.components = _bind(env, components, env.num_envs)
        self.autoreset_mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        n = env.num_envs
        self._prompts, self._references = [""] * n, [None] * n
        self._steps = np.zeros(n, np.int64)
        self._restart = np.zeros(n, bool)  # NEXT_STEP: envs that ended and reset on this step

    def reset(self, *, seed=None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = (options or {}).get("reset_mask")
        slots = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        self._start(slots, obs, info)
        self._restart[slots] = False
        return obs, info

    def _start(self, slots: np.ndarray, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        for i in slots:
            self._prompts[i] = info["prompt"][i]
            self._references[i] = info["references"][i] if "references" in info else None
        self._steps[slots] = 0
        references = [self._references[i] for i in slots] if "references" in info else None
        episodes = Episodes(slots, [self._prompts[i] for i in slots], references,
                            obs["input_ids"][slots], obs["attention_mask"][slots])
        for component in self.components:
            component.start(episodes)

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64).copy()
        done = terminated | truncated
        stepped = np.flatnonzero(~self._restart)  # under NEXT_STEP, restarting envs took no action
        self._steps[stepped] += 1
        rows = self._rows_after_step(obs, info, stepped, done)
        has_refs = any(self._references[i] is not None for i in stepped)
        transition = Transition(
            stepped, [self._prompts[i] for i in stepped], [self._references[i] for i in stepped] if has_refs else None,
            rows["input_ids"], rows["attention_mask"], self._steps[stepped], terminated[stepped], truncated[stepped],
        )
        parts = {"task": rewards.copy()}
        for component in self.components:
            part = np.zeros(self.num_envs)
            part[stepped] = component.weight * component.rewards(transition)
            parts[component.name] = part
            rewards += part
        info = self._report(info, parts, done)
        self._report_redistribution(info, _redistribution(self.components, transition), stepped)
        restarting = np.flatnonzero(self._restart)
        if len(restarting):
            self._start(restarting, obs, info)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            self._start(np.flatnonzero(done), obs, info)
        self._restart = done if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros(self.num_envs, bool)
        return obs, rewards, terminated, truncated, info

    def _report(self, info: dict[str, Any], parts: dict[str, np.ndarray], done: np.ndarray) -> dict[str, Any]:
        """Put the parts where ``SyncVectorEnv`` over single-env adapters would: per stepped env,
        and under SAME_STEP a finished env's parts in ``final_info`` (its top level is a reset)."""
        def entry(where: np.ndarray) -> dict[str, np.ndarray]:
            values = {name: np.where(where, part, 0.0) for name, part in parts.items()}
            return {**values, **{f"_{name}": where.copy() for name in parts}}

        info = dict(info)
        stepped = ~self._restart
        top = stepped & ~done if self.autoreset_mode == AutoresetMode.SAME_STEP else stepped
        if top.any():
            info["reward_components"], info["_reward_components"] = entry(top), top
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            info["final_info"] = {**info["final_info"], "reward_components": entry(done), "_reward_components": done}
        return info

    def _report_redistribution(self, info: dict[str, Any], credit: dict[int, list[float]], stepped: np.ndarray) -> None:
        """Finished envs' hindsight credit, where their end-of-episode infos are (``final_info`` under SAME_STEP)."""
        if not credit:
            return
        values, where = np.empty(self.num_envs, dtype=object), np.zeros(self.num_envs, bool)
        for row, value in credit.items():
            values[stepped[row]], where[stepped[row]] = value, True
        target = info["final_info"] if self.autoreset_mode == AutoresetMode.SAME_STEP else info
        target["reward_redistribution"], target["_reward_redistribution"] = values, where

    def _rows_after_step(self, obs, info, stepped: np.ndarray, done: np.ndarray) -> dict[str, np.ndarray]:
        """The stepped envs' rows after their token; under SAME_STEP a finished env's row is its
        ``final_obs``, since ``obs`` already shows the next episode."""
        rows = {key: obs[key][stepped].copy() for key in ("input_ids", "attention_mask")}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            for j, i in enumerate(stepped):
                if done[i]:
                    for key in rows:
                        rows[key][j] = info["final_obs"][i][key]
        return rows
