"""Per-user churn risk given the silence since the last activity, with expected remaining lifetime and value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines import WeibullAFTFitter
from lifelines.fitters import ParametricRegressionFitter
from lifelines.utils.safe_exp import MAX as _SAFE_EXP_MAX

from .data import DAYS_PER_MONTH, EVENT


def _weibull_cumulative_hazard(params: dict, T: np.ndarray, xs: dict) -> np.ndarray:
    """lifelines' ``WeibullAFTFitter._cumulative_hazard`` with the same operations in the same order (equal to
    the last bit) on plain numpy: its autograd-wrapped calls and ``np.clip`` with an infinite bound (a slow
    path of numpy) were most of the 1M-user risk cell, 157 times per user. ``np.minimum``/``np.maximum``
    equal ``clip`` with one infinite bound, NaN included."""
    log_lambda = xs["lambda_"] @ params["lambda_"]
    rho = np.exp(np.minimum(xs["rho_"] @ params["rho_"], _SAFE_EXP_MAX))
    return np.exp(np.minimum(rho * (np.log(np.maximum(T, 1e-100)) - log_lambda), _SAFE_EXP_MAX))


def cumulative_hazard_at(model, covariates: pd.DataFrame, times: np.ndarray, chunk: int = 200_000
                         ) -> np.ndarray:
    """Cumulative hazard ``H_i(t_ij)`` of each user ``i`` at their own times (``times``: shape ``(n, m)``).

    Works for lifelines' parametric regression fitters (Weibull / log-normal / log-logistic AFT: exact, any
    time), for an unstratified Cox model (Breslow baseline; constant after the last training event time, so it
    cannot extrapolate) and for any object with a ``cumulative_hazard_at(covariates, times)`` method.
    Evaluated ``chunk`` users at a time, so memory stays bounded at 1M users.
    """
    times = np.atleast_2d(np.asarray(times, dtype=float))
    if times.shape[0] != len(covariates):
        raise ValueError(f"times has {times.shape[0]} rows, covariates {len(covariates)}: one row per user")
    if hasattr(model, "cumulative_hazard_at"):
        return np.asarray(model.cumulative_hazard_at(covariates, times), dtype=float)
    out = np.empty_like(times)
    if isinstance(model, ParametricRegressionFitter):
        names = model._fitted_parameter_names
        params = {p: model.params_.loc[p].values for p in names}
        for s in range(0, len(covariates), chunk):
            part = model.regressors.transform_df(covariates.iloc[s:s + chunk])
            # plain arrays per parameter: lifelines' DataframeSlicer indexes a pandas frame on every use
            xs = {p: part[p].to_numpy(float) for p in names}
            hz = _weibull_cumulative_hazard if type(model) is WeibullAFTFitter else model._cumulative_hazard
            out[s:s + chunk] = np.asarray(hz(params, times[s:s + chunk].T, xs)).T
        return np.maximum(out, 0.0)  # = clip(out, 0, None), numpy's fast path
    if isinstance(model, CoxPHFitter):
        if model.strata:
            raise NotImplementedError("per-user cumulative hazards of a stratified Cox model are not "
                                      "implemented; score users with a parametric (AFT) model")
        base = model.baseline_cumulative_hazard_
        bt, bh = base.index.to_numpy(float), base.iloc[:, 0].to_numpy(float)
        ph = np.asarray(model.predict_partial_hazard(covariates), dtype=float).ravel()
        pos = np.searchsorted(bt, times, side="right") - 1
        h0 = np.where(pos >= 0, bh[np.clip(pos, 0, None)], 0.0)
        return h0 * ph[:, None]
    raise TypeError(f"cannot evaluate cumulative hazards of a {type(model).__name__}")


def recency_odds(hazard: np.ndarray) -> np.ndarray:
    """Odds term ``r = P(lifetime ended exactly l days ago) / P(alive at the observation date)``.

    ``hazard`` holds per-user cumulative hazards at ``(a - 1, a, C)`` (columns), with ``a = C - l`` the
    last-activity day and ``C`` the tenure: a recency of ``l`` days means the last activity fell in
    ``(C - l - 1, C - l]`` (``last_seen_days_ago`` is a whole number of days), probability
    ``S(a - 1) - S(a)``, against ``S(C)`` for a user still alive. ``r = exp(H(C) - H(a-1)) - exp(H(C) - H(a))``.
    """
    h_a1, h_a, h_c = hazard[:, 0], hazard[:, 1], hazard[:, 2]
    return np.exp(np.clip(h_c - h_a1, 0, 700)) - np.exp(np.clip(h_c - h_a, 0, 700))


@dataclass
class InactivityModel:
    """Distribution of the current inactivity spell (days since the last activity) of customers who are
    still alive: a mixture of geometric distributions on ``0, 1, 2, ...`` days.

    A customer seen ``l`` days ago is either alive and in an inactivity spell of at least ``l`` days so far
    (probability ``S(C) g(l)``) or gone since that last activity (``S(a-1) - S(a)``). :func:`fit_inactivity`
    estimates ``g`` from everyone's recency with the survival model's hazards held fixed (EM); the posterior
    ``P(gone | l, x) = r / (r + g(l))`` is what the silence since the last activity says.
    """

    weights: np.ndarray
    probs: np.ndarray
    loglik: float = float("nan")
    n_iter: int = 0
    converged: bool = False
    n_users: int = 0

    def pmf(self, days) -> np.ndarray:
        """``g(l)``: probability that an alive customer's last activity was ``l`` days ago."""
        d = np.asarray(days, dtype=float)[..., None]
        return np.sum(self.weights * self.probs * (1 - self.probs) ** d, axis=-1)

    def prob_gone(self, recency, odds) -> np.ndarray:
        """Posterior probability that the lifetime already ended at the last activity, given recency."""
        g = self.pmf(recency)
        odds = np.asarray(odds, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = odds / (odds + g)
        return np.where(np.isfinite(p), p, 1.0)

    def summary(self) -> pd.DataFrame:
        """One row per mixture component: weight, daily return probability and mean spell (days)."""
        return pd.DataFrame({"component": np.arange(len(self.weights)), "weight": self.weights,
                             "daily_return_prob": self.probs,
                             "mean_days_since_last_activity": (1 - self.probs) / self.probs})

    def plot(self, recency: np.ndarray | None = None, max_days: int = 120, ax=None):
        """The fitted ``g(l)`` (log scale), with the recency histogram of all users when given."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(7, 3.5))[1]
        days = np.arange(max_days + 1)
        if recency is not None:
            counts = np.bincount(np.clip(np.asarray(recency, int), 0, max_days + 1), minlength=max_days + 2)
            ax.plot(days, counts[:max_days + 1] / max(len(recency), 1), ".", color="grey",
                    label="all users (share per day of recency)")
        ax.plot(days, self.pmf(days), "-", color="C0", label="fitted g(l): alive customers")
        ax.set_yscale("log")
        ax.set(xlabel="days since last activity (recency)", ylabel="share of users per day")
        ax.legend(fontsize=8)
        return ax


def fit_inactivity(recency: np.ndarray, odds: np.ndarray, n_components: int = 2, max_iter: int = 300,
                   tol: float = 1e-9, seed: int = 0) -> InactivityModel:
    """Fit the inactivity-spell mixture ``g`` by EM, with the survival model's odds ``r`` held fixed.

    Each user's likelihood is ``r_i + g(l_i)`` (up to a factor ``S_i(C_i)``): gone at the last activity or
    alive in a spell of ``l_i`` days. Use every user, flagged churners included: their long recencies are
    explained by ``r`` and keep ``g`` from growing a flat tail that would mimic the gone.
    """
    l = np.asarray(recency, dtype=float)
    r = np.asarray(odds, dtype=float)
    ok = np.isfinite(l) & np.isfinite(r)
    l, r = l[ok], r[ok]
    if len(l) == 0:
        raise ValueError("fit_inactivity needs users with a recency (days since last activity)")
    rng = np.random.default_rng(seed)
    w = np.full(n_components, 1.0 / n_components)
    p = np.sort(np.geomspace(0.5, 0.01, n_components) * rng.uniform(0.9, 1.1, n_components))[::-1]
    prev, it, conv = -np.inf, 0, False
    # the mixture depends on the recency only: its terms are computed once per distinct recency (a few hundred
    # days) and the per-user posteriors summed per day, so an iteration touches each user in a few vector
    # operations instead of n x K powers (the powers were most of a 1M-user fit)
    lu, inv = np.unique(l, return_inverse=True)
    for it in range(1, max_iter + 1):
        comp = w * p * (1 - p) ** lu[:, None]           # (distinct recencies, K)
        gu = comp.sum(axis=1)
        g = gu[inv]
        tot = r + g
        ll = float(np.log(np.maximum(tot, 1e-300)).sum())
        alive = np.bincount(inv, weights=g / tot, minlength=len(lu))  # E-step: sum of P(alive | l) per day
        resp = alive[:, None] * comp / np.clip(gu, 1e-300, None)[:, None]
        mass = resp.sum(axis=0)
        w = mass / mass.sum()
        p = np.clip(mass / np.clip((resp * (1 + lu[:, None])).sum(axis=0), 1e-300, None), 1e-6, 1 - 1e-9)
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            conv = True
            break
        prev = ll
    order = np.argsort(-p)
    return InactivityModel(w[order], p[order], ll, it, conv, int(len(l)))


def _no_recency(tte: pd.DataFrame) -> bool:
    return "last_seen_days_ago" not in tte or tte["last_seen_days_ago"].isna().all()


def churn_risk(model, covariates: pd.DataFrame, tte: pd.DataFrame, spend: pd.Series | None = None,
               horizons: Sequence[int] = (90, 180), value_horizon_days: float = 3 * 365.0,
               id_col: str = "user_id", inactivity: "InactivityModel | str | None" = "fit",
               time_unit_days: float = 1.0, n_value_points: int = 157, with_value: bool = True,
               value_chunk: int = 25_000) -> pd.DataFrame:
    """Per-user probability of churning within ``horizons`` days of the observation date, given everything
    known then (covariates, tenure ``C`` and the silence since the last activity ``l``), expected remaining
    lifetime and value.

    "Churning within ``h`` days" means the lifetime (sign-up to last activity) ends before ``C + h``,
    including lifetimes that already ended at the last activity but are not yet flagged (``l <= 90``).
    With ``a = C - l`` and a fitted survival model ``S(t | x)``:

    * ``inactivity="fit"`` (default) or an :class:`InactivityModel`: the recency is evidence. The user is gone
      with posterior ``pi = r / (r + g(l))`` (:func:`recency_odds`, :func:`fit_inactivity`), otherwise alive
      at ``C``: ``churn_prob_<h>d = pi + (1 - pi) (1 - S(C + h) / S(C))``.
    * ``inactivity=None``: condition only on survival to the last activity,
      ``1 - S(C + h) / S(a)`` (the score before recency was modelled; a baseline). Also used when ``tte``
      has no recency (a duration table such as Telco: ``a = C``).

    ``expected_remaining_days = (1 - pi) int_0^H S(C + u) / S(C) du`` with ``H = value_horizon_days``
    (a finite horizon keeps the fitted tail's extrapolation out of the value); ``expected_value`` = that x
    ``spend`` (per month) / 30.44. Flagged churners (``event == 1``) get probability 1 and value 0.
    ``time_unit_days`` is the length of the model's time unit in days (30.44 for a model in months).
    ``with_value=False`` skips the remaining lifetime and value (NaN): they cost most of the time, as each
    active user's survival curve is evaluated at ``n_value_points`` times, ``value_chunk`` users at a time
    (memory chunk x points x a few arrays of 8 bytes).
    Columns: ``id_col``, ``churn_prob_<h>d``, ``prob_gone``, ``recency_days``, ``expected_remaining_days``,
    ``expected_value``, ``churned``. (:func:`inactivity_model` gives the fitted :class:`InactivityModel`.)
    """
    if len(covariates) != len(tte) or not covariates.index.equals(tte.index):
        raise ValueError("covariates and tte must have the same rows in the same order (same index)")
    u = float(time_unit_days)
    churned = tte[EVENT].to_numpy() == 1
    c = tte["tenure_days"].to_numpy(float) / u
    no_rec = _no_recency(tte)
    l = np.zeros(len(tte)) if no_rec else tte["last_seen_days_ago"].to_numpy(float) / u
    a = np.clip(c - l, 0, None)
    use_recency = inactivity is not None and not no_rec
    hz = cumulative_hazard_at(model, covariates, np.column_stack([np.clip(a - 1 / u, 0, None), a, c]))
    fitted = None
    pi = np.zeros(len(tte))
    if use_recency:
        odds = recency_odds(hz)
        fitted = (fit_inactivity(l * u, odds) if isinstance(inactivity, str) else inactivity)
        pi = fitted.prob_gone(l * u, odds)
    start = hz[:, 2] if use_recency else hz[:, 1]   # condition on alive at C (recency) or at a (baseline)
    hs = np.asarray(horizons, dtype=float) / u
    hh = cumulative_hazard_at(model, covariates, c[:, None] + hs[None, :])
    ids = tte[id_col]  # text stored in Arrow stays so (no Python string per user)
    out = pd.DataFrame({id_col: ids.array if isinstance(ids.dtype, pd.StringDtype) else ids.to_numpy()},
                       index=tte.index)
    for j, h in enumerate(horizons):
        surv = np.exp(-np.clip(hh[:, j] - start, 0, None))
        out[f"churn_prob_{h}d"] = np.where(churned, 1.0, pi + (1 - pi) * (1 - surv))
    out["prob_gone"] = np.where(churned, 1.0, pi)
    out["recency_days"] = np.nan if no_rec else tte["last_seen_days_ago"].to_numpy(float)
    grid = np.linspace(0.0, value_horizon_days / u, n_value_points)
    rem = np.zeros(len(tte)) if with_value else np.full(len(tte), np.nan)
    act = np.flatnonzero(~churned) if with_value else np.array([], dtype=int)
    # ``value_chunk`` users at a time: at 100k users the 157-point grid's hazards and their temporaries were
    # 0.8 GB of the 1M-user peak (each user's integral is its own: the values do not depend on the chunk)
    for s in range(0, len(act), value_chunk):
        idx = act[s:s + value_chunk]
        hv = cumulative_hazard_at(model, covariates.iloc[idx], c[idx, None] + grid[None, :])
        sv_ = np.exp(-np.maximum(hv - start[idx, None], 0))  # = clip(.., 0, None), without numpy's slow clip
        rem[idx] = (1 - pi[idx]) * np.trapezoid(sv_, grid, axis=1) * u
    out["expected_remaining_days"] = rem
    sp = np.zeros(len(tte)) if spend is None else pd.Series(spend, index=tte.index).astype(float).to_numpy()
    out["expected_value"] = rem / DAYS_PER_MONTH * sp
    out["churned"] = churned
    return out


def inactivity_model(model, covariates: pd.DataFrame, tte: pd.DataFrame, n_components: int = 2
                     ) -> InactivityModel:
    """Fit the inactivity-spell distribution of alive customers (:func:`fit_inactivity`) for a fitted
    survival ``model``, from everyone's recency in ``tte`` (the step ``churn_risk(inactivity="fit")`` runs)."""
    if _no_recency(tte):
        raise ValueError("the table has no recency (last_seen_days_ago): nothing to fit")
    c = tte["tenure_days"].to_numpy(float)
    l = tte["last_seen_days_ago"].to_numpy(float)
    a = np.clip(c - l, 0, None)
    hz = cumulative_hazard_at(model, covariates, np.column_stack([np.clip(a - 1, 0, None), a, c]))
    return fit_inactivity(l, recency_odds(hz), n_components)


def true_churn_probability(tte: pd.DataFrame, truth: pd.DataFrame, params: dict,
                           horizons: Sequence[int] = (90, 180), id_col: str = "user_id"
                           ) -> pd.DataFrame | None:
    """Oracle score from the planted truth (Weibull PH world): the same posterior as :func:`churn_risk` with
    the true hazard (``true_log_hazard``, planted shape and scale) and the true inactivity distribution
    (recency pmf of the users truly alive at the observation date). None when the truth is of another
    kind (no ``weibull_ph`` hazard model or no ``true_log_hazard``)."""
    hm = params.get("hazard_model", {}) if params else {}
    if hm.get("family") != "weibull_ph" or "true_log_hazard" not in truth:
        return None
    from ..panel import align  # ids compared as text in Arrow (no Python string per user)

    t = align(tte[id_col].reset_index(drop=True),
              truth[[id_col, "true_log_hazard", "true_event_time_days", "tenure_days"]], id_col)
    lin = t["true_log_hazard"].to_numpy(float)
    rho, lam = float(hm["shape"]), float(hm["scale_days"])

    class _Truth:
        def cumulative_hazard_at(self, covariates, times):
            return np.exp(lin[covariates["_row"].to_numpy()])[:, None] * (np.clip(times, 0, None) / lam) ** rho

    alive = t["true_event_time_days"].to_numpy(float) > t["tenure_days"].to_numpy(float)
    rec = tte["last_seen_days_ago"].to_numpy(float)
    counts = np.bincount(rec[alive].astype(int), minlength=int(rec.max()) + 2).astype(float)
    pmf = counts / max(counts.sum(), 1.0)

    class _TrueGaps(InactivityModel):
        def pmf(self, days):
            d = np.asarray(days, dtype=int)
            return np.where(d < len(pmf), pmf[np.clip(d, 0, len(pmf) - 1)], 0.0)

    gaps = _TrueGaps(np.array([1.0]), np.array([0.5]))
    cov = pd.DataFrame({"_row": np.arange(len(tte))}, index=tte.index)
    return churn_risk(_Truth(), cov, tte, None, horizons, inactivity=gaps, id_col=id_col)
