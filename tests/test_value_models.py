"""Customer-value models on data simulated from known parameters: recovery inside the intervals, stable
likelihoods for heavy buyers, the Pareto/NBD closed form against numerical integration, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import value as V


def simulate_bgnbd(n, r, alpha, a, b, T_max=52.0, seed=0):
    rng = np.random.default_rng(seed)
    T = rng.uniform(T_max / 2, T_max, n)
    lam = rng.gamma(r, 1 / alpha, n); p = rng.beta(a, b, n)
    x = np.zeros(n); tx = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1; tx[i] = t
            if rng.random() < p[i]:
                break
    return pd.DataFrame({"user_id": np.arange(n), "frequency": x, "recency": tx, "T": T})


def simulate_pnbd(n, r, alpha, s, beta, T_max=52.0, seed=0):
    rng = np.random.default_rng(seed)
    T = rng.uniform(T_max / 2, T_max, n)
    lam = rng.gamma(r, 1 / alpha, n); mu = rng.gamma(s, 1 / beta, n)
    life = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * life)
    tx = np.where(x > 0, life * rng.beta(np.maximum(x, 1), 1), 0.0)  # max of x uniforms on (0, life)
    return pd.DataFrame({"user_id": np.arange(n), "frequency": x.astype(float), "recency": tx, "T": T})


def test_bgnbd_recovers_planted_parameters():
    truth = {"r": 0.5, "alpha": 6.0, "a": 0.8, "b": 2.5}
    d = simulate_bgnbd(6000, *truth.values(), seed=3)
    m = V.BetaGeoFitter().fit(d)
    t = m.summary()
    # every parameter within 3 standard errors (log scale; family-wise about 99% for four parameters)
    for k, v in truth.items():
        z = (np.log(v) - np.log(t.loc[k, "coef"])) / (t.loc[k, "se(coef)"] / t.loc[k, "coef"])
        assert abs(z) < 3, (k, t.loc[k].to_dict())
    # intervals are informative, not vacuous
    assert (t["coef upper 95%"] / t["coef lower 95%"]).max() < 5


def test_pareto_nbd_recovers_planted_parameters():
    truth = {"r": 0.6, "alpha": 8.0, "s": 0.8, "beta": 15.0}
    d = simulate_pnbd(8000, *truth.values(), seed=5)
    m = V.ParetoNBDFitter().fit(d)
    t = m.summary()
    for k, v in truth.items():
        z = (np.log(v) - np.log(t.loc[k, "coef"])) / (t.loc[k, "se(coef)"] / t.loc[k, "coef"])
        assert abs(z) < 3, (k, t.loc[k].to_dict())
    pa = m.conditional_probability_alive(d["frequency"], d["recency"], d["T"])
    assert np.all((pa >= 0) & (pa <= 1))


@pytest.mark.parametrize("params", [(0.55, 10.6, 0.6, 11.7), (0.9, 3.0, 1.4, 20.0)])  # alpha < beta and alpha >= beta branches
@pytest.mark.parametrize("cust", [(2, 30.4, 38.9), (0, 0.0, 20.0), (7, 12.0, 50.0)])
def test_pareto_nbd_likelihood_matches_numerical_integration(params, cust):
    r, alpha, s, beta = params
    x, tx, T = cust

    # integrate the individual likelihood over both gamma mixing distributions on a Gauss-Legendre grid in
    # probability space (lambda = F^-1(u)), which removes the density's singularity at 0 when r, s < 1
    u, wu = np.polynomial.legendre.leggauss(800)
    u, wu = (u + 1) / 2, wu / 2
    lam = stats.gamma.ppf(u, r, scale=1 / alpha)[:, None]
    mu = stats.gamma.ppf(u, s, scale=1 / beta)[None, :]
    indiv = (lam ** x * mu / (lam + mu) * np.exp(-(lam + mu) * tx)
             + lam ** (x + 1) / (lam + mu) * np.exp(-(lam + mu) * T))
    num = wu @ indiv @ wu
    ll = -V.ParetoNBDFitter._negll_vec(np.log(params), np.array([x]), np.array([tx]), np.array([T]))[0]
    assert abs(ll - np.log(num)) < 1e-4


def test_heavy_buyers_stay_finite():
    m = V.BetaGeoFitter().fit(simulate_bgnbd(2000, 0.5, 6.0, 0.8, 2.5, seed=1))
    x = np.array([0, 50, 400, 2000.0]); tx = np.array([0, 200, 900, 999.0]); T = np.full(4, 1000.0)
    for model in (m, V.ParetoNBDFitter().fit(simulate_pnbd(2000, 0.6, 8.0, 0.8, 15.0, seed=1))):
        ll = -model._negll_vec(np.log(model.params_.to_numpy()), x, tx, T)
        assert np.all(np.isfinite(ll))
        pa = model.conditional_probability_alive(x, tx, T)
        ey = model.conditional_expected_number_of_purchases_up_to_time(10, x, tx, T)
        assert np.all(np.isfinite(pa)) and np.all((pa >= 0) & (pa <= 1))
        assert np.all(np.isfinite(ey)) and np.all(ey >= 0)
        # heavy recent buyers are expected to buy more than light ones
        assert ey[3] > ey[1] > 0


def test_bgnbd_expectations_match_simulation():
    """E[X(t)] equals the mean count simulated from the fitted parameters at the customers' ages."""
    truth = (0.5, 6.0, 0.8, 2.5)
    m = V.BetaGeoFitter().fit(simulate_bgnbd(6000, *truth, seed=2))
    assert float(m.expected_number_of_purchases_up_to_time(0.0)) == pytest.approx(0.0, abs=1e-12)
    sim = simulate_bgnbd(20000, *m.params_.to_numpy(), T_max=40.0, seed=4)
    e = m.expected_number_of_purchases_up_to_time(sim["T"].to_numpy())
    assert abs(e.mean() - sim["frequency"].mean()) < 0.05 * sim["frequency"].mean()


def test_gamma_gamma_recovers_and_rejects_non_buyers():
    rng = np.random.default_rng(0)
    p, q, g = 6.0, 4.0, 15.0
    n = 3000
    x = rng.integers(1, 10, n).astype(float)
    nu = rng.gamma(q, 1 / g, n)
    m = rng.gamma(p * x, 1 / (nu * x))
    gg = V.GammaGammaFitter().fit(x, m)
    t = gg.summary()
    for k, v in {"p": p, "q": q, "v": g}.items():
        z = (np.log(v) - np.log(t.loc[k, "coef"])) / (t.loc[k, "se(coef)"] / t.loc[k, "coef"])
        assert abs(z) < 3, (k, t.loc[k].to_dict())
    with pytest.raises(ValueError, match="repeat buyers"):
        V.GammaGammaFitter().fit(np.array([0.0, 2.0]), np.array([0.0, 10.0]))


def test_bad_input_names_the_row():
    d = pd.DataFrame({"frequency": [1, 2, 0], "recency": [3.0, 9.0, 0.0], "T": [5.0, 8.0, 4.0]})
    with pytest.raises(ValueError, match=r"index 1 .*recency must satisfy"):
        V.BetaGeoFitter().fit(d)
    with pytest.raises(KeyError, match="no 'T' column"):
        V.BetaGeoFitter().fit(d.drop(columns="T"))


def test_customer_value_intervals_and_segments():
    d = simulate_bgnbd(3000, 0.5, 6.0, 0.8, 2.5, seed=11)
    rng = np.random.default_rng(1)
    d["monetary_value"] = np.where(d["frequency"] > 0, rng.gamma(5, 5, len(d)), 0.0)
    bg = V.BetaGeoFitter().fit(d)
    gg = V.GammaGammaFitter().fit(d[d["frequency"] > 0])
    cv = V.customer_value(bg, gg, d, horizon=13, n_draws=50, seed=0)
    f = cv.frame
    assert len(f) == 3000 and (f["clv_low"] <= f["clv"] + 1e-9).all() and (f["clv"] <= f["clv_high"] + 1e-9).all()
    disc = V.customer_value(bg, gg, d, horizon=13, discount_rate=0.01, steps=13, n_draws=5, seed=0).frame
    assert (disc["clv"] <= f["clv"] + 1e-9).all() and (disc["clv"] < f["clv"]).any()
    seg = pd.Series(np.where(d["frequency"] >= 2, "frequent", "rare"), index=d["user_id"])
    t = V.segment_value(cv, seg, n_boot=100, seed=0)
    assert set(t["segment"]) == {"frequent", "rare"}
    assert (t["clv_low"] < t["clv_mean"]).all() and (t["clv_mean"] < t["clv_high"]).all()
    assert t.set_index("segment").loc["frequent", "clv_mean"] > t.set_index("segment").loc["rare", "clv_mean"]
    assert abs(t["value_share"].sum() - 1) < 1e-9
    # the interval is the percentile of replicates that each resample the segment's customers (seeded, in
    # segment order) and take one parameter draw: recomputed here from the customers x draws matrix
    w = pd.Series(rng.uniform(0.5, 2.0, len(d)), index=d["user_id"])
    t = V.segment_value(cv, seg, w, n_boot=60, seed=4).set_index("segment")
    draws, boot = cv.draws, np.random.default_rng(4)
    for s in sorted(seg.unique()):
        idx = np.flatnonzero((f["user_id"].map(seg) == s).to_numpy())
        ws = f["user_id"].map(w).to_numpy()[idx]
        reps = []
        for b in range(60):
            j = boot.integers(0, len(idx), size=len(idx))
            reps.append(np.average(draws[idx[j], b % cv.n_draws], weights=ws[j]))
        assert t.loc[s, "clv_low"] == np.quantile(reps, 0.025) and t.loc[s, "clv_high"] == np.quantile(reps, 0.975)
    # one row per draw, written directly: the same values as the customers x draws block
    part = np.arange(10, 500, 3)
    np.testing.assert_array_equal(cv.draw_block(part, by_draw=True), cv.draw_block(part).T)
    # ids as Arrow text in the segment and weight indexes: the same table
    arrow = lambda v: pd.Series(v.to_numpy(), index=pd.Index(v.index.astype(str).astype(pd.StringDtype("pyarrow")).array))
    pd.testing.assert_frame_equal(V.segment_value(cv, arrow(seg), arrow(w), n_boot=60, seed=4).set_index("segment"), t)


def test_pareto_quadrature_agrees_with_hypergeometric_path():
    """The two ways of computing log A0 agree where both are usable (the quadrature takes over where the
    series converges slowly, |alpha - beta| close to beta + t_x)."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 60, 400).astype(float)
    T = rng.uniform(20, 100, 400)
    tx = T * rng.uniform(0.05, 0.99, 400)
    for prm in [(0.55, 10.6, 0.6, 11.7), (0.9, 3.0, 1.4, 20.0), (0.75, 2.1, 10.0, 3200.0), (2.0, 30.0, 0.5, 1.0)]:
        a = V.ParetoNBDFitter._log_A0(*prm, x, tx, T)
        b = V.ParetoNBDFitter._log_A0_quad(*prm, x, tx, T)
        assert np.abs(a - b).max() < 2e-5, prm


def test_rfm_summary_same_day_rule_and_holdout():
    tx = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b", "c"],
                       "date": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-15", "2024-03-01",
                                               "2024-01-08", "2024-02-20"]),
                       "amount": [10.0, 30.0, 20.0, 5.0, 7.0, 9.0]})
    s = V.rfm_summary(tx, "2024-01-31", "2024-03-31", unit_days=1).set_index("user_id")
    # c's first purchase is after the calibration end: left out
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "frequency"] == 1 and s.loc["a", "recency"] == 14 and s.loc["a", "T"] == 30
    assert s.loc["a", "monetary_value"] == 20.0 and s.loc["a", "frequency_holdout"] == 1
    assert s.loc["b", "frequency"] == 0 and s.loc["b", "recency"] == 0 and s.loc["b", "monetary_value"] == 0
    k = V.rfm_summary(tx, "2024-01-31", unit_days=1, merge_same_day=False).set_index("user_id")
    # counting every row: the second purchase of 1 January is a repeat at time 0
    assert k.loc["a", "frequency"] == 2 and k.loc["a", "recency"] == 14
    assert k.loc["a", "monetary_value"] == pytest.approx((20.0 + 20.0) / 2)
    with pytest.raises(KeyError, match="lacks column"):
        V.rfm_summary(tx.drop(columns="amount"), "2024-01-31")


def test_bgnbd_homogeneous_dropout_stays_finite():
    """Almost no heterogeneity in dropout (a, b large): the likelihood has a ridge toward a, b -> infinity;
    the bounded fit stays finite, its expectations are finite and the mean dropout probability is recovered."""
    d = simulate_bgnbd(3000, 1.2, 2.4, 400.0, 160000.0, T_max=52.0, seed=12)
    m = V.BetaGeoFitter().fit(d)
    assert np.isfinite(m.log_likelihood_)
    e = m.conditional_expected_number_of_purchases_up_to_time(13, d["frequency"], d["recency"], d["T"])
    pa = m.conditional_probability_alive(d["frequency"], d["recency"], d["T"])
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(pa))
    # the implied mean dropout probability a/(a+b) is recovered
    p = m.params_["a"] / (m.params_["a"] + m.params_["b"])
    assert 0.0005 < p < 0.02


def test_expected_purchases_of_an_alive_customer_factor_the_conditional_expectation():
    # E[Y(t) | x, t_x, T] = E[Y(t) | alive, x, T] x P(alive): customer_value evaluates the first factor once per
    # distinct (x, T) pair; over a short window an alive customer buys at the posterior mean rate (r+x)/(alpha+T)
    d = simulate_bgnbd(2000, 0.5, 6.0, 0.8, 2.5, seed=3)
    p = simulate_pnbd(2000, 0.6, 5.0, 0.9, 8.0, seed=4)
    for model, data in [(V.BetaGeoFitter().fit(d), d), (V.ParetoNBDFitter().fit(p), p)]:
        x, tx, T = data["frequency"].to_numpy(), data["recency"].to_numpy(), data["T"].to_numpy()
        r, alpha = model.params_["r"], model.params_["alpha"]
        alive = model.expected_purchases_if_alive(0.01, x, T)
        assert np.allclose(alive / 0.01, (r + x) / (alpha + T), rtol=2e-2)
        assert np.allclose(model.expected_purchases_if_alive(13.0, x, T) * model.conditional_probability_alive(x, tx, T),
                           model.conditional_expected_number_of_purchases_up_to_time(13.0, x, tx, T), rtol=1e-12)
        # the factor does not depend on the recency: a customer who just bought and one who bought long ago
        # differ only in P(alive)
        assert model.expected_purchases_if_alive(13.0, 3.0, 40.0) > model.conditional_expected_number_of_purchases_up_to_time(13.0, 3.0, 5.0, 40.0)


def test_distinct_rows_match_numpy_unique_and_gamma_gamma_gradient():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, 3000).astype(float); tx = rng.integers(0, 4, 3000) / 7; T = rng.integers(3, 6, 3000) / 7
    (ux, utx, uT), inv = V.models.distinct_rows(x, tx, T)
    ref, rinv = np.unique(np.stack([x, tx, T], 1), axis=0, return_inverse=True)
    np.testing.assert_array_equal(np.stack([ux, utx, uT], 1), ref)
    np.testing.assert_array_equal(inv, rinv.ravel())
    m = rng.gamma(4, 5, 3000); xx = x + 1
    lp = np.log([3.0, 2.5, 7.0])
    from scipy import optimize
    num = optimize.approx_fprime(lp, lambda v: V.GammaGammaFitter._negll_vec(v, xx, m).sum(), 1e-7)
    np.testing.assert_allclose(V.GammaGammaFitter._grad_vec(lp, xx, m).sum(axis=0), num, rtol=1e-4)


def test_rfm_summary_repeats_exactly_whatever_order_the_engine_s_threads_add_amounts():
    # a sum of doubles depends on the order of addition; DuckDB's parallel aggregation varies it between runs
    # (4 runs of this table differed by up to 5e-13 before amounts were summed as exact decimals)
    from helpers import engine
    from helpers.value.data import rfm_summary

    rng = np.random.default_rng(0)
    n = 3_000_000
    tx = pd.DataFrame({"user_id": rng.integers(0, 50, n).astype(str),
                       "date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
                       "amount": np.round(rng.gamma(2.0, 30.0, n), 2)})
    con = engine.connect("duckdb")
    runs = [rfm_summary(tx, "2025-06-30", "2025-12-01", con=con, merge_same_day=False) for _ in range(4)]
    assert all(r.equals(runs[0]) for r in runs[1:])
    first = tx[tx["user_id"] == runs[0]["user_id"].iloc[0]]
    assert runs[0]["amount_holdout"].iloc[0] == pytest.approx(
        first.loc[(first["date"] > "2025-06-30") & (first["date"] <= "2025-12-01"), "amount"].sum(), rel=1e-12)


def test_fit_by_segment_fits_each_segment_alone_and_skips_small_ones():
    """Each segment's row is the model fitted on that segment's customers alone (ids matched, not positions),
    segments below min_customers get no row, and the threads do not change the numbers."""
    a = simulate_bgnbd(3000, 0.25, 4.0, 0.8, 2.5, seed=1)
    b = simulate_bgnbd(2000, 0.6, 2.0, 0.3, 3.0, seed=2)
    c = simulate_bgnbd(100, 0.4, 3.0, 0.5, 2.0, seed=3)
    summ = pd.concat([a, b, c], ignore_index=True)
    summ["user_id"] = [f"u{i}" for i in range(len(summ))]
    seg = pd.Series(["a"] * 3000 + ["b"] * 2000 + ["c"] * 100, index=summ["user_id"]).sample(frac=1, random_state=0)
    got = V.fit_by_segment(V.BetaGeoFitter, summ, seg, min_customers=200)
    assert list(got["segment"]) == ["a", "b"] and list(got["customers"]) == [3000, 2000]
    for name, part in (("a", a), ("b", b)):
        ref = V.BetaGeoFitter().fit(part).params_
        row = got.set_index("segment").loc[name]
        for p in ("r", "alpha", "a", "b"):
            assert row[p] == pytest.approx(ref[p], rel=1e-9)
    # the two segments' parameters differ (a fit of everyone would give both the same numbers)
    assert abs(got.loc[0, "r"] - got.loc[1, "r"]) > 0.1
    pd.testing.assert_frame_equal(got, V.fit_by_segment(V.BetaGeoFitter, summ, seg, min_customers=200, n_jobs=1))
