"""The lookalike model matrix built from the run configuration, with feature groups, labels and leak checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import audience as A
from .seeds import CHURN_SCORE, defining_columns


#: a feature group whose single-feature AUC against the seed is at least this "defines" the seed
LEAK_AUC = 0.97


SOURCE_OF_PARTY = {"1st": "1st party", "2nd": "2nd party", "3rd": "3rd party", "derived": "1st party"}


SOURCES = ("1st party", "2nd party", "3rd party")


MULTI_SEP = "|"


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
    #: columns being built (:func:`build_features`), ``(group, columns)`` in the order added, joined into
    #: ``X`` once at the end
    _parts: list[tuple[str, pd.DataFrame]] = field(default_factory=list, init=False, repr=False, compare=False)


def _lower(label: str) -> str:
    return label[:1].lower() + label[1:] if label[:2] != label[:2].upper() else label


def _text(s: pd.Series) -> pd.Series:
    """``s.astype("string")`` unless it is text already (Arrow text stays in Arrow: no Python string per row)."""
    return s if isinstance(s.dtype, pd.StringDtype) else s.astype("string")


def _ordinal(s: pd.Series, cats: Sequence[str]) -> pd.Series:
    # each distinct text mapped once (the same values as ``.map`` of every row's text)
    codes, uniques = pd.factorize(_text(s), use_na_sentinel=True)
    score = {c: float(i) for i, c in enumerate(cats)}
    table = np.array([score.get(str(u), np.nan) for u in uniques] + [np.nan], dtype=float)
    return pd.Series(table[codes], index=s.index, name=s.name)


def _tokens(s: pd.Series, cats: Sequence[str], prefix: str, multi: bool) -> pd.DataFrame:
    """Multi-hot (multi-valued columns) or one-hot (categorical) indicators; missing -> all zero."""
    # encode each distinct text once and index by its code: a table has few distinct values (or
    # '|'-joined subsets) but up to millions of rows, and splitting every row's text cost 9 s per 200k users
    codes, uniques = pd.factorize(_text(s), use_na_sentinel=True)
    col = {c: j for j, c in enumerate(cats)}
    # 0/1 as one byte: the indicators are most of the columns (90 of 107 at the default configuration) and
    # every group's columns are held together until joined (0.72 GB as float64 at 1M users, 0.09 GB so)
    table = np.zeros((len(uniques) + 1, len(cats)), dtype=np.uint8)  # the last row: missing values (code -1)
    for u, text in enumerate(uniques):
        for token in (str(text).split(MULTI_SEP) if multi else [str(text)]):
            if token in col:
                table[u, col[token]] = 1.0
    return pd.DataFrame(table[codes], index=s.index, columns=[f"{prefix}={c}" for c in cats])


def _add(f: Features, group: str, source: str, label: str, cols: pd.DataFrame) -> None:
    # the columns are kept aside and joined once (_assemble): joining per group copied the growing matrix
    f._parts.append((group, cols))
    f.groups[group] = list(cols.columns)
    f.source[group] = source
    f.labels[group] = label


def _assemble(f: Features) -> None:
    """Join the columns :func:`_add` collected into ``f.X`` (in the order added), without copying them.

    Every part keeps its own dtype: the 0/1 indicators of :func:`_tokens` stay one byte each (90 of the
    106 columns of the default configuration), the other columns float64. The scorers read rows of the
    matrix as float64 block by block (:func:`rows_matrix`: the same values as ``X.to_numpy(float)``), so the
    float64 matrix of the whole panel (0.85 GB at 1M users, 8.5 GB at 10M) is never held: 0.22 GB per
    million users instead.
    """
    parts, f._parts = f._parts, []
    if parts:
        frames = [p for _, p in parts]
        del parts  # the parts are held by ``frames`` alone, which the join consumes part by part
        f.X = _frame_of_parts(frames, f.X.index)


def _frame_of_parts(frames: list[pd.DataFrame], index: pd.Index) -> pd.DataFrame:
    """The columns of ``frames`` side by side, one block per dtype, each part copied in and released.

    ``pd.concat(axis=1)`` consolidated the parts into one block per dtype while every part was still held
    (twice the matrix at once: +2.2 GB at 10M users); here each dtype's block is allocated once and each
    part's columns are copied into it, then the part is dropped (``frames`` is consumed). Each column is
    contiguous in its block (the layout pandas gives a consolidated frame).
    """
    from pandas.core.internals import BlockManager
    from pandas.core.internals.api import make_block

    columns: list = []
    dtype_of: list = []
    for p in frames:
        columns += list(p.columns)
        dtype_of += [np.dtype(d) for d in p.dtypes]
    if any(d.kind not in "biuf" for d in dtype_of):  # not a numeric matrix: pandas' own join
        return pd.concat(frames, axis=1)
    kinds = list(dict.fromkeys(dtype_of))
    where = {d: [j for j, e in enumerate(dtype_of) if e == d] for d in kinds}
    slot = {j: k for d in kinds for k, j in enumerate(where[d])}
    blocks = {d: np.empty((len(where[d]), len(index)), dtype=d) for d in kinds}
    j = 0
    while frames:
        p = frames.pop(0)
        for c in range(p.shape[1]):
            blocks[dtype_of[j]][slot[j]] = p.iloc[:, c].to_numpy()
            j += 1
        del p
    mgr = BlockManager([make_block(blocks[d], placement=np.asarray(where[d])) for d in kinds],
                       [pd.Index(columns), index])
    return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)


class _Rows:
    """Reads rows of a feature frame as a C-contiguous float64 array, equal to ``X.to_numpy(float)[rows]``.

    Each column's array (a view of the frame's block, any numeric dtype) is taken once; a block of rows is
    then filled column by column and cast to float64 on the way (0/1 indicators exactly). Thread-safe:
    only NumPy reads of the arrays taken at construction.
    """

    def __init__(self, X: pd.DataFrame | np.ndarray, cols: Sequence[int] | None = None) -> None:
        if isinstance(X, np.ndarray):
            a = np.asarray(X, float)
            arrays = [a[:, j] for j in (range(a.shape[1]) if cols is None else cols)]
            self.n = len(a)
        else:
            js = range(X.shape[1]) if cols is None else cols
            arrays = [X.iloc[:, j].to_numpy() for j in js]
            self.n = len(X)
        self.arrays = arrays

    def __len__(self) -> int:
        return self.n

    def __call__(self, rows: Any = None) -> np.ndarray:
        """Rows ``rows`` (a slice, positions or a boolean mask; None: all) as float64, row-major."""
        if rows is None:
            rows = slice(None)
        elif not isinstance(rows, slice):
            rows = np.asarray(rows)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
        m = len(range(*rows.indices(self.n))) if isinstance(rows, slice) else len(rows)
        out = np.empty((m, len(self.arrays)))
        for j, col in enumerate(self.arrays):
            out[:, j] = col[rows]
        return out


def rows_matrix(X: pd.DataFrame | np.ndarray, rows: Any = None, cols: Sequence[int] | None = None) -> np.ndarray:
    """``X.to_numpy(float)[rows][:, cols]`` as a C-contiguous float64 array, without the whole matrix.

    ``rows``: a slice, row positions or a boolean mask (None: every row); ``cols``: column positions
    (None: every column). For many blocks of one frame, keep a reader: ``_Rows(X, cols)``.
    """
    return _Rows(X, cols)(rows)


def rows_mean(read: Any, rows: np.ndarray | None = None, transform: Any = None,
              chunk: int | None = None) -> np.ndarray:
    """``transform(read(rows)).mean(axis=0)``, equal bit for bit, reading ``chunk`` rows at a time.

    ``read``: a :class:`_Rows` reader (or anything called with row positions returning a row-major
    float64 array). NumPy sums a row-major array down its rows one row after the other, so continuing each
    block's sum from the previous blocks' total repeats its additions exactly (as :func:`column_stats`).
    """
    chunk = CHUNK_ROWS if chunk is None else int(chunk)
    rows = np.arange(len(read)) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    total = None
    for i in range(0, max(len(rows), 1), chunk):
        b = read(rows[i:i + chunk])
        if transform is not None:
            b = transform(b)
        total = np.add.reduce(b if total is None else np.concatenate([total[None], b]), axis=0)
    return total / len(rows)


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
    f = _collect(df, churn_risk, sources, reference_date, config, exclude)
    _assemble(f)
    return f


def _collect(df: pd.DataFrame, churn_risk: pd.DataFrame | None, sources: Sequence[str],
             reference_date: str | pd.Timestamp | None, config: Any, exclude: Sequence[str]) -> Features:
    """:func:`build_features` with its columns collected per group (``f._parts``), not yet joined."""
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
    if not sum(p.shape[1] for _, p in f._parts):
        raise ValueError("no features: the run configuration declares no metric or attribute present in the table")
    nan = [c for _, p in f._parts for c in p.columns[p.isna().any().to_numpy()]]
    if nan:
        raise ValueError(f"features {nan} have missing values")
    return f


def _churn_feature(f: Features, df: pd.DataFrame, churn_risk: pd.DataFrame, id_col: str) -> None:
    if not {"user_id", CHURN_SCORE} <= set(churn_risk.columns):
        raise ValueError("churn_risk needs columns user_id and churn_prob_90d (the output of 06_churn)")
    from ..panel import align

    # each user's score looked up in Arrow (helpers.panel.align): a map over ids turned into Python
    # strings held 2 x 0.7 GB of them at 10M users; the same values (missing where 06 has no score)
    p = align(df[id_col], churn_risk[["user_id", CHURN_SCORE]], "user_id")[CHURN_SCORE]
    p = pd.Series(p.to_numpy(float), index=df.index)
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
    return _leak_table(features, seed_mask, max_auc, lambda g, c: features.X[c].to_numpy(float))


def _leak_table(features: Features, seed_mask: np.ndarray, max_auc: float, column) -> pd.DataFrame:
    """:func:`leak_check` with the values of feature column ``c`` of group ``g`` from ``column(g, c)``."""
    y = np.asarray(seed_mask, bool)
    rows = []
    for g, cols in features.groups.items():
        best = 0.5
        for c in cols:
            x = column(g, c)
            if np.ptp(x) == 0:
                continue
            a = single_feature_auc(y, x)
            best = max(best, a, 1 - a)
        rows.append({"group": g, "label": features.labels[g], "auc": float(best),
                     "defines_seed": bool(best >= max_auc)})
    return pd.DataFrame(rows).sort_values("auc", ascending=False, ignore_index=True)


def single_feature_auc(y: np.ndarray, x: np.ndarray) -> float:
    """ROC AUC of one feature against a binary label, ties counted one half (the Mann-Whitney statistic).

    Equal to ``sklearn.metrics.roc_auc_score(y, x)``; computed in O(n) for 0/1 indicators and from average
    ranks otherwise (scikit-learn's input validation cost 0.08 s per column at 200k rows, for ~100 columns).
    """
    y = np.asarray(y, bool)
    x = np.asarray(x, float)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("the AUC needs both labelled and unlabelled rows")
    if np.all((x == 0) | (x == 1)):
        p1, p0 = float(x[y].mean()), float(x[~y].mean())
        return p1 * (1 - p0) + 0.5 * (p1 * p0 + (1 - p1) * (1 - p0))
    # the positives' rank sum without ranking every row: a positive of value v has the average rank
    # (#rows below v + #rows up to v + 1) / 2, so the sum is an integer count over two (exact in float,
    # as scipy's half-integer ranks are); one sort and two searches instead of rankdata's stable argsort
    xs = np.sort(x)
    pos = x[y]
    twice = int(np.searchsorted(xs, pos, side="left").sum()) + int(np.searchsorted(xs, pos, side="right").sum()) + n1
    return float((twice / 2 - n1 * (n1 + 1) / 2) / (n1 * n0))


def seed_features(features: Features, seed_mask: np.ndarray, seed_columns: Sequence[str] = (),
                  config: Any = None, max_auc: float = LEAK_AUC,
                  leaks: pd.DataFrame | None = None) -> tuple[Features, list[str]]:
    """``features`` without the seed's defining columns (:func:`defining_columns`) and without any group
    :func:`leak_check` flags; returns the reduced features and the groups dropped.

    ``leaks``: :func:`leak_check` of ``features`` against this seed, when the caller has it already (each
    group's AUC is its own, so the groups left after the rule are judged the same; 16 s at 1M users).
    """
    rule = [g for g in defining_columns(seed_columns, config) if g in features.groups]
    f = drop_groups(features, rule) if rule else features
    if leaks is None:
        leaks = leak_check(f, seed_mask, max_auc)
    elif set(leaks["group"]) != set(features.groups):
        raise ValueError("leaks must be the leak_check of these features (one row per feature group)")
    leaks = leaks[leaks["group"].isin(f.groups)]
    extra = leaks.loc[leaks["auc"] >= max_auc, "group"].tolist()
    return (drop_groups(f, extra) if extra else f), rule + extra


def build_seed_features(df: pd.DataFrame, seed_mask: np.ndarray, seed_columns: Sequence[str] = (),
                        churn_risk: pd.DataFrame | None = None, config: Any = None,
                        rows: np.ndarray | None = None, max_auc: float = LEAK_AUC,
                        sources: Sequence[str] = SOURCES,
                        reference_date: str | pd.Timestamp | None = None
                        ) -> tuple[Features, list[str], pd.DataFrame, pd.DataFrame | None]:
    """:func:`build_features`, :func:`leak_check` and :func:`seed_features` of a seed in one pass that never
    holds the matrix of every feature for the whole panel beside the seed's matrix.

    The columns are encoded group by group; each group's leak AUC is computed on its own columns; only the
    groups the seed keeps are then joined into the model matrix (each group's columns released once
    copied). The three calls held both matrices at once (0.85 GB each at 1M users).

    Parameters
    ----------
    df, churn_risk, config, sources, reference_date
        As :func:`build_features`.
    seed_mask, seed_columns, max_auc
        As :func:`seed_features` (``seed_columns``: the columns the seed is a rule on).
    rows : array of int, optional
        Row positions (e.g. :func:`helpers.lookalike.sample_rows`) at which every feature (the seed's
        left-out ones too) is also returned, as ``build_features(...).X.iloc[rows]``.

    Returns
    -------
    (features, dropped, leaks, X_rows)
        Equal to ``seed_features(build_features(df, ...), seed_mask, seed_columns, config,
        leaks=leak_check(...))``, the leak check of every group, and the rows ``rows`` of the matrix of
        every feature (None without ``rows``).
    """
    f = _collect(df, churn_risk, sources, reference_date, config, ())
    y = np.asarray(seed_mask, bool)
    if y.shape != (len(df),):
        raise ValueError(f"seed_mask must have one entry per row of the table ({len(df)}), got shape {y.shape}")
    part = dict(f._parts)
    leaks = _leak_table(f, y, max_auc, lambda g, c: part[g][c].to_numpy(float))
    del part
    rule = [g for g in defining_columns(seed_columns, config) if g in f.groups]
    rest = leaks[~leaks["group"].isin(rule)]
    extra = rest.loc[rest["auc"] >= max_auc, "group"].tolist()
    dropped = rule + extra
    cols = {c for g in dropped for c in f.groups[g]}
    order = [(g, list(p.columns)) for g, p in f._parts]
    left_out = {g: p for g, p in f._parts if g in dropped}
    f._parts = [(g, p) for g, p in f._parts if g not in dropped]
    _assemble(f)
    X_rows = None
    if rows is not None:
        # the sample's rows once the matrix is joined: the kept groups' columns are then released, so the
        # sample is never held beside every group's columns of the whole panel
        r = np.asarray(rows)
        kept = rows_matrix(f.X, r)
        pos = {c: j for j, c in enumerate(f.X.columns)}
        values = np.empty((len(r), sum(len(c) for _, c in order)))
        j = 0
        for g, cs in order:
            values[:, j:j + len(cs)] = (left_out[g].to_numpy(float)[r] if g in left_out
                                        else kept[:, [pos[c] for c in cs]])
            j += len(cs)
        X_rows = pd.DataFrame(values, index=f.X.index[r], columns=[c for _, cs in order for c in cs])
        del kept
    del left_out
    keep = {g: c for g, c in f.groups.items() if g not in dropped}
    out = Features(f.X, keep, {g: f.source[g] for g in keep}, {g: f.labels[g] for g in keep},
                   {c: r for c, r in f.reason.items() if c not in cols})
    return out, dropped, leaks, X_rows


#: rows per block of the block-wise passes over the panel (column statistics, cosine scores, fold-mean
#: scores, reason codes). A multiple of 8: OpenBLAS computes matrix-vector products 8 rows at a time and
#: the last rows of an odd-sized block another way, which moved cosine scores in the 16th digit
CHUNK_ROWS = 100_000


def column_stats(a: np.ndarray | pd.DataFrame, cols: Sequence[int] | None = None,
                 chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(b.mean(axis=0), b.std(axis=0))`` of ``b = a[:, cols]`` (default ``a``), equal bit for bit,
    without a temporary copy of ``b``.

    NumPy sums a row-major array down its rows one row after the other, so continuing each block's sum
    from the previous blocks' total repeats its additions exactly; ``a.std`` needed a full-size copy of
    the centred matrix (0.85 GB at 1M users). Other layouts fall back to NumPy's own calls. ``a`` may be
    a feature frame (:attr:`Features.X`): its rows are read block by block as float64 (:func:`rows_matrix`),
    the same numbers as for ``X.to_numpy(float)`` in row-major order, without that matrix.
    """
    chunk = CHUNK_ROWS if chunk is None else int(chunk)
    if isinstance(a, pd.DataFrame):
        read = _Rows(a, cols)
        if len(read) <= chunk:
            b = read()
            return b.mean(axis=0), b.std(axis=0)
        block_of_rows = lambda i: read(slice(i, i + chunk))  # noqa: E731
    else:
        a = np.asarray(a, float)
        if a.ndim != 2 or not a.flags.c_contiguous or len(a) <= chunk:
            b = a if cols is None else np.ascontiguousarray(a[:, list(cols)])
            return b.mean(axis=0), b.std(axis=0)
        block_of_rows = lambda i: (a[i:i + chunk] if cols is None  # noqa: E731
                                   else np.ascontiguousarray(a[i:i + chunk][:, list(cols)]))
    n = len(a)

    def blockwise_sum(block_of):
        total = None
        for i in range(0, n, chunk):
            b = block_of(block_of_rows(i))
            total = np.add.reduce(b if total is None else np.concatenate([total[None], b]), axis=0)
        return total

    mean = blockwise_sum(lambda b: b) / n

    def squares(b):
        x = b - mean
        return np.multiply(x, x, out=x)

    return mean, np.sqrt(blockwise_sum(squares) / n)


def standardize(X: pd.DataFrame) -> np.ndarray:
    """Columns centred and scaled to unit variance over the whole panel (constant columns -> 0); row-major."""
    a = rows_matrix(X)
    mean, sd = column_stats(a)
    return (a - mean) / np.where(sd > 0, sd, 1.0)
