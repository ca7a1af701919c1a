"""The token-level text-generation MDP: a single env and its batched vector twin."""

from textgym.envs.core import Scorer, TextGenerationConfig, TextMDP
from textgym.envs.prompts import load_prompts
from textgym.envs.text_generation import TextGenerationEnv
from textgym.envs.vector import TextGenerationVectorEnv

__all__ = ["Scorer", "TextGenerationConfig", "TextGenerationEnv", "TextGenerationVectorEnv", "TextMDP", "load_prompts"]
