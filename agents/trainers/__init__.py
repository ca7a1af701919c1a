"""Batched trainers over textgym vector envs: PPO, GRPO and RLOO on CPU, CUDA or many processes.

Example:
    >>> import tempfile
    >>> from agents.trainers import TrainConfig, Trainer
    >>> config = TrainConfig(env_id="textgym/Arithmetic-v0", algo="grpo", steps=48, num_envs=8,
    ...                      minibatch_size=8, out=tempfile.mkdtemp(), device="cpu")
    >>> (Trainer(config, progress=False).train().parent / "metrics.csv").exists()
    True
"""

from agents.trainers.config import TrainConfig
from agents.trainers.algorithms import ALGORITHMS
from agents.trainers.trainer import Trainer, TrainingDiverged

__all__ = ["ALGORITHMS", "TrainConfig", "Trainer", "TrainingDiverged"]
