"""The README stays true: its example runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_example_runs(capsys):
    exec(compile(code_blocks("python")[0], "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()  # it printed a completion and its score


def test_readme_has_two_setup_commands_and_ci_runs_the_test_command():
    commands = [line.split("#")[0].strip() for line in code_blocks("bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("python -m textgym.demo")
    assert tests.endswith("python -m pytest -q")
    assert tests in (ROOT / ".ci" / "run").read_text()
