"""Explanations of a lookalike model: grouped permutation importance, the seed's profile, per-user reason codes and the scores artifact."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from .evaluation import LookalikeRun
from .features import CHUNK_ROWS, Features, _Rows, column_stats, rows_mean
from .model import PropensityLookalike
from .seeds import Seed


def grouped_permutation_importance(predict: Callable[[np.ndarray], np.ndarray], X: pd.DataFrame, y: np.ndarray,
                                   groups: dict[str, list[str]], n_repeats: int = 5,
                                   seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Drop in ROC AUC when all columns of a feature group are shuffled together across rows.

    Shuffling a group breaks its link with the label while keeping its distribution; the larger the
    AUC drop, the more the model relies on that group. Columns ``group``, ``importance`` (mean drop),
    ``sd`` (over repeats), sorted by importance. ``n_jobs`` threads share the predictions (``predict``
    must then be thread-safe); the shuffles are drawn in the same order whatever ``n_jobs``, so the
    result does not depend on it.
    """
    y = np.asarray(y, bool)
    a = np.asfortranarray(X.to_numpy(float))  # column-major: what tree ensembles predict fastest from
    base = roc_auc_score(y, predict(a))
    rng = np.random.default_rng(seed)
    pos = {c: i for i, c in enumerate(X.columns)}
    tasks = [(g, [pos[c] for c in cols], rng.permutation(len(a)))
             for g, cols in groups.items() for _ in range(n_repeats)]

    def drop(task) -> float:
        _, idx, perm = task
        b = a.copy(order="F")
        b[:, idx] = a[perm][:, idx]
        return base - roc_auc_score(y, predict(b))

    if n_jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n_jobs) as pool:
            drops = list(pool.map(drop, tasks))
    else:
        drops = [drop(t) for t in tasks]
    out = []
    for i, g in enumerate(groups):
        d = drops[i * n_repeats:(i + 1) * n_repeats]
        out.append({"group": g, "importance": float(np.mean(d)), "sd": float(np.std(d))})
    return pd.DataFrame(out).sort_values("importance", ascending=False, ignore_index=True)


def model_importance(model: PropensityLookalike, X: pd.DataFrame, features: Features, n_repeats: int = 5,
                     seed: int = 0, max_rows: int = 5000) -> pd.DataFrame:
    """:func:`grouped_permutation_importance` of the first fold's model on its held-out fold.

    At most ``max_rows`` rows of that fold (a seeded random subset) are used, to bound the cost.
    """
    te = model.folds_[0]
    if len(te) > max_rows:
        te = np.sort(np.random.default_rng(seed).choice(te, size=max_rows, replace=False))
    m = model.fold_models_[0]

    def predict(a: np.ndarray) -> np.ndarray:
        # the OpenMP limit is per thread: set it in whichever thread predicts (see PropensityLookalike.fit)
        with threadpool_limits(model.n_threads, user_api="openmp"):
            return m.predict_proba(a)[:, 1]

    with threadpool_limits(model.n_threads):
        imp = grouped_permutation_importance(predict, X.iloc[te], model.labelled_[te], features.groups,
                                             n_repeats, seed, n_jobs=model.n_jobs)
    imp["label"] = imp["group"].map(features.labels)
    imp["source"] = imp["group"].map(features.source)
    return imp


def seed_profile(features: Features, seed_mask: np.ndarray) -> pd.Series:
    """Standardized mean difference (seed minus panel, in panel SDs) of every feature column."""
    # standardized seed rows only, block by block: the same numbers as standardizing the whole panel
    # first, without the float matrix of the panel or of the seed's rows (1.1 GB for 1.3M seed members)
    mean, sd = column_stats(features.X)
    sd = np.where(sd > 0, sd, 1.0)
    prof = rows_mean(_Rows(features.X), np.flatnonzero(np.asarray(seed_mask, bool)), lambda b: (b - mean) / sd)
    return pd.Series(prof, index=features.X.columns)


def explain_importance(importance: pd.DataFrame, profile: pd.Series, features: Features, top: int = 5) -> list[str]:
    """One plain-language sentence per top group: how much the model relies on it and in which direction."""
    out = []
    for _, r in importance.head(top).iterrows():
        cols = features.groups[r["group"]]
        col = max(cols, key=lambda c: abs(profile[c]))
        d = float(profile[col])
        hi, lo = features.reason.get(col, (col, None))
        trait = hi if d > 0 or lo is None else lo
        label = str(r['label'])
        out.append(f"{label[:1].upper() + label[1:]}: scrambling it lowers the model's AUC by {r['importance']:.3f}; "
                   f"seed members stand out as '{trait}' ({abs(d):.2f} panel SDs "
                   f"{'above' if d > 0 else 'below'} average).")
    return out


def reason_codes(features: Features, seed_mask: np.ndarray, rows: np.ndarray | None = None, top_k: int = 3,
                 exclude_sources: Sequence[str] = ("2nd party", "3rd party"),
                 min_contribution: float = 0.1) -> pd.Series:
    """Up to ``top_k`` plain-language reasons per user: the traits they share with the seed.

    A feature's contribution for a user is ``z_user * d_seed`` (user's standardized value times the seed's
    standardized mean difference): positive when the user deviates from the panel in the seed's direction.
    Indicator features count only when the user has the trait. Features from ``exclude_sources`` never
    appear (by default 2nd- and 3rd-party attributes: reason codes leave the company
    with an export, whose field policy allows 1st-party traits only). Returns a ``"; "``-joined
    string per row of ``rows`` (boolean mask, default all).
    """
    keep = [c for g, cols in features.groups.items() if features.source[g] not in exclude_sources
            for c in cols if c in features.reason]
    sel = np.ones(len(features.X), bool) if rows is None else np.asarray(rows, bool)
    index = features.X.index[sel]
    if not keep:
        return pd.Series("", index=index, name="reason_codes", dtype="string")
    # standardization is per column, so the kept columns alone give the same z and seed profile; the
    # panel is standardized block by block (each row's reasons are its own): the standardized copy and
    # the contributions of every user at once were 1.5 GB at 1M users
    pos = {c: i for i, c in enumerate(features.X.columns)}
    idx = np.array([pos[c] for c in keep])
    read = _Rows(features.X, idx)  # the kept columns of any rows, as float64 (never the panel's matrix)
    mean, sd = column_stats(features.X, idx)
    sd = np.where(sd > 0, sd, 1.0)
    d = rows_mean(read, np.flatnonzero(np.asarray(seed_mask, bool)), lambda b: (b - mean) / sd)
    indicator = np.array([features.reason[c][1] is None for c in keep], dtype=bool)
    names = [(features.reason[c][0], features.reason[c][1] or features.reason[c][0]) for c in keep]
    rows_sel = np.flatnonzero(sel)
    slots = np.full((len(rows_sel), min(top_k, len(keep))), -1, dtype=np.int64)
    every_row = len(rows_sel) == len(read)
    for start in range(0, len(rows_sel), CHUNK_ROWS):
        block = rows_sel[start:start + CHUNK_ROWS]
        # only the kept columns of the block's rows are read
        rows_of = slice(start, start + len(block)) if every_row else block
        z = (read(rows_of) - mean) / sd
        slots[start:start + len(block)] = _top_reasons(z, d, indicator, slots.shape[1], min_contribution)
    # a text per distinct combination of reasons (a few thousand), not per user; combinations are coded
    # as one integer each (np.unique over rows sorted the million rows as byte strings)
    words = [names[j // 2][0] if j % 2 else names[j // 2][1] for j in range(2 * len(keep))]
    base = 2 * len(keep) + 1
    if slots.shape[1] and base ** slots.shape[1] < 2 ** 62:
        key = np.zeros(len(slots), dtype=np.int64)
        for k in range(slots.shape[1]):
            key = key * base + (slots[:, k] + 1)
        first, inverse = np.unique(key, return_index=True, return_inverse=True)[1:]
        combos = slots[first]
    else:
        combos, inverse = np.unique(slots, axis=0, return_inverse=True)
    texts = np.array(["; ".join(words[j] for j in row if j >= 0) for row in combos], dtype=object)
    return pd.Series(texts[inverse.ravel()], index=index, name="reason_codes", dtype="string")


def _top_reasons(z: np.ndarray, d: np.ndarray, indicator: np.ndarray, top_k: int,
                 min_contribution: float) -> np.ndarray:
    """Each row's ``top_k`` reasons (coded ``2 * column + (1 if above the panel mean)``, -1: none) from its
    standardized values ``z`` and the seed profile ``d``."""
    contrib = z * d
    # indicators count only when the user has the trait (z > 0), in place of a masked copy per column
    np.copyto(contrib, 0.0, where=indicator & ~(z > 0))
    # the top_k largest contributions per row, ties to the first column (as a stable descending sort),
    # by top_k passes of argmax instead of sorting every row
    work = contrib  # consumed: the chosen entries are masked pass by pass
    n = len(work)
    slots = np.full((n, top_k), -1, dtype=np.int64)
    for k in range(top_k):
        j = np.argmax(work, axis=1)
        c = work[np.arange(n), j]
        ok = c > min_contribution
        slots[ok, k] = 2 * j[ok] + (z[np.arange(n), j] > 0)[ok]
        work[np.arange(n), j] = -np.inf
    return slots


def scores_frame(user_ids: pd.Series, run: LookalikeRun, seed: Seed, reasons: pd.Series | None = None,
                 churn_risk: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``lookalike_scores.parquet`` artifact: one row per user.

    Columns ``user_id``, ``audience`` (seed name), ``in_seed`` (training seed member), ``eligible``
    (may be a candidate: not churned, unless the run kept churned users), ``score`` (calibrated
    ``P(labelled | x)``), ``cosine_score``, ``rank`` (1 = most seed-like candidate, by the uncalibrated
    score; seed members and ineligible users get no rank), ``seed_label_third_party`` (the seed's name may
    reveal 2nd/3rd-party traits), ``reason_codes`` and, when given, ``churn_prob_90d``.
    """
    from ..panel import _ids, align

    cand = run.candidates
    # identifiers as Arrow text (10M ids as Python strings: 0.7 GB); written as the same text column
    uid = _ids(pd.Series(user_ids).reset_index(drop=True))
    out = pd.DataFrame({"user_id": uid.array, "audience": seed.name,
                        "in_seed": run.train, "eligible": cand | run.train if run.eligible is None
                        else np.asarray(run.eligible, bool),
                        "score": run.proba, "cosine_score": run.cosine,
                        "seed_label_third_party": bool(seed.label_third_party)})
    rank = pd.Series(np.where(cand, run.raw, np.nan)).rank(ascending=False, method="first")
    out["rank"] = rank.astype("Int64").to_numpy()
    if reasons is not None:
        out["reason_codes"] = reasons.reindex(pd.Series(user_ids).index).to_numpy()
    if churn_risk is not None:
        # looked up in Arrow (helpers.panel.align), not through an index of Python strings
        p = align(out["user_id"], churn_risk[["user_id", "churn_prob_90d"]], "user_id")["churn_prob_90d"]
        out["churn_prob_90d"] = p.to_numpy(float)
    return out


def plot_importance(importance: pd.DataFrame, ax=None, top: int = 12):
    """Horizontal bars of the grouped permutation importance (AUC drop) with +-1 SD over repeats."""
    import matplotlib.pyplot as plt

    d = importance.head(top).iloc[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(d) + 1.2))
    ax.barh(d["label"] + " (" + d["source"] + ")", d["importance"], xerr=d["sd"], color="tab:blue")
    ax.set(title="What drives the lookalike model (permutation importance)",
           xlabel="drop in held-out ROC AUC when the feature is shuffled (AUC points)", ylabel="feature")
    return ax
