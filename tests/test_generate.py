"""The synthetic generator: determinism, planted proportions, match rates, churn rule and planted hazards."""

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from helpers import generate as G
from helpers import schema as S


def test_same_seed_same_data_and_different_seed_differs():
    a, b, c = G.generate_panel(500, seed=3), G.generate_panel(500, seed=3), G.generate_panel(500, seed=4)
    pd.testing.assert_frame_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not a.data["avg_monthly_spend"].equals(c.data["avg_monthly_spend"])


def test_segment_shares_match_the_biased_customer_base(medium_panel):
    observed = medium_panel.truth["true_segment"].value_counts(normalize=True).sort_index().to_numpy()
    expected = np.array(medium_panel.params["panel_segment_shares"])
    se = np.sqrt(expected * (1 - expected) / len(medium_panel.truth))
    assert np.all(np.abs(observed - expected) < 4 * se), (observed, expected)
    # and the selection bias is real: the customer base differs from the population
    assert np.abs(expected - np.array(G.POP_SHARES)).max() > 0.02


def test_match_rates_follow_the_model(medium_panel):
    seg = medium_panel.truth["true_segment"].to_numpy()
    expected = G.PARTNER_MATCH_BY_SEGMENT[seg].mean()
    observed = medium_panel.data["traveler_type"].notna().mean()
    assert abs(observed - expected) < 0.015
    assert 0.3 < medium_panel.data["education_level"].notna().mean() < 0.8  # well below 100%


def test_churn_flag_follows_the_business_rule_and_censoring(small_panel):
    d, t = small_panel.data, small_panel.truth
    assert (d["churned_in_last_90_days"] == (d["last_seen_days_ago"] > 90)).all()
    event = t["true_event_time_days"] < t["tenure_days"] - 91
    assert (d["churned_in_last_90_days"].to_numpy() == event.to_numpy()).mean() > 0.995
    obs = pd.Timestamp(small_panel.params["observation_date"])
    tenure = (obs - d["customer_since_date"]).dt.days
    assert (tenure == t["tenure_days"]).all()


def test_planted_log_hazard_ratios_recovered_from_uncensored_times(medium_panel):
    t = medium_panel.truth
    X = pd.get_dummies(t["true_segment"], prefix="segment", drop_first=True, dtype=float)
    X["support_tickets_raised"] = medium_panel.data["support_tickets_raised"].astype(float)
    X["age_18_24"] = (medium_panel.data["age_group"] == "18-24").astype(float)
    X["T"], X["E"] = t["true_event_time_days"], 1
    fit = CoxPHFitter().fit(X, "T", "E")
    for name, true in G.TRUE_LOG_HR.items():
        est, se = fit.params_[name], fit.standard_errors_[name]
        assert abs(est - true) < 4 * se, (name, est, true, se)


def test_true_affinity_is_a_weighted_average_of_100():
    shares = np.array(G.POP_SHARES)
    aff = G.true_affinity(shares)
    assert np.allclose(shares @ aff.to_numpy(), 100.0)


def test_population_margins_sum_to_one_per_variable():
    m = G.population_margins()
    assert set(m["variable"]) == {"age_group", "income_bracket", "education_level", "household_size"}
    assert np.allclose(m.groupby("variable")["target"].sum(), 1.0)


def test_write_sources_layout(tmp_path, small_panel):
    files = G.write_sources(small_panel, tmp_path / "raw", tmp_path / "truth", seed=1, corrupt_share=0.01)
    for name, cols in G.SOURCE_FILES.items():
        assert list(pd.read_csv(files[name], nrows=1).columns) == cols
    partner = pd.read_csv(files[G.PARTNER_FILE])
    match = pd.read_csv(files[G.PARTNER_MATCH])
    assert len(match) == small_panel.truth["partner_matched"].sum()
    assert len(partner) > len(match)  # the provider knows people who are not our customers
    assert not set(partner.columns) & {"user_id"}
    truth = pd.read_parquet(files["truth"])
    assert truth["corrupted"].sum() == 40


def test_rejects_non_positive_size():
    with pytest.raises(ValueError, match="n_users"):
        G.generate_panel(0)
