"""Tests of helpers.survival: censoring construction, planted-truth recovery, PH remedies, evaluation, Telco."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lifelines import KaplanMeierFitter

from helpers import survival as sv

OBS = pd.Timestamp("2026-06-30")

# --- a planted Weibull proportional-hazards world, self-contained ---------------------------------------
# The survival methods are checked against a world whose truth is a Weibull PH model with known log hazard
# ratios (the synthetic generator's world is a Markov chain of engagement states since issue 14; its account
# closing is not a PH model, so the planted-truth recovery tests build their own world here).
K = 6
WEIBULL_SHAPE, WEIBULL_SCALE_DAYS = 1.3, 1100.0
TRUE_LOG_HR = {**{f"segment_{k}": v for k, v in enumerate([0.0, -0.35, -0.6, -0.9, 0.45, -0.2]) if k > 0},
               "support_tickets_raised": 0.15, "age_18_24": 0.3}
_SEG_SHARES = np.array([0.18, 0.2, 0.17, 0.15, 0.14, 0.16])
_TICKET_RATE = np.array([1.2, 0.8, 0.6, 0.5, 1.6, 1.0])
_AGES = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]


class WeibullWorld:
    """``data`` (user_id, customer_since_date, last_seen_days_ago, support_tickets_raised, age_group,
    churned_in_last_90_days) and ``truth`` (true_segment, true_event_time_days, tenure_days, true_log_hazard):
    lifetimes T ~ Weibull PH; a user whose lifetime ended is last seen at T; an alive user's silence is a
    geometric spell (mean 5.7 days), the old generator's mechanism."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        seg = rng.choice(K, n, p=_SEG_SHARES)
        age = rng.integers(0, 6, n)
        tickets = rng.poisson(_TICKET_RATE[seg])
        lin = np.array([0.0] + [TRUE_LOG_HR[f"segment_{k}"] for k in range(1, K)])[seg]
        lin = lin + TRUE_LOG_HR["support_tickets_raised"] * tickets + TRUE_LOG_HR["age_18_24"] * (age == 0)
        t = WEIBULL_SCALE_DAYS * (rng.exponential(1.0, n) / np.exp(lin)) ** (1 / WEIBULL_SHAPE)
        c = rng.integers(30, 5 * 365 + 1, n)
        recent = np.minimum(rng.geometric(0.15, n) - 1, c)
        last = np.where(t < c, np.floor(c - t), recent).astype(np.int64)
        ids = [f"U{i:07d}" for i in range(n)]
        self.data = pd.DataFrame({"user_id": ids, "customer_since_date": OBS - pd.to_timedelta(c, unit="D"),
                                  "last_seen_days_ago": pd.array(last, dtype="Int64"),
                                  "support_tickets_raised": pd.array(tickets, dtype="Int64"),
                                  "age_group": np.array(_AGES, dtype=object)[age],
                                  "churned_in_last_90_days": last > 90})
        self.truth = pd.DataFrame({"user_id": ids, "true_segment": seg, "true_event_time_days": t,
                                   "tenure_days": c, "true_log_hazard": lin})


def generate_panel(n: int, seed: int) -> WeibullWorld:
    return WeibullWorld(n, seed)


@pytest.fixture(scope="module")
def wb_small():
    return WeibullWorld(4_000, 7)


@pytest.fixture(scope="module")
def wb_medium():
    return WeibullWorld(20_000, 11)


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


def test_time_to_event_agrees_with_generator_truth(wb_small):
    """Events are the generator's churns older than 90 days, dated to within one day of the true time."""
    tte = sv.time_to_event(wb_small.data, OBS)
    t, c = wb_small.truth["true_event_time_days"].to_numpy(), wb_small.truth["tenure_days"].to_numpy()
    ev = tte["event"].to_numpy() == 1
    np.testing.assert_array_equal(ev, t <= c - 91)
    assert np.all((tte["duration"][ev] - t[ev] >= 0) & (tte["duration"][ev] - t[ev] < 1))
    # censored users are truly alive at their censoring time (non-informative: it depends on C only)
    cens = ~ev & tte["usable"].to_numpy()
    assert np.all(t[cens] > tte["duration"][cens])
    np.testing.assert_allclose(tte["duration"][cens], c[cens] - 91)
    assert (tte["event"] == wb_small.data["churned_in_last_90_days"].astype(int)).all()


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


def test_km_matches_true_survival_and_naive_censoring_does_not(wb_medium):
    """Censoring at C - 91 is non-informative: the KM covers the true marginal survival. Censoring at the
    last-seen time (C - l) hides recent churns and overstates survival -- the test can tell them apart."""
    tte = sv.time_to_event(wb_medium.data, OBS)
    use = tte["usable"].to_numpy()
    lin = wb_medium.truth["true_log_hazard"].to_numpy()
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
    """Coverage simulation: 16 panels x 7 planted log-HRs; nominal 95% intervals must cover ~95%, and the
    mean estimate of each coefficient must be within 3 Monte-Carlo SEs of the truth (no bias)."""
    tabs = [sv.true_loghr_coverage(_true_frame(generate_panel(3_000, seed=s)), TRUE_LOG_HR)
            for s in range(100, 116)]
    allt = pd.concat(tabs)
    coverage = allt["covered"].mean()
    assert 0.85 <= coverage <= 1.0, coverage
    by = allt.groupby("covariate").agg(mean=("coef", "mean"), sd=("coef", "std"), true=("true", "first"))
    z = (by["mean"] - by["true"]) / (by["sd"] / np.sqrt(len(tabs)))
    assert (z.abs() < 3).all(), z


def test_true_loghr_coverage_on_default_panel(wb_medium):
    tab = sv.true_loghr_coverage(_true_frame(wb_medium), TRUE_LOG_HR)
    assert set(tab["covariate"]) == set(TRUE_LOG_HR)
    assert tab["covered"].sum() >= 6  # 7 intervals at 95%: P(>= 6 cover) ~ 0.96
    # sign and ordering of segment effects recovered
    est = tab.set_index("covariate")["coef"]
    assert est["segment_3"] < est["segment_2"] < est["segment_1"] < 0 < est["segment_4"]


def test_weibull_aft_recovers_shape_and_hazard_ratios(wb_small):
    frame = _true_frame(wb_small)
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


def test_predicted_survival_close_to_true_and_beats_km_on_brier(wb_small):
    frame = _true_frame(wb_small)
    train, test = sv.split(frame, 0.3, seed=3)
    aft = sv.fit_aft(train, "weibull")
    times = np.array([90.0, 180.0, 365.0, 730.0])
    pred = sv.survival_at(aft, test, times)
    lin = wb_small.truth["true_log_hazard"].to_numpy()[test.index.to_numpy()]
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


def test_remedy_ph_leaves_a_ph_model_alone(wb_small):
    rem = sv.remedy_ph(_true_frame(wb_small))
    assert rem.n_violations_before == 0 and rem.strata == []


def test_apply_strata_reuses_training_bins():
    frame = _non_ph_frame().assign(z=lambda d: d["x"] * 2)
    rem = sv.PHRemedy(model=None, frame=frame, before=pd.DataFrame(), after=pd.DataFrame(),
                      strata=["z__bin"], source=frame)
    out = sv.apply_strata(frame.head(500), rem)
    expected = pd.qcut(frame["z"], 4, labels=False).head(500).to_numpy()
    np.testing.assert_array_equal(out["z__bin"].to_numpy(), expected)


# --- risk, RMST ----------------------------------------------------------------------------------
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
    # linear MonthlyCharges really is linear (the log model is a different column)
    assert "MonthlyCharges" in plain_frame and "log_monthly_charges" not in plain_frame
    assert plain_frame["MonthlyCharges"].between(18, 119).all()
    assert "log_monthly_charges" in frame and "MonthlyCharges" not in frame
    # no aliased dummies: the design (with a constant) has full column rank
    for f in (frame, plain_frame):
        cov = f.drop(columns=["duration", "event"]).to_numpy(float)
        assert np.linalg.matrix_rank(np.column_stack([np.ones(len(cov)), cov])) == cov.shape[1] + 1
    assert set(frame.attrs["aliased"]) == {"MultipleLines_No_phone_service", *(
        f"{c}_No_internet_service" for c in ["OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport",
                                             "StreamingTV", "StreamingMovies"])}
    train, test = sv.split(frame, 0.3, seed=42)
    plain = sv.fit_cox(plain_frame.loc[train.index], penalizer=0.01)
    assert "MonthlyCharges" in plain.params_.index
    c_plain = sv.c_index(plain, plain_frame.loc[test.index])
    assert c_plain > 0.83
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rem = sv.remedy_ph(train, penalizer=0.01, groups=groups)
    assert "Contract" in rem.strata  # PH fails for the contract type, and the remedy stratifies it
    assert "Contract_One_year" not in set(rem.after.loc[rem.after["violated"], "covariate"])
    assert rem.n_fixed == (rem.n_violations_before if rem.n_violations_after == 0 else 0)
    assert sv.c_index(rem.model, sv.apply_strata(test, rem, groups)) > 0.83
    better = sv.fit_aft(sv.telco_interactions(train), "lognormal", penalizer=0.01)
    assert sv.c_index(better, sv.telco_interactions(test)) > c_plain


def test_load_telco_rejects_bad_churn_values(tmp_path, external_data):
    raw = pd.read_csv(external_data / "telco_churn" / "Telco-Customer-Churn.csv", nrows=50)
    raw.loc[3, "Churn"] = "maybe"
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="'Churn' must be Yes/No.*data row 5"):
        sv.load_telco(tmp_path / "t.csv")


# --- recency-aware churn risk (issue 15 item 2) --------------------------------------------------
class _Weibull:
    """Weibull lifetimes with an increasing hazard (shape 2: NOT memoryless), scale 600 days."""

    shape, scale = 2.0, 600.0

    def cumulative_hazard_at(self, covariates, times):
        return (np.clip(np.asarray(times, float), 0, None) / self.scale) ** self.shape

    def s(self, t):
        return np.exp(-(np.asarray(t, float) / self.scale) ** self.shape)


def test_churn_risk_conditions_on_tenure_and_recency_with_a_non_memoryless_hazard():
    """Closed form: P(gone | l) = r / (r + g(l)) with r = (S(a-1) - S(a)) / S(C), then
    P(churn within h) = P(gone) + P(alive) (1 - S(C+h)/S(C)). Under an increasing hazard S(C+h)/S(C) differs
    from S(h) and from S(C+h)/S(a): dropping either the conditioning on tenure or on recency fails."""
    tenure, last = [400, 400, 150, 150, 60], [0, 40, 0, 25, 5]
    tte = sv.time_to_event(_users(tenure, last), OBS)
    w = _Weibull()
    gaps = sv.InactivityModel(weights=np.array([1.0]), probs=np.array([0.2]))
    risk = sv.churn_risk(w, pd.DataFrame(index=tte.index), tte, pd.Series([30.44] * 5), inactivity=gaps,
                         value_horizon_days=365, n_value_points=2001)
    c, l = np.array(tenure, float), np.array(last, float)
    a = c - l
    r = (w.s(np.maximum(a - 1, 0)) - w.s(a)) / w.s(c)
    g = 0.2 * 0.8 ** l
    pi = r / (r + g)
    for h in (90, 180):
        expected = pi + (1 - pi) * (1 - w.s(c + h) / w.s(c))
        np.testing.assert_allclose(risk[f"churn_prob_{h}d"], expected, rtol=1e-9)
        # the test can tell: without conditioning on tenure, or without the recency, it would not hold
        assert np.max(np.abs(expected - (1 - w.s(h)))) > 0.2
        assert np.max(np.abs(expected - (1 - w.s(c + h) / w.s(a)))) > 0.2
    np.testing.assert_allclose(risk["prob_gone"], pi, rtol=1e-9)
    # the longer the silence, the likelier the customer is gone
    assert risk.loc[1, "prob_gone"] > 0.9 > 0.02 > risk.loc[0, "prob_gone"]
    u = np.linspace(0, 365, 20001)
    rem = [(1 - p) * np.trapezoid(w.s(ci + u) / w.s(ci), u) for p, ci in zip(pi, c)]
    np.testing.assert_allclose(risk["expected_remaining_days"], rem, rtol=1e-4)
    np.testing.assert_allclose(risk["expected_value"], rem, rtol=1e-4)  # spend = 1 USD/day
    # baseline: conditioned on survival to the last activity only
    base = sv.churn_risk(w, pd.DataFrame(index=tte.index), tte, None, inactivity=None)
    np.testing.assert_allclose(base["churn_prob_90d"], 1 - w.s(c + 90) / w.s(a), rtol=1e-9)


def test_churn_risk_flags_churned_users_and_checks_alignment():
    tte = sv.time_to_event(_users([400, 400], [200, 3]), OBS)
    gaps = sv.InactivityModel(weights=np.array([1.0]), probs=np.array([0.2]))
    risk = sv.churn_risk(_Weibull(), pd.DataFrame(index=tte.index), tte, pd.Series([10.0, 10.0]), inactivity=gaps)
    assert risk.loc[0, ["churn_prob_90d", "churn_prob_180d", "prob_gone"]].tolist() == [1.0, 1.0, 1.0]
    assert risk.loc[0, "expected_value"] == 0.0 and bool(risk.loc[0, "churned"])
    assert risk.loc[1, "churn_prob_90d"] < 1
    with pytest.raises(ValueError, match="same rows"):
        sv.churn_risk(_Weibull(), pd.DataFrame(index=[5, 6]), tte, None)


def test_cumulative_hazard_at_matches_lifelines_for_aft_and_cox(wb_small):
    frame = _true_frame(wb_small).head(1500)
    cov = frame.drop(columns=["duration", "event"])
    times = np.array([30.0, 200.0, 700.0])
    for model in (sv.fit_aft(frame, "weibull"), sv.fit_aft(frame, "lognormal"), sv.fit_cox(frame)):
        ref = model.predict_cumulative_hazard(cov.head(50), times=times).to_numpy().T
        got = sv.cumulative_hazard_at(model, cov.head(50), np.tile(times, (50, 1)))
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


def _recency_world(n: int = 8000, seed: int = 3, p_return: float = 0.15):
    """Weibull PH lifetimes (shape 1.4) with one covariate, tenure uniform, and the silence of alive users
    a geometric spell: the generator's mechanism, self-contained."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 900 * (rng.exponential(size=n) / np.exp(0.5 * x)) ** (1 / 1.4)
    c = rng.integers(30, 1800, n)
    gap = np.minimum(rng.geometric(p_return, n) - 1, c)
    last = np.where(t < c, np.floor(c - t), gap).astype(int)
    users = _users(list(c), list(last))
    truth = pd.DataFrame({"user_id": users["user_id"], "true_event_time_days": t, "tenure_days": c})
    return users, pd.DataFrame({"x": x}), truth


def test_recency_model_is_calibrated_against_future_churn_and_baseline_is_not():
    users, X, truth = _recency_world()
    tte = sv.time_to_event(users, OBS)
    aft = sv.fit_aft(sv.model_frame(tte, X), "weibull")
    inact = sv.inactivity_model(aft, X, tte)
    assert abs(np.sum(inact.weights * (1 - inact.probs) / inact.probs) - 0.85 / 0.15) < 1.0  # mean spell
    new = sv.churn_risk(aft, X, tte, None)
    old = sv.churn_risk(aft, X, tte, None, inactivity=None)
    actual = sv.future_churn_truth(tte, truth, 90)
    un = tte["event"].to_numpy() == 0
    cal_new = sv.recency_calibration(new["churn_prob_90d"][un], actual[un], tte["last_seen_days_ago"][un])
    cal_old = sv.recency_calibration(old["churn_prob_90d"][un], actual[un], tte["last_seen_days_ago"][un])
    assert cal_new["abs_err"].max() < 0.08, cal_new
    assert abs(new["churn_prob_90d"][un].mean() - actual[un].mean()) < 0.02
    assert cal_old["abs_err"].max() > 0.3  # ignoring the silence under-predicts the long-quiet decile
    # the score ranks future churners well above chance, mostly through recency
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(actual[un], new["churn_prob_90d"][un]) > roc_auc_score(actual[un], old["churn_prob_90d"][un])


def test_future_churn_truth_prefers_future_outcomes_and_names_gaps():
    users, _, truth = _recency_world(50)
    tte = sv.time_to_event(users, OBS)
    derived = sv.future_churn_truth(tte, truth, 90)
    np.testing.assert_array_equal(derived, truth["true_event_time_days"] <= truth["tenure_days"] + 90)
    fut = pd.DataFrame({"user_id": users["user_id"][::-1], "churn_next_90d": ~derived.to_numpy()[::-1]})
    np.testing.assert_array_equal(sv.future_churn_truth(tte, truth, 90, fut), ~derived.to_numpy())
    with pytest.raises(ValueError, match="lacks churn_next_90d for 1 users"):
        sv.future_churn_truth(tte, truth, 90, fut.iloc[1:])


def test_recency_calibration_bins_and_intervals():
    rec = np.repeat(np.arange(10), 100)
    pred = np.repeat(np.linspace(0.05, 0.95, 10), 100)
    actual = np.concatenate([np.r_[np.ones(k * 10), np.zeros(100 - k * 10)] for k in range(10)])
    cal = sv.recency_calibration(pred, actual, rec, n_bins=10)
    assert cal["n"].tolist() == [100] * 10 and cal["recency_min"].tolist() == list(range(10))
    np.testing.assert_allclose(cal["actual"], np.arange(10) / 10)
    np.testing.assert_allclose(cal["abs_err"], np.abs(np.linspace(0.05, 0.95, 10) - np.arange(10) / 10))
    assert (cal["actual_lower"] <= cal["actual"]).all() and (cal["actual"] <= cal["actual_upper"]).all()
    assert 0.05 < cal.loc[5, "actual_upper"] - cal.loc[5, "actual_lower"] < 0.25


def test_true_churn_probability_is_the_oracle_of_the_weibull_world():
    users, X, truth = _recency_world()
    rng_truth = truth.assign(true_log_hazard=0.5 * X["x"].to_numpy())
    params = {"hazard_model": {"family": "weibull_ph", "shape": 1.4, "scale_days": 900.0}}
    tte = sv.time_to_event(users, OBS)
    orc = sv.true_churn_probability(tte, rng_truth, params)
    un = tte["event"].to_numpy() == 0
    cal = sv.recency_calibration(orc["churn_prob_90d"][un], sv.future_churn_truth(tte, truth, 90)[un],
                                 tte["last_seen_days_ago"][un])
    assert cal["abs_err"].max() < 0.08
    assert sv.true_churn_probability(tte, truth, {"hazard_model": {"family": "markov"}}) is None


# --- recency from a monthly engagement history -----------------------------------------------------
def _chain_world(n: int = 6000, months: int = 24, seed: int = 4):
    """Observed monthly labels from a 4-state chain (active, light, dormant, churned absorbing)."""
    T = np.array([[0.90, 0.06, 0.03, 0.01], [0.30, 0.50, 0.15, 0.05], [0.10, 0.15, 0.60, 0.15], [0, 0, 0, 1]])
    rng = np.random.default_rng(seed)
    start = rng.integers(0, months, n)
    lab = np.full((n, months + 3), -1, dtype=np.int8)
    for m in range(months + 3):
        new = start == m
        lab[new, m] = 0
        cont = np.flatnonzero((lab[:, m - 1] >= 0) if m else np.zeros(n, bool))
        if cont.size:
            cum = np.cumsum(T[lab[cont, m - 1]], axis=1)
            lab[cont, m] = (rng.random(cont.size)[:, None] > cum).sum(axis=1)
    return lab[:, :months], lab[:, months:], T


def test_monthly_churn_model_is_calibrated_by_spell():
    past, fut, T = _chain_world()
    ids = [f"U{i}" for i in range(len(past))]
    risk = sv.monthly_churn_risk(past, ids, "2026-06-30", horizons=(90,))
    assert sv.months_in_horizon("2026-06-30", 90) == 3 and sv.months_in_horizon("2026-06-15", 90) == 3
    actual = (fut == 3).any(axis=1)
    open_ = ~risk["closed"].to_numpy()
    assert (risk.loc[~open_, "churn_prob_90d"] == 1).all()
    by = pd.DataFrame({"spell": risk["spell"], "p": risk["churn_prob_90d"], "y": actual})[open_].groupby("spell")
    table = by.agg(p=("p", "mean"), y=("y", "mean"), n=("y", "size"))
    big = table[table["n"] >= 150]
    assert (big["p"] - big["y"]).abs().max() < 0.06, table
    assert table.loc["dormant_1m", "p"] > table.loc["light", "p"] > table.loc["active", "p"]
    # the planted chain's own 3-step closing probability from the last state, as a reference
    true_p = np.linalg.matrix_power(T, 3)[:, 3]
    last = past[:, -1]
    np.testing.assert_allclose(table.loc["active", "p"], true_p[0], atol=0.03)


def test_engagement_matrix_reads_long_table_and_masks_months_before_sign_up():
    monthly = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"],
                            "month": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01",
                                                     "2026-02-01", "2026-03-01"]),
                            "engagement_state": ["dormant", "active", "churned", "light", "Dormant"]})
    lab, months = sv.engagement_matrix(monthly, ["b", "a"])
    assert lab.tolist() == [[-1, 1, 2], [2, 0, 3]] and len(months) == 3
    lab2, _ = sv.engagement_matrix(monthly, ["b", "a"], customer_since=pd.to_datetime(["2026-01-05", "2026-02-10"]))
    assert lab2.tolist() == [[-1, 1, 2], [-1, 0, 3]]
    assert sv.spell_codes(np.array([[2, 2, 2, 2, 0, 1, 3]])).tolist() == [[2, 3, 4, 4, 0, 1, -1]]
    with pytest.raises(ValueError, match="outside"):
        sv.engagement_matrix(monthly.assign(engagement_state="gone"))


def test_engagement_matrix_equals_the_row_by_row_reading():
    """Factorizing each column first gives the matrix a per-row reading gives (text months, mixed case,
    users absent from the history, history rows of users not asked for)."""
    rng = np.random.default_rng(5)
    n = 3000
    monthly = pd.DataFrame({"user_id": [f"U{i}" for i in rng.integers(0, 400, n)],
                            "month": rng.choice(["2026-01-01", "2026-03-01", "2026-02-01"], n),
                            "engagement_state": rng.choice(["active", "Light", "DORMANT", "churned"], n)})
    monthly = monthly.drop_duplicates(["user_id", "month"])
    ids = [f"U{i}" for i in range(0, 450, 2)]

    def by_rows(frame, ids):
        st = frame["engagement_state"].str.lower()
        months = np.sort(pd.to_datetime(frame["month"]).unique())
        m_idx = np.searchsorted(months, pd.to_datetime(frame["month"]).to_numpy())
        uid = frame["user_id"].astype(str).to_numpy()
        order = pd.Index(pd.unique(uid) if ids is None else ids)
        u_idx = order.get_indexer(uid)
        out = np.full((len(order), len(months)), -1, dtype=np.int8)
        code = st.map({s: i for i, s in enumerate(sv.ENGAGEMENT_STATES)}).to_numpy(dtype=np.int8)
        out[u_idx[u_idx >= 0], m_idx[u_idx >= 0]] = code[u_idx >= 0]
        return out, months

    for which in (ids, None):
        got, months = sv.engagement_matrix(monthly, which)
        ref, ref_months = by_rows(monthly, which)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(months, ref_months)
        assert (got >= 0).any() and (got == -1).any()


# --- PH tests on a sample, strict "fixed" (issue 20 item 1, issue 15 item 7) ---------------------------
def test_ph_test_on_a_seeded_sample_keeps_the_planted_decision():
    frame = _non_ph_frame(n=4000)
    full = sv.ph_test(sv.fit_cox(frame), frame, max_rows=None)
    samp = sv.ph_test(sv.fit_cox(frame), frame, max_rows=1500, seed=2)
    assert full.attrs["n_tested"] == 4000 and samp.attrs["n_tested"] == 1500
    assert full.set_index("covariate").loc["g", "violated"] and samp.set_index("covariate").loc["g", "violated"]
    again = sv.ph_test(sv.fit_cox(frame), frame, max_rows=1500, seed=2)
    pd.testing.assert_frame_equal(samp, again)  # seeded
    assert len(sv.ph_sample(frame, 1500, 2)) == 1500 and sv.ph_sample(frame, None) is frame
    # a stratified model is refitted on the sample with the same strata (lifelines keeps one as a string)
    strat = frame.rename(columns={"g": "g__stratum"})
    model = sv.fit_cox(strat, strata=["g__stratum"])
    out = sv.ph_test(model, strat, max_rows=1500, seed=2)
    assert out["covariate"].tolist() == ["x"] and out.attrs["n_tested"] == 1500
    rem = sv.remedy_ph(frame, ph_max_rows=1500, seed=2)
    assert rem.strata == ["g__stratum"] and rem.after.attrs["n_tested"] == 1500


def test_remedy_counts_fixed_only_when_every_remaining_test_passes():
    def tab(viol):
        return pd.DataFrame({"covariate": ["g", "x", "z"], "statistic": 1.0, "p": 0.5,
                             "violated": [c in viol for c in ["g", "x", "z"]]})
    partial = sv.PHRemedy(model=None, frame=None, before=tab({"g", "x"}), after=tab({"z"}), strata=["g"])
    assert partial.n_fixed == 0 and partial.new_violations == ["z"] and partial.n_violations_after == 1
    clean = sv.PHRemedy(model=None, frame=None, before=tab({"g", "x"}), after=tab(set()), strata=["g"])
    assert clean.n_fixed == 2 and clean.new_violations == []


# --- C-index intervals and the tenure baseline ------------------------------------------------------
def test_concordance_interval_covers_and_tenure_baseline_is_high_on_a_snapshot():
    users, X, truth = _recency_world(4000)
    tte = sv.time_to_event(users, OBS)
    frame = sv.model_frame(tte, X)
    train, test = sv.split(frame, 0.3, seed=1)
    aft = sv.fit_aft(train, "weibull")
    ci = sv.c_index_interval(aft, test, n_boot=100, seed=0)
    assert ci["lower"] < ci["c_index"] < ci["upper"] and 0.005 < ci["upper"] - ci["lower"] < 0.1
    assert abs(ci["c_index"] - sv.c_index(aft, test)) < 1e-12
    # where durations are tenure minus a short recency (a retailer's snapshot), tenure alone ranks them
    rng = np.random.default_rng(5)
    tenure = rng.uniform(100, 1000, 2000)
    snap = pd.DataFrame({"duration": tenure - rng.uniform(0, 10, 2000), "event": rng.integers(0, 2, 2000)})
    ten = sv.tenure_only_c_index(snap, tenure, n_boot=50)
    assert ten["c_index"] > 0.95 and ten["lower"] <= ten["c_index"] <= ten["upper"]
    # ... while on the inactivity-rule snapshot, churners are last seen long ago, and tenure says little
    assert sv.tenure_only_c_index(test, tte.loc[test.index, "tenure_days"], n_boot=20)["c_index"] < 0.75
    # the m-out-of-n interval (300 of 1,200 rows per replicate, rescaled) is close to the full bootstrap's
    full = sv.concordance_interval(test["duration"], sv.risk_score(aft, test), test["event"], 200, 0, max_rows=None)
    part = sv.concordance_interval(test["duration"], sv.risk_score(aft, test), test["event"], 200, 0, max_rows=300)
    assert abs((full["upper"] - full["lower"]) - (part["upper"] - part["lower"])) < 0.3 * (full["upper"] - full["lower"])
    assert part["lower"] < part["c_index"] < part["upper"]


# --- covariates from the run configuration, aliasing, dates (issue 12, issue 15 item 7) -----------------
def test_drop_aliased_names_what_each_dropped_column_equals():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200).astype(float)
    b = rng.normal(size=200)
    cov = pd.DataFrame({"a": a, "b": b, "a_copy": a, "not_a": 1 - a, "combo": 2 * b - a, "c": rng.normal(size=200)})
    kept, dropped = sv.drop_aliased(cov)
    assert list(kept.columns) == ["a", "b", "c"]
    assert dropped == {"a_copy": "= a", "not_a": "= 1 - a", "combo": "a linear combination of the kept covariates"}


def test_config_covariates_follow_the_run_configuration(small_panel):
    from helpers import config

    cfg = config.load(None)
    df = small_panel.data
    tte = sv.time_to_event(df, OBS)
    X = sv.config_covariates(df, cfg, duration=tte["duration"])
    notes = X.attrs["notes"]
    assert not X.isna().any().any() and X.shape[0] == len(df)
    assert "log1p_time_on_podcasts_min" in X and "age_group_score" in X
    assert "churned_in_last_90_days" not in X and "last_seen_days_ago" not in X
    assert "traveler_type" not in X and "2nd-party" in notes["traveler_type"]
    assert np.linalg.matrix_rank(np.column_stack([np.ones(len(X)), X.to_numpy()])) == X.shape[1] + 1


def test_config_covariates_on_telco_drop_leaks_and_aliases(external_data):
    from helpers import config

    cfg = config.load(config.preset("telco"))
    raw = pd.read_csv(external_data / "telco_churn" / "Telco-Customer-Churn.csv")
    raw["TotalCharges"] = pd.to_numeric(raw["TotalCharges"], errors="coerce").fillna(0.0)
    raw = raw.rename(columns={"customerID": "user_id"})
    tte = sv.time_to_event_from_columns(raw, "tenure", "Churn", "Yes", 365.25 / 12)
    assert tte["event"].sum() == (raw["Churn"] == "Yes").sum() and (~tte["usable"]).sum() == 11
    X = sv.config_covariates(raw, cfg, duration=tte["duration"])
    notes = X.attrs["notes"]
    assert "log1p_TotalCharges" in notes and "leaks" in notes["log1p_TotalCharges"]
    assert not any("No_internet_service" in c for c in X.columns)
    assert any("aliased" in v for v in notes.values())


def test_resolve_observation_date_never_defaults_silently(tmp_path):
    import json

    from helpers import config

    cfg = config.load(None)
    d, src = sv.resolve_observation_date(None, cfg, tmp_path, {})
    assert d is None and "no observation date" in src
    (tmp_path / "ingest_meta.json").write_text(json.dumps({"observation_date": "2014-03-31"}))
    assert sv.resolve_observation_date(None, cfg, tmp_path, {})[0] == pd.Timestamp("2014-03-31")
    assert sv.resolve_observation_date("2015-01-01", cfg, tmp_path, {})[0] == pd.Timestamp("2015-01-01")
    assert sv.resolve_observation_date(None, None, None, {"observation_date": "2026-06-30"})[1].startswith("the synthetic")


# --- bounded-cost versions of the 1M-user steps (issue 20) ---------------------------------------------
def _strata_frame(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    s1, s2 = rng.integers(0, 3, n), rng.integers(0, 2, n)
    t = np.ceil(rng.weibull(1.3, n) * 300 * np.exp(-0.5 * x1 + 0.3 * s1))
    c = rng.integers(50, 900, n)
    return pd.DataFrame({"duration": np.minimum(t, c).astype(float), "event": (t <= c).astype(int),
                         "x1": x1, "x2": x2, "s1": s1, "s2": s2})


@pytest.mark.parametrize("strata", [["s1"], ["s1", "s2"]])
def test_stratified_cox_risk_is_lifelines_expectation_without_the_users_by_time_matrix(strata):
    frame = _strata_frame()
    model = sv.fit_cox(frame, strata=strata, penalizer=0.01)
    test = frame.sample(800, random_state=1)
    ref = -model.predict_expectation(test).reindex(test.index).to_numpy()
    got = sv.risk_score(model, test)
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    # the stratum effect is in the score: the strata's mean expected lifetimes differ
    assert np.ptp(pd.Series(got).groupby(test["s1"].to_numpy()).mean()) > 10
    with pytest.raises(ValueError, match="not in the training data"):
        sv.risk_score(model, test.assign(s1=7))


def test_drop_aliased_decides_each_column_like_a_rank_check_of_its_prefix():
    rng = np.random.default_rng(4)
    n = 500
    cov = pd.DataFrame({"a": rng.normal(size=n), "rare": np.eye(n)[3], "d": rng.integers(0, 2, n) * 1.0})
    cov["a_plus_d"] = cov["a"] + 3 * cov["d"]
    cov["big"] = 1e4 * rng.normal(size=n)
    cov["tiny_noise"] = cov["d"] + 1e-3 * rng.normal(size=n)  # not aliased: a real (small) difference
    cov["const"] = 5.0
    kept, dropped = sv.drop_aliased(cov)
    basis, brute = [np.ones(n)], []
    for c in cov:
        trial = np.column_stack(basis + [cov[c].to_numpy()])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            basis.append(cov[c].to_numpy()); brute.append(c)
    assert list(kept.columns) == brute == ["a", "rare", "d", "big", "tiny_noise"]
    assert set(dropped) == {"a_plus_d", "const"}


def test_remedy_ph_fits_every_row_once_and_tests_the_sample():
    frame = _non_ph_frame(n=4000)
    rem = sv.remedy_ph(frame, ph_max_rows=1500, seed=2)
    assert rem.strata == ["g__stratum"] and rem.before.attrs["n_tested"] == 1500
    # the final model is the full-data fit with the chosen strata ...
    full = sv.fit_cox(rem.frame, strata=rem.strata)
    pd.testing.assert_series_equal(rem.model.params_, full.params_)
    # ... and the tests are those of a model fitted on the seeded sample
    sample = sv.ph_sample(frame, 1500, 2)
    ref = sv.ph_test(sv.fit_cox(sample), sample, max_rows=None)
    pd.testing.assert_frame_equal(rem.before.reset_index(drop=True), ref.reset_index(drop=True))
    # a PH frame keeps the caller's unstratified fit as its final model
    ph = frame.drop(columns="g")
    given = sv.fit_cox(ph)
    assert sv.remedy_ph(ph, ph_max_rows=1500, seed=2, model=given).model is given


def test_read_monthly_and_read_last_month_read_only_what_they_need(tmp_path):
    rng = np.random.default_rng(6)
    months = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"])
    long = pd.DataFrame({"user_id": np.repeat([f"U{i}" for i in range(300)], 3),
                         "month": np.tile(months, 300),
                         "engagement_state": rng.choice(list(sv.ENGAGEMENT_STATES), 900),
                         "minutes": rng.random(900)}).sample(frac=1.0, random_state=0)
    f = tmp_path / "monthly.parquet"
    long.to_parquet(f, row_group_size=200)
    got = sv.read_monthly(f)
    assert list(got.columns) == ["user_id", "month", "engagement_state"]
    assert all(isinstance(got[c].dtype, pd.CategoricalDtype) for c in got)
    ids = [f"U{i}" for i in range(0, 320, 3)]
    lab, m = sv.engagement_matrix(got, ids)
    ref, m_ref = sv.engagement_matrix(long, ids)
    np.testing.assert_array_equal(lab, ref)
    np.testing.assert_array_equal(m, m_ref)
    assert (lab[-1] == -1).all() and (lab[0] >= 0).all()  # U318 has no history, U0 has every month
    paths = long.rename(columns={"engagement_state": "true_state"}).drop(columns="minutes")
    p = tmp_path / "paths.parquet"
    paths.to_parquet(p, row_group_size=200)
    last = sv.read_last_month(p)
    assert len(last) == 300 and (pd.to_datetime(last["month"]) == months[-1]).all()
    exp = paths[paths["month"] == months[-1]].set_index("user_id")["true_state"]
    assert (last.set_index("user_id")["true_state"] == exp.reindex(last["user_id"])).all()


def test_churn_risk_without_value_gives_the_same_probabilities():
    users, X, _ = _recency_world(3000)
    tte = sv.time_to_event(users, OBS)
    aft = sv.fit_aft(sv.model_frame(tte, X), "weibull")
    full = sv.churn_risk(aft, X, tte, pd.Series(10.0, index=X.index), inactivity=None)
    lean = sv.churn_risk(aft, X, tte, pd.Series(10.0, index=X.index), inactivity=None, with_value=False)
    pd.testing.assert_series_equal(full["churn_prob_90d"], lean["churn_prob_90d"])
    assert lean["expected_remaining_days"].isna().all() and (full.loc[~full.churned, "expected_remaining_days"] > 0).all()


def test_harrell_c_counts_pairs_exactly_as_lifelines():
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(8)
    for n in (2, 7, 60, 2500):
        for _ in range(4):  # coarse times and rounded scores: ties of every kind
            t = rng.integers(0, 25, n).astype(float)
            s = np.round(rng.normal(size=n) - 0.05 * t, 1)
            e = rng.random(n) < 0.55
            if not e.any() or (e & (t < t.max())).sum() == 0:
                continue
            assert sv.harrell_c(t, s, e) == pytest.approx(concordance_index(t, s, e), abs=1e-12)
            s_cont = rng.normal(size=n) - 0.05 * t  # distinct scores: the top one is often a censored user's
            assert sv.harrell_c(t, s_cont, e) == pytest.approx(concordance_index(t, s_cont, e), abs=1e-12)
    # real data with many censored users ranked above every death (query ranks beyond the pool's ranks:
    # a first version let those spill into the next block and was off in the 5th decimal here, >1 at 1M)
    from helpers import paths

    tf, _ = sv.load_telco(paths.external("telco_churn") / "Telco-Customer-Churn.csv", log_charges=False)
    train, test = sv.split(tf, 0.3, seed=42)
    score = -sv.risk_score(sv.fit_cox(train, penalizer=0.01), test)
    assert sv.harrell_c(test["duration"], score, test["event"]) == pytest.approx(
        concordance_index(test["duration"], score, test["event"]), abs=1e-12)
    assert sv.harrell_c([1, 2, 3], [1, 2, 3], [1, 1, 1]) == 1.0 and sv.harrell_c([1, 2, 3], [3, 2, 1], [1, 1, 0]) == 0.0
    with pytest.raises(ZeroDivisionError):
        sv.harrell_c([1, 2], [1, 2], [0, 0])


def test_survival_at_equals_lifelines_predictions_for_every_model_kind():
    frame = _strata_frame(1500)
    test = frame.sample(300, random_state=2)
    times = [10.0, 55.5, 200.0, 5000.0]
    models = [sv.fit_cox(frame.drop(columns=["s1", "s2"]), penalizer=0.01),
              sv.fit_cox(frame, strata=["s1"], penalizer=0.01),
              *[sv.fit_aft(frame, f, penalizer=0.01) for f in sv.AFT_FAMILIES]]
    for m in models:
        ref = m.predict_survival_function(test, times=times)
        ref = ref.reindex(columns=test.index).to_numpy().T
        np.testing.assert_allclose(sv.survival_at(m, test, times), ref, rtol=1e-9, atol=1e-12)


def _em_per_user(l, r, n_components=2, max_iter=300, tol=1e-9, seed=0):
    """The inactivity EM written per user (n x K responsibilities), the reference for the per-day version."""
    rng = np.random.default_rng(seed)
    w = np.full(n_components, 1.0 / n_components)
    p = np.sort(np.geomspace(0.5, 0.01, n_components) * rng.uniform(0.9, 1.1, n_components))[::-1]
    prev = -np.inf
    for it in range(1, max_iter + 1):
        comp = w * p * (1 - p) ** l[:, None]
        g = comp.sum(axis=1)
        tot = r + g
        ll = float(np.log(tot).sum())
        resp = (g / tot)[:, None] * comp / g[:, None]
        mass = resp.sum(axis=0)
        w = mass / mass.sum()
        p = np.clip(mass / (resp * (1 + l[:, None])).sum(axis=0), 1e-6, 1 - 1e-9)
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            break
        prev = ll
    order = np.argsort(-p)
    return w[order], p[order], ll, it


def test_inactivity_em_per_day_equals_the_per_user_em():
    """fit_inactivity sums the posteriors per distinct recency; the fit must be the per-user EM's: same
    iterations, weights, return probabilities and log-likelihood (recencies with many ties, two spell types,
    odds that differ between users of the same recency)."""
    rng = np.random.default_rng(7)
    n = 20_000
    short = rng.random(n) < 0.3
    l = np.where(short, rng.geometric(0.4, n) - 1, rng.geometric(0.03, n) - 1).astype(float)
    r = rng.exponential(0.02, n) * (l > 30)
    fit = sv.fit_inactivity(l, r)
    w, p, ll, it = _em_per_user(l, r)
    assert fit.n_iter == it and fit.converged
    np.testing.assert_allclose(fit.weights, w, rtol=1e-10)
    np.testing.assert_allclose(fit.probs, p, rtol=1e-10)
    assert fit.loglik == pytest.approx(ll, rel=1e-12)
    assert fit.probs[0] > 0.2 and fit.probs[1] < 0.1  # a short and a long spell type (planted 0.4 and 0.03)


def test_weibull_cumulative_hazard_equals_lifelines_to_the_bit():
    """The plain-numpy Weibull AFT cumulative hazard of cumulative_hazard_at is lifelines' own, bit for bit
    (same operations; times at 0, tiny and far in the tail, where the clips act), and a log-normal model still
    goes through lifelines."""
    from lifelines import LogNormalAFTFitter, WeibullAFTFitter
    from helpers.survival import risk

    rng = np.random.default_rng(3)
    n = 400
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.integers(0, 2, n).astype(float)})
    t = rng.weibull(1.4, n) * np.exp(3 + 0.5 * X.x1 - 0.3 * X.x2)
    frame = X.assign(duration=t, event=(rng.random(n) < 0.7).astype(int))
    times = np.column_stack([np.zeros(n), np.full(n, 1e-120), rng.uniform(0, 100, n), np.full(n, 1e6)])
    for cls in (WeibullAFTFitter, LogNormalAFTFitter):
        m = cls(penalizer=0.01).fit(frame, "duration", "event")
        got = sv.cumulative_hazard_at(m, X, times)
        part = m.regressors.transform_df(X)
        xs = {p: part[p].to_numpy(float) for p in m._fitted_parameter_names}
        params = {p: m.params_.loc[p].values for p in m._fitted_parameter_names}
        ref = np.clip(np.asarray(m._cumulative_hazard(params, times.T, xs)).T, 0.0, None)
        np.testing.assert_array_equal(got, ref)
        if cls is WeibullAFTFitter:
            np.testing.assert_array_equal(risk._weibull_cumulative_hazard(params, times.T, xs).T, ref)


def test_engagement_matrix_file_equals_the_frame_reading_with_arrow_ids(tmp_path):
    rng = np.random.default_rng(11)
    months = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"])
    long = pd.DataFrame({"user_id": np.repeat([f"U{i}" for i in range(400)], 4),
                         "month": np.tile(months, 400),
                         "engagement_state": rng.choice(list(sv.ENGAGEMENT_STATES), 1600)}).sample(frac=1.0, random_state=1)
    f = tmp_path / "monthly.parquet"
    long.to_parquet(f, row_group_size=150)
    ids = [f"U{i}" for i in range(410)][::-1]
    since = pd.Series(pd.to_datetime("2025-12-01"), index=range(410)).where(np.arange(410) % 7 > 0,
                                                                          pd.Timestamp("2026-02-15"))
    ref, m_ref = sv.engagement_matrix(long, ids, customer_since=since)
    for given in (ids, pd.Series(ids, dtype=pd.StringDtype("pyarrow"))):
        got, m = sv.engagement_matrix_file(f, given, customer_since=since)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(m, m_ref)
    assert (got[:10] == -1).all()  # U400..U409 have no history


def test_last_spell_codes_and_chunked_monthly_risk_equal_the_whole_matrix():
    rng = np.random.default_rng(12)
    labels = rng.choice([-1, 0, 1, 2, 2, 2, 3], size=(3000, 9)).astype(np.int8)
    np.testing.assert_array_equal(sv.last_spell_codes(labels), sv.spell_codes(labels)[:, -1])
    ids = pd.Series([f"u{i}" for i in range(3000)], dtype=pd.StringDtype("pyarrow"))
    x = pd.DataFrame({"a": rng.normal(size=3000)})
    whole = sv.monthly_churn_risk(labels, ids, "2026-06-30", x, horizons=(90,), chunk=10**6)
    parts = sv.monthly_churn_risk(labels, ids, "2026-06-30", x, horizons=(90,), chunk=700)
    np.testing.assert_allclose(parts["churn_prob_90d"], whole["churn_prob_90d"], rtol=0, atol=1e-15)
    assert isinstance(whole["user_id"].dtype, pd.StringDtype)


def test_model_frame_sample_is_ph_sample_of_the_whole_frame():
    users, X, _ = _recency_world(3000)
    tte = sv.time_to_event(users, OBS)
    whole = sv.model_frame(tte, X)
    pd.testing.assert_frame_equal(sv.model_frame(tte, X, max_rows=500, seed=4), sv.ph_sample(whole, 500, 4))
    pd.testing.assert_frame_equal(sv.model_frame(tte, X, max_rows=len(whole), seed=4), whole)


def test_drop_aliased_in_blocks_decides_like_one_decomposition():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=5000), rng.integers(0, 2, 5000).astype(float)
    cov = pd.DataFrame({"a": a, "b": b, "not_b": 1 - b, "c": 2 * a - b, "d": rng.normal(size=5000)})
    one = sv.drop_aliased(cov)
    blocks = sv.drop_aliased(cov, chunk=777)
    assert list(blocks[0].columns) == list(one[0].columns) == ["a", "b", "d"]
    assert blocks[1] == one[1]


def test_survival_columns_reads_the_roles_metrics_and_first_party_attributes():
    from helpers import config

    cfg = config.load(None)
    have = ["user_id", "age_group", "customer_since_date", "last_seen_days_ago", "avg_monthly_spend",
            "support_tickets_raised", "traveler_type", "gender", "churned_in_last_90_days", "extra"]
    cols = sv.survival_columns(cfg, have)
    assert "traveler_type" not in cols and "extra" not in cols  # 2nd party / not in the configuration
    assert {"user_id", "customer_since_date", "last_seen_days_ago", "avg_monthly_spend", "gender",
            "age_group", "support_tickets_raised"} <= set(cols)
    assert set(cols) <= set(have)
