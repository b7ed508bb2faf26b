"""Audience questions on the warehouse, on DuckDB or Spark: filter + breakdown + metric, weighted, with CIs.

A question is "among the users who match ``where`` (the *audience*), how are they distributed over
``breakdown`` (or what is their mean ``metric`` per level), compared with the *base*?". Examples:

* income distribution of users in segment X with above-average podcast time:
  ``ask(breakdown="income_bracket", where=[("segment_name", "==", X),
  ("time_on_podcasts_min", "above_mean")])``;
* which event genres over-index among parents in market for a car:
  ``ask(breakdown="event_attendance_genres", where=[("presence_of_children", "==", True),
  ("offline_purchase_intent", "contains", "auto")])``.

Questions are Ibis expressions, written once and run by the engine holding the data: by default the embedded
DuckDB warehouse (opened read-only; the table ``audience`` of 22 columns written by ingestion), or any Ibis
backend reading the processed Parquet files (:meth:`AudienceWarehouse.from_parquet`, e.g. Spark through
:func:`helpers.engine.connect`). The panel is ``audience`` left-joined with ``weights.parquet`` (``weight``,
1.0 when absent) and ``segments.parquet`` (``segment``, ``segment_name``). Filters are built from validated
column names and values as Ibis literals (no SQL text is accepted from the caller). Only weighted totals
leave the engine, so questions scale to the full panel. A user whose filter column is missing (e.g. not
matched by the partner) is not in the audience but stays in the base. Intervals use the same Taylor
linearisation as :mod:`helpers.affinity`, computed by :mod:`helpers.stats.core` (weights fixed, units independent). Rows where the breakdown (or
metric) is missing are left out of audience and base alike: shares are among users for whom the attribute
is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import engine as E
from . import schema as S
from .artifacts import SEGMENTS, WEIGHTS
from .paths import Paths
from .stats import core as C

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
        ``level, n_unweighted, n_weighted, n_effective, mean, ci_low, ci_high, base_mean, index,
        index_ci_low, index_ci_high, p_value, q_value``. Both also have ``rse`` (relative standard error of
        the audience's share or mean) and ``base_flag`` (the base-size rule of
        :class:`helpers.stats.core.BaseSizeRule`). Every index, interval and test comes from
        :mod:`helpers.stats.core`, the code the affinity table and the personas use.
    question : str
        The question in words.
    n_audience, n_base : int
        Unweighted sizes of the audience and of the base (with the breakdown observed).
    sql : str
        The engine's SQL (compiled by Ibis) that produced the weighted totals per level.
    """

    table: pd.DataFrame
    question: str
    n_audience: int
    n_base: int
    sql: str = field(repr=False, default="")


def _id_of(audience: Any) -> str:
    """The audience table's identifier: ``user_id`` (the dictionary's), else its first column (the run's own
    identifier, e.g. Telco's customerID, which ingestion writes first)."""
    cols = list(audience.columns)
    return "user_id" if "user_id" in cols else cols[0]


class AudienceWarehouse:
    """Read-only access to the warehouse ``audience`` table joined with weights and segments.

    Parameters
    ----------
    db_path : path
        The DuckDB file written by ingestion (``Paths.duckdb``).
    weights_path, segments_path : path, optional
        ``weights.parquet`` and ``segments.parquet``; ignored when None or absent (weight 1.0, no
        segment columns).

    Attributes
    ----------
    backend : Ibis backend
        The engine the questions run on.
    con : connection
        The engine's own connection: the read-only ``duckdb`` connection of the warehouse file, or the
        SparkSession (for :meth:`from_parquet` on Spark).
    panel : ibis.Table
        The audience table with ``weight`` (and ``segment``, ``segment_name``) joined on.
    columns : dict
        Column name -> Ibis data type (as text) of :attr:`panel`.

    Examples
    --------
    >>> with AudienceWarehouse.from_paths(P) as wh:                       # doctest: +SKIP
    ...     wh.ask("income_bracket", where=[("time_on_podcasts_min", "above_mean")]).table
    >>> con = engine.connect("spark")                                      # doctest: +SKIP
    >>> wh = AudienceWarehouse.from_parquet(con, P.processed / artifacts.UNIFIED_PARQUET,
    ...                                     P.processed / WEIGHTS, P.processed / SEGMENTS)
    """

    def __init__(self, db_path: str | Path, weights_path: str | Path | None = None,
                 segments_path: str | Path | None = None) -> None:
        db_path = Path(db_path)
        if not db_path.exists():
            raise FileNotFoundError(f"{db_path} does not exist: it is written by notebook 01_ingest "
                                    "(run `make reports` or execute 01_ingest first).")
        backend = E.connect("duckdb", db_path, read_only=True)
        tables = set(E.tables(backend))
        if "audience" not in tables:
            E.disconnect(backend)
            raise ValueError(f"{db_path} has no table 'audience' (tables: {sorted(tables)}); "
                             "re-run ingestion to create it.")
        weights = backend.read_parquet(str(weights_path)) if _exists(weights_path) else None
        segments = backend.read_parquet(str(segments_path)) if _exists(segments_path) else None
        self.weights_path = Path(weights_path) if weights is not None else None
        self.segments_path = Path(segments_path) if segments is not None else None
        self._setup(backend, backend.table("audience"), weights, segments, owns=True)

    @classmethod
    def from_paths(cls, paths: Paths) -> "AudienceWarehouse":
        """The warehouse of a pipeline run, with its weights and segments if they exist."""
        return cls(paths.duckdb, paths.processed / WEIGHTS, paths.processed / SEGMENTS)

    @classmethod
    def for_run(cls, con: Any, paths: Paths, *, cache: bool | str = False) -> "AudienceWarehouse":
        """The warehouse of a pipeline run on the engine of ``con`` (either engine, no branch in the caller):
        the run's unified, weights and segments Parquet files read by that engine (:meth:`from_parquet`;
        ``cache`` as there)."""
        from .artifacts import UNIFIED_PARQUET

        return cls.from_parquet(con, paths.processed / UNIFIED_PARQUET, paths.processed / WEIGHTS,
                                paths.processed / SEGMENTS, cache=cache)

    @classmethod
    def from_parquet(cls, con: Any, unified: str | Path, weights: str | Path | None = None,
                     segments: str | Path | None = None, *, cache: bool | str = False) -> "AudienceWarehouse":
        """The warehouse on any engine, reading the processed Parquet artifacts.

        Parameters
        ----------
        con : Ibis backend
            From :func:`helpers.engine.connect` (``duckdb`` or ``spark``); it is not closed by :meth:`close`.
        unified : path
            ``rich_audience_data.parquet`` (file or folder of parts) written by ingestion.
        weights, segments : path, optional
            ``weights.parquet`` and ``segments.parquet``; ignored when None or absent.
        cache : bool or "disk"
            ``True``: compute the joined panel once and keep it in the engine (a temporary table on DuckDB, a
            persisted frame on Spark) until :meth:`close`. ``"disk"``: compute it once into a temporary Parquet
            file (deleted by :meth:`close`) that every query scans: bounded memory for a panel too large to keep
            in the engine (at 10M users the ~12 branches of the affinity query, each re-joining 10M weights and
            segments, ran DuckDB out of its 5 GB). ``False``: every query re-reads the files and re-joins
            weights and segments: the affinity table alone sends about 25 scans (one per attribute family and
            metric quantile), and at 1M users on DuckDB the fit took 13.3 s CPU on the joined files against
            1.2 s to cache plus 2.8 s on the cached table.
        """
        if not Path(unified).exists():
            raise FileNotFoundError(f"{unified} does not exist: it is written by notebook 01_ingest "
                                    "(run `make reports` or execute 01_ingest first).")
        w = E.read_parquet(con, weights) if _exists(weights) else None
        s = E.read_parquet(con, segments) if _exists(segments) else None
        return cls.from_tables(E.read_parquet(con, unified), w, s, con=con, cache=cache)

    @classmethod
    def from_tables(cls, audience: Any, weights: Any = None, segments: Any = None, *, con: Any = None,
                    cache: bool | str = False) -> "AudienceWarehouse":
        """The warehouse over Ibis tables of one backend: ``audience`` (22 columns, ``user_id``), optional
        ``weights`` (``user_id, weight``) and ``segments`` (``user_id, segment, segment_name``); ``cache``: see
        :meth:`from_parquet`."""
        import ibis

        self = cls.__new__(cls)
        self.weights_path = self.segments_path = None
        self._setup(con if con is not None else ibis.get_backend(audience), audience, weights, segments,
                    owns=False, cache=cache)
        return self

    def _setup(self, backend: Any, audience: Any, weights: Any, segments: Any, owns: bool,
               cache: bool | str = False) -> None:
        import ibis

        self.backend, self._owns = backend, owns
        self.engine = E.engine_of(backend)
        self.con = E.native(backend)
        uid = _id_of(audience)
        panel = audience
        # weights and segments are keyed by their first column (user_id, holding the run's ids)
        if weights is not None:
            w = weights.select(uid_w_=weights[weights.columns[0]], weight_w_=weights["weight"].cast("float64"))
            panel = panel.left_join(w, panel[uid] == w["uid_w_"])
            panel = panel.mutate(weight=panel["weight_w_"].fill_null(1.0)).drop("uid_w_", "weight_w_")
        else:
            panel = panel.mutate(weight=ibis.literal(1.0))
        if segments is not None:
            s = segments.select(uid_s_=segments[segments.columns[0]], segment=segments["segment"],
                                segment_name=segments["segment_name"])
            panel = panel.left_join(s, panel[uid] == s["uid_s_"]).drop("uid_s_")
        self.panel, self._release = E.keep(backend, panel, cache)
        self._schema = dict(panel.schema().items())
        self.columns: dict[str, str] = {k: str(v) for k, v in self._schema.items()}

    def close(self) -> None:
        """Release the cached panel, if any, and close the connection (only one this object opened: the
        DuckDB file's)."""
        if getattr(self, "_release", None) is not None:  # the cached panel: engine memory or temporary file
            self._release()
            self._release = None
        if self._owns:
            E.disconnect(self.backend)

    def __enter__(self) -> "AudienceWarehouse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- expression building --
    def _col(self, name: str) -> str:
        if name not in self.columns:
            raise ValueError(f"column {name!r} is not in the warehouse (available: {sorted(self.columns)})")
        return name

    def _is_numeric(self, name: str) -> bool:
        return bool(self._schema[name].is_numeric())

    def _predicate(self, c: Condition, t: Any) -> Any:
        """Ibis boolean expression of one condition on table ``t`` (means are ``t``'s weighted means)."""
        col = t[self._col(c.column)]
        if c.op in ("above_mean", "below_mean"):
            if not self._is_numeric(c.column):
                raise ValueError(f"condition {c.op!r} needs a numeric column, {c.column!r} is "
                                 f"{self.columns[c.column]}")
            x = col.cast("float64")
            known = x.notnull()
            mean = ((t["weight"] * x).sum(where=known) / t["weight"].sum(where=known)).as_scalar()
            return x > mean if c.op == "above_mean" else x < mean
        if c.op == "is_null":
            return col.isnull()
        if c.op == "not_null":
            return col.notnull()
        if c.op == "contains":
            if S.BY_NAME.get(c.column) is None or S.BY_NAME[c.column].kind != "multi":
                raise ValueError(f"'contains' needs a multi-valued column ({S.MULTI_VALUED}), "
                                 f"got {c.column!r}")
            padded = ibis_literal(S.MULTI_SEP) + col.cast("string") + ibis_literal(S.MULTI_SEP)
            return padded.contains(f"{S.MULTI_SEP}{c.value}{S.MULTI_SEP}")
        if c.op in ("in", "not in"):
            return col.isin(list(c.value)) if c.op == "in" else col.notin(list(c.value))
        ops = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
        return getattr(col, ops[c.op])(c.value)

    def _filter(self, t: Any, conds: list[Condition]) -> Any:
        import functools
        import operator

        preds = [self._predicate(c, t) for c in conds]
        return functools.reduce(operator.and_, preds) if preds else None

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
        import ibis

        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self._col(breakdown)
        base_conds, aud_conds = _conditions(base_where), _conditions(where)
        base_pred = self._filter(self.panel, base_conds)
        base = self.panel if base_pred is None else self.panel.filter(base_pred)
        aud_pred = self._filter(base, aud_conds)
        if metric == "share":
            y = ibis.literal(1.0)
        else:
            self._col(metric)
            if not self._is_numeric(metric):
                raise ValueError(f"metric must be 'share' or a numeric column, {metric!r} is "
                                 f"{self.columns[metric]}")
            y = base[metric].cast("float64")
        rows = base.select(weight=base["weight"].cast("float64"), b=base[breakdown], y=y,
                           aud=ibis.literal(True) if aud_pred is None else aud_pred.fill_null(False))
        rows = rows.filter(rows["b"].notnull() & rows["y"].notnull())
        spec = S.BY_NAME.get(breakdown)
        if spec is not None and spec.kind == "multi":
            levels = rows.mutate(level=E.split(rows["b"].cast("string"), S.MULTI_SEP, self.engine).unnest())
        else:
            levels = rows.mutate(level=rows["b"].cast("string"))
        w, yy = levels["weight"], levels["y"]
        cells_expr = levels.group_by(["level", "aud"]).aggregate(
            n=levels.count(), t=w.sum(), t2=(w * w).sum(), ty=(w * yy).sum(), t2y=(w * w * yy).sum(),
            t2yy=(w * w * yy * yy).sum()).order_by(["level", "aud"])
        cells = self.backend.execute(cells_expr)
        persons = self.backend.execute(rows.group_by("aud").aggregate(
            n=rows.count(), t=rows["weight"].sum(), t2=(rows["weight"] * rows["weight"]).sum()))
        cells["aud"] = cells["aud"].astype(bool)
        persons = persons.assign(aud=persons["aud"].astype(bool)).set_index("aud")
        n_aud = int(persons["n"].get(True, 0))
        if n_aud == 0:
            raise ValueError(f"the audience is empty: no user with {breakdown!r} observed matches {aud_conds}")
        text = self._describe(breakdown, metric, aud_conds, base_conds)
        order = self._level_order(breakdown, cells["level"].unique())
        table = (_share_table(cells, persons, confidence) if metric == "share" else _mean_table(cells, confidence))
        table["level"] = pd.Categorical(table["level"], categories=order, ordered=True)
        table = table.sort_values("level").reset_index(drop=True)
        table["level"] = table["level"].astype(str)
        try:
            sql = str(self.backend.compile(cells_expr))
        except Exception:  # noqa: BLE001 - the SQL text is informative only
            sql = ""
        return QuestionResult(table, text, n_aud, int(persons["n"].sum()), sql)

    def observed(self, column: str, table: Any = None) -> bool:
        """Whether ``column`` exists and has at least one non-missing value (in ``table``, default the panel)."""
        if column not in self.columns:
            return False
        t = self.panel if table is None else table
        return int(self.backend.execute(t.aggregate(n=t[column].count()))["n"].iloc[0]) > 0

    def ask_or_skip(self, label: str, breakdown: str, *, metrics_path=None, stem: str | None = None,
                    **kwargs) -> QuestionResult | None:
        """:meth:`ask`, printing the question and its sizes; a question that cannot be answered (absent column,
        empty audience) prints why and, given ``metrics_path`` and ``stem``, is recorded as a skipped section
        (:func:`helpers.metrics.skipped`) instead of stopping the notebook. Returns None when skipped."""
        try:
            r = self.ask(breakdown, **kwargs)
        except ValueError as exc:
            print(f"{label}: skipped ({exc})")
            if metrics_path is not None and stem:
                from . import metrics

                metrics.skipped(metrics_path, stem, f"question {label}", str(exc))
            return None
        print(f"{label}: {r.question} | audience n = {r.n_audience:,}, base n = {r.n_base:,}")
        return r

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


def _exists(path: str | Path | None) -> bool:
    return path is not None and Path(path).exists()


def ibis_literal(value: Any) -> Any:
    """An Ibis literal (imported lazily: the package imports without Ibis)."""
    import ibis

    return ibis.literal(value)


def _two_group_arrays(cells: pd.DataFrame, cols: Sequence[str]) -> tuple[pd.Index, dict[str, np.ndarray]]:
    """Per level, the (rest, audience) sums of ``cols`` as arrays of shape (levels, 2)."""
    wide = cells.pivot(index="level", columns="aud", values=list(cols)).fillna(0.0)
    out = {}
    for c in cols:
        out[c] = np.column_stack([(wide[(c, a)] if (c, a) in wide.columns else pd.Series(0.0, index=wide.index))
                                  .to_numpy(dtype=float) for a in (False, True)])
    return wide.index, out


def _share_table(cells: pd.DataFrame, persons: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Weighted shares per level in the audience, index vs base and test vs the rest of the base.

    Each level is a 0/1 indicator over the users with the breakdown observed; its index, interval and test
    come from :func:`helpers.stats.core.index_arrays` (the same code as the affinity table and personas).
    """
    levels, g = _two_group_arrays(cells, ("n", "t", "t2"))
    pa_ = persons.reindex([False, True]).fillna(0.0)
    shape = g["n"].shape
    n_p, t_p, t2_p = (np.broadcast_to(pa_[c].to_numpy(dtype=float), shape) for c in ("n", "t", "t2"))
    # y = 1{level}: sum w y = t at the level, sum w^2 y = sum w^2 y^2 = t2 at the level
    r = C.index_arrays(n_p, t_p, g["t"], t2_p, g["t2"], g["t2"], confidence)
    p_a, se_a = r["value"][:, 1], r["se_value"][:, 1]
    lo, hi = C.logit_interval(p_a, se_a, confidence)
    n1, t11, w11 = g["n"][:, 1], g["t"][:, 1], g["t2"][:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(w11 > 0, t11**2 / np.where(w11 > 0, w11, 1), 0.0)
    p = r["p_value"][:, 1]
    out = pd.DataFrame({
        "level": levels.astype(str), "n_unweighted": n1.astype(int), "n_weighted": t11, "n_effective": n_eff,
        "share": 100 * p_a, "ci_low": 100 * lo, "ci_high": 100 * hi, "base_share": 100 * r["base_value"][:, 1],
        "index": r["index"][:, 1], "index_ci_low": r["ci_low"][:, 1], "index_ci_high": r["ci_high"][:, 1],
        "p_value": p, "q_value": C.fdr_qvalues(p), "rse": r["rse"][:, 1],
    })
    return _flags(out)


def _mean_table(cells: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Weighted means per level in the audience, with the base mean at the same level, the index of the
    audience against the base at that level (linearised interval) and the test against the rest."""
    levels, g = _two_group_arrays(cells, ("n", "t", "t2", "ty", "t2y", "t2yy"))
    r = C.index_arrays(g["n"], g["t"], g["ty"], g["t2"], g["t2y"], g["t2yy"], confidence)
    zq = stats.norm.ppf(0.5 + confidence / 2)
    m, se = r["value"][:, 1], r["se_value"][:, 1]
    n, t, t2 = g["n"][:, 1], g["t"][:, 1], g["t2"][:, 1]
    keep = n > 0  # levels the audience has
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(t2 > 0, t**2 / np.where(t2 > 0, t2, 1), 0.0)
    p = r["p_value"][:, 1]
    out = pd.DataFrame({
        "level": levels.astype(str), "n_unweighted": n.astype(int), "n_weighted": t, "n_effective": n_eff,
        "mean": m, "ci_low": m - zq * se, "ci_high": m + zq * se, "base_mean": r["base_value"][:, 1],
        "index": r["index"][:, 1], "index_ci_low": r["ci_low"][:, 1], "index_ci_high": r["ci_high"][:, 1],
        "p_value": p, "rse": r["rse"][:, 1],
    })[keep].reset_index(drop=True)
    out["q_value"] = C.fdr_qvalues(out["p_value"].to_numpy())
    return _flags(out)


def _flags(out: pd.DataFrame) -> pd.DataFrame:
    """The core's base-size flag (count, effective n, RSE) of each level; answers are flagged, not blanked."""
    out["base_flag"] = C.BaseSizeRule().flag(out["n_unweighted"].to_numpy(), out["n_effective"].to_numpy(),
                                              out["rse"].to_numpy())
    return out


def ask(paths: Paths, breakdown: str, where: Sequence[Condition | tuple] | None = None,
        metric: str = "share", base_where: Sequence[Condition | tuple] | None = None,
        confidence: float = 0.95) -> QuestionResult:
    """One-shot :meth:`AudienceWarehouse.ask` on a pipeline run's warehouse (opened and closed)."""
    with AudienceWarehouse.from_paths(paths) as wh:
        return wh.ask(breakdown, where=where, metric=metric, base_where=base_where, confidence=confidence)
