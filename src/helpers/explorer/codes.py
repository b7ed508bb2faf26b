"""The panel's columns as integer codes, computed once per loaded run, and profiles from per-cell sums.

At a million customers, comparing every row's string with every category (a persona card's demographics,
the comparison's 0/1 indicators, the region table) and keeping a rows x indicators matrix (1.4 GB) were
most of the Explorer's time and memory. Here each column is factorised once (:func:`column_codes`); an
attribute family's indicators are :func:`helpers.affinity.attribute_indicators` of its *distinct cells*
only (:func:`family_lookup`), so an indicator of every row is ``lookup[codes]`` and the statistics core's
sufficient statistics of every indicator are sums per (group, cell) times that lookup
(:func:`indicator_profile`, equal to :func:`helpers.stats.core.profile` of the full matrix to float
rounding).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..stats import core as stats_core
from .common import TIER_HIGH, TIER_LOW, label_of, value_label


_GUARD = threading.Lock()


def panel_cached(data: Any, key: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` computed once per panel: cached on ``data._cache`` with the panel it was computed from (a
    copy of the data with another panel, as ``dataclasses.replace`` makes, recomputes). One computation per
    key at a time: a request asking for what another request is computing waits for it."""
    hit = data._cache.get(key)
    if hit is not None and hit[0] is data.panel:
        return hit[1]
    with _GUARD:
        lock = data._cache.setdefault(("lock", key), threading.RLock())
    with lock:
        hit = data._cache.get(key)
        if hit is not None and hit[0] is data.panel:
            return hit[1]
        value = fn()
        data._cache[key] = (data.panel, value)
    return value


def _first_rows(codes: np.ndarray, k: int) -> np.ndarray:
    """Row of the first occurrence of each code ``0..k-1``."""
    ok = np.flatnonzero(codes >= 0)
    _, first = np.unique(codes[ok], return_index=True)
    return ok[first]


def column_codes(data: Any, column: str) -> tuple[np.ndarray, pd.Series]:
    """``(codes, cells)`` of a panel column: ``pd.factorize`` codes per row (-1 where missing) and one row of
    the panel's column per code (its first holder, original dtype), computed once."""
    def build():
        col = data.panel[column]
        codes, uniq = pd.factorize(col)
        codes = codes.astype(np.int32 if len(uniq) < 2 ** 31 else np.int64)
        return codes, col.iloc[_first_rows(codes, len(uniq))].reset_index(drop=True)
    return panel_cached(data, ("codes", column), build)


def family_lookup(data: Any, family: str) -> tuple[np.ndarray, np.ndarray, list[str], pd.DataFrame]:
    """``(codes, lookup, names, meta)`` of an attribute family: the 0/1 indicators of
    :func:`helpers.affinity.attribute_indicators` of each distinct cell (``lookup``, cells x values, NaN
    where unobserved), their column names (``family=value``) and meta; the indicator of row ``i`` is
    ``lookup[codes[i]]`` (unobserved when ``codes[i] == -1``)."""
    from ..affinity import attribute_indicators

    def build():
        codes, cells = column_codes(data, family)
        ind, meta = attribute_indicators(cells.to_frame(family), [family])
        return codes, ind.to_numpy(float), list(ind.columns), meta
    return panel_cached(data, ("family", family), build)


def metric_values(data: Any, column: str) -> np.ndarray:
    """A behavioural metric as floats (``pd.to_numeric``, unparsable values NaN), computed once."""
    return panel_cached(data, ("metric", column),
                        lambda: pd.to_numeric(data.panel[column], errors="coerce").astype(float).to_numpy())


def comparison_variables(data: Any) -> tuple[list[str], list[str], dict]:
    """``(metrics, families, labels)``: the variables two audiences are compared on, as
    :func:`helpers.explorer.audiences.comparison_indicators` builds them (same columns, order and labels)."""
    def build():
        p = data.panel
        metrics = [m for m in (getattr(data.cfg, "metric_names", None) or []) if m in p.columns]
        a = data.affinity
        fams = [f for f in pd.unique(a.loc[a["index_type"] == "share", "family"]) if f in p.columns]
        labels = {m: label_of(data, m, unit=True) for m in metrics}
        for f in fams:
            _, _, names, meta = family_lookup(data, f)
            labels.update({c: value_label(data, meta.at[c, "family"], meta.at[c, "attribute"]) for c in names})
        return metrics, fams, labels
    return panel_cached(data, "comparison_variables", build)


def _cell_sums(codes: np.ndarray, k: int, g: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per (group 0/1, cell) the units with a positive weight, their weights and squared weights, and the
    units whatever their weight: arrays (2, k)."""
    ok = codes >= 0
    key = g[ok] * k + codes[ok]
    wk = w[ok]
    pos = wk > 0
    kp, wp = key[pos], wk[pos]
    shape = (2, k)
    return (np.bincount(kp, minlength=2 * k).reshape(shape).astype(float),
            np.bincount(kp, weights=wp, minlength=2 * k).reshape(shape),
            np.bincount(kp, weights=wp * wp, minlength=2 * k).reshape(shape),
            np.bincount(key, minlength=2 * k).reshape(shape))


def _row(col: str, est: pd.Series, is_flag: bool) -> dict:
    """One row of :func:`helpers.stats.core.profile` from the core's estimate of the audience group."""
    att, val = tuple(col.split("=", 1)) if "=" in col else (col, col)
    return {"attribute": att, "value_label": val, "column": col, "kind": "share" if is_flag else "mean",
            "audience_mean": est["segment_value"], "base_mean": est["base_value"],
            "rest_mean": est["rest_value"], "index": est["index"], "ci_low": est["ci_low"],
            "ci_high": est["ci_high"], "p_value": est["p_value"], "se_log_index": est["se_log_index"],
            "z": est["z"], "n_audience": int(est["n_segment"]), "n_cell": int(est["n_unweighted"]),
            "n_eff_audience": est["n_eff_segment"], "n_unweighted": int(est["n_unweighted"]),
            "n_effective": est["n_effective"], "rse": est["rse"]}


def indicator_profile(data: Any, rows: np.ndarray | None, in_audience: np.ndarray,
                      confidence: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """:func:`helpers.stats.core.profile` of the comparison variables (:func:`comparison_variables`) over
    the panel rows ``rows`` (None: every row, in order; a row may appear twice) with ``in_audience`` (one
    flag per row taken) marking the audience; and the variables' labels.

    Metrics go through the core's :func:`~helpers.stats.core.moments` exactly as ``profile`` does; each
    attribute value's moments are the core's :func:`~helpers.stats.core.flag_moments` of per-cell sums, the
    same totals summed in another order (equal to float rounding). The estimator, base-size rule, FDR and
    tiers are the core's (``index_table``, ``finalize``), as in ``profile``."""
    metrics, fams, labels = comparison_variables(data)
    g = np.asarray(in_audience, dtype=bool).astype(np.int64)
    if not g.any():
        raise ValueError("the audience is empty: in_audience selects no row")
    w_all = stats_core.check_weights(data.panel["weight"].to_numpy(float))
    take = (lambda x: x) if rows is None else (lambda x: x[rows])
    w = take(w_all)
    out = []
    for m in metrics:
        y = take(metric_values(data, m))
        fin = y[np.isfinite(y)]
        is_flag = fin.size > 0 and bool(np.isin(fin, (0.0, 1.0)).all())
        est = stats_core.index_table(stats_core.moments(y, g, w, 2), [0, 1], confidence, count_cells=is_flag)
        out.append(_row(m, est.iloc[1], is_flag))
    for f in fams:
        codes, lookup, names, _ = family_lookup(data, f)
        cnt, sw, sw2, seen = _cell_sums(take(codes), lookup.shape[0], g, w)
        observed = np.isfinite(lookup).astype(float)      # cells x values: the value is observed in the cell
        held = np.nan_to_num(lookup)                       # cells x values: the cell holds the value
        n, t, t2 = cnt @ observed, sw @ observed, sw2 @ observed
        hn, ht, ht2 = cnt @ held, sw @ held, sw2 @ held
        n_seen = (seen @ observed).sum(0)
        for j, col in enumerate(names):
            is_flag = bool(n_seen[j] > 0)
            mom = stats_core.flag_moments(n[:, j], t[:, j], t2[:, j], hn[:, j], ht[:, j], ht2[:, j])
            est = stats_core.index_table(mom, [0, 1], confidence, count_cells=is_flag)
            out.append(_row(col, est.iloc[1], is_flag))
    prof = pd.DataFrame(out)
    if prof.empty:
        return pd.DataFrame(columns=stats_core.PROFILE_COLUMNS), labels
    prof = stats_core.finalize(prof, None, 0.05, "fdr_bh", np.zeros(len(prof), bool), TIER_LOW, TIER_HIGH)
    prof.loc[prof["base_flag"].eq("suppressed"), "audience_mean"] = np.nan
    extra = ["column", "kind", "n_cell", "rest_mean", "se_log_index", "z", "descriptive"]
    return prof[stats_core.PROFILE_COLUMNS + extra], labels
