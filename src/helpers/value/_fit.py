"""Maximum-likelihood machinery shared by the customer-value models: optimisation on the log scale,
numerical Hessian, Wald and profile-likelihood intervals, and the lifelines-style summary table."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats


class ConvergenceError(RuntimeError):
    """The optimiser stopped without converging; the message says what to try."""


def num_hessian(f: Callable[[np.ndarray], float], x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian of scalar ``f`` at ``x`` (steps relative to max(1, |x|))."""
    x = np.asarray(x, float)
    k = len(x)
    h = step * np.maximum(1.0, np.abs(x))
    H = np.empty((k, k))
    f0 = f(x)
    for i in range(k):
        ei = np.zeros(k); ei[i] = h[i]
        H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
        for j in range(i + 1, k):
            ej = np.zeros(k); ej[j] = h[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
    return H


def maximise(negll: Callable[[np.ndarray], float], x0: np.ndarray, what: str,
             bounds: Sequence[tuple[float, float]] | None = None, jac: Callable | None = None
             ) -> optimize.OptimizeResult:
    """Minimise ``negll`` over unconstrained (log) parameters: BFGS (L-BFGS-B within ``bounds`` on the log
    scale), then a short Nelder-Mead polish.

    The derivative-free restart makes the fit robust to flat ridges (users of ``lifetimes`` report
    non-convergence as their first problem); raises :class:`ConvergenceError` if nothing finite is found.
    """
    best = None
    x = np.asarray(x0, float)
    k = len(x)
    if jac is not None:  # analytic gradient: L-BFGS-B to a tight tolerance, Nelder-Mead only if it fails
        opts = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9}
        with np.errstate(all="ignore"):
            res = optimize.minimize(negll, x, jac=jac, method="L-BFGS-B", bounds=bounds, options=opts)
        if res.success and np.isfinite(res.fun):
            return res
        if np.isfinite(res.fun):
            # an abnormal line-search stop: at the tolerance asked for, the summed log-likelihood of a large
            # panel is below its own rounding (typically on the BG/NBD homogeneous-dropout ridge, a at its
            # bound). A fresh start from that point that cannot lower the objective either certifies it as
            # the optimum; the derivative-free fallback below took minutes there and ended no better.
            with np.errstate(all="ignore"):
                again = optimize.minimize(negll, res.x, jac=jac, method="L-BFGS-B", bounds=bounds, options=opts)
            if np.isfinite(again.fun) and (again.success or again.fun >= res.fun - 1e-10 * max(1.0, abs(res.fun))):
                return again if again.fun <= res.fun else res
    first = ("L-BFGS-B", {"maxiter": 500}) if bounds is not None else ("BFGS", {"gtol": 1e-8, "maxiter": 500})
    for method, opts in (first, ("Nelder-Mead", {"xatol": 1e-9, "fatol": 1e-11, "maxfev": 300 * k})):
        with np.errstate(all="ignore"):
            res = optimize.minimize(negll, x, method=method, options=opts, bounds=bounds)
        if np.isfinite(res.fun) and (best is None or res.fun <= best.fun):
            best = res
            x = res.x
    if best is None or not np.isfinite(best.fun):
        raise ConvergenceError(f"{what}: the log-likelihood is not finite at any point the optimiser tried; "
                               "check the inputs (frequency >= 0, 0 <= recency <= T) or pass other `initial` values")
    return best


def profile_interval(negll: Callable[[np.ndarray], float], xhat: np.ndarray, i: int, se_log: float,
                     level: float = 0.95) -> tuple[float, float]:
    """Profile-likelihood interval of ``exp(xhat[i])``: the log-parameter values where twice the drop of the
    maximised log-likelihood (other parameters re-optimised) reaches the chi-square(1) quantile."""
    crit = stats.chi2.ppf(level, 1) / 2
    f0 = negll(xhat)
    others = [j for j in range(len(xhat)) if j != i]
    warm = {"x": xhat[others].copy()}

    def drop(v: float) -> float:
        def g(y):
            z = xhat.copy(); z[i] = v; z[others] = y
            return negll(z)
        with np.errstate(all="ignore"):
            r = optimize.minimize(g, warm["x"], method="BFGS", options={"gtol": 1e-7})
        if np.isfinite(r.fun):
            warm["x"] = r.x
        return r.fun - f0 - crit

    out = []
    for sign in (-1, 1):
        warm["x"] = xhat[others].copy()
        step = max(se_log, 1e-3)
        lo, hi = xhat[i], xhat[i] + sign * step
        k = 0
        while drop(hi) < 0 and k < 30:
            lo, hi = hi, hi + sign * step
            step *= 1.6
            k += 1
        if k == 30:
            out.append(np.inf if sign > 0 else 0.0)
            continue
        a, b = sorted((lo, hi))
        root = optimize.brentq(drop, a, b, xtol=1e-6) if drop(a) * drop(b) < 0 else hi
        out.append(float(np.exp(root)))
    return out[0], out[1]


class MLFitter:
    """Base class: subclasses define ``_param_names`` and ``_negll(log_params, data)``.

    After ``fit``: ``params_`` (Series), ``log_likelihood_``, ``variance_matrix_`` (of the log-parameters),
    ``standard_errors_``, ``confidence_intervals_``; ``summary()`` returns the lifelines-style table.
    """

    _param_names: Sequence[str] = ()
    _data_cols: Sequence[str] = ()
    #: optional bounds of the log-parameters (None: unbounded)
    _log_bounds: Sequence[tuple[float, float]] | None = None

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = penalizer

    # --- subclass API -------------------------------------------------------------------------------
    def _negll_vec(self, logp: np.ndarray, *data) -> np.ndarray:  # per-row negative log-likelihood
        raise NotImplementedError

    def _initial(self) -> np.ndarray:
        return np.zeros(len(self._param_names))

    @staticmethod
    def _prepare(*data) -> dict:
        """What the per-row functions can compute once per fit instead of at every evaluation (passed to
        them as keyword arguments)."""
        return {}

    def _gradient(self, logp: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            g = np.sum(self._w[:, None] * self._grad_vec(logp, *self._data, **self._aux), axis=0)
        g = g + self.penalizer * 2 * np.exp(logp) ** 2
        return np.where(np.isfinite(g), g, 0.0)

    # --- shared -------------------------------------------------------------------------------------
    def _objective(self, logp: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            v = float(np.sum(self._w * self._negll_vec(logp, *self._data, **self._aux)))  # not np.dot: BLAS threads contend
        if not np.isfinite(v):
            return np.inf
        return v + self.penalizer * float(np.sum(np.exp(logp) ** 2))

    def _finish_fit(self, data: tuple, weights, initial, what: str) -> "MLFitter":
        self._data = tuple(np.asarray(d, float) for d in data)
        self._aux = self._prepare(*self._data)
        n = len(self._data[0])
        self._w = np.ones(n) if weights is None else np.asarray(weights, float)
        if len(self._w) != n:
            raise ValueError(f"{what}: weights have {len(self._w)} rows, data {n}")
        x0 = np.log(np.asarray(initial, float)) if initial is not None else self._initial()
        jac = self._gradient if hasattr(self, "_grad_vec") else None
        res = maximise(self._objective, x0, what, self._log_bounds, jac)
        self._logp = res.x
        lb = self._log_bounds
        self.at_bound_ = [n for n, v, b in zip(self._param_names, res.x, lb or []) if min(abs(v - b[0]), abs(v - b[1])) < 1e-3]
        self.params_ = pd.Series(np.exp(res.x), index=list(self._param_names), name="coef")
        self.log_likelihood_ = -float(res.fun)
        self.n_ = float(self._w.sum())
        self.converged_ = bool(res.success) or np.linalg.norm(optimize.approx_fprime(res.x, self._objective, 1e-7)) < 1e-2
        if jac is not None:  # central differences of the analytic gradient: 2k gradient calls, not 2k^2 + 1 fits
            h = 1e-5 * np.maximum(1.0, np.abs(res.x))
            H = np.array([(jac(res.x + h[i] * np.eye(len(h))[i]) - jac(res.x - h[i] * np.eye(len(h))[i])) / (2 * h[i])
                          for i in range(len(h))])
            H = (H + H.T) / 2
        else:
            H = num_hessian(self._objective, res.x)
        try:
            V = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            V = np.full_like(H, np.nan)
        self.variance_matrix_ = pd.DataFrame(V, index=self._param_names, columns=self._param_names)
        se_log = np.sqrt(np.clip(np.diag(V), 0, None))
        self._se_log = se_log
        self.standard_errors_ = pd.Series(self.params_.to_numpy() * se_log, index=self.params_.index,
                                          name="se(coef)")
        z = stats.norm.ppf(0.975)
        self.confidence_intervals_ = pd.DataFrame({"coef lower 95%": np.exp(res.x - z * se_log),
                                                   "coef upper 95%": np.exp(res.x + z * se_log)},
                                                  index=self.params_.index)
        self._profile = None
        return self

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call .fit(...) first")

    @property
    def AIC_(self) -> float:
        self._check_fitted()
        return 2 * len(self._param_names) - 2 * self.log_likelihood_

    def profile_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Profile-likelihood intervals of every parameter (re-optimising the others; a few seconds)."""
        self._check_fitted()
        rows = {n: profile_interval(self._objective, self._logp, i, self._se_log[i], level)
                for i, n in enumerate(self._param_names)}
        pct = int(round(level * 100))
        self._profile = pd.DataFrame(rows, index=[f"profile lower {pct}%", f"profile upper {pct}%"]).T
        return self._profile

    def summary(self, profile: bool = False) -> pd.DataFrame:
        """Table of estimates: coef, se(coef) (delta method), Wald 95% bounds on the log scale, and with
        ``profile=True`` the profile-likelihood bounds."""
        self._check_fitted()
        t = pd.concat([self.params_, self.standard_errors_, self.confidence_intervals_], axis=1)
        if profile:
            t = t.join(self._profile if self._profile is not None else self.profile_intervals())
        t.index.name = "param"
        t.attrs["log_likelihood"] = self.log_likelihood_
        return t

    def sample_params(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` parameter vectors drawn from the asymptotic normal of the log-parameters (for intervals of
        derived quantities)."""
        self._check_fitted()
        rng = np.random.default_rng(seed)
        V = self.variance_matrix_.to_numpy()
        if not np.all(np.isfinite(V)):
            return np.tile(self.params_.to_numpy(), (n, 1))
        return np.exp(rng.multivariate_normal(self._logp, V, size=n, method="eigh"))

    def __repr__(self) -> str:
        if not hasattr(self, "params_"):
            return f"<{type(self).__name__}: not fitted>"
        p = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"<{type(self).__name__}: fitted on {self.n_:,.0f} customers, {p}, log-likelihood {self.log_likelihood_:.2f}>"
