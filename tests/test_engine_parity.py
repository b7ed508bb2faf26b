"""``make reports ENGINE=spark`` parity: notebooks 01 (ingestion) and 07 (affinity) record the same figures in
``metrics.json`` on Spark as on DuckDB for the same seed (relative difference at most 1e-6).

Runs the two notebooks with papermill on the venv's kernel, once per engine, over the same synthetic sources;
the stages in between (02 weights, 04 segments) are replaced by artifacts built from planted truth so the test
stays fast. Slow (two Spark notebook kernels): about a minute.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import artifacts, paths
from helpers.generate import generate_panel, write_sources
from helpers.standin import write_standin_run

pytestmark = pytest.mark.slow
NOTEBOOKS = paths.REPO_ROOT / "notebooks"
ENGINE_PARITY_KEYS = {"01_ingest", "07_affinity"}


def _kernel() -> str:
    """The venv's own kernel (registered by make setup), else one pointing at this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    # compare unresolved paths: a venv's python is a symlink to the base interpreter, which another
    # kernel (without our packages) may also point at
    ours = [name for name, spec in specs.items() if spec["spec"]["argv"][0] == sys.executable]
    if ours:
        return "audience-intel" if "audience-intel" in ours else sorted(ours)[0]
    pytest.fail(f"no Jupyter kernel runs {sys.executable}: run `make setup` (registers 'audience-intel')")


def _run(nb: str, P: paths.Paths, engine: str, kernel: str) -> dict:
    import papermill as pm

    pm.execute_notebook(str(NOTEBOOKS / nb), str(P.reports / nb), kernel_name=kernel, cwd=str(NOTEBOOKS),
                        parameters={"data_dir": str(P.data), "reports_dir": str(P.reports), "engine": engine},
                        progress_bar=False)
    return json.loads(P.metrics.read_text())[Path(nb).stem]


def _assert_same(a: dict, b: dict, stem: str) -> None:
    assert a.keys() == b.keys(), f"{stem}: different metric keys"
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, (int, float)) and not isinstance(va, bool) and va is not None:
            assert math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-12), f"{stem}.{key}: duckdb {va} vs spark {vb}"
        else:
            assert va == vb, f"{stem}.{key}: duckdb {va!r} vs spark {vb!r}"


def test_ingest_and_affinity_metrics_agree_across_engines(tmp_path):
    kernel = _kernel()
    panel = generate_panel(3000, seed=21)
    runs = {}
    for engine in ("duckdb", "spark"):
        P = paths.resolve(tmp_path / engine / "data", tmp_path / engine / "reports")
        write_sources(panel, P.raw, P.truth, seed=21)
        m01 = _run("01_ingest.ipynb", P, engine, kernel)
        write_standin_run(P, panel, unified=False)  # weights and true segments of 01's users, for 07
        m07 = _run("07_affinity.ipynb", P, engine, kernel)
        runs[engine] = {"01_ingest": m01, "07_affinity": m07, "paths": P}
    for stem in sorted(ENGINE_PARITY_KEYS):
        _assert_same(runs["duckdb"][stem], runs["spark"][stem], stem)
    # the figures are real: defects were quarantined and the crosstab has significant cells
    assert runs["spark"]["01_ingest"]["n_rejected"] > 0
    assert runs["spark"]["07_affinity"]["n_significant_cells"] > 0
    # and so are the tables behind them
    tables = [pd.read_csv(runs[e]["paths"].processed / artifacts.AFFINITY_TABLE) for e in ("duckdb", "spark")]
    pd.testing.assert_frame_equal(tables[0], tables[1], rtol=1e-9)
    shutil.rmtree(tmp_path, ignore_errors=True)
