"""``TextGenerationEnv``: text generation as a token-level Gymnasium MDP.

* state: the prompt plus the tokens chosen so far (left-padded ``input_ids`` + ``attention_mask``);
* action: the next token id, ``Discrete(len(tokenizer))``;
* ``terminated`` when EOS is chosen (if ``stop_on_eos``), ``truncated`` after ``max_new_tokens``;
* reward: 0 until the last step, then the scorer's score of the decoded completion.

The env never runs a policy model; it only appends tokens, so it is never a rollout's bottleneck.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from textgym.envs.core import TextGenerationConfig, TextMDP, check_render_mode

ObsType = dict[str, np.ndarray]


def only_row(columns: dict[str, list]) -> dict[str, Any]:
    """The info of a single env from the MDP's batch-of-one info columns."""
    return {key: column[0] for key, column in columns.items()}


class TextGenerationEnv(gym.Env[ObsType, int]):
    """Generate a completion for a prompt, one token per step.

    Args:
        render_mode: ``"ansi"`` (``render()`` returns the text) or ``"human"`` (prints each
            finished episode).
        **kwargs: the fields of ``TextGenerationConfig``: ``tokenizer``, ``prompts``, ``scorer``,
            ``max_prompt_tokens``, ``max_new_tokens``, ``stop_on_eos``, ``disallowed_token_ids``.

    Example:
        >>> import gymnasium as gym, textgym
        >>> env = gym.make("textgym/TextGeneration-v0")
        >>> obs, info = env.reset(seed=0, options={"prompt": "12 + 30 ="})
        >>> tok = env.unwrapped.tokenizer
        >>> for token in tok(" 42")["input_ids"] + [tok.eos_token_id]:
        ...     obs, reward, terminated, truncated, info = env.step(token)
        >>> terminated, info["completion"]
        (True, ' 42')
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.mdp = TextMDP(TextGenerationConfig.from_kwargs(type(self).__name__, kwargs))
        self.tokenizer = self.mdp.tokenizer
        self.observation_space = self.mdp.observation_space
        self.action_space = self.mdp.action_space
        self.render_mode = render_mode
        self._ids = np.zeros(self.mdp.length, np.int64)
        self._prompt = ""
        self._references = None
        self._prompt_len = 0
        self._steps = 0
        self._state = "unreset"  # "unreset" -> "running" -> "done" -> (reset) "running"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict]:
        super().reset(seed=seed)
        prompt = self.mdp.sample_prompt(self.np_random, options)
        self.mdp.prompt_row(prompt.ids, self._ids)
        self._prompt, self._references = prompt.text, prompt.references
        self._prompt_len, self._steps, self._state = len(prompt.ids), 0, "running"
        return self._observation(), only_row(self.mdp.reset_columns([prompt]))

    def step(self, action: int) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        if self._state != "running":
            raise ResetNeeded(
                "step() called before reset()" if self._state == "unreset"
                else "step() called after the episode ended; call reset() first"
            )
        token = self.mdp.check_action(action)
        ids = self._ids
        ids[:-1] = ids[1:]
        ids[-1] = token
        self._steps += 1
        terminated = self.mdp.stop_on_eos and token == self.mdp.eos_id
        truncated = not terminated and self._steps >= self.mdp.max_new_tokens
        observation = self._observation()
        if not (terminated or truncated):
            return observation, 0.0, False, False, {}
        self._state = "done"
        info = only_row(self.mdp.finish([self._prompt], [self._completion_ids()], [self._references]))
        if self.render_mode == "human":
            self.render()
        return observation, info["score"], terminated, truncated, info

    def _observation(self) -> ObsType:
        return {"input_ids": self._ids.copy(), "attention_mask": self.mdp.attention_mask(self._prompt_len + self._steps)}

    def _completion_ids(self) -> np.ndarray:
        return self._ids[self.mdp.length - self._steps :]

    def action_masks(self) -> np.ndarray:
        """Valid actions, shape ``(V,)``: every token but pad (unless pad is EOS) and disallowed ids."""
        return self.mdp.action_mask.copy()

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        text = self.mdp.render_text(self._prompt, self._completion_ids())
        if self.render_mode == "human":
            print(text)
            return None
        return text
