"""Audience questions over the DuckDB warehouse: weighted answers against pandas and planted truth."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from helpers import engine as E
from helpers import questions as Q
from helpers import schema as S
from helpers.generate import P_EVENTS


@pytest.fixture(scope="module")
def run(warehouse_run):
    return warehouse_run


def test_share_question_matches_pandas(run):
    P, df = run
    seg = "Podcast-heavy commuters"
    r = Q.ask(P, "income_bracket", where=[("segment_name", "==", seg), ("time_on_podcasts_min", "above_mean")])
    wmean = np.average(df["time_on_podcasts_min"], weights=df["weight"])
    aud = df[(df["segment_name"] == seg) & (df["time_on_podcasts_min"] > wmean)]
    expected = 100 * aud.groupby("income_bracket")["weight"].sum() / aud["weight"].sum()
    base = 100 * df.groupby("income_bracket")["weight"].sum() / df["weight"].sum()
    t = r.table.set_index("level")
    assert list(t.index) == [c for c in S.INCOME_BRACKETS if c in expected.index]  # ordinal order
    assert np.allclose(t["share"], expected.reindex(t.index))
    assert np.allclose(t["index"], 100 * expected.reindex(t.index) / base.reindex(t.index))
    assert r.n_audience == len(aud) and r.n_base == len(df)
    assert t["n_unweighted"].sum() == len(aud)
    assert ((t["ci_low"] < t["share"]) & (t["share"] < t["ci_high"])).all()


def test_multi_valued_breakdown_and_contains_filter(run):
    P, df = run
    r = Q.ask(P, "event_attendance_genres",
              where=[("presence_of_children", "==", True), ("offline_purchase_intent", "contains", "auto")])
    known = df[df["event_attendance_genres"].notna()]
    aud = known[known["presence_of_children"].fillna(False).astype(bool)
                & known["offline_purchase_intent"].fillna("").str.split("|").apply(lambda s: "auto" in s)]
    t = r.table.set_index("level")
    for g in ["concerts", "family_events"]:
        has = aud["event_attendance_genres"].str.split("|").apply(lambda s: g in s)
        assert t.loc[g, "share"] == pytest.approx(100 * aud.loc[has, "weight"].sum() / aud["weight"].sum())
        assert t.loc[g, "n_unweighted"] == has.sum()
    assert t["share"].sum() > 100  # a user can attend several genres
    assert r.n_audience == len(aud)


def test_shares_recover_planted_segment_probabilities(run):
    """P(genre | segment) of the generator lies inside the intervals for most segment x genre cells."""
    P, _ = run
    inside = []
    with Q.AudienceWarehouse.from_paths(P) as wh:
        for k in range(P_EVENTS.shape[0]):
            t = wh.ask("event_attendance_genres", where=[("segment", "==", k)]).table.set_index("level")
            truth = 100 * P_EVENTS[k]
            est = t.reindex(S.EVENT_GENRES)
            inside += list((est["ci_low"] <= truth) & (truth <= est["ci_high"]))
    assert np.mean(inside) >= 0.85


def test_mean_metric_question_matches_pandas(run):
    P, df = run
    r = Q.ask(P, "traveler_type", metric="avg_monthly_spend",
              where=[("homeowner_status", "==", "owner"), ("age_group", "in", ["35-44", "45-54"])])
    aud = df[(df["homeowner_status"] == "owner") & df["age_group"].isin(["35-44", "45-54"])
             & df["traveler_type"].notna()]
    exp = aud.groupby("traveler_type").apply(lambda g: np.average(g["avg_monthly_spend"], weights=g["weight"]),
                                             include_groups=False)
    t = r.table.set_index("level")
    assert np.allclose(t["mean"], exp.reindex(t.index))
    assert ((t["ci_low"] < t["mean"]) & (t["mean"] < t["ci_high"])).all()


def test_base_filter_and_unweighted_fallback(run, tmp_path):
    P, df = run
    r = Q.ask(P, "homeowner_status", where=[("segment", "==", 3)], base_where=[("age_group", "==", "35-44")])
    assert r.n_base == int(((df["age_group"] == "35-44") & df["homeowner_status"].notna()).sum())
    with Q.AudienceWarehouse(P.duckdb) as wh:  # no weights, no segments
        assert "segment" not in wh.columns
        t = wh.ask("homeowner_status").table.set_index("level")
    known = df["homeowner_status"].dropna()
    assert t.loc["owner", "share"] == pytest.approx(100 * (known == "owner").mean())
    assert t.loc["owner", "n_effective"] == pytest.approx(t.loc["owner", "n_unweighted"])


def test_warehouse_is_read_only_and_errors_are_clear(run, tmp_path):
    P, _ = run
    with Q.AudienceWarehouse.from_paths(P) as wh:
        with pytest.raises(duckdb.Error):
            wh.con.execute("CREATE TABLE x (a INTEGER)")
        with pytest.raises(ValueError, match="column 'favourite_colour' is not in the warehouse"):
            wh.ask("favourite_colour")
        with pytest.raises(ValueError, match="'contains' needs a multi-valued column"):
            wh.ask("income_bracket", where=[("age_group", "contains", "18-24")])
        with pytest.raises(ValueError, match="audience is empty"):
            wh.ask("income_bracket", where=[("age_group", "==", "nobody")])
        with pytest.raises(ValueError, match="metric must be 'share' or a numeric column"):
            wh.ask("income_bracket", metric="age_group")
    with pytest.raises(ValueError, match="operator '~' is not one of"):
        Q.Condition("age_group", "~", "x")
    with pytest.raises(ValueError, match="needs a list"):
        Q.Condition("age_group", "in", "18-24")
    with pytest.raises(FileNotFoundError, match="01_ingest"):
        Q.AudienceWarehouse(tmp_path / "missing.duckdb")


def test_run_warehouse_on_the_engine_answers_like_the_warehouse_file(run, duckdb_con):
    """for_run reads the run's Parquet through the engine: the same answer as the DuckDB warehouse file."""
    P, _ = run
    q = dict(metric="avg_monthly_spend", where=[("homeowner_status", "==", "owner")])
    with Q.AudienceWarehouse.from_paths(P) as wh:
        a = wh.ask("traveler_type", **q).table
    b = Q.AudienceWarehouse.for_run(duckdb_con, P).ask("traveler_type", **q).table
    pd.testing.assert_frame_equal(a.sort_values("level").reset_index(drop=True),
                                  b.sort_values("level").reset_index(drop=True), rtol=1e-12)
    assert len(a) > 1


def test_cached_run_warehouse_answers_the_same_and_releases_its_table(run, duckdb_con):
    """cache=True joins the panel once into the engine: same answers as the joined files, and close() drops it."""
    P, _ = run
    q = dict(metric="share", where=[("time_on_podcasts_min", "above_mean")])
    plain = Q.AudienceWarehouse.for_run(duckdb_con, P)
    before = set(E.tables(duckdb_con))
    wh = Q.AudienceWarehouse.for_run(duckdb_con, P, cache=True)
    made = {t for t in set(E.tables(duckdb_con)) - before if "cache" in t}  # (besides the Parquet views)
    assert len(made) == 1 and wh.columns == plain.columns
    pd.testing.assert_frame_equal(wh.ask("income_bracket", **q).table, plain.ask("income_bracket", **q).table,
                                  rtol=1e-12)
    wh.close()
    assert not made & set(E.tables(duckdb_con))


def test_disk_cached_run_warehouse_scans_one_file_answers_the_same_and_removes_it(run, duckdb_con, tmp_path,
                                                                                    monkeypatch):
    """cache='disk' writes the joined panel once to a temporary Parquet file (no join left in the queries):
    the same answers as the joined files, weights and segments included, and close() deletes the file."""
    P, _ = run
    monkeypatch.setenv("AUDIENCE_DUCKDB_TEMP_DIRECTORY", str(tmp_path / "spill"))
    q = dict(metric="avg_monthly_spend", where=[("homeowner_status", "==", "owner")])
    plain = Q.AudienceWarehouse.for_run(duckdb_con, P)
    wh = Q.AudienceWarehouse.for_run(duckdb_con, P, cache="disk")
    files = list((tmp_path / "spill").rglob("*.parquet"))
    assert len(files) == 1 and wh.columns == plain.columns
    assert "JOIN" not in str(duckdb_con.compile(wh.panel)).upper()  # the queries scan the file alone
    assert "JOIN" in str(duckdb_con.compile(plain.panel)).upper()
    for a, b in [(wh.ask("traveler_type", **q).table, plain.ask("traveler_type", **q).table),
                 (wh.ask("income_bracket", metric="share").table, plain.ask("income_bracket", metric="share").table)]:
        pd.testing.assert_frame_equal(a.sort_values("level").reset_index(drop=True),
                                      b.sort_values("level").reset_index(drop=True), rtol=1e-12)
    tot = lambda w: duckdb_con.execute(w.panel.aggregate(s=w.panel.weight.sum(), g=w.panel.segment.nunique()))  # noqa: E731
    pd.testing.assert_frame_equal(tot(wh), tot(plain))
    wh.close()
    assert not (tmp_path / "spill").exists() or not any((tmp_path / "spill").iterdir())
    with pytest.raises(ValueError, match="cache must be"):
        Q.AudienceWarehouse.for_run(duckdb_con, P, cache="memory")
