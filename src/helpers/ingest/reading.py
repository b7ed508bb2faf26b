"""Reading a source through the engine as text columns plus its physical line (``_line``), and the temporary
objects of one ingestion.
"""

from __future__ import annotations

import warnings

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import ibis
import pandas as pd

from .. import engine as E
from .files import (IngestError, _diagnose_csv, _is_parquet, _parquet_parts, physical_lines, sniff_csv,
                    sniff_parquet)


class _Session:
    """Temporary tables/views and cached tables created during one ingestion, dropped at the end."""

    def __init__(self, con: Any, spill_dir: Path | None = None):
        self.con, self.engine, self.spill_dir = con, E.engine_of(con), spill_dir
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)
        self.tables: list[str] = []
        self.cached: list[ibis.Table] = []
        self.files: list[Path] = []

    def name(self) -> str:
        n = E.temp_name("ingest")
        self.tables.append(n)
        return n

    def own(self, t: ibis.Table) -> ibis.Table:
        """Drop the temporary table or view ``t`` (made by :mod:`helpers.engine`) at the end."""
        self.tables.append(t.get_name())
        return t

    def stage(self, t: ibis.Table) -> ibis.Table:
        """A temporary view of ``t``: later expressions refer to its columns instead of inlining them."""
        return self.con.create_view(self.name(), t)

    def cache(self, t: ibis.Table) -> ibis.Table:
        """``t`` computed once. With a spill folder: written there as Parquet and read back (compressed, on
        disk, read again by column), so a 10M-row ingestion keeps its intermediate tables out of memory."""
        if self.spill_dir is None:
            c = t.cache()
            self.cached.append(c)
            return c
        f = self.spill_file()
        E.write_parquet(self.con, t, f)
        return self.own(E.read_parquet(self.con, f, table_name=self.name()))

    def spill_file(self) -> Path | None:
        """A fresh Parquet file in the spill folder (removed at the end), or None without one."""
        if self.spill_dir is None:
            return None
        f = self.spill_dir / f"{E.temp_name('cache')}.parquet"
        self.files.append(f)
        return f

    def frame(self, df: pd.DataFrame) -> ibis.Table:
        return self.own(E.register_frame(self.con, df))

    def close(self) -> None:
        for c in self.cached:
            try:
                c.release()
            except Exception as e:  # noqa: BLE001 - cleanup must not hide the ingestion's own result or error
                warnings.warn(f"ingestion cleanup: could not release a cached table ({e}); it lives until the "
                              "connection closes", RuntimeWarning, stacklevel=2)
        for n in reversed(self.tables):
            try:
                E.drop_temp(self.con, n)
            except Exception as e:  # noqa: BLE001 - as above
                warnings.warn(f"ingestion cleanup: could not drop temporary table {n} ({e}); it lives until "
                              "the connection closes", RuntimeWarning, stacklevel=2)
        for f in self.files:
            f.unlink(missing_ok=True)


def read_text_source(con: Any, path: str | Path, required: list[str] | None = None, delimiter: str = ",",
                     encoding: str = "utf-8", _session: _Session | None = None,
                     keep_types: bool = False) -> ibis.Table:
    """Read a CSV file or Parquet file/folder as an Ibis table of text columns plus ``_line``.

    Every value is text (``NULL`` for empty cells) so that validation, not the reader, judges it.
    ``keep_types``: Parquet numbers and dates keep their type (timestamps become their day), and
    :func:`helpers.ingest.validate` judges them as it would judge their text, without casting every value
    to text and parsing it back (what makes a 20M-row Parquet table several times faster to validate);
    a floating-point column holding a NaN stays text (:func:`_columns_with_nan`).
    ``_line`` is the 1-based line of the row in the file (header = 1), carried from the reader as a column
    (:func:`helpers.engine.read_csv_text`, :func:`helpers.engine.read_parquet_rows`), so that no result
    depends on the order in which an engine stores rows. Raises :class:`IngestError` from the file-level
    checks and when the engine cannot parse the file (naming its line).
    """
    path = Path(path)
    ses = _session or _Session(con)
    if _is_parquet(path):
        names, rows = sniff_parquet(path, required)
        parts = _parquet_parts(path)
        offsets = dict(zip((p.name for p in parts), [0, *list(pd.Series(rows).cumsum())[:-1]]))
        t = ses.own(E.read_parquet_rows(con, parts))
        t = t.rename({n.strip(): n for n in t.columns if n != n.strip()}) if any(
            n != n.strip() for n in t.columns) else t
        first = ibis.cases(*[(t._file == f, int(o)) for f, o in offsets.items()], else_=0)
        nan = _columns_with_nan(parts, [c for c in names if t[c].type().is_floating()]) if keep_types else set()
        text = {}
        for c in names:
            dt = t[c].type()
            if keep_types and c not in nan and (dt.is_numeric() or dt.is_date() or dt.is_timestamp()):
                text[c] = t[c].cast("date") if dt.is_timestamp() else t[c]
            else:
                text[c] = (t[c].cast("date").cast("string") if dt.is_timestamp()
                           else t[c] if dt.is_string() else t[c].cast("string"))
        return t.select(_line=(first + t._row + 2).cast("int64"), **text)
    names = sniff_csv(path, required, delimiter, encoding)
    lines = physical_lines(path, delimiter, encoding)  # None: one record per line (the fast, usual case)
    try:
        return ses.own(E.read_csv_text(con, path, names, delimiter=delimiter, encoding=encoding, lines=lines,
                                       spill_file=ses.spill_file()))
    except E.ReadError as e:  # rows with another number of fields than the header, unclosed quotes, ...
        if e.counts is not None:
            _check_line_map(path, *e.counts)
        raise _diagnose_csv(path, names, delimiter, encoding, e.cause) from None


def _columns_with_nan(parts: list[Path], columns: list[str], batch_size: int = 1 << 20) -> set[str]:
    """The floating-point columns that hold a NaN somewhere in the Parquet parts (a scan by pyarrow, batch by
    batch). Such a column is read as text: pyarrow writes column statistics whose min/max leave NaN out, and
    DuckDB's statistics propagation then folds ``isnan(x)`` (and ``x > max``) to false, so a typed NaN would
    pass as a number; its text ``nan`` is judged right."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: set[str] = set()
    for part in parts:
        todo = [c for c in columns if c not in found]
        if not todo:
            break
        for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_size, columns=todo):
            found |= {c for c in todo if c not in found and pc.any(pc.is_nan(batch[c])).as_py()}
    return found


def _check_line_map(path: Path, n_engine: int, n_lines: int) -> None:
    if n_engine != n_lines:
        raise IngestError(path, f"ambiguous quoting: the engine read {n_engine:,} rows, a strict CSV parse "
                          f"{n_lines:,}", expected='values with quotes, delimiters or line breaks enclosed in '
                          'double quotes, inner quotes doubled ("")')


@contextmanager
def _connection(engine: str, con: Any, spill_dir: Path | None = None) -> Iterator[Any]:
    """``con``, or a new backend for ``engine`` closed at the end. Ingestion orders every result explicitly and
    carries line numbers as columns, so its own DuckDB connections drop insertion order and spill to
    ``spill_dir`` (or ``$AUDIENCE_DUCKDB_TEMP_DIRECTORY``): what lets 10M users ingest within a memory limit."""
    if con is not None:
        yield con
        return
    con = E.connect(engine, temp_directory=spill_dir, preserve_insertion_order=False)
    try:
        yield con
    finally:
        E.disconnect(con)


def _collect_quarantine(t: ibis.Table) -> pd.DataFrame:
    df = t.to_pandas()
    for c in df.columns:
        df[c] = df[c].astype("Int64") if c == "_line" else df[c].astype("string")
    return df.reset_index(drop=True)
