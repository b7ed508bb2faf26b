"""Calibration of a panel to population margins: raking (iterative proportional fitting) with trimming.

:func:`rake` finds weights ``w_i = d_i * prod_v f_v(x_iv)`` whose weighted category shares equal the
target margins of every raking variable (Deming & Stephan 1940); this is the calibration estimator with
the raking-ratio distance of Deville & Särndal (1992). Weights can be capped (``cap`` times the mean
weight) and re-raked until both the cap and the margins hold. :func:`read_margins` reads a documented
margins file, :func:`margin_table` gives the before/after tables and :func:`kish_design_effect` /
:func:`effective_sample_size` the cost of weighting in precision.

Margins file format (CSV, one row per category)::

    variable,category,target
    age_group,18-24,0.12
    age_group,25-34,0.17
    ...
    age_group:sex,18-24:Male,0.06     # an interaction: component columns joined by ':'

``target`` may be shares (every variable sums to 1) or counts (every variable sums to the same
population total). A variable named ``a:b`` is the interaction of columns ``a`` and ``b`` of the panel
and its categories are the component categories joined by ``:``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

INTERACTION_SEP = ":"
MARGIN_COLUMNS = ("variable", "category", "target")
#: Household-size bands of the population margins (``helpers.generate.population_margins``).
HOUSEHOLD_BANDS = ["1", "2", "3", "4", "5+"]
MAX_ROWS_IN_MESSAGE = 5


# --- margins ---------------------------------------------------------------------------------------
def margin_columns(path: str | Path | None) -> list[str]:
    """The panel columns the margins file at ``path`` rakes on (the parts of interactions ``a:b`` included), in
    file order; empty when there is no file (``None`` or absent), so a stage can read only those columns."""
    if path is None or not Path(path).exists():
        return []
    parts = (p for v in dict.fromkeys(read_margins(path)["variable"]) for p in v.split(INTERACTION_SEP))
    return list(dict.fromkeys(parts))


def read_margins(path: str | Path) -> pd.DataFrame:
    """Read and validate a margins file (``variable, category, target``).

    Parameters
    ----------
    path : str or Path
        CSV file with one row per variable x category, see the module docstring.

    Returns
    -------
    pandas.DataFrame
        Columns ``variable``, ``category`` (both str) and ``target`` (float), validated by
        :func:`validate_margins`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If columns are missing or the targets are invalid (see :func:`validate_margins`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"margins file {path} does not exist; expected a CSV with columns "
                                f"{', '.join(MARGIN_COLUMNS)}")
    margins = pd.read_csv(path, dtype={"variable": str, "category": str}, keep_default_na=False)
    return validate_margins(margins, source=str(path))


def validate_margins(margins: pd.DataFrame, source: str = "margins",
                     rtol: float = 1e-3) -> pd.DataFrame:
    """Check a margins table and return it with clean dtypes.

    Parameters
    ----------
    margins : pandas.DataFrame
        Columns ``variable``, ``category``, ``target``.
    source : str
        Name used in error messages (e.g. the file path).
    rtol : float
        Relative tolerance for "sums to 1" (shares) and "same total in every variable" (counts).

    Returns
    -------
    pandas.DataFrame
        A copy with ``variable``/``category`` as str and ``target`` as float.

    Raises
    ------
    ValueError
        Missing columns, duplicated categories, negative or non-numeric targets, a variable whose
        targets are all zero, or totals that are inconsistent between variables.
    """
    missing = [c for c in MARGIN_COLUMNS if c not in margins.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected columns "
                         f"{', '.join(MARGIN_COLUMNS)} (one row per variable x category)")
    m = margins.loc[:, list(MARGIN_COLUMNS)].copy()
    m["variable"] = m["variable"].astype(str).str.strip()
    m["category"] = m["category"].astype(str).str.strip()
    target = pd.to_numeric(m["target"], errors="coerce")
    bad = m.index[target.isna() | ~np.isfinite(target.fillna(0.0))].tolist()
    if bad:
        raise ValueError(f"{source}: column 'target' is not a finite number in row(s) "
                         f"{bad[:MAX_ROWS_IN_MESSAGE]}; expected a share or a count >= 0")
    m["target"] = target.astype(float)
    neg = m.index[m["target"] < 0].tolist()
    if neg:
        raise ValueError(f"{source}: negative target in row(s) {neg[:MAX_ROWS_IN_MESSAGE]}; "
                         "expected shares or counts >= 0")
    dup = m.duplicated(["variable", "category"], keep=False)
    if dup.any():
        pairs = m.loc[dup, ["variable", "category"]].drop_duplicates().values.tolist()
        raise ValueError(f"{source}: duplicated variable/category pair(s) {pairs[:MAX_ROWS_IN_MESSAGE]}; "
                         "expected one target per category")
    totals = m.groupby("variable", sort=False)["target"].sum()
    zero = totals.index[totals <= 0].tolist()
    if zero:
        raise ValueError(f"{source}: targets of variable(s) {zero} sum to 0; expected positive totals")
    is_share = np.isclose(totals.to_numpy(), 1.0, rtol=rtol, atol=0.0)
    if not is_share.all():
        ref = float(totals.max())
        off = totals[~np.isclose(totals.to_numpy(), ref, rtol=rtol, atol=0.0)]
        if len(off):
            listing = ", ".join(f"{v}={t:g}" for v, t in totals.items())
            raise ValueError(
                f"{source}: targets do not sum consistently ({listing}); expected either shares "
                f"(each variable sums to 1) or counts with the same population total in every variable "
                f"(within relative tolerance {rtol:g})")
    return m


def margins_total(margins: pd.DataFrame) -> float | None:
    """The population total of count targets, or ``None`` when the targets are shares."""
    totals = margins.groupby("variable")["target"].sum()
    if np.allclose(totals.to_numpy(), 1.0, rtol=1e-3, atol=0.0):
        return None
    return float(totals.mean())


def household_size_band(size: pd.Series) -> pd.Series:
    """Map household sizes (persons) to the margin bands ``1, 2, 3, 4, 5+``.

    Values that are not numbers (e.g. bands such as ``"5+"``) are kept as they are, so that raking
    either accepts them or names them as not covered; missing values stay missing.
    """
    text = size.astype("string")
    num = pd.to_numeric(text, errors="coerce")
    banded = num.clip(upper=5).astype("Int64").astype("string").replace("5", "5+")
    return banded.where(num.notna(), text)


def raking_frame(df: pd.DataFrame, variables: list[str] | None = None) -> pd.DataFrame:
    """The panel's raking variables as strings, with ``household_size`` banded like the margins.

    Parameters
    ----------
    df : pandas.DataFrame
        The panel (e.g. the unified table, possibly with fused columns).
    variables : list of str, optional
        Margin variables; interactions ``a:b`` are built from their components. Default: every
        column of ``df``.

    Returns
    -------
    pandas.DataFrame
        One string column per variable, same index as ``df``.
    """
    variables = list(df.columns) if variables is None else list(variables)
    out = {}
    for var in variables:
        parts = var.split(INTERACTION_SEP)
        missing = [p for p in parts if p not in df.columns]
        if missing:
            raise ValueError(f"margin variable {var!r} needs panel column(s) {missing}, which are absent; "
                             f"panel columns are {list(df.columns)[:30]}")
        cols = []
        for p in parts:
            col = household_size_band(df[p]) if p == "household_size" else df[p].astype("string")
            cols.append(col)
        combined = cols[0]
        for c in cols[1:]:
            combined = combined + INTERACTION_SEP + c
        out[var] = combined
    return pd.DataFrame(out, index=df.index)


def _factorize(s: pd.Series, name: str) -> tuple[np.ndarray, list]:
    """Integer codes (-1 = missing) and string labels of one panel column, banding household size."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes, uniques = s.cat.codes.to_numpy(), pd.Series(s.cat.categories)
    else:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        uniques = pd.Series(uniques)
    labels = household_size_band(uniques) if name == "household_size" else uniques.astype("string")
    return np.asarray(codes, dtype=np.int64), labels.tolist()


def _variable_codes(panel: pd.DataFrame, var: str) -> tuple[np.ndarray, list]:
    """Codes (-1 = missing) of a raking variable, interactions ``a:b`` included, and their labels."""
    parts = var.split(INTERACTION_SEP)
    missing = [p for p in parts if p not in panel.columns]
    if missing:
        raise ValueError(f"margin variable {var!r} needs panel column(s) {missing}, which are absent; "
                         f"panel columns are {list(panel.columns)[:30]}")
    codes, labels = _factorize(panel[parts[0]], parts[0])
    for p in parts[1:]:
        c2, l2 = _factorize(panel[p], p)
        codes = np.where((codes < 0) | (c2 < 0), -1, codes * len(l2) + c2)
        labels = [f"{a}{INTERACTION_SEP}{b}" for a in labels for b in l2]
    return codes, labels


def _encode(panel: pd.DataFrame, margins: pd.DataFrame, id_col: str | None
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[list[str]]]:
    """Integer codes of each raking variable and target shares; raises on coverage problems."""
    variables = list(dict.fromkeys(margins["variable"]))
    ids = panel[id_col] if id_col is not None and id_col in panel.columns else pd.Series(panel.index)
    codes, targets, cats_all = [], [], []
    for var in variables:
        m = margins[margins["variable"] == var]
        cats = m["category"].tolist()
        raw, labels = _variable_codes(panel, var)
        na = raw < 0
        if na.any():
            rows = ids.to_numpy()[na][:MAX_ROWS_IN_MESSAGE].tolist()
            raise ValueError(
                f"raking variable {var!r} is missing for {int(na.sum())} row(s) (e.g. {rows}); impute it "
                "first (helpers.fusion) or rake only the rows where it is observed")
        position = {c: i for i, c in enumerate(cats)}
        lut = np.array([position.get(str(lab), -1) if not pd.isna(lab) else -1 for lab in labels],
                       dtype=np.int64)
        code = lut[raw] if lut.size else raw
        uncovered = code < 0
        if uncovered.any():
            values = sorted({str(labels[i]) for i in np.unique(raw[uncovered])})
            rows = ids.to_numpy()[uncovered][:MAX_ROWS_IN_MESSAGE].tolist()
            raise ValueError(
                f"margins do not cover categor(ies) {values[:MAX_ROWS_IN_MESSAGE]} of {var!r} "
                f"({int(uncovered.sum())} row(s), e.g. {rows}); expected one of {cats}: add a target "
                "for them or recode the panel")
        share = m["target"].to_numpy(dtype=float)
        share = share / share.sum()
        counts = np.bincount(code, minlength=len(cats))
        empty = [c for c, n, t in zip(cats, counts, share) if n == 0 and t > 0]
        if empty:
            raise ValueError(
                f"categor(ies) {empty} of {var!r} have a positive target but no respondents in the panel; "
                "collapse them with a neighbouring category in both the margins and the panel")
        codes.append(code)
        targets.append(share)
        cats_all.append(cats)
    return codes, targets, variables, cats_all


# --- diagnostics -------------------------------------------------------------------------------------
def kish_design_effect(weights: np.ndarray | pd.Series) -> float:
    """Kish's design effect of unequal weighting, ``n * sum(w^2) / sum(w)^2 = 1 + CV(w)^2``.

    Parameters
    ----------
    weights : array-like
        Non-negative weights, at least one positive.

    Returns
    -------
    float
        1 for equal weights; the factor by which variances of weighted means grow.
    """
    w = _check_weights(weights)
    return float(len(w) * np.sum(w**2) / np.sum(w) ** 2)


def effective_sample_size(weights: np.ndarray | pd.Series) -> float:
    """Kish's effective sample size ``sum(w)^2 / sum(w^2) = n / deff``."""
    w = _check_weights(weights)
    return float(np.sum(w) ** 2 / np.sum(w**2))


def _check_weights(weights: np.ndarray | pd.Series) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-d array, got shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(f"weights must be finite and >= 0; rows {bad[:MAX_ROWS_IN_MESSAGE].tolist()} are not")
    if w.sum() <= 0:
        raise ValueError("weights sum to 0; expected at least one positive weight")
    return w


def weight_summary(weights: np.ndarray | pd.Series) -> dict[str, float]:
    """Min, max, mean, CV, max/min ratio, Kish design effect and effective n of a weight vector."""
    w = _check_weights(weights)
    return {
        "n": int(w.size), "min": float(w.min()), "max": float(w.max()), "mean": float(w.mean()),
        "cv": float(w.std() / w.mean()), "max_min_ratio": float(w.max() / w.min()) if w.min() > 0 else np.inf,
        "design_effect": kish_design_effect(w), "effective_n": effective_sample_size(w),
    }


def margin_table(panel: pd.DataFrame, margins: pd.DataFrame,
                 weights: np.ndarray | pd.Series | None = None) -> pd.DataFrame:
    """Before/after table of panel versus target shares for every margin category.

    Parameters
    ----------
    panel : pandas.DataFrame
        The panel holding the raking variables.
    margins : pandas.DataFrame
        Validated margins (:func:`validate_margins`).
    weights : array-like, optional
        Weights aligned with ``panel`` rows; ``None`` gives only the unweighted columns.

    Returns
    -------
    pandas.DataFrame
        ``variable, category, n_respondents, target_share, unweighted_share, unweighted_error`` and,
        with weights, ``weighted_share, weighted_error`` (errors are share minus target, in share units).
    """
    margins = validate_margins(margins)
    w = None if weights is None else _check_weights(weights)
    rows = []
    for var, m in margins.groupby("variable", sort=False):
        target = m["target"].to_numpy() / m["target"].sum()
        # each row's category as a code into the variable's labels (the labels raking_frame would write per row:
        # 10M rows of text per variable were GBs of Python strings)
        codes, labels = _variable_codes(panel, var)
        labels = np.array([None if pd.isna(lab) else str(lab) for lab in labels] + [None], dtype=object)
        for cat, t in zip(m["category"], target):
            hit = (labels == cat)[codes]  # code -1 (missing) picks the trailing None
            row = {"variable": var, "category": cat, "n_respondents": int(hit.sum()), "target_share": t,
                   "unweighted_share": float(hit.mean())}
            row["unweighted_error"] = row["unweighted_share"] - t
            if w is not None:
                row["weighted_share"] = float(w[hit].sum() / w.sum())
                row["weighted_error"] = row["weighted_share"] - t
            rows.append(row)
    return pd.DataFrame(rows)


# --- raking -------------------------------------------------------------------------------------------
@dataclass
class RakingResult:
    """Output of :func:`rake`.

    Attributes
    ----------
    weights : pandas.Series
        Final weights, indexed like the panel (named ``weight``). They sum to the population total when
        the targets are counts, otherwise to the number of rows (mean 1).
    converged : bool
        Whether the last raking run reached ``tol`` within ``max_iter`` sweeps.
    n_iter : int
        Total IPF sweeps over all raking runs (first run plus re-rakes after trimming).
    max_margin_error : float
        Largest absolute difference between a weighted and a target share, after the last sweep.
    history : pandas.DataFrame
        One row per sweep: ``run`` (0 = first raking, k = k-th re-rake after trimming), ``iteration``,
        ``max_margin_error``, ``max_weight_ratio`` (max weight / mean weight).
    trim_rounds : int
        Number of trimming + re-raking rounds performed.
    cap_satisfied : bool
        Whether the final weights respect the cap (``True`` when no cap was asked).
    variables : list of str
        Raking variables in the order they were fitted.
    n_cells : int or None
        Distinct cells raked (``collapse=True``), None when rows were raked one by one.
    """

    weights: pd.Series
    converged: bool
    n_iter: int
    max_margin_error: float
    history: pd.DataFrame
    trim_rounds: int = 0
    cap_satisfied: bool = True
    variables: list[str] = field(default_factory=list)
    n_cells: int | None = None

    @property
    def design_effect(self) -> float:
        """Kish design effect of the final weights."""
        return kish_design_effect(self.weights)

    @property
    def effective_n(self) -> float:
        """Kish effective sample size of the final weights."""
        return effective_sample_size(self.weights)


def _ipf(codes: list[np.ndarray], targets: list[np.ndarray], w: np.ndarray, max_iter: int,
         tol: float) -> tuple[np.ndarray, list[float], bool]:
    """Plain IPF on shares; ``w`` is modified in place. Returns weights, error per sweep, converged.

    ``w`` holds the total weight of each unit (a row, or a collapsed cell of rows with the same codes).
    """
    errors: list[float] = []
    for _ in range(max_iter):
        for code, target in zip(codes, targets):
            current = np.bincount(code, weights=w, minlength=target.size)
            current = current / current.sum()
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(current > 0, target / current, 0.0)
            w *= factor[code]
        err = _max_error(codes, targets, w)
        errors.append(err)
        if err < tol:
            return w, errors, True
    return w, errors, False


def _max_error(codes: list[np.ndarray], targets: list[np.ndarray], w: np.ndarray) -> float:
    total = w.sum()
    return float(max(np.abs(np.bincount(c, weights=w, minlength=t.size) / total - t).max()
                     for c, t in zip(codes, targets)))


#: Largest dense key space (product of the variables' category counts, times distinct base weights) that
#: :func:`collapse_cells` counts with one ``bincount``; beyond it, cells are found by sorting.
DENSE_CELL_LIMIT = 20_000_000


def collapse_cells(codes: list[np.ndarray], sizes: list[int], base: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """Collapse rows to the distinct combinations of their raking codes (and base weights).

    Raking weights are ``d_i * prod_v f_v(x_iv)``: rows with the same codes and the same base weight get
    the same weight, so raking the table of distinct cells (with their row counts) and mapping the cell
    weights back is the same computation on a few thousand units instead of millions of rows.

    Returns
    -------
    inverse : cell of every row (``len(rows)`` int64).
    cell_codes : per variable, the code of every cell.
    counts : rows per cell.
    cell_base : base weight of every cell (1 without ``base``).
    """
    n = codes[0].size
    if base is not None and np.ptp(base) > 0:
        bcode, bvalues = pd.factorize(base, sort=False)
        codes, sizes = [*codes, bcode.astype(np.int64)], [*sizes, len(bvalues)]
    else:
        bvalues = None
    space = int(np.prod([max(k, 1) for k in sizes], dtype=object))
    key = np.zeros(n, dtype=np.int64)
    for c, k in zip(codes, sizes):
        key *= k
        key += c
    if space <= DENSE_CELL_LIMIT:
        dense = np.bincount(key, minlength=space)
        present = np.flatnonzero(dense)
        lut = np.full(space, -1, dtype=np.int64)
        lut[present] = np.arange(present.size)
        inverse, counts, cell_key = lut[key], dense[present], present
    else:
        cell_key, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    cell_codes, rest = [], cell_key.copy()
    for k in reversed(sizes):
        cell_codes.append(rest % k)
        rest //= k
    cell_codes.reverse()
    if bvalues is not None:
        cell_base = np.asarray(bvalues, dtype=float)[cell_codes.pop()]
    else:
        cell_base = np.full(counts.size, 1.0 if base is None else float(base[0]))
    return inverse.astype(np.int64), cell_codes, counts.astype(float), cell_base


def _rake_units(codes: list[np.ndarray], targets: list[np.ndarray], w: np.ndarray, counts: np.ndarray,
                n: int, max_iter: int, tol: float, cap: float | None, floor: float | None,
                max_trim_rounds: int) -> tuple[np.ndarray, list[dict], bool, int, bool]:
    """IPF + trimming on units (rows, ``counts`` = 1, or cells of ``counts`` rows each).

    ``w`` is the total weight of each unit; the weight of each of its rows is ``w / counts`` and the
    trimming bounds apply to that row weight relative to the mean row weight ``w.sum() / n``.
    """
    hist_rows: list[dict] = []
    w, errs, converged = _ipf(codes, targets, w, max_iter, tol)
    hist_rows += _history(0, errs, w / counts, w.sum() / n)
    rounds = 0
    cap_ok = _within_bounds(w / counts, cap, floor, mean=w.sum() / n)
    while not cap_ok and rounds < max_trim_rounds:
        rounds += 1
        mean = w.sum() / n
        lo = -np.inf if floor is None else floor * mean
        hi = np.inf if cap is None else cap * mean
        w = np.clip(w / counts, lo, hi) * counts
        w, errs, converged = _ipf(codes, targets, w, max_iter, tol)
        hist_rows += _history(rounds, errs, w / counts, w.sum() / n)
        cap_ok = _within_bounds(w / counts, cap, floor, mean=w.sum() / n)
    return w, hist_rows, converged, rounds, cap_ok


def rake(panel: pd.DataFrame, margins: pd.DataFrame, *, base_weights: np.ndarray | pd.Series | None = None,
         max_iter: int = 200, tol: float = 1e-8, cap: float | None = None, floor: float | None = None,
         max_trim_rounds: int = 20, id_col: str | None = "user_id", collapse: bool = True) -> RakingResult:
    """Rake a panel to population margins (IPF), optionally capping weights and re-raking.

    Parameters
    ----------
    panel : pandas.DataFrame
        One row per respondent, holding every margin variable (interactions ``a:b`` are built from
        their components, ``household_size`` is banded to ``1..4, 5+``). Raking variables must have
        no missing values.
    margins : pandas.DataFrame
        ``variable, category, target`` (shares or counts, see :func:`validate_margins`).
    base_weights : array-like, optional
        Design weights ``d_i`` to start from (default 1).
    max_iter : int
        Maximum IPF sweeps (one sweep adjusts every variable once) per raking run.
    tol : float
        Convergence criterion: largest absolute share error over all margin categories.
    cap : float, optional
        Upper bound on weights as a multiple of the mean weight (e.g. 5). After raking, weights above
        the bound are set to it and the panel is re-raked; this repeats until the raked weights respect
        the bound (within 0.1 %) or ``max_trim_rounds`` is reached. Margins are exact after every round;
        the cap may be slightly exceeded if it is infeasible, which is reported as ``cap_satisfied``.
    floor : float, optional
        Lower bound on weights as a multiple of the mean weight (e.g. 0.3), handled like ``cap``.
    max_trim_rounds : int
        Maximum number of trim + re-rake rounds.
    id_col : str or None
        Column used to name rows in error messages (falls back to the index).
    collapse : bool
        Rake the table of distinct cells (combinations of the raking codes and base weights, with their
        row counts) and map the cell weights back to the rows (default): the same weights as raking the
        rows (to rounding, 1e-12), at the cost of one pass over the rows instead of one per variable and
        sweep. ``False`` rakes row by row (the reference implementation).

    Returns
    -------
    RakingResult
        Weights and convergence diagnostics.

    Raises
    ------
    ValueError
        Margins not covering a panel category, a category with a target but no respondents, missing
        values in a raking variable, inconsistent targets, or invalid parameters.

    Notes
    -----
    Raking assumes the selection into the panel depends only on the raking variables (or on variables
    whose association with the outcome they fully carry): then the raked estimates are unbiased up to
    O(1/n). It matches one-way margins only; supply an interaction variable when a joint table matters.
    """
    if len(panel) == 0:
        raise ValueError("panel has no rows; expected at least one respondent to rake")
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"max_iter must be >= 1 and tol > 0, got max_iter={max_iter}, tol={tol}")
    if cap is not None and cap <= 1:
        raise ValueError(f"cap is a multiple of the mean weight and must be > 1, got {cap}")
    if floor is not None and not 0 < floor < 1:
        raise ValueError(f"floor is a multiple of the mean weight and must be in (0, 1), got {floor}")
    margins = validate_margins(margins)
    codes, targets, variables, _ = _encode(panel, margins, id_col)
    n = len(panel)
    d = np.ones(n) if base_weights is None else _check_weights(base_weights).copy()
    if d.size != n:
        raise ValueError(f"base_weights has {d.size} values but the panel has {n} rows")
    d = d / d.mean()
    if collapse:
        inverse, unit_codes, counts, cell_base = collapse_cells(codes, [t.size for t in targets],
                                                                None if base_weights is None else d)
        w = counts * cell_base
    else:
        unit_codes, counts, w = codes, np.ones(n), d.copy()
    w, hist_rows, converged, rounds, cap_ok = _rake_units(unit_codes, targets, w, counts, n, max_iter, tol,
                                                          cap, floor, max_trim_rounds)
    if not converged:
        warnings.warn(f"raking did not converge in {max_iter} sweeps (max share error "
                      f"{hist_rows[-1]['max_margin_error']:.2e} > tol {tol:g}); the margins may be "
                      "incompatible (e.g. empty cells of an interaction) or need more iterations",
                      RuntimeWarning, stacklevel=2)
    if not cap_ok:
        ratio = float((w / counts).max() / (w.sum() / n))
        warnings.warn(f"weights still exceed the trimming bounds after {rounds} rounds (max/mean = "
                      f"{ratio:.2f}); the cap is infeasible with these margins: raise it",
                      RuntimeWarning, stacklevel=2)
    per_row = (w / counts)[inverse] if collapse else w
    total = margins_total(margins)
    per_row = per_row / per_row.sum() * (total if total is not None else n)
    history = pd.DataFrame(hist_rows)
    return RakingResult(
        weights=pd.Series(per_row, index=panel.index, name="weight"), converged=converged,
        n_iter=len(history), max_margin_error=_max_error(unit_codes, targets, w), history=history,
        trim_rounds=rounds, cap_satisfied=cap_ok, variables=variables,
        n_cells=int(counts.size) if collapse else None,
    )


def _history(run: int, errors: list[float], row_w: np.ndarray, mean: float) -> list[dict]:
    ratio = float(row_w.max() / mean)
    return [{"run": run, "iteration": i + 1, "max_margin_error": e, "max_weight_ratio": ratio}
            for i, e in enumerate(errors)]


def _within_bounds(w: np.ndarray, cap: float | None, floor: float | None, slack: float = 1e-3,
                   mean: float | None = None) -> bool:
    mean = w.mean() if mean is None else mean
    ok = True
    if cap is not None:
        ok &= bool(w.max() <= cap * mean * (1 + slack))
    if floor is not None:
        ok &= bool(w.min() >= floor * mean * (1 - slack))
    return ok


def poststratify(panel: pd.DataFrame, margins: pd.DataFrame, variable: str,
                 id_col: str | None = "user_id") -> pd.Series:
    """Closed-form post-stratification weights on one variable: ``w_i = n * target_c / n_c``.

    This is what raking on a single margin (or on a saturated interaction) converges to, and serves as
    an independent reference for :func:`rake`.
    """
    m = validate_margins(margins)
    m = m[m["variable"] == variable]
    if m.empty:
        raise ValueError(f"variable {variable!r} is not in the margins; expected one of "
                         f"{sorted(set(margins['variable']))}")
    codes, targets, _, _ = _encode(panel, m, id_col)
    counts = np.bincount(codes[0], minlength=targets[0].size)
    w = len(panel) * targets[0][codes[0]] / counts[codes[0]]
    total = margins_total(m)
    if total is not None:
        w = w / w.sum() * total
    return pd.Series(w, index=panel.index, name="weight")


def weighted_shares(values: pd.Series, weights: np.ndarray | pd.Series | None = None,
                    categories: list | None = None) -> pd.Series:
    """Weighted share of each category of ``values`` (unweighted when ``weights`` is None)."""
    w = np.ones(len(values)) if weights is None else _check_weights(weights)
    s = pd.Series(w, index=values.index).groupby(values.to_numpy()).sum()
    if categories is not None:
        s = s.reindex(categories, fill_value=0.0)
    return s / s.sum()


# --- real population margins ----------------------------------------------------------------------------
def census_age_sex_margins(path: str | Path, year: int = 2019,
                           age_bins: list[int] | None = None,
                           age_labels: list[str] | None = None) -> pd.DataFrame:
    """Age-group x sex population counts of the US (civilian) from a Census ``sc-est*-agesex-civ`` file.

    Parameters
    ----------
    path : str or Path
        The Census Bureau file (columns ``SUMLEV, SEX, AGE, POPEST<year>_CIV``; AGE 85 = 85+).
    year : int
        Estimate year (column ``POPEST<year>_CIV``).
    age_bins : list of int, optional
        Left edges of the age groups (default 18, 25, 35, 45, 55, 65 -> the schema's age groups);
        ages below the first edge are dropped.
    age_labels : list of str, optional
        Labels of the groups (default ``helpers.schema.AGE_GROUPS``).

    Returns
    -------
    pandas.DataFrame
        Margins (``variable, category, target``) in counts of people, with variables ``age_group``,
        ``sex`` and the interaction ``age_group:sex`` (sex is ``Male``/``Female``).
    """
    from . import schema as S

    age_bins = [18, 25, 35, 45, 55, 65] if age_bins is None else list(age_bins)
    age_labels = list(S.AGE_GROUPS) if age_labels is None else list(age_labels)
    if len(age_bins) != len(age_labels):
        raise ValueError(f"age_bins ({len(age_bins)}) and age_labels ({len(age_labels)}) differ in length")
    col = f"POPEST{year}_CIV"
    raw = pd.read_csv(path)
    need = ["SUMLEV", "SEX", "AGE", col]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected a Census sc-est agesex-civ file "
                         f"with an estimate for {year}")
    nat = raw[(raw["SUMLEV"] == 10) & raw["SEX"].isin([1, 2]) & (raw["AGE"] != 999)
              & (raw["AGE"] >= age_bins[0])].copy()
    nat["age_group"] = pd.cut(nat["AGE"], bins=[*age_bins, np.inf], right=False, labels=age_labels)
    nat["sex"] = nat["SEX"].map({1: "Male", 2: "Female"})
    joint = nat.groupby(["age_group", "sex"], observed=True)[col].sum().reset_index()
    rows = []
    for var, keys in [("age_group", ["age_group"]), ("sex", ["sex"]), ("age_group:sex", ["age_group", "sex"])]:
        g = joint.groupby(keys, observed=True, sort=False)[col].sum()
        for k, v in g.items():
            cat = INTERACTION_SEP.join(map(str, k)) if isinstance(k, tuple) else str(k)
            rows.append({"variable": var, "category": cat, "target": float(v)})
    return validate_margins(pd.DataFrame(rows), source=str(path))
