"""Run by tests/test_trainers.py under ``torch.distributed.run`` with two CPU processes (gloo):
``distributed_worker.py OUT [fsdp] [cuda]``. On a GPU machine ``cuda`` runs it there (NCCL), with as
many processes as ``torch.distributed.run`` starts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from agents.trainers import TrainConfig, Trainer
from agents.trainers.checkpoint import trainable_state


def main(out: Path, fsdp: bool, device: str) -> None:
    config = TrainConfig(env_id="textgym/Arithmetic-v0", steps=20, num_envs=8, minibatch_size=4, epochs=2,
                         lr=1e-3, out=str(out / "run"), device=device, fsdp=fsdp)  # steps=20: one iteration
    trainer = Trainer(config, progress=False)
    world = int(os.environ["WORLD_SIZE"])
    assert trainer.world == world, f"expected {world} processes, got {trainer.world}"
    weights = trainable_state(trainer.policy)  # sharded: every process gathers
    if trainer.rank == 0:
        save_file(weights, out / "initial.safetensors")
    collect, seen = trainer.rollout.collect, []

    def recording_collect(*args, **kwargs):
        batch = collect(*args, **kwargs)
        seen.extend(batch.completions)
        return batch

    trainer.rollout.collect = recording_collect
    trainer.train()
    save_file(trainable_state(trainer.policy), out / f"rank{trainer.rank}.safetensors")
    record = out / "completions.json"
    trainer.accelerator.wait_for_everyone()
    for rank in range(world):  # one writer at a time
        if trainer.rank == rank:
            done = json.loads(record.read_text()) if record.exists() else {}
            record.write_text(json.dumps(done | {str(rank): seen, f"moments{rank}": trainer.algo.returns.state_dict()}))
        trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), fsdp="fsdp" in sys.argv[2:], device="cuda" if "cuda" in sys.argv[2:] else "cpu")
