"""The README stays true: its example runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


# The README's training snippet runs as written but for its budget: 20,000 env steps take minutes.
SHORTER_BUDGET = {"model.learn(20_000)": "model.n_steps = model.rollout_buffer.buffer_size = 16\nmodel.learn(16)"}


def test_readme_examples_run(capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 3
    for block in blocks:
        for long, short in SHORTER_BUDGET.items():
            block = block.replace(long, short)
        namespace = {"__name__": "readme"}
        exec(compile(block, "README.md", "exec"), namespace)
        assert capsys.readouterr().out.strip() or "model" in namespace  # it printed, or it trained a model


def test_readme_has_two_setup_commands_and_ci_runs_the_test_command():
    commands = [line.split("#")[0].strip() for line in code_blocks("bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("textgym train textgym/Sentiment-v0")
    assert tests.endswith("python -m pytest -q")
    assert tests in (ROOT / ".ci" / "run").read_text()
