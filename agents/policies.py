"""An LLM actor-critic for *stock* stable-baselines3 PPO and sb3-contrib MaskablePPO.

The actor is a causal LM: its logits at the last (newest) position are the action distribution
over the vocabulary. The critic is a linear value head on the LM's last hidden state (a shared
trunk). Only SB3's hooks are overridden (``forward``, ``evaluate_actions``, ``get_distribution``,
``predict_values``); nothing in SB3 is patched.

SB3 calls the policy once per env step with full observations. Re-running the whole sequence each
time costs O(L²) per episode, so during rollouts (no gradients) the policy keeps a per-env KV
cache keyed on the token prefix: when an observation extends the env's cached row by exactly one
token, only that token runs; any other row (a reset, an autoreset, an evaluation call) is run in
full and refreshes its slot. Training (``evaluate_actions``) runs batched full forwards. The caches
are dropped whenever SB3 switches training mode, so they never outlive the weights they came from.

Example:
    >>> from stable_baselines3 import PPO
    >>> from agents import LLMActorCriticPolicy
    >>> model = PPO(LLMActorCriticPolicy, "textgym/Sentiment-v0", n_steps=16, batch_size=16, n_epochs=1,
    ...             policy_kwargs={"model": "tiny"}, device="cpu")
    >>> _ = model.learn(16)
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_model, save_model
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.lm import apply_lora, chunked_logprobs, hidden_states, load_trunk, valid_actions, value_head
from textgym.models.cache import RowCache, extends_by_one, positions
from textgym.models.sampling import action_logits, sample_categorical

OBS_KEYS = ("attention_mask", "input_ids")
# A conversation's observations also mark the policy's own tokens. Every SB3 step is a policy
# token, so the policy reads the row and ignores the mark.
CONVERSATION_KEYS = ("attention_mask", "input_ids", "policy_mask")


def has_textgym_keys(keys) -> bool:
    return sorted(keys) in (list(OBS_KEYS), list(CONVERSATION_KEYS))


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"an LLM policy chooses tokens: it needs a Discrete action space, got {action_space}")
    if not isinstance(observation_space, spaces.Dict) or not has_textgym_keys(observation_space.spaces):
        raise ValueError(f"an LLM policy reads textgym observations, Dict with keys {list(OBS_KEYS)} (and "
                         f"'policy_mask' in a conversation); got {observation_space}")
    shapes = {key: observation_space[key].shape for key in OBS_KEYS}
    if len(set(shapes.values())) != 1 or len(shapes["input_ids"]) != 1:
        raise ValueError(f"input_ids and attention_mask must be 1-D and of one length, got shapes {shapes}")


class _LLMActorCritic:
    """What both policies share: the LM, the value head, the prefix caches and the hooks."""

    def __init__(self, observation_space, action_space, lr_schedule, model: str = "tiny", lora: Any = None,
                 value_model: str | None = None, temperature: float = 1.0, dtype: str | None = None,
                 cache: bool = True, **kwargs):
        check_spaces(observation_space, action_space)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.lm_name, self.lora, self.temperature, self.lm_dtype = model, lora, float(temperature), dtype
        self.value_model, self.cache = value_model, bool(cache)
        kwargs.setdefault("ortho_init", False)  # SB3's orthogonal init is for fresh MLPs; the LM is pretrained
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        vocab = int(self.action_space.n)
        dtype = getattr(torch, self.lm_dtype) if isinstance(self.lm_dtype, str) else self.lm_dtype
        self.lm, tokenizer = load_trunk(self.lm_name, vocab, dtype)
        # Pad is never a valid action; stock PPO has no action mask to say so.
        self.allowed = valid_actions(tokenizer)
        if self.lora is not None:
            self.lm = apply_lora(self.lm, self.lora)
        # The critic reads the actor's trunk unless a separate value model is asked for.
        self.critic_lm = None if self.value_model is None else load_trunk(self.value_model, vocab, dtype)[0]
        self.length = self.observation_space["input_ids"].shape[0]
        self.value_head = value_head((self.critic_lm or self.lm).config.hidden_size)
        self._caches: dict[int, tuple[list[RowCache], torch.Tensor, torch.Tensor]] = {}
        options = dict(self.optimizer_kwargs)
        if self.optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
            # One fused op for all parameters: SB3's default Adam loops over them in Python on CPU
            # (7% of an update of the embedded model).
            options.setdefault("fused", True)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **options)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "model": self.lm_name, "lora": self.lora,
                "value_model": self.value_model, "temperature": self.temperature, "dtype": self.lm_dtype,
                "cache": self.cache}

    def _trunks(self) -> list:
        """The actor's LM, then the critic's when it is separate: logits come from the first,
        the value head reads the last one's hidden state."""
        return [self.lm] if self.critic_lm is None else [self.lm, self.critic_lm]

    def set_training_mode(self, mode: bool) -> None:
        self._caches.clear()  # SB3 switches modes around every update: cached KV would be stale
        super().set_training_mode(mode)

    # --- the LM on observations ---------------------------------------------------------------

    def _tokens(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(obs, dict) or not has_textgym_keys(obs):
            raise ValueError(f"expected observations with keys {list(OBS_KEYS)}, got {type(obs).__name__} "
                             f"{sorted(obs) if isinstance(obs, dict) else ''}")
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()  # SB3's buffers store floats
        if ids.shape != mask.shape or ids.dim() != 2 or ids.shape[1] != self.length:
            raise ValueError(f"expected input_ids and attention_mask of shape (batch, {self.length}), "
                             f"got {tuple(ids.shape)} and {tuple(mask.shape)}")
        return ids, mask

    def _head(self, logits: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = action_logits(logits, self.action_space.n, self.temperature, self.allowed)
        return logits, self.value_head(hidden.to(self.value_head.weight.dtype))

    def _full_forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [last_outputs(trunk, ids, mask) for trunk in self._trunks()]
        return self._head(outs[0][0], outs[-1][1])

    @torch.no_grad()
    def _cached_forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[0]
        if n not in self._caches:
            caches = [RowCache(trunk, n, self.length, pad_id=0) for trunk in self._trunks()]
            outs = [cache.restart(torch.arange(n), ids, mask) for cache in caches]
        else:
            caches, last_ids, last_mask = self._caches[n]
            redo = torch.nonzero(~extends_by_one(last_ids, last_mask, ids, mask)).flatten()
            outs = [advance_or_restart(cache, ids, mask, redo) for cache in caches]
        self._caches[n] = (caches, ids.clone(), mask.clone())
        return self._head(outs[0][0], outs[-1][1])

    def _logits_and_values(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self._tokens(obs)
        if torch.is_grad_enabled() or not self.cache:
            return self._full_forward(ids, mask)
        return self._cached_forward(ids, mask)

    # --- SB3's hooks --------------------------------------------------------------------------

    def _distribution(self, logits: torch.Tensor, action_masks=None):
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            distribution.apply_masking(action_masks)
        return distribution

    @staticmethod
    def _actions(distribution, deterministic: bool) -> torch.Tensor:
        """SB3's ``get_actions``, but sampled by inverse CDF: torch's ``Categorical.sample`` is
        ``multinomial``, which on CPU costs more than a cached LM step (``textgym.models.sampling``)."""
        if deterministic:
            return distribution.mode()
        return sample_categorical(distribution.distribution.probs)

    def forward(self, obs, deterministic: bool = False, action_masks=None):
        logits, values = self._logits_and_values(obs)
        distribution = self._distribution(logits, action_masks)
        actions = self._actions(distribution, deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs, actions: torch.Tensor, action_masks=None):
        """Values, log-probs and entropies of a training minibatch; the LM head runs in chunks
        (``agents.lm.chunked_logprobs``), so the rows' vocabulary-sized logits are never all held."""
        ids, mask = self._tokens(obs)
        hidden = self._grouped_hidden(ids, mask) if self.cache else [
            hidden_states(trunk, ids, mask)[:, -1] for trunk in self._trunks()]
        masks = None if action_masks is None else torch.as_tensor(action_masks, device=ids.device).bool()

        def cut(logits: torch.Tensor, rows: slice) -> torch.Tensor:
            allowed = self.allowed if masks is None else masks[rows] & self.allowed.to(masks.device)
            return action_logits(logits, self.action_space.n, self.temperature, allowed)

        logprobs, entropy = chunked_logprobs(hidden[0], self.lm.get_output_embeddings(), actions.long().flatten(), cut)
        return self.value_head(hidden[-1].to(self.value_head.weight.dtype)), logprobs, entropy

    def _grouped_hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Each trunk's last hidden state at every row's end, from one forward per *root*: a row that
        no other row of the batch extends. A minibatch holds many steps of one episode, each a prefix of the
        latest, and causal attention makes a prefix's outputs those of the longer row at the
        prefix's last position; so far fewer sequences run, forward and backward."""
        lengths = mask.sum(-1)
        start = mask.shape[1] - lengths  # left padding: row i's tokens are ids[i, start_i:]
        left = left_align(ids, mask)  # real tokens first, so prefixes line up from column 0
        root_of = torch.full_like(lengths, -1)
        roots = []
        for row in torch.argsort(lengths, descending=True).tolist():
            if root_of[row] >= 0:
                continue
            shared = (left == left[row]).long().cumprod(dim=1).sum(dim=1)  # common prefix with `row`
            covered = (root_of < 0) & (shared >= lengths) & (lengths <= lengths[row])
            root_of[covered] = len(roots)
            roots.append(row)
        roots = torch.tensor(roots, device=ids.device)
        first = int(start[roots].min())  # columns left of every root's first token are padding: skip them
        root_ids, root_mask = ids[roots, first:], mask[roots, first:]
        # Row i ends at its root's column start_root + length_i - 1.
        column = start[roots][root_of] + lengths - 1 - first
        return [hidden_states(trunk, root_ids, root_mask)[root_of, column] for trunk in self._trunks()]  # (rows, H)

    def get_distribution(self, obs, action_masks=None):
        return self._distribution(self._logits_and_values(obs)[0], action_masks)

    def predict_values(self, obs) -> torch.Tensor:
        return self._logits_and_values(obs)[1]

    def _predict(self, observation, deterministic: bool = False, action_masks=None) -> torch.Tensor:
        return self._actions(self.get_distribution(observation, action_masks), deterministic)


def last_outputs(lm, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and last hidden state at each row's final position (a full forward)."""
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True,
             logits_to_keep=1)
    return out.logits[:, -1], out.hidden_states[-1][:, -1]


def advance_or_restart(cache: RowCache, ids: torch.Tensor, mask: torch.Tensor, redo: torch.Tensor):
    """One token for the rows that extend their cached prefix, a full run for the ``redo`` rows."""
    if len(redo) == len(ids):
        return cache.restart(redo, ids, mask)
    logits, hidden = cache.advance(ids[:, -1])
    if len(redo):
        logits[redo], hidden[redo] = cache.restart(redo, ids[redo], mask[redo])
    return logits, hidden


def left_align(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Move each left-padded row's real tokens to the front (pads, as -1, after them)."""
    order = torch.argsort(1 - mask, dim=1, stable=True)  # real tokens (mask 1) first, in order
    return torch.where(mask.gather(1, order).bool(), ids.gather(1, order), torch.full_like(ids, -1))


def save(model, path: str | Path) -> Path:
    """Save an SB3 model with an LLM policy as ``<path>.zip`` (SB3's own: hyperparameters,
    optimizer; stock ``PPO.load`` reads it) and the policy's weights in safetensors beside it,
    ``<path>.safetensors``, which ``agents.load`` takes the weights from.

    Example:
        >>> import tempfile
        >>> from stable_baselines3 import PPO
        >>> import agents
        >>> model = PPO(agents.LLMActorCriticPolicy, "textgym/Arithmetic-v0", n_steps=8, batch_size=8, device="cpu")
        >>> path = agents.save(model, tempfile.mkdtemp() + "/ppo")
        >>> sorted(p.name for p in path.parent.iterdir())
        ['ppo.safetensors', 'ppo.zip']
        >>> type(agents.load(PPO, path)).__name__
        'PPO'
    """
    path = Path(path).with_suffix("")
    model.save(path.with_suffix(".zip"))
    save_model(model.policy, str(path.with_suffix(".safetensors")))  # tied weights are stored once
    return path


def load(algo_class, path: str | Path, env=None, device: str = "auto", **kwargs):
    """Load what ``save`` wrote: ``algo_class.load`` of the zip, then the policy's weights from the
    safetensors file (a missing or mismatched tensor is an error).

    Nothing in the zip is unpickled: SB3 pickles the policy class, the spaces, the rollout buffer
    class, the schedules and the last rollout's observations into it, and unpickling a file runs
    whatever code it names. Each such entry is rebuilt here instead (``custom_objects``): the policy
    and buffer classes from ``algo_class``, the spaces from ``env`` (or from the zip's readable
    description of them), the schedules from their stored values; the last rollout's state is left
    for ``learn`` to start afresh. An entry that cannot be rebuilt is an error naming it;
    pass it in ``custom_objects``.
    """
    path = Path(path).with_suffix("")
    weights, archive = path.with_suffix(".safetensors"), path.with_suffix(".zip")
    if not weights.is_file() or not archive.is_file():
        raise FileNotFoundError(f"{archive} or {weights} is missing: agents.load expects what agents.save wrote")
    with zipfile.ZipFile(archive) as zipped:
        data = json.loads(zipped.read("data"))
    rebuilt = {key: _rebuilt(key, value, algo_class, data, env, archive)
               for key, value in data.items() if isinstance(value, dict) and ":serialized:" in value
               and key not in kwargs.get("custom_objects", {})}
    custom = {**rebuilt, **kwargs.pop("custom_objects", {})}
    model = algo_class.load(archive, env=env, device=device, custom_objects=custom, **kwargs)
    load_model(model.policy, str(weights), device=str(model.device))
    return model


def constant_schedule(value: float):
    """SB3's constant schedule, as SB3 pickles it (``get_schedule_fn`` warns on a float since 2.7)."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

    return FloatSchedule(ConstantSchedule(float(value)))


TRAINING_STATE = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer")
SPACE = re.compile(r"'(\w+)': Box\((-?\d+), (-?\d+), \((\d+),\), int64\)")
SCHEDULE = re.compile(r"ConstantSchedule\(val=([-+.\deE]+)\)")


def _rebuilt(key: str, value: dict, algo_class, data: dict, env, archive: Path) -> Any:
    """A pickled entry of an SB3 zip, rebuilt without unpickling it."""
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
    from stable_baselines3.common.buffers import DictRolloutBuffer

    maskable = issubclass(algo_class, MaskablePPO)
    if key in TRAINING_STATE:
        return None  # learn() starts these afresh
    if key == "policy_class" and value.get("__module__") == __name__:
        return MaskableLLMActorCriticPolicy if maskable else LLMActorCriticPolicy
    if key == "rollout_buffer_class":
        return MaskableDictRolloutBuffer if maskable else DictRolloutBuffer
    if key in ("observation_space", "action_space") and env is not None:
        return getattr(env, key)
    if key == "observation_space":
        boxes = {name: spaces.Box(int(low), int(high), (int(size),), np.int64)
                 for name, low, high, size in SPACE.findall(value.get("spaces", ""))}
        if set(boxes) == {"input_ids", "attention_mask"}:
            return spaces.Dict(boxes)
    if key == "action_space" and str(value.get("n", "")).isdigit():
        return spaces.Discrete(int(value["n"]))
    if key == "lr_schedule" and isinstance(data.get("learning_rate"), (int, float)):
        return constant_schedule(data["learning_rate"])
    constant = SCHEDULE.search(str(value.get("value_schedule", "")))
    if key in ("clip_range", "clip_range_vf") and constant:
        return constant_schedule(float(constant.group(1)))
    raise ValueError(f"agents.load will not unpickle {key!r} from {archive} (it may run arbitrary code) and cannot "
                     f"rebuild it; pass custom_objects={{{key!r}: ...}} if you trust the file")


class LLMActorCriticPolicy(_LLMActorCritic, ActorCriticPolicy):
    """A causal LM actor with a value head, for stock ``stable_baselines3.PPO``.

    ``policy_kwargs``: ``model`` (``"tiny"``, an HF id or a path), ``lora`` (a peft ``LoraConfig``
    or a dict), ``value_model`` (a separate critic LM; default: the actor's trunk), ``temperature``,
    ``dtype`` (e.g. ``"bfloat16"``), ``cache`` (default True; False runs every env step and every
    training sample as its own full forward, the naive policy, for checking and comparison).
    """


class MaskableLLMActorCriticPolicy(_LLMActorCritic, MaskableActorCriticPolicy):
    """The same policy for ``sb3_contrib.MaskablePPO``, which passes the env's ``action_masks()``."""


__all__ = ["LLMActorCriticPolicy", "MaskableLLMActorCriticPolicy", "check_spaces", "load", "save"]
