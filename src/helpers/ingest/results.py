"""Ingestion results: the accepted table (collected, or written by the engine and re-typed batch by batch), its
report, and the panel fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ibis
import pandas as pd

from .. import engine as E
from .. import schema as S
from .files import IngestError


@dataclass
class IngestResult:
    """The unified table, the quarantine and a report of rates and coverage."""

    data: pd.DataFrame | None  # None when the engine wrote the table (``staged``) instead of collecting it
    quarantine: dict[str, pd.DataFrame]
    report: dict = field(default_factory=dict)
    columns: tuple = S.COLUMNS  # the column rules of ``data`` (dictionary, configuration and extension columns)
    #: the Parquet file holding the table when the engine wrote it (:func:`write_outputs` moves it into place)
    staged: Path | None = None

    @property
    def n_rejected(self) -> int:
        return int(self.report["n_rejected"])

    @property
    def column_names(self) -> list[str]:
        """The table's columns, in order."""
        return [c.name for c in self.columns]

    @property
    def key(self) -> str:
        """The identifier column."""
        return next((c.name for c in self.columns if c.kind == "id"), self.column_names[0])

    def table(self, con: Any) -> ibis.Table:
        """The accepted rows as an Ibis table on ``con`` (from the staged Parquet, or the collected frame)."""
        if self.staged is not None:
            return E.read_parquet(con, self.staged)
        return E.register_frame(con, self.data)


def coerce_dtypes(df: pd.DataFrame, columns: tuple | list | None = None) -> pd.DataFrame:
    """Cast the columns of ``df`` to their dtypes and order them as ``columns`` (default: the dictionary)."""
    out = {}
    for c in (S.COLUMNS if columns is None else columns):
        s = df[c.name] if c.name in df else pd.Series(pd.NA, index=df.index)
        if c.kind == "date":
            out[c.name] = pd.to_datetime(s).astype("datetime64[ns]")
        elif c.kind == "bool":
            out[c.name] = s.astype("boolean")
        elif c.kind == "int":
            out[c.name] = pd.to_numeric(s).astype("Int64")
        elif c.kind == "float":
            out[c.name] = pd.to_numeric(s).astype("float64")
        else:
            out[c.name] = s.astype(c.dtype)
    return pd.DataFrame(out, index=df.index)


def _limits(missing_optional: list[str], columns: tuple) -> list[str]:
    by = {c.name: c for c in columns}
    out = set()
    for c in missing_optional:
        if c in S.BY_NAME and S.BY_NAME[c].source in S.LIMITS:
            out.add(S.LIMITS[S.BY_NAME[c].source])
        else:
            src = by[c].source if c in by else "1st party"
            out.add(f"analyses of {c} ({src})")
    return sorted(out)


def _coverage(data: pd.DataFrame, columns: tuple) -> dict[str, float]:
    """Share of rows with a value, per column."""
    return {c.name: round(float(data[c.name].notna().mean()) if len(data) else 0.0, 6) for c in columns}


def _report(n_users: int, coverage: dict[str, float], n_input: int, quarantine: dict[str, pd.DataFrame],
            missing_optional: list[str], extra: dict, columns: tuple | None = None) -> dict:
    columns = S.COLUMNS if columns is None else columns
    rep = {
        "n_input": int(n_input),
        "n_users": int(n_users),
        "n_rejected": int(n_input - n_users),
        "quarantined_rows_by_source": {k: int(len(v)) for k, v in quarantine.items()},
        "coverage": coverage,
        "missing_optional_columns": missing_optional,
        "limits": _limits(missing_optional, columns),
        **extra,
    }
    assert rep["n_users"] + rep["n_rejected"] == rep["n_input"]
    return rep


_REASON_KINDS = ("unknown category", "invalid value", "not a number", "not an integer", "out of range",
                 "unparseable date", "implausibly old date", "date after the observation date", "not a boolean",
                 "missing value", "missing identifier", "identifier contains a control character", "duplicate",
                 "not in", "no valid row")


def _short_reason(reason: str) -> str:
    """``'age_group: unknown category x; expected ...'`` -> ``'unknown category'`` (for summaries)."""
    text = reason.split("; ")[0]
    text = text.split(": ", 1)[1] if ": " in text else text
    return next((k for k in _REASON_KINDS if text.startswith(k)),
                next((k for k in _REASON_KINDS if f" {k} " in text[:40]), text[:60]))


def _no_rows_error(file: str | Path, n_input: int, quarantine: Mapping[str, pd.DataFrame]) -> IngestError:
    """Zero accepted rows: an error (before anything is written) with the most frequent reasons."""
    reasons = pd.concat([q[["_column", "_reason"]].assign(_source=name) for name, q in quarantine.items() if len(q)],
                        ignore_index=True) if any(len(q) for q in quarantine.values()) else None
    top = ""
    if reasons is not None:
        short = reasons["_reason"].astype(str).map(_short_reason)
        counts = (reasons.assign(r=short).groupby(["_source", "_column", "r"], dropna=False).size()
                  .sort_values(ascending=False).head(3))
        top = "; most frequent reasons: " + "; ".join(f"{src} {col}: {r} ({n:,} rows)"
                                                      for (src, col, r), n in counts.items())
    return IngestError(file, f"no row was accepted: all {n_input:,} input row(s) were rejected{top}. Nothing "
                       "was written (the previous run's outputs are unchanged)",
                       expected="a file whose rows follow the run configuration: look at the reasons above, fix the "
                       "file, the mapping or the configuration (delimiter, encoding, observation_date)")


@dataclass
class Retyped:
    """What :func:`retype_parquet` counted while rewriting: rows, coverage, sums of carried flags, fingerprint."""

    n: int
    coverage: dict[str, float]
    sums: dict[str, float]
    fingerprint: str
    n_users: int | None = None


def retype_parquet(src: Path | Sequence[Path], dest: Path, columns: tuple, *, carry: Sequence[str] = (),
                   validate: bool = True, batch_size: int = 250_000, count_distinct: str | None = None) -> Retyped:
    """Rewrite the engine's Parquet file(s) ``src`` (rows already in their final order) as ``dest`` with the
    pandas dtypes of ``columns`` (categories, nullable integers, dates), batch by batch, then remove ``src``.

    ``dest`` is then the same file, value for value and type for type, as pandas would write from the collected
    table, so later stages read it unchanged; memory is bounded by ``batch_size``. Columns ``carry`` (flags
    the engine computed, e.g. match indicators) are summed and left out. Each batch is checked against the
    pandera schema of ``columns`` (``validate``). Returns the row count, the coverage per column, the sums,
    :func:`table_fingerprint` of the whole table (row hashes are per row, so hashing batch by batch gives the
    same digest), and the number of distinct values of ``count_distinct`` (rows sorted by it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [c.name for c in columns]
    hash_cols = S.COLUMN_NAMES if set(S.COLUMN_NAMES) <= set(names) else names
    schema = S.pandera_schema(columns) if validate else None
    n, notna, sums, digest = 0, dict.fromkeys(names, 0), dict.fromkeys(carry, 0.0), hashlib.sha256()
    distinct, last = 0, None
    tmp = dest.with_name(f".{dest.name}.tmp")
    sources = [Path(src)] if isinstance(src, (str, Path)) else [Path(p) for p in src]
    batches = (b for f in sources for b in pq.ParquetFile(f).iter_batches(batch_size=batch_size))
    writer = None
    try:
        for batch in batches:
            raw = batch.to_pandas()
            df = coerce_dtypes(raw, columns)
            if schema is not None:
                schema.validate(df, lazy=True)
            n += len(df)
            for c in names:
                notna[c] += int(df[c].notna().sum())
            for c in carry:
                sums[c] += float(raw[c].astype("float64").sum())
            if count_distinct is not None and len(df):
                ids = df[count_distinct].astype(str).to_numpy()
                distinct += int((ids[1:] != ids[:-1]).sum()) + int(last != ids[0])
                last = ids[-1]
            digest.update(pd.util.hash_pandas_object(df[hash_cols], index=False).to_numpy().tobytes())
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, coerce_timestamps="us", allow_truncated_timestamps=True)
            writer.write_table(table.cast(writer.schema))
        if writer is None:  # no rows: an empty file with the right schema
            empty = pa.Table.from_pandas(coerce_dtypes(pd.DataFrame(columns=names), columns), preserve_index=False)
            writer = pq.ParquetWriter(tmp, empty.schema, coerce_timestamps="us", allow_truncated_timestamps=True)
        writer.close()
        writer = None
        tmp.replace(dest)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        for f in sources:
            f.unlink(missing_ok=True)
    coverage = {c: round(notna[c] / n, 6) if n else 0.0 for c in names}
    return Retyped(n, coverage, sums, digest.hexdigest()[:16], distinct if count_distinct else None)


def pandas_metadata(columns: tuple | list) -> str:
    """The ``pandas`` key-value metadata of a Parquet file holding ``columns`` with their dtypes
    (:func:`coerce_dtypes`), as pandas writes it: what restores ``string``, ``Int64``, ``boolean`` on reading."""
    import pyarrow as pa

    empty = coerce_dtypes(pd.DataFrame(columns=[c.name for c in columns]), columns)
    return pa.Schema.from_pandas(empty, preserve_index=False).metadata[b"pandas"].decode()


def _physical(v: ibis.Value, col: S.Column) -> ibis.Value:
    """A value cast to the Parquet type pandas writes for the column's dtype (dates as timestamps), and
    nullable: DuckDB marks a column ``required`` (not null) when its statistics show no null, pandas never."""
    typ = {"date": "timestamp", "int": "int64", "float": "float64", "bool": "boolean"}.get(col.kind, "string")
    return ibis.ifelse(v.isnull(), ibis.null(typ), v.cast(typ))


def write_typed(con: Any, expr: ibis.Table, dest: Path, columns: tuple, order_by: Sequence[str] = (),
                count_distinct: str | None = None) -> Retyped:
    """Write the rows of ``expr`` sorted by ``order_by`` to ``dest`` with the pandas dtypes of ``columns``:
    the same file, value for value and type for type, as pandas writes from the collected table.

    Where the engine writes file metadata (DuckDB) it writes ``dest`` itself, in parallel, with the physical
    types and the ``pandas`` metadata (:func:`pandas_metadata`); elsewhere (Spark) the engine's file is
    re-typed by :func:`retype_parquet`. Returns the row count and the distinct values of ``count_distinct``
    (coverage, sums and fingerprint are not computed: see :func:`retype_parquet` for those)."""
    names = [c.name for c in columns]
    if not E.writes_file_metadata(con):
        engine_file = dest.with_name(f"{dest.stem}.engine.parquet")
        E.write_parquet(con, expr, engine_file, order_by=order_by)
        return retype_parquet(engine_file, dest, columns, validate=False, count_distinct=count_distinct)
    by = {c.name: c for c in columns}
    typed = expr.mutate(**{n: _physical(expr[n], by[n]) for n in names})
    E.write_parquet(con, typed.order_by(list(order_by)).select(*names), dest,
                    metadata={"pandas": pandas_metadata(columns)})
    name = E.temp_name("typed")
    t = E.read_parquet(con, dest, table_name=name)
    try:
        got = t.aggregate(n=t.count(), **({"d": t[count_distinct].nunique()} if count_distinct else {})).to_pandas()
    finally:
        E.drop_temp(con, name)
    return Retyped(int(got["n"].iloc[0]), {}, {}, "", int(got["d"].iloc[0]) if count_distinct else None)


def _safe_name(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace(".csv", "")


def _put_in_place(result: IngestResult, path: Path) -> None:
    """The accepted rows at ``path``: the staged Parquet moved there, or the collected frame written."""
    if result.staged is not None:
        Path(result.staged).replace(path)
        result.staged = path
        return
    # microsecond timestamps: Spark cannot read pandas' default nanoseconds (customer_since_date is a date anyway)
    result.data.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)


def table_fingerprint(df: pd.DataFrame) -> str:
    """A short content hash of the unified table (the 'panel version' recorded by exports and in
    ``processed/ingest_meta.json``): its 22 dictionary columns when it has them all (so columns joined on
    later, such as weights or segments, do not change it), else every column in order (a configured table)."""
    cols = S.COLUMN_NAMES if set(S.COLUMN_NAMES) <= set(df.columns) else list(df.columns)
    h = pd.util.hash_pandas_object(df[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]
