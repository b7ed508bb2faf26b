"""Data fusion (statistical matching) of partial sources onto the whole panel, and its validation.

Second- and third-party attributes exist only for matched users. :class:`StatisticalMatcher` imputes them
for the other users by hot-deck: each recipient receives the whole record of one donor drawn from its
donor class (exact match on class variables such as ``age_group``), either at random within the class or
among its ``k`` nearest donors on standardised common variables (distance hot-deck, as in R's StatMatch
``NND.hotdeck``). :func:`fuse` fills every group of source columns and flags each imputed value.

Validation follows media-research practice ("folding", :func:`fold_validate`): the matched users are
split in two, one half is fused onto the other as if unmatched, and the fused values are compared with
the held-back ones, against the baseline of drawing from the marginal distribution. Fusion assumes
**conditional independence** (CIA): given the common variables, the fused attributes are independent of
the recipient's own unshared attributes. :func:`cia_cost` measures what that assumption costs when the
truth is known, and :func:`frechet_bounds` gives the range of joint distributions that the data cannot
rule out without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from . import schema as S

#: Column groups delivered together by one source (a donor gives the whole group).
SOURCE_GROUPS: dict[str, list[str]] = {"partner": list(S.SECOND_PARTY), "third_party": list(S.THIRD_PARTY)}
DEFAULT_CLASSES: tuple[str, ...] = ("age_group",)
#: Common first-party variables used for the distance of the nearest-neighbour hot-deck.
DEFAULT_MATCH_ON: tuple[str, ...] = (
    "income_bracket", "time_on_social_media_min", "time_on_streaming_video_min", "time_on_podcasts_min",
    "monthly_conversions", "avg_monthly_spend", "support_tickets_raised",
)
MAX_ROWS_IN_MESSAGE = 5
#: recipients per k-d tree query (:meth:`StatisticalMatcher._draw`); the result does not depend on it
QUERY_BLOCK = 2**19


# --- helpers ----------------------------------------------------------------------------------------
def _numeric_feature(s: pd.Series) -> np.ndarray:
    """Distance feature of one common variable: ordinal categories -> rank, booleans -> 0/1,
    non-negative numbers (counts, minutes, spend) -> log1p, other numbers as they are."""
    col = S.BY_NAME.get(s.name)
    if col is not None and col.kind in ("category", "multi"):
        raise ValueError(f"match_on column {s.name!r} is nominal ({col.kind}); a distance needs numbers or "
                         "ordered categories: put it in donor_classes instead")
    if col is not None and col.kind == "ordinal":
        codes = _ordinal_codes(s, col.categories)
        unknown = (codes < 0) & s.notna().to_numpy()
        if unknown.any():
            raise ValueError(f"match_on column {s.name!r} has values outside the data dictionary "
                             f"(e.g. {s[unknown].head(3).tolist()}); expected {col.allowed()}")
        return codes.astype(float)
    if col is not None and col.kind == "bool":
        return s.astype(float).to_numpy()
    x = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
    bad = np.isnan(x) & s.notna().to_numpy()
    if bad.any():
        raise ValueError(f"match_on column {s.name!r} has non-numeric values (e.g. {s[bad].head(3).tolist()}); "
                         "expected numbers or an ordinal column of the data dictionary: put nominal "
                         "variables in donor_classes instead")
    return np.log1p(np.clip(x, 0, None)) if (x[~np.isnan(x)] >= 0).all() else x


def _ordinal_codes(s: pd.Series, categories) -> np.ndarray:
    """``pd.Categorical(s, categories).codes`` (-1 for missing or unknown values) without a Python string per
    row: the distinct values are coded once (10M text values as Python objects took ~0.6 GB)."""
    codes, uniques = pd.factorize(s.astype(pd.StringDtype("pyarrow")))
    rank = {str(c): i for i, c in enumerate(categories)}
    lookup = np.array([rank.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
    return lookup[codes]  # code -1 (missing) picks the trailing -1


def _require_complete(df: pd.DataFrame, columns: list[str], role: str, id_col: str = "user_id",
                      expected: str = "complete common variables (ingest/impute them first)") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{role}: column(s) {missing} are absent; available columns: {list(df.columns)[:30]}")
    for col in columns:  # one column at a time: df[columns].isna() copied them all (GBs at 10M rows)
        na = df[col].isna().to_numpy()
        if na.any():
            rows = df.loc[na, id_col].head(MAX_ROWS_IN_MESSAGE).tolist() if id_col in df else \
                df.index[na][:MAX_ROWS_IN_MESSAGE].tolist()
            raise ValueError(f"{role}: column {col!r} has {int(na.sum())} missing value(s) (e.g. {rows}); "
                             f"expected {expected}")


def _used_columns(df: pd.DataFrame, *groups) -> list[str]:
    """The columns of ``df`` named in ``groups``, once each, in order: a matcher copies only what it reads
    (copying every column of the panel for each split was a large part of fusion's time at 1M rows)."""
    return [c for c in dict.fromkeys(c for g in groups for c in g) if c in df.columns]


def _class_key(df: pd.DataFrame, classes: list[str]) -> pd.Series:
    # text stored in Arrow: a Python string per row was ~0.6 GB per key at 10M rows
    text = pd.StringDtype("pyarrow")
    if not classes:
        return pd.Series("all", index=df.index, dtype=text)
    key = df[classes[0]].astype(text)
    for c in classes[1:]:
        key = key + "\x1f" + df[c].astype(text)
    return key


# --- the matcher ---------------------------------------------------------------------------------------
class StatisticalMatcher:
    """Hot-deck statistical matching within donor classes (random or nearest-neighbour donor).

    Parameters
    ----------
    columns : list of str
        Columns to transfer from donors (all must be observed in every donor).
    donor_classes : sequence of str
        Common categorical variables a donor must share exactly with its recipient. When a class has
        fewer than ``min_donors`` donors, the last class variable is dropped for that recipient class
        (collapsing) until enough donors exist.
    match_on : sequence of str or None
        Common variables for the distance of the nearest-neighbour hot-deck (standardised; ordinal
        categories as ranks, counts and minutes as log1p). ``None`` or empty -> random hot-deck.
    k : int
        The donor is drawn uniformly among the ``k`` nearest donors of the class (``k=1`` is the
        deterministic nearest neighbour; larger ``k`` keeps more of the donor distribution's spread).
    min_donors : int
        Minimum donors per class before collapsing.
    random_state : int
        Seed of the donor draws; same seed, same fused values.

    Notes
    -----
    The method assumes conditional independence (CIA): given the class and matching variables, the
    transferred columns carry no information on the recipient's other attributes. Associations between
    transferred columns and recipient-only columns that do not run through the common variables are
    attenuated toward independence (see :func:`cia_cost`).
    """

    def __init__(self, columns: list[str], donor_classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
                 match_on: tuple[str, ...] | list[str] | None = DEFAULT_MATCH_ON, k: int = 5,
                 min_donors: int = 20, random_state: int = 0):
        if not columns:
            raise ValueError("columns is empty; expected the list of columns to fuse")
        if k < 1 or min_donors < 1:
            raise ValueError(f"k and min_donors must be >= 1, got k={k}, min_donors={min_donors}")
        self.columns = list(columns)
        self.donor_classes = list(donor_classes)
        self.match_on = list(match_on or [])
        self.k = k
        self.min_donors = min_donors
        self.random_state = random_state

    def _features(self, df: pd.DataFrame) -> np.ndarray:
        X = np.column_stack([_numeric_feature(df[c]) for c in self.match_on])
        return (X - self.mean_) / self.scale_

    def fit(self, donors: pd.DataFrame) -> "StatisticalMatcher":
        """Store the donor file (rows with every ``columns`` value observed) and the feature scaling."""
        if len(donors) == 0:
            raise ValueError("no donors: every row misses some of the columns to fuse; expected matched rows")
        _require_complete(donors, self.columns, "donors", expected="donors with every column to fuse "
                          "observed (pass only the matched rows, e.g. df[df[columns].notna().all(axis=1)])")
        return self._fit_common(donors)

    def _fit_common(self, donors: pd.DataFrame) -> "StatisticalMatcher":
        """:meth:`fit` on the donors' class and matching variables only: enough for :meth:`donor_positions`
        (:func:`fuse` takes the donated values from the table itself instead of copying them)."""
        if len(donors) == 0:
            raise ValueError("no donors: every row misses some of the columns to fuse; expected matched rows")
        _require_complete(donors, self.donor_classes + self.match_on, "donors' common variables")
        self.donors_ = donors.reset_index(drop=True)
        if self.match_on:
            raw = np.column_stack([_numeric_feature(self.donors_[c]) for c in self.match_on])
            self.mean_ = raw.mean(axis=0)
            sd = raw.std(axis=0)
            self.scale_ = np.where(sd > 0, sd, 1.0)
            self.donor_X_ = (raw - self.mean_) / self.scale_
        return self

    def donor_positions(self, recipients: pd.DataFrame) -> np.ndarray:
        """Position (row number in the donor file) of the donor chosen for each recipient."""
        if not hasattr(self, "donors_"):
            raise ValueError("StatisticalMatcher is not fitted; call fit(donors) first")
        _require_complete(recipients, self.donor_classes + self.match_on, "recipients' common variables")
        rng = np.random.default_rng(self.random_state)
        out = np.full(len(recipients), -1, dtype=np.int64)
        rec = recipients.reset_index(drop=True)
        X = self._features(rec) if self.match_on else None
        todo = np.arange(len(rec))
        for depth in range(len(self.donor_classes), -1, -1):
            classes = self.donor_classes[:depth]
            # the keys as integer codes, numbered in order of first appearance among the recipients (the
            # order in which the classes draw from ``rng``), the donors' keys in the same numbering
            rkey = _class_key(rec.iloc[todo], classes)
            codes, uniques = pd.factorize(pd.concat([rkey, _class_key(self.donors_, classes)], ignore_index=True))
            rcode, dcode = codes[:len(rkey)], codes[len(rkey):]
            counts = np.bincount(dcode, minlength=len(uniques))
            n_keys = len(pd.unique(rcode))
            by_key = np.argsort(rcode, kind="stable")  # the recipients of each key, in their order
            starts = np.searchsorted(rcode[by_key], np.arange(n_keys + 1))
            dorder = np.argsort(dcode, kind="stable")
            dstarts = np.searchsorted(dcode[dorder], np.arange(n_keys + 1))
            left = []
            for key in range(n_keys):
                rows = todo[by_key[starts[key]:starts[key + 1]]]
                if counts[key] < self.min_donors and depth > 0:
                    left.append(rows)
                    continue
                pool = dorder[dstarts[key]:dstarts[key + 1]]
                if pool.size == 0:
                    raise ValueError("no donors at all; expected at least one matched row")
                out[rows] = self._draw(pool, rows.size, None if X is None else X[rows], rng)
            todo = np.concatenate(left) if left else np.array([], dtype=np.int64)
            if todo.size == 0:
                break
        return out

    def _draw(self, pool: np.ndarray, n: int, Xr: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
        """Draw one donor per recipient from ``pool``: at random, or among the k nearest."""
        if Xr is None:
            return pool[rng.integers(0, pool.size, size=n)]
        k = min(self.k, pool.size)
        # scipy's k-d tree: the same exact k nearest neighbours as scikit-learn's NearestNeighbors (up to the
        # order of ties), 2.5-3x faster per query in these 7 dimensions, which was most of fusion's time at 1M
        tree = cKDTree(self.donor_X_[pool], balanced_tree=False, compact_nodes=False)
        which = rng.integers(0, k, size=n)
        pick = np.empty(n, dtype=np.int64)
        # the queries run on every core (workers=-1) in blocks of recipients: each recipient's neighbours do not
        # depend on the split, and the (n x k) distance and index arrays of 10M recipients were ~0.8 GB
        for s in range(0, n, QUERY_BLOCK):
            _, idx = tree.query(Xr[s:s + QUERY_BLOCK], k=k, workers=-1)
            idx = np.asarray(idx).reshape(-1, k)
            pick[s:s + QUERY_BLOCK] = idx[np.arange(len(idx)), which[s:s + QUERY_BLOCK]]
        return pool[pick]

    def transform(self, recipients: pd.DataFrame) -> pd.DataFrame:
        """Donor values of ``columns`` for each recipient (index of ``recipients``), plus ``donor_position``."""
        pos = self.donor_positions(recipients)
        out = self.donors_.loc[pos, self.columns].set_axis(recipients.index)
        out["donor_position"] = pos
        return out


# --- fusing the panel ---------------------------------------------------------------------------------
@dataclass
class FusionResult:
    """Output of :func:`fuse`.

    Attributes
    ----------
    fused : pandas.DataFrame
        ``user_id``, every fused column (observed values kept, missing ones imputed) and one boolean
        ``<col>_imputed`` flag per column.
    n_donors : dict
        Number of donors per source group.
    n_recipients : dict
        Number of rows that received at least one imputed value, per source group.
    """

    fused: pd.DataFrame
    n_donors: dict[str, int]
    n_recipients: dict[str, int]

    @property
    def imputed_share(self) -> pd.Series:
        """Share of imputed values per fused column."""
        flags = [c for c in self.fused.columns if c.endswith("_imputed")]
        return self.fused[flags].mean().rename(lambda c: c.removesuffix("_imputed"))

    @property
    def columns(self) -> list[str]:
        """The fused columns (without the identifier and the ``_imputed`` flags)."""
        return [c for c in self.fused.columns[1:] if not c.endswith("_imputed")]

    def apply(self, df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """``df`` (the frame :func:`fuse` was given, same rows in the same order) with its fused columns' values
        replaced by the fused ones: missing values imputed, observed ones kept. ``columns`` keeps only those
        columns of the result (e.g. the raking variables and the identifier), so that 10M rows are not copied
        whole; the fused columns come last, as ``df.drop(columns=fused).join(fused)`` orders them."""
        if len(df) != len(self.fused):
            raise ValueError(f"df has {len(df)} rows, the fusion {len(self.fused)}: pass the frame fuse() was given")
        fused = self.columns
        keep = list(df.columns) if columns is None else [c for c in df.columns if c in columns]
        own = {c: df[c] for c in keep if c not in fused}
        new = {c: pd.Series(self.fused[c].array, index=df.index, name=c) for c in fused
               if columns is None or c in columns}
        return pd.DataFrame({**own, **new}, index=df.index)


def diagnostic_sample(df: pd.DataFrame, max_rows: int | None, random_state: int = 0) -> pd.DataFrame:
    """``df`` itself when it has at most ``max_rows`` rows (or ``max_rows`` is None), else a seeded random sample
    of ``max_rows`` of its rows, in table order, index kept: the rows the fusion *diagnostics* (folding
    validation, CIA cost, Fréchet bounds) run on, so that they do not copy 10M-row tables while fusion itself
    still imputes every user."""
    if max_rows is None or len(df) <= max_rows:
        return df
    if max_rows < 1:
        raise ValueError(f"max_rows must be a positive number of rows or None, got {max_rows}")
    rows = np.sort(np.random.default_rng([random_state, 3]).choice(len(df), size=int(max_rows), replace=False))
    return df.iloc[rows]


def complete_rows(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Boolean mask of the rows where every one of ``columns`` is observed (``df[columns].notna().all(axis=1)``
    one column at a time: selecting the columns first copied them, GBs of text at 10M rows)."""
    ok = np.ones(len(df), dtype=bool)
    for c in columns:
        ok &= df[c].notna().to_numpy()
    return ok


def fuse(df: pd.DataFrame, groups: dict[str, list[str]] | None = None,
         donor_classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
         match_on: tuple[str, ...] | list[str] | None = DEFAULT_MATCH_ON, k: int = 5,
         min_donors: int = 20, random_state: int = 0, id_col: str = "user_id") -> FusionResult:
    """Impute every source group's missing values by hot-deck from the rows where the group is observed.

    Parameters
    ----------
    df : pandas.DataFrame
        The panel (unified table): common variables complete, source columns missing where unmatched.
    groups : dict of str -> list of str, optional
        Columns delivered together by one source; default :data:`SOURCE_GROUPS` (partner, 3rd party),
        restricted to the groups present in ``df``. Donors of a group are the rows where all its columns
        are observed; a recipient keeps its observed values and takes only the missing ones from its donor
        (so a record is never mixed from several donors within a group).
    donor_classes, match_on, k, min_donors, random_state
        See :class:`StatisticalMatcher`. Each group uses seed ``[random_state, group number]``.
    id_col : str
        Identifier column copied to the output.

    Returns
    -------
    FusionResult
    """
    if id_col not in df.columns:
        raise ValueError(f"column {id_col!r} is absent; expected the panel's identifier column")
    groups = {g: cols for g, cols in (groups or SOURCE_GROUPS).items() if set(cols) <= set(df.columns)}
    if not groups:
        raise ValueError(f"none of the source groups' columns are in the panel; expected e.g. "
                         f"{SOURCE_GROUPS}")
    n = len(df)
    out = {id_col: pd.Series(df[id_col].array, name=id_col)}
    n_donors, n_recipients = {}, {}
    common = _used_columns(df, donor_classes, match_on or [])
    for gi, (group, cols) in enumerate(groups.items()):
        observed = {c: df[c].notna().to_numpy() for c in cols}
        donor = complete_rows(df, cols)
        recip = ~donor
        n_donors[group], n_recipients[group] = int(donor.sum()), int(recip.sum())
        recip_rows = donor_rows = np.array([], dtype=np.int64)
        if recip.any():
            if not donor.any():
                raise ValueError(f"source group {group!r}: no row has all of {cols} observed, so there are "
                                 "no donors; fusion needs some matched users")
            seed = int(np.random.SeedSequence([random_state, gi]).generate_state(1)[0])
            matcher = StatisticalMatcher(cols, donor_classes, match_on, k, min_donors, seed)
            # donors are rows of df: only what the match reads is copied, and each recipient's donated value is
            # the value of its donor's row (a take per column), not a copy of the donors' and recipients' columns
            pos = matcher._fit_common(df.loc[donor, common]).donor_positions(df.loc[recip, common])
            recip_rows, donor_rows = np.flatnonzero(recip), np.flatnonzero(donor)[pos]
        for c in cols:
            take = np.arange(n)
            gap = ~observed[c][recip_rows]  # recipients keep their observed values, take only the missing ones
            take[recip_rows[gap]] = donor_rows[gap]
            out[c] = pd.Series(df[c].array.take(take), name=c)
            out[f"{c}_imputed"] = ~observed[c]
    return FusionResult(pd.DataFrame(out), n_donors, n_recipients)


# --- comparing fused with actual values -------------------------------------------------------------------
def items(s: pd.Series, name: str | None = None) -> dict[str, pd.Series]:
    """Split a column into categorical items: itself, or one presence indicator per token if multi-valued.

    ``household_size`` stays as its integer categories; missing values stay missing.
    """
    name = name or s.name
    col = S.BY_NAME.get(name)
    if col is not None and col.kind == "multi":
        # token sets repeat (a few hundred distinct cells in 1M rows): test each distinct cell once and map the
        # answers back to the rows by their codes (a missing cell has code -1: the lookup's last entry, None)
        codes, cells = pd.factorize(s.astype("string"))
        padded = [S.MULTI_SEP + str(cell) + S.MULTI_SEP for cell in cells]
        out = {}
        for tok in col.categories:
            lookup = np.array([("True" if f"{S.MULTI_SEP}{tok}{S.MULTI_SEP}" in cell else "False") for cell in padded]
                              + [None], dtype=object)
            out[f"{name}={tok}"] = pd.Series(lookup[codes], index=s.index, dtype="string")
        return out
    return {name: s.astype("string")}


def agreement(actual: pd.Series, fused: pd.Series, donor_pool: pd.Series) -> dict[str, float]:
    """Agreement of fused with actual values, and the expected agreement of a marginal-distribution draw.

    Parameters
    ----------
    actual, fused : pandas.Series
        Held-back and fused values of the same recipients (same index); single-valued columns or items.
    donor_pool : pandas.Series
        The donors' values: a "marginal" fusion draws each recipient's value from their distribution, so
        its expected agreement is ``sum_c p_donor(c) * p_actual(c)``.

    Returns
    -------
    dict
        ``accuracy``, ``baseline_accuracy`` and ``gain`` (the difference).
    """
    a = actual.astype("string").to_numpy(dtype=object)
    f = fused.astype("string").to_numpy(dtype=object)
    acc = float(np.mean(a == f))
    pa = actual.astype("string").value_counts(normalize=True)
    pd_ = donor_pool.astype("string").value_counts(normalize=True)
    base = float((pa * pd_.reindex(pa.index, fill_value=0.0)).sum())
    return {"accuracy": acc, "baseline_accuracy": base, "gain": acc - base}


def total_variation(p: pd.Series, q: pd.Series) -> float:
    """Total variation distance ``0.5 * sum |p - q|`` between two distributions (indexes aligned)."""
    idx = p.index.union(q.index)
    return 0.5 * float(np.abs(p.reindex(idx, fill_value=0) - q.reindex(idx, fill_value=0)).sum())


def contingency(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of the ``(a, b)`` table (rows with a missing value dropped) and the row/column labels."""
    ca, la = pd.factorize(a.astype("string").to_numpy(dtype=object), sort=True)
    cb, lb = pd.factorize(b.astype("string").to_numpy(dtype=object), sort=True)
    ok = (ca >= 0) & (cb >= 0)
    tab = np.bincount(ca[ok] * len(lb) + cb[ok], minlength=len(la) * len(lb)).reshape(len(la), len(lb))
    return tab.astype(float), np.asarray(la), np.asarray(lb)


def joint_distribution(a: pd.Series, b: pd.Series) -> pd.Series:
    """Joint relative frequencies of two categorical series (MultiIndex ``(a, b)``)."""
    tab, la, lb = contingency(a, b)
    return pd.Series((tab / tab.sum()).ravel(), index=pd.MultiIndex.from_product([la, lb]))


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V association of two categorical series (0 = independent, 1 = one determines the other)."""
    return _cramers_v_table(contingency(a, b)[0])


def _cramers_v_table(tab: np.ndarray) -> float:
    """Cramér's V of a contingency table of counts (empty rows/columns ignored)."""
    tab = np.asarray(tab, dtype=float)
    tab = tab[tab.sum(1) > 0][:, tab.sum(0) > 0]
    n = tab.sum()
    if n == 0 or min(tab.shape) < 2:
        return 0.0
    expected = tab.sum(1, keepdims=True) * tab.sum(0, keepdims=True) / n
    chi2 = float(((tab - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / n / (min(tab.shape) - 1)))


def quartile_bins(s: pd.Series) -> pd.Series:
    """Quartile band (``Q1``..``Q4``) of a numeric behaviour variable, for joint-distribution checks."""
    x = pd.to_numeric(s, errors="coerce").astype(float)
    return pd.qcut(x.rank(method="first"), 4, labels=["Q1", "Q2", "Q3", "Q4"]).astype("string")


@dataclass
class FoldingReport:
    """Output of :func:`fold_validate`.

    Attributes
    ----------
    accuracy : pandas.DataFrame
        One row per fused column: ``column, accuracy, baseline_accuracy, gain`` (multi-valued columns:
        mean over their token indicators).
    joint : pandas.DataFrame
        One row per item x common variable: ``item, by, tvd_fused, tvd_baseline, v_actual, v_fused`` —
        total variation distance of the fused joint distribution (item, by) from the actual one, the same
        for the marginal-draw baseline (which makes the item independent of ``by``), and Cramér's V of
        the actual and the fused pair.
    n_donors, n_recipients : int
        Sizes of the two halves.
    """

    accuracy: pd.DataFrame
    joint: pd.DataFrame
    n_donors: int
    n_recipients: int

    @property
    def accuracy_gain(self) -> float:
        """Mean accuracy gain of fusion over the marginal baseline across fused columns."""
        return float(self.accuracy["gain"].mean())


def fold_validate(df: pd.DataFrame, columns: list[str], by: list[str] | None = None,
                  donor_share: float = 0.5, random_state: int = 0, **matcher_kwargs) -> FoldingReport:
    """Folding validation: fuse one half of the complete rows onto the other and compare with the truth.

    Parameters
    ----------
    df : pandas.DataFrame
        Panel; rows where every ``columns`` value is observed are split into donors and recipients.
    columns : list of str
        Columns of one source group.
    by : list of str, optional
        Common variables for the joint-distribution checks; categorical ones are used as they are,
        numeric ones in quartile bands. Default: ``age_group``, ``income_bracket`` and the behaviour
        variables ``time_on_social_media_min``, ``avg_monthly_spend``, ``monthly_conversions``.
    donor_share : float
        Share of the complete rows used as donors.
    random_state : int
        Seed of the split and of the donor draws.
    **matcher_kwargs
        Passed to :class:`StatisticalMatcher` (``donor_classes``, ``match_on``, ``k``, ``min_donors``).

    Returns
    -------
    FoldingReport
    """
    if not 0 < donor_share < 1:
        raise ValueError(f"donor_share must be in (0, 1), got {donor_share}")
    by = by or ["age_group", "income_bracket", "time_on_social_media_min", "avg_monthly_spend",
                "monthly_conversions"]
    need = _used_columns(df, columns, by, matcher_kwargs.get("donor_classes", DEFAULT_CLASSES),
                         matcher_kwargs.get("match_on", DEFAULT_MATCH_ON) or [], ["user_id"])
    complete = df.loc[complete_rows(df, columns), need].reset_index(drop=True)
    if len(complete) < 20:
        raise ValueError(f"only {len(complete)} rows have all of {columns} observed; folding needs at least 20")
    rng = np.random.default_rng(random_state)
    is_donor = rng.random(len(complete)) < donor_share
    donors, recips = complete[is_donor], complete[~is_donor]
    matcher = StatisticalMatcher(columns, random_state=random_state, **matcher_kwargs).fit(donors)
    fused = matcher.transform(recips)
    acc_rows, joint_rows = [], []
    by_codes = {}
    for b in by:
        kind = S.BY_NAME[b].kind if b in S.BY_NAME else None
        values = recips[b].astype("string") if kind in ("category", "ordinal", "bool") else quartile_bins(recips[b])
        by_codes[b] = pd.factorize(values.to_numpy(dtype=object), sort=True)
    for c in columns:
        act_items, fus_items, don_items = items(recips[c], c), items(fused[c], c), items(donors[c], c)
        scores = [agreement(act_items[i], fus_items[i], don_items[i]) for i in act_items]
        acc_rows.append({"column": c, **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]}})
        for i in act_items:
            n_rec = len(act_items[i])
            codes, labels = pd.factorize(pd.concat([act_items[i], fus_items[i], don_items[i]])
                                         .to_numpy(dtype=object), sort=True)
            ca, cf, cd = codes[:n_rec], codes[n_rec:2 * n_rec], codes[2 * n_rec:]
            p_don = np.bincount(cd[cd >= 0], minlength=len(labels)) / max((cd >= 0).sum(), 1)
            for b, (cb, lb) in by_codes.items():
                nb = len(lb)
                ok_a, ok_f = (ca >= 0) & (cb >= 0), (cf >= 0) & (cb >= 0)
                t_act = np.bincount(ca[ok_a] * nb + cb[ok_a], minlength=len(labels) * nb).reshape(-1, nb)
                t_fus = np.bincount(cf[ok_f] * nb + cb[ok_f], minlength=len(labels) * nb).reshape(-1, nb)
                p_b = t_act.sum(0) / t_act.sum()
                base = np.outer(p_don, p_b)
                joint_rows.append({
                    "item": i, "by": b,
                    "tvd_fused": 0.5 * float(np.abs(t_act / t_act.sum() - t_fus / t_fus.sum()).sum()),
                    "tvd_baseline": 0.5 * float(np.abs(t_act / t_act.sum() - base).sum()),
                    "v_actual": _cramers_v_table(t_act), "v_fused": _cramers_v_table(t_fus),
                })
    return FoldingReport(pd.DataFrame(acc_rows), pd.DataFrame(joint_rows), len(donors), len(recips))


# --- the conditional-independence assumption and its uncertainty -------------------------------------------
def cia_cost(df: pd.DataFrame, y: str, z: str, oracle: pd.Series | None = None,
             random_state: int = 0, **matcher_kwargs) -> dict[str, float]:
    """What the conditional-independence assumption costs for the pair ``(y, z)`` on rows observing both.

    Among rows where ``y`` (recipient's own attribute) and ``z`` (fused attribute) are both observed, half
    of them donate ``z`` to the other half by :class:`StatisticalMatcher`, ignoring ``y``. Fusion can only
    reproduce the part of the ``(y, z)`` association that runs through the common variables, so the fused
    pair is less associated than the actual one. With ``oracle`` (e.g. the planted latent segment, which
    makes ``y`` and ``z`` conditionally independent by construction) added to the donor classes, the CIA
    holds and the association should be restored.

    Parameters
    ----------
    df : pandas.DataFrame
        Panel with ``y``, ``z`` and the common variables.
    y, z : str
        Single-valued categorical columns (multi-valued columns are not supported here).
    oracle : pandas.Series, optional
        A variable aligned with ``df`` that makes the CIA hold (only known for synthetic data).
    random_state : int
        Seed of the split and of the donor draws.
    **matcher_kwargs
        Passed to :class:`StatisticalMatcher`.

    Returns
    -------
    dict
        ``n_recipients``, ``v_actual`` / ``v_fused`` / ``v_oracle`` (Cramér's V of the pair) and
        ``tvd_fused`` / ``tvd_oracle`` (total variation distance of the fused joint from the actual one).
    """
    for c in (y, z):
        if S.BY_NAME.get(c) is not None and S.BY_NAME[c].kind == "multi":
            raise ValueError(f"cia_cost needs single-valued columns; {c!r} is multi-valued: pass one token "
                             "indicator instead")
    both = df[y].notna() & df[z].notna()
    if both.sum() < 40:
        raise ValueError(f"only {int(both.sum())} rows observe both {y!r} and {z!r}; the CIA cost needs at least 40")
    data = df.loc[both, _used_columns(df, [y, z], matcher_kwargs.get("donor_classes", DEFAULT_CLASSES),
                                      matcher_kwargs.get("match_on", DEFAULT_MATCH_ON) or [], ["user_id"])].copy()
    if oracle is not None:
        data["_oracle"] = oracle[both].astype("string").to_numpy()
    data = data.reset_index(drop=True)
    rng = np.random.default_rng(random_state)
    is_donor = rng.random(len(data)) < 0.5
    donors, recips = data[is_donor], data[~is_donor]
    classes = list(matcher_kwargs.pop("donor_classes", DEFAULT_CLASSES))
    fused = StatisticalMatcher([z], classes, random_state=random_state, **matcher_kwargs).fit(donors) \
        .transform(recips)[z]
    actual = joint_distribution(recips[y], recips[z])
    out = {"n_recipients": float(len(recips)), "v_actual": cramers_v(recips[y], recips[z]),
           "v_fused": cramers_v(recips[y], fused),
           "tvd_fused": total_variation(actual, joint_distribution(recips[y], fused))}
    if oracle is not None:
        fo = StatisticalMatcher([z], ["_oracle", *classes], random_state=random_state, **matcher_kwargs) \
            .fit(donors).transform(recips)[z]
        out.update(v_oracle=cramers_v(recips[y], fo),
                   tvd_oracle=total_variation(actual, joint_distribution(recips[y], fo)))
    return out


def frechet_bounds(file_a: pd.DataFrame, file_b: pd.DataFrame, y: str, z: str,
                   x: list[str] | None = None) -> pd.DataFrame:
    """Fréchet bounds of the cells of the ``(y, z)`` table when ``y`` and ``z`` are never observed jointly.

    ``file_a`` observes ``(x, y)`` and ``file_b`` observes ``(x, z)``. Without ``x`` the bounds are
    ``max(0, p(y) + p(z) - 1) <= p(y, z) <= min(p(y), p(z))``; given common variables ``x`` they are
    ``sum_x p(x) max(0, p(y|x) + p(z|x) - 1) <= p(y, z) <= sum_x p(x) min(p(y|x), p(z|x))``, always
    narrower (with ``x``, the unconditional bounds use the marginals implied by the pooled ``p(x)`` and
    the conditionals, so that both refer to one distribution). Every joint distribution inside the bounds is compatible with both files; the estimate
    under the CIA, ``sum_x p(x) p(y|x) p(z|x)``, is only one of them (D'Orazio, Di Zio & Scanu 2006;
    R's ``StatMatch::Frechet.bounds.cat``).

    Parameters
    ----------
    file_a, file_b : pandas.DataFrame
        Rows observing ``y`` (resp. ``z``) and the common variables ``x``; rows with missing values in
        the used columns are dropped.
    y, z : str
        Single-valued categorical columns.
    x : list of str, optional
        Common categorical variables; ``p(x)`` is estimated from both files pooled.

    Returns
    -------
    pandas.DataFrame
        One row per ``(y, z)`` cell: ``y, z, lower_unconditional, upper_unconditional, lower, upper, cia``.
        ``DataFrame.attrs['uncertainty']`` holds the mean width ``upper - lower`` over cells and
        ``attrs['uncertainty_unconditional']`` the same without ``x``.
    """
    x = list(x or [])
    for name, f, col in (("file_a", file_a, y), ("file_b", file_b, z)):
        missing = [c for c in [col, *x] if c not in f.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}; expected {[col, *x]}")
    a = file_a[[y, *x]].dropna().astype("string")
    b = file_b[[z, *x]].dropna().astype("string")
    if a.empty or b.empty:
        raise ValueError(f"no complete rows for {y!r} in file_a or {z!r} in file_b")
    if x:
        ka, kb = _class_key(a, x), _class_key(b, x)
        px = pd.concat([ka, kb]).value_counts(normalize=True)
        py_x = pd.crosstab(ka, a[y], normalize="index")
        pz_x = pd.crosstab(kb, b[z], normalize="index")
        common = px.index.intersection(py_x.index).intersection(pz_x.index)
        px = px[common] / px[common].sum()
        py_x, pz_x = py_x.loc[common], pz_x.loc[common]
        # marginals harmonised on the pooled p(x), so that both sets of bounds refer to one distribution
        py = pd.Series(px.to_numpy() @ py_x.to_numpy(), index=py_x.columns)
        pz = pd.Series(px.to_numpy() @ pz_x.to_numpy(), index=pz_x.columns)
    else:
        py = a[y].value_counts(normalize=True)
        pz = b[z].value_counts(normalize=True)
    rows = []
    for yc in py.index:
        for zc in pz.index:
            row = {"y": yc, "z": zc,
                   "lower_unconditional": max(0.0, py[yc] + pz[zc] - 1.0),
                   "upper_unconditional": min(py[yc], pz[zc])}
            if x:
                pyx = py_x[yc].to_numpy()
                pzx = pz_x[zc].to_numpy()
                w = px.to_numpy()
                row["lower"] = float(w @ np.maximum(0.0, pyx + pzx - 1.0))
                row["upper"] = float(w @ np.minimum(pyx, pzx))
                row["cia"] = float(w @ (pyx * pzx))
            else:
                row["lower"], row["upper"] = row["lower_unconditional"], row["upper_unconditional"]
                row["cia"] = py[yc] * pz[zc]
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["uncertainty"] = float((out["upper"] - out["lower"]).mean())
    out.attrs["uncertainty_unconditional"] = float(
        (out["upper_unconditional"] - out["lower_unconditional"]).mean())
    return out
