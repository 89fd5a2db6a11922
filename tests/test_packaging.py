"""The two dependency files agree, and CI runs the README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r): r.replace(" ", "") for r in wanted}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            found.update({_name(r): r.replace(" ", "") for r in entry["pip"] if not r.startswith("-e")})
        elif _name(entry) not in ("python", "pip"):
            found[_name(entry)] = entry.replace(" ", "")
    return found


def test_environment_yml_ListsTheSamePackagesAsPyproject():
    assert _environment_requirements().keys() == _pyproject_requirements().keys()


def test_environment_yml_PinsTheSameVersionsAsPyproject():
    env, project = _environment_requirements(), _pyproject_requirements()
    # conda writes one "=" where pip writes "=="; the constraint must be the same otherwise.
    assert {k: v.replace("==", "=") for k, v in env.items()} == {
        k: v.replace("==", "=") for k, v in project.items()
    }


def test_environment_yml_UsesPython311AndInstallsThePackageEditable():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(e for e in env["dependencies"] if isinstance(e, dict))["pip"]
    assert "-e .[dev]" in pip_section


def test_ci_RunsTheTestCommandFromReadme():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash run.sh test" in readme
    assert "bash run.sh lab" in readme
    assert re.search(r"^bash run\.sh test\b", ci, flags=re.MULTILINE)


def test_pyproject_UsesNativeKeras3NotTfKeras():
    assert "tf-keras" not in _pyproject_requirements()
    assert _pyproject_requirements()["tensorflow"] == "tensorflow==2.21.*"


def test_run_sh_dashboard_ABadCullSetting_IsRefusedBeforeAnyWork():
    import os
    import subprocess

    env = dict(os.environ, WORKBENCH_CULL_SECONDS="10m")
    done = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "dashboard"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "WORKBENCH_CULL_SECONDS must be a whole number of seconds (0: never cull), got '10m'" in (
        done.stderr
    )
