"""Per-customer and per-segment lifetime value from a purchase-count model (BG/NBD or Pareto/NBD) and the
Gamma-Gamma spend model, with intervals from the parameters' sampling distribution and, per segment, a
bootstrap over customers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from .models import distinct_rows


def _discounted_if_alive(model, params, x, T_, horizon, discount_rate, steps) -> tuple[np.ndarray, np.ndarray]:
    """On distinct (x, T) pairs: the discounted expected purchases of a customer still alive over ``horizon``,
    sum over ``steps`` sub-periods k of (E_k - E_{k-1}) / (1 + discount_rate)^k with E_k = E[Y(horizon k /
    steps) | alive, x, T] (the hypergeometric function of BG/NBD, most of the cost), and the undiscounted
    E[Y(horizon) | alive, x, T]."""
    def expected(t):
        return np.asarray(model.expected_purchases_if_alive(t, x, T_, params=params), float)

    if discount_rate == 0 or steps <= 1:
        e = expected(horizon)
        return e, e
    total = np.zeros(len(x)); prev = np.zeros(len(x)); e = prev
    for k in range(1, steps + 1):
        e = expected(horizon * k / steps)
        total += (e - prev) / (1 + discount_rate) ** k
        prev = e
    return total, e


@dataclass
class CustomerValue:
    """``frame``: one row per customer (``expected_purchases``, ``p_alive``, ``expected_spend``,
    ``value_next_period``, ``clv``, ``clv_low``, ``clv_high``). The CLV under each of ``n_draws`` parameter
    draws is not stored (customers x draws would be 4 GB at 10M customers): :meth:`draw_block` computes it
    for any set of customers from the per-pair discounted expectations of each draw."""

    frame: pd.DataFrame
    horizon: float
    level: float
    model: object = None
    spend_model: object = None
    margin: float = 1.0
    _rfm: tuple = ()                  # x, t_x, T, mean spend, index of each customer's (x, T) pair
    _pair_draws: np.ndarray | None = None   # pairs x draws: discounted expected purchases if alive
    _params: tuple = ()              # purchase-model and spend-model parameter draws
    n_jobs: int = 2

    def _map(self, fn, items):
        """``fn`` over ``items`` on ``n_jobs`` threads (numpy and scipy.special release the GIL; every item
        is computed on its own, so the result does not depend on the number of threads)."""
        if self.n_jobs <= 1 or len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            return list(pool.map(fn, items))

    @property
    def n_draws(self) -> int:
        return 0 if self._pair_draws is None else self._pair_draws.shape[1]

    def draw_block(self, idx: np.ndarray | None = None, by_draw: bool = False) -> np.ndarray:
        """CLV of the customers at positions ``idx`` (all when None) under every parameter draw, a
        ``len(idx) x n_draws`` float32 matrix: margin x E[discounted purchases | alive, x, T] x P(alive) x
        expected spend, each factor at the draw's parameters. ``by_draw``: the same values as a C-contiguous
        ``n_draws x len(idx)`` matrix (one row per draw), written so directly instead of transposed and copied
        (the largest segment's block and its copy were 2 x 0.8 GB at 10M customers)."""
        x, tx, T_, m, ipair = (v if idx is None else v[idx] for v in self._rfm)
        pm, pg = self._params
        out = np.empty((self.n_draws, len(x)) if by_draw else (len(x), self.n_draws), np.float32)

        def column(b):
            alive = expit(-self.model._log_odds_dead(x, tx, T_, pm[b]))
            v = (self.margin * (self._pair_draws[ipair, b] * alive)
                 * self.spend_model.conditional_expected_average_profit(x, m, params=pg[b]))
            if by_draw:
                out[b] = v
            else:
                out[:, b] = v

        self._map(column, list(range(self.n_draws)))
        return out

    @property
    def draws(self) -> np.ndarray:
        """Customers x draws matrix of CLV under the parameter draws (float32; memory customers x draws x 4
        bytes: use :meth:`draw_block` on parts of a large panel)."""
        return self.draw_block()


def customer_value(model, gg, summary: pd.DataFrame, horizon: float, *, customer: str = "user_id",
                   discount_rate: float = 0.0, steps: int = 1, margin: float = 1.0, n_draws: int = 100,
                   level: float = 0.95, seed: int = 0, next_period: float | None = None,
                   chunk: int = 65_536, n_jobs: int = 2) -> CustomerValue:
    """Expected purchases in the next ``next_period`` (default ``horizon``) periods, probability alive,
    expected spend per transaction, their product ``value_next_period``, and CLV over ``horizon`` =
    margin x sum over ``steps`` sub-periods of (expected purchases in the sub-period) x (expected spend) /
    (1 + discount_rate)^k (``discount_rate`` per sub-period), with a ``level`` interval from ``n_draws`` joint
    draws of both models' parameters (asymptotic normal of the log-parameters; seeded).

    ``summary`` has ``frequency, recency, T, monetary_value`` (see :func:`helpers.value.data.rfm_summary`).
    E[Y(t) | x, t_x, T] = E[Y(t) | alive, x, T] x P(alive | x, t_x, T): the first factor (the hypergeometric
    function) is evaluated once per distinct (frequency, T) pair and draw, the second per customer; the
    interval is computed ``chunk`` customers at a time, so memory stays at chunk x draws whatever the panel;
    the draws run on ``n_jobs`` threads (same numbers whatever ``n_jobs``).
    """
    x = summary["frequency"].to_numpy(float); tx = summary["recency"].to_numpy(float)
    T_ = summary["T"].to_numpy(float); m = summary["monetary_value"].to_numpy(float)
    (px, pT), ipair = distinct_rows(x, T_)
    disc, e_h = _discounted_if_alive(model, None, px, pT, horizon, discount_rate, steps)
    pa = np.asarray(model.conditional_probability_alive(x, tx, T_), float)
    if next_period is not None:
        e_h = np.asarray(model.expected_purchases_if_alive(next_period, px, pT), float)
    ey = e_h[ipair] * pa
    spend = np.asarray(gg.conditional_expected_average_profit(x, m), float)
    clv = margin * (disc[ipair] * pa) * spend
    pm = model.sample_params(n_draws, seed=seed); pg = gg.sample_params(n_draws, seed=seed + 1)
    pair_draws = np.empty((len(px), n_draws))
    # ids keep their dtype (Arrow text stays Arrow: to_numpy would make a Python string per customer)
    frame = pd.DataFrame({customer: summary[customer].array if customer in summary else np.arange(len(x)),
                          "expected_purchases": ey, "p_alive": pa, "expected_spend": spend,
                          "value_next_period": margin * ey * spend, "clv": clv})
    cv = CustomerValue(frame, horizon, level, model, gg, margin, (x, tx, T_, m, ipair), pair_draws, (pm, pg),
                       n_jobs)

    def pair_column(b):
        pair_draws[:, b] = _discounted_if_alive(model, pm[b], px, pT, horizon, discount_rate, steps)[0]

    cv._map(pair_column, list(range(n_draws)))
    lo, hi = np.empty(len(x)), np.empty(len(x))
    if n_draws > 1:
        for s in range(0, len(x), chunk):
            part = np.arange(s, min(s + chunk, len(x)))
            lo[part], hi[part] = np.quantile(cv.draw_block(part), [(1 - level) / 2, (1 + level) / 2], axis=1)
    else:
        lo, hi = clv, clv
    frame["clv_low"], frame["clv_high"] = lo, hi
    return cv


def lookup(ids: pd.Series, mapping: pd.Series) -> pd.Series:
    """``ids.map(mapping)`` (``mapping``: values indexed by customer id; NaN where an id is absent) in the
    positions of ``ids`` (RangeIndex), the ids matched as Arrow text (:func:`helpers.panel.align`): a pandas
    map builds a hash index of Python strings of every id (~0.7 GB at 10M customers)."""
    from ..panel import lookup as by_id

    return by_id(pd.Series(ids).reset_index(drop=True), mapping)


def segment_value(cv: CustomerValue, segment: pd.Series, weight: pd.Series | None = None, *,
                  n_boot: int = 200, seed: int = 0, customer: str = "user_id") -> pd.DataFrame:
    """Per segment: customers, weighted mean CLV with a ``cv.level`` interval (bootstrap over the segment's
    customers, each replicate also taking one parameter draw, so both sampling and model uncertainty are in
    it), mean expected purchases, mean P(alive), and the segment's share of total weighted value."""
    f = cv.frame
    seg = lookup(f[customer], segment)
    w = lookup(f[customer], weight).fillna(1.0).to_numpy(float) if weight is not None else np.ones(len(f))
    rng = np.random.default_rng(seed)
    a = (1 - cv.level) / 2
    rows = []
    total = float(np.sum(w * f["clv"]))
    for s in sorted(seg.dropna().unique()):
        idx = np.flatnonzero((seg == s).to_numpy())
        ws = w[idx]
        est = float(np.average(f["clv"].to_numpy()[idx], weights=ws))
        reps = np.empty(n_boot)
        nd = cv.n_draws
        # draws x the segment's customers (segment size x draws x 4 bytes): a replicate gathers from one
        # contiguous row instead of one column of a row-major block (the same values, a quarter less time)
        block = cv.draw_block(idx, by_draw=True)
        for b in range(n_boot):
            j = rng.integers(0, len(idx), size=len(idx))  # the positions rng.choice(idx, len(idx)) draws
            reps[b] = np.average(block[b % nd][j], weights=ws[j])
        rows.append({"segment": s, "customers": len(idx), "weighted_customers": float(ws.sum()),
                     "clv_mean": est, "clv_low": float(np.quantile(reps, a)), "clv_high": float(np.quantile(reps, 1 - a)),
                     "expected_purchases_mean": float(np.average(f["expected_purchases"].to_numpy()[idx], weights=ws)),
                     "p_alive_mean": float(np.average(f["p_alive"].to_numpy()[idx], weights=ws)),
                     "value_share": float(np.sum(ws * f["clv"].to_numpy()[idx]) / total) if total else np.nan})
    return pd.DataFrame(rows)


def fit_by_segment(model_cls, summary: pd.DataFrame, segment: pd.Series, customer: str = "user_id",
                   min_customers: int = 200, n_jobs: int = 2) -> pd.DataFrame:
    """One model per segment (segments smaller than ``min_customers`` are skipped): parameters, Wald 95%
    intervals, log-likelihood and customers — the segment effects on purchase and dropout behaviour. The
    segments are fitted on ``n_jobs`` threads (each fit on its own: same numbers whatever ``n_jobs``); a
    segment's rows are taken when its fit starts and its model is dropped once its row is read, so only the
    segments being fitted are in memory (before, every segment's rows and every fitted model with its data were
    held together: a second copy of the whole summary; 06b was killed at 8 GB in this step at 10M customers)."""
    seg = lookup(summary[customer], segment)
    codes, labels = pd.factorize(seg, sort=True)  # missing segments get code -1 and no fit
    sizes = np.bincount(codes[codes >= 0], minlength=len(labels))
    todo = [g for g in range(len(labels)) if sizes[g] >= min_customers]

    def fit_one(g: int) -> dict:
        sub = summary[codes == g]
        m = model_cls().fit(sub)
        t = m.summary()
        row = {"segment": labels[g], "customers": len(sub), "log_likelihood": m.log_likelihood_}
        for p in t.index:
            row[p] = t.loc[p, "coef"]
            row[f"{p}_low"] = t.loc[p, "coef lower 95%"]
            row[f"{p}_high"] = t.loc[p, "coef upper 95%"]
        return row

    if n_jobs > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            rows = list(pool.map(fit_one, todo))
    else:
        rows = [fit_one(g) for g in todo]
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
