"""``TextGenerationVectorEnv``: N text-generation episodes stepped together in numpy.

It behaves exactly like ``SyncVectorEnv`` over N ``TextGenerationEnv`` (same seeds -> same
prompts, observations, rewards and infos) but appends all N tokens with a few array operations.
``gym.make_vec("textgym/...", num_envs=N)`` returns it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textgym.envs.core import TextGenerationConfig, TextMDP, check_render_mode
from textgym.envs.spaces import TokenBatchSpace

ObsType = dict[str, np.ndarray]


def _autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    """Accept the enum, its value ("NextStep") or its name in any case ("next_step")."""
    by_name = {m.name.lower(): m for m in AutoresetMode} | {m.value.lower(): m for m in AutoresetMode}
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str) and mode.lower() in by_name:
        return by_name[mode.lower()]
    raise ValueError(f"autoreset_mode must be one of {[m.name.lower() for m in AutoresetMode]}, got {mode!r}")


class TextGenerationVectorEnv(VectorEnv):
    """``num_envs`` token-level text-generation episodes in one batch.

    Takes ``num_envs``, ``autoreset_mode`` (``"next_step"``, the Gymnasium default, ``"same_step"``
    or ``"disabled"``), ``render_mode`` and the fields of ``TextGenerationConfig``, like
    ``TextGenerationEnv``.

    Example:
        >>> import gymnasium as gym, numpy as np, textgym
        >>> envs = gym.make_vec("textgym/TextGeneration-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs["input_ids"].shape, envs.action_masks().shape == (4, len(envs.unwrapped.tokenizer))
        ((4, 112), True)
        >>> eos = np.full(4, envs.unwrapped.tokenizer.eos_token_id)
        >>> obs, reward, terminated, truncated, info = envs.step(eos)
        >>> terminated.all(), info["_completion"].all()
        (np.True_, np.True_)
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi", "human"]}

    def __init__(
        self,
        num_envs: int,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **kwargs: Any,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.metadata = {**self.metadata, "autoreset_mode": _autoreset_mode(autoreset_mode)}
        self.autoreset_mode = self.metadata["autoreset_mode"]  # as gymnasium's own vector envs carry it
        self.mdp = TextMDP(TextGenerationConfig.from_kwargs(type(self).__name__, kwargs))
        self.tokenizer = self.mdp.tokenizer
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_observation_space = self.mdp.observation_space
        self.single_action_space = self.mdp.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = TokenBatchSpace(self.mdp.action_mask, self.num_envs)

        n, length = self.num_envs, self.mdp.length
        # Token rows live in a buffer twice as wide as an observation. Every row gains one column
        # per step (rows about to reset too), so one shared offset slides all windows at once and
        # appending is a single column write; the window moves back every ``length`` steps.
        self._buffer = np.zeros((n, 2 * length), np.int64)
        self._offset = 0
        self._lengths = np.zeros(n, np.int64)  # real tokens in each row: prompt + generated
        self._limits = np.zeros(n, np.int64)  # the length at which each episode is truncated
        self._prompts = [""] * n
        self._references: list = [None] * n
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._pending = np.zeros(0, np.int64)  # NEXT_STEP: envs that ended and reset on the next step
        self._needs_reset = np.ones(n, bool)  # never reset, or ended under DISABLED
        self._n_needing_reset = n  # its count as a Python int: step() checks it without a numpy call

    # --- reset ------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset every env, or those in ``options["reset_mask"]``; env ``i`` is seeded ``seed + i``."""
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        indices = np.arange(self.num_envs) if mask is None else self._reset_indices(mask)
        seeds = self._seeds(seed)
        for i in indices:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        infos = self._add_columns({}, self._reset_envs(indices, options), indices)
        self._pending = np.setdiff1d(self._pending, indices)
        self._needs_reset[indices] = False
        self._n_needing_reset = int(self._needs_reset.sum())
        return self._observation(), infos

    def _reset_indices(self, mask: Any) -> np.ndarray:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask!r}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one env")
        return np.flatnonzero(mask)

    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"seed must be an int or a list of {self.num_envs} seeds, got {len(seed)}: {seed!r}")
        return list(seed)

    def _reset_envs(self, indices: np.ndarray, options: dict[str, Any] | None) -> dict[str, list]:
        """Start new episodes in ``indices``; returns their reset-info columns."""
        window = self._window()
        prompts = [self.mdp.sample_prompt(self._rngs[i], options) for i in indices]
        for i, prompt in zip(indices, prompts):
            self.mdp.prompt_row(prompt.ids, window[i])
            self._prompts[i], self._references[i], self._lengths[i] = prompt.text, prompt.references, len(prompt.ids)
        self._limits[indices] = self._lengths[indices] + self.mdp.max_new_tokens
        return self.mdp.reset_columns(prompts)

    # --- step -------------------------------------------------------------------------------------

    def step(self, actions: Any) -> tuple[ObsType, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._n_needing_reset:
            raise ResetNeeded(
                f"envs {np.flatnonzero(self._needs_reset).tolist()} need reset() before step(): never reset, "
                "or ended under autoreset_mode='disabled' (reset them with options['reset_mask'])"
            )
        actions = self.mdp.check_actions(actions, self.num_envs)
        mode = self.metadata["autoreset_mode"]
        self._append(actions)
        terminated = actions == self.mdp.eos_id if self.mdp.stop_on_eos else np.zeros(self.num_envs, bool)
        at_limit = self._lengths >= self._limits
        infos: dict[str, Any] = {}
        if len(self._pending):  # NEXT_STEP: envs that ended last step only reset now
            terminated[self._pending] = at_limit[self._pending] = False
            infos = self._add_columns(infos, self._reset_envs(self._pending, None), self._pending)
            self._pending = self._pending[:0]
        truncated = at_limit & ~terminated
        rewards = np.zeros(self.num_envs)
        ended = terminated | at_limit
        if np.count_nonzero(ended):  # much cheaper than ended.any() on small arrays
            infos = self._end_episodes(np.flatnonzero(ended), rewards, infos, mode)
        return self._observation(), rewards, terminated, truncated, infos

    def _append(self, tokens: np.ndarray) -> None:
        end = self._offset + self.mdp.length
        if end == self._buffer.shape[1]:  # out of room: move the windows back to the start
            self._buffer[:, : self.mdp.length] = self._buffer[:, self._offset : end]
            self._offset, end = 0, self.mdp.length
        self._buffer[:, end] = tokens
        self._offset += 1
        self._lengths += 1

    def _end_episodes(self, done: np.ndarray, rewards: np.ndarray, infos: dict, mode: AutoresetMode) -> dict:
        """Decode and score the finished episodes in one batch, then autoreset as ``mode`` says."""
        ends = self.mdp.finish([self._prompts[i] for i in done], [self._completion_ids(i) for i in done],
                               [self._references[i] for i in done])
        rewards[done] = ends["score"]
        if self.render_mode == "human":
            print("\n".join(f"[{i}] {p}{c}" for i, p, c in zip(done, ends["prompt"], ends["completion"])))
        if mode == AutoresetMode.SAME_STEP:
            finals = {"final_obs": [self._env_observation(i) for i in done], "final_info": ends}
            infos = self._add_columns(infos, finals, done)
            return self._add_columns(infos, self._reset_envs(done, None), done)
        if mode == AutoresetMode.NEXT_STEP:
            self._pending = done
        else:
            self._needs_reset[done] = True
            self._n_needing_reset += len(done)
        return self._add_columns(infos, ends, done)

    def _add_columns(self, infos: dict[str, Any], columns: dict[str, Any], indices: np.ndarray) -> dict:
        """Add per-env values in Gymnasium's vector-info layout (as ``VectorEnv._add_info`` does),
        a column at a time: each key's batch array and ``_key`` mask are made once, not per env."""
        selected = np.zeros(self.num_envs, bool)
        selected[indices] = True
        for key, values in columns.items():
            if isinstance(values, dict):
                array = self._add_columns(infos.get(key, {}), values, indices)
            else:
                array = infos[key] if key in infos else self._info_array(key, values[0])
                if array.dtype == object:
                    for i, value in zip(indices, values):
                        array[i] = value
                else:
                    array[indices] = values
            mask = infos.get(f"_{key}")
            infos[key], infos[f"_{key}"] = array, selected.copy() if mask is None else mask | selected
        return infos

    def _info_array(self, key: str, value: Any) -> np.ndarray:
        """The batch array ``VectorEnv._add_info`` makes for ``value`` (``final_obs``: always objects)."""
        if key == "final_obs":
            return np.empty(self.num_envs, dtype=object)
        if type(value) in (int, float, bool) or isinstance(value, np.number):
            return np.zeros(self.num_envs, dtype=type(value))
        if isinstance(value, np.ndarray):
            return np.zeros((self.num_envs, *value.shape), dtype=value.dtype)
        return np.empty(self.num_envs, dtype=object)

    # --- observations -----------------------------------------------------------------------------

    def _window(self) -> np.ndarray:
        return self._buffer[:, self._offset : self._offset + self.mdp.length]

    def _completion_ids(self, i: int) -> np.ndarray:
        end = self._offset + self.mdp.length
        steps = self._lengths[i] - self._limits[i] + self.mdp.max_new_tokens
        return self._buffer[i, end - steps : end]

    def _observation(self) -> ObsType:
        return {"input_ids": self._window().copy(), "attention_mask": self.mdp.attention_mask(self._lengths)}

    def _env_observation(self, i: int) -> ObsType:
        return {"input_ids": self._window()[i].copy(), "attention_mask": self.mdp.attention_mask(self._lengths[i])}

    # --- masks and rendering ----------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Valid actions, shape ``(num_envs, V)``."""
        return np.broadcast_to(self.mdp.action_mask, (self.num_envs, self.mdp.vocab_size)).copy()

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        texts = tuple(self.mdp.render_text(self._prompts[i], self._completion_ids(i)) for i in range(self.num_envs))
        if self.render_mode == "human":
            print("\n".join(texts))
            return None
        return texts
