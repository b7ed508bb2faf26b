"""Fay-Herriot REML/EBLUP against the published samplics milk-expenditure example (test data only)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.stats.small_area import fay_herriot, mse_gain_vs_truth

MILK = Path(__file__).parent / "data" / "expenditure_on_milk.csv"


def test_milk_reml_area_variance_and_eblup():
    m = pd.read_csv(MILK)
    X = pd.get_dummies(m["major_area"], drop_first=True)
    fit = fay_herriot(m["direct_est"], m["std_error"] ** 2, X, m["small_area"])
    assert fit.converged
    assert fit.area_variance == pytest.approx(0.01855, abs=5e-6)
    assert fit.table["eblup"].iloc[0] == pytest.approx(1.02197, abs=5e-6)
    # shrinkage: every EBLUP lies between its direct and its synthetic value; MSE below the direct variance
    t = fit.table
    lo, hi = np.minimum(t.direct, t.synthetic), np.maximum(t.direct, t.synthetic)
    assert ((t.eblup >= lo - 1e-12) & (t.eblup <= hi + 1e-12)).all()
    assert (t.mse < t.direct_var).all()


def test_simulated_eblup_beats_direct():
    rng = np.random.default_rng(3)
    m = 60
    x = rng.normal(size=m)
    theta = 1 + 0.5 * x + rng.normal(0, 0.2, m)
    D = rng.uniform(0.02, 0.3, m)
    y = theta + rng.normal(0, np.sqrt(D))
    fit = fay_herriot(y, D, x[:, None])
    err_eb = np.mean((fit.table.eblup - theta) ** 2)
    err_dir = np.mean((y - theta) ** 2)
    assert err_eb < err_dir
    assert 0 < fit.mse_gain() < 1
    gain = mse_gain_vs_truth(y, fit.table.eblup, theta)
    assert gain == pytest.approx(1 - err_eb / err_dir) and gain > 0.3
    # the noisiest half of the areas gains the most (shrinkage is strongest there)
    noisy = D > np.median(D)
    assert mse_gain_vs_truth(y[noisy], fit.table.eblup[noisy], theta[noisy]) > gain


def test_bad_input_named():
    with pytest.raises(ValueError, match="sampling variances"):
        fay_herriot([1.0, 2.0, 3.0], [0.1, 0.0, 0.1])


def test_adjusted_reml_stays_positive_where_reml_truncates():
    rng = np.random.default_rng(0)
    m = 20
    D = np.full(m, 0.5)
    y = 1 + rng.normal(0, 0.02, m) + rng.normal(0, np.sqrt(D)) * 0.3   # less spread than the sampling noise
    reml = fay_herriot(y, D)
    adj = fay_herriot(y, D, method="adjusted")
    assert reml.area_variance == 0.0
    assert adj.area_variance > 0 and adj.converged
    assert (adj.table.gamma > 0).all()


def test_mse_gain_vs_truth_values():
    assert mse_gain_vs_truth([1.0, 2.0], [1.0, 2.0], [0.0, 0.0]) == 0.0
    assert mse_gain_vs_truth([1.0, 2.0], [0.0, 0.0], [0.0, 0.0]) == 1.0
    assert mse_gain_vs_truth([1.0, np.nan], [2.0, 0.0], [0.0, 0.0]) == -3.0     # NaN area left out
    assert np.isnan(mse_gain_vs_truth([np.nan], [1.0], [0.0]))
    with pytest.raises(ValueError, match="direct"):
        mse_gain_vs_truth([1.0], [1.0, 2.0], [0.0])


def _mixture_design(reps: int, overstate: float, n_out: int, seed: int):
    """51 areas in 4 groups (group means as covariates), area sd 0.05, precise direct estimates (variance
    0.0005-0.003); ``n_out`` areas get a strong effect of their own (+0.25) and the stated sampling variances
    are ``overstate`` times the real ones - the two departures diagnosed on the 1M-user co-engagement lift."""
    rng = np.random.default_rng(seed)
    m = 51
    g = np.repeat([0, 1, 2, 3], [13, 13, 13, 12])
    X = np.eye(4)[g][:, 1:]
    for _ in range(reps):
        theta = 0.3 + 0.05 * g + rng.normal(0, 0.05, m)
        theta[rng.choice(m, n_out, replace=False)] += 0.25
        D_true = rng.uniform(0.0005, 0.003, m)
        y = theta + rng.normal(0, np.sqrt(D_true))
        yield y, overstate * D_true, X, theta


def _pooled_gains(design, **kw):
    sq = np.zeros(3)   # direct, plain EBLUP, limited EBLUP
    for y, D, X, theta in design:
        plain = fay_herriot(y, D, X, method="adjusted", **kw).table
        lim = fay_herriot(y, D, X, method="adjusted", limit_se=1.0, **kw).table
        sq += [np.sum((y - theta) ** 2), np.sum((plain.eblup - theta) ** 2), np.sum((lim.eblup - theta) ** 2)]
        # the limited EBLUP never leaves one standard error of the direct estimate; limited areas report D_i
        assert (np.abs(lim.eblup - y) <= np.sqrt(D) + 1e-12).all()
        assert np.allclose(lim.mse[lim.limited], D[lim.limited.to_numpy()])
        assert np.allclose(lim.eblup[~lim.limited], plain.eblup[~lim.limited])
    return 1 - sq[1] / sq[0], 1 - sq[2] / sq[0]


def test_limited_translation_where_plain_shrinkage_loses_against_direct():
    # precise direct estimates, 3 areas far off the regression, sampling variances stated 3x too large:
    # the plain EBLUP pulls the outlying areas off their precise direct values and loses against direct
    plain, limited = _pooled_gains(_mixture_design(60, overstate=3.0, n_out=3, seed=0))
    assert plain < -0.1
    assert limited > 0 and limited > plain + 0.25


def test_limited_translation_keeps_the_gain_when_the_model_holds():
    plain, limited = _pooled_gains(_mixture_design(60, overstate=1.0, n_out=0, seed=1))
    assert plain > 0.3
    assert limited > 0.9 * plain


def test_standardised_residuals_and_limit_edge_cases():
    # under the model the standardised GLS residuals have variance about 1 (pooled over 60 fits)
    r = np.concatenate([fay_herriot(y, D, X).table.std_resid for y, D, X, _ in _mixture_design(60, 1.0, 0, 2)])
    assert 0.85 < np.mean(r ** 2) < 1.15
    m = pd.read_csv(MILK)
    X = pd.get_dummies(m["major_area"], drop_first=True)
    plain = fay_herriot(m["direct_est"], m["std_error"] ** 2, X)
    assert not plain.table.limited.any()
    zero = fay_herriot(m["direct_est"], m["std_error"] ** 2, X, limit_se=0.0)
    assert np.allclose(zero.table.eblup, m["direct_est"]) and zero.area_variance == plain.area_variance
    with pytest.raises(ValueError, match="limit_se"):
        fay_herriot(m["direct_est"], m["std_error"] ** 2, X, limit_se=-1)
