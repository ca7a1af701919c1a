"""Drawing one token per row from a batch of next-token distributions, fast on every device.

``torch.multinomial`` draws an exponential variate for every vocabulary entry of every row; on CPU
that can cost more than a small model's forward pass. Inverse-CDF sampling needs one uniform number
per row and a binary search in the row's cumulative sums. ``action_logits`` cuts an LM's logits to
an env's action distribution: every sampling loop, in textgym and in agents, goes through it.

Example:
    >>> import torch
    >>> from textgym.models.sampling import sample_categorical
    >>> probs = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    >>> tokens = sample_categorical(probs, torch.Generator().manual_seed(0))
    >>> tokens[0].item(), tokens[1].item() in (0, 2)
    (1, True)
"""

from __future__ import annotations

import numpy as np
import torch

from textgym.models.cache import positions


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


@torch.no_grad()
def sample_tokens(model, envs, obs: dict[str, np.ndarray], temperature: float,
                  generator: torch.Generator) -> np.ndarray:
    """One token per env of the vector env ``envs`` from the LM's next-token distribution at the
    newest position of ``obs``, among the actions the envs' ``action_masks()`` allow."""
    ids = torch.from_numpy(obs["input_ids"]).to(model.device)
    mask = torch.from_numpy(obs["attention_mask"]).to(model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]
    logits = action_logits(logits, envs.single_action_space.n, temperature, envs.unwrapped.action_masks())
    return sample_categorical(torch.softmax(logits, dim=-1).cpu(), generator).numpy()


def first_episodes(model, envs, seed: int, temperature: float = 1.0) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run every env of ``envs`` through its first episode, ``model`` sampling each token.

    Returns the reset observations (the prompts, as the envs tokenized them) and, in env order, each
    first episode's ``prompt``, ``completion``, ``completion_ids``, ``score`` and ``ended_by`` ("EOS"
    or "length limit").
    """
    generator = torch.Generator().manual_seed(seed)
    first, _ = envs.reset(seed=seed)
    obs = first
    finished: dict[int, dict] = {}
    while len(finished) < envs.num_envs:
        obs, _, terminated, truncated, info = envs.step(sample_tokens(model, envs, obs, temperature, generator))
        for i in np.flatnonzero(terminated | truncated):
            if i not in finished:
                finished[i] = {key: info[key][i] for key in ("prompt", "completion", "completion_ids", "score")}
                finished[i]["ended_by"] = "EOS" if terminated[i] else "length limit"
    return first, [finished[i] for i in range(envs.num_envs)]
