"""Prompt sets: a list of strings, a ``.txt`` / ``.jsonl`` / ``.csv`` file, or a ``datasets.Dataset``.

Files and datasets take the text from a ``"prompt"`` column, else a ``"text"`` column.

Example:
    >>> from textgym.envs.prompts import load_prompts
    >>> load_prompts(["Film review:", "12 + 30 ="])
    ['Film review:', '12 + 30 =']
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

PromptSource = Union[Sequence[str], str, Path, Any]  # Any: a datasets.Dataset (an optional extra)
TEXT_COLUMNS = ("prompt", "text")
SUFFIXES = (".txt", ".jsonl", ".csv")


def _text_column(columns: Iterable[str], where: str) -> str:
    columns = list(columns)
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    raise ValueError(f"{where} has columns {columns}; expected a column named one of {list(TEXT_COLUMNS)}")


def _column(rows: list[Mapping[str, Any]], columns: Iterable[str], where: str) -> list[str]:
    name = _text_column(columns, where)
    return [row.get(name) for row in rows]


def _read_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    if path.suffix == ".txt":
        return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{str(path)!r}: every JSONL line must be an object with a 'prompt' or 'text' key")
        return _column(rows, sorted({key for row in rows for key in row}), repr(str(path)))
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return _column(list(reader), reader.fieldnames or [], repr(str(path)))
    raise ValueError(f"prompt file {str(path)!r} has suffix {path.suffix!r}; expected one of {list(SUFFIXES)}")


def load_prompts(source: PromptSource) -> list[str]:
    """Read prompts from ``source`` and check that there is at least one and that all are strings."""
    if isinstance(source, (str, Path)):
        prompts = _read_file(Path(source))
    elif hasattr(source, "column_names") and hasattr(source, "__getitem__"):  # a datasets.Dataset
        prompts = list(source[_text_column(source.column_names, "the dataset")])
    elif isinstance(source, Sequence):
        prompts = list(source)
    else:
        raise TypeError(
            f"prompts must be a list of strings, a path to a {'/'.join(SUFFIXES)} file or a datasets.Dataset, "
            f"got {type(source).__name__}"
        )
    if not prompts:
        raise ValueError(f"the prompt set {source!r} is empty; expected at least one prompt")
    bad = next((p for p in prompts if not isinstance(p, str)), None)
    if bad is not None:
        raise TypeError(f"every prompt must be a str, got {type(bad).__name__}: {bad!r}")
    return prompts
