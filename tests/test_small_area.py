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
