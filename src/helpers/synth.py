"""Synthesis from real data: fit a mixed-type table and sample a synthetic table of any size.

Two synthesizers share one table encoding (:class:`TableEncoder`), which handles numeric, integer, date,
boolean, categorical and multi-valued (``"a|b"``) columns with missing values:

* :class:`CARTSynthesizer` -- sequential tree-based synthesis as in synthpop's CART method (Reiter 2005;
  Nowok, Raab & Dibben 2016): column ``j`` is drawn from the real values that share a leaf of a decision
  tree fitted on columns ``1..j-1``. It keeps non-linear relations and interactions.
* :class:`GaussianCopulaSynthesizer` -- empirical marginals joined by a Gaussian copula of the normal
  scores (distributional transform for discrete columns). Fast, but it keeps only pairwise, monotone
  dependence; it is the baseline.

Both follow the scikit-learn conventions: parameters in ``__init__``, ``fit(df)`` returns ``self``,
``sample(n, random_state)`` returns a data frame with the fitted columns and dtypes. Same
``random_state``, same rows. Identifier columns are not synthesized; fresh identifiers are issued.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd
from scipy import special
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from . import schema as S

ColumnKind = Literal["numeric", "integer", "date", "bool", "category", "multi"]
_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class ColumnSpec:
    """How one column of the real table is encoded.

    Attributes
    ----------
    name : column name.
    kind : ``numeric`` (float), ``integer``, ``date``, ``bool``, ``category`` or ``multi`` (separated tokens).
    levels : categories (``bool``/``category``) or tokens (``multi``), in a fixed order.
    has_missing : whether the column holds missing values in the fitted data.
    dtype : pandas dtype of the fitted column, restored on sampling.
    decimals : for ``numeric`` columns, the number of decimals the data is recorded with (0-6; None when
        finer), used to round sampled values.
    """

    name: str
    kind: ColumnKind
    levels: tuple = ()
    has_missing: bool = False
    dtype: str = "float64"
    decimals: int | None = None


@dataclass(frozen=True)
class _Internal:
    """One column of the encoded float matrix: discrete codes or a continuous value."""

    name: str
    source: str
    discrete: bool
    parent_missing: str | None = None  # name of the "#na" column that masks this value column


def infer_specs(df: pd.DataFrame, multi_valued: Sequence[str] | None = None, sep: str = S.MULTI_SEP,
                none_token: str = S.NONE_TOKEN, max_categories: int = 100) -> list[ColumnSpec]:
    """Infer the :class:`ColumnSpec` of every column of ``df``.

    Parameters
    ----------
    df : the real table (identifier columns already removed).
    multi_valued : columns holding ``sep``-separated token sets; ``None`` means the columns of
        :data:`helpers.schema.MULTI_VALUED` that are present in ``df``.
    sep, none_token : token separator and the token of an empty set.
    max_categories : a text column with more distinct values than this is refused (an identifier or
        free text cannot be synthesized as a category).

    Raises
    ------
    ValueError
        If a multi-valued column is missing, or a text column has too many distinct values.
    """
    multi = [c for c in S.MULTI_VALUED if c in df.columns] if multi_valued is None else list(multi_valued)
    absent = [c for c in multi if c not in df.columns]
    if absent:
        raise ValueError(f"multi_valued columns {absent} are not in the table; columns are {list(df.columns)}")
    specs = []
    for name in df.columns:
        s = df[name]
        dtype = str(s.dtype)
        text = not (pd.api.types.is_bool_dtype(s) or pd.api.types.is_datetime64_any_dtype(s)
                    or pd.api.types.is_numeric_dtype(s))
        if text:  # missing values and levels from the distinct values (isna and unique on 1M strings was slow)
            codes, uniq = s.factorize()
            has_missing = bool((codes < 0).any())
        else:
            has_missing = bool(s.isna().any())
        if name in multi:
            # token sets repeat (a few hundred distinct cells in 1M rows): split each distinct cell once
            found = {t for cell in map(str, s.dropna().unique() if not text else uniq)
                     for t in cell.split(sep)} - {none_token}
            known = S.BY_NAME[name].categories if name in S.BY_NAME else ()
            # the data dictionary's token order (the order cells are written in), else alphabetical
            tokens = [t for t in known if t in found] if found <= set(known) else sorted(found)
            specs.append(ColumnSpec(name, "multi", tuple(tokens), has_missing, dtype))
        elif pd.api.types.is_bool_dtype(s):
            specs.append(ColumnSpec(name, "bool", (False, True), has_missing, dtype))
        elif pd.api.types.is_datetime64_any_dtype(s):
            specs.append(ColumnSpec(name, "date", (), has_missing, dtype))
        elif pd.api.types.is_integer_dtype(s):
            specs.append(ColumnSpec(name, "integer", (), has_missing, dtype))
        elif pd.api.types.is_numeric_dtype(s):
            specs.append(ColumnSpec(name, "numeric", (), has_missing, dtype, _decimals(s)))
        else:
            levels = pd.Series(uniq).sort_values().tolist()
            if len(levels) > max_categories:
                raise ValueError(
                    f"column {name!r} has {len(levels)} distinct text values (> max_categories="
                    f"{max_categories}): pass identifiers in `id_columns`, list '{sep}'-separated columns in "
                    "`multi_valued`, or raise `max_categories`")
            specs.append(ColumnSpec(name, "category", tuple(levels), has_missing, dtype))
    return specs


def _decimals(s: pd.Series, max_decimals: int = 6) -> int | None:
    """Smallest number of decimals (0..max_decimals) that represents every value of ``s``, else None."""
    v = pd.to_numeric(s).astype("float64").dropna().to_numpy()
    for d in range(max_decimals + 1):
        if np.allclose(np.round(v, d), v, rtol=0, atol=1e-9 * max(1.0, float(np.abs(v).max(initial=0)))):
            return d
    return None


class TableEncoder:
    """Reversible encoding of a mixed table as a float matrix (one row per record).

    Each ``category``/``bool`` column becomes integer codes (missing -> an extra last code); each
    ``numeric``/``integer``/``date`` column becomes its value (dates in days since 1970-01-01), preceded by
    a ``<col>#na`` 0/1 column when it has missing values; each ``multi`` column becomes one 0/1 column per
    token (``<col>#<token>``), preceded by ``<col>#na`` when the set itself can be missing (unmatched rows).

    Parameters
    ----------
    multi_valued, sep, none_token, max_categories : see :func:`infer_specs`.
    """

    def __init__(self, multi_valued: Sequence[str] | None = None, sep: str = S.MULTI_SEP,
                 none_token: str = S.NONE_TOKEN, max_categories: int = 100):
        self.multi_valued = multi_valued
        self.sep = sep
        self.none_token = none_token
        self.max_categories = max_categories

    def fit(self, df: pd.DataFrame) -> "TableEncoder":
        """Learn the column specs and the layout of the encoded matrix from ``df``."""
        if len(df) == 0:
            raise ValueError("cannot fit an encoder on an empty table")
        self.specs_ = infer_specs(df, self.multi_valued, self.sep, self.none_token, self.max_categories)
        internal: list[_Internal] = []
        for sp in self.specs_:
            if sp.kind in ("category", "bool"):
                internal.append(_Internal(sp.name, sp.name, True))
                continue
            na = f"{sp.name}#na" if sp.has_missing else None
            if na:
                internal.append(_Internal(na, sp.name, True))
            if sp.kind == "multi":
                internal += [_Internal(f"{sp.name}#{t}", sp.name, True, na) for t in sp.levels]
            else:
                internal.append(_Internal(sp.name, sp.name, False, na))
        self.internal_ = internal
        self.columns_ = [c.name for c in internal]
        return self

    def n_levels(self, internal_name: str) -> int:
        """Number of codes of a discrete encoded column (missing counts as a level)."""
        col = next(c for c in self.internal_ if c.name == internal_name)
        if not col.discrete:
            raise ValueError(f"encoded column {internal_name!r} is continuous")
        if col.name == col.source:
            sp = next(s for s in self.specs_ if s.name == col.source)
            return len(sp.levels) + int(sp.has_missing)
        return 2

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode ``df`` (same columns as at fit) as a float matrix with columns :attr:`columns_`.

        Raises
        ------
        ValueError
            If a column is missing or holds a category/token not seen at fit.
        """
        missing = [sp.name for sp in self.specs_ if sp.name not in df.columns]
        if missing:
            raise ValueError(f"columns {missing} were fitted but are absent from the table")
        # column-major: every later step reads and writes whole encoded columns (the synthesizers gather donor
        # values from one column at a time), which in a row-major 1M x 48 matrix were strided, cache-missing reads;
        # each encoded column is written straight into the matrix (a dict of every column first held the table
        # twice at the peak of the encoding)
        X = np.empty((len(df), len(self.columns_)), order="F")
        out = _ColumnWriter(X, {c: j for j, c in enumerate(self.columns_)})
        for sp in self.specs_:
            s = df[sp.name]
            isna = s.isna().to_numpy()
            if sp.has_missing and sp.kind not in ("category", "bool"):
                out[f"{sp.name}#na"] = isna.astype(float)
            if sp.kind in ("category", "bool"):
                # matched on the distinct values only (pd.Categorical on every row was most of the encoding time)
                codes, uniq = pd.factorize(s)
                lookup = np.append(pd.Index(list(sp.levels), dtype=object).get_indexer(
                    np.asarray(uniq, dtype=object)), -1)
                cat_codes = lookup[codes]  # code -1 (missing) takes the appended -1
                unknown = cat_codes == -1
                if (unknown & ~isna).any():
                    bad = sorted(map(str, pd.unique(s[unknown & ~isna])))[:5]
                    raise ValueError(f"column {sp.name!r} has values {bad} not seen at fit; "
                                     f"expected one of {list(sp.levels)}")
                out[sp.name] = np.where(unknown, len(sp.levels), cat_codes).astype(float)
            elif sp.kind == "multi":
                # string work on the distinct cells only (row-by-row string methods were most of the encoding
                # time at 1M rows), mapped back to the rows by their codes; a missing set is the empty cell
                codes, uniq = pd.factorize(s)
                cells = [*map(str, uniq), ""]
                codes = np.where(codes < 0, len(cells) - 1, codes)
                known = set(sp.levels) | {self.none_token, ""}
                bad = sorted({t for cell in cells for t in cell.split(self.sep)} - known)
                if bad:
                    raise ValueError(f"multi-valued column {sp.name!r} has tokens {bad[:5]} not seen at fit; "
                                     f"expected '{self.sep}'-separated tokens from {list(sp.levels)}")
                padded = [self.sep + cell + self.sep for cell in cells]
                for t in sp.levels:
                    present = np.array([self.sep + t + self.sep in cell for cell in padded], dtype=float)
                    out[f"{sp.name}#{t}"] = present[codes]
            elif sp.kind == "date":
                v = pd.to_datetime(s).to_numpy("datetime64[ns]").astype("int64").astype(float) / _NS_PER_DAY
                out[sp.name] = np.where(isna, np.nan, v)
            else:
                out[sp.name] = pd.to_numeric(s).astype("float64").to_numpy(na_value=np.nan)
        return X

    def inverse_transform(self, X: np.ndarray) -> pd.DataFrame:
        """Decode a float matrix (columns :attr:`columns_`) back to a table with the fitted dtypes."""
        idx = {c: i for i, c in enumerate(self.columns_)}
        data = {}
        for sp in self.specs_:
            na = X[:, idx[f"{sp.name}#na"]] > 0.5 if f"{sp.name}#na" in idx else np.zeros(len(X), bool)
            if sp.kind in ("category", "bool"):
                codes = np.rint(X[:, idx[sp.name]]).astype(int)
                lv = np.array(list(sp.levels) + [None], dtype=object)
                vals = lv[np.clip(codes, 0, len(sp.levels))]
                data[sp.name] = pd.Series(vals).astype(sp.dtype if sp.kind == "category" else "boolean")
                if sp.kind == "bool" and sp.dtype == "bool" and not data[sp.name].isna().any():
                    data[sp.name] = data[sp.name].astype(bool)
            elif sp.kind == "multi":
                bits = np.column_stack([X[:, idx[f"{sp.name}#{t}"]] > 0.5 for t in sp.levels]) \
                    if sp.levels else np.zeros((len(X), 0), bool)
                data[sp.name] = pd.Series(_join_tokens(bits, sp.levels, self.sep, self.none_token),
                                          dtype=object).where(~na).astype(sp.dtype)
            else:
                v = np.where(na, np.nan, X[:, idx[sp.name]])
                if sp.kind == "date":  # day resolution
                    ns = np.rint(v) * _NS_PER_DAY
                    data[sp.name] = pd.Series(pd.to_datetime(np.where(na, np.nan, ns)), dtype=sp.dtype)
                elif sp.kind == "integer":
                    r = pd.Series(np.rint(v))
                    data[sp.name] = r.astype("Int64" if (sp.dtype.startswith("Int") or r.isna().any())
                                             else sp.dtype)
                else:
                    if sp.decimals is not None:
                        v = np.round(v, sp.decimals)
                    data[sp.name] = pd.Series(v, dtype=sp.dtype)
        return pd.DataFrame(data)


class _ColumnWriter:
    """``writer[name] = values`` writes one encoded column into its place of the matrix."""

    def __init__(self, X: np.ndarray, index: dict[str, int]):
        self.X, self.index = X, index

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        self.X[:, self.index[name]] = values


def _join_tokens(bits: np.ndarray, tokens: Sequence[str], sep: str, none_token: str) -> np.ndarray:
    """Join the tokens whose bit is set, row by row (``none_token`` for an empty set); vectorised."""
    n, k = bits.shape
    if k == 0:
        return np.full(n, none_token, dtype=object)
    if k <= 16:
        codes = bits.astype(np.int64) @ (1 << np.arange(k))
        uniq, inv = np.unique(codes, return_inverse=True)
        lookup = np.array([sep.join(t for b, t in enumerate(tokens) if c >> b & 1) or none_token
                           for c in uniq], dtype=object)
        return lookup[inv]
    return np.array([sep.join(t for t, b in zip(tokens, row) if b) or none_token for row in bits], dtype=object)


def row_hashes(df: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash per row over all columns, equal for rows with equal values (used for exact copies).

    Numbers and booleans are hashed as ``float64`` so that ``Int64``/``int64``/``float`` encodings of the
    same value hash alike; missing values (``NaN``/``None``/``<NA>``) hash alike; text is hashed as text.
    """
    norm = pd.DataFrame({c: _canonical(df[c]) for c in df.columns}, index=pd.RangeIndex(len(df)))
    return pd.util.hash_pandas_object(norm, index=False).to_numpy()


def _canonical(s: pd.Series) -> pd.Series:
    numeric_objects = s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in (
        "boolean", "integer", "floating", "mixed-integer-float")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s) or numeric_objects:
        return pd.Series(s.astype("Float64").to_numpy("float64", na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.Series(pd.to_datetime(s).to_numpy("datetime64[ns]"))
    # text is hashed once per distinct value (a few hundred in 1M rows) and mapped back to the rows by its code:
    # the same per-value hash as hashing every row, without building a million Python strings
    codes, uniq = pd.factorize(s)
    text = np.asarray([*map(str, uniq), "<NA>"], dtype=object)  # a missing value hashes as "<NA>"
    return pd.Series(pd.util.hash_array(text)[codes])


def _in_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_unique)`` for a sorted array of distinct values, by binary search (np.isin
    sorts both arrays together, which was a large part of sampling 1M rows)."""
    if sorted_unique.size == 0:
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_unique, values), sorted_unique.size - 1)
    return sorted_unique[at] == values


class _BaseSynthesizer:
    """Shared fit/sample plumbing: identifier handling, encoding, copy rejection."""

    def __init__(self, id_columns: Sequence[str] = (), multi_valued: Sequence[str] | None = None,
                 reject_copies: bool = True, max_categories: int = 100, id_prefix: str = "S"):
        self.id_columns = tuple(id_columns)
        self.multi_valued = multi_valued
        self.reject_copies = reject_copies
        self.max_categories = max_categories
        self.id_prefix = id_prefix

    # -- to be provided by subclasses
    def _fit_encoded(self, X: np.ndarray, rng: np.random.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    def _sample_encoded(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def fit(self, df: pd.DataFrame) -> "_BaseSynthesizer":
        """Fit the synthesizer to the real table ``df``.

        Parameters
        ----------
        df : real table; ``id_columns`` are dropped, every other column is synthesized.

        Returns
        -------
        self
        """
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
        absent = [c for c in self.id_columns if c not in df.columns]
        if absent:
            raise ValueError(f"id_columns {absent} are not in the table; columns are {list(df.columns)}")
        data = df.drop(columns=list(self.id_columns)).reset_index(drop=True)
        if data.shape[1] == 0:
            raise ValueError("the table has no column to synthesize besides the id_columns")
        if len(data) < 10:
            raise ValueError(f"need at least 10 real rows to fit a synthesizer, got {len(data)}")
        self.columns_ = list(df.columns)
        self.id_dtypes_ = {c: df[c].dtype for c in self.id_columns}
        self.encoder_ = TableEncoder(self.multi_valued, max_categories=self.max_categories).fit(data)
        X = self.encoder_.transform(data)
        self._fit_encoded(X, np.random.default_rng(getattr(self, "random_state", 0)))
        self.n_train_ = len(data)
        self._train_hashes = np.unique(row_hashes(data)) if self.reject_copies else None
        return self

    def sample(self, n: int, random_state: int | None = 0, max_rounds: int = 20, first_id: int = 1) -> pd.DataFrame:
        """Draw ``n`` synthetic rows.

        Parameters
        ----------
        n : number of rows (any size, independent of the size of the real table).
        random_state : seed; the same seed gives the same rows.
        max_rounds : when ``reject_copies`` is on, rows that exactly equal a real training row (over every
            synthesized column) are redrawn up to this many times.
        first_id : number of the first fresh identifier (:meth:`sample_chunks` continues the numbering).

        Returns
        -------
        DataFrame with the fitted columns (identifiers are ``<id_prefix>00000001``..., numbered from
        ``first_id``); the number of copies that were redrawn is in :attr:`n_copies_redrawn_`, those left
        after ``max_rounds`` in :attr:`n_copies_left_` (0 unless the table is so coarse that nearly every
        draw is a copy; a ``UserWarning`` is issued then).
        """
        if not hasattr(self, "encoder_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit(real_table) first")
        if int(n) < 1:
            raise ValueError(f"n must be a positive number of rows, got {n}")
        n = int(n)
        rng = np.random.default_rng(random_state)
        out = self.encoder_.inverse_transform(self._sample_encoded(n, rng))
        self.n_copies_redrawn_ = 0
        self.n_copies_left_ = 0
        if self.reject_copies:
            h = row_hashes(out)
            copy = _in_sorted(h, self._train_hashes)
            for _ in range(max_rounds):
                k = int(copy.sum())
                if k == 0:
                    break
                self.n_copies_redrawn_ += k
                redraw = self.encoder_.inverse_transform(self._sample_encoded(k, rng))
                out = pd.concat([out[~copy], redraw], ignore_index=True)
                h = np.concatenate([h[~copy], row_hashes(redraw)])
                copy = _in_sorted(h, self._train_hashes)
            self.n_copies_left_ = int(copy.sum())
            if self.n_copies_left_:
                warnings.warn(f"{self.n_copies_left_} of {n} synthetic rows still equal a training row after "
                              f"{max_rounds} redraws: the table is too coarse for copy-free synthesis; raise "
                              "min_samples_leaf or add columns", UserWarning, stacklevel=2)
        for c in self.id_columns:
            ids = pd.Series([f"{self.id_prefix}{i:08d}" for i in range(first_id, first_id + n)])
            out[c] = ids.astype(self.id_dtypes_[c]) if self.id_dtypes_[c] != object else ids
        return out[self.columns_]

    def sample_chunks(self, n: int, chunk_rows: int | None, random_state: int | None = 0,
                      max_rounds: int = 20) -> Iterator[pd.DataFrame]:
        """Draw ``n`` synthetic rows as consecutive frames of at most ``chunk_rows`` rows each, so that a
        synthetic table larger than memory can be checked or written piece by piece.

        The first frame is ``sample(min(n, chunk_rows), random_state)``: with ``n <= chunk_rows`` (or
        ``chunk_rows`` None) the one frame is exactly :meth:`sample` ``(n, random_state)``. Frame ``i > 0``
        is drawn with the seed ``[random_state, i]`` (so the rows depend on ``chunk_rows``) and its
        identifiers continue the numbering. :attr:`n_copies_redrawn_` and :attr:`n_copies_left_` add up over
        the frames drawn so far.
        """
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be a positive number of rows, got {n}")
        size = n if chunk_rows is None else int(chunk_rows)
        if size < 1:
            raise ValueError(f"chunk_rows must be None or a positive number of rows, got {chunk_rows}")
        redrawn = left = 0
        for i, start in enumerate(range(0, n, size)):
            seed = random_state if i == 0 or random_state is None else [random_state, i]
            out = self.sample(min(size, n - start), seed, max_rounds, first_id=start + 1)
            redrawn, left = redrawn + self.n_copies_redrawn_, left + self.n_copies_left_
            self.n_copies_redrawn_, self.n_copies_left_ = redrawn, left
            yield out


class CARTSynthesizer(_BaseSynthesizer):
    """Sequential CART synthesis (synthpop's ``method = "cart"``).

    The first encoded column is drawn from its empirical distribution; every later column ``j`` is drawn,
    for each synthetic row, from the real values of column ``j`` in the leaf the row falls into of a
    decision tree fitted on the real columns ``1..j-1`` (a regression tree for continuous columns, a
    classification tree for categorical codes and token indicators). Continuous values of a column
    with missing values are synthesized only where its ``#na`` indicator is 0.

    Parameters
    ----------
    min_samples_leaf : smallest leaf; every synthetic value is drawn from at least this many real rows,
        which is the main privacy knob (bigger -> farther from real records, smoother distributions).
    max_depth : depth cap of each tree (None: grown until ``min_samples_leaf``).
    visit_sequence : order in which the original columns are synthesized (default: table order);
        columns not listed follow in table order.
    smoothing : if True, values of ``numeric`` (float) columns drawn from a leaf get Gaussian kernel noise
        with the leaf donors' Silverman bandwidth (synthpop's ``smoothing = "density"``), so they are no
        longer copies of real values. Integer and date columns are never smoothed (their heaping, e.g.
        40 hours a week, is part of the distribution).
    id_columns : identifier columns; not synthesized, replaced with fresh identifiers.
    multi_valued : ``'|'``-separated multi-valued columns (default: those of :mod:`helpers.schema`).
    reject_copies : redraw synthetic rows that exactly equal a training row.
    max_categories : see :func:`infer_specs`.
    random_state : seed of the tree fits and of the tree sample (sampling takes its own seed).
    tree_sample : if set, every tree is grown on a seeded random sample of at most this many of the rows
        it would be grown on, and then every row is put through it, so that donors are still drawn from
        every real row (a leaf holds about ``min_samples_leaf * rows / tree_sample`` donors). Fitting cost
        then stops growing with the table (most of the time at 1M rows); the price is coarser leaves
        relative to the full table (trees see fewer rows, so they find fewer splits), measured in
        ``scripts/bench_synth.py --tree-sample``. None: trees grown on all rows.
    n_jobs : threads that grow and apply the trees (None or -1: every core). The trees of a fit are
        independent, so the synthetic rows are the same for any ``n_jobs``.
    """

    def __init__(self, min_samples_leaf: int = 5, max_depth: int | None = None,
                 visit_sequence: Sequence[str] | None = None, smoothing: bool = False,
                 id_columns: Sequence[str] = (), multi_valued: Sequence[str] | None = None,
                 reject_copies: bool = True, max_categories: int = 100, random_state: int = 0,
                 tree_sample: int | None = None, n_jobs: int | None = None):
        super().__init__(id_columns, multi_valued, reject_copies, max_categories)
        self.n_jobs = n_jobs
        if min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be >= 1, got {min_samples_leaf}")
        if tree_sample is not None and tree_sample < 2 * min_samples_leaf:
            raise ValueError(f"tree_sample must be None or >= 2 * min_samples_leaf ({2 * min_samples_leaf}), "
                             f"got {tree_sample}")
        self.tree_sample = tree_sample
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.visit_sequence = visit_sequence
        self.smoothing = smoothing
        self.random_state = random_state

    def _order(self) -> list[int]:
        """Encoded column indices in visiting order (a column's ``#na`` before its values)."""
        names = [sp.name for sp in self.encoder_.specs_]
        seq = list(self.visit_sequence or [])
        unknown = [c for c in seq if c not in names]
        if unknown:
            raise ValueError(f"visit_sequence names {unknown}, which are not synthesized columns {names}")
        seq += [c for c in names if c not in seq]
        rank = {c: i for i, c in enumerate(seq)}
        return sorted(range(len(self.encoder_.internal_)),
                      key=lambda i: (rank[self.encoder_.internal_[i].source], i))

    def _fit_encoded(self, X: np.ndarray, rng: np.random.Generator) -> None:
        order = self._order()
        self.order_ = order
        self._kinds = {sp.name: sp.kind for sp in self.encoder_.specs_}
        self.X_train_ = X
        sample_rng = np.random.default_rng([self.random_state, 7919])  # tree samples, apart from the tree seeds
        # the trees work in float32 on the columns in visiting order, so that the predictors of step k are the
        # first k columns: a view when every row is used, no copy of the table per step
        X32 = np.ascontiguousarray(X[:, order], dtype=np.float32)
        pos = {c.name: i for i, c in enumerate(self.encoder_.internal_)}
        plans = []  # every random draw is made here, in visiting order, so that the fits can run in any order
        # the rows of a step: every row, or those where its "#na" parent is 0; one array per parent, shared by
        # every step that reads it (read only): a fresh 1M-row index per step was 8 MB each, kept in steps_
        rows_of: dict[str | None, np.ndarray] = {None: np.arange(len(X))}
        for k, j in enumerate(order):
            col = self.encoder_.internal_[j]
            if col.parent_missing not in rows_of:
                rows_of[col.parent_missing] = np.flatnonzero(X[:, pos[col.parent_missing]] < 0.5)
            rows = rows_of[col.parent_missing]
            y = X[rows, j]
            if k == 0 or len(rows) < 2 * self.min_samples_leaf or not _varies(y):
                plans.append((k, j, rows, None, None))
                continue
            seed = int(rng.integers(2**31))
            fit_rows = slice(None)
            if self.tree_sample is not None and rows.size > self.tree_sample:
                fit_rows = np.sort(sample_rng.choice(rows.size, self.tree_sample, replace=False))
                if not _varies(y[fit_rows]):  # the sample lost the variation: grow on all rows
                    fit_rows = slice(None)
            plans.append((k, j, rows, seed, fit_rows))

        def fit_step(plan):
            k, j, rows, seed, fit_rows = plan
            if seed is None:
                return j, rows, order[:k], None, None
            col = self.encoder_.internal_[j]
            Tree = DecisionTreeClassifier if col.discrete else DecisionTreeRegressor
            tree = Tree(min_samples_leaf=self.min_samples_leaf, max_depth=self.max_depth, random_state=seed)
            Xprev = X32[:, :k] if rows.size == len(X) else X32[rows, :k]
            y = X[rows, j]
            tree.fit(Xprev[fit_rows], y[fit_rows])
            leaves = tree.apply(Xprev)  # every real row is a donor of its leaf
            # leaf ids are small: a stable sort of 16-bit keys is numpy's radix sort (same order, linear time)
            sort = np.argsort(leaves.astype(np.uint16) if tree.tree_.node_count <= 2**16 else leaves, kind="stable")
            start = np.searchsorted(leaves[sort], np.arange(tree.tree_.node_count))
            count = np.bincount(leaves, minlength=tree.tree_.node_count)
            # donors in leaf order as int32 when the table allows (half the memory of the 48 steps' copies)
            donor_rows = rows[sort].astype(np.int32) if len(X) < 2**31 else rows[sort]
            return j, rows, order[:k], tree, (donor_rows, start, count)

        # the trees are independent of each other (each is grown on real columns only): scikit-learn grows and
        # applies them without the GIL, so threads use every core; the result does not depend on n_jobs
        # the largest trees (most predictors, most rows) first: in visiting order the biggest came last and
        # ran alone on one core at the end; the steps are put back in visiting order
        cost = [k * (plan[2].size if plan[3] is not None else 0) for plan in plans for k in [plan[0]]]
        by_cost = sorted(range(len(plans)), key=lambda i: -cost[i])
        with ThreadPoolExecutor(max_workers=_n_workers(self.n_jobs)) as pool:
            done = dict(zip(by_cost, pool.map(fit_step, [plans[i] for i in by_cost])))
        self.steps_ = [done[i] for i in range(len(plans))]

    def _sample_encoded(self, n: int, rng: np.random.Generator) -> np.ndarray:
        X, internal = self.X_train_, self.encoder_.internal_
        pos = {c.name: i for i, c in enumerate(internal)}
        Z = np.full((n, X.shape[1]), np.nan, order="F")  # column-major, as the encoded matrix (whole-column writes)
        Z32 = np.full((n, X.shape[1]), np.nan, dtype=np.float32)  # Z in visiting order, what the trees read
        with ThreadPoolExecutor(max_workers=_n_workers(self.n_jobs)) as pool:
            for k, (j, rows, prev, tree, donors) in enumerate(self.steps_):
                col = internal[j]
                target = np.arange(n) if col.parent_missing is None \
                    else np.flatnonzero(Z[:, pos[col.parent_missing]] < 0.5)
                if target.size == 0:
                    continue
                if tree is None:
                    if rows.size == 0:  # a value column that is never observed
                        continue
                    Z[target, j] = X[rows[rng.integers(0, rows.size, target.size)], j]
                    Z32[target, k] = Z[target, j]
                    continue
                donor_rows, start, count = donors
                Zprev = Z32[:, :k] if target.size == n else Z32[target, :k]
                # the rows are put through the tree in chunks on every core (apply releases the GIL)
                chunks = np.array_split(np.arange(target.size), _n_workers(self.n_jobs))
                leaf = np.concatenate(list(pool.map(lambda c: tree.apply(Zprev[c[0]:c[-1] + 1]),
                                                    [c for c in chunks if c.size])))
                pick = donor_rows[start[leaf] + (rng.random(target.size) * count[leaf]).astype(np.int64)]
                v = X[pick, j]
                if self.smoothing and self._kinds[col.source] == "numeric":
                    v = v + rng.normal(size=v.size) * _leaf_bandwidth(X[donor_rows, j], start, count)[leaf]
                Z[target, j] = v
                Z32[target, k] = v
        return Z


def _varies(y: np.ndarray) -> bool:
    """Whether ``y`` holds at least two distinct values (NaN counts as one value), without sorting it."""
    if y.size == 0:
        return False
    nan = np.isnan(y)
    if nan.all():
        return False
    return bool(nan.any() or np.nanmax(y) > np.nanmin(y))


def _n_workers(n_jobs: int | None) -> int:
    """Threads for ``n_jobs`` (None or -1: every core)."""
    if n_jobs is None or n_jobs < 0:
        return max(1, os.cpu_count() or 1)
    return max(1, int(n_jobs))


def _leaf_bandwidth(values_sorted_by_leaf: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Silverman's rule-of-thumb bandwidth ``0.9 * min(sd, IQR/1.34) * n^-1/5`` of each leaf's donors."""
    bw = np.zeros(count.size)
    for leaf in np.flatnonzero(count > 1):
        v = values_sorted_by_leaf[start[leaf]:start[leaf] + count[leaf]]
        iqr = np.subtract(*np.percentile(v, [75, 25])) / 1.34
        sd = v.std(ddof=1)
        spread = min(sd, iqr) if iqr > 0 else sd
        bw[leaf] = 0.9 * spread * count[leaf] ** -0.2
    return bw


class GaussianCopulaSynthesizer(_BaseSynthesizer):
    """Gaussian copula with empirical marginals.

    Every encoded column is mapped to normal scores ``z = Phi^-1(u)``: continuous columns through their
    mid-rank empirical CDF, discrete columns (codes, indicators) through the distributional transform
    ``u = F(x-) + V (F(x) - F(x-))``, ``V ~ U(0,1)``. The correlation matrix of the scores (missing value
    cells scored 0) is the copula; sampling draws ``z ~ N(0, R)`` and maps ``Phi(z)`` back through each
    empirical quantile function (linear interpolation for ``numeric``/``date``, steps for discrete and
    ``integer`` columns, so only observed integers appear).

    Parameters
    ----------
    id_columns, multi_valued, reject_copies, max_categories : as for :class:`CARTSynthesizer`.
    random_state : seed of the distributional transform at fit.
    """

    def __init__(self, id_columns: Sequence[str] = (), multi_valued: Sequence[str] | None = None,
                 reject_copies: bool = True, max_categories: int = 100, random_state: int = 0):
        super().__init__(id_columns, multi_valued, reject_copies, max_categories)
        self.random_state = random_state

    def _fit_encoded(self, X: np.ndarray, rng: np.random.Generator) -> None:
        n, p = X.shape
        kinds = {sp.name: sp.kind for sp in self.encoder_.specs_}
        Zs = np.zeros((n, p))
        self.margins_ = []
        for j, col in enumerate(self.encoder_.internal_):
            x = X[:, j]
            obs = ~np.isnan(x)
            xo = x[obs]
            if xo.size == 0:
                self.margins_.append(("empty", None, None))
                continue
            stepwise = col.discrete or kinds[col.source] == "integer"
            vals, counts = np.unique(xo, return_counts=True)
            cdf = np.cumsum(counts) / xo.size
            lo = np.concatenate([[0.0], cdf[:-1]])
            k = np.searchsorted(vals, xo)
            if stepwise:
                u = lo[k] + rng.random(xo.size) * (cdf[k] - lo[k])
                self.margins_.append(("step", vals, cdf))
            else:
                u = (lo[k] + cdf[k]) / 2  # mid-rank ECDF
                self.margins_.append(("interp", np.sort(xo), None))
            u = np.clip(u, 0.5 / xo.size, 1 - 0.5 / xo.size)
            Zs[obs, j] = special.ndtri(u)
        sd = Zs.std(axis=0)
        R = np.eye(p)
        live = sd > 0
        if live.sum() > 1:
            R[np.ix_(live, live)] = np.corrcoef(Zs[:, live], rowvar=False)
        w, V = np.linalg.eigh(R)  # nearest positive semi-definite correlation matrix
        R = (V * np.clip(w, 1e-8, None)) @ V.T
        d = np.sqrt(np.diag(R))
        self.corr_ = R / np.outer(d, d)
        self.chol_ = np.linalg.cholesky(self.corr_ + 1e-10 * np.eye(p))

    def _sample_encoded(self, n: int, rng: np.random.Generator) -> np.ndarray:
        p = self.corr_.shape[0]
        U = special.ndtr(rng.standard_normal((n, p)) @ self.chol_.T)
        Z = np.full((n, p), np.nan)
        for j, (kind, a, b) in enumerate(self.margins_):
            if kind == "step":
                Z[:, j] = a[np.minimum(np.searchsorted(b, U[:, j], side="left"), a.size - 1)]
            elif kind == "interp":
                m = a.size
                Z[:, j] = np.interp(U[:, j] * m - 0.5, np.arange(m), a)
        pos = {c.name: i for i, c in enumerate(self.encoder_.internal_)}
        for j, col in enumerate(self.encoder_.internal_):
            if col.parent_missing is not None:
                Z[Z[:, pos[col.parent_missing]] > 0.5, j] = np.nan
        return Z


def split_holdout(df: pd.DataFrame, holdout_share: float = 0.25, n_rows: int | None = None,
                  random_state: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a real table at random into training rows (for the synthesizer) and held-out rows.

    Parameters
    ----------
    df : the real table.
    holdout_share : share of the used rows held out (never shown to the synthesizer); in (0, 1).
    n_rows : use only this many rows (a random subset) before splitting; None uses all.
    random_state : seed of the split.

    Returns
    -------
    (train, holdout), each with a fresh 0..n-1 index.
    """
    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share}")
    n = len(df) if n_rows is None else min(int(n_rows), len(df))
    if n < 20:
        raise ValueError(f"need at least 20 rows to split into training and held-out rows, got {n}")
    idx = np.random.default_rng(random_state).permutation(len(df))[:n]
    k = int(round(n * holdout_share))
    return df.iloc[idx[k:]].reset_index(drop=True), df.iloc[idx[:k]].reset_index(drop=True)


def load_unified_rows(paths, max_rows: int | None, random_state: int = 0,
                      columns_per_read: int = 4) -> tuple[pd.DataFrame, int]:
    """The unified table (:func:`helpers.artifacts.load_unified`), or a seeded random sample of its rows when
    it has more than ``max_rows``; and the number of rows it has.

    Up to ``max_rows`` rows (or with ``max_rows`` None) this is the whole table, exactly as
    ``load_unified(paths)`` reads it. Above, ``max_rows`` rows drawn without replacement with
    ``random_state`` are returned in table order with a fresh index, every column in the table's order and
    dtypes; the table is read ``columns_per_read`` columns at a time and only the sampled rows of each are
    kept, so the whole table (about 0.26 GB per million users with Arrow text) is never in memory at once.
    """
    import pyarrow.parquet as pq

    from . import artifacts

    f = artifacts.artifact("unified").path(paths)
    n = pq.read_metadata(f).num_rows if f.exists() else None  # absent: load_unified raises the clear error
    if n is None or max_rows is None or n <= max_rows:
        df = artifacts.load_unified(paths)
        return df, len(df)
    if max_rows < 1:
        raise ValueError(f"max_rows must be None or a positive number of rows, got {max_rows}")
    keep = np.sort(np.random.default_rng([random_state, 7907]).choice(n, int(max_rows), replace=False))
    names = [c for c in pq.read_schema(f).names if not c.startswith("__index_level_")]  # a stored index is no column
    parts: dict[str, pd.Series] = {}
    for start in range(0, len(names), columns_per_read):
        part = artifacts.load_unified(paths, columns=names[start:start + columns_per_read])
        if len(part) != n:
            raise ValueError(f"{f} changed while it was read ({len(part)} rows, expected {n})")
        for c in part.columns:
            if c not in parts:
                parts[c] = part[c].iloc[keep].reset_index(drop=True)
        del part
    return pd.DataFrame({c: parts[c] for c in names if c in parts}), n


def load_real_table(path: str | os.PathLike | None = None,
                    shared_data: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read the real table to synthesize: UCI Adult by default, else a CSV or Parquet file.

    Parameters
    ----------
    path : a ``.csv``/``.parquet`` file with a header row, or ``adult.data``; None means UCI Adult at
        ``<shared_data>/adult_census/adult.data``.
    shared_data : the shared real-data folder (default ``<repo>/../shared/data``).
    """
    from .paths import REPO_ROOT

    if path is None:
        base = Path(shared_data) if shared_data is not None else REPO_ROOT.parent / "shared" / "data"
        return load_adult(base / "adult_census" / "adult.data")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"real data file {p} does not exist")
    if p.name == "adult.data":
        return load_adult(p)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".csv":
        df = pd.read_csv(p)
        return df.astype({c: "string" for c in df.columns if df[c].dtype == object})
    raise ValueError(f"{p}: expected a .csv or .parquet file (or UCI adult.data)")


def load_adult(path: str | os.PathLike) -> pd.DataFrame:
    """Read UCI Adult (``adult.data``: no header, ``", "``-separated, ``"?"`` missing) with named columns.

    Integer columns get ``int64``, text columns ``string`` (missing as ``<NA>``).
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p} does not exist: expected UCI Adult at ../shared/data/adult_census/adult.data")
    df = pd.read_csv(p, header=None, names=ADULT_COLUMNS, sep=",", skipinitialspace=True,
                     na_values=["?"], keep_default_na=False)
    df = df.dropna(how="all")
    if df.shape[1] != len(ADULT_COLUMNS):
        raise ValueError(f"{p}: expected {len(ADULT_COLUMNS)} columns {ADULT_COLUMNS}, got {df.shape[1]}")
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string").str.strip().str.rstrip(".")
    return df.reset_index(drop=True)


ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                 "hours_per_week", "native_country", "income"]
