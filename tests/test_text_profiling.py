"""Bayesian consumer profiling (De Bruyn & Otter 2022) vs the simple count, on planted lists.

The paper's point, checked here: when membership depends on the unobserved characteristic S (not on the
observed X), the simple count is pulled towards the population and Bayesian profiling recovers the list's
profile; when membership depends on X only, the simple count is right. With a covariate Z that drives
membership directly, the stratified form recovers what the plain form cannot.
"""
import numpy as np
import pandas as pd
import pytest

from helpers.text import profiling as PR

LEVELS = ["low", "mid", "high"]


def _population(n=40000, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.integers(0, 5, n)                       # e.g. household size
    x2 = rng.integers(0, 4, n)                       # e.g. education
    z = rng.integers(0, 2, n)                        # e.g. gender
    # S depends on X (so X carries information about S), not on Z
    logit = np.column_stack([np.zeros(n), 0.4 * x1 - 0.2 * x2, 0.8 * x1 + 0.3 * x2 - 2.0])
    p = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
    s = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    return pd.DataFrame({"x1": x1, "x2": x2, "z": z, "S": np.array(LEVELS)[s]}), rng


def _shares(frame, m):
    return frame.loc[m, "S"].value_counts(normalize=True).reindex(LEVELS).to_numpy()


def test_bayes_recovers_a_list_selected_on_the_unobserved_characteristic():
    pop, rng = _population()
    p_in = np.where(pop["S"].eq("high"), 0.5, np.where(pop["S"].eq("mid"), 0.15, 0.03))
    m = rng.random(len(pop)) < p_in
    truth = _shares(pop, m)
    r = PR.profile_audience(pop, m, "S", ["x1", "x2"], levels=LEVELS, seed=1)
    err_bayes = np.abs(r.table["estimate"] - truth).mean()
    err_simple = np.abs(r.table["simple"] - truth).mean()
    err_base = np.abs(r.table["base"] - truth).mean()
    assert err_bayes < 0.03
    assert err_simple > 2.5 * err_bayes and err_base > err_simple      # simple count: pulled to the base
    assert ((r.table["ci_low"] <= truth) & (truth <= r.table["ci_high"])).mean() >= 2 / 3
    assert r.table["estimate"].sum() == pytest.approx(1.0) and r.table["simple"].sum() == pytest.approx(1.0)
    assert 0.1 < r.strata["acceptance"].iloc[0] < 0.6


def test_simple_count_is_right_when_membership_depends_on_the_observed_cells_only():
    pop, rng = _population(seed=1)
    m = rng.random(len(pop)) < 0.05 + 0.1 * pop["x1"].to_numpy()
    truth = _shares(pop, m)
    r = PR.profile_audience(pop, m, "S", ["x1", "x2"], levels=LEVELS, seed=2)
    assert np.abs(r.table["simple"] - truth).mean() < 0.01


def test_strata_absorb_a_covariate_that_drives_membership_directly():
    pop, rng = _population(seed=2)
    # membership depends on S and, directly, on z; z is also associated with the cells through x1 here
    pop["x1"] = np.where(pop["z"].eq(1), np.minimum(pop["x1"] + 1, 4), pop["x1"])
    p_in = np.where(pop["S"].eq("high"), 0.3, 0.08) * np.where(pop["z"].eq(1), 3.0, 0.3)
    m = rng.random(len(pop)) < np.minimum(p_in, 1)
    truth = _shares(pop, m)
    plain = PR.profile_audience(pop, m, "S", ["x1", "x2", "z"], levels=LEVELS, seed=3)
    strat = PR.profile_audience(pop, m, "S", ["x1", "x2"], strata=["z"], levels=LEVELS, seed=3)
    e_plain = np.abs(plain.table["estimate"] - truth).mean()
    e_strat = np.abs(strat.table["estimate"] - truth).mean()
    assert e_strat < 0.03 and e_plain > 1.5 * e_strat
    assert set(strat.strata["stratum"]) == {"0", "1"} and strat.strata["list_share"].sum() == pytest.approx(1.0)


def test_prior_centred_on_population_margins_dominates_a_tiny_list():
    pop, rng = _population(seed=3)
    ref = PR.reference(PR.cell_labels(pop, ["x1"]), pop["S"], levels=LEVELS)
    counts = np.zeros(len(ref.joint))
    counts[0] = 2.0
    tight = PR.bayesian_profile(counts, ref, prior_sd=0.05, seed=0)
    loose = PR.bayesian_profile(counts, ref, prior_sd=3.0, seed=0)
    # with a tight prior the list's generating profile stays at the margins; a loose one follows the cell
    assert np.abs(tight.pi_mean - ref.margins()).max() < 0.03
    assert np.abs(loose.pi_mean - ref.margins()).max() > 0.1


def test_bad_input_is_named():
    pop, _ = _population(2000)
    with pytest.raises(ValueError, match="observed|column"):
        PR.profile_audience(pop, np.ones(len(pop), bool), "S", ["nope"])
    with pytest.raises(ValueError, match="empty"):
        PR.profile_audience(pop, np.zeros(len(pop), bool), "S", ["x1"])
    ref = PR.reference(PR.cell_labels(pop, ["x1"]), pop["S"], levels=LEVELS)
    with pytest.raises(ValueError, match="counts"):
        PR.bayesian_profile(np.ones(3), ref)
    with pytest.raises(ValueError, match="prior_sd"):
        PR.bayesian_profile(np.ones(len(ref.joint)), ref, prior_sd=0)
    with pytest.raises(ValueError, match="levels"):
        PR.reference(PR.cell_labels(pop, ["x1"]), pop["S"], levels=["low", "mid"])
