"""Discrete-time Markov chains of monthly engagement states, estimated from the monthly waves.

* Transition counts are aggregated on the engine with Ibis (:mod:`helpers.dynamics.tables`: lagged state per
  customer over consecutive months), so the same code runs on DuckDB or Spark at 1M customers x 24 months;
  only per-segment totals and the per-customer counts of a seeded bootstrap sample come back to Python.
* Per-segment matrices use the raking weights (normalised to mean 1, so counts stay on the sample scale) and
  Dirichlet shrinkage toward the pooled matrix, the prior strength chosen per origin state by empirical Bayes
  (Dirichlet-multinomial marginal likelihood across segments).
* Intervals: percentile bootstrap over customers (a customer's whole path is resampled, not single
  transitions, so dependence within a path is respected); above the sample size of
  :func:`~helpers.dynamics.tables.chain_counts` it runs on a seeded sample and its spread is rescaled to the
  full number of customers.
* Absorbing churn: fundamental matrix N = (I - Q)^-1, expected months to churn N 1, absorption
  probabilities N R (Kemeny & Snell; R ``markovchain``'s ``fundamentalMatrix``/``meanAbsorptionTime``/
  ``absorptionProbabilities``).
* Likelihood-ratio tests of stationarity across waves (Anderson & Goodman 1957) and of first- against
  second-order dependence, on unweighted counts.
* Implied survival curve against Kaplan-Meier on the same customers, and Pfeifer & Carraway (2000) customer
  value by state with spend per month as the reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import gammaln

from .tables import (STATES, ChainCounts, chain_counts, customer_summary, customer_transition_counts,  # noqa: F401
                     entry_states, label_confusion, last_states, release, restrict, reward_table,
                     transitions)


# ----------------------------------------------------------------------------------------------------------
# absorbing-chain algebra
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Absorbing:
    """Fundamental-matrix results of an absorbing chain."""

    transient: list
    absorbing: list
    fundamental: np.ndarray            # N = (I - Q)^-1 (expected visits to j starting from i)
    expected_steps: np.ndarray         # N 1: expected steps to absorption from each transient state
    absorption_probabilities: np.ndarray  # N R: P(absorbed in each absorbing state)

    def table(self) -> pd.DataFrame:
        t = pd.DataFrame(self.absorption_probabilities, index=self.transient,
                         columns=[f"P(absorbed in {a})" for a in self.absorbing])
        t.insert(0, "expected_steps_to_absorption", self.expected_steps)
        t.index.name = "from"
        return t


def absorbing_analysis(P: np.ndarray, absorbing: Sequence[int] | None = None, states: Sequence | None = None
                       ) -> Absorbing:
    """Fundamental matrix, expected steps to absorption and absorption probabilities of transition matrix
    ``P``; ``absorbing`` are the indices of absorbing states (default: rows with P[i, i] == 1)."""
    P = np.asarray(P, float)
    k = P.shape[0]
    if P.shape != (k, k) or np.any(P < -1e-12) or not np.allclose(P.sum(axis=1), 1, atol=1e-8):
        raise ValueError("P must be a square matrix of probabilities whose rows sum to 1")
    states = list(range(k)) if states is None else list(states)
    ab = [i for i in range(k) if np.isclose(P[i, i], 1.0)] if absorbing is None else list(absorbing)
    if not ab:
        raise ValueError("the chain has no absorbing state (no row with P[i, i] == 1)")
    tr = [i for i in range(k) if i not in ab]
    Q = P[np.ix_(tr, tr)]; R = P[np.ix_(tr, ab)]
    N = np.linalg.inv(np.eye(len(tr)) - Q)
    return Absorbing([states[i] for i in tr], [states[i] for i in ab], N, N.sum(axis=1), N @ R)


def implied_survival(P: np.ndarray, start: np.ndarray, months: int, churned: int = -1) -> np.ndarray:
    """S(k) = P(not yet churned after k steps), k = 0..months, from starting distribution ``start``."""
    P = np.asarray(P, float); v = np.asarray(start, float) / np.sum(start)
    out = np.empty(months + 1)
    for k in range(months + 1):
        out[k] = 1 - v[churned]
        v = v @ P
    return out


def pfeifer_carraway(P: np.ndarray, reward: np.ndarray, discount: float = 0.01, horizon: int | None = None
                     ) -> np.ndarray:
    """Expected discounted value by starting state: sum_{t=0}^{H} (1+d)^-t P^t R (Pfeifer & Carraway 2000);
    ``horizon=None`` is the infinite-horizon value (I - P/(1+d))^-1 R (needs discount > 0 or absorption into
    a zero-reward state)."""
    P = np.asarray(P, float); R = np.asarray(reward, float)
    if horizon is None:
        ab = np.isclose(np.diag(P), 1.0)
        if discount <= 0 and np.any(R[ab] != 0):
            raise ValueError("infinite-horizon value without discounting is infinite when an absorbing state "
                             "earns a reward: pass discount > 0 or a finite horizon")
        v = np.zeros(len(R))
        tr = ~ab
        v[ab] = R[ab] * (1 + discount) / discount if discount > 0 else 0.0
        rhs = R[tr] + (P[np.ix_(tr, ab)] @ v[ab]) / (1 + discount)
        v[tr] = np.linalg.solve(np.eye(int(tr.sum())) - P[np.ix_(tr, tr)] / (1 + discount), rhs)
        return v
    v = np.zeros(len(R)); Pt = np.eye(len(R))
    for t in range(horizon + 1):
        v += (Pt @ R) / (1 + discount) ** t
        Pt = Pt @ P
    return v


# ----------------------------------------------------------------------------------------------------------
# estimation
# ----------------------------------------------------------------------------------------------------------
def _dirmult_loglik(counts: np.ndarray, alpha: np.ndarray) -> float:
    """Dirichlet-multinomial log marginal likelihood (up to the multinomial coefficient), rows = groups."""
    a0 = alpha.sum()
    n = counts.sum(axis=1)
    return float(np.sum(gammaln(a0) - gammaln(a0 + n)) + np.sum(gammaln(alpha + counts) - gammaln(alpha)))


def choose_kappa(seg_counts: np.ndarray, pooled_row: np.ndarray, bounds=(1e-2, 1e6)) -> float:
    """Empirical-Bayes prior strength of one origin state: maximise the Dirichlet-multinomial marginal
    likelihood of the segments' counts under Dirichlet(kappa * pooled_row)."""
    keep = pooled_row > 0
    if keep.sum() < 2 or seg_counts.shape[0] < 2:
        return 0.0
    c = seg_counts[:, keep]; p = pooled_row[keep]
    f = lambda lk: -_dirmult_loglik(c, np.exp(lk) * p)  # noqa: E731
    r = optimize.minimize_scalar(f, bounds=np.log(bounds), method="bounded")
    return float(np.exp(r.x))


def _normalise(C: np.ndarray) -> np.ndarray:
    s = C.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = np.where(s > 0, C / np.where(s > 0, s, 1), 0.0)
    return P


def _fix_absorbing(P: np.ndarray, absorbing: Sequence[int]) -> np.ndarray:
    P = P.copy()
    for a in absorbing:
        P[..., a, :] = 0.0; P[..., a, a] = 1.0
    return P


@dataclass
class MarkovFit:
    """A fitted set of per-segment chains. Matrices are indexed ``[segment, from, to]`` in ``segments`` order."""

    states: list
    segments: list
    counts: np.ndarray          # weighted counts per segment
    pooled: np.ndarray          # pooled (all-segment) transition matrix
    P: np.ndarray               # shrunk per-segment matrices
    kappa: np.ndarray           # prior strength per origin state
    boot: np.ndarray | None = None  # (B, segments, from, to)
    level: float = 0.95
    absorbing: list = field(default_factory=list)
    n_customers: dict = field(default_factory=dict)
    #: with a bootstrap sample (:class:`ChainCounts` ``sampled``): the sample's own estimate (its distance to
    #: ``P`` is the sample's sampling error) and its customers per segment
    P_sample: np.ndarray | None = None
    boot_customers: dict | None = None

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        if self.boot is None:
            raise RuntimeError("no bootstrap replicates: fit with n_boot > 0")
        a = (1 - self.level) / 2
        return np.quantile(self.boot, a, axis=0), np.quantile(self.boot, 1 - a, axis=0)

    def matrix(self, segment=None) -> pd.DataFrame:
        """One segment's matrix (``None``: the pooled one) as a labelled frame."""
        M = self.pooled if segment is None else self.P[self.segments.index(segment)]
        return pd.DataFrame(M, index=pd.Index(self.states, name="from"), columns=pd.Index(self.states, name="to"))

    def tidy(self) -> pd.DataFrame:
        """Long table: segment, from, to, probability, ci_low, ci_high, weighted_count."""
        lo, hi = self.interval() if self.boot is not None else (self.P * np.nan, self.P * np.nan)
        rows = []
        for g, s in enumerate(self.segments):
            for i, a in enumerate(self.states):
                for j, b in enumerate(self.states):
                    rows.append((s, a, b, self.P[g, i, j], lo[g, i, j], hi[g, i, j], self.counts[g, i, j]))
        return pd.DataFrame(rows, columns=["segment", "from", "to", "probability", "ci_low", "ci_high",
                                           "weighted_count"])

    def closings(self) -> pd.DataFrame:
        """Per segment: weighted transitions from a transient into an absorbing state (``closings``, e.g.
        accounts closed) and the transitions out of transient states (``exposure``). A segment without closings
        has an absorption time set by the shrinkage prior alone (pseudo-counts against millions of observed
        months: an expected time to churn of millions of months), not by any churn it showed."""
        tr = [i for i in range(len(self.states)) if i not in self.absorbing]
        into = self.counts[:, tr][:, :, self.absorbing].sum(axis=(1, 2))
        return pd.DataFrame({"segment": self.segments, "closings": into,
                             "exposure": self.counts[:, tr].sum(axis=(1, 2))})

    def absorption(self) -> pd.DataFrame:
        """Expected months to churn from each transient state, per segment, with bootstrap intervals."""
        rows = []
        a = (1 - self.level) / 2
        for g, s in enumerate(self.segments):
            res = absorbing_analysis(self.P[g], self.absorbing, self.states)
            bt = (np.array([absorbing_analysis(B[g], self.absorbing).expected_steps for B in self.boot])
                  if self.boot is not None else None)
            for k, st in enumerate(res.transient):
                rows.append({"segment": s, "from": st, "expected_months_to_churn": res.expected_steps[k],
                             "ci_low": np.quantile(bt[:, k], a) if bt is not None else np.nan,
                             "ci_high": np.quantile(bt[:, k], 1 - a) if bt is not None else np.nan})
        return pd.DataFrame(rows)


def fit_chains(counts: pd.DataFrame | ChainCounts, segment: pd.Series | None = None,
               weight: pd.Series | None = None, *, customer: str = "user_id", states: Sequence[str] = STATES,
               absorbing: Sequence[str] = ("churned",), shrink: bool = True, n_boot: int = 200,
               level: float = 0.95, seed: int = 0) -> MarkovFit:
    """Fit per-segment chains from per-customer counts (:func:`customer_transition_counts` output with
    ``segment``/``weight``, or :func:`~helpers.dynamics.tables.chain_counts` output, which carries both).

    ``segment``/``weight`` are Series indexed by customer id (missing segment -> customer dropped; missing
    weight -> 1). Weights are normalised to mean 1 over the customers used. Bootstrap: ``n_boot`` resamples
    of customers within each segment (multinomial multiplicities), shrinkage strength fixed at its full-data
    value, percentile ``level`` intervals.

    When the :class:`ChainCounts` hold a sample (more customers than its ``sample``), the estimate and the
    shrinkage use the totals over every customer; the bootstrap resamples the sample (its counts scaled to the
    segment's total) and each replicate's deviation from the sample's own estimate is scaled by
    sqrt(sampled / all customers of the segment) — the spread of an estimate over all customers, under the
    same square-root law the full bootstrap follows — then added to the full estimate (clipped to [0, 1],
    rows renormalised).
    """
    cc = counts if isinstance(counts, ChainCounts) else None
    if cc is not None:
        if segment is not None or weight is not None:
            raise ValueError("fit_chains: the ChainCounts already carry segment and weight "
                             "(pass them to chain_counts)")
        first = cc.per_customer.drop_duplicates(cc.customer).set_index(cc.customer)
        counts, segment, weight, customer = cc.per_customer, first["segment"], first["weight"], cc.customer
    k = len(states)
    ab = [list(states).index(a) for a in absorbing]
    cust = counts[customer].to_numpy()
    uniq, cidx = np.unique(cust, return_inverse=True)
    seg_of = (pd.Series(uniq).map(segment) if segment is not None else pd.Series(["all"] * len(uniq)))
    keep_c = seg_of.notna().to_numpy()
    w_c = (pd.Series(uniq).map(weight).fillna(1.0).to_numpy(float) if weight is not None else np.ones(len(uniq)))
    w_c = np.where(keep_c, w_c, 0.0)
    w_c = w_c / w_c[keep_c].mean()
    segments = sorted(seg_of[keep_c].unique().tolist(), key=lambda v: (str(type(v)), v))
    g_c = np.full(len(uniq), -1)
    for g, s in enumerate(segments):
        g_c[(seg_of == s).to_numpy()] = g
    cell = counts["from_state"].to_numpy(int) * k + counts["to_state"].to_numpy(int)
    n = counts["n"].to_numpy(float)
    rows_ok = keep_c[cidx]
    cidx, cell, n = cidx[rows_ok], cell[rows_ok], n[rows_ok]
    G = len(segments)
    ncust = {s: int((g_c == g).sum()) for g, s in enumerate(segments)}

    def aggregate(mult: np.ndarray) -> np.ndarray:
        wt = (w_c * mult)[cidx] * n
        return np.bincount(g_c[cidx] * k * k + cell, weights=wt, minlength=G * k * k).reshape(G, k, k)

    C = aggregate(np.ones(len(uniq)))
    sampled = cc is not None and cc.sampled
    boot_customers = None
    if sampled:
        if segments != list(cc.segments):
            raise ValueError(f"fit_chains: the bootstrap sample covers segments {segments}, the totals "
                             f"{list(cc.segments)}: raise chain_counts' min_per_segment")
        scale = (cc.totals.sum(axis=(1, 2)) / C.sum(axis=(1, 2)))[:, None, None]  # sample on the totals' scale
        spread = np.sqrt(np.array([ncust[s] for s in segments]) / cc.customers)[:, None, None]
        C_sample, C = C, cc.totals
        boot_customers, ncust = ncust, {s: int(c) for s, c in zip(segments, cc.customers)}
    pooled = _fix_absorbing(_normalise(C.sum(axis=0)), ab)
    kappa = np.zeros(k)
    if shrink and G > 1:
        for i in range(k):
            if i not in ab:
                kappa[i] = choose_kappa(C[:, i, :], pooled[i])

    def estimate(Cm: np.ndarray) -> np.ndarray:
        P0 = _normalise(Cm.sum(axis=0))
        post = Cm + kappa[None, :, None] * P0[None, :, :]
        return _fix_absorbing(_normalise(post), ab)

    P = estimate(C)
    P_sample = estimate(scale * C_sample) if sampled else None
    boot = None
    if n_boot:
        rng = np.random.default_rng(seed)
        boot = np.empty((n_boot, G, k, k))
        members = [np.flatnonzero(g_c == g) for g in range(G)]
        for b in range(n_boot):
            mult = np.zeros(len(uniq))
            for m in members:
                mult[m] = rng.multinomial(len(m), np.full(len(m), 1 / len(m)))
            if sampled:
                rep = np.clip(P + spread * (estimate(scale * aggregate(mult)) - P_sample), 0.0, None)
                boot[b] = _fix_absorbing(_normalise(rep), ab)
            else:
                boot[b] = estimate(aggregate(mult))
    return MarkovFit(list(states), segments, C, pooled, P, kappa, boot, level, ab, ncust,
                     P_sample, boot_customers)


def truth_in_ci_share(fit: MarkovFit, truth: dict, segment_map: dict | None = None) -> tuple[float, pd.DataFrame]:
    """Share of planted transition probabilities (non-absorbing rows) inside the fitted intervals.

    ``truth`` is ``{segment_key: k x k list}`` (``truth_params["markov"]["transition"]``); ``segment_map``
    maps the fit's segment labels to truth keys (default ``str(label)``)."""
    lo, hi = fit.interval()
    rows = []
    for g, s in enumerate(fit.segments):
        key = segment_map.get(s, s) if segment_map else str(s)
        if key not in truth:
            continue
        T = np.asarray(truth[key], float)
        for i in range(len(fit.states)):
            if i in fit.absorbing:
                continue
            for j in range(len(fit.states)):
                rows.append({"segment": s, "from": fit.states[i], "to": fit.states[j], "truth": T[i, j],
                             "estimate": fit.P[g, i, j], "ci_low": lo[g, i, j], "ci_high": hi[g, i, j],
                             "covered": bool(lo[g, i, j] <= T[i, j] <= hi[g, i, j])})
    t = pd.DataFrame(rows)
    return (float(t["covered"].mean()) if len(t) else np.nan), t


# ----------------------------------------------------------------------------------------------------------
# tests of the Markov assumptions
# ----------------------------------------------------------------------------------------------------------
def _lr(counts_fine: np.ndarray, counts_coarse: np.ndarray) -> tuple[float, int]:
    """LR statistic and df for rows of ``counts_fine`` (groups x k) sharing the coarse row distribution."""
    p_coarse = counts_coarse / counts_coarse.sum() if counts_coarse.sum() else counts_coarse
    lr = 0.0; df = 0
    nz_coarse = int((counts_coarse > 0).sum())
    used = 0
    for row in counts_fine:
        if row.sum() == 0:
            continue
        p = row / row.sum()
        m = row > 0
        lr += 2 * float(np.sum(row[m] * np.log(p[m] / p_coarse[m])))
        df += int(m.sum()) - 1
        used += 1
    df -= max(nz_coarse - 1, 0)
    return lr, max(df, 0)


def stationarity_test(by_month: pd.DataFrame, states: Sequence[str] = STATES, absorbing: Sequence[str] = ("churned",)
                      ) -> dict:
    """Anderson-Goodman LR test that the transition probabilities are the same in every wave (unweighted).
    ``by_month`` is :func:`customer_transition_counts` output with ``by_month=True``."""
    k = len(states); ab = [list(states).index(a) for a in absorbing]
    g = by_month.groupby(["month_index", "from_state", "to_state"])["n"].sum()
    months = sorted(g.index.get_level_values(0).unique())
    lr = 0.0; df = 0
    for i in range(k):
        if i in ab:
            continue
        fine = np.zeros((len(months), k))
        for t, mth in enumerate(months):
            for j in range(k):
                fine[t, j] = g.get((mth, i, j), 0)
        l, d = _lr(fine, fine.sum(axis=0))
        lr += l; df += d
    return {"lr": lr, "df": df, "p_value": float(stats.chi2.sf(lr, df)) if df else np.nan, "waves": len(months)}


def order_test(second: pd.DataFrame, states: Sequence[str] = STATES, absorbing: Sequence[str] = ("churned",)) -> dict:
    """LR test of first- against second-order dependence (unweighted): does the state two months back add
    information given last month's? ``second`` is :func:`customer_transition_counts` output with ``order=2``."""
    k = len(states); ab = [list(states).index(a) for a in absorbing]
    g = second.groupby(["prev_state", "from_state", "to_state"])["n"].sum()
    lr = 0.0; df = 0
    for i in range(k):
        if i in ab:
            continue
        fine = np.zeros((k, k))
        for h in range(k):
            for j in range(k):
                fine[h, j] = g.get((h, i, j), 0)
        l, d = _lr(fine, fine.sum(axis=0))
        lr += l; df += d
    return {"lr": lr, "df": df, "p_value": float(stats.chi2.sf(lr, df)) if df else np.nan}


# ----------------------------------------------------------------------------------------------------------
# survival and value
# ----------------------------------------------------------------------------------------------------------
def km_curve(duration: np.ndarray, event: np.ndarray, months: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) Kaplan-Meier S(k), k = 0..months, events at integer months (event at k: churned k months
    after entry; censored at k: still observed at k)."""
    d = np.asarray(duration, int); e = np.asarray(event, bool)
    w = np.ones(len(d)) if weights is None else np.asarray(weights, float)
    S = np.ones(months + 1)
    s = 1.0
    for k in range(1, months + 1):
        at_risk = w[d >= k].sum()
        ev = w[(d == k) & e].sum()
        if at_risk > 0:
            s *= 1 - ev / at_risk
        S[k] = s
    return S


def survival_comparison(fit: MarkovFit, entry: pd.DataFrame, months: int) -> pd.DataFrame:
    """Chain-implied survival (from the weighted entry-state distribution of customers not churned at entry,
    pooled matrix) against Kaplan-Meier on the same customers; ``entry`` is :func:`entry_states` output (its
    ``weight`` column weights both); columns month, markov, km, gap."""
    e = entry[entry["s0"] != "churned"]
    w = e["weight"].to_numpy(float)
    start = np.array([w[(e["s0"] == s).to_numpy()].sum() for s in fit.states])
    sm = implied_survival(fit.pooled, start, months, churned=fit.states.index("churned"))
    km = km_curve(e["duration"].to_numpy(), e["event"].to_numpy(), months, w)
    return pd.DataFrame({"month": np.arange(months + 1), "markov": sm, "km": km, "gap": sm - km})


def state_rewards(waves, segment: pd.Series | None, weight: pd.Series | None, fit: MarkovFit, *,
                  customer: str = "user_id", state: str = "engagement_state", reward: str = "spend",
                  con=None) -> np.ndarray:
    """Weighted mean monthly ``reward`` (e.g. spend) by segment x state, shape (segments, states), aggregated
    on the engine (``waves``: the long table or :func:`customer_summary` output)."""
    t = reward_table(waves, segment, weight, customer=customer, state=state, reward=reward,
                     states=fit.states, con=con).set_index(["segment", "state"])
    R = np.zeros((len(fit.segments), len(fit.states)))
    for gi, g in enumerate(fit.segments):
        for si, s in enumerate(fit.states):
            if (g, s) in t.index and t.loc[(g, s), "w"] > 0:
                R[gi, si] = t.loc[(g, s), "wr"] / t.loc[(g, s), "w"]
    return R


def value_by_state(fit: MarkovFit, rewards: np.ndarray, discount: float = 0.01, horizon: int | None = 36
                   ) -> pd.DataFrame:
    """Pfeifer-Carraway expected discounted value (reward units, e.g. USD) by segment and starting state,
    with bootstrap intervals of the chain (rewards held at their estimates)."""
    a = (1 - fit.level) / 2
    rows = []
    for g, s in enumerate(fit.segments):
        v = pfeifer_carraway(fit.P[g], rewards[g], discount, horizon)
        bt = (np.array([pfeifer_carraway(B[g], rewards[g], discount, horizon) for B in fit.boot])
              if fit.boot is not None else None)
        for i, st in enumerate(fit.states):
            rows.append({"segment": s, "state": st, "reward_per_month": rewards[g, i], "value": v[i],
                         "ci_low": np.quantile(bt[:, i], a) if bt is not None else np.nan,
                         "ci_high": np.quantile(bt[:, i], 1 - a) if bt is not None else np.nan})
    return pd.DataFrame(rows)


def simulate_waves(n: int, P: np.ndarray | dict, months: int = 24, start: np.ndarray | None = None, *,
                   states: Sequence[str] = STATES, seed: int = 0, first_month: str = "2024-01-01",
                   spend_by_state: Sequence[float] = (40.0, 12.0, 0.0, 0.0)) -> pd.DataFrame:
    """Long table ``user_id, segment, month, engagement_state, spend`` of customers following chain ``P``
    (or ``{segment: P}``, customers split evenly), observed from ``first_month`` for ``months`` months
    (for tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    mats = P if isinstance(P, dict) else {"all": np.asarray(P)}
    keys = list(mats)
    seg = np.array(keys, dtype=object)[np.arange(n) % len(keys)]
    k = len(states)
    start = np.array([0.8, 0.15, 0.05, 0.0]) if start is None else np.asarray(start)
    s = rng.choice(k, size=n, p=start)
    S = np.empty((n, months), np.int8)
    cum = {key: np.cumsum(np.asarray(mats[key]), axis=1) for key in keys}
    for t in range(months):
        S[:, t] = s
        u = rng.random(n)
        nxt = np.empty(n, int)
        for key in keys:
            m = seg == key
            nxt[m] = (u[m][:, None] > cum[key][s[m]]).sum(axis=1)
        s = np.minimum(nxt, k - 1)
    month = pd.date_range(first_month, periods=months, freq="MS")
    sp = np.asarray(spend_by_state, float)
    return pd.DataFrame({"user_id": np.repeat([f"u{i:07d}" for i in range(n)], months),
                         "segment": np.repeat(seg, months), "month": np.tile(month.values, n),
                         "engagement_state": np.array(states, dtype=object)[S.ravel()],
                         "spend": sp[S.ravel()] * rng.gamma(4, 0.25, n * months)})


def current_state_value(values: pd.DataFrame, waves, segment: pd.Series | None = None,
                        weight: pd.Series | None = None, *, customer: str = "user_id", month: str = "month",
                        state: str = "engagement_state", states: Sequence[str] = STATES, con=None) -> pd.DataFrame:
    """Per segment: weighted mean Pfeifer-Carraway value of the customers' *last observed* state (from
    :func:`value_by_state`), i.e. the chain's value of the base as it stands, comparable with a CLV model's
    mean value per segment. ``waves``: the long table or :func:`customer_summary` output (aggregated on the
    engine). Columns ``segment, customers, chain_value``."""
    d = last_states(waves, segment, weight, customer=customer, month=month, state=state, states=states, con=con)
    v = values.set_index(["segment", "state"])["value"]
    d["value"] = v.reindex(pd.MultiIndex.from_arrays([d["segment"], d["state"]])).to_numpy()
    d["wv"] = d["w"] * d["value"]
    g = d.groupby("segment").agg(customers=("customers", "sum"), w=("w", "sum"), wv=("wv", "sum"))
    return pd.DataFrame({"segment": g.index, "customers": g["customers"].to_numpy(),
                         "chain_value": (g["wv"] / g["w"]).to_numpy()})
