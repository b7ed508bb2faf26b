"""Notebook 00's figures and headline numbers, read back from the written sources in batches (bounded memory).

The generator no longer hands the notebook an in-memory panel (:func:`helpers.generate.write_world` keeps one
chunk per process), so every figure is drawn from the files as later stages read them: one-row-per-user
columns are read whole (a few columns, as Arrow), the long tables (monthly waves, transactions) are scanned
batch by batch and only their aggregates are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import schema as S

#: rows per batch when scanning a long table
BATCH_ROWS = 2_000_000


def read_truth(truth_dir: str | Path, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``truth/users_truth.parquet`` (one row per customer; text columns as categoricals)."""
    path = Path(truth_dir) / "users_truth.parquet"
    schema = pq.read_schema(path)
    text = [c for c in columns if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)]
    return pq.read_table(path, columns=columns, read_dictionary=text).to_pandas()


def read_csv_columns(path: str | Path, columns: list[str], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """``columns`` of a written CSV source as Arrow, with the given ``types``.

    Only for columns without planted text defects (the minutes, ``last_seen_days_ago``): a value that does not
    parse as its type raises.
    """
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types or {}))


def channel_minutes(raw_dir: str | Path, truth_ids: pa.ChunkedArray | None = None) -> pd.DataFrame:
    """The three channel-minute columns of ``engagement.csv``, one row per customer in file order.

    ``truth_ids`` (the ``user_id`` column of the truth) is checked against the file's order, so the rows can
    be paired with the truth by position.
    """
    cols = ["user_id", *S.CHANNEL_MINUTES]
    tbl = read_csv_columns(Path(raw_dir) / "engagement.csv", cols, {c: pa.float64() for c in S.CHANNEL_MINUTES})
    if truth_ids is not None and not tbl["user_id"].cast(pa.string()).equals(truth_ids.cast(pa.string())):
        raise ValueError("engagement.csv and users_truth.parquet list the customers in different orders")
    return tbl.drop_columns(["user_id"]).to_pandas()


def _batches(path: str | Path, columns: list[str]):
    yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)


def counts_by_month(path: str | Path, column: str) -> pd.DataFrame:
    """Rows per month and value of ``column`` of a long table (months x values), scanned batch by batch."""
    parts = []
    for batch in _batches(path, ["month", column]):
        g = pa.Table.from_batches([batch]).group_by(["month", column]).aggregate([([], "count_all")])
        parts.append(g.to_pandas())
    if not parts:
        return pd.DataFrame()
    both = pd.concat(parts, ignore_index=True)
    return both.groupby(["month", column])["count_all"].sum().unstack(fill_value=0)


def _column_min_max(pf: pq.ParquetFile, column: str) -> tuple[float, float] | None:
    """Minimum and maximum of a numeric column from the row groups' statistics (exact values, written by the
    Parquet writer); None when a row group has no statistics for it (then the column is scanned)."""
    i = pf.schema_arrow.get_field_index(column)
    lo, hi = np.inf, -np.inf
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(i).statistics
        if st is None or not st.has_min_max:
            return None
        lo, hi = min(lo, float(st.min)), max(hi, float(st.max))
    return lo, hi


def amount_histogram(path: str | Path, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``log10(amount)`` of ``transactions.parquet`` (counts, edges): edges from the file's
    minimum and maximum (from the Parquet statistics, or a first scan when absent), counts summed batch by
    batch."""
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return np.zeros(bins, np.int64), np.linspace(0, 1, bins + 1)
    found = _column_min_max(pf, "amount")
    if found is None:
        lo, hi = np.inf, -np.inf
        for batch in _batches(path, ["amount"]):
            a = batch.column(0)
            lo, hi = min(lo, pc.min(a).as_py()), max(hi, pc.max(a).as_py())
    else:
        lo, hi = found
    edges = np.linspace(np.log10(lo), np.log10(hi), bins + 1)
    counts = np.zeros(bins, np.int64)
    for batch in _batches(path, ["amount"]):
        counts += np.histogram(np.log10(batch.column(0).to_numpy()), bins=edges)[0]
    return counts, edges


def purchases_per_customer(monthly_path: str | Path, n_users: int) -> np.ndarray:
    """Purchases per customer over the written months (the sum of ``conversions`` of the monthly waves, each a
    count of the transaction log's purchases), indexed by the customer's position (``U00000001`` is 0)."""
    total = np.zeros(n_users, np.int64)
    pf = pq.ParquetFile(monthly_path, read_dictionary=["user_id"])
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["user_id", "conversions"]):
        ids = batch.column(0)
        # synthetic ids are "U" + 8 digits numbered from 1: the position without a join, parsed once per
        # distinct id (the column is read dictionary-encoded) instead of once per row
        if pa.types.is_dictionary(ids.type):
            codes = pc.cast(pc.utf8_slice_codeunits(ids.dictionary, 1), pa.int64()).to_numpy() - 1
            pos = codes[ids.indices.to_numpy(zero_copy_only=False)]
        else:
            pos = pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int64()).to_numpy() - 1
        total += np.bincount(pos, weights=batch.column(1).to_numpy(), minlength=n_users).astype(np.int64)
    return total


def n_rows(path: str | Path) -> int | None:
    """Rows of a Parquet file (metadata) or CSV file (Arrow's scanner); None for other files."""
    import pyarrow.dataset as ds

    path = Path(path)
    return ds.dataset(path, format=path.suffix[1:]).count_rows() if path.suffix in (".csv", ".parquet") else None
