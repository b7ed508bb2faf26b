"""Where the long tables of the engagement/value stage come from: ``processed/<name>.parquet`` (validated by
01_ingest) when present, else ``raw/<name>.parquet`` (as the sources delivered it), else None."""

from __future__ import annotations

from pathlib import Path

from ..paths import Paths


def long_path(P: Paths, name: str) -> Path | None:
    """Path of long table ``name`` (``monthly_activity``, ``transactions``), processed first, or None."""
    for folder in (P.processed, P.raw):
        f = folder / f"{name}.parquet"
        if f.exists():
            return f
    return None

