"""Tests of helpers.survival: censoring construction, planted-truth recovery, PH remedies, evaluation, Telco."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lifelines import KaplanMeierFitter

from helpers import survival as sv
from helpers.generate import (DEFAULT_OBSERVATION_DATE, K, TRUE_LOG_HR, WEIBULL_SCALE_DAYS, WEIBULL_SHAPE,
                              generate_panel)

OBS = pd.Timestamp(DEFAULT_OBSERVATION_DATE)


def _users(tenure: list[int], last_seen: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [f"U{i}" for i in range(len(tenure))],
        "customer_since_date": OBS - pd.to_timedelta(tenure, unit="D"),
        "last_seen_days_ago": pd.array(last_seen, dtype="Int64"),
    })


def _true_frame(panel) -> pd.DataFrame:
    tte = sv.time_to_event(panel.data, OBS)
    return sv.model_frame(tte, sv.truth_covariates(panel.data, panel.truth["true_segment"], K))


# --- time-to-event construction ------------------------------------------------------------------
def test_time_to_event_hand_made_cases():
    # tenure, last_seen -> expected (duration, event, usable)
    cases = [
        (400, 200, 200.0, 1, True),   # inactive 200 days: churned, lifetime ended 200 days after sign-up
        (400, 91, 309.0, 1, True),    # 91 > 90: churn just became observable
        (400, 90, 309.0, 0, True),    # 90 is not > 90: censored at C - 91 (not at C - 90 or C - l)
        (400, 3, 309.0, 0, True),     # active: censored at the same time, whatever the recency
        (400, 0, 309.0, 0, True),
        (92, 5, 1.0, 0, True),        # shortest tenure that carries information
        (91, 5, 0.0, 0, False),       # churn cannot be observed yet: no information
        (30, 30, -61.0, 0, False),
        (150, 150, 0.5, 1, True),     # churned on the sign-up day: positive duration for AFT models
    ]
    tte = sv.time_to_event(_users([c[0] for c in cases], [c[1] for c in cases]), OBS)
    np.testing.assert_allclose(tte["duration"], [c[2] for c in cases])
    assert tte["event"].tolist() == [c[3] for c in cases]
    assert tte["usable"].tolist() == [c[4] for c in cases]
    np.testing.assert_allclose(tte["known_alive_days"], [c[0] - c[1] for c in cases])
    # the event flag is exactly the data dictionary's business rule
    assert tte["event"].tolist() == [int(c[1] > 90) for c in cases]


def test_time_to_event_agrees_with_generator_truth(small_panel):
    """Events are the generator's churns older than 90 days, dated to within one day of the true time."""
    tte = sv.time_to_event(small_panel.data, OBS)
    t, c = small_panel.truth["true_event_time_days"].to_numpy(), small_panel.truth["tenure_days"].to_numpy()
    ev = tte["event"].to_numpy() == 1
    np.testing.assert_array_equal(ev, t <= c - 91)
    assert np.all((tte["duration"][ev] - t[ev] >= 0) & (tte["duration"][ev] - t[ev] < 1))
    # censored users are truly alive at their censoring time (non-informative: it depends on C only)
    cens = ~ev & tte["usable"].to_numpy()
    assert np.all(t[cens] > tte["duration"][cens])
    np.testing.assert_allclose(tte["duration"][cens], c[cens] - 91)
    assert (tte["event"] == small_panel.data["churned_in_last_90_days"].astype(int)).all()


@pytest.mark.parametrize("tenure,last_seen,since_shift,match", [
    ([100, 50], [120, 3], 0, "greater than the tenure"),
    ([100, 50], [-1, 3], 0, "< 0"),
    ([100, 50], [5, 3], -200, "after the observation date"),
])
def test_time_to_event_rejects_bad_rows(tenure, last_seen, since_shift, match):
    df = _users(tenure, last_seen)
    df.loc[0, "customer_since_date"] += pd.Timedelta(days=-since_shift)
    with pytest.raises(ValueError, match=match) as err:
        sv.time_to_event(df, OBS)
    assert "U0" in str(err.value)


def test_time_to_event_rejects_missing_values_and_columns():
    df = _users([100, 50], [5, 3])
    df.loc[1, "last_seen_days_ago"] = pd.NA
    with pytest.raises(ValueError, match="last_seen_days_ago.*1 rows.*U1"):
        sv.time_to_event(df, OBS)
    with pytest.raises(ValueError, match="needs columns"):
        sv.time_to_event(df.drop(columns="customer_since_date"), OBS)


def test_km_matches_true_survival_and_naive_censoring_does_not(medium_panel):
    """Censoring at C - 91 is non-informative: the KM covers the true marginal survival. Censoring at the
    last-seen time (C - l) hides recent churns and overstates survival -- the test can tell them apart."""
    tte = sv.time_to_event(medium_panel.data, OBS)
    use = tte["usable"].to_numpy()
    lin = medium_panel.truth["true_log_hazard"].to_numpy()
    times = np.array([180.0, 365.0, 730.0, 1095.0])
    true_s = np.exp(-np.outer(np.exp(lin), (times / WEIBULL_SCALE_DAYS) ** WEIBULL_SHAPE)).mean(axis=0)

    def km_ci(duration, event):
        km = KaplanMeierFitter().fit(duration, event)
        ci = km.confidence_interval_survival_function_
        lo = np.array([ci[ci.index <= t].iloc[-1, 0] for t in times])
        hi = np.array([ci[ci.index <= t].iloc[-1, 1] for t in times])
        return lo, hi

    lo, hi = km_ci(tte["duration"][use], tte["event"][use])
    assert np.all((lo <= true_s) & (true_s <= hi)), (lo, true_s, hi)
    naive = np.where(tte["event"] == 1, tte["duration"], tte["known_alive_days"])
    lo_n, _ = km_ci(naive, tte["event"])
    assert np.any(lo_n > true_s), "naive censoring at the last-seen time should overstate survival"


# --- planted truth -------------------------------------------------------------------------------
def test_cox_covers_planted_log_hazard_ratios_across_seeds():
    """Coverage simulation: 8 panels x 7 planted log-HRs; nominal 95% intervals must cover ~95%, and the
    mean estimate of each coefficient must be within 3 Monte-Carlo SEs of the truth (no bias)."""
    tabs = [sv.true_loghr_coverage(_true_frame(generate_panel(3_000, seed=s)), TRUE_LOG_HR)
            for s in range(100, 108)]
    allt = pd.concat(tabs)
    coverage = allt["covered"].mean()
    assert 0.85 <= coverage <= 1.0, coverage
    by = allt.groupby("covariate").agg(mean=("coef", "mean"), sd=("coef", "std"), true=("true", "first"))
    z = (by["mean"] - by["true"]) / (by["sd"] / np.sqrt(len(tabs)))
    assert (z.abs() < 3).all(), z


def test_true_loghr_coverage_on_default_panel(medium_panel):
    tab = sv.true_loghr_coverage(_true_frame(medium_panel), TRUE_LOG_HR)
    assert set(tab["covariate"]) == set(TRUE_LOG_HR)
    assert tab["covered"].sum() >= 6  # 7 intervals at 95%: P(>= 6 cover) ~ 0.96
    # sign and ordering of segment effects recovered
    est = tab.set_index("covariate")["coef"]
    assert est["segment_3"] < est["segment_2"] < est["segment_1"] < 0 < est["segment_4"]


def test_weibull_aft_recovers_shape_and_hazard_ratios(small_panel):
    frame = _true_frame(small_panel)
    aft = sv.fit_aft(frame, "weibull")
    rho = np.exp(aft.params_.loc[("rho_", "Intercept")])
    se_log_rho = aft.summary.loc[("rho_", "Intercept"), "se(coef)"]
    assert abs(np.log(rho) - np.log(WEIBULL_SHAPE)) < 3 * se_log_rho
    hr = sv.weibull_log_hr(aft).set_index("covariate")
    covered = [(hr.loc[c, "lower"] <= v <= hr.loc[c, "upper"]) for c, v in TRUE_LOG_HR.items()]
    assert sum(covered) >= 6
    # Weibull is the planted family: it must beat the log-normal AFT on AIC
    aic = sv.aic_table({"weibull": aft, "lognormal": sv.fit_aft(frame, "lognormal")})
    assert aic["model"].iloc[0] == "weibull"


def test_predicted_survival_close_to_true_and_beats_km_on_brier(small_panel):
    frame = _true_frame(small_panel)
    train, test = sv.split(frame, 0.3, seed=3)
    aft = sv.fit_aft(train, "weibull")
    times = np.array([90.0, 180.0, 365.0, 730.0])
    pred = sv.survival_at(aft, test, times)
    lin = small_panel.truth["true_log_hazard"].to_numpy()[test.index.to_numpy()]
    true = np.exp(-np.outer(np.exp(lin), (times / WEIBULL_SCALE_DAYS) ** WEIBULL_SHAPE))
    assert np.mean(np.abs(pred - true)) < 0.03
    ibs = sv.integrated_brier_score(aft, train, test)
    ibs_km = sv.integrated_brier_score(sv.KMBaseline(train), train, test)
    assert ibs < ibs_km
    cal = sv.calibration_table(aft, test, 180, n_bins=5)
    assert np.all(np.abs(cal["predicted"] - cal["observed"]) < 0.08)
    assert cal["predicted"].is_monotonic_increasing
    assert 0.6 < sv.c_index(aft, test) < 0.75


# --- PH checks and remedies ----------------------------------------------------------------------
def _non_ph_frame(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    """Group 1 has a Weibull shape of 0.6, group 0 of 2.5 (crossing hazards); x is a true PH covariate."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    x = rng.normal(size=n)
    shape = np.where(g == 1, 0.6, 2.5)
    t = 100 * (rng.exponential(size=n) / np.exp(0.5 * x)) ** (1 / shape)
    c = rng.uniform(10, 300, n)
    return pd.DataFrame({"duration": np.minimum(t, c), "event": (t <= c).astype(int), "g": g.astype(float),
                         "x": x})


def test_remedy_ph_stratifies_the_planted_violation_and_rechecks():
    frame = _non_ph_frame()
    rem = sv.remedy_ph(frame)
    assert rem.before.set_index("covariate").loc["g", "violated"]
    assert rem.strata == ["g__stratum"]
    # x is truly PH but can be flagged too while g is misspecified; stratifying g fixes every violation
    assert rem.n_violations_after == 0 and rem.n_fixed == rem.n_violations_before >= 1
    coef = rem.model.summary.loc["x"]
    assert coef["coef lower 95%"] <= 0.5 <= coef["coef upper 95%"]
    # predictions of the stratified model stay aligned with the rows they are asked for
    shuffled = sv.apply_strata(frame, rem).sample(frac=1.0, random_state=1).head(40)
    s_all = sv.survival_at(rem.model, shuffled, [20.0, 60.0])
    s_one = np.vstack([sv.survival_at(rem.model, shuffled.iloc[[i]], [20.0, 60.0]) for i in range(40)])
    np.testing.assert_allclose(s_all, s_one)
    r_one = [sv.risk_score(rem.model, shuffled.iloc[[i]])[0] for i in range(40)]
    np.testing.assert_allclose(sv.risk_score(rem.model, shuffled), r_one)


def test_remedy_ph_leaves_a_ph_model_alone(small_panel):
    rem = sv.remedy_ph(_true_frame(small_panel))
    assert rem.n_violations_before == 0 and rem.strata == []


def test_apply_strata_reuses_training_bins():
    frame = _non_ph_frame().assign(z=lambda d: d["x"] * 2)
    rem = sv.PHRemedy(model=None, frame=frame, before=pd.DataFrame(), after=pd.DataFrame(),
                      strata=["z__bin"], source=frame)
    out = sv.apply_strata(frame.head(500), rem)
    expected = pd.qcut(frame["z"], 4, labels=False).head(500).to_numpy()
    np.testing.assert_array_equal(out["z__bin"].to_numpy(), expected)


# --- risk, RMST ----------------------------------------------------------------------------------
class _Exponential:
    """Memoryless model with mean lifetime 100 days and lifelines' prediction API."""

    def predict_survival_function(self, frame, times, conditional_after=None):
        return pd.DataFrame(np.exp(-np.outer(np.asarray(times), np.ones(len(frame))) / 100.0), index=times)


def test_churn_risk_conditions_on_recency_and_handles_churned():
    tte = sv.time_to_event(_users([400, 400, 400], [0, 40, 200]), OBS)
    risk = sv.churn_risk(_Exponential(), pd.DataFrame(index=tte.index), tte,
                         pd.Series([30.44, 30.44, 30.44]), value_horizon_days=365, grid_step=1.0)
    l = np.array([0.0, 40.0])
    np.testing.assert_allclose(risk["churn_prob_90d"][:2], 1 - np.exp(-(l + 90) / 100), atol=1e-3)
    np.testing.assert_allclose(risk["churn_prob_180d"][:2], 1 - np.exp(-(l + 180) / 100), atol=1e-3)
    expected = 100 * np.exp(-l / 100) * (1 - np.exp(-3.65))
    np.testing.assert_allclose(risk["expected_remaining_days"][:2], expected, rtol=2e-3)
    np.testing.assert_allclose(risk["expected_value"][:2], expected, rtol=2e-3)  # spend = 1 USD/day
    assert risk.loc[2, ["churn_prob_90d", "churn_prob_180d"]].tolist() == [1.0, 1.0]
    assert risk.loc[2, "expected_value"] == 0.0 and bool(risk.loc[2, "churned"])


def test_rmst_of_exponential_matches_closed_form():
    rng = np.random.default_rng(1)
    t, c = rng.exponential(100, 2000), rng.uniform(0, 400, 2000)
    km = KaplanMeierFitter(label="exp").fit(np.minimum(t, c), t <= c)
    est, se = sv.rmst(km, 150)
    assert abs(est - 100 * (1 - np.exp(-1.5))) < 2.6 * se
    assert 0.5 < se < 5
    with pytest.raises(ValueError, match="exceeds the follow-up"):
        sv.rmst(km, 1e6)


def test_model_inputs_are_validated():
    frame = _non_ph_frame().assign(label="a")
    with pytest.raises(ValueError, match="label.*not numeric"):
        sv.fit_cox(frame)
    with pytest.raises(ValueError, match="family must be one of"):
        sv.fit_aft(_non_ph_frame(), "gamma")
    with pytest.raises(ValueError, match="needs a 'event' column"):
        sv.fit_cox(_non_ph_frame().drop(columns="event"))


# --- real data -----------------------------------------------------------------------------------
def test_telco_real_data_cox_aft_and_ph_remedy(external_data):
    path = external_data / "telco_churn" / "Telco-Customer-Churn.csv"
    frame, groups = sv.load_telco(path)
    assert len(frame) == 7032 and 0.25 < frame["event"].mean() < 0.28
    plain_frame, _ = sv.load_telco(path, log_charges=False)
    train, test = sv.split(frame, 0.3, seed=42)
    plain = sv.fit_cox(plain_frame.loc[train.index], penalizer=0.01)
    c_plain = sv.c_index(plain, plain_frame.loc[test.index])
    assert c_plain > 0.83
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rem = sv.remedy_ph(train, penalizer=0.01, groups=groups)
    assert "Contract" in rem.strata  # PH fails for the contract type, and the remedy stratifies it
    assert "Contract_One_year" not in set(rem.after.loc[rem.after["violated"], "covariate"])
    assert sv.c_index(rem.model, sv.apply_strata(test, rem, groups)) > 0.83
    better = sv.fit_aft(sv.telco_interactions(train), "lognormal", penalizer=0.01)
    assert sv.c_index(better, sv.telco_interactions(test)) > c_plain


def test_load_telco_rejects_bad_churn_values(tmp_path, external_data):
    raw = pd.read_csv(external_data / "telco_churn" / "Telco-Customer-Churn.csv", nrows=50)
    raw.loc[3, "Churn"] = "maybe"
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="'Churn' must be Yes/No"):
        sv.load_telco(tmp_path / "t.csv")
