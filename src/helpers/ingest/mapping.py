"""Column mappings (their column -> the run configuration's column) from a dict or a two-column CSV, checked
against the input file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from .. import schema as S
from .files import IngestError


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
