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
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

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
#: Control characters an identifier must not contain (a regex both engines' regex libraries understand).
CONTROL_CHARS = r"[\x00-\x1f\x7f]"
#: Dates before this are implausible for a customer table (typing errors such as 1800 or 0202).
EARLIEST_DATE = "1900-01-01"
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
#: File signatures of formats that are not delimited text: (magic bytes, what it is, what to do).
MAGIC = [
    (b"\x1f\x8b", "a gzip-compressed file, not text",
     "an uncompressed CSV: decompress it first (gunzip FILE, or 7-Zip on Windows) and ingest the .csv inside"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook, or a zipped CSV), not text",
     "a CSV: open the workbook in Excel or LibreOffice and use 'Save As' > 'CSV UTF-8' (or unzip the archive)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls), not text",
     "a CSV: open it in Excel or LibreOffice and use 'Save As' > 'CSV UTF-8'"),
    (b"PAR1", "a Parquet file with a text file name",
     "its real name: rename it to .parquet (Parquet is read directly)"),
    (b"BZh", "a bzip2-compressed file, not text", "an uncompressed CSV: decompress it first (bunzip2 FILE)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file, not text", "an uncompressed CSV: decompress it first (unxz FILE)"),
]
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: DuckDB's maximum line size (bytes); a longer line is refused with this as the cause.
MAX_LINE_BYTES = E.MAX_LINE_BYTES


def _check_format(path: Path, encoding: str) -> None:
    """Refuse compressed files, workbooks and UTF-16 text read as 8-bit text, naming the real cause."""
    with open(path, "rb") as f:
        head = f.read(4096)
    for magic, what, remedy in MAGIC:
        if head.startswith(magic):
            raise IngestError(path, f"the file is {what}", expected=remedy)
    enc = codecs.lookup(encoding).name
    if enc.startswith(("utf-16", "utf-32")):
        return
    if head.startswith(UTF16_BOMS) or (len(head) >= 8 and head.count(b"\x00") >= len(head) // 4):
        raise IngestError(path, "the file is UTF-16 text (a byte-order mark / every other byte is 0), read as "
                          f"{encoding}", expected="pass encoding='utf-16' (make reports ENCODING=utf-16, or "
                          "'input: {encoding: utf-16}' in the run configuration), or re-save it as UTF-8")


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
                          rows=[line], expected=f"a {encoding}-encoded file; pass encoding='latin-1' (make reports "
                          "ENCODING=latin-1, or 'input: {encoding: latin-1}' in the run configuration; or the "
                          "file's real encoding, e.g. cp1252) if it was exported that way") from None


def _check_header(path: Path, names: list[str]) -> None:
    """Every column needs a name, and each name may appear once."""
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise IngestError(path, f"header field(s) {', '.join(map(str, empty))} have no name (header: "
                          f"{', '.join(repr(n) for n in names)})", rows=[1],
                          expected="a name for every column (remove trailing delimiters or name the column)")
    import re

    bad = [(i, n) for i, n in enumerate(names, 1) if re.search(r"[\x00-\x1f\x7f]", n)]
    if bad:
        raise IngestError(path, f"header field {bad[0][0]} ({bad[0][1]!r}) contains a control character", rows=[1],
                          expected="printable column names (a NUL or control byte in the header: is the file "
                          "damaged, or not text?)")
    seen: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if n in seen:
            raise IngestError(path, f"column name {n!r} appears twice in the header (fields {seen[n]} and {i})",
                              column=n, rows=[1], expected="each column name once: rename or drop one of them")
        seen[n] = i


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
        For a missing or empty file, a compressed file, workbook or UTF-16 text, wrong encoding, a header
        delimited by another delimiter than ``delimiter``, empty or duplicate header names, a header without
        data rows, or a required column that is absent.
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(path, "file not found", expected="the file produced by the source system")
    if path.is_dir():
        raise IngestError(path, "is a folder without Parquet parts", expected="a CSV file or a folder of "
                          "part-*.parquet files")
    if path.stat().st_size == 0:
        raise IngestError(path, "file is empty (0 bytes)", expected="a header line and data rows")
    _check_format(path, encoding)
    _check_encoding(path, encoding)
    with open(path, encoding=encoding, newline="") as f:
        header = f.readline()
        has_rows = any(line.strip() for line in iter(f.readline, ""))  # stops at the first data line
    names = [n.strip() for n in next(csv.reader([header.lstrip("\ufeff").rstrip("\r\n")], delimiter=delimiter))]
    if len(names) == 1:
        found = [d for d in DELIMITERS if d != delimiter and d in header]
        if found:
            raise IngestError(path, f"the header is {found[0]!r}-delimited",
                              expected=f"{delimiter!r}-delimited columns; pass delimiter={found[0]!r} (make reports "
                              f"DELIMITER='{found[0]}', or 'input: {{delimiter: \"{found[0]}\"}}' in the run "
                              "configuration)")
    if not has_rows:
        raise IngestError(path, "file has a header but no data rows", expected="at least one data row")
    _check_header(path, names)
    _check_columns(path, names, required)
    return names


def _csv_records(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """``(physical first line, fields)`` of every record after the header, blank lines skipped. Lines are
    counted by line feeds.

    A strict CSV parse (RFC 4180 quoting with doubled quotes); raises :class:`IngestError` naming the line
    of a quoting error.
    """
    csv.field_size_limit(2**31 - 1)
    # newline="\n": a physical line ends at a line feed (as in grep -n, wc -l, editors' line numbers); a carriage
    # return inside a value does not start a new line
    with open(path, encoding=encoding, newline="\n") as f:
        r = csv.reader(f, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
        prev = 0
        try:
            next(r, None)
            prev = r.line_num
            for rec in r:
                start, prev = prev + 1, r.line_num
                if rec:
                    yield start, rec
        except csv.Error as e:
            if "new-line character seen in unquoted field" in str(e):
                raise IngestError(path, "a carriage return (\\r) inside an unquoted value", rows=[prev + 1],
                                  expected="values that contain line breaks enclosed in double quotes (or the stray "
                                  "carriage returns removed)") from None
            raise IngestError(path, f"broken quoting ({e})", rows=[prev + 1],
                              expected='values with quotes, delimiters or line breaks enclosed in double quotes, '
                              'inner quotes doubled ("")') from None


def _needs_line_map(path: Path, encoding: str) -> bool:
    """Whether ``record index + 2`` may differ from the physical line: a quoted line break (a line break
    after an odd number of quote characters) or a blank line. A vectorised byte scan (numpy), so files that
    quote every value but hold one record per line keep the fast path."""
    import numpy as np

    if not codecs.lookup(encoding).name.startswith(("utf-8", "ascii", "iso8859", "cp125", "latin")):
        return True
    parity, prev_nl_end = 0, -2  # quote count parity so far; position just after the previous line break
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            a = np.frombuffer(chunk, dtype=np.uint8)
            q = np.cumsum(a == 34, dtype=np.int64) + parity
            nl = np.flatnonzero(a == 10)
            if len(nl):
                if (q[nl] % 2).any():
                    return True
                starts = np.concatenate([[prev_nl_end - offset], nl[:-1] + 1])
                length = nl - starts  # bytes before each line break on its line
                blank = (length == 0) | ((length == 1) & (a[np.maximum(nl - 1, 0)] == 13))
                if blank[1:].any() or (blank[0] and prev_nl_end >= 0):
                    return True
                prev_nl_end = offset + int(nl[-1]) + 1
            parity = int(q[-1]) % 2 if len(q) else parity
            offset += len(chunk)
    return False


def physical_lines(path: str | Path, delimiter: str = ",", encoding: str = "utf-8") -> list[int] | None:
    """The physical line on which each record of a CSV starts (header = line 1, blank lines skipped), or
    ``None`` when every record is one line and ``index + 2`` is exact (no quotes, no blank lines)."""
    path = Path(path)
    if not _needs_line_map(path, encoding):
        return None
    return [start for start, _ in _csv_records(path, delimiter, encoding)]


def _diagnose_csv(path: Path, names: list[str], delimiter: str, encoding: str, err: Exception) -> IngestError:
    """Why the engine could not parse a CSV, in terms of the file: an over-long line, a row with another
    number of fields than the header (its physical line), or broken quoting."""
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if len(line) > MAX_LINE_BYTES:
                return IngestError(path, f"line {i} is {len(line) / 1e6:.1f} MB long, over the maximum line size of "
                                   f"{MAX_LINE_BYTES / 1e6:.1f} MB (one value is far longer than an attribute)",
                                   rows=[i], expected="values of at most a few kB: remove or shorten the long value "
                                   "(free text such as documents belongs in its own table), then ingest again")
    try:
        for start, rec in _csv_records(path, delimiter, encoding):
            if len(rec) != len(names):
                return IngestError(path, f"a row has {len(rec)} field(s), the header has {len(names)}", rows=[start],
                                   expected=f"{delimiter!r}-delimited rows with as many fields as the header "
                                   f"(quote values that contain {delimiter!r}, or pass the right delimiter)")
    except IngestError as e:
        return e
    first = str(err).splitlines()[0]
    return IngestError(path, f"cannot be parsed as {delimiter!r}-delimited text ({first})",
                       expected=f"{delimiter!r}-delimited rows with as many fields as the header")


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
        raise IngestError(path, "file is empty (0 bytes)", expected="a Parquet file with rows")
    parts = _parquet_parts(path)
    metas = []
    for p in parts:
        try:
            metas.append(pq.ParquetFile(p).metadata)
        except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError: the file is not readable Parquet
            with open(p, "rb") as f:
                head = f.read(4)
            for magic, what, remedy in MAGIC:
                if head.startswith(magic) and magic != b"PAR1":
                    raise IngestError(p, f"the file is {what}", expected=remedy) from None
            raise IngestError(p, f"is not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0]})",
                              expected="a complete Parquet file: the file is truncated or corrupt (an interrupted "
                              "copy or download?); copy or export it again") from None
    names = [str(n).strip() for n in metas[0].schema.to_arrow_schema().names]
    _check_header(parts[0], names)
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


# --- reading: text columns plus the line number (the engine module reads) -------------------------
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
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        for n in reversed(self.tables):
            try:
                E.drop_temp(self.con, n)
            except Exception:  # noqa: BLE001
                pass
        for f in self.files:
            f.unlink(missing_ok=True)


def read_text_source(con: Any, path: str | Path, required: list[str] | None = None, delimiter: str = ",",
                     encoding: str = "utf-8", _session: _Session | None = None) -> ibis.Table:
    """Read a CSV file or Parquet file/folder as an Ibis table of text columns plus ``_line``.

    Every value is text (``NULL`` for empty cells) so that validation, not the reader, judges it.
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
        text = {}
        for c in names:
            dt = t[c].type()
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


def _check_line_map(path: Path, n_engine: int, n_lines: int) -> None:
    if n_engine != n_lines:
        raise IngestError(path, f"ambiguous quoting: the engine read {n_engine:,} rows, a strict CSV parse "
                          f"{n_lines:,}", expected='values with quotes, delimiters or line breaks enclosed in '
                          'double quotes, inner quotes doubled ("")')


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


def _problem(s: ibis.Value, v: ibis.Value, m: ibis.Value | None, col: S.Column,
             observation_date: str | None = None) -> ibis.Value:
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
        cases = [(v.isnull(), "unparseable date: " + s + exp),
                 (v < ibis.date(EARLIEST_DATE), f"implausibly old date (before {EARLIEST_DATE}): " + s
                  + f"; expected a date from {EARLIEST_DATE} on")]
        if observation_date:
            cases.append((v > ibis.date(observation_date), "date after the observation date " + _text(
                observation_date) + ": " + s + f"; expected a date on or before {observation_date} (or pass the "
                "real observation_date)"))
        problem = ibis.ifelse(missing, null, ibis.cases(*cases, else_=null))
    elif col.kind == "bool":
        problem = ibis.ifelse(~missing & v.isnull(), "not a boolean: " + s + exp, null)
    elif col.kind in ("id", "text"):
        problem = null
    else:  # pragma: no cover - the dictionary only has the kinds above
        raise ValueError(f"unknown column kind {col.kind}")
    if not col.nullable:
        problem = ibis.ifelse(missing, _text(f"missing value{exp}"), problem)
    return problem


def _key_problem(s: ibis.Value, copies: ibis.Value, key: str) -> ibis.Value:
    """An identifier must be present, free of control characters and unique: every copy of a duplicated
    value is rejected."""
    return ibis.cases((s.isnull(), _text("missing identifier")),
                      (s.re_search(CONTROL_CHARS), _text("identifier contains a control character (NUL, tab, line "
                                                         "break, ...); expected printable text")),
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
             stage=None, spec: Mapping[str, S.Column] | None = None,
             observation_date: str | None = None, key_unique: bool = True) -> ibis.Table:
    """Apply the data dictionary's rules to a text table (from :func:`read_text_source`), on any engine.

    Values are stripped of surrounding whitespace (an empty cell is missing). Rules: unknown category,
    invalid multi-valued set (:func:`helpers.schema.multi_pattern`), not a number (:data:`NUMBER_PATTERN`),
    not an integer, out of range, unparseable date (``YYYY-MM-DD``), not a boolean, missing value where the
    column is not nullable; ``key`` and ``extra_keys`` are identifiers that must be present and unique
    (every copy of a duplicate is rejected; ``key_unique=False`` for long tables) and free of control
    characters. Dates before
    :data:`EARLIEST_DATE` or after ``observation_date`` (when given) are implausible. ``spec`` maps column
    names to their :class:`helpers.schema.Column` rule (default: the 22-column dictionary).

    Returns ``_line``, the raw text columns, the parsed value of each checked column as ``_v_<column>``,
    and ``_column`` (first column with a problem) / ``_reason`` (``'column: problem; ...'``), both ``NULL``
    for a valid row. ``stage`` (expression -> table, e.g. a temporary view) cuts the plan between the
    parsing stages so the generated SQL stays small; without it the expression is one (large) query.
    """
    stage = stage or (lambda t: t)
    spec = S.BY_NAME if spec is None else spec
    keys = [key, *(extra_keys or [])]
    checked = keys + [c for c in columns if c not in keys]
    t = raw.mutate(**{f"_s_{c}": raw[c].re_replace(EDGE_SPACE, "").nullif("") for c in checked})
    t = stage(t.mutate(**{f"_n_{k}": t[f"_s_{k}"].count().over(ibis.window(group_by=t[f"_s_{k}"]))
                          if key_unique or k != key else ibis.literal(1, type="int64") for k in keys}))
    parsed = {}
    for c in checked:
        if c not in keys:
            for part, expr in _parse(t[f"_s_{c}"], spec[c]).items():
                parsed[f"_{part}_{c}"] = expr
    t = stage(t.mutate(**parsed))
    problems = {k: _key_problem(t[f"_s_{k}"], t[f"_n_{k}"], k) for k in keys}
    for c in checked:
        if c not in keys:
            problems[c] = _problem(t[f"_s_{c}"], t[f"_v_{c}"], t[f"_m_{c}"] if f"_m_{c}" in t.columns else None,
                                   spec[c], observation_date)
    t = stage(t.mutate(**{f"_p_{c}": p for c, p in problems.items()}))
    column, reason = _combine({c: t[f"_p_{c}"] for c in checked})
    values = {}
    for c in checked:
        kind = "id" if c in keys else spec[c].kind
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
    columns: tuple = S.COLUMNS           # the unified table's columns (dictionary + CRM extension columns)
    ids: ibis.Table | None = None        # accepted CRM identifiers (column _uid): the spine of the joins

    def id_ranges(self, n: int, rows_per_range: int) -> list[ibis.Value | None]:
        """Conditions on ``user_id`` splitting the spine into ranges of about ``rows_per_range`` identifiers
        (``[None]``: one range), in ``user_id`` order, so ranges written one after the other are sorted."""
        k = max(1, -(-int(n) // int(rows_per_range)))
        if k == 1 or self.ids is None:
            return [None]
        step = -(-int(n) // k)
        r = self.ids.mutate(_rn=ibis.row_number().over(order_by=self.ids._uid))
        bounds = r.filter((r._rn % step == step - 1)).select("_uid").order_by("_uid").to_pandas()["_uid"].tolist()
        u = self.unified.user_id
        conds = [u < bounds[0]] if bounds else []
        conds += [(u >= lo) & (u < hi) for lo, hi in zip(bounds, bounds[1:])]
        return conds + [u >= bounds[-1]] if bounds else [None]

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


def plan_sources(con: Any, raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8",
                 observation_date: str | None = None, config: Any = None,
                 spill_dir: str | Path | None = None) -> IngestPlan:
    """Build the ingestion of :mod:`helpers.generate`'s source layout as Ibis expressions on ``con``.

    The CRM file is the spine: one input row per customer. A customer is accepted when their CRM row
    and their engagement, billing, activity and support rows are valid; partner and enrichment
    attributes are joined through the match tables where present. Rows of any file that cannot be
    used (invalid values, duplicates, identifiers unknown to the CRM) go to the quarantine with the reason.

    Columns of the CRM file beyond the dictionary are kept: those the run configuration declares
    (``config``, default: ``state`` and ``gender``) are validated by their rule, others are kept as text.
    Dates after ``observation_date`` (or before 1900) are quarantined. ``spill_dir``: intermediate tables
    are kept there as Parquet instead of in the engine's memory.
    """
    from . import config as C
    from .generate import PARTNER_FILE, PARTNER_MATCH, SOURCE_FILES, THIRD_FILE, THIRD_MATCH

    cfg = C.load(config)
    spec = {c.name: c for c in S.columns_for(cfg)} if cfg.is_default else dict(S.BY_NAME)
    ses = _Session(con, Path(spill_dir) if spill_dir is not None else None)
    try:
        def load(name: str, required: list[str], columns: list[str], key: str = "user_id",
                 extra: list[str] | None = None, keep_extra: bool = False) -> ibis.Table:
            raw = read_text_source(con, locate_source(raw_dir, name), required, delimiter, encoding, ses)
            if keep_extra:
                for c in raw.columns:
                    if c != "_line" and c not in columns and c != key:
                        spec.setdefault(c, S.extension_column(c))
                        columns = [*columns, c]
                        crm_extra.append(c)
            v = ses.cache(validate(raw, columns, key, extra, stage=ses.stage, spec=spec,
                                   observation_date=observation_date))
            rows.append(v.aggregate(source=_text(name), n=v.count()))
            return v

        rows: list[ibis.Table] = []
        crm_extra: list[str] = []
        checked = {name: load(name, cols, cols, keep_extra=name == "crm_users.csv")
                   for name, cols in SOURCE_FILES.items()}
        crm_cols = list(dict.fromkeys([*SOURCE_FILES["crm_users.csv"], *crm_extra]))
        present_ext = [c for c in crm_cols if c not in S.BY_NAME]
        declared_ext = [c for c in spec if c not in S.BY_NAME and not spec[c].kind == "text"]
        crm_extra = list(dict.fromkeys([*declared_ext, *present_ext]))  # declared first, absent ones empty
        crm = accepted(checked["crm_users.csv"], crm_cols)
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
            prof = load(prof_file, [key, *cols], cols, key=key)  # noqa: B023
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
        j = j.select(*S.COLUMN_NAMES[:-1], **{c: j[c] if c in present_ext else ibis.null("string")
                                              for c in crm_extra}, **{k: j[f].notnull() for k, f in flags.items()})
        complete = j.engagement & j.billing & j.activity & j.support
        out = {c: j[c] for c in S.COLUMN_NAMES[:-1]}
        unified = j.filter(complete).select(
            **out, churned_in_last_90_days=j.last_seen_days_ago > S.CHURN_INACTIVE_DAYS,
            **{c: j[c] for c in crm_extra}, _partner_matched=j.partner, _third_matched=j.third)
        why = None
        for k in parts:
            piece = ibis.ifelse(j[k], _text(""), _text(f", {k}.csv"))
            why = piece if why is None else why + piece
        inc = j.filter(~complete)
        quarantine[INCOMPLETE] = inc.select(
            user_id=inc.user_id, _source=_text("unified"), _column=_text("first-party"),
            _reason="no valid row in " + why.substr(2))
        columns = (*S.COLUMNS, *[spec[c] for c in crm_extra])
        return IngestPlan(unified, quarantine, ibis.union(*rows), ses, columns, crm_ids)
    except BaseException:
        ses.close()
        raise


@contextmanager
def _connection(engine: str, con: Any, spill_dir: Path | None = None) -> Iterator[Any]:
    """``con``, or a new backend for ``engine`` closed at the end. Ingestion orders every result explicitly and
    carries line numbers as columns, so its own DuckDB connections drop insertion order and spill to
    ``spill_dir`` (or ``$AUDIENCE_DUCKDB_TEMP_DIRECTORY``): what lets 10M users ingest within a memory limit."""
    if con is not None:
        yield con
        return
    # a database file (not :memory:) in the spill folder: cached tables then live in buffers DuckDB may evict
    db = spill_dir / f"ingest-{uuid.uuid4().hex[:8]}.duckdb" if spill_dir is not None and E.check_engine(engine) == "duckdb" else None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    con = E.connect(engine, db, temp_directory=spill_dir, preserve_insertion_order=False)
    try:
        yield con
    finally:
        E.disconnect(con)
        if db is not None:
            for f in (db, db.with_suffix(".duckdb.wal")):
                f.unlink(missing_ok=True)


def _collect_quarantine(t: ibis.Table) -> pd.DataFrame:
    df = t.to_pandas()
    for c in df.columns:
        df[c] = df[c].astype("Int64") if c == "_line" else df[c].astype("string")
    return df.reset_index(drop=True)


# --- results -----------------------------------------------------------------------------------
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


def ingest_sources(raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8", engine: str = "duckdb",
                   con: Any = None, observation_date: str | None = None, config: Any = None,
                   stage_dir: str | Path | None = None, rows_per_range: int = 1_000_000) -> IngestResult:
    """Ingest the separate source files of :mod:`helpers.generate`'s layout into the unified table.

    Runs :func:`plan_sources` on ``engine`` (``duckdb`` or ``spark``; or on the Ibis backend ``con`` from
    :func:`helpers.engine.connect`). Without ``stage_dir`` the unified table (sorted by ``user_id``) is
    collected as pandas (``result.data``). With ``stage_dir`` nothing passes through one pandas frame: the
    engine sorts and writes the table as Parquet (spilling to ``stage_dir/.spill`` on DuckDB), which is
    re-typed batch by batch to the dictionary's dtypes into ``stage_dir/rich_audience_data.parquet``
    (``result.staged``, put in place by :func:`write_outputs`); the report and the panel version are computed
    in that pass. The joins run per range of about ``rows_per_range`` identifiers, written one after the
    other in ``user_id`` order, so that memory follows the range, not the panel. Both engines and both
    modes give the same table, quarantine and report. Raises
    :class:`IngestError` when no customer is accepted.
    """
    from .artifacts import UNIFIED_PARQUET

    spill = Path(stage_dir) / ".spill" if stage_dir is not None else None
    with _connection(engine, con, spill) as con:
        plan = plan_sources(con, raw_dir, delimiter, encoding, observation_date, config, spill)
        try:
            n_rows = plan.input_rows()
            quarantine = plan.collect_quarantine()
            flags = ["_partner_matched", "_third_matched"]
            if stage_dir is None:
                joined = plan.unified.to_pandas().sort_values("user_id", kind="stable").reset_index(drop=True)
            else:
                # one join per user_id range: the joins' hash tables hold one range at a time (10M users in 8 GB)
                expr = plan.unified.select(*[c.name for c in plan.columns], *flags)
                engine_files = []
                for i, cond in enumerate(plan.id_ranges(n_rows["crm_users.csv"], rows_per_range)):
                    engine_files.append(Path(stage_dir) / f"unified.engine-{i:04d}.parquet")
                    E.write_parquet(con, expr if cond is None else expr.filter(cond), engine_files[-1],
                                    order_by=["user_id"])
        finally:
            plan.close()
    n_input = n_rows["crm_users.csv"]
    staged = None
    if stage_dir is None:
        if len(joined) == 0:
            raise _no_rows_error(Path(raw_dir) / "crm_users.csv", n_input, quarantine)
        data = coerce_dtypes(joined, plan.columns)
        S.pandera_schema(plan.columns).validate(data, lazy=True)
        n, coverage = len(data), _coverage(data, plan.columns)
        matched = {f: float(joined[f].mean()) for f in flags}
    else:
        data, staged = None, Path(stage_dir) / UNIFIED_PARQUET
        typed = retype_parquet(engine_files, staged, plan.columns, carry=flags)
        n, coverage = typed.n, typed.coverage
        matched = {f: typed.sums[f] / n if n else 0.0 for f in flags}
        if n == 0:
            staged.unlink(missing_ok=True)
            raise _no_rows_error(Path(raw_dir) / "crm_users.csv", n_input, quarantine)
    extra = {
        "match_rate_partner": round(matched["_partner_matched"], 6),
        "match_rate_third_party": round(matched["_third_matched"], 6),
        "source_rows_input": n_rows,
        "extension_columns": [c.name for c in plan.columns[len(S.COLUMNS):] if c.kind == "text"],
        "observation_date": observation_date,
    }
    rep = _report(n, coverage, n_input, quarantine, [], extra, plan.columns)
    if staged is not None:
        rep["panel_version"] = typed.fingerprint
    return IngestResult(data, quarantine, rep, plan.columns, staged)


@dataclass
class Retyped:
    """What :func:`retype_parquet` counted while rewriting: rows, coverage, sums of carried flags, fingerprint."""

    n: int
    coverage: dict[str, float]
    sums: dict[str, float]
    fingerprint: str
    n_users: int | None = None


def retype_parquet(src: Path | Sequence[Path], dest: Path, columns: tuple, *, carry: Sequence[str] = (), validate: bool = True,
                   batch_size: int = 250_000, count_distinct: str | None = None) -> Retyped:
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


def _safe_name(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace(".csv", "")


def ingest_to_parquet(raw_dir: str | Path, out_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8",
                      engine: str = "duckdb", con: Any = None, observation_date: str | None = None,
                      config: Any = None, rows_per_range: int = 1_000_000) -> dict:
    """Ingest the sources and write the results from the engine to Parquet (nothing in one pandas frame).

    For panels larger than memory (e.g. 10M users from :func:`helpers.generate.write_sources_chunked`):
    :func:`ingest_sources` with ``stage_dir=out_dir``, then ``out_dir/rich_audience_data.parquet`` (the 22
    columns and the CRM extension columns, sorted by ``user_id``, one file on both engines),
    ``out_dir/quarantine/<source>.parquet`` (``_source, _line, _column, _reason`` + raw text) and
    ``out_dir/ingest_report.json`` (the report of :func:`ingest_sources`, with the panel version), which is
    also returned. Nothing is written when no customer is accepted (:class:`IngestError`).
    """
    out_dir = Path(out_dir)
    res = ingest_sources(raw_dir, delimiter, encoding, engine, con, observation_date, config, stage_dir=out_dir,
                         rows_per_range=rows_per_range)
    qdir = out_dir / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    for name, q in res.quarantine.items():
        q.to_parquet(qdir / f"{_safe_name(name)}.parquet", index=False)
    (out_dir / "ingest_report.json").write_text(json.dumps(res.report, indent=2, default=str))
    return dict(res.report, parquet=str(res.staged))


# --- column mappings ----------------------------------------------------------------------------
@dataclass
class Mapping_:
    """A column mapping read from a file or a dict: ``{their column: target}`` and where each came from."""

    pairs: dict[str, str]
    where: dict[str, str]  # source column -> "row 3" (file line) or "entry 'x'"
    name: str              # the mapping file, or "column mapping"


def _read_mapping(mapping: str | Path | Mapping[str, str] | None, targets: list[str] | None) -> Mapping_ | None:
    if mapping is None:
        return None
    targets = S.COLUMN_NAMES if targets is None else targets
    if isinstance(mapping, Mapping):
        name = "column mapping"
        rows = [(f"entry {k!r}", str(k), str(v)) for k, v in mapping.items()]
    else:
        path = Path(mapping)
        name = str(path)
        expect_file = "a CSV with the header 'source_column,target_column' and one row per renamed column"
        if not path.exists():
            raise IngestError(path, "mapping file not found", expected=expect_file)
        if path.is_dir() or path.stat().st_size == 0 or not path.read_bytes().strip():
            raise IngestError(path, "mapping file is empty", expected=expect_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise IngestError(path, f"mapping file is not UTF-8 text (byte {e.start})", expected=expect_file) from None
        recs = list(_csv_lines(text))
        header = [h.strip() for h in recs[0][1]]
        if header[:2] != ["source_column", "target_column"] and not {"source_column", "target_column"} <= set(header):
            raise IngestError(path, f"mapping file has columns {header}", rows=[1],
                              expected="a header 'source_column,target_column'")
        si, ti = header.index("source_column"), header.index("target_column")
        rows = []
        for line, rec in recs[1:]:
            if not any(x.strip() for x in rec):
                continue
            src = rec[si].strip() if len(rec) > si else ""
            tgt = rec[ti].strip() if len(rec) > ti else ""
            if not src or not tgt:
                raise IngestError(path, f"row {line} has an empty {'source_column' if not src else 'target_column'}",
                                  rows=[line], expected="a source column name and a target column name on every row")
            rows.append((f"row {line}", src, tgt))
        if not rows:
            raise IngestError(path, "mapping file has a header but no rows", expected=expect_file)
    pairs: dict[str, str] = {}
    where: dict[str, str] = {}
    by_target: dict[str, str] = {}
    for w, src, tgt in rows:
        if src in pairs:
            raise IngestError(name, f"{w} maps source column {src!r} again (first at {where[src]})",
                              expected="each source column once")
        if tgt in by_target:
            first = by_target[tgt]
            raise IngestError(name, f"{w} maps {src!r} to {tgt!r}, which {where[first]} already maps {first!r} to",
                              column=tgt, expected="each target column once (two source columns cannot become one)")
        if tgt not in targets:
            raise IngestError(name, f"{w} maps {src!r} to unknown column {tgt!r}",
                              expected="targets among the columns of the run configuration (" + ", ".join(targets) + ")")
        pairs[src], where[src], by_target[tgt] = tgt, w, src
    return Mapping_(pairs, where, name)


def _csv_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    import io

    r = csv.reader(io.StringIO(text, newline=""))
    prev = 0
    for rec in r:
        start, prev = prev + 1, r.line_num
        yield start, rec


def read_mapping(mapping: str | Path | Mapping[str, str] | None, targets: list[str] | None = None) -> dict[str, str]:
    """A column mapping {their column: target column}, from a dict or a two-column CSV.

    The CSV has the header ``source_column,target_column``. Refused, with the mapping file, the row and
    what was expected: a missing or empty file, a wrong header, empty cells, a source column mapped twice,
    two source columns mapped to one target, a target that is not a column of the run configuration
    (``targets``, default: the 22 dictionary columns). :func:`check_mapping` checks it against a file.
    """
    m = _read_mapping(mapping, targets)
    return {} if m is None else dict(m.pairs)


def check_mapping(m: Mapping_, found: list[str], path: str | Path) -> None:
    """Every source column must be in the file, and no target may collide with another column of the file."""
    for src, tgt in m.pairs.items():
        if src not in found:
            raise IngestError(m.name, f"{m.where[src]}: source column {src!r} is not in {Path(path).name} (its "
                              f"columns: {', '.join(found)})", column=src,
                              expected="source_column values that are column names of the input file")
        if tgt in found and tgt != src and tgt not in m.pairs:
            raise IngestError(m.name, f"{m.where[src]} maps {src!r} to {tgt!r}, but {Path(path).name} already has a "
                              f"column {tgt!r}", column=tgt,
                              expected=f"a target that is not already a column of the file (drop or rename the "
                              f"existing {tgt!r} first, or leave {src!r} unmapped)")


# --- a user's own table ---------------------------------------------------------------------------
def _derived_column(d: Any, cfg: Any) -> S.Column:
    unit = cfg.metric(d.name).unit if d.name in cfg.metric_names else ""
    return S.Column(d.name, "int", "derived", d.note or f"derived: {d.rule}", unit=unit, required=False,
                    nullable=False, min_value=0)


def ingest_table(path: str | Path | None = None, mapping: str | Path | Mapping[str, str] | None = None,
                 delimiter: str | None = None, encoding: str | None = None, engine: str = "duckdb",
                 con: Any = None, config: Any = None, observation_date: str | None = None) -> IngestResult:
    """Ingest a user's own table (CSV, Parquet file or folder of parts) as the run configuration declares it.

    ``config`` is a :class:`helpers.config.RunConfig`, a path or ``None`` (the 22-column dictionary).
    ``path``, ``mapping``, ``delimiter``, ``encoding`` and ``observation_date`` default to the
    configuration's ``input`` and ``dates`` keys. The identifier and the required columns (metrics and
    dates, or the dictionary's first-party columns) must be present; optional attributes are added empty
    when absent, with a statement of which analyses that limits. Columns the configuration does not declare
    are **kept** as text extension columns (``report["extension_columns"]``). ``when_missing`` rules fill
    blank metrics explicitly (counted in ``report["filled"]``); ``derived`` columns are computed.
    ``churned_in_last_90_days`` (dictionary) is derived when absent and checked against
    ``last_seen_days_ago`` when present. Invalid rows go to the quarantine with their reasons. Raises
    :class:`IngestError` for unreadable files, bad mappings and when no row is accepted.
    """
    from . import config as C

    cfg = C.load(config)
    if path is None:
        path = cfg.input.resolved_path()
        if path is None:
            raise IngestError(cfg.path or "run configuration", "no input table (key 'input.path' is null)",
                              expected="input_path, or 'input: {path: ...}' in the run configuration")
    path = Path(path)
    delimiter = cfg.input.delimiter if delimiter is None else delimiter
    encoding = cfg.input.encoding if encoding is None else encoding
    observation_date = observation_date or cfg.dates.observation_date
    mapping = cfg.input.mapping if mapping is None else mapping
    columns = S.columns_for(cfg)
    spec = {c.name: c for c in columns}
    key = cfg.id
    m = _read_mapping(mapping, [c.name for c in columns])
    derived = [_derived_column(d, cfg) for d in cfg.derived]
    with _connection(engine, con) as con:
        ses = _Session(con)
        try:
            raw = read_text_source(con, path, None, delimiter, encoding, ses)
            found0 = [c for c in raw.columns if c != "_line"]
            if m is not None:
                check_mapping(m, found0, path)
                raw = raw.rename({new: old for old, new in m.pairs.items() if old != new})
            found = [c for c in raw.columns if c != "_line"]
            required = [c.name for c in columns if c.required]
            missing_required = [c for c in required if c not in found]
            if missing_required:
                raise IngestError(path, f"missing required column(s) {', '.join(missing_required)} "
                                  f"(found: {', '.join(found)})", column=missing_required[0],
                                  expected=("user_id and the first-party columns" if cfg.is_default else
                                            f"the columns the run configuration {cfg.path} declares as required")
                                  + "; map your names with a mapping file (source_column,target_column) or "
                                  "declare your columns in a run configuration (src/helpers/config/presets/README.md)")
            extension = [c for c in found if c not in spec]
            for c in extension:
                spec[c] = S.extension_column(c)
            has_flag = "churned_in_last_90_days" in found
            flag_rule = cfg.is_default and "last_seen_days_ago" in spec
            missing_optional = [c.name for c in columns if not c.required and c.name not in found
                                and not (flag_rule and c.name == "churned_in_last_90_days")]
            raw = raw.mutate(**{c: ibis.null("string") for c in missing_optional})
            filled = {}
            for metric in cfg.metrics:  # explicit rules for blank cells, counted in the report
                rule = metric.when_missing
                if not rule or metric.name not in found:
                    continue
                blank = raw[metric.name].re_replace(EDGE_SPACE, "").nullif("").isnull()
                cond = blank
                if rule.get("if"):
                    col, eq = rule["if"]["column"], rule["if"]["equals"]
                    if col not in found:
                        raise IngestError(path, f"the rule metrics.{metric.name}.when_missing needs column {col!r}",
                                          column=col, expected=f"a column {col!r} (or drop the rule in {cfg.path})")
                    other = raw[col].re_replace(EDGE_SPACE, "").nullif("")
                    cond = cond & (other.try_cast("float64") == float(eq) if isinstance(eq, (int, float))
                                   and not isinstance(eq, bool) else other == str(eq))
                filled[metric.name] = (rule, raw.filter(cond).count())
                raw = raw.mutate(**{metric.name: ibis.ifelse(cond, _text(f"{float(rule['fill']):g}"),
                                                             raw[metric.name])})
            cols = [c.name for c in columns if c.name != key and
                    (c.name != "churned_in_last_90_days" or has_flag or not flag_rule)] + extension
            v = validate(raw, cols, key=key, stage=ses.stage, spec=spec, observation_date=observation_date)
            if has_flag and flag_rule:  # the flag must agree with the business rule
                given, seen = v._v_churned_in_last_90_days, v._v_last_seen_days_ago
                bad = v._reason.isnull() & given.notnull() & (given != (seen > S.CHURN_INACTIVE_DAYS))
                text = ("churned_in_last_90_days is " + ibis.ifelse(given, _text("True"), _text("False"))
                        + " but last_seen_days_ago is " + seen.cast("string")
                        + f"; expected last_seen_days_ago > {S.CHURN_INACTIVE_DAYS}")
                v = v.mutate(_column=ibis.ifelse(bad, _text("churned_in_last_90_days"), v._column),
                             _reason=ibis.ifelse(bad, text, v._reason))
            v = ses.cache(v)
            keep = [key] + [c for c in cols if c != "churned_in_last_90_days" or not flag_rule]
            ok = accepted(v, keep)
            for d in cfg.derived:
                absent = [c for c in d.columns if c not in found]
                if absent:
                    raise IngestError(path, f"derived column {d.name!r} needs column(s) {', '.join(absent)}",
                                      column=absent[0], expected=f"the columns listed under derived in {cfg.path}")
                total = None
                for c in d.columns:
                    piece = ibis.ifelse(ok[c].cast("string").isin(list(d.values)), 1, 0)
                    total = piece if total is None else total + piece
                ok = ok.mutate(**{d.name: total.cast("int64")})
            n_input = int(v.count().to_pandas())
            data = ok.to_pandas()
            rejected_rows = _collect_quarantine(rejected(v, path.name)).sort_values("_line").reset_index(drop=True)
            fill_counts = {}
            for name, (rule, count) in filled.items():
                fill_counts[name] = {"rows": int(count.to_pandas()), "fill": rule["fill"],
                                     "note": rule.get("note", "")}
        finally:
            ses.close()
    quarantine = {path.name: rejected_rows}
    if len(data) == 0:
        raise _no_rows_error(path, n_input, quarantine)
    if flag_rule:
        columns = tuple(c for c in columns if c.name in found or c.name in missing_optional
                        or c.name == "churned_in_last_90_days")
    out_cols = (*columns, *derived, *[spec[c] for c in extension])
    data = coerce_dtypes(data.drop(columns=["_line"]), out_cols)
    if flag_rule:
        data["churned_in_last_90_days"] = (data["last_seen_days_ago"] > S.CHURN_INACTIVE_DAYS).astype("boolean")
    data = data.sort_values(key).reset_index(drop=True)
    S.pandera_schema(out_cols).validate(data, lazy=True)
    extra: dict[str, Any] = {
        "config": cfg.name,
        "extension_columns": extension,
        "ignored_columns": [],
        "filled": fill_counts,
        "derived_columns": {d.name: d.note for d in cfg.derived},
        "mapping": dict(m.pairs) if m is not None else {},
        "observation_date": observation_date,
    }
    if "traveler_type" in data and set(S.THIRD_PARTY) <= set(data.columns):
        extra["match_rate_partner"] = round(float(data["traveler_type"].notna().mean()), 6)
        extra["match_rate_third_party"] = round(float(data[S.THIRD_PARTY].notna().any(axis=1).mean()), 6)
    if flag_rule:
        extra["churn_flag"] = "checked against last_seen_days_ago" if has_flag else "derived from last_seen_days_ago"
    return IngestResult(data, quarantine, _report(len(data), _coverage(data, out_cols), n_input, quarantine,
                                                  missing_optional, extra, out_cols), out_cols)


# --- long tables (one row per user and month / transaction / exposure / post) ---------------------
@dataclass(frozen=True)
class EventSpec:
    """The rules of a long table: its identifier, its columns and the key that must be unique."""

    columns: tuple[S.Column, ...]
    id: str = "user_id"
    unique: tuple[str, ...] = ()      # e.g. ("user_id", "month"): every copy of a duplicate is rejected
    description: str = ""

    @property
    def names(self) -> list[str]:
        return [self.id, *[c.name for c in self.columns]]


def _num(name, kind="float", lo=0.0, hi=None, unit="", desc="", required=True):
    return S.Column(name, kind, "1st party", desc or name, unit=unit, required=required, nullable=not required,
                    min_value=lo, max_value=hi)


ENGAGEMENT_STATES = ("active", "light", "dormant", "churned")
#: The long tables notebook 01 ingests when present in ``raw/`` (file ``<name>.parquet``, a folder of parts,
#: or ``<name>.csv``). Columns not listed are kept as text.
EVENT_SPECS: dict[str, EventSpec] = {
    "monthly_activity": EventSpec((
        S.Column("month", "date", "1st party", "First day of the month."),
        S.Column("engagement_state", "category", "1st party", "Engagement state that month.",
                 categories=ENGAGEMENT_STATES),
        _num("minutes_social", hi=1440, unit="min/day"), _num("minutes_video", hi=1440, unit="min/day"),
        _num("minutes_podcasts", hi=1440, unit="min/day"), _num("conversions", "int", hi=100000, unit="count"),
        _num("spend", hi=1e7, unit="USD")), unique=("user_id", "month"),
        description="one row per user and month"),
    "transactions": EventSpec((S.Column("date", "date", "1st party", "Transaction date."),
                               _num("amount", hi=1e7, unit="USD")), description="one row per purchase"),
    "exposures": EventSpec((S.Column("date", "date", "1st party", "Exposure date."),
                            _num("hour", "int", 0, 23, unit="h", required=False),
                            S.Column("channel", "text", "1st party", "Media channel."),
                            _num("impressions", "int", hi=1e9, unit="count", required=False)),
                           description="one row per user, day, hour and channel"),
    "posts": EventSpec((S.Column("post_id", "text", "1st party", "Post identifier (unique)."),
                        S.Column("platform", "text", "1st party", "Platform of the post.", required=False,
                                 nullable=True),
                        S.Column("date", "date", "1st party", "Post date."),
                        S.Column("text", "text", "1st party", "Post text.", required=False, nullable=True)),
                       unique=("post_id",), description="one row per post"),
}


def locate_event_source(raw_dir: str | Path, name: str) -> Path | None:
    """``raw/<name>.parquet`` (file or folder of parts), ``raw/<name>/`` or ``raw/<name>.csv``; None if absent."""
    raw_dir = Path(raw_dir)
    for cand in (raw_dir / f"{name}.parquet", raw_dir / name, raw_dir / f"{name}.csv"):
        if cand.exists():
            return cand
    return None


def ingest_event_table(name: str, path: str | Path, spec: EventSpec | None = None, con: Any = None,
                       engine: str = "duckdb", known_ids: Any = None, observation_date: str | None = None,
                       delimiter: str = ",", encoding: str = "utf-8", id_column: str | None = None,
                       stage_dir: str | Path | None = None) -> IngestResult:
    """Validate a long table (many rows per user) with quarantine, on either engine.

    ``spec`` defaults to :data:`EVENT_SPECS` ``[name]`` (an unknown name: the id and every other column as
    text). Rules: the id is present and free of control characters; dates parse, are not before 1900 and
    not after ``observation_date``; numbers in range; categories known; the ``unique`` key (e.g.
    ``user_id, month``) is unique (every copy of a duplicate is rejected); an id not in ``known_ids``
    (the accepted customers of the unified table) is an orphan. Every rejected row is in the quarantine with
    the file, physical line, column and reason, so accepted + rejected = input. Columns not in the spec are
    kept as text. Raises :class:`IngestError` for unreadable files and when no row is accepted.

    ``known_ids``: the identifiers (a sequence), or the :class:`IngestResult` of the unified table (read on
    the engine when it is staged). Without ``stage_dir`` the accepted rows are collected as pandas
    (``result.data``); with it the engine sorts and writes them (``stage_dir/<name>.parquet``, re-typed batch
    by batch, ``result.staged``; :func:`write_event_table` puts it in place), for tables larger than memory.
    """
    path = Path(path)
    spec = spec or EVENT_SPECS.get(name) or EventSpec((), id=id_column or "user_id")
    if id_column:
        spec = EventSpec(spec.columns, id=id_column, unique=tuple(id_column if c == spec.id else c for c in spec.unique),
                         description=spec.description)
    rules = {c.name: c for c in spec.columns}
    required = [spec.id] + [c.name for c in spec.columns if c.required]
    spill = Path(stage_dir) / ".spill" if stage_dir is not None else None
    with _connection(engine, con, spill) as con:
        ses = _Session(con, spill)
        try:
            raw = read_text_source(con, path, required, delimiter, encoding, ses)
            found = [c for c in raw.columns if c != "_line"]
            extension = [c for c in found if c != spec.id and c not in rules]
            absent = [c.name for c in spec.columns if c.name not in found]
            raw = raw.mutate(**{c: ibis.null("string") for c in absent})
            for c in extension:
                rules[c] = S.extension_column(c)
            cols = [c.name for c in spec.columns] + extension
            v = validate(raw, cols, key=spec.id, stage=ses.stage, spec=rules, observation_date=observation_date,
                         key_unique=False)
            if spec.unique:
                w = ibis.window(group_by=[v[f"_v_{c}"] for c in spec.unique])
                v = ses.stage(v.mutate(_copies=v._line.count().over(w)))
                dup = v._reason.isnull() & (v._copies > 1)
                key_text = ", ".join(spec.unique)
                v = v.mutate(_column=ibis.ifelse(dup, _text(spec.unique[-1]), v._column),
                             _reason=ibis.ifelse(dup, _text(f"duplicate ({key_text}) (every copy is rejected)"),
                                                 v._reason)).drop("_copies")
            if known_ids is not None:
                ids = known_ids if isinstance(known_ids, ibis.Table) else _id_table(ses, known_ids)
                v = ses.stage(v.left_join(ids, v[f"_v_{spec.id}"] == ids._known).mutate(
                    _orphan=lambda t: t._known.isnull()))
                orphan = v._reason.isnull() & v._orphan
                v = v.mutate(_column=ibis.ifelse(orphan, _text(spec.id), v._column),
                             _reason=ibis.ifelse(orphan, _text(f"{spec.id} not in the unified table (unknown "
                                                               "customer, or their row was rejected)"), v._reason))
                v = v.drop("_known", "_orphan")
            v = ses.cache(v)
            ok = accepted(v, [spec.id, *cols])
            n_input = int(v.count().to_pandas())
            quarantine = {path.name: _collect_quarantine(rejected(v, path.name)).sort_values("_line")
                          .reset_index(drop=True)}
            out_cols = (S.Column(spec.id, "id", "1st party", "identifier"), *[rules[c] for c in cols])
            sort = [c for c in (spec.id, *[c.name for c in spec.columns if c.kind == "date"]) if c in ok.columns]
            if stage_dir is None:
                data = ok.to_pandas()
            else:
                engine_file = Path(stage_dir) / f"{name}.engine.parquet"
                E.write_parquet(con, ok, engine_file, order_by=[*sort, "_line"])
        finally:
            ses.close()
    staged = None
    if stage_dir is None:
        if len(data) == 0:
            raise _no_rows_error(path, n_input, quarantine)
        data = coerce_dtypes(data.drop(columns=["_line"]).assign(_order=data["_line"]), out_cols).assign(
            _order=data["_line"].to_numpy()).sort_values([*sort, "_order"], kind="stable").drop(columns="_order") \
            .reset_index(drop=True)
        n_rows, n_users = len(data), int(data[spec.id].nunique())
    else:
        data, staged = None, Path(stage_dir) / f"{name}.parquet"
        typed = retype_parquet(engine_file, staged, out_cols, validate=False, count_distinct=spec.id)
        n_rows, n_users = typed.n, typed.n_users
        if n_rows == 0:
            staged.unlink(missing_ok=True)
            raise _no_rows_error(path, n_input, quarantine)
    rep = {"name": name, "file": str(path), "n_input": n_input, "n_rows": int(n_rows),
           "n_rejected": int(n_input - n_rows), "n_users": n_users,
           "extension_columns": extension, "absent_optional_columns": absent,
           "observation_date": observation_date,
           "quarantined_rows_by_source": {path.name: int(len(quarantine[path.name]))}}
    assert rep["n_rows"] + rep["n_rejected"] == rep["n_input"]
    return IngestResult(data, quarantine, rep, out_cols, staged)


def _id_table(ses: _Session, ids: Any) -> ibis.Table:
    """The known identifiers as a one-column table ``_known`` on the session's engine."""
    if isinstance(ids, IngestResult):
        if ids.staged is None:
            ids = ids.data[ids.key]
        else:
            t = ses.own(E.read_parquet(ses.con, ids.staged, table_name=E.temp_name("ids")))
            return t.select(_known=t[ids.key].cast("string")).distinct()
    return ses.frame(pd.DataFrame({"_known": pd.Series(pd.unique(pd.Series(ids).astype(str)), dtype=object)}))


def write_event_table(result: IngestResult, processed_dir: str | Path, quarantine_dir: str | Path,
                      name: str) -> dict[str, Path]:
    """``processed/<name>.parquet`` and its quarantine ``quarantine/<name>.csv`` (only once rows were accepted)."""
    processed_dir, quarantine_dir = Path(processed_dir), Path(quarantine_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    out = {"parquet": processed_dir / f"{name}.parquet", "quarantine": quarantine_dir / f"{name}.csv"}
    _put_in_place(result, out["parquet"])
    q = next(iter(result.quarantine.values()))
    out["quarantine"].unlink(missing_ok=True)
    if len(q):
        q.to_csv(out["quarantine"], index=False)
    return out


# --- the observation date and the ingestion metadata ----------------------------------------------
def observation_date_from_activity(raw_dir: str | Path) -> tuple[str | None, str | None]:
    """The latest activity month of ``raw/monthly_activity`` (its last day) holding at least 1% of the rows,
    else the 99.9th percentile of ``raw/transactions`` dates; robust to a few implausible future dates.
    Returns ``(date, how)`` or ``(None, None)``."""
    for name, col in (("monthly_activity", "month"), ("transactions", "date")):
        p = locate_event_source(raw_dir, name)
        if p is None:
            continue
        try:
            if _is_parquet(p):
                dates = pd.read_parquet(p, columns=[col])[col]
            else:
                dates = pd.read_csv(p, usecols=[col], dtype=str)[col]
        except Exception:  # noqa: BLE001 - an unreadable file is reported when it is ingested
            continue
        d = pd.to_datetime(dates.astype(str).str.slice(0, 10), errors="coerce", format="%Y-%m-%d").dropna()
        d = d[d >= pd.Timestamp(EARLIEST_DATE)]
        if not len(d):
            continue
        if name == "monthly_activity":
            share = d.dt.to_period("M").value_counts(normalize=True).sort_index()
            last = share[share >= 0.01].index.max()
            return str(last.end_time.date()), f"the last day of the latest month in {p.name} ({last})"
        return str(d.quantile(0.999).date()), f"the 99.9th percentile of the dates in {p.name}"
    return None, None


def resolve_observation_date(given: str | None = None, config: Any = None, truth_dir: str | Path | None = None,
                             raw_dir: str | Path | None = None) -> tuple[str | None, str]:
    """The run's observation date and where it came from, in this order: the parameter ``given`` (notebook
    parameter / ``make OBSERVATION_DATE=``), the run configuration's ``dates.observation_date``, the
    synthetic truth's (``truth_params.json``), the latest activity in ``raw/monthly_activity`` or
    ``raw/transactions``; else ``None`` (stages that need one say so)."""
    from . import config as C

    if given:
        return C._check_date(str(given), None, "observation_date (parameter)"), "the observation_date parameter"
    cfg = C.load(config)
    if cfg.dates.observation_date:
        return cfg.dates.observation_date, f"dates.observation_date of the run configuration ({cfg.name})"
    if truth_dir is not None:
        tp = Path(truth_dir) / "truth_params.json"
        if tp.exists():
            try:
                obs = json.loads(tp.read_text()).get("observation_date")
            except json.JSONDecodeError:
                obs = None
            if obs:
                return str(obs)[:10], "the synthetic truth (truth_params.json)"
    if raw_dir is not None:
        obs, how = observation_date_from_activity(raw_dir)
        if obs:
            return obs, how
    return None, ("none: no parameter, no dates.observation_date in the configuration, no synthetic truth and no "
                  "activity dates; stages that need one (06 survival from dates, recency) say so")


#: Stages that cannot run without an observation date when the configuration derives durations from dates.
NEEDS_OBSERVATION_DATE = ("06_churn_survival (durations from dates.customer_since)",)


def write_ingest_meta(processed_dir: str | Path, meta: dict) -> Path:
    """``processed/ingest_meta.json``: what ingestion used (observation date and its source, configuration,
    input format, panel version) so later stages neither re-hash the table nor guess the date."""
    p = Path(processed_dir) / "ingest_meta.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(p)
    return p


def read_ingest_meta(processed_dir: str | Path) -> dict:
    """The metadata :func:`write_ingest_meta` wrote ({} when ingestion has not run)."""
    p = Path(processed_dir) / "ingest_meta.json"
    return json.loads(p.read_text()) if p.exists() else {}


# --- writing ------------------------------------------------------------------------------------
def _put_in_place(result: IngestResult, path: Path) -> None:
    """The accepted rows at ``path``: the staged Parquet moved there, or the collected frame written."""
    if result.staged is not None:
        Path(result.staged).replace(path)
        result.staged = path
        return
    # microsecond timestamps: Spark cannot read pandas' default nanoseconds (customer_since_date is a date anyway)
    result.data.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)


def _write_warehouse_and_csv(out: Mapping[str, Path], quarantine_summary: pd.DataFrame) -> None:
    """The DuckDB warehouse (tables ``audience`` from the written Parquet, ``quarantine_summary``) and the CSV
    copy of the unified table, both read from the Parquet file (already sorted by the identifier) by DuckDB."""
    E.write_warehouse(out["duckdb"], {"audience": out["parquet"], "quarantine_summary": quarantine_summary})
    con = E.connect("duckdb", out["duckdb"], read_only=True)
    try:
        E.write_csv(con, con.table("audience"), out["csv"])
    finally:
        E.disconnect(con)


def table_fingerprint(df: pd.DataFrame) -> str:
    """A short content hash of the unified table (the 'panel version' recorded by exports and in
    ``processed/ingest_meta.json``): its 22 dictionary columns when it has them all (so columns joined on
    later, such as weights or segments, do not change it), else every column in order (a configured table)."""
    cols = S.COLUMN_NAMES if set(S.COLUMN_NAMES) <= set(df.columns) else list(df.columns)
    h = pd.util.hash_pandas_object(df[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


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
    from .artifacts import UNIFIED_CSV, UNIFIED_PARQUET

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
