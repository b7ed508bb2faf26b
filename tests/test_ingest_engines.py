"""Ingestion is one Ibis code path: DuckDB and Spark give the same unified table, quarantine and line numbers.

A 3,000-user panel with the generator's planted defects plus a few more (duplicate id, orphan, missing
values, invalid multi-valued set, bad boolean, non-integer, unknown partner id, padded values) is ingested
on both engines, from CSV files and from folders of Parquet parts. Spark runs on the session fixture.
"""

from __future__ import annotations

import csv

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import generate as G
from helpers import schema as S
from helpers.ingest import INCOMPLETE, ingest_sources, ingest_to_parquet, read_text_source

#: Tests that run an ingestion on Spark: the first one pays the JVM warm-up (about 20-40 s of fixed cost
#: on 2 cores for a 3,000-user panel, mostly Spark query planning and code generation, not data).
SPARK = pytest.mark.slow
ENGINES = ["on_duckdb", pytest.param("on_spark", marks=SPARK)]

SOURCES = [*G.SOURCE_FILES, G.PARTNER_FILE, G.PARTNER_MATCH, G.THIRD_FILE, G.THIRD_MATCH]


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _plant(raw) -> None:
    """Extra defects on top of the generator's (see EXPECTED_REASONS)."""
    b = _read(raw / "billing.csv")
    b.loc[10, "user_id"] = b.loc[11, "user_id"]
    b.to_csv(raw / "billing.csv", index=False)
    s = _read(raw / "support.csv")
    s = pd.concat([s, pd.DataFrame({"user_id": ["U99999999"], "support_tickets_raised": ["1"]})])
    s.to_csv(raw / "support.csv", index=False)
    e = _read(raw / "engagement.csv")
    e.loc[5, "time_on_social_media_min"] = " 12.5 "  # padded: valid after stripping
    e.loc[6, "monthly_conversions"] = ""
    e.loc[7, "monthly_conversions"] = "2.5"
    e.to_csv(raw / "engagement.csv", index=False)
    c = _read(raw / "crm_users.csv")
    c.loc[3, "age_group"] = ""
    c.to_csv(raw / "crm_users.csv", index=False)
    p = _read(raw / G.PARTNER_FILE)
    p.loc[0, "partner_purchase_categories"] = "cars|boats"
    p.to_csv(raw / G.PARTNER_FILE, index=False)
    m = _read(raw / G.PARTNER_MATCH)
    m.loc[4, "partner_id"] = ""
    m.to_csv(raw / G.PARTNER_MATCH, index=False)
    t = _read(raw / G.THIRD_FILE)
    t.loc[0, "presence_of_children"] = "maybe"
    t.loc[1, "household_size"] = "2.5"
    t.to_csv(raw / G.THIRD_FILE, index=False)


#: reason fragments each source's quarantine must contain (planted by the generator and by _plant)
EXPECTED_REASONS = {
    "billing.csv": ["duplicate user_id", "not a number"], "support.csv": ["not in crm_users.csv"],
    "engagement.csv": ["missing value", "not an integer", "out of range"],
    "crm_users.csv": ["missing value", "unknown category", "unparseable date"],
    G.PARTNER_FILE: ["invalid value"], G.PARTNER_MATCH: ["missing identifier", "has no valid row in"],
    G.THIRD_FILE: ["not a boolean", "not an integer"]}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    G.write_sources(G.generate_panel(3_000, seed=13), root / "raw", root / "truth", seed=3, corrupt_share=0.01)
    _plant(root / "raw")
    return root / "raw"


@pytest.fixture(scope="module")
def parquet_dir(raw_dir, tmp_path_factory):
    """The same sources as folders of three Parquet parts of text columns (nulls where the CSV is empty)."""
    out = tmp_path_factory.mktemp("parts")
    for name in SOURCES:
        df = pd.read_csv(raw_dir / name, dtype=str, keep_default_na=False, na_values=[""])
        folder = out / name.removesuffix(".csv")
        folder.mkdir()
        bounds = [0, len(df) // 3, 2 * len(df) // 3, len(df)]
        for i in range(3):
            part = df.iloc[bounds[i]:bounds[i + 1]]
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i:05d}.parquet")
    return out


@pytest.fixture(scope="module")
def on_duckdb(raw_dir, duckdb_con):
    return ingest_sources(raw_dir, con=duckdb_con)


@pytest.fixture(scope="module")
def on_spark(raw_dir, spark_con):
    return ingest_sources(raw_dir, engine="spark", con=spark_con)


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.data.sort_values("user_id").reset_index(drop=True),
                                  b.data.sort_values("user_id").reset_index(drop=True), check_exact=True)
    assert list(a.quarantine) == list(b.quarantine)
    for name in a.quarantine:
        pd.testing.assert_frame_equal(a.quarantine[name], b.quarantine[name], check_exact=True, obj=name)
    assert a.report == b.report


@SPARK
def test_duckdb_and_spark_give_the_same_table_quarantine_and_report(on_duckdb, on_spark):
    _assert_same(on_duckdb, on_spark)
    assert list(on_spark.data.columns) == S.COLUMN_NAMES + ["state", "gender"]
    assert on_spark.data["user_id"].is_monotonic_increasing


@pytest.mark.parametrize("which", ENGINES)
def test_planted_defects_are_quarantined_with_their_reasons(which, raw_dir, request):
    result = request.getfixturevalue(which)
    for name, fragments in EXPECTED_REASONS.items():
        reasons = " ".join(result.quarantine[name]["_reason"])
        for f in fragments:
            assert f in reasons, (name, f)
    # the padded value was accepted, stripped and parsed
    e = _read(raw_dir / "engagement.csv")
    padded = result.data.set_index("user_id").loc[e.loc[5, "user_id"], "time_on_social_media_min"]
    assert padded == 12.5
    rep = result.report
    assert rep["n_users"] + rep["n_rejected"] == rep["n_input"] == 3_000
    assert len(result.quarantine["crm_users.csv"]) + len(result.quarantine[INCOMPLETE]) == rep["n_rejected"]


@pytest.mark.parametrize("which", ENGINES)
def test_quarantine_lines_point_at_the_raw_rows(which, raw_dir, request):
    result = request.getfixturevalue(which)
    checked = 0
    for name in SOURCES:
        q = result.quarantine[name]
        with open(raw_dir / name, newline="") as f:
            lines = f.read().split("\n")
        header = next(csv.reader([lines[0]]))
        for _, row in q.iterrows():
            fields = dict(zip(header, next(csv.reader([lines[int(row["_line"]) - 1]]))))
            for col in header:  # the quarantined raw text is the text on that line of the file
                assert (fields[col] or None) == (None if pd.isna(row[col]) else row[col]), (name, row["_line"], col)
            checked += 1
    assert checked >= 50


@SPARK
def test_spark_line_numbers_across_partitions(spark_con, raw_dir):
    """Force several partitions per file: lines still follow the file order."""
    conf = spark_con._session.conf
    old = {k: conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    conf.set("spark.sql.files.maxPartitionBytes", "8k")
    conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        t = read_text_source(spark_con, raw_dir / "engagement.csv", ["user_id"])
        spark_df = spark_con._session.table(t.get_name())
        assert spark_df.rdd.getNumPartitions() > 5
        got = t.select("_line", "user_id").to_pandas().sort_values("_line").reset_index(drop=True)
    finally:
        for k, v in old.items():
            conf.set(k, v)
    expected = _read(raw_dir / "engagement.csv")[["user_id"]]
    assert got["_line"].tolist() == list(range(2, len(expected) + 2))
    assert got["user_id"].tolist() == expected["user_id"].tolist()


def test_parquet_parts_give_the_same_result_as_the_csv(parquet_dir, on_duckdb, duckdb_con):
    _assert_same(on_duckdb, ingest_sources(parquet_dir, con=duckdb_con))


@SPARK
def test_spark_reads_parquet_parts_like_the_csv(parquet_dir, raw_dir, spark_con):
    """Validation after reading is the same Ibis code on both engines (compared above on the CSV files), so on
    Spark it is enough that a folder of parts reads as the same text and line numbers as its CSV."""
    for name in SOURCES:
        got = [read_text_source(spark_con, src).to_pandas().sort_values("_line").reset_index(drop=True)
               for src in (raw_dir / name, parquet_dir / name.removesuffix(".csv"))]
        pd.testing.assert_frame_equal(got[0], got[1], obj=name)


def test_ingest_to_parquet_writes_from_the_engine(raw_dir, on_duckdb, duckdb_con, tmp_path):
    rep = ingest_to_parquet(raw_dir, tmp_path, con=duckdb_con)
    data = pd.read_parquet(tmp_path / "rich_audience_data.parquet")
    assert list(data.columns) == list(on_duckdb.data.columns) == S.COLUMN_NAMES + ["state", "gender"]
    pd.testing.assert_series_equal(data["user_id"].astype("string"), on_duckdb.data["user_id"])
    for key in ("n_input", "n_users", "n_rejected", "quarantined_rows_by_source", "coverage",
                "match_rate_partner", "match_rate_third_party", "source_rows_input"):
        assert rep[key] == on_duckdb.report[key], key
    q = pd.read_parquet(tmp_path / "quarantine" / "billing.parquet")
    assert len(q) == len(on_duckdb.quarantine["billing.csv"]) and set(q["_line"]) == set(
        on_duckdb.quarantine["billing.csv"]["_line"])


# --- issue 13 edges: the same answer on both engines ------------------------------------------------
from helpers import config as C  # noqa: E402
from helpers.ingest import IngestError, ingest_event_table, ingest_table  # noqa: E402


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory):
    """A user's table with a quoted line break, blank lines, CRLF-free text, a NUL in an id, a future date and
    an extension column: every kind of issue-13 edge whose answer must not depend on the engine."""
    df = G.generate_panel(60, seed=21).data
    t = df.astype({c: object for c in df.columns})
    t["customer_since_date"] = df["customer_since_date"].dt.strftime("%Y-%m-%d")
    t["note"] = "ok"
    t.loc[3, "note"] = "two\nlines"            # valid (kept text column), shifts the following lines
    t.loc[8, "user_id"] = "U\x00bad"            # control character
    t.loc[20, "customer_since_date"] = "2099-01-01"
    t.loc[30, "age_group"] = "17-"
    text = t.to_csv(index=False, lineterminator="\n").split("\n")
    text.insert(15, "")
    text.insert(40, "")
    p = tmp_path_factory.mktemp("edges") / "edges.csv"
    p.write_text("\n".join(text))
    return p


def _edges(con, path):
    return ingest_table(path, con=con, observation_date="2026-06-30")


@pytest.mark.parametrize("engine_con", ["duckdb_con", pytest.param("spark_con", marks=SPARK)])
def test_edges_give_exact_physical_lines(engine_con, edge_file, request):
    r = _edges(request.getfixturevalue(engine_con), edge_file)
    q = r.quarantine["edges.csv"].sort_values("_line")
    physical = edge_file.read_text().split("\n")
    assert len(r.data) + len(q) == 60 and len(q) == 3
    for uid, line in zip(q["user_id"], q["_line"].astype(int)):
        assert physical[line - 1].startswith(uid + ","), (uid, line)
    assert " ".join(q["_reason"]).count("control character") == 1
    assert "date after the observation date" in " ".join(q["_reason"])
    assert r.report["extension_columns"] == ["note"]
    assert r.data.set_index("user_id")["note"].str.contains("\n").sum() == 1


@SPARK
def test_edges_same_on_both_engines(edge_file, duckdb_con, spark_con):
    a, b = _edges(duckdb_con, edge_file), _edges(spark_con, edge_file)
    pd.testing.assert_frame_equal(a.data, b.data, check_exact=True)
    pd.testing.assert_frame_equal(a.quarantine["edges.csv"], b.quarantine["edges.csv"], check_exact=True)


@SPARK
def test_telco_and_long_table_same_on_both_engines(external_data, duckdb_con, spark_con, tmp_path):
    cfg = C.load("telco")
    a, b = ingest_table(config=cfg, con=duckdb_con), ingest_table(config=cfg, con=spark_con)
    pd.testing.assert_frame_equal(a.data, b.data, check_exact=True)
    assert a.report == b.report
    rows = [{"user_id": f"U{u}", "month": f"2026-0{m}-01", "engagement_state": "active", "minutes_social": "1",
             "minutes_video": "2", "minutes_podcasts": "3", "conversions": "1", "spend": "2.5"}
            for u in range(20) for m in (1, 2, 3)]
    df = pd.DataFrame(rows)
    df.loc[4, "month"] = df.loc[3, "month"]
    df.loc[7, "engagement_state"] = "gone"
    df.loc[9, "user_id"] = "U999"
    df.to_csv(tmp_path / "monthly_activity.csv", index=False)
    known = [f"U{u}" for u in range(20)]
    ea, eb = [ingest_event_table("monthly_activity", tmp_path / "monthly_activity.csv", con=c, known_ids=known,
                                 observation_date="2026-06-30") for c in (duckdb_con, spark_con)]
    pd.testing.assert_frame_equal(ea.data, eb.data, check_exact=True)
    pd.testing.assert_frame_equal(ea.quarantine["monthly_activity.csv"], eb.quarantine["monthly_activity.csv"],
                                  check_exact=True)
    assert ea.report == eb.report and ea.report["n_rejected"] == 4


@SPARK
def test_nanosecond_timestamps_in_parquet_read_on_spark(duckdb_con, spark_con, tmp_path):
    """pandas writes datetime64[ns] as Parquet TIMESTAMP(NANOS), which Spark refuses by default
    (PARQUET_TYPE_ILLEGAL); the long table of the synthetic sources is written that way."""
    df = pd.DataFrame({"user_id": ["U1", "U2", "U3"], "date": pd.to_datetime(["2026-01-02", "2026-03-04 23:59:59",
                                                                              "1999-12-31"], format="ISO8601"),
                       "amount": [1.0, 2.0, 3.0]})
    df.to_parquet(tmp_path / "transactions.parquet", index=False)
    a, b = [ingest_event_table("transactions", tmp_path / "transactions.parquet", con=c) for c in (duckdb_con, spark_con)]
    pd.testing.assert_frame_equal(a.data, b.data, check_exact=True)
    assert a.data["date"].dt.strftime("%Y-%m-%d").tolist() == ["2026-01-02", "2026-03-04", "1999-12-31"]


@pytest.mark.parametrize("engine_con", ["duckdb_con", pytest.param("spark_con", marks=SPARK)])
@pytest.mark.parametrize("text,line", [
    ("user_id,age_group\nU1,18-24\nU2,25-34,extra\nU3,18-24\n", 3),    # one field too many
    ("user_id,age_group\nU1,18-24\nU3\nU4,18-24\n", 3),               # one field too few (Spark padded it)
    ('user_id,age_group\nU1,"18-24\n"\n\nU3\nU4,18-24\n', 5),          # after a quoted break and a blank line
])
def test_wrong_field_count_is_an_error_on_both_engines(engine_con, text, line, request, tmp_path):
    (tmp_path / "fc.csv").write_text(text)
    with pytest.raises(IngestError, match=rf"fc.csv: a row has \d field\(s\), the header has 2; line\(s\) {line}"):
        ingest_table(tmp_path / "fc.csv", con=request.getfixturevalue(engine_con))


# --- issue 20: the engine writes the table (ranges of user_id, spill), value for value the collected one -----
def _written(df: pd.DataFrame, path) -> pd.DataFrame:
    df.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    return pd.read_parquet(path)


def test_engine_written_table_is_the_collected_table(raw_dir, on_duckdb, tmp_path):
    from helpers.ingest import table_fingerprint, write_outputs

    staged = ingest_sources(raw_dir, stage_dir=tmp_path / "stage", rows_per_range=700)  # 5 ranges of ids
    assert staged.data is None and staged.staged.exists()
    assert not list((tmp_path / "stage").glob("unified.engine-*"))  # the engine's range files are gone
    got = pd.read_parquet(staged.staged)
    pd.testing.assert_frame_equal(got, _written(on_duckdb.data, tmp_path / "a.parquet"), check_exact=True)
    assert pq.read_schema(staged.staged).equals(pq.read_schema(tmp_path / "a.parquet"))
    assert staged.report["panel_version"] == table_fingerprint(on_duckdb.data)
    assert {k: v for k, v in staged.report.items() if k != "panel_version"} == on_duckdb.report
    for name in on_duckdb.quarantine:
        pd.testing.assert_frame_equal(staged.quarantine[name], on_duckdb.quarantine[name], obj=name)
    out = write_outputs(staged, tmp_path / "processed", tmp_path / "quarantine")
    assert staged.staged == out["parquet"] and staged.report["panel_version"] == table_fingerprint(on_duckdb.data)
    csv = pd.read_csv(out["csv"], dtype=str)
    assert csv["user_id"].tolist() == on_duckdb.data["user_id"].tolist()


def test_engine_written_long_table_is_the_collected_one(raw_dir, on_duckdb, tmp_path):
    from helpers.ingest import IngestResult, ingest_to_parquet

    ingest_to_parquet(raw_dir, tmp_path / "u")
    src = tmp_path / "activity.csv"  # a long table: several rows per user, one duplicate key, one orphan
    src.write_text("user_id,month,engagement_state,minutes_social,minutes_video,minutes_podcasts,conversions,spend\n"
                   + "".join(f"{u},2026-0{m}-01,active,1,2,3,0,4.5\n" for u in on_duckdb.data["user_id"][:40]
                             for m in (2, 1))
                   + "U99999999,2026-01-01,light,1,2,3,0,1\n"
                   + f"{on_duckdb.data['user_id'][0]},2026-01-01,dormant,1,2,3,0,1\n")
    spine = IngestResult(None, {}, {}, (S.BY_NAME["user_id"],), staged=tmp_path / "u" / "rich_audience_data.parquet")
    a = ingest_event_table("monthly_activity", src, known_ids=on_duckdb.data["user_id"])
    b = ingest_event_table("monthly_activity", src, known_ids=spine, stage_dir=tmp_path / "s")
    assert b.data is None and a.report == b.report and a.report["n_rejected"] == 3
    pd.testing.assert_frame_equal(pd.read_parquet(b.staged), _written(a.data, tmp_path / "e.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(a.quarantine[src.name], b.quarantine[src.name])
