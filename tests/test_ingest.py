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


# --- issue 13: ingestion edges (each test fails without its fix) ---------------------------------------
from helpers import config as C  # noqa: E402
from helpers.ingest import (EVENT_SPECS, ingest_event_table, physical_lines, read_ingest_meta,  # noqa: E402
                            resolve_observation_date, write_ingest_meta)


def _text_table(user_table):
    t = user_table.astype({c: object for c in user_table.columns})
    t["customer_since_date"] = user_table["customer_since_date"].dt.strftime("%Y-%m-%d")
    return t


def test_physical_line_numbers_after_quoted_line_breaks_and_blank_lines(user_table, tmp_path):
    """Defects after a quoted line break and blank lines are reported on their physical line."""
    t = _text_table(user_table.head(40))
    t.loc[3, "partner_purchase_categories"] = "fashion\nbeauty"   # a quoted line break (invalid value, line 5-6)
    t.loc[30, "age_group"] = "17-"                                 # a defect further down
    t.loc[35, "age_group"] = "old"
    text = t.to_csv(index=False, lineterminator="\n")
    lines = text.split("\n")
    lines.insert(10, "")                                           # two blank lines in the middle
    lines.insert(20, "")
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(lines))
    r = ingest_table(path)
    q = r.quarantine["mine.csv"].set_index("user_id")
    physical = path.read_text().split("\n")
    for uid in (t.loc[30, "user_id"], t.loc[35, "user_id"], t.loc[3, "user_id"]):
        line = int(q.loc[uid, "_line"])
        assert physical[line - 1].startswith(uid + ","), (uid, line)
    assert int(q.loc[t.loc[30, "user_id"], "_line"]) == 30 + 2 + 1 + 2  # header, quoted break, 2 blank lines
    assert len(r.data) + len(q) == 40
    assert physical_lines(path)[:5] == [2, 3, 4, 5, 7]


def test_physical_lines_fast_path_without_quotes(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text("a,b\n1,2\n3,4\n")
    assert physical_lines(p) is None


@pytest.mark.parametrize("value,message", [
    ("2099-01-01", "date after the observation date 2026-06-30"),
    ("1800-01-01", "implausibly old date (before 1900-01-01)"),
])
def test_implausible_dates_are_quarantined(user_table, tmp_path, value, message):
    t = _text_table(user_table)
    t.loc[[4, 9], "customer_since_date"] = value
    t.to_csv(tmp_path / "mine.csv", index=False)
    r = ingest_table(tmp_path / "mine.csv", observation_date="2026-06-30")
    q = r.quarantine["mine.csv"]
    assert len(q) == 2 and sorted(q["_line"].astype(int)) == [6, 11]
    assert (q["_column"] == "customer_since_date").all() and q["_reason"].str.contains(message, regex=False).all()


def test_future_date_needs_an_observation_date_to_be_refused(user_table, tmp_path):
    t = _text_table(user_table)
    t.loc[4, "customer_since_date"] = "2099-01-01"
    t.to_csv(tmp_path / "mine.csv", index=False)
    assert ingest_table(tmp_path / "mine.csv").n_rejected == 0  # no date known: said in ingest_meta
    cfg = C.load().with_overrides(observation_date="2026-06-30")  # the configuration's date is used
    assert ingest_table(tmp_path / "mine.csv", config=cfg).n_rejected == 1


@pytest.mark.parametrize("bad", ["U\x00123", "U12\t3", "U1\x1b23", "U12\x7f"])
def test_control_characters_in_ids_are_rejected(user_table, tmp_path, bad):
    t = _text_table(user_table)
    t.loc[5, "user_id"] = bad
    path = tmp_path / "mine.csv"
    t.to_csv(path, index=False)
    r = ingest_table(path)
    q = r.quarantine["mine.csv"]
    assert len(q) == 1 and int(q["_line"].iloc[0]) == 7 and "control character" in q["_reason"].iloc[0]


# mapping files -----------------------------------------------------------------------------------
@pytest.fixture
def renamed(user_table, tmp_path):
    t = user_table.rename(columns={"user_id": "customer_id", "avg_monthly_spend": "spend"})
    return _user_csv(t, tmp_path / "mine.csv")


def _map(tmp_path, rows, name="map.csv"):
    p = tmp_path / name
    p.write_text("source_column,target_column\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return p


def test_mapping_two_sources_to_one_target_is_an_error(renamed, tmp_path):
    m = _map(tmp_path, [("customer_id", "user_id"), ("spend", "avg_monthly_spend"), ("cid", "user_id")])
    with pytest.raises(IngestError, match=r"map.csv: row 4 maps 'cid' to 'user_id', which row 2 already maps "
                                          r"'customer_id' to.*each target column once"):
        ingest_table(renamed, mapping=m)


def test_mapping_source_not_in_file_is_an_error(renamed, tmp_path):
    m = _map(tmp_path, [("customer_id", "user_id"), ("spend", "avg_monthly_spend"), ("kids", "presence_of_children")])
    with pytest.raises(IngestError, match=r"map.csv: row 4: source column 'kids' is not in mine.csv.*expected "
                                          r"source_column values that are column names"):
        ingest_table(renamed, mapping=m)


def test_mapping_target_colliding_with_a_column_is_an_error(user_table, tmp_path):
    path = _user_csv(user_table.assign(spend2=1.0), tmp_path / "mine.csv")
    m = _map(tmp_path, [("spend2", "avg_monthly_spend")])
    with pytest.raises(IngestError, match=r"map.csv: row 2 maps 'spend2' to 'avg_monthly_spend', but mine.csv "
                                          r"already has a column 'avg_monthly_spend'"):
        ingest_table(path, mapping=m)


def test_mapping_swap_is_allowed(user_table, tmp_path):
    t = _text_table(user_table)
    t = t.rename(columns={"time_on_podcasts_min": "x", "time_on_social_media_min": "time_on_podcasts_min"})
    t = t.rename(columns={"x": "time_on_social_media_min"})
    t.to_csv(tmp_path / "mine.csv", index=False)
    m = _map(tmp_path, [("time_on_podcasts_min", "time_on_social_media_min"),
                        ("time_on_social_media_min", "time_on_podcasts_min")])
    r = ingest_table(tmp_path / "mine.csv", mapping=m)
    assert r.n_rejected == 0
    assert (r.data["time_on_podcasts_min"].to_numpy() ==
            user_table.sort_values("user_id")["time_on_podcasts_min"].to_numpy()).all()


@pytest.mark.parametrize("content,message", [
    (None, "mapping file not found"),
    ("", "mapping file is empty"),
    ("\n\n", "mapping file is empty"),
    ("source_column,target_column\n", "mapping file has a header but no rows"),
    ("from,to\ncustomer_id,user_id\n", "mapping file has columns"),
    ("source_column,target_column\ncustomer_id,\n", "row 2 has an empty target_column"),
    ("source_column,target_column\ncustomer_id,user_id\ncustomer_id,age_group\n", "row 3 maps source column "
                                                                                  "'customer_id' again"),
    ("source_column,target_column\ncustomer_id,client\n", "row 2 maps 'customer_id' to unknown column 'client'"),
])
def test_bad_mapping_files_name_file_row_and_expectation(renamed, tmp_path, content, message):
    m = tmp_path / "map.csv"
    if content is not None:
        m.write_text(content)
    with pytest.raises(IngestError) as e:
        ingest_table(renamed, mapping=m)
    assert str(m) in str(e.value) and message in str(e.value) and "expected" in str(e.value)


# messages that named the wrong cause ------------------------------------------------------------------
def test_corrupt_parquet_names_the_file_and_cause(user_table, tmp_path):
    p = tmp_path / "mine.parquet"
    user_table.to_parquet(p, index=False)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # a truncated copy
    with pytest.raises(IngestError, match=r"mine.parquet: is not a readable Parquet file.*truncated or corrupt"):
        ingest_table(p)


def test_ten_megabyte_cell_is_a_line_size_error(user_table, tmp_path):
    t = _text_table(user_table.head(20))
    t.loc[7, "traveler_type"] = "x" * 10_000_000
    t.to_csv(tmp_path / "mine.csv", index=False)
    with pytest.raises(IngestError, match=r"line 9 is 10.0 MB long, over the maximum line size.*remove or shorten"):
        ingest_table(tmp_path / "mine.csv")


def test_wrong_field_count_names_the_physical_line(user_table, tmp_path):
    t = _text_table(user_table.head(20))
    t.loc[2, "traveler_type"] = "a\nb"        # quoted line break: later rows are one line further down
    text = t.to_csv(index=False).split("\n")
    text[12] = text[12] + ",extra"            # physical line 13
    (tmp_path / "mine.csv").write_text("\n".join(text))
    with pytest.raises(IngestError, match=r"a row has 23 field\(s\), the header has 22.*line\(s\) 13"):
        ingest_table(tmp_path / "mine.csv")


@pytest.mark.parametrize("header,message", [
    ("user_id,age_group,age_group", "column name 'age_group' appears twice in the header (fields 2 and 3)"),
    ("user_id,,age_group", "header field(s) 2 have no name"),
    ("user_id,age_group,", "header field(s) 3 have no name"),
])
def test_duplicate_or_empty_header_names(tmp_path, header, message):
    (tmp_path / "h.csv").write_text(header + "\nU1,18-24,x\n")
    with pytest.raises(IngestError) as e:
        ingest_table(tmp_path / "h.csv")
    assert message in str(e.value) and "Binder" not in str(e.value)


def test_duplicate_header_in_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table([pa.array(["U1"]), pa.array(["a"]), pa.array(["b"])],
                            names=["user_id", "age_group", "age_group"]), tmp_path / "d.parquet")
    with pytest.raises(IngestError, match="column name 'age_group' appears twice"):
        ingest_table(tmp_path / "d.parquet")


def test_utf16_file_is_named_and_the_remedy_works(user_table, tmp_path):
    path = tmp_path / "u16.csv"
    path.write_text(_text_table(user_table).to_csv(index=False), encoding="utf-16")
    with pytest.raises(IngestError, match=r"u16.csv: the file is UTF-16 text.*encoding='utf-16'") as e:
        ingest_table(path)
    assert "latin-1" not in str(e.value)
    assert len(ingest_table(path, encoding="utf-16").data) == 200  # the advice can be followed


@pytest.mark.parametrize("kind,message", [("gzip", "gzip-compressed"), ("xlsx", "Excel .xlsx"),
                                          ("xls", "Excel 97-2003"), ("bz2", "bzip2")])
def test_compressed_and_excel_files_are_named(user_table, tmp_path, kind, message):
    import bz2
    import gzip
    import zipfile
    text = _text_table(user_table).to_csv(index=False).encode()
    path = tmp_path / "mine.csv"
    if kind == "gzip":
        path.write_bytes(gzip.compress(text))
    elif kind == "bz2":
        path.write_bytes(bz2.compress(text))
    elif kind == "xlsx":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("xl/workbook.xml", "<workbook/>")
    else:
        path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)
    with pytest.raises(IngestError) as e:
        ingest_table(path)
    assert message in str(e.value) and "mine.csv" in str(e.value) and "latin-1" not in str(e.value)


def test_delimiter_and_encoding_advice_names_make_and_config(user_table, tmp_path):
    path = _user_csv(user_table, tmp_path / "semi.csv", sep=";")
    with pytest.raises(IngestError, match=r"DELIMITER=';'.*run configuration"):
        ingest_table(path)
    cfg = C.load().with_overrides(delimiter=";")  # following the advice through the configuration works
    assert len(ingest_table(path, config=cfg).data) == 200


def test_zero_accepted_rows_is_an_error_before_anything_is_written(user_table, tmp_path):
    t = _text_table(user_table)
    t["age_group"] = "unknown"
    t.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(IngestError, match=r"bad.csv: no row was accepted: all 200 input row\(s\) were rejected; "
                                          r"most frequent reasons: bad.csv age_group: unknown category.*Nothing was "
                                          r"written"):
        ingest_table(tmp_path / "bad.csv")


def test_zero_accepted_sources_is_an_error(sources, tmp_path):
    import shutil
    raw = tmp_path / "raw"
    shutil.copytree(sources / "raw", raw)
    crm = pd.read_csv(raw / "crm_users.csv", dtype=str)
    crm["income_bracket"] = "lots"
    crm.to_csv(raw / "crm_users.csv", index=False)
    with pytest.raises(IngestError, match="crm_users.csv: no row was accepted"):
        ingest_sources(raw)


def test_write_outputs_refuses_an_empty_table(ingested, tmp_path):
    from helpers.ingest import IngestResult
    empty = IngestResult(ingested.data.head(0), {}, {"n_input": 5})
    with pytest.raises(IngestError, match="no row was accepted"):
        write_outputs(empty, tmp_path / "p", tmp_path / "q")
    assert not (tmp_path / "p").exists()


# configuration-driven ingestion ---------------------------------------------------------------------
def test_telco_table_ingests_with_its_configuration(external_data):
    cfg = C.load("telco")
    r = ingest_table(config=cfg)
    assert r.report["n_input"] == 7043 and r.n_rejected == 0
    assert r.report["filled"]["TotalCharges"]["rows"] == 11  # the documented rule, counted
    zero = r.data[r.data["tenure"] == 0]
    assert len(zero) == 11 and (zero["TotalCharges"] == 0).all()
    assert r.data["n_services"].between(1, 9).all() and r.data["SeniorCitizen"].dtype == "boolean"
    assert set(r.data["Churn"]) == {"Yes", "No"} and cfg.outcome("Churn").indicator(r.data).sum() == 1869
    assert r.report["extension_columns"] == [] and r.report["config"] == "telco"


def test_telco_blank_total_charges_with_tenure_is_quarantined(external_data, tmp_path):
    src = C.load("telco").input.resolved_path()
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df.loc[5, "TotalCharges"] = " "
    df["loyalty_tier"] = "gold"  # undeclared: kept as an extension column
    df.to_csv(tmp_path / "telco.csv", index=False)
    r = ingest_table(tmp_path / "telco.csv", config="telco")
    q = r.quarantine["telco.csv"]
    assert len(q) == 1 and int(q["_line"].iloc[0]) == 7 and "missing value" in q["_reason"].iloc[0]
    assert r.report["extension_columns"] == ["loyalty_tier"] and (r.data["loyalty_tier"] == "gold").all()


def test_a_config_with_two_metrics_on_the_synthetic_table(user_table, tmp_path):
    (tmp_path / "two.yaml").write_text(
        "id: user_id\nmetrics:\n  - {name: avg_monthly_spend, kind: money, unit: USD/month}\n"
        "  - {name: support_tickets_raised, kind: count}\n"
        "attributes:\n  - {name: age_group, type: ordinal, categories: ['18-24','25-34','35-44','45-54','55-64','65+']}\n")
    path = _user_csv(user_table, tmp_path / "mine.csv")
    r = ingest_table(path, config=tmp_path / "two.yaml")
    assert r.n_rejected == 0 and list(r.data.columns[:4]) == ["user_id", "avg_monthly_spend",
                                                                "support_tickets_raised", "age_group"]
    assert "time_on_podcasts_min" in r.report["extension_columns"]  # kept, as text
    t = _text_table(user_table)
    t.loc[3, "support_tickets_raised"] = "-1"
    t.drop(columns=["time_on_podcasts_min"]).to_csv(tmp_path / "m2.csv", index=False)  # not required any more
    r2 = ingest_table(tmp_path / "m2.csv", config=tmp_path / "two.yaml")
    assert r2.n_rejected == 1 and "out of range" in r2.quarantine["m2.csv"]["_reason"].iloc[0]
    with pytest.raises(IngestError, match=r"missing required column\(s\) avg_monthly_spend.*run configuration"):
        ingest_table(_user_csv(user_table.drop(columns="avg_monthly_spend"), tmp_path / "m3.csv"),
                     config=tmp_path / "two.yaml")


# long tables ----------------------------------------------------------------------------------------
def _activity(n_users=30, months=3):
    rows = []
    for u in range(1, n_users + 1):
        for m in range(months):
            rows.append({"user_id": f"U{u:08d}", "month": f"2026-0{4 + m}-01", "engagement_state": "active",
                         "minutes_social": 10.5, "minutes_video": 20.0, "minutes_podcasts": 1.0,
                         "conversions": 1, "spend": 12.5})
    return pd.DataFrame(rows)


def test_event_table_validates_with_quarantine(tmp_path):
    a = _activity().astype(str)
    a.loc[4, "engagement_state"] = "asleep"
    a.loc[7, "month"] = "2099-01-01"
    a.loc[9, "spend"] = "-3"
    a.loc[11, "month"] = a.loc[10, "month"]          # duplicate (user_id, month): both copies
    a.loc[20, "user_id"] = "U99999999"               # orphan
    a["campaign"] = "spring"                         # extension column, kept
    a.to_parquet(tmp_path / "monthly_activity.parquet", index=False)
    known = [f"U{u:08d}" for u in range(1, 31)]
    r = ingest_event_table("monthly_activity", tmp_path / "monthly_activity.parquet", known_ids=known,
                           observation_date="2026-06-30")
    q = r.quarantine["monthly_activity.parquet"].set_index("_line")
    assert r.report["n_rows"] + r.report["n_rejected"] == r.report["n_input"] == 90
    assert "unknown category asleep" in q.loc[6, "_reason"]
    assert "after the observation date" in q.loc[9, "_reason"]
    assert "out of range" in q.loc[11, "_reason"]
    assert "duplicate (user_id, month)" in q.loc[12, "_reason"] and "duplicate" in q.loc[13, "_reason"]
    assert "not in the unified table" in q.loc[22, "_reason"]
    assert len(q) == 6 and r.report["extension_columns"] == ["campaign"]
    assert str(r.data["month"].dtype).startswith("datetime64") and r.data["conversions"].dtype == "Int64"


def test_event_table_zero_rows_and_csv_lines(tmp_path):
    a = _activity(3, 1)
    a["engagement_state"] = "zzz"
    a.to_csv(tmp_path / "monthly_activity.csv", index=False)
    with pytest.raises(IngestError, match="monthly_activity.csv: no row was accepted"):
        ingest_event_table("monthly_activity", tmp_path / "monthly_activity.csv")
    t = pd.DataFrame({"user_id": ["U1", "U2", "U3"], "date": ["2026-01-02", "1800-01-01", "2026-02-03"],
                      "amount": ["1.5", "2", "x"]})
    t.to_csv(tmp_path / "transactions.csv", index=False)
    r = ingest_event_table("transactions", tmp_path / "transactions.csv")
    q = r.quarantine["transactions.csv"]
    assert list(q["_line"]) == [3, 4] and "implausibly old" in q["_reason"].iloc[0]
    assert set(EVENT_SPECS) == {"monthly_activity", "transactions", "exposures", "posts"}


def test_observation_date_resolution_order(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "raw").mkdir()
    assert resolve_observation_date("2014-12-31", None, tmp_path / "truth", tmp_path / "raw")[0] == "2014-12-31"
    cfg = C.load().with_overrides(observation_date="2015-01-31")
    assert resolve_observation_date(None, cfg, tmp_path / "truth")[0] == "2015-01-31"
    obs, how = resolve_observation_date(None, None, tmp_path / "truth", tmp_path / "raw")
    assert obs is None and "stages that need one" in how
    a = _activity(200, 3)
    a.loc[0, "month"] = "2099-01-01"  # one implausible month does not move the date
    a.to_parquet(tmp_path / "raw" / "monthly_activity.parquet", index=False)
    obs, how = resolve_observation_date(None, None, tmp_path / "truth", tmp_path / "raw")
    assert obs == "2026-06-30" and "monthly_activity" in how
    (tmp_path / "truth" / "truth_params.json").write_text('{"observation_date": "2026-05-31"}')
    assert resolve_observation_date(None, None, tmp_path / "truth", tmp_path / "raw")[0] == "2026-05-31"


def test_ingest_meta_round_trip(tmp_path):
    write_ingest_meta(tmp_path, {"observation_date": "2026-06-30", "panel_version": "abc"})
    assert read_ingest_meta(tmp_path)["panel_version"] == "abc"
    assert read_ingest_meta(tmp_path / "nope") == {}


def test_control_character_in_a_header_name(tmp_path):
    """Found by the fuzz: a NUL byte in the header surfaced as a raw pandas ValueError."""
    (tmp_path / "h.csv").write_bytes(b"user_id,age\x00_group\nU1,18-24\n")
    with pytest.raises(IngestError, match=r"h.csv: header field 2 \('age\\x00_group'\) contains a control character"):
        ingest_table(tmp_path / "h.csv")


def test_posts_and_exposures_specs(tmp_path):
    posts = pd.DataFrame({"post_id": ["P1", "P2", "P2", "P4"], "user_id": ["U1", "U1", "U2", "U3"],
                          "platform": ["x", "y", "y", "x"], "date": ["2026-01-01", "2026-01-02", "2026-01-03", ""],
                          "text": ["hello\nworld", "a, b", "c", "d"]})
    posts.to_parquet(tmp_path / "posts.parquet", index=False)
    r = ingest_event_table("posts", tmp_path / "posts.parquet", observation_date="2026-06-30")
    q = r.quarantine["posts.parquet"]
    assert list(q["_line"]) == [3, 4, 5] and "duplicate (post_id)" in q["_reason"].iloc[0]
    assert "missing value" in q["_reason"].iloc[2] and r.data["text"].iloc[0] == "hello\nworld"
    ex = pd.DataFrame({"user_id": ["U1", "U2"], "date": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                       "hour": [5, 24], "channel": ["tv", "social"], "impressions": [1, 2]})
    ex.to_parquet(tmp_path / "exposures.parquet", index=False)
    r = ingest_event_table("exposures", tmp_path / "exposures.parquet")
    assert r.report["n_rejected"] == 1 and "hour: out of range" in r.quarantine["exposures.parquet"]["_reason"].iloc[0]


# --- issue 20: typed Parquet is judged as its text would be ---------------------------------------------
def test_typed_parquet_is_judged_like_its_text(tmp_path, duckdb_con):
    """``keep_types`` (numbers and dates read typed) gives the reasons and values of the text path, on the
    edges where a typed value's text is special: NaN and infinity (not a number), a non-integer in an int
    column, out of range, a timestamp with a time of day, dates before 1900, after the observation date and
    beyond year 9999, missing values."""
    from helpers.ingest import read_text_source, valid_values, validate

    inf, nan = float("inf"), float("nan")
    df = pd.DataFrame({
        "user_id": ["U1", " U2 ", "U3", "U4", "U5", "U6", "U7", "U8", "U9", None],
        "month": pd.to_datetime(["2026-01-01 13:45", "2026-02-01", "1850-01-01", "2027-01-01", "2026-03-01",
                                 None, "2026-04-01", "2026-05-01", "2026-06-01", "2026-01-01"], format="ISO8601"),
        "engagement_state": ["active", "light ", "dormant", "churned", "asleep", "active", "active", None,
                             "active", "active"],
        "minutes_social": [1.5, nan, 3.0, 4.0, 5.0, 6.0, -1.0, 8.0, 1e300, 1.0],
        "minutes_video": [1.0, 2.0, inf, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1.0],
        "minutes_podcasts": [0.0, 2.0, 3.0, None, 5.0, 6.0, 7.0, 8.0, 9.0, 1.0],
        "conversions": [1.0, 2.0, 3.0, 2.5, 5.0, 6.0, 7.0, 8.0, 9.0, 1.0],
        "spend": pd.array([1, 2, 3, 4, 5, 6, 7, 20_000_000, 9, 1], dtype="Int64"),
    })
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "monthly_activity.parquet"
    table = pa.Table.from_pandas(df, preserve_index=False)  # pandas writes NaN as null: put the NaN back
    col = table.schema.get_field_index("minutes_social")
    pq.write_table(table.set_column(col, "minutes_social", pa.array(df["minutes_social"].tolist())), f)
    spec = {c.name: c for c in EVENT_SPECS["monthly_activity"].columns}
    cols = list(spec)
    out = {}
    for typed in (False, True):
        raw = read_text_source(duckdb_con, f, keep_types=typed)
        assert raw["minutes_video"].type().is_string() != typed and raw["month"].type().is_date() == typed
        assert raw["minutes_social"].type().is_string()  # holds a NaN: read as text (see _columns_with_nan)
        v = validate(raw, cols, spec=spec, observation_date="2026-06-30", key_unique=False).to_pandas()
        out[typed] = v.sort_values("_line").reset_index(drop=True)
        ok = v[v["_reason"].isna()].sort_values("_line")
        got = valid_values(raw, cols, spec).to_pandas().set_index("_line").loc[ok["_line"]]
        for c in ["user_id", *cols]:
            pd.testing.assert_series_equal(got[c].reset_index(drop=True), ok[f"_v_{c}"].reset_index(drop=True),
                                           check_names=False, check_dtype=False)
    a, b = out[False], out[True]
    pd.testing.assert_frame_equal(a[["_line", "_column", "_reason"]], b[["_line", "_column", "_reason"]])
    for c in ["user_id", *cols]:
        pd.testing.assert_series_equal(a[f"_v_{c}"], b[f"_v_{c}"], check_dtype=False)
    reasons = b.set_index("_line")["_reason"]
    assert reasons[2] is None  # a time of day: the month's day
    assert reasons[3].startswith("minutes_social: not a number: nan; expected")
    assert b.set_index("_line").loc[3, "_v_engagement_state"] == "light"  # padded text is still stripped
    assert reasons[4].startswith("month: implausibly old date") and "not a number: inf" in reasons[4]
    assert "after the observation date" in reasons[5] and "conversions: not an integer: 2.5" in reasons[5]
    assert "minutes_podcasts: missing value" in reasons[5]
    assert "unknown category asleep" in reasons[6] and "month: missing value" in reasons[7]
    assert "minutes_social: out of range: -1.0" in reasons[8] and "engagement_state: missing" in reasons[9]
    assert "spend: out of range: 20000000" in reasons[9] and "minutes_social: out of range" in reasons[10]
    assert reasons[11] == "user_id: missing identifier" and len(reasons.dropna()) == 9
    # dates beyond the text form YYYY-MM-DD (a Parquet date32 can hold year 10000 or 1 BC)
    days = [20454, 2932897, -719162, -719528, None]  # 2026-01-01, 10000-01-01, 0001-01-01, 1 BC, missing
    pq.write_table(pa.table({"user_id": ["U1", "U2", "U3", "U4", "U5"], "date": pa.array(days, pa.date32()),
                             "amount": [1.0, 2.0, 3.0, 4.0, 5.0]}), tmp_path / "transactions.parquet")
    spec = {c.name: c for c in EVENT_SPECS["transactions"].columns}
    got = [validate(read_text_source(duckdb_con, tmp_path / "transactions.parquet", keep_types=t), list(spec),
                    spec=spec, key_unique=False).select("_line", "_reason").to_pandas()
           .sort_values("_line")["_reason"].tolist()
           for t in (False, True)]
    assert got[0] == got[1] and got[0][0] is None and got[0][4] == "date: missing value; expected ISO date YYYY-MM-DD"
    assert got[0][1].startswith("date: unparseable date: 10000-01-01") and "implausibly old" in got[0][2]
    assert got[0][3].startswith("date: unparseable date")


def test_event_table_duplicates_count_rejected_copies_and_missing_keys(tmp_path):
    """Every row holding a key counts as a copy, even one rejected for another value (the valid copy is then
    rejected as a duplicate and the invalid one keeps its own reason); a nullable key part matches NULL to NULL."""
    a = _activity(4, 3).astype(str)
    a.loc[1, "month"] = a.loc[0, "month"]
    a.loc[1, "spend"] = "-3"                         # line 3: out of range; line 2: duplicate of it
    a.loc[5, "month"] = a.loc[4, "month"] = a.loc[3, "month"]  # three copies, lines 5-7
    a.to_parquet(tmp_path / "monthly_activity.parquet", index=False)
    r = ingest_event_table("monthly_activity", tmp_path / "monthly_activity.parquet", observation_date="2026-06-30")
    q = r.quarantine["monthly_activity.parquet"].set_index("_line")
    assert list(q.index) == [2, 3, 5, 6, 7]
    assert "duplicate (user_id, month)" in q.loc[2, "_reason"] and q.loc[3, "_reason"].startswith("spend: out of range")
    assert all("duplicate" in q.loc[i, "_reason"] for i in (5, 6, 7))
    from helpers.ingest import EventSpec

    spec = EVENT_SPECS["posts"]
    loose = EventSpec(tuple(S.Column(c.name, c.kind, c.source, c.description, required=False, nullable=True)
                            if c.name == "platform" else c for c in spec.columns),
                      unique=("user_id", "platform"))
    p = pd.DataFrame({"post_id": ["P1", "P2", "P3", "P4"], "user_id": ["U1", "U1", "U1", "U2"],
                      "platform": [None, None, "x", None], "date": ["2026-01-01"] * 4, "text": ["a"] * 4})
    p.to_parquet(tmp_path / "posts.parquet", index=False)
    r = ingest_event_table("posts", tmp_path / "posts.parquet", spec=loose, observation_date="2026-06-30")
    assert list(r.quarantine["posts.parquet"]["_line"]) == [2, 3]


def test_quarantine_fetched_one_at_a_time_equals_the_union(sources, ingested, monkeypatch):
    # large panels fetch each quarantine table on its own (DuckDB memory); the tables must be the same
    from helpers.ingest import sources as SRC

    monkeypatch.setattr(SRC, "QUARANTINE_ONE_AT_A_TIME", 0)
    one = ingest_sources(sources / "raw")
    assert set(one.quarantine) == set(ingested.quarantine)
    assert sum(len(t) for t in one.quarantine.values()) > 0
    for name, t in ingested.quarantine.items():
        pd.testing.assert_frame_equal(one.quarantine[name], t, check_dtype=True)
