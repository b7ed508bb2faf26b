"""A real table through every notebook: the IBM Telco sample (shipped in data/external/telco_churn) declared by
its run configuration (src/helpers/config/presets/telco.yaml) runs 00 -> 08 through papermill, exactly as
``make reports CONFIG=src/helpers/config/presets/telco.yaml`` does, into a temporary folder.

Every notebook must finish (stages whose inputs the table lacks say so and go on), index.html must list every
notebook as finished, and metrics.json must hold an entry for each. Slow: the whole pipeline on 7,043 customers
(a few minutes on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from helpers import paths
from helpers.config import PRESETS

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("run_notebooks", paths.REPO_ROOT / "scripts" / "run_notebooks.py")
R = importlib.util.module_from_spec(spec)
sys.modules.setdefault("run_notebooks", R)
spec.loader.exec_module(R)

TELCO = PRESETS / "telco.yaml"


def test_every_notebook_runs_on_the_telco_table(tmp_path, venv_kernel):
    data, out = tmp_path / "data", tmp_path / "reports"
    rc = R.main(["--kernel", venv_kernel, "--data", str(data), "--out", str(out), "--config", str(TELCO),
                 "--n-users", "2000", "--seed", "7", "--keep-going", "--no-progress", "--no-screenshots"])
    runs = list(R.last_runs)
    stems = [nb.stem for nb in R.numbered_notebooks()]
    assert [r["stem"] for r in runs] == stems
    failed = [f"{r['stem']} at {R.cell_label(r['failure'])}: {R.short_message(r['failure'], 300)}"
              for r in runs if r["status"] == "failed"]
    assert not failed, "notebooks failed on the Telco configuration:\n" + "\n".join(failed)
    assert rc == 0 and all(r["status"] == "ok" for r in runs)
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "Every selected notebook finished" in index and "Run failed" not in index
    for stem in stems:
        assert f">{stem}</a>" in index, f"index.html does not link {stem}"
    m = json.loads((out / "metrics.json").read_text())
    assert set(stems) <= set(m), f"no metrics.json entry for {sorted(set(stems) - set(m))}"
    assert m["01_ingest"]["n_users"] == 7043  # the shipped table, not a synthetic panel
