"""Immediate (per-token) rewards: components, and the adapters that add them to envs.

``TokenRewardWrapper(env, *components)`` serves a single env, ``VectorTokenRewardWrapper(envs,
*components)`` a vector env; ``token_rewards(env, *components)`` picks the right one. The
components are ``PotentialShaping``, ``ReferenceLogProb``, ``RepetitionPenalty``,
``LengthPenalty``, ``TargetLength``, ``MissingEOSPenalty`` and ``KeywordHit``; each adds
``weight * value`` and reports it in ``info["reward_components"]``, so R_total = Σ λ_i R_i.
Normalize or clip the total with gymnasium's ``NormalizeReward`` / ``ClipReward``.
"""

from __future__ import annotations

import gymnasium as gym

from textgym.wrappers.adapters import TokenRewardWrapper, VectorTokenRewardWrapper
from textgym.wrappers.base import Episodes, TokenReward, Transition
from textgym.wrappers.components import (
    KeywordHit,
    LengthPenalty,
    MissingEOSPenalty,
    PotentialShaping,
    RepetitionPenalty,
    TargetLength,
)
from textgym.wrappers.reference import ReferenceLogProb


def token_rewards(env: gym.Env | gym.vector.VectorEnv, *components: TokenReward):
    """Wrap ``env`` with the adapter that fits it: single env or vector env."""
    if isinstance(env, gym.vector.VectorEnv):
        return VectorTokenRewardWrapper(env, *components)
    return TokenRewardWrapper(env, *components)


__all__ = [
    "Episodes", "KeywordHit", "LengthPenalty", "MissingEOSPenalty", "PotentialShaping", "ReferenceLogProb",
    "RepetitionPenalty", "TargetLength", "TokenReward", "TokenRewardWrapper", "Transition",
    "VectorTokenRewardWrapper", "token_rewards",
]
