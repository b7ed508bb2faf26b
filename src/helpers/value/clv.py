"""Per-customer and per-segment lifetime value from a purchase-count model (BG/NBD or Pareto/NBD) and the
Gamma-Gamma spend model, with intervals from the parameters' sampling distribution and, per segment, a
bootstrap over customers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .models import compress


@dataclass
class CustomerValue:
    """``frame``: one row per customer (``expected_purchases``, ``p_alive``, ``expected_spend``,
    ``value_next_period``, ``clv``, ``clv_low``, ``clv_high``); ``draws``: customers x draws matrix of CLV
    under parameter draws (float32)."""

    frame: pd.DataFrame
    draws: np.ndarray
    horizon: float
    level: float


def _clv_one(model, params_m, x, tx, T_, pairs, horizon, discount_rate, steps):
    """Discounted expected purchases over ``horizon`` and the undiscounted total, per distinct (x, t_x, T) row.

    E[Y(t) | x, t_x, T] = E[Y(t) | alive, x, T] x P(alive | x, t_x, T): the first factor (the hypergeometric
    function of BG/NBD, most of the cost) is evaluated once per distinct (x, T) pair in ``pairs``
    (``(x, T, index of each row's pair)``), the second once per draw; the product is the model's own.
    """
    px, pT, ipair = pairs
    alive = np.asarray(model.conditional_probability_alive(x, tx, T_, params=params_m), float)

    def expected(t):
        return np.asarray(model.expected_purchases_if_alive(t, px, pT, params=params_m), float)[ipair] * alive

    if discount_rate == 0 or steps <= 1:
        ey = expected(horizon)
        return ey, ey
    total = np.zeros(len(x)); prev = np.zeros(len(x)); ey = None
    for k in range(1, steps + 1):
        ey = expected(horizon * k / steps)
        total += (ey - prev) / (1 + discount_rate) ** k
        prev = ey
    return total, ey


def customer_value(model, gg, summary: pd.DataFrame, horizon: float, *, customer: str = "user_id",
                   discount_rate: float = 0.0, steps: int = 1, margin: float = 1.0, n_draws: int = 100,
                   level: float = 0.95, seed: int = 0, next_period: float | None = None) -> CustomerValue:
    """Expected purchases in the next ``next_period`` (default ``horizon``) periods, probability alive,
    expected spend per transaction, their product ``value_next_period``, and CLV over ``horizon`` =
    margin x sum over ``steps`` sub-periods of (expected purchases in the sub-period) x (expected spend) /
    (1 + discount_rate)^k (``discount_rate`` per sub-period), with a ``level`` interval from ``n_draws`` joint
    draws of both models' parameters (asymptotic normal of the log-parameters; seeded).

    ``summary`` has ``frequency, recency, T, monetary_value`` (see :func:`helpers.value.data.rfm_summary`).
    Computed on the distinct (frequency, recency, T) rows, and the part that does not depend on the recency
    on the distinct (frequency, T) pairs, so large panels cost little.
    """
    x = summary["frequency"].to_numpy(float); tx = summary["recency"].to_numpy(float)
    T_ = summary["T"].to_numpy(float); m = summary["monetary_value"].to_numpy(float)
    ux, utx, uT, _ = compress(x, tx, T_)
    key = pd.MultiIndex.from_arrays([ux, utx, uT])
    pos = key.get_indexer(pd.MultiIndex.from_arrays([x, tx, T_]))
    pair_keys, ipair = np.unique(np.stack([ux, uT], axis=1), axis=0, return_inverse=True)
    pairs = (pair_keys[:, 0], pair_keys[:, 1], ipair.ravel())
    disc, ey = _clv_one(model, None, ux, utx, uT, pairs, horizon, discount_rate, steps)
    if next_period is not None:
        ey = np.asarray(model.conditional_expected_number_of_purchases_up_to_time(next_period, ux, utx, uT), float)
    pa = np.asarray(model.conditional_probability_alive(ux, utx, uT), float)
    spend = np.asarray(gg.conditional_expected_average_profit(x, m), float)
    clv = margin * disc[pos] * spend
    pm = model.sample_params(n_draws, seed=seed); pg = gg.sample_params(n_draws, seed=seed + 1)
    draws = np.empty((len(x), n_draws), np.float32)
    for b in range(n_draws):
        d_b, _ = _clv_one(model, pm[b], ux, utx, uT, pairs, horizon, discount_rate, steps)
        draws[:, b] = margin * d_b[pos] * np.asarray(gg.conditional_expected_average_profit(x, m, params=pg[b]))
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1) if n_draws > 1 else (clv, clv)
    frame = pd.DataFrame({customer: summary[customer].to_numpy() if customer in summary else np.arange(len(x)),
                          "expected_purchases": ey[pos], "p_alive": pa[pos], "expected_spend": spend,
                          "value_next_period": margin * ey[pos] * spend,
                          "clv": clv, "clv_low": lo, "clv_high": hi})
    return CustomerValue(frame, draws, horizon, level)


def segment_value(cv: CustomerValue, segment: pd.Series, weight: pd.Series | None = None, *,
                  n_boot: int = 200, seed: int = 0, customer: str = "user_id") -> pd.DataFrame:
    """Per segment: customers, weighted mean CLV with a ``cv.level`` interval (bootstrap over the segment's
    customers, each replicate also taking one parameter draw, so both sampling and model uncertainty are in
    it), mean expected purchases, mean P(alive), and the segment's share of total weighted value."""
    f = cv.frame
    seg = f[customer].map(segment)
    w = f[customer].map(weight).fillna(1.0).to_numpy(float) if weight is not None else np.ones(len(f))
    rng = np.random.default_rng(seed)
    a = (1 - cv.level) / 2
    rows = []
    total = float(np.sum(w * f["clv"]))
    for s in sorted(seg.dropna().unique()):
        idx = np.flatnonzero((seg == s).to_numpy())
        ws = w[idx]
        est = float(np.average(f["clv"].to_numpy()[idx], weights=ws))
        reps = np.empty(n_boot)
        nd = cv.draws.shape[1]
        for b in range(n_boot):
            j = rng.choice(idx, size=len(idx), replace=True)
            reps[b] = np.average(cv.draws[j, b % nd], weights=w[j])
        rows.append({"segment": s, "customers": len(idx), "weighted_customers": float(ws.sum()),
                     "clv_mean": est, "clv_low": float(np.quantile(reps, a)), "clv_high": float(np.quantile(reps, 1 - a)),
                     "expected_purchases_mean": float(np.average(f["expected_purchases"].to_numpy()[idx], weights=ws)),
                     "p_alive_mean": float(np.average(f["p_alive"].to_numpy()[idx], weights=ws)),
                     "value_share": float(np.sum(ws * f["clv"].to_numpy()[idx]) / total) if total else np.nan})
    return pd.DataFrame(rows)


def fit_by_segment(model_cls, summary: pd.DataFrame, segment: pd.Series, customer: str = "user_id",
                   min_customers: int = 200) -> pd.DataFrame:
    """One model per segment (segments smaller than ``min_customers`` are skipped): parameters, Wald 95%
    intervals, log-likelihood and customers — the segment effects on purchase and dropout behaviour."""
    seg = summary[customer].map(segment)
    rows = []
    for s in sorted(seg.dropna().unique()):
        sub = summary[(seg == s).to_numpy()]
        if len(sub) < min_customers:
            continue
        m = model_cls().fit(sub)
        t = m.summary()
        row = {"segment": s, "customers": len(sub), "log_likelihood": m.log_likelihood_}
        for p in t.index:
            row[p] = t.loc[p, "coef"]
            row[f"{p}_low"] = t.loc[p, "coef lower 95%"]
            row[f"{p}_high"] = t.loc[p, "coef upper 95%"]
        rows.append(row)
    return pd.DataFrame(rows)


def next_period_error(predicted: np.ndarray, actual: np.ndarray, baseline: np.ndarray | None = None) -> dict:
    """Mean absolute error and total predicted / total actual of next-period purchase predictions, with the
    same figures for a baseline (e.g. the past rate carried forward) when given."""
    p, a = np.asarray(predicted, float), np.asarray(actual, float)
    out = {"mae": float(np.mean(np.abs(p - a))), "ratio": float(p.sum() / a.sum()) if a.sum() else np.nan,
           "rmse": float(np.sqrt(np.mean((p - a) ** 2)))}
    if baseline is not None:
        b = np.asarray(baseline, float)
        out.update({"baseline_mae": float(np.mean(np.abs(b - a))),
                    "baseline_ratio": float(b.sum() / a.sum()) if a.sum() else np.nan,
                    "baseline_rmse": float(np.sqrt(np.mean((b - a) ** 2)))})
    return out
