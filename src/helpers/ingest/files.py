"""File-level checks of a source before an engine reads it (format, encoding, header, delimiter, columns) and
the physical lines of CSV records; every problem is an :class:`IngestError` naming file, line, column and expected.
"""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import Iterator

from .. import engine as E


DELIMITERS = [",", ";", "\t", "|"]


MAX_ROWS_IN_MESSAGE = 10


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
            nl = np.flatnonzero(a == 10)
            # quotes before each line break: the quote positions searched, not a running count over every byte
            quotes = np.flatnonzero(a == 34)
            if len(nl):
                if ((np.searchsorted(quotes, nl) + parity) % 2).any():
                    return True
                starts = np.concatenate([[prev_nl_end - offset], nl[:-1] + 1])
                length = nl - starts  # bytes before each line break on its line
                blank = (length == 0) | ((length == 1) & (a[np.maximum(nl - 1, 0)] == 13))
                if blank[1:].any() or (blank[0] and prev_nl_end >= 0):
                    return True
                prev_nl_end = offset + int(nl[-1]) + 1
            parity = (parity + len(quotes)) % 2
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
