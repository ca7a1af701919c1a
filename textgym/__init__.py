"""textgym: text generation as a token-level reinforcement-learning problem, in the Gymnasium API.

Importing textgym registers its environments under the ``textgym/`` namespace.

Example:
    >>> import gymnasium as gym, textgym
    >>> env = gym.make("textgym/TextGeneration-v0")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), int(env.action_space.n) == len(env.unwrapped.tokenizer)
    (['attention_mask', 'input_ids'], True)
"""

from __future__ import annotations

import gymnasium as gym

from textgym.data import prompt_file

__version__ = "0.1.0"


# The scored tasks of textgym.tasks; entry points are strings, so nothing loads before make().
TASK_NAMES = ("Sentiment", "Keywords", "Summarize", "Arithmetic", "Preference")
CONVERSATION_NAMES = ("GuessNumber", "Calculator", "Customer")  # multi-turn: textgym.tasks.conversations


def _register() -> None:
    if "textgym/TextGeneration-v0" in gym.registry:  # importlib.reload must not warn about re-registration
        return
    gym.register(
        id="textgym/TextGeneration-v0",
        entry_point="textgym.envs:TextGenerationEnv",
        vector_entry_point="textgym.envs:TextGenerationVectorEnv",
        kwargs={
            "tokenizer": "tiny",
            "prompts": str(prompt_file("text_generation")),
            "max_prompt_tokens": 64,
            "max_new_tokens": 48,
        },
    )
    for name in TASK_NAMES:
        gym.register(
            id=f"textgym/{name}-v0",
            entry_point="textgym.tasks:make_task_env",
            vector_entry_point="textgym.tasks:make_task_vector_env",
            kwargs={"task": name},
        )
    for name in CONVERSATION_NAMES:
        gym.register(id=f"textgym/{name}-v0", entry_point="textgym.tasks.conversations:make_conversation_env",
                     vector_entry_point="textgym.tasks.conversations:make_conversation_vector_env",
                     kwargs={"game": name})


_register()
