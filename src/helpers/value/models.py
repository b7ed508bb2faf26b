"""BG/NBD, Pareto/NBD and Gamma-Gamma customer-value models fitted by maximum likelihood on scipy.

Log-likelihoods are computed in logs throughout (``gammaln``/``betaln``, ``logaddexp`` for the two-branch
mixtures, Euler-transformed Gauss hypergeometric functions for Pareto/NBD and BG/NBD expectations), so fits
do not overflow for heavy buyers or long calendars. References: Fader, Hardie & Lee (2005) "Counting your
customers the easy way" (BG/NBD); Schmittlein, Morrison & Colombo (1987) and Fader & Hardie (2005) "A note on
deriving the Pareto/NBD model" (Pareto/NBD); Fader, Hardie & Lee (2005) "RFM and CLV" (Gamma-Gamma).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from ._fit import MLFitter

_ALIASES = {"frequency": ("frequency", "x", "frequency_cal"),
            "recency": ("recency", "t_x", "recency_cal"),
            "T": ("T", "T_cal", "age"),
            "monetary_value": ("monetary_value", "zbar", "m", "monetary_value_cal"),
            "weight": ("weight", "n_customers", "count")}


def _col(df: pd.DataFrame, role: str, required: bool = True):
    for c in _ALIASES[role]:
        if c in df.columns:
            return df[c].to_numpy(float)
    if required:
        raise KeyError(f"the data frame has no {role!r} column (accepted names: {', '.join(_ALIASES[role])}; "
                       f"columns present: {', '.join(map(str, df.columns))})")
    return None


def rfm_arrays(X, recency=None, T=None, weights=None, what: str = "fit"):
    """Validated ``(frequency, recency, T, weights)`` from a data frame or three arrays.

    Raises ``ValueError`` naming the first offending row when frequency is negative or not whole,
    recency is outside [0, T], or a customer without repeat purchases has a recency other than 0.
    """
    if isinstance(X, pd.DataFrame):
        x, tx, T_ = _col(X, "frequency"), _col(X, "recency"), _col(X, "T")
        if weights is None:
            weights = _col(X, "weight", required=False)
        index = X.index
    else:
        x, tx, T_ = (np.atleast_1d(np.asarray(v, float)) for v in (X, recency, T))
        index = pd.RangeIndex(max(len(x), len(tx), len(T_)))
    x, tx, T_ = np.broadcast_arrays(x, tx, T_)
    checks = [(~np.isfinite(x) | ~np.isfinite(tx) | ~np.isfinite(T_), "values must be finite numbers"),
              ((x < 0) | (np.abs(x - np.round(x)) > 1e-9), "frequency must be a whole number >= 0"),
              ((tx < 0) | (tx > T_ + 1e-9), "recency must satisfy 0 <= recency <= T"),
              ((x == 0) & (tx != 0), "recency must be 0 when frequency is 0"),
              (T_ < 0, "T (customer age) must be >= 0")]
    for bad, msg in checks:
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what}: {int(bad.sum())} row(s) invalid, first at index {index[i]!r} "
                             f"(frequency={x[i]}, recency={tx[i]}, T={T_[i]}): {msg}")
    w = None if weights is None else np.asarray(weights, float)
    return x, tx, T_, w


def _like(v, like):
    """A float when the caller passed scalars, else the array."""
    return float(np.asarray(v).ravel()[0]) if np.ndim(like) == 0 and np.size(v) == 1 else v


def distinct_rows(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of equal-length numeric columns, in lexicographic order (as ``np.unique(axis=0)``, by one
    lexsort instead of a sort of row records: several times faster on a million rows), and each row's
    position among them."""
    cols = [np.asarray(c) for c in cols]
    order = np.lexsort(cols[::-1])
    srt = [c[order] for c in cols]
    new = np.ones(len(order), bool)
    if len(order) > 1:
        new[1:] = np.any([c[1:] != c[:-1] for c in srt], axis=0)
    inv = np.empty(len(order), np.intp)
    inv[order] = np.cumsum(new) - 1
    return [c[new] for c in srt], inv


def compress(x, tx, T_, w=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Collapse identical (frequency, recency, T) rows into one row with a count weight (same likelihood,
    far fewer evaluations on large panels measured in days or weeks)."""
    w = np.ones(len(x)) if w is None else w
    (ux, utx, uT), inv = distinct_rows(x, tx, T_)
    return ux, utx, uT, np.bincount(inv, weights=w, minlength=len(ux))


class _CountModel(MLFitter):
    """Shared ``fit`` of the two purchase-count models."""

    def fit(self, X, recency=None, T=None, weights=None, initial: Sequence[float] | None = None,
            compress_rows: bool = True):
        """Fit by maximum likelihood.

        ``X`` is a data frame with columns ``frequency`` (repeat purchases), ``recency`` (time of the last
        purchase since the first) and ``T`` (time since the first purchase), or ``X, recency, T`` arrays;
        optional ``weights`` (e.g. raking weights or row counts). Returns ``self``.
        """
        x, tx, T_, w = rfm_arrays(X, recency, T, weights, what=f"{type(self).__name__}.fit")
        if compress_rows:
            x, tx, T_, w = compress(x, tx, T_, w)
        self._scale = float(np.average(T_, weights=w))
        return self._finish_fit((x, tx, T_), w, initial, f"{type(self).__name__}.fit")

    def conditional_probability_alive(self, frequency, recency, T, params=None) -> np.ndarray:
        """P(alive at T | x, t_x, T) = 1 / (1 + odds of having dropped out), the odds from the model's
        ``_log_odds_dead`` (BG/NBD: [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x); Pareto/NBD:
        s/(r+s+x) (alpha+T)^(r+x) (beta+T)^s A0)."""
        self._check_fitted()
        x, tx, T_, _ = rfm_arrays(frequency, recency, T)
        return _like(expit(-self._log_odds_dead(x, tx, T_, params)), frequency)

    def expected_purchases_if_alive(self, t, frequency, T, params=None) -> np.ndarray:
        """E[Y(t) | alive at T, x, T]: expected purchases in (T, T+t] of a customer still alive. It does not
        depend on the recency, so a panel needs it only once per distinct (frequency, T) pair."""
        self._check_fitted()
        x, _, T_, _ = rfm_arrays(frequency, np.zeros(np.shape(frequency)), T)
        p = self.params_.to_numpy() if params is None else params
        return _like(self._expected_if_alive(t, x, T_, p), frequency)

    def conditional_expected_number_of_purchases_up_to_time(self, t, frequency, recency, T, params=None):
        """E[Y(t) | x, t_x, T] = E[Y(t) | alive, x, T] x P(alive | x, t_x, T): expected purchases in (T, T+t]."""
        self._check_fitted()
        x, tx, T_, _ = rfm_arrays(frequency, recency, T)
        p = self.params_.to_numpy() if params is None else params
        return _like(self._expected_if_alive(t, x, T_, p) * expit(-self._log_odds_dead(x, tx, T_, p)), frequency)

    def expected_total(self, X, recency=None, T=None, t: float = 1.0, weights=None) -> float:
        """Sum over customers of the conditional expected purchases in the next ``t`` periods."""
        x, tx, T_, w = rfm_arrays(X, recency, T, weights)
        e = self.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T_)
        return float(np.sum(e if w is None else e * w))

    def plot(self, ax=None, X=None, max_frequency: int = 7, seed: int = 0, label: str = "repeat purchases"):
        """Observed vs model-implied number of customers by repeat purchases in the calibration period."""
        from .plots import plot_period_transactions
        return plot_period_transactions(self, X if X is not None else self._fit_frame(), ax=ax,
                                        max_frequency=max_frequency, seed=seed, label=label)

    def _fit_frame(self) -> pd.DataFrame:
        x, tx, T_ = self._data
        return pd.DataFrame({"frequency": x, "recency": tx, "T": T_, "weight": self._w})


class BetaGeoFitter(_CountModel):
    """BG/NBD (beta-geometric / negative binomial) model of repeat purchasing.

    Purchases follow a Poisson process with rate ``lambda ~ Gamma(r, alpha)``; after each purchase the
    customer drops out with probability ``p ~ Beta(a, b)``.
    """

    _param_names = ("r", "alpha", "a", "b")
    #: a above 1000 is the homogeneous-dropout limit (a, b -> infinity with a/(a+b) fixed: expectations no
    #: longer change, and the hypergeometric terms overflow beyond it); ``at_bound_`` then names it
    _log_bounds = [(-12.0, 8.0), (-12.0, 14.0), (-12.0, float(np.log(1e3))), (-12.0, float(np.log(1e7)))]

    def _initial(self):
        return np.log([0.5, max(self._scale / 10, 0.1), 1.0, 2.0])

    @staticmethod
    def _prepare(x, tx, T_) -> dict:
        return {"xu_inv": np.unique(x, return_inverse=True)}

    @staticmethod
    def _negll_vec(logp, x, tx, T_, xu_inv=None):
        r, alpha, a, b = np.exp(logp)
        # the special functions depend on x only: evaluate them once per distinct frequency (the distinct
        # values are found once per fit, not at every evaluation)
        xu, inv = np.unique(x, return_inverse=True) if xu_inv is None else xu_inv
        inv = inv.reshape(np.shape(x))
        g = (gammaln(r + xu) - gammaln(r) + r * np.log(alpha))[inv]
        b1 = (betaln(a, b + xu) - betaln(a, b))[inv]
        with np.errstate(divide="ignore", invalid="ignore"):
            b2 = np.where(xu > 0, betaln(a + 1, b + np.maximum(xu, 1) - 1) - betaln(a, b), -np.inf)[inv]
            A3 = np.where(x > 0, b2 - (r + x) * np.log(alpha + tx), -np.inf)
        A2 = b1 - (r + x) * np.log(alpha + T_)
        return -(g + np.logaddexp(A2, A3))

    @staticmethod
    def _grad_vec(logp, x, tx, T_, xu_inv=None):
        """Gradient of the per-row negative log-likelihood with respect to the log-parameters (n x 4)."""
        r, alpha, a, b = np.exp(logp)
        xu, inv = np.unique(x, return_inverse=True) if xu_inv is None else xu_inv
        inv = inv.reshape(np.shape(x))
        lT, lt = np.log(alpha + T_), np.log(alpha + tx)
        b1 = (betaln(a, b + xu) - betaln(a, b))[inv]
        with np.errstate(divide="ignore", invalid="ignore"):
            b2 = np.where(xu > 0, betaln(a + 1, b + np.maximum(xu, 1) - 1) - betaln(a, b), -np.inf)[inv]
            A3 = np.where(x > 0, b2 - (r + x) * lt, -np.inf)
        A2 = b1 - (r + x) * lT
        w2 = np.exp(A2 - np.logaddexp(A2, A3)); w3 = 1 - w2
        base = -digamma(a) + digamma(a + b)
        d2a = (digamma(a + b) - digamma(a + b + xu))[inv]
        d3a = (digamma(a + 1) - digamma(a + b + xu) + base)[inv]
        d2b = (digamma(b + xu) - digamma(a + b + xu) - digamma(b) + digamma(a + b))[inv]
        d3b = np.where(xu > 0, digamma(b + np.maximum(xu, 1) - 1) - digamma(a + b + xu) - digamma(b) + digamma(a + b), 0.0)[inv]
        gr = (digamma(r + xu) - digamma(r))[inv] + np.log(alpha) - w2 * lT - w3 * np.where(x > 0, lt, 0.0)
        ga = r / alpha - (r + x) * (w2 / (alpha + T_) + w3 / (alpha + tx))
        gA = w2 * d2a + w3 * d3a
        gB = w2 * d2b + w3 * d3b
        return -np.stack([gr * r, ga * alpha, gA * a, gB * b], axis=1)

    def _log_odds_dead(self, x, tx, T_, p=None):
        r, alpha, a, b = self.params_.to_numpy() if p is None else p
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * (np.log(alpha + T_) - np.log(alpha + tx))
        return np.where(x > 0, v, -np.inf)


    def _expected_if_alive(self, t, x, T_, p):
        r, alpha, a, b = p
        t = np.asarray(t, float)
        z = t / (alpha + T_ + t)
        # Euler transform: (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)
        core = 1 - np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        return (a + b + x - 1) / (a - 1) * core

    def expected_number_of_purchases_up_to_time(self, t, params=None):
        """E[X(t)] for a new customer: (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))]."""
        self._check_fitted()
        r, alpha, a, b = self.params_.to_numpy() if params is None else params
        t = np.asarray(t, float)
        z = t / (alpha + t)
        return (a + b - 1) / (a - 1) * (1 - np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z))

    def probability_of_n_purchases_up_to_time(self, t, n) -> np.ndarray:
        """P(X(t) = n) for a new customer, n = 0, 1, ... (closed form of Fader, Hardie & Lee 2005, eq. 8)."""
        self._check_fitted()
        r, alpha, a, b = self.params_.to_numpy()
        n = np.asarray(n)
        lt = np.log(t / (alpha + t)); la = np.log(alpha / (alpha + t))
        first = np.exp(betaln(a, b + n) - betaln(a, b) + gammaln(r + n) - gammaln(r) - gammaln(n + 1)
                       + r * la + n * lt)
        out = []
        for ni, fi in zip(np.atleast_1d(n), np.atleast_1d(first)):
            if ni == 0:
                out.append(fi)
                continue
            j = np.arange(ni)
            s = np.exp(gammaln(r + j) - gammaln(r) - gammaln(j + 1) + j * lt).sum()
            out.append(fi + np.exp(betaln(a + 1, b + ni - 1) - betaln(a, b)) * (1 - np.exp(r * la) * s))
        return np.asarray(out)

    def sample_frequencies(self, T, seed: int = 0) -> np.ndarray:
        """Simulated repeat-purchase counts in (0, T] for customers of ages ``T`` (for plots)."""
        self._check_fitted()
        r, alpha, a, b = self.params_.to_numpy()
        rng = np.random.default_rng(seed)
        T = np.asarray(T, float)
        lam = rng.gamma(r, 1 / alpha, size=len(T)); p = rng.beta(a, b, size=len(T))
        out = np.zeros(len(T), int)
        alive = np.ones(len(T), bool); clock = np.zeros(len(T))
        while alive.any():
            clock[alive] += rng.exponential(1 / lam[alive])
            buy = alive & (clock <= T)
            out[buy] += 1
            alive = buy & (rng.random(len(T)) >= p)
        return out


class ParetoNBDFitter(_CountModel):
    """Pareto/NBD model: Poisson purchasing with ``lambda ~ Gamma(r, alpha)``, exponential lifetime with
    ``mu ~ Gamma(s, beta)``."""

    _param_names = ("r", "alpha", "s", "beta")
    #: s above 50 means no identifiable heterogeneity in dropout (the fit runs off to s, beta -> infinity with
    #: s / beta fixed, where the hypergeometric terms get slow); ``at_bound_`` then names it
    _log_bounds = [(-12.0, 8.0), (-12.0, 14.0), (-12.0, float(np.log(50.0))), (-12.0, 18.0)]

    def _initial(self):
        return np.log([0.5, max(self._scale / 4, 0.1), 0.5, max(self._scale / 4, 0.1)])

    @staticmethod
    def _log_A0(r, alpha, s, beta, x, tx, T_):
        """log of A0 (the integral over death times in (t_x, T]) with Euler-transformed 2F1."""
        rsx = r + s + x
        if alpha >= beta:
            big, bpar = alpha, s + 1
        else:
            big, bpar = beta, r + x
        d = abs(alpha - beta)

        def log_term(t):
            z = d / (big + t)
            # 2F1(rsx, bpar; rsx+1; z) = (1-z)^(1-bpar) 2F1(1, rsx+1-bpar; rsx+1; z)
            return ((1 - bpar) * np.log1p(-z) + np.log(hyp2f1(1.0, rsx + 1 - bpar, rsx + 1, z))
                    - rsx * np.log(big + t))
        l1, l2 = log_term(tx), log_term(T_)
        with np.errstate(divide="ignore", invalid="ignore"):
            return l1 + np.log(-np.expm1(np.minimum(l2 - l1, 0.0)))

    _NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)

    @classmethod
    def _log_A0_quad(cls, r, alpha, s, beta, x, tx, T_):
        """log A0 by quadrature: A0 = (r+s+x) * integral over (t_x, T] of (alpha+t)^-(r+x) (beta+t)^-(s+1) dt.

        In u = log(alpha + t) and then y = exp(-c (u - u0)) with c = max(r+x-1, 0.5), the integrand's
        exponential decay is absorbed and what is left is smooth, so 64 Gauss-Legendre nodes suffice; used
        where the hypergeometric series converges slowly (|alpha - beta| close to beta + t_x)."""
        x, tx, T_ = (np.asarray(v, float)[:, None] for v in (x, tx, T_))
        u0, u1 = np.log(alpha + tx), np.log(alpha + T_)
        c = np.maximum(r + x - 1, 0.5)
        span = -np.expm1(-c * (u1 - u0))                      # 1 - y1
        y = 1 - span * (cls._NODES[None, :] + 1) / 2            # nodes on [y1, 1]
        u = u0 - np.log(y) / c
        logh = -(r + x - 1 - c) * u - (s + 1) * np.log(beta - alpha + np.exp(u))
        with np.errstate(divide="ignore"):
            lw = np.log(cls._WEIGHTS)[None, :] + np.log(span / 2)
        from scipy.special import logsumexp
        li = -c[:, 0] * u0[:, 0] - np.log(c[:, 0]) + logsumexp(logh + lw, axis=1)
        return np.log(r + s + x[:, 0]) + li

    @classmethod
    def _log_A0_any(cls, r, alpha, s, beta, x, tx, T_):
        x, tx, T_ = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, float)) for v in (x, tx, T_)))
        z = abs(alpha - beta) / (max(alpha, beta) + tx)
        slow = z > 0.9
        out = np.empty(len(x))
        if (~slow).any():
            out[~slow] = cls._log_A0(r, alpha, s, beta, x[~slow], tx[~slow], T_[~slow])
        if slow.any():
            out[slow] = cls._log_A0_quad(r, alpha, s, beta, x[slow], tx[slow], T_[slow])
        return np.where(tx >= T_, -np.inf, out)

    @classmethod
    def _negll_vec(cls, logp, x, tx, T_):
        r, alpha, s, beta = np.exp(logp)
        A1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        A2 = np.logaddexp(-(r + x) * np.log(alpha + T_) - s * np.log(beta + T_),
                          np.log(s) - np.log(r + s + x) + cls._log_A0_any(r, alpha, s, beta, x, tx, T_))
        return -(A1 + A2)

    def _log_odds_dead(self, x, tx, T_, p=None):
        r, alpha, s, beta = self.params_.to_numpy() if p is None else p
        return (np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T_) + s * np.log(beta + T_)
                + self._log_A0_any(r, alpha, s, beta, x, tx, T_))


    def _expected_if_alive(self, t, x, T_, p):
        # E[Y(t) | alive, x, T] = (r+x)(beta+T)/((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)]
        r, alpha, s, beta = p
        L = np.log((beta + T_ + t) / (beta + T_))
        g = L if abs(s - 1) < 1e-9 else -np.expm1(-(s - 1) * L) / (s - 1)
        return (r + x) * (beta + T_) / (alpha + T_) * g

    def expected_number_of_purchases_up_to_time(self, t, params=None):
        """E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)]."""
        self._check_fitted()
        r, alpha, s, beta = self.params_.to_numpy() if params is None else params
        L = np.log((beta + np.asarray(t, float)) / beta)
        g = L if abs(s - 1) < 1e-9 else -np.expm1(-(s - 1) * L) / (s - 1)
        return r * beta / alpha * g

    def sample_frequencies(self, T, seed: int = 0) -> np.ndarray:
        """Simulated repeat-purchase counts in (0, T] (for plots)."""
        self._check_fitted()
        r, alpha, s, beta = self.params_.to_numpy()
        rng = np.random.default_rng(seed)
        T = np.asarray(T, float)
        lam = rng.gamma(r, 1 / alpha, size=len(T)); mu = rng.gamma(s, 1 / beta, size=len(T))
        life = rng.exponential(1 / mu)
        return rng.poisson(lam * np.minimum(life, T))


class GammaGammaFitter(MLFitter):
    """Gamma-Gamma model of average transaction value: spend per transaction ``~ Gamma(p, nu)``,
    ``nu ~ Gamma(q, gamma)`` across customers; fitted on repeat buyers only."""

    _param_names = ("p", "q", "v")

    def _initial(self):
        return np.log([2.0, 2.0, max(self._scale, 1e-3)])

    @staticmethod
    def _prepare(x, m) -> dict:
        return {"xu_inv": np.unique(x, return_inverse=True), "logm": np.log(m), "mx": m * x}

    @staticmethod
    def _negll_vec(logp, x, m, xu_inv=None, logm=None, mx=None):
        p, q, g = np.exp(logp)
        # gammaln and log x depend on x only: once per distinct frequency (a million repeat buyers have a
        # few hundred); log m and m x do not depend on the parameters
        xu, inv = np.unique(x, return_inverse=True) if xu_inv is None else xu_inv
        lm = np.log(m) if logm is None else logm
        mx = m * x if mx is None else mx
        pxu = p * xu
        per_x = (gammaln(pxu + q) - gammaln(pxu) + pxu * np.log(xu))[inv.reshape(np.shape(x))]
        px = p * x
        return -(per_x - gammaln(q) + q * np.log(g) + (px - 1) * lm - (px + q) * np.log(g + mx))

    @staticmethod
    def _grad_vec(logp, x, m, xu_inv=None, logm=None, mx=None):
        """Gradient of the per-row negative log-likelihood with respect to the log-parameters (n x 3)."""
        p, q, g = np.exp(logp)
        xu, inv = np.unique(x, return_inverse=True) if xu_inv is None else xu_inv
        inv = inv.reshape(np.shape(x))
        lm = np.log(m) if logm is None else logm
        mx = m * x if mx is None else mx
        pxu = p * xu
        d_pq = digamma(pxu + q)
        lgm = np.log(g + mx)
        dp = x * ((d_pq - digamma(pxu) + np.log(xu))[inv] + lm - lgm)
        dq = d_pq[inv] - digamma(q) + np.log(g) - lgm
        dg = q / g - (p * x + q) / (g + mx)
        return -np.stack([dp * p, dq * q, dg * g], axis=1)

    @staticmethod
    def _arrays(X, monetary_value=None, weights=None, what="GammaGammaFitter"):
        if isinstance(X, pd.DataFrame):
            x, m = _col(X, "frequency"), _col(X, "monetary_value")
            if weights is None:
                weights = _col(X, "weight", required=False)
        else:
            x, m = np.asarray(X, float), np.asarray(monetary_value, float)
        bad = ~(np.isfinite(x) & np.isfinite(m)) | (x <= 0) | (m <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what}: {int(bad.sum())} row(s) with frequency <= 0 or mean spend <= 0 "
                             f"(first at position {i}: frequency={x[i]}, monetary_value={m[i]}); the Gamma-Gamma "
                             "model is fitted on repeat buyers with positive spend only: filter frequency > 0")
        return x, m, (None if weights is None else np.asarray(weights, float))

    def fit(self, X, monetary_value=None, weights=None, initial: Sequence[float] | None = None):
        """Fit on repeat buyers: ``X`` a data frame with ``frequency`` and ``monetary_value`` (mean spend of
        the repeat transactions), or two arrays. Returns ``self``."""
        x, m, w = self._arrays(X, monetary_value, weights, "GammaGammaFitter.fit")
        self._scale = float(np.mean(m))
        return self._finish_fit((x, m), w, initial, "GammaGammaFitter.fit")

    @property
    def gamma_(self) -> float:
        return float(self.params_["v"])

    def conditional_expected_average_profit(self, frequency, monetary_value, params=None) -> np.ndarray:
        """E[M | p, q, gamma, mean spend, x] = p (gamma + x mean) / (p x + q - 1); for x = 0 the population
        mean p gamma / (q - 1)."""
        self._check_fitted()
        p, q, g = self.params_.to_numpy() if params is None else params
        x = np.asarray(frequency, float); m = np.nan_to_num(np.asarray(monetary_value, float))
        return _like(p * (g + x * m) / (p * x + q - 1), frequency)

    def population_mean_spend(self) -> float:
        p, q, g = self.params_.to_numpy()
        return float(p * g / (q - 1))

    def plot(self, ax=None, X=None, label: str = "mean spend per transaction"):
        """Observed distribution of customers' mean spend against the model-implied density."""
        from .plots import plot_spend_fit
        if X is None:
            x, m = self._data
            X = pd.DataFrame({"frequency": x, "monetary_value": m})
        return plot_spend_fit(self, X, ax=ax, label=label)


def spend_frequency_correlation(frequency, monetary_value) -> float:
    """Pearson correlation of frequency and mean spend among repeat buyers: Gamma-Gamma assumes they are
    independent (values far from 0 are a warning)."""
    x, m = np.asarray(frequency, float), np.asarray(monetary_value, float)
    k = x > 0
    return float(np.corrcoef(x[k], m[k])[0, 1])
