"""Shared fixtures: small synthetic panels with planted truth, and the shared real data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.generate import generate_panel
from helpers.paths import REPO_ROOT

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_panel():
    """4,000 users from the default generator (seed 7): fast enough for every unit test."""
    return generate_panel(4_000, seed=7)


@pytest.fixture(scope="session")
def medium_panel():
    """20,000 users (seed 11) for planted-truth recovery tests that need more power."""
    return generate_panel(20_000, seed=11)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public data); skips with a clear message only when it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (CI always has it)")
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
