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


def test_make_variables_reach_the_runner():
    """Every make variable of the run configuration becomes the runner option that passes it to notebooks."""
    import subprocess

    r = subprocess.run(["make", "-n", "-s", "reports", "CONFIG=c.yaml", "OBSERVATION_DATE=2014-06-30", "DELIMITER=;",
                        "ENCODING=latin-1", "SEED_OUTCOME=Churn", "SEED_VALUE=Yes", "SEED_IDS=ids.csv",
                        "RMST_TAU_DAYS=730", "DATA=/tmp/d", "OUT=/tmp/o"],
                       cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    line = " ".join(r.stdout.replace("\\\n", " ").split())
    for option in ("--config 'c.yaml'", "--observation-date '2014-06-30'", "--delimiter ';'",
                   "--encoding 'latin-1'", "--seed-outcome 'Churn'", "--seed-value 'Yes'", "--seed-ids 'ids.csv'",
                   "--rmst-tau-days '730'", "--data /tmp/d", "--out /tmp/o"):
        assert option in line, f"make reports does not pass {option}: {line}"
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
