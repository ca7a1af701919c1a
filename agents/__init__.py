"""Agents that solve textgym envs, built on textgym (``textgym`` never imports ``agents``).

``LLMActorCriticPolicy`` plugs a causal LM into stock stable-baselines3 PPO and
``MaskableLLMActorCriticPolicy`` into sb3-contrib's MaskablePPO. The batched trainers come next.
"""

from agents.policies import LLMActorCriticPolicy, MaskableLLMActorCriticPolicy

__all__ = ["LLMActorCriticPolicy", "MaskableLLMActorCriticPolicy"]
