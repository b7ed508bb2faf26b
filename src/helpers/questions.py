"""Audience questions over the embedded DuckDB warehouse: filter + breakdown + metric, weighted, with CIs.

A question is "among the users who match ``where`` (the *audience*), how are they distributed over
``breakdown`` (or what is their mean ``metric`` per level), compared with the *base*?". Examples:

* income distribution of users in segment X with above-average podcast time:
  ``ask(breakdown="income_bracket", where=[("segment_name", "==", X),
  ("time_on_podcasts_min", "above_mean")])``;
* which event genres over-index among parents in market for a car:
  ``ask(breakdown="event_attendance_genres", where=[("presence_of_children", "==", True),
  ("offline_purchase_intent", "contains", "auto")])``.

The warehouse is opened read-only; the table ``audience`` (22 columns, written by ingestion) is joined in
SQL with ``weights.parquet`` (``weight``, 1.0 when absent) and ``segments.parquet`` (``segment``,
``segment_name``) through ``read_parquet``. Filters are built from validated column names and bound
parameters (no SQL text is accepted from the caller). Only weighted totals leave DuckDB, so questions
scale to the full panel. A user whose filter column is missing (e.g. not matched by the partner) is not
in the audience but stays in the base. Intervals use the same Taylor linearisation as :mod:`helpers.affinity`
(weights fixed, units independent). Rows where the breakdown (or metric) is missing are left out of
audience and base alike: shares are among users for whom the attribute is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from . import schema as S
from .affinity import fdr_qvalues
from .artifacts import SEGMENTS, WEIGHTS
from .paths import Paths

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "above_mean", "below_mean",
       "is_null", "not_null")
_NO_VALUE = ("above_mean", "below_mean", "is_null", "not_null")


@dataclass(frozen=True)
class Condition:
    """One filter condition ``column op value``.

    ``op`` is one of :data:`OPS`: comparisons; ``in`` / ``not in`` a list; ``contains`` a token of a
    multi-valued column; ``above_mean`` / ``below_mean`` the base's weighted mean of a numeric column;
    ``is_null`` / ``not_null``.
    """

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"condition on {self.column!r}: operator {self.op!r} is not one of {OPS}")
        if self.op not in _NO_VALUE and self.value is None:
            raise ValueError(f"condition on {self.column!r}: operator {self.op!r} needs a value")
        if self.op in ("in", "not in") and (isinstance(self.value, str)
                                             or not isinstance(self.value, Sequence)):
            raise ValueError(f"condition on {self.column!r}: {self.op!r} needs a list of values, "
                             f"got {self.value!r}")


def _conditions(where: Sequence[Condition | tuple] | None) -> list[Condition]:
    out = []
    for c in where or []:
        out.append(c if isinstance(c, Condition) else Condition(*c))
    return out


@dataclass
class QuestionResult:
    """Answer to one audience question.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per breakdown level. For ``metric="share"``: ``level, n_unweighted, n_weighted,
        n_effective, share, ci_low, ci_high, base_share, index, index_ci_low, index_ci_high, p_value,
        q_value`` (shares in %, index = audience share / base share x 100, test of the audience against
        the rest of the base, Benjamini-Hochberg q-values over the levels). For a numeric metric:
        ``level, n_unweighted, n_weighted, n_effective, mean, ci_low, ci_high, base_mean, index``.
    question : str
        The question in words.
    n_audience, n_base : int
        Unweighted sizes of the audience and of the base (with the breakdown observed).
    sql : str
        The SQL that produced the weighted totals (parameters bound separately).
    """

    table: pd.DataFrame
    question: str
    n_audience: int
    n_base: int
    sql: str = field(repr=False, default="")


class AudienceWarehouse:
    """Read-only access to the warehouse ``audience`` table joined with weights and segments.

    Parameters
    ----------
    db_path : path
        The DuckDB file written by ingestion (``Paths.duckdb``).
    weights_path, segments_path : path, optional
        ``weights.parquet`` and ``segments.parquet``; ignored when None or absent (weight 1.0, no
        segment columns).

    Examples
    --------
    >>> with AudienceWarehouse.from_paths(P) as wh:                       # doctest: +SKIP
    ...     wh.ask("income_bracket", where=[("time_on_podcasts_min", "above_mean")]).table
    """

    def __init__(self, db_path: str | Path, weights_path: str | Path | None = None,
                 segments_path: str | Path | None = None) -> None:
        db_path = Path(db_path)
        if not db_path.exists():
            raise FileNotFoundError(f"{db_path} does not exist: it is written by notebook 01_ingest "
                                    "(run `make reports` or execute 01_ingest first).")
        self.con = duckdb.connect(str(db_path), read_only=True)
        self.con.execute("SET enable_progress_bar = false")
        tables = {r[0] for r in self.con.execute("SHOW TABLES").fetchall()}
        if "audience" not in tables:
            raise ValueError(f"{db_path} has no table 'audience' (tables: {sorted(tables)}); "
                             "re-run ingestion to create it.")
        self.weights_path = Path(weights_path) if weights_path and Path(weights_path).exists() else None
        self.segments_path = Path(segments_path) if segments_path and Path(segments_path).exists() else None
        self._params: list = []
        sel, joins = ["a.*"], []
        if self.weights_path is not None:
            sel.append("COALESCE(w.weight, 1.0) AS weight")
            joins.append(f"LEFT JOIN read_parquet({self._bind(str(self.weights_path))}) w USING (user_id)")
        else:
            sel.append("1.0 AS weight")
        if self.segments_path is not None:
            sel.append("s.segment, s.segment_name")
            joins.append(f"LEFT JOIN read_parquet({self._bind(str(self.segments_path))}) s USING (user_id)")
        self._panel_sql = f"SELECT {', '.join(sel)} FROM audience a {' '.join(joins)}"
        self._panel_params = list(self._params)
        cols = self.con.execute(f"DESCRIBE {self._panel_sql}", self._panel_params).fetchall()
        self.columns: dict[str, str] = {r[0]: r[1] for r in cols}

    @classmethod
    def from_paths(cls, paths: Paths) -> "AudienceWarehouse":
        """The warehouse of a pipeline run, with its weights and segments if they exist."""
        return cls(paths.duckdb, paths.processed / WEIGHTS, paths.processed / SEGMENTS)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> "AudienceWarehouse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- SQL building --
    def _bind(self, value: Any) -> str:
        self._params.append(value)
        return f"${len(self._params)}"

    def _col(self, name: str) -> str:
        if name not in self.columns:
            raise ValueError(f"column {name!r} is not in the warehouse (available: {sorted(self.columns)})")
        return f'"{name}"'

    def _is_numeric(self, name: str) -> bool:
        t = self.columns[name].upper()
        return any(k in t for k in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL"))

    def _condition_sql(self, c: Condition, base_sql: str) -> str:
        col = self._col(c.column)
        if c.op in ("above_mean", "below_mean"):
            if not self._is_numeric(c.column):
                raise ValueError(f"condition {c.op!r} needs a numeric column, {c.column!r} is "
                                 f"{self.columns[c.column]}")
            mean = (f"(SELECT sum(weight * {col}) / sum(weight) FROM ({base_sql}) "
                    f"WHERE {col} IS NOT NULL)")
            return f"{col} {'>' if c.op == 'above_mean' else '<'} {mean}"
        if c.op == "is_null":
            return f"{col} IS NULL"
        if c.op == "not_null":
            return f"{col} IS NOT NULL"
        if c.op == "contains":
            if S.BY_NAME.get(c.column) is None or S.BY_NAME[c.column].kind != "multi":
                raise ValueError(f"'contains' needs a multi-valued column ({S.MULTI_VALUED}), "
                                 f"got {c.column!r}")
            return f"list_contains(string_split({col}, '{S.MULTI_SEP}'), {self._bind(str(c.value))})"
        if c.op in ("in", "not in"):
            items = ", ".join(self._bind(v) for v in c.value)
            return f"{col} {'IN' if c.op == 'in' else 'NOT IN'} ({items})"
        return f"{col} {'=' if c.op == '==' else c.op} {self._bind(c.value)}"

    def _where_sql(self, conds: list[Condition], base_sql: str) -> str:
        return " AND ".join(f"({self._condition_sql(c, base_sql)})" for c in conds) or "TRUE"

    # -- the question --
    def ask(self, breakdown: str, where: Sequence[Condition | tuple] | None = None,
            metric: str = "share", base_where: Sequence[Condition | tuple] | None = None,
            confidence: float = 0.95) -> QuestionResult:
        """Answer "among users matching ``where``, what is the ``metric`` by ``breakdown``?".

        Parameters
        ----------
        breakdown : str
            Column whose levels form the rows: categorical, ordinal, boolean, integer or multi-valued
            (each token is a level; a user can be in several).
        where : sequence of Condition or (column, op[, value]) tuples
            Conditions defining the audience (AND-ed). ``above_mean`` compares with the base's
            weighted mean.
        metric : str
            ``"share"`` (weighted % of the audience at each level, with the index against the base) or
            a numeric column (weighted mean per level).
        base_where : sequence of conditions, optional
            Conditions defining the base (default: the whole panel). The audience is always a subset
            of the base.
        confidence : float
            Level of the intervals.
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self._params = list(self._panel_params)
        bcol = self._col(breakdown)
        base_conds, aud_conds = _conditions(base_where), _conditions(where)
        base_sql = f"SELECT * FROM ({self._panel_sql}) WHERE {self._where_sql(base_conds, self._panel_sql)}"
        aud = self._where_sql(aud_conds, base_sql)
        spec = S.BY_NAME.get(breakdown)
        level = (f"UNNEST(string_split(b, '{S.MULTI_SEP}'))" if spec is not None and spec.kind == "multi"
                 else "CAST(b AS VARCHAR)")
        if metric == "share":
            ycol, yexpr = None, "1.0"
        else:
            ycol = self._col(metric)
            if not self._is_numeric(metric):
                raise ValueError(f"metric must be 'share' or a numeric column, {metric!r} is "
                                 f"{self.columns[metric]}")
            yexpr = f"CAST({ycol} AS DOUBLE)"
        keep = f"{bcol} IS NOT NULL" + (f" AND {ycol} IS NOT NULL" if ycol else "")
        sql = f"""
            WITH base AS (SELECT weight, {bcol} AS b, {yexpr} AS y, COALESCE(({aud}), FALSE) AS aud
                          FROM ({base_sql}) WHERE {keep}),
                 levels AS (SELECT {level} AS level, aud, weight, y FROM base)
            SELECT level, aud, count(*) AS n, sum(weight) AS t, sum(weight * weight) AS t2,
                   sum(weight * y) AS ty, sum(weight * weight * y) AS t2y, sum(weight * weight * y * y) AS t2yy
            FROM levels GROUP BY level, aud ORDER BY level, aud"""
        cells = self.con.execute(sql, self._params).df()
        persons = self.con.execute(
            f"WITH base AS (SELECT weight, COALESCE(({aud}), FALSE) AS aud FROM ({base_sql}) WHERE {keep}) "
            "SELECT aud, count(*) AS n, sum(weight) AS t, sum(weight * weight) AS t2 FROM base GROUP BY aud",
            self._params).df().set_index("aud")
        n_aud = int(persons["n"].get(True, 0))
        if n_aud == 0:
            raise ValueError(f"the audience is empty: no user with {breakdown!r} observed matches {aud_conds}")
        text = self._describe(breakdown, metric, aud_conds, base_conds)
        order = self._level_order(breakdown, cells["level"].unique())
        zq = stats.norm.ppf(0.5 + confidence / 2)
        table = (_share_table(cells, persons, zq) if metric == "share" else _mean_table(cells, zq))
        table["level"] = pd.Categorical(table["level"], categories=order, ordered=True)
        table = table.sort_values("level").reset_index(drop=True)
        table["level"] = table["level"].astype(str)
        return QuestionResult(table, text, n_aud, int(persons["n"].sum()), sql)

    def _level_order(self, column: str, levels: np.ndarray) -> list[str]:
        spec = S.BY_NAME.get(column)
        cats = list(spec.categories) if spec is not None and spec.categories else []
        rest = sorted(set(levels) - set(cats), key=lambda v: (len(v), v))
        return [c for c in cats if c in set(levels)] + rest

    @staticmethod
    def _describe(breakdown: str, metric: str, aud: list[Condition], base: list[Condition]) -> str:
        fmt = lambda cs: " and ".join(f"{c.column} {c.op}" + ("" if c.op in _NO_VALUE else f" {c.value!r}")
                                      for c in cs)  # noqa: E731
        what = f"distribution over {breakdown}" if metric == "share" else f"mean {metric} by {breakdown}"
        return (f"{what} among users with {fmt(aud) or 'no filter'}"
                f" (base: {fmt(base) or 'whole panel'})")


def _share_table(cells: pd.DataFrame, persons: pd.DataFrame, zq: float) -> pd.DataFrame:
    """Weighted shares per level in the audience, index vs base and test vs the rest of the base."""
    wide = cells.pivot(index="level", columns="aud", values=["n", "t", "t2"]).fillna(0.0)
    get = lambda col, a: (wide[(col, a)] if (col, a) in wide.columns  # noqa: E731
                          else pd.Series(0.0, index=wide.index)).to_numpy(dtype=float)
    n1, t11, w11 = get("n", True), get("t", True), get("t2", True)
    t01, w01 = get("t", False), get("t2", False)
    pa_ = persons.reindex([True, False]).fillna(0.0)
    na, ta, wa = (float(pa_.at[True, c]) for c in ("n", "t", "t2"))
    nr, tr, wr = (float(pa_.at[False, c]) for c in ("n", "t", "t2"))
    n, tn = na + nr, ta + tr
    tl = t11 + t01
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_r = t11 / ta, t01 / tr
        var_a = na / max(na - 1, 1) * (w11 * (1 - p_a) ** 2 + (wa - w11) * p_a**2) / ta**2
        var_r = nr / max(nr - 1, 1) * (w01 * (1 - p_r) ** 2 + (wr - w01) * p_r**2) / tr**2
        se_logit = np.sqrt(var_a) / (p_a * (1 - p_a))
        lo = np.where((p_a > 0) & (p_a < 1), 1 / (1 + np.exp(-(np.log(p_a / (1 - p_a)) - zq * se_logit))), p_a)
        hi = np.where((p_a > 0) & (p_a < 1), 1 / (1 + np.exp(-(np.log(p_a / (1 - p_a)) + zq * se_logit))), p_a)
        index = 100 * p_a / (tl / tn)
        c11 = 1 / t11 - 1 / ta - 1 / tl + 1 / tn
        c10, c01, c00 = -1 / ta + 1 / tn, -1 / tl + 1 / tn, 1 / tn
        w10, w00 = wa - w11, wr - w01
        var_log = n / max(n - 1, 1) * (c11**2 * w11 + c10**2 * w10 + c01**2 * w01 + c00**2 * w00)
        se_log = np.sqrt(var_log)
        z = (p_a - p_r) / np.sqrt(var_a + var_r)
        p = np.where(np.isfinite(z), 2 * stats.norm.sf(np.abs(z)), np.nan)
    return pd.DataFrame({
        "level": wide.index.astype(str), "n_unweighted": n1.astype(int), "n_weighted": t11,
        "n_effective": np.where(w11 > 0, t11**2 / np.where(w11 > 0, w11, 1), 0.0),
        "share": 100 * p_a, "ci_low": 100 * lo, "ci_high": 100 * hi, "base_share": 100 * tl / tn,
        "index": index, "index_ci_low": np.where(t11 > 0, index * np.exp(-zq * se_log), np.nan),
        "index_ci_high": np.where(t11 > 0, index * np.exp(zq * se_log), np.nan),
        "p_value": p, "q_value": fdr_qvalues(p),
    })


def _mean_table(cells: pd.DataFrame, zq: float) -> pd.DataFrame:
    """Weighted means per level in the audience, with the base mean at the same level."""
    a = cells[cells["aud"]].set_index("level")
    allc = cells.groupby("level")[["t", "ty"]].sum()
    n, t, t2, ty, t2y, t2yy = (a[c].to_numpy(dtype=float) for c in ("n", "t", "t2", "ty", "t2y", "t2yy"))
    with np.errstate(divide="ignore", invalid="ignore"):
        m = ty / t
        var = n / np.maximum(n - 1, 1) * (t2yy - 2 * m * t2y + m**2 * t2) / t**2
        se = np.sqrt(np.maximum(var, 0))
        base = (allc["ty"] / allc["t"]).reindex(a.index).to_numpy()
    return pd.DataFrame({
        "level": a.index.astype(str), "n_unweighted": n.astype(int), "n_weighted": t,
        "n_effective": t**2 / t2, "mean": m, "ci_low": m - zq * se, "ci_high": m + zq * se,
        "base_mean": base, "index": 100 * m / base,
    })


def ask(paths: Paths, breakdown: str, where: Sequence[Condition | tuple] | None = None,
        metric: str = "share", base_where: Sequence[Condition | tuple] | None = None,
        confidence: float = 0.95) -> QuestionResult:
    """One-shot :meth:`AudienceWarehouse.ask` on a pipeline run's warehouse (opened and closed)."""
    with AudienceWarehouse.from_paths(paths) as wh:
        return wh.ask(breakdown, where=where, metric=metric, base_where=base_where, confidence=confidence)
