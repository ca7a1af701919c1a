"""The batched trainers: their math, the rollout, checkpoints and exact resume, failure handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import textgym  # noqa: F401
from agents.trainers import TrainConfig, Trainer, TrainingDiverged
from agents.trainers.checkpoint import trainable_state
from agents.trainers.core import (RunningMoments, group_baseline, group_credit, kl_estimate, masked_mean, masked_whiten,
                                  returns_to_go)
from agents.trainers.grpo import GRPO
from agents.trainers.kl import KLController
from agents.trainers.metrics import read_metrics
from agents.trainers.policy import Reference, TokenOutputs, TokenPolicy
from agents.trainers.ppo import PPO, gae
from agents.trainers.rloo import RLOO
from agents.trainers.rollout import Rollout
from textgym.models.sampling import HFSampler, Sampling
from textgym.models import load_causal_lm
from tests.helpers import FS_OPS, Killed, kill_at


def small_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(env_id="textgym/Arithmetic-v0", steps=200, num_envs=8, minibatch_size=4, epochs=2,
                  lr=1e-4, out=str(tmp_path / "run"), device="cpu", checkpoint_every=1, sample_prompts=4)
    return TrainConfig(**(values | overrides))


# --- the math ---------------------------------------------------------------------------------------


def test_gae_with_lambda_one_is_return_minus_value_and_stops_at_the_episode_end():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.25, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last column is padding: its reward must not leak in
    advantages = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    expected = returns_to_go(rewards, mask) - values * mask
    torch.testing.assert_close(advantages, expected)
    one_step = gae(rewards, values, mask, gamma=0.5, lam=0.0)  # TD(0): r + gamma V' - V
    torch.testing.assert_close(one_step[0, :3], torch.tensor([0 + 0.5 * 0.25 - 0.5, 1 + 0.5 * 1.0 - 0.25, 2 - 1.0]))


def test_masked_statistics_ignore_padding():
    values, mask = torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_mean(values, mask).item() == 2.0
    whitened = masked_whiten(values, mask)
    assert whitened[0, 2] == 0 and abs(masked_mean(whitened, mask).item()) < 1e-6
    torch.testing.assert_close(whitened[0, :2], torch.tensor([-1.0, 1.0]), atol=1e-4, rtol=0)


def test_kl_estimators():
    logp, ref = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.4]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), logp - ref)
    k3 = kl_estimate(logp, ref, "k3")
    ratio = (ref - logp).exp()
    torch.testing.assert_close(k3, ratio - 1 - ratio.log())
    assert (k3 >= 0).all() and (kl_estimate(logp, ref, "k1") < 0).any()
    with pytest.raises(ValueError, match="'k2'"):
        kl_estimate(logp, ref, "k2")


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.1)
    fixed.update(100.0, 10_000)
    assert fixed.coef == 0.1
    adaptive = KLController(0.1, target=2.0, horizon=1000)
    adaptive.update(4.0, 100)  # above target: clipped +20% error, scaled by 100/1000
    assert adaptive.coef == pytest.approx(0.1 * 1.02)
    adaptive.update(1.0, 100)  # below target: shrinks
    assert adaptive.coef < 0.1 * 1.02
    restored = KLController(0.0)
    restored.load_state_dict(adaptive.state_dict())
    assert restored == adaptive


def test_running_moments_match_the_moments_of_everything_seen():
    rng = np.random.default_rng(0)
    moments, seen = RunningMoments(), []
    for rows in (3, 1, 5):
        values = torch.tensor(rng.normal(7.0, 3.0, (rows, 4)))
        mask = torch.tensor(rng.random((rows, 4)) < 0.7, dtype=torch.float64)
        moments.update(values, mask)
        seen.extend(values[mask.bool()].tolist())
    assert moments.count == len(seen)
    assert moments.mean == pytest.approx(np.mean(seen)) and moments.var == pytest.approx(np.var(seen))
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert restored == moments


def test_ppo_value_targets_do_not_depend_on_the_reward_scale(tmp_path):
    """With value normalisation, scores of 6 +- 1 and of 0.06 +- 0.01 give the value head the same
    targets, and a constant added to each episode's final reward changes nothing (lambda = 1: the
    returns are exact, not lambda-returns that discount the final reward)."""
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    scores = torch.tensor([[0.0, 0.0, 5.0], [0.0, 7.0, 0.0], [6.5, 0.0, 0.0]])
    old = TokenOutputs(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 3))
    small = (scores - 6.0 * (scores != 0)) / 100  # each final reward shifted by -6, all scaled by 1/100

    def targets(rewards: torch.Tensor, **overrides) -> dict[str, torch.Tensor]:
        config = small_config(tmp_path, gae_lambda=1.0, **overrides)
        return PPO(config).targets(FakeBatch(rewards, mask), old, rewards, None)

    for name in ("returns", "advantages"):
        torch.testing.assert_close(targets(scores)[name], targets(small)[name], atol=1e-3, rtol=0)
    assert targets(scores)["returns"].abs().max() < 3  # the head learns numbers near 0, not near 6
    assert targets(scores, normalize_values=False)["returns"].max() == 7.0


class FakeBatch:
    def __init__(self, rewards: torch.Tensor, mask: torch.Tensor):
        self.rewards, self.completion_mask, self.conversation = rewards, mask, False


def test_grpo_advantages_are_group_normalised_returns_to_go(tmp_path):
    config = small_config(tmp_path, algo="grpo", group_size=2, num_envs=4, minibatch_size=4)
    rewards = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.5, 0.5], [0.0, 0.0]])
    mask = torch.ones(4, 2)
    old = TokenOutputs(torch.zeros(4, 2), None, torch.zeros(4, 2))
    advantages = GRPO(config).targets(FakeBatch(rewards, mask), old, rewards, None)["advantages"]
    # Sparse rewards: every token of a completion gets its outcome advantage. Group 0 returns 1 and 3.
    std0 = torch.tensor([1.0, 1.0, 3.0, 3.0]).std()  # over the group's tokens
    torch.testing.assert_close(advantages[:2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) / (std0 + 1e-4))
    # Group 1: per-token rewards -> returns-to-go (1, 0.5) and (0, 0), each against the group's mean return
    # still to come at its position: 0.5 at the first token, 0.25 at the second (not the whole 0.5).
    centred = torch.tensor([[0.5, 0.25], [-0.5, -0.25]])
    torch.testing.assert_close(advantages[2:], centred / (centred.flatten().std() + 1e-4))


def test_group_baselines_follow_the_return_still_to_come_and_reduce_to_the_outcome_mean_when_sparse():
    """Shaping that pays both samples the same at their first token, then nothing: the later tokens
    owe nothing to the group, so they get no advantage; a finished sample counts its last return."""
    shaped = torch.tensor([[0.4, 0.0, 0.0], [0.4, 0.0, 0.0]])
    mask = torch.ones(2, 3)
    returns = group_credit(shaped, mask, whole_episode=False)
    assert (returns - group_baseline(returns, mask, 2)).abs().max() == 0
    sparse = torch.tensor([[0.0, 0.0, 1.0], [3.0, 0.0, 0.0]])  # the second sample ends after one token
    ended = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    returns = group_credit(sparse, ended, whole_episode=False)
    torch.testing.assert_close(group_baseline(returns, ended, 2), torch.full((2, 3), 2.0))
    torch.testing.assert_close(group_baseline(returns, ended, 2, leave_one_out=True),
                               torch.tensor([[3.0] * 3, [1.0] * 3]))


def test_grpo_advantages_stay_bounded_when_a_group_scores_alike(tmp_path):
    """All outcomes equal (say all wrong) while the potential varies: no division by a zero std."""
    config = small_config(tmp_path, algo="grpo", group_size=2, num_envs=2, minibatch_size=2)
    rewards = torch.tensor([[0.5, -0.5], [0.0, 0.0]])  # a right first digit, then the wrong answer: score 0
    old = TokenOutputs(torch.zeros(2, 2), None, torch.zeros(2, 2))
    advantages = GRPO(config).targets(FakeBatch(rewards, torch.ones(2, 2)), old, rewards, None)["advantages"]
    assert advantages.abs().max() < 2
    assert advantages[0, 0] == 0 and advantages[0, 1] < 0  # after the right digit, the wrong answer costs


def test_rloo_baseline_leaves_one_out(tmp_path):
    config = small_config(tmp_path, algo="rloo", group_size=3, num_envs=3, minibatch_size=3, whiten_advantages=False)
    rewards = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 6.0]])
    mask = torch.ones(3, 2)
    old = TokenOutputs(torch.zeros(3, 2), None, torch.zeros(3, 2))
    advantages = RLOO(config).targets(FakeBatch(rewards, mask), old, rewards, None)["advantages"]
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))


# --- the model and the rollout -------------------------------------------------------------------------


def test_policy_log_probs_equal_step_by_step_forwards():
    policy = TokenPolicy.load("tiny", with_value=True, temperature=0.7)
    ids = torch.tensor([[1, 1, 20, 21, 22, 23, 24], [30, 31, 32, 33, 34, 35, 1]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]])  # left and right padding
    out = policy(ids, mask, completion_tokens=3)
    for row in range(2):
        for t in range(3):
            column = ids.shape[1] - 3 + t
            if not mask[row, column]:
                continue
            real = mask[row, :column].bool()
            prefix = ids[row, :column][real][None]
            logits = policy.lm(input_ids=prefix).logits[0, -1] / 0.7
            expected = torch.log_softmax(logits, -1)[ids[row, column]]
            torch.testing.assert_close(out.logprobs[row, t], expected, atol=1e-5, rtol=0)


def test_rollout_batches_are_the_envs_episodes():
    envs = gym.make_vec("textgym/Arithmetic-v0", num_envs=6)  # sparse: the score is the only reward
    lm = load_causal_lm("tiny", device="cpu")
    batch = Rollout(envs, Sampling()).collect(HFSampler(lm), seeds=list(range(6)),
                                              generator=torch.Generator().manual_seed(0))
    tokenizer = envs.unwrapped.tokenizer
    width = batch.completion_tokens
    for i in range(6):
        taken = batch.completion_mask[i].bool()
        tokens = batch.ids[i, -width:][taken].tolist()
        assert tokenizer.decode(tokens, skip_special_tokens=True) == batch.completions[i]
        assert batch.mask[i, -width:].tolist() == taken.long().tolist()
        assert batch.rewards[i].sum().item() == pytest.approx(batch.scores[i].item())
        assert bool(batch.ended_by_eos[i]) == (tokens[-1] == tokenizer.eos_token_id)
    assert batch.prompts == [p for p in batch.prompts if p.endswith("=")]


def test_a_minibatch_drops_only_columns_that_are_padding_in_all_its_rows():
    envs = gym.make_vec("textgym/Sentiment-v0", num_envs=8, max_new_tokens=32)
    policy = TokenPolicy.load("tiny", with_value=True)
    batch = Rollout(envs, Sampling()).collect(HFSampler(policy.lm), seeds=list(range(8)),
                                              generator=torch.Generator().manual_seed(0))
    full = policy(batch.ids, batch.mask, batch.completion_tokens)
    rows = torch.argsort(batch.lengths)[:3]  # the shortest episodes: their minibatch is narrower
    ids, mask, width = batch.minibatch(rows)
    assert width == int(batch.lengths[rows].max()) < batch.completion_tokens
    assert mask[:, 0].any() and mask[:, -1].any()  # no column left that every row pads
    assert mask.sum() == batch.mask[rows].sum()  # ... and no real token lost
    trimmed = policy(ids, mask, width)
    for name in ("logprobs", "values", "entropy"):
        torch.testing.assert_close(getattr(trimmed, name) * batch.completion_mask[rows, :width],
                                   getattr(full, name)[rows, :width] * batch.completion_mask[rows, :width],
                                   atol=1e-5, rtol=0)


def test_scoring_groups_rows_by_length_and_gives_the_full_batch_forwards_values(tmp_path):
    """The old and reference log-probs (and values) come from forwards over rows of similar length
    with their padding columns dropped; they equal one forward over the whole padded batch."""
    config = small_config(tmp_path, env_id="textgym/Sentiment-v0", env_kwargs={"max_new_tokens": 32}, num_envs=8,
                          minibatch_size=2, kl_coef=0.05)
    trainer = Trainer(config, progress=False)
    batch = trainer.rollout.collect(trainer.sampler, list(range(8)), torch.Generator().manual_seed(0))
    assert batch.lengths.min() < batch.lengths.max()  # rows of different length, or nothing is dropped
    tokens_run = []
    trainer.policy.register_forward_pre_hook(lambda module, args: tokens_run.append(args[0].numel()))
    old, ref = trainer._score(batch)
    assert sum(tokens_run) < batch.ids.numel()  # padding columns dropped
    full = trainer.policy(batch.ids, batch.mask, batch.completion_tokens)
    taken = batch.completion_mask
    for name in ("logprobs", "values", "entropy"):
        torch.testing.assert_close(getattr(old, name) * taken, getattr(full, name) * taken, atol=1e-5, rtol=0)
    full_ref = trainer.reference.logprobs(batch.ids, batch.mask, batch.completion_tokens)
    torch.testing.assert_close(ref * taken, full_ref * taken, atol=1e-5, rtol=0)
    padding = batch.mask[:, -batch.completion_tokens:] == 0  # however each forward padded its rows
    assert (old.logprobs[padding] == 0).all() and (ref[padding] == 0).all() and (full.logprobs[padding] == 0).all()


def test_rollout_evaluate_and_training_honour_the_envs_action_mask():
    """Sampling never picks what action_masks() forbids, and the training log-probs are those of the
    masked distribution the tokens came from."""
    from agents.trainers.rollout import evaluate

    digits = load_causal_lm("tiny", device="cpu")
    tokenizer = gym.make("textgym/Arithmetic-v0").unwrapped.tokenizer
    allowed = {tokenizer.convert_tokens_to_ids(t) for t in "0123456789"} | {tokenizer.eos_token_id}
    kwargs = {"disallowed_token_ids": [i for i in range(len(tokenizer)) if i not in allowed]}
    envs = gym.make_vec("textgym/Arithmetic-v0", num_envs=8, **kwargs)
    rollout = Rollout(envs, Sampling(temperature=2.0))
    policy = TokenPolicy.load("tiny", with_value=False, temperature=2.0, allowed=rollout.allowed)
    batch = rollout.collect(HFSampler(digits), seeds=list(range(8)), generator=torch.Generator().manual_seed(0))
    taken = batch.completion_mask.bool()
    assert set(batch.ids[:, -batch.completion_tokens:][taken].tolist()) <= allowed
    out = policy(batch.ids, batch.mask, batch.completion_tokens)
    assert torch.isfinite(out.entropy).all() and (out.logprobs[taken] > -20).all()
    unmasked = TokenPolicy.load("tiny", with_value=False, temperature=2.0)(batch.ids, batch.mask, batch.completion_tokens)
    assert (out.logprobs[taken] >= unmasked.logprobs[taken] - 1e-5).all()  # renormalised over fewer ids
    for episode in evaluate(digits, "textgym/Arithmetic-v0", kwargs, 8, Sampling(temperature=2.0)):
        assert set(episode["completion"]) <= set("0123456789 ")


def test_top_k_one_sampling_is_greedy():
    envs = gym.make_vec("textgym/Sentiment-v0", num_envs=2, max_new_tokens=8)
    lm = load_causal_lm("tiny", device="cpu")
    batch = Rollout(envs, Sampling(top_k=1)).collect(HFSampler(lm), seeds=[0, 1],
                                                     generator=torch.Generator().manual_seed(0))
    for i in range(2):
        prompt = batch.ids[i, : -batch.completion_tokens][batch.mask[i, : -batch.completion_tokens].bool()]
        greedy = lm.generate(prompt[None], do_sample=False, max_new_tokens=batch.completion_tokens,
                             pad_token_id=1, eos_token_id=0)[0, len(prompt):]
        taken = int(batch.lengths[i])
        assert batch.ids[i, -batch.completion_tokens:][:taken].tolist() == greedy[:taken].tolist()


def test_lora_reference_is_the_base_model_without_a_copy():
    policy = TokenPolicy.load("tiny", with_value=False, lora={"r": 4, "lora_alpha": 8})
    reference = Reference(policy)
    assert reference.frozen is None
    for name, param in policy.lm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)  # move the policy away from the base
    ids = torch.tensor([[20, 21, 22, 23]]); mask = torch.ones_like(ids)
    base = TokenPolicy.load("tiny", with_value=False)
    torch.testing.assert_close(reference.logprobs(ids, mask, 2), base(ids, mask, 2).logprobs)
    assert not torch.allclose(policy(ids, mask, 2).logprobs, base(ids, mask, 2).logprobs)


# --- the trainer -------------------------------------------------------------------------------------------


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


@pytest.mark.parametrize(("algo", "steps"), [pytest.param("ppo", 2000, marks=pytest.mark.slow), ("grpo", 400)])
def test_resume_replays_the_uninterrupted_run_exactly(tmp_path, algo, steps):
    """Train `steps` directly; separately, train half, stop, resume and finish: the same metrics."""
    settings = dict(algo=algo, steps=steps, num_envs=16, checkpoint_every=3, lr_schedule="linear")
    direct = small_config(tmp_path / "direct", **settings)
    Trainer(direct, progress=False).train()
    split = small_config(tmp_path / "split", **settings)
    first = Trainer(split, progress=False)
    first.train(until=steps // 2)  # stops as an interruption would, right after a checkpoint
    assert steps // 2 <= first.steps < steps
    resumed = Trainer.resume(split.out, progress=False)
    assert resumed.steps == first.steps
    resumed.train()
    rows_direct, rows_split = read_metrics(Path(direct.out) / "metrics.csv"), read_metrics(Path(split.out) / "metrics.csv")
    assert len(rows_direct) == len(rows_split) > 4
    assert comparable(rows_direct) == comparable(rows_split)
    final = [load_file(Path(c.out) / "checkpoint" / "policy.safetensors") for c in (direct, split)]
    for name in final[0]:
        assert torch.equal(final[0][name], final[1][name]), name


def test_training_changes_the_weights_and_writes_every_output(tmp_path):
    config = small_config(tmp_path, algo="rloo", group_size=2)
    trainer = Trainer(config, progress=False)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    out = Path(config.out)
    assert {"metrics.csv", "learning_curve.png", "samples.md", "samples.json", "checkpoint", "model",
            "tensorboard"} <= {p.name for p in out.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    changed = [k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    rows = read_metrics(out / "metrics.csv")
    for name in ["objective/score", "objective/reward", "objective/kl", "objective/kl_coef", "val/ratio",
                 "val/clipfrac", "policy/entropy", "env/episode_len", "env/eos_rate", "time/tokens_per_s"]:
        assert name in rows[0] and np.isfinite(rows[-1][name]), name
    samples = json.loads((out / "samples.json").read_text())
    assert [s["prompt"] for s in samples["before"]] == [s["prompt"] for s in samples["after"]]
    exported = load_causal_lm(out / "model", device="cpu")
    torch.testing.assert_close(exported.state_dict()["transformer.wte.weight"],
                               trainer.policy.lm.state_dict()["transformer.wte.weight"])


def test_ppo_metrics_include_the_value_loss_and_the_frozen_reference_stays_put(tmp_path):
    trainer = Trainer(small_config(tmp_path, steps=100), progress=False)
    reference = {k: v.clone() for k, v in trainer.reference.frozen.state_dict().items()}
    trainer.train()
    assert all(torch.equal(v, reference[k]) for k, v in trainer.reference.frozen.state_dict().items())
    assert "val/value_loss" in trainer.log.rows[-1]


def test_lora_checkpoints_hold_only_the_adapters(tmp_path):
    config = small_config(tmp_path, lora=True, lora_rank=2, steps=60)
    trainer = Trainer(config, progress=False)
    trainer.train()
    names = load_file(Path(config.out) / "checkpoint" / "policy.safetensors")
    assert names and all("lora_" in n or n.startswith("value_head") for n in names)
    assert trainer.reference.frozen is None


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = small_config(tmp_path)
    trainer = Trainer(config, progress=False)
    trainer.log.log(trainer.iterate())
    trainer.save()
    good = (Path(config.out) / "checkpoint" / "policy.safetensors").read_bytes()
    real_loss = trainer.algo.loss
    monkeypatch.setattr(trainer.algo, "loss", lambda *a: (real_loss(*a)[0] * float("nan"), {}))
    with pytest.raises(TrainingDiverged, match=r"loss is nan .*at iteration 2.*last good checkpoint"):
        trainer.train()
    assert (Path(config.out) / "checkpoint" / "policy.safetensors").read_bytes() == good
    assert json.loads((Path(config.out) / "checkpoint" / "state.json").read_text())["iteration"] == 1


def test_divergence_names_the_quantity_and_mentions_only_a_checkpoint_that_exists(tmp_path, monkeypatch):
    trainer = Trainer(small_config(tmp_path), progress=False)
    real_loss = trainer.algo.loss

    def value_loss_nan(*args):
        loss, stats = real_loss(*args)
        return loss * float("nan"), {**stats, "val/value_loss": float("nan")}

    monkeypatch.setattr(trainer.algo, "loss", value_loss_nan)
    with pytest.raises(TrainingDiverged, match=r"loss is nan \(val/value_loss is nan\) at iteration 1.*no checkpoint was written yet"):
        trainer.train()


def test_a_crash_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(small_config(tmp_path), progress=False)
    trainer.log.log(trainer.iterate())
    checkpoint = trainer.save()
    good = (checkpoint / "state.json").read_text()
    trainer.log.log(trainer.iterate())

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    assert (checkpoint / "state.json").read_text() == good


@pytest.mark.parametrize("kill_point", range(FS_OPS))
def test_resume_works_after_a_kill_at_any_point_of_a_checkpoint_save(tmp_path, monkeypatch, kill_point):
    config = small_config(tmp_path, steps=60)
    trainer = Trainer(config, progress=False)
    trainer.log.log(trainer.iterate())
    trainer.save()
    trainer.log.log(trainer.iterate())
    kill_at(monkeypatch, kill_point)
    with pytest.raises(Killed):
        trainer.save()
    monkeypatch.undo()
    out = Path(config.out)
    resumed = Trainer.resume(out, progress=False)  # the first checkpoint, or the second once it is in place
    assert resumed.iteration == (2 if kill_point >= FS_OPS - 1 else 1)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]
    resumed.train()
    assert (out / "checkpoint").is_dir() and not (out / "checkpoint.old").exists()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint to resume from"):
        Trainer.resume(tmp_path / "nothing")


def test_a_new_run_never_starts_over_an_old_one(tmp_path):
    config = small_config(tmp_path, steps=30)
    Trainer(config, progress=False).train()
    out = Path(config.out)
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoint, metrics.csv, model\); resume it"):
        Trainer(config, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing was touched
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a directory"):
        Trainer(small_config(tmp_path, out=str(tmp_path / "file")), progress=False)


def test_a_negative_kl_warns(tmp_path, monkeypatch):
    trainer = Trainer(small_config(tmp_path, kl_estimator="k1"), progress=False)
    real = trainer.reference.logprobs
    monkeypatch.setattr(trainer.reference, "logprobs", lambda *a: real(*a) + 1.0)  # ref above the policy: k1 < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trainer.iterate()  # once may be chance
    with pytest.warns(RuntimeWarning, match="KL to the reference is negative"):
        trainer.iterate()  # twice in a row is not
    monkeypatch.setattr(trainer.reference, "logprobs", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trainer.iterate()
        monkeypatch.setattr(trainer.reference, "logprobs", lambda *a: real(*a) + 1.0)
        trainer.iterate()  # below zero again, but not twice in a row


def test_a_resumed_run_remembers_a_kl_below_zero(tmp_path, monkeypatch):
    """The streak is part of the checkpoint: below 0 before the save and again after the resume warns."""
    trainer = Trainer(small_config(tmp_path, kl_estimator="k1"), progress=False)
    real = trainer.reference.logprobs
    monkeypatch.setattr(trainer.reference, "logprobs", lambda *a: real(*a) + 1.0)
    trainer.iterate()
    trainer.save()
    resumed = Trainer.resume(tmp_path / "run", progress=False)
    real = resumed.reference.logprobs
    monkeypatch.setattr(resumed.reference, "logprobs", lambda *a: real(*a) + 1.0)
    with pytest.warns(RuntimeWarning, match="KL to the reference is negative"):
        resumed.iterate()


def test_a_kl_below_zero_by_chance_does_not_warn(tmp_path, monkeypatch):
    """Episode KLs of mean -0.1 and spread +-3 (8 episodes): negative, but well within two standard errors."""
    trainer = Trainer(small_config(tmp_path, kl_estimator="k1"), progress=False)
    real = trainer.reference.logprobs
    spread, seen = torch.tensor([3.0, -3.0] * 4), []

    def noisy(ids, mask, width):  # called a minibatch of rows at a time, in order
        rows = slice(len(seen), len(seen) + len(ids))
        seen.extend(range(len(ids)))
        completion = mask[:, -width:].float()
        return real(ids, mask, width) + ((0.1 + spread[rows]) / completion.sum(1))[:, None] * completion

    monkeypatch.setattr(trainer.reference, "logprobs", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        row = trainer.iterate()
    assert row["objective/kl"] == pytest.approx(-0.1, abs=1e-3)
    assert row["objective/kl_stderr"] == pytest.approx(3 * (8 / 7) ** 0.5 / 8 ** 0.5, rel=1e-3)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lr": 0.0}, "lr must be > 0, got 0.0"),
    ({"algo": "grpo", "group_size": 1}, "group_size must be >= 2"),
    ({"fsdp": True, "lora": True}, "fsdp shards full fine-tuning"),
    ({"kl_target": 0.0}, "kl_target must be > 0"),
    ({"kl_horizon": 0}, "kl_horizon must be a positive int, got 0"),
    ({"num_envs": 10, "minibatch_size": 4}, r"num_envs \(the batch, 10\) must be a multiple of minibatch_size \(4\)"),
    ({"algo": "a2c"}, "algo must be one of"),
    ({"kl_estimator": "k2"}, "kl_estimator must be one of"),
    ({"device": "gpu"}, "device must be None .CUDA when present., 'cpu' or 'cuda'"),
])
def test_bad_config_values_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(tmp_path, **overrides)


def test_unknown_env_id_lists_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown env id 'textgym/Nope-v0'.*textgym/Sentiment-v0"):
        Trainer(small_config(tmp_path, env_id="textgym/Nope-v0"), progress=False)


def run_two_processes(out: Path, *args: str) -> None:
    worker = Path(__file__).parent / "distributed_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out.mkdir()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                    str(worker), str(out), *args], check=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-processes") / "ddp"
    run_two_processes(out)
    return out


@pytest.mark.slow
def test_two_processes_keep_identical_weights(ddp_run):
    """DDP over gloo: each process rolls out its own envs; all-reduced gradients keep the weights equal."""
    tmp_path = ddp_run
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    initial = load_file(tmp_path / "initial.safetensors")
    assert any(not torch.equal(ranks[0][k], initial[k]) for k in initial), "no update happened"
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    rollouts = json.loads((tmp_path / "completions.json").read_text())
    assert rollouts["0"] != rollouts["1"], "both processes rolled out the same episodes"
    assert rollouts["moments0"] == rollouts["moments1"] and rollouts["moments0"]["count"] > 0, \
        "PPO's return statistics must merge both processes' episodes"


@pytest.mark.slow
def test_fsdp_over_two_processes_trains_the_same_weights_as_ddp(ddp_run, tmp_path):
    """FSDP2 over gloo shards the weights, gradients and AdamW state; with the same rollouts (the same
    seeds per process) the gathered weights after an iteration equal DDP's, which keeps every
    process's whole copy. The run also checkpoints (gathered) and writes its model, so those paths
    run sharded.

    One exception: the attention's key bias has a zero gradient (a softmax ignores a shift shared by
    every key), so its gradient is float noise, which differs with the order of the reductions, and
    Adam turns noise into steps of size lr. Those 192 entries per layer are compared at 2 lr."""
    run_two_processes(tmp_path / "fsdp", "fsdp")
    fsdp = load_file(tmp_path / "fsdp" / "rank0.safetensors")  # gathered on the main process
    ddp, initial = load_file(ddp_run / "rank0.safetensors"), load_file(ddp_run / "initial.safetensors")
    assert fsdp.keys() == ddp.keys() == initial.keys()
    hidden = initial["lm.transformer.wte.weight"].shape[1]
    for name in ddp:
        difference = (fsdp[name] - ddp[name]).abs()
        if name.endswith("attn.c_attn.bias"):
            assert difference[hidden : 2 * hidden].max() <= 2 * 1e-3 * 4, name  # 4 Adam steps at lr 1e-3
            difference = torch.cat([difference[:hidden], difference[2 * hidden :]])
        assert difference.max() <= 1e-5, f"{name}: FSDP and DDP differ by {difference.max():.2e}"
    assert json.loads((tmp_path / "fsdp" / "completions.json").read_text())["0"] == \
        json.loads((ddp_run / "completions.json").read_text())["0"]
    resumed = Trainer.resume(tmp_path / "fsdp" / "run", progress=False)  # the gathered checkpoint loads unsharded
    for name, tensor in trainable_state(resumed.policy).items():
        assert torch.equal(tensor, fsdp[name]), name
    assert (tmp_path / "fsdp" / "run" / "model" / "model.safetensors").is_file()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CI has no GPU; a GPU machine runs both


@pytest.mark.parametrize("device", DEVICES)
def test_a_sharded_policy_trains_like_the_unsharded_one(device):
    """FSDP2's mechanics in one process (gloo on CPU; NCCL on CUDA, under the trainer's bf16 autocast
    there): three SGD steps through ``shard`` and ``full_weights`` give the unsharded policy's
    weights, to within 1% of each tensor's update (bf16 rounding; a lost or doubled update is 100%).
    One process shards nothing away; the two-process test above checks the splitting."""
    import torch.distributed as dist

    from agents.trainers.sharding import full_weights, shard, whole

    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method="tcp://127.0.0.1:29547",
                            rank=0, world_size=1, device_id=torch.device(device, 0) if device == "cuda" else None)
    try:
        torch.manual_seed(0)
        ids = torch.randint(3, 200, (4, 12), device=device)
        initial = TokenPolicy.load("tiny", with_value=True).to(device)
        policies = [TokenPolicy.load("tiny", with_value=True).to(device) for _ in range(2)]
        shard(policies[1])
        for policy in policies:
            optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
            for _ in range(3):
                out = policy(ids, torch.ones_like(ids), 6)
                (out.values.square().mean() - out.logprobs.mean() - 0.01 * out.entropy.mean()).backward()
                optimizer.step()
                optimizer.zero_grad()
        with full_weights(policies[1]):
            sharded = {name: whole(p).detach().clone() for name, p in policies[1].named_parameters()}
        for (name, p), p0 in zip(policies[0].named_parameters(), initial.parameters()):
            update, difference = (p - p0).abs().max().item(), (sharded[name] - p).abs().max().item()
            assert difference <= 0.01 * update + 1e-7, f"{name}: sharded differs by {difference:.2e}, update {update:.2e}"
        assert any(not torch.equal(p, p0) for p, p0 in zip(policies[0].parameters(), initial.parameters()))
    finally:
        dist.destroy_process_group()


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device is 'cuda' but torch sees no CUDA device"):
        small_config(tmp_path, device="cuda")


def test_rows_longer_than_the_model_s_positions_are_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"rows hold up to 308 tokens .* has 256 positions"):
        Trainer(small_config(tmp_path, env_kwargs={"max_new_tokens": 300}), progress=False)


def test_chunked_logprobs_match_the_full_logits_and_their_gradients(monkeypatch):
    """The trainer's log-probs never hold a batch's logits; values and gradients are unchanged."""
    import agents.lm

    policy = TokenPolicy.load("tiny", with_value=False)
    ids = torch.randint(5, 2000, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    logits = policy.lm(input_ids=ids, attention_mask=mask).logits[:, -7:-1]
    expected = agents.lm.token_logprobs(policy.action_logits(logits), ids[:, -6:])
    (expected[0].sum() + expected[1].sum()).backward()
    expected_grad = policy.lm.get_output_embeddings().weight.grad.clone()
    policy.zero_grad()
    monkeypatch.setattr(agents.lm, "LOGITS_PER_CHUNK", 5 * policy.vocab)  # several chunks of 5 rows
    out = policy(ids, mask, 6)
    (out.logprobs.sum() + out.entropy.sum()).backward()
    torch.testing.assert_close(out.logprobs, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.entropy, expected[1], atol=1e-5, rtol=1e-5)
    # Chunking reorders the float32 sums behind each LM-head gradient element, whose terms reach the largest
    # element's size (about 40 here): the rounding is a few ulps of that (2.6e-5 seen over 30 seeds), while a
    # wrong chunk boundary would be off by the size of a term.
    scale = expected_grad.abs().max().item()
    grad = policy.lm.get_output_embeddings().weight.grad
    torch.testing.assert_close(grad, expected_grad, atol=2e-6 * scale, rtol=1e-4)


@pytest.mark.parametrize("rows_per_chunk, head_calls", [(100, 1), (5, 2 * 4)])
def test_the_lm_head_runs_again_in_the_backward_pass_only_when_the_rows_need_several_chunks(
        monkeypatch, rows_per_chunk, head_calls):
    import agents.lm

    head, calls = torch.nn.Linear(8, 50, bias=False), []
    head.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(agents.lm, "LOGITS_PER_CHUNK", rows_per_chunk * 50)
    hidden = torch.randn(20, 8, requires_grad=True)
    logprobs, entropy = agents.lm.chunked_logprobs(hidden, head, torch.randint(0, 50, (20,)), lambda x, rows: x)
    (logprobs.sum() + entropy.sum()).backward()
    assert len(calls) == head_calls  # one chunk of 20 rows; or 4 chunks of 5, each run again


@pytest.mark.parametrize("entropy_grad", [True, False])
def test_a_loss_without_the_entropy_leaves_nothing_saved_for_it(entropy_grad):
    """GRPO's loss leaves the entropy out: what autograd saved for it would live as long as the outputs."""
    import agents.lm

    logits, tokens = torch.randn(6, 50, requires_grad=True), torch.randint(0, 50, (6,))
    packed, unpacked = [], set()

    def pack(tensor: torch.Tensor) -> int:
        packed.append(tensor)
        return len(packed) - 1

    def unpack(i: int) -> torch.Tensor:
        unpacked.add(i)
        return packed[i]

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        logprobs, entropy = agents.lm.token_logprobs(logits, tokens, entropy_grad)
    logprobs.sum().backward()
    never_used = [t for i, t in enumerate(packed) if i not in unpacked and t.shape == logits.shape]
    assert bool(never_used) == entropy_grad == entropy.requires_grad
    p = logits.detach().softmax(-1)
    torch.testing.assert_close(entropy.detach(), -(p * p.log()).sum(-1))
    assert PPO(TrainConfig(ent_coef=0.01)).trains_entropy and not PPO(TrainConfig()).trains_entropy
    assert not GRPO(TrainConfig(algo="grpo")).trains_entropy


def test_gradient_checkpointing_recomputes_the_layers_and_trains_the_same_weights(tmp_path):
    """Checkpointed layers run again in the backward pass; sampling keeps its KV cache (no grad there)
    and an iteration's weights are those of a run that keeps the activations."""
    runs = {flag: Trainer(small_config(tmp_path / str(flag), gradient_checkpointing=flag), progress=False)
            for flag in (False, True)}
    attention_calls = {flag: 0 for flag in runs}
    for flag, trainer in runs.items():
        def count(*_, flag=flag):
            attention_calls[flag] += 1
        trainer.policy.lm.transformer.h[0].attn.register_forward_hook(count)
        trainer.iterate()
    assert attention_calls[True] > attention_calls[False]
    plain, checkpointed = (runs[flag].policy.state_dict() for flag in (False, True))
    for name, weight in plain.items():
        torch.testing.assert_close(checkpointed[name], weight, atol=1e-5, rtol=1e-4, msg=name)


FRAGMENTED_HEAP = """
import sys, torch
from agents.trainers.allocator import fix_mmap_threshold
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "fix":
    assert fix_mmap_threshold()
x = torch.ones(16 * 2**20 // 4); del x  # a freed 16 MiB block: glibc's dynamic threshold rises to 16 MiB
blocks = [torch.ones(8 * 2**20 // 4) for _ in range(40)]  # 8 MiB each
before = rss_mib()
del blocks[::2]  # 160 MiB freed, each a hole between two blocks that stay
print(rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc; RSS read from /proc")
def test_a_fixed_mmap_threshold_returns_freed_blocks_to_the_os():
    from agents.trainers.allocator import USER_SETTINGS

    def rss_change_mib(mode: str) -> float:
        """How the process's RSS moved when 160 MiB of it was freed."""
        out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP, mode], capture_output=True, text=True, check=True,
                             env={k: v for k, v in os.environ.items() if k not in USER_SETTINGS},
                             cwd=Path(__file__).parent.parent)
        return float(out.stdout.split()[-1])

    assert rss_change_mib("fix") < -150  # returned
    assert rss_change_mib("default") > -10  # glibc's default keeps the holes


@pytest.mark.parametrize("release", [True, False])
def test_the_trainer_fixes_the_threshold_on_cpu_unless_told_not_to(tmp_path, monkeypatch, release):
    calls = []
    monkeypatch.setattr("agents.trainers.trainer.fix_mmap_threshold", lambda: calls.append(1))
    Trainer(small_config(tmp_path, release_freed_memory=release), progress=False)
    assert len(calls) == release


def test_release_freed_memory_stands_aside_for_the_users_own_setting(monkeypatch):
    from agents.trainers.allocator import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not fix_mmap_threshold()
