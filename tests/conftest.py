"""Shared fixtures: small synthetic panels with planted truth, the shipped reference data (``external_data``)
and the real data that is not shipped (``shared_data``, CDNOW only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.generate import generate_panel
from helpers import paths as _paths

SHARED_DATA = _paths.SHARED_DATA


@pytest.fixture(scope="session")
def small_panel():
    """4,000 users from the default generator (seed 7): fast enough for every unit test."""
    return generate_panel(4_000, seed=7)


@pytest.fixture(scope="session")
def medium_panel():
    """20,000 users (seed 11) for planted-truth recovery tests that need more power."""
    return generate_panel(20_000, seed=11)


@pytest.fixture(scope="session")
def external_data() -> Path:
    """``<repo>/data/external``: the real public data shipped with the repository (``adult_census``,
    ``census_popest``, ``telco_churn``; see its MANIFEST.md). Never skipped: a fresh clone has it."""
    return _paths.EXTERNAL_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``, for data that is NOT shipped (licence): CDNOW only. Skips with a clear message
    when it is absent (a fresh clone alone); shipped sets are read through ``external_data``."""
    if _paths.shared_data() is None:
        pytest.skip(f"real data folder {SHARED_DATA} is absent: CDNOW (research licence) is not shipped "
                    "with the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def duckdb_con():
    """An in-memory DuckDB Ibis backend (the default engine)."""
    from helpers import engine

    return engine.connect("duckdb")


@pytest.fixture(scope="session")
def spark_con():
    """One local Spark session (loopback only) for the whole test run: starting the JVM costs seconds.

    PySpark is installed by ``make setup`` (extra ``spark``) and CI runs these tests; no skip here.
    """
    from helpers import engine

    con = engine.connect("spark")
    yield con
    con._session.stop()


def write_warehouse_run(panel, root: Path):
    """A pipeline run folder built from planted truth (:func:`helpers.standin.write_standin_run`): the unified
    Parquet (microsecond timestamps, as ingestion writes it), the DuckDB warehouse, design weights (inverse
    inclusion) and the true segments.

    Returns ``(paths, frame)``, ``frame`` being the user-level table joined with weight and segment.
    """
    from helpers import paths
    from helpers.standin import write_standin_run

    P = paths.resolve(root / "data", root / "reports")
    return P, write_standin_run(P, panel, warehouse=True).frame


@pytest.fixture(scope="module")
def warehouse_run(small_panel, tmp_path_factory):
    """:func:`write_warehouse_run` on the small panel, once per test module."""
    return write_warehouse_run(small_panel, tmp_path_factory.mktemp("warehouse"))


@pytest.fixture(scope="session")
def venv_kernel() -> str:
    """Name of a Jupyter kernel running this interpreter (``audience-intel``, registered by make setup)."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    ours = [name for name, spec in specs.items() if spec["spec"]["argv"][0] == sys.executable]
    if not ours:
        pytest.fail(f"no Jupyter kernel runs {sys.executable}: run `make setup` (registers 'audience-intel')")
    return "audience-intel" if "audience-intel" in ours else sorted(ours)[0]
