"""Hierarchical (Ward) segmentation that scales: exact Ward for small panels, two-stage Ward for large ones.

Exact Ward (:func:`scipy.cluster.hierarchy.linkage`) needs the ``n (n - 1) / 2`` pairwise distances, so it
is limited to a few thousand users. The two-stage method first summarises the users by a few hundred
micro-clusters (:class:`sklearn.cluster.MiniBatchKMeans`), then runs Ward on the micro-cluster centroids
*with their sizes* (:func:`weighted_ward_linkage`, a Lance-Williams implementation that, unlike scipy's,
takes cluster sizes); each user inherits the segment of its micro-cluster. Memory is ``O(n d + m^2)``.
The number of segments is chosen from the merge heights (:func:`cut_table`, :func:`choose_k`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score

from .features import check_matrix

#: Largest panel :class:`HierarchicalSegmenter` clusters with exact Ward when ``method="auto"``
#: (the condensed distance matrix of 5,000 users takes 100 MB).
EXACT_MAX_N = 5_000

CUT_RULES = ("gap", "ch")


# --- input checks ---------------------------------------------------------------------------------
def _check_weights(w: np.ndarray | None, n: int, name: str = "sample_weight") -> np.ndarray:
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the rows of X, got {w.shape}")
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and > 0; rows {np.flatnonzero(bad)[:5].tolist()} "
                         f"are not (e.g. {w[bad][:3].tolist()})")
    return w


# --- size-weighted Ward ---------------------------------------------------------------------------
def weighted_ward_linkage(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Ward linkage of clusters given by their centroids and sizes (weights).

    Starting from ``m`` clusters with centroids ``c_i`` and sizes ``n_i``, repeatedly merges the pair
    with the smallest increase of the within-cluster sum of squares,
    ``Delta(A, B) = n_A n_B / (n_A + n_B) * ||c_A - c_B||^2``. Distances are updated with the
    Lance-Williams recurrence for Ward, which holds for arbitrary starting sizes:
    ``d(k, i+j)^2 = ((n_i + n_k) d(k,i)^2 + (n_j + n_k) d(k,j)^2 - n_k d(i,j)^2) / (n_i + n_j + n_k)``.

    With all sizes 1 this reproduces ``scipy.cluster.hierarchy.linkage(centroids, "ward")``; with sizes
    ``n_i`` it reproduces the top ``m - 1`` merges of exact Ward on data where centroid ``i`` is
    repeated ``n_i`` times. Cost ``O(m^2)`` memory and typically ``O(m^2)`` time.

    Parameters
    ----------
    centroids : ndarray of shape (m, d)
        Cluster centroids (e.g. micro-cluster means).
    sizes : ndarray of shape (m,)
        Cluster sizes or total survey weights, all > 0.

    Returns
    -------
    ndarray of shape (m - 1, 4)
        A valid scipy linkage matrix: merged ids, height ``sqrt(2 * Delta)`` (scipy's Ward height),
        and the number of *leaves* (centroids) under the new cluster (scipy requires leaf counts; the
        sizes enter only the heights, see :func:`subtree_sizes` for the total size of each merge).
    """
    C = check_matrix(centroids, "centroids", min_rows=2)
    size = _check_weights(sizes, C.shape[0], "sizes").copy()
    m = C.shape[0]
    sq = (C * C).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * C @ C.T, 0.0)
    d2 *= 2.0 * size[:, None] * size[None, :] / (size[:, None] + size[None, :])
    np.fill_diagonal(d2, np.inf)
    active = np.ones(m, dtype=bool)
    node = np.arange(m)  # scipy id of the cluster held in each slot
    leaves = np.ones(m)
    row_min = d2.min(axis=1)
    row_arg = d2.argmin(axis=1)
    Z = np.empty((m - 1, 4))
    for step in range(m - 1):
        i = int(np.argmin(np.where(active, row_min, np.inf)))
        j = int(row_arg[i])
        dij = d2[i, j]
        ni, nj = size[i], size[j]
        a, b = sorted((node[i], node[j]))
        Z[step] = (a, b, np.sqrt(dij), leaves[i] + leaves[j])
        leaves[i] += leaves[j]
        # merged cluster goes to slot i, slot j is retired
        nk = size
        new = ((ni + nk) * d2[i] + (nj + nk) * d2[j] - nk * dij) / (ni + nj + nk)
        active[j] = False
        new[~active] = np.inf
        new[i] = np.inf
        d2[i, :] = new
        d2[:, i] = new
        d2[j, :] = np.inf
        d2[:, j] = np.inf
        size[i] = ni + nj
        node[i] = m + step
        row_min[j] = np.inf
        # rows whose nearest neighbour was i or j: recompute; others can only get closer to the new one
        stale = active & ((row_arg == i) | (row_arg == j))
        stale[i] = True
        for k in np.flatnonzero(stale):
            row_arg[k] = int(np.argmin(d2[k]))
            row_min[k] = d2[k, row_arg[k]]
        closer = active & ~stale & (new < row_min)
        row_min[closer] = new[closer]
        row_arg[closer] = i
    # Ward has no inversions, but ties can come out of order: make heights monotone for scipy
    order = np.argsort(Z[:, 2], kind="stable")
    if not np.array_equal(order, np.arange(m - 1)):
        Z = _reorder(Z, order, m)
    return Z


def subtree_sizes(Z: np.ndarray, leaf_sizes: np.ndarray) -> np.ndarray:
    """Total size of every node of a linkage: ``leaf_sizes`` for ids ``< m``, sums for merges."""
    m = Z.shape[0] + 1
    out = np.concatenate([np.asarray(leaf_sizes, dtype=float), np.zeros(m - 1)])
    for t, (a, b) in enumerate(Z[:, :2].astype(np.int64)):
        out[m + t] = out[a] + out[b]
    return out


def _reorder(Z: np.ndarray, order: np.ndarray, m: int) -> np.ndarray:
    """Renumber a linkage matrix after sorting its rows (ids of merged clusters follow the row order)."""
    new_id = np.empty(m - 1, dtype=np.int64)
    new_id[order] = m + np.arange(m - 1)
    out = Z[order].copy()
    for c in (0, 1):
        ids = out[:, c].astype(np.int64)
        merged = ids >= m
        ids[merged] = new_id[ids[merged] - m]
        out[:, c] = ids
    out[:, :2] = np.sort(out[:, :2], axis=1)
    return out


# --- choosing the cut -----------------------------------------------------------------------------
def cut_table(Z: np.ndarray, n_obs: float, total_ss: float, base_ss: float = 0.0,
              k_range: tuple[int, int] = (2, 12)) -> pd.DataFrame:
    """Statistics of every candidate cut of a Ward tree, computed from the merge heights alone.

    Ward merge ``t`` raises the within-cluster sum of squares by ``h_t^2 / 2``, so the within sum of
    squares of the ``k``-cluster cut is ``W(k) = base_ss + sum of h^2/2 over the first N - k merges``
    (``N`` leaves; ``base_ss`` is the within sum of squares of the leaves themselves, 0 for exact Ward).

    Parameters
    ----------
    Z : ndarray
        Ward linkage matrix (scipy heights ``sqrt(2 Delta)``).
    n_obs : float
        Number (or total weight) of users.
    total_ss : float
        Total sum of squares of the users around their mean.
    base_ss : float, default 0
        Within sum of squares of the tree's leaves (micro-clusters).
    k_range : (int, int), default (2, 12)
        Smallest and largest number of segments considered.

    Returns
    -------
    DataFrame indexed by ``k`` with ``merge_height`` (height of the merge that would take ``k`` to
    ``k - 1`` segments), ``height_ratio`` (that height over the previous merge's: the relative gap
    left by cutting at ``k``), ``within_ss``, ``r2`` (share of the total sum of squares between
    segments) and ``calinski_harabasz`` ((B / (k - 1)) / (W / (n - k))).
    """
    h = np.asarray(Z)[:, 2]
    n_leaves = len(h) + 1
    k_min, k_max = k_range
    if not 2 <= k_min <= k_max <= n_leaves - 1:
        raise ValueError(f"k_range must satisfy 2 <= k_min <= k_max <= {n_leaves - 1} "
                         f"(number of leaves - 1), got {k_range}")
    cum = np.concatenate([[0.0], np.cumsum(h**2 / 2.0)])  # cum[t] = ESS added by the first t merges
    rows = []
    for k in range(k_min, k_max + 1):
        within = base_ss + cum[n_leaves - k]
        between = total_ss - within
        rows.append({
            "k": k,
            "merge_height": h[n_leaves - k],
            "height_ratio": h[n_leaves - k] / h[n_leaves - k - 1] if h[n_leaves - k - 1] > 0 else np.inf,
            "within_ss": within,
            "r2": between / total_ss,
            "calinski_harabasz": (between / (k - 1)) / (within / (n_obs - k)),
        })
    return pd.DataFrame(rows).set_index("k")


def choose_k(table: pd.DataFrame, rule: str = "gap") -> int:
    """The number of segments a cut rule picks from :func:`cut_table`.

    ``"gap"`` picks the largest relative gap in merge heights: the ``k`` whose next merge is the
    largest jump, as a ratio, over the merge before it, i.e. the cut that stays put over the widest
    range of heights on a log scale (scale-free, so it does not favour the top merges just because
    they are tall). ``"ch"`` maximises the Calinski-Harabasz ratio (between- over within-segment
    variance, each per degree of freedom), which is known to favour ``k = 2`` when one direction
    dominates the variance.
    """
    if rule == "ch":
        return int(table["calinski_harabasz"].idxmax())
    if rule == "gap":
        return int(table["height_ratio"].idxmax())
    raise ValueError(f"rule must be one of {CUT_RULES}, got {rule!r}")


def null_height_ratios(X: np.ndarray, k_range: tuple[int, int] = (2, 12), n_ref: int = 2000,
                       n_rep: int = 5, random_state: int = 0) -> pd.DataFrame:
    """Height ratios Ward produces on data with no segments: a reference for :func:`choose_k`'s gap.

    Draws ``n_rep`` samples of ``n_ref`` users from one Gaussian with the mean and covariance of ``X``
    (the "one segment" null: same scale and correlations, no clusters), builds their exact Ward trees
    and returns, per ``k``, the mean and maximum over replicates of the ``height_ratio`` of
    :func:`cut_table`. A planted cut shows as an observed ratio well above the null's maximum; ratios
    are nearly independent of the number of users, so ``n_ref`` can be small.

    Returns
    -------
    DataFrame indexed by ``k`` with ``null_ratio_mean`` and ``null_ratio_max``.
    """
    X = check_matrix(X, min_rows=2)
    if n_ref < k_range[1] + 2 or n_rep < 1:
        raise ValueError(f"need n_ref >= k_max + 2 = {k_range[1] + 2} and n_rep >= 1, got {n_ref}, {n_rep}")
    rng = np.random.default_rng(random_state)
    mean, cov = X.mean(axis=0), np.atleast_2d(np.cov(X, rowvar=False))
    reps = []
    for _ in range(n_rep):
        R = rng.multivariate_normal(mean, cov, size=n_ref, method="eigh")
        reps.append(cut_table(hierarchy.linkage(R, "ward"), n_ref, 1.0, 0.0, k_range)["height_ratio"])
    ratios = pd.concat(reps, axis=1)
    return pd.DataFrame({"null_ratio_mean": ratios.mean(axis=1), "null_ratio_max": ratios.max(axis=1)})


def cut_labels(Z: np.ndarray, k: int) -> np.ndarray:
    """Leaf labels ``0..k-1`` of the ``k``-segment cut, numbered by decreasing leaf count then id."""
    raw = hierarchy.fcluster(Z, t=k, criterion="maxclust")
    if len(np.unique(raw)) != k:
        raise ValueError(f"the tree cannot be cut into exactly {k} segments (tied merge heights); "
                         "choose another k")
    return _relabel_by_size(raw - 1, np.ones(len(raw)))


def _relabel_by_size(labels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    uniq = np.unique(labels)
    mass = np.array([weight[labels == u].sum() for u in uniq])
    order = uniq[np.lexsort((uniq, -mass))]
    mapping = np.empty(uniq.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


# --- the segmenter --------------------------------------------------------------------------------
# the constructor parameters are the fields (sklearn: __init__ only stores them); sklearn's own repr,
# and identity equality/hash as for any estimator
@dataclass(eq=False, repr=False)
class HierarchicalSegmenter(ClusterMixin, BaseEstimator):
    """Ward segmentation with an automatic choice between exact and two-stage Ward.

    Parameters
    ----------
    n_clusters : int or None, default None
        Number of segments; ``None`` chooses it with ``cut_rule`` over ``k_range``.
    method : {"auto", "exact", "two_stage"}, default "auto"
        ``"auto"`` uses exact Ward up to ``exact_max_n`` users, two-stage above.
    n_micro : int, default 400
        Number of micro-clusters of the two-stage method.
    exact_max_n : int, default 5000
        Size limit of exact Ward under ``method="auto"``.
    k_range : (int, int), default (2, 12)
        Candidate numbers of segments when ``n_clusters`` is None.
    cut_rule : {"gap", "ch"}, default "gap"
        See :func:`choose_k`.
    fit_sample : int or None, default 200_000
        Two-stage only: fit the micro-clusters on a random sample of this many users, then assign
        everyone (centroids are then recomputed as exact means over all users).
    random_state : int, default 0
        Seed of the micro-clustering and of the sample.

    Attributes
    ----------
    method_ : str
        Method actually used.
    linkage_ : ndarray
        Ward linkage over users (exact) or micro-clusters (two-stage).
    leaf_sizes_ : ndarray
        Total weight under each leaf of the tree (1 per user for exact Ward).
    leaf_labels_ : ndarray
        Segment of every leaf of the tree.
    micro_labels_ : ndarray or None
        Micro-cluster of every user (two-stage).
    centroids_ : ndarray of shape (n_clusters_, d)
        Weighted segment means, used by :meth:`predict`.
    cut_table_ : DataFrame
        :func:`cut_table` of the tree.
    n_clusters_ : int
        Chosen number of segments.
    labels_ : ndarray
        Segment of every user of the fitted data, ``0`` the largest.
    """

    n_clusters: int | None = None
    method: str = "auto"
    n_micro: int = 400
    exact_max_n: int = EXACT_MAX_N
    k_range: tuple[int, int] = (2, 12)
    cut_rule: str = "gap"
    fit_sample: int | None = 200_000
    random_state: int = 0

    def fit(self, X: np.ndarray, y=None, sample_weight: np.ndarray | None = None) -> "HierarchicalSegmenter":
        """Build the Ward tree of ``X`` (users x standardised features) and cut it.

        Parameters
        ----------
        X : ndarray of shape (n, d)
            Standardised features (``helpers.features.FeatureBuilder``), no missing values.
        y : ignored
        sample_weight : ndarray of shape (n,), optional
            Positive user weights (e.g. survey weights). The two-stage method uses them as
            micro-cluster sizes (the tree then minimises the *weighted* sum of squares); exact Ward
            cannot (scipy's linkage takes no weights) and raises if they are unequal.
        """
        X = check_matrix(X, min_rows=2)
        w = _check_weights(sample_weight, X.shape[0])
        if self.method not in ("auto", "exact", "two_stage"):
            raise ValueError(f"method must be 'auto', 'exact' or 'two_stage', got {self.method!r}")
        if self.cut_rule not in CUT_RULES:
            raise ValueError(f"cut_rule must be one of {CUT_RULES}, got {self.cut_rule!r}")
        n = X.shape[0]
        method = self.method
        if method == "auto":
            method = "exact" if n <= self.exact_max_n else "two_stage"
        if method == "exact" and sample_weight is not None and not np.allclose(w, w[0]):
            raise ValueError("exact Ward cannot use unequal sample_weight (scipy's linkage has no weights); "
                             "use method='two_stage' or drop the weights")
        mean = np.average(X, axis=0, weights=w)
        total_ss = float((w * _row_ss(X, lambda s, e: mean)).sum())
        if method == "exact":
            self.linkage_ = hierarchy.linkage(X, method="ward")
            self.micro_labels_ = None
            base_ss, leaf_w = 0.0, w
        else:
            self.micro_labels_, centres, leaf_w = micro_clusters(
                X, self.n_micro, sample_weight=w, fit_sample=self.fit_sample, random_state=self.random_state)
            self.linkage_ = weighted_ward_linkage(centres, leaf_w)
            base_ss = float((w * _row_ss(X, lambda s, e: centres[self.micro_labels_[s:e]])).sum())
        n_leaves = self.linkage_.shape[0] + 1
        k_lo, k_hi = self.k_range
        k_range = (k_lo, min(k_hi, n_leaves - 1))
        self.cut_table_ = cut_table(self.linkage_, w.sum(), total_ss, base_ss, k_range)
        if self.n_clusters is not None and not 1 <= self.n_clusters <= n_leaves:
            raise ValueError(f"n_clusters must be between 1 and the number of tree leaves ({n_leaves}), "
                             f"got {self.n_clusters}")
        self.n_clusters_ = int(self.n_clusters or choose_k(self.cut_table_, self.cut_rule))
        raw = hierarchy.fcluster(self.linkage_, t=self.n_clusters_, criterion="maxclust") - 1
        if len(np.unique(raw)) != self.n_clusters_:
            raise ValueError(f"the Ward tree cannot be cut into exactly {self.n_clusters_} segments "
                             "(tied merge heights); choose another n_clusters")
        self.leaf_labels_ = _relabel_by_size(raw, leaf_w)
        self.leaf_sizes_ = leaf_w
        self.labels_ = (self.leaf_labels_ if self.micro_labels_ is None
                        else self.leaf_labels_[self.micro_labels_])
        self.method_ = method
        self.centroids_ = np.vstack([np.average(X[self.labels_ == s], axis=0, weights=w[self.labels_ == s])
                                     for s in range(self.n_clusters_)])
        return self

    def fit_predict(self, X: np.ndarray, y=None, sample_weight: np.ndarray | None = None) -> np.ndarray:
        """Fit and return :attr:`labels_`."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X: np.ndarray, chunk: int = 16_384) -> np.ndarray:
        """Segment of new users: the nearest segment mean.

        This is the k-means assignment rule; Ward's cost of adding one user to a segment of size
        ``n_s``, ``n_s / (n_s + 1) * distance^2``, differs from it only by that factor (about 1 for
        segments of hundreds of users). Two-stage labels of the fitted users come from their
        micro-cluster instead, so ``predict(X)`` can differ from ``labels_`` near segment boundaries.
        """
        if not hasattr(self, "centroids_"):
            raise ValueError("this HierarchicalSegmenter is not fitted yet; call fit(X) first")
        X = check_matrix(X, min_rows=2)
        if X.shape[1] != self.centroids_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the segmenter was fitted on "
                             f"{self.centroids_.shape[1]}")
        return _nearest(X, self.centroids_, chunk)

    def segment_sizes(self) -> pd.Series:
        """Number of fitted users per segment."""
        return pd.Series(np.bincount(self.labels_, minlength=self.n_clusters_),
                         index=pd.RangeIndex(self.n_clusters_, name="hier_segment"), name="users")


#: rows per block of :func:`_row_ss`
SS_CHUNK = 2**18


def _row_ss(X: np.ndarray, centre, chunk: int = SS_CHUNK) -> np.ndarray:
    """Every row's squared distance ``((X - c) ** 2).sum(axis=1)`` to its centre ``centre(start, stop)`` (a row
    or the rows' centres), block by block: each row's sum is the same as on the whole matrix, without the two
    (users x features) temporaries of that expression (0.8 GB at 10M users)."""
    out = np.empty(X.shape[0])
    for s in range(0, X.shape[0], chunk):
        e = min(s + chunk, X.shape[0])
        out[s:e] = ((X[s:e] - centre(s, e)) ** 2).sum(axis=1)
    return out


def _nearest(X: np.ndarray, centres: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    out = np.empty(X.shape[0], dtype=np.int64)
    csq = (centres**2).sum(axis=1)
    for s in range(0, X.shape[0], chunk):
        block = X[s:s + chunk]
        out[s:s + chunk] = np.argmin(csq[None, :] - 2.0 * block @ centres.T, axis=1)
    return out


def micro_clusters(X: np.ndarray, n_micro: int = 400, sample_weight: np.ndarray | None = None,
                   fit_sample: int | None = 200_000, random_state: int = 0,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage one of two-stage Ward: summarise users by ``n_micro`` k-means micro-clusters.

    Fits :class:`~sklearn.cluster.MiniBatchKMeans` (on a random sample of ``fit_sample`` users when
    there are more), assigns every user to its nearest centre, drops empty micro-clusters and
    recomputes each centroid as the exact (weighted) mean of its users, so that the within sum of
    squares decomposes exactly into within- and between-micro-cluster parts.

    Returns
    -------
    labels : ndarray of shape (n,)
        Micro-cluster of every user, ``0..m-1``.
    centroids : ndarray of shape (m, d)
        Weighted means of the micro-clusters.
    sizes : ndarray of shape (m,)
        Total weight (user count when unweighted) of each micro-cluster.
    """
    X = check_matrix(X, min_rows=2)
    n = X.shape[0]
    w = _check_weights(sample_weight, n)
    if not 2 <= n_micro <= n:
        raise ValueError(f"n_micro must be between 2 and the number of users ({n}), got {n_micro}")
    rng = np.random.default_rng(random_state)
    idx = (np.sort(rng.choice(n, size=fit_sample, replace=False))
           if fit_sample is not None and fit_sample < n else np.arange(n))
    # one k-means++ start is enough: the micro-clusters only need to tile the data finely, not be optimal
    km = MiniBatchKMeans(n_clusters=n_micro, batch_size=4096, n_init=1, max_no_improvement=20,
                         random_state=random_state)
    km.fit(X[idx], sample_weight=w[idx])
    labels = km.predict(X)  # chunked nearest-centre search, no n x m distance matrix
    used, labels = np.unique(labels, return_inverse=True)
    sizes = np.bincount(labels, weights=w)
    centroids = np.vstack([np.bincount(labels, weights=w * X[:, j]) for j in range(X.shape[1])]).T
    centroids /= sizes[:, None]
    return labels, centroids, sizes


# --- agreement between two segmentations ----------------------------------------------------------
def pair_labels(a: pd.Series, b: pd.Series, sep: str = " ") -> np.ndarray:
    """``(a.astype(str) + sep + b).to_numpy()`` of two aligned columns (e.g. planted segment and its name), with
    each distinct label built once and shared by its rows: 10M labels as one string object per user took
    ~0.7 GB, as shared objects 8 bytes a row. Missing stays missing as in that expression."""
    a, b = pd.Series(a).reset_index(drop=True), pd.Series(b).reset_index(drop=True)
    if len(a) != len(b):
        raise ValueError(f"a ({len(a)}) and b ({len(b)}) must have the same length")
    ca, ua = pd.factorize(a, use_na_sentinel=True)
    cb, ub = pd.factorize(b, use_na_sentinel=True)
    first, inverse = np.unique((ca.astype(np.int64) + 1) * (len(ub) + 1) + (cb + 1), return_index=True,
                               return_inverse=True)[1:]
    labels = (a.iloc[first].astype(str) + sep + b.iloc[first]).to_numpy(dtype=object)
    return labels[inverse.reshape(-1)]



def agreement(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("a", "b"),
              normalize: bool = False) -> tuple[float, pd.DataFrame]:
    """ARI between two labelings and their cross-table with ``b``'s columns matched to ``a``'s rows.

    Columns are reordered by the Hungarian assignment that maximises the diagonal, so a good
    agreement shows as a heavy diagonal; unmatched columns (when the numbers of segments differ)
    come last.

    Parameters
    ----------
    a, b : array-like of shape (n,)
        Segment labels of the same users, in the same order.
    names : (str, str)
        Row and column axis names of the cross-table.
    normalize : bool, default False
        Row shares instead of counts.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"labelings must be 1-D and of equal length, got shapes {a.shape} and {b.shape}")
    # the cross-table counted on sorted codes (pd.crosstab groups 1M labels, strings for the truth, which was most
    # of the comparison): the same table, and the ARI of the codes is the ARI of the labels bit for bit (the codes
    # are in the order of np.unique's sorted classes, so sklearn builds the same contingency matrix)
    ca, ua = pd.factorize(a, sort=True)
    cb, ub = pd.factorize(b, sort=True)
    if (ca < 0).any() or (cb < 0).any():  # missing labels: crosstab's rules (rows with a missing label dropped)
        tab = pd.crosstab(pd.Series(a, name=names[0]), pd.Series(b, name=names[1]))
        ari = float(adjusted_rand_score(a, b))
    else:
        counts = np.bincount(ca * len(ub) + cb, minlength=len(ua) * len(ub)).reshape(len(ua), len(ub))
        tab = pd.DataFrame(counts, index=pd.Index(ua, name=names[0]), columns=pd.Index(ub, name=names[1]))
        ari = float(adjusted_rand_score(ca, cb))
    r, c = linear_sum_assignment(-tab.to_numpy())
    matched = [tab.columns[j] for _, j in sorted(zip(r, c))]
    cols = matched + [col for col in tab.columns if col not in matched]
    tab = tab[cols]
    if normalize:
        tab = tab.div(tab.sum(axis=1), axis=0)
    return ari, tab


# --- figure ---------------------------------------------------------------------------------------
def plot_dendrogram(Z: np.ndarray, k: int, p: int = 30, leaf_sizes: np.ndarray | None = None, ax=None):
    """Truncated dendrogram (last ``p`` merges) with the ``k``-segment cut drawn as a dashed line.

    Each truncated leaf is labelled with the number of users under it: ``leaf_sizes`` gives the users
    per tree leaf (micro-cluster sizes of the two-stage method); ``None`` means one user per leaf.
    Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4.5))
    h = Z[:, 2]
    cut = (h[-k] + h[-k + 1]) / 2 if k > 1 else h[-1] * 1.05
    m = Z.shape[0] + 1
    sizes = subtree_sizes(Z, np.ones(m) if leaf_sizes is None else leaf_sizes)
    hierarchy.dendrogram(Z, truncate_mode="lastp", p=p, color_threshold=cut, ax=ax, leaf_rotation=90,
                         leaf_label_func=lambda i: f"({sizes[i]:,.0f})", above_threshold_color="grey")
    ax.axhline(cut, ls="--", color="black", lw=1)
    ax.text(ax.get_xlim()[0], cut, f" cut: k = {k}", va="bottom", ha="left")
    return ax
