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

Base-size rules follow MRI-Simmons' defaults: an unweighted cell count of 31-60 is flagged "caution",
below 31 "suppressed" (the index is not reported). The thresholds are parameters and can be applied to
the Kish effective sample size instead.
"""

from __future__ import annotations

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


# --- the core estimator -------------------------------------------------------------------------------
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
    and a two-sided normal p-value.
    """
    y = np.asarray(y, dtype=float)
    codes, labels = _check_codes(np.asarray(segments))
    w = np.ones_like(y) if weights is None else _check_weights(weights)
    if not (y.shape == codes.shape == w.shape):
        raise ValueError(f"y, segments and weights must have the same length, got {y.shape[0]}, "
                         f"{codes.shape[0]}, {w.shape[0]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k = labels.shape[0]
    obs = np.isfinite(y) & (w > 0)
    y, g, w = y[obs], codes[obs], w[obs]
    n = y.shape[0]
    bc = lambda v: np.bincount(g, weights=v, minlength=k)  # noqa: E731
    t_n, t_y = w.sum(), (w * y).sum()
    t_s, t_ys = bc(w), bc(w * y)
    w2 = w * w
    with np.errstate(divide="ignore", invalid="ignore"):
        m_s, big_m = t_ys / t_s, t_y / t_n
        t_r = t_n - t_s
        m_r = (t_y - t_ys) / t_r
        index = 100 * m_s / big_m
        # variance of log(index): sum over all units of w^2 b^2 plus a segment-specific correction
        b = 1 / t_n - y / t_y
        a = y / t_ys[g] - 1 / t_s[g]
        ss = (w2 * b * b).sum() + bc(w2 * a * (a + 2 * b))
        var_log = n / max(n - 1, 1) * ss
        se_log = np.sqrt(np.maximum(var_log, 0))
        # segment vs rest of the base
        s0, s1, s2 = w2.sum(), (w2 * y).sum(), (w2 * y * y).sum()
        g0, g1, g2 = bc(w2), bc(w2 * y), bc(w2 * y * y)
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
        n_seg = np.bincount(g, minlength=k)
        cell = (y != 0) if count_cells else np.ones_like(y, dtype=bool)
        n_cell = np.bincount(g[cell], minlength=k)
        w_cell, w2_cell = bc(w * cell), bc(w2 * cell)
        n_eff = np.where(w2_cell > 0, w_cell**2 / w2_cell, 0.0)
        horizontal = 100 * t_ys / t_y
    return pd.DataFrame({
        "segment": labels, "n_segment": n_seg, "n_unweighted": n_cell, "n_weighted": w_cell,
        "n_effective": n_eff, "segment_value": m_s, "base_value": np.full(k, big_m), "rest_value": m_r,
        "index": index, "se_log_index": se_log, "ci_low": ci_low, "ci_high": ci_high, "z": z,
        "p_value": p, "horizontal_pct": horizontal,
    })


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

    def fit(self, df: pd.DataFrame, segment_col: str = "segment", weight_col: str | None = "weight",
            name_col: str | None = "segment_name", base: pd.Series | np.ndarray | str | None = None
            ) -> "AffinityIndex":
        """Compute every index of every segment against the base.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per unit: the metrics and attributes, a segment column and optionally weights.
        segment_col : str
            Column with segment labels.
        weight_col : str or None
            Column with weights; None (or a column that is absent) means unweighted.
        name_col : str or None
            Column with segment names (optional).
        base : boolean mask, pandas query string or None
            The base (audience) the segments are compared with: None is the whole frame; e.g.
            ``"age_group == '25-34'"`` compares segments within 25-34 year olds.
        """
        if not 0 < self.heavy_quantile < 1:
            raise ValueError(f"heavy_quantile must be in (0, 1), got {self.heavy_quantile}")
        if segment_col not in df.columns:
            raise ValueError(f"segment column {segment_col!r} is not in the data; join the segments "
                             "(user_id, segment, segment_name) first, e.g. from artifacts.load_segments")
        missing = [c for c in self.metrics if c not in df.columns]
        if missing:
            raise ValueError(f"metric columns {missing} are not in the data")
        data = df.loc[self._base_mask(df, base)]
        if data.empty:
            raise ValueError("the base is empty: the filter selected no rows")
        codes, labels = _check_codes(data[segment_col].to_numpy())
        seg = labels[codes]  # labels as a plain array: index_estimates re-encodes them cheaply
        w = (data[weight_col].to_numpy(dtype=float) if weight_col and weight_col in data.columns
             else np.ones(len(data)))
        w = _check_weights(w, weight_col or "weight")
        parts = []
        for m in self.metrics:
            y = pd.to_numeric(data[m], errors="coerce").astype(float).to_numpy()
            parts.append(self._rows(y, seg, w, m, m, "intensity", f"mean of {m}"))
            cut = weighted_quantile(y, w, self.heavy_quantile)
            heavy = np.where(np.isfinite(y), (y > cut).astype(float), np.nan)
            parts.append(self._rows(heavy, seg, w, m, m, "composition",
                                    f"heavy user: {m} > {cut:g} (base's weighted "
                                    f"{100 * self.heavy_quantile:.0f}th percentile)", count=True))
        ind, meta = attribute_indicators(data, self.attributes)
        for col in ind.columns:
            fam, att = meta.loc[col, "family"], meta.loc[col, "attribute"]
            parts.append(self._rows(ind[col].to_numpy(), seg, w, fam, att, "share",
                                    f"% with {fam} = {att}", count=True))
        table = pd.concat(parts, ignore_index=True)
        names = (data.groupby(segment_col)[name_col].first() if name_col and name_col in data.columns
                 else None)
        table["segment_name"] = (table["segment"].map(names) if names is not None
                                 else table["segment"].astype(str))
        self.table_ = self._finish(table)
        return self

    # -- helpers of fit --
    @staticmethod
    def _base_mask(df: pd.DataFrame, base) -> np.ndarray:
        if base is None:
            return np.ones(len(df), dtype=bool)
        if isinstance(base, str):
            return df.eval(base).to_numpy(dtype=bool)
        mask = np.asarray(base, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"base mask has shape {mask.shape}, expected ({len(df)},) (one flag per row)")
        return mask

    def _rows(self, y, seg, w, family, attribute, kind, definition, count=False) -> pd.DataFrame:
        est = index_estimates(y, seg, w, confidence=self.confidence, count_cells=count)
        vertical = 100 * est["segment_value"] if kind != "intensity" else np.nan
        return est.assign(family=family, attribute=attribute, index_type=kind, definition=definition,
                          vertical_pct=vertical)

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


def affinity_table(df: pd.DataFrame, segment_col: str = "segment", weight_col: str | None = "weight",
                   base=None, **params) -> pd.DataFrame:
    """Functional shortcut: ``AffinityIndex(**params).fit(df, segment_col, weight_col, base=base).table_``."""
    return AffinityIndex(**params).fit(df, segment_col=segment_col, weight_col=weight_col, base=base).table_


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
    """Map each predicted segment label to the true segment it overlaps most (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    ct = pd.crosstab(pd.Series(np.asarray(predicted), name="pred"), pd.Series(np.asarray(true), name="true"))
    r, c = linear_sum_assignment(-ct.to_numpy())
    return {ct.index[i]: ct.columns[j] for i, j in zip(r, c)}


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
