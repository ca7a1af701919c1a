"""Every lower bound in pyproject.toml (dependencies and the test extras) is the version installed:
run in the lowest-direct venv, so a bound that the resolver had to lift fails here, naming it."""

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
wrong = []
for line in project["dependencies"] + project["optional-dependencies"]["test"]:
    requirement = Requirement(line)
    bound = next(Version(s.version) for s in requirement.specifier if s.operator == ">=")
    installed = Version(version(requirement.name))
    if Version(installed.base_version) != bound:  # 2.13.0+cpu is torch 2.13.0, and 1.1 is 1.1.0
        wrong.append(f"{requirement.name}>={bound} but the lowest-direct resolution installed {installed}")
if wrong:
    sys.exit("pyproject.toml's lower bounds are not what CI tests; raise them:\n  " + "\n  ".join(wrong))
print(f"{len(project['dependencies'])} dependencies and the test extras sit at their lower bounds")
