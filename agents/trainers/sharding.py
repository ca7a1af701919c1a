"""FSDP2 for the batched trainer: the policy's weights, gradients and optimizer state sharded
across processes (``TrainConfig.fsdp``), on GPUs over NCCL or on CPUs over gloo.

Each transformer block (the classes in the LM's ``_no_split_modules``), then the LM, and the value
head on its own, go through ``torch.distributed.fsdp.fully_shard``. The LM is a root because the
sampler runs it without the policy around it (and FSDP wants a root's forward to come first).
Training forwards and backwards gather and scatter the weights block by block, in the same order
on every process. Sampling is not so: each process's envs end after their own number of tokens,
so a rollout's forward passes differ in number between processes. ``full_weights`` therefore gathers every block once, on every process,
before a rollout (and before the main process alone samples or saves), and frees them after.

A checkpoint holds whole tensors: ``agents.trainers.checkpoint`` gathers them with ``FULL`` and
shards them back on loading, so a sharded run's checkpoint also resumes in one process.

Example (one process: the shards are the whole tensors):
    >>> import torch, torch.distributed as dist
    >>> from agents.trainers.policy import TokenPolicy
    >>> dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29541", rank=0, world_size=1)
    >>> policy = shard(TokenPolicy.load("tiny", with_value=True))
    >>> ids = torch.tensor([[20, 21, 22, 23]])
    >>> type(policy.value_head.weight).__name__, is_sharded(policy)
    ('DTensor', True)
    >>> with full_weights(policy):
    ...     type(policy.value_head.weight).__name__, policy(ids, torch.ones_like(ids), 2).values.shape
    ('Parameter', torch.Size([1, 2]))
    >>> dist.destroy_process_group()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.distributed.fsdp import FSDPModule, fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on the CPU


def shard(policy: nn.Module) -> nn.Module:
    """Shard ``policy`` (a ``TokenPolicy``) in place, block by block; it is returned."""
    blocks = set(getattr(policy.lm, "_no_split_modules", None) or ())
    if not blocks:
        raise ValueError(f"fsdp: model {type(policy.lm).__name__} names no transformer blocks (_no_split_modules), "
                         "so it cannot be sharded block by block; train it without fsdp")
    # On the policy's own device: fully_shard's default mesh is the machine's accelerator, which
    # would move a CPU run's weights to a GPU that happens to be there.
    mesh = init_device_mesh(next(policy.parameters()).device.type, (dist.get_world_size(),))
    for module in policy.lm.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    # The LM's own weights (embeddings, tied head, final norm) stay gathered after its forward: the
    # log-probs run its head on the hidden states afterwards, a chunk at a time.
    fully_shard(policy.lm, mesh=mesh, reshard_after_forward=False)
    if policy.value_head is not None:
        fully_shard(policy.value_head, mesh=mesh)
    return policy


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` or any module in it was sharded."""
    return any(isinstance(m, FSDPModule) for m in module.modules())


@contextmanager
def full_weights(policy: nn.Module) -> Iterator[None]:
    """Within the block, every process holds the ``shard``-ed ``policy``'s whole weights and its
    forwards run no collective, so processes may run different numbers of them. A no-op for an
    unsharded policy."""
    sharded = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    for m in sharded:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(m is not policy.lm, recurse=False)  # as ``shard`` set them


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) result, such as a gradient norm, as one ordinary tensor."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
