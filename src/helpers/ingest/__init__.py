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

The package is split by job: :mod:`.files` (file-level checks), :mod:`.reading` (engine reading with line
numbers), :mod:`.rules` (value rules), :mod:`.results` (results, re-typing, report), :mod:`.sources` (the
synthetic layout), :mod:`.mapping`, :mod:`.table` (a user's table), :mod:`.events` (long tables), :mod:`.meta`
(observation date, metadata) and :mod:`.writing`; every name is importable from ``helpers.ingest``.
"""

from __future__ import annotations

from .files import (  # noqa: F401
    DELIMITERS, MAX_ROWS_IN_MESSAGE, IngestError, MAGIC, UTF16_BOMS, MAX_LINE_BYTES, _check_format, _check_encoding,
    _check_header, _check_columns, sniff_csv, _csv_records, _needs_line_map, physical_lines, _diagnose_csv,
    _parquet_parts, sniff_parquet, locate_source, _is_parquet,
)
from .reading import (  # noqa: F401
    _Session, read_text_source, _check_line_map, _connection, _collect_quarantine,
)
from .rules import (  # noqa: F401
    TRUE_STRINGS, FALSE_STRINGS, NUMBER_PATTERN, DATE_PATTERN, EDGE_SPACE, CONTROL_CHARS, EARLIEST_DATE,
    QUARANTINE_META, _text, _parse, _problem, _key_problem, _combine, validate, accepted, _raw_columns, rejected,
    valid_values, _typed, _strip, _as_text,
)
from .results import (  # noqa: F401
    IngestResult, coerce_dtypes, _limits, _coverage, _report, _REASON_KINDS, _short_reason, _no_rows_error, Retyped,
    retype_parquet, _safe_name, _put_in_place, table_fingerprint, pandas_metadata, write_typed,
)
from .sources import (  # noqa: F401
    ORPHAN_REASON, INCOMPLETE, IngestPlan, plan_sources, ingest_sources, ingest_to_parquet,
)
from .mapping import (  # noqa: F401
    Mapping_, _read_mapping, _csv_lines, read_mapping, check_mapping,
)
from .table import (  # noqa: F401
    _derived_column, ingest_table,
)
from .events import (  # noqa: F401
    EventSpec, _num, ENGAGEMENT_STATES, EVENT_SPECS, locate_event_source, ingest_event_table, _id_table,
    write_event_table,
)
from .meta import (  # noqa: F401
    observation_date_from_activity, resolve_observation_date, NEEDS_OBSERVATION_DATE, write_ingest_meta,
    read_ingest_meta,
)
from .writing import (  # noqa: F401
    _write_warehouse_and_csv, write_outputs,
)

from .. import engine as E  # noqa: F401,E402  (kept: ``ingest.E`` as before the split)
from .. import schema as S  # noqa: F401,E402
