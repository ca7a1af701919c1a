"""Agents that solve textgym envs: the SB3 LLM actor-critic policy and the batched trainers.

Nothing is here yet: the policy and trainers land with their own issues. ``textgym`` never
imports ``agents``; ``agents`` builds on ``textgym``.
"""
