"""``Trainer``: the loop every batched algorithm shares.

Each iteration:

1. **Rollout.** One episode in each of ``num_envs`` envs (``gym.make_vec``), a sampled token per
   env per step, rewards from the env's wrappers (``rollout.py``).
2. **Score the batch.** One forward over the full sequences gives the log-probs (and values) of
   every completion token; one more gives the reference's log-probs, and so the per-token KL.
3. **Update.** The algorithm (``ppo.py``, ``grpo.py``, ``rloo.py``) turns the batch into targets,
   then ``epochs`` passes of shuffled minibatches minimise its loss. With ``implicit_lr``, the
   env's implicit reward then takes one PRIME step on the batch's scores.
4. **Log and checkpoint.** A row of stable metrics; a checkpoint every ``checkpoint_every``
   iterations and at the end.

Several processes (``accelerate launch`` / ``torchrun``) each roll out their own envs; DDP
all-reduces the gradients, so every process holds the same weights. Randomness (env seeds and
token sampling) is drawn from generators seeded by (seed, process, iteration), so a run resumed
from a checkpoint replays exactly what the uninterrupted run would have done.

Example:
    >>> import tempfile
    >>> from agents.trainers import TrainConfig, Trainer
    >>> config = TrainConfig(env_id="textgym/Arithmetic-v0", steps=96, num_envs=8, minibatch_size=8,
    ...                      out=tempfile.mkdtemp(), device="cpu")
    >>> trainer = Trainer(config, progress=False)
    >>> checkpoint = trainer.train()
    >>> trainer.steps >= 96, sorted(p.name for p in checkpoint.parent.iterdir())[:3]
    (True, ['checkpoint', 'learning_curve.png', 'metrics.csv'])
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from agents.trainers.algorithms import ALGORITHMS
from agents.trainers.allocator import fix_mmap_threshold
from agents.trainers.checkpoint import (
    STATE, check_new_run, last_checkpoint, load_checkpoint, optimizer_state, read_state, read_tensors,
    save_checkpoint, trainable_state,
)
from agents.trainers.config import TrainConfig
from agents.trainers.core import kl_estimate, masked_mean
from agents.trainers.kl import KLController
from agents.trainers.metrics import MetricsLog, plot_learning_curve
from agents.trainers.policy import Reference, TokenOutputs, TokenPolicy
from agents.trainers.rollout import Sampling, evaluate, make_envs, reward_sources, rollout_for
from agents.trainers.sharding import full_weights, is_sharded, shard, whole
from textgym.models import load_tokenizer, save_pretrained_atomically
from textgym.models.cache import check_positions
from textgym.models.sampling import HFSampler
from textgym.rewards import ImplicitTokenReward

IMPLICIT_STATE = "implicit_reward.pt"  # the online implicit reward, in a checkpoint



class TrainingDiverged(FloatingPointError):
    """The loss or the gradients became NaN or infinite."""


class Trainer:
    """Batched PPO / GRPO / RLOO on a textgym env id. ``Trainer.resume(out)`` continues a run."""

    def __init__(self, config: TrainConfig, progress: bool = True, checkpoint: Path | None = None):
        from accelerate import Accelerator

        if config.algo not in ALGORITHMS:
            raise ValueError(f"Trainer runs {sorted(ALGORITHMS)}; {config.algo!r} runs through stable-baselines3 "
                             "(agents.trainers.sb3.train_sb3)")
        if checkpoint is None:
            check_new_run(config.out)
        self.config = c = config
        self.out = Path(c.out)
        self.accelerator = Accelerator(cpu=c.device == "cpu")
        if c.release_freed_memory and self.accelerator.device.type == "cpu":
            fix_mmap_threshold()
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        with self.accelerator.main_process_first():  # the main process trains a reward source once
            sources = reward_sources(c, progress and self.accelerator.is_main_process)
        self.envs = make_envs(c.env_id, c.num_envs, c.env_kwargs, reward_mode=c.reward_mode, sources=sources)
        self.sampling = Sampling.from_config(c)
        self.rollout = rollout_for(self.envs, self.sampling)
        self.implicit = self._online_implicit_reward() if c.implicit_lr else None
        self.algo = ALGORITHMS[c.algo](c)

        lora = {"r": c.lora_rank, "lora_alpha": c.lora_alpha, "lora_dropout": 0.0} if c.lora else None
        policy = TokenPolicy.load(c.model, with_value=self.algo.uses_values, lora=lora,
                                  temperature=c.temperature, allowed=self.rollout.allowed,
                                  gradient_checkpointing=c.gradient_checkpointing).to(self.accelerator.device)
        if policy.vocab != len(self.rollout.tokenizer):
            raise ValueError(f"model {c.model!r} has a {policy.vocab}-token vocabulary but {c.env_id} acts over "
                             f"Discrete({len(self.rollout.tokenizer)}); pass the env's tokenizer's model")
        check_positions(policy.lm, self.rollout.length)
        self.reference = Reference(policy) if c.uses_reference else None  # a frozen copy is never sharded
        self.steps = self.iteration = 0  # the linear lr schedule reads self.steps
        sharded = c.fsdp and self.world > 1  # one process has nothing to shard
        if sharded:
            shard(policy)
        # The fused kernel (one op for all parameters, CPU or CUDA) is HF Trainer's default too.
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=c.lr, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        # Sharded, FSDP reduces the gradients itself; otherwise accelerate wraps the policy in DDP.
        self.model, self.optimizer = (policy, optimizer) if sharded else self.accelerator.prepare(policy, optimizer)
        self.scheduler = scheduler
        self.sampler = HFSampler(self.policy.lm)  # the Sampler seam: a vLLM sampler would plug in here
        self.kl = KLController(c.kl_coef, c.kl_target, c.kl_horizon)
        self.kl_below_zero = False  # whether the last iteration's mean KL was below 0 by two standard errors
        self.generator = torch.Generator(self.accelerator.device)
        if checkpoint is not None:
            state = read_state(checkpoint)
            load_checkpoint(checkpoint, self.policy, self.optimizer, self.scheduler)
            self.steps, self.iteration = state["steps"], state["iteration"]
            self.kl.load_state_dict(state["kl"])
            self.kl_below_zero = state.get("kl_below_zero", False)  # older checkpoints lack it
            self.algo.load_state_dict(state.get("algo", {}))
            if self.implicit is not None:
                self.implicit.load_state_dict(read_tensors(checkpoint / IMPLICIT_STATE), c.implicit_lr)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(self.out, c.steps, resume_step=self.steps if checkpoint else None,
                              enabled=self.accelerator.is_main_process, progress=progress)

    @classmethod
    def resume(cls, out: str | Path, progress: bool = True, **overrides) -> Trainer:
        """Continue the run in ``out`` from its checkpoint (``overrides``: e.g. a larger ``steps``)."""
        checkpoint = last_checkpoint(Path(out))
        config = TrainConfig.from_dict({**read_state(checkpoint)["config"], "out": str(out), **overrides})
        return cls(config, progress=progress, checkpoint=checkpoint)

    def _online_implicit_reward(self) -> ImplicitTokenReward:
        if self.world > 1:  # each process would fit its own copy to its own rollouts
            raise ValueError(f"implicit_lr fits the implicit reward in one process; this run has {self.world} processes")
        found = [part for part in getattr(self.envs, "components", []) if isinstance(part, ImplicitTokenReward)]
        if not found:
            raise ValueError(f"implicit_lr fits an ImplicitTokenReward online; {self.config.env_id} has none")
        return found[0]

    @property
    def policy(self) -> TokenPolicy:
        return self.model if is_sharded(self.model) else self.accelerator.unwrap_model(self.model)

    def _lr_factor(self, _: int) -> float:
        return 1.0 if self.config.lr_schedule == "constant" else max(0.0, 1.0 - self.steps / self.config.steps)

    def _seed_iteration(self) -> list[int]:
        """Seed the sampler and draw the envs' seeds from (seed, process, iteration). GRPO and RLOO
        give each run of ``group_size`` adjacent envs one seed, hence one prompt."""
        key = [self.config.seed, self.rank, self.iteration]
        self.generator.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        base = int(np.random.default_rng(key).integers(2**31 - self.config.num_envs))
        group = self.config.group_size if self.config.algo in ("grpo", "rloo") else 1
        return [base + i // group for i in range(self.config.num_envs)]

    # --- one iteration --------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        """One rollout and one update; the metrics row (``train`` logs it and checkpoints)."""
        c, start = self.config, time.perf_counter()
        with full_weights(self.model):  # processes sample different numbers of tokens
            batch = self.rollout.collect(self.sampler, self._seed_iteration(), self.generator)
        mask = batch.completion_mask
        old, ref = self._score(batch)
        kl = torch.zeros_like(mask) if ref is None else kl_estimate(old.logprobs, ref, c.kl_estimator) * mask
        rewards = batch.rewards - self.kl.coef * kl if self.algo.kl_in_reward else batch.rewards
        stats = self._optimize(batch, self.algo.targets(batch, old, rewards, ref))
        if self.implicit is not None:  # PRIME: π_φ keeps fitting the outcomes; the next rollout uses it
            stats["implicit/loss"] = self.implicit.learn(batch.rollouts(), c.implicit_lr)
        episode_kl = kl.sum(1)
        tokens = int(self.accelerator.reduce(mask.sum().long(), "sum").item())
        self.steps += tokens
        self.iteration += 1
        row = {
            "objective/score": batch.scores.mean().item(),
            "objective/reward": (batch.rewards * mask).sum(1).mean().item(),
            "objective/kl": episode_kl.mean().item(),
            "objective/kl_stderr": (episode_kl.std().nan_to_num(0.0) / len(kl) ** 0.5).item(),  # of objective/kl
            "objective/kl_per_token": masked_mean(kl, mask).item(),
            "objective/kl_coef": self.kl.coef,
            "env/episode_len": batch.lengths.mean().item(),
            "env/eos_rate": batch.ended_by_eos.float().mean().item(),
            "time/rollout_tokens_per_s": mask.sum().item() / batch.seconds,
            "lr": self.optimizer.param_groups[0]["lr"],
            **stats,
        }
        row = self._mean_over_processes(row)
        row["time/tokens_per_s"] = tokens / (time.perf_counter() - start)
        self.kl.update(row["objective/kl"], tokens)
        # A true KL is never negative, but k1's sample mean dips below 0 by chance while the policy is
        # near the reference, and a few episodes' standard error is itself noisy (8 episodes: about 1
        # iteration in 25 falls two standard errors below 0). A biased estimate stays below: warn when
        # two iterations in a row are below 0 by more than two standard errors.
        below = row["objective/kl"] < -2 * row["objective/kl_stderr"] and row["objective/kl_per_token"] < -1e-6
        if below and self.kl_below_zero:
            warnings.warn(f"the mean KL to the reference is negative ({row['objective/kl']:.4f} +- "
                          f"{row['objective/kl_stderr']:.4f} per episode) at step {self.steps}: the {c.kl_estimator} "
                          "estimate is off (sampling settings differ from scoring?); kl_estimator='k3' is never "
                          "negative", RuntimeWarning, stacklevel=2)
        self.kl_below_zero = below
        return {"step": self.steps, "iteration": self.iteration, **row}

    @torch.no_grad()
    def _score(self, batch) -> tuple[TokenOutputs, torch.Tensor | None]:
        """The policy's outputs and the reference's log-probs for every completion token, a minibatch
        of rows at a time, as the update runs: a forward over the whole batch would hold every row's
        activations at once.

        No value depends on which rows share a forward, so rows of similar length go together, and
        each forward drops the columns that are padding in all its rows (``batch.minibatch``, as the
        update does): the same values for less compute."""
        by_length = batch.mask.sum(1).argsort(descending=True)
        parts = []
        for rows in by_length.split(self.config.minibatch_size):
            ids, mask, width = batch.minibatch(rows)
            ref = None if self.reference is None else self.reference.logprobs(ids, mask, width)
            parts.append((self.policy(ids, mask, width), ref))
        olds, refs = zip(*parts)
        row_order = by_length.argsort()

        def in_row_order(pieces: tuple[torch.Tensor, ...]) -> torch.Tensor:
            padded = [torch.nn.functional.pad(piece, (0, batch.completion_tokens - piece.shape[1])) for piece in pieces]
            return torch.cat(padded)[row_order]

        old = TokenOutputs(*(None if part[0] is None else in_row_order(part) for part in zip(*olds)))  # values may be None
        return old, None if refs[0] is None else in_row_order(refs)

    def _optimize(self, batch, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        c, stats = self.config, defaultdict(list)
        n = batch.ids.shape[0]
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(batch.ids.device)
            for rows in order.split(c.minibatch_size):
                ids, mask, width = batch.minibatch(rows)
                completion_mask = batch.completion_mask[rows, :width]
                new = self.model(ids, mask, width, entropy_grad=self.algo.trains_entropy)
                loss, step_stats = self.algo.loss(new, {k: v[rows, :width] for k, v in targets.items()},
                                                  completion_mask, self.kl.coef)
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)
                grad_norm = whole(self.accelerator.clip_grad_norm_(self.model.parameters(), c.max_grad_norm))
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    raise TrainingDiverged(self._divergence(loss, grad_norm, step_stats))
                self.optimizer.step()
                step_stats |= {"policy/entropy": masked_mean(new.entropy, completion_mask).item(),
                               "val/grad_norm": float(grad_norm)}
                for key, value in step_stats.items():
                    stats[key].append(value)
        self.scheduler.step()
        return {key: float(np.mean(values)) for key, values in stats.items()}

    def _divergence(self, loss: torch.Tensor, grad_norm: torch.Tensor, parts: dict[str, float]) -> str:
        """Which quantity went non-finite, where, and what is left to resume from."""
        c = self.config
        bad = [f"{name} is {value}" for name, value in parts.items() if not np.isfinite(value)]
        if not torch.isfinite(loss):
            what = f"the {c.algo} loss is {loss.item()}" + (f" ({', '.join(bad)})" if bad else "")
        else:
            what = f"the gradient norm is {float(grad_norm)} (the {c.algo} loss is {loss.item():.4g})"
        checkpoint = self.out / "checkpoint"
        kept = (f"the last good checkpoint in {checkpoint} is kept" if (checkpoint / STATE).is_file()
                else "no checkpoint was written yet")
        return (f"{what} at iteration {self.iteration + 1}, step {self.steps}; training stopped before the update, "
                f"and {kept}. Try a lower lr (now {c.lr}).")

    def _mean_over_processes(self, row: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return row
        values = torch.tensor(list(row.values()), dtype=torch.float64, device=self.accelerator.device)
        return dict(zip(row, self.accelerator.reduce(values, "mean").tolist()))

    # --- the run --------------------------------------------------------------------------------

    def train(self, until: int | None = None) -> Path:
        """Train until ``config.steps`` env steps (or stop at ``until``, checkpointed, as if
        interrupted); the checkpoint's path."""
        limit = min(self.config.steps, until or self.config.steps)
        main = self.accelerator.is_main_process
        if self.iteration == 0:
            with full_weights(self.model):  # the main process samples alone
                if main:
                    self._write_samples("before")
        while self.steps < limit:
            self.log.log(self.iterate())
            if self.iteration % self.config.checkpoint_every == 0:
                self.save()
        checkpoint = self.save()
        if self.steps >= self.config.steps:
            lm_state = trainable_state(self.policy.lm) if is_sharded(self.model) else None  # every process gathers
            with full_weights(self.model):
                if main:
                    self._finish(lm_state)
        self.log.close()
        return checkpoint

    def save(self) -> Path:
        """Checkpoint the run (the main process writes: DDP keeps every process's weights equal, and
        FSDP gathers its shards to every process first)."""
        checkpoint = self.out / "checkpoint"
        weights, optimizer = trainable_state(self.policy), optimizer_state(self.policy, self.optimizer)
        if self.accelerator.is_main_process:
            state = {"config": self.config.to_dict(), "steps": self.steps, "iteration": self.iteration,
                     "kl": self.kl.state_dict(), "kl_below_zero": self.kl_below_zero, "processes": self.world}
            state["algo"] = self.algo.state_dict()
            tensors = {} if self.implicit is None else {IMPLICIT_STATE: self.implicit.state_dict()}
            save_checkpoint(checkpoint, weights, optimizer, self.scheduler, state, tensors)
        self.accelerator.wait_for_everyone()
        return checkpoint

    def _finish(self, lm_state: dict[str, torch.Tensor] | None) -> None:
        """The end of a run: the trained LM in HF format (``lm_state`` as its weights, when
        sharded), samples after training, the curve."""
        lm = self.policy.lm
        if self.policy.uses_lora:
            lm = copy.deepcopy(lm).merge_and_unload()
        save_pretrained_atomically(self.out / "model", lm, load_tokenizer(self.config.model), state_dict=lm_state)
        self._write_samples("after")
        plot_learning_curve(self.log.rows, self.out / "learning_curve.png", self.config.env_id)

    def _write_samples(self, when: str) -> None:
        """Completions for the same test prompts before and after training, in ``samples.md``."""
        samples = evaluate(self.policy.lm, self.config.env_id, self.config.env_kwargs, self.config.sample_prompts,
                           self.sampling, seed=self.config.seed)
        path = self.out / "samples.json"
        record = json.loads(path.read_text()) if path.exists() and when == "after" else {}
        record[when] = samples
        path.write_text(json.dumps(record, indent=1))
        if {"before", "after"} <= set(record):  # a run resumed from elsewhere may lack "before"
            write_samples_markdown(record, self.out / "samples.md", self.config.env_id)


def write_samples_markdown(record: dict[str, list[dict]], path: Path, env_id: str) -> None:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {env_id}: test prompts, before and after training", "",
             "| prompt | before | score | after | score |", "| --- | --- | --- | --- | --- |"]
    for before, after in zip(record["before"], record["after"]):
        lines.append(f"| {cell(before['prompt'])} | {cell(before['completion'])} | {before['score']:.3f} "
                     f"| {cell(after['completion'])} | {after['score']:.3f} |")
    means = [np.mean([s["score"] for s in record[k]]) for k in ("before", "after")]
    lines += ["", f"Mean score: {means[0]:.3f} before, {means[1]:.3f} after."]
    path.write_text("\n".join(lines) + "\n")
