"""Bayesian consumer profiling from aggregate data (De Bruyn & Otter 2022, JMR 59(4), 755-774) and simple counting.

The problem: an audience (a "target list", here users talking about a brand) is known only through the
counts ``n_x`` of an *observed* characteristic ``X`` (cells such as age x gender x education, what a platform
or data broker reports), and a *reference population* gives the joint distribution of ``X`` and the
*unobserved* characteristic ``S`` (here income). Wanted: the distribution of ``S`` in the audience.

* **Simple count** (the industry method the paper starts from): ``profile_s = sum_x n_x p(s | x) / N``. It
  assumes list membership is independent of ``S`` given ``X`` - false whenever ``S`` itself drives
  membership (rich people talk about luxury watches), and then it is pulled towards the population.
* **Bayesian profiling** (the paper's core model): assume instead that ``X`` is independent of membership
  given ``S``, so the list's ``X`` counts are multinomial with cell probabilities ``sum_s pi_s p(x | s)``;
  ``pi = softmax(w)`` is the list's ``S`` profile. Log-likelihood (the paper's eq. 6)
  ``sum_x n_x log sum_s pi_s p(x | s)``; prior ``w ~ N(log b, tau^2 I)`` with ``b`` the population margins
  of ``S`` (so the prior is centred on "the audience looks like the population"); posterior by
  random-walk Metropolis-Hastings (as the paper), here with the proposal scaled by the Laplace
  approximation at the posterior mode. Each draw gives the posterior *list profile* (eq. 8)
  ``sum_x n_x pi_s p(x | s) / sum_s' pi_s' p(x | s') / N``; the estimate is its posterior mean, the
  interval its 2.5 and 97.5 percentiles.

Implemented: the two estimators above, weighted counts (the audience's ``n_x`` are weighted shares times
the Kish effective size, so the likelihood carries the information a weighted sample has), additive
smoothing of the reference table (``p(x | s)`` from counts + ``smoothing``, because an empty reference cell
would make a list member impossible). Not implemented: the paper's mixtures of the two conditional-
independence assumptions and its extension with additional observed covariates inside the likelihood, its
Dirichlet-smoothness prior across ordered categories, and its HMC sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize


@dataclass
class Reference:
    """Reference population: weighted joint counts of the observed cells (rows) and the unobserved levels."""
    joint: pd.DataFrame          # index: cell labels, columns: levels of S

    @property
    def levels(self) -> list:
        return list(self.joint.columns)

    def margins(self) -> np.ndarray:
        """Population shares of S (the prior mean of the Bayesian profile)."""
        c = self.joint.to_numpy().sum(0)
        return c / c.sum()

    def p_x_given_s(self, smoothing: float = 0.5) -> np.ndarray:
        c = self.joint.to_numpy(dtype=float) + smoothing
        return c / c.sum(0, keepdims=True)

    def p_s_given_x(self, smoothing: float = 0.5) -> np.ndarray:
        c = self.joint.to_numpy(dtype=float) + smoothing
        return c / c.sum(1, keepdims=True)


def cell_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One label per row joining ``columns`` ("a | b"); missing values are their own level."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"profiling: column(s) {missing} are not in the table (available: {list(frame.columns)})")
    if not columns:
        return pd.Series("all", index=frame.index)
    parts = [frame[c].astype(object).where(frame[c].notna(), "(missing)").astype(str) for c in columns]
    out = parts[0]
    for p in parts[1:]:
        out = out + " | " + p
    return out


def reference(cells: pd.Series, target: pd.Series, weights: np.ndarray | None = None,
              levels: Sequence | None = None) -> Reference:
    """Weighted joint counts of ``cells`` x ``target`` levels (rows with a known target)."""
    w = np.ones(len(cells)) if weights is None else np.asarray(weights, dtype=float)
    known = target.notna().to_numpy()
    lv = [str(v) for v in (levels if levels is not None else sorted(target.dropna().astype(str).unique()))]
    s_code = pd.Categorical(target[known].astype(str), categories=lv).codes
    if (s_code < 0).any():
        bad = sorted(set(target[known].astype(str)) - set(lv))
        raise ValueError(f"profiling: target values {bad[:3]} are not among the levels {lv}")
    x_code, x_lab = pd.factorize(cells[known], sort=True)
    joint = np.bincount(x_code * len(lv) + s_code, weights=w[known], minlength=len(x_lab) * len(lv))
    return Reference(pd.DataFrame(joint.reshape(len(x_lab), len(lv)), index=x_lab, columns=lv))


def list_counts(cells: pd.Series, in_list: np.ndarray, ref: Reference, weights: np.ndarray | None = None,
                effective: bool = True) -> np.ndarray:
    """Counts ``n_x`` of the list over the reference's cells: weighted shares x Kish effective size."""
    m = np.asarray(in_list, dtype=bool)
    w = np.ones(len(cells)) if weights is None else np.asarray(weights, dtype=float)
    lab = cells[m]
    idx = ref.joint.index.get_indexer(lab)
    if (idx < 0).any():
        raise ValueError(f"profiling: list cells {sorted(set(lab[idx < 0]))[:3]} are not in the reference population")
    wm = w[m]
    tot = np.bincount(idx, weights=wm, minlength=len(ref.joint))
    n = (wm.sum() ** 2 / np.sum(wm ** 2)) if (effective and wm.size) else wm.sum()
    return tot / max(wm.sum(), 1e-300) * n


def simple_count(counts: np.ndarray, ref: Reference, smoothing: float = 0.5) -> np.ndarray:
    """The simple count method: ``sum_x n_x p(s | x) / N``."""
    c = np.asarray(counts, dtype=float)
    return c @ ref.p_s_given_x(smoothing) / c.sum()


@dataclass
class BayesProfile:
    """Posterior of the list's profile over the unobserved levels."""
    levels: list
    estimate: np.ndarray          # posterior mean of the list profile (eq. 8)
    ci_low: np.ndarray
    ci_high: np.ndarray
    pi_mean: np.ndarray           # posterior mean of pi = softmax(w) (the list's generating profile)
    prior: np.ndarray             # prior mean profile (population margins)
    acceptance: float
    draws: np.ndarray = field(repr=False)   # list-profile draws (n_draws x n_levels)
    log_lik_gain: float = 0.0     # log-likelihood at the mode minus at pi = population margins

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"label": self.levels, "estimate": self.estimate, "ci_low": self.ci_low,
                             "ci_high": self.ci_high, "prior": self.prior})


def _lse(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """log-sum-exp along ``axis`` (plain numpy: scipy's version costs more than the sampler's own work)."""
    mx = a.max(axis, keepdims=True)
    return (mx + np.log(np.exp(a - mx).sum(axis, keepdims=True))).squeeze(axis)


def _lse_rows(a: np.ndarray) -> np.ndarray:
    return _lse(a, 1)


def _log_lik(w: np.ndarray, counts: np.ndarray, log_px_s: np.ndarray) -> tuple[float, np.ndarray]:
    """eq. 6 and its gradient in ``w``."""
    log_pi = w - _lse(w)
    a = log_px_s + log_pi[None, :]
    lse = _lse_rows(a)
    r = np.exp(a - lse[:, None])                      # p(s | x, list)
    return float(counts @ lse), counts @ r - counts.sum() * np.exp(log_pi)


def bayesian_profile(counts: np.ndarray, ref: Reference, prior_sd: float = 1.0, n_draws: int = 1000,
                     burn: int = 300, seed: int = 0, smoothing: float = 0.5, prior_mean: np.ndarray | None = None
                     ) -> BayesProfile:
    """Posterior of the list profile (see the module docstring) by Metropolis-Hastings.

    Parameters
    ----------
    counts : array (n_cells,)
        The list's (effective) counts per reference cell, from :func:`list_counts`.
    ref : Reference
        The reference population (joint counts of cells x levels).
    prior_sd : float
        Prior standard deviation ``tau`` of the log-weights around the log population margins.
    n_draws, burn, seed
        Kept draws, discarded first draws and the seed of the sampler.
    prior_mean : array (n_levels,), optional
        Prior mean profile (default: the reference's own margins of the unobserved levels).
    """
    c = np.asarray(counts, dtype=float)
    if c.shape != (len(ref.joint),):
        raise ValueError(f"bayesian_profile: {c.size} counts for {len(ref.joint)} reference cells")
    if not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise ValueError("bayesian_profile: counts must be finite, >= 0 and not all zero")
    if prior_sd <= 0:
        raise ValueError(f"bayesian_profile: prior_sd must be > 0, got {prior_sd}")
    log_px_s = np.log(ref.p_x_given_s(smoothing))
    b = np.clip(ref.margins() if prior_mean is None else np.asarray(prior_mean, float), 1e-12, None)
    b = b / b.sum()
    mu = np.log(b)
    tau2 = prior_sd ** 2
    used = c > 0                                       # cells without list members add nothing to eq. 6
    cu, lpu = c[used], log_px_s[used]

    def neg_post(w):
        ll, g = _log_lik(w, cu, lpu)
        return -(ll - 0.5 * np.sum((w - mu) ** 2) / tau2), -(g - (w - mu) / tau2)

    def log_post(w):
        return float(cu @ _lse_rows(lpu + (w - _lse(w))[None, :])) - 0.5 * np.sum((w - mu) ** 2) / tau2

    w_hat = minimize(neg_post, mu.copy(), jac=True, method="L-BFGS-B").x
    d = w_hat.size
    # Hessian of the negative log posterior by central differences of the analytic gradient
    H = np.empty((d, d))
    h = 1e-5
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        H[:, j] = (neg_post(w_hat + e)[1] - neg_post(w_hat - e)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    L = np.linalg.cholesky(np.linalg.inv(H + 1e-9 * np.eye(d)) * 2.38 ** 2 / d)
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((burn + n_draws, d)) @ L.T
    u = np.log(rng.random(burn + n_draws))
    w, lp = w_hat.copy(), log_post(w_hat)
    W = np.empty((n_draws, d))
    acc = 0
    for it in range(burn + n_draws):
        cand = w + steps[it]
        lp_c = log_post(cand)
        if u[it] < lp_c - lp:
            w, lp = cand, lp_c
            acc += it >= burn
        if it >= burn:
            W[it - burn] = w
    # posterior list profile of every kept draw (eq. 8), all draws at once
    log_pi = W - _lse(W, 1)[:, None]
    a = lpu[None, :, :] + log_pi[:, None, :]
    r = np.exp(a - _lse(a, 2)[:, :, None])
    D = np.einsum("x,dxs->ds", cu, r) / cu.sum()
    ll_gain = _log_lik(w_hat, cu, lpu)[0] - _log_lik(mu, cu, lpu)[0]
    return BayesProfile(list(ref.levels), D.mean(0), np.percentile(D, 2.5, 0), np.percentile(D, 97.5, 0),
                        np.exp(log_pi).mean(0), b, acc / max(n_draws, 1), D, float(ll_gain))


@dataclass
class AudienceProfile:
    """Simple-count and Bayesian profiles of one audience (combined over the strata)."""
    table: pd.DataFrame           # label, simple, estimate (Bayes), ci_low, ci_high, base
    strata: pd.DataFrame          # stratum, list_n, n_cells, acceptance, log_lik_gain
    observed: tuple[str, ...]
    strata_columns: tuple[str, ...]


def profile_audience(frame: pd.DataFrame, in_list: np.ndarray, target: str, observed: Sequence[str],
                     strata: Sequence[str] = (), weights: np.ndarray | None = None, levels: Sequence | None = None,
                     prior_sd: float = 1.0, n_draws: int = 1000, burn: int = 300, seed: int = 0,
                     smoothing: float = 0.5) -> AudienceProfile:
    """Profile the unobserved ``target`` of the rows ``in_list`` from their ``observed`` cells.

    ``frame`` is the reference population (the list is a subset of it; the list's own ``target`` values are
    never read). With ``strata`` (covariates that may drive list membership directly, such as age and
    gender), the Bayesian assumption is made within each stratum - ``X`` independent of membership given
    ``S`` *and* the stratum - the list's profile is estimated per stratum with the prior centred on that
    stratum's population margins, and the strata are combined by the list's (weighted) size in each, draw
    by draw (strata are independent), which gives the interval. The simple count uses the same cells
    (observed x strata), so both methods get the same information.
    """
    m = np.asarray(in_list, dtype=bool)
    if m.shape != (len(frame),):
        raise ValueError(f"profile_audience: in_list has {m.size} entries for {len(frame)} rows")
    if not m.any():
        raise ValueError("profile_audience: the list is empty")
    w = np.ones(len(frame)) if weights is None else np.asarray(weights, dtype=float)
    x = cell_labels(frame, list(observed))
    z = cell_labels(frame, list(strata))
    known = frame[target].notna().to_numpy()
    lv = [str(v) for v in (levels if levels is not None else sorted(frame[target].dropna().astype(str).unique()))]
    base = reference(pd.Series("all", index=frame.index), frame[target], w, lv).margins()
    simple = np.zeros(len(lv))
    draws = np.zeros((n_draws, len(lv)))
    rows = []
    N = w[m].sum()
    for k, key in enumerate(sorted(z[m].unique())):
        inz = (z == key).to_numpy()
        ref = reference(x[inz & known], frame.loc[inz & known, target], w[inz & known], lv)
        cnt = list_counts(x[inz], m[inz], ref, w[inz])
        share = w[inz & m].sum() / N
        simple += share * simple_count(cnt, ref, smoothing)
        bp = bayesian_profile(cnt, ref, prior_sd, n_draws, burn, seed + k, smoothing)
        draws += share * bp.draws
        rows.append({"stratum": key, "list_n": int((inz & m).sum()), "list_share": share, "n_cells": len(ref.joint),
                     "acceptance": bp.acceptance, "log_lik_gain": bp.log_lik_gain})
    table = pd.DataFrame({"label": lv, "simple": simple, "estimate": draws.mean(0),
                          "ci_low": np.percentile(draws, 2.5, 0), "ci_high": np.percentile(draws, 97.5, 0),
                          "base": base})
    return AudienceProfile(table, pd.DataFrame(rows), tuple(observed), tuple(strata))
