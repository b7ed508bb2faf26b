"""Published checks of the media formulas: Sainsbury, binomial and beta-binomial reach, Markov removal
effects, arcsine sample size and the false-positive rate of the difference-in-means test."""

import numpy as np
import pandas as pd
import pytest

from helpers.media import attribution as AT
from helpers.media import experiments as XP
from helpers.media import reach as RC


def test_sainsbury_two_media():
    assert RC.sainsbury([0.45, 0.30]) == pytest.approx(0.615, abs=1e-12)


def test_binomial_400_spots():
    assert RC.binomial_reach(400, 0.001) == pytest.approx(0.3298, abs=5e-5)


def test_bbd_textbook_example():
    d = RC.BBD.from_rating_and_reach2(0.10, 0.16)
    assert (d.alpha, d.beta) == pytest.approx((0.2, 1.8), abs=1e-9)
    for n, r in {5: 0.2595, 10: 0.3401, 20: 0.4182}.items():
        assert d.reach(n) == pytest.approx(r, abs=5e-5)
    assert RC.published_bbd_check() < 5e-5


def test_bbd_fit_recovers_parameters():
    from scipy import stats
    x = stats.betabinom.rvs(30, 0.5, 2.0, size=20000, random_state=1)
    d = RC.BBD.fit(x, 30)
    assert d.alpha == pytest.approx(0.5, rel=0.1) and d.beta == pytest.approx(2.0, rel=0.1)


def test_bbd_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="not beta-binomial"):
        RC.BBD.from_rating_and_reach2(0.10, 0.30)


def test_markov_removal_effect_published_example():
    tp = pd.DataFrame({"path": ["c1>c2>c3", "c1", "c2>c3"], "converted": [True, False, False]})
    agg = AT.aggregate_paths(tp)
    m = AT.markov(agg, ["c1", "c2", "c3"])
    assert m.attrs["conversion_probability"] == pytest.approx(1 / 3)
    assert m["share"].tolist() == pytest.approx([0.2, 0.4, 0.4])
    m2 = AT.markov(agg, ["c1", "c2", "c3"], order=2)
    assert m2.attrs["conversion_probability"] == pytest.approx(1 / 3)


def test_first_last_touch_and_shapley():
    tp = pd.DataFrame({"path": ["a>b", "b", "a"], "converted": [True, True, False]})
    r = AT.attribute(tp, ["a", "b"], n_boot=5).table.set_index(["method", "channel"])["share"]
    assert r["first_touch", "a"] == pytest.approx(0.5) and r["last_touch", "b"] == pytest.approx(1.0)
    # Shapley of "conversions on paths touching only S": a>b splits 1/2-1/2, b takes its own
    assert r["shapley", "b"] == pytest.approx(0.75)


def test_arcsine_sample_size_published():
    assert XP.sample_size_arcsine(0.10, 0.12, alpha=0.05, power=0.80) == 3835
    assert XP.power_arcsine(3835, 0.10, 0.12) == pytest.approx(0.80, abs=0.002)


def test_false_positive_rate_under_zero_effect():
    fpr = XP.simulate_rejection(np.full(2000, 0.1), None, n_sims=2000, family="binomial", seed=3)
    assert abs(fpr - 0.05) <= 0.015


def test_simulated_power_matches_arcsine():
    n = 3835
    p = XP.simulate_rejection(np.full(2 * n, 0.10), np.full(2 * n, 0.12), n_sims=1000,
                              family="binomial", seed=5)
    assert p == pytest.approx(0.80, abs=0.05)


def test_cuped_reduces_variance_and_keeps_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20000)
    t = rng.random(20000) < 0.5
    y = 2 * x + 0.3 * t + rng.normal(size=20000)
    plain, cuped = XP.diff_in_means(y, t), XP.diff_in_means(y, t, x)
    assert cuped.se < 0.6 * plain.se
    assert cuped.ci_low <= 0.3 <= cuped.ci_high
