"""The two execution engines behind the data stages (DuckDB, default, and Apache Spark), and every difference
between them.

Data stages are written once as Ibis expressions; :func:`connect` returns the Ibis backend they run on.
DuckDB runs in-process; Spark runs in local mode bound to the loopback interface, or on a cluster given a
master URL (``spark://...``, ``yarn``) or a Spark Connect endpoint (``sc://...``, e.g. Databricks) through
parameters or environment variables, with no code change.

Whatever the engines do differently lives here, once per backend, behind a named operation: splitting a
multi-valued string (:func:`split`), distinct list elements (:func:`distinct_list`), reading a CSV as text with
each record's physical line (:func:`read_csv_text`), reading Parquet parts with file and row number
(:func:`read_parquet_rows`), registering a pandas frame (:func:`register_frame`), streaming a result as Arrow
batches (:func:`arrow_batches`), mapping batches through a Python function into Parquet (:func:`map_batches`),
writing Parquet/CSV (:func:`write_parquet`, :func:`write_csv`), keeping a result on disk instead of in memory
(:func:`disk_cache`), running SQL (:func:`sql`) and building the
DuckDB warehouse file (:func:`write_warehouse`). Other modules never branch on the engine nor touch a
backend's private connection.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import ibis
import pandas as pd

ENGINES = ("duckdb", "spark")

# Spark settings that make local runs reproducible and match DuckDB's semantics where they differ.
SPARK_DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",    # progress bars would fill executed notebooks' outputs
    "spark.sql.session.timeZone": "UTC",        # dates and timestamps compare the same on both engines
    "spark.sql.shuffle.partitions": "8",        # the default 200 is for clusters; local mode pays per task
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
}


class EngineError(ValueError):
    """An engine name or engine setting that cannot be used, with what to do instead."""


def check_engine(engine: str) -> str:
    """Normalise an engine name (``duckdb`` or ``spark``, case-insensitive) or raise :class:`EngineError`."""
    name = str(engine).strip().lower()
    if name == "pyspark":
        name = "spark"
    if name not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)} "
                          "(make reports ENGINE=spark, or the notebooks' `engine` parameter)")
    return name


def spark_session(master: str | None = None, remote: str | None = None, *, driver_memory: str | None = None,
                  conf: Mapping[str, str] | None = None, app_name: str = "audience-intelligence"):
    """Get or create the SparkSession the Spark engine runs on.

    Resolution order: ``remote`` / ``$SPARK_REMOTE`` (Spark Connect, e.g. ``sc://host:15002``), then
    ``master`` / ``$AUDIENCE_SPARK_MASTER`` (e.g. ``spark://host:7077``), then ``local[2]``. Local mode is
    bound to 127.0.0.1 (``SPARK_LOCAL_IP``), otherwise Spark listens on the machine's network interface.
    ``driver_memory`` (or ``$AUDIENCE_SPARK_DRIVER_MEMORY``, default ``4g``) only applies when this call
    starts the JVM.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # the engine is an optional extra
        raise EngineError("engine 'spark' needs PySpark: pip install -e '.[spark]' (make setup installs it)"
                          ) from exc
    remote = remote or os.environ.get("SPARK_REMOTE")
    settings = {**SPARK_DEFAULT_CONF, **(conf or {})}
    if remote:
        builder = SparkSession.builder.remote(remote).appName(app_name)
    else:
        master = master or os.environ.get("AUDIENCE_SPARK_MASTER") or "local[2]"
        builder = SparkSession.builder.master(master).appName(app_name)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # Python workers must run this interpreter (the venv's), not whatever python3 is on PATH
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            settings.setdefault("spark.driver.host", "127.0.0.1")
            settings.setdefault("spark.driver.bindAddress", "127.0.0.1")
        settings.setdefault("spark.driver.memory",
                            driver_memory or os.environ.get("AUDIENCE_SPARK_DRIVER_MEMORY", "4g"))
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not remote:
        session.sparkContext.setLogLevel("ERROR")
    return session


def connect(engine: str = "duckdb", database: str | os.PathLike | None = None, *, read_only: bool = False,
            master: str | None = None, remote: str | None = None, conf: Mapping[str, str] | None = None,
            memory_limit: str | None = None, temp_directory: str | os.PathLike | None = None,
            preserve_insertion_order: bool = True) -> Any:
    """Return an Ibis backend for ``engine``.

    ``duckdb``: in-memory, or the file ``database`` (e.g. ``paths.duckdb``; ``read_only=True`` to share it
    between readers); ``memory_limit`` (or ``$AUDIENCE_DUCKDB_MEMORY_LIMIT``, e.g. ``8GB``) caps DuckDB's
    working memory, beyond which it spills to ``temp_directory`` (or ``$AUDIENCE_DUCKDB_TEMP_DIRECTORY``;
    DuckDB's own default is ``.tmp`` in the working directory, so pass a folder under the data directory).
    ``preserve_insertion_order=False`` lets DuckDB return unordered results in any order, which it needs to
    sort and join larger-than-memory tables within the limit; only code that orders explicitly may use it.
    ``spark``: a session from :func:`spark_session` (``database`` is ignored: Spark reads the Parquet/CSV
    files directly).
    """
    name = check_engine(engine)
    if name == "duckdb":
        if read_only and database and not Path(database).exists():
            raise FileNotFoundError(f"{database} does not exist (a read-only DuckDB file must have been written "
                                    "first: notebook 01_ingest writes the warehouse)")
        con = ibis.duckdb.connect(str(database) if database else ":memory:", read_only=read_only)
        con.raw_sql("SET enable_progress_bar = false")
        # give freed memory back to the system soon after each query: by default DuckDB's allocator kept up to its
        # peak (at 1M customers 0.33 GB after one 38M-row aggregation against 0.14 GB with these), memory the
        # pandas work after the query then added to (at 10M: DuckDB's 5 GB cap plus the kernel's frames)
        con.raw_sql("SET allocator_flush_threshold = '16MB'")
        con.raw_sql("SET allocator_background_threads = true")
        limit = memory_limit or os.environ.get("AUDIENCE_DUCKDB_MEMORY_LIMIT")
        if limit:
            con.raw_sql(f"SET memory_limit = {_sql_str(limit)}")
        spill(con, temp_directory or os.environ.get("AUDIENCE_DUCKDB_TEMP_DIRECTORY"),
              preserve_insertion_order=preserve_insertion_order)
        return con
    return ibis.pyspark.connect(spark_session(master, remote, conf=conf))


def spill(con: Any, temp_directory: str | os.PathLike | None = None, *,
          preserve_insertion_order: bool = False) -> None:
    """Let a DuckDB backend spill to ``temp_directory`` and drop insertion order (no-op on Spark, which
    spills to its local directories by itself). Call it only on a connection whose queries order explicitly."""
    if engine_of(con) != "duckdb":
        return
    if temp_directory:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        con.raw_sql(f"SET temp_directory = {_sql_str(Path(temp_directory).resolve())}")
    con.raw_sql(f"SET preserve_insertion_order = {'true' if preserve_insertion_order else 'false'}")


def engine_of(con: Any) -> str:
    """The engine name (``duckdb`` or ``spark``) of an Ibis backend from :func:`connect`."""
    return "spark" if con.name == "pyspark" else con.name


def _name_of(con_or_engine: Any) -> str:
    return check_engine(con_or_engine) if isinstance(con_or_engine, str) else engine_of(con_or_engine)


def _sql_str(s: Any) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def disconnect(con: Any) -> None:
    """Close a DuckDB backend (a Spark session is shared by the process and stays up)."""
    if engine_of(con) == "duckdb":
        con.disconnect()


def native(con: Any) -> Any:
    """The engine's own connection behind an Ibis backend: the ``duckdb`` connection or the SparkSession."""
    return con.con if engine_of(con) == "duckdb" else con._session


def sql(con: Any, query: str) -> pd.DataFrame:
    """Run a SQL query (in the engine's dialect) and return its result as pandas."""
    if engine_of(con) == "duckdb":
        return con.con.sql(query).df()
    return con._session.sql(query).toPandas()


def tables(con: Any) -> list[str]:
    """The tables and views of a backend (of its current database). Not Ibis's ``list_tables``, which calls
    a DuckDB method that DuckDB 2 removed."""
    if engine_of(con) == "duckdb":
        return sorted(r[0] for r in con.con.sql("SHOW TABLES").fetchall())
    return sorted(t.name for t in con._session.catalog.listTables())


# --- named operations that the engines spell differently ----------------------------------------
def split(value: ibis.Value, sep: str, engine: Any) -> ibis.Value:
    """Split a string into an array on the literal ``sep`` (Spark's ``split`` takes a regex, DuckDB's text)."""
    return value.split(re.escape(sep) if _name_of(engine) == "spark" else sep)


def distinct_list(arr: ibis.Value, engine: Any) -> ibis.Value:
    """Distinct elements of a string array with the engine's own function (Ibis's ``unique`` compiles to a
    lambda syntax that DuckDB 2 rejects)."""
    import ibis.expr.datatypes as dt

    sig = ((dt.Array(dt.string),), dt.Array(dt.string))
    name = "array_distinct" if _name_of(engine) == "spark" else "list_distinct"
    return ibis.udf.scalar.builtin(lambda a: None, name=name, signature=sig)(arr)


def prefers_one_shuffle(engine: Any) -> bool:
    """Whether many group-bys are better written as one unnest + one group-by: yes on Spark (one shuffle
    instead of one per group-by), no on DuckDB (a UNION ALL of group-bys is faster in-process)."""
    return _name_of(engine) == "spark"


def csv_encoding(encoding: str, engine: Any) -> str:
    """The engine's name of a Python text encoding (``latin-1`` is Spark's ``ISO-8859-1``)."""
    import codecs

    name = codecs.lookup(encoding).name  # 'utf-8', 'iso8859-1', 'cp1252', ...
    if _name_of(engine) == "duckdb":
        return {"iso8859-1": "latin-1"}.get(name, name)
    return {"iso8859-1": "ISO-8859-1", "cp1252": "windows-1252"}.get(name, name)


# --- temporary objects ---------------------------------------------------------------------------
def temp_name(prefix: str = "tmp") -> str:
    """A fresh name for a temporary table or view."""
    return ibis.util.gen_name(prefix)


def register_frame(con: Any, df: pd.DataFrame, name: str | None = None) -> ibis.Table:
    """A pandas frame as a temporary table of the backend (drop it with :func:`drop_temp`)."""
    name = name or temp_name("frame")
    if engine_of(con) == "duckdb":
        con.create_table(name, df, temp=True)
    else:
        con._session.createDataFrame(df).createOrReplaceTempView(name)
    return con.table(name)


def drop_temp(con: Any, name: str) -> None:
    """Drop a temporary table or view made by this module (missing ones are ignored)."""
    if engine_of(con) == "duckdb":
        found = con.con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ?",
                                [name]).fetchone()
        if found:
            con.raw_sql(f'DROP {"VIEW" if found[0] == "VIEW" else "TABLE"} IF EXISTS "{name}"')
    else:
        con._session.catalog.dropTempView(name)


class ReadError(ValueError):
    """The engine could not parse a file; ``cause`` is the engine's own exception (callers diagnose the file).
    ``counts`` is ``(records read, records expected)`` when the reader and the given line map disagree."""

    def __init__(self, path: str | os.PathLike, cause: BaseException, counts: tuple[int, int] | None = None):
        self.path, self.cause, self.counts = Path(path), cause, counts
        super().__init__(f"{path}: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}")


# --- reading with physical line numbers ------------------------------------------------------------
#: The largest CSV record the readers accept (bytes): DuckDB's own maximum line size, kept for both readers.
MAX_LINE_BYTES = 2_097_152


def read_csv_text(con: Any, path: str | os.PathLike, names: Sequence[str], *, delimiter: str = ",",
                  encoding: str = "utf-8", lines: Sequence[int] | None = None,
                  spill_file: str | os.PathLike | None = None) -> ibis.Table:
    """A CSV file as a table of text columns ``names`` (the header's, in order) plus ``_line``.

    ``_line`` is the physical line on which the record starts (header = 1) and comes from the reader, never
    from the order in which an engine stores rows: record ``i`` (0-based, in file order) is on line ``i + 2``
    when every record is one line, else on ``lines[i]`` (records with quoted line breaks or after blank
    lines; from a strict CSV parse). Empty cells are ``NULL``. A row with another number of fields than the
    header, or quoting the reader cannot parse, raises :class:`ReadError`. ``spill_file``: where DuckDB keeps
    the parsed rows (Parquet) instead of a temporary table in memory, for files larger than memory.

    * DuckDB: the file is parsed by Arrow's streaming CSV reader, which yields record batches in file order;
      each batch gets its line numbers before DuckDB stores it (so DuckDB may reorder and spill freely).
    * Spark: ``monotonically_increasing_id()`` is ``partition index << 33`` plus the record's position in its
      partition, and the partitions of one file are its byte ranges in file order; one count per partition
      gives each partition's first line (with ``lines``: one partition in file order, mapped to lines).
    """
    path, names = Path(path), list(names)
    if engine_of(con) == "duckdb":
        return _duckdb_csv_text(con, path, names, delimiter, encoding, lines, spill_file)
    return _spark_csv_text(con, path, names, delimiter, encoding, lines)


def _duckdb_csv_text(con: Any, path: Path, names: list[str], delimiter: str, encoding: str,
                     lines: Sequence[int] | None, spill_file: str | os.PathLike | None) -> ibis.Table:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    line_map = None if lines is None else np.asarray(lines, dtype=np.int64)
    opts = dict(
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, encoding=encoding,
                                       block_size=MAX_LINE_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"', double_quote=True,
                                          escape_char=False, newlines_in_values=lines is not None,
                                          ignore_empty_lines=True),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=[""],
                                             strings_can_be_null=True, quoted_strings_can_be_null=True))
    schema = pa.schema([("_line", pa.int64()), *[(n, pa.string()) for n in names]])
    try:
        reader = pacsv.open_csv(str(path), **opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:  # the first block is already unparseable
        raise ReadError(path, e) from None
    state = {"n": 0}

    def numbered() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            n0, n = state["n"], batch.num_rows
            state["n"] = n0 + n
            if line_map is None:
                line = np.arange(n0 + 2, n0 + n + 2, dtype=np.int64)
            elif n0 + n > len(line_map):  # more records than the strict parse: stop, reported after the scan
                return
            else:
                line = line_map[n0:n0 + n]
            yield pa.RecordBatch.from_arrays([pa.array(line), *batch.columns], schema=schema)

    name, view = temp_name("csv"), temp_name("csvsrc")
    stream = pa.RecordBatchReader.from_batches(schema, numbered())
    con.con.register(view, stream)
    try:
        if spill_file is None:
            con.raw_sql(f'CREATE TEMP TABLE "{name}" AS SELECT * FROM "{view}"')
        else:
            Path(spill_file).parent.mkdir(parents=True, exist_ok=True)
            con.raw_sql(f'COPY (SELECT * FROM "{view}") TO {_sql_str(spill_file)} (FORMAT parquet)')
            con.raw_sql(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM read_parquet({_sql_str(spill_file)})')
    except ReadError:
        raise
    except Exception as e:  # noqa: BLE001 - Arrow's parse error, raised inside DuckDB's scan of the stream
        cause = e.__cause__ or e
        raise ReadError(path, cause) from None
    finally:
        con.con.unregister(view)
    if line_map is not None and state["n"] != len(line_map):
        drop_temp(con, name)
        raise ReadError(path, ValueError("the reader and a strict CSV parse disagree"), (state["n"], len(line_map)))
    return con.table(name)


def _spark_csv_text(con: Any, path: Path, names: list[str], delimiter: str, encoding: str,
                    lines: Sequence[int] | None) -> ibis.Table:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    spark, enc = con._session, csv_encoding(encoding, "spark")
    schema = StructType([StructField(n, StringType(), True) for n in names])
    cols = [F.col(f"`{c}`") for c in names]
    # FAILFAST: a row with more or fewer fields than the header is an error (as on DuckDB), not silently padded
    df = spark.read.csv(str(path), schema=schema, header=True, sep=delimiter, encoding=enc, quote='"',
                        escape='"', multiLine=lines is not None, enforceSchema=True, mode="FAILFAST")
    view = temp_name("csv")
    if lines is not None:  # quoted line breaks or blank lines: one partition in file order, mapped to lines
        df = df.coalesce(1).withColumn("_mid", F.monotonically_increasing_id())
        try:  # every column hashed so that the parser checks every field (no column pruning)
            n = int(df.agg(F.count(F.lit(1)).alias("n"), F.max(F.hash(*cols)).alias("_h")).collect()[0]["n"])
        except Exception as e:  # noqa: BLE001 - a malformed record under FAILFAST
            raise ReadError(path, e) from None
        if n != len(lines):
            raise ReadError(path, ValueError("the reader and a strict CSV parse disagree"), (n, len(lines)))
        lm = spark.createDataFrame(pd.DataFrame({"_mid": range(len(lines)), "_line": list(lines)}, dtype="int64"))
        df.join(F.broadcast(lm), "_mid").select("_line", *cols).createOrReplaceTempView(view)
        return con.table(view)
    df = df.withColumn("_mid", F.monotonically_increasing_id())
    try:  # one counting job: each partition's first line, and malformed rows surface here, not later
        counts = sorted((int(r["p"]), int(r["n"])) for r in df.groupBy(F.shiftright("_mid", 33).alias("p")).agg(
            F.count(F.lit(1)).alias("n"), F.max(F.hash(*cols)).alias("_h")).collect())
    except Exception as e:  # noqa: BLE001 - a malformed record under FAILFAST
        raise ReadError(path, e) from None
    first, before = {}, 0
    for p, n in counts:
        first[int(p)], before = before, before + int(n)
    lookup = F.create_map(*[F.lit(x) for kv in first.items() for x in kv]) if first else F.create_map()
    line = F.lit(2) + F.col("_mid").bitwiseAND((1 << 33) - 1) + lookup[F.shiftright("_mid", 33)]
    df.select(line.cast("long").alias("_line"), *cols).createOrReplaceTempView(view)
    return con.table(view)


def read_parquet_rows(con: Any, parts: Sequence[str | os.PathLike]) -> ibis.Table:
    """Parquet files as one table with their columns plus ``_file`` (file name) and ``_row`` (0-based row in
    that file), both from the reader (DuckDB ``file_row_number``, Spark ``_metadata.row_index``).

    Spark reads pandas' nanosecond timestamps only as longs; those columns are returned as their UTC day
    (``YYYY-MM-DD`` text), which is what a CSV export of the same table would hold.
    """
    parts = [Path(p) for p in parts]
    view = temp_name("parquet")
    if engine_of(con) == "duckdb":
        files = ", ".join(_sql_str(p) for p in parts)
        con.raw_sql(f'CREATE TEMP VIEW "{view}" AS SELECT * EXCLUDE (filename, file_row_number), '
                    "parse_filename(filename) AS _file, file_row_number AS _row "
                    f"FROM read_parquet([{files}], filename=true, file_row_number=true)")
        return con.table(view)
    import pyarrow as pa
    import pyarrow.parquet as pq

    spark = con._session
    schema = pq.read_schema(parts[0])
    nanos = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    cols = [f"CAST(date_from_unix_date(CAST(floor(`{c}` / 86400000000000) AS INT)) AS STRING) AS `{c}`"
            if c in nanos else f"`{c}`" for c in schema.names]
    spark.read.parquet(*map(str, parts)).selectExpr(
        *cols, "_metadata.file_name AS _file", "_metadata.row_index AS _row").createOrReplaceTempView(view)
    return con.table(view)


def read_parquet(con: Any, path: str | os.PathLike, *, table_name: str | None = None) -> ibis.Table:
    """Read a Parquet file or a folder of Parquet parts, on either engine."""
    path = Path(path)
    if engine_of(con) == "duckdb" and path.is_dir():
        return con.read_parquet(str(path / "*.parquet"), table_name=table_name)
    return con.read_parquet(str(path), table_name=table_name)


# --- results out of the engine -------------------------------------------------------------------
def spark_frame(con: Any, table: ibis.Table):
    """The PySpark DataFrame behind an Ibis table of the Spark backend."""
    return con.raw_sql(con.compile(table))


def arrow_batches(con: Any, expr: ibis.Table, batch_size: int) -> Iterator[Any]:
    """Stream an expression's result as Arrow record batches of at most ``batch_size`` rows (bounded memory).

    DuckDB: Ibis 12's ``Table.to_pyarrow_batches`` calls ``DuckDBPyConnection.fetch_record_batch``, which
    DuckDB 2.0 removed; the compiled SQL runs on the backend's connection and its Arrow stream is read.
    """
    if engine_of(con) == "duckdb":
        try:
            yield from con.con.sql(con.compile(expr)).to_arrow_reader(batch_size)
            return
        except AttributeError:  # older DuckDB: the Ibis path works
            pass
    yield from expr.to_pyarrow_batches(chunk_size=batch_size)


def _replace(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)


def _write_file(con: Any, expr: ibis.Table, path: Path, fmt: str, single_file: bool = True,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``expr`` to ``path`` as ``parquet`` or ``csv`` with the engine, atomically (a staging name beside
    it, renamed into place: a failed write leaves the previous file). Spark writes a folder of parts; with
    ``single_file`` one part (coalesced) which becomes the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        if engine_of(con) == "duckdb":
            options = "FORMAT parquet" if fmt == "parquet" else "HEADER, DELIMITER ','"
            if metadata:
                options += ", KV_METADATA {" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}"
                                                         for k, v in metadata.items()) + "}"
            con.raw_sql(f"COPY ({con.compile(expr)}) TO {_sql_str(stage)} ({options})")
        else:
            df = spark_frame(con, expr)
            # coalesce keeps a sorted frame's order: it concatenates neighbouring partitions without a shuffle
            writer = (df.coalesce(1) if single_file else df).write.mode("overwrite")
            if fmt == "parquet":
                writer.parquet(str(stage))
            else:
                writer.csv(str(stage), header=True, emptyValue="", nullValue="", quote='"', escape='"')
            if single_file:
                part = next(p for p in sorted(stage.glob("part-*")) if p.suffix == f".{fmt}")
                single = stage.with_suffix(f".{fmt}.tmp")
                part.replace(single)
                shutil.rmtree(stage)
                stage = single
        _replace(path)
        stage.replace(path)
    finally:
        if stage.exists():
            _replace(stage)
    return path


def write_parquet(con: Any, expr: ibis.Table, path: str | os.PathLike, *, order_by: Sequence[str] = (),
                  single_file: bool = True, metadata: Mapping[str, str] | None = None) -> Path:
    """Write an expression as Parquet with the engine itself (nothing passes through pandas).

    ``order_by``: rows sorted by these columns (the engine's external sort spills when the table is larger
    than memory). ``single_file``: one file at ``path`` (Spark writes one part into a staging folder beside it
    and moves it); otherwise Spark writes a folder of parts at ``path`` (read it with :func:`read_parquet`).
    ``metadata``: key-value metadata of the file's footer (e.g. ``pandas``, the dtypes pandas restores on
    reading), only where :func:`writes_file_metadata`. The target is replaced atomically: a failed write
    leaves the previous file in place.
    """
    if metadata and not writes_file_metadata(con):
        raise EngineError(f"{engine_of(con)} cannot write Parquet key-value metadata (see writes_file_metadata)")
    expr = expr.order_by(list(order_by)) if order_by else expr
    return _write_file(con, expr, Path(path), "parquet", single_file, metadata)


def keep(con: Any, expr: ibis.Table, cache: bool | str) -> tuple[ibis.Table, Callable[[], Any] | None]:
    """``expr`` kept as ``cache`` says: ``True`` in the engine's memory (``expr.cache()``), ``"disk"`` in a
    temporary Parquet file (:func:`disk_cache`), ``False`` not at all (every query recomputes it). Returns
    ``(table, release)``; ``release`` frees what is kept (None when nothing is)."""
    if cache not in (True, False, "disk"):
        raise ValueError(f"cache must be True, False or 'disk', got {cache!r}")
    if cache == "disk":
        return disk_cache(con, expr)
    if cache:
        table = expr.cache()
        return table, table.release
    return expr, None


def disk_cache(con: Any, expr: ibis.Table) -> tuple[ibis.Table, Callable[[], Any]]:
    """``expr`` computed once by the engine into a temporary Parquet file, and a table that scans it: what
    ``expr.cache()`` would hold in the engine's memory goes to disk (bounded memory for a result of hundreds of
    millions of rows; the engine's write spills). The file is in a new folder under
    ``$AUDIENCE_DUCKDB_TEMP_DIRECTORY`` (else the system's temporary folder) and is deleted by the returned
    ``release()``, or else once no expression built on the returned table is left (or at exit). Returns
    ``(table, release)``."""
    base = os.environ.get("AUDIENCE_DUCKDB_TEMP_DIRECTORY") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="audience-cache-", dir=base))
    try:
        table = read_parquet(con, write_parquet(con, expr, folder / "cache.parquet", single_file=False))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # tied to the operation node, which every expression derived from the table references (not to this
    # wrapper object, which may go while a filtered or joined expression on it is still in use)
    return table, weakref.finalize(table.op(), shutil.rmtree, folder, True)


def writes_file_metadata(con: Any) -> bool:
    """Whether :func:`write_parquet` can put key-value metadata in the file it writes: DuckDB can
    (``KV_METADATA``, written by its parallel writer); Spark's Parquet writer cannot."""
    return engine_of(con) == "duckdb"


def write_csv(con: Any, expr: ibis.Table, path: str | os.PathLike, *, order_by: Sequence[str] = (),
              date_format: str = "%Y-%m-%d") -> Path:
    """Write an expression as one CSV file (header, comma-delimited, dates as ``date_format``) with the engine."""
    dates = {c: expr[c].strftime(date_format) for c, t in expr.schema().items() if t.is_date() or t.is_timestamp()}
    expr = expr.mutate(**dates) if dates else expr
    expr = expr.order_by(list(order_by)) if order_by else expr
    return _write_file(con, expr, Path(path), "csv")


def map_batches(con: Any, expr: ibis.Table, fn: Callable[[pd.DataFrame], pd.DataFrame], out: str | os.PathLike,
                *, arrow_schema: Any, spark_schema: str, batch_size: int, order_by: Sequence[str] = ()) -> Path:
    """Apply ``fn`` (a pandas frame -> a pandas frame of ``arrow_schema``) to every row of ``expr`` in batches
    and write the results as Parquet parts in the folder ``out`` (replaced), never collecting the table.

    DuckDB streams Arrow batches of ``batch_size`` rows through ``fn`` into ``out/part-00000.parquet`` (sorted
    first by ``order_by``); Spark broadcasts ``fn`` and runs it with ``mapInPandas`` (Arrow batches of at most
    ``batch_size`` rows, output DDL ``spark_schema``), sorts the result by ``order_by`` and writes
    ``out/part-*.parquet``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    _replace(out)
    if engine_of(con) == "duckdb":
        expr = expr.order_by(list(order_by)) if order_by else expr
        out.mkdir(parents=True)
        with pq.ParquetWriter(out / "part-00000.parquet", arrow_schema) as writer:
            for batch in arrow_batches(con, expr, batch_size):
                if batch.num_rows:
                    writer.write_table(pa.Table.from_pandas(fn(batch.to_pandas()), schema=arrow_schema,
                                                            preserve_index=False))
        return out
    spark = con._session
    shared = spark.sparkContext.broadcast(fn)

    def run(batches):
        f = shared.value
        for pdf in batches:
            if len(pdf):
                yield f(pdf)

    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(batch_size))
    try:
        mapped = spark_frame(con, expr).mapInPandas(run, schema=spark_schema)
        if order_by:
            mapped = mapped.orderBy(*order_by)
        mapped.write.mode("overwrite").parquet(str(out))
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
        shared.unpersist()
    return out


def write_warehouse(path: str | os.PathLike, tables: Mapping[str, str | os.PathLike | pd.DataFrame], *,
                    order_by: Mapping[str, str] | None = None) -> Path:
    """Write the DuckDB warehouse file ``path`` (replaced) with one table per entry of ``tables``: a Parquet
    file/folder, read by DuckDB itself, or a small pandas frame. ``order_by`` maps a table to its sort column.

    The warehouse is a DuckDB file whatever engine ran the stage; DuckDB reads the Parquet the engine wrote.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for f in (path, path.with_suffix(path.suffix + ".wal")):
        f.unlink(missing_ok=True)
    con = connect("duckdb", path)
    try:
        for name, src in tables.items():
            sort = (order_by or {}).get(name)
            if isinstance(src, pd.DataFrame):
                t = con.create_table(temp_name("frame"), src, temp=True)
            else:
                t = read_parquet(con, src)
            con.create_table(name, t.order_by(sort) if sort else t)
    finally:
        con.disconnect()
    return path
