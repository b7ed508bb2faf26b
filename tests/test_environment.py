"""environment.yml (conda) and pyproject.toml (pip) declare the same dependencies with the same bounds."""

import re
import tomllib

import yaml

from helpers.paths import REPO_ROOT

CONDA_NAMES = {"python-duckdb": "duckdb"}  # conda-forge package name -> PyPI name


def _split(req: str) -> tuple[str, str]:
    req = req.split("#")[0].strip()
    m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req)  # extras ("ibis-framework[duckdb]") do not exist in conda
    return m.group(1).lower(), m.group(3).replace(" ", "")


def test_conda_and_pip_dependencies_agree():
    py = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = py["optional-dependencies"]
    pip = dict(_split(r) for r in py["dependencies"] + extras["test"] + extras["spark"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = {}
    for d in env["dependencies"]:
        if isinstance(d, str):
            name, spec = _split(d)
            if name not in ("python", "pip"):
                conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == pip
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(p.startswith("-e") for p in pip_section)
