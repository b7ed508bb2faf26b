"""Multi-touch attribution: Markov-chain removal effects (first and higher order), first touch, last touch
and Shapley values, with bootstrap intervals, scored against the planted incremental contributions.

Paths are strings ``"c1>c2>c3"`` with an outcome (converted or not) and a count. The Markov chain has a
start state, one transient state per channel (or per tuple of the last ``order`` channels) and two
absorbing states; the removal effect of a channel is the relative fall in the start state's conversion
probability when every state containing the channel leads to the null state. Credits are removal effects
normalised to sum to the converting paths. Published check (test): paths c1>c2>c3 (converted), c1 (not),
c2>c3 (not) give conversion probability 1/3 and credit 0.2 / 0.4 / 0.4.

Shapley: the value of a coalition S is the number of conversions on paths that touch only channels in S
(Zhao et al. 2018's "simplified" game); computed exactly over all coalitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import factorial

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.linalg import spsolve

START, CONV, NULL = "(start)", "(conversion)", "(null)"


def aggregate_paths(touch_paths: pd.DataFrame, path_col: str = "path",
                    converted_col: str = "converted") -> pd.DataFrame:
    """Unique paths with ``conversions`` and ``nulls`` counts (one row per distinct path)."""
    t = touch_paths[[path_col, converted_col]].copy()
    t["c"] = t[converted_col].astype(bool)
    g = t.groupby(path_col)["c"].agg(["sum", "count"])
    return pd.DataFrame({"path": g.index, "conversions": g["sum"].astype(float).to_numpy(),
                         "nulls": (g["count"] - g["sum"]).astype(float).to_numpy()})


class _Chain:
    """Transitions of all paths as a sparse (path x transition) incidence, so bootstraps are one product."""

    def __init__(self, paths: list[str], order: int):
        # vectorised over all touches (a loop over touches in Python took most of the stage at 50k users):
        # a state is the tuple of the last ``order`` channels, encoded as an integer in base (channels + 1)
        self.order = order
        s = pd.Series(list(paths), dtype=object)
        lens = s.str.count(">").to_numpy() + 1
        chan, names = pd.factorize(s.str.split(">").explode().to_numpy())
        n_touch = len(chan)
        pid = np.repeat(np.arange(len(s)), lens)
        start = np.repeat(np.cumsum(lens) - lens, lens)
        pos = np.arange(n_touch) - start
        base = len(names) + 1
        key = np.zeros(n_touch, dtype=np.int64)
        for k in range(order):                       # channel k touches back, 0 before the path starts
            back = np.where(pos >= k, np.r_[np.zeros(k, dtype=np.int64), chan[:n_touch - k] + 1], 0)
            key += back * base ** k
        sid, uniq = pd.factorize(key)
        sid = sid + 1                                # 0 is the start state
        labels = [">".join(names[d - 1] for d in reversed([(u // base ** k) % base for k in range(order)]) if d)
                  for u in uniq]
        self.states = {START: 0, **{lab: i + 1 for i, lab in enumerate(labels)}}
        S = len(self.states)
        prev = np.where(pos == 0, 0, np.r_[0, sid[:-1]])
        pair, pairs = pd.factorize(prev * S + sid)
        self.n_pair = len(pairs)
        self.pair_from, self.pair_to = pairs // S, pairs % S
        self.M = sparse.csr_matrix((np.ones(n_touch), (pid, pair)), shape=(len(s), self.n_pair))
        last = sid[np.cumsum(lens) - 1]
        self.last = sparse.csr_matrix((np.ones(len(s)), (np.arange(len(s)), last)), shape=(len(s), S))
        self.members = [set()] + [set(lab.split(">")) for lab in labels]

    def probabilities(self, conv_w: np.ndarray, null_w: np.ndarray, removed: list[str | None]) -> list[float]:
        """P(conversion from start) with each channel in ``removed`` removed (None = nothing removed)."""
        tot = conv_w + null_w
        counts = self.M.T @ tot                       # transient -> transient
        to_conv = self.last.T @ conv_w
        to_null = self.last.T @ null_w
        S = len(self.states)
        T = sparse.csr_matrix((counts, (self.pair_from, self.pair_to)), shape=(S, S)).tocsr()
        out_tot = np.asarray(T.sum(1)).ravel() + to_conv + to_null
        out_tot[out_tot == 0] = 1.0
        res = []
        for ch in removed:
            keep = np.ones(S, bool)
            if ch is not None:
                keep = np.array([ch not in m for m in self.members])
            idx = np.flatnonzero(keep)
            Q = T[idx][:, idx].multiply(1.0 / out_tot[idx][:, None]).tocsc()
            b = to_conv[idx] / out_tot[idx]
            A = sparse.identity(len(idx), format="csc") - Q
            x = spsolve(A, b)
            res.append(float(np.atleast_1d(x)[0]))
        return res


def markov(paths: pd.DataFrame, channels: list[str] | None = None, order: int = 1,
           _chain: _Chain | None = None, weights: np.ndarray | None = None) -> pd.DataFrame:
    """Removal-effect attribution of ``order`` on aggregated paths (:func:`aggregate_paths`).

    Returns one row per channel: ``removal_effect``, ``share`` (normalised), ``credit`` (conversions),
    and the attribute ``conversion_probability`` in ``.attrs``.
    """
    chain = _chain or _Chain(paths["path"].tolist(), order)
    w = np.ones(len(paths)) if weights is None else weights
    cw, nw = paths["conversions"].to_numpy() * w, paths["nulls"].to_numpy() * w
    if channels is None:
        channels = sorted({c for p in paths["path"] for c in p.split(">")})
    probs = chain.probabilities(cw, nw, [None, *channels])
    p0 = probs[0]
    re = np.array([1 - p / p0 if p0 > 0 else 0.0 for p in probs[1:]])
    share = re / re.sum() if re.sum() > 0 else re
    out = pd.DataFrame({"channel": channels, "removal_effect": re, "share": share,
                        "credit": share * cw.sum()})
    out.attrs["conversion_probability"] = p0
    return out


def _ends(paths: pd.DataFrame, channels) -> tuple[np.ndarray, np.ndarray]:
    """Index in ``channels`` of every path's first and last channel (-1 when not listed), computed once:
    splitting every path again on each bootstrap draw was most of the attribution's time."""
    pos = pd.Index(channels)
    first = pos.get_indexer(paths["path"].str.partition(">")[0])
    last = pos.get_indexer(paths["path"].str.rpartition(">")[2])
    return first, last


def _touch_share(paths: pd.DataFrame, channels, end: np.ndarray, w) -> np.ndarray:
    """Share of (weighted) conversions whose path starts (or ends) on each channel (``end`` from :func:`_ends`)."""
    ok = end >= 0
    v = np.bincount(end[ok], weights=(paths["conversions"].to_numpy() * w)[ok], minlength=len(channels))
    return v / v.sum() if v.sum() > 0 else v


def _masks(paths: pd.DataFrame, channels) -> np.ndarray:
    pos = {c: i for i, c in enumerate(channels)}
    return np.array([sum(1 << pos[c] for c in set(p.split(">")) if c in pos) for p in paths["path"]])


def shapley(paths: pd.DataFrame, channels, w=None, _masks_cache=None) -> np.ndarray:
    """Exact Shapley shares of the game v(S) = conversions on paths touching only channels in S."""
    n = len(channels)
    w = np.ones(len(paths)) if w is None else w
    masks = _masks(paths, channels) if _masks_cache is None else _masks_cache
    conv = np.bincount(masks, weights=paths["conversions"].to_numpy() * w, minlength=1 << n)
    v = conv.copy()
    for i in range(n):                                   # zeta transform: v(S) = sum over subsets of S
        bit = 1 << i
        for s in range(1 << n):
            if s & bit:
                v[s] += v[s ^ bit]
    phi = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        for s in range(1 << n):
            if not s & bit:
                k = bin(s).count("1")
                phi[i] += factorial(k) * factorial(n - k - 1) / factorial(n) * (v[s | bit] - v[s])
    return phi / phi.sum() if phi.sum() > 0 else phi


@dataclass
class AttributionResult:
    table: pd.DataFrame          # channel x method: share, ci_low, ci_high
    conversion_probability: float
    n_paths: int


def attribute(touch_paths: pd.DataFrame, channels: list[str], orders=(1, 2), n_boot: int = 100,
              seed: int = 0, max_paths: int = 50_000) -> AttributionResult:
    """Every method's channel shares with percentile bootstrap intervals (paths resampled).

    More than ``max_paths`` user paths are subsampled at random (said in ``table.attrs``).
    """
    rng = np.random.default_rng(seed)
    tp = touch_paths
    if len(tp) > max_paths:
        tp = tp.iloc[np.sort(rng.choice(len(tp), max_paths, replace=False))]
    agg = aggregate_paths(tp)
    chains = {o: _Chain(agg["path"].tolist(), o) for o in orders}
    masks = _masks(agg, channels)
    first, last = _ends(agg, channels)

    def shares(wt):
        res = {}
        for o in orders:
            res[f"markov_order{o}"] = markov(agg, channels, o, chains[o], wt)["share"].to_numpy()
        res["first_touch"] = _touch_share(agg, channels, first, wt)
        res["last_touch"] = _touch_share(agg, channels, last, wt)
        res["shapley"] = shapley(agg, channels, wt, masks)
        return res

    point = shares(np.ones(len(agg)))
    users_per_path = (agg["conversions"] + agg["nulls"]).to_numpy()
    boots = {k: [] for k in point}
    n_users = int(users_per_path.sum())
    for _ in range(n_boot):
        # resample users: multinomial counts over unique paths, outcome mix kept per path
        wt = rng.multinomial(n_users, users_per_path / n_users) / np.maximum(users_per_path, 1)
        for k, v in shares(wt).items():
            boots[k].append(v)
    rows = []
    for k, v in point.items():
        b = np.array(boots[k]) if n_boot else np.full((1, len(channels)), np.nan)
        for j, c in enumerate(channels):
            rows.append({"method": k, "channel": c, "share": v[j], "ci_low": np.nanpercentile(b[:, j], 2.5),
                         "ci_high": np.nanpercentile(b[:, j], 97.5)})
    table = pd.DataFrame(rows)
    table.attrs["subsampled_from"] = len(touch_paths) if len(touch_paths) > max_paths else None
    p0 = markov(agg, channels, 1, chains[orders[0]] if orders[0] == 1 else None).attrs["conversion_probability"]
    return AttributionResult(table, p0, len(tp))


def truth_error(table: pd.DataFrame, true_share: dict) -> pd.DataFrame:
    """Mean absolute error of each method's shares against the planted incremental shares."""
    t = table.assign(true_share=table["channel"].map(true_share))
    t["abs_err"] = (t["share"] - t["true_share"]).abs()
    t["covered"] = (t["ci_low"] <= t["true_share"]) & (t["true_share"] <= t["ci_high"])
    return t.groupby("method").agg(mean_abs_err=("abs_err", "mean"), coverage=("covered", "mean")).reset_index()
