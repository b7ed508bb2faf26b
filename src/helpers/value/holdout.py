"""Calibration/holdout checks of the purchase-count models: per-frequency table, totals, and the
cumulative tracking curve (actual vs expected repeat transactions week by week)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_table(model, summary: pd.DataFrame, max_frequency: int = 7, t: float | None = None) -> pd.DataFrame:
    """Actual vs conditionally expected holdout transactions by calibration frequency (censored at
    ``max_frequency``+): columns ``frequency_cal, customers, actual_mean, predicted_mean, actual_total,
    predicted_total``. ``t`` defaults to ``summary.duration_holdout``."""
    t = summary["duration_holdout"].to_numpy(float) if t is None else t
    pred = model.conditional_expected_number_of_purchases_up_to_time(t, summary["frequency"], summary["recency"],
                                                                     summary["T"])
    f = np.minimum(summary["frequency"].to_numpy(int), max_frequency)
    d = pd.DataFrame({"frequency_cal": f, "actual": summary["frequency_holdout"].to_numpy(float),
                      "predicted": np.asarray(pred, float)})
    g = d.groupby("frequency_cal").agg(customers=("actual", "size"), actual_mean=("actual", "mean"),
                                       predicted_mean=("predicted", "mean"), actual_total=("actual", "sum"),
                                       predicted_total=("predicted", "sum")).reset_index()
    g["frequency_cal"] = g["frequency_cal"].astype(str)
    g.loc[g.index[-1], "frequency_cal"] = f"{max_frequency}+" if f.max() >= max_frequency else g["frequency_cal"].iloc[-1]
    return g


def holdout_totals(model, summary: pd.DataFrame) -> dict:
    """Total actual and conditionally expected holdout transactions, and their ratio."""
    pred = float(np.sum(model.conditional_expected_number_of_purchases_up_to_time(
        summary["duration_holdout"].to_numpy(float), summary["frequency"], summary["recency"], summary["T"])))
    act = float(summary["frequency_holdout"].sum())
    return {"actual": act, "predicted": pred, "ratio": pred / act if act else np.nan}


def tracking(model, summary: pd.DataFrame, transactions: pd.DataFrame, calibration_end, observation_end, *,
             customer: str = "customer_id", date: str = "date", unit_days: float = 7.0) -> pd.DataFrame:
    """Cumulative repeat transactions per period: actual (same-day purchases counted once) vs expected from
    the cohort's first-purchase dates, ``sum_i E[X(t - first_i)]`` (the classic BG/NBD tracking plot)."""
    first = pd.to_datetime(summary["first_purchase"])
    start = first.min()
    end = pd.Timestamp(observation_end)
    periods = np.arange(1, int(np.floor((end - start).days / unit_days)) + 1)
    edges = start + pd.to_timedelta(periods * unit_days, unit="D")
    tx = transactions[[customer, date]].copy()
    tx[date] = pd.to_datetime(tx[date]).dt.normalize()
    tx = tx.drop_duplicates().merge(pd.DataFrame({customer: summary[customer], "first": first}), on=customer)
    rep = np.sort(tx.loc[tx[date] > tx["first"], date].to_numpy())
    actual = np.searchsorted(rep, edges.to_numpy(), side="left")
    ages = (edges.to_numpy()[:, None] - first.to_numpy()[None, :]) / np.timedelta64(1, "D") / unit_days
    ages = np.clip(ages, 0, None)
    uniq, inv = np.unique(np.round(ages, 6), return_inverse=True)
    ex = np.asarray(model.expected_number_of_purchases_up_to_time(np.maximum(uniq, 1e-12)), float)
    ex[uniq <= 0] = 0.0
    expected = ex[inv.reshape(ages.shape)].sum(axis=1)
    return pd.DataFrame({"period": periods, "end": edges, "actual_cumulative": actual.astype(float),
                         "expected_cumulative": expected,
                         "holdout": edges > pd.Timestamp(calibration_end)})
