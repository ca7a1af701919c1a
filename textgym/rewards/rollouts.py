"""What the trained dense-reward sources share: a base model's rollouts, their batches, the fitting
loop, and their directories.

A source (a learned potential, an implicit token reward) is fitted offline to rollouts of a base
model on an env's train prompts, labelled by the env's score, and saved as an HF causal LM plus a
JSON record of what it was trained on (env, score, tokenizer) and what that cost (rollout tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textgym.models import atomic_directory, default_device, load_causal_lm
from textgym.models.cache import positions
from textgym.models.sampling import HFSampler, Sampling, first_episodes
from textgym.scorers.base import scorer_name

FORMAT = 1
EnvSource = str | Callable[[int], gym.vector.VectorEnv]  # a registered id, or num_envs -> vector env


@dataclass
class FitConfig:
    model: str = "tiny"  # the policy whose rollouts are fitted; also the trained model's starting weights
    episodes: int = 1024  # training rollouts
    heldout: int = 256  # rollouts for the fit report only
    num_envs: int = 64  # rollouts sampled side by side
    temperature: float = 1.0
    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-4
    seed: int = 0
    device: str | None = None  # default: CUDA when present, else CPU

    def __post_init__(self):
        for name in ("episodes", "heldout", "num_envs", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and self.temperature > 0):
            raise ValueError(f"{type(self).__name__} lr and temperature must be > 0, got {self.lr!r} and "
                             f"{self.temperature!r}")


@dataclass
class Rollout:
    prompt_ids: np.ndarray
    completion_ids: np.ndarray
    score: float


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary: a trained source reads token ids, so it fits only the tokenizer it saw."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def scored_vector_env(env: EnvSource, num_envs: int, env_kwargs: dict[str, Any], caller: str):
    """The vector env of ``env`` (an id or a factory) and its MDP, which must have a scorer."""
    if isinstance(env, str):
        envs = gym.make_vec(env, num_envs=num_envs, **env_kwargs)
    elif callable(env):
        envs = env(num_envs)
    else:
        raise TypeError(f"env must be a registered env id or a factory num_envs -> vector env, got {env!r}")
    mdp = getattr(envs.unwrapped, "mdp", None)
    if getattr(mdp, "scorer", None) is None:
        envs.close()
        raise ValueError(f"{caller} needs a textgym env with a scorer (its final score is the label); {env!r} has "
                         "none: pass scorer=...")
    return envs, mdp


def sample_rollouts(model: PreTrainedModel, envs: gym.vector.VectorEnv, episodes: int, temperature: float,
                    seed: int, progress: Callable[[int], None] = lambda n: None) -> list[Rollout]:
    """``episodes`` first episodes of ``envs``' envs, in batches of ``envs.num_envs``, ``model`` sampling."""
    rollouts: list[Rollout] = []
    for batch in range(math.ceil(episodes / envs.num_envs)):  # env i of batch b is seeded seed + b * num_envs + i
        obs, infos = first_episodes(HFSampler(model), envs, seed + batch * envs.num_envs, Sampling(temperature))
        for row, mask, info in zip(obs["input_ids"], obs["attention_mask"], infos):
            rollouts.append(Rollout(row[mask == 1], np.asarray(info["completion_ids"]), float(info["score"])))
        progress(len(infos))
    return rollouts[:episodes]


@dataclass
class SampledRollouts:
    """What a source is fitted to: the env's MDP, the device, and the train and held-out rollouts."""

    mdp: Any
    device: torch.device
    train: list[Rollout]
    heldout: list[Rollout]

    @property
    def all(self) -> list[Rollout]:
        return self.train + self.heldout


def sample_for_fit(env: EnvSource, config: FitConfig, env_kwargs: dict[str, Any], caller: str, progress: bool,
                   model: PreTrainedModel | None = None) -> SampledRollouts:
    """Seed, build the scored env, and sample ``config.episodes + config.heldout`` rollouts of
    ``config.model`` (or of ``model``, already loaded) with a progress bar."""
    from tqdm.auto import tqdm

    device = torch.device(config.device) if config.device else default_device()
    torch.manual_seed(config.seed)
    envs, mdp = scored_vector_env(env, config.num_envs, env_kwargs, caller)
    policy = model if model is not None else load_causal_lm(config.model, device=device).eval()
    with tqdm(total=config.episodes + config.heldout, desc="rollouts", disable=not progress) as bar:
        rollouts = sample_rollouts(policy, envs, config.episodes + config.heldout, config.temperature, config.seed,
                                   bar.update)
    envs.close()
    return SampledRollouts(mdp, device, rollouts[: config.episodes], rollouts[config.episodes :])


@dataclass
class RolloutBatch:
    """Right-padded prompt + completion rows. State s_k (the prompt and k completion tokens) ends at
    column ``first + k``; each row has ``states`` of them, s_0 .. s_{T-1}, one per action."""

    ids: torch.Tensor  # (B, S)
    mask: torch.Tensor  # (B, S)
    first: torch.Tensor  # (B,): the prompt's last column
    states: torch.Tensor  # (B,)

    @classmethod
    def of(cls, rollouts: list[Rollout], device: torch.device | str) -> RolloutBatch:
        rows = [np.concatenate([r.prompt_ids, r.completion_ids]) for r in rollouts]
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
        first = torch.tensor([len(r.prompt_ids) - 1 for r in rollouts])
        states = torch.tensor([max(len(r.completion_ids), 1) for r in rollouts])
        return cls(ids.to(device), mask.to(device), first.to(device), states.to(device))

    def columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The column of each state s_k, shape (B, T_max), and the mask of real states (float)."""
        k = torch.arange(int(self.states.max()), device=self.ids.device)
        columns = (self.first[:, None] + k[None]).clamp(max=self.ids.shape[1] - 1)
        return columns, (k[None] < self.states[:, None]).float()

    def at_states(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column ``values`` (B, S) read at each state: (B, T_max), and the mask of real states."""
        columns, real = self.columns()
        return values.gather(1, columns), real

    def action_logprobs(self, lm: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a_k | s_k) of each completion token under ``lm``: (B, T_max), and the mask."""
        logits = lm(input_ids=self.ids, attention_mask=self.mask, position_ids=positions(self.mask)).logits.float()
        columns, real = self.columns()
        actions = self.ids.gather(1, (columns + 1).clamp(max=self.ids.shape[1] - 1))
        picked = logits.gather(1, columns[..., None].expand(-1, -1, logits.shape[-1]))
        return torch.log_softmax(picked, -1).gather(2, actions[..., None]).squeeze(-1) * real, real


def clipped_step(loss: torch.Tensor, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Backpropagate ``loss``, clip ``module``'s gradient norm to 1 and take one ``optimizer`` step."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def fit(module: torch.nn.Module, rollouts: list[Rollout], loss: Callable[[list[Rollout]], torch.Tensor],
        config: FitConfig, progress: bool, desc: str) -> list[float]:
    """AdamW on ``loss`` of shuffled batches of ``rollouts`` for ``config.epochs``; the losses."""
    from tqdm.auto import tqdm

    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=config.lr)
    rng = np.random.default_rng(config.seed)
    losses = []
    with tqdm(total=config.epochs * math.ceil(len(rollouts) / config.batch_size), desc=desc,
              disable=not progress) as bar:
        for _ in range(config.epochs):
            order = rng.permutation(len(rollouts))
            for start in range(0, len(rollouts), config.batch_size):
                value = loss([rollouts[i] for i in order[start : start + config.batch_size]])
                clipped_step(value, module, optimizer)
                losses.append(value.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    module.eval()
    return losses


def correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r, or None where it is undefined (fewer than 3 points, or no spread)."""
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def source_record(env: EnvSource, mdp, config: FitConfig, rollouts: list[Rollout], **fields: Any) -> dict:
    """What a trained source records: the env, score and tokenizer it fits, and its rollout tokens."""
    return {"format": FORMAT, "env_id": env if isinstance(env, str) else None, "scorer": scorer_name(mdp.scorer),
            "tokenizer": tokenizer_fingerprint(mdp.tokenizer),
            "rollout_tokens": int(sum(len(r.completion_ids) for r in rollouts)),
            "episodes": config.episodes, "config": asdict(config), **fields}


def save_source(out: str | Path, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, record_name: str,
                record: dict, files: Callable[[Path], None] = lambda tmp: None) -> Path:
    """Save ``lm`` (safetensors), its tokenizer, ``record`` as ``record_name`` and ``files(tmp)``, atomically."""
    with atomic_directory(out) as tmp:
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files(tmp)
        (tmp / record_name).write_text(json.dumps(record, indent=1))
    return Path(out)


def read_source(path: str | Path, record_name: str, needs: tuple[str, ...], command: str) -> dict:
    """The record of the source directory ``path``, checked for every file it needs."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{command.split()[1]} directory {str(path)!r} does not exist; train one with `{command}`")
    missing = [n for n in (record_name, *needs, "config.json", "model.safetensors") if not (path / n).is_file()]
    if missing:
        raise ValueError(f"{command.split()[1]} directory {str(path)!r} lacks {missing}: it is not one, or it is "
                         f"truncated; train it again with `{command}`")
    try:
        record = json.loads((path / record_name).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path / record_name)!r} is not valid JSON ({error.msg}): truncated?") from None
    if record.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} holds format {record.get('format')!r}; this textgym reads {FORMAT}")
    return record


def check_source(path: Path, record: dict, mdp, env_id: str | None = None) -> None:
    """Refuse an env whose task, tokenizer or score differ from those the source was trained on."""
    if env_id is not None and record["env_id"] not in (None, env_id):
        raise ValueError(f"{str(path)!r} was trained on {record['env_id']}, not {env_id}; train one for {env_id}")
    if mdp is None:
        return
    if tokenizer_fingerprint(mdp.tokenizer) != record["tokenizer"]:
        raise ValueError(f"{str(path)!r} was trained with another tokenizer than the env's "
                         f"({mdp.tokenizer.name_or_path!r}); train one on this env")
    scorer = getattr(mdp, "scorer", None)
    if scorer is not None and scorer_name(scorer) != record["scorer"]:
        raise ValueError(f"{str(path)!r} was trained on the score {record['scorer']!r}, but the env scores with "
                         f"{scorer_name(scorer)!r}; train one on this env")
