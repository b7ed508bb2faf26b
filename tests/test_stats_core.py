"""The statistics core: one index / interval / test for affinity, questions and personas; base sizes; FDR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import affinity as A
from helpers import personas
from helpers.stats import core as C


def _two_groups(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    aud = rng.random(n) < 0.3
    y = np.exp(rng.normal(np.where(aud, 3.3, 3.0), 0.8))
    w = rng.lognormal(0, 0.9, n)
    return aud, y, w


# --- the core on hand-checkable cases ------------------------------------------------------------------------
def test_profile_matches_two_group_index_table_and_contract():
    aud, y, w = _two_groups()
    flag = (y > 25).astype(float)
    ind = pd.DataFrame({"minutes": y, "heavy=yes": flag})
    out = C.profile(ind, aud, w)
    assert list(out.columns[: len(C.PROFILE_COLUMNS)]) == C.PROFILE_COLUMNS
    ref = C.index_estimates(y, aud.astype(int), w).set_index("segment").loc[1]
    r = out.set_index("column").loc["minutes"]
    assert r["index"] == pytest.approx(ref["index"]) and r["ci_low"] == pytest.approx(ref["ci_low"])
    assert r["audience_mean"] == pytest.approx(np.average(y[aud], weights=w[aud]))
    assert r["base_mean"] == pytest.approx(np.average(y, weights=w))
    h = out.set_index("column").loc["heavy=yes"]
    assert h["attribute"] == "heavy" and h["value_label"] == "yes" and h["kind"] == "share"
    assert h["n_cell"] == int(((flag == 1) & aud).sum())  # the rule counts audience members *with* the value
    assert h["n_eff_audience"] == pytest.approx(w[aud].sum() ** 2 / (w[aud] ** 2).sum())
    assert out["significant"].all() and (out["tier"] != "").all()


def test_index_of_zero_with_nan_interval_is_never_significant():
    """No audience member has the value: index 0, no interval; the Wald p-value is tiny, yet not significant."""
    n = 2000
    aud = np.arange(n) < 600
    y = np.where(aud, 0.0, (np.arange(n) % 2).astype(float))  # half of the rest has it, nobody in the audience
    lax = C.BaseSizeRule(0, 0, rse_caution=None, rse_suppress=None)
    out = C.profile(pd.DataFrame({"x=yes": y}), aud, rule=lax).iloc[0]
    assert out["index"] == 0 and np.isnan(out["ci_low"]) and out["p_value"] < 1e-10
    assert not out["significant"]
    # with the default rule the RSE of a zero share is infinite: suppressed, index not reported
    out = C.profile(pd.DataFrame({"x=yes": y}), aud).iloc[0]
    assert out["base_flag"] == "suppressed" and np.isnan(out["index"]) and not out["significant"]


def test_rse_rule_on_the_effective_base_flags_cells_a_count_rule_passes():
    rng = np.random.default_rng(4)
    n = 3000
    aud = np.arange(n) < 400
    y = (rng.random(n) < 0.3).astype(float)
    w = np.ones(n)
    w[:3] = 400.0  # three audience members carry most of the audience's weight: effective base about 5
    y[:3] = [1.0, 0.0, 0.0]
    out = C.profile(pd.DataFrame({"x=1": y}), aud, w)
    r = out.iloc[0]
    assert r["n_cell"] >= 61  # plenty of holders: the count rule alone says "ok"
    assert r["n_eff_audience"] < 10 and r["rse"] > 0.5 and r["base_flag"] == "suppressed"
    assert C.BaseSizeRule(rse_caution=None, rse_suppress=None).flag([r["n_cell"]], [1.0], [r["rse"]])[0] == "ok"
    flags = C.BaseSizeRule().flag(np.array([100, 100, 100, 40, 10]), np.full(5, 100.0),
                                  np.array([0.1, 0.35, 0.6, 0.1, 0.1]))
    assert flags.tolist() == ["ok", "caution", "suppressed", "caution", "suppressed"]
    eff = C.BaseSizeRule(use_effective=True).flag(np.array([100, 100]), np.array([50.0, 20.0]))
    assert eff.tolist() == ["caution", "suppressed"]
    with pytest.raises(ValueError, match="rse_caution"):
        C.BaseSizeRule(rse_caution=0.6, rse_suppress=0.5)


def test_descriptive_cells_have_no_test_and_leave_the_fdr_family():
    aud, y, w = _two_groups()
    ind = pd.DataFrame({"built_from": y, "other": y * 1.0 + 0.0})
    out = C.profile(ind, aud, w, descriptive=["built_from"]).set_index("column")
    d = out.loc["built_from"]
    assert d["descriptive"] and np.isnan(d["p_value"]) and np.isnan(d["q_value"]) and not d["significant"]
    assert np.isfinite(d["index"]) and d["ci_low"] < d["index"] < d["ci_high"]
    # the other cell alone is the FDR family: its q-value equals its p-value
    assert out.loc["other", "q_value"] == pytest.approx(out.loc["other", "p_value"])


def test_tiers_quantiles_kish_and_vectorised_arrays():
    assert list(C.assign_tier([130, 120, 100, 79.9, np.nan])) == ["sweet spot", "neutral", "neutral",
                                                                  "de-prioritise", ""]
    assert (C.TIER_LOW, C.TIER_HIGH) == (80.0, 120.0)
    assert C.weighted_quantile([1, 2, 3, 4], [1, 1, 1, 1], 0.5) == 2
    assert C.weighted_quantile([1, 2, 3, 4], [1, 1, 1, 5], 0.5) == 4
    assert C.kish_effective_n(np.ones(10)) == pytest.approx(10)
    assert C.design_effect(np.r_[np.ones(5), np.full(5, 3.0)]) == pytest.approx(1.25)
    # a batch of replicate tables in one call equals the tables one by one
    rng = np.random.default_rng(2)
    reps = []
    for _ in range(5):
        seg = rng.integers(0, 3, 500)
        y, w = rng.lognormal(2, 1, 500), rng.lognormal(0, 0.5, 500)
        reps.append(C.moments(y, seg, w, 3))
    stack = {c: np.stack([m[c].to_numpy() for m in reps]) for c in ("n", "t", "ty", "t2", "t2y", "t2yy")}
    r = C.index_arrays(stack["n"], stack["t"], stack["ty"], stack["t2"], stack["t2y"], stack["t2yy"])
    for i, m in enumerate(reps):
        one = C.index_table(m)
        np.testing.assert_allclose(r["ci_low"][i], one["ci_low"], rtol=1e-12)
        np.testing.assert_allclose(r["p_value"][i], one["p_value"], rtol=1e-10)


# --- one cell, one number: persona card == heatmap == question -------------------------------------------------
def _panel(small_panel):
    df = small_panel.data.copy()
    df["segment"] = small_panel.truth["true_segment"].to_numpy()
    df["segment_name"] = small_panel.truth["true_segment_name"].to_numpy()
    df["weight"] = np.random.default_rng(7).lognormal(0, 0.8, len(df))
    return df


def test_persona_card_and_heatmap_show_the_same_index_and_interval(small_panel):
    df = _panel(small_panel)
    clustered = personas.clustering_columns()  # what 04 clusters on; 07 reads the same list
    aff = A.AffinityIndex(metrics=["time_on_podcasts_min", "avg_monthly_spend"],
                          attributes=["age_group", "homeowner_status", "partner_purchase_categories"],
                          descriptive=clustered).fit(df).table_
    per = personas.attribute_index(df.drop(columns=["segment", "segment_name", "weight"]),
                                   df["segment"].to_numpy(), weights=df["weight"].to_numpy())
    pairs = [("time_on_podcasts_min", "time_on_podcasts_min", "intensity", "time_on_podcasts_min"),
             ("avg_monthly_spend", "avg_monthly_spend", "intensity", "avg_monthly_spend"),
             ("age_group", "65+", "share", "age_group=65+"), ("homeowner_status", "owner", "share",
                                                             "homeowner_status=owner"),
             ("partner_purchase_categories", "electronics", "share", "partner_purchase_categories=electronics")]
    for fam, att, kind, pname in pairs:
        a = aff[(aff["family"] == fam) & (aff["attribute"] == att) & (aff["index_type"] == kind)].set_index("segment")
        p = per[per["attribute"] == pname].set_index("segment")
        assert (a["base_flag"] == p["base_flag"]).all(), pname
        assert (a["descriptive"] == p["descriptive"]).all() and (a["tier"] == p["tier"]).all(), pname
        for col in ("index", "ci_low", "ci_high", "p_value"):
            np.testing.assert_allclose(a[col].to_numpy(float), p[col].to_numpy(float), rtol=1e-9, err_msg=pname)


def test_question_index_equals_the_core_profile(warehouse_run):
    from helpers import questions as Q

    P, df = warehouse_run
    seg = int(df["segment"].iloc[0])
    r = Q.ask(P, "income_bracket", where=[("segment", "==", seg)]).table.set_index("level")
    ind = pd.get_dummies(df["income_bracket"], prefix="income_bracket", prefix_sep="=").astype(float)
    prof = C.profile(ind, (df["segment"] == seg).to_numpy(), df["weight"].to_numpy()).set_index("value_label")
    ok = prof.index[prof["base_flag"].ne("suppressed")]
    assert len(ok) >= 4 and (r.loc[prof.index, "base_flag"] == prof["base_flag"]).all()
    for lev in ok:
        assert r.loc[lev, "index"] == pytest.approx(prof.loc[lev, "index"], rel=1e-9)
        assert r.loc[lev, "index_ci_low"] == pytest.approx(prof.loc[lev, "ci_low"], rel=1e-9)
        assert r.loc[lev, "p_value"] == pytest.approx(prof.loc[lev, "p_value"], rel=1e-6)


# --- weighted mean with interval ---------------------------------------------------------------------------------
def test_weighted_mean_ci_matches_statsmodels_descrstatsw_and_the_hc1_sandwich():
    from statsmodels.regression.linear_model import WLS
    from statsmodels.stats.weightstats import DescrStatsW

    aud, y, w = _two_groups(n=3000, seed=5)
    # equal weights: the frequency-weight and the survey (linearised) standard errors coincide
    r = C.weighted_mean_ci(y)
    d = DescrStatsW(y, ddof=1)
    lo, hi = d.zconfint_mean(alpha=0.05)
    assert r.value == pytest.approx(d.mean, rel=1e-12)
    assert (r.low, r.high) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    assert r.sd == pytest.approx(DescrStatsW(y).std, rel=1e-10) and r.n == len(y) and r.n_eff == pytest.approx(len(y))
    # unequal weights: DescrStatsW's mean and weighted SD, and the sandwich (HC1) SE of a weighted constant fit
    r = C.weighted_mean_ci(y, w, confidence=0.9)
    d = DescrStatsW(y, weights=w)
    fit = WLS(y, np.ones(len(y)), weights=w).fit(cov_type="HC1")
    assert r.value == pytest.approx(d.mean, rel=1e-12) and r.sd == pytest.approx(d.std, rel=1e-10)
    assert r.se == pytest.approx(fit.bse[0], rel=1e-10)
    assert r.high - r.value == pytest.approx(1.6448536 * fit.bse[0], rel=1e-6)
    assert r.n_eff == pytest.approx(C.kish_effective_n(w), rel=1e-12) and r.n_eff < 0.9 * len(y)
    # survey weights carry no sample size: scaling them leaves the interval alone (DescrStatsW's would shrink)
    big = C.weighted_mean_ci(y, 1000 * w, confidence=0.9)
    assert big.se == pytest.approx(r.se, rel=1e-10)
    assert DescrStatsW(y, weights=1000 * w).std_mean < 0.1 * r.se
    # the same standard error as the index core's group estimate (se_value), and mean/SD as the helper says
    g = C.index_estimates(y, np.zeros(len(y), int), w).iloc[0]
    assert r.se == pytest.approx(g["se_value"], rel=1e-8)
    assert C.weighted_mean_sd(y, w) == (pytest.approx(d.mean, rel=1e-12), pytest.approx(d.std, rel=1e-10))


def test_weighted_mean_ci_skips_unobserved_units_and_covers_the_population_mean():
    y = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    w = np.array([1.0, 5.0, 0.0, np.nan, 2.0])
    r = C.weighted_mean_ci(y, w)
    assert r.n == 2 and r.value == pytest.approx((1 + 14) / 3)
    one = C.weighted_mean_ci([4.0], [2.0])
    assert one.value == 4.0 and np.isnan(one.se) and np.isnan(one.low)
    empty = C.weighted_mean_ci([np.nan, 2.0], [1.0, 0.0])
    assert empty.n == 0 and np.isnan(empty.value)
    with pytest.raises(ValueError, match="weights has 1 values for 2"):
        C.weighted_mean_ci([1.0, 2.0], [1.0])
    # unequal-probability samples of a skewed population: the 95% interval covers its mean ~95% of the time
    rng = np.random.default_rng(11)
    pop = rng.lognormal(3, 0.7, 200_000)
    p = np.where(pop > np.median(pop), 0.004, 0.001)  # large values over-sampled, weights 1/p undo it
    hits = []
    for _ in range(400):
        s = rng.random(len(pop)) < p
        c = C.weighted_mean_ci(pop[s], 1 / p[s])
        hits.append(c.low <= pop.mean() <= c.high)
    assert 0.92 <= np.mean(hits) <= 0.98
