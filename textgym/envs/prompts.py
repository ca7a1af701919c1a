"""Prompt sets: a list of strings, a ``.txt`` / ``.jsonl`` / ``.csv`` file, or a ``datasets.Dataset``.

Files and datasets take the prompt from a ``"prompt"`` column, else ``"messages"``, else ``"text"``.
A prompt may also be a conversation, as in TRL's conversational format: a list of messages
``{"role": "system" | "user" | "assistant" | "tool", "content": str}``, which the env renders with
the tokenizer's chat template (``render_chat``).

Example:
    >>> from textgym.envs.prompts import load_prompts
    >>> load_prompts(["Film review:", [{"role": "user", "content": "What is 12 + 30?"}]])
    ['Film review:', [{'role': 'user', 'content': 'What is 12 + 30?'}]]
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from textgym.models.dialogues import ROLES

Message = dict[str, str]
Prompt = Union[str, list[Message]]
PromptSource = Union[Sequence[Prompt], str, Path, Any]  # Any: a datasets.Dataset (an optional extra)
TEXT_COLUMNS = ("prompt", "messages", "text")
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


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, without the byte-order mark that Excel writes; bad bytes are an
    error naming the file and the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({error.reason} at byte {error.start}); save the file as UTF-8") from None


def _json_rows(path: Path, text: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}): {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: every JSONL line must be an object with a 'prompt' or 'text' key, "
                             f"got {line[:80]!r}")
        rows.append(row)
    return rows


def _read_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"prompt file {str(path)!r} has suffix {path.suffix!r}; expected one of {list(SUFFIXES)}")
    text = _read_text(path)  # splitlines() below also ends lines at CRLF
    if path.suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = _json_rows(path, text)
        return _column(rows, sorted({key for row in rows for key in row}), repr(str(path)))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return _column(list(reader), reader.fieldnames or [], repr(str(path)))


def check_messages(messages: Any) -> list[Message]:
    """``messages`` as a list of ``{"role", "content"}`` dicts, or an error naming the bad message."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"a conversation must be a non-empty list of messages, got {messages!r}")
    for message in messages:
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"a message must be a dict with 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"unknown role {message['role']!r} in message {dict(message)!r}; expected one of {list(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {dict(message)!r} has no text content; expected 'content': str")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _check_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template, so conversation prompts "
                         "cannot be rendered; pass prompts as strings or use a tokenizer with a chat_template")


def render_chat(tokenizer: Any, messages: list[Message]) -> str:
    """``messages`` rendered by ``tokenizer``'s chat template, ending in the assistant's generation prompt."""
    _check_template(tokenizer)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_ids(tokenizer: Any, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
    """The token ids of ``render_chat(tokenizer, messages)``, role markers as special tokens (and
    the assistant's generation prompt unless ``add_generation_prompt`` is false)."""
    _check_template(tokenizer)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)  # transformers < 5 returns the list


def load_prompts(source: PromptSource) -> list[Prompt]:
    """Read prompts from ``source`` and check that there is at least one and that each is a string
    or a conversation (``check_messages``)."""
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
    bad = [(i, p) for i, p in enumerate(prompts) if not isinstance(p, (str, list))]
    if bad:
        i, prompt = bad[0]
        raise TypeError(f"every prompt must be a str or a list of messages, got {type(prompt).__name__} at {i}: {prompt!r}")
    return [p if isinstance(p, str) else check_messages(p) for p in prompts]
