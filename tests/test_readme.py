"""The README and the guides stay true: their Python blocks run, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Training snippets run as written but for their budget: 20,000 env steps take minutes.
SHORTER_BUDGET = {"model.learn(20_000)": "model.n_steps = model.rollout_buffer.buffer_size = 16\nmodel.learn(16)"}


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run(path, capsys):
    """A document's blocks run in order in one namespace, as a reader would paste them."""
    namespace = {"__name__": "docs"}
    for block in code_blocks(path, "python"):
        for long, short in SHORTER_BUDGET.items():
            block = block.replace(long, short)
        exec(compile(block, str(path.relative_to(ROOT)), "exec"), namespace)
        assert capsys.readouterr().out.strip() or "model" in namespace  # it printed, or it trained a model


def test_readme_has_python_examples():
    assert len(code_blocks(ROOT / "README.md", "python")) >= 3


def test_readme_has_two_setup_commands_and_ci_runs_the_test_command():
    commands = [line.split("#")[0].strip() for line in code_blocks(ROOT / "README.md", "bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("textgym train textgym/Sentiment-v0")
    assert tests.endswith("python -m pytest -q")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_links_to_local_files_resolve():
    """Every relative link of the README, the guides and the results page names a file that exists."""
    for path in [*DOCUMENTS, ROOT / "benchmarks" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
