"""The batched trainer on conversations: the turn-by-turn rollout, GAE over the policy's tokens only,
and a loss that the other side's tokens never reach."""

import copy
import json

import gymnasium as gym
import pytest
import torch

import textgym  # noqa: F401
from agents.trainers import TrainConfig, Trainer
from agents.trainers.ppo import gae
from agents.trainers.rollout import ConversationRollout, rollout_for
from textgym.models.sampling import Sampling
from textgym.tasks.conversations import play

from tests.helpers import TurnSampler


def test_a_conversation_rollout_keeps_replies_as_context_and_each_turn_score_on_its_token():
    text = "What is your order number?"
    envs = gym.make_vec("textgym/Customer-v0", num_envs=2)
    sampler = TurnSampler(text, envs.envs[0])
    rollout = rollout_for(envs, Sampling())
    assert isinstance(rollout, ConversationRollout)
    batch = rollout.collect(sampler, seeds=[3, 4], generator=torch.Generator())
    width, end = batch.completion_tokens, envs.envs[0].unwrapped.end_of_turn_id
    for i, seed in enumerate([3, 4]):
        expected = play(gym.make("textgym/Customer-v0"), seed, lambda messages: text)
        acts = batch.completion_mask[i] == 1
        rest = batch.ids[i, -width:][batch.mask[i, -width:] == 1]
        policy = batch.ids[i, -width:][acts]
        assert policy.tolist() == sampler.turn * len(expected["turn_scores"])
        assert len(rest) > len(policy)  # the customer's replies are context in the row
        rewards = batch.rewards[i][acts]
        assert rewards[policy == end].tolist() == expected["turn_scores"]
        assert (rewards[policy != end] == 0).all() and (batch.rewards[i][~acts] == 0).all()
        assert batch.scores[i].item() == pytest.approx(expected["score"])
        assert batch.prompts[i].startswith("<|system|>") and "<|user|>" in batch.completions[i]


def test_a_conversation_env_in_another_vector_env_is_a_clear_error():
    envs = gym.make_vec("textgym/GuessNumber-v0", num_envs=2, vectorization_mode="async")
    with pytest.raises(ValueError, match="single envs of a SyncVectorEnv, got AsyncVectorEnv"):
        rollout_for(envs, Sampling())
    envs.close()


def test_gae_skips_the_tokens_outside_the_mask_as_if_they_were_not_there():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 9, generator=generator), torch.randn(3, 9, generator=generator)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 1, 0], [1, 0, 1, 0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0]]).float()
    holes = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for row in range(3):
        kept = mask[row] == 1
        packed = gae(rewards[row, kept][None], values[row, kept][None], torch.ones(1, int(kept.sum())), 0.9, 0.8)
        torch.testing.assert_close(holes[row, kept], packed[0])
        assert (holes[row, ~kept] == 0).all()


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo"])
def test_the_other_sides_tokens_contribute_nothing_to_the_loss(algo, tmp_path):
    """The loss's gradient is zero at every reply token, and what the old policy and the reference
    said about reply tokens (log-probs, values) changes neither the targets at the policy's tokens
    nor the loss."""
    config = TrainConfig(env_id="textgym/GuessNumber-v0", algo=algo, num_envs=4, minibatch_size=4, group_size=2,
                         ent_coef=0.01, out=str(tmp_path / "run"), device="cpu")
    trainer = Trainer(config, progress=False)
    batch = trainer.rollout.collect(trainer.sampler, trainer._seed_iteration(), trainer.generator)
    width, acts = batch.completion_tokens, batch.completion_mask
    replies = (acts == 0) & (batch.mask[:, -width:] == 1)
    assert replies.any() and (acts == 1).any()
    with torch.no_grad():
        old = trainer.policy(batch.ids, batch.mask, width)
        ref = trainer.reference.logprobs(batch.ids, batch.mask, width)
    noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(1)) * 5 * replies

    start = copy.deepcopy(trainer.algo.state_dict())  # PPO's running return moments move with each call

    def loss_and_grads(old, ref):
        trainer.algo.load_state_dict(copy.deepcopy(start))
        targets = trainer.algo.targets(batch, old, batch.rewards, ref)
        new = trainer.policy(batch.ids, batch.mask, width)
        outputs = [t for t in (new.logprobs, new.entropy, new.values) if t is not None]
        for t in outputs:
            t.retain_grad()
        loss, _ = trainer.algo.loss(new, targets, acts, 0.1)
        trainer.policy.zero_grad()
        loss.backward()
        return targets, loss, outputs

    targets, loss, outputs = loss_and_grads(old, ref)
    for t in outputs:  # GRPO and RLOO's losses have no entropy term: no gradient at all reaches it
        assert t.grad is None or (t.grad[acts == 0] == 0).all()
    assert outputs[0].grad[acts == 1].abs().sum() > 0
    corrupted = old._replace(logprobs=old.logprobs + noise, values=None if old.values is None else old.values + noise)
    targets2, loss2, _ = loss_and_grads(corrupted, ref + noise)
    torch.testing.assert_close(loss2, loss)
    for key in targets:
        torch.testing.assert_close(targets2[key] * acts, targets[key] * acts)


def test_the_trainer_trains_on_a_game_and_groups_whole_episodes(tmp_path):
    config = TrainConfig(env_id="textgym/Calculator-v0", algo="grpo", steps=60, num_envs=4, minibatch_size=4,
                         group_size=2, sample_prompts=3, kl_estimator="k3", out=str(tmp_path / "run"), device="cpu")
    trainer = Trainer(config, progress=False)
    batch = trainer.rollout.collect(trainer.sampler, trainer._seed_iteration(), trainer.generator)
    assert batch.prompts[0] == batch.prompts[1] and batch.prompts[2] == batch.prompts[3]
    assert batch.prompts[0] != batch.prompts[2]  # a group is one question; groups differ
    trainer.train()
    samples = json.loads((tmp_path / "run" / "samples.json").read_text())
    assert len(samples["after"]) == 3 and all(s["prompt"].startswith("<|user|>What is ") for s in samples["after"])
    assert trainer.steps >= 60 and (tmp_path / "run" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_group_methods_credit_a_conversation_as_a_whole_and_a_completion_token_by_token(algo):
    """Two lost games of one group, the first worse (three non-numbers, then a miss): in a
    conversation every token of the worse game gets the same negative advantage; token by token its
    last turn, a miss like the other game's, would be measured against what the group still had to
    earn at that position, and get none."""
    from types import SimpleNamespace

    from agents.trainers.algorithms import ALGORITHMS

    config = TrainConfig(algo=algo, group_size=2, num_envs=2, minibatch_size=2, whiten_advantages=False)
    rewards = torch.tensor([[-0.2, -0.2, -0.2, -0.1], [-0.1, -0.1, -0.1, -0.1]])
    mask = torch.ones(2, 4)
    old = SimpleNamespace(logprobs=torch.zeros(2, 4))
    advantages = {
        conversation: ALGORITHMS[algo](config).targets(
            SimpleNamespace(completion_mask=mask, conversation=conversation), old, rewards, None)["advantages"]
        for conversation in (True, False)}
    worse = advantages[True][0]
    assert (worse < 0).all() and torch.allclose(worse, worse[0].expand(4))
    assert advantages[False][0, -1].abs() < 1e-6 < advantages[True][0, -1].abs()
