"""Budget allocation across channels for a target audience, under constraints, scored against a planted optimum.

Two steps:

1. :func:`fit_response` estimates, from the run's own exposures and conversions, everything a planner
   needs for the audience: each channel's CPM (spend / impressions), each member's exposure rate per
   planned dollar (Gamma-Poisson empirical Bayes on their impressions, so a member seen twice is not
   assumed to see twice as much as one seen once), and a response model fitted by penalised maximum
   likelihood on members' conversions in each week of the campaign (:data:`WINDOW_DAYS`):
   ``E[y_w] = D_w (baseline_u + sum_c beta_c S_c(r_uwc))`` with ``r_uwc`` the member's impressions per day
   in window ``w`` and ``S_c`` a Hill curve (half point ``H_c``, shape ``kappa_c``: kappa > 1 is a
   frequency threshold); within a window it is the steady state of geometric adstock (decay folded into
   ``H``). Windows rather than campaign totals because spend is flighted: a Hill curve of the campaign's
   average rate is not the response to the flights' rates, and fitting one misjudged the channels whose
   flights vary most (their credit leaked to correlated, evenly spent channels). A plan's response is the
   expectation of the curve over the window's Poisson impression count, the quantity the curve was fitted
   on. Everyone else in the run informs the curve shapes; the audience's own effects deviate from the
   run's by a shrunken factor (partial pooling), so small audiences borrow strength; with ``groups`` (the
   run's segments) each other segment gets its own baseline and effects too (:func:`_fit_hierarchical`).
2. :func:`optimise` maximises expected incremental conversions, or reach at an effective frequency, for a
   budget per person, with minimum / maximum spend per channel, frequency caps (per channel: turned into
   spend ceilings by bisection; overall: a nonlinear constraint), and any linear constraints the user adds;
   scipy SLSQP from several starts (equal split, the affinity rule, random Dirichlet draws), trust-constr
   as a fallback, and every constraint re-checked at the solution (:func:`check_constraints`).

Targetable channels (social, video, search, display) deliver an audience buy inside the audience; national
buys (linear TV, podcast host reads) reach the audience only in proportion to its share of the channel.
The affinity rule of thumb (:func:`affinity_rule`) spends in proportion to the audience's channel index
above 100, the way a planner reads an affinity table. On synthetic runs, :func:`share_of_planted_optimum`
evaluates any allocation under the planted model (``budget_share_of_planted_optimum``) against the planted
optimum of :func:`planted_optimum` (the generator's optimiser with an analytic gradient).

Linear constraints are dicts ``{"coef": {channel: a}, "op": "<=" | ">=" | "==", "rhs": v,
"unit": "share" | "usd"}``: ``share`` means sum a_c x_c / budget, ``usd`` the audience's total dollars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits

from . import exposures_module
from .data import exposure_cells


#: days per exposure window of the response fit: short enough to follow two-week flights and the geo test,
#: long enough to hold every weekday once (the weekday profile then averages out of each window)
WINDOW_DAYS = 7

#: default support guard of :func:`optimise`: no channel may be planned at a mean daily rate above this
#: multiple of the largest weekly rate the audience saw on it in the data (the fitted curve is only known
#: there; beyond it the optimiser chases the extrapolated tail of a Hill curve)
SUPPORT_MULTIPLE = 3.0


# --- per-member exposure rates -------------------------------------------------------------------
def _eligibility(md, users: pd.Index, dates: pd.DatetimeIndex) -> np.ndarray:
    """(users, days) 1 when the member could be served that day (holdout designs respected)."""
    elig = np.ones((len(users), len(dates)))
    a = md.assignment
    if a is None:
        return elig
    a = a.set_index(a["user_id"].astype(str)).reindex(users)
    elig[a["user_holdout"].fillna(False).to_numpy(bool)] = 0.0
    if md.truth is not None and "geo_holdout" in md.truth:
        test = dates >= pd.Timestamp(md.truth["geo_holdout"]["test_start"])
    else:  # without the truth the design is still known: dark geos are dark in the final two weeks
        test = np.arange(len(dates)) >= len(dates) - 14
    elig[np.ix_(a["geo_holdout"].fillna(False).to_numpy(bool), test)] = 0.0
    return elig


def _gamma_poisson(n: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """MLE of (shape r, rate b) of the Gamma mixing a Poisson count n with exposure e."""
    ok = e > 0
    n, e = n[ok], e[ok]
    if len(n) < 5 or n.sum() == 0:
        return 1.0, max(e.mean(), 1e-9)
    m = n.sum() / e.sum()

    def nll(t):
        r, b = np.exp(t)
        return -(special.gammaln(n + r) - special.gammaln(r) + r * np.log(b / (b + e))
                 + n * np.log(e / (b + e))).sum()

    res = optimize.minimize(nll, [0.0, np.log(1.0 / m)], method="Nelder-Mead",
                            options={"xatol": 1e-5, "fatol": 1e-6, "maxiter": 1000})
    r, b = np.exp(res.x)
    return float(r), float(b)


@dataclass
class ResponseModel:
    """Everything the planner estimated for one audience (see :func:`fit_response`)."""

    channels: list
    users: pd.Index
    days: int
    cpm: np.ndarray                       # USD per 1,000 impressions, per channel
    targetable: np.ndarray
    theta: np.ndarray                     # (users, C) impressions per planned national USD (posterior mean)
    gamma_shape: np.ndarray
    params: np.ndarray                    # transformed response parameters
    cov: np.ndarray | None
    index: pd.Series                      # audience's channel index (impressions share / user share x 100)
    n_population: int
    converged: bool = True
    notes: list = field(default_factory=list)
    window_days: int = 0                  # length of the fit's exposure windows (0: campaign averages)
    #: (C,) largest impressions per eligible member per day the audience saw on each channel in one window
    #: of the data (None: unknown, no support guard)
    support_rate: np.ndarray | None = None
    #: every group of the fit (label -> (params, cov)); the target audience is "(target audience)"
    group_params: dict | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.users)

    def response_params(self, params=None) -> dict:
        p = self.params if params is None else params
        C = len(self.channels)
        q = p[2:].reshape(C, 4)
        return {"baseline": p[:2], "beta": np.exp(q[:, 0]), "half": np.exp(q[:, 1]),
                "shape": np.exp(q[:, 2]), "decay": special.expit(q[:, 3])}

    def daily_rates(self, spend_per_person) -> np.ndarray:
        """(users, C) expected impressions per member per day for ``spend_per_person`` (USD, campaign)."""
        x = np.asarray(spend_per_person, float)
        total = x * self.n
        inside = self.theta / self.theta.sum(0).clip(1e-12) * (1000.0 / self.cpm) * total
        national = self.theta * total
        return np.where(self.targetable, inside, national) / self.days

    def support_spend(self, multiple: float) -> np.ndarray:
        """(C,) spend per person at which each channel's mean daily rate is ``multiple`` x :attr:`support_rate`
        (``inf`` where the support is unknown). Rates are linear in spend, so one unit of spend tells."""
        C = len(self.channels)
        if self.support_rate is None:
            return np.full(C, np.inf)
        per_usd = np.diag(np.stack([self.daily_rates(np.eye(C)[j]).mean(0) for j in range(C)]))
        return np.where(per_usd > 0, multiple * np.asarray(self.support_rate, float) / np.where(
            per_usd > 0, per_usd, 1.0), np.inf)

    def channel_conversions(self, spend_per_person, params=None) -> np.ndarray:
        """Expected incremental conversions per person over the campaign, per channel, at constant spend.

        The curves were fitted on each member's realised impressions per day of ``window_days``-day windows,
        so a plan's response is their expectation over the window's Poisson count (exact on a grid; the
        plug-in rate where the count is large enough for its noise not to matter).
        """
        rp = self.response_params(params)
        lam = self.daily_rates(spend_per_person)
        if not self.window_days:
            return self.days * (rp["beta"] * _hill(lam, rp["half"], rp["shape"])).mean(0)
        return self.days * (rp["beta"] * _expected_window_hill(lam, self.window_days, rp["half"],
                                                                rp["shape"])).mean(0)

    def conversions(self, spend_per_person, params=None) -> float:
        """Expected incremental conversions per person over the campaign (steady-state adstock)."""
        return float(self.channel_conversions(spend_per_person, params).sum())

    def reach(self, spend_per_person, k: int = 1, per_channel: bool = False):
        """Share of members with at least ``k`` impressions (Poisson given each member's rate)."""
        lam = self.daily_rates(spend_per_person) * self.days
        if per_channel:
            return stats.poisson.sf(k - 1, lam).mean(0)
        return float(stats.poisson.sf(k - 1, lam.sum(1)).mean())

    def frequency(self, spend_per_person, per_channel: bool = False):
        """Average impressions per reached member (overall or per channel)."""
        lam = self.daily_rates(spend_per_person) * self.days
        if per_channel:
            r = (1 - np.exp(-lam)).mean(0)
            return np.where(r > 0, lam.mean(0) / np.where(r > 0, r, 1), 0.0)
        r = (1 - np.exp(-lam.sum(1))).mean()
        return float(lam.sum(1).mean() / r) if r > 0 else 0.0


def _hill(a, half, shape):
    a = np.maximum(a, 0.0)
    x = np.power(a / half, shape)
    return x / (1.0 + x)


def _hill_slope(a, half, shape):
    """d S / d a of :func:`_hill` (0 at a = 0)."""
    a = np.maximum(a, 0.0)
    x = np.power(a / half, shape)
    return np.where(a > 0, shape * x / np.where(a > 0, a, 1.0) / (1.0 + x) ** 2, 0.0)


#: expected window counts on which the Poisson expectation is tabulated; above the grid the plug-in is used
_MU_GRID = np.r_[0.0, np.geomspace(1e-3, 300.0, 200)]


@lru_cache(maxsize=1)
def _poisson_pmf_table() -> tuple[np.ndarray, np.ndarray]:
    """(counts k, pmf (grid, k)) of Poisson(mu) for every mu of :data:`_MU_GRID`."""
    k = np.arange(int(_MU_GRID[-1] + 12 * np.sqrt(_MU_GRID[-1]) + 40))
    return k, stats.poisson.pmf(k[None, :], _MU_GRID[:, None])


@lru_cache(maxsize=64)
def _window_table(window: int, half: tuple, shape: tuple) -> np.ndarray:
    """(grid, C) E[S(N / window)] at every mean count of :data:`_MU_GRID` (cached: an optimiser calls the
    response thousands of times with the same curves)."""
    k, pmf = _poisson_pmf_table()
    return np.column_stack([pmf @ _hill(k / window, h, s) for h, s in zip(half, shape)])


#: log of the ratio of consecutive points of :data:`_MU_GRID` above 0 (a first guess of a point's segment)
_MU_LOG_STEP = np.log(_MU_GRID[-1] / _MU_GRID[1]) / (len(_MU_GRID) - 2)


def _grid_segment(mu: np.ndarray) -> np.ndarray:
    """Index ``j`` of the grid segment holding each ``mu``: the largest ``j`` with ``_MU_GRID[j] <= mu``,
    clipped to ``[0, len - 2]`` (``searchsorted(_MU_GRID, mu, "right") - 1``, clipped). The grid is
    geometric above 0, so a logarithm guesses ``j`` and one comparison with each neighbour corrects a
    rounding error (a binary search per value was most of the optimiser's time)."""
    G = len(_MU_GRID)
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = np.log(np.maximum(mu, _MU_GRID[1] * 0.5) / _MU_GRID[1]) / _MU_LOG_STEP
    j = np.clip(np.floor(guess) + 1, 0, G - 2).astype(np.intp)
    j[np.isnan(mu)] = 0
    for _ in range(2):                          # a guess is off by at most one; twice for certainty
        j -= (_MU_GRID[j] > mu) & (j > 0)
        j += (_MU_GRID[j + 1] <= mu) & (j < G - 2)
    return j


def _expected_window_hill(daily_rate: np.ndarray, window: int, half, shape, slope: bool = False):
    """E[S(N / window)] for N ~ Poisson(rate x window), per member and channel ((n, C) like ``daily_rate``);
    with ``slope`` also its derivative in the daily rate (that of the interpolation: the optimiser's gradient).

    The interpolation is ``np.interp``'s on the tabulated grid, computed as ``np.interp`` does (segment
    slope times the distance from the segment's left point, plus its value; the table's first and last
    values outside the grid) with the segment found once for value and slope (:func:`_grid_segment`).
    """
    mu = np.asarray(daily_rate, float) * window
    tab = _window_table(int(window), tuple(map(float, half)), tuple(map(float, shape)))
    seg_slope = _table_slopes(tab)
    j = _grid_segment(mu)
    cols = np.arange(mu.shape[1])[None, :]
    out = seg_slope[j, cols] * (mu - _MU_GRID[j]) + tab[j, cols]
    edge = mu >= _MU_GRID[-1]                   # np.interp: the last value at and beyond the last point
    if edge.any():
        out[edge] = tab[-1, np.nonzero(edge)[1]]
    low = mu < _MU_GRID[0]
    if low.any():
        out[low] = tab[0, np.nonzero(low)[1]]
    above = mu > _MU_GRID[-1]
    if above.any():                     # plug-in above the grid (relative noise of the count < 6%)
        acols = np.nonzero(above)[1]
        out[above] = _hill(mu[above] / window, np.asarray(half)[acols], np.asarray(shape)[acols])
    if not slope:
        return out
    # the interpolation's slope on the segment right of mu (the one-sided derivative a step up would see)
    d = window * seg_slope[j, cols]
    if above.any():
        d[above] = _hill_slope(mu[above] / window, np.asarray(half)[acols], np.asarray(shape)[acols])
    return out, d


def _table_slopes(tab: np.ndarray) -> np.ndarray:
    """(grid - 1, C) slope of each segment of a :func:`_window_table` (as ``np.interp`` computes it)."""
    key = id(tab)
    hit = _SLOPES.get(key)
    if hit is not None and hit[0] is tab:
        return hit[1]
    sl = (tab[1:] - tab[:-1]) / (_MU_GRID[1:] - _MU_GRID[:-1])[:, None]
    if len(_SLOPES) > 64:
        _SLOPES.clear()
    _SLOPES[key] = (tab, sl)
    return sl


#: slopes of the cached window tables (keyed by the table object, which :func:`_window_table` caches)
_SLOPES: dict = {}


def _fit_hierarchical(y, r, z, Dw, gidx, target: int = 0, deviation_sd: float = 0.5, _objective=False,
                      n_starts: int = 3, return_groups: bool = False):
    """Penalised Poisson MLE of members' conversions per window on their impressions per day in the window.

    ``y`` (users, W) conversions and ``r`` (users, W, C) realised impressions per day in each of ``W``
    windows of ``Dw`` days: ``E[y_uw] = Dw_w (exp(a_k + a1 z_u) + sum_c beta_c exp(gamma_kc) S_c(r_uwc))``
    with Hill ``S_c`` (half ``H_c``, shape ``kappa_c``) shared by everybody; every group ``k`` (the target
    audience and each other segment of the run) has its own baseline intercept ``a_k`` and its own channel
    effects (``gamma_kc ~ N(0, deviation_sd^2)``: partial pooling, so a small audience borrows strength and
    group differences in baseline conversion are not read as media effects). Windows, not campaign totals:
    spend is flighted, and the response to a flight's rate is not the response to the campaign's average
    rate (Hill is nonlinear), so a curve fitted on averages misjudges the channels whose flights vary most.
    Geometric adstock is folded into ``H`` (steady state within a window). Weak priors: log kappa ~ N(0.3,
    0.5), log H ~ N(log median r, 1.5), log beta ~ N(log(mean y / D) - 1, 3). Analytic gradient, BFGS from
    ``n_starts`` starting half points. Returns the target group's parameters (:class:`ResponseModel`
    layout), their covariance and convergence (and with ``return_groups`` every group's (params, cov), the
    parameters 07c saves for the Explorer).
    """
    U, W, C = r.shape
    Dw = np.asarray(Dw, float)
    K = int(gidx.max()) + 1
    pos_r = r[r > 0]
    h0 = np.log(max(np.median(pos_r) if pos_r.size else 0.1, 1e-3))
    b0 = np.log(max(y.sum() / (U * Dw.sum()), 1e-6))
    # only the exposed (member, window, channel) cells carry a media term: work on those (most are zero).
    # Impressions are counts, so a channel's rates take few distinct values (about 400 over 900k cells at
    # 1M users): the Hill curve is evaluated once per (channel, rate) level, and a cell's media term and
    # gradient weight depend only on its (group, level) key, so the gradient sums the cells' likelihood
    # weights per key (one bincount) instead of per member and channel.
    ui, wi, ci = np.nonzero(r)
    uw = ui * W + wi
    rates, rate_inv = np.unique(r[ui, wi, ci], return_inverse=True)
    lev, lev_inv = np.unique(ci.astype(np.int64) * len(rates) + rate_inv.ravel(), return_inverse=True)
    lev_inv = lev_inv.ravel()
    lev_c, lev_logr = lev // len(rates), np.log(rates[lev % len(rates)])
    L = len(lev)
    keys, cell_key = np.unique(gidx[ui].astype(np.int64) * L + lev_inv, return_inverse=True)
    cell_key = cell_key.ravel()
    key_g, key_l = keys // L, keys % L
    key_c = lev_c[key_l]
    key_gc = key_g * C + key_c
    n_key = len(keys)

    def split(p):
        return p[:K], p[K], p[K + 1:K + 1 + 3 * C].reshape(C, 3), p[K + 1 + 3 * C:].reshape(K, C)

    def f(p):
        a, a1, q, gam = split(p)
        kap = np.exp(q[:, 2])
        t = kap[lev_c] * (lev_logr - q[lev_c, 1])                # kappa log(r / H) per exposure level
        x = np.exp(np.minimum(t, 700.0))
        h = x / (1 + x)
        dh = h / (1 + x)                                       # dh / dt
        Bk = np.exp(q[:, 0][None, :] + gam).ravel()[key_gc]    # the group's channel effect, per key
        BH = Bk * h[key_l]
        base = np.exp(a[gidx] + a1 * z)                        # (U,)
        media = np.bincount(uw, weights=BH[cell_key], minlength=U * W).reshape(U, W)
        mu = np.maximum(Dw * (base[:, None] + media), 1e-12)
        w = Dw * (y / mu - 1.0)                                # d loglik / d (mu / Dw)
        ll = (y * np.log(mu) - mu).sum()
        gb = w.sum(1) * base
        Sk = np.bincount(cell_key, weights=w.ravel()[uw], minlength=n_key)   # likelihood weight per key
        g_a = np.bincount(gidx, weights=gb, minlength=K)
        g_gam = np.bincount(key_gc, weights=Sk * BH, minlength=K * C).reshape(K, C)
        BdW = Sk * Bk * dh[key_l]
        g_logH = -np.bincount(key_c, weights=BdW, minlength=C) * kap
        g_logk = np.bincount(key_c, weights=BdW * t[key_l], minlength=C)
        pr = (((q[:, 0] - (b0 - 1.0)) / 3.0) ** 2 + ((q[:, 1] - h0) / 1.5) ** 2 + ((q[:, 2] - 0.3) / 0.5) ** 2).sum() / 2
        pr += (gam ** 2).sum() / (2 * deviation_sd ** 2)
        gp_q = np.column_stack([(q[:, 0] - (b0 - 1.0)) / 9.0, (q[:, 1] - h0) / 2.25, (q[:, 2] - 0.3) / 0.25])
        grad = np.r_[g_a, (gb * z).sum(), (np.column_stack([g_gam.sum(0), g_logH, g_logk]) - gp_q).ravel(),
                     (g_gam - gam / deviation_sd ** 2).ravel()]
        return -(ll - pr), -grad

    n_par = K + 1 + 3 * C + K * C
    if _objective:
        return f, n_par
    best = None
    for start_h in (h0, h0 - 1.0, h0 + 1.0)[:max(1, n_starts)]:
        p0 = np.zeros(n_par)
        p0[:K] = b0 - 0.3
        p0[K] = 0.5
        p0[K + 1:K + 1 + 3 * C] = np.tile([b0 - 1.0, start_h, 0.3], C)
        with threadpool_limits(1):      # ~100 parameters: BLAS threads cost more than they save (3x CPU)
            res = optimize.minimize(f, p0, jac=True, method="BFGS", options={"maxiter": 5000, "gtol": 1e-5})
        if best is None or res.fun < best.fun:
            best = res
    hinv = np.asarray(best.hess_inv)

    def group(k):
        J = np.zeros((2 + 4 * C, n_par))
        J[0, k] = 1
        J[1, K] = 1
        for c in range(C):
            J[2 + 4 * c, K + 1 + 3 * c] = 1
            J[2 + 4 * c, K + 1 + 3 * C + k * C + c] = 1
            J[3 + 4 * c, K + 2 + 3 * c] = 1
            J[4 + 4 * c, K + 3 + 3 * c] = 1
        params = J @ best.x
        params[5::4] = -30.0                               # decay 0: folded into H
        return params, J @ hinv @ J.T

    params, cov = group(target)
    ok = bool(best.success) or best.status == 2
    if return_groups:
        return params, cov, ok, [group(k) for k in range(K)]
    return params, cov, ok


def exposure_model(md, audience_ids, window_days: int | None = WINDOW_DAYS) -> tuple[ResponseModel, dict]:
    """The cheap half of :func:`fit_response`: CPMs, members' exposure rates, channel index and the data's
    support for an audience, as a :class:`ResponseModel` without response parameters (``params`` None),
    and what the response fit needs next (a dict). The Explorer composes saved curves onto it
    (:func:`model_from_table`)."""
    E = exposures_module()
    channels = list(md.channels)
    C = len(channels)
    spend = md.spend
    dates = pd.DatetimeIndex(sorted(pd.to_datetime(spend["date"]).unique()))
    D = len(dates)
    pivot = lambda col: spend.pivot_table(index="date", columns="channel", values=col, aggfunc="sum").reindex(
        columns=channels).fillna(0.0)
    planned = pivot("planned_spend" if "planned_spend" in spend.columns else "spend")
    planned.index = pd.to_datetime(planned.index)
    planned = planned.reindex(dates).fillna(0.0).to_numpy()
    tot_spend = spend.groupby("channel")["spend"].sum().reindex(channels)
    tot_imps = spend.groupby("channel")["impressions"].sum().reindex(channels)
    cpm = (tot_spend / tot_imps * 1000.0).to_numpy(float)
    targetable = np.array([bool(E.TARGETABLE[E.CHANNELS.index(c)]) if c in E.CHANNELS else True
                           for c in channels])

    # every user of the run, to know the audience's share of each channel's impressions
    cells = exposure_cells(md, window_days)
    all_users = cells.users
    audience = pd.Index(pd.Series(audience_ids).astype(str)).intersection(all_users)
    if len(audience) < 30:
        raise ValueError(f"exposure_model: the audience has {len(audience)} members with media data (need 30+).")
    per_user = cells.per_user()                                               # (users, C)
    in_aud = all_users.isin(audience)
    imp_share = per_user[in_aud].sum(0) / per_user.sum(0).clip(min=1)
    index = pd.Series(100 * imp_share / in_aud.mean(), index=channels)

    elig = _eligibility(md, audience, dates)                                  # (A, D)
    e = elig @ planned                                                        # (A, C) eligible planned USD
    aud_pos = all_users.get_indexer(audience)
    n = per_user[aud_pos]
    theta = np.zeros_like(n)
    shapes = np.zeros(C)
    for j in range(C):
        r, b = _gamma_poisson(n[:, j], e[:, j])
        shapes[j] = r
        theta[:, j] = (n[:, j] + r) / (e[:, j] + b)

    # the support of the data: per channel, the largest impressions per eligible member per day of the
    # audience in one window; a plan beyond a multiple of it extrapolates the fitted curve (see optimise)
    wdays0, wn = cells.window_days, cells.n_windows
    wi_d = np.minimum(np.arange(D) // wdays0, wn - 1)
    elig_days = np.bincount(wi_d, weights=elig.sum(0), minlength=wn)               # member-days per window
    k = in_aud[cells.u]
    imp_w = np.bincount(cells.w[k] * C + cells.c[k], weights=cells.impressions[k], minlength=wn * C).reshape(wn, C)
    support_rate = (imp_w / np.maximum(elig_days, 1.0)[:, None]).max(0)

    model = ResponseModel(channels, audience, D, cpm, targetable, theta, shapes, None, None, index,
                          len(all_users), True, [], window_days=wdays0 if window_days else 0,
                          support_rate=support_rate)
    return model, {"all_users": all_users, "audience": audience, "in_aud": in_aud, "cells": cells,
                   "dates": dates, "D": D}


def fit_response(md, audience_ids, seed: int = 0, max_users: int = 50_000,
                 pooled: bool = True, deviation_sd: float = 0.5, groups: pd.Series | None = None,
                 window_days: int | None = WINDOW_DAYS) -> ResponseModel:
    """Estimate CPMs, member exposure rates and the adstock/saturation response for an audience.

    ``md``: :class:`helpers.media.data.MediaData`. Audiences (and the rest of the run) larger than
    ``max_users`` are subsampled for the response fit (exposure rates use every member); the default keeps
    every member of a 50k run: with 20,000 of the others the 50k default target's budget share ranged
    0.88-0.99 over subsample seeds, with all of them it is 0.969 whatever the seed. ``window_days``: length of the windows whose
    impressions per day the curves are fitted on (``None``: the campaign average, which misjudges flighted
    channels; kept for comparison).
    """
    base, ctx = exposure_model(md, audience_ids, window_days)
    all_users, audience, in_aud, cells = ctx["all_users"], ctx["audience"], ctx["in_aud"], ctx["cells"]
    # member-level data for the response fit: conversions and impressions per day in each window of
    # window_days days, of the audience and (partial pooling) of everyone else in the run, each subsampled
    # to max_users
    rng = np.random.default_rng(seed)
    others = all_users[~in_aud]
    pick = lambda ix: ix if len(ix) <= max_users else ix[np.sort(rng.choice(len(ix), max_users, replace=False))]
    pos = pd.Index(pick(audience)).append(pd.Index(pick(others)))
    g = pos.isin(audience)
    Dw = cells.days_per_window                                                 # days per window
    rows = all_users.get_indexer(pos)
    r = cells.impressions_by_window(rows) / Dw[None, :, None]                  # impressions per day
    y = cells.conversions_by_window(rows)
    prior_conv = np.zeros(len(pos))
    if getattr(md, "users", None) is not None and "monthly_conversions" in md.users.columns:
        mc = pd.to_numeric(md.users.set_index(md.users["user_id"].astype(str))["monthly_conversions"],
                           errors="coerce")
        # the fill value: the median over every customer (``md.cache`` holds it when ``md.users`` keeps only the
        # media data's users, see helpers.media.stage.prepare)
        prior_conv = mc.reindex(pos).fillna(md.cache.get("monthly_conversions_median", mc.median())
                                            if isinstance(getattr(md, "cache", None), dict) else mc.median()).to_numpy(float)
    z = np.log1p(prior_conv) - np.log1p(prior_conv).mean()
    if not pooled:                      # one group: the audience's curves are the run's
        codes, target = np.zeros(len(pos), dtype=int), 0
    else:
        if groups is not None:
            lab = pd.Series(groups).astype(str)
            lab.index = lab.index.astype(str)
            lab = lab.reindex(pos).fillna("(no segment)").to_numpy()
        else:
            lab = np.full(len(pos), "(everyone else)", dtype=object)
        lab = np.where(g, "(target audience)", lab)
        codes, uniq = pd.factorize(lab, sort=False)
        target = int(np.flatnonzero(uniq == "(target audience)")[0])
    params, cov, ok, per_group = _fit_hierarchical(y, r, z, Dw, codes, target, deviation_sd, return_groups=True)
    base.params, base.cov, base.converged = params, cov, ok
    base.notes = [] if ok else ["the response fit did not fully converge; treat its intervals with care"]
    labels = uniq if pooled else np.array(["(everyone)"], dtype=object)
    base.group_params = {str(labels[k]): per_group[k] for k in range(len(per_group))}
    return base


#: columns of the saved response model (07c's ``media_response_model`` artifact), one row per group x channel
RESPONSE_TABLE_COLUMNS = ("group", "channel", "baseline", "baseline_z", "beta", "half", "shape",
                          "sd_log_beta", "sd_log_half", "sd_log_shape", "window_days")


def response_table(model: ResponseModel, target_name: str) -> pd.DataFrame:
    """Every group's fitted curves as a table (:data:`RESPONSE_TABLE_COLUMNS`), the target audience named
    ``target_name``: what 07c saves so that the Explorer plans without fitting."""
    if model.group_params is None:
        raise ValueError("response_table: the model has no per-group parameters (fit it with fit_response)")
    rows = []
    for label, (p, cov) in model.group_params.items():
        rp = model.response_params(p)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        for j, c in enumerate(model.channels):
            rows.append({"group": target_name if label == "(target audience)" else label, "channel": c,
                         "baseline": p[0], "baseline_z": p[1], "beta": rp["beta"][j], "half": rp["half"][j],
                         "shape": rp["shape"][j], "sd_log_beta": sd[2 + 4 * j], "sd_log_half": sd[3 + 4 * j],
                         "sd_log_shape": sd[4 + 4 * j], "window_days": model.window_days})
    return pd.DataFrame(rows, columns=list(RESPONSE_TABLE_COLUMNS))


def model_from_table(md, audience_ids, table: pd.DataFrame, groups: pd.Series) -> ResponseModel:
    """A :class:`ResponseModel` for any audience without fitting: its exposure side from the data
    (:func:`exposure_model`), its curves composed from the saved groups' (``table``, see
    :func:`response_table`) by the audience's mix of ``groups`` (group label by user_id): effects ``beta``
    and baseline rates are the mix's weighted means (the response is linear in them), half points and
    shapes the weighted geometric means (identical across groups up to the fit's target: they are shared);
    the covariance is diagonal, each log-parameter's sd the weighted mean of the groups' (an audience
    that is one group gets that group's curves exactly, with its marginal sds). Members whose group is not
    in the table count as the table's "(no segment)" group if there is one, else are left out of the mix.
    """
    missing = [c for c in RESPONSE_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"model_from_table: the saved response model lacks columns {missing}; re-run "
                         "07c_media_planning")
    wd = int(table["window_days"].iloc[0])
    model, _ = exposure_model(md, audience_ids, wd if wd else None)
    lab = pd.Series(groups).astype(str)
    lab.index = lab.index.astype(str)
    known = set(table["group"].astype(str))
    mix = lab.reindex(model.users).fillna("(no segment)")
    mix = mix.where(mix.isin(known), "(no segment)")
    w = mix[mix.isin(known)].value_counts(normalize=True)
    if w.empty:
        raise ValueError("model_from_table: no member of the audience belongs to a group of the saved "
                         "response model; re-run 07c_media_planning on this run")
    t = table.assign(group=table["group"].astype(str))
    t = t[t["group"].isin(w.index)].assign(w=lambda d: d["group"].map(w))
    wsum = lambda v: (t["w"] * v).groupby(t["channel"]).sum().reindex(model.channels)
    wmean = lambda col: wsum(t[col])
    glog = lambda col: np.exp(wsum(np.log(t[col])))
    if wmean("beta").isna().any():
        raise ValueError("model_from_table: the saved response model does not cover channels "
                         f"{list(wmean('beta')[wmean('beta').isna()].index)}; re-run 07c_media_planning")
    one = t.drop_duplicates("group").set_index("group")
    C = len(model.channels)
    p = np.empty(2 + 4 * C)
    p[0] = np.log((w * np.exp(one.loc[w.index, "baseline"])).sum())
    p[1] = float((w * one.loc[w.index, "baseline_z"]).sum())
    q = np.column_stack([np.log(wmean("beta")), np.log(glog("half")), np.log(glog("shape")), np.full(C, -30.0)])
    p[2:] = q.ravel()
    sd = np.zeros(2 + 4 * C)
    sd[2::4], sd[3::4], sd[4::4] = wmean("sd_log_beta"), wmean("sd_log_half"), wmean("sd_log_shape")
    model.params, model.cov = p, np.diag(sd ** 2)
    parts = "one segment" if len(w) == 1 else f"a mix of {len(w)} segments"
    model.notes = [f"Response curves come from the media planning stage's saved model, for {parts} (the "
                   "audience's segment mix)."]
    return model


# --- constraints and optimisation ----------------------------------------------------------------
@dataclass
class Allocation:
    spend_per_person: np.ndarray
    objective: str
    value: float                       # objective per person (conversions) or share reached
    marginal: np.ndarray               # d value / d USD per person, per channel, at the solution
    feasible: bool
    violations: list
    starts: int
    method: str
    bounds: np.ndarray
    support_multiple: float | None = None   # the guard used (raised above the request when the budget needed it)
    support_cap: np.ndarray | None = None   # (C,) spend per person allowed by the guard (inf: no guard)

    def shares(self) -> np.ndarray:
        s = self.spend_per_person.sum()
        return self.spend_per_person / s if s > 0 else self.spend_per_person


class _Objective:
    """A model's objective (conversions or reach at ``k``+) and overall frequency, with their gradients in
    spend per person: members' rates are linear in spend, so their rates per USD are computed once, and the
    optimiser gets exact gradients instead of one more response evaluation per channel (finite differences)."""

    def __init__(self, model: ResponseModel, objective: str, k: int):
        if objective not in ("conversions", "reach"):
            raise ValueError(f"objective must be 'conversions' or 'reach', got {objective!r}")
        self.model, self.objective, self.k = model, objective, int(k)
        self.per_usd = model.daily_rates(np.ones(len(model.channels)))      # (users, C) daily rate per USD
        rp = model.response_params()
        self.beta, self.half, self.shape = rp["beta"], rp["half"], rp["shape"]

    def __call__(self, x) -> float:
        return self.value_grad(x)[0]

    def value_grad(self, x) -> tuple[float, np.ndarray]:
        m, A = self.model, self.per_usd
        lam = A * np.asarray(x, float)
        if self.objective == "reach":
            total = lam.sum(1) * m.days
            v = float(stats.poisson.sf(self.k - 1, total).mean())
            return v, m.days * (stats.poisson.pmf(self.k - 1, total) @ A) / len(A)
        if m.window_days:
            s, ds = _expected_window_hill(lam, m.window_days, self.half, self.shape, slope=True)
        else:
            s, ds = _hill(lam, self.half, self.shape), _hill_slope(lam, self.half, self.shape)
        v = float(m.days * (self.beta * s).mean(0).sum())
        return v, m.days * self.beta * (ds * A).mean(0)

    def frequency_grad(self, x) -> tuple[float, np.ndarray]:
        """Average impressions per reached member (:meth:`ResponseModel.frequency`) and its gradient."""
        A = self.per_usd * self.model.days
        L = A @ np.asarray(x, float)
        e = np.exp(-L)
        M, R = L.mean(), 1.0 - e.mean()
        if R <= 0:
            return 0.0, np.zeros(A.shape[1])
        return float(M / R), A.mean(0) / R - M * (e @ A) / len(A) / R ** 2


def _cap_bound(model: ResponseModel, j: int, cap: float, budget: float) -> float:
    """Largest spend per person on channel j whose frequency among reached stays <= cap (bisection)."""
    def f(v):
        x = np.zeros(len(model.channels))
        x[j] = v
        return model.frequency(x, per_channel=True)[j]
    if f(budget) <= cap:
        return budget
    lo, hi = 0.0, budget
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) <= cap else (lo, mid)
    return lo


def _linear(constraints, channels, budget, n):
    out = []
    for c in constraints or []:
        a = np.array([float(c["coef"].get(ch, 0.0)) for ch in channels])
        unit = c.get("unit", "share")
        scale = 1.0 / budget if unit == "share" else float(n)
        out.append((a * scale, c["op"], float(c["rhs"]), c))
    return out


def check_constraints(x, budget, bounds, linear, model=None, overall_cap=None, tol=1e-6) -> list[str]:
    """Every violated constraint at ``x`` as a sentence (empty when all hold)."""
    bad = []
    if abs(x.sum() - budget) > tol * max(1, budget) * 10:
        bad.append(f"budget: spend {x.sum():.6f} != {budget:.6f} per person")
    for j, (lo, hi) in enumerate(bounds):
        if x[j] < lo - tol or x[j] > hi + tol:
            bad.append(f"bounds of channel {j}: {x[j]:.6f} not in [{lo:.6f}, {hi:.6f}]")
    for a, op, rhs, raw in linear:
        v = a @ x
        if (op == "<=" and v > rhs + tol) or (op == ">=" and v < rhs - tol) or (op == "==" and abs(v - rhs) > tol):
            bad.append(f"linear constraint {raw}: value {v:.6f}")
    if overall_cap is not None and model is not None and model.frequency(x) > overall_cap + 1e-4:
        bad.append(f"overall frequency cap {overall_cap}: {model.frequency(x):.4f}")
    return bad


def optimise(model: ResponseModel, budget_per_person: float, objective: str = "conversions",
             effective_frequency: int = 1, min_spend: dict | None = None, max_spend: dict | None = None,
             frequency_cap: dict | float | None = None, linear_constraints: list | None = None,
             n_starts: int = 8, seed: int = 0,
             support_multiple: float | None = SUPPORT_MULTIPLE) -> Allocation:
    """Best allocation of ``budget_per_person`` (USD per audience member over the campaign).

    ``min_spend``/``max_spend``: {channel: USD for the whole audience}; ``frequency_cap``: a number (the
    average frequency among reached, all channels) or {channel: cap} (per channel). ``support_multiple``:
    each channel's spend is capped where its mean daily rate reaches this multiple of the largest weekly
    rate seen in the data (:meth:`ResponseModel.support_spend`; ``None`` turns the guard off); when the caps
    together cannot hold the budget the multiple is raised to the smallest that can (``Allocation``
    records the one used).
    """
    ch = model.channels
    C, B, n = len(ch), float(budget_per_person), model.n
    lo = np.array([float((min_spend or {}).get(c, 0.0)) / n for c in ch])
    hi = np.array([float((max_spend or {}).get(c, np.inf)) / n for c in ch])
    hi = np.minimum(hi, B)
    cap, used = np.full(C, np.inf), None
    if support_multiple is not None and model.support_rate is not None:
        # the guard never cuts below a minimum spend the user asked for
        ceiling = lambda m: np.maximum(np.minimum(hi, model.support_spend(m)), lo)
        used = float(support_multiple)
        if ceiling(used).sum() < B:                 # budget beyond the support: widen it just enough
            a, b = used, used * 2
            while ceiling(b).sum() < B and b < 1e6:
                a, b = b, b * 2
            for _ in range(40):
                a, b = (a, (a + b) / 2) if ceiling((a + b) / 2).sum() >= B else ((a + b) / 2, b)
            used = b
        cap = model.support_spend(used)
        hi = ceiling(used)
    overall_cap = frequency_cap if isinstance(frequency_cap, (int, float)) else None
    if isinstance(frequency_cap, dict):
        for j, c in enumerate(ch):
            if c in frequency_cap:
                hi[j] = min(hi[j], _cap_bound(model, j, float(frequency_cap[c]), B))
    if (lo > hi + 1e-12).any() or lo.sum() > B + 1e-9 or hi.sum() < B - 1e-9:
        raise ValueError("optimise: the constraints cannot all hold: minimum spends add to "
                         f"{lo.sum() * n:.2f} USD, maximum spends (after frequency caps) to {hi.sum() * n:.2f} "
                         f"USD, budget {B * n:.2f} USD. Loosen a bound or change the budget.")
    bounds = np.c_[lo, hi]
    lin = _linear(linear_constraints, ch, B, n)
    obj = _Objective(model, objective, effective_frequency)
    f = lambda x: obj(x)
    scale = max(abs(f(np.full(C, B / C))), 1e-9)

    def fun(x):
        v, g = obj.value_grad(x)
        return -v / scale, -g / scale

    cons = [{"type": "eq", "fun": lambda x: (x.sum() - B) / B, "jac": lambda x: np.full(C, 1.0 / B)}]
    for a, op, rhs, _ in lin:
        if op == "<=":
            cons.append({"type": "ineq", "fun": lambda x, a=a, r=rhs: r - a @ x, "jac": lambda x, a=a: -a})
        elif op == ">=":
            cons.append({"type": "ineq", "fun": lambda x, a=a, r=rhs: a @ x - r, "jac": lambda x, a=a: a})
        else:
            cons.append({"type": "eq", "fun": lambda x, a=a, r=rhs: a @ x - r, "jac": lambda x, a=a: a})
    if overall_cap is not None:
        cons.append({"type": "ineq", "fun": lambda x: overall_cap - obj.frequency_grad(x)[0],
                     "jac": lambda x: -obj.frequency_grad(x)[1]})

    rng = np.random.default_rng(seed)
    starts = [np.full(C, B / C), affinity_rule(model, B, bounds)]
    starts += [rng.dirichlet(np.ones(C)) * B for _ in range(max(0, n_starts - 2))]
    best, best_x, method = None, None, "SLSQP"
    with threadpool_limits(1):          # 6 variables: BLAS threads only wait on each other
        for x0 in starts:
            x0 = np.clip(x0, lo, hi)
            r = optimize.minimize(fun, x0, jac=True, method="SLSQP", bounds=list(map(tuple, bounds)),
                                  constraints=cons, options={"maxiter": 300, "ftol": 1e-10})
            x = np.clip(r.x, lo, hi)
            if not check_constraints(x, B, bounds, lin, model, overall_cap, tol=1e-5) and (
                    best is None or fun(x)[0] < best):
                best, best_x = fun(x)[0], x
        if best_x is None:   # fallback
            method = "trust-constr"
            nl = [optimize.NonlinearConstraint(c["fun"], 0, 0 if c["type"] == "eq" else np.inf, jac=c["jac"])
                  for c in cons]
            r = optimize.minimize(fun, np.clip(starts[0], lo, hi), jac=True, method="trust-constr",
                                  bounds=optimize.Bounds(lo, hi), constraints=nl, options={"maxiter": 2000})
            best_x = np.clip(r.x, lo, hi)
    viol = check_constraints(best_x, B, bounds, lin, model, overall_cap, tol=1e-5)
    eps = 1e-4 * max(B, 1e-3)
    marg = np.array([(f(best_x + eps * np.eye(C)[j]) - f(best_x)) / eps for j in range(C)])
    return Allocation(best_x, objective, f(best_x), marg, not viol, viol, len(starts), method, bounds,
                      used, cap)


def affinity_rule(model: ResponseModel, budget_per_person: float, bounds=None) -> np.ndarray:
    """Rule of thumb: spend in proportion to the audience's channel index above 100 (all if none is)."""
    idx = model.index.to_numpy(float)
    w = np.where(idx > 100, idx, 0.0)
    if w.sum() == 0:
        w = idx.clip(min=0) + 1e-9
    x = w / w.sum() * budget_per_person
    if bounds is not None:
        x = _project(x, np.asarray(bounds)[:, 0], np.asarray(bounds)[:, 1], budget_per_person)
    return x


def _project(x, lo, hi, B):
    """Clip to bounds while keeping the total (water-filling on a shift)."""
    f = lambda s: np.clip(x + s, lo, hi).sum() - B
    a, b = -B - x.max(), B + 1
    if f(a) > 0 or f(b) < 0:
        return np.clip(x, lo, hi)
    return np.clip(x + optimize.brentq(f, a, b), lo, hi)


def share_of_planted_optimum(x, users_truth: pd.DataFrame, budget_per_person: float, days: int,
                             objective: str = "conversions", k: int = 1, lower=None, upper=None,
                             channels=None, optimum=None) -> dict:
    """Planted value of ``x`` over the planted optimum (same audience, budget and bounds). ``optimum``: the
    planted optimum of an earlier call for the same audience, budget and objective (its ``"optimum"``), to
    score several allocations against one optimisation of the truth."""
    E = exposures_module()
    x = np.asarray(x, float)
    if channels is not None and list(channels) != E.CHANNELS:
        x = pd.Series(x, index=channels).reindex(E.CHANNELS).fillna(0.0).to_numpy()
    if optimum is None:
        with threadpool_limits(1):      # SLSQP on 6 variables: BLAS threads only wait on each other
            opt = planted_optimum(users_truth, budget_per_person, days, objective, k, lower, upper)
    else:
        opt = np.asarray(optimum, float)
    v, v_opt = (E.true_outcome(x, users_truth, days, objective, k),
                E.true_outcome(opt, users_truth, days, objective, k))
    return {"share": v / v_opt if v_opt > 0 else np.nan, "value": v, "optimum_value": v_opt,
            "optimum": opt}


# --- the planted optimum with analytic gradients ------------------------------------------------------------
class _PlantedObjective:
    """``-true_outcome(x) / budget`` of :mod:`helpers.sources.exposures` and its exact gradient, for SLSQP.

    The planted daily rates are linear in the spend, ``lam_uc = x_c A_uc`` (:func:`~helpers.sources.exposures.
    _rates_for`), so ``A`` is computed once. Conversions: ``days * mean_u sum_c beta_{s(u)c} S_c(x_c A_uc)``
    with ``S_c`` the planted steady-state response, piecewise linear on its lambda grid; its derivative in
    ``x_c`` is ``days * mean_u beta_{s(u)c} A_uc S_c'(x_c A_uc)`` with ``S_c'`` the slope of the grid
    segment holding the rate (the right derivative at a grid point, as a forward difference sees it; 0
    beyond the grid, where the table is flat). Reach at frequency k: ``mean_u P(N_u >= k)``, ``N_u`` Poisson of
    mean ``mu_u = days * sum_c x_c A_uc``, derivative ``days * mean_u P(N_u = k - 1) A_uc``. One call returns
    value and gradient (the finite differences SLSQP takes without a gradient cost C + 1 evaluations).
    """

    def __init__(self, users_truth, days: int, objective: str, effective_frequency: int, budget: float):
        E = exposures_module()
        aud = E._audience(users_truth)
        r = np.asarray(aud.rates, float)
        n = len(r)
        A = np.where(E.TARGETABLE, r / r.sum(0) * (1000.0 / E.CPM) * n, r * n) / days
        self.AT = np.ascontiguousarray(A.T)                               # (C, n): one channel's rates contiguous
        self.n, self.days, self.objective, self.k, self.B = n, days, objective, int(effective_frequency), float(budget)
        if objective != "reach":
            self.betaT = np.ascontiguousarray(E.BETA[aud.seg].T)         # (C, n)
            self.bA = self.betaT * self.AT
            self.grid = E._LAMBDA_GRID
            self.tab = E._expected_hill_table()
            # slope of each grid segment; 0 from the last grid point on (np.interp is flat there)
            self.slope = np.hstack([np.diff(self.tab, axis=1) / np.diff(self.grid)[None, :],
                                    np.zeros((len(self.tab), 1))])
            # the grid is 0 then geometric: a rate's segment follows from its log (a binary search on random
            # rates, np.searchsorted / np.interp, costs ~15x more), corrected by one step either way below
            g = self.grid[1:]
            self.log_g0, self.log_q = np.log(g[0]), np.log(g[1] / g[0])
            self.geometric = self.grid[0] == 0 and g.size > 2 and np.allclose(np.diff(np.log(g)), self.log_q)

    def _segment(self, lam: np.ndarray) -> np.ndarray:
        """Index ``i`` of the grid segment holding each rate: ``grid[i] <= lam < grid[i + 1]`` (last: beyond)."""
        G = len(self.grid)
        if not self.geometric:
            return np.searchsorted(self.grid, lam, side="right") - 1
        with np.errstate(divide="ignore"):
            f = np.floor((np.log(lam) - self.log_g0) / self.log_q) + 1
        i = np.clip(np.nan_to_num(f, nan=0.0, neginf=0.0, posinf=G - 1), 0, G - 1).astype(np.intp)
        i -= self.grid[i] > lam
        j = np.minimum(i + 1, G - 1)
        i += (i < G - 1) & (self.grid[j] <= lam)
        return i

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        # dot products by einsum, not BLAS: a 1-D BLAS call on threads costs more than it computes here
        x = np.asarray(x, float)
        C, n = self.AT.shape
        if self.objective == "reach":
            mu = self.days * np.einsum("c,cn->n", x, self.AT)
            val = special.pdtrc(self.k - 1, mu).mean()
            pmf = np.exp(special.xlogy(self.k - 1, mu) - mu - special.gammaln(self.k))
            grad = self.days * np.einsum("n,cn->c", pmf, self.AT) / n
        else:
            val, grad = 0.0, np.zeros(C)
            for c in range(C):
                lam = np.maximum(x[c] * self.AT[c], 0.0)
                i = self._segment(lam)                                   # grid[i] <= lam < grid[i + 1]
                d = self.slope[c][i]
                s = self.tab[c][i] + d * (lam - self.grid[i])           # np.interp's value
                val += np.einsum("n,n->", self.betaT[c], s)
                grad[c] = np.einsum("n,n->", self.bA[c], d)
            val, grad = self.days * val / n, self.days * grad / n
        return -float(val) / self.B, -grad / self.B


def planted_optimum(users_truth, budget_per_person: float, days: int, objective: str = "conversions",
                    effective_frequency: int = 1, lower=None, upper=None, seed: int = 0) -> np.ndarray:
    """:func:`helpers.sources.exposures.planted_optimum` (same starts, solver, tolerance and constraints) with
    the analytic gradient of :class:`_PlantedObjective` instead of SLSQP's finite differences."""
    E = exposures_module()
    C = E.C
    lo = np.zeros(C) if lower is None else np.asarray(lower, float)
    hi = np.full(C, budget_per_person) if upper is None else np.asarray(upper, float)
    f = _PlantedObjective(users_truth, days, objective, effective_frequency, budget_per_person)
    cons = [{"type": "eq", "fun": lambda x: x.sum() / budget_per_person - 1.0,
             "jac": lambda x: np.full(C, 1.0 / budget_per_person)}]
    rng = np.random.default_rng(seed)
    best = None
    for s in range(6):
        x0 = np.full(C, budget_per_person / C) if s == 0 else rng.dirichlet(np.ones(C)) * budget_per_person
        x0 = np.clip(x0, lo, hi)
        r = optimize.minimize(f, x0, jac=True, method="SLSQP", bounds=list(zip(lo, hi)), constraints=cons,
                              options={"maxiter": 300, "ftol": 1e-10})
        if best is None or r.fun < best.fun:
            best = r
    return np.clip(best.x, lo, hi)
