"""The token-level text-generation MDP: a single env and its batched vector twin, and conversations."""

from textgym.envs.core import Scorer, TextGenerationConfig, TextMDP
from textgym.envs.multi_turn import LanguageModelUser, MultiTurnTextEnv, MultiTurnTextVectorEnv, Scripted
from textgym.envs.prompts import load_prompts
from textgym.envs.text_generation import TextGenerationEnv
from textgym.envs.vector import TextGenerationVectorEnv

__all__ = ["LanguageModelUser", "MultiTurnTextEnv", "MultiTurnTextVectorEnv", "Scorer", "TextGenerationConfig", "TextGenerationEnv", "TextGenerationVectorEnv", "TextMDP", "Scripted", "load_prompts"]
