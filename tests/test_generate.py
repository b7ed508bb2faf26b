"""The synthetic generator (façade): determinism, planted proportions, match rates, churn rule, layout."""

import numpy as np
import pandas as pd
import pytest

from helpers import generate as G
from helpers import schema as S


def test_same_seed_same_data_and_different_seed_differs():
    a, b, c = G.generate_panel(500, seed=3), G.generate_panel(500, seed=3), G.generate_panel(500, seed=4)
    pd.testing.assert_frame_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    for name in ["extension", "monthly", "transactions", "paths", "future"]:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.data["avg_monthly_spend"].equals(c.data["avg_monthly_spend"])


def test_snapshot_has_exactly_the_22_columns(small_panel):
    assert list(small_panel.data.columns) == S.COLUMN_NAMES
    assert list(small_panel.extension.columns[:3]) == ["user_id", "state", "gender"]


def test_segment_shares_match_the_biased_customer_base(medium_panel):
    observed = medium_panel.truth["true_segment"].value_counts(normalize=True).sort_index().to_numpy()
    expected = np.array(medium_panel.params["panel_segment_shares"])
    se = np.sqrt(expected * (1 - expected) / len(medium_panel.truth))
    assert np.all(np.abs(observed - expected) < 4 * se), (observed, expected)
    # the selection bias is real: the customer base differs from the population
    assert np.abs(expected - np.array(G.POP_SHARES)).max() > 0.02
    # unequal sizes with a niche segment of at most 3% of the customer base
    assert expected.min() <= 0.03 and expected.max() / expected.min() > 5


def test_selection_depends_on_behaviour_not_only_on_age():
    """Customers are heavier users than the population of their own segment (probit on engagement)."""
    on = G.generate_panel(6000, seed=5)
    off = G.generate_panel(6000, seed=5, config=G.WorldConfig(selection_behaviour=0.0))
    for k in [0, 1]:
        a = on.data.loc[on.truth["true_segment"] == k, "avg_monthly_spend"].median()
        b = off.data.loc[off.truth["true_segment"] == k, "avg_monthly_spend"].median()
        assert a > b * 1.1, (k, a, b)


def test_match_rates_follow_the_model(medium_panel):
    seg = medium_panel.truth["true_segment"].to_numpy()
    expected = G.PARTNER_MATCH_BY_SEGMENT[seg].mean()
    observed = medium_panel.data["traveler_type"].notna().mean()
    assert abs(observed - expected) < 0.015
    assert 0.3 < medium_panel.data["education_level"].notna().mean() < 0.8


def test_churn_flag_follows_the_business_rule_and_tenure(small_panel):
    d, t = small_panel.data, small_panel.truth
    assert (d["churned_in_last_90_days"] == (d["last_seen_days_ago"] > 90)).all()
    obs = pd.Timestamp(small_panel.params["observation_date"])
    tenure = (obs - d["customer_since_date"]).dt.days
    assert (tenure == t["tenure_days"]).all()
    assert (d["last_seen_days_ago"] <= t["tenure_days"]).all()
    # closed accounts are all flagged once quiet for 90 days; the flag also catches long dormancy
    closed_long_ago = (t["true_close_date"] < obs - pd.Timedelta(days=91)).to_numpy()
    assert d["churned_in_last_90_days"].to_numpy()[closed_long_ago].all()
    assert (d["churned_in_last_90_days"].to_numpy() & (t["true_state_at_observation"] != "churned").to_numpy()).any()


def test_behaviour_is_misspecified_for_a_diagonal_gaussian_mixture(medium_panel):
    """Within a segment: structural zeros, skew on the log scale and correlated channels."""
    d, seg = medium_panel.data, medium_panel.truth["true_segment"].to_numpy()
    active = (medium_panel.truth["true_state_at_observation"] == "active").to_numpy()
    pod = d["time_on_podcasts_min"].to_numpy()
    assert (pod[(seg == 0) & active] == 0).mean() > 0.3  # non-users of podcasts among social-first users
    users = (seg == 1) & active & (d["time_on_streaming_video_min"].to_numpy() > 0)
    lv = np.log(d["time_on_streaming_video_min"].to_numpy()[users])
    from scipy import stats
    assert stats.skew(lv) > 0.1 or stats.kurtosis(lv) > 0.5
    both = (seg == 0) & active & (d["time_on_social_media_min"].to_numpy() > 0) & (
        d["time_on_streaming_video_min"].to_numpy() > 0)
    r = np.corrcoef(np.log(d["time_on_social_media_min"].to_numpy()[both]),
                    np.log(d["time_on_streaming_video_min"].to_numpy()[both]))[0, 1]
    assert r > 0.1


def test_flattering_world_is_the_old_assumptions():
    p = G.generate_panel(3000, seed=2, config=G.WorldConfig.flattering())
    active = (p.truth["true_state_at_observation"] == "active").to_numpy()
    assert (p.data.loc[active, "time_on_podcasts_min"] > 0).mean() > 0.99  # no structural zeros


def test_true_affinity_is_a_weighted_average_of_100():
    shares = np.array(G.POP_SHARES)
    aff = G.true_affinity(shares)
    assert np.allclose(shares @ aff.to_numpy(), 100.0)


def test_population_margins_sum_to_one_per_variable():
    assert set(G.population_margins()["variable"]) == {"age_group", "income_bracket", "education_level",
                                                       "household_size"}
    m = G.population_margins(with_places=True)
    assert set(m["variable"]) == {"age_group", "income_bracket", "education_level", "household_size",
                                  "gender", "state"}
    assert np.allclose(m.groupby("variable")["target"].sum(), 1.0)
    assert (m["variable"] == "state").sum() == 51


def test_write_sources_layout(tmp_path, small_panel):
    files = G.write_sources(small_panel, tmp_path / "raw", tmp_path / "truth", seed=1, corrupt_share=0.01)
    for name, cols in G.SOURCE_FILES.items():
        header = list(pd.read_csv(files[name], nrows=1).columns)
        assert header[: len(cols)] == cols
    assert list(pd.read_csv(files["crm_users.csv"], nrows=1).columns)[-2:] == ["state", "gender"]
    partner = pd.read_csv(files[G.PARTNER_FILE])
    match = pd.read_csv(files[G.PARTNER_MATCH])
    assert len(match) == small_panel.truth["partner_matched"].sum()
    assert len(partner) > len(match)
    assert not set(partner.columns) & {"user_id"}
    truth = pd.read_parquet(files["truth"])
    assert truth["corrupted"].sum() == 40
    monthly = pd.read_parquet(files["monthly_activity"])
    assert list(monthly.columns) == ["user_id", "month", "engagement_state", "minutes_social", "minutes_video",
                                     "minutes_podcasts", "conversions", "spend"]
    assert list(pd.read_parquet(files["transactions"]).columns) == ["user_id", "date", "amount"]
    assert list(pd.read_parquet(files["user_paths"]).columns) == ["user_id", "month", "true_state"]
    fut = pd.read_parquet(files["future_outcomes"])
    assert list(fut.columns) == ["user_id", "conversions_next_90d", "spend_next_90d", "conversions_next_180d",
                                 "spend_next_180d", "churn_next_90d", "churn_next_180d",
                                 "transactions_next_90d", "transactions_next_180d"]
    # future outcomes exist only in the truth
    raw_names = " ".join(p.name for p in (tmp_path / "raw").iterdir())
    assert "future" not in raw_names and "paths" not in raw_names


def test_rejects_non_positive_size():
    with pytest.raises(ValueError, match="n_users"):
        G.generate_panel(0)
