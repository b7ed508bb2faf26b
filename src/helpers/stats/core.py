"""The one implementation of "index of an audience against its base, with interval and test".

Every stage that profiles an audience (a segment, a lookalike, the users matching a question) against a
base calls this module: :mod:`helpers.affinity` (the segment x attribute crosstab, on DuckDB or Spark),
:mod:`helpers.questions` (audience questions on the warehouse), :mod:`helpers.personas` (persona cards and
names) and, through the artifacts they write, the Explorer. One cell therefore has one index, one interval
and one test wherever it is shown.

What is computed, for a variable ``y`` (a metric, or a 0/1 indicator of an attribute value) observed on the
units of a base partitioned into groups (segments, or audience / rest):

* ``index = 100 * mean_w(y | group) / mean_w(y | base)`` from weighted totals;
* a 95 % interval from Taylor linearisation (delta method) of ``log(index)`` as a smooth function of four
  weighted totals, which accounts for the group being part of the base (:func:`index_arrays`);
* a two-sided linearised Wald test of the group against the *rest of the base*;
* Benjamini-Hochberg q-values over a whole table (:func:`fdr_qvalues`);
* a base-size rule (:class:`BaseSizeRule`) on the unweighted cell count, the Kish effective n and the
  relative standard error (RSE) of the group's estimate on its effective base, flagging cells ``"caution"``
  or ``"suppressed"`` as syndicated panels and statistical offices do;
* the action tier (:func:`assign_tier`: index < 80 de-prioritise, 80-120 neutral, > 120 concentrate -- the
  data dictionary calls the last one "sweet spot", which is the label written in tables);
* weighted quantiles, a weighted mean with its interval (:func:`weighted_mean_ci`) and the Kish
  effective sample size.

Everything is a function of per-group *sufficient statistics* (:data:`MOMENTS`), so an execution engine
(DuckDB, Spark) only returns one small group-by and the numbers are the same for every engine. Variances
treat weights as fixed and units as independent draws (with-replacement approximation); they ignore the
variability of estimated (raked) weights.

Cells whose variable was used to *build* the groups (the clustering features of a segmentation) can be
marked ``descriptive``: their index and interval are reported, but they get no p-value, are left out of
the FDR family and are never "significant" -- a cluster differs from the rest on the features it was
built from by construction, so a test there carries no information (:func:`finalize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

# --- constants ------------------------------------------------------------------------------------------------
#: Action-tier thresholds of the data dictionary (the one place they are defined).
TIER_LOW, TIER_HIGH = 80.0, 120.0
#: Tier labels written in tables: > TIER_HIGH concentrate (the dictionary's "sweet spot"), < TIER_LOW
#: de-prioritise, in between neutral; a suppressed cell has an empty tier.
TIER_SWEET, TIER_NEUTRAL, TIER_LOW_LABEL = "sweet spot", "neutral", "de-prioritise"
TIER_LABELS = {"high": TIER_SWEET, "neutral": TIER_NEUTRAL, "low": TIER_LOW_LABEL}

#: Per-group sufficient statistics of one variable ``y`` over the units where it is observed (finite,
#: weight > 0): unweighted count, sums of ``w``, ``w y``, ``w^2``, ``w^2 y``, ``w^2 y^2``, and the same count
#: and weight sums restricted to ``y != 0`` (the cell of a 0/1 indicator).
MOMENTS = ("n", "t", "ty", "t2", "t2y", "t2yy", "n_nz", "t_nz", "t2_nz")

#: Columns of :func:`profile`.
PROFILE_COLUMNS = ["attribute", "value_label", "audience_mean", "base_mean", "index", "ci_low", "ci_high",
                   "p_value", "q_value", "n_audience", "n_eff_audience", "rse", "base_flag", "tier",
                   "significant"]


# --- small weighted statistics --------------------------------------------------------------------------------
def kish_effective_n(weights: np.ndarray) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of finite, non-negative weights (0 if none)."""
    w = np.asarray(weights, dtype=float)
    w = w[np.isfinite(w)]
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def design_effect(weights: np.ndarray) -> float:
    """Kish design effect of unequal weighting ``n / n_eff = n sum w^2 / (sum w)^2`` (1 for equal weights)."""
    w = np.asarray(weights, dtype=float)
    n_eff = kish_effective_n(w)
    return float(np.isfinite(w).sum() / n_eff) if n_eff > 0 else float("nan")


def weighted_quantile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """Weighted quantile (lower inverse of the weighted empirical CDF) of the finite ``values``.

    The smallest value whose weighted CDF reaches ``q``; the engines compute the same
    (:func:`helpers.affinity.engine_quantiles`).
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    ok = np.isfinite(v) & np.isfinite(w)
    v, w = v[ok], w[ok]
    if v.size == 0:
        raise ValueError("weighted_quantile needs at least one finite value")
    order = np.argsort(v, kind="stable")
    cdf = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(np.searchsorted(cdf, q, side="left"), v.size - 1)])


@dataclass(frozen=True)
class WeightedMean:
    """A weighted mean with its linearised standard error and interval, the weighted SD and the bases."""

    value: float   # weighted mean of the observed values (NaN when none is observed)
    se: float      # linearised (ratio-estimator) standard error of the mean
    low: float     # normal interval value -/+ z se
    high: float
    sd: float      # weighted population standard deviation sqrt(sum w (y - mean)^2 / sum w)
    n: int         # observed units (finite value, finite weight > 0)
    n_eff: float   # Kish effective n of their weights


def weighted_mean_ci(values: np.ndarray, weights: np.ndarray | None = None,
                     confidence: float = 0.95) -> WeightedMean:
    """Weighted mean of the observed values with its linearised interval, weighted SD and unweighted / Kish n.

    Units with a non-finite value or a weight that is not a finite positive number are not observed. The
    mean is the ratio ``sum w y / sum w``; its variance is the Taylor-linearised (sandwich) one that treats
    the weights as fixed survey weights, ``n / (n - 1) sum w^2 (y - mean)^2 / (sum w)^2`` (the same as the
    ``se_value`` of :func:`index_arrays` for a group, and as a weighted least-squares fit of a constant with
    HC1 standard errors). It does not change when every weight is multiplied by a constant, unlike a
    frequency-weight standard error (``statsmodels``' ``DescrStatsW.std_mean``), which agrees with it only
    for equal weights. The interval is ``mean -/+ z se`` with the normal ``z`` of ``confidence``; with one
    observed unit there is no variance estimate (``se``, ``low``, ``high`` NaN).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    y = np.asarray(values, dtype=float).reshape(-1)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.shape != y.shape:
        raise ValueError(f"weights has {w.shape[0]} values for {y.shape[0]} values")
    ok = np.isfinite(y) & np.isfinite(w) & (w > 0)
    y, w = y[ok], w[ok]
    n = int(y.size)
    if n == 0:
        nan = float("nan")
        return WeightedMean(nan, nan, nan, nan, nan, 0, 0.0)
    t = float(w.sum())
    mean = float((w * y).sum() / t)
    e = y - mean  # residuals: no cancellation between sum w^2 y^2 and mean^2 sum w^2 for large means
    se = float(np.sqrt(n / max(n - 1, 1) * ((w * e) ** 2).sum()) / t) if n > 1 else float("nan")
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    return WeightedMean(mean, se, mean - z * se, mean + z * se, float(np.sqrt((w * e * e).sum() / t)), n,
                        float(t * t / (w * w).sum()))


def weighted_mean_sd(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted mean and weighted population standard deviation of the observed values (see
    :func:`weighted_mean_ci`); ``(nan, nan)`` when none is observed."""
    r = weighted_mean_ci(values, weights)
    return r.value, r.sd


def check_weights(w: np.ndarray, name: str = "weight") -> np.ndarray:
    """Weights as floats; raise naming the first bad rows if any is not finite or negative."""
    w = np.asarray(w, dtype=float)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"column {name!r} must hold finite weights >= 0; {int(bad.sum())} rows do not "
                         f"(first row positions: {rows}). Fix or drop them before computing indices.")
    return w


# --- sufficient statistics ----------------------------------------------------------------------------------------
def moments(y: np.ndarray, codes: np.ndarray, w: np.ndarray, k: int) -> pd.DataFrame:
    """Sufficient statistics (:data:`MOMENTS`) of ``y`` per group code ``0..k-1``.

    Units where ``y`` is not finite or the weight is 0 are left out.
    """
    y, codes, w = np.asarray(y, dtype=float), np.asarray(codes), np.asarray(w, dtype=float)
    obs = np.isfinite(y) & (w > 0)
    y, g, w = y[obs], codes[obs], w[obs]
    bc = lambda v: np.bincount(g, weights=v, minlength=k)  # noqa: E731
    w2 = w * w
    nz = y != 0
    return pd.DataFrame({
        "n": np.bincount(g, minlength=k).astype(float), "t": bc(w), "ty": bc(w * y), "t2": bc(w2),
        "t2y": bc(w2 * y), "t2yy": bc(w2 * y * y), "n_nz": np.bincount(g[nz], minlength=k).astype(float),
        "t_nz": bc(w * nz), "t2_nz": bc(w2 * nz),
    })


def flag_moments(n, t, t2, hn, ht, ht2) -> pd.DataFrame:
    """:data:`MOMENTS` of a 0/1 indicator from the observed totals (``n, t, t2``) and the totals of the units
    holding it (``hn, ht, ht2``): for ``y`` in {0, 1}, ``w y = w 1_y`` and ``w^2 y^2 = w^2 1_y``."""
    f = lambda x: np.nan_to_num(np.asarray(x, dtype=float))  # noqa: E731
    n, t, t2, hn, ht, ht2 = map(f, (n, t, t2, hn, ht, ht2))
    return pd.DataFrame({"n": n, "t": t, "ty": ht, "t2": t2, "t2y": ht2, "t2yy": ht2, "n_nz": hn, "t_nz": ht,
                         "t2_nz": ht2})


# --- the estimator ---------------------------------------------------------------------------------------------------
def index_arrays(n_s, t_s, t_ys, g0, g1, g2, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Index, linearised interval and test of every group against its base, on arrays.

    The groups are on the **last axis** (they partition the base); leading axes are independent tables, so a
    Monte Carlo study evaluates thousands of replicates in one call. Inputs are the per-group moments ``n``,
    ``t = sum w``, ``ty = sum w y``, ``t2 = sum w^2``, ``t2y = sum w^2 y``, ``t2yy = sum w^2 y^2``.

    Returns a dict of arrays of the same shape: ``index, se_log_index, ci_low, ci_high, z, p_value,
    value`` (group mean), ``base_value``, ``rest_value``, ``se_value`` (linearised SE of the group mean) and
    ``rse`` (``se_value / |value|``).

    Notes
    -----
    ``index = 100 (T_ys / T_s) / (T_y / T_n)``. Its log has influence values
    ``u_i = w_i [1_s (y_i / T_ys - 1 / T_s) + 1 / T_n - y_i / T_y]`` and ``Var(log index) = n / (n - 1) sum u_i^2``,
    which expands to ``S0/T_n^2 - 2 S1/(T_n T_y) + S2/T_y^2 + G2/T_ys^2 - 2 G1/(T_ys T_s) + G0/T_s^2
    + 2 [G1/(T_ys T_n) - G2/(T_ys T_y) - G0/(T_s T_n) + G1/(T_s T_y)]`` with the group's ``G`` and the base's ``S``
    sums of ``w^2, w^2 y, w^2 y^2`` (the group terms vanish for a group with no observed unit). The test uses
    ``d = mean_s - mean_rest`` with influence ``w_i [1_s (y_i - mean_s) / T_s - 1_rest (y_i - mean_rest) / T_rest]``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_s, t_s, t_ys, g0, g1, g2 = (np.asarray(a, dtype=float) for a in (n_s, t_s, t_ys, g0, g1, g2))
    tot = lambda a: a.sum(axis=-1, keepdims=True)  # noqa: E731
    n = tot(n_s)
    t_n, t_y, s0, s1, s2 = tot(t_s), tot(t_ys), tot(g0), tot(g1), tot(g2)
    corr = n / np.maximum(n - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m_s, big_m = t_ys / t_s, t_y / t_n
        t_r = t_n - t_s
        m_r = (t_y - t_ys) / t_r
        index = 100 * m_s / big_m
        base_part = s0 / t_n**2 - 2 * s1 / (t_n * t_y) + s2 / t_y**2
        seg_part = (g2 / t_ys**2 - 2 * g1 / (t_ys * t_s) + g0 / t_s**2
                    + 2 * (g1 / (t_ys * t_n) - g2 / (t_ys * t_y) - g0 / (t_s * t_n) + g1 / (t_s * t_y)))
        ss = base_part + np.where(n_s > 0, seg_part, 0.0)
        se_log = np.sqrt(np.maximum(corr * ss, 0))
        in_s = g2 - 2 * m_s * g1 + m_s**2 * g0
        in_r = (s2 - g2) - 2 * m_r * (s1 - g1) + m_r**2 * (s0 - g0)
        var_d = corr * (in_s / t_s**2 + in_r / t_r**2)
        d = m_s - m_r
        z = d / np.sqrt(var_d)
        zq = _st.norm.ppf(0.5 + confidence / 2)
        ok = (t_ys > 0) & np.isfinite(se_log) & (t_s > 0)
        ci_low = np.where(ok, index * np.exp(-zq * se_log), np.nan)
        ci_high = np.where(ok, index * np.exp(zq * se_log), np.nan)
        p = np.where(np.isfinite(z), 2 * _st.norm.sf(np.abs(z)), np.where(d == 0, 1.0, np.nan))
        se_value = np.sqrt(np.maximum(n_s / np.maximum(n_s - 1, 1) * in_s, 0)) / t_s
        rse = np.where(m_s != 0, se_value / np.abs(m_s), np.inf)
    shape = index.shape
    return {"index": index, "se_log_index": se_log, "ci_low": ci_low, "ci_high": ci_high, "z": z,
            "p_value": p, "value": m_s, "base_value": np.broadcast_to(big_m, shape).copy(), "rest_value": m_r,
            "se_value": se_value, "rse": rse}


def index_table(mom: pd.DataFrame, labels: Sequence | np.ndarray | None = None, confidence: float = 0.95,
                count_cells: bool = False) -> pd.DataFrame:
    """Index, interval and test of every group (one row of ``mom`` each) against the base they partition.

    Parameters
    ----------
    mom : pandas.DataFrame
        One row per group with the columns :data:`MOMENTS` (from :func:`moments`, :func:`flag_moments` or an
        engine's group-by); groups without observed units have zeros.
    labels : sequence, optional
        Group labels (default ``mom.index``).
    confidence : float
        Level of the interval.
    count_cells : bool
        For 0/1 indicators: the cell n of the base-size rule is the number of group members *with* the
        attribute (syndicated crosstabs); otherwise the number of group members observed.

    Returns
    -------
    pandas.DataFrame
        ``segment, n_segment, n_unweighted, n_weighted, n_effective, n_eff_segment, segment_value,
        base_value, rest_value, index, se_log_index, ci_low, ci_high, z, p_value, se_value, rse,
        horizontal_pct`` (the group's % of the base's weighted total of ``y``).
    """
    missing = [c for c in MOMENTS if c not in mom.columns]
    if missing:
        raise ValueError(f"moments frame lacks columns {missing} (expected {list(MOMENTS)})")
    labels = np.asarray(mom.index if labels is None else labels)
    get = lambda c: mom[c].to_numpy(dtype=float)  # noqa: E731
    n_s, t_s, t_ys, g0, g1, g2 = (get(c) for c in ("n", "t", "ty", "t2", "t2y", "t2yy"))
    r = index_arrays(n_s, t_s, t_ys, g0, g1, g2, confidence)
    n_cell, w_cell, w2_cell = ((get("n_nz"), get("t_nz"), get("t2_nz")) if count_cells else (n_s, t_s, g0))
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(w2_cell > 0, w_cell**2 / np.where(w2_cell > 0, w2_cell, 1), 0.0)
        n_eff_seg = np.where(g0 > 0, t_s**2 / np.where(g0 > 0, g0, 1), 0.0)
        horizontal = 100 * t_ys / t_ys.sum()
    return pd.DataFrame({
        "segment": labels, "n_segment": n_s.astype(np.int64), "n_unweighted": n_cell.astype(np.int64),
        "n_weighted": w_cell, "n_effective": n_eff, "n_eff_segment": n_eff_seg, "segment_value": r["value"],
        "base_value": r["base_value"], "rest_value": r["rest_value"], "index": r["index"],
        "se_log_index": r["se_log_index"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "z": r["z"],
        "p_value": r["p_value"], "se_value": r["se_value"], "rse": r["rse"], "horizontal_pct": horizontal,
    })


def index_estimates(y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None,
                    confidence: float = 0.95, count_cells: bool = False) -> pd.DataFrame:
    """:func:`index_table` of one variable from unit-level arrays (``NaN`` in ``y`` = not observed).

    ``groups`` is the segment label of each unit of the base (no missing values); ``weights`` default 1.
    """
    y = np.asarray(y, dtype=float)
    codes, labels = check_codes(np.asarray(groups))
    w = np.ones_like(y) if weights is None else check_weights(weights)
    if not (y.shape == codes.shape == w.shape):
        raise ValueError(f"y, segments and weights must have the same length, got {y.shape[0]}, "
                         f"{codes.shape[0]}, {w.shape[0]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return index_table(moments(y, codes, w, labels.shape[0]), labels, confidence, count_cells)


def check_codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ``0..k-1`` and sorted labels of group labels; raise naming rows if any is missing."""
    s = pd.Series(groups)
    if s.isna().any():
        rows = np.flatnonzero(s.isna().to_numpy())[:5].tolist()
        raise ValueError(f"segment labels are missing in {int(s.isna().sum())} rows (first row positions: "
                         f"{rows}); every unit of the base needs a segment (drop or assign them first).")
    labels, codes = np.unique(s.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), labels


def logit_interval(p: np.ndarray, se: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Interval of a proportion on the logit scale (stays inside [0, 1]); ``p`` at 0 or 1 gives ``[p, p]``."""
    p, se = np.asarray(p, dtype=float), np.asarray(se, dtype=float)
    zq = _st.norm.ppf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = (p > 0) & (p < 1)
        lg = np.log(p / (1 - p))
        se_l = se / (p * (1 - p))
        lo = np.where(inner, 1 / (1 + np.exp(-(lg - zq * se_l))), p)
        hi = np.where(inner, 1 / (1 + np.exp(-(lg + zq * se_l))), p)
    return lo, hi


# --- base sizes, tiers, FDR ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseSizeRule:
    """Base-size rule for one cell: unweighted count, Kish effective n and relative standard error.

    A cell is ``"suppressed"`` (index, interval and test not reported) or flagged ``"caution"`` when any of
    the three criteria says so; the worst flag wins.

    Parameters
    ----------
    caution_below : int
        Cell count below this (but at least ``suppress_below``) -> ``"caution"``. Default 61 (MRI-Simmons:
        unweighted n 31-60 "use with caution").
    suppress_below : int
        Cell count below this -> ``"suppressed"``. Default 31 (MRI-Simmons: n under 31).
    use_effective : bool
        Apply the two count thresholds to the Kish effective n of the cell *as well as* to its unweighted
        count (the smaller decides), which penalises cells whose weights vary a lot (default False: the
        unweighted count only, as MRI-Simmons publishes).
    rse_caution, rse_suppress : float
        Relative standard error of the group's estimate (linearised SE on the effective base / estimate)
        above which a cell is flagged ``"caution"`` / ``"suppressed"``. Defaults 0.30 and 0.50, the practice
        of the U.S. National Center for Health Statistics (RSE > 30 % unreliable) and the Australian Bureau of
        Statistics (RSE 25-50 % use with caution, > 50 % too unreliable for general use). ``None`` disables.
    """

    caution_below: int = 61
    suppress_below: int = 31
    use_effective: bool = False
    rse_caution: float | None = 0.30
    rse_suppress: float | None = 0.50

    def __post_init__(self) -> None:
        if not 0 <= self.suppress_below <= self.caution_below:
            raise ValueError("BaseSizeRule needs 0 <= suppress_below <= caution_below, got "
                             f"suppress_below={self.suppress_below}, caution_below={self.caution_below}")
        c, s = self.rse_caution, self.rse_suppress
        if c is not None and s is not None and not 0 < c <= s:
            raise ValueError(f"BaseSizeRule needs 0 < rse_caution <= rse_suppress, got rse_caution={c}, "
                             f"rse_suppress={s}")

    def flag(self, n_unweighted: np.ndarray, n_effective: np.ndarray, rse: np.ndarray | None = None
             ) -> np.ndarray:
        """``"ok"``, ``"caution"`` or ``"suppressed"`` for each cell."""
        n = np.asarray(n_unweighted, dtype=float)
        if self.use_effective:
            n = np.minimum(n, np.asarray(n_effective, dtype=float))
        sup = n < self.suppress_below
        cau = n < self.caution_below
        if rse is not None:
            r = np.asarray(rse, dtype=float)
            r = np.where(np.isnan(r), np.inf, r)
            if self.rse_suppress is not None:
                sup = sup | (r > self.rse_suppress)
            if self.rse_caution is not None:
                cau = cau | (r > self.rse_caution)
        return np.where(sup, "suppressed", np.where(cau, "caution", "ok"))


def assign_tier(index: np.ndarray | pd.Series, low: float = TIER_LOW, high: float = TIER_HIGH) -> np.ndarray:
    """Action tier: index > ``high`` concentrate ("sweet spot"), < ``low`` de-prioritise, else neutral.

    Missing (suppressed) indices get an empty string.
    """
    x = np.asarray(index, dtype=float)
    return np.where(np.isnan(x), "", np.where(x > high, TIER_SWEET, np.where(x < low, TIER_LOW_LABEL,
                                                                            TIER_NEUTRAL)))


def fdr_qvalues(p: np.ndarray | pd.Series, method: str = "fdr_bh") -> np.ndarray:
    """FDR-adjusted p-values (q-values) of the finite entries of ``p``; NaN stays NaN.

    ``method`` is any :func:`statsmodels.stats.multitest.multipletests` method: ``"fdr_bh"``
    (Benjamini-Hochberg, valid under independence and positive dependence) or ``"fdr_by"``
    (Benjamini-Yekutieli, valid under any dependence).
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method=method)[1]
    return q


#: Columns blanked for a suppressed cell.
SUPPRESSED_BLANK = ("index", "ci_low", "ci_high", "p_value", "segment_value", "vertical_pct", "horizontal_pct")


def finalize(t: pd.DataFrame, rule: BaseSizeRule | None = None, alpha: float = 0.05,
             fdr_method: str = "fdr_bh", descriptive: np.ndarray | pd.Series | None = None,
             low: float = TIER_LOW, high: float = TIER_HIGH) -> pd.DataFrame:
    """Base flag, suppression, FDR, significance and tier of an :func:`index_table`-like table (in place).

    * ``base_flag`` from ``rule`` on ``n_unweighted``, ``n_effective`` and ``rse``; suppressed cells get NaN in
      :data:`SUPPRESSED_BLANK` (and leave the FDR family);
    * ``descriptive`` (boolean per row): cells of variables the groups were built from; p-value NaN, no
      q-value, never significant; index and interval are kept as a description;
    * ``q_value`` over all remaining finite p-values (one family: the whole table);
    * ``significant = q < alpha`` and a finite interval (an index of 0 with a NaN interval is never
      significant);
    * ``tier`` from the index (:func:`assign_tier`).
    """
    rule = rule or BaseSizeRule()
    rse = t["rse"].to_numpy() if "rse" in t.columns else None
    t["base_flag"] = rule.flag(t["n_unweighted"].to_numpy(), t["n_effective"].to_numpy(), rse)
    hide = t["base_flag"].eq("suppressed").to_numpy()
    for c in SUPPRESSED_BLANK:
        if c in t.columns:
            t.loc[hide, c] = np.nan
    desc = (np.zeros(len(t), dtype=bool) if descriptive is None
            else np.asarray(descriptive, dtype=bool).reshape(len(t)))
    t["descriptive"] = desc
    t.loc[desc, "p_value"] = np.nan
    t["q_value"] = fdr_qvalues(t["p_value"].to_numpy(), fdr_method)
    finite_ci = np.isfinite(t["ci_low"].to_numpy(dtype=float)) & np.isfinite(t["ci_high"].to_numpy(dtype=float))
    t["significant"] = (t["q_value"].lt(alpha).to_numpy() & finite_ci & ~desc & ~hide)
    t["tier"] = assign_tier(t["index"], low, high)
    return t


# --- profile: one audience against its base -----------------------------------------------------------------------
def _split_name(col: str) -> tuple[str, str]:
    col = str(col)
    return tuple(col.split("=", 1)) if "=" in col else (col, col)  # type: ignore[return-value]


def profile(indicators: pd.DataFrame, in_audience: np.ndarray, weights: np.ndarray | None = None, *,
            rule: BaseSizeRule | None = None, alpha: float = 0.05, confidence: float = 0.95,
            fdr_method: str = "fdr_bh", descriptive: Sequence[str] | None = None,
            meta: pd.DataFrame | Mapping | None = None, low: float = TIER_LOW, high: float = TIER_HIGH
            ) -> pd.DataFrame:
    """Profile one audience against its base: the index of every indicator or metric column.

    Parameters
    ----------
    indicators : pandas.DataFrame
        One row per unit of the base, one column per variable: 0/1 indicators of attribute values (share
        index; the cell count of the base-size rule is the audience members *with* the value) or numeric
        metrics (intensity index, ratio of means). ``NaN`` = not observed (left out of audience and base).
        Columns named ``family=value`` are split into ``attribute`` and ``value_label``.
    in_audience : array of bool, shape (n,)
        Membership of the audience; the rest of the base is the comparison of the test.
    weights : array, optional
        Survey weights (default 1).
    rule, alpha, confidence, fdr_method, low, high
        Base-size rule, FDR level, interval level, FDR method, tier thresholds.
    descriptive : sequence of str, optional
        Columns the audience was *built from* (e.g. clustering features): no p-value, never significant.
    meta : DataFrame or mapping, optional
        Per column ``(attribute, value_label)``: a frame indexed by column with ``family`` / ``attribute``
        columns (as :func:`helpers.affinity.attribute_indicators` returns) or a mapping column -> tuple.

    Returns
    -------
    pandas.DataFrame
        :data:`PROFILE_COLUMNS` plus ``column, kind, n_cell, rest_mean, se_log_index, z, descriptive``;
        one row per column, in the input order. Means and shares are in the column's units (shares 0-1).
    """
    if not isinstance(indicators, pd.DataFrame):
        raise ValueError("profile expects a DataFrame of indicator / metric columns")
    aud = np.asarray(in_audience, dtype=bool).reshape(-1)
    if aud.shape[0] != len(indicators):
        raise ValueError(f"in_audience has {aud.shape[0]} flags for {len(indicators)} rows of indicators")
    if not aud.any():
        raise ValueError("the audience is empty: in_audience selects no row")
    w = np.ones(len(indicators)) if weights is None else check_weights(weights)
    if w.shape[0] != len(indicators):
        raise ValueError(f"weights has {w.shape[0]} values for {len(indicators)} rows of indicators")
    codes = aud.astype(np.int64)  # 0 rest, 1 audience
    desc_set = set(descriptive or ())
    rows, flags = [], []
    for col in indicators.columns:
        y = pd.to_numeric(indicators[col], errors="coerce").to_numpy(dtype=float)
        fin = y[np.isfinite(y)]
        is_flag = fin.size > 0 and bool(np.isin(fin, (0.0, 1.0)).all())
        est = index_table(moments(y, codes, w, 2), [0, 1], confidence, count_cells=is_flag).iloc[1]
        if meta is not None and isinstance(meta, pd.DataFrame) and col in meta.index:
            att, val = str(meta.at[col, "family"]), str(meta.at[col, "attribute"])
        elif meta is not None and isinstance(meta, Mapping) and col in meta:
            att, val = meta[col]
        else:
            att, val = _split_name(col)
        rows.append({"attribute": att, "value_label": val, "column": col, "kind": "share" if is_flag else "mean",
                     "audience_mean": est["segment_value"], "base_mean": est["base_value"],
                     "rest_mean": est["rest_value"], "index": est["index"], "ci_low": est["ci_low"],
                     "ci_high": est["ci_high"], "p_value": est["p_value"], "se_log_index": est["se_log_index"],
                     "z": est["z"], "n_audience": int(est["n_segment"]), "n_cell": int(est["n_unweighted"]),
                     "n_eff_audience": est["n_eff_segment"], "n_unweighted": int(est["n_unweighted"]),
                     "n_effective": est["n_effective"], "rse": est["rse"]})
        flags.append(col in desc_set)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    out = finalize(out, rule, alpha, fdr_method, np.asarray(flags), low, high)
    out.loc[out["base_flag"].eq("suppressed"), "audience_mean"] = np.nan
    extra = ["column", "kind", "n_cell", "rest_mean", "se_log_index", "z", "descriptive"]
    return out[PROFILE_COLUMNS + extra]
