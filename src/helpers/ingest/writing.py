"""Writing the unified table (Parquet, CSV copy, DuckDB warehouse), the quarantine and the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pandas as pd

from .. import engine as E
from .results import IngestResult, _no_rows_error, _put_in_place, _safe_name, table_fingerprint
from .events import EVENT_SPECS


def _write_warehouse_and_csv(out: Mapping[str, Path], quarantine_summary: pd.DataFrame) -> None:
    """The DuckDB warehouse (tables ``audience`` from the written Parquet, ``quarantine_summary``) and the CSV
    copy of the unified table, both read from the Parquet file (already sorted by the identifier) by DuckDB."""
    E.write_warehouse(out["duckdb"], {"audience": out["parquet"], "quarantine_summary": quarantine_summary})
    con = E.connect("duckdb", out["duckdb"], read_only=True)
    try:
        E.write_csv(con, con.table("audience"), out["csv"])
    finally:
        E.disconnect(con)


def write_outputs(result: IngestResult, processed_dir: str | Path, quarantine_dir: str | Path) -> dict[str, Path]:
    """Write the unified table (CSV, Parquet, DuckDB table ``audience``), the quarantine and the report.

    A table the engine wrote (``result.staged``) is moved into place; a collected one is written from pandas.
    The warehouse and the CSV are then built by DuckDB from the Parquet file. ``result.report`` gains the
    ``panel_version``.

    Raises :class:`IngestError` (and writes nothing) when the table has no rows.
    """
    if int(result.report.get("n_users", 0)) == 0:
        raise _no_rows_error("unified table", int(result.report.get("n_input", 0)), result.quarantine)
    processed_dir, quarantine_dir = Path(processed_dir), Path(quarantine_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    from ..artifacts import UNIFIED_CSV, UNIFIED_PARQUET

    out = {"parquet": processed_dir / UNIFIED_PARQUET, "csv": processed_dir / UNIFIED_CSV,
           "duckdb": processed_dir / "audience.duckdb", "report": processed_dir / "ingest_report.json"}
    _put_in_place(result, out["parquet"])
    for old in quarantine_dir.glob("*.csv"):
        if old.stem not in EVENT_SPECS:
            old.unlink()
    rows = []
    for name, q in result.quarantine.items():
        if len(q):
            q.to_csv(quarantine_dir / f"{_safe_name(name)}.csv", index=False)
        rows.append({"source": name, "rejected_rows": len(q)})
    _write_warehouse_and_csv(out, pd.DataFrame(rows))
    if result.data is not None:
        result.report["panel_version"] = table_fingerprint(result.data)
    rep = dict(result.report)
    out["report"].write_text(json.dumps(rep, indent=2, default=str))
    return out
