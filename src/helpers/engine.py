"""Connections to the two execution engines behind the data stages: DuckDB (default) and Apache Spark.

Data stages are written once as Ibis expressions; :func:`connect` returns the Ibis backend they run on.
DuckDB runs in-process; Spark runs in local mode bound to the loopback interface, or on a cluster given a
master URL (``spark://...``, ``yarn``) or a Spark Connect endpoint (``sc://...``, e.g. Databricks) through
parameters or environment variables, with no code change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import ibis

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


def connect(engine: str = "duckdb", database: str | os.PathLike | None = None, *,
            master: str | None = None, remote: str | None = None,
            conf: Mapping[str, str] | None = None, memory_limit: str | None = None) -> Any:
    """Return an Ibis backend for ``engine``.

    ``duckdb``: in-memory, or the file ``database`` (e.g. ``paths.duckdb``); ``memory_limit`` (or
    ``$AUDIENCE_DUCKDB_MEMORY_LIMIT``, e.g. ``8GB``) caps DuckDB's working memory, beyond which it spills to
    disk (its default is 80% of RAM, which a shared machine may not have to spare). ``spark``: a session
    from :func:`spark_session` (``database`` is ignored: Spark reads the Parquet/CSV files directly).
    """
    name = check_engine(engine)
    if name == "duckdb":
        con = ibis.duckdb.connect(str(database) if database else ":memory:")
        con.raw_sql("SET enable_progress_bar = false")
        limit = memory_limit or os.environ.get("AUDIENCE_DUCKDB_MEMORY_LIMIT")
        if limit:
            con.raw_sql(f"SET memory_limit = '{limit}'")
        return con
    return ibis.pyspark.connect(spark_session(master, remote, conf=conf))


def engine_of(con: Any) -> str:
    """The engine name (``duckdb`` or ``spark``) of an Ibis backend from :func:`connect`."""
    return "spark" if con.name == "pyspark" else con.name


def read_parquet(con: Any, path: str | os.PathLike, *, table_name: str | None = None) -> ibis.Table:
    """Read a Parquet file or a folder of Parquet parts, on either engine."""
    path = Path(path)
    if engine_of(con) == "duckdb" and path.is_dir():
        return con.read_parquet(str(path / "*.parquet"), table_name=table_name)
    return con.read_parquet(str(path), table_name=table_name)
