"""Ingestion: round trip of the synthetic sources, every bad-input case, and the row-count invariant."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from helpers import generate as G
from helpers import schema as S
from helpers.ingest import IngestError, ingest_sources, ingest_table, read_mapping, write_outputs


@pytest.fixture(scope="module")
def sources(tmp_path_factory, small_panel):
    root = tmp_path_factory.mktemp("src")
    G.write_sources(small_panel, root / "raw", root / "truth", seed=5, corrupt_share=0.005)
    return root


@pytest.fixture(scope="module")
def ingested(sources):
    return ingest_sources(sources / "raw")


def _user_csv(df: pd.DataFrame, path, **kw):
    out = df.copy()
    out["customer_since_date"] = out["customer_since_date"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False, **kw)
    return path


@pytest.fixture
def user_table(small_panel):
    return small_panel.data.head(200).copy()


def test_sources_round_trip_to_the_generated_table(ingested, sources, small_panel):
    truth = pd.read_parquet(sources / "truth" / "users_truth.parquet")
    assert ingested.report["n_rejected"] == truth["corrupted"].sum() == 20
    expected = small_panel.data[~truth["corrupted"].to_numpy()].reset_index(drop=True)
    pd.testing.assert_frame_equal(ingested.data[S.COLUMN_NAMES], expected, check_exact=False, rtol=1e-9)
    # the default configuration's extension columns follow the dictionary (empty if the CRM lacks them)
    assert list(ingested.data.columns[22:24]) == ["state", "gender"]


def test_row_count_invariant_per_source(ingested, sources):
    rep = ingested.report
    assert rep["n_users"] + rep["n_rejected"] == rep["n_input"]
    q = ingested.quarantine
    crm_rejected = len(q["crm_users.csv"])
    assert crm_rejected + len(q["unified (incomplete customers)"]) == rep["n_rejected"]
    for name in G.SOURCE_FILES:
        n_in = len(pd.read_csv(sources / "raw" / name))
        # every input row is either used for an accepted user or quarantined
        used = len(ingested.data) if name != "crm_users.csv" else len(ingested.data) + len(
            q["unified (incomplete customers)"])
        assert rep["source_rows_input"][name] == n_in
        assert n_in == len(q[name]) + used + (0 if name == "crm_users.csv" else
                                              len(q["unified (incomplete customers)"]) - _incomplete_due_to(q, name))


def _incomplete_due_to(q, name):
    return int(q["unified (incomplete customers)"]["_reason"].str.contains(name, regex=False).sum())


def test_match_rates_reported(ingested, small_panel):
    assert ingested.report["match_rate_partner"] == pytest.approx(ingested.data["traveler_type"].notna().mean(),
                                                                  abs=1e-6)
    assert 0.3 < ingested.report["match_rate_third_party"] < 0.8


def test_quarantine_names_file_line_column_and_reason(ingested, sources):
    crm = ingested.quarantine["crm_users.csv"]
    assert set(crm["_column"]) == {"age_group", "customer_since_date"}
    row = crm[crm["_column"] == "customer_since_date"].iloc[0]
    assert "unparseable date" in row["_reason"] and "YYYY-MM-DD" in row["_reason"]
    lines = pd.read_csv(sources / "raw" / "crm_users.csv", dtype=str)
    assert lines.iloc[int(row["_line"]) - 2]["user_id"] == row["user_id"]


def test_write_outputs_csv_parquet_duckdb(ingested, tmp_path):
    out = write_outputs(ingested, tmp_path / "processed", tmp_path / "quarantine")
    csv = pd.read_csv(out["csv"], dtype=str)
    assert list(csv.columns) == list(ingested.data.columns) and len(csv) == len(ingested.data)
    assert list(csv.columns[:22]) == S.COLUMN_NAMES
    con = duckdb.connect(str(out["duckdb"]), read_only=True)
    assert con.execute("SELECT count(*) FROM audience").fetchone()[0] == len(ingested.data)
    con.close()
    assert sorted(p.name for p in (tmp_path / "quarantine").glob("*.csv"))  # rejected rows kept aside
    again = ingest_table(out["csv"])
    assert again.n_rejected == 0 and len(again.data) == len(ingested.data)


# --- a user's own file ----------------------------------------------------------------------------
def test_user_file_round_trip(user_table, tmp_path):
    r = ingest_table(_user_csv(user_table, tmp_path / "mine.csv"))
    pd.testing.assert_frame_equal(r.data[S.COLUMN_NAMES], user_table.sort_values("user_id").reset_index(drop=True))
    assert r.data[["state", "gender"]].isna().all().all()  # declared optional, absent: added empty
    assert r.report["churn_flag"] == "checked against last_seen_days_ago"


def test_parquet_input(user_table, tmp_path):
    user_table.to_parquet(tmp_path / "mine.parquet", index=False)
    r = ingest_table(tmp_path / "mine.parquet")
    assert len(r.data) == 200 and r.n_rejected == 0


def test_missing_required_column_is_an_error(user_table, tmp_path):
    path = _user_csv(user_table.drop(columns=["avg_monthly_spend"]), tmp_path / "mine.csv")
    with pytest.raises(IngestError, match=r"mine.csv.*missing required column\(s\) avg_monthly_spend") as e:
        ingest_table(path)
    assert e.value.column == "avg_monthly_spend"


def test_optional_columns_absent_ingests_with_statement(user_table, tmp_path):
    path = _user_csv(user_table.drop(columns=S.THIRD_PARTY + ["churned_in_last_90_days"]), tmp_path / "m.csv")
    r = ingest_table(path)
    assert len(r.data) == 200 and list(r.data.columns) == S.COLUMN_NAMES + ["state", "gender"]
    assert r.data[S.THIRD_PARTY].isna().all().all()
    assert set(r.report["missing_optional_columns"]) == set(S.THIRD_PARTY) | {"state", "gender"}
    assert any("household" in s for s in r.report["limits"])
    assert (r.data["churned_in_last_90_days"] == (r.data["last_seen_days_ago"] > 90)).all()
    assert r.report["churn_flag"] == "derived from last_seen_days_ago"


@pytest.mark.parametrize("column,value,message", [
    ("avg_monthly_spend", "twelve", "not a number"),
    ("monthly_conversions", "2.5", "not an integer"),
    ("time_on_podcasts_min", "-3", "out of range"),
    ("age_group", "17-", "unknown category"),
    ("customer_since_date", "2021-13-45", "unparseable date"),
    ("partner_purchase_categories", "cars|boats", "invalid value"),
    ("presence_of_children", "maybe", "not a boolean"),
    ("user_id", "", "missing identifier"),
])
def test_bad_values_are_quarantined_with_line_and_reason(user_table, tmp_path, column, value, message):
    t = user_table.astype({c: object for c in user_table.columns})
    t["customer_since_date"] = user_table["customer_since_date"].dt.strftime("%Y-%m-%d")
    t.loc[[7, 42], column] = value
    t.to_csv(tmp_path / "mine.csv", index=False)
    r = ingest_table(tmp_path / "mine.csv")
    q = r.quarantine["mine.csv"]
    assert len(r.data) + len(q) == 200 and len(q) == 2
    assert sorted(q["_line"].astype(int)) == [9, 44]  # header is line 1
    assert (q["_column"] == column).all() and q["_reason"].str.contains(message).all()


def test_duplicate_user_id_rejects_every_copy(user_table, tmp_path):
    t = user_table.copy()
    t.loc[10, "user_id"] = t.loc[11, "user_id"]
    r = ingest_table(_user_csv(t, tmp_path / "mine.csv"))
    q = r.quarantine["mine.csv"]
    assert len(q) == 2 and q["_reason"].str.contains("duplicate user_id").all()
    assert len(r.data) == 198


def test_inconsistent_churn_flag_is_quarantined(user_table, tmp_path):
    t = user_table.copy()
    t.loc[0, "churned_in_last_90_days"] = not bool(t.loc[0, "churned_in_last_90_days"])
    r = ingest_table(_user_csv(t, tmp_path / "mine.csv"))
    q = r.quarantine["mine.csv"]
    assert len(q) == 1 and "last_seen_days_ago > 90" in q["_reason"].iloc[0]
    assert r.report["n_users"] + r.report["n_rejected"] == 200


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"user_id,age_group\n", "no data rows"),
])
def test_empty_files(tmp_path, content, message):
    (tmp_path / "e.csv").write_bytes(content)
    with pytest.raises(IngestError, match=message):
        ingest_table(tmp_path / "e.csv")


def test_wrong_delimiter_names_it(user_table, tmp_path):
    path = _user_csv(user_table, tmp_path / "semi.csv", sep=";")
    with pytest.raises(IngestError, match=r"semi.csv: the header is ';'-delimited.*delimiter=';'"):
        ingest_table(path)
    assert len(ingest_table(path, delimiter=";").data) == 200


def test_wrong_encoding_names_the_line(user_table, tmp_path):
    path = _user_csv(user_table, tmp_path / "latin.csv")
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"U0", b"\xe9U0", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(IngestError, match=r"latin.csv: bytes that are not valid utf-8.*line\(s\) 6"):
        ingest_table(path)
    r = ingest_table(path, encoding="latin-1")
    assert len(r.data) == 200 and r.data["user_id"].str.startswith("é").sum() == 1


def test_column_mapping_file(user_table, tmp_path):
    t = user_table.rename(columns={"user_id": "customer_id", "avg_monthly_spend": "spend"})
    path = _user_csv(t.assign(email="x@example.com"), tmp_path / "mine.csv")
    pd.DataFrame({"source_column": ["customer_id", "spend"],
                  "target_column": ["user_id", "avg_monthly_spend"]}).to_csv(tmp_path / "map.csv", index=False)
    r = ingest_table(path, mapping=tmp_path / "map.csv")
    assert len(r.data) == 200 and r.report["extension_columns"] == ["email"]  # kept, not dropped
    assert (r.data["email"] == "x@example.com").all() and r.report["ignored_columns"] == []


def test_mapping_to_unknown_column_is_an_error(tmp_path):
    with pytest.raises(IngestError, match="unknown column"):
        read_mapping({"a": "not_a_column"})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(IngestError, match="file not found"):
        ingest_table(tmp_path / "nope.csv")


def test_source_missing_column_names_file(sources, tmp_path):
    import shutil
    raw = tmp_path / "raw"
    shutil.copytree(sources / "raw", raw)
    pd.read_csv(raw / "billing.csv").drop(columns="avg_monthly_spend").assign(spend=1).to_csv(
        raw / "billing.csv", index=False)
    with pytest.raises(IngestError, match=r"billing.csv: missing column\(s\) avg_monthly_spend"):
        ingest_sources(raw)
