"""The README stays true: its example runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_examples_run(capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
        assert capsys.readouterr().out.strip()  # each example prints what it shows


def test_readme_has_two_setup_commands_and_ci_runs_the_test_command():
    commands = [line.split("#")[0].strip() for line in code_blocks("bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("python -m textgym.demo")
    assert tests.endswith("python -m pytest -q")
    assert tests in (ROOT / ".ci" / "run").read_text()
