"""Incrementality: difference in means with CUPED, power and sample size, simulated error rates, geo lift.

* :func:`diff_in_means` - treated minus control mean with a Welch standard error; with a pre-period
  covariate ``x`` it applies CUPED (``y - theta (x - mean x)``, ``theta = cov(y, x) / var(x)`` pooled).
* :func:`sample_size_arcsine` / :func:`power_arcsine` - two proportions by Cohen's arcsine transform
  (test: 10% -> 12% at two-sided alpha 0.05 and 80% power needs 3,835 per arm).
* :func:`simulate_rejection` - vectorised simulation of many tests: the false-positive rate under no
  effect and the power at a planted effect (both checked, not assumed: GeoLift's "power 100%" bug).
* :func:`geo_lift` - synthetic control of the dark (holdout) geos from the others: a scale weight fitted on
  the pre-period, the lift summed over the test window and an interval from the pre-period residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class TestResult:
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    n_treat: int
    n_control: int
    theta: float | None = None       # CUPED coefficient (None without covariate)
    variance_reduction: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def diff_in_means(y, treat, x=None, alpha: float = 0.05) -> TestResult:
    """Mean of ``y`` among ``treat`` minus among the rest; CUPED when a pre-period covariate ``x`` is given."""
    y = np.asarray(y, float)
    t = np.asarray(treat, bool)
    theta = vr = None
    if x is not None:
        x = np.asarray(x, float)
        v = np.var(x)
        theta = float(np.cov(y, x)[0, 1] / v) if v > 0 else 0.0
        adj = y - theta * (x - x.mean())
        vr = float(1 - np.var(adj) / np.var(y)) if np.var(y) > 0 else 0.0
        y = adj
    a, b = y[t], y[~t]
    est = a.mean() - b.mean()
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = stats.norm.ppf(1 - alpha / 2)
    p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else float("nan")
    return TestResult(float(est), se, float(est - z * se), float(est + z * se), p, int(t.sum()),
                      int((~t).sum()), theta, vr)


def cohen_h(p1: float, p2: float) -> float:
    return float(2 * np.arcsin(np.sqrt(p2)) - 2 * np.arcsin(np.sqrt(p1)))


def sample_size_arcsine(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8,
                        two_sided: bool = True) -> int:
    """Per-arm sample size to detect ``p1 -> p2`` (arcsine method), rounded up."""
    za = stats.norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha)
    zb = stats.norm.ppf(power)
    # Var(2 asin sqrt(p_hat)) = 1/n per arm, so the difference of two arms has variance 2/n
    return int(np.ceil(2 * ((za + zb) / cohen_h(p1, p2)) ** 2 - 1e-9))


def power_arcsine(n_per_arm: float, p1: float, p2: float, alpha: float = 0.05) -> float:
    """Power of the two-sided arcsine test with ``n_per_arm`` in each arm."""
    za = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.cdf(abs(cohen_h(p1, p2)) * np.sqrt(n_per_arm / 2) - za))


def _welch_reject(s1, q1, n1, s0, q0, n0, alpha):
    m1, m0 = s1 / n1, s0 / n0
    v1 = (q1 - n1 * m1 ** 2) / (n1 - 1)
    v0 = (q0 - n0 * m0 ** 2) / (n0 - 1)
    se = np.sqrt(v1 / n1 + v0 / n0)
    z = np.where(se > 0, (m1 - m0) / np.where(se > 0, se, 1), 0.0)
    return np.abs(z) > stats.norm.ppf(1 - alpha / 2)


def _random_subsets(rng: np.random.Generator, b: int, n: int, n1: int) -> np.ndarray:
    """(b, n) boolean rows, each marking a uniformly random subset of ``n1`` of ``n`` units: the ``n1``
    smallest of n uniforms (the same set as a full argsort, in linear time): the uniforms at or below each
    row's ``n1``-th smallest value (``np.partition``, cheaper than placing argpartition's indices); a row
    where that value is tied, and so marks more than ``n1``, takes argpartition's set as before."""
    if n1 <= 0:
        return np.zeros((b, n), bool)
    u = rng.random((b, n))
    if n1 >= n:
        return np.ones((b, n), bool)
    t = u <= np.partition(u, n1 - 1, axis=1)[:, n1 - 1:n1]
    for i in np.flatnonzero(t.sum(1) != n1):
        t[i] = False
        t[i, np.argpartition(u[i], n1 - 1)[:n1]] = True
    return t


def simulate_rejection(mu_control, mu_treat=None, treat_share: float = 0.5, n_sims: int = 2000,
                       alpha: float = 0.05, seed: int = 0, family: str = "poisson",
                       batch: int = 250) -> float:
    """Share of ``n_sims`` simulated randomised tests that reject (vectorised in batches).

    ``mu_control``/``mu_treat``: per-unit expected outcomes without/with treatment (``mu_treat`` None:
    no effect, the false-positive rate). Outcomes are Poisson (counts) or Bernoulli (``family="binomial"``).
    Each simulation re-randomises the assignment.
    """
    rng = np.random.default_rng(seed)
    mu0 = np.asarray(mu_control, float)
    mu1 = mu0 if mu_treat is None else np.asarray(mu_treat, float)
    n = len(mu0)
    n1 = int(round(treat_share * n))
    rejections = 0
    done = 0
    while done < n_sims:
        b = min(batch, n_sims - done)
        t = _random_subsets(rng, b, n, n1)
        mu = np.where(t, mu1, mu0)
        y = rng.poisson(mu) if family == "poisson" else (rng.random((b, n)) < mu).astype(float)
        y2 = y * y
        s1, q1 = (y * t).sum(1), (y2 * t).sum(1)
        s0, q0 = y.sum(1) - s1, y2.sum(1) - q1     # counts: the same sums as over ~t, in one pass less
        rejections += int(_welch_reject(s1, q1, n1, s0, q0, n - n1, alpha).sum())
        done += b
    return rejections / n_sims


def aa_false_positive_rate(y, n_sims: int = 2000, alpha: float = 0.05, seed: int = 0,
                           batch: int = 250) -> float:
    """Rejection rate of random 50/50 splits of the observed outcomes ``y`` (A/A tests, no effect)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, float)
    n = len(y)
    n1 = n // 2
    rej = done = 0
    while done < n_sims:
        b = min(batch, n_sims - done)
        t = _random_subsets(rng, b, n, n1)
        s1, q1 = t @ y, t @ (y ** 2)
        s0, q0 = y.sum() - s1, (y ** 2).sum() - q1
        rej += int(_welch_reject(s1, q1, n1, s0, q0, n - n1, alpha).sum())
        done += b
    return rej / n_sims


# --- geo lift ------------------------------------------------------------------------------------
@dataclass
class GeoLift:
    lift: float                  # conversions lost by the treated (dark) geos over the test window
    se: float
    ci_low: float
    ci_high: float
    weight: float
    series: pd.DataFrame         # day, treated, synthetic, test
    pre_rmse: float

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "series"}


def geo_lift(daily: pd.DataFrame, treated_geos, test_start, alpha: float = 0.05) -> GeoLift:
    """Synthetic-control lift of the treated geos (which went dark at ``test_start``).

    ``daily``: columns ``geo, date, conversions`` (every geo x day, zeros included). The synthetic
    treated series is ``w * (sum of control geos)`` with ``w`` fitted on the pre-period (the equal-weight
    synthetic control: with noisy count series per-geo weights overfit). The lift is the synthetic minus
    the actual conversions summed over the test window; its standard error combines the test-window
    residual variance and the uncertainty of ``w``, both from the pre-period residuals.
    """
    d = daily.copy()
    d["date"] = pd.to_datetime(d["date"])
    treated = d["geo"].isin(set(treated_geos))
    tr = d[treated].groupby("date")["conversions"].sum()
    co = d[~treated].groupby("date")["conversions"].sum()
    idx = tr.index.union(co.index)
    tr, co = tr.reindex(idx, fill_value=0).astype(float), co.reindex(idx, fill_value=0).astype(float)
    test = idx >= pd.Timestamp(test_start)
    if test.sum() == 0 or (~test).sum() < 3:
        raise ValueError("geo_lift: need at least 3 pre-period days and one test day; check test_start.")
    w = tr[~test].sum() / co[~test].sum()
    resid = tr[~test] - w * co[~test]
    T0, T1 = int((~test).sum()), int(test.sum())
    s2 = float((resid ** 2).sum() / (T0 - 1))
    synth = w * co
    lift = float((synth[test] - tr[test]).sum())
    var = s2 * (T1 + T0 * (co[test].sum() / co[~test].sum()) ** 2)
    se = float(np.sqrt(var))
    z = stats.norm.ppf(1 - alpha / 2)
    series = pd.DataFrame({"date": idx, "treated": tr.to_numpy(), "synthetic": synth.to_numpy(), "test": test})
    return GeoLift(lift, se, lift - z * se, lift + z * se, float(w), series, float(np.sqrt(s2)))


def geo_daily(conversions: pd.DataFrame, assignment: pd.DataFrame, dates) -> pd.DataFrame:
    """Daily conversions per geo (every geo x day, zeros filled) from the user-level conversion log."""
    geo = assignment.set_index("user_id")["geo"]
    c = conversions.assign(geo=conversions["user_id"].map(geo), date=pd.to_datetime(conversions["date"]))
    g = c.groupby(["geo", "date"])["conversions"].sum()
    full = pd.MultiIndex.from_product([sorted(assignment["geo"].unique()), pd.to_datetime(pd.Series(dates))],
                                      names=["geo", "date"])
    return g.reindex(full, fill_value=0).reset_index()
