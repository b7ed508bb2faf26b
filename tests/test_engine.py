"""The engine layer: names, connections, and readers that behave the same on both engines."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import engine as E
from helpers.ingest import read_text_source


def test_check_engine_accepts_known_names_and_explains_unknown():
    assert E.check_engine(" DuckDB ") == "duckdb"
    assert E.check_engine("pyspark") == "spark"
    with pytest.raises(E.EngineError, match="unknown engine 'polars'.*duckdb, spark"):
        E.check_engine("polars")


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory):
    p = tmp_path_factory.mktemp("eng") / "src.csv"
    p.write_text("user_id;spend;since\nU1;007.50;2024-01-31\nU2;abc;not a date\n")
    return p


@pytest.mark.parametrize("which", ["duckdb_con", "spark_con"])
def test_text_reader_keeps_every_value_as_written(which, text_csv, request):
    con = request.getfixturevalue(which)
    t = read_text_source(con, text_csv, delimiter=";").drop("_line")
    assert all(dtype.is_string() for dtype in t.schema().types)
    got = t.order_by("user_id").to_pandas()
    # leading zeros and bad values survive reading: validation, not the reader, judges them
    assert got["spend"].tolist() == ["007.50", "abc"]
    assert got["since"].tolist() == ["2024-01-31", "not a date"]


def test_spark_runs_local_on_loopback(spark_con):
    conf = spark_con._session.sparkContext.getConf()
    assert conf.get("spark.master").startswith("local")
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    assert E.engine_of(spark_con) == "spark"


def test_read_parquet_folder_of_parts_on_both_engines(duckdb_con, spark_con, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        pd.DataFrame({"user_id": [f"U{i}{j}" for j in range(4)], "x": range(4)}).to_parquet(
            folder / f"part-{i:05d}.parquet")
    for con in (duckdb_con, spark_con):
        t = E.read_parquet(con, folder)
        assert t.count().execute() == 12
        assert int(t.x.sum().execute()) == 3 * 6


def test_duckdb_memory_limit_is_applied(monkeypatch):
    con = E.connect("duckdb", memory_limit="1GB")
    limit = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "").upper() in {"1GB", "953.6MIB", "1000.0MB", "953.6MB"}, limit
    monkeypatch.setenv("AUDIENCE_DUCKDB_MEMORY_LIMIT", "2GB")
    con2 = E.connect("duckdb")
    assert con2.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0] != limit
