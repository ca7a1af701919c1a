"""What the single and the vector env share: the tokenized prompt set, spaces, checks and scoring.

Both envs hold token ids in a left-padded row of length ``L = max_prompt_tokens + max_new_tokens``:
real tokens are right-aligned, so appending a token shifts the row left by one and the newest
token is always in the last column. ``attention_mask`` marks the real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from textgym.data import prompt_file
from textgym.envs.decoding import CompletionDecoder
from textgym.envs.prompts import Message, PromptSource, chat_ids, check_messages, load_prompts, render_chat
from textgym.envs.spaces import TokenSpace
from textgym.models import load_tokenizer
from textgym.scorers.base import Scorer, run_scorer, scorer_name

def unexpected_arguments(owner: str, unknown: Sequence[str], valid: Sequence[str]) -> TypeError:
    """Python's own wording (clients such as TorchRL match on it), plus the valid names."""
    what = f"an unexpected keyword argument {unknown[0]!r}" if len(unknown) == 1 else (
        f"unexpected keyword arguments {list(unknown)}")
    return TypeError(f"{owner} got {what}; valid arguments are {list(valid)}")


class RenderModeError(ValueError, TypeError):
    """An unsupported ``render_mode``. It is a TypeError too because stable-baselines3 makes envs
    with ``render_mode="rgb_array"`` and, on TypeError, makes them again without one."""


def check_render_mode(render_mode: str | None, allowed: list[str]) -> None:
    if render_mode is not None and render_mode not in allowed:
        raise RenderModeError(f"render_mode must be one of {allowed} or None, got {render_mode!r}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


@dataclass(frozen=True)
class TextGenerationConfig:
    """The arguments of ``TextGenerationEnv`` and ``TextGenerationVectorEnv`` (one set of defaults).

    Attributes:
        tokenizer: ``"tiny"``, an HF hub id, a local path, or a ``PreTrainedTokenizerBase``.
        prompts: a list of strings or of conversations (lists of ``{"role", "content"}`` messages,
            rendered with the tokenizer's chat template), a ``.txt`` / ``.jsonl`` / ``.csv`` path, or a
            ``datasets.Dataset``; by default the shipped ``text_generation`` prompt set.
        scorer: optional batched ``(prompts, completions) -> scores``; the episode's final reward.
        max_prompt_tokens: longer prompts keep their last tokens.
        max_new_tokens: the episode is truncated after this many actions.
        stop_on_eos: whether choosing EOS terminates the episode.
        disallowed_token_ids: token ids that ``action_masks()`` marks invalid (pad always is,
            unless pad is EOS).
        allow_masked_actions: whether ``step`` accepts an id that ``action_masks()`` marks invalid.
            By default it raises ``ValueError``: a policy that writes pad or a forbidden token has a
            bug (the action space's ``sample()`` draws valid ids only).
        references: optional, one per prompt (a string or a list of strings): what
            reference-based scorers compare against. Episodes carry them in their reset info.
    """

    tokenizer: str | PreTrainedTokenizerBase = "tiny"
    prompts: PromptSource = field(default_factory=lambda: str(prompt_file("text_generation")))
    scorer: Scorer | None = None
    max_prompt_tokens: int = 64
    max_new_tokens: int = 48
    stop_on_eos: bool = True
    disallowed_token_ids: Sequence[int] = ()
    allow_masked_actions: bool = False
    references: Sequence[str | Sequence[str]] | None = None

    @classmethod
    def from_kwargs(cls, owner: str, kwargs: dict[str, Any]) -> TextGenerationConfig:
        """Build from an env's keyword arguments; unknown names get an error listing the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise unexpected_arguments(owner, unknown, names)
        return cls(**kwargs)


class Prompt(NamedTuple):
    text: str
    ids: np.ndarray
    truncated: bool
    references: Any  # a string, a list of strings, or None


class TextMDP:
    """The token-level text-generation MDP of a ``TextGenerationConfig``, without episode state."""

    def __init__(self, config: TextGenerationConfig):
        self.max_prompt_tokens = _positive_int("max_prompt_tokens", config.max_prompt_tokens)
        self.max_new_tokens = _positive_int("max_new_tokens", config.max_new_tokens)
        scorer, tokenizer = config.scorer, config.tokenizer
        if scorer is not None and not callable(scorer):
            raise TypeError(f"scorer must be callable (prompts, completions) -> scores, got {scorer!r}")
        self.tokenizer = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else load_tokenizer(tokenizer)
        self.scorer = scorer
        for name in ("stop_on_eos", "allow_masked_actions"):
            if not isinstance(getattr(config, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(config, name)!r}")
        self.stop_on_eos, self.allow_masked_actions = bool(config.stop_on_eos), bool(config.allow_masked_actions)
        self.vocab_size = len(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError(f"tokenizer {self.tokenizer.name_or_path!r} has no EOS token; episodes end at EOS")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self.length = self.max_prompt_tokens + self.max_new_tokens
        self.decode = CompletionDecoder(self.tokenizer)

        sources = load_prompts(config.prompts)
        self.prompts = [p if isinstance(p, str) else render_chat(self.tokenizer, p) for p in sources]
        self.references = None if config.references is None else list(config.references)
        if self.references is not None and len(self.references) != len(self.prompts):
            raise ValueError(f"got {len(self.references)} references for {len(self.prompts)} prompts; "
                             "expected one (a string or a list of strings) per prompt")
        if getattr(scorer, "needs_references", False) and self.references is None:
            raise ValueError(f"scorer {scorer_name(scorer)} compares against references; pass references=[...]")
        encoded = [self.encode(p) for p in sources]
        self.prompt_ids = [ids for ids, _ in encoded]
        self.prompt_truncated = [cut for _, cut in encoded]

        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (self.length,), np.int64),
                "attention_mask": spaces.Box(0, 1, (self.length,), np.int64),
            }
        )
        self.action_mask = self._action_mask(config.disallowed_token_ids)
        self.action_space = TokenSpace(self.action_mask)
        self.columns = np.arange(self.length)
        self.pad_row = np.full(self.length, self.pad_id, np.int64)

    def attention_mask(self, lengths: np.ndarray | int) -> np.ndarray:
        """The attention mask of rows holding ``lengths`` real tokens (right-aligned): one row per
        length. Computed, not looked up: a table of every length grows with the square of ``L``."""
        return (self.columns >= self.length - np.asarray(lengths)[..., None]).astype(np.int64)

    def _action_mask(self, disallowed: Sequence[int]) -> np.ndarray:
        if isinstance(disallowed, (str, bytes)) or not isinstance(disallowed, (Sequence, np.ndarray, set, frozenset)):
            raise TypeError(f"disallowed_token_ids must be a list of token ids, got {disallowed!r}")
        mask = np.ones(self.vocab_size, bool)
        bad = [t for t in disallowed if not (isinstance(t, (int, np.integer)) and 0 <= t < self.vocab_size)]
        if bad:
            raise ValueError(f"disallowed_token_ids must be ids in [0, {self.vocab_size}), got {bad}")
        mask[list(disallowed)] = False
        if self.pad_id != self.eos_id:  # with pad == eos, masking pad would forbid ending the episode
            mask[self.pad_id] = False
        if self.stop_on_eos and not mask[self.eos_id]:
            raise ValueError(f"disallowed_token_ids includes EOS ({self.eos_id}); episodes could only be truncated")
        return mask

    # --- prompts --------------------------------------------------------------------------------

    def encode(self, prompt: str | list[Message]) -> tuple[np.ndarray, bool]:
        """Token ids of ``prompt`` (its last ``max_prompt_tokens``) and whether it was truncated.

        A string's special-token strings (``"<|endoftext|>"`` typed by a user) are text, not EOS;
        a conversation's role markers come from the chat template, as special tokens.
        """
        if isinstance(prompt, list):
            ids = chat_ids(self.tokenizer, prompt)
        elif isinstance(prompt, str):
            ids = self.tokenizer(prompt, split_special_tokens=True)["input_ids"]
        else:
            raise TypeError(f"a prompt must be a str or a list of messages, got {type(prompt).__name__}: {prompt!r}")
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens; expected at least one token")
        truncated = len(ids) > self.max_prompt_tokens
        return np.asarray(ids[-self.max_prompt_tokens :], np.int64), truncated

    def prompt_row(self, prompt_ids: np.ndarray, out: np.ndarray) -> None:
        """Write the left-padded observation row of a fresh episode into ``out``."""
        out[:] = self.pad_row
        out[-len(prompt_ids) :] = prompt_ids

    def sample_prompt(self, rng: np.random.Generator, options: dict[str, Any] | None) -> Prompt:
        """The episode's prompt: ``options["prompt"]`` (and ``"references"``) if given, else drawn
        uniformly with ``rng``."""
        if not options:
            i = int(rng.integers(len(self.prompts)))
            references = None if self.references is None else self.references[i]
            return Prompt(self.prompts[i], self.prompt_ids[i], self.prompt_truncated[i], references)
        unknown = set(options) - {"prompt", "references"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'prompt' and 'references'")
        if "prompt" not in options:
            raise ValueError("reset options give 'references' without the 'prompt' they belong to")
        if self.references is not None and "references" not in options:
            raise ValueError("this env's prompts have references; pass options={'prompt': ..., 'references': ...}")
        prompt = options["prompt"]
        if isinstance(prompt, list):
            prompt = check_messages(prompt)
        ids, truncated = self.encode(prompt)
        text = prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)
        return Prompt(text, ids, truncated, options.get("references"))

    def reset_columns(self, prompts: list[Prompt]) -> dict[str, list]:
        """Reset-info columns of new episodes; ``"references"`` only when the prompts have them."""
        columns = {"prompt": [p.text for p in prompts], "prompt_truncated": [p.truncated for p in prompts]}
        if prompts[0].references is not None:  # one reset's prompts all come from one source
            columns["references"] = [p.references for p in prompts]
        return columns

    # --- actions --------------------------------------------------------------------------------

    def action_error(self, action: Any) -> Exception:
        shape = getattr(action, "shape", None)
        what = f"{type(action).__name__}{'' if shape is None else f' of shape {shape}'}: {action!r}"
        integer_array = isinstance(action, np.ndarray) and action.dtype.kind in "iu"
        if isinstance(action, (bool, np.bool_)) or not (isinstance(action, (int, np.integer)) or integer_array):
            return TypeError(f"action must be an integer token id in [0, {self.vocab_size}), got {what}")
        if shape not in (None, ()):
            return ValueError(f"action must be a scalar token id, got {what}")
        return ValueError(f"action must be a token id in [0, {self.vocab_size}), got {what}")

    def check_action(self, action: Any) -> int:
        """Validate one action (a Python int, a numpy integer or a 0-d integer array)."""
        if isinstance(action, (bool, np.bool_)):
            raise self.action_error(action)
        try:
            token = action.__index__()
        except (AttributeError, TypeError):
            raise self.action_error(action) from None
        if not 0 <= token < self.vocab_size:
            raise self.action_error(action)
        if not (self.allow_masked_actions or self.action_mask[token]):
            raise self.masked_error([token])
        return token

    def masked_error(self, tokens: list[int]) -> ValueError:
        names = ", ".join(f"{t} ({self.tokenizer.convert_ids_to_tokens(t)!r})" for t in tokens)
        return ValueError(f"action {names} is masked by action_masks() (pad, or in disallowed_token_ids); "
                          "sample with the mask, or build the env with allow_masked_actions=True")

    def check_actions(self, actions: Any, num_envs: int) -> np.ndarray:
        """Validate a batch of actions: integer ids in [0, V), shape ``(num_envs,)``."""
        if type(actions) is np.ndarray and actions.dtype == np.int64 and actions.shape == (num_envs,):
            if np.count_nonzero(actions.view(np.uint64) >= self.vocab_size):  # negatives wrap to huge values
                raise ValueError(f"actions must be token ids in [0, {self.vocab_size}), got {actions!r}")
            if not self.allow_masked_actions and not self.action_mask[actions].all():
                raise self.masked_error(sorted(set(actions[~self.action_mask[actions]].tolist())))
            return actions
        array = np.asarray(actions)
        if array.shape != (num_envs,):
            raise ValueError(f"actions must have shape ({num_envs},), got shape {array.shape}: {actions!r}")
        if array.dtype.kind not in "iu":
            raise TypeError(f"actions must be integer token ids, got dtype {array.dtype}: {actions!r}")
        return self.check_actions(array.astype(np.int64), num_envs)

    # --- episode end ----------------------------------------------------------------------------

    def scores(self, prompts: list[str], completions: list[str], references: list | None = None) -> np.ndarray:
        """Run the scorer (with references, if it takes them) and insist on one finite float each."""
        if self.scorer is None:
            return np.zeros(len(completions))
        return run_scorer(self.scorer, prompts, completions, references)

    def finish(self, prompts: list[str], completion_ids: list[np.ndarray], references: list | None = None
               ) -> dict[str, list]:
        """End-of-episode info columns (decoded once here, never per step), scored in one batch.

        ``completion_ids`` become lists, not arrays: completions differ in length, and Gymnasium's
        vector info batching needs same-shaped arrays.
        """
        completions = self.decode(completion_ids)
        return {
            "prompt": prompts,
            "completion": completions,
            "completion_ids": [ids.tolist() for ids in completion_ids],
            "score": self.scores(prompts, completions, references).tolist(),
        }

    def render_text(self, prompt: str, generated: np.ndarray) -> str:
        return prompt + self.tokenizer.decode(generated.tolist(), skip_special_tokens=False)
