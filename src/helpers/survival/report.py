"""Reporting of churn scores: calibration against the future, per-segment value and the forest plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import DAYS_PER_MONTH


#: Columns of the planted truth (``users_truth``) the churn notebook reads: the segment (planted-HR check and the
#: Markov oracle), the true lifetime and tenure (future churn without future outcomes), the true log hazard
#: (the Weibull-world oracle).
TRUTH_COLUMNS = ("user_id", "true_segment", "true_segment_name", "true_event_time_days", "tenure_days",
                 "true_log_hazard")


def truth_columns(path) -> list[str]:
    """The :data:`TRUTH_COLUMNS` that the truth file at ``path`` holds (read from its Parquet schema)."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return [c for c in TRUTH_COLUMNS if c in names]


def future_churn_truth(tte: pd.DataFrame, truth: pd.DataFrame, horizon: int = 90,
                       future: pd.DataFrame | None = None, id_col: str = "user_id") -> pd.Series:
    """What really happened in the ``horizon`` days after the observation date (planted truth only).

    Uses ``future_outcomes.parquet``'s ``churn_next_<h>d`` when ``future`` holds it; otherwise derives it from
    ``users_truth``: the true lifetime ends before ``tenure + horizon`` (``true_event_time_days <=
    tenure_days + horizon``). Aligned on ``tte``'s rows; raises naming the column when neither is available.
    """
    from ..panel import align  # ids compared as text in Arrow: no Python string per user (0.7 GB at 10M)

    col = f"churn_next_{horizon}d"
    ids = tte[id_col].reset_index(drop=True)
    if future is not None and col in future:
        vals = align(ids, future[[id_col, col]], id_col)[col]
        if vals.isna().any():
            raise ValueError(f"future_outcomes lacks {col} for {int(vals.isna().sum())} users "
                             f"(e.g. {list(ids[vals.isna().to_numpy()].astype(str).head(3))})")
        return pd.Series(vals.astype(bool).to_numpy(), index=tte.index, name=col)
    need = {"true_event_time_days", "tenure_days"} - set(truth.columns)
    if need:
        raise ValueError(f"users_truth lacks {sorted(need)} and no future_outcomes.{col} was given")
    t = align(ids, truth[[id_col, "true_event_time_days", "tenure_days"]], id_col)
    fut = t["true_event_time_days"].to_numpy(float) <= t["tenure_days"].to_numpy(float) + horizon
    return pd.Series(fut, index=tte.index, name=col)


def recency_calibration(pred, actual, recency, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs actual (future) churn in recency deciles (equal-count bins of days since last
    activity; ties broken by row order), with a 95% Wilson interval of the actual share.

    Pass only the users the score is meant for (not yet flagged). Columns: ``bin``, ``recency_min``,
    ``recency_max`` (days), ``n``, ``predicted``, ``actual``, ``actual_lower``, ``actual_upper``,
    ``abs_err``.
    """
    d = pd.DataFrame({"pred": np.asarray(pred, float), "actual": np.asarray(actual, float),
                      "recency": np.asarray(recency, float)}).reset_index(drop=True)
    if len(d) < n_bins:
        raise ValueError(f"recency_calibration needs at least {n_bins} users, got {len(d)}")
    order = np.lexsort((np.arange(len(d)), d["recency"].to_numpy()))
    bins = np.empty(len(d), dtype=int)
    bins[order] = np.arange(len(d)) * n_bins // len(d)
    d["bin"] = bins
    g = d.groupby("bin")
    out = pd.DataFrame({"recency_min": g["recency"].min(), "recency_max": g["recency"].max(),
                        "n": g.size(), "predicted": g["pred"].mean(), "actual": g["actual"].mean()}
                       ).reset_index()
    z, n, ph = 1.96, out["n"].to_numpy(float), out["actual"].to_numpy(float)
    centre = (ph + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(ph * (1 - ph) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    out["actual_lower"], out["actual_upper"] = centre - half, centre + half
    out["abs_err"] = (out["predicted"] - out["actual"]).abs()
    return out


def plot_recency_calibration(tables: dict[str, pd.DataFrame], ax=None, horizon: int = 90):
    """Predicted and actual churn share by recency decile, one line per score (``tables``: label -> table
    of :func:`recency_calibration`; the first is drawn with the actual shares and their 95% intervals)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 4))[1]
    first = next(iter(tables.values()))
    x = np.arange(len(first))
    ax.errorbar(x, first["actual"], yerr=[first["actual"] - first["actual_lower"],
                                          first["actual_upper"] - first["actual"]],
                fmt="ks", capsize=3, label=f"actual churn in the next {horizon} days (95% CI)")
    for i, (lab, t) in enumerate(tables.items()):
        ax.plot(x, t["predicted"], "o-", color=f"C{i}", label=f"predicted: {lab}")
    ax.set_xticks(x, [f"{a:.0f}-{b:.0f}" for a, b in zip(first["recency_min"], first["recency_max"])],
                  rotation=45)
    ax.set(xlabel="recency decile: days since last activity at the observation date",
           ylabel=f"share churning within {horizon} days")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax


def segment_value(risk: pd.DataFrame, segment: pd.Series, spend: pd.Series,
                  rmst: pd.DataFrame | None = None, labels: dict | None = None) -> pd.DataFrame:
    """Per-segment customer value: users, churn share, mean 90-day churn risk of active users, mean
    expected remaining lifetime and value, mean spend, and (if given) the segment's KM RMST."""
    d = risk.assign(segment=pd.Series(segment, index=risk.index).to_numpy(),
                    spend=pd.Series(spend, index=risk.index).astype(float).to_numpy())
    act = d[~d["churned"]]
    out = pd.DataFrame({
        "n_users": d.groupby("segment").size(),
        "churned_share": d.groupby("segment")["churned"].mean(),
        "mean_spend_usd_month": d.groupby("segment")["spend"].mean(),
        "active_churn_prob_90d": act.groupby("segment")["churn_prob_90d"].mean(),
        "active_expected_remaining_days": act.groupby("segment")["expected_remaining_days"].mean(),
        "mean_expected_value_usd": d.groupby("segment")["expected_value"].mean(),
        "total_expected_value_usd": d.groupby("segment")["expected_value"].sum(),
    }).reset_index()
    if labels:
        out.insert(1, "segment_name", out["segment"].map(labels))
    if rmst is not None:
        r = rmst.rename(columns={"group": "segment"})[["segment", "rmst", "rmst_se"]]
        out = out.merge(r.rename(columns={"rmst": "rmst_days", "rmst_se": "rmst_se_days"}), on="segment",
                        how="left")
        out["rmst_value_usd"] = out["rmst_days"] / DAYS_PER_MONTH * out["mean_spend_usd_month"]
    return out


def plot_forest(table: pd.DataFrame, ax=None, title: str = "", xlabel: str = "log hazard ratio"):
    """Forest plot of ``coef`` with 95% CIs (and planted ``true`` values as red crosses if present)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 0.35 * len(table) + 1.2))[1]
    y = np.arange(len(table))[::-1]
    ax.errorbar(table["coef"], y, xerr=[table["coef"] - table["lower"], table["upper"] - table["coef"]],
                fmt="o", color="C0", capsize=3, label="estimate, 95% CI")
    if "true" in table and table["true"].notna().any():
        ax.plot(table["true"], y, "x", color="C3", markersize=8, label="planted truth")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, table["covariate"])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return ax
