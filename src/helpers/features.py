"""Feature pipeline of segmentation: which columns of the unified table enter the clustering, and how.

:class:`FeatureBuilder` is a scikit-learn transformer (fit once on the panel, reused to score anyone)
that turns the 22-column table into a float64 matrix with no missing values: log transforms for the
skewed minutes, spend and conversion counts, integer codes for ordinal bands, indicators for categories
and the multi-valued columns, then standardisation. :func:`default_segmentation_features` is the list
the GMM (``helpers.segment``) and hierarchical (``helpers.hier``) segmentations use, and
:func:`feature_rationale` says for every column of the schema whether it enters and why.

Design choice on missing data: by default the segments are built on **first-party behaviour only**.
Second- and third-party columns are missing for roughly half of the users, and the matching itself
depends on who the user is (partner match varies by segment, enrichment match by age), so a feature
such as "has no enrichment record" would give a clustering a cheap axis along which to split people by
data coverage rather than by behaviour. Those columns are used only to *profile* segments
(``helpers.personas``), computed among the users for whom they are observed. If a caller chooses to
cluster on a nullable column anyway, :class:`FeatureBuilder` imputes it with the fitted mean (zero after
standardisation, i.e. "no information", not a separate category) and can append missingness indicators
only on request (``missing_indicators=True``, meant for supervised models, not for clustering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import schema as S

Transform = Literal["log1p", "log1p_dequantised", "ordinal", "onehot", "multi_hot", "bool", "identity"]
Role = Literal["segmentation", "profiling", "excluded"]
MAX_ROWS_IN_MESSAGE = 5


def check_matrix(X: np.ndarray, name: str = "X", min_rows: int = 0) -> np.ndarray:
    """The contract of a segmentation feature matrix: 2-D, finite, at least ``min_rows`` users.

    Returns ``X`` as float64; raises ``ValueError`` naming the offending rows otherwise.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (users x features), got shape {X.shape}; "
                         "build it with helpers.features.FeatureBuilder")
    if X.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got {X.shape[0]}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name} has NaN or infinite values in {len(rows)} rows (e.g. rows {rows[:5].tolist()}); "
                         "impute or drop them first (FeatureBuilder(allow_missing=True) imputes)")
    return X


@dataclass(frozen=True)
class FeatureSpec:
    """One input column of the feature pipeline.

    Attributes
    ----------
    column : str
        Column of the unified table (see ``helpers.schema``).
    transform : str
        ``"log1p"`` (``log(1 + x)``, for skewed non-negative amounts), ``"log1p_dequantised"``
        (``log(1 + x + u)`` with ``u ~ U(0, 1)`` drawn per user from a hash of ``user_id`` and the seed:
        turns an integer count into a continuous variable whose density is the count's probability
        spread over a unit interval, so that a Gaussian mixture cannot put an infinitely thin component
        on one integer value), ``"ordinal"`` (band index 0..m-1), ``"onehot"`` (one indicator per
        category), ``"multi_hot"`` (one indicator per token of a multi-valued column), ``"bool"`` (0/1)
        or ``"identity"``.
    reason : str
        Why the column enters (shown in the notebook).
    """

    column: str
    transform: Transform
    reason: str = ""


def default_segmentation_features() -> list[FeatureSpec]:
    """Columns the segmentations cluster on: first-party behaviour, log scale, nothing that can be missing.

    * ``time_on_social_media_min``, ``time_on_streaming_video_min``, ``time_on_podcasts_min`` and
      ``avg_monthly_spend`` are right-skewed amounts whose spread grows with their level, so they enter as
      ``log(1 + x)``: on the log scale a difference means a ratio ("twice as much streaming"), which is
      how behaviour differs between kinds of customers, and the within-group spread is roughly symmetric.
    * ``monthly_conversions`` is a small integer count (often 0-2); it enters dequantised
      (``log(1 + x + u)``, ``u`` uniform per user, reproducible from ``user_id`` and the seed) because a
      Gaussian mixture fitted to an integer-valued feature rewards components that collapse onto a single
      integer, which inflates the number of components BIC selects.

    Not in the list, on purpose: age and income bands (1st party but coarse bands with 6 values: same
    collapse problem, and keeping them out lets the personas show demographics as a *result* of
    behaviour), ``support_tickets_raised`` and ``last_seen_days_ago`` / ``churned_in_last_90_days`` /
    ``customer_since_date`` (outcomes and tenure analysed by the churn notebook: segmenting on them would
    make the churn comparison circular), and every 2nd/3rd-party column (missing for about half of the
    users, and missing not at random). See :func:`feature_rationale`.

    Returns
    -------
    list of FeatureSpec
    """
    amount = "skewed amount: log scale turns ratios into distances"
    return [
        FeatureSpec("time_on_social_media_min", "log1p", f"behaviour (1st party); {amount}"),
        FeatureSpec("time_on_streaming_video_min", "log1p", f"behaviour (1st party); {amount}"),
        FeatureSpec("time_on_podcasts_min", "log1p", f"behaviour (1st party); {amount}"),
        FeatureSpec("avg_monthly_spend", "log1p", f"value (1st party); {amount}"),
        FeatureSpec("monthly_conversions", "log1p_dequantised",
                    "behaviour (1st party); integer count, dequantised so a mixture cannot collapse on one value"),
    ]


#: Metrics of the run configuration that are outcomes, not behaviour: never clustered on (see
#: :func:`default_segmentation_features`); a configuration can name others in ``exclude``.
OUTCOME_METRICS = ("support_tickets_raised",)
_TRANSFORM_BY_KIND = {"minutes": "log1p", "money": "log1p", "count": "log1p_dequantised", "share": "identity",
                      "number": "identity"}


def segmentation_features(cfg=None, exclude: Sequence[str] = OUTCOME_METRICS) -> list[FeatureSpec]:
    """The clustering features of a run: the behavioural metrics of its configuration.

    ``cfg`` is a ``helpers.config`` run configuration (``config.load(config_path)``) or ``None``. Without
    one, or when the configuration's clustering metrics are the data dictionary's five behaviours (the
    default preset), this is :func:`default_segmentation_features`. Otherwise every metric of
    ``cfg.metrics`` marked ``cluster`` (default true) and not in ``exclude`` enters, transformed by its kind: amounts (``minutes``, ``money``) as ``log(1 + x)``, counts
    dequantised, shares and plain numbers as they are.
    """
    default = default_segmentation_features()
    if cfg is None:
        return default
    names = [m.name for m in cfg.metrics if getattr(m, "cluster", True) and m.name not in exclude]
    if not names:
        raise ValueError("the run configuration declares no behavioural metrics to segment on "
                         f"(metrics: {[m.name for m in cfg.metrics]}; excluded as outcomes: {list(exclude)}); "
                         "mark at least one metric 'cluster: true' in its 'metrics' section")
    if sorted(names) == sorted(f.column for f in default):
        return default
    out = []
    for m in cfg.metrics:
        if m.name not in names:
            continue
        t = _TRANSFORM_BY_KIND.get(getattr(m, "kind", "number"), "identity")
        out.append(FeatureSpec(m.name, t, f"behavioural metric of the run configuration ({m.kind}; "
                                          f"{'log scale' if t.startswith('log') else 'as is'})"))
    return out


def load_run_config(config_path=None):
    """The run configuration (``helpers.config.load``: ``None`` -> ``$AUDIENCE_CONFIG`` or the default)."""
    from . import config

    return config.load(config_path)


def profiling_features() -> list[FeatureSpec]:
    """Every descriptive column, encoded for profiling segments (not for clustering).

    Used by ``helpers.personas`` to compare segments with the whole panel; nullable columns stay missing
    here (profiles are computed among the users for whom a column is observed).
    """
    specs = [FeatureSpec(c, "identity", "behaviour / value") for c in S.CHANNEL_METRICS + ["avg_monthly_spend"]]
    specs += [FeatureSpec("support_tickets_raised", "identity", "service")]
    for c in S.COLUMNS:
        if c.kind in ("category", "ordinal"):
            specs.append(FeatureSpec(c.name, "onehot", c.source))
        elif c.kind == "multi":
            specs.append(FeatureSpec(c.name, "multi_hot", c.source))
        elif c.kind == "bool" and c.source != "derived":
            specs.append(FeatureSpec(c.name, "bool", c.source))
    specs.append(FeatureSpec("household_size", "identity", "3rd party"))
    return specs


def feature_rationale(features: Sequence[FeatureSpec] | None = None) -> pd.DataFrame:
    """One row per schema column: its source, its role in segmentation, the transform and the reason.

    Parameters
    ----------
    features : sequence of FeatureSpec, optional
        The clustering features; default :func:`default_segmentation_features`.

    Returns
    -------
    pandas.DataFrame
        Columns ``column``, ``source``, ``role`` (``segmentation`` / ``profiling`` / ``excluded``),
        ``transform``, ``reason``.
    """
    used = {f.column: f for f in (features or default_segmentation_features())}
    why_not = {
        "user_id": "identifier",
        "customer_since_date": "tenure: the time axis of the churn analysis, not a trait of a persona",
        "last_seen_days_ago": "churn outcome (analysed in the churn notebook; clustering on it would be circular)",
        "churned_in_last_90_days": "churn outcome (derived from last_seen_days_ago): profiled as each "
                                   "segment's churn share, never clustered on",
        "support_tickets_raised": "service outcome and churn covariate: profiled, not clustered on",
        "age_group": "coarse 6-value band: profiled (demographics are read off behaviour-based segments)",
        "income_bracket": "coarse 6-value band: profiled (demographics are read off behaviour-based segments)",
    }
    rows = []
    for c in S.COLUMNS:
        if c.name in used:
            f = used[c.name]
            rows.append((c.name, c.source, "segmentation", f.transform, f.reason))
        elif c.source in ("2nd party", "3rd party"):
            rows.append((c.name, c.source, "profiling", "", "missing for unmatched users and missing not at "
                         "random: would let segments form around data coverage; profiled where observed"))
        else:
            role = "excluded" if c.name in ("user_id", "last_seen_days_ago", "customer_since_date") else "profiling"
            rows.append((c.name, c.source, role, "", why_not.get(c.name, "")))
    return pd.DataFrame(rows, columns=["column", "source", "role", "transform", "reason"])


# --- encoding ----------------------------------------------------------------------------------------
def _rows(mask: np.ndarray | pd.Series, df: pd.DataFrame) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    ids = df["user_id"].iloc[idx[:MAX_ROWS_IN_MESSAGE]].tolist() if "user_id" in df else idx[:MAX_ROWS_IN_MESSAGE].tolist()
    more = f" and {len(idx) - MAX_ROWS_IN_MESSAGE} more" if len(idx) > MAX_ROWS_IN_MESSAGE else ""
    return f"{len(idx)} rows (e.g. {ids}{more})"


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    x = pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()
    bad = ~np.isnan(x) & (x < 0)
    if bad.any():
        raise ValueError(f"column {col!r}: expected non-negative numbers for a log transform, "
                         f"got negative values in {_rows(bad, df)}")
    return x


#: ids hashed at a time by :func:`_uniform_from_ids`: the hash is per id, so the draws do not depend on it, while
#: converting 10M Arrow ids to Python strings at once took ~0.7 GB
HASH_CHUNK = 1_000_000


def _uniform_from_ids(ids: pd.Series, seed: int) -> np.ndarray:
    """A U(0, 1) draw per user that depends only on (``user_id``, ``seed``): order- and batch-independent."""
    key = f"seg{int(seed):013d}"[:16]
    ids = ids.reset_index(drop=True)
    h = np.empty(len(ids), dtype=np.uint64)
    for s in range(0, len(ids), HASH_CHUNK):  # element-wise hash: same values whatever the chunk
        h[s:s + HASH_CHUNK] = pd.util.hash_pandas_object(ids.iloc[s:s + HASH_CHUNK].astype("string"), index=False,
                                                         hash_key=key).to_numpy(np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def _categories(col: str, df: pd.DataFrame, multi: bool) -> list[str]:
    if col in S.BY_NAME and S.BY_NAME[col].categories:
        return list(S.BY_NAME[col].categories)
    s = df[col].dropna().astype(str)
    if multi:
        s = s.str.split(S.MULTI_SEP).explode()
        s = s[s != S.NONE_TOKEN]
    return sorted(s.unique().tolist())


def _encode(spec: FeatureSpec, df: pd.DataFrame, categories: list[str], seed: int, id_column: str = "user_id"
            ) -> tuple[np.ndarray, list[str]]:
    """Encode one column into a float block (NaN where the source value is missing) and its names."""
    col, t = spec.column, spec.transform
    s = df[col]
    if t in ("log1p", "identity"):
        x = _numeric(df, col) if t == "log1p" else pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
        return (np.log1p(x) if t == "log1p" else x)[:, None], [f"{t}({col})" if t != "identity" else col]
    if t == "log1p_dequantised":
        if id_column not in df:
            raise ValueError(f"column {col!r} is dequantised with a per-user draw keyed on {id_column!r}, "
                             f"but the frame has no {id_column!r} column; add it or pass "
                             "FeatureBuilder(id_column=<the run's identifier column>)")
        x = _numeric(df, col)
        return np.log1p(x + _uniform_from_ids(df[id_column], seed))[:, None], [f"log1p({col}+U)"]
    if t == "bool":
        x = s.astype("boolean").astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        return x[:, None], [col]
    txt = s.astype("string")
    if t == "ordinal":
        codes = txt.map({c: i for i, c in enumerate(categories)}).astype("Float64")
        unknown = txt.notna() & codes.isna()
        if unknown.any():
            raise ValueError(f"column {col!r}: expected one of {categories}, got "
                             f"{sorted(txt[unknown].unique().tolist())[:5]} in {_rows(unknown, df)}")
        return codes.to_numpy(dtype="float64", na_value=np.nan)[:, None], [f"{col}[ordinal]"]
    if t == "onehot":
        block = np.column_stack([(txt == c).to_numpy(dtype="float64", na_value=np.nan) for c in categories])
        return block, [f"{col}={c}" for c in categories]
    if t == "multi_hot":
        tokens = txt.str.split(S.MULTI_SEP)
        block = np.column_stack([
            tokens.map(lambda v, c=c: np.nan if not isinstance(v, list) else float(c in v)).to_numpy(dtype="float64")
            for c in categories])
        return block, [f"{col}={c}" for c in categories]
    raise ValueError(f"unknown transform {t!r} for column {col!r}; expected one of "
                     "log1p, log1p_dequantised, ordinal, onehot, multi_hot, bool, identity")


# the constructor parameters are the fields (sklearn: __init__ only stores them); sklearn's own repr,
# and identity equality/hash as for any estimator
@dataclass(eq=False, repr=False)
class FeatureBuilder(TransformerMixin, BaseEstimator):
    """Unified table -> standardised float64 feature matrix for segmentation (fit once, reuse).

    Parameters
    ----------
    features : sequence of FeatureSpec, optional
        Columns and transforms; default :func:`default_segmentation_features` (1st-party behaviour).
    scale : bool, default True
        Standardise every output column to mean 0 and standard deviation 1 on the fitting data, so no
        feature dominates a Euclidean or Gaussian model by its unit.
    allow_missing : bool, default False
        If False, a missing value in any input column is an error naming the column and rows. If True,
        missing values are imputed with the fitted mean of the encoded column (0 after scaling: the
        user carries no information on that feature rather than forming a group of "unknowns").
    missing_indicators : bool, default False
        With ``allow_missing``, append one 0/1 column ``<column>__missing`` per nullable input column.
        Meant for supervised models; do not cluster on them (they make data coverage a segment).
    random_state : int, default 0
        Seed of the per-user dequantisation draw (see :class:`FeatureSpec`).
    id_column : str, default "user_id"
        The run's identifier column (the run configuration's ``id``), which keys the per-user draw.

    Attributes
    ----------
    feature_names_out_ : ndarray of str
    mean_, scale_ : ndarray
        Fitted imputation means and standard deviations of the encoded columns.
    categories_ : dict
        Categories per categorical column, fixed at fit.
    nullable_ : dict
        Whether each input column may be missing (schema), i.e. gets an indicator on request.
    """

    features: Sequence[FeatureSpec] | None = None
    scale: bool = True
    allow_missing: bool = False
    missing_indicators: bool = False
    random_state: int = 0
    id_column: str = "user_id"

    def _specs(self) -> list[FeatureSpec]:
        specs = list(self.features) if self.features is not None else default_segmentation_features()
        if not specs:
            raise ValueError("features is empty: pass at least one FeatureSpec")
        return specs

    def _check_frame(self, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"FeatureBuilder expects a pandas DataFrame (the unified table), got {type(df).__name__}")
        missing = [f.column for f in self._specs() if f.column not in df.columns]
        if missing:
            raise ValueError(f"columns {missing} are missing from the input frame; expected the unified table "
                             f"of helpers.schema (has {list(df.columns)[:8]}...)")
        if len(df) == 0:
            raise ValueError("the input frame has no rows")

    def _encode_all(self, df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[np.ndarray], list[str]]:
        blocks, names, miss, miss_names = [], [], [], []
        for spec in self._specs():
            block, cols = _encode(spec, df, self.categories_[spec.column], self.random_state, self.id_column)
            m = np.isnan(block).any(axis=1)
            if m.any() and not self.allow_missing:
                raise ValueError(f"column {spec.column!r} has missing values in {_rows(m, df)}; segmentation "
                                 "features must be observed for every user. Drop those rows, or pass "
                                 "allow_missing=True to impute them with the fitted mean (not as a category).")
            blocks.append(block)
            names += cols
            if self.missing_indicators and self.nullable_[spec.column]:
                miss.append(m.astype(np.float64))
                miss_names.append(f"{spec.column}__missing")
        return np.column_stack(blocks), names, miss, miss_names

    def _fit(self, df: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        """Fit on ``df``; returns its encoded matrix and missingness indicators (for :meth:`fit_transform`)."""
        self._check_frame(df)
        specs = self._specs()
        self.categories_ = {f.column: _categories(f.column, df, f.transform == "multi_hot")
                            if f.transform in ("ordinal", "onehot", "multi_hot") else [] for f in specs}
        self.nullable_ = {f.column: (S.BY_NAME[f.column].nullable if f.column in S.BY_NAME
                                     else bool(df[f.column].isna().any())) for f in specs}
        X, names, miss, miss_names = self._encode_all(df)
        self.mean_ = np.nanmean(X, axis=0) if np.isfinite(X).any() else np.zeros(X.shape[1])
        self.mean_ = np.where(np.isnan(self.mean_), 0.0, self.mean_)
        sd = np.nanstd(X, axis=0)
        self.scale_ = np.where(~np.isfinite(sd) | (sd < 1e-12), 1.0, sd) if self.scale else np.ones(X.shape[1])
        self.feature_names_out_ = np.array(names + miss_names, dtype=object)
        self.n_features_in_ = len(specs)
        return X, miss

    def fit(self, df: pd.DataFrame, y=None) -> "FeatureBuilder":
        """Fix categories, imputation means and scales on ``df`` (the unified table)."""
        self._fit(df)
        return self

    def fit_transform(self, df: pd.DataFrame, y=None) -> np.ndarray:
        """``fit(df).transform(df)`` with ``df`` encoded once (the same matrix, bit for bit)."""
        return self._finish(*self._fit(df))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode, impute (if allowed) and scale ``df``; returns a float64 array with no NaN."""
        check_is_fitted(self, "mean_")
        self._check_frame(df)
        X, _, miss, _ = self._encode_all(df)
        return self._finish(X, miss)

    def _finish(self, X: np.ndarray, miss: list[np.ndarray]) -> np.ndarray:
        """Impute and scale an encoded matrix in place (the same operations, element by element, as
        ``(np.where(isnan, mean, X) - mean) / scale``, without two more matrices of its size)."""
        X = np.asarray(X, dtype=np.float64, order="C")  # column_stack of the encoder: a fresh array of ours
        nan = np.isnan(X)
        if nan.any():
            np.copyto(X, np.broadcast_to(self.mean_, X.shape), where=nan)
        del nan
        if self.scale:
            np.subtract(X, self.mean_, out=X)
            np.divide(X, self.scale_, out=X)
        if miss:
            X = np.column_stack([X, *miss])
        return np.ascontiguousarray(X, dtype=np.float64)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output columns, e.g. ``log1p(avg_monthly_spend)``, ``traveler_type=business``."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()
