"""Prompt sets that ship with textgym, generated from a seed by ``python -m textgym.data``.

Example:
    >>> from textgym.data import prompt_file
    >>> prompt_file("text_generation").name
    'text_generation.txt'
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from textgym.models.corpus import prompt_starts

# name -> (number of prompts, seed) of each shipped set
PROMPT_SETS = {"text_generation": (200, 2024)}


def prompt_file(name: str) -> Path:
    """The path of a shipped prompt set."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; expected one of {sorted(PROMPT_SETS)}")
    return Path(str(resources.files("textgym.data") / f"{name}.txt"))


def generate(name: str) -> list[str]:
    """Regenerate a shipped prompt set from its seed."""
    n, seed = PROMPT_SETS[name]
    return prompt_starts(n, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite the shipped prompt sets from their seeds.")
    parser.parse_args()
    for name in PROMPT_SETS:
        prompt_file(name).write_text("\n".join(generate(name)) + "\n", encoding="utf-8")
        print(f"wrote {prompt_file(name)}")


if __name__ == "__main__":
    main()
