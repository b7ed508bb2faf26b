"""Weighted affinity indices of segments against a base, with intervals, tests, FDR and base-size rules.

Three index types, each labelled in the output for what it is:

* ``intensity`` -- the data dictionary's ratio of means, ``mean(y | segment) / mean(y | base) x 100``
  for the channel metrics. Heavy users dominate it: a few people with 600 min/day lift a segment's index
  even when most of its members are light users.
* ``composition`` -- the syndicated-panel index (GWI, MRI-Simmons, Nielsen) for the same channel
  metrics: ``share of segment that is a heavy user / share of base that is a heavy user x 100``, where
  "heavy" means above the base's weighted ``heavy_quantile`` (the top third by default). It counts people,
  not minutes, and ignores how heavy the heavy users are; it depends on the chosen cut-off.
* ``share`` -- the same ratio of proportions for categorical, boolean and multi-valued attributes
  (``% of segment with the attribute / % of base x 100``).

Every index is computed on weighted totals (weights 1 if the panel has none). Its 95 % interval comes
from Taylor linearisation (delta method) of ``log(index)`` as a smooth function of four weighted totals,
which accounts for the segment being part of the base; the p-value tests the segment against the *rest
of the base* (``mean(y | segment) == mean(y | base minus segment)``, a linearised Wald test), and
q-values control the false discovery rate over the whole table (Benjamini-Hochberg by default).
Variances treat weights as fixed and units as independent draws (with-replacement approximation), so
they ignore the variability of estimated (raked) weights.

Everything that depends on user-level data runs on an execution engine through Ibis (DuckDB by default,
Apache Spark on request, see :mod:`helpers.engine`): :meth:`AffinityIndex.fit` asks the engine for per-segment
sufficient statistics (:data:`MOMENTS`: counts and sums of ``w``, ``w y``, ``w^2``, ``w^2 y``, ``w^2 y^2``) in
one group-by for the metrics and one for the attribute families, plus the weighted quantiles of the
heavy-user cut; :func:`index_from_moments` turns that small table into indices, intervals and tests with the
same code for every engine (and for :func:`index_estimates` on numpy arrays). A 10M-user Parquet panel never
has to fit in one pandas frame, and both engines give the same table to floating-point tolerance.

Base-size rules follow MRI-Simmons' defaults: an unweighted cell count of 31-60 is flagged "caution",
below 31 "suppressed" (the index is not reported). The thresholds are parameters and can be applied to
the Kish effective sample size instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from . import schema as S

INDEX_TYPES = ("intensity", "composition", "share")
#: Attributes indexed by share by default: partner, enrichment and demographic columns.
DEFAULT_ATTRIBUTES: tuple[str, ...] = (
    "partner_purchase_categories", "event_attendance_genres", "traveler_type", "offline_purchase_intent",
    "presence_of_children", "household_size", "homeowner_status", "marital_status", "estimated_net_worth",
    "education_level", "income_bracket", "age_group",
)
HOUSEHOLD_BANDS = ["1", "2", "3", "4", "5+"]
TIER_SWEET, TIER_NEUTRAL, TIER_LOW = "sweet spot", "neutral", "de-prioritise"

TABLE_COLUMNS = [
    "segment", "segment_name", "family", "attribute", "index_type", "definition", "index", "ci_low",
    "ci_high", "p_value", "q_value", "significant", "n_unweighted", "n_weighted", "n_effective",
    "n_segment", "base_flag", "tier", "segment_value", "base_value", "rest_value", "vertical_pct",
    "horizontal_pct",
]


@dataclass(frozen=True)
class BaseSizeRule:
    """Syndicated-panel base-size rule for one cell of a crosstab.

    Parameters
    ----------
    caution_below : int
        Cells with fewer units than this (but at least ``suppress_below``) are flagged ``"caution"``.
        Default 61 (MRI-Simmons: unweighted n 31-60 "use with caution").
    suppress_below : int
        Cells with fewer units than this are flagged ``"suppressed"``: too unstable to report.
        Default 31 (MRI-Simmons: n under 31).
    use_effective : bool
        Apply the thresholds to the Kish effective n of the cell instead of its unweighted count, which
        also penalises cells whose weights vary a lot.
    """

    caution_below: int = 61
    suppress_below: int = 31
    use_effective: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.suppress_below <= self.caution_below:
            raise ValueError("BaseSizeRule needs 0 <= suppress_below <= caution_below, got "
                             f"suppress_below={self.suppress_below}, caution_below={self.caution_below}")

    def flag(self, n_unweighted: np.ndarray, n_effective: np.ndarray) -> np.ndarray:
        """``"ok"``, ``"caution"`` or ``"suppressed"`` for each cell."""
        n = np.asarray(n_effective if self.use_effective else n_unweighted, dtype=float)
        return np.where(n < self.suppress_below, "suppressed",
                        np.where(n < self.caution_below, "caution", "ok"))


# --- input checks -----------------------------------------------------------------------------------
def _check_weights(w: np.ndarray, name: str = "weight") -> np.ndarray:
    w = np.asarray(w, dtype=float)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"column {name!r} must hold finite weights >= 0; {int(bad.sum())} rows do not "
                         f"(first row positions: {rows}). Fix or drop them before computing affinities.")
    return w


def _check_codes(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pd.Series(segments)
    if s.isna().any():
        rows = np.flatnonzero(s.isna().to_numpy())[:5].tolist()
        raise ValueError(f"segment labels are missing in {int(s.isna().sum())} rows (first row positions: "
                         f"{rows}); every unit of the base needs a segment (drop or assign them first).")
    labels, codes = np.unique(s.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), labels


# --- the core estimator: sufficient statistics -> indices ------------------------------------------------
#: Per-segment sufficient statistics of one variable ``y`` over the units where it is observed (finite, weight
#: > 0): unweighted count, sums of ``w``, ``w y``, ``w^2``, ``w^2 y``, ``w^2 y^2``, and the same count and
#: weight sums restricted to ``y != 0`` (the cell of a 0/1 indicator). Everything in the affinity table that
#: depends on user-level data is a function of these (see :func:`index_from_moments`), so an engine only
#: has to return one small group-by per variable.
MOMENTS = ("n", "t", "ty", "t2", "t2y", "t2yy", "n_nz", "t_nz", "t2_nz")


def moments(y: np.ndarray, codes: np.ndarray, w: np.ndarray, k: int) -> pd.DataFrame:
    """Sufficient statistics (:data:`MOMENTS`) of ``y`` per segment code ``0..k-1``, with numpy.

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


def index_from_moments(mom: pd.DataFrame, labels: Sequence | np.ndarray | None = None,
                       confidence: float = 0.95, count_cells: bool = False) -> pd.DataFrame:
    """Index, linearised interval and test against the rest of the base from per-segment moments.

    Parameters
    ----------
    mom : pandas.DataFrame
        One row per segment (in the order of ``labels``) with the columns :data:`MOMENTS`, e.g. from
        :func:`moments` or an engine's group-by; segments without observed units have zeros.
    labels : sequence, optional
        Segment labels (default ``mom.index``).
    confidence, count_cells
        As in :func:`index_estimates`.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`index_estimates`.

    Notes
    -----
    With segment totals ``G0 = sum w^2``, ``G1 = sum w^2 y``, ``G2 = sum w^2 y^2`` (and ``S0, S1, S2`` over the
    base), the influence values of :func:`index_estimates` give
    ``sum u_i^2 = S0/T_n^2 - 2 S1/(T_n T_y) + S2/T_y^2 + G2/T_ys^2 - 2 G1/(T_ys T_s) + G0/T_s^2
    + 2 [G1/(T_ys T_n) - G2/(T_ys T_y) - G0/(T_s T_n) + G1/(T_s T_y)]`` for a segment's units, the segment
    terms vanishing for a segment with no observed unit.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    missing = [c for c in MOMENTS if c not in mom.columns]
    if missing:
        raise ValueError(f"moments frame lacks columns {missing} (expected {list(MOMENTS)})")
    labels = np.asarray(mom.index if labels is None else labels)
    get = lambda c: mom[c].to_numpy(dtype=float)  # noqa: E731
    n_s, t_s, t_ys, g0, g1, g2 = (get(c) for c in ("n", "t", "ty", "t2", "t2y", "t2yy"))
    k = labels.shape[0]
    n = n_s.sum()
    t_n, t_y, s0, s1, s2 = t_s.sum(), t_ys.sum(), g0.sum(), g1.sum(), g2.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        m_s, big_m = t_ys / t_s, t_y / t_n
        t_r = t_n - t_s
        m_r = (t_y - t_ys) / t_r
        index = 100 * m_s / big_m
        # variance of log(index): sum over all units of w^2 b^2 plus a segment-specific correction
        base_part = s0 / t_n**2 - 2 * s1 / (t_n * t_y) + s2 / t_y**2
        seg_part = (g2 / t_ys**2 - 2 * g1 / (t_ys * t_s) + g0 / t_s**2
                    + 2 * (g1 / (t_ys * t_n) - g2 / (t_ys * t_y) - g0 / (t_s * t_n) + g1 / (t_s * t_y)))
        ss = base_part + np.where(n_s > 0, seg_part, 0.0)
        var_log = n / max(n - 1, 1) * ss
        se_log = np.sqrt(np.maximum(var_log, 0))
        # segment vs rest of the base
        in_s = g2 - 2 * m_s * g1 + m_s**2 * g0
        in_r = (s2 - g2) - 2 * m_r * (s1 - g1) + m_r**2 * (s0 - g0)
        var_d = n / max(n - 1, 1) * (in_s / t_s**2 + in_r / t_r**2)
        d = m_s - m_r
        z = d / np.sqrt(var_d)
        zq = stats.norm.ppf(0.5 + confidence / 2)
        ok = (t_ys > 0) & np.isfinite(se_log)
        ci_low = np.where(ok, index * np.exp(-zq * se_log), np.nan)
        ci_high = np.where(ok, index * np.exp(zq * se_log), np.nan)
        p = np.where(np.isfinite(z), 2 * stats.norm.sf(np.abs(z)), np.where(d == 0, 1.0, np.nan))
        if count_cells:
            n_cell, w_cell, w2_cell = get("n_nz"), get("t_nz"), get("t2_nz")
        else:
            n_cell, w_cell, w2_cell = n_s, t_s, g0
        n_eff = np.where(w2_cell > 0, w_cell**2 / w2_cell, 0.0)
        horizontal = 100 * t_ys / t_y
    return pd.DataFrame({
        "segment": labels, "n_segment": n_s.astype(np.int64), "n_unweighted": n_cell.astype(np.int64),
        "n_weighted": w_cell, "n_effective": n_eff, "segment_value": m_s, "base_value": np.full(k, big_m),
        "rest_value": m_r, "index": index, "se_log_index": se_log, "ci_low": ci_low, "ci_high": ci_high,
        "z": z, "p_value": p, "horizontal_pct": horizontal,
    })


def index_estimates(y: np.ndarray, segments: np.ndarray, weights: np.ndarray | None = None,
                    confidence: float = 0.95, count_cells: bool = False) -> pd.DataFrame:
    """Affinity index of every segment for one variable, with linearised interval and test vs the rest.

    Parameters
    ----------
    y : array-like of float, shape (n,)
        The variable: a metric (intensity index) or a 0/1 indicator (composition / share index).
        ``NaN`` marks units where it is not observed; they are left out of segment and base alike.
    segments : array-like, shape (n,)
        Segment label of each unit of the base (no missing values).
    weights : array-like of float, shape (n,), optional
        Non-negative survey weights (default: all 1).
    confidence : float
        Confidence level of the interval (default 0.95).
    count_cells : bool
        If True (0/1 indicators), the cell n is the number of segment members *with* the attribute,
        as in syndicated crosstabs; otherwise it is the number of segment members observed.

    Returns
    -------
    pandas.DataFrame
        One row per segment label: ``segment, n_segment, n_unweighted, n_weighted, n_effective,
        segment_value, base_value, rest_value, index, se_log_index, ci_low, ci_high, z, p_value,
        horizontal_pct`` (the segment's percentage of the base's weighted total of ``y``).

    Notes
    -----
    ``index = 100 * (T_ys / T_s) / (T_y / T_n)`` with weighted totals ``T``. Its log has influence
    values ``u_i = w_i [1_s (y_i / T_ys - 1 / T_s) + 1 / T_n - y_i / T_y]`` and
    ``Var(log index) = n / (n - 1) * sum u_i^2``. The test of the segment against the rest of the base uses
    ``d = mean_s - mean_rest`` with influence ``w_i [1_s (y_i - mean_s) / T_s - 1_rest (y_i - mean_rest) / T_rest]``
    and a two-sided normal p-value. Both sums of squares are expanded into per-segment sufficient statistics
    (:func:`moments`, :func:`index_from_moments`), which is also how the engines compute them.
    """
    y = np.asarray(y, dtype=float)
    codes, labels = _check_codes(np.asarray(segments))
    w = np.ones_like(y) if weights is None else _check_weights(weights)
    if not (y.shape == codes.shape == w.shape):
        raise ValueError(f"y, segments and weights must have the same length, got {y.shape[0]}, "
                         f"{codes.shape[0]}, {w.shape[0]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mom = moments(y, codes, w, labels.shape[0])
    return index_from_moments(mom, labels, confidence=confidence, count_cells=count_cells)

# --- attribute indicators -------------------------------------------------------------------------------
def _categories(df: pd.DataFrame, column: str) -> tuple[list[str], pd.Series]:
    """Category list and the (string) values of a column; household size is banded."""
    col = df[column]
    if column == "household_size":
        v = pd.to_numeric(col, errors="coerce")
        band = v.clip(upper=5).round().astype("Int64").astype("string").replace({"5": "5+"})
        return HOUSEHOLD_BANDS, band
    spec = S.BY_NAME.get(column)
    if spec is not None and spec.kind == "bool":
        vals = col.astype("boolean")
        return ["yes"], pd.Series(np.where(vals.fillna(False), "yes", "no"), index=df.index).where(vals.notna())
    if spec is not None and spec.categories:
        return list(spec.categories), col.astype("string")
    values = col.astype("string")
    return sorted(values.dropna().unique().tolist()), values


def attribute_indicators(df: pd.DataFrame, columns: Sequence[str] = DEFAULT_ATTRIBUTES
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """0/1 indicator of every attribute value, NaN where the column is not observed.

    Parameters
    ----------
    df : pandas.DataFrame
        Unified table (or any frame holding ``columns``).
    columns : sequence of str
        Categorical, ordinal, boolean or multi-valued (``|``-separated) columns; ``household_size`` is
        banded to ``1, 2, 3, 4, 5+``; a boolean column gives one indicator ``"yes"``.

    Returns
    -------
    (indicators, meta) : tuple of pandas.DataFrame
        ``indicators`` has one float column per (column, value); ``meta`` has one row per indicator
        column with ``family`` (source column) and ``attribute`` (value).
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"attribute columns {missing} are not in the data (available: {list(df.columns)})")
    blocks, meta = [], []
    for column in columns:
        spec = S.BY_NAME.get(column)
        if spec is not None and spec.kind == "multi":
            cats = list(spec.categories)
            raw = df[column].astype("string")
            observed = raw.notna().to_numpy()
            padded = S.MULTI_SEP + raw.fillna("") + S.MULTI_SEP
            vals = np.column_stack([
                padded.str.contains(f"{S.MULTI_SEP}{c}{S.MULTI_SEP}", regex=False).to_numpy(dtype=float)
                for c in cats])
            vals[~observed] = np.nan
        else:
            cats, values = _categories(df, column)
            observed = values.notna().to_numpy()
            arr = values.astype(object).where(values.notna(), "").to_numpy(dtype=object)
            vals = arr[:, None] == np.array(cats, dtype=object)[None, :]
            vals = np.where(observed[:, None], vals.astype(float), np.nan)
        blocks.append(vals)
        meta += [{"family": column, "attribute": c} for c in cats]
    names = [f"{m['family']}={m['attribute']}" for m in meta]
    ind = pd.DataFrame(np.column_stack(blocks) if blocks else np.empty((len(df), 0)), columns=names,
                       index=df.index)
    return ind, pd.DataFrame(meta, index=names)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Weighted quantile (lower inverse of the weighted empirical CDF) of the finite ``values``."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    ok = np.isfinite(v)
    v, w = v[ok], w[ok]
    if v.size == 0:
        raise ValueError("weighted_quantile needs at least one finite value")
    order = np.argsort(v, kind="stable")
    cdf = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(np.searchsorted(cdf, q, side="left"), v.size - 1)])


# --- tiers, FDR, the table --------------------------------------------------------------------------------
def assign_tier(index: np.ndarray | pd.Series, low: float = 80.0, high: float = 120.0) -> np.ndarray:
    """Action tier of the data dictionary: index > ``high`` "sweet spot", < ``low`` "de-prioritise".

    Missing (suppressed) indices get an empty string.
    """
    x = np.asarray(index, dtype=float)
    return np.where(np.isnan(x), "", np.where(x > high, TIER_SWEET, np.where(x < low, TIER_LOW, TIER_NEUTRAL)))


def fdr_qvalues(p: np.ndarray | pd.Series, method: str = "fdr_bh") -> np.ndarray:
    """FDR-adjusted p-values (q-values) of the finite entries of ``p``; NaN stays NaN.

    ``method`` is any :func:`statsmodels.stats.multitest.multipletests` method; ``"fdr_bh"``
    (Benjamini-Hochberg, valid under independence and positive dependence) or ``"fdr_by"``
    (Benjamini-Yekutieli, valid under any dependence).
    """
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method=method)[1]
    return q


# --- engine side: sufficient statistics by one Ibis group-by (DuckDB or Spark) ---------------------------
_W, _W2 = "aff_w_", "aff_w2_"  # weight and squared weight columns added to the base table


def _finite(x):
    return x.notnull() & ~x.isnan() & ~x.isinf()


def engine_quantiles(table, columns: Sequence[str], q: float, weight: str = _W, con=None) -> dict[str, float]:
    """Weighted quantile of each column, computed by the engine in one query; equals :func:`weighted_quantile`.

    The engine sums the weights per distinct value (a weighted histogram per column), a cumulative window over
    it gives the weighted CDF, and the result is the smallest value whose CDF reaches ``q``.
    """
    import ibis

    if not columns:
        return {}
    hists = []
    for c in columns:
        y = table[c].cast("float64")
        hists.append(table.filter(_finite(y)).select(q_c_=ibis.literal(c), q_v_=y, q_w_=table[weight]))
    h = ibis.union(*hists, distinct=False) if len(hists) > 1 else hists[0]
    h = h.group_by(["q_c_", "q_v_"]).aggregate(q_w_=lambda s: s.q_w_.sum())
    h = h.mutate(q_cum_=h.q_w_.sum().over(ibis.cumulative_window(group_by=h.q_c_, order_by=h.q_v_)),
                 q_tot_=h.q_w_.sum().over(ibis.window(group_by=h.q_c_)))
    expr = h.group_by("q_c_").aggregate(cut=h.q_v_.min(where=h.q_cum_ / h.q_tot_ >= q), top=h.q_v_.max())
    got = (con.execute(expr) if con is not None else expr.execute()).set_index("q_c_")
    out = {}
    for c in columns:
        if c not in got.index:
            raise ValueError(f"weighted quantile of {c!r} needs at least one finite value")
        cut = got.at[c, "cut"]
        out[c] = float(got.at[c, "top"] if pd.isna(cut) else cut)
    return out


def engine_quantile(table, column: str, q: float, weight: str = _W, con=None) -> float:
    """Weighted quantile of one column by the engine (see :func:`engine_quantiles`)."""
    return engine_quantiles(table, [column], q, weight, con)[column]


def _metric_aggregates(table, metrics: Sequence[str], cuts: Mapping[str, float]) -> dict:
    """Per-segment moments of each metric and of its heavy-user indicator (``y > cut``)."""
    w, w2 = table[_W], table[_W2]
    aggs = {}
    for i, m in enumerate(metrics):
        y = table[m].cast("float64")
        obs = _finite(y) & (w > 0)
        heavy = obs & (y > cuts[m])
        aggs.update({f"m{i}__n": w.count(where=obs), f"m{i}__t": w.sum(where=obs),
                     f"m{i}__t2": w2.sum(where=obs), f"m{i}__ty": (w * y).sum(where=obs),
                     f"m{i}__t2y": (w2 * y).sum(where=obs), f"m{i}__t2yy": (w2 * y * y).sum(where=obs),
                     f"m{i}__hn": w.count(where=heavy), f"m{i}__ht": w.sum(where=heavy),
                     f"m{i}__ht2": w2.sum(where=heavy)})
    return aggs


def _family_values(table, column: str, engine: str):
    """(observed, value) Ibis expressions of an attribute family and whether it is multi-valued.

    The value is the category as text: household size banded ``1..5`` (``5`` means 5+), booleans ``yes``/``no``,
    a multi-valued column the array of its distinct tokens.
    """
    import ibis

    col = table[column]
    spec = S.BY_NAME.get(column)
    if column == "household_size":
        v = col.cast("float64")
        return _finite(v), ibis.least(v, 5.0).round().cast("int64").cast("string"), False
    if spec is not None and spec.kind == "multi":
        sep = re.escape(S.MULTI_SEP) if engine == "spark" else S.MULTI_SEP  # Spark's split takes a regex
        return col.notnull(), _distinct_tokens(col.cast("string").split(sep), engine), True
    if spec is not None and spec.kind == "bool":
        b = col.cast("boolean")
        return b.notnull(), b.ifelse("yes", "no"), False
    return col.notnull(), col.cast("string"), False


def _distinct_tokens(arr, engine: str):
    """Distinct elements of a string array with the engine's own function (Ibis's ``unique`` compiles to a
    lambda syntax that DuckDB 2 rejects)."""
    import ibis
    import ibis.expr.datatypes as dt

    sig = ((dt.Array(dt.string),), dt.Array(dt.string))
    name = "array_distinct" if engine == "spark" else "list_distinct"
    distinct = ibis.udf.scalar.builtin(lambda a: None, name=name, signature=sig)
    return distinct(arr)


_ITEM, _FV, _TOT = "\x1e", "\x1f", "\x1d"  # separators of the long layout (control characters)


def _attribute_query(table, segment_col: str, columns: Sequence[str], engine: str, layout: str | None = None):
    """One query: per family, segment and value the unweighted count and sums of ``w``, ``w^2``.

    Multi-valued families also get a row per segment with the totals over users with the column observed
    (``tot_`` true), since a user can hold several values. Two layouts give the same numbers: ``"union"``
    (one group-by per family, UNION ALL; fastest on DuckDB) and ``"long"`` (every user's ``family=value``
    items in one array, unnested and grouped once: one shuffle instead of one per family, faster on Spark).
    Returns ``(expression, decode)``; ``decode`` turns the executed result into
    ``fam_, tot_, seg_, val_, n, t, t2``.
    """
    import ibis

    layout = layout or ("long" if engine == "spark" else "union")
    w, w2 = table[_W], table[_W2]
    cols = ["fam_", "tot_", "seg_", "val_", "n", "t", "t2"]
    if layout == "long":
        items = []
        for column in columns:
            obs, value, multi = _family_values(table, column, engine)
            pre = ibis.literal(column + _FV)
            if multi:  # a totals item, then every token prefixed with its family
                raw = table[column].cast("string")
                item = pre + _TOT + _ITEM + pre + raw.replace(S.MULTI_SEP, _ITEM + column + _FV)
            else:
                item = pre + value
            items.append(ibis.ifelse(obs, item, ibis.null("string")))  # concat_ws skips missing items
        arr = _distinct_tokens(ibis.literal(_ITEM).join(items).split(_ITEM), engine)
        sub = table.select(seg_=table[segment_col], item_=arr, w_=w, w2_=w2)
        sub = sub.mutate(item_=sub.item_.unnest())
        expr = sub.group_by(["seg_", "item_"]).aggregate(n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(),
                                                         t2=sub.w2_.sum())

        def decode(res: pd.DataFrame) -> pd.DataFrame:
            res = res[res["item_"].notna() & (res["item_"] != "")]
            parts = res["item_"].str.split(_FV, n=1, expand=True)
            out = res.assign(fam_=parts[0], val_=parts[1], tot_=parts[1].eq(_TOT))
            out.loc[out["tot_"], "val_"] = None
            return out[cols].reset_index(drop=True)

        return expr, decode
    if layout != "union":
        raise ValueError(f"layout must be 'union' or 'long', got {layout!r}")
    parts = []
    for column in columns:
        obs, value, multi = _family_values(table, column, engine)
        sub = table.filter(obs).select(seg_=table[segment_col], val_=value, w_=w, w2_=w2)
        if multi:
            parts.append(sub.group_by("seg_").aggregate(
                n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(), t2=sub.w2_.sum())
                .mutate(fam_=ibis.literal(column), tot_=ibis.literal(True), val_=ibis.null("string")))
            sub = sub.mutate(val_=sub.val_.unnest())
        parts.append(sub.group_by(["seg_", "val_"]).aggregate(
            n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(), t2=sub.w2_.sum())
            .mutate(fam_=ibis.literal(column), tot_=ibis.literal(False)))
    parts = [p.select(*cols) for p in parts]
    expr = ibis.union(*parts, distinct=False) if len(parts) > 1 else parts[0]
    return expr, (lambda res: res.assign(tot_=res["tot_"].astype(bool)))


def _flag_moments(n, t, t2, hn, ht, ht2) -> pd.DataFrame:
    """:data:`MOMENTS` of a 0/1 indicator from the observed totals and the totals of units with it."""
    f = lambda x: np.nan_to_num(np.asarray(x, dtype=float))  # noqa: E731
    n, t, t2, hn, ht, ht2 = map(f, (n, t, t2, hn, ht, ht2))
    return pd.DataFrame({"n": n, "t": t, "ty": ht, "t2": t2, "t2y": ht2, "t2yy": ht2, "n_nz": hn, "t_nz": ht,
                         "t2_nz": ht2})


def _family_categories(column: str, values: Sequence[str]) -> list[str]:
    spec = S.BY_NAME.get(column)
    if column == "household_size":
        return HOUSEHOLD_BANDS
    if spec is not None and spec.kind == "bool":
        return ["yes"]
    if spec is not None and spec.categories:
        return list(spec.categories)
    return sorted(str(v) for v in values)


def _apply_base(table, base):
    """Filter an Ibis table by ``base``: None, an Ibis boolean expression, a callable, or a query string."""
    if base is None:
        return table
    if isinstance(base, str):
        base = query_expression(table, base)
    elif callable(base):
        base = base(table)
    return table.filter(base)


_CMP = {"Eq": "eq", "NotEq": "ne", "Lt": "lt", "LtE": "le", "Gt": "gt", "GtE": "ge"}


def query_expression(table, query: str):
    """A pandas-style query string (``"age_group == '25-34' and household_size >= 3"``) as an Ibis expression.

    Only column names, literals (numbers, strings, True/False/None, lists), comparisons (``== != < <= > >=``,
    ``in`` / ``not in`` a list), ``and``/``or``/``not`` (or ``& | ~``) and parentheses are accepted; the
    string is parsed, never executed, so the same base works on every engine.
    """
    import ast
    import functools
    import operator

    def bad(node):
        return ValueError(f"base query {query!r}: {ast.dump(node)[:60]} is not allowed (use column names, "
                          "literals, comparisons, in / not in, and / or / not)")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Name):
            if node.id not in table.columns:
                raise ValueError(f"base query {query!r}: column {node.id!r} is not in the data")
            return table[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            op = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            return functools.reduce(op, [ev(v) for v in node.values])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            return (operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_)(ev(node.left),
                                                                                       ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            return ~ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Compare):
            parts, left = [], ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                name = type(op).__name__
                if name in ("In", "NotIn"):
                    parts.append(left.isin(right) if name == "In" else left.notin(right))
                elif name in _CMP:
                    parts.append(getattr(operator, _CMP[name])(left, right))
                else:
                    raise bad(node)
                left = right
            return functools.reduce(operator.and_, parts)
        raise bad(node)

    try:
        tree = ast.parse(query, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"base query {query!r} is not a valid query: {exc.msg}") from exc
    return ev(tree)


@dataclass
class AffinityIndex:
    """Segment-by-attribute affinity crosstab (intensity, composition and share indices).

    Parameters
    ----------
    metrics : sequence of str
        Channel metrics for the intensity and composition indices (default: the four channel metrics).
    attributes : sequence of str
        Columns for share indices (default :data:`DEFAULT_ATTRIBUTES`).
    heavy_quantile : float
        A unit is a "heavy user" of a metric when above the base's weighted quantile ``heavy_quantile``
        (default 2/3: the top third of the base).
    confidence : float
        Level of the intervals.
    alpha : float
        FDR level: a cell is significant when its q-value is below ``alpha``.
    fdr_method : str
        Multiple-testing method over the whole table (see :func:`fdr_qvalues`).
    rule : BaseSizeRule
        Base-size thresholds; suppressed cells have no index, interval, p- or q-value.
    tier_low, tier_high : float
        Action-tier thresholds of the data dictionary (80 and 120).

    Attributes
    ----------
    table_ : pandas.DataFrame
        Tidy table with :data:`TABLE_COLUMNS`, set by :meth:`fit`.
    engine_ : str
        The engine that aggregated the data (``duckdb`` or ``spark``).
    moments_ : pandas.DataFrame
        The engine's output: per variable and segment, the sufficient statistics :data:`MOMENTS`.

    Notes
    -----
    :meth:`fit` runs on an execution engine through Ibis: the engine computes the labels, the weighted
    quantiles of the composition cut and, in one group-by over segments, the sufficient statistics of every
    metric and attribute indicator; only that small table comes back, and :func:`index_from_moments` (the
    same code for every engine) turns it into indices, intervals, tests, q-values, flags and tiers. A
    pandas frame is registered into an in-memory DuckDB (or the given backend), so the default takes the
    same code path as a 10M-user Parquet panel on Spark.
    """

    metrics: Sequence[str] = tuple(S.CHANNEL_METRICS)
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES
    heavy_quantile: float = 2 / 3
    confidence: float = 0.95
    alpha: float = 0.05
    fdr_method: str = "fdr_bh"
    rule: BaseSizeRule = field(default_factory=BaseSizeRule)
    tier_low: float = 80.0
    tier_high: float = 120.0

    def fit(self, data, segment_col: str = "segment", weight_col: str | None = "weight",
            name_col: str | None = "segment_name", base=None, *, engine: str | None = None, con=None,
            cache: bool = False) -> "AffinityIndex":
        """Compute every index of every segment against the base.

        Parameters
        ----------
        data : pandas.DataFrame or ibis.Table
            One row per unit: the metrics and attributes, a segment column and optionally weights. An Ibis
            table (e.g. ``engine.read_parquet(con, ...)`` joined with segments and weights) is aggregated on
            its own backend; a pandas frame is registered into ``con`` (default: a new in-memory DuckDB,
            or a connection to ``engine``).
        segment_col : str
            Column with segment labels.
        weight_col : str or None
            Column with weights; None (or a column that is absent) means unweighted.
        name_col : str or None
            Column with segment names (optional).
        base : boolean mask, pandas query string, Ibis boolean expression, callable or None
            The base (audience) the segments are compared with: None is the whole frame; e.g.
            ``"age_group == '25-34'"`` compares segments within 25-34 year olds. For an Ibis table a string
            is a pandas-style query turned into an Ibis expression (:func:`query_expression`), a callable
            gets the table and returns a boolean expression.
        engine : {"duckdb", "spark"}, optional
            Engine for a pandas frame when ``con`` is not given (default ``duckdb``).
        con : Ibis backend, optional
            Backend from :func:`helpers.engine.connect`.
        cache : bool, optional
            Cache the base table in the engine for the five queries of the fit (default no: on a local Spark
            with 1M users caching cost more than re-reading the Parquet file; it may pay off for costly
            joins on a cluster).
        """
        import ibis

        from . import engine as E

        if not 0 < self.heavy_quantile < 1:
            raise ValueError(f"heavy_quantile must be in (0, 1), got {self.heavy_quantile}")
        if isinstance(data, pd.DataFrame):
            table, con, has_w = self._register(data, segment_col, weight_col, name_col, base, engine, con)
        else:
            table, has_w = data, bool(weight_col) and weight_col in data.columns
            con = con if con is not None else ibis.get_backend(data)
            self._check_table(table, segment_col)
            table = _apply_base(table, base)
        self.engine_ = E.engine_of(con)
        w = table[weight_col].cast("float64") if has_w else ibis.literal(1.0)
        table = table.mutate(**{_W: w}).mutate(**{_W2: ibis._[_W] * ibis._[_W]})
        cached = bool(cache)
        if cached:
            table = table.cache()
        try:
            self._fit_table(con, table, data, segment_col, name_col, weight_col if has_w else None)
        finally:
            if cached:
                table.release()
        return self

    def _fit_table(self, con, table, data, segment_col, name_col, weight_col) -> None:
        labels, names = self._labels(con, table, segment_col, name_col, weight_col,
                                     check=not isinstance(data, pd.DataFrame))
        parts, moms = [], []

        def add(family, attribute, kind, definition, mom, count):
            est = index_from_moments(mom, labels, confidence=self.confidence, count_cells=count)
            vertical = 100 * est["segment_value"] if kind != "intensity" else np.nan
            parts.append(est.assign(family=family, attribute=attribute, index_type=kind, definition=definition,
                                    vertical_pct=vertical))
            moms.append(mom.assign(segment=labels, family=family, attribute=attribute, index_type=kind))

        if self.metrics:  # one query for the quantiles, one group-by for every metric
            cuts = engine_quantiles(table, self.metrics, self.heavy_quantile, con=con)
            res = con.execute(table.group_by(seg_=table[segment_col])
                              .aggregate(**_metric_aggregates(table, self.metrics, cuts)))
            res = res.set_index("seg_").reindex(pd.Index(labels)).astype(float).fillna(0.0)
            for i, m in enumerate(self.metrics):
                g = lambda c: res[f"m{i}__{c}"].to_numpy()  # noqa: E731
                mom = pd.DataFrame({"n": g("n"), "t": g("t"), "ty": g("ty"), "t2": g("t2"), "t2y": g("t2y"),
                                    "t2yy": g("t2yy"), "n_nz": g("n"), "t_nz": g("t"), "t2_nz": g("t2")})
                add(m, m, "intensity", f"mean of {m}", mom, False)
                add(m, m, "composition", f"heavy user: {m} > {cuts[m]:g} (base's weighted "
                    f"{100 * self.heavy_quantile:.0f}th percentile)",
                    _flag_moments(g("n"), g("t"), g("t2"), g("hn"), g("ht"), g("ht2")), True)
        if self.attributes:  # one query: a group-by per attribute family over segment x value
            expr, decode = _attribute_query(table, segment_col, self.attributes, self.engine_)
            res = decode(con.execute(expr))
            for column in self.attributes:
                fam = res[res["fam_"] == column]
                vals = fam[~fam["tot_"]]
                if column == "household_size":
                    vals = vals.assign(val_=vals["val_"].replace({"5": "5+"}))
                grid = (vals.pivot_table(index="seg_", columns="val_", values=["n", "t", "t2"], aggfunc="sum")
                        if len(vals) else pd.DataFrame(columns=pd.MultiIndex.from_product([["n", "t", "t2"], []])))
                tot = (fam[fam["tot_"]].set_index("seg_")[["n", "t", "t2"]] if fam["tot_"].any()
                       else pd.DataFrame({k: grid[k].sum(axis=1) for k in ("n", "t", "t2")}))
                tot = tot.reindex(pd.Index(labels)).astype(float).fillna(0.0)
                for c in _family_categories(column, vals["val_"].dropna().unique()):
                    cell = [grid[(k, c)].reindex(pd.Index(labels)).to_numpy(dtype=float) if (k, c) in grid.columns
                            else np.zeros(len(labels)) for k in ("n", "t", "t2")]
                    add(column, c, "share", f"% with {column} = {c}",
                        _flag_moments(tot["n"], tot["t"], tot["t2"], *cell), True)
        table_out = pd.concat(parts, ignore_index=True)
        table_out["segment_name"] = (table_out["segment"].map(names) if names is not None
                                     else table_out["segment"].astype(str))
        self.moments_ = pd.concat(moms, ignore_index=True) if moms else pd.DataFrame(columns=MOMENTS)
        self.table_ = self._finish(table_out)

    # -- helpers of fit --
    def _register(self, df, segment_col, weight_col, name_col, base, engine, con):
        """Check a pandas frame (errors name rows) and register the needed columns with the engine."""
        import ibis

        from . import engine as E

        if segment_col not in df.columns:
            raise ValueError(f"segment column {segment_col!r} is not in the data; join the segments "
                             "(user_id, segment, segment_name) first, e.g. from artifacts.load_segments")
        missing = [c for c in self.metrics if c not in df.columns]
        if missing:
            raise ValueError(f"metric columns {missing} are not in the data")
        missing = [c for c in self.attributes if c not in df.columns]
        if missing:
            raise ValueError(f"attribute columns {missing} are not in the data (available: {list(df.columns)})")
        data = df.loc[self._base_mask(df, base)]
        if data.empty:
            raise ValueError("the base is empty: the filter selected no rows")
        _check_codes(data[segment_col].to_numpy())
        has_w = bool(weight_col) and weight_col in data.columns
        if has_w:
            _check_weights(data[weight_col].to_numpy(dtype=float), weight_col)
        keep = list(dict.fromkeys([segment_col] + ([name_col] if name_col and name_col in data.columns else [])
                                  + ([weight_col] if has_w else []) + list(self.metrics)
                                  + list(self.attributes)))
        slim = data[keep].reset_index(drop=True)
        con = con if con is not None else E.connect(engine or "duckdb")
        return ibis.memtable(slim), con, has_w

    def _check_table(self, table, segment_col) -> None:
        cols = set(table.columns)
        if segment_col not in cols:
            raise ValueError(f"segment column {segment_col!r} is not in the data; join the segments "
                             "(user_id, segment, segment_name) first, e.g. from artifacts.load_segments")
        missing = [c for c in self.metrics if c not in cols]
        if missing:
            raise ValueError(f"metric columns {missing} are not in the data")
        missing = [c for c in self.attributes if c not in cols]
        if missing:
            raise ValueError(f"attribute columns {missing} are not in the data (available: {sorted(cols)})")

    @staticmethod
    def _labels(con, table, segment_col, name_col, weight_col, check: bool):
        """Segment labels (sorted) and names; on an Ibis input also the checks pandas does by row."""
        s = table[segment_col]
        w = table[_W]
        aggs = {"n_": s.count(), "rows_": table.count()}
        if name_col and name_col in table.columns:
            aggs["name_"] = table[name_col].min()
        got = con.execute(table.group_by(seg_=s).aggregate(**aggs))
        if check:
            if got.empty:
                raise ValueError("the base is empty: the filter selected no rows")
            nulls = got["seg_"].isna()
            if nulls.any():
                n_bad = int(got.loc[nulls, "rows_"].sum())
                raise ValueError(f"segment labels are missing in {n_bad} rows; every unit of the base "
                                 "needs a segment (drop or assign them first).")
            if weight_col:
                bad = con.execute(table.aggregate(
                    bad=w.count(where=w.isnan() | w.isinf() | (w < 0)),
                    nulls=table[weight_col].isnull().sum()))
                n_bad = int(bad["bad"].iloc[0]) + int(bad["nulls"].iloc[0])
                if n_bad:
                    raise ValueError(f"column {weight_col!r} must hold finite weights >= 0; {n_bad} rows do "
                                     "not. Fix or drop them before computing affinities.")
        got = got.sort_values("seg_", kind="stable")
        labels = got["seg_"].to_numpy()
        if labels.dtype.kind in "iu":
            labels = labels.astype(np.int64)
        names = (pd.Series(got["name_"].to_numpy(), index=labels) if "name_" in got.columns else None)
        return labels, names

    @staticmethod
    def _base_mask(df: pd.DataFrame, base) -> np.ndarray:
        if base is None:
            return np.ones(len(df), dtype=bool)
        if isinstance(base, str):  # missing values compare as False, as in SQL
            mask = df.eval(base)
            return (mask.fillna(False) if isinstance(mask, pd.Series) else pd.Series(mask)).to_numpy(dtype=bool)
        mask = np.asarray(base, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"base mask has shape {mask.shape}, expected ({len(df)},) (one flag per row)")
        return mask

    def _finish(self, t: pd.DataFrame) -> pd.DataFrame:
        t["base_flag"] = self.rule.flag(t["n_unweighted"].to_numpy(), t["n_effective"].to_numpy())
        hide = t["base_flag"].eq("suppressed").to_numpy()
        for c in ("index", "ci_low", "ci_high", "p_value", "segment_value", "vertical_pct", "horizontal_pct"):
            t.loc[hide, c] = np.nan
        t["q_value"] = fdr_qvalues(t["p_value"].to_numpy(), self.fdr_method)
        t["significant"] = t["q_value"].lt(self.alpha)
        t["tier"] = assign_tier(t["index"], self.tier_low, self.tier_high)
        return t[TABLE_COLUMNS + ["se_log_index", "z"]]

    # -- views --
    def crosstab(self, index_type: str = "intensity", value: str = "index") -> pd.DataFrame:
        """Wide crosstab (attributes as rows, segments as columns) of one column of the table."""
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        t = self.table_[self.table_["index_type"] == index_type]
        rows = pd.MultiIndex.from_frame(t[["family", "attribute"]].drop_duplicates())
        cols = t[["segment", "segment_name"]].drop_duplicates().sort_values("segment")["segment_name"]
        return t.pivot(index=["family", "attribute"], columns="segment_name", values=value).reindex(
            index=rows, columns=cols.tolist())

    def summaries(self, top: int = 3) -> pd.DataFrame:
        """One reasoning sentence per segment: see :func:`segment_summaries`."""
        return segment_summaries(self.table_, top=top, low=self.tier_low, high=self.tier_high)


def affinity_table(df, segment_col: str = "segment", weight_col: str | None = "weight",
                   base=None, *, engine: str | None = None, con=None, **params) -> pd.DataFrame:
    """Functional shortcut: ``AffinityIndex(**params).fit(df, segment_col, weight_col, base=base).table_``."""
    return AffinityIndex(**params).fit(df, segment_col=segment_col, weight_col=weight_col, base=base,
                                       engine=engine, con=con).table_


def _channel_name(metric: str) -> str:
    return metric.replace("time_on_", "").replace("_min", "").replace("_", " ")


def segment_summaries(table: pd.DataFrame, top: int = 3, low: float = 80.0, high: float = 120.0
                      ) -> pd.DataFrame:
    """The action-tier reasoning sentence for each segment's top and bottom channels.

    Uses the intensity indices of the channel metrics: the ``top`` highest are named with their index,
    interval and tier, followed by channels to de-prioritise. Only significant, reported cells are called
    a sweet spot or de-prioritised; others are named as not distinguishable from the base.
    """
    t = table[(table["index_type"] == "intensity")].copy()
    rows = []
    for (seg, name), g in t.groupby(["segment", "segment_name"], sort=True):
        g = g.dropna(subset=["index"]).sort_values("index", ascending=False)
        parts = []
        for _, r in g.head(top).iterrows():
            ch = _channel_name(r["attribute"])
            why = ("significantly above the base" if r["significant"] and r["index"] > 100
                   else "not significantly different from the base" if not r["significant"]
                   else "significantly below the base")
            parts.append(f"{ch} index {r['index']:.0f} (95% CI {r['ci_low']:.0f}-{r['ci_high']:.0f}, "
                         f"{why}; tier: {r['tier']})")
        low_ch = [_channel_name(a) for a in g[(g["index"] < low) & g["significant"]]["attribute"]]
        high_ch = [_channel_name(a) for a in g[(g["index"] > high) & g["significant"]]["attribute"]]
        sentence = (f"{name}: " + "; ".join(parts) + ". "
                    + (f"Sweet spots (index > {high:g}, significant): " + ", ".join(high_ch) + ". "
                       if high_ch else
                       f"No channel is a significant sweet spot (index > {high:g}). ")
                    + (f"De-prioritise (index < {low:g}, significant): " + ", ".join(low_ch) + "."
                       if low_ch else "Nothing to de-prioritise."))
        rows.append({"segment": seg, "segment_name": name, "sentence": sentence})
    return pd.DataFrame(rows)


# --- scoring against planted truth -------------------------------------------------------------------
def match_segments(predicted: np.ndarray, true: np.ndarray) -> dict:
    """Map each predicted segment label to the true segment it overlaps most (Hungarian assignment of
    :func:`helpers.segment.match_labels`); predicted segments left unmatched are omitted."""
    from .segment import match_labels

    return {f: t for f, t in match_labels(predicted, true).items() if t >= 0}


def truth_comparison(table: pd.DataFrame, true_affinity: Mapping | pd.DataFrame,
                     segment_map: Mapping | None = None) -> pd.DataFrame:
    """Planted intensity indices beside the estimates: ``segment, attribute, true_index, index,
    ci_low, ci_high, inside, significant, sign_agrees``.

    Parameters
    ----------
    table : pandas.DataFrame
        :attr:`AffinityIndex.table_`.
    true_affinity : mapping or DataFrame
        ``params['true_affinity_panel']`` or ``params['true_affinity_population']`` of the generator
        (segment -> metric -> index; JSON string keys are accepted).
    segment_map : mapping, optional
        Estimated segment label -> true segment (e.g. from :func:`match_segments`); identity if None.
        Estimated segments with no true counterpart are left out.
    """
    truth = (true_affinity if isinstance(true_affinity, pd.DataFrame)
             else pd.DataFrame.from_dict(true_affinity, orient="index"))
    truth.index = truth.index.astype(int)
    t = table[(table["index_type"] == "intensity") & table["attribute"].isin(truth.columns)].copy()
    true_seg = t["segment"].map(segment_map) if segment_map is not None else t["segment"]
    t["true_index"] = [truth.at[int(s), a] if pd.notna(s) and int(s) in truth.index else np.nan
                       for s, a in zip(true_seg, t["attribute"])]
    t = t.dropna(subset=["true_index"])  # estimated segments without a true counterpart
    t["inside"] = (t["ci_low"] <= t["true_index"]) & (t["true_index"] <= t["ci_high"])
    t["sign_agrees"] = np.sign(t["index"] - 100) == np.sign(t["true_index"] - 100)
    return t[["segment", "segment_name", "attribute", "true_index", "index", "ci_low", "ci_high", "inside",
              "significant", "sign_agrees"]].reset_index(drop=True)
