"""Lookalike experiments (hide-and-find, prospective) and their evaluation: AUC, precision and lift at planner shares, gains, calibration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .. import audience as A
from .model import Calibration, CosineLookalike, Estimator, MAX_LABELLED, MAX_UNLABELLED, PropensityLookalike


#: audience sizes a planner buys, as shares of the candidate pool
PLANNER_SHARES = (0.01, 0.05, 0.10)


def holdout_split(seed_mask: np.ndarray, holdout: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split seed members at random into training (labelled) and held-out members (hidden).

    Returns boolean masks ``(train, hold)`` over all rows.
    """
    m = np.asarray(seed_mask, bool)
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    idx = np.flatnonzero(m)
    n_hold = int(round(holdout * len(idx)))
    if n_hold < 1 or n_hold >= len(idx):
        raise ValueError(f"a seed of {len(idx)} members cannot be split with holdout={holdout}")
    hold_idx = np.random.default_rng(seed).choice(idx, size=n_hold, replace=False)
    hold = np.zeros_like(m)
    hold[hold_idx] = True
    return m & ~hold, hold


@dataclass
class LookalikeRun:
    """Scores of one seed: masks over all users and each scorer's scores (all rows).

    ``hold`` marks the positives the evaluation looks for among the candidates: the hidden seed members
    (hide-and-find) or the candidates with the outcome next period (prospective task).
    """

    train: np.ndarray          # labelled seed members
    hold: np.ndarray           # positives to find among the candidates
    cosine: np.ndarray         # baseline similarity
    raw: np.ndarray            # propensity ranking score (out-of-fold / fold-mean, uncalibrated)
    proba: np.ndarray          # calibrated P(labelled | x)
    model: PropensityLookalike
    baseline: CosineLookalike
    eligible: np.ndarray | None = None   # users who may be candidates (default: everyone not churned)
    task: str = "hide-and-find"          # or "prospective"

    @property
    def candidates(self) -> np.ndarray:
        """Users a lookalike audience is drawn from: eligible users outside the training seed."""
        base = ~self.train
        return base if self.eligible is None else base & self.eligible


def run_lookalike(X: pd.DataFrame, seed_mask: np.ndarray, holdout: float = 0.3, estimator: Estimator = "hgb",
                  n_folds: int = 5, calibration: Calibration = "isotonic", refit: bool = False,
                  seed: int = 0, n_threads: int = 1, eligible: np.ndarray | None = None,
                  max_labelled: int | None = MAX_LABELLED,
                  max_unlabelled: int | None = MAX_UNLABELLED, n_jobs: int = 2) -> LookalikeRun:
    """Hide-and-find: hide ``holdout`` of the seed, fit both scorers on the rest and score every user.

    The held-out members stay in the unlabelled pool (as real unseen lookalikes would); evaluation
    (:func:`evaluate`) ranks the candidates and checks where the hidden ones land. Use it when there is
    no next period to score against (a snapshot); :func:`run_prospective` otherwise.
    """
    train, hold = holdout_split(seed_mask, holdout, seed)
    base = CosineLookalike().fit(X, train)
    model = PropensityLookalike(estimator, n_folds, calibration, refit, seed, n_threads,
                                max_labelled, max_unlabelled, n_jobs).fit(X, train)
    el = None if eligible is None else np.asarray(eligible, bool)
    return LookalikeRun(train, hold, base.score(X), model.oof_raw_, model.proba_, model, base, el)


def run_prospective(X: pd.DataFrame, seed_mask: np.ndarray, future_positive: np.ndarray,
                    eligible: np.ndarray | None = None, estimator: Estimator = "hgb", n_folds: int = 5,
                    calibration: Calibration = "isotonic", seed: int = 0, n_threads: int = 1,
                    max_labelled: int | None = MAX_LABELLED,
                    max_unlabelled: int | None = MAX_UNLABELLED, n_jobs: int = 2) -> LookalikeRun:
    """The prospective task: the whole seed (this period's outcome) is labelled; candidates (eligible
    non-seed users) are ranked, and the positives to find are the candidates with the outcome next
    period (``future_positive``, from the planted truth or a temporal holdout)."""
    s = np.asarray(seed_mask, bool)
    fut = np.asarray(future_positive, bool)
    if fut.shape != s.shape:
        raise ValueError(f"future_positive has {fut.shape} entries for {s.shape} users")
    base = CosineLookalike().fit(X, s)
    model = PropensityLookalike(estimator, n_folds, calibration, False, seed, n_threads,
                                max_labelled, max_unlabelled, n_jobs).fit(X, s)
    el = np.ones(len(s), bool) if eligible is None else np.asarray(eligible, bool)
    run = LookalikeRun(s, fut & ~s & el, base.score(X), model.oof_raw_, model.proba_, model, base, el,
                       "prospective")
    if not run.hold[run.candidates].any():
        raise ValueError("no candidate has the outcome next period: nothing to find")
    return run


#: future column of each configured outcome kind in ``truth/future_outcomes.parquet`` (horizon in days)
FUTURE_COLUMNS = {"conversion": "conversions_next_{h}d", "value": "spend_next_{h}d",
                  "churn_event": "churn_next_{h}d", "response": "conversions_next_{h}d"}


def load_future_outcomes(P: Any, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame | None, str]:
    """The planted truth's next-period outcomes and where they came from.

    ``truth/future_outcomes.parquet`` when the generator wrote it; else, when ``users_truth.parquet`` has
    the planted event times, ``churn_next_90d`` / ``churn_next_180d`` derived from them (event within the
    next 90/180 days for users active today); else None (real data: no next period).

    ``columns``: read only these outcome columns (those present; ``user_id`` always). Identifiers are Arrow
    text (``string[pyarrow]``): 10M of them as Python strings would take 0.7 GB.
    """
    from pathlib import Path

    import pyarrow.parquet as pq

    from ..artifacts import _arrow_strings

    def read(f: Path, want: Sequence[str] | None) -> pd.DataFrame:
        have = pq.read_schema(f).names
        cols = None if want is None else ["user_id"] + [c for c in want if c in have and c != "user_id"]
        t = pq.read_table(f, columns=cols)
        df = t.to_pandas(types_mapper=_arrow_strings().get)
        del t
        if not isinstance(df["user_id"].dtype, pd.StringDtype):
            df["user_id"] = df["user_id"].astype(str).astype("string[pyarrow]")
        return df

    truth = Path(P.truth)
    f = truth / "future_outcomes.parquet"
    if f.exists():
        return read(f, columns), "truth/future_outcomes.parquet"
    u = truth / "users_truth.parquet"
    if u.exists() and {"true_event_time_days", "tenure_days"} <= set(pq.read_schema(u).names):
        t = read(u, ["true_event_time_days", "tenure_days"])
        if {"true_event_time_days", "tenure_days"} <= set(t.columns):
            ev, ten = t["true_event_time_days"].to_numpy(float), t["tenure_days"].to_numpy(float)
            out = pd.DataFrame({"user_id": t["user_id"]})
            for h in (90, 180):
                out[f"churn_next_{h}d"] = (ev >= ten) & (ev < ten + h)
            return out, "derived from users_truth.parquet (planted churn times; no future conversions)"
    return None, "no planted truth: no next period"


def future_target(future: pd.DataFrame, user_ids: pd.Series, kind: str, seed_share: float,
                  horizon_days: int = 90, positive_rule: str | None = None) -> tuple[np.ndarray, str] | None:
    """Next-period positives per user for an outcome of ``kind``, and the rule in words (None if absent).

    Churn: the future churn flag. Numeric outcomes (conversion, value): the users in the top
    ``seed_share`` of the future column -- "reaches the seed's rank next period" -- unless the seed rule
    is ``> 0`` (then: any conversion next period).
    """
    col = FUTURE_COLUMNS.get(kind, "").format(h=horizon_days)
    if col not in future:
        return None
    from ..panel import align

    # looked up in Arrow (helpers.panel.align): the same values as a map over the ids as text (missing
    # where the truth has no such user), without a Python string per id
    v = align(pd.Series(user_ids), future[["user_id", col]], "user_id")[col]
    if kind == "churn_event":
        return A.matches(v, True), f"{col} is true"
    x = pd.to_numeric(v, errors="coerce").astype(float)
    if positive_rule == ">0":
        return (x > 0).fillna(False).to_numpy(bool), f"{col} > 0"
    cut = float(x.quantile(1 - seed_share))
    return (x >= cut).fillna(False).to_numpy(bool), f"{col} >= {cut:g} (top {seed_share:.0%} next period)"


def _check_pair(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, score = np.asarray(y, bool), np.asarray(score, float)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"y and score must be 1-D of equal length, got {y.shape} and {score.shape}")
    if not np.isfinite(score).all():
        raise ValueError(f"score has {int((~np.isfinite(score)).sum())} non-finite values")
    if y.sum() == 0:
        raise ValueError("y has no positives: nothing to find")
    return y, score


def hits_at(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Expected positives among the ``k`` highest scores, ties at the cut-off broken at random.

    Deterministic: rows tied with the ``k``-th score contribute their mean ``y`` per remaining slot.
    """
    y, score = _check_pair(y, score)
    if not 0 <= k <= len(y):
        raise ValueError(f"k must be in [0, {len(y)}], got {k}")
    return float(_Ranking(score).hits(y, np.array([k]))[0])


class _Ranking:
    """One score vector sorted once, for :func:`hits_at` of any labels at many cut-offs.

    Sorting a million scores per cut-off was the cost of a gains curve (100 cut-offs per scorer).
    """

    def __init__(self, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        self.sorted = score[self.order]

    def hits(self, y: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """:func:`hits_at` of ``y`` for every ``k`` of ``ks`` (the same operations, so the same floats)."""
        n = len(self.sorted)
        ks = np.asarray(ks, np.int64)
        # top[j]: positives among the j highest scores; rows above the k-th score and rows tied with it
        # are prefixes of the descending order whatever the order among ties
        top = np.concatenate(([0], np.cumsum(np.asarray(y, bool)[self.order][::-1], dtype=np.int64)))
        thr = self.sorted[n - np.maximum(ks, 1)]
        n_above = n - np.searchsorted(self.sorted, thr, side="right")
        n_tied = n - np.searchsorted(self.sorted, thr, side="left") - n_above
        tied_mean = (top[n_above + n_tied] - top[n_above]) / n_tied
        return np.where(ks == 0, 0.0, top[n_above] + (ks - n_above) * tied_mean)


def precision_at(y: np.ndarray, score: np.ndarray, share: float) -> float:
    """Share of positives among the top ``share`` of rows by score (at least one row)."""
    k = max(1, int(round(share * len(y))))
    return hits_at(y, score, k) / k


def lift_at(y: np.ndarray, score: np.ndarray, share: float) -> float:
    """Precision in the top ``share`` divided by the base rate (1 = no better than random)."""
    return precision_at(y, score, share) / float(np.mean(np.asarray(y, bool)))


def gains_curve(y: np.ndarray, score: np.ndarray, n_points: int = 100) -> pd.DataFrame:
    """Cumulative gains and lift: for each share targeted (by score), the share of positives captured."""
    y, score = _check_pair(y, score)
    shares = np.linspace(0, 1, n_points + 1)[1:]
    ks = np.maximum(1, np.round(shares * len(y)).astype(int))
    captured = _Ranking(score).hits(y, ks) / y.sum()
    return pd.DataFrame({"share_targeted": ks / len(y), "share_captured": captured,
                         "lift": captured / (ks / len(y))})


def calibration_table(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table: rows grouped into ``n_bins`` quantile bins of the predicted probability.

    Columns ``mean_predicted``, ``observed_rate``, ``n``; a calibrated model has them equal.
    """
    y = np.asarray(y, float)
    proba = np.asarray(proba, float)
    if y.shape != proba.shape:
        raise ValueError(f"y and proba must have equal length, got {y.shape} and {proba.shape}")
    order = np.argsort(proba, kind="stable")
    bins = np.empty(len(y), int)
    bins[order] = np.arange(len(y)) * n_bins // len(y)
    d = pd.DataFrame({"bin": bins, "p": proba, "y": y})
    return d.groupby("bin").agg(mean_predicted=("p", "mean"), observed_rate=("y", "mean"),
                                n=("y", "size")).reset_index()


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Size-weighted mean |observed rate - mean predicted| over the quantile bins."""
    t = calibration_table(y, proba, n_bins)
    return float(np.average((t["observed_rate"] - t["mean_predicted"]).abs(), weights=t["n"]))


def planted_segment(true_segment: np.ndarray, seed_mask: np.ndarray) -> tuple[int, float]:
    """The planted segment most of the seed belongs to, and the seed's share in it."""
    seg = pd.Series(np.asarray(true_segment)[np.asarray(seed_mask, bool)])
    if seg.empty:
        raise ValueError("the seed is empty")
    counts = seg.value_counts()
    return int(counts.index[0]), float(counts.iloc[0] / len(seg))


def top_rows(score: np.ndarray, share: float) -> np.ndarray:
    """Boolean mask of the top ``share`` rows by score (stable order on ties: first rows win)."""
    k = max(1, int(round(share * len(score))))
    keep = np.zeros(len(score), bool)
    keep[np.argsort(-np.asarray(score, float), kind="stable")[:k]] = True
    return keep


#: above this many users the segment-seeded sanity check runs on a seeded sample of this many
SANITY_MAX_USERS = 200_000


def sample_rows(n: int, max_rows: int | None = SANITY_MAX_USERS, seed: int = 0) -> np.ndarray:
    """Row positions of a seeded uniform sample of ``max_rows`` of ``n`` rows, in order; every row
    (``arange(n)``) when ``n <= max_rows`` or ``max_rows`` is None."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_rows), replace=False))


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """The random-targeting baseline: seeded uniform scores (its lift is 1 up to sampling noise)."""
    return np.random.default_rng(seed + 7919).random(n)


def evaluate(run: LookalikeRun, shares: Sequence[float] = PLANNER_SHARES,
             in_planted: np.ndarray | None = None, oracle: np.ndarray | None = None,
             seed: int = 0) -> pd.DataFrame:
    """Per scorer (propensity, cosine baseline, random; ``oracle`` when given): AUC, precision and lift at
    each share of the candidates, against ``run.hold`` (the positives to find).

    ``in_planted`` (bool per user, synthetic panel only) adds the truth precision of each share;
    ``oracle`` (a score per user, e.g. the planted segment's next-period rate) is the reference a
    scorer that knew the planted truth would reach.
    """
    c = run.candidates
    y = run.hold[c]
    scorers = [("propensity", run.raw), ("cosine", run.cosine), ("random", random_scores(len(c), seed))]
    if oracle is not None:
        scorers.append(("oracle", np.asarray(oracle, float)))
    planted = None if in_planted is None else np.asarray(in_planted, bool)[c]
    ks = np.array([max(1, int(round(q * len(y)))) for q in shares], dtype=np.int64)  # as precision_at
    base = float(np.mean(y))
    rows = []
    for name, s in scorers:
        sc = _check_pair(y, s[c])[1]
        row = {"scorer": name, "auc": float(roc_auc_score(y, sc)), "base_rate": float(y.mean()),
               "n_candidates": int(c.sum())}
        # one sort per scorer for every share (precision_at / lift_at would sort once per call)
        ranking = _Ranking(sc)
        hits = ranking.hits(y, ks)
        truth_hits = ranking.hits(_check_pair(planted, sc)[0], ks) if planted is not None else None
        for i, q in enumerate(shares):
            row[f"precision_top{q:.0%}"] = float(hits[i]) / int(ks[i])
            row[f"lift_top{q:.0%}"] = float(hits[i]) / int(ks[i]) / base
            if truth_hits is not None:
                row[f"truth_precision_top{q:.0%}"] = float(truth_hits[i]) / int(ks[i])
        rows.append(row)
    return pd.DataFrame(rows).set_index("scorer")


def plot_gains(curves: dict[str, pd.DataFrame], axes=None):
    """Cumulative gains (left) and lift (right) of each scorer's :func:`gains_curve`, with the random line."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, g in curves.items():
        axes[0].plot(100 * g["share_targeted"], 100 * g["share_captured"], label=name)
        axes[1].plot(100 * g["share_targeted"], g["lift"], label=name)
    axes[0].plot([0, 100], [0, 100], ls="--", c="grey", label="random")
    axes[1].axhline(1.0, ls="--", c="grey", label="random")
    axes[0].set(title="Cumulative gains on held-out seed members", xlabel="candidates targeted (%)",
                ylabel="held-out seed members captured (%)")
    axes[1].set(title="Lift on held-out seed members", xlabel="candidates targeted (%)",
                ylabel="lift (x random)", xscale="log")
    for ax in axes:
        ax.legend()
    return axes


def plot_calibration(tables: dict[str, pd.DataFrame], ax=None):
    """Reliability diagram: observed labelled rate against mean predicted probability per bin."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    top = max(float(t[["mean_predicted", "observed_rate"]].max().max()) for t in tables.values())
    for name, t in tables.items():
        ax.plot(t["mean_predicted"], t["observed_rate"], marker="o", label=name)
    ax.plot([0, top], [0, top], ls="--", c="grey", label="perfect calibration")
    ax.set(title="Calibration of P(labelled | x), out-of-fold", xlabel="mean predicted probability (per bin)",
           ylabel="observed share labelled (per bin)")
    ax.legend()
    return ax
