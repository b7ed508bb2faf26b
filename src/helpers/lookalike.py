"""Lookalike modelling: score every user's resemblance to a seed audience, and evaluate it honestly.

A *seed* (customers with an outcome -- converters, responders, churners --, a segment, or a list of ids)
is expanded with two scorers: a cosine-similarity-to-centroid baseline and a supervised propensity model in
the positive-unlabelled (PU) framing -- seed members are *labelled* positives, everybody else is
*unlabelled* (a mix of unseen positives and negatives). The model's out-of-fold probabilities are
calibrated to ``P(labelled | x)``; under "selected completely at random" labelling, ``P(positive | x) =
P(labelled | x) / c`` with ``c = P(labelled | positive)`` (Elkan & Noto, 2008).

**Evaluation is prospective when it can be.** The default seed is an outcome audience of the observed
period (e.g. the customers who converted most); the candidates (everybody else who has not churned) are
ranked, and the ranking is scored against what candidates *do next period* (planted truth's
``future_outcomes.parquet``): AUC, precision and lift at the 1/5/10 % audience sizes a planner buys, beside
the cosine baseline and a random ranking. Without a next period (a real snapshot such as Telco) a random
part of the seed is hidden among the candidates and found again (hide-and-find, said plainly).

**No circularity.** The model never sees the columns that define its seed (:func:`defining_columns`):
the seed's own column; for a churn seed also the recency column it is computed from and the churn-risk
score of notebook 06 (which conditions on recency); and for a recency seed the churn flag and risk. Then
:func:`leak_check` drops any remaining feature group that on its own separates seed from non-seed almost
perfectly (single-feature AUC >= 0.97), and says so. A segment seed is circular by nature (the segment is
a function of the features): it is kept only as a labelled sanity check.

Feature labels, units and reason-code wording come from the run configuration (:mod:`helpers.config`),
never from the synthetic panel's column meanings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from . import audience as A

Estimator = Literal["hgb", "rf"]
Calibration = Literal["isotonic", "sigmoid"]
#: audience sizes a planner buys, as shares of the candidate pool
PLANNER_SHARES = (0.01, 0.05, 0.10)
#: training sample caps (issue 20): folds are fitted on all labelled rows up to MAX_LABELLED and a seeded
#: sample of at most MAX_UNLABELLED unlabelled rows; every other row is scored by the fold models' mean
MAX_LABELLED = 20_000
MAX_UNLABELLED = 40_000
#: a feature group whose single-feature AUC against the seed is at least this "defines" the seed
LEAK_AUC = 0.97
#: the churn model's score of notebook 06, when used as a feature
CHURN_SCORE = "churn_prob_90d"
SOURCE_OF_PARTY = {"1st": "1st party", "2nd": "2nd party", "3rd": "3rd party", "derived": "1st party"}
SOURCES = ("1st party", "2nd party", "3rd party")
MULTI_SEP = "|"


# --- seeds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    """A seed audience: a name, a human-readable definition (for the export manifest) and its members.

    ``defined_by``: the columns the definition is a rule on; :func:`defining_columns` widens them to
    everything the model must not see.
    """

    name: str
    definition: str
    user_ids: pd.Index
    defined_by: tuple[str, ...] = ()
    #: the seed's label may reveal 2nd/3rd-party traits (a persona name): exports then use a neutral label
    label_third_party: bool = False

    def mask(self, user_ids: pd.Series | pd.Index) -> np.ndarray:
        """Boolean membership of each of ``user_ids`` in the seed."""
        return pd.Index(pd.Series(user_ids).astype(str)).isin(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)


def seed_from_audience(aud: "A.Audience", name: str | None = None) -> Seed:
    """A :class:`Seed` from an :func:`helpers.audience.select` result."""
    d = aud.definition
    col = d.get("column")
    label = name or d.get("label") or (f"segment {d['segment']}" if "segment" in d else "seed")
    text = d.get("rule") or d.get("source") or d.get("query") or str(d)
    return Seed(str(label), str(text), pd.Index(aud.ids.astype(str), name="user_id"),
                (col,) if col else (), label_third_party=False)


def seed_from_segment(segments: pd.DataFrame, segment: int) -> Seed:
    """Members of ``segment`` in a ``segments.parquet`` frame (``user_id``, ``segment``, ``segment_name``).

    The seed's name is the persona name, which may be built from 3rd-party traits: flagged as such.
    """
    aud = A.select(None, "segment", segments=segments, segment=segment, allow_third_party=True,
                   include_churned=True)
    name = aud.definition.get("persona_name") or f"segment {segment}"
    return Seed(name, f"members of segment {segment} ({name}) of the GMM segmentation",
                pd.Index(aud.ids, name="user_id"), label_third_party=True)


def seed_from_outcome(df: pd.DataFrame, column: str, *, value: Any = None, at_least: Any = None,
                      top_share: Any = None, label: str | None = None) -> Seed:
    """Users whose outcome ``column`` equals ``value`` (or is >= ``at_least``, or in its ``top_share``)."""
    m, rule = A.outcome_mask(df, column, value, at_least, top_share)
    if not m.any():
        raise ValueError(f"no user meets the seed rule {rule}; choose another value")
    return Seed(label or rule, rule, pd.Index(df.loc[m, "user_id"].astype(str), name="user_id"), (column,))


def seed_from_config_outcome(df: pd.DataFrame, outcome: Any, max_share: float = 0.5,
                             top_share: float = 0.1) -> Seed:
    """The seed of a configured outcome (``cfg.outcomes``): its ``positive`` rule; a rule that covers more
    than ``max_share`` of the panel (``monthly_conversions > 0`` when most users convert) is not a seed
    anyone buys lookalikes of, so a numeric outcome then seeds with its ``top_share`` instead."""
    m = np.asarray(outcome.indicator(df), bool)
    numeric = pd.api.types.is_numeric_dtype(df[outcome.name].dtype) \
        and not pd.api.types.is_bool_dtype(df[outcome.name].dtype)
    if (m.mean() > max_share or outcome.kind == "value") and numeric:
        s = seed_from_outcome(df, outcome.name, top_share=top_share)
        return Seed(f"Top {top_share:.0%}: {outcome.label}", s.definition
                    + (f" -- the configured rule {outcome.rule} covers {m.mean():.0%} of the panel"
                       if outcome.kind != "value" else ""), s.user_ids, s.defined_by)
    if not m.any():
        raise ValueError(f"no user meets the configured outcome rule {outcome.rule}")
    return Seed(outcome.label, outcome.rule, pd.Index(df.loc[m, "user_id"].astype(str), name="user_id"),
                (outcome.name,))


def seed_from_ids(df: pd.DataFrame, user_ids: Sequence[str], name: str = "Custom list") -> Seed:
    """A user-supplied list of ``user_id``; every id must exist in ``df`` (duplicates are dropped)."""
    aud = A.select(None, "ids", frame=df, ids=list(user_ids), include_churned=True, label=name)
    return Seed(name, f"user-supplied list of {aud.size} user_ids", pd.Index(aud.ids, name="user_id"))


def defining_columns(seed_columns: Sequence[str], config: Any = None) -> tuple[str, ...]:
    """Every column a model must not see for a seed defined on ``seed_columns`` (the no-circularity rule).

    1. the seed's own columns;
    2. a churn-event seed (the configuration's ``churn_event`` outcome) is computed from recency
       (``dates.recency``): both, and the churn-risk score ``churn_prob_90d`` (it conditions on recency);
    3. a recency seed likewise excludes the churn flag and the churn-risk score;
    4. columns the configuration derives from a seed column (``derived``, e.g. Telco's ``n_services``
       counts ``StreamingTV``).
    """
    cfg = A.load_config(config)
    churn = A.churn_rule(cfg)
    churn_col = churn[0] if churn else None
    recency = getattr(getattr(cfg, "dates", None), "recency", None) if cfg is not None else "last_seen_days_ago"
    out = list(dict.fromkeys(seed_columns))
    for c in seed_columns:
        if c == churn_col or (recency is not None and c == recency):
            out += [x for x in (churn_col, recency, CHURN_SCORE) if x]
    for d in getattr(cfg, "derived", None) or ():
        if set(d.columns) & set(out):
            out.append(d.name)
    return tuple(dict.fromkeys(out))


# --- features ------------------------------------------------------------------------------------
@dataclass
class Features:
    """Numeric model matrix with feature groups (one per source column) and their labels.

    ``X`` rows align with the input table; ``groups`` maps a source column to its feature columns;
    ``source`` maps a group to its provenance (1st/2nd/3rd party, model); ``labels`` maps a group to its
    label from the run configuration; ``reason`` maps a feature column to ``(text if high, text if low)``
    -- a ``None`` low text means "only a reason when the user has it".
    """

    X: pd.DataFrame
    groups: dict[str, list[str]]
    source: dict[str, str]
    labels: dict[str, str]
    reason: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _lower(label: str) -> str:
    return label[:1].lower() + label[1:] if label[:2] != label[:2].upper() else label


def _ordinal(s: pd.Series, cats: Sequence[str]) -> pd.Series:
    return s.astype("string").map({c: float(i) for i, c in enumerate(cats)}).astype(float)


def _tokens(s: pd.Series, cats: Sequence[str], prefix: str, multi: bool) -> pd.DataFrame:
    """Multi-hot (multi-valued columns) or one-hot (categorical) indicators; missing -> all zero."""
    text = s.astype("string")
    if multi:
        dummies = text.fillna("").str.get_dummies(sep=MULTI_SEP)
    else:
        dummies = pd.get_dummies(text, dtype=float)
    dummies = dummies.reindex(columns=list(cats), fill_value=0).astype(float)
    dummies.columns = [f"{prefix}={c}" for c in cats]
    return dummies.set_axis(s.index)


def _add(f: Features, group: str, source: str, label: str, cols: pd.DataFrame) -> None:
    f.X = pd.concat([f.X, cols], axis=1)
    f.groups[group] = list(cols.columns)
    f.source[group] = source
    f.labels[group] = label


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").astype(float).to_numpy()


def build_features(df: pd.DataFrame, churn_risk: pd.DataFrame | None = None,
                   sources: Sequence[str] = SOURCES, reference_date: str | pd.Timestamp | None = None,
                   config: Any = None, exclude: Sequence[str] = ()) -> Features:
    """Encode a table described by the run configuration as a numeric matrix for the lookalike scorers.

    Parameters
    ----------
    df : pandas.DataFrame
        The unified table (``helpers.artifacts.load_unified``), any columns the configuration declares.
    churn_risk : pandas.DataFrame, optional
        ``churn_risk.parquet`` (``user_id``, ``churn_prob_90d``): a feature when given (users it does not
        cover get the median).
    sources : sequence of str
        Provenances to use: any of ``"1st party"``, ``"2nd party"``, ``"3rd party"``.
    reference_date : str or Timestamp, optional
        Date tenure is measured to; default the configuration's observation date, else the latest
        customer-since date (deterministic).
    config : run configuration or path, optional
        Default: ``helpers.config.load()`` (``$AUDIENCE_CONFIG`` or the shipped default).
    exclude : sequence of str
        Columns the model must not see (:func:`defining_columns` of the seed).

    Returns
    -------
    Features
        Metrics (and the recency column) as ``log1p`` when they are non-negative minutes, counts or
        money, else as numbers; tenure in days; ordinal attributes as scores, categories and multi-valued
        attributes as indicators, booleans as 0/1, integers as numbers. 2nd/3rd-party attributes exist
        only for matched users: unmatched users get zeros plus a ``<party>_matched`` indicator, and
        missing numeric items the panel median.
    """
    bad = set(sources) - set(SOURCES)
    if bad:
        raise ValueError(f"unknown sources {sorted(bad)}; use '1st party', '2nd party', '3rd party'")
    cfg = A.load_config(config)
    id_col = cfg.id if cfg is not None else "user_id"
    if id_col not in df:
        raise ValueError(f"the table has no identifier column {id_col!r}; pass the unified table")
    skip = set(exclude)
    f = Features(pd.DataFrame(index=df.index), {}, {}, {})
    metrics = [m for m in cfg.metrics if m.name in df and m.name not in skip]
    missing = [m.name for m in cfg.metrics if m.required and m.name not in df]
    if missing:
        raise ValueError(f"the table lacks the configured metric columns {missing} (run configuration "
                         f"{cfg.path}); pass the unified table of this run")
    for m in metrics:
        v = _numeric(df[m.name])
        if np.isnan(v).all():
            continue
        v = np.where(np.isnan(v), np.nanmedian(v), v)
        log = m.kind in ("minutes", "count", "money") and np.nanmin(v) >= 0
        name = f"log1p_{m.name}" if log else m.name
        _add(f, m.name, "1st party", cfg.label(m.name), pd.DataFrame({name: np.log1p(v) if log else v},
                                                                     index=df.index))
        lab = _lower(m.label)
        f.reason[name] = (f"high {lab}", f"low {lab}")
    rec = cfg.dates.recency
    if rec and rec in df and rec not in skip:
        v = _numeric(df[rec])
        v = np.where(np.isnan(v), np.nanmedian(v), v)
        _add(f, rec, "1st party", cfg.label(rec), pd.DataFrame({f"log1p_{rec}": np.log1p(np.maximum(v, 0))},
                                                               index=df.index))
        f.reason[f"log1p_{rec}"] = ("long inactive", "recently active")
    since = cfg.dates.customer_since
    dur = cfg.survival.duration
    if since and since in df and since not in skip:
        d = pd.to_datetime(df[since], errors="coerce")
        ref = (pd.Timestamp(reference_date) if reference_date is not None
               else pd.Timestamp(cfg.dates.observation_date) if cfg.dates.observation_date else d.max())
        t = (ref - d).dt.days.astype(float)
        _add(f, "tenure", "1st party", "Tenure (days)",
             pd.DataFrame({"tenure_days": t.fillna(t.median()).to_numpy()}, index=df.index))
        f.reason["tenure_days"] = ("long-standing customer", "new customer")
    elif dur and dur in df and dur not in skip and dur not in f.groups:
        v = _numeric(df[dur])
        _add(f, dur, "1st party", cfg.label(dur),
             pd.DataFrame({f"{dur}_tenure": np.where(np.isnan(v), np.nanmedian(v), v)}, index=df.index))
        f.reason[f"{dur}_tenure"] = ("long-standing customer", "new customer")
    matched: dict[str, np.ndarray] = {}
    for a in cfg.attributes:
        src = SOURCE_OF_PARTY.get(a.party, "1st party")
        if a.name not in df or a.name in skip or src not in sources:
            continue
        s = df[a.name]
        if src != "1st party":
            matched[src] = matched.get(src, np.zeros(len(df), bool)) | s.notna().to_numpy()
        lab = _lower(a.label)
        if a.type == "ordinal":
            cats = list(a.categories) or sorted(s.dropna().astype(str).unique())
            v = _ordinal(s, cats)
            _add(f, a.name, src, cfg.label(a.name),
                 pd.DataFrame({f"{a.name}_score": v.fillna(v.median()).to_numpy()}, index=df.index))
            f.reason[f"{a.name}_score"] = (f"higher {lab}", f"lower {lab}")
        elif a.type in ("category", "multi"):
            cats = list(a.categories) or s.dropna().astype(str).value_counts().index[:20].tolist()
            cols = _tokens(s, cats, a.name, a.type == "multi")
            _add(f, a.name, src, cfg.label(a.name), cols)
            f.reason.update({c: (f"{lab}: {str(cat).replace('_', ' ')}", None) for c, cat in zip(cols, cats)})
        elif a.type == "bool":
            v = A.matches(s, True).astype(float)
            _add(f, a.name, src, cfg.label(a.name), pd.DataFrame({a.name: v}, index=df.index))
            f.reason[a.name] = (lab, None)
        else:  # int
            v = _numeric(s)
            med = np.nanmedian(v) if (~np.isnan(v)).any() else 0.0
            _add(f, a.name, src, cfg.label(a.name),
                 pd.DataFrame({a.name: np.where(np.isnan(v), med, v)}, index=df.index))
            f.reason[a.name] = (f"high {lab}", f"low {lab}")
    for src, m in matched.items():
        g = f"{src.split()[0]}_party_matched"
        _add(f, g, src, f"known to the {src} data source", pd.DataFrame({g: m.astype(float)}, index=df.index))
    if churn_risk is not None and CHURN_SCORE not in skip:
        _churn_feature(f, df, churn_risk, id_col)
    if f.X.shape[1] == 0:
        raise ValueError("no features: the run configuration declares no metric or attribute present in the table")
    if f.X.isna().any().any():
        raise ValueError(f"features {f.X.columns[f.X.isna().any()].tolist()} have missing values")
    return f


def _churn_feature(f: Features, df: pd.DataFrame, churn_risk: pd.DataFrame, id_col: str) -> None:
    if not {"user_id", CHURN_SCORE} <= set(churn_risk.columns):
        raise ValueError("churn_risk needs columns user_id and churn_prob_90d (the output of 06_churn)")
    p = df[id_col].astype(str).map(churn_risk.set_index(churn_risk["user_id"].astype(str))[CHURN_SCORE])
    p = p.astype(float)
    _add(f, CHURN_SCORE, "model", "90-day churn risk (probability)",
         pd.DataFrame({CHURN_SCORE: p.fillna(p.median()).to_numpy()}, index=df.index))
    f.reason[CHURN_SCORE] = ("high churn risk", "low churn risk")


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


def leak_check(features: Features, seed_mask: np.ndarray, max_auc: float = LEAK_AUC) -> pd.DataFrame:
    """Single-feature AUC (two-sided: ``max(AUC, 1 - AUC)``) of every feature group against the seed.

    Columns ``group``, ``label``, ``auc``, ``defines_seed`` (``auc >= max_auc``): a group that on its own
    separates the seed almost perfectly is (a function of) the seed's definition, and a lookalike model
    that sees it merely re-learns the rule.
    """
    y = np.asarray(seed_mask, bool)
    rows = []
    for g, cols in features.groups.items():
        best = 0.5
        for c in cols:
            x = features.X[c].to_numpy(float)
            if np.ptp(x) == 0:
                continue
            a = roc_auc_score(y, x)
            best = max(best, a, 1 - a)
        rows.append({"group": g, "label": features.labels[g], "auc": float(best),
                     "defines_seed": bool(best >= max_auc)})
    return pd.DataFrame(rows).sort_values("auc", ascending=False, ignore_index=True)


def seed_features(features: Features, seed_mask: np.ndarray, seed_columns: Sequence[str] = (),
                  config: Any = None, max_auc: float = LEAK_AUC) -> tuple[Features, list[str]]:
    """``features`` without the seed's defining columns (:func:`defining_columns`) and without any group
    :func:`leak_check` flags; returns the reduced features and the groups dropped."""
    rule = [g for g in defining_columns(seed_columns, config) if g in features.groups]
    f = drop_groups(features, rule) if rule else features
    leaks = leak_check(f, seed_mask, max_auc)
    extra = leaks.loc[leaks["defines_seed"], "group"].tolist()
    return (drop_groups(f, extra) if extra else f), rule + extra


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
        a = X.to_numpy(float)
        self.sample_ = training_sample(y, self.max_labelled, self.max_unlabelled, self.random_state)
        rows = np.flatnonzero(self.sample_)
        rest = np.flatnonzero(~self.sample_)
        ys = y[rows]
        # inverse sampling rates: the calibrator sees the panel's mix, not the sample's
        rate_l = ys.sum() / max(1, y.sum())
        rate_u = (~ys).sum() / max(1, (~y).sum())
        self.sample_weight_ = np.where(ys, 1 / rate_l, 1 / rate_u)
        cv = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        splits = list(cv.split(a[rows], ys))

        def fit_fold(k: int):
            tr, te = splits[k]
            m = make_estimator(self.estimator, self.random_state + k).fit(a[rows[tr]], ys[tr])
            return m, m.predict_proba(a[rows[te]])[:, 1], (m.predict_proba(a[rest])[:, 1] if len(rest) else None)

        # both cores: folds run in parallel Python threads (the boosting releases the GIL), each with ONE
        # OpenMP thread -- multi-threaded OpenMP on an oversubscribed machine is ~50x slower (busy waiting)
        with threadpool_limits(1):
            if self.n_jobs > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(self.n_jobs) as pool:
                    results = list(pool.map(fit_fold, range(self.n_folds)))
            else:
                results = [fit_fold(k) for k in range(self.n_folds)]
            self.oof_raw_ = np.zeros(len(y))
            self.folds_, self.fold_models_ = [], []
            for (tr, te), (m, p_te, p_rest) in zip(splits, results):
                self.oof_raw_[rows[te]] = p_te
                if p_rest is not None:
                    self.oof_raw_[rest] += p_rest / self.n_folds
                self.folds_.append(rows[te])
                self.fold_models_.append(m)
            self.model_ = (make_estimator(self.estimator, self.random_state).fit(a[rows], ys)
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
            return self.model_.predict_proba(X.to_numpy(float))[:, 1]

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


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def pu_adjust(proba_labelled: np.ndarray, c: float) -> np.ndarray:
    """``P(seed-like | x) = min(1, P(labelled | x) / c)`` under selected-completely-at-random labels."""
    if not 0 < c <= 1:
        raise ValueError(f"label frequency c must be in (0, 1], got {c}")
    return np.minimum(1.0, np.asarray(proba_labelled, float) / c)


# --- the experiments -----------------------------------------------------------------------------
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


def load_future_outcomes(P: Any) -> tuple[pd.DataFrame | None, str]:
    """The planted truth's next-period outcomes and where they came from.

    ``truth/future_outcomes.parquet`` when the generator wrote it; else, when ``users_truth.parquet`` has
    the planted event times, ``churn_next_90d`` / ``churn_next_180d`` derived from them (event within the
    next 90/180 days for users active today); else None (real data: no next period).
    """
    from pathlib import Path

    truth = Path(P.truth)
    f = truth / "future_outcomes.parquet"
    if f.exists():
        fut = pd.read_parquet(f)
        fut["user_id"] = fut["user_id"].astype(str)
        return fut, "truth/future_outcomes.parquet"
    u = truth / "users_truth.parquet"
    if u.exists():
        t = pd.read_parquet(u)
        if {"true_event_time_days", "tenure_days"} <= set(t.columns):
            ev, ten = t["true_event_time_days"].to_numpy(float), t["tenure_days"].to_numpy(float)
            out = pd.DataFrame({"user_id": t["user_id"].astype(str)})
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
    v = pd.Series(user_ids).astype(str).map(future.set_index("user_id")[col])
    if kind == "churn_event":
        return A.matches(v, True), f"{col} is true"
    x = pd.to_numeric(v, errors="coerce").astype(float)
    if positive_rule == ">0":
        return (x > 0).fillna(False).to_numpy(bool), f"{col} > 0"
    cut = float(x.quantile(1 - seed_share))
    return (x >= cut).fillna(False).to_numpy(bool), f"{col} >= {cut:g} (top {seed_share:.0%} next period)"


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
    rows = []
    for name, s in scorers:
        row = {"scorer": name, "auc": float(roc_auc_score(y, s[c])), "base_rate": float(y.mean()),
               "n_candidates": int(c.sum())}
        for q in shares:
            row[f"precision_top{q:.0%}"] = precision_at(y, s[c], q)
            row[f"lift_top{q:.0%}"] = lift_at(y, s[c], q)
            if in_planted is not None:
                row[f"truth_precision_top{q:.0%}"] = precision_at(np.asarray(in_planted, bool)[c], s[c], q)
        rows.append(row)
    return pd.DataFrame(rows).set_index("scorer")


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

    Columns ``user_id``, ``audience`` (seed name), ``in_seed`` (training seed member), ``eligible``
    (may be a candidate: not churned, unless the run kept churned users), ``score`` (calibrated
    ``P(labelled | x)``), ``cosine_score``, ``rank`` (1 = most seed-like candidate, by the uncalibrated
    score; seed members and ineligible users get no rank), ``seed_label_third_party`` (the seed's name may
    reveal 2nd/3rd-party traits), ``reason_codes`` and, when given, ``churn_prob_90d``.
    """
    cand = run.candidates
    out = pd.DataFrame({"user_id": pd.Series(user_ids).astype(str).to_numpy(), "audience": seed.name,
                        "in_seed": run.train, "eligible": cand | run.train if run.eligible is None
                        else np.asarray(run.eligible, bool),
                        "score": run.proba, "cosine_score": run.cosine,
                        "seed_label_third_party": bool(seed.label_third_party)})
    rank = pd.Series(np.where(cand, run.raw, np.nan)).rank(ascending=False, method="first")
    out["rank"] = rank.astype("Int64").to_numpy()
    if reasons is not None:
        out["reason_codes"] = reasons.reindex(pd.Series(user_ids).index).to_numpy()
    if churn_risk is not None:
        out["churn_prob_90d"] = out["user_id"].map(
            churn_risk.set_index(churn_risk["user_id"].astype(str))["churn_prob_90d"]).astype(float)
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
