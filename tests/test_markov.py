"""Markov engagement chains: textbook absorbing-chain results, counts on the engine, recovery of planted
matrices inside the customer-bootstrap intervals, the stationarity/order tests, survival and value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.dynamics import markov as mk

P_A = np.array([[0.88, 0.085, 0.027, 0.008], [0.30, 0.52, 0.15, 0.03], [0.12, 0.15, 0.65, 0.08], [0, 0, 0, 1]])
P_B = np.array([[0.80, 0.13, 0.055, 0.015], [0.20, 0.55, 0.20, 0.05], [0.07, 0.12, 0.70, 0.11], [0, 0, 0, 1]])


def test_drunkards_walk():
    """Kemeny & Snell / Grinstead & Snell: five states, p = 1/2, 0 and 4 absorbing."""
    P = np.zeros((5, 5))
    P[0, 0] = P[4, 4] = 1
    for i in (1, 2, 3):
        P[i, i - 1] = P[i, i + 1] = 0.5
    res = mk.absorbing_analysis(P)
    np.testing.assert_allclose(res.fundamental, [[1.5, 1, 0.5], [1, 2, 1], [0.5, 1, 1.5]])
    np.testing.assert_allclose(res.expected_steps, [3, 4, 3])
    np.testing.assert_allclose(res.absorption_probabilities[:, 0], [0.75, 0.5, 0.25])
    np.testing.assert_allclose(res.absorption_probabilities.sum(axis=1), 1)
    assert res.transient == [1, 2, 3] and res.absorbing == [0, 4]


def test_counts_on_engine_match_pandas(duckdb_con):
    w = mk.simulate_waves(300, P_A, months=12, seed=1)
    w = w.drop(index=w.index[5])  # a missing month breaks the pair around it
    c = mk.customer_transition_counts(w, con=duckdb_con)
    # the same counts in pandas
    d = w.sort_values(["user_id", "month"]).copy()
    code = {s: i for i, s in enumerate(mk.STATES)}
    d["s"] = d["engagement_state"].map(code)
    d["m"] = d["month"].dt.year * 12 + d["month"].dt.month
    d["f"] = d.groupby("user_id")["s"].shift(); d["fm"] = d.groupby("user_id")["m"].shift()
    d = d[d["m"] - d["fm"] == 1]
    ref = d.groupby(["user_id", "f", "s"]).size()
    got = c.set_index(["user_id", "from_state", "to_state"])["n"]
    assert int(got.sum()) == int(ref.sum()) == 300 * 11 - 2
    assert got.sort_index().to_numpy().tolist() == ref.sort_index().to_numpy().tolist()


def test_unknown_state_is_named():
    w = mk.simulate_waves(20, P_A, months=3, seed=0)
    w.loc[w.index[1], "engagement_state"] = "asleep"
    with pytest.raises(ValueError, match="outside"):
        mk.customer_transition_counts(w)


@pytest.fixture(scope="module")
def two_segment_fit():
    w = mk.simulate_waves(4000, {"a": P_A, "b": P_B}, months=24, seed=3)
    c = mk.customer_transition_counts(w)
    seg = w.groupby("user_id")["segment"].first()
    return w, seg, mk.fit_chains(c, seg, n_boot=150, seed=0)


def test_planted_matrices_inside_bootstrap_intervals(two_segment_fit):
    _, _, fit = two_segment_fit
    share, table = mk.truth_in_ci_share(fit, {"a": P_A.tolist(), "b": P_B.tolist()})
    assert len(table) == 2 * 3 * 4
    assert share >= 0.8  # nominal 95%; shrinkage toward the pooled matrix costs a little
    assert np.abs(fit.P - np.stack([P_A, P_B])).max() < 0.03
    # shrinkage is finite (segments differ) and pulls estimates toward the pooled matrix
    assert np.all(fit.kappa[:3] > 0) and np.all(np.isfinite(fit.kappa))


def test_bootstrap_is_over_customers_not_transitions(two_segment_fit):
    """Customer resampling keeps within-path dependence: with heterogeneous stickiness inside a segment the
    customer bootstrap's interval is wider than a transition-level multinomial interval would be."""
    sticky = P_A.copy(); sticky[0] = [0.97, 0.02, 0.008, 0.002]
    loose = P_A.copy(); loose[0] = [0.70, 0.20, 0.08, 0.02]
    w = pd.concat([mk.simulate_waves(1500, sticky, seed=1), mk.simulate_waves(1500, loose, seed=2)
                   .assign(user_id=lambda d: "v" + d["user_id"])])
    fit = mk.fit_chains(mk.customer_transition_counts(w), n_boot=200, seed=1)
    lo, hi = fit.interval()
    n0 = fit.counts[0, 0].sum()
    p = fit.P[0, 0, 0]
    naive = 2 * 1.96 * np.sqrt(p * (1 - p) / n0)
    assert (hi[0, 0, 0] - lo[0, 0, 0]) > 1.25 * naive  # measured 1.5x at this seed


def test_weights_change_the_estimate():
    w = pd.concat([mk.simulate_waves(2000, P_A, seed=4), mk.simulate_waves(2000, P_B, seed=5)
                   .assign(user_id=lambda d: "b" + d["user_id"])])
    c = mk.customer_transition_counts(w)
    users = w["user_id"].unique()
    wt = pd.Series(np.where(pd.Index(users).str.startswith("b"), 9.0, 1.0), index=users)
    P_w = mk.fit_chains(c, weight=wt, n_boot=0).P[0]
    P_u = mk.fit_chains(c, n_boot=0).P[0]
    # weighting 9:1 toward the B customers moves the pooled estimate toward P_B
    assert np.abs(P_w - (0.9 * P_B + 0.1 * P_A)).max() < 0.02
    assert np.abs(P_u - (0.5 * P_B + 0.5 * P_A)).max() < 0.02


def test_expected_months_to_churn_and_value(two_segment_fit):
    w, seg, fit = two_segment_fit
    ab = fit.absorption()
    true = {s: mk.absorbing_analysis(P).expected_steps for s, P in (("a", P_A), ("b", P_B))}
    for r in ab.itertuples():
        t = true[r.segment][mk.STATES.index(r._2)]
        assert r.ci_low <= t <= r.ci_high or abs(r.expected_months_to_churn / t - 1) < 0.1
    # segment b churns faster from every state
    a = ab.set_index(["segment", "from"])["expected_months_to_churn"]
    assert all(a[("b", s)] < a[("a", s)] for s in ("active", "light", "dormant"))
    R = mk.state_rewards(w, seg, None, fit)
    assert R[0, 0] == pytest.approx(40.0, rel=0.05) and R[0, 3] == 0
    v = mk.value_by_state(fit, R, discount=0.0, horizon=None)
    # undiscounted infinite-horizon value = expected visits x reward (fundamental matrix times rewards)
    N = mk.absorbing_analysis(fit.P[0]).fundamental
    exp_v = N @ R[0, :3]
    got = v[v.segment == "a"].set_index("state")["value"]
    np.testing.assert_allclose(got[["active", "light", "dormant"]].to_numpy(), exp_v, rtol=1e-8)


def test_pfeifer_carraway_finite_horizon_converges():
    R = np.array([10.0, 3.0, 0.0, 0.0])
    inf = mk.pfeifer_carraway(P_A, R, discount=0.02, horizon=None)
    fin = mk.pfeifer_carraway(P_A, R, discount=0.02, horizon=2000)
    np.testing.assert_allclose(inf, fin, rtol=1e-8)
    assert inf[0] > inf[1] > inf[2] > inf[3] == 0


def test_stationarity_and_order_tests():
    w = mk.simulate_waves(3000, P_A, months=12, seed=6)
    st = mk.stationarity_test(mk.customer_transition_counts(w, by_month=True))
    od = mk.order_test(mk.customer_transition_counts(w, order=2))
    assert st["df"] > 0 and st["p_value"] > 0.001
    assert od["df"] > 0 and od["p_value"] > 0.001
    # non-stationary: the chain changes half-way
    w2 = pd.concat([mk.simulate_waves(3000, P_A, months=6, seed=7),
                    mk.simulate_waves(3000, P_B, months=6, seed=8, first_month="2024-07-01")])
    assert mk.stationarity_test(mk.customer_transition_counts(w2, by_month=True))["p_value"] < 1e-6
    # a hidden state seen through a coarse label is not first order: merge light and dormant
    w3 = mk.simulate_waves(4000, P_A, months=24, seed=10)
    w3 = w3.assign(engagement_state=w3["engagement_state"].replace({"dormant": "light"}))
    assert mk.order_test(mk.customer_transition_counts(w3, order=2))["p_value"] < 1e-3


def test_implied_survival_matches_kaplan_meier_for_a_markov_chain():
    w = mk.simulate_waves(4000, P_A, months=24, seed=9)
    fit = mk.fit_chains(mk.customer_transition_counts(w), n_boot=0)
    cmp_ = mk.survival_comparison(fit, mk.entry_states(w), months=23)
    assert cmp_["markov"].iloc[0] == 1 and cmp_["km"].iloc[0] == 1
    assert cmp_["gap"].abs().max() < 0.02
    assert cmp_["markov"].is_monotonic_decreasing


def test_current_state_value_weights_last_states(two_segment_fit):
    w, seg, fit = two_segment_fit
    R = mk.state_rewards(w, seg, None, fit)
    vs = mk.value_by_state(fit, R, 0.01, 36)
    cur = mk.current_state_value(vs, w, seg).set_index("segment")
    last = w.sort_values("month").groupby("user_id")["engagement_state"].last()
    a = last[seg.reindex(last.index) == "a"]
    va = vs[vs.segment == "a"].set_index("state")["value"]
    assert cur.loc["a", "customers"] == len(a)
    assert cur.loc["a", "chain_value"] == pytest.approx(a.map(va).mean())
    # churned customers are worth nothing, so the base is worth less than an all-active base
    assert cur.loc["a", "chain_value"] < va["active"]


def test_sampled_bootstrap_keeps_the_estimate_and_rescales_the_spread(duckdb_con):
    """Above ``sample`` customers the estimate still uses every customer and the bootstrap on the seeded
    sample, rescaled by sqrt(sampled / all), gives intervals as wide as the bootstrap of every customer."""
    w = mk.simulate_waves(12000, {"a": P_A, "b": P_B}, months=12, seed=21)
    seg = w.groupby("user_id")["segment"].first()
    tr = mk.transitions(w, con=duckdb_con)
    full = mk.fit_chains(mk.chain_counts(tr, seg, sample=None, con=duckdb_con), n_boot=200, seed=0)
    part_cc = mk.chain_counts(tr, seg, sample=3000, min_per_segment=500, seed=1, con=duckdb_con)
    assert part_cc.sampled and part_cc.per_customer["user_id"].nunique() < 3100
    part = mk.fit_chains(part_cc, n_boot=200, seed=0)
    np.testing.assert_allclose(part.P, full.P, atol=1e-12)
    assert part.n_customers == full.n_customers
    lo_f, hi_f = full.interval(); lo_p, hi_p = part.interval()
    width_f, width_p = (hi_f - lo_f)[:, :3], (hi_p - lo_p)[:, :3]
    big = width_f > 1e-3
    ratio = width_p[big] / width_f[big]
    assert 0.7 < np.median(ratio) < 1.3  # without the rescaling it would be about 2 (12000 / 3000 customers)
    # the same chain as the pandas path when nobody is left out
    ref = mk.fit_chains(mk.customer_transition_counts(w), seg, n_boot=0)
    np.testing.assert_allclose(full.P, ref.P, atol=1e-12)


def test_disk_cached_transitions_give_the_same_chain_and_leave_no_file(duckdb_con, tmp_path, monkeypatch):
    """cache='disk' writes the transitions once to a temporary Parquet file: the same counts, chain and
    second-order counts as the in-memory cache, and the file is gone once no expression uses it."""
    import gc

    monkeypatch.setenv("AUDIENCE_DUCKDB_TEMP_DIRECTORY", str(tmp_path))
    w = mk.simulate_waves(3000, {"a": P_A, "b": P_B}, months=12, seed=5)
    seg = w.groupby("user_id")["segment"].first()
    mem = mk.transitions(w, con=duckdb_con)
    disk = mk.transitions(w, cache="disk", con=duckdb_con)
    assert len(list(tmp_path.rglob("*.parquet"))) == 1
    key = ["user_id", "month_index", "from_state", "to_state"]
    a = duckdb_con.execute(mem).sort_values(key).reset_index(drop=True)
    b = duckdb_con.execute(disk).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)  # Parquet stores the int8 states as int32
    for kw in (dict(order=2, per_customer=False), dict(by_month=True, per_customer=False)):
        ka, kb = (mk.customer_transition_counts(t, con=duckdb_con, **kw) for t in (mem, disk))
        cols = list(ka.columns)
        pd.testing.assert_frame_equal(ka.sort_values(cols).reset_index(drop=True),
                                      kb.sort_values(cols).reset_index(drop=True), check_dtype=False)
    fa, fb = (mk.fit_chains(mk.chain_counts(t, seg, sample=None, con=duckdb_con), n_boot=0) for t in (mem, disk))
    np.testing.assert_allclose(fa.P, fb.P, atol=1e-12)
    sm, sd = mk.customer_summary(w, con=duckdb_con), mk.customer_summary(w, cache="disk", con=duckdb_con)
    pd.testing.assert_frame_equal(mk.entry_states(sm, con=duckdb_con), mk.entry_states(sd, con=duckdb_con),
                                  check_dtype=False)
    mem.release(); sm.release()
    del disk, kb, fb, sd
    gc.collect()
    assert not list(tmp_path.rglob("*.parquet"))
    with pytest.raises(ValueError, match="cache must be"):
        mk.transitions(w, cache="memory", con=duckdb_con)


def test_engine_summaries_match_the_long_table(duckdb_con):
    w = mk.simulate_waves(500, {"a": P_A, "b": P_B}, months=10, seed=4)
    seg = w.groupby("user_id")["segment"].first()
    wt = pd.Series(np.linspace(0.5, 2.0, len(seg)), index=seg.index)
    s = mk.customer_summary(w, con=duckdb_con)
    last = w.sort_values("month").groupby("user_id").tail(1)
    got = mk.last_states(s, seg, wt, con=duckdb_con).groupby(["segment", "state"])["w"].sum()
    ref = last.assign(w=last.user_id.map(wt)).groupby(["segment", "engagement_state"])["w"].sum()
    np.testing.assert_allclose(got.sort_index().to_numpy(), ref.sort_index().to_numpy())
    rt = mk.reward_table(s, seg, wt, con=duckdb_con).set_index(["segment", "state"])
    ww = w.assign(w=w.user_id.map(wt))
    ref_r = (ww.spend * ww.w).groupby([ww.segment, ww.engagement_state]).sum()
    np.testing.assert_allclose(rt.loc[ref_r.index, "wr"].to_numpy(), ref_r.to_numpy())
    e = mk.entry_states(s, con=duckdb_con)
    assert e["customers"].sum() == 500 and (e["customers"] == e["weight"]).all()
    conf = mk.label_confusion(w, w.rename(columns={"engagement_state": "true_state"}), con=duckdb_con)
    np.testing.assert_allclose(np.diag(conf.to_numpy()), 1.0)


def test_segment_without_closings_gets_its_absorption_time_from_the_prior():
    """A segment whose customers never close their account (as when segments are assigned from behaviour
    after the closings: closed accounts all land in one segment) shows zero closings, and its expected time to
    churn is the prior's pseudo-counts against its observed months: orders of magnitude above the pooled one."""
    P_open = P_A.copy()
    P_open[:3, 2] += P_open[:3, 3]; P_open[:3, 3] = 0.0  # no exit: closings moved to dormant
    w = mk.simulate_waves(3000, {"open": P_open, "b": P_B}, months=24, seed=5)
    c = mk.customer_transition_counts(w)
    seg = w.groupby("user_id")["segment"].first()
    fit = mk.fit_chains(c, seg, n_boot=0)
    cl = fit.closings().set_index("segment")
    closed_b = ((c.from_state < 3) & (c.to_state == 3) & c.user_id.map(seg).eq("b"))
    assert cl.loc["open", "closings"] == 0
    assert cl.loc["b", "closings"] == pytest.approx(float(c.n[closed_b].sum()))
    assert cl.loc["b", "exposure"] == pytest.approx(float(c.n[(c.from_state < 3) & c.user_id.map(seg).eq("b")].sum()))
    ab = fit.absorption().set_index(["segment", "from"])["expected_months_to_churn"]
    pooled = mk.absorbing_analysis(fit.pooled).expected_steps[0]
    assert ab[("open", "active")] > 20 * pooled and ab[("b", "active")] < 2 * pooled


def test_latent_chain_on_a_sample_of_customers(duckdb_con):
    """restrict cuts the long table to the given customers on the engine: its transitions and counts are those
    of the pandas subset (whole paths kept), and the chain fitted there differs from the all-customer one."""
    w = mk.simulate_waves(2000, {"a": P_A, "b": P_B}, months=12, seed=8)
    seg = w.groupby("user_id")["segment"].first()
    ids = seg.index.to_numpy()[np.random.default_rng(0).choice(len(seg), 300, replace=False)]
    part = mk.transitions(mk.restrict(w, ids, con=duckdb_con), con=duckdb_con)
    got = mk.customer_transition_counts(part, con=duckdb_con)
    ref = mk.customer_transition_counts(w[w.user_id.isin(ids)])
    key = ["user_id", "from_state", "to_state"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True)[key + ["n"]],
                                  ref.sort_values(key).reset_index(drop=True)[key + ["n"]], check_dtype=False)
    assert set(got.user_id) == set(ids)
    sub = mk.fit_chains(mk.chain_counts(part, seg, sample=None, con=duckdb_con), n_boot=0)
    full = mk.fit_chains(mk.chain_counts(mk.transitions(w, con=duckdb_con), seg, sample=None, con=duckdb_con), n_boot=0)
    assert sum(sub.n_customers.values()) == 300 and np.abs(sub.P - full.P).max() > 1e-4
