"""Agents that solve textgym envs, built on textgym (``textgym`` never imports ``agents``).

``LLMActorCriticPolicy`` plugs a causal LM into stock stable-baselines3 PPO and
``MaskableLLMActorCriticPolicy`` into sb3-contrib's MaskablePPO; ``save`` / ``load`` keep their
weights in safetensors. ``agents.trainers`` holds the batched PPO, GRPO and RLOO trainers and
``agents.cli`` the ``textgym`` command line.
"""

from agents.policies import LLMActorCriticPolicy, MaskableLLMActorCriticPolicy, load, save

__all__ = ["LLMActorCriticPolicy", "MaskableLLMActorCriticPolicy", "load", "save"]
