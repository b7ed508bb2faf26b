"""Ingestion: load each source, validate it against the data dictionary, join, and write one table.

Every input row ends up either in the unified table or in ``data/quarantine/`` with the reason, the file
and its line number, so that accepted + rejected always equals the input row count. Structural problems
that make a whole file unreadable (missing file or column, empty file, wrong delimiter or encoding) raise
:class:`IngestError` naming the file, the column or line, and what was expected.

One code path, two engines: the value rules (:func:`validate`), the orphan and match-table checks and the
joins are Ibis expressions that run on DuckDB (default, in-process) or on Apache Spark
(``engine="spark"``, :mod:`helpers.engine`). Only reading a file with its line numbers is engine-specific
(:func:`read_text_source`); file-level checks (encoding, delimiter, empty file, missing columns) are a cheap
Python look at the header before the engine reads the file.

A source is ``raw/<stem>.csv`` or a folder ``raw/<stem>/`` of Parquet parts (values are cast to text, so
the same rules apply). Line numbers (``_line``, header = line 1) are exact on both engines:

* CSV on DuckDB: the file is loaded into a temporary table in file order (DuckDB preserves insertion
  order), and ``_line = rowid + 2``.
* CSV on Spark: ``monotonically_increasing_id()`` is ``partition index << 33`` plus the record's position in
  its partition, and the partitions of one file are its byte ranges in file order; one count per partition
  gives each partition's first line, so ``_line = 2 + lines before the partition + position``. This assumes
  one record per line (no quoted line breaks), like the rest of the CSV contract.
* Parquet parts (both engines): parts are taken in file-name order, and ``_line = 2 + rows of the earlier
  parts + row index in the part`` (DuckDB ``file_row_number``, Spark ``_metadata.row_index``), i.e. the line
  the row would have in the equivalent CSV.

Entry points: :func:`ingest_sources` (the synthetic layout, collected as pandas), :func:`ingest_table` (a
user's own single table) and :func:`ingest_to_parquet` (writes the unified table and the quarantine from the
engine straight to Parquet, for panels larger than memory such as 10M users on DuckDB).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import duckdb
import ibis
import pandas as pd

from . import engine as E
from . import schema as S

DELIMITERS = [",", ";", "\t", "|"]
TRUE_STRINGS = {"true", "t", "1", "yes", "y"}
FALSE_STRINGS = {"false", "f", "0", "no", "n"}
MAX_ROWS_IN_MESSAGE = 10
#: A number as the sources write it: optional sign, digits with an optional decimal point, optional exponent.
#: Checked before casting so that both engines accept exactly the same texts (Spark's cast alone would
#: also take Java forms such as ``1.5d``).
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
#: Surrounding whitespace removed from every value. A regex rather than Ibis' ``strip()``, whose Spark SQL
#: spells the characters as ``'\v\f'`` escapes that Spark reads as the letters v and f.
EDGE_SPACE = r"^[ \t\n\r\f\x0b]+|[ \t\n\r\f\x0b]+$"
ORPHAN_REASON = "user_id not in crm_users.csv (or its CRM row was rejected)"
INCOMPLETE = "unified (incomplete customers)"
QUARANTINE_META = ["_source", "_line", "_column", "_reason"]


class IngestError(ValueError):
    """A source cannot be read at all; the message names file, column/line and what was expected."""

    def __init__(self, file: str | Path, problem: str, column: str | None = None,
                 rows: list[int] | None = None, expected: str | None = None):
        self.file, self.column, self.rows, self.expected = str(file), column, rows or [], expected
        parts = [f"{file}: {problem}"]
        if column:
            parts.append(f"column {column!r}")
        if rows:
            shown = ", ".join(map(str, rows[:MAX_ROWS_IN_MESSAGE]))
            more = f" (+{len(rows) - MAX_ROWS_IN_MESSAGE} more)" if len(rows) > MAX_ROWS_IN_MESSAGE else ""
            parts.append(f"line(s) {shown}{more}")
        if expected:
            parts.append(f"expected {expected}")
        super().__init__("; ".join(parts))


# --- file-level checks (Python, header only) -------------------------------------------------------
def _check_encoding(path: Path, encoding: str) -> None:
    """Decode the file in chunks; on the first invalid byte, name its line."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        return
    except UnicodeDecodeError:
        pass
    data = path.read_bytes()  # only on failure: locate the byte and its line
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise IngestError(path, f"bytes that are not valid {encoding} (byte {e.start}: {data[e.start:e.start + 1]!r})",
                          rows=[line], expected=f"a {encoding}-encoded file; pass encoding='latin-1' (or the "
                          "file's real encoding) if it was exported that way") from None


def _check_columns(path: Path, names: list[str], required: list[str] | None) -> None:
    missing = [c for c in (required or []) if c not in names]
    if missing:
        raise IngestError(path, f"missing column(s) {', '.join(missing)} (found: {', '.join(names)})",
                          column=missing[0], expected="the columns of the data dictionary (see README)")


def sniff_csv(path: str | Path, required: list[str] | None = None, delimiter: str = ",",
              encoding: str = "utf-8") -> list[str]:
    """File-level checks of a CSV source before an engine reads it; returns its (stripped) column names.

    Raises
    ------
    IngestError
        For a missing or empty file, wrong encoding, a header delimited by another delimiter than
        ``delimiter``, a header without data rows, or a required column that is absent.
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(path, "file not found", expected="the file produced by the source system")
    if path.stat().st_size == 0:
        raise IngestError(path, "file is empty (0 bytes)", expected="a header line and data rows")
    _check_encoding(path, encoding)
    with open(path, encoding=encoding, newline="") as f:
        header = f.readline()
        has_rows = any(line.strip() for line in iter(f.readline, ""))  # stops at the first data line
    names = [n.strip() for n in next(csv.reader([header.lstrip("\ufeff")], delimiter=delimiter))]
    if len(names) == 1:
        found = [d for d in DELIMITERS if d != delimiter and d in header]
        if found:
            raise IngestError(path, f"the header is {found[0]!r}-delimited",
                              expected=f"{delimiter!r}-delimited columns; pass delimiter={found[0]!r}")
    if not has_rows:
        raise IngestError(path, "file has a header but no data rows", expected="at least one data row")
    _check_columns(path, names, required)
    return names


def _parquet_parts(path: Path) -> list[Path]:
    parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not parts:
        raise IngestError(path, "folder has no Parquet parts", expected="part-*.parquet files")
    return parts


def sniff_parquet(path: str | Path, required: list[str] | None = None) -> tuple[list[str], list[int]]:
    """File-level checks of a Parquet file or folder of parts; returns column names and rows per part."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise IngestError(path, "file not found", expected="the file produced by the source system")
    if path.is_file() and path.stat().st_size == 0:
        raise IngestError(path, "file is empty (0 bytes)", expected="a header line and data rows")
    parts = _parquet_parts(path)
    metas = [pq.ParquetFile(p).metadata for p in parts]
    names = [str(n).strip() for n in metas[0].schema.to_arrow_schema().names]
    rows = [m.num_rows for m in metas]
    if sum(rows) == 0:
        raise IngestError(path, "file has a header but no data rows", expected="at least one data row")
    _check_columns(path, names, required)
    return names, rows


def locate_source(raw_dir: str | Path, name: str) -> Path:
    """``raw_dir/<name>`` (CSV) if it exists, else the folder ``raw_dir/<stem>/`` of Parquet parts."""
    raw_dir = Path(raw_dir)
    if (raw_dir / name).exists():
        return raw_dir / name
    folder = raw_dir / Path(name).stem
    if folder.is_dir():
        return folder
    raise IngestError(raw_dir / name, "file not found",
                      expected=f"the file produced by the source system (or a folder {folder.name}/ of Parquet parts)")


def _is_parquet(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in (".parquet", ".pq")


# --- engine-specific reading: text columns plus the line number ------------------------------------
class _Session:
    """Temporary tables/views and cached tables created during one ingestion, dropped at the end."""

    def __init__(self, con: Any):
        self.con, self.engine = con, E.engine_of(con)
        self.tables: list[tuple[str, str]] = []
        self.cached: list[ibis.Table] = []

    def name(self, kind: str = "VIEW") -> str:
        n = ibis.util.gen_name("ingest")
        self.tables.append((n, kind))
        return n

    def stage(self, t: ibis.Table) -> ibis.Table:
        """A temporary view of ``t``: later expressions refer to its columns instead of inlining them."""
        return self.con.create_view(self.name(), t)

    def cache(self, t: ibis.Table) -> ibis.Table:
        c = t.cache()
        self.cached.append(c)
        return c

    def close(self) -> None:
        for c in self.cached:
            try:
                c.release()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        for n, kind in reversed(self.tables):
            try:
                if self.engine == "duckdb":
                    self.con.raw_sql(f'DROP {kind} IF EXISTS "{n}"')
                else:
                    self.con._session.catalog.dropTempView(n)
            except Exception:  # noqa: BLE001
                pass


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _engine_encoding(encoding: str, engine: str) -> str:
    name = codecs.lookup(encoding).name  # 'utf-8', 'iso8859-1', 'cp1252', ...
    if engine == "duckdb":
        return {"iso8859-1": "latin-1", "utf-8": "utf-8", "utf-16": "utf-16"}.get(name, name)
    return {"iso8859-1": "ISO-8859-1", "cp1252": "windows-1252"}.get(name, name)


def read_text_source(con: Any, path: str | Path, required: list[str] | None = None, delimiter: str = ",",
                     encoding: str = "utf-8", _session: _Session | None = None) -> ibis.Table:
    """Read a CSV file or Parquet file/folder as an Ibis table of text columns plus ``_line``.

    Every value is text (``NULL`` for empty cells) so that validation, not the reader, judges it.
    ``_line`` is the 1-based line of the row in the file (header = 1); see the module docstring for how
    each engine derives it. Raises :class:`IngestError` from the file-level checks.
    """
    path = Path(path)
    ses = _session or _Session(con)
    if _is_parquet(path):
        names, rows = sniff_parquet(path, required)
        parts = _parquet_parts(path)
        offsets = dict(zip((p.name for p in parts), [0, *list(pd.Series(rows).cumsum())[:-1]]))
        if ses.engine == "duckdb":
            files, view = ", ".join(_sql_str(p) for p in parts), ses.name()
            con.raw_sql(f'CREATE TEMP VIEW "{view}" AS SELECT * EXCLUDE (filename, file_row_number), '
                        "parse_filename(filename) AS _file, file_row_number AS _row "
                        f"FROM read_parquet([{files}], filename=true, file_row_number=true)")
            t = con.table(view)
        else:
            view = ses.name()
            con._session.read.parquet(*map(str, parts)).selectExpr(
                "*", "_metadata.file_name AS _file", "_metadata.row_index AS _row").createOrReplaceTempView(view)
            t = con.table(view)
        t = t.rename({n.strip(): n for n in t.columns if n != n.strip()}) if any(
            n != n.strip() for n in t.columns) else t
        first = ibis.cases(*[(t._file == f, int(o)) for f, o in offsets.items()], else_=0)
        text = {}
        for c in names:
            dt = t[c].type()
            text[c] = (t[c].cast("date").cast("string") if dt.is_timestamp()
                       else t[c] if dt.is_string() else t[c].cast("string"))
        return t.select(_line=(first + t._row + 2).cast("int64"), **text)
    names = sniff_csv(path, required, delimiter, encoding)
    enc = _engine_encoding(encoding, ses.engine)
    if ses.engine == "duckdb":
        tmp = ses.name("TABLE")
        cols = "{" + ", ".join(f"{_sql_str(n)}: 'VARCHAR'" for n in names) + "}"
        try:
            con.raw_sql(f'CREATE TEMP TABLE "{tmp}" AS SELECT * FROM read_csv({_sql_str(path)}, header=true, '
                        f"delim={_sql_str(delimiter)}, quote='\"', escape='\"', columns={cols}, auto_detect=false, "
                        f"encoding={_sql_str(enc)})")
        except duckdb.Error as e:  # rows with another number of fields than the header, unclosed quotes, ...
            raise IngestError(path, f"cannot be parsed as {delimiter!r}-delimited text ({str(e).splitlines()[0]})",
                              expected=f"{delimiter!r}-delimited rows with as many fields as the header") from None
        view = ses.name()
        con.raw_sql(f'CREATE TEMP VIEW "{view}" AS SELECT CAST(rowid + 2 AS BIGINT) AS _line, * FROM "{tmp}"')
        return con.table(view)
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(n, StringType(), True) for n in names])
    df = con._session.read.csv(str(path), schema=schema, header=True, sep=delimiter, encoding=enc, quote='"',
                               escape='"', multiLine=False, enforceSchema=True)
    df = df.withColumn("_mid", F.monotonically_increasing_id())
    if df.rdd.getNumPartitions() == 1:  # one byte range: the position is the line (no counting job)
        counts = [(0, 0)]
    else:
        counts = sorted(df.groupBy(F.shiftright("_mid", 33).alias("p")).count().collect())
    first, before = {}, 0
    for p, n in counts:
        first[int(p)], before = before, before + int(n)
    lookup = F.create_map(*[F.lit(x) for kv in first.items() for x in kv]) if first else F.create_map()
    line = F.lit(2) + F.col("_mid").bitwiseAND((1 << 33) - 1) + lookup[F.shiftright("_mid", 33)]
    view = ses.name()
    df.select(line.cast("long").alias("_line"), *[F.col(f"`{n}`") for n in names]).createOrReplaceTempView(view)
    return con.table(view)


# --- value rules, as Ibis expressions (the same on both engines) -----------------------------------
def _text(s: str) -> ibis.Value:
    return ibis.literal(s, type="string")


def _parse(s: ibis.Value, col: S.Column) -> dict[str, ibis.Value]:
    """Stage 2 of :func:`validate`: the parsed value ``v`` (before range checks) and, for numbers, ``m``
    (the text has the form of a number)."""
    null = ibis.null("string")
    if col.kind in ("int", "float"):
        m = s.re_search(NUMBER_PATTERN)
        return {"v": ibis.ifelse(m, s, null).try_cast("float64"), "m": m}
    if col.kind == "date":
        return {"v": ibis.ifelse(s.re_search(DATE_PATTERN), s, null).try_cast("date")}
    if col.kind == "bool":
        low = s.lower()
        return {"v": ibis.cases((low.isin(sorted(TRUE_STRINGS)), True), (low.isin(sorted(FALSE_STRINGS)), False),
                                else_=ibis.null("boolean"))}
    return {"v": s}


def _problem(s: ibis.Value, v: ibis.Value, m: ibis.Value | None, col: S.Column) -> ibis.Value:
    """Stage 3 of :func:`validate`: the problem text of a value (``NULL`` when valid)."""
    missing = s.isnull()
    exp = f"; expected {col.allowed()}"
    null = ibis.null("string")
    if col.kind in ("category", "ordinal"):
        problem = ibis.ifelse(~missing & ~s.isin(list(col.categories)), "unknown category " + s + exp, null)
    elif col.kind == "multi":
        problem = ibis.ifelse(~missing & ~s.re_search(S.multi_pattern(col.categories)),
                              "invalid value " + s + exp, null)
    elif col.kind in ("int", "float"):
        out = v.isnull() | (v < col.min_value)  # a number form the engine cannot hold (1e400) is out of range
        if col.max_value is not None:
            out = out | (v > col.max_value)
        cases = [(~m, "not a number: " + s + exp)]
        if col.kind == "int":
            cases.append((v.notnull() & (v % 1 != 0), "not an integer: " + s + exp))
        cases.append((out, "out of range: " + s + exp))
        problem = ibis.ifelse(missing, null, ibis.cases(*cases, else_=null))
    elif col.kind == "date":
        problem = ibis.ifelse(~missing & v.isnull(), "unparseable date: " + s + exp, null)
    elif col.kind == "bool":
        problem = ibis.ifelse(~missing & v.isnull(), "not a boolean: " + s + exp, null)
    elif col.kind == "id":
        problem = null
    else:  # pragma: no cover - the dictionary only has the kinds above
        raise ValueError(f"unknown column kind {col.kind}")
    if not col.nullable:
        problem = ibis.ifelse(missing, _text(f"missing value{exp}"), problem)
    return problem


def _key_problem(s: ibis.Value, copies: ibis.Value, key: str) -> ibis.Value:
    """An identifier must be present and unique: every copy of a duplicated value is rejected."""
    return ibis.cases((s.isnull(), _text("missing identifier")),
                      (copies > 1, f"duplicate {key} " + s + " (every copy is rejected)"),
                      else_=ibis.null("string"))


def _combine(problems: dict[str, ibis.Value]) -> tuple[ibis.Value, ibis.Value]:
    """``(_column, _reason)``: the first column with a problem, and ``'col: problem; ...'`` for all of them."""
    column = ibis.cases(*[(p.notnull(), _text(c)) for c, p in problems.items()], else_=ibis.null("string"))
    joined = None
    for c, p in problems.items():
        piece = ibis.ifelse(p.notnull(), f"; {c}: " + p, _text(""))
        joined = piece if joined is None else joined + piece
    reason = ibis.ifelse(column.isnull(), ibis.null("string"), joined.substr(2))
    return column, reason


def validate(raw: ibis.Table, columns: list[str], key: str = "user_id", extra_keys: list[str] | None = None,
             stage=None) -> ibis.Table:
    """Apply the data dictionary's rules to a text table (from :func:`read_text_source`), on any engine.

    Values are stripped of surrounding whitespace (an empty cell is missing). Rules: unknown category,
    invalid multi-valued set (:func:`helpers.schema.multi_pattern`), not a number (:data:`NUMBER_PATTERN`),
    not an integer, out of range, unparseable date (``YYYY-MM-DD``), not a boolean, missing value where the
    column is not nullable; ``key`` and ``extra_keys`` are identifiers that must be present and unique
    (every copy of a duplicate is rejected).

    Returns ``_line``, the raw text columns, the parsed value of each checked column as ``_v_<column>``,
    and ``_column`` (first column with a problem) / ``_reason`` (``'column: problem; ...'``), both ``NULL``
    for a valid row. ``stage`` (expression -> table, e.g. a temporary view) cuts the plan between the
    parsing stages so the generated SQL stays small; without it the expression is one (large) query.
    """
    stage = stage or (lambda t: t)
    keys = [key, *(extra_keys or [])]
    checked = keys + [c for c in columns if c not in keys]
    t = raw.mutate(**{f"_s_{c}": raw[c].re_replace(EDGE_SPACE, "").nullif("") for c in checked})
    t = stage(t.mutate(**{f"_n_{k}": t[f"_s_{k}"].count().over(ibis.window(group_by=t[f"_s_{k}"]))
                          for k in keys}))
    parsed = {}
    for c in checked:
        if c not in keys:
            for part, expr in _parse(t[f"_s_{c}"], S.BY_NAME[c]).items():
                parsed[f"_{part}_{c}"] = expr
    t = stage(t.mutate(**parsed))
    problems = {k: _key_problem(t[f"_s_{k}"], t[f"_n_{k}"], k) for k in keys}
    for c in checked:
        if c not in keys:
            problems[c] = _problem(t[f"_s_{c}"], t[f"_v_{c}"], t[f"_m_{c}"] if f"_m_{c}" in t.columns else None,
                                   S.BY_NAME[c])
    t = stage(t.mutate(**{f"_p_{c}": p for c, p in problems.items()}))
    column, reason = _combine({c: t[f"_p_{c}"] for c in checked})
    values = {}
    for c in checked:
        kind = "id" if c in keys else S.BY_NAME[c].kind
        v = t[f"_s_{c}"] if kind == "id" else t[f"_v_{c}"]
        if kind in ("int", "float"):
            v = ibis.ifelse(t[f"_p_{c}"].isnull(), v, ibis.null("float64"))
            v = v.round().cast("int64") if kind == "int" else v
        values[f"_v_{c}"] = v
    keep = [c for c in raw.columns]
    return t.select(*keep, _column=column, _reason=reason, **values)


def accepted(v: ibis.Table, columns: list[str]) -> ibis.Table:
    """Valid rows of a validated table: ``_line`` and the parsed columns under their own names."""
    return v.filter(v._reason.isnull()).select("_line", **{c: v[f"_v_{c}"] for c in columns})


def _raw_columns(v: ibis.Table) -> list[str]:
    return [c for c in v.columns if not c.startswith("_")]


def rejected(v: ibis.Table, source: str, where: ibis.Value | None = None, column: Any = None,
             reason: Any = None) -> ibis.Table:
    """Quarantine rows: ``_source, _line, _column, _reason`` and the raw text columns."""
    rows = v.filter(v._reason.notnull() if where is None else where)
    return rows.select(_source=_text(source), _line=rows._line.cast("int64"),
                       _column=(rows._column if column is None else column).cast("string"),
                       _reason=(rows._reason if reason is None else reason).cast("string"),
                       **{c: rows[c].cast("string") for c in _raw_columns(v)})


# --- the unified table, as one Ibis plan -----------------------------------------------------------
@dataclass
class IngestPlan:
    """Ibis expressions of one ingestion, not yet executed (see :func:`plan_sources`)."""

    # Not sorted: a global sort costs Spark a sampling job per sort; collectors and writers sort at the end.
    unified: ibis.Table                  # the 22 columns + _partner_matched/_third_matched
    quarantine: dict[str, ibis.Table]    # per source (+ incomplete customers)
    rows_input: ibis.Table               # one row per source file: source, n (input rows)
    session: _Session

    def input_rows(self) -> dict[str, int]:
        """Input rows per source file, in the order the sources are read."""
        got = self.rows_input.to_pandas()
        n = dict(zip(got["source"], got["n"].astype(int)))
        return {k: n[k] for k in self.quarantine if k in n}

    def collect_quarantine(self) -> dict[str, pd.DataFrame]:
        """All quarantine tables as pandas, fetched in one query (one job on Spark)."""
        cols = list(dict.fromkeys(c for t in self.quarantine.values() for c in t.columns))
        parts = []
        for i, t in enumerate(self.quarantine.values()):
            parts.append(t.select(_q=ibis.literal(i), **{c: t[c].cast("int64" if c == "_line" else "string")
                                                           if c in t.columns else
                                                           ibis.null("int64" if c == "_line" else "string")
                                                           for c in cols}))
        got = ibis.union(*parts).to_pandas()
        out = {}
        for i, (name, t) in enumerate(self.quarantine.items()):
            df = got[got["_q"] == i][list(t.columns)]
            sort = ["_line"] if "_line" in t.columns else ["user_id"]
            df = df.sort_values(sort, kind="stable").reset_index(drop=True)
            for c in df.columns:
                df[c] = df[c].astype("Int64") if c == "_line" else df[c].astype("string")
            out[name] = df
        return out

    def close(self) -> None:
        self.session.close()


def plan_sources(con: Any, raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8") -> IngestPlan:
    """Build the ingestion of :mod:`helpers.generate`'s source layout as Ibis expressions on ``con``.

    The CRM file is the spine: one input row per customer. A customer is accepted when their CRM row
    and their engagement, billing, activity and support rows are valid; partner and enrichment
    attributes are joined through the match tables where present. Rows of any file that cannot be
    used (invalid values, duplicates, identifiers unknown to the CRM) go to the quarantine with the reason.
    """
    from .generate import PARTNER_FILE, PARTNER_MATCH, SOURCE_FILES, THIRD_FILE, THIRD_MATCH

    ses = _Session(con)
    try:
        def load(name: str, required: list[str], columns: list[str], key: str = "user_id",
                 extra: list[str] | None = None) -> ibis.Table:
            raw = read_text_source(con, locate_source(raw_dir, name), required, delimiter, encoding, ses)
            v = ses.cache(validate(raw, columns, key, extra, stage=ses.stage))
            rows.append(v.aggregate(source=_text(name), n=v.count()))
            return v

        rows: list[ibis.Table] = []
        checked = {name: load(name, cols, cols) for name, cols in SOURCE_FILES.items()}
        crm = accepted(checked["crm_users.csv"], SOURCE_FILES["crm_users.csv"])
        crm_ids = crm.select(_uid="user_id")
        quarantine: dict[str, ibis.Table] = {"crm_users.csv": rejected(checked["crm_users.csv"], "crm_users.csv")}
        first: dict[str, ibis.Table] = {}
        for name, cols in list(SOURCE_FILES.items())[1:]:
            v = checked[name]
            ok = v.filter(v._reason.isnull())
            orphans = ok.anti_join(crm_ids, ok._v_user_id == crm_ids._uid)
            quarantine[name] = rejected(v, name).union(
                rejected(orphans, name, where=ibis.literal(True), column=_text("user_id"),
                         reason=_text(ORPHAN_REASON)))
            first[name] = accepted(v, cols)
        pairs = {}
        for prof_file, match_file, key, cols in [(PARTNER_FILE, PARTNER_MATCH, "partner_id", S.SECOND_PARTY),
                                                 (THIRD_FILE, THIRD_MATCH, "tp_id", S.THIRD_PARTY)]:
            prof = load(prof_file, [key, *cols], cols, key=key)
            match = load(match_file, ["user_id", key], [], key="user_id", extra=[key])
            prof_ok = accepted(prof, [key, *cols])
            keys = prof_ok.select(_k=key)
            ok = match.filter(match._reason.isnull())
            no_user = ok.anti_join(crm_ids, ok._v_user_id == crm_ids._uid)
            known = ok.semi_join(crm_ids, ok._v_user_id == crm_ids._uid)
            no_key = known.anti_join(keys, known[f"_v_{key}"] == keys._k)
            good = known.semi_join(keys, known[f"_v_{key}"] == keys._k)
            quarantine[prof_file] = rejected(prof, prof_file)
            quarantine[match_file] = rejected(match, match_file).union(
                rejected(no_user, match_file, where=ibis.literal(True), column=_text("user_id"),
                         reason=_text(ORPHAN_REASON))).union(
                rejected(no_key, match_file, where=ibis.literal(True), column=_text(key),
                         reason=_text(f"{key} has no valid row in {prof_file}")))
            g = good.select(_uid=good._v_user_id, _k=good[f"_v_{key}"])
            pairs[key] = g.join(prof_ok, g._k == prof_ok[key]).select("_uid", *cols, _matched=ibis.literal(True))

        parts = {"engagement": first["engagement.csv"], "billing": first["billing.csv"],
                 "activity": first["activity.csv"], "support": first["support.csv"]}
        rights = {k: t.select(_uid=t.user_id, **{c: t[c] for c in t.columns if c not in ("user_id", "_line")},
                              _has=ibis.literal(True)) for k, t in parts.items()}
        rights["partner"], rights["third"] = pairs["partner_id"], pairs["tp_id"]
        j = crm
        flags = {}
        for k, r in rights.items():
            r = r.rename({f"_uid_{k}": "_uid", **{f"_flag_{k}": c for c in r.columns if c in ("_has", "_matched")}})
            j = j.left_join(r, j.user_id == r[f"_uid_{k}"])
            flags[k] = f"_flag_{k}"
        j = j.select(*S.COLUMN_NAMES[:-1], **{k: j[f].notnull() for k, f in flags.items()})
        complete = j.engagement & j.billing & j.activity & j.support
        out = {c: j[c] for c in S.COLUMN_NAMES[:-1]}
        unified = j.filter(complete).select(
            **out, churned_in_last_90_days=j.last_seen_days_ago > S.CHURN_INACTIVE_DAYS,
            _partner_matched=j.partner, _third_matched=j.third)
        why = None
        for k in parts:
            piece = ibis.ifelse(j[k], _text(""), _text(f", {k}.csv"))
            why = piece if why is None else why + piece
        inc = j.filter(~complete)
        quarantine[INCOMPLETE] = inc.select(
            user_id=inc.user_id, _source=_text("unified"), _column=_text("first-party"),
            _reason="no valid row in " + why.substr(2))
        return IngestPlan(unified, quarantine, ibis.union(*rows), ses)
    except BaseException:
        ses.close()
        raise


@contextmanager
def _connection(engine: str, con: Any) -> Iterator[Any]:
    if con is not None:
        yield con
        return
    con = E.connect(engine)
    try:
        yield con
    finally:
        if E.engine_of(con) == "duckdb":
            con.disconnect()


def _collect_quarantine(t: ibis.Table) -> pd.DataFrame:
    df = t.to_pandas()
    for c in df.columns:
        df[c] = df[c].astype("Int64") if c == "_line" else df[c].astype("string")
    return df.reset_index(drop=True)


# --- results -----------------------------------------------------------------------------------
@dataclass
class IngestResult:
    """The unified table, the quarantine and a report of rates and coverage."""

    data: pd.DataFrame
    quarantine: dict[str, pd.DataFrame]
    report: dict = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return int(self.report["n_rejected"])


def coerce_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Cast the dictionary columns of ``df`` to their dtypes and order them as the dictionary does."""
    out = {}
    for c in S.COLUMNS:
        s = df[c.name] if c.name in df else pd.Series(pd.NA, index=df.index)
        if c.kind == "date":
            out[c.name] = pd.to_datetime(s).astype("datetime64[ns]")
        elif c.kind == "bool":
            out[c.name] = s.astype("boolean")
        elif c.kind == "int":
            out[c.name] = pd.to_numeric(s).astype("Int64")
        else:
            out[c.name] = s.astype(c.dtype)
    return pd.DataFrame(out, index=df.index)


def _report(data: pd.DataFrame, n_input: int, quarantine: dict[str, pd.DataFrame],
            missing_optional: list[str], extra: dict) -> dict:
    coverage = {c: round(float(data[c].notna().mean()) if len(data) else 0.0, 6) for c in S.COLUMN_NAMES}
    rep = {
        "n_input": int(n_input),
        "n_users": int(len(data)),
        "n_rejected": int(n_input - len(data)),
        "quarantined_rows_by_source": {k: int(len(v)) for k, v in quarantine.items()},
        "coverage": coverage,
        "missing_optional_columns": missing_optional,
        "limits": sorted({S.LIMITS[S.BY_NAME[c].source] for c in missing_optional}),
        **extra,
    }
    assert rep["n_users"] + rep["n_rejected"] == rep["n_input"]
    return rep


def ingest_sources(raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8", engine: str = "duckdb",
                   con: Any = None) -> IngestResult:
    """Ingest the separate source files of :mod:`helpers.generate`'s layout into the unified table.

    Runs :func:`plan_sources` on ``engine`` (``duckdb`` or ``spark``; or on the Ibis backend ``con`` from
    :func:`helpers.engine.connect`) and collects the unified table (sorted by ``user_id``) and the
    quarantine as pandas. Both engines give the same table, quarantine and report.
    """
    with _connection(engine, con) as con:
        plan = plan_sources(con, raw_dir, delimiter, encoding)
        try:
            n_rows = plan.input_rows()
            joined = plan.unified.to_pandas().sort_values("user_id", kind="stable").reset_index(drop=True)
            quarantine = plan.collect_quarantine()
        finally:
            plan.close()
    data = coerce_dtypes(joined)
    S.pandera_schema().validate(data, lazy=True)
    n_input = n_rows["crm_users.csv"]
    extra = {
        "match_rate_partner": round(float(joined["_partner_matched"].mean()), 6) if len(data) else 0.0,
        "match_rate_third_party": round(float(joined["_third_matched"].mean()), 6) if len(data) else 0.0,
        "source_rows_input": n_rows,
    }
    return IngestResult(data, quarantine, _report(data, n_input, quarantine, [], extra))


def _safe_name(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace(".csv", "")


def ingest_to_parquet(raw_dir: str | Path, out_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8",
                      engine: str = "duckdb", con: Any = None) -> dict:
    """Ingest the sources and write the results straight from the engine to Parquet (nothing in pandas).

    For panels larger than memory (e.g. 10M users from :func:`helpers.generate.write_sources_chunked`):
    writes ``out_dir/rich_audience_data.parquet`` (the 22 columns, sorted by ``user_id``) and
    ``out_dir/quarantine/<source>.parquet`` (``_source, _line, _column, _reason`` + raw text), and returns
    the report dict of :func:`ingest_sources` (counts, match rates, coverage) computed on the engine. DuckDB
    writes single files; Spark writes each as a folder of parts (read both with
    :func:`helpers.engine.read_parquet` or ``pandas.read_parquet``).
    """
    import shutil

    from .artifacts import UNIFIED_PARQUET

    out_dir = Path(out_dir)
    qdir = out_dir / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    with _connection(engine, con) as con:
        plan = plan_sources(con, raw_dir, delimiter, encoding)
        try:
            n_rows = plan.input_rows()
            targets = {UNIFIED_PARQUET: plan.unified.select(*S.COLUMN_NAMES).order_by("user_id")}
            targets.update({f"quarantine/{_safe_name(k)}.parquet": t.order_by("_line" if "_line" in t.columns
                                                                              else "user_id")
                            for k, t in plan.quarantine.items()})
            for rel, t in targets.items():
                p = out_dir / rel
                if p.is_dir():
                    shutil.rmtree(p)
                p.unlink(missing_ok=True)
                con.to_parquet(t, p)
            u = plan.unified
            stats = u.aggregate(n=u.count(), partner=u._partner_matched.cast("int64").sum(),
                                third=u._third_matched.cast("int64").sum(),
                                **{f"c_{c}": u[c].count() for c in S.COLUMN_NAMES}).to_pandas().iloc[0]
            counts = ibis.union(*[t.aggregate(source=_text(k), n=t.count())
                                  for k, t in plan.quarantine.items()]).to_pandas()
            got = dict(zip(counts["source"], counts["n"].astype(int)))
            qn = {k: got[k] for k in plan.quarantine}
        finally:
            plan.close()
    n = int(stats["n"])
    rep = {
        "n_input": n_rows["crm_users.csv"], "n_users": n, "n_rejected": n_rows["crm_users.csv"] - n,
        "quarantined_rows_by_source": qn,
        "coverage": {c: round(float(stats[f"c_{c}"]) / n, 6) if n else 0.0 for c in S.COLUMN_NAMES},
        "missing_optional_columns": [], "limits": [],
        "match_rate_partner": round(float(stats["partner"]) / n, 6) if n else 0.0,
        "match_rate_third_party": round(float(stats["third"]) / n, 6) if n else 0.0,
        "source_rows_input": n_rows,
    }
    (out_dir / "ingest_report.json").write_text(json.dumps(rep, indent=2))
    return rep


def read_mapping(mapping: str | Path | Mapping[str, str] | None) -> dict[str, str]:
    """A column mapping {their column: dictionary column}, from a dict or a two-column CSV.

    The CSV has the header ``source_column,target_column``.
    """
    if mapping is None:
        return {}
    if isinstance(mapping, Mapping):
        m = dict(mapping)
    else:
        f = pd.read_csv(mapping, dtype=str)
        need = {"source_column", "target_column"}
        if not need <= set(f.columns):
            raise IngestError(mapping, f"mapping file has columns {list(f.columns)}",
                              expected="a header 'source_column,target_column'")
        m = dict(zip(f["source_column"].str.strip(), f["target_column"].str.strip()))
    unknown = sorted(set(m.values()) - set(S.COLUMN_NAMES))
    if unknown:
        raise IngestError(str(mapping) if not isinstance(mapping, Mapping) else "column mapping",
                          f"maps to unknown column(s) {', '.join(unknown)}",
                          expected="targets among the 22 dictionary columns")
    return m


def ingest_table(path: str | Path, mapping: str | Path | Mapping[str, str] | None = None,
                 delimiter: str = ",", encoding: str = "utf-8", engine: str = "duckdb",
                 con: Any = None) -> IngestResult:
    """Ingest a user's own ``rich_audience_data.csv`` (or Parquet) in place of the synthetic sources.

    ``user_id`` and the first-party columns are required; second- and third-party columns are optional
    and are added empty when absent, with a statement of which analyses that limits. Columns not in the
    dictionary are reported as ignored. ``churned_in_last_90_days`` is derived when absent and checked
    against ``last_seen_days_ago`` when present. Invalid rows go to the quarantine with their reasons.
    Validation is the same Ibis code as :func:`ingest_sources`, on ``engine`` (or ``con``).
    """
    path = Path(path)
    m = read_mapping(mapping)
    with _connection(engine, con) as con:
        ses = _Session(con)
        try:
            raw = read_text_source(con, path, None, delimiter, encoding, ses)
            raw = raw.rename({new: old for old, new in m.items() if old in raw.columns and old != new})
            found = [c for c in raw.columns if c != "_line"]
            missing_required = [c for c in S.REQUIRED if c not in found]
            if missing_required:
                raise IngestError(path, f"missing required column(s) {', '.join(missing_required)} "
                                  f"(found: {', '.join(found)})", column=missing_required[0],
                                  expected="user_id and the first-party columns; map your names with a mapping "
                                           "file (source_column,target_column)")
            ignored = [c for c in found if c not in S.COLUMN_NAMES]
            missing_optional = [c for c in S.OPTIONAL if c not in found and c != "churned_in_last_90_days"]
            has_flag = "churned_in_last_90_days" in found
            raw = raw.mutate(**{c: ibis.null("string") for c in missing_optional})
            cols = [c for c in S.COLUMN_NAMES if c != "churned_in_last_90_days" or has_flag]
            v = validate(raw, cols, stage=ses.stage)
            if has_flag:  # the flag must agree with the business rule
                given, seen = v._v_churned_in_last_90_days, v._v_last_seen_days_ago
                bad = v._reason.isnull() & given.notnull() & (given != (seen > S.CHURN_INACTIVE_DAYS))
                text = ("churned_in_last_90_days is " + ibis.ifelse(given, _text("True"), _text("False"))
                        + " but last_seen_days_ago is " + seen.cast("string")
                        + f"; expected last_seen_days_ago > {S.CHURN_INACTIVE_DAYS}")
                v = v.mutate(_column=ibis.ifelse(bad, _text("churned_in_last_90_days"), v._column),
                             _reason=ibis.ifelse(bad, text, v._reason))
            v = ses.cache(v)
            ok = accepted(v, [c for c in cols if c != "churned_in_last_90_days"])
            n_input = int(v.count().to_pandas())
            data = ok.to_pandas()
            rejected_rows = _collect_quarantine(rejected(v, path.name)).sort_values("_line").reset_index(drop=True)
        finally:
            ses.close()
    data = coerce_dtypes(data.drop(columns=["_line"]))
    data["churned_in_last_90_days"] = (data["last_seen_days_ago"] > S.CHURN_INACTIVE_DAYS).astype("boolean")
    data = data.sort_values("user_id").reset_index(drop=True)
    S.pandera_schema().validate(data, lazy=True)
    quarantine = {path.name: rejected_rows}
    extra = {
        "match_rate_partner": round(float(data["traveler_type"].notna().mean()), 6) if len(data) else 0.0,
        "match_rate_third_party": round(float(data[S.THIRD_PARTY].notna().any(axis=1).mean()), 6)
        if len(data) else 0.0,
        "ignored_columns": ignored,
        "churn_flag": "checked against last_seen_days_ago" if has_flag else "derived from last_seen_days_ago",
    }
    return IngestResult(data, quarantine, _report(data, n_input, quarantine, missing_optional, extra))


# --- writing ------------------------------------------------------------------------------------
def table_fingerprint(df: pd.DataFrame) -> str:
    """A short content hash of the unified table (the 'panel version' recorded by exports)."""
    h = pd.util.hash_pandas_object(df[S.COLUMN_NAMES], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def write_outputs(result: IngestResult, processed_dir: str | Path, quarantine_dir: str | Path) -> dict[str, Path]:
    """Write the unified table (CSV, Parquet, DuckDB table ``audience``), the quarantine and the report."""
    processed_dir, quarantine_dir = Path(processed_dir), Path(quarantine_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    from .artifacts import UNIFIED_CSV, UNIFIED_PARQUET

    out = {"parquet": processed_dir / UNIFIED_PARQUET, "csv": processed_dir / UNIFIED_CSV,
           "duckdb": processed_dir / "audience.duckdb", "report": processed_dir / "ingest_report.json"}
    # microsecond timestamps: Spark cannot read pandas' default nanoseconds (customer_since_date is a date anyway)
    result.data.to_parquet(out["parquet"], index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    db = out["duckdb"]
    for f in (db, db.with_suffix(".duckdb.wal")):
        f.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE TABLE audience AS SELECT * FROM read_parquet('{out['parquet']}') ORDER BY user_id")
    con.execute(f"""COPY (SELECT * REPLACE (strftime(customer_since_date, '%Y-%m-%d') AS customer_since_date)
                    FROM audience ORDER BY user_id) TO '{out['csv']}' (HEADER, DELIMITER ',')""")
    for old in quarantine_dir.glob("*.csv"):
        old.unlink()
    rows = []
    for name, q in result.quarantine.items():
        safe = _safe_name(name)
        if len(q):
            q.to_csv(quarantine_dir / f"{safe}.csv", index=False)
        rows.append({"source": name, "rejected_rows": len(q)})
    qsum = pd.DataFrame(rows)
    con.register("qsum", qsum)
    con.execute("CREATE TABLE quarantine_summary AS SELECT * FROM qsum")
    con.close()
    rep = dict(result.report, panel_version=table_fingerprint(result.data))
    out["report"].write_text(json.dumps(rep, indent=2))
    return out
