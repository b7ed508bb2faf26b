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


# --- the named operations: one implementation per backend, the same answer ---------------------------
@pytest.mark.parametrize("which", ["duckdb_con", pytest.param("spark_con", marks=pytest.mark.slow)])
def test_split_and_distinct_list_treat_the_separator_as_text(which, request):
    con = request.getfixturevalue(which)
    t = E.register_frame(con, pd.DataFrame({"k": [1, 2], "v": ["a|b|a", "c.d|c.d"]}))
    # '|' and '.' are regex metacharacters: a regex split would cut every character
    got = t.select("k", n=E.distinct_list(E.split(t.v, "|", con), con).length()).order_by("k").to_pandas()
    assert got["n"].tolist() == [2, 1]
    items = t.select(item=E.split(t.v, "|", con).unnest()).to_pandas()["item"]
    assert sorted(items) == ["a", "a", "b", "c.d", "c.d"]
    assert isinstance(E.prefers_one_shuffle(con), bool) and E.prefers_one_shuffle("spark") != E.prefers_one_shuffle(
        "duckdb")
    E.drop_temp(con, t.get_name())
    assert t.get_name() not in E.tables(con)


@pytest.mark.parametrize("which", ["duckdb_con", pytest.param("spark_con", marks=pytest.mark.slow)])
def test_csv_lines_travel_with_their_rows_whatever_the_storage_order(which, request, tmp_path):
    con = request.getfixturevalue(which)
    p = tmp_path / "lines.csv"
    rows = [f"U{i},v{i + 2}" for i in range(5000)]
    p.write_text("id,value\n" + "\n".join(rows) + "\n")
    t = E.read_csv_text(con, p, ["id", "value"])
    got = t.order_by(t.id.desc()).to_pandas()  # any order: the line is a column, not a position
    assert len(got) == 5000
    assert (got["value"] == "v" + got["_line"].astype(str)).all()
    # with a line map (records after blank lines or with quoted line breaks) the lines come from the map
    q = tmp_path / "map.csv"
    q.write_text('id,value\nU0,"two\nlines"\n\nU1,x\n')
    got = E.read_csv_text(con, q, ["id", "value"], lines=[2, 5]).order_by("id").to_pandas()
    assert got["_line"].tolist() == [2, 5] and got["value"].tolist() == ["two\nlines", "x"]
    with pytest.raises(E.ReadError) as err:
        E.read_csv_text(con, q, ["id", "value"], lines=[2, 5, 9]).count().execute()
    assert err.value.counts == (2, 3)


def test_duckdb_csv_reader_can_keep_its_rows_on_disk(duckdb_con, tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("id,value\n" + "\n".join(f"U{i},{i}" for i in range(1000)) + "\n")
    spill = tmp_path / "rows.parquet"
    t = E.read_csv_text(duckdb_con, p, ["id", "value"], spill_file=spill)
    assert spill.exists() and int(t.count().execute()) == 1000
    assert int(t.filter(t.id == "U999")._line.max().execute()) == 1001


@pytest.mark.parametrize("which", ["duckdb_con", pytest.param("spark_con", marks=pytest.mark.slow)])
def test_write_parquet_and_csv_are_one_sorted_file_on_both_engines(which, request, tmp_path):
    con = request.getfixturevalue(which)
    df = pd.DataFrame({"id": [f"U{i:03d}" for i in range(50)][::-1], "x": range(50),
                       "d": pd.to_datetime(["2024-01-31"] * 50)})
    t = E.register_frame(con, df)
    out = E.write_parquet(con, t, tmp_path / "t.parquet", order_by=["id"])
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    back = pd.read_parquet(out)
    assert back["id"].tolist() == sorted(df["id"]) and back["x"].tolist() == list(range(50))[::-1]
    csv = E.write_csv(con, t, tmp_path / "t.csv", order_by=["id"])
    text = csv.read_text().splitlines()
    assert text[0] == "id,x,d" and text[1] == "U000,49,2024-01-31" and len(text) == 51


def test_warehouse_from_parquet_and_frames_read_back_read_only(tmp_path):
    pq_file = tmp_path / "u.parquet"
    pd.DataFrame({"user_id": ["U2", "U1"], "v": [2.0, 1.0]}).to_parquet(pq_file)
    db = E.write_warehouse(tmp_path / "w.duckdb", {"audience": pq_file,
                                                   "summary": pd.DataFrame({"source": ["a"], "rows": [3]})},
                           order_by={"audience": "user_id"})
    con = E.connect("duckdb", db, read_only=True)
    try:
        assert E.tables(con) == ["audience", "summary"]
        assert E.sql(con, "SELECT user_id FROM audience")["user_id"].tolist() == ["U1", "U2"]
        assert E.native(con) is con.con
    finally:
        E.disconnect(con)
    with pytest.raises(FileNotFoundError, match="read-only DuckDB file"):
        E.connect("duckdb", tmp_path / "absent.duckdb", read_only=True)


def test_duckdb_spill_settings_are_applied(tmp_path):
    con = E.connect("duckdb", temp_directory=tmp_path / "spill", preserve_insertion_order=False)
    got = E.sql(con, "SELECT current_setting('temp_directory') AS t, "
                     "current_setting('preserve_insertion_order') AS p")
    assert got["t"][0] == str((tmp_path / "spill").resolve()) and not bool(got["p"][0])
    assert (tmp_path / "spill").is_dir()


def test_map_batches_applies_a_function_per_batch_without_collecting(duckdb_con, tmp_path):
    import pyarrow as pa

    t = E.register_frame(duckdb_con, pd.DataFrame({"id": [f"U{i:04d}" for i in range(1000)], "x": range(1000)}))
    seen = []

    def double(batch: pd.DataFrame) -> pd.DataFrame:
        seen.append(len(batch))
        return pd.DataFrame({"id": batch["id"], "y": batch["x"] * 2})

    out = E.map_batches(duckdb_con, t, double, tmp_path / "o", arrow_schema=pa.schema([("id", pa.string()),
                                                                                       ("y", pa.int64())]),
                        spark_schema="id string, y bigint", batch_size=128, order_by=["id"])
    got = pd.read_parquet(out)
    assert max(seen) <= 128 and sum(seen) == 1000
    assert got["y"].tolist() == [2 * i for i in range(1000)]
