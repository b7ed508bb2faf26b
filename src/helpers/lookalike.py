"""Lookalike modelling: score every user's resemblance to a seed audience, and evaluate it honestly.

A *seed* (a segment, the top spenders, the converters or a list of ``user_id``) is expanded with two
scorers: a cosine-similarity-to-centroid baseline and a supervised propensity model in the
positive-unlabelled (PU) framing -- seed members are *labelled* positives, everybody else is *unlabelled*
(a mix of unseen positives and negatives). The propensity model's out-of-fold probabilities are calibrated
to ``P(labelled | x)``; under "selected completely at random" labelling, ``P(positive | x) =
P(labelled | x) / c`` with ``c = P(labelled | positive)`` (Elkan & Noto, 2008). Evaluation hides part of
the seed and asks how well each scorer finds it again (lift, cumulative gains, precision at the audience
sizes a planner buys); reason codes and grouped permutation importance say *why* in marketer language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from . import schema as S

Estimator = Literal["hgb", "rf"]
Calibration = Literal["isotonic", "sigmoid"]
#: audience sizes a planner buys, as shares of the candidate pool
PLANNER_SHARES = (0.01, 0.05, 0.10)


# --- seeds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    """A seed audience: a name, a human-readable definition (for the export manifest) and its members."""

    name: str
    definition: str
    user_ids: pd.Index
    #: columns the definition is a rule on (e.g. ``avg_monthly_spend`` for top spenders); a lookalike
    #: model that sees them just re-learns the rule, so :func:`compare_seeds` can leave them out
    defined_by: tuple[str, ...] = ()

    def mask(self, user_ids: pd.Series | pd.Index) -> np.ndarray:
        """Boolean membership of each of ``user_ids`` in the seed."""
        return pd.Index(user_ids).isin(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)


def _ids(df: pd.DataFrame, rows: np.ndarray | pd.Series) -> pd.Index:
    if "user_id" not in df:
        raise ValueError("the table has no 'user_id' column; pass the unified table")
    return pd.Index(df.loc[np.asarray(rows, dtype=bool), "user_id"].astype(str), name="user_id")


def seed_from_segment(segments: pd.DataFrame, segment: int) -> Seed:
    """Members of ``segment`` in a ``segments.parquet`` frame (``user_id``, ``segment``, ``segment_name``)."""
    missing = {"user_id", "segment"} - set(segments.columns)
    if missing:
        raise ValueError(f"segments frame lacks columns {sorted(missing)}; expected the output of 04_segment_gmm")
    rows = segments["segment"].to_numpy() == segment
    if not rows.any():
        raise ValueError(f"segment {segment} has no members; segments present: "
                         f"{sorted(pd.unique(segments['segment']).tolist())}")
    name = (str(segments.loc[rows, "segment_name"].iloc[0]) if "segment_name" in segments
            else f"segment {segment}")
    return Seed(name, f"members of segment {segment} ({name}) of the GMM segmentation", _ids(segments, rows))


def seed_top_spenders(df: pd.DataFrame, share: float = 0.05) -> Seed:
    """The ``share`` of users with the highest ``avg_monthly_spend`` (ties at the threshold included)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    spend = df["avg_monthly_spend"].astype(float)
    cut = float(spend.quantile(1 - share))
    return Seed(f"Top {share:.0%} spenders", f"avg_monthly_spend >= {cut:.2f} USD/month "
                f"(top {share:.0%} of the panel)", _ids(df, (spend >= cut).to_numpy()), ("avg_monthly_spend",))


def seed_converters(df: pd.DataFrame, min_conversions: int = 5) -> Seed:
    """Users with at least ``min_conversions`` monthly conversions."""
    conv = df["monthly_conversions"].astype("Float64").fillna(0).to_numpy(float)
    return Seed(f"Converters ({min_conversions}+/month)",
                f"monthly_conversions >= {min_conversions}", _ids(df, conv >= min_conversions),
                ("monthly_conversions",))


def seed_from_ids(df: pd.DataFrame, user_ids: Sequence[str], name: str = "Custom list") -> Seed:
    """A user-supplied list of ``user_id``; every id must exist in ``df`` (duplicates are dropped)."""
    ids = pd.Index(pd.unique(pd.Series(list(user_ids), dtype="string").astype(str)), name="user_id")
    known = pd.Index(df["user_id"].astype(str))
    unknown = ids.difference(known)
    if len(unknown):
        raise ValueError(f"{len(unknown)} of {len(ids)} seed user_ids are not in the panel, e.g. "
                         f"{unknown[:5].tolist()}; check the list against the unified table's user_id")
    if len(ids) == 0:
        raise ValueError("the seed list is empty; pass at least one user_id")
    return Seed(name, f"user-supplied list of {len(ids)} user_ids", ids)


# --- features ------------------------------------------------------------------------------------
@dataclass
class Features:
    """Numeric model matrix with feature groups (one per source column) and their marketer labels.

    ``X`` rows align with the input table; ``groups`` maps a source column to its feature columns;
    ``source`` maps a group to its provenance (1st/2nd/3rd party, model); ``labels`` maps a group to a
    plain-language name; ``reason`` maps a feature column to ``(label if high, label if low)`` -- a
    ``None`` low label means "only a reason when the user has it".
    """

    X: pd.DataFrame
    groups: dict[str, list[str]]
    source: dict[str, str]
    labels: dict[str, str]
    reason: dict[str, tuple[str, str | None]] = field(default_factory=dict)


GROUP_LABELS = {
    "time_on_social_media_min": "time on social media", "time_on_streaming_video_min": "time streaming video",
    "time_on_podcasts_min": "time listening to podcasts", "monthly_conversions": "how often they convert",
    "avg_monthly_spend": "monthly spend", "last_seen_days_ago": "how recently they were active",
    "support_tickets_raised": "support tickets raised", "tenure": "how long they have been a customer",
    "age_group": "age", "income_bracket": "household income",
    "partner_purchase_categories": "what they buy at our data partner", "traveler_type": "travel style",
    "event_attendance_genres": "live events they attend", "partner_matched": "known to our data partner",
    "household_size": "household size", "presence_of_children": "children at home",
    "education_level": "education", "marital_status": "marital status", "homeowner_status": "home ownership",
    "estimated_net_worth": "net worth", "offline_purchase_intent": "offline purchase intent",
    "third_party_matched": "known to the enrichment provider", "churn_prob_90d": "90-day churn risk",
}
_NUMERIC_1P = {  # column -> (high reason, low reason)
    "time_on_social_media_min": ("heavy social-media user", "light social-media user"),
    "time_on_streaming_video_min": ("heavy streaming-video viewer", "light streaming-video viewer"),
    "time_on_podcasts_min": ("heavy podcast listener", "light podcast listener"),
    "monthly_conversions": ("converts often", "converts rarely"),
    "avg_monthly_spend": ("high monthly spend", "low monthly spend"),
    "last_seen_days_ago": ("long inactive", "recently active"),
    "support_tickets_raised": ("many support tickets", "few support tickets"),
}
_ORDINAL = {"age_group": S.AGE_GROUPS, "income_bracket": S.INCOME_BRACKETS,
            "education_level": S.EDUCATION_LEVELS, "estimated_net_worth": S.NET_WORTH_BANDS}


def _ordinal(s: pd.Series, cats: list[str]) -> pd.Series:
    return s.astype("string").map({c: float(i) for i, c in enumerate(cats)}).astype(float)


def _tokens(s: pd.Series, cats: Sequence[str], prefix: str) -> pd.DataFrame:
    """Multi-hot (multi-valued columns) or one-hot (categorical) indicators; missing -> all zero."""
    dummies = s.astype("string").fillna("").str.get_dummies(sep=S.MULTI_SEP)
    dummies = dummies.reindex(columns=list(cats), fill_value=0).astype(float)
    dummies.columns = [f"{prefix}={c}" for c in cats]
    return dummies.set_axis(s.index)


def _add(f: Features, group: str, source: str, cols: pd.DataFrame) -> None:
    f.X = pd.concat([f.X, cols], axis=1)
    f.groups[group] = list(cols.columns)
    f.source[group] = source
    f.labels[group] = GROUP_LABELS.get(group, group)


def build_features(df: pd.DataFrame, churn_risk: pd.DataFrame | None = None,
                   sources: Sequence[str] = ("1st party", "2nd party", "3rd party"),
                   reference_date: str | pd.Timestamp | None = None) -> Features:
    """Encode the unified table as a numeric matrix for the lookalike scorers.

    Parameters
    ----------
    df : pandas.DataFrame
        The unified 22-column table (``helpers.artifacts.load_unified``).
    churn_risk : pandas.DataFrame, optional
        ``churn_risk.parquet`` (``user_id``, ``churn_prob_90d``); when given its 90-day churn probability
        becomes a feature (users it does not cover get the median).
    sources : sequence of str
        Provenances to use: any of ``"1st party"``, ``"2nd party"``, ``"3rd party"``.
    reference_date : str or Timestamp, optional
        Date tenure is measured to; default the latest ``customer_since_date`` (deterministic).

    Returns
    -------
    Features
        Minutes, spend, conversions, tickets and recency as ``log1p``; age, income, education and net
        worth as ordinal scores; categories as one-/multi-hot indicators. Partner and enrichment
        attributes exist only for matched users: unmatched users get zeros plus a ``*_matched`` indicator,
        and missing enrichment items the panel median.
    """
    bad = set(sources) - {"1st party", "2nd party", "3rd party"}
    if bad:
        raise ValueError(f"unknown sources {sorted(bad)}; use '1st party', '2nd party', '3rd party'")
    need = {"user_id", *_NUMERIC_1P, "age_group", "income_bracket", "customer_since_date"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass the unified 22-column table")
    f = Features(pd.DataFrame(index=df.index), {}, {}, {})
    for c, (hi, lo) in _NUMERIC_1P.items():
        v = df[c].astype("Float64").astype(float)
        if v.isna().any():
            raise ValueError(f"column {c!r} has {int(v.isna().sum())} missing values (rows e.g. "
                             f"{df.index[v.isna()][:5].tolist()}); 1st-party columns must be complete")
        _add(f, c, "1st party", pd.DataFrame({f"log1p_{c}": np.log1p(v.to_numpy())}, index=df.index))
        f.reason[f"log1p_{c}"] = (hi, lo)
    since = pd.to_datetime(df["customer_since_date"])
    ref = since.max() if reference_date is None else pd.Timestamp(reference_date)
    _add(f, "tenure", "1st party", pd.DataFrame({"tenure_days": (ref - since).dt.days.astype(float)}, index=df.index))
    f.reason["tenure_days"] = ("long-standing customer", "new customer")
    for c in ("age_group", "income_bracket"):
        _add(f, c, "1st party", pd.DataFrame({f"{c}_score": _ordinal(df[c], _ORDINAL[c])}, index=df.index))
    f.reason["age_group_score"] = ("older", "younger")
    f.reason["income_bracket_score"] = ("higher income", "lower income")
    if "2nd party" in sources:
        _second_party(f, df)
    if "3rd party" in sources:
        _third_party(f, df)
    if churn_risk is not None:
        _churn_feature(f, df, churn_risk)
    if f.X.isna().any().any():
        raise ValueError(f"features {f.X.columns[f.X.isna().any()].tolist()} have missing values; "
                         "check the table against helpers.schema")
    return f


def _second_party(f: Features, df: pd.DataFrame) -> None:
    matched = df["traveler_type"].notna().to_numpy()
    for c, cats, src in [("partner_purchase_categories", S.PURCHASE_CATEGORIES, "buys {} at partner"),
                         ("traveler_type", S.TRAVELER_TYPES, "{} traveller"),
                         ("event_attendance_genres", S.EVENT_GENRES, "attends {}")]:
        cols = _tokens(df[c], cats, c)
        _add(f, c, "2nd party", cols)
        f.reason.update({col: (src.format(cat.replace("_", " ")), None) for col, cat in zip(cols, cats)})
    _add(f, "partner_matched", "2nd party", pd.DataFrame({"partner_matched": matched.astype(float)}, index=df.index))


def _third_party(f: Features, df: pd.DataFrame) -> None:
    cols = S.THIRD_PARTY
    matched = df[cols].notna().any(axis=1).to_numpy()
    hh = df["household_size"].astype("Float64").astype(float)
    _add(f, "household_size", "3rd party", pd.DataFrame({"household_size": hh.fillna(hh.median())}, index=df.index))
    kids = df["presence_of_children"].astype("boolean").fillna(False).astype(float)
    _add(f, "presence_of_children", "3rd party", pd.DataFrame({"presence_of_children": kids}, index=df.index))
    for c in ("education_level", "estimated_net_worth"):
        v = _ordinal(df[c], _ORDINAL[c])
        _add(f, c, "3rd party", pd.DataFrame({f"{c}_score": v.fillna(v.median())}, index=df.index))
    _add(f, "marital_status", "3rd party", _tokens(df["marital_status"], S.MARITAL_STATUSES, "marital_status"))
    owner = (df["homeowner_status"].astype("string") == "owner").fillna(False).astype(float)
    _add(f, "homeowner_status", "3rd party", pd.DataFrame({"homeowner": owner}, index=df.index))
    _add(f, "offline_purchase_intent", "3rd party",
         _tokens(df["offline_purchase_intent"], S.PURCHASE_INTENTS, "offline_purchase_intent"))
    _add(f, "third_party_matched", "3rd party",
         pd.DataFrame({"third_party_matched": matched.astype(float)}, index=df.index))


def _churn_feature(f: Features, df: pd.DataFrame, churn_risk: pd.DataFrame) -> None:
    if not {"user_id", "churn_prob_90d"} <= set(churn_risk.columns):
        raise ValueError("churn_risk needs columns user_id and churn_prob_90d (the output of 06_churn)")
    p = df["user_id"].astype(str).map(churn_risk.set_index(churn_risk["user_id"].astype(str))["churn_prob_90d"])
    p = p.astype(float)
    _add(f, "churn_prob_90d", "model", pd.DataFrame({"churn_prob_90d": p.fillna(p.median()).to_numpy()},
                                                     index=df.index))
    f.reason["churn_prob_90d"] = ("high churn risk", "low churn risk")


def standardize(X: pd.DataFrame) -> np.ndarray:
    """Columns centred and scaled to unit variance over the whole panel (constant columns -> 0)."""
    a = X.to_numpy(float)
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


# --- scorers -------------------------------------------------------------------------------------
class CosineLookalike:
    """Baseline: cosine similarity of each user's standardized features to the seed's centroid.

    Assumes the seed is one compact cloud around its mean and every (standardized) feature matters
    equally; it cannot learn that some features are irrelevant or that the seed is multi-modal.
    """

    def fit(self, X: pd.DataFrame, labelled: np.ndarray) -> "CosineLookalike":
        """Store the panel's scaling and the centroid of the ``labelled`` rows (standardized)."""
        labelled = _check_labels(X, labelled)
        a = X.to_numpy(float)
        self.mean_, sd = a.mean(axis=0), a.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.centroid_ = ((a[labelled] - self.mean_) / self.scale_).mean(axis=0)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Cosine similarity in [-1, 1] of every row to the centroid."""
        z = (X.to_numpy(float) - self.mean_) / self.scale_
        num = z @ self.centroid_
        den = np.linalg.norm(z, axis=1) * np.linalg.norm(self.centroid_)
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


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


class PropensityLookalike:
    """Supervised lookalike model in the positive-unlabelled framing, with probability calibration.

    The classifier learns to separate labelled seed members (``s = 1``) from everybody else (``s = 0``,
    *unlabelled*: unseen seed-like users and true non-members alike). Every training row is scored by a
    model fitted on the other folds (out-of-fold), so nobody's score comes from a model that memorised
    them; a 1-D calibrator (isotonic or Platt) fitted on the out-of-fold scores maps them to
    ``P(s = 1 | x)``. That is the probability of being **labelled**, not of being seed-like: dividing by
    ``c = P(s = 1 | seed-like)`` (see :meth:`label_frequency`) gives ``P(seed-like | x)`` only when the
    labelled members are a random sample of all seed-like users ("selected completely at random").

    Parameters
    ----------
    estimator : {"hgb", "rf"}
        Histogram gradient boosting or random forest (:func:`make_estimator`).
    n_folds : int
        Folds of the out-of-fold scoring (stratified on ``s``).
    calibration : {"isotonic", "sigmoid"}
        Isotonic regression (non-parametric, monotone) or Platt scaling on the logit of the raw score.
    refit : bool
        Also fit one model on all rows, used by :meth:`predict_proba` for users not seen in ``fit``.
    random_state : int
        Seeds the folds and the estimator; same seed, same scores.
    n_threads : int
        OpenMP threads of the gradient boosting (default 1: oversubscribed shared machines slow
        multi-threaded boosting down by an order of magnitude; results do not depend on it).
    """

    def __init__(self, estimator: Estimator = "hgb", n_folds: int = 5, calibration: Calibration = "isotonic",
                 refit: bool = True, random_state: int = 0, n_threads: int = 1) -> None:
        if calibration not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration must be 'isotonic' or 'sigmoid', got {calibration!r}")
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        make_estimator(estimator)  # validates the name
        self.estimator, self.n_folds, self.calibration = estimator, n_folds, calibration
        self.refit, self.random_state, self.n_threads = refit, random_state, n_threads

    def fit(self, X: pd.DataFrame, labelled: np.ndarray) -> "PropensityLookalike":
        """Out-of-fold raw scores, the calibrator, and (``refit``) a final model on all rows.

        Sets ``oof_raw_`` (ranking score, no ties from calibration), ``oof_proba_`` (calibrated
        ``P(s = 1 | x)``, the calibrator itself cross-fitted over the same folds: use it to *assess*
        calibration), ``calibrator_`` (fitted on all out-of-fold scores), ``proba_`` (``calibrator_`` applied
        to ``oof_raw_``: monotone in the ranking score, the probabilities to report), ``folds_`` (test indices
        per fold) and ``fold_models_``.
        """
        y = _check_labels(X, labelled)
        if y.sum() < self.n_folds:
            raise ValueError(f"{int(y.sum())} labelled rows is fewer than n_folds={self.n_folds}")
        self.columns_ = list(X.columns)
        a = X.to_numpy(float)
        cv = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        self.oof_raw_ = np.empty(len(y))
        self.folds_, self.fold_models_ = [], []
        with threadpool_limits(self.n_threads):
            for k, (tr, te) in enumerate(cv.split(a, y)):
                m = make_estimator(self.estimator, self.random_state + k).fit(a[tr], y[tr])
                self.oof_raw_[te] = m.predict_proba(a[te])[:, 1]
                self.folds_.append(te)
                self.fold_models_.append(m)
            self.model_ = make_estimator(self.estimator, self.random_state).fit(a, y) if self.refit else None
        # cross-fitted calibration: each fold's probabilities come from a calibrator fitted on the other
        # folds' out-of-fold scores, so oof_proba_ is an honest estimate for every row
        self.oof_proba_ = np.empty(len(y))
        for te in self.folds_:
            rest = np.ones(len(y), bool)
            rest[te] = False
            self.calibrator_ = self._fit_calibrator(self.oof_raw_[rest], y[rest])
            self.oof_proba_[te] = self._calibrate(self.oof_raw_[te])
        self.calibrator_ = self._fit_calibrator(self.oof_raw_, y)  # for new users (predict_proba)
        self.proba_ = self._calibrate(self.oof_raw_)  # same order as oof_raw_: the scores to export
        self.labelled_ = y
        return self

    def _fit_calibrator(self, raw: np.ndarray, y: np.ndarray):
        if self.calibration == "isotonic":
            return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration == "isotonic":
            return self.calibrator_.predict(raw)
        return self.calibrator_.predict_proba(_logit(raw)[:, None])[:, 1]

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated score of the all-rows model for new users (a ranking score)."""
        if self.model_ is None:
            raise ValueError("fit with refit=True to score new users; use oof_raw_ for the training rows")
        if list(X.columns) != self.columns_:
            raise ValueError("X must have the same feature columns, in the same order, as in fit")
        with threadpool_limits(self.n_threads):
            return self.model_.predict_proba(X.to_numpy(float))[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated ``P(s = 1 | x)`` (probability of being *labelled*) for new users."""
        return self._calibrate(self.predict_raw(X))

    def label_frequency(self, rows: np.ndarray | None = None) -> float:
        """Elkan-Noto estimate of ``c = P(s = 1 | seed-like)``: mean calibrated score of labelled rows.

        Exact when labelled and non-seed users are separable; with overlap it is biased low (the
        positives' own ``P(seed-like | x) < 1`` pulls the mean down), so ``P(seed-like | x)`` estimated as
        ``P(s = 1 | x) / c`` then overstates it; the ranking is unchanged (a constant factor).
        ``rows``: restrict to these labelled rows (boolean mask), default all labelled rows.
        """
        m = self.labelled_ if rows is None else (np.asarray(rows, bool) & self.labelled_)
        return float(self.oof_proba_[m].mean())


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def pu_adjust(proba_labelled: np.ndarray, c: float) -> np.ndarray:
    """``P(seed-like | x) = min(1, P(labelled | x) / c)`` under selected-completely-at-random labels."""
    if not 0 < c <= 1:
        raise ValueError(f"label frequency c must be in (0, 1], got {c}")
    return np.minimum(1.0, np.asarray(proba_labelled, float) / c)


# --- the experiment: hide part of the seed, find it again ----------------------------------------
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
    """Scores of one seed: masks over all users and each scorer's scores (all rows)."""

    train: np.ndarray          # labelled seed members
    hold: np.ndarray           # held-out seed members (hidden among the unlabelled)
    cosine: np.ndarray         # baseline similarity
    raw: np.ndarray            # propensity ranking score (out-of-fold, uncalibrated)
    proba: np.ndarray          # calibrated P(labelled | x): out-of-fold score through the calibrator (monotone)
    model: PropensityLookalike
    baseline: CosineLookalike

    @property
    def candidates(self) -> np.ndarray:
        """Users a lookalike audience is drawn from: everybody not in the training seed."""
        return ~self.train


def run_lookalike(X: pd.DataFrame, seed_mask: np.ndarray, holdout: float = 0.3, estimator: Estimator = "hgb",
                  n_folds: int = 5, calibration: Calibration = "isotonic", refit: bool = False,
                  seed: int = 0, n_threads: int = 1) -> LookalikeRun:
    """Hide ``holdout`` of the seed, fit both scorers on the rest and score every user.

    The held-out members stay in the unlabelled pool (as real unseen lookalikes would); evaluation
    (:func:`evaluate`) ranks the candidates (non-training users) and checks where the hidden ones land.
    """
    train, hold = holdout_split(seed_mask, holdout, seed)
    base = CosineLookalike().fit(X, train)
    model = PropensityLookalike(estimator, n_folds, calibration, refit, seed, n_threads).fit(X, train)
    return LookalikeRun(train, hold, base.score(X), model.oof_raw_, model.proba_, model, base)


# --- evaluation ----------------------------------------------------------------------------------
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
    if k == 0:
        return 0.0
    thr = np.sort(score)[::-1][k - 1]
    above, tied = score > thr, score == thr
    return float(y[above].sum() + (k - above.sum()) * y[tied].mean())


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
    captured = np.array([hits_at(y, score, k) for k in ks]) / y.sum()
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


def truth_precision(score: np.ndarray, in_planted: np.ndarray, share: float) -> float:
    """Share of the top ``share`` (by score) whose planted segment is the seed's (ties at random)."""
    return precision_at(np.asarray(in_planted, bool), score, share)


def evaluate(run: LookalikeRun, shares: Sequence[float] = PLANNER_SHARES,
             in_planted: np.ndarray | None = None) -> pd.DataFrame:
    """Per scorer (cosine baseline, propensity): held-out AUC, precision and lift at each share.

    Candidates are the users outside the training seed; positives the held-out seed members.
    ``in_planted`` (bool per user, synthetic panel only) adds the truth precision of each share.
    """
    c = run.candidates
    y = run.hold[c]
    rows = []
    for name, s in [("cosine", run.cosine), ("propensity", run.raw)]:
        row = {"scorer": name, "auc": float(roc_auc_score(y, s[c]))}
        for q in shares:
            row[f"precision_top{q:.0%}"] = precision_at(y, s[c], q)
            row[f"lift_top{q:.0%}"] = lift_at(y, s[c], q)
            if in_planted is not None:
                row[f"truth_precision_top{q:.0%}"] = truth_precision(s[c], np.asarray(in_planted)[c], q)
        rows.append(row)
    return pd.DataFrame(rows).set_index("scorer")


def seed_summary(seeds: Sequence[Seed], user_ids: pd.Series, true_segment: np.ndarray | None = None,
                 segment_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per seed: size, share of the panel and (synthetic panel) its planted segment and purity."""
    rows = []
    for sd in seeds:
        m = sd.mask(user_ids)
        row = {"seed": sd.name, "definition": sd.definition, "size": int(m.sum()), "share": float(m.mean())}
        if true_segment is not None:
            k, purity = planted_segment(true_segment, m)
            row["planted_segment"] = segment_names[k] if segment_names is not None else k
            row["purity"] = purity
        rows.append(row)
    return pd.DataFrame(rows)


def drop_groups(features: Features, groups: Sequence[str]) -> Features:
    """A copy of ``features`` without the feature groups (source columns) ``groups``."""
    unknown = set(groups) - set(features.groups)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)}; known: {list(features.groups)}")
    cols = [c for g in groups for c in features.groups[g]]
    keep = {g: c for g, c in features.groups.items() if g not in groups}
    return Features(features.X.drop(columns=cols), keep, {g: features.source[g] for g in keep},
                    {g: features.labels[g] for g in keep},
                    {c: r for c, r in features.reason.items() if c not in cols})


def compare_seeds(features: Features, seeds: Sequence[Seed], user_ids: pd.Series, share: float = 0.05,
                  true_segment: np.ndarray | None = None, exclude_defining: bool = True,
                  **run_kwargs) -> pd.DataFrame:
    """:func:`run_lookalike` + :func:`evaluate` per seed: AUC and lift at ``share`` of both scorers
    (and truth precision against each seed's planted segment when ``true_segment`` is given).

    ``exclude_defining`` leaves out the columns a rule-based seed is defined on (``Seed.defined_by``):
    otherwise the model merely re-learns the rule (AUC = 1) instead of finding users who *look like*
    the seed on everything else -- the question a lookalike audience answers.
    """
    rows = []
    for sd in seeds:
        m = sd.mask(user_ids)
        f = drop_groups(features, sd.defined_by) if exclude_defining else features
        run = run_lookalike(f.X, m, **run_kwargs)
        planted = None if true_segment is None else np.asarray(true_segment) == planted_segment(true_segment, m)[0]
        ev = evaluate(run, (share,), planted)
        for scorer, r in ev.iterrows():
            rows.append({"seed": sd.name, "left out": ", ".join(sd.defined_by) if exclude_defining else "",
                         "scorer": scorer, **r.to_dict()})
    return pd.DataFrame(rows)


# --- explanations --------------------------------------------------------------------------------
def grouped_permutation_importance(predict: Callable[[np.ndarray], np.ndarray], X: pd.DataFrame, y: np.ndarray,
                                   groups: dict[str, list[str]], n_repeats: int = 5,
                                   seed: int = 0) -> pd.DataFrame:
    """Drop in ROC AUC when all columns of a feature group are shuffled together across rows.

    Shuffling a group breaks its link with the label while keeping its distribution; the larger the
    AUC drop, the more the model relies on that group. Columns ``group``, ``importance`` (mean drop),
    ``sd`` (over repeats), sorted by importance.
    """
    y = np.asarray(y, bool)
    a = X.to_numpy(float)
    base = roc_auc_score(y, predict(a))
    rng = np.random.default_rng(seed)
    pos = {c: i for i, c in enumerate(X.columns)}
    out = []
    for g, cols in groups.items():
        idx = [pos[c] for c in cols]
        drops = []
        for _ in range(n_repeats):
            b = a.copy()
            b[:, idx] = a[rng.permutation(len(a))][:, idx]
            drops.append(base - roc_auc_score(y, predict(b)))
        out.append({"group": g, "importance": float(np.mean(drops)), "sd": float(np.std(drops))})
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
    with threadpool_limits(model.n_threads):
        imp = grouped_permutation_importance(lambda a: m.predict_proba(a)[:, 1], X.iloc[te],
                                             model.labelled_[te], features.groups, n_repeats, seed)
    imp["label"] = imp["group"].map(features.labels)
    imp["source"] = imp["group"].map(features.source)
    return imp


def seed_profile(features: Features, seed_mask: np.ndarray) -> pd.Series:
    """Standardized mean difference (seed minus panel, in panel SDs) of every feature column."""
    z = standardize(features.X)
    return pd.Series(z[np.asarray(seed_mask, bool)].mean(axis=0), index=features.X.columns)


def explain_importance(importance: pd.DataFrame, profile: pd.Series, features: Features, top: int = 5) -> list[str]:
    """One plain-language sentence per top group: how much the model relies on it and in which direction."""
    out = []
    for _, r in importance.head(top).iterrows():
        cols = features.groups[r["group"]]
        col = max(cols, key=lambda c: abs(profile[c]))
        d = float(profile[col])
        hi, lo = features.reason.get(col, (col, None))
        trait = hi if d > 0 or lo is None else lo
        out.append(f"{r['label'].capitalize()}: scrambling it lowers the model's AUC by {r['importance']:.3f}; "
                   f"seed members stand out as '{trait}' ({abs(d):.2f} panel SDs "
                   f"{'above' if d > 0 else 'below'} average).")
    return out


def reason_codes(features: Features, seed_mask: np.ndarray, rows: np.ndarray | None = None, top_k: int = 3,
                 exclude_sources: Sequence[str] = ("3rd party",), min_contribution: float = 0.1) -> pd.Series:
    """Up to ``top_k`` plain-language reasons per user: the traits they share with the seed.

    A feature's contribution for a user is ``z_user * d_seed`` (user's standardized value times the seed's
    standardized mean difference): positive when the user deviates from the panel in the seed's direction.
    Indicator features count only when the user has the trait. Features from ``exclude_sources`` never
    appear (by default 3rd-party attributes, which an export must not reveal). Returns a ``"; "``-joined
    string per row of ``rows`` (boolean mask, default all).
    """
    keep = [c for g, cols in features.groups.items() if features.source[g] not in exclude_sources
            for c in cols if c in features.reason]
    z = pd.DataFrame(standardize(features.X), columns=features.X.columns)[keep].to_numpy()
    d = seed_profile(features, seed_mask)[keep].to_numpy()
    sel = np.ones(len(z), bool) if rows is None else np.asarray(rows, bool)
    z = z[sel]
    contrib = z * d
    indicator = np.array([features.reason[c][1] is None for c in keep])
    contrib[:, indicator] = np.where(z[:, indicator] > 0, contrib[:, indicator], 0.0)
    names = [(features.reason[c][0], features.reason[c][1] or features.reason[c][0]) for c in keep]
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top_k]
    texts = []
    for i, row in enumerate(order):
        parts = [names[j][0] if z[i, j] > 0 else names[j][1] for j in row if contrib[i, j] > min_contribution]
        texts.append("; ".join(parts))
    index = features.X.index[sel]
    return pd.Series(texts, index=index, name="reason_codes", dtype="string")


def scores_frame(user_ids: pd.Series, run: LookalikeRun, seed: Seed, reasons: pd.Series | None = None,
                 churn_risk: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``lookalike_scores.parquet`` artifact: one row per user.

    Columns ``user_id``, ``audience`` (seed name), ``in_seed`` (training seed member), ``score``
    (calibrated ``P(labelled | x)``), ``cosine_score``, ``rank`` (1 = most seed-like candidate, by the
    uncalibrated score; seed members get no rank), ``reason_codes`` and, when given, ``churn_prob_90d``.
    """
    out = pd.DataFrame({"user_id": pd.Series(user_ids).astype(str).to_numpy(), "audience": seed.name,
                        "in_seed": run.train, "score": run.proba, "cosine_score": run.cosine})
    rank = pd.Series(np.where(run.candidates, run.raw, np.nan)).rank(ascending=False, method="first")
    out["rank"] = rank.astype("Int64").to_numpy()
    if reasons is not None:
        out["reason_codes"] = reasons.reindex(pd.Series(user_ids).index).to_numpy()
    if churn_risk is not None:
        out["churn_prob_90d"] = out["user_id"].map(
            churn_risk.set_index(churn_risk["user_id"].astype(str))["churn_prob_90d"]).astype(float)
    return out


def lookalike_audience(scores: pd.DataFrame, size: int | None = None, share: float | None = None) -> pd.DataFrame:
    """The top candidates of a ``scores_frame``: the ``size`` best-ranked users (or ``share`` of candidates).

    Returns the columns an export takes: ``user_id``, ``segment_name`` (the seed's name + " lookalike"),
    ``score``, ``reason_codes`` and ``churn_prob_90d`` when present.
    """
    if (size is None) == (share is None):
        raise ValueError("give exactly one of size (users) or share (of candidates)")
    cand = scores[scores["rank"].notna()].sort_values("rank")
    n = size if size is not None else int(round(share * len(cand)))
    if n < 1 or n > len(cand):
        raise ValueError(f"audience size {n} must be between 1 and the {len(cand)} candidates")
    top = cand.head(n)
    out = pd.DataFrame({"user_id": top["user_id"].to_numpy(),
                        "segment_name": (top["audience"].astype(str) + " lookalike").to_numpy(),
                        "score": top["score"].to_numpy()})
    for c in ("reason_codes", "churn_prob_90d"):
        if c in top:
            out[c] = top[c].to_numpy()
    return out


# --- figures -------------------------------------------------------------------------------------
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
