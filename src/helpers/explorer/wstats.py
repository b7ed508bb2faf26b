"""The Explorer's weighted figures, each one call into :mod:`helpers.stats.core` (no estimator of its own).

A mean, a share or an index of an audience (rows of the panel) against all customers is one row of
:func:`helpers.stats.core.index_estimates` with the audience as group 1 and the rest as group 0: the group's
weighted mean (``segment_value``), its linearised standard error (``se_value``), the index and its interval.
Shares get the core's logit interval; medians are :func:`helpers.stats.core.weighted_quantile`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from ..stats import core


def _membership(n: int, rows: np.ndarray) -> np.ndarray:
    """Boolean mask of length ``n`` from row positions or a boolean mask."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"the audience mask has {rows.shape[0]} entries for {n} customers")
        return rows
    m = np.zeros(n, bool)
    m[rows.astype(int)] = True
    return m


def audience_estimate(values: np.ndarray, weights: np.ndarray, rows: np.ndarray, confidence: float = 0.95,
                      count_cells: bool = False) -> dict:
    """The core's estimate of ``values`` for the audience ``rows`` against all customers: ``mean``,
    ``se``, ``base`` (all customers' mean), ``index``, ``ci_low``, ``ci_high`` (of the index), ``n`` (audience
    members observed), ``n_eff``. ``NaN`` values are not observed (left out of audience and base)."""
    y = np.asarray(values, float)
    member = _membership(len(y), rows).astype(np.int64)
    w = np.asarray(weights, float)
    if not member.any():
        raise ValueError("the audience is empty")
    # two groups (rest 0, audience 1); a whole-panel audience has an empty rest, which the core allows
    r = core.index_table(core.moments(y, member, w, 2), [0, 1], confidence, count_cells).iloc[1]
    return {"mean": float(r["segment_value"]), "se": float(r["se_value"]), "base": float(r["base_value"]),
            "index": float(r["index"]), "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
            "n": int(r["n_segment"]), "n_eff": float(r["n_eff_segment"])}


def weighted_mean_ci(values: np.ndarray, weights: np.ndarray, confidence: float = 0.95) -> dict:
    """Weighted mean with its linearised (ratio-estimator) interval and the unweighted / effective n."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return {"value": None, "low": None, "high": None, "n": 0, "n_eff": 0.0}
    e = audience_estimate(v[ok], w[ok], np.ones(int(ok.sum()), bool), confidence)
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    return {"value": e["mean"], "low": e["mean"] - z * e["se"], "high": e["mean"] + z * e["se"], "n": e["n"],
            "n_eff": e["n_eff"]}


def weighted_share_ci(member: np.ndarray, weights: np.ndarray, confidence: float = 0.95) -> dict:
    """Weighted share of ``member`` rows with the core's logit interval (linearised standard error)."""
    y = np.asarray(member, float)
    e = audience_estimate(y, weights, np.ones(len(y), bool), confidence)
    lo, hi = core.logit_interval(np.array([e["mean"]]), np.array([e["se"]]), confidence)
    return {"value": e["mean"], "low": float(lo[0]), "high": float(hi[0])}


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of the observed values (NaN when none is observed)."""
    v = np.asarray(values, float)
    if not np.isfinite(v).any():
        return float("nan")
    return audience_estimate(v, weights, np.ones(len(v), bool))["mean"]


def weighted_mean_sd(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted mean and (population) standard deviation of the observed values, from the core's sufficient
    statistics of ``y`` and ``y**2`` (``sd**2 = mean(y**2) - mean(y)**2``)."""
    v = np.asarray(values, float)
    w = np.asarray(weights, float)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return float("nan"), float("nan")
    g = np.zeros(int(ok.sum()), np.int64)
    m1, m2 = (core.moments(x, g, w[ok], 1).iloc[0] for x in (v[ok], v[ok] ** 2))
    mean = m1["ty"] / m1["t"]
    return float(mean), float(np.sqrt(max(m2["ty"] / m2["t"] - mean ** 2, 0.0)))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """:func:`helpers.stats.core.weighted_quantile` at 0.5 (NaN when nothing is observed)."""
    v = np.asarray(values, float)
    if not np.isfinite(v).any():
        return float("nan")
    return core.weighted_quantile(v, np.asarray(weights, float), 0.5)
