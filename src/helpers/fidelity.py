"""Fidelity and privacy of a synthetic table against the real table it was fitted on.

Fidelity (:func:`fidelity_report`): per-column distribution distance (Kolmogorov-Smirnov for numeric and
date columns, total variation for categorical ones, mean total variation over tokens for multi-valued
ones; a missing value counts as a value of its own), the difference of the pairwise association
matrices (Spearman rho / correlation ratio eta / Cramer's V) and a 0-1 summary score. Utility
(:func:`utility`): AUC of a classifier trained on synthetic rows and tested on held-out real rows (TSTR)
beside the same classifier trained on the real training rows (TRTR). Privacy (:func:`privacy_report`):
distance to the closest training record (DCR) of synthetic rows versus that of held-out real rows, and
the number of synthetic rows that exactly copy a training row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.linalg import blas
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from .synth import ColumnSpec, infer_specs, row_hashes

_NS_PER_DAY = 86_400 * 10**9


# --- shared helpers ------------------------------------------------------------------------------------
def _check_same_columns(real: pd.DataFrame, synth: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    cols = list(real.columns) if columns is None else list(columns)
    for name, df in (("real", real), ("synthetic", synth)):
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise ValueError(f"columns {absent} are absent from the {name} table; "
                             f"expected both tables to hold {cols}")
    if len(real) == 0 or len(synth) == 0:
        raise ValueError(f"both tables need rows: real has {len(real)}, synthetic has {len(synth)}")
    return cols


def _numeric_values(s: pd.Series) -> np.ndarray:
    """Float values of a numeric, boolean or date column (dates in days), NaN where missing."""
    if pd.api.types.is_datetime64_any_dtype(s):
        v = pd.to_datetime(s).to_numpy("datetime64[ns]").astype("int64").astype(float) / _NS_PER_DAY
        return np.where(s.isna().to_numpy(), np.nan, v)
    return pd.to_numeric(s).astype("float64").to_numpy(na_value=np.nan)


def _token_matrix(s: pd.Series, tokens: Sequence[str], sep: str) -> np.ndarray:
    """0/1 presence of each token (one column per token), NaN where the set itself is missing."""
    # string tests on the distinct cells only (a few hundred token sets in 1M rows), mapped back by their codes;
    # a missing set takes the appended all-NaN row (code -1)
    codes, uniq = pd.factorize(s)
    padded = [sep + str(c) + sep for c in uniq]
    table = np.array([[sep + t + sep in c for t in tokens] for c in padded], dtype=float).reshape(len(padded),
                                                                                                   len(tokens))
    return np.vstack([table, np.full((1, len(tokens)), np.nan)])[codes]


def _is_continuous(sp: ColumnSpec) -> bool:
    return sp.kind in ("numeric", "integer", "date")


# --- per-column distances ----------------------------------------------------------------------------
def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic with missing values (NaN) treated as ``+inf``.

    So the statistic is ``max(KS of the observed parts' sub-distributions, |difference in missing share|)``
    in one number: 0 for equal distributions, 1 for disjoint ones.
    """
    a = np.where(np.isnan(a), np.inf, a)
    b = np.where(np.isnan(b), np.inf, b)
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def tv_distance(a: pd.Series, b: pd.Series) -> float:
    """Total variation distance ``0.5 * sum |p_a - p_b|`` between two categorical samples (NaN a level)."""
    pa, pb = _value_shares(a), _value_shares(b)
    pa, pb = pa.align(pb, fill_value=0.0)
    return float(0.5 * np.abs(pa - pb).sum())


def _value_shares(s: pd.Series) -> pd.Series:
    """``s.astype(object).where(s.notna(), "<NA>").value_counts(normalize=True)`` (same labels, order and
    values) counted on the codes of the distinct values: building and hashing an object array of every row
    was most of :func:`tv_distance` at 1M rows."""
    codes, uniq = pd.factorize(s, use_na_sentinel=False)  # missing is a value, in order of first appearance
    counts = np.bincount(codes, minlength=len(uniq))
    keys = np.array([NA_LABEL if pd.isna(u) else u for u in uniq], dtype=object)
    idx = pd.Index(keys, name=s.name)
    if idx.dtype in [bool, "string"]:  # as value_counts does for object keys
        idx = idx.astype(object)
    return pd.Series(counts, index=idx, name="proportion").sort_values(ascending=False) / counts.sum()


NA_LABEL = "<NA>"


def column_distances(real: pd.DataFrame, synth: pd.DataFrame, columns: Sequence[str] | None = None,
                     multi_valued: Sequence[str] | None = None, sep: str = "|",
                     none_token: str = "none", specs: list[ColumnSpec] | None = None) -> pd.DataFrame:
    """Distance between the real and synthetic distribution of every column.

    ``numeric``/``integer``/``date`` columns: :func:`ks_distance`; ``category``/``bool``: :func:`tv_distance`;
    ``multi``: the mean over tokens of the total variation between the three-state variables
    (set missing / token present / token absent). Every distance is in [0, 1], 0 meaning identical.

    ``specs`` (:func:`helpers.synth.infer_specs` of ``real[columns]``) saves inferring them again.

    Returns
    -------
    DataFrame with one row per column: ``column``, ``kind``, ``metric`` (``KS``/``TV``/``mean token TV``),
    ``distance``.
    """
    cols = _check_same_columns(real, synth, columns)
    specs = specs or infer_specs(real[cols], multi_valued, sep, none_token, max_categories=10**9)
    rows = []
    for sp in specs:
        r, s = real[sp.name], synth[sp.name]
        if _is_continuous(sp):
            rows.append((sp.name, sp.kind, "KS", ks_distance(_numeric_values(r), _numeric_values(s))))
        elif sp.kind == "multi":
            mr, ms = _token_matrix(r, sp.levels, sep), _token_matrix(s, sp.levels, sep)
            states = lambda m: np.stack([np.isnan(m).mean(0), (m == 1).mean(0), (m == 0).mean(0)])
            tvs = 0.5 * np.abs(states(mr) - states(ms)).sum(axis=0)  # one TV per token
            rows.append((sp.name, sp.kind, "mean token TV", float(np.mean(tvs)) if tvs.size else tv_distance(r, s)))
        else:
            rows.append((sp.name, sp.kind, "TV", tv_distance(r, s)))
    return pd.DataFrame(rows, columns=["column", "kind", "metric", "distance"])


# --- pairwise association ----------------------------------------------------------------------------
def _analysis_variables(df: pd.DataFrame, specs: list[ColumnSpec], sep: str) -> dict[str, tuple[str, np.ndarray]]:
    """Variables of the association matrix: ``("num", ranks)`` or ``("cat", codes)``; tokens split out.

    Numeric variables are average ranks (NaN kept); categorical variables are integer codes with missing
    as a code of its own; each token of a multi-valued column is a 3-level variable (missing/absent/present).
    """
    out: dict[str, tuple[str, np.ndarray]] = {}
    for sp in specs:
        s = df[sp.name]
        if _is_continuous(sp):
            out[sp.name] = ("num", pd.Series(_numeric_values(s)).rank().to_numpy())
        elif sp.kind == "multi":
            m = _token_matrix(s, sp.levels, sep)
            for j, t in enumerate(sp.levels):
                codes = np.where(np.isnan(m[:, j]), 2, m[:, j]).astype(np.int64)
                out[f"{sp.name}#{t}"] = ("cat", _compact_codes(codes))
        else:
            # the categories of the distinct values, mapped back to the rows by their codes (the same codes as
            # pd.Categorical of every row, without an object array of 1M rows)
            row_codes, uniq = pd.factorize(s, use_na_sentinel=False)
            distinct = np.array([NA_LABEL if pd.isna(u) else u for u in uniq], dtype=object)
            codes = pd.Categorical(distinct, categories=[*map(str, sp.levels), NA_LABEL] if sp.kind == "category"
                                   else [False, True, NA_LABEL]).codes[row_codes]
            out[sp.name] = ("cat", _compact_codes(np.where(codes < 0, len(sp.levels) + 1, codes).astype(np.int64)))
    # codes are compacted as each variable is made (levels that do not occur dropped, so that contingency tables
    # have no empty margins): compacting them all at the end held every variable twice, 0.3 GB at 1M rows
    return out


def _compact_codes(v: np.ndarray) -> np.ndarray:
    """Non-negative integer codes renumbered 0..k-1 over the codes that occur, keeping their order (what
    ``np.unique(v, return_inverse=True)[1]`` gives, by counting instead of sorting), as int32 (half the memory
    of int64 codes; a variable has far fewer than 2**31 levels)."""
    present = np.bincount(v) > 0
    return (np.cumsum(present) - 1).astype(np.int32)[v]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two rank vectors over the rows where both are observed.

    The ranks come from :func:`_analysis_variables` (each variable ranked over its own observed values),
    so without missing values this is Spearman's rho exactly.
    """
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return np.nan
    a, b = x[ok], y[ok]
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramer's V of two compact code vectors (every code 0..k-1 occurs)."""
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    if ka < 2 or kb < 2:
        return 0.0
    return _cramers_v_of_table(np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).astype(float))


def _cramers_v_of_table(table: np.ndarray) -> float:
    """Cramer's V of a C-contiguous float64 table of counts whose rows and columns all occur."""
    ka, kb = table.shape
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * (min(ka, kb) - 1))))


#: rows per block of the one-hot products (float32 sums of 0/1 stay exact below 2**24; small blocks were
#: fastest on one thread)
_ONEHOT_CHUNK = 1 << 13


def _level_counts(cats: list[np.ndarray], numeric: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray | None]:
    """Every pairwise contingency table of the categorical variables, and each level's sums of ``numeric``.

    ``cats`` are compact code vectors; with ``L`` levels in all, the one-hot matrix ``O`` (rows x L) gives
    every table at once as ``O'O`` (the block of variables i, j is their contingency table) and the level
    sums of the columns of ``numeric`` as ``O'numeric``. Counts are exact (float32 sums of 0/1 within a
    block of :data:`_ONEHOT_CHUNK` rows); the sums are exact when ``numeric`` holds half-integers (ranks),
    so the results equal one ``bincount`` per pair bit for bit, in one pass over the rows instead of one per
    pair (1,190 passes over 1M rows for the panel).

    Returns ``(counts, offsets, sums)``: ``counts[offsets[i]:offsets[i+1], offsets[j]:offsets[j+1]]`` is the
    table of variables i < j (upper block triangle only); ``sums`` is L x numeric.shape[1] (None without ``numeric``).
    """
    k = np.array([int(c.max()) + 1 for c in cats], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(k)])
    L, n = int(off[-1]), len(cats[0])
    cols = np.column_stack([c.astype(np.int32) + np.int32(o) for c, o in zip(cats, off[:-1])])
    counts = np.zeros((L, L))
    sums = None if numeric is None else np.zeros((L, numeric.shape[1]))
    rows = np.arange(min(_ONEHOT_CHUNK, n))[:, None]
    # one BLAS thread: these thin products ran ~10x slower on two threads of the shared 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n, _ONEHOT_CHUNK):
            block = cols[start:start + _ONEHOT_CHUNK]
            onehot = np.zeros((len(block), L), dtype=np.float32)
            onehot[rows[:len(block)], block] = 1.0
            counts += blas.ssyrk(1.0, onehot, trans=1)  # upper triangle of O'O: every block i < j lies in it
            if sums is not None:
                sums += onehot.T.astype(np.float64) @ numeric[start:start + _ONEHOT_CHUNK]
    return counts, off, sums


@dataclass(frozen=True)
class _Numeric:
    """A numeric variable's observed values, their mean and total sum of squares, computed once for every
    correlation ratio the variable enters (``total_ss`` None: fewer than 3 values or no spread, eta = 0)."""

    values: np.ndarray
    ok: np.ndarray | None  # rows observed (None: every row)
    mean: float
    total_ss: float | None

    @classmethod
    def of(cls, x: np.ndarray) -> "_Numeric":
        ok = ~np.isnan(x)
        v = x if ok.all() else x[ok]
        keep = None if ok.all() else ok
        if v.size < 3 or v.std() == 0:
            return cls(v, keep, 0.0, None)
        mean = float(v.mean())
        return cls(v, keep, mean, float(((v - mean) ** 2).sum()))


def _correlation_ratio(codes: np.ndarray, x: np.ndarray | _Numeric) -> float:
    """eta = sqrt(between-group sum of squares / total sum of squares) of ``x`` grouped by ``codes``."""
    num = x if isinstance(x, _Numeric) else _Numeric.of(x)
    if num.total_ss is None:
        return 0.0
    c = codes if num.ok is None else codes[num.ok]
    n = np.bincount(c)
    means = np.bincount(c, weights=num.values) / np.maximum(n, 1)
    return float(np.sqrt(float((n * (means - num.mean) ** 2).sum()) / num.total_ss))


def _eta_from_sums(level_n: np.ndarray, level_sum: np.ndarray, num: _Numeric) -> float:
    """:func:`_correlation_ratio` from the per-level counts and sums of the observed values: the same
    arrays as its ``bincount`` (trimmed after the last level that occurs), so the same result bit for bit."""
    if num.total_ss is None:
        return 0.0
    present = np.flatnonzero(level_n)
    size = int(present[-1]) + 1 if present.size else 0
    n = np.rint(level_n[:size]).astype(np.int64)
    means = level_sum[:size] / np.maximum(n, 1)
    return float(np.sqrt(float((n * (means - num.mean) ** 2).sum()) / num.total_ss))


def association_matrix(df: pd.DataFrame, columns: Sequence[str] | None = None,
                       multi_valued: Sequence[str] | None = None, sep: str = "|",
                       none_token: str = "none", specs: list[ColumnSpec] | None = None) -> pd.DataFrame:
    """Pairwise association of mixed columns in one matrix.

    numeric x numeric: Spearman's rho (signed, pairwise complete); numeric x categorical: correlation
    ratio eta of the ranks (0-1); categorical x categorical: Cramer's V (0-1, missing a level of its own).
    Dates are numeric; every token of a multi-valued column is its own categorical variable
    ``<col>#<token>``. The diagonal is 1.
    """
    cols = list(df.columns) if columns is None else list(columns)
    specs = specs or infer_specs(df[cols], multi_valued, sep, none_token, max_categories=10**9)
    var = _analysis_variables(df, specs, sep)
    names = list(var)
    pos = {name: i for i, name in enumerate(names)}
    cat = [k for k in names if var[k][0] == "cat"]
    num = [k for k in names if var[k][0] == "num"]
    numeric = {k: _Numeric.of(var[k][1]) for k in num}  # shared by every eta
    m = np.eye(len(names))
    for a in range(len(num)):
        for b in range(a + 1, len(num)):
            i, j = pos[num[a]], pos[num[b]]
            m[i, j] = m[j, i] = _spearman(var[num[a]][1], var[num[b]][1])
    if cat:
        # eta needs, per level, the count and the sum of the observed values of each numeric variable: the
        # columns "observed" (0/1) and "value where observed, else 0" of every numeric variable
        obs = [np.isfinite(var[k][1]) for k in num]
        numeric_cols = np.column_stack([c for k, ok in zip(num, obs) for c in (ok.astype(np.float64),
                                                                               np.where(ok, var[k][1], 0.0))]) \
            if num else None
        counts, off, sums = _level_counts([var[k][1] for k in cat], numeric_cols)
        for a in range(len(cat)):
            ra = slice(off[a], off[a + 1])
            for b in range(a + 1, len(cat)):
                i, j = pos[cat[a]], pos[cat[b]]
                ka, kb = off[a + 1] - off[a], off[b + 1] - off[b]
                m[i, j] = m[j, i] = 0.0 if ka < 2 or kb < 2 else \
                    _cramers_v_of_table(np.ascontiguousarray(counts[ra, off[b]:off[b + 1]]))
            for t, name in enumerate(num):
                i, j = pos[cat[a]], pos[name]
                m[i, j] = m[j, i] = _eta_from_sums(sums[ra, 2 * t], sums[ra, 2 * t + 1], numeric[name])
    return pd.DataFrame(m, index=names, columns=names)


@dataclass
class FidelityReport:
    """Result of :func:`fidelity_report`.

    Attributes
    ----------
    columns : per-column distances (:func:`column_distances`).
    association_real, association_synth : association matrices (:func:`association_matrix`).
    association_diff : ``|association_real - association_synth|``, clipped to [0, 1].
    mean_column_distance : mean of ``columns.distance``.
    mean_association_diff : mean of the upper triangle of ``association_diff``.
    score : ``1 - (mean_column_distance + mean_association_diff) / 2`` in [0, 1]; 1 means identical
        marginals and identical pairwise associations.
    """

    columns: pd.DataFrame
    association_real: pd.DataFrame
    association_synth: pd.DataFrame
    association_diff: pd.DataFrame
    mean_column_distance: float
    mean_association_diff: float
    score: float


def fidelity_report(real: pd.DataFrame, synth: pd.DataFrame, columns: Sequence[str] | None = None,
                    multi_valued: Sequence[str] | None = None, sep: str = "|",
                    none_token: str = "none") -> FidelityReport:
    """Compare a synthetic table with the real one: marginals, pairwise associations, summary score.

    Parameters
    ----------
    real, synth : the tables; ``columns`` (default: all of ``real``) must be in both. Leave identifier
        columns out.
    multi_valued, sep, none_token : multi-valued columns (default: those of :mod:`helpers.schema`).

    Returns
    -------
    FidelityReport (its ``score`` is the ``synth_fidelity_score`` of the notebook).
    """
    cols = _check_same_columns(real, synth, columns)
    specs = infer_specs(real[cols], multi_valued, sep, none_token, max_categories=10**9)
    dist = column_distances(real, synth, cols, multi_valued, sep, none_token, specs=specs)
    ar = association_matrix(real, cols, specs=specs, sep=sep)
    as_ = association_matrix(synth, cols, specs=specs, sep=sep)
    diff = (ar - as_).abs().clip(upper=1.0)
    iu = np.triu_indices(len(diff), k=1)
    mean_assoc = float(np.nanmean(diff.to_numpy()[iu])) if iu[0].size else 0.0
    mean_col = float(dist["distance"].mean())
    return FidelityReport(dist, ar, as_, diff, mean_col, mean_assoc, 1.0 - (mean_col + mean_assoc) / 2)


# --- utility: train on synthetic, test on real -----------------------------------------------------------
def _feature_frame(df: pd.DataFrame, specs: list[ColumnSpec], sep: str) -> pd.DataFrame:
    """Model features: numbers (dates in days), categoricals as fixed-level ``category``, tokens as 0/1."""
    out = {}
    for sp in specs:
        s = df[sp.name]
        if _is_continuous(sp):
            out[sp.name] = _numeric_values(s)
        elif sp.kind == "multi":
            m = _token_matrix(s, sp.levels, sep)
            for j, t in enumerate(sp.levels):
                out[f"{sp.name}#{t}"] = m[:, j]
        else:
            levels = list(sp.levels)
            out[sp.name] = pd.Categorical(s.astype(object).where(s.notna(), None), categories=levels)
    return pd.DataFrame(out, index=df.index)


def _binary_target(s: pd.Series, positive: object, name: str) -> np.ndarray:
    if s.isna().any():
        raise ValueError(f"target column {name!r} has {int(s.isna().sum())} missing values; "
                         "drop those rows or pick a complete target")
    return (s.astype(object) == positive).to_numpy()


@dataclass
class UtilityReport:
    """Result of :func:`utility`: AUC on held-out real rows of a model trained on synthetic (TSTR) and on
    real (TRTR) rows, the positive class used, and ``ratio = tstr_auc / trtr_auc``."""

    tstr_auc: float
    trtr_auc: float
    ratio: float
    positive: object
    n_train: int
    n_synth: int
    n_test: int


def utility(real_train: pd.DataFrame, real_test: pd.DataFrame, synth: pd.DataFrame, target: str,
            positive: object | None = None, features: Sequence[str] | None = None,
            multi_valued: Sequence[str] | None = None, sep: str = "|", none_token: str = "none",
            random_state: int = 0, max_iter: int = 100, n_threads: int | None = 1) -> UtilityReport:
    """Train-on-synthetic / test-on-real utility against train-on-real, for a binary target.

    The same model (scikit-learn ``HistGradientBoostingClassifier``, native categorical and missing
    value support, early stopping off, fixed seed) is fitted on ``synth`` and on ``real_train`` and both
    are scored by ROC AUC on ``real_test``, which neither has seen.

    Parameters
    ----------
    real_train : the real rows the synthesizer was fitted on.
    real_test : held-out real rows (not used to fit the synthesizer).
    synth : synthetic rows.
    target : binary column to predict.
    positive : the positive class; default the less frequent value of ``target`` in ``real_train``.
    features : predictor columns (default: every other column of ``real_train``). Leave identifiers out.
    multi_valued, sep, none_token : see :func:`helpers.synth.infer_specs`.
    random_state, max_iter : of the classifier.
    n_threads : OpenMP threads of the classifier during this call (None: the library default). One thread
        is the fastest on tables of this size and on a shared machine, where spinning OpenMP threads
        slow each other down by an order of magnitude.

    Raises
    ------
    ValueError
        If ``target`` is absent, not binary in ``real_train``, or a class is missing from a table.
    """
    for name, df in (("real_train", real_train), ("real_test", real_test), ("synth", synth)):
        if target not in df.columns:
            raise ValueError(f"target column {target!r} is absent from {name}")
    levels = real_train[target].dropna().unique()
    if len(levels) != 2:
        raise ValueError(f"target column {target!r} must have exactly 2 values in real_train, "
                         f"found {len(levels)}: {list(levels)[:5]}")
    if positive is None:
        positive = real_train[target].value_counts().idxmin()
    feats = [c for c in real_train.columns if c != target] if features is None else list(features)
    specs = infer_specs(real_train[feats], multi_valued, sep, none_token, max_categories=250)
    # categories seen in any table, so that every frame gets the same category codes
    specs = [sp if sp.kind != "category" else ColumnSpec(
        sp.name, sp.kind, tuple(sorted(set(sp.levels) | set(synth[sp.name].dropna().unique())
                                       | set(real_test[sp.name].dropna().unique()), key=str)),
        sp.has_missing, sp.dtype) for sp in specs]
    Xtr, Xs, Xte = (_feature_frame(d, specs, sep) for d in (real_train, synth, real_test))
    ytr, ys, yte = (_binary_target(d[target], positive, target) for d in (real_train, synth, real_test))
    for name, y in (("synth", ys), ("real_test", yte)):
        if y.all() or not y.any():
            raise ValueError(f"target {target!r} has a single class in {name}; AUC is undefined")

    def auc(X: pd.DataFrame, y: np.ndarray) -> float:
        model = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                               categorical_features="from_dtype", random_state=random_state)
        model.fit(X, y)
        return float(roc_auc_score(yte, model.predict_proba(Xte)[:, 1]))

    with threadpool_limits(limits=n_threads, user_api="openmp"):
        tstr, trtr = auc(Xs, ys), auc(Xtr, ytr)
    return UtilityReport(tstr, trtr, tstr / trtr, positive, len(real_train), len(synth), len(real_test))


# --- privacy: distance to closest record, exact copies ---------------------------------------------------
class GowerEmbedding:
    """Embed mixed rows in R^d so that Euclidean distance is a Gower-like distance.

    Each column contributes at most about 1 to the squared distance: numeric/date values are scaled by
    the reference range (``(x - min) / (max - min)``); a categorical column is one-hot encoded times
    ``1/sqrt(2)`` (a mismatch adds 1); a multi-valued column's token indicators are scaled by
    ``1/sqrt(T)`` (``T`` tokens; disagreeing on every token adds 1); a missing value adds a 0/1
    indicator (its value is set to the reference median).
    """

    def __init__(self, multi_valued: Sequence[str] | None = None, sep: str = "|", none_token: str = "none"):
        self.multi_valued = multi_valued
        self.sep = sep
        self.none_token = none_token

    def fit(self, reference: pd.DataFrame) -> "GowerEmbedding":
        """Learn levels, ranges and medians from the reference (training) table."""
        self.specs_ = infer_specs(reference, self.multi_valued, self.sep, self.none_token, max_categories=10**9)
        self.scale_ = {}
        for sp in self.specs_:
            if _is_continuous(sp):
                v = _numeric_values(reference[sp.name])
                lo, hi = np.nanmin(v), np.nanmax(v)
                self.scale_[sp.name] = (lo, (hi - lo) or 1.0, np.nanmedian(v))
        return self

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The embedded rows of ``df`` (float matrix)."""
        parts = []
        for sp in self.specs_:
            s = df[sp.name]
            na = s.isna().to_numpy(float)
            if _is_continuous(sp):
                lo, rng, med = self.scale_[sp.name]
                v = _numeric_values(s)
                parts.append(((np.where(np.isnan(v), med, v) - lo) / rng)[:, None])
                parts.append(na[:, None])
            elif sp.kind == "multi":
                if sp.levels:
                    parts.append(np.nan_to_num(_token_matrix(s, sp.levels, self.sep)) / np.sqrt(len(sp.levels)))
                parts.append(na[:, None])
            else:
                cat = pd.Categorical(s.astype(object).where(s.notna(), None), categories=list(sp.levels))
                onehot = np.zeros((len(s), len(sp.levels) + 1))
                onehot[np.arange(len(s)), np.where(cat.codes < 0, len(sp.levels), cat.codes)] = 1.0
                parts.append(onehot / np.sqrt(2.0))
        return np.hstack(parts)


def _nearest_distance(query: np.ndarray, reference: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row (exact, chunked BLAS)."""
    r2 = np.einsum("ij,ij->i", reference, reference)
    out = np.empty(len(query))
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + r2[None, :] - 2.0 * q @ reference.T
        out[start:start + chunk] = np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
    return out


def distance_to_closest_record(query: pd.DataFrame, reference: pd.DataFrame,
                               embedding: GowerEmbedding | None = None) -> np.ndarray:
    """Euclidean distance in the :class:`GowerEmbedding` from every query row to its nearest reference row."""
    emb = embedding or GowerEmbedding().fit(reference)
    return _nearest_distance(emb.transform(query), emb.transform(reference))


@dataclass
class PrivacyReport:
    """Result of :func:`privacy_report`.

    Attributes
    ----------
    dcr_synth, dcr_holdout : distances to the closest training record of the evaluated synthetic and
        held-out real rows.
    dcr_ratio : ``median(dcr_synth) / median(dcr_holdout)``; about 1 when the synthesizer generalises like
        a fresh sample of the population, well below 1 when it reproduces its training rows.
    share_closer_than_holdout_p5 : share of synthetic rows closer to a training row than the 5th
        percentile of the held-out DCRs (about 0.05 for a synthesizer that does not memorise).
    exact_copies : synthetic rows (all of them) that equal a training row on every column.
    holdout_exact_copies : held-out real rows that equal a training row (the natural duplicate rate).
    """

    dcr_synth: np.ndarray
    dcr_holdout: np.ndarray
    dcr_ratio: float
    share_closer_than_holdout_p5: float
    exact_copies: int
    holdout_exact_copies: int
    n_eval: int


def privacy_report(train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
                   columns: Sequence[str] | None = None, n_eval: int = 2000,
                   multi_valued: Sequence[str] | None = None, sep: str = "|", none_token: str = "none",
                   random_state: int = 0) -> PrivacyReport:
    """Distance to closest record of synthetic vs held-out real rows, and exact copies of training rows.

    Parameters
    ----------
    train : the real rows the synthesizer was fitted on (the reference set).
    holdout : real rows from the same source the synthesizer never saw.
    synth : synthetic rows.
    columns : columns compared (default: all of ``train``); leave identifiers out.
    n_eval : number of synthetic and of held-out rows whose DCR is computed (the same number from each,
        sampled with ``random_state``); exact copies are counted over all synthetic rows.

    Raises
    ------
    ValueError
        If a column is missing from a table or ``n_eval`` < 1.
    """
    cols = _check_same_columns(train, synth, columns)
    _check_same_columns(train, holdout, cols)
    if n_eval < 1:
        raise ValueError(f"n_eval must be >= 1, got {n_eval}")
    rng = np.random.default_rng(random_state)
    k = min(n_eval, len(synth), len(holdout))
    s_eval = synth[cols].iloc[np.sort(rng.choice(len(synth), k, replace=False))]
    h_eval = holdout[cols].iloc[np.sort(rng.choice(len(holdout), k, replace=False))]
    emb = GowerEmbedding(multi_valued, sep, none_token).fit(train[cols])
    ref = emb.transform(train[cols])
    d_s = _nearest_distance(emb.transform(s_eval), ref)
    d_h = _nearest_distance(emb.transform(h_eval), ref)
    med_h = float(np.median(d_h))
    ratio = float(np.median(d_s) / med_h) if med_h > 0 else np.nan
    train_h = np.unique(row_hashes(train[cols]))
    return PrivacyReport(
        d_s, d_h, ratio, float(np.mean(d_s < np.quantile(d_h, 0.05))),
        int(np.isin(row_hashes(synth[cols]), train_h).sum()),
        int(np.isin(row_hashes(holdout[cols]), train_h).sum()), k)


# --- rescaled fidelity against held-out real rows, copying penalised ---------------------------------------
def independent_marginals(df: pd.DataFrame, n: int | None = None, random_state: int = 0) -> pd.DataFrame:
    """Rows drawn from every column's empirical marginal independently (all dependence destroyed).

    The zero point of :func:`rescaled_fidelity`: each column is a bootstrap draw of its own values, so
    every marginal is kept (up to sampling noise) and every association between columns is lost.
    """
    rng = np.random.default_rng(random_state)
    n = len(df) if n is None else int(n)
    return pd.DataFrame({c: df[c].to_numpy()[rng.integers(0, len(df), n)] for c in df.columns})


def bootstrap_copy(df: pd.DataFrame, n: int | None = None, random_state: int = 0) -> pd.DataFrame:
    """Whole training rows drawn with replacement: the 'synthesizer' that only copies."""
    rng = np.random.default_rng(random_state)
    n = len(df) if n is None else int(n)
    return df.iloc[rng.integers(0, len(df), n)].reset_index(drop=True)


@dataclass
class RescaledFidelity:
    """Result of :func:`rescaled_fidelity` (every raw figure is a :func:`fidelity_report` score against
    the *held-out* real rows, never against the rows the synthesizer was fitted on).

    Attributes
    ----------
    raw : raw fidelity of the synthetic rows against the held-out rows (0-1).
    independent_raw : the same for independent marginals of the training rows (the 0 anchor).
    real_raw : the same for the real training rows themselves, an independent real sample of the
        population (the 1 anchor: what a synthesizer that drew fresh real people would get).
    rescaled : ``(raw - independent_raw) / (real_raw - independent_raw)``: 0 = no more dependence kept
        than independent marginals, 1 = as close to the held-out rows as a fresh real sample. Values a
        little above 1 are sampling noise; this figure alone does not penalise copying (a bootstrap copy
        of the training rows is a real sample too and scores about 1).
    near_copy_share : share of synthetic rows closer to a training row than the 5th percentile of the
        held-out rows' distances to the training rows (about 0.05 when nothing is memorised, 1 for copies).
    excess_near_copy_share : ``max(0, (near_copy_share - 0.05) / 0.95)``: the share of synthetic rows that
        are near-copies beyond what fresh real rows produce.
    score : ``rescaled * (1 - excess_near_copy_share)``: fidelity credited only to the synthetic rows that
        are not excess near-copies. A copied row is released real data, not synthesis, so it earns
        nothing: a bootstrap copy scores about 0, a synthesizer that does not memorise keeps its rescaled
        fidelity.
    """

    raw: float
    independent_raw: float
    real_raw: float
    rescaled: float
    near_copy_share: float
    excess_near_copy_share: float
    score: float
    n_synth: int
    n_holdout: int


NEAR_COPY_QUANTILE = 0.05


def rescaled_fidelity(train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
                      columns: Sequence[str] | None = None, n_eval: int = 2000,
                      multi_valued: Sequence[str] | None = None, sep: str = "|", none_token: str = "none",
                      random_state: int = 0, privacy: PrivacyReport | None = None,
                      anchors: tuple[float, float] | None = None) -> RescaledFidelity:
    """Fidelity of ``synth`` against held-out real rows, rescaled between independent marginals (0) and a
    real sample (1), with excess near-copies of training rows earning no credit.

    Parameters
    ----------
    train : real rows the synthesizer was fitted on.
    holdout : real rows it never saw (the yardstick of fidelity and of near-copies).
    synth : synthetic rows.
    columns : compared columns (default: all of ``train``); leave identifiers out.
    n_eval, random_state : of the distance-to-closest-record computation (:func:`privacy_report`).
    privacy : an already computed :func:`privacy_report` of the same tables (saves recomputing it).
    anchors : ``(independent_raw, real_raw)`` already computed by :func:`fidelity_anchors` for the same
        train/holdout and synthetic size (saves recomputing them for several synthesizers).

    Raises
    ------
    ValueError
        If a column is missing, or the anchors coincide (the real sample is no closer to the held-out rows
        than independent marginals: the table has no dependence to measure).
    """
    cols = _check_same_columns(train, synth, columns)
    _check_same_columns(train, holdout, cols)
    ind, real = anchors if anchors is not None else fidelity_anchors(train, holdout, len(synth), cols,
                                                                     multi_valued, sep, none_token, random_state)
    if not real - ind > 1e-9:
        raise ValueError(f"fidelity anchors coincide (independent marginals {ind:.4f}, real sample {real:.4f}): "
                         "the columns carry no dependence a synthesizer could keep; compare marginals instead")
    raw = fidelity_report(holdout[cols], synth[cols], cols, multi_valued, sep, none_token).score
    pr = privacy or privacy_report(train[cols], holdout[cols], synth[cols], cols, n_eval,
                                   multi_valued, sep, none_token, random_state)
    share = pr.share_closer_than_holdout_p5
    excess = max(0.0, (share - NEAR_COPY_QUANTILE) / (1 - NEAR_COPY_QUANTILE))
    rescaled = (raw - ind) / (real - ind)
    return RescaledFidelity(raw, ind, real, rescaled, share, excess, rescaled * (1 - excess),
                            len(synth), len(holdout))


def fidelity_anchors(train: pd.DataFrame, holdout: pd.DataFrame, n_synth: int | None = None,
                     columns: Sequence[str] | None = None, multi_valued: Sequence[str] | None = None,
                     sep: str = "|", none_token: str = "none", random_state: int = 0) -> tuple[float, float]:
    """``(independent_raw, real_raw)``: raw fidelity against ``holdout`` of independent marginals of
    ``train`` (``n_synth`` rows) and of the real training rows (``min(n_synth, len(train))`` of them, so that
    the real sample has the synthetic table's size where it can)."""
    cols = list(train.columns) if columns is None else list(columns)
    n = len(train) if n_synth is None else int(n_synth)
    ind = independent_marginals(train[cols], n, random_state)
    m = min(n, len(train))
    real = train[cols] if m == len(train) else train[cols].sample(m, random_state=random_state)
    f = lambda s: fidelity_report(holdout[cols], s, cols, multi_valued, sep, none_token).score
    return f(ind), f(real)
