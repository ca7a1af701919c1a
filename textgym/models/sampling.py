"""Sampling completions: the ``Sampler`` seam, its transformers implementation, and the draw itself.

Every sampling loop goes through a ``Sampler``: the trainers' rollout, ``evaluate``, the demo, the
reward sources' rollouts and the benchmarks. It samples whole completions for a batch of prompts
(ids and mask, ``max_new_tokens``, stop at EOS, logits processors, a generator); callers then step
their env column by column with the tokens. ``HFSampler`` runs a transformers causal LM with a
preallocated KV cache; a vLLM backend would be a second implementation of the same protocol.

``torch.multinomial`` draws an exponential variate for every vocabulary entry of every row; on CPU
that can cost more than a small model's forward pass. Inverse-CDF sampling needs one uniform number
per row and a binary search in the row's cumulative sums. ``action_logits`` cuts an LM's logits to
an env's action distribution.

Example:
    >>> import torch
    >>> from textgym.models.sampling import sample_categorical
    >>> probs = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    >>> tokens = sample_categorical(probs, torch.Generator().manual_seed(0))
    >>> tokens[0].item(), tokens[1].item() in (0, 2)
    (1, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from textgym.envs.multi_turn import answer_turns
from textgym.models.cache import autocast, cached, left_padded, positions, preallocated_cache, select_rows


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (N, V), drawn with probability proportional to the row's
    entries, like ``torch.multinomial(probs, 1).squeeze(1)``.

    The cumulative sums are float64, so a token's share is exact to ~1e-16 even at V = 50k; a token of
    probability 0 is never drawn. A row without positive finite mass (NaN logits, say) is an error.
    """
    cdf = probs.double().cumsum(-1)
    total = cdf[:, -1:]
    empty = ~((total > 0) & torch.isfinite(total)).squeeze(1)
    if bool(empty.any()):
        raise ValueError(f"sample_categorical: rows {torch.nonzero(empty)[:, 0].tolist()} have no positive finite "
                         "probability mass (NaN or -inf logits?)")
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=torch.float64) * total
    # clamp: a draw that rounds up to the total would land one past the last index.
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def action_logits(logits: torch.Tensor, vocab: int, temperature: float = 1.0,
                  allowed: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """The env's action distribution from an LM's logits: the first ``vocab`` entries (models may pad
    their vocabulary), at ``temperature``, with the actions ``allowed`` excludes (an env's
    ``action_masks()``: ``(V,)`` or one row per logits row) at the lowest float: probability 0, but
    finite, so entropies and their gradients stay finite.

    Example:
        >>> logits = action_logits(torch.zeros(2, 4), vocab=3, allowed=np.array([True, False, True]))
        >>> torch.softmax(logits, -1)
        tensor([[0.5000, 0.0000, 0.5000],
                [0.5000, 0.0000, 0.5000]])
    """
    logits = logits[..., :vocab].float() / temperature
    if allowed is None:
        return logits
    allowed = torch.as_tensor(allowed, device=logits.device)
    return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)


class EnvActions(LogitsProcessor):
    """The logits processor of an env's action space: ``action_logits`` at temperature 1 (the cut to
    ``vocab`` and the env's ``action_masks()``); the warpers after it apply the temperature."""

    def __init__(self, vocab: int, allowed: torch.Tensor | np.ndarray | None = None):
        self.vocab, self.allowed = vocab, None if allowed is None else torch.as_tensor(allowed).bool()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return action_logits(scores, self.vocab, 1.0, self.allowed)


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn: transformers' own warpers, as ``generate(do_sample=True)`` applies them."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def from_config(cls, config) -> Sampling:
        """The sampling fields of a config (a ``TrainConfig``, say)."""
        return cls(config.temperature, config.top_k, config.top_p)

    def processors(self, vocab: int, allowed: torch.Tensor | np.ndarray | None = None) -> LogitsProcessorList:
        """The env's actions (``EnvActions``), then the temperature, top-k and top-p warpers."""
        processors = LogitsProcessorList([EnvActions(vocab, allowed)])
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            processors.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        return processors


class Completions(NamedTuple):
    """Sampled completions of a batch of prompts, as one rectangle of T columns.

    Row i is ``tokens[i, :lengths[i]]``: up to and including its first EOS, or all T tokens. The
    batch stays rectangular, as in ``generate()``, so a row that ended keeps drawing until every row
    has: the tokens past its length are valid actions that mean nothing (``mask`` hides them).
    """

    tokens: torch.Tensor  # (N, T)
    lengths: torch.Tensor  # (N,)

    @property
    def mask(self) -> torch.Tensor:
        """(N, T) bool: True for each row's own tokens."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) < self.lengths[:, None]


class Sampler(Protocol):
    """Samples completions for a batch of left-padded prompts."""

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
               eos_id: int | None, processors: LogitsProcessorList, generator: torch.Generator) -> Completions:
        """Up to ``max_new_tokens`` tokens per row; a row stops at ``eos_id`` (None: never). Each
        step's logits pass through ``processors``; the draws come from ``generator``."""
        ...


class HFSampler:
    """A ``Sampler`` that runs a transformers causal LM, one token per row per step.

    The KV cache is allocated once for the whole completion (``preallocated_cache``), the prompt's
    forward keeps only its last logits, and each draw takes one uniform number per row
    (``sample_categorical``) on the generator's device.

    Example:
        >>> from textgym.models import load_causal_lm
        >>> model = load_causal_lm("tiny", device="cpu")
        >>> ids = torch.tensor([[1, 1, 20, 21], [30, 31, 32, 33]]); mask = (ids != 1).long()
        >>> out = HFSampler(model).sample(ids, mask, 5, eos_id=2, processors=Sampling().processors(2240),
        ...                                generator=torch.Generator().manual_seed(0))
        >>> out.tokens.shape[0], bool((out.lengths <= 5).all())
        (2, True)
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
               eos_id: int | None, processors: LogitsProcessorList, generator: torch.Generator) -> Completions:
        return CachedRows(self.model, prompt_ids, prompt_mask, capacity=prompt_ids.shape[1] + max_new_tokens).sample(
            max_new_tokens, eos_id=eos_id, processors=processors, generator=generator)

    def session(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> CachedRows:
        """Rows to sample from turn after turn, keeping their KV cache (``play_conversations``)."""
        return CachedRows(self.model, prompt_ids, prompt_mask, capacity=2 * prompt_ids.shape[1], grows=True)


class CachedRows:
    """N left-padded rows that a causal LM continues, with a KV cache kept between calls: sample a
    turn, ``append`` the other side's reply, sample the next turn; only new tokens ever run.

    Columns a row does not use (tokens sampled after its end, padding before a shorter reply) stay
    in the cache with attention mask 0, so every row's tokens keep their positions.

    Example:
        >>> from textgym.models import load_causal_lm
        >>> rows = CachedRows(load_causal_lm("tiny", device="cpu"), torch.tensor([[1, 20, 21]]),
        ...                   torch.tensor([[0, 1, 1]]), capacity=8, grows=True)
        >>> draw = dict(eos_id=None, processors=Sampling().processors(2240), generator=torch.Generator())
        >>> turn = rows.sample(2, **draw)
        >>> rows.append([[30, 31, 32]])
        >>> rows.sample(2, **draw).tokens.shape, rows.ids.shape  # 3 + 2 + 3 columns, the new turn's last not yet run
        (torch.Size([1, 2]), torch.Size([1, 10]))
    """

    def __init__(self, model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, capacity: int,
                 grows: bool = False):
        self.model, self.device = model, model.device
        self.ids, self.mask = ids.to(self.device), mask.to(self.device)
        self.kv = preallocated_cache(capacity, grows=grows)

    def append(self, tokens: list[list[int]]) -> None:
        """Append each row's ``tokens`` (none for a row still writing its turn). The columns not yet in
        the cache are laid out again: each row's tokens there (the last token it drew, which never ran,
        and the new ones) right-aligned, so every row ends on a real token and its new tokens are
        contiguous."""
        done = self.kv.get_seq_length()
        waiting = [row[real.bool()].tolist() for row, real in zip(self.ids[:, done:], self.mask[:, done:])]
        rows = [old + list(new) for old, new in zip(waiting, tokens, strict=True)]
        if not all(rows):
            raise ValueError(f"every row must end on a token the model has not run; rows "
                             f"{[i for i, row in enumerate(rows) if not row]} would not, appending {tokens!r}")
        ids, mask = left_padded(rows)
        self.ids = torch.cat([self.ids[:, :done], ids.to(self.device)], dim=1)
        self.mask = torch.cat([self.mask[:, :done], mask.to(self.device)], dim=1)

    def keep(self, rows: list[int]) -> None:
        """Drop every row but ``rows`` (finished conversations)."""
        index = torch.tensor(rows, device=self.device)
        self.ids, self.mask = self.ids[index], self.mask[index]
        select_rows(self.kv, index)

    def _run_new_columns(self, ids: torch.Tensor, mask: torch.Tensor) -> CausalLMOutputWithPast:
        """Run the columns of ``ids`` not yet in the cache (the prompts, or the replies appended since
        the last turn); the model's output for the last one.

        Appended tokens are right-aligned, so a few rows with many more of them than the rest (an
        error message among short replies) would make every row run mostly padding. Those rows'
        extra columns run first on their own (``_run_rows``), then every row runs the last
        ``shared_width`` columns. The prompts run as one block, as ``generate()`` runs them: they run
        once per episode, and single-turn sampling stays as it was."""
        start = done = self.kv.get_seq_length()
        if done:
            new = mask[:, done:].sum(1)
            shared = shared_width(new.tolist())
            apart = torch.nonzero(new > shared).squeeze(1)
            if len(apart):
                start = ids.shape[1] - shared
                self._run_rows(apart, ids, mask, done, start)
        return self.model(input_ids=ids[:, start:], attention_mask=mask, position_ids=positions(mask)[:, start:],
                          use_cache=True, **cached(self.kv), logits_to_keep=1)

    def _run_rows(self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, start: int, end: int) -> None:
        """Run columns ``start:end`` of ``rows`` alone, on a copy of their cached columns, and write the
        keys and values into the cache, zeros for the other rows: those columns are padding there
        (masked), and zeros keep the masked attention scores finite."""
        own = preallocated_cache(end)
        for i, layer in enumerate(self.kv.layers):
            own.update(layer.keys[rows], layer.values[rows], i)
        self.model(input_ids=ids[rows, start:end], attention_mask=mask[rows, :end],
                   position_ids=positions(mask[rows, :end])[:, start:], use_cache=True, **cached(own), logits_to_keep=1)
        for i, layer in enumerate(own.layers):
            keys, values = (x.new_zeros(len(ids), x.shape[1], end - start, x.shape[3])
                            for x in (layer.keys, layer.values))
            keys[rows], values[rows] = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.kv.update(keys, values, i)

    @torch.no_grad()
    def sample(self, max_new_tokens: int, *, eos_id: int | None, processors: LogitsProcessorList,
               generator: torch.Generator, budgets: torch.Tensor | None = None, until: int | None = None
               ) -> Completions:
        """``Sampler.sample``'s draw, continuing every row; the new tokens join the rows.

        ``budgets`` caps each row's tokens (at most ``max_new_tokens``, the default), and the draw
        stops once ``until`` rows have ended (default: all). A row still writing then keeps every
        token it drew, and the next call continues it."""
        device, (n, width) = self.device, self.ids.shape
        ids = torch.empty(n, width + max_new_tokens, dtype=torch.long, device=device)  # what processors see
        ids[:, :width] = self.ids
        mask = self.mask
        limits = torch.full((n,), max_new_tokens, device=device) if budgets is None else budgets.to(device)
        until = n if until is None else until
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        ended = torch.zeros(n, dtype=torch.bool, device=device)
        with autocast(device):
            out = self._run_new_columns(ids[:, :width], mask)
        for t in range(max_new_tokens):
            if t:
                position = mask.sum(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], dim=1)
                with autocast(device):
                    out = self.model(input_ids=ids[:, width + t - 1 : width + t], attention_mask=mask,
                                     position_ids=position, **cached(self.kv), use_cache=True)
            scores = processors(ids[:, : width + t], out.logits[:, -1].float())
            token = sample_categorical(torch.softmax(scores, dim=-1).to(generator.device), generator)
            ids[:, width + t] = token.to(device)
            stops = ~ended & (t + 1 >= limits)
            if eos_id is not None:
                stops |= ~ended & (ids[:, width + t] == eos_id)
            lengths[stops] = t + 1
            ended |= stops
            # Without EOS or budgets every row runs all max_new_tokens: no device sync at each step.
            if (eos_id is not None or budgets is not None) and int(ended.sum()) >= until:
                break
        lengths[~ended] = t + 1
        new = ids[:, width : width + t + 1]
        self.ids = ids[:, : width + t + 1]
        self.mask = torch.cat([mask[:, :width], (torch.arange(t + 1, device=device) < lengths[:, None]).long()], dim=1)
        return Completions(new, lengths)


def shared_width(new_tokens: list[int]) -> int:
    """How many of the last columns every row runs together when the rows bring ``new_tokens`` new
    (right-aligned) tokens each; the rows with more run their extra columns first on their own. The
    width keeps the tokens run, padding included, fewest, counting the second forward's fixed cost
    as one more column of every row.

    Example:
        >>> shared_width([5, 5, 5, 16]), shared_width([5, 6, 5, 6])
        (5, 6)
    """
    rows, widest = len(new_tokens), max(new_tokens)

    def cost(shared: int) -> int:
        apart = sum(n > shared for n in new_tokens)
        return rows * shared + (apart * (widest - shared) + rows if apart else 0)

    return min(sorted({max(n, 1) for n in new_tokens}), key=cost)


def env_prompts(envs, seeds: int | list[int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Reset the textgym vector env ``envs`` with ``seeds``; the prompts as left-padded (ids, mask),
    without the columns that are padding in every row, and the reset info."""
    obs, info = envs.reset(seed=seeds)
    # At reset the first max_new_tokens columns are padding; then skip the columns no prompt reaches.
    ids = obs["input_ids"][:, envs.unwrapped.mdp.max_new_tokens :]
    mask = obs["attention_mask"][:, envs.unwrapped.mdp.max_new_tokens :]
    first = int(mask.any(0).nonzero()[0][0])
    return torch.tensor(ids[:, first:]), torch.tensor(mask[:, first:]), info  # copies: the env reuses its buffers


def sample_for(envs, sampler: Sampler, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: Sampling,
               generator: torch.Generator) -> Completions:
    """``sampler``'s completions of the prompts of the textgym vector env ``envs``, as its MDP says:
    its length limit, EOS (when EOS ends an episode) and action mask."""
    mdp = envs.unwrapped.mdp
    return sampler.sample(prompt_ids, prompt_mask, mdp.max_new_tokens, eos_id=mdp.eos_id if mdp.stop_on_eos else None,
                          processors=sampling.processors(mdp.vocab_size, mdp.action_mask), generator=generator)


def first_episodes(sampler: Sampler, envs, seed: int, sampling: Sampling = Sampling()
                   ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run every env of ``envs`` through its first episode: ``sampler`` samples the completions,
    then the envs step through them column by column.

    Returns the prompts (ids and mask, as ``env_prompts`` gives them) and, in env order, each first
    episode's ``prompt``, ``completion``, ``completion_ids``, ``score`` and ``ended_by`` ("EOS" or
    "length limit").
    """
    prompt_ids, prompt_mask, _ = env_prompts(envs, seed)
    completions = sample_for(envs, sampler, prompt_ids, prompt_mask, sampling, torch.Generator().manual_seed(seed))
    finished: dict[int, dict] = {}
    for column in completions.tokens.T.cpu().numpy():
        _, _, terminated, truncated, info = envs.step(column)
        for i in np.flatnonzero(terminated | truncated):
            if i not in finished:
                finished[i] = {key: info[key][i] for key in ("prompt", "completion", "completion_ids", "score")}
                finished[i]["ended_by"] = "EOS" if terminated[i] else "length limit"
        if len(finished) == envs.num_envs:
            break
    prompts = {"input_ids": prompt_ids.numpy(), "attention_mask": prompt_mask.numpy()}
    return prompts, [finished[i] for i in range(envs.num_envs)]


class Conversation(NamedTuple):
    """One finished episode of a ``MultiTurnTextEnv``: its first and last observations, the reward
    of each of the policy's tokens in order (the token that ended a turn holds the turn's score),
    whether it terminated (rather than ran out of room), and the final ``info`` (``score``,
    ``turn_scores``, ``transcript``)."""

    opening: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    rewards: list[float]
    terminated: bool
    info: dict


ROUND_SHARE = 0.75  # a round of turns ends once this share of the running conversations ended theirs


def play_conversations(sampler: Sampler, envs: list, seeds: list[int], sampling: Sampling,
                       generator: torch.Generator) -> list[Conversation]:
    """Play one episode of each single ``MultiTurnTextEnv`` of ``envs`` (env ``i`` reset with
    ``seeds[i]``), turn by turn: each round ``sampler`` writes the next turn of every conversation
    still running, in one batch, up to the end-of-turn token, and each env steps through its turn
    (then appends the other side's reply). A row's tokens after its turn ended are dropped.

    A sampler with a ``session`` (``HFSampler``) keeps its KV cache from turn to turn and runs only
    the replies' tokens anew; any other one is handed each whole conversation every round. With a
    session a round ends once ``ROUND_SHARE`` of the running conversations have ended their turns:
    the rows that ended would otherwise wait, drawing tokens that mean nothing, for the longest
    turn. The others keep what they wrote and go on with their turns in the next round, beside the
    new turns.
    """
    openings = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    observations = list(openings)
    rewards: list[list[float]] = [[] for _ in envs]
    finished: dict[int, Conversation] = {}
    first = envs[0].unwrapped
    processors = sampling.processors(first.vocab_size, first.action_masks())
    draw = dict(eos_id=first.end_of_turn_id, processors=processors, generator=generator)
    turn = [0] * len(envs)
    written = [0] * len(envs)  # tokens of each env's current turn so far
    rows = list(range(len(envs)))  # the env of each row the sampler continues (finished ones too, for a while)
    session = sampler.session(*_stacked(openings)) if hasattr(sampler, "session") else None

    def step_through(i: int, tokens: list[int], last: bool) -> bool:
        """Step env ``i`` through ``tokens`` of its turn; whether its conversation ended."""
        for taken, token in enumerate(tokens, 1):
            observations[i], reward, terminated, truncated, info = envs[i].step(token)
            rewards[i].append(float(reward))
            written[i] += 1
            if terminated or truncated:
                finished[i] = Conversation(openings[i], observations[i], rewards[i], bool(terminated), info)
                return True
            if info["turn"] != turn[i]:  # the turn ended; the reply is in the observation
                turn[i], written[i] = info["turn"], 0
                if last and taken == len(tokens):
                    return False
                # the session's cache holds the whole sampled turn
                raise RuntimeError(f"env {i} ended a turn before the last of its sampled tokens; its end-of-turn "
                                   "token and max_turn_tokens must be envs[0]'s")
        return False

    while rows:
        if session is not None:
            # A finished conversation's row draws one token, which nothing reads.
            budgets = torch.tensor([1 if i in finished else first.max_turn_tokens - written[i] for i in rows])
            running = sum(i not in finished for i in rows)
            turns = session.sample(int(budgets.max()), budgets=budgets, **draw,
                                   until=len(rows) - running + math.ceil(ROUND_SHARE * running))
        else:
            turns = sampler.sample(*_stacked([observations[i] for i in rows]), first.max_turn_tokens, **draw)
        sampled = {i: turns.tokens[row, : int(turns.lengths[row])].tolist()
                   for row, i in enumerate(rows) if i not in finished}
        going = [i for i, tokens in sampled.items() if not step_through(i, tokens[:-1], last=False)]
        # The turns end at their last tokens: interlocutors that answer in batches write the replies at once.
        answer_turns([envs[i] for i in going], [sampled[i][-1] for i in going])
        for i in going:
            step_through(i, sampled[i][-1:], last=True)
        # Dropping a session's rows copies its cache: do it once half of them are finished, not every turn.
        if session is None or 2 * sum(i in finished for i in rows) >= len(rows):
            alive = [row for row, i in enumerate(rows) if i not in finished]
            if session is not None and alive:
                session.keep(alive)
            rows = [rows[row] for row in alive]
        if session is not None and rows:
            # 0: filler for a finished conversation; nothing for a turn still going
            session.append([[0] if i in finished else _reply(observations[i]) for i in rows])
    return [finished[i] for i in range(len(envs))]


def _stacked(observations: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``observations`` as left-padded (ids, mask), without the columns every row pads."""
    ids = np.stack([o["input_ids"] for o in observations])
    mask = np.stack([o["attention_mask"] for o in observations])
    start = int(mask.any(0).nonzero()[0][0])
    return torch.from_numpy(ids[:, start:]), torch.from_numpy(mask[:, start:])


def _reply(observation: dict[str, np.ndarray]) -> list[int]:
    """The tokens the env appended after the policy's last token: the other side's reply."""
    last = int(np.flatnonzero(observation["policy_mask"])[-1])
    return observation["input_ids"][last + 1 :].tolist()


def first_conversations(sampler: Sampler, envs: list, seed: int, sampling: Sampling = Sampling()) -> list[dict]:
    """``play_conversations`` with env ``i`` reset with ``seed + i`` and the sampling seeded by
    ``seed``; each episode's final ``info``."""
    played = play_conversations(sampler, envs, [seed + i for i in range(len(envs))], sampling,
                                torch.Generator().manual_seed(seed))
    return [conversation.info for conversation in played]
