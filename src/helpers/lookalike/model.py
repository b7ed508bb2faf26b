"""The two scorers: cosine similarity to the seed centroid and a cross-fitted, calibrated positive-unlabelled propensity model."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from .features import CHUNK_ROWS, _Rows, column_stats, rows_mean


Estimator = Literal["hgb", "rf"]


Calibration = Literal["isotonic", "sigmoid"]


#: training sample caps (issue 20): folds are fitted on all labelled rows up to MAX_LABELLED and a seeded
#: sample of at most MAX_UNLABELLED unlabelled rows; every other row is scored by the fold models' mean
MAX_LABELLED = 20_000


MAX_UNLABELLED = 40_000


#: rows per block of the fold models' scoring of the rows outside the training sample. Each tree walks
#: every row of a block, reading the columns its splits use: with 16k rows those columns (128 kB each)
#: stay in the CPU caches from tree to tree, which made prediction 25-30 % faster than blocks of
#: CHUNK_ROWS (190k rows x 100 features: 1.1 s instead of 1.5 s CPU per model), for identical scores
PREDICT_ROWS = 16_384


class CosineLookalike:
    """Baseline: cosine similarity of each user's standardized features to the seed's centroid.

    Assumes the seed is one compact cloud around its mean and every (standardized) feature matters
    equally; it cannot learn that some features are irrelevant or that the seed is multi-modal.
    """

    def fit(self, X: pd.DataFrame, labelled: np.ndarray) -> "CosineLookalike":
        """Store the panel's scaling and the centroid of the ``labelled`` rows (standardized)."""
        labelled = _check_labels(X, labelled)
        # the rows are read as float64 block by block (features.rows_matrix): neither the float matrix of
        # the panel nor the labelled rows' copy (1.1 GB for a seed of 1.3M users) is held at once
        read = _Rows(X)
        self.mean_, sd = column_stats(X)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.centroid_ = rows_mean(read, np.flatnonzero(labelled), lambda b: (b - self.mean_) / self.scale_)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Cosine similarity in [-1, 1] of every row to the centroid."""
        read = _Rows(X)
        out = np.empty(len(read))
        norm_c = np.linalg.norm(self.centroid_)
        # by blocks of rows: each row's similarity is its own, and the standardized copy of the whole
        # panel (plus the squares of the norm) cost 1.7 GB at 1M users
        for i in range(0, len(read), CHUNK_ROWS):
            z = (read(slice(i, i + CHUNK_ROWS)) - self.mean_) / self.scale_
            num = z @ self.centroid_
            den = np.linalg.norm(z, axis=1) * norm_c
            out[i:i + CHUNK_ROWS] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return out


def _check_labels(X: pd.DataFrame, labelled: np.ndarray) -> np.ndarray:
    y = np.asarray(labelled)
    if y.shape != (len(X),):
        raise ValueError(f"labelled must have one entry per row of X ({len(X)}), got shape {y.shape}")
    y = y.astype(bool)
    if y.sum() < 2 or (~y).sum() < 2:
        raise ValueError(f"need at least 2 labelled and 2 unlabelled rows, got {int(y.sum())} labelled "
                         f"of {len(y)}")
    return y


def make_estimator(estimator: Estimator = "hgb", random_state: int = 0):
    """The propensity classifier: histogram gradient boosting (default) or a random forest."""
    if estimator == "hgb":
        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, max_leaf_nodes=15,
                                              min_samples_leaf=40, l2_regularization=1.0,
                                              early_stopping=False, random_state=random_state)
    if estimator == "rf":
        return RandomForestClassifier(n_estimators=150, min_samples_leaf=20, max_features="sqrt",
                                      n_jobs=1, random_state=random_state)
    raise ValueError(f"estimator must be 'hgb' or 'rf', got {estimator!r}")


def training_sample(labelled: np.ndarray, max_labelled: int | None = MAX_LABELLED,
                    max_unlabelled: int | None = MAX_UNLABELLED, seed: int = 0) -> np.ndarray:
    """Boolean mask of the rows the folds are fitted on: every labelled row (at most ``max_labelled``,
    a seeded random subset beyond) and a seeded random sample of at most ``max_unlabelled`` unlabelled
    rows. ``None`` caps: all rows."""
    y = np.asarray(labelled, bool)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(y), bool)
    for rows, cap in ((np.flatnonzero(y), max_labelled), (np.flatnonzero(~y), max_unlabelled)):
        if cap is None or len(rows) <= cap:
            keep[rows] = True
        else:
            keep[rng.choice(rows, size=int(cap), replace=False)] = True
    return keep


class PropensityLookalike:
    """Supervised lookalike model in the positive-unlabelled framing, with probability calibration.

    The classifier learns to separate labelled seed members (``s = 1``) from everybody else (``s = 0``,
    *unlabelled*: unseen seed-like users and true non-members alike). The folds are fitted on a seeded
    training sample (:func:`training_sample`: all labelled rows up to ``max_labelled`` and at most
    ``max_unlabelled`` unlabelled ones); every training row is scored by a model fitted on the other folds
    (out-of-fold), every other row by the mean of the fold models (none of which saw it). A 1-D
    calibrator (isotonic or Platt) fitted on the training rows' out-of-fold scores, weighted by the
    inverse sampling rates, maps scores to ``P(s = 1 | x)`` on the whole panel's scale. That is the
    probability of being **labelled**, not of being seed-like: dividing by ``c = P(s = 1 | seed-like)``
    (:meth:`label_frequency`) gives ``P(seed-like | x)`` only when the labelled members are a random
    sample of all seed-like users ("selected completely at random").

    Parameters
    ----------
    estimator : {"hgb", "rf"}
    n_folds : int
        Folds of the out-of-fold scoring (stratified on ``s``).
    calibration : {"isotonic", "sigmoid"}
    refit : bool
        Also fit one model on the training sample, used by :meth:`predict_proba` for new users.
    random_state : int
        Seeds the sample, the folds and the estimator; same seed, same scores.
    n_threads : int
        OpenMP threads of :meth:`predict_raw` (default 1; results do not depend on it).
    max_labelled, max_unlabelled : int or None
        Training-sample caps (None: every row).
    n_jobs : int
        Folds fitted in parallel (default 2: both cores), each single-threaded; results do not depend on it.
    """

    def __init__(self, estimator: Estimator = "hgb", n_folds: int = 5, calibration: Calibration = "isotonic",
                 refit: bool = True, random_state: int = 0, n_threads: int = 1,
                 max_labelled: int | None = MAX_LABELLED, max_unlabelled: int | None = MAX_UNLABELLED,
                 n_jobs: int = 2) -> None:
        if calibration not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration must be 'isotonic' or 'sigmoid', got {calibration!r}")
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        make_estimator(estimator)  # validates the name
        self.estimator, self.n_folds, self.calibration = estimator, n_folds, calibration
        self.refit, self.random_state, self.n_threads = refit, random_state, n_threads
        self.max_labelled, self.max_unlabelled = max_labelled, max_unlabelled
        self.n_jobs = max(1, int(n_jobs))

    def fit(self, X: pd.DataFrame, labelled: np.ndarray) -> "PropensityLookalike":
        """Out-of-fold raw scores on the training sample, fold-mean scores elsewhere, the calibrator.

        Sets ``sample_`` (training rows), ``oof_raw_`` (ranking score of every row), ``oof_proba_``
        (calibrated, the calibrator itself cross-fitted over the folds for training rows: use it to
        *assess* calibration), ``calibrator_``, ``proba_`` (``calibrator_`` applied to ``oof_raw_``: the
        probabilities to report), ``folds_`` (row indices per fold) and ``fold_models_``.
        """
        y = _check_labels(X, labelled)
        if y.sum() < self.n_folds:
            raise ValueError(f"{int(y.sum())} labelled rows is fewer than n_folds={self.n_folds}")
        self.columns_ = list(X.columns)
        # rows read as float64 when needed (features.rows_matrix): the training sample once, the other
        # rows block by block -- never the float matrix of the whole panel (8.5 GB at 10M users)
        read = _Rows(X)
        self.sample_ = training_sample(y, self.max_labelled, self.max_unlabelled, self.random_state)
        rows = np.flatnonzero(self.sample_)
        rest = np.flatnonzero(~self.sample_)
        a_s = read(rows)  # = X.to_numpy(float)[rows]
        ys = y[rows]
        # inverse sampling rates: the calibrator sees the panel's mix, not the sample's
        rate_l = ys.sum() / max(1, y.sum())
        rate_u = (~ys).sum() / max(1, (~y).sum())
        self.sample_weight_ = np.where(ys, 1 / rate_l, 1 / rate_u)
        cv = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        splits = list(cv.split(a_s, ys))

        def fit_fold(k: int):
            # OpenMP's thread count is per thread: the limit set around the pool does not reach this
            # worker, whose boosting then ran on 2 OpenMP threads beside the other fold's (4 on 2 cores)
            with threadpool_limits(1, user_api="openmp"):
                tr, te = splits[k]
                m = make_estimator(self.estimator, self.random_state + k).fit(a_s[tr], ys[tr])
                return m, _predict(m, a_s[te])

        def predict_block(m, i: int) -> np.ndarray:
            # the other rows by blocks (each row's score is its own): a column-major copy of all of them
            # at once was 0.8 GB at 1M users, and blocks keep both cores busy beside the odd fifth fit
            with threadpool_limits(1, user_api="openmp"):
                return _predict(m, read(rest[i:i + PREDICT_ROWS]))

        starts = range(0, len(rest), PREDICT_ROWS)
        # both cores: folds run in parallel Python threads (the boosting releases the GIL), each with ONE
        # OpenMP thread -- multi-threaded OpenMP on an oversubscribed machine is ~50x slower (busy waiting)
        with threadpool_limits(1):
            if self.n_jobs > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(self.n_jobs) as pool:
                    fits = [pool.submit(fit_fold, k) for k in range(self.n_folds)]
                    fitted, pending = [], []
                    for f in fits:  # a fold's blocks are queued as soon as its model exists
                        fitted.append(f.result())
                        pending.append([pool.submit(predict_block, fitted[-1][0], i) for i in starts])
                    scored = [[p.result() for p in fold] for fold in pending]
            else:
                fitted = [fit_fold(k) for k in range(self.n_folds)]
                scored = [[predict_block(m, i) for i in starts] for m, _ in fitted]
            self.oof_raw_ = np.zeros(len(y))
            self.folds_, self.fold_models_ = [], []
            for (tr, te), (m, p_te), p_rest in zip(splits, fitted, scored):
                self.oof_raw_[rows[te]] = p_te
                if len(rest):  # fold by fold, as before: the same sum in the same order
                    self.oof_raw_[rest] += np.concatenate(p_rest) / self.n_folds
                self.folds_.append(rows[te])
                self.fold_models_.append(m)
            self.model_ = (make_estimator(self.estimator, self.random_state).fit(a_s, ys)
                           if self.refit else None)
        # cross-fitted calibration on the training rows
        self.oof_proba_ = np.empty(len(y))
        w_all = np.ones(len(y))
        w_all[rows] = self.sample_weight_
        for te in self.folds_:
            other = self.sample_.copy()
            other[te] = False
            self.calibrator_ = self._fit_calibrator(self.oof_raw_[other], y[other], w_all[other])
            self.oof_proba_[te] = self._calibrate(self.oof_raw_[te])
        self.calibrator_ = self._fit_calibrator(self.oof_raw_[rows], ys, self.sample_weight_)
        if len(rest):
            self.oof_proba_[rest] = self._calibrate(self.oof_raw_[rest])
        self.proba_ = self._calibrate(self.oof_raw_)
        self.labelled_ = y
        return self

    def _fit_calibrator(self, raw: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
        if self.calibration == "isotonic":
            return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y, sample_weight=w)
        return LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y, sample_weight=w)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration == "isotonic":
            return self.calibrator_.predict(raw)
        return self.calibrator_.predict_proba(_logit(raw)[:, None])[:, 1]

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated score of the refitted model for new users (a ranking score)."""
        if self.model_ is None:
            raise ValueError("fit with refit=True to score new users; use oof_raw_ for the fitted rows")
        if list(X.columns) != self.columns_:
            raise ValueError("X must have the same feature columns, in the same order, as in fit")
        with threadpool_limits(self.n_threads):
            return _predict(self.model_, _Rows(X)())

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated ``P(s = 1 | x)`` (probability of being *labelled*) for new users."""
        return self._calibrate(self.predict_raw(X))

    def label_frequency(self, rows: np.ndarray | None = None) -> float:
        """Elkan-Noto estimate of ``c = P(s = 1 | seed-like)``: mean calibrated score of labelled rows.

        Exact when labelled and non-seed users are separable; with overlap it is biased low, so
        ``P(seed-like | x)`` estimated as ``P(s = 1 | x) / c`` then overstates it; the ranking is unchanged.
        ``rows``: restrict to these labelled rows (boolean mask), default all labelled rows.
        """
        m = self.labelled_ if rows is None else (np.asarray(rows, bool) & self.labelled_)
        return float(self.oof_proba_[m].mean())


def _predict(model, a: np.ndarray) -> np.ndarray:
    """``P(s = 1)`` of a fitted classifier for the rows of ``a``, passed column-major.

    Tree ensembles walk every row down every tree; with the rows stored column by column the split
    feature of a node is read from one contiguous column, which made gradient-boosting prediction 3.4x
    faster (200k rows x 106 features: 0.94 s instead of 3.2 s CPU) for identical scores.
    """
    return model.predict_proba(np.asfortranarray(a))[:, 1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def pu_adjust(proba_labelled: np.ndarray, c: float) -> np.ndarray:
    """``P(seed-like | x) = min(1, P(labelled | x) / c)`` under selected-completely-at-random labels."""
    if not 0 < c <= 1:
        raise ValueError(f"label frequency c must be in (0, 1], got {c}")
    return np.minimum(1.0, np.asarray(proba_labelled, float) / c)
