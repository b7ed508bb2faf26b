"""Gaussian-mixture segmentation: model selection (BIC / ICL), soft membership, stability, truth scoring.

:class:`GMMSegmenter` sweeps the number of components and the covariance structure of a Gaussian
mixture on a seeded sample of the users, keeps the model with the lowest ICL (or BIC), and then scores
everyone (hard label, probability of every segment, entropy). Segments are numbered by decreasing
mixture weight so that "segment 0" is the largest, identically for every run with the same seed.

The module also holds what the notebook needs to judge a segmentation: :func:`entropy` and
:func:`ambiguous_share` of the soft assignment, :func:`bootstrap_stability` (ARI between the reference
solution and refits on bootstrap resamples), :func:`match_labels` / :func:`confusion_table` (Hungarian
matching of found to true segments) and :func:`weighted_sizes` (survey-weighted segment shares).

Model-selection criteria (smaller is better, sklearn's sign convention):
``BIC = -2 log L + p log n`` (Schwarz 1978) and ``ICL = BIC + 2 * sum_i H_i`` where
``H_i = -sum_k t_ik log t_ik`` is the entropy of user i's posterior (Biernacki, Celeux & Govaert 2000):
ICL adds a penalty for overlapping components, so it prefers fewer, better separated segments.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .features import check_matrix

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")
#: BLAS/OpenMP threads used by EM. The matrices are thin (users x a few features), so extra threads add
#: contention rather than speed; on a shared 2-core machine one thread was ~10x faster than two.
EM_THREADS = 1
CRITERIA = ("bic", "icl")


# --- checks ------------------------------------------------------------------------------------------
def _check_proba(proba: np.ndarray) -> np.ndarray:
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ValueError(f"proba must be a 2-D array (users x segments), got shape {P.shape}")
    off = np.abs(P.sum(axis=1) - 1) > 1e-6
    if (P < -1e-12).any() or off.any():
        raise ValueError(f"proba rows must be probabilities summing to 1; {int(off.sum())} rows do not "
                         f"(e.g. rows {np.flatnonzero(off)[:5].tolist()})")
    return P


def _check_labels(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be 1-D label arrays of the same length, "
                         f"got shapes {a.shape} and {b.shape}")
    return a, b


# --- criteria ----------------------------------------------------------------------------------------
def entropy(proba: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each user's segment probabilities: 0 = certain, ``log k`` = uniform.

    Parameters
    ----------
    proba : ndarray of shape (n_users, k)
        Posterior probabilities, rows summing to 1.
    """
    P = _check_proba(proba)
    out = np.empty(len(P))
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, len(P), ROW_CHUNK):  # row-wise sums: the same values whatever the chunk
            B = P[s:s + ROW_CHUNK]
            out[s:s + ROW_CHUNK] = -np.where(B > 0, B * np.log(B), 0.0).sum(axis=1)
    return out


#: rows per block of the row-wise helpers (:func:`entropy`, :func:`write_segments`): a (users x k) temporary of
#: 10M users is 0.8 GB per copy, a block of 2^20 users 80 MB
ROW_CHUNK = 2**20


def ambiguous_share(proba: np.ndarray, threshold: float = 0.8, weights: np.ndarray | None = None) -> float:
    """Share of users whose most likely segment has probability below ``threshold``.

    Parameters
    ----------
    proba : ndarray of shape (n_users, k)
    threshold : float, default 0.8
        A user is "ambiguous" when ``max_k p_ik < threshold``.
    weights : ndarray, optional
        Survey weights; the share is then a weighted share.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    amb = _check_proba(proba).max(axis=1) < threshold
    w = np.ones(len(amb)) if weights is None else np.asarray(weights, dtype=float)
    return float(np.sum(w * amb) / np.sum(w))


def icl(model: GaussianMixture, X: np.ndarray) -> float:
    """Integrated completed likelihood criterion ``BIC + 2 * sum of posterior entropies`` (smaller is better)."""
    X = check_matrix(X)
    return float(model.bic(X) + 2.0 * entropy(model.predict_proba(X)).sum())


def _fit_gmm(X: np.ndarray, k: int, covariance_type: str, n_init: int, reg_covar: float,
             max_iter: int, random_state: int, limit: bool = True) -> GaussianMixture:
    """One EM fit on :data:`EM_THREADS` BLAS threads (``limit=False``: the caller has set the limit, as a
    thread pool must: threadpoolctl's limit is process-wide, so nested limits in threads would race)."""
    gm = GaussianMixture(n_components=k, covariance_type=covariance_type, n_init=n_init, reg_covar=reg_covar,
                         max_iter=max_iter, random_state=random_state)
    if not limit:
        return gm.fit(X)
    with threadpool_limits(limits=EM_THREADS):
        return gm.fit(X)


#: threads that run independent EM fits side by side (sweep candidates, bootstrap refits); each fit is seeded
#: on its own and runs on one BLAS thread, so the results do not depend on this number
FIT_WORKERS = max(1, min(2, os.cpu_count() or 1))


def _in_threads(fn, items: list, workers: int | None = None) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads (EM spends most of its time in numpy, which releases
    the GIL), under one process-wide BLAS limit of :data:`EM_THREADS`; results in the order of ``items``."""
    workers = FIT_WORKERS if workers is None else workers
    with threadpool_limits(limits=EM_THREADS):
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))


def sweep(X: np.ndarray, k_range: Sequence[int] = range(2, 11),
          covariance_types: Sequence[str] = COVARIANCE_TYPES, n_init: int = 2, reg_covar: float = 1e-4,
          max_iter: int = 200, random_state: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fit a Gaussian mixture for every ``k`` x covariance type and tabulate BIC and ICL.

    Parameters
    ----------
    X : ndarray of shape (n_users, n_features)
        Standardised features (``FeatureBuilder``); usually a sample of the users.
    k_range : sequence of int, default 2..10
    covariance_types : sequence of str, default all four of scikit-learn's
    n_init : int, default 2
        EM restarts per fit (k-means++-style initialisations from ``random_state``).
    reg_covar : float, default 1e-4
        Added to covariance diagonals (features are standardised, so this is a relative floor).
    max_iter : int, default 200
    random_state : int, default 0

    Returns
    -------
    table : pandas.DataFrame
        One row per fit: ``k``, ``covariance_type``, ``log_likelihood`` (total), ``n_parameters``,
        ``bic``, ``icl``, ``converged``.
    models : dict
        ``(k, covariance_type) -> fitted GaussianMixture``.
    """
    X = check_matrix(X)
    ks = sorted({int(k) for k in k_range})
    if not ks or ks[0] < 1 or ks[-1] >= len(X):
        raise ValueError(f"k_range must hold integers between 1 and n_users - 1 = {len(X) - 1}, got {ks}")
    unknown = [c for c in covariance_types if c not in COVARIANCE_TYPES]
    if unknown:
        raise ValueError(f"unknown covariance types {unknown}; expected some of {COVARIANCE_TYPES}")
    def one(spec: tuple[str, int]) -> tuple[GaussianMixture, dict]:
        cov, k = spec
        m = _fit_gmm(X, k, cov, n_init, reg_covar, max_iter, random_state, limit=False)
        return m, {"k": k, "covariance_type": cov, "log_likelihood": float(m.score(X) * len(X)),
                   "n_parameters": int(m._n_parameters()), "bic": float(m.bic(X)),
                   "icl": icl(m, X), "converged": bool(m.converged_)}

    # the candidates are independent fits with their own seed: run side by side, tabulated in sweep order
    specs = [(cov, k) for cov in covariance_types for k in ks]
    fitted = _in_threads(one, specs)
    models = {(k, cov): m for (cov, k), (m, _) in zip(specs, fitted)}
    return pd.DataFrame([row for _, row in fitted]), models


def choose_model(table: pd.DataFrame, criterion: str = "icl") -> tuple[int, str]:
    """The ``(k, covariance_type)`` with the smallest ``criterion`` among converged fits of a sweep table."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    ok = table[table["converged"]] if table["converged"].any() else table
    best = ok.loc[ok[criterion].idxmin()]
    return int(best["k"]), str(best["covariance_type"])


def _size_order(model: GaussianMixture) -> np.ndarray:
    """Component order by decreasing mixture weight (ties by component mean, for determinism)."""
    return np.lexsort((model.means_[:, 0], -np.round(model.weights_, 12)))


# --- the segmenter -----------------------------------------------------------------------------------
# the constructor parameters are the fields (sklearn: __init__ only stores them); sklearn's own repr,
# and identity equality/hash as for any estimator
@dataclass(eq=False, repr=False)
class GMMSegmenter(ClusterMixin, BaseEstimator):
    """Gaussian-mixture segmentation with BIC/ICL model selection, fitted on a sample, scoring everyone.

    Parameters
    ----------
    k_range : sequence of int, default 2..10
        Numbers of segments tried.
    covariance_types : sequence of str, default ("full", "diag", "tied", "spherical")
    criterion : {"bic", "icl"}, default "icl"
        Selection criterion (see the module docstring). ICL is the default because the goal is
        segments, not a density estimate: when within-segment distributions are not exactly Gaussian
        (counts, rounding, skew left after the log), BIC keeps adding components to model the shape of
        each segment as the sample grows, while ICL's entropy term refuses components that only split a
        segment (Biernacki, Celeux & Govaert 2000; Baudry et al. 2010). Notebook 04 fits both on the
        run's data and records the ARI of each choice with the truth (``gmm_ari_truth_bic``).
    n_init : int, default 2
        EM restarts per candidate model.
    fit_sample : int or None, default 20_000
        Fit the sweep on at most this many users drawn without replacement (seeded); ``None`` = all.
        Scoring (:meth:`predict_proba`) is then linear in the number of users.
    reg_covar : float, default 1e-4
    max_iter : int, default 200
    random_state : int, default 0
        Seeds the sample and every EM initialisation: same seed, same segments.

    Attributes
    ----------
    sweep_ : pandas.DataFrame
        The model-selection table (:func:`sweep`), with a ``chosen`` column.
    n_components_ : int
    covariance_type_ : str
    model_ : GaussianMixture
        The chosen mixture; components are re-ordered so segment 0 is the largest.
    sample_index_ : ndarray
        Rows of the fitting data used for the sweep.
    """

    k_range: Sequence[int] = range(2, 11)
    covariance_types: Sequence[str] = COVARIANCE_TYPES
    criterion: str = "icl"
    n_init: int = 2
    fit_sample: int | None = 20_000
    reg_covar: float = 1e-4
    max_iter: int = 200
    random_state: int = 0

    def fit(self, X: np.ndarray, y=None) -> "GMMSegmenter":
        """Sweep candidate mixtures on a seeded sample of ``X`` and keep the best by ``criterion``."""
        X = check_matrix(X)
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        rng = np.random.default_rng(self.random_state)
        n = len(X)
        if self.fit_sample is not None and n > self.fit_sample:
            self.sample_index_ = np.sort(rng.choice(n, size=int(self.fit_sample), replace=False))
        else:
            self.sample_index_ = np.arange(n)
        Xs = X[self.sample_index_]
        table, models = sweep(Xs, self.k_range, self.covariance_types, self.n_init, self.reg_covar,
                              self.max_iter, self.random_state)
        k, cov = choose_model(table, self.criterion)
        table["chosen"] = (table["k"] == k) & (table["covariance_type"] == cov)
        self.sweep_ = table
        self.n_components_, self.covariance_type_ = k, cov
        self.model_ = models[(k, cov)]
        self._order = _size_order(self.model_)
        self.labels_ = self.predict(X)
        return self

    def predict_proba(self, X: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Posterior probability of every segment, shape (n_users, k); scored in chunks of ``chunk`` rows."""
        check_is_fitted(self, "model_")
        X = check_matrix(X)
        chunk = PREDICT_CHUNK if chunk is None else chunk
        out = np.empty((len(X), self.n_components_))
        with threadpool_limits(limits=EM_THREADS):
            for start in range(0, len(X), chunk):
                out[start:start + chunk] = self.model_.predict_proba(X[start:start + chunk])[:, self._order]
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable segment (0 = largest mixture component)."""
        return self.predict_proba(X).argmax(axis=1)

    @property
    def weights_(self) -> np.ndarray:
        """Mixture weights in segment order (unweighted share of the fitting sample)."""
        check_is_fitted(self, "model_")
        return self.model_.weights_[self._order]

    def refit_config(self) -> dict:
        """Keyword arguments that refit the chosen mixture (for bootstrap stability)."""
        check_is_fitted(self, "model_")
        return {"k": self.n_components_, "covariance_type": self.covariance_type_, "n_init": self.n_init,
                "reg_covar": self.reg_covar, "max_iter": self.max_iter}


# --- stability and truth -----------------------------------------------------------------------------
#: EM restarts of every bootstrap refit: with one start, EM local optima pass for instability (issue 15:
#: 2 of 20 refits at ARI 0.75 with ``n_init=1`` reached 0.98 and a higher likelihood with ``n_init=5``).
BOOTSTRAP_N_INIT = 5


def bootstrap_stability(X: np.ndarray, reference: np.ndarray, k: int, covariance_type: str = "full",
                        n_boot: int = 20, n_init: int = BOOTSTRAP_N_INIT, reg_covar: float = 1e-4,
                        max_iter: int = 200, random_state: int = 0) -> np.ndarray:
    """ARI between a reference segmentation and mixtures refitted on bootstrap resamples.

    Each replicate draws ``len(X)`` rows with replacement, fits a ``k``-component mixture of the given
    covariance type, labels *all* rows of ``X`` and compares them with ``reference`` (ARI, label-free).
    Values near 1 mean the solution does not depend on which users happened to be sampled.

    Parameters
    ----------
    X : ndarray of shape (n_users, n_features)
    reference : ndarray of shape (n_users,)
        Labels of the reference solution on ``X``.
    k, covariance_type, reg_covar, max_iter
        The mixture to refit (``GMMSegmenter.refit_config()``).
    n_init : int, default :data:`BOOTSTRAP_N_INIT`
        EM restarts per refit; at least :data:`BOOTSTRAP_N_INIT` is used whatever is passed (a refit
        stuck in a local optimum measures the optimiser, not the stability of the segments).
    n_boot : int, default 20
    random_state : int, default 0

    Returns
    -------
    ndarray of shape (n_boot,)
        One ARI per replicate.
    """
    X = check_matrix(X)
    ref = np.asarray(reference)
    if ref.shape != (len(X),):
        raise ValueError(f"reference must have one label per row of X ({len(X)}), got shape {ref.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(random_state)
    n_init = max(int(n_init), BOOTSTRAP_N_INIT)
    draws = []  # every resample and seed drawn first, in replicate order, so the refits can run side by side
    for _ in range(n_boot):
        idx = rng.integers(0, len(X), len(X))
        draws.append((idx, int(rng.integers(2**31))))

    def one(draw: tuple[np.ndarray, int]) -> float:
        idx, seed = draw
        m = _fit_gmm(X[idx], k, covariance_type, n_init, reg_covar, max_iter, seed, limit=False)
        return adjusted_rand_score(ref, m.predict(X))

    return np.array(_in_threads(one, draws), dtype=float)


def match_labels(found: np.ndarray, true: np.ndarray) -> dict[int, int]:
    """Hungarian matching of found segments to true segments maximising the number of agreeing users.

    Returns
    -------
    dict
        ``found label -> true label``; found segments left unmatched (more found than true) map to -1.
    """
    found, true = _check_labels(found, true, ("found", "true"))
    f_lab, f_code = np.unique(found, return_inverse=True)
    t_lab, t_code = np.unique(true, return_inverse=True)
    counts = np.zeros((len(f_lab), len(t_lab)), dtype=np.int64)
    np.add.at(counts, (f_code, t_code), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = {int(f): -1 for f in f_lab}
    mapping.update({int(f_lab[r]): int(t_lab[c]) for r, c in zip(rows, cols)})
    return mapping


def confusion_table(found: np.ndarray, true: np.ndarray, true_names: Sequence[str] | None = None,
                    found_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Cross-table of true (rows) by found (columns) segments, columns re-ordered by Hungarian matching.

    Column ``j`` is the found segment matched to true row ``j`` (unmatched found segments last), so a
    good solution has its mass on the diagonal.
    """
    found, true = _check_labels(found, true, ("found", "true"))
    mapping = match_labels(found, true)
    inverse = {t: f for f, t in mapping.items() if t >= 0}
    t_lab = np.unique(true)
    order = [inverse[t] for t in t_lab if t in inverse] + sorted(f for f, t in mapping.items() if t < 0)
    tab = pd.crosstab(pd.Series(true, name="true"), pd.Series(found, name="found"))
    tab = tab.reindex(columns=order, fill_value=0)
    if true_names is not None:
        tab.index = [f"{t}: {true_names[t]}" for t in tab.index]
    if found_names is not None:
        tab.columns = [f"{f}: {found_names[f]}" for f in tab.columns]
    tab.index.name, tab.columns.name = "true segment", "found segment"
    return tab


def truth_scores(found: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """ARI, matched accuracy (share of users in the Hungarian-matched cell) and the number of true segments."""
    found, true = _check_labels(found, true, ("found", "true"))
    mapping = match_labels(found, true)
    f_lab, f_code = np.unique(found, return_inverse=True)  # the mapping per distinct label, not per user
    mapped = np.array([mapping[int(f)] for f in f_lab], dtype=np.int64)[f_code.reshape(-1)]
    return {"ari": float(adjusted_rand_score(true, found)), "matched_accuracy": float(np.mean(mapped == true)),
            "true_k": int(len(np.unique(true))), "found_k": int(len(np.unique(found)))}


def weighted_sizes(labels: np.ndarray, weights: np.ndarray | None = None, k: int | None = None) -> pd.DataFrame:
    """Users and survey-weighted share per segment.

    Parameters
    ----------
    labels : ndarray of int, shape (n_users,)
    weights : ndarray, optional
        Survey weights (default 1 for everyone). Must be finite and non-negative.
    k : int, optional
        Number of segments (so empty segments show as 0).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``segment``: ``n``, ``share`` (unweighted), ``weighted_share``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != labels.shape:
        raise ValueError(f"weights must have one value per user ({len(labels)}), got shape {w.shape}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ValueError(f"weights must be finite and >= 0; {int(bad.sum())} are not "
                         f"(e.g. rows {np.flatnonzero(bad)[:5].tolist()})")
    k = int(labels.max()) + 1 if k is None else k
    n = np.bincount(labels, minlength=k)
    ws = np.bincount(labels, weights=w, minlength=k)
    return pd.DataFrame({"n": n, "share": n / n.sum(), "weighted_share": ws / ws.sum()},
                        index=pd.RangeIndex(k, name="segment"))


def segments_frame(user_ids: pd.Series, proba: np.ndarray, names: Sequence[str] | None = None,
                   id_column: str = "user_id") -> pd.DataFrame:
    """The ``segments.parquet`` artifact: ``user_id, segment, segment_name, prob_0..prob_{k-1}, entropy``.

    The key column is named ``user_id`` whatever the run's identifier is called (its values are the run's
    ids, e.g. Telco's customerID), as the later stages expect; ``id_column`` renames it."""
    P = _check_proba(proba)
    if len(user_ids) != len(P):
        raise ValueError(f"user_ids ({len(user_ids)}) and proba ({len(P)}) must have the same length")
    seg = P.argmax(axis=1).astype(np.int64)
    k = P.shape[1]
    names = [f"Segment {j}" for j in range(k)] if names is None else list(names)
    if len(names) != k:
        raise ValueError(f"names must have one entry per segment ({k}), got {len(names)}")
    out = pd.DataFrame({id_column: pd.Series(user_ids).astype("string").to_numpy(), "segment": seg,
                        "segment_name": np.asarray(names, dtype=object)[seg]})
    for j in range(k):
        out[f"prob_{j}"] = P[:, j]
    out["entropy"] = entropy(P)
    return out


# --- figures -----------------------------------------------------------------------------------------
def plot_selection(table: pd.DataFrame, criterion: str = "icl", axes=None):
    """BIC and ICL against k, one line per covariance type, the chosen model circled.

    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    fig = axes[0].figure
    chosen = table[table["chosen"]].iloc[0] if "chosen" in table else None
    for ax, crit in zip(axes, ("bic", "icl")):
        for cov, g in table.groupby("covariance_type", sort=False):
            ax.plot(g["k"], g[crit], marker="o", ms=3, label=cov)
        if chosen is not None:
            ax.scatter([chosen["k"]], [chosen[crit]], s=160, facecolors="none", edgecolors="red", linewidths=2,
                       zorder=5, label=f"chosen (k={int(chosen['k'])}, {chosen['covariance_type']})")
        ax.set_xlabel("number of segments k")
        ax.set_ylabel(f"{crit.upper()} (-2 log-likelihood units; lower is better)")
        ax.set_title(f"{crit.upper()} by k and covariance type" + (" (selection criterion)" if crit == criterion else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_entropy_boxes(labels: np.ndarray, ent: np.ndarray, k: int, ax, color: str = "#aed6f1"):
    """Box plot of the assignment entropy of each segment (quartiles, 1.5 IQR whiskers, every flier) on ``ax``.

    The statistics of ``seaborn.boxplot(x=labels, y=ent)`` (``matplotlib.cbook.boxplot_stats``), computed one
    segment at a time and drawn with ``Axes.bxp``: seaborn's long-form frame of every user kept ~0.2 GB per
    million users after the figure was closed, and took 3.5 s at 1M users (0.6 s this way)."""
    from matplotlib import cbook

    labels, ent = np.asarray(labels), np.asarray(ent)
    stats = []
    for j in range(k):
        st = cbook.boxplot_stats(ent[labels == j])[0] if (labels == j).any() else None
        if st is None:  # an empty segment: an empty box
            st = {"med": np.nan, "q1": np.nan, "q3": np.nan, "whislo": np.nan, "whishi": np.nan, "fliers": []}
        stats.append(st)
    line = dict(color="0.3")
    ax.bxp(stats, positions=range(k), widths=0.8, patch_artist=True,
           boxprops=dict(facecolor=color, edgecolor="0.3"), whiskerprops=line, capprops=line, medianprops=line,
           flierprops=dict(marker="o", markersize=1, markerfacecolor="0.3", markeredgecolor="0.3"))
    ax.set_xticks(range(k), [str(j) for j in range(k)])
    return ax


#: Bootstrap ARI below which a refit counts as a different segmentation.
STABLE_ARI = 0.9


@dataclass
class StabilitySummary:
    """Median, quartiles, minimum and share of refits below 0.9 of bootstrap ARIs.

    The quartiles alone hide a few failed refits (an IQR of 0.006 hid two refits at 0.75): report the
    minimum and the share below :data:`STABLE_ARI` beside them.
    """

    median: float
    q1: float
    q3: float
    n_boot: int
    min: float = float("nan")
    share_below_0_9: float = float("nan")

    @classmethod
    def of(cls, aris: np.ndarray) -> "StabilitySummary":
        a = np.asarray(aris, dtype=float)
        return cls(float(np.median(a)), float(np.quantile(a, 0.25)), float(np.quantile(a, 0.75)), len(a),
                   float(a.min()), float((a < STABLE_ARI).mean()))

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


# --- baselines and the oracle of the synthetic world --------------------------------------------------
def refit_labels(X: np.ndarray, k: int, covariance_type: str, n_init: int = 2, reg_covar: float = 1e-4,
                 max_iter: int = 200, random_state: int = 0, X_score: np.ndarray | None = None) -> np.ndarray:
    """Labels of one mixture refitted exactly as :func:`sweep` fits it (same seed = same model).

    Used to score an alternative choice of the sweep (e.g. the model BIC would pick) without keeping
    every candidate in memory. ``X_score`` (default ``X``) are the rows labelled.
    """
    m = _fit_gmm(check_matrix(X), k, covariance_type, n_init, reg_covar, max_iter, random_state)
    X_score = check_matrix(X if X_score is None else X_score)
    out = np.empty(len(X_score), dtype=np.int64)
    with threadpool_limits(limits=EM_THREADS):
        # row by row the same labels; in blocks, sklearn's (rows x k) log-density temporaries stay small
        # (for 10M users at once they were several GB)
        for s in range(0, len(X_score), PREDICT_CHUNK):
            out[s:s + PREDICT_CHUNK] = m.predict(X_score[s:s + PREDICT_CHUNK])
    return out


#: rows scored at a time by :meth:`GMMSegmenter.predict_proba` and :func:`refit_labels`
PREDICT_CHUNK = 200_000


def kmeans_labels(X: np.ndarray, k: int, n_init: int = 5, random_state: int = 0) -> np.ndarray:
    """Plain k-means with ``k`` clusters on the same feature matrix: the baseline beside the GMM."""
    from sklearn.cluster import KMeans

    X = check_matrix(X)
    with threadpool_limits(limits=EM_THREADS):
        return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit_predict(X)


def oracle_posterior(X_sim: np.ndarray, y_sim: np.ndarray, X: np.ndarray, max_iter: int = 150,
                     random_state: int = 0) -> np.ndarray:
    """Estimated Bayes posterior ``P(true segment | observed features)`` of the synthetic world.

    The exact class-conditional densities of the world's features are intractable (copula, split-t
    margins, zero inflation, Markov states, 3- and 12-month averages of purchase counts and amounts), so
    the posterior is learnt from a large fresh sample of the *same planted generative process*
    (``X_sim``, ``y_sim`` = true segments; same knobs, other seed), by gradient-boosted trees, which
    approximate any posterior given enough draws. The resulting classifier is an estimate of the Bayes
    classifier: its ARI is a (slightly conservative) estimate of the ceiling ``bayes_ari_ceiling`` that
    no unsupervised method can beat on these features except by chance.

    Returns
    -------
    ndarray of shape (len(X), n_classes)
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    X_sim, X = check_matrix(X_sim, "X_sim"), check_matrix(X)
    y_sim = np.asarray(y_sim)
    if y_sim.shape != (len(X_sim),):
        raise ValueError(f"y_sim must have one label per row of X_sim ({len(X_sim)}), got {y_sim.shape}")
    with threadpool_limits(limits=EM_THREADS):
        clf = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=True, validation_fraction=0.1,
                                             random_state=random_state).fit(X_sim, y_sim)
        # scoring every user (1M rows through a few hundred trees) was most of this step: row chunks on every
        # core, one OpenMP thread each (the trees' prediction releases the GIL); rows are scored independently
        # of each other, so the probabilities do not depend on the split
        chunks = [c for c in np.array_split(np.arange(len(X)), max(1, os.cpu_count() or 1)) if c.size]
        with ThreadPoolExecutor(max_workers=len(chunks) or 1) as pool:
            parts = list(pool.map(lambda c: clf.predict_proba(X[c[0]:c[-1] + 1]), chunks))
        return np.concatenate(parts) if parts else clf.predict_proba(X)


#: users on whom :func:`oracle_ari` scores the oracle when the panel is larger (a seeded sample): putting 1M users
#: through the oracle's few hundred trees was most of notebook 04's truth section at 1M (about 15 of its 25 CPU
#: seconds), while the ARI of 200,000 users differed from that of all of them by 0.0003 (1M run, seed 42: 0.6487 on
#: the sample, 0.6484 on all 999,000 users with a planted segment)
ORACLE_SCORE_ROWS = 200_000


def oracle_ari(X_sim: np.ndarray, y_sim: np.ndarray, X: np.ndarray, y_true: np.ndarray,
               max_rows: int | None = ORACLE_SCORE_ROWS, random_state: int = 0) -> tuple[float, int]:
    """ARI with the planted segments of the estimated Bayes classifier (:func:`oracle_posterior`): the ceiling.

    The oracle is learnt on ``(X_sim, y_sim)`` and labels the users ``X`` (true segments ``y_true``); with more
    than ``max_rows`` users it labels a seeded random sample of ``max_rows`` of them (``None``: everyone), so the
    ceiling is an estimate from that sample. Returns ``(ari, users scored)``.
    """
    X = check_matrix(X)
    y_true = np.asarray(y_true)
    if y_true.shape != (len(X),):
        raise ValueError(f"y_true must have one label per row of X ({len(X)}), got shape {y_true.shape}")
    rows = np.arange(len(X))
    if max_rows is not None and len(X) > max_rows:
        rows = np.sort(np.random.default_rng([random_state, 104_729]).choice(len(X), size=int(max_rows),
                                                                            replace=False))
    post = oracle_posterior(X_sim, y_sim, X[rows], random_state=random_state)
    return truth_scores(post.argmax(axis=1), y_true[rows])["ari"], len(rows)


# --- every user, block by block ---------------------------------------------------------------------
def write_segments(path, user_ids: pd.Series, proba: np.ndarray, names: Sequence[str] | None = None,
                   chunk: int = ROW_CHUNK) -> int:
    """Write :func:`segments_frame` of every user to ``path`` (Parquet) block by block.

    The file holds the same rows, columns, types and row groups (2^20 rows, pandas' default) as
    ``segments_frame(user_ids, proba, names).to_parquet(path, index=False)``, without holding the whole
    frame (at 10M users its ids alone were 10M Python strings). Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pd.Series(user_ids).reset_index(drop=True)
    if len(ids) != len(proba):
        raise ValueError(f"user_ids ({len(ids)}) and proba ({len(proba)}) must have the same length")
    tmp = f"{path}.tmp"
    writer = None
    try:
        for s in range(0, max(len(ids), 1), chunk):  # an empty panel: one empty block (the file's schema)
            t = pa.Table.from_pandas(segments_frame(ids.iloc[s:s + chunk], proba[s:s + chunk], names),
                                     preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t, row_group_size=chunk)
        writer.close()
        writer = None
        os.replace(tmp, path)  # the file appears whole or not at all
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return len(ids)


def compare_scored(scored_dir, user_ids: pd.Series, proba: np.ndarray, id_col: str = "user_id"
                   ) -> tuple[bool, float, int]:
    """Compare an engine's scored Parquet (:func:`helpers.scoring.score`) with in-memory probabilities,
    one record batch at a time: ``(labels identical, largest probability difference, rows)``.

    Rows are matched by identifier: positionally when the engine kept the table's order (checked per
    batch), else by looking each batch's ids up among ``user_ids``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pathlib import Path

    ids = pa.array(pd.Series(user_ids).astype("string[pyarrow]").array).cast(pa.string())
    k = proba.shape[1]
    cols = [id_col, "segment"] + [f"prob_{j}" for j in range(k)]
    same, diff, pos, n = True, 0.0, 0, 0
    for part in sorted(Path(scored_dir).glob("*.parquet")):
        for b in pq.ParquetFile(part).iter_batches(batch_size=ROW_CHUNK, columns=cols):
            if b.num_rows == 0:
                continue
            bid = b.column(id_col).cast(pa.string())
            rows = np.arange(pos, pos + b.num_rows)
            if pos + b.num_rows > len(ids) or not pc.all(pc.equal(bid, ids.slice(pos, b.num_rows))).as_py():
                look = pc.index_in(bid, value_set=ids)
                if look.null_count:
                    raise ValueError(f"the engine scored {look.null_count} ids that are not in the panel")
                rows = look.to_numpy(zero_copy_only=False).astype(np.int64)
            pos += b.num_rows
            n += b.num_rows
            P = proba[rows]
            same &= bool((b.column("segment").to_numpy() == P.argmax(axis=1)).all())
            E = np.column_stack([b.column(f"prob_{j}").to_numpy() for j in range(k)])
            diff = max(diff, float(np.abs(E - P).max()))
    return same, diff, n
