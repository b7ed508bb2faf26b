"""Monthly waves, transaction log, places and future outcomes agree with each other and with the snapshot."""

import numpy as np
import pandas as pd
import pytest

from helpers import generate as G
from helpers.sources import places as PL
from helpers.sources import waves as W

OBS = pd.Timestamp(G.DEFAULT_OBSERVATION_DATE)


@pytest.fixture(scope="module")
def panel():
    return G.generate_panel(3_000, seed=13)


def test_24_monthly_waves_ending_with_the_observation_month(panel):
    m = panel.monthly
    months = sorted(m["month"].unique())
    assert len(months) == 24 and months[-1] == pd.Timestamp("2026-06-01") and months[0] == pd.Timestamp("2024-07-01")
    assert set(m["engagement_state"]) <= set(W.STATES)
    assert (m.groupby("user_id")["month"].max() == pd.Timestamp("2026-06-01")).all()
    # months start at sign-up
    first = m.groupby("user_id")["month"].min()
    since = panel.data.set_index("user_id")["customer_since_date"].dt.to_period("M").dt.to_timestamp()
    assert (first == since.loc[first.index].clip(lower=pd.Timestamp("2024-07-01"))).all()


def test_churned_is_absorbing_in_the_latent_paths_and_the_observed_labels(panel):
    for frame, col in [(panel.paths, "true_state"), (panel.monthly, "engagement_state")]:
        f = frame.sort_values(["user_id", "month"])
        churned = (f[col] == "churned").astype(int)
        ever = churned.groupby(f["user_id"]).cummax()
        assert (churned == ever).all(), col
    assert np.allclose(np.asarray(panel.params["markov"]["transition"]["0"])[3], [0, 0, 0, 1])


def test_planted_transition_matrix_recovered_from_the_latent_paths():
    p = G.generate_panel(8_000, seed=21)
    f = p.paths.merge(p.truth[["user_id", "true_segment"]], on="user_id").sort_values(["user_id", "month"])
    f["next"] = f.groupby("user_id")["true_state"].shift(-1)
    f = f.dropna(subset=["next"])
    k = 1
    sub = f[f["true_segment"] == k]
    counts = pd.crosstab(sub["true_state"], sub["next"]).reindex(index=W.STATES[:3], columns=W.STATES, fill_value=0)
    est = counts.to_numpy() / counts.to_numpy().sum(axis=1, keepdims=True)
    true = W.TRANSITION[k, :3]
    se = np.sqrt(true * (1 - true) / counts.to_numpy().sum(axis=1, keepdims=True))
    assert np.all(np.abs(est - true) < 4 * se + 1e-3), (est, true)


def test_snapshot_agrees_with_the_waves(panel):
    d = panel.data.set_index("user_id")
    m = panel.monthly
    last = m[m["month"] == pd.Timestamp("2026-06-01")].set_index("user_id")
    for col, mcol in [("time_on_social_media_min", "minutes_social"), ("time_on_streaming_video_min", "minutes_video"),
                      ("time_on_podcasts_min", "minutes_podcasts")]:
        assert np.allclose(d.loc[last.index, col].to_numpy(), last[mcol].to_numpy())
    recent = m[m["month"] >= pd.Timestamp("2026-04-01")].groupby("user_id")["conversions"].mean()
    assert (np.floor(recent + 0.5).astype(int) == d.loc[recent.index, "monthly_conversions"].astype(int)).all()
    year = m[m["month"] >= pd.Timestamp("2025-07-01")].groupby("user_id")["spend"].mean()
    assert np.allclose(year.round(2), d.loc[year.index, "avg_monthly_spend"], atol=0.011)
    # a user active in the observation month was seen within it; a closed account is not active
    assert (d.loc[last.index[last["engagement_state"] == "active"], "last_seen_days_ago"] < 30).all()
    churned_now = last.index[last["engagement_state"] == "churned"]
    assert (last.loc[churned_now, ["minutes_social", "minutes_video", "minutes_podcasts", "conversions"]] == 0).all().all()


def test_transactions_agree_with_monthly_conversions_spend_and_last_seen(panel):
    tx = panel.transactions.assign(month=lambda t: t["date"].dt.to_period("M").dt.to_timestamp())
    agg = tx.groupby(["user_id", "month"]).agg(n=("amount", "size"), s=("amount", "sum")).reset_index()
    m = panel.monthly.merge(agg, on=["user_id", "month"], how="left").fillna({"n": 0, "s": 0.0})
    assert (m["n"].astype(int) == m["conversions"]).all()
    assert np.allclose(m["s"].round(2), m["spend"], atol=0.011)
    assert tx["date"].max() <= OBS and (tx["amount"] > 0).all()
    last_tx = tx.groupby("user_id")["date"].max()
    seen = OBS - pd.to_timedelta(panel.data.set_index("user_id").loc[last_tx.index, "last_seen_days_ago"].astype(int), unit="D")
    assert (last_tx <= seen).all()  # no purchase after the last recorded activity


def test_purchase_counts_are_overdispersed_not_poisson(panel):
    m = panel.monthly[panel.monthly["engagement_state"] == "active"]
    g = m.groupby("user_id")["conversions"].agg(["mean", "var", "size"])
    g = g[(g["size"] >= 12) & (g["mean"] > 1)]
    assert (g["var"] / g["mean"]).median() > 1.2


def test_future_outcomes_exist_only_in_the_truth_and_follow_the_chain(panel):
    f = panel.future.set_index("user_id")
    t = panel.truth.set_index("user_id")
    assert not set(f.columns) & set(panel.data.columns)
    assert (f["conversions_next_180d"] >= f["conversions_next_90d"]).all()
    assert (f["spend_next_180d"] >= f["spend_next_90d"] - 1e-9).all()
    assert (f["churn_next_180d"] | ~f["churn_next_90d"]).all()
    closed = t["true_state_at_observation"] == "churned"
    assert not f.loc[closed, "churn_next_180d"].any()
    assert (f.loc[closed, "conversions_next_180d"] == 0).all()
    close = t["true_close_date"]
    expect = ~closed & (close <= OBS + pd.Timedelta(days=90))
    assert (f["churn_next_90d"] == expect).all()
    # dormant users churn more often in the next 180 days than active users
    st = t["true_state_at_observation"]
    assert f.loc[st == "dormant", "churn_next_180d"].mean() > 2 * f.loc[st == "active", "churn_next_180d"].mean()


def test_places_and_people(panel):
    ext = panel.extension
    assert set(ext["state"]) <= set(PL.STATE_CODES) and set(ext["gender"]) <= {"female", "male"}
    share_ca = (ext["state"] == "CA").mean()
    assert 0.08 < share_ca < 0.16
    m = G.population_margins(with_places=True)
    assert abs(m[(m.variable == "state") & (m.category == "CA")]["target"].iloc[0] - 0.12) < 0.02


def test_generator_works_without_the_census_file():
    cfg = G.WorldConfig(census=None)
    p = G.generate_panel(500, seed=1, config=cfg)
    assert "built-in" in p.params["places"]["source"]
    assert p.extension["state"].notna().all()


def test_chunked_long_tables_are_partitioned_parquet(tmp_path):
    import duckdb

    paths = G.write_sources_chunked(1_500, tmp_path / "raw", tmp_path / "truth", seed=3, chunk_size=600)
    for name in ["monthly_activity", "transactions"]:
        parts = sorted(paths[name].glob("part-*.parquet"))
        assert len(parts) == 3
    n = duckdb.sql(f"select count(distinct user_id) from read_parquet('{paths['monthly_activity']}/*.parquet')").fetchall()[0][0]
    assert n == 1_500
    fut = duckdb.sql(f"select count(*) from read_parquet('{paths['future_outcomes']}/*.parquet')").fetchall()[0][0]
    assert fut == 1_500
