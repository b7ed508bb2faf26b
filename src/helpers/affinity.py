"""Weighted affinity indices of segments against a base, with intervals, tests, FDR and base-size rules.

Three index types, each labelled in the output for what it is:

* ``intensity`` -- the data dictionary's ratio of means, ``mean(y | segment) / mean(y | base) x 100``
  for the channel metrics. Heavy users dominate it: a few people with 600 min/day lift a segment's index
  even when most of its members are light users.
* ``composition`` -- the syndicated-panel index (GWI, MRI-Simmons, Nielsen) for the same channel
  metrics: ``share of segment that is a heavy user / share of base that is a heavy user x 100``, where
  "heavy" means above the base's weighted ``heavy_quantile`` (the top third by default). It counts people,
  not minutes, and ignores how heavy the heavy users are; it depends on the chosen cut-off.
* ``share`` -- the same ratio of proportions for categorical, boolean and multi-valued attributes
  (``% of segment with the attribute / % of base x 100``).

Every index is computed on weighted totals (weights 1 if the panel has none). Its 95 % interval comes
from Taylor linearisation (delta method) of ``log(index)`` as a smooth function of four weighted totals,
which accounts for the segment being part of the base; the p-value tests the segment against the *rest
of the base* (``mean(y | segment) == mean(y | base minus segment)``, a linearised Wald test), and
q-values control the false discovery rate over the whole table (Benjamini-Hochberg by default).
Variances treat weights as fixed and units as independent draws (with-replacement approximation), so
they ignore the variability of estimated (raked) weights.

Everything that depends on user-level data runs on an execution engine through Ibis (DuckDB by default,
Apache Spark on request, see :mod:`helpers.engine`): :meth:`AffinityIndex.fit` asks the engine for per-segment
sufficient statistics (:data:`MOMENTS`: counts and sums of ``w``, ``w y``, ``w^2``, ``w^2 y``, ``w^2 y^2``) in
one group-by for the metrics and one for the attribute families, plus the weighted quantiles of the
heavy-user cut; :func:`helpers.stats.core.index_table` (the project's one statistics core, also used by questions and
personas) turns that small table into indices, intervals and tests with the same code for every engine. A 10M-user Parquet panel never
has to fit in one pandas frame, and both engines give the same table to floating-point tolerance.

Base-size rules (:class:`helpers.stats.core.BaseSizeRule`) follow MRI-Simmons' defaults for the
unweighted cell count (31-60 "caution", below 31 "suppressed": the index is not reported), optionally the
same thresholds on the Kish effective n, and a relative-standard-error rule on the effective base (RSE of
the segment's estimate > 30 % caution, > 50 % suppressed, as NCHS / ABS publish).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import engine as E
from . import schema as S
from .stats import core as C
from .stats.core import (MOMENTS, BaseSizeRule, assign_tier, fdr_qvalues, index_estimates,  # noqa: F401
                         moments, weighted_quantile)


INDEX_TYPES = ("intensity", "composition", "share")
#: Attributes indexed by share by default: partner, enrichment and demographic columns.
DEFAULT_ATTRIBUTES: tuple[str, ...] = (
    "partner_purchase_categories", "event_attendance_genres", "traveler_type", "offline_purchase_intent",
    "presence_of_children", "household_size", "homeowner_status", "marital_status", "estimated_net_worth",
    "education_level", "income_bracket", "age_group",
)
HOUSEHOLD_BANDS = ["1", "2", "3", "4", "5+"]
TIER_SWEET, TIER_NEUTRAL, TIER_LOW = C.TIER_SWEET, C.TIER_NEUTRAL, C.TIER_LOW_LABEL

TABLE_COLUMNS = [
    "segment", "segment_name", "family", "attribute", "index_type", "definition", "index", "ci_low",
    "ci_high", "p_value", "q_value", "significant", "n_unweighted", "n_weighted", "n_effective",
    "n_segment", "base_flag", "tier", "segment_value", "base_value", "rest_value", "vertical_pct",
    "horizontal_pct", "rse", "n_eff_segment", "descriptive",
]


# --- attribute indicators -------------------------------------------------------------------------------
def _categories(df: pd.DataFrame, column: str) -> tuple[list[str], pd.Series]:
    """Category list and the (string) values of a column; household size is banded."""
    col = df[column]
    if column == "household_size":
        v = pd.to_numeric(col, errors="coerce")
        band = v.clip(upper=5).round().astype("Int64").astype("string").replace({"5": "5+"})
        return HOUSEHOLD_BANDS, band
    spec = S.BY_NAME.get(column)
    if spec is not None and spec.kind == "bool":
        vals = col.astype("boolean")
        return ["yes"], pd.Series(np.where(vals.fillna(False), "yes", "no"), index=df.index).where(vals.notna())
    if spec is not None and spec.categories:
        return list(spec.categories), col.astype("string")
    values = col.astype("string")
    return sorted(values.dropna().unique().tolist()), values


def attribute_indicators(df: pd.DataFrame, columns: Sequence[str] = DEFAULT_ATTRIBUTES
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """0/1 indicator of every attribute value, NaN where the column is not observed.

    Parameters
    ----------
    df : pandas.DataFrame
        Unified table (or any frame holding ``columns``).
    columns : sequence of str
        Categorical, ordinal, boolean or multi-valued (``|``-separated) columns; ``household_size`` is
        banded to ``1, 2, 3, 4, 5+``; a boolean column gives one indicator ``"yes"``.

    Returns
    -------
    (indicators, meta) : tuple of pandas.DataFrame
        ``indicators`` has one float column per (column, value); ``meta`` has one row per indicator
        column with ``family`` (source column) and ``attribute`` (value).
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"attribute columns {missing} are not in the data (available: {list(df.columns)})")
    blocks, meta = [], []
    for column in columns:
        spec = S.BY_NAME.get(column)
        multi = spec is not None and spec.kind == "multi"
        if multi:
            cats, values = list(spec.categories), df[column].astype("string")
        else:
            cats, values = _categories(df, column)
        blocks.append(_indicator_block(values, cats, multi))
        meta += [{"family": column, "attribute": c} for c in cats]
    names = [f"{m['family']}={m['attribute']}" for m in meta]
    ind = pd.DataFrame(np.column_stack(blocks) if blocks else np.empty((len(df), 0)), columns=names,
                       index=df.index)
    return ind, pd.DataFrame(meta, index=names)


def _indicator_block(values: pd.Series, cats: Sequence[str], multi: bool) -> np.ndarray:
    """Rows x categories 0/1 (NaN where unobserved) of one string column, from its distinct cells.

    The comparison is made once per distinct cell (a few hundred in 1M rows) and mapped back to the rows by
    their codes: comparing or searching every row's string was ~50 s of the Explorer's comparison at 1M.
    A multi-valued cell holds a category when ``|cat|`` occurs in ``|cell|``.
    """
    codes, uniq = pd.factorize(values)
    cells = [str(u) for u in uniq]
    if multi:
        table = [[f"{S.MULTI_SEP}{c}{S.MULTI_SEP}" in f"{S.MULTI_SEP}{u}{S.MULTI_SEP}" for c in cats]
                 for u in cells]
    else:
        table = [[u == c for c in cats] for u in cells]
    # one extra row of NaN for the unobserved cells (code -1 picks the last row)
    lookup = np.vstack([np.asarray(table, float).reshape(len(cells), len(cats)), np.full((1, len(cats)), np.nan)])
    return lookup[codes]


# --- engine side: sufficient statistics by one Ibis group-by (DuckDB or Spark) ---------------------------
_W, _W2 = "aff_w_", "aff_w2_"  # weight and squared weight columns added to the base table


def _finite(x):
    return x.notnull() & ~x.isnan() & ~x.isinf()


def engine_quantiles(table, columns: Sequence[str], q: float, weight: str = _W, con=None) -> dict[str, float]:
    """Weighted quantile of each column, computed by the engine in one query; equals :func:`weighted_quantile`.

    The engine sums the weights per distinct value (a weighted histogram per column), a cumulative window over
    it gives the weighted CDF, and the result is the smallest value whose CDF reaches ``q``.
    """
    import ibis

    if not columns:
        return {}
    hists = []
    for c in columns:
        y = table[c].cast("float64")
        hists.append(table.filter(_finite(y)).select(q_c_=ibis.literal(c), q_v_=y, q_w_=table[weight]))
    h = ibis.union(*hists, distinct=False) if len(hists) > 1 else hists[0]
    h = h.group_by(["q_c_", "q_v_"]).aggregate(q_w_=lambda s: s.q_w_.sum())
    h = h.mutate(q_cum_=h.q_w_.sum().over(ibis.cumulative_window(group_by=h.q_c_, order_by=h.q_v_)),
                 q_tot_=h.q_w_.sum().over(ibis.window(group_by=h.q_c_)))
    expr = h.group_by("q_c_").aggregate(cut=h.q_v_.min(where=h.q_cum_ / h.q_tot_ >= q), top=h.q_v_.max())
    got = (con.execute(expr) if con is not None else expr.execute()).set_index("q_c_")
    out = {}
    for c in columns:
        if c not in got.index:
            raise ValueError(f"weighted quantile of {c!r} needs at least one finite value")
        cut = got.at[c, "cut"]
        out[c] = float(got.at[c, "top"] if pd.isna(cut) else cut)
    return out


def engine_quantile(table, column: str, q: float, weight: str = _W, con=None) -> float:
    """Weighted quantile of one column by the engine (see :func:`engine_quantiles`)."""
    return engine_quantiles(table, [column], q, weight, con)[column]


def _metric_aggregates(table, metrics: Sequence[str], cuts: Mapping[str, float]) -> dict:
    """Per-segment moments of each metric and of its heavy-user indicator (``y > cut``)."""
    w, w2 = table[_W], table[_W2]
    aggs = {}
    for i, m in enumerate(metrics):
        y = table[m].cast("float64")
        obs = _finite(y) & (w > 0)
        heavy = obs & (y > cuts[m])
        aggs.update({f"m{i}__n": w.count(where=obs), f"m{i}__t": w.sum(where=obs),
                     f"m{i}__t2": w2.sum(where=obs), f"m{i}__ty": (w * y).sum(where=obs),
                     f"m{i}__t2y": (w2 * y).sum(where=obs), f"m{i}__t2yy": (w2 * y * y).sum(where=obs),
                     f"m{i}__hn": w.count(where=heavy), f"m{i}__ht": w.sum(where=heavy),
                     f"m{i}__ht2": w2.sum(where=heavy)})
    return aggs


def _kind(column: str, types: Mapping | None = None) -> tuple[str, tuple[str, ...]]:
    """(type, categories) of an attribute: from ``types`` (the run configuration's attribute types, e.g.
    ``{a.name: (a.type, a.categories) for a in cfg.attributes}``), else the data dictionary, else a
    categorical column with the categories it holds."""
    if types and column in types:
        kind, cats = types[column]
        return str(kind), tuple(cats or ())
    spec = S.BY_NAME.get(column)
    if spec is not None:
        return spec.kind, tuple(spec.categories or ())
    return "category", ()


def _family_values(table, column: str, engine: str, types: Mapping | None = None):
    """(observed, value) Ibis expressions of an attribute family and whether it is multi-valued.

    The value is the category as text: household size banded ``1..5`` (``5`` means 5+), booleans ``yes``/``no``,
    a multi-valued column the array of its distinct tokens.
    """
    import ibis

    col = table[column]
    kind, _ = _kind(column, types)
    if column == "household_size":
        v = col.cast("float64")
        return _finite(v), ibis.least(v, 5.0).round().cast("int64").cast("string"), False
    if kind == "multi":
        return col.notnull(), E.distinct_list(E.split(col.cast("string"), S.MULTI_SEP, engine), engine), True
    if kind == "bool":
        b = col.cast("boolean")
        return b.notnull(), b.ifelse("yes", "no"), False
    return col.notnull(), col.cast("string"), False


_ITEM, _FV, _TOT = "\x1e", "\x1f", "\x1d"  # separators of the long layout (control characters)


def _attribute_query(table, segment_col: str, columns: Sequence[str], engine: str, layout: str | None = None,
                     types: Mapping | None = None):
    """One query: per family, segment and value the unweighted count and sums of ``w``, ``w^2``.

    Multi-valued families also get a row per segment with the totals over users with the column observed
    (``tot_`` true), since a user can hold several values. Two layouts give the same numbers: ``"union"``
    (one group-by per family, UNION ALL; fastest on DuckDB) and ``"long"`` (every user's ``family=value``
    items in one array, unnested and grouped once: one shuffle instead of one per family, faster on Spark).
    Returns ``(expression, decode)``; ``decode`` turns the executed result into
    ``fam_, tot_, seg_, val_, n, t, t2``.
    """
    import ibis

    layout = layout or ("long" if E.prefers_one_shuffle(engine) else "union")
    w, w2 = table[_W], table[_W2]
    cols = ["fam_", "tot_", "seg_", "val_", "n", "t", "t2"]
    if layout == "long":
        items = []
        for column in columns:
            obs, value, multi = _family_values(table, column, engine, types)
            pre = ibis.literal(column + _FV)
            if multi:  # a totals item, then every token prefixed with its family
                raw = table[column].cast("string")
                item = pre + _TOT + _ITEM + pre + raw.replace(S.MULTI_SEP, _ITEM + column + _FV)
            else:
                item = pre + value
            items.append(ibis.ifelse(obs, item, ibis.null("string")))  # concat_ws skips missing items
        arr = E.distinct_list(E.split(ibis.literal(_ITEM).join(items), _ITEM, engine), engine)
        sub = table.select(seg_=table[segment_col], item_=arr, w_=w, w2_=w2)
        sub = sub.mutate(item_=sub.item_.unnest())
        expr = sub.group_by(["seg_", "item_"]).aggregate(n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(),
                                                         t2=sub.w2_.sum())

        def decode(res: pd.DataFrame) -> pd.DataFrame:
            res = res[res["item_"].notna() & (res["item_"] != "")]
            parts = res["item_"].str.split(_FV, n=1, expand=True)
            out = res.assign(fam_=parts[0], val_=parts[1], tot_=parts[1].eq(_TOT))
            out.loc[out["tot_"], "val_"] = None
            return out[cols].reset_index(drop=True)

        return expr, decode
    if layout != "union":
        raise ValueError(f"layout must be 'union' or 'long', got {layout!r}")
    parts = []
    for column in columns:
        obs, value, multi = _family_values(table, column, engine, types)
        sub = table.filter(obs).select(seg_=table[segment_col], val_=value, w_=w, w2_=w2)
        if multi:
            parts.append(sub.group_by("seg_").aggregate(
                n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(), t2=sub.w2_.sum())
                .mutate(fam_=ibis.literal(column), tot_=ibis.literal(True), val_=ibis.null("string")))
            sub = sub.mutate(val_=sub.val_.unnest())
        parts.append(sub.group_by(["seg_", "val_"]).aggregate(
            n=sub.w_.count(where=sub.w_ > 0), t=sub.w_.sum(), t2=sub.w2_.sum())
            .mutate(fam_=ibis.literal(column), tot_=ibis.literal(False)))
    parts = [p.select(*cols) for p in parts]
    expr = ibis.union(*parts, distinct=False) if len(parts) > 1 else parts[0]
    return expr, (lambda res: res.assign(tot_=res["tot_"].astype(bool)))


def _family_categories(column: str, values: Sequence[str], types: Mapping | None = None) -> list[str]:
    kind, cats = _kind(column, types)
    if column == "household_size":
        return HOUSEHOLD_BANDS
    if kind == "bool":
        return ["yes"]
    if cats:
        return list(cats)
    return sorted(str(v) for v in values)


def _apply_base(table, base):
    """Filter an Ibis table by ``base``: None, an Ibis boolean expression, a callable, or a query string."""
    if base is None:
        return table
    if isinstance(base, str):
        base = query_expression(table, base)
    elif callable(base):
        base = base(table)
    return table.filter(base)


_CMP = {"Eq": "eq", "NotEq": "ne", "Lt": "lt", "LtE": "le", "Gt": "gt", "GtE": "ge"}


def query_expression(table, query: str):
    """A pandas-style query string (``"age_group == '25-34' and household_size >= 3"``) as an Ibis expression.

    Only column names, literals (numbers, strings, True/False/None, lists), comparisons (``== != < <= > >=``,
    ``in`` / ``not in`` a list), ``and``/``or``/``not`` (or ``& | ~``) and parentheses are accepted; the
    string is parsed, never executed, so the same base works on every engine.
    """
    import ast
    import functools
    import operator

    def bad(node):
        return ValueError(f"base query {query!r}: {ast.dump(node)[:60]} is not allowed (use column names, "
                          "literals, comparisons, in / not in, and / or / not)")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Name):
            if node.id not in table.columns:
                raise ValueError(f"base query {query!r}: column {node.id!r} is not in the data")
            return table[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            op = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            return functools.reduce(op, [ev(v) for v in node.values])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            return (operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_)(ev(node.left),
                                                                                       ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            return ~ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Compare):
            parts, left = [], ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                name = type(op).__name__
                if name in ("In", "NotIn"):
                    parts.append(left.isin(right) if name == "In" else left.notin(right))
                elif name in _CMP:
                    parts.append(getattr(operator, _CMP[name])(left, right))
                else:
                    raise bad(node)
                left = right
            return functools.reduce(operator.and_, parts)
        raise bad(node)

    try:
        tree = ast.parse(query, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"base query {query!r} is not a valid query: {exc.msg}") from exc
    return ev(tree)


@dataclass
class AffinityIndex:
    """Segment-by-attribute affinity crosstab (intensity, composition and share indices).

    Parameters
    ----------
    metrics : sequence of str
        Channel metrics for the intensity and composition indices (default: the four channel metrics).
    attributes : sequence of str
        Columns for share indices (default :data:`DEFAULT_ATTRIBUTES`).
    heavy_quantile : float
        A unit is a "heavy user" of a metric when above the base's weighted quantile ``heavy_quantile``
        (default 2/3: the top third of the base).
    confidence : float
        Level of the intervals.
    alpha : float
        FDR level: a cell is significant when its q-value is below ``alpha``.
    fdr_method : str
        Multiple-testing method over the whole table (see :func:`fdr_qvalues`).
    rule : BaseSizeRule
        Base-size thresholds; suppressed cells have no index, interval, p- or q-value.
    tier_low, tier_high : float
        Action-tier thresholds of the data dictionary (80 and 120, :data:`helpers.stats.core.TIER_LOW` /
        ``TIER_HIGH``).
    descriptive : sequence of str
        Metrics / attribute families the segments were *built from* (the clustering features, see
        :func:`clustering_features`): their cells keep index and interval but get no p-value, are left out
        of the FDR family and are never significant (``descriptive`` column True). A segment differs from
        the rest on its own clustering features by construction, so a test there says nothing.
    types : mapping, optional
        Attribute column -> ``(type, categories)`` from the run configuration (``category``, ``ordinal``,
        ``multi``, ``bool``); default: the data dictionary's (:mod:`helpers.schema`), else categorical.

    Attributes
    ----------
    table_ : pandas.DataFrame
        Tidy table with :data:`TABLE_COLUMNS`, set by :meth:`fit`.
    engine_ : str
        The engine that aggregated the data (``duckdb`` or ``spark``).
    moments_ : pandas.DataFrame
        The engine's output: per variable and segment, the sufficient statistics :data:`MOMENTS`.
    skipped_ : dict
        Metric or attribute column -> why it has no cells (no observed value in the base).

    Notes
    -----
    :meth:`fit` runs on an execution engine through Ibis: the engine computes the labels, the weighted
    quantiles of the composition cut and, in one group-by over segments, the sufficient statistics of every
    metric and attribute indicator; only that small table comes back, and :func:`helpers.stats.core.index_table` (the
    same code for every engine) turns it into indices, intervals, tests, q-values, flags and tiers. A
    pandas frame is registered into an in-memory DuckDB (or the given backend), so the default takes the
    same code path as a 10M-user Parquet panel on Spark.
    """

    metrics: Sequence[str] = tuple(S.CHANNEL_METRICS)
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES
    heavy_quantile: float = 2 / 3
    confidence: float = 0.95
    alpha: float = 0.05
    fdr_method: str = "fdr_bh"
    rule: BaseSizeRule = field(default_factory=BaseSizeRule)
    tier_low: float = C.TIER_LOW
    tier_high: float = C.TIER_HIGH
    descriptive: Sequence[str] = ()
    types: Mapping | None = None

    def fit(self, data, segment_col: str = "segment", weight_col: str | None = "weight",
            name_col: str | None = "segment_name", base=None, *, engine: str | None = None, con=None,
            cache: bool = False) -> "AffinityIndex":
        """Compute every index of every segment against the base.

        Parameters
        ----------
        data : pandas.DataFrame or ibis.Table
            One row per unit: the metrics and attributes, a segment column and optionally weights. An Ibis
            table (e.g. ``engine.read_parquet(con, ...)`` joined with segments and weights) is aggregated on
            its own backend; a pandas frame is registered into ``con`` (default: a new in-memory DuckDB,
            or a connection to ``engine``).
        segment_col : str
            Column with segment labels.
        weight_col : str or None
            Column with weights; None (or a column that is absent) means unweighted.
        name_col : str or None
            Column with segment names (optional).
        base : boolean mask, pandas query string, Ibis boolean expression, callable or None
            The base (audience) the segments are compared with: None is the whole frame; e.g.
            ``"age_group == '25-34'"`` compares segments within 25-34 year olds. For an Ibis table a string
            is a pandas-style query turned into an Ibis expression (:func:`query_expression`), a callable
            gets the table and returns a boolean expression.
        engine : {"duckdb", "spark"}, optional
            Engine for a pandas frame when ``con`` is not given (default ``duckdb``).
        con : Ibis backend, optional
            Backend from :func:`helpers.engine.connect`.
        cache : bool, optional
            Cache the base table in the engine for the five queries of the fit (default no: on a local Spark
            with 1M users caching cost more than re-reading the Parquet file; it may pay off for costly
            joins on a cluster).
        """
        import ibis

        from . import engine as E

        if not 0 < self.heavy_quantile < 1:
            raise ValueError(f"heavy_quantile must be in (0, 1), got {self.heavy_quantile}")
        if isinstance(data, pd.DataFrame):
            table, con, has_w = self._register(data, segment_col, weight_col, name_col, base, engine, con)
        else:
            table, has_w = data, bool(weight_col) and weight_col in data.columns
            con = con if con is not None else ibis.get_backend(data)
            self._check_table(table, segment_col)
            table = _apply_base(table, base)
        self.engine_ = E.engine_of(con)
        w = table[weight_col].cast("float64") if has_w else ibis.literal(1.0)
        table = table.mutate(**{_W: w}).mutate(**{_W2: ibis._[_W] * ibis._[_W]})
        cached = bool(cache)
        if cached:
            table = table.cache()
        try:
            self._fit_table(con, table, data, segment_col, name_col, weight_col if has_w else None)
        finally:
            if cached:
                table.release()
        return self

    def _fit_table(self, con, table, data, segment_col, name_col, weight_col) -> None:
        labels, names = self._labels(con, table, segment_col, name_col, weight_col,
                                     check=not isinstance(data, pd.DataFrame))
        parts, moms = [], []

        def add(family, attribute, kind, definition, mom, count):
            est = C.index_table(mom, labels, confidence=self.confidence, count_cells=count)
            vertical = 100 * est["segment_value"] if kind != "intensity" else np.nan
            parts.append(est.assign(family=family, attribute=attribute, index_type=kind, definition=definition,
                                    vertical_pct=vertical))
            moms.append(mom.assign(segment=labels, family=family, attribute=attribute, index_type=kind))

        metrics = list(self.metrics)
        self.skipped_ = {}
        if metrics:  # columns with no finite value at all have no index: say so instead of failing
            seen = con.execute(table.aggregate(**{f"m{i}": _finite(table[m].cast("float64")).sum()
                                                  for i, m in enumerate(metrics)})).iloc[0]
            for i, m in enumerate(list(metrics)):
                if not int(seen[f"m{i}"] or 0):
                    self.skipped_[m] = "no finite value in the base"
            metrics = [m for m in metrics if m not in self.skipped_]
        if metrics:  # one query for the quantiles, one group-by for every metric
            cuts = engine_quantiles(table, metrics, self.heavy_quantile, con=con)
            res = con.execute(table.group_by(seg_=table[segment_col])
                              .aggregate(**_metric_aggregates(table, metrics, cuts)))
            res = res.set_index("seg_").reindex(pd.Index(labels)).astype(float).fillna(0.0)
            for i, m in enumerate(metrics):
                g = lambda c: res[f"m{i}__{c}"].to_numpy()  # noqa: E731
                mom = pd.DataFrame({"n": g("n"), "t": g("t"), "ty": g("ty"), "t2": g("t2"), "t2y": g("t2y"),
                                    "t2yy": g("t2yy"), "n_nz": g("n"), "t_nz": g("t"), "t2_nz": g("t2")})
                add(m, m, "intensity", f"mean of {m}", mom, False)
                add(m, m, "composition", f"heavy user: {m} > {cuts[m]:g} (base's weighted "
                    f"{100 * self.heavy_quantile:.0f}th percentile)",
                    C.flag_moments(g("n"), g("t"), g("t2"), g("hn"), g("ht"), g("ht2")), True)
        if self.attributes:  # one query: a group-by per attribute family over segment x value
            expr, decode = _attribute_query(table, segment_col, self.attributes, self.engine_, types=self.types)
            res = decode(con.execute(expr))
            seg_index = pd.Index(labels)
            for column in self.attributes:
                fam = res[res["fam_"] == column]
                vals = fam[~fam["tot_"] & fam["val_"].notna()]
                if vals.empty:  # the family has no observed value (e.g. an optional column left empty)
                    self.skipped_[column] = "no observed value in the base"
                    continue
                if column == "household_size":
                    vals = vals.assign(val_=vals["val_"].replace({"5": "5+"}))
                vals = vals.assign(val_=vals["val_"].astype(str))
                by_cell = vals.groupby(["val_", "seg_"])[["n", "t", "t2"]].sum()
                if fam["tot_"].any():
                    tot = fam[fam["tot_"]].groupby("seg_")[["n", "t", "t2"]].sum()
                else:
                    tot = vals.groupby("seg_")[["n", "t", "t2"]].sum()
                tot = tot.reindex(seg_index).astype(float).fillna(0.0)
                present = set(by_cell.index.get_level_values(0))
                for c in _family_categories(column, sorted(present), self.types):
                    if c in present:
                        cell = by_cell.loc[c].reindex(seg_index).astype(float).fillna(0.0)
                        n_c, t_c, t2_c = (cell[k].to_numpy() for k in ("n", "t", "t2"))
                    else:
                        n_c = t_c = t2_c = np.zeros(len(labels))
                    add(column, c, "share", f"% with {column} = {c}",
                        C.flag_moments(tot["n"], tot["t"], tot["t2"], n_c, t_c, t2_c), True)
        if not parts:
            raise ValueError("no metric or attribute column has an observed value in the base "
                             f"(skipped: {self.skipped_}); nothing to index")
        table_out = pd.concat(parts, ignore_index=True)
        table_out["segment_name"] = (table_out["segment"].map(names) if names is not None
                                     else table_out["segment"].astype(str))
        self.moments_ = pd.concat(moms, ignore_index=True) if moms else pd.DataFrame(columns=MOMENTS)
        self.table_ = self._finish(table_out)

    # -- helpers of fit --
    def _register(self, df, segment_col, weight_col, name_col, base, engine, con):
        """Check a pandas frame (errors name rows) and register the needed columns with the engine."""
        import ibis

        from . import engine as E

        if segment_col not in df.columns:
            raise ValueError(f"segment column {segment_col!r} is not in the data; join the segments "
                             "(user_id, segment, segment_name) first, e.g. from artifacts.load_segments")
        missing = [c for c in self.metrics if c not in df.columns]
        if missing:
            raise ValueError(f"metric columns {missing} are not in the data")
        missing = [c for c in self.attributes if c not in df.columns]
        if missing:
            raise ValueError(f"attribute columns {missing} are not in the data (available: {list(df.columns)})")
        data = df.loc[self._base_mask(df, base)]
        if data.empty:
            raise ValueError("the base is empty: the filter selected no rows")
        C.check_codes(data[segment_col].to_numpy())
        has_w = bool(weight_col) and weight_col in data.columns
        if has_w:
            C.check_weights(data[weight_col].to_numpy(dtype=float), weight_col)
        keep = list(dict.fromkeys([segment_col] + ([name_col] if name_col and name_col in data.columns else [])
                                  + ([weight_col] if has_w else []) + list(self.metrics)
                                  + list(self.attributes)))
        slim = data[keep].reset_index(drop=True)
        con = con if con is not None else E.connect(engine or "duckdb")
        return ibis.memtable(slim), con, has_w

    def _check_table(self, table, segment_col) -> None:
        cols = set(table.columns)
        if segment_col not in cols:
            raise ValueError(f"segment column {segment_col!r} is not in the data; join the segments "
                             "(user_id, segment, segment_name) first, e.g. from artifacts.load_segments")
        missing = [c for c in self.metrics if c not in cols]
        if missing:
            raise ValueError(f"metric columns {missing} are not in the data")
        missing = [c for c in self.attributes if c not in cols]
        if missing:
            raise ValueError(f"attribute columns {missing} are not in the data (available: {sorted(cols)})")

    @staticmethod
    def _labels(con, table, segment_col, name_col, weight_col, check: bool):
        """Segment labels (sorted) and names; on an Ibis input also the checks pandas does by row."""
        s = table[segment_col]
        w = table[_W]
        aggs = {"n_": s.count(), "rows_": table.count()}
        if name_col and name_col in table.columns:
            aggs["name_"] = table[name_col].min()
        got = con.execute(table.group_by(seg_=s).aggregate(**aggs))
        if check:
            if got.empty:
                raise ValueError("the base is empty: the filter selected no rows")
            nulls = got["seg_"].isna()
            if nulls.any():
                n_bad = int(got.loc[nulls, "rows_"].sum())
                raise ValueError(f"segment labels are missing in {n_bad} rows; every unit of the base "
                                 "needs a segment (drop or assign them first).")
            if weight_col:
                bad = con.execute(table.aggregate(
                    bad=w.count(where=w.isnan() | w.isinf() | (w < 0)),
                    nulls=table[weight_col].isnull().sum()))
                n_bad = int(bad["bad"].iloc[0]) + int(bad["nulls"].iloc[0])
                if n_bad:
                    raise ValueError(f"column {weight_col!r} must hold finite weights >= 0; {n_bad} rows do "
                                     "not. Fix or drop them before computing affinities.")
        got = got.sort_values("seg_", kind="stable")
        labels = got["seg_"].to_numpy()
        if labels.dtype.kind in "iu":
            labels = labels.astype(np.int64)
        names = (pd.Series(got["name_"].to_numpy(), index=labels) if "name_" in got.columns else None)
        return labels, names

    @staticmethod
    def _base_mask(df: pd.DataFrame, base) -> np.ndarray:
        if base is None:
            return np.ones(len(df), dtype=bool)
        if isinstance(base, str):  # missing values compare as False, as in SQL
            mask = df.eval(base)
            return (mask.fillna(False) if isinstance(mask, pd.Series) else pd.Series(mask)).to_numpy(dtype=bool)
        mask = np.asarray(base, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"base mask has shape {mask.shape}, expected ({len(df)},) (one flag per row)")
        return mask

    def _finish(self, t: pd.DataFrame) -> pd.DataFrame:
        """Base flags, suppression, FDR, significance and tiers: :func:`helpers.stats.core.finalize`."""
        desc = t["family"].isin(list(self.descriptive)).to_numpy()
        t = C.finalize(t, self.rule, self.alpha, self.fdr_method, desc, self.tier_low, self.tier_high)
        return t[TABLE_COLUMNS + ["se_log_index", "z"]]

    # -- views --
    def crosstab(self, index_type: str = "intensity", value: str = "index") -> pd.DataFrame:
        """Wide crosstab (attributes as rows, segments as columns) of one column of the table."""
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        t = self.table_[self.table_["index_type"] == index_type]
        rows = pd.MultiIndex.from_frame(t[["family", "attribute"]].drop_duplicates())
        cols = t[["segment", "segment_name"]].drop_duplicates().sort_values("segment")["segment_name"]
        return t.pivot(index=["family", "attribute"], columns="segment_name", values=value).reindex(
            index=rows, columns=cols.tolist())

    def summaries(self, top: int = 3, labels: Mapping | None = None) -> pd.DataFrame:
        """One reasoning sentence per segment: see :func:`segment_summaries`."""
        return segment_summaries(self.table_, top=top, low=self.tier_low, high=self.tier_high, labels=labels)


def affinity_table(df, segment_col: str = "segment", weight_col: str | None = "weight",
                   base=None, *, engine: str | None = None, con=None, **params) -> pd.DataFrame:
    """Functional shortcut: ``AffinityIndex(**params).fit(df, segment_col, weight_col, base=base).table_``."""
    return AffinityIndex(**params).fit(df, segment_col=segment_col, weight_col=weight_col, base=base,
                                       engine=engine, con=con).table_


def _channel_name(metric: str, labels: Mapping | None = None) -> str:
    if labels and metric in labels:
        return str(labels[metric])
    return metric.replace("time_on_", "").replace("_min", "").replace("_", " ")


def segment_summaries(table: pd.DataFrame, top: int = 3, low: float = C.TIER_LOW, high: float = C.TIER_HIGH,
                      labels: Mapping | None = None) -> pd.DataFrame:
    """The action-tier reasoning sentence for each segment's top and bottom metrics.

    Uses the intensity indices of the metrics: the ``top`` highest are named with their index, interval and
    tier, followed by metrics to de-prioritise. Only significant, reported cells are called a sweet spot or
    de-prioritised; others are named as not distinguishable from the base. A *descriptive* cell (a
    clustering feature, no test) is named as such, and counts as a sweet spot / to de-prioritise only when
    its whole interval is beyond the threshold. ``labels`` maps metric columns to display labels (from the
    run configuration).
    """
    t = table[(table["index_type"] == "intensity")].copy()
    if "descriptive" not in t.columns:
        t["descriptive"] = False
    t["descriptive"] = t["descriptive"].fillna(False).astype(bool)
    rows = []
    for (seg, name), g in t.groupby(["segment", "segment_name"], sort=True):
        g = g.dropna(subset=["index"]).sort_values("index", ascending=False)
        parts = []
        for _, r in g.head(top).iterrows():
            ch = _channel_name(r["attribute"], labels)
            if r["descriptive"]:
                why = "descriptive: a clustering feature, not tested"
            elif r["significant"]:
                why = "significantly above the base" if r["index"] > 100 else "significantly below the base"
            else:
                why = "not significantly different from the base"
            parts.append(f"{ch} index {r['index']:.0f} (95% CI {r['ci_low']:.0f}-{r['ci_high']:.0f}, "
                         f"{why}; tier: {r['tier']})")
        d = g["descriptive"]
        is_low = ((g["index"] < low) & g["significant"]) | (d & (g["ci_high"] < low))
        is_high = ((g["index"] > high) & g["significant"]) | (d & (g["ci_low"] > high))
        low_ch = [_channel_name(a, labels) for a in g.loc[is_low, "attribute"]]
        high_ch = [_channel_name(a, labels) for a in g.loc[is_high, "attribute"]]
        sentence = (f"{name}: " + "; ".join(parts) + ". "
                    + (f"Sweet spots (index > {high:g}, significant or interval above): " + ", ".join(high_ch)
                       + ". " if high_ch else f"No metric is a clear sweet spot (index > {high:g}). ")
                    + (f"De-prioritise (index < {low:g}, significant or interval below): " + ", ".join(low_ch)
                       + "." if low_ch else "Nothing to de-prioritise."))
        rows.append({"segment": seg, "segment_name": name, "sentence": sentence})
    return pd.DataFrame(rows)


# --- scoring against planted truth -------------------------------------------------------------------
def match_segments(predicted: np.ndarray, true: np.ndarray) -> dict:
    """Map each predicted segment label to the true segment it overlaps most (Hungarian assignment of
    :func:`helpers.segment.match_labels`); predicted segments left unmatched are omitted."""
    from .segment import match_labels

    return {f: t for f, t in match_labels(predicted, true).items() if t >= 0}


def truth_comparison(table: pd.DataFrame, true_affinity: Mapping | pd.DataFrame,
                     segment_map: Mapping | None = None) -> pd.DataFrame:
    """Planted intensity indices beside the estimates: ``segment, attribute, true_index, index,
    ci_low, ci_high, inside, significant, sign_agrees``.

    Parameters
    ----------
    table : pandas.DataFrame
        :attr:`AffinityIndex.table_`.
    true_affinity : mapping or DataFrame
        ``params['true_affinity_panel']`` or ``params['true_affinity_population']`` of the generator
        (segment -> metric -> index; JSON string keys are accepted).
    segment_map : mapping, optional
        Estimated segment label -> true segment (e.g. from :func:`match_segments`); identity if None.
        Estimated segments with no true counterpart are left out.
    """
    truth = (true_affinity if isinstance(true_affinity, pd.DataFrame)
             else pd.DataFrame.from_dict(true_affinity, orient="index"))
    truth.index = truth.index.astype(int)
    t = table[(table["index_type"] == "intensity") & table["attribute"].isin(truth.columns)].copy()
    true_seg = t["segment"].map(segment_map) if segment_map is not None else t["segment"]
    t["true_index"] = [truth.at[int(s), a] if pd.notna(s) and int(s) in truth.index else np.nan
                       for s, a in zip(true_seg, t["attribute"])]
    t = t.dropna(subset=["true_index"])  # estimated segments without a true counterpart
    t["inside"] = (t["ci_low"] <= t["true_index"]) & (t["true_index"] <= t["ci_high"])
    t["sign_agrees"] = np.sign(t["index"] - 100) == np.sign(t["true_index"] - 100)
    return t[["segment", "segment_name", "attribute", "true_index", "index", "ci_low", "ci_high", "inside",
              "significant", "sign_agrees"]].reset_index(drop=True)


# --- the run configuration: which columns, which labels, which were clustered ----------------------------------
#: Attribute types that form share families (an ``int`` attribute only when banded: household size).
SHARE_TYPES = ("category", "ordinal", "multi", "bool")


def run_columns(cfg, columns: Sequence[str]) -> dict:
    """Metrics, attribute families and labels of the affinity table, from the run configuration.

    Parameters
    ----------
    cfg : helpers.config.RunConfig
        The run configuration (:func:`helpers.config.load`).
    columns : sequence of str
        Columns present in the data; declared columns that are absent are reported, not required.

    Returns
    -------
    dict
        ``metrics`` (declared behavioural metrics present), ``attributes`` (declared category / ordinal /
        multi-valued / boolean attributes present, plus ``household_size`` banded), ``labels`` (column ->
        label with unit), ``short`` (column -> label without unit), ``types`` (attribute -> (type,
        categories), for :class:`AffinityIndex`) and ``absent`` (declared, not present).
    """
    have = set(columns)
    metrics = [m.name for m in cfg.metrics if m.name in have]
    attributes = [a.name for a in cfg.attributes
                  if a.name in have and (a.type in SHARE_TYPES or a.name == "household_size")]
    declared = [m.name for m in cfg.metrics] + [a.name for a in cfg.attributes]
    labels = {c: cfg.label(c) for c in declared}
    short = {c: cfg.label(c, unit=False) for c in declared}
    types = {a.name: (a.type, tuple(a.categories)) for a in cfg.attributes}
    return {"metrics": metrics, "attributes": attributes, "labels": labels, "short": short, "types": types,
            "absent": [c for c in declared if c not in have]}


def clustering_features(paths=None, cfg=None, segments_file=None) -> tuple[list[str], str]:
    """Source columns the segments were built from, and where that was read.

    In order: the ``clustering_features`` entry (a JSON list of column names) of the segments Parquet file's
    key-value metadata, written by the segmentation notebook; else the run configuration's metrics marked
    ``cluster: true``; else nothing. Cells of these columns are *descriptive* in the affinity table.
    """
    import json

    f = segments_file
    if f is None and paths is not None:
        from . import artifacts

        f = paths.processed / artifacts.SEGMENTS
    if f is not None:
        try:
            import pyarrow.parquet as pq

            meta = pq.read_schema(f).metadata or {}
            raw = meta.get(b"clustering_features")
            if raw:
                return [str(c) for c in json.loads(raw)], f"{getattr(f, 'name', f)} metadata"
        except (OSError, ValueError):
            pass
    if cfg is not None:
        return [m.name for m in cfg.metrics if getattr(m, "cluster", True)], "run configuration (cluster: true)"
    return [], "none"


# --- Monte Carlo study of the interval with true labels; misassignment bias ------------------------------------
#: draws per chunk of the coverage study (replicates x units): bounds its memory whatever the panel's size
COVERAGE_CHUNK_DRAWS = 5_000_000


def _unit_terms(Y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per unit and metric the six terms whose sums are the moments of :func:`helpers.stats.core.index_arrays`:
    ``1_obs, w, w y, w^2, w^2 y, w^2 y^2`` (0 where ``y`` is not finite), shape ``(units, metrics * 6)``."""
    fin = np.isfinite(Y)
    y0 = np.where(fin, Y, 0.0)
    G = np.empty(Y.shape + (6,))
    G[..., 0] = fin
    G[..., 1] = w[:, None] * fin
    G[..., 2] = G[..., 1] * y0
    G[..., 3] = G[..., 1] * w[:, None]
    G[..., 4] = G[..., 3] * y0
    G[..., 5] = G[..., 4] * y0
    return G.reshape(len(Y), -1)


def interval_coverage(values: pd.DataFrame, labels: np.ndarray, weights: np.ndarray | None = None, *,
                      n: int = 2000, replicates: int = 1000, seed: int = 0, confidence: float = 0.95,
                      chunk: int = 100, rule: BaseSizeRule | None = None) -> dict:
    """Coverage of the linearised intensity-index interval with *true* segment labels, by Monte Carlo.

    The rows of ``values`` (a large panel with its planted labels, e.g. the generator's output) are the
    population; each replicate draws ``n`` units with replacement, computes every segment x metric index and
    its interval with :func:`helpers.stats.core.index_arrays` (all replicates of a chunk in one vectorised
    call) and checks whether it covers the population's own index. Weights, if given, travel with the units
    (the weighted estimator and its weighted target). Label error plays no part: this measures the
    interval, not the segmentation. Only cells the base-size ``rule`` reports (not suppressed) count, as only
    those are published.

    A replicate's moments are sums over its draws, so they are computed as ``counts @ terms``: how often each
    unit was drawn (one ``bincount`` per replicate) times the unit's six terms per metric (:func:`_unit_terms`),
    one matrix product per segment over the units sorted by segment. That is the same sums as adding the
    draws one by one (same random draws, equal to rounding), without materialising a value per draw and
    metric; a chunk holds at most :data:`COVERAGE_CHUNK_DRAWS` draws (fewer replicates per chunk on large
    panels), so memory stays bounded.

    Returns
    -------
    dict
        ``coverage`` (share of covering cells over replicates x reported cells), ``mc_se`` (its Monte Carlo
        standard error from the replicate-level means, which accounts for cells of one replicate being
        correlated), ``coverage_all_cells`` (also suppressed cells with an interval), ``reported_share``,
        ``replicates``, ``n``, ``cells`` (cells per replicate), ``per_cell`` (DataFrame: segment, metric,
        true index, coverage among the replicates where the cell is reported, reported share).
    """
    from threadpoolctl import threadpool_limits

    rule = rule or BaseSizeRule()
    Y = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    codes, labs = C.check_codes(np.asarray(labels))
    k, m, N = labs.shape[0], Y.shape[1], len(Y)
    w = np.ones(N) if weights is None else C.check_weights(weights)
    truth = np.column_stack([C.index_table(C.moments(Y[:, j], codes, w, k))["index"].to_numpy()
                             for j in range(m)])  # (k, metrics)
    order = np.argsort(codes, kind="stable")
    # a unit's position once the units are sorted by segment (32-bit: the lookup table stays in cache)
    rank = np.empty(N, np.int32 if N < 2**31 else np.int64)
    rank[order] = np.arange(N)
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    G = _unit_terms(Y[order], w[order])
    rng = np.random.default_rng(seed)
    # the same stream of draws as one (chunk, n) call per chunk; fewer replicates per chunk on large panels
    chunk = max(1, min(int(chunk), COVERAGE_CHUNK_DRAWS // max(int(n), 1)))
    hits, reps = [], []
    done = 0
    # one BLAS thread: multi-threaded OpenBLAS busy-waits on a loaded machine (50x slower measured) and
    # single-threaded sums do not depend on the machine
    with threadpool_limits(1):
        while done < replicates:
            r = min(chunk, replicates - done)
            idx = rng.integers(0, N, size=(r, n))
            counts = np.empty((r, N))
            for i in range(r):
                counts[i] = np.bincount(rank[idx[i]], minlength=N)
            S = np.empty((r, k, G.shape[1]))
            for s in range(k):
                S[:, s, :] = counts[:, bounds[s]:bounds[s + 1]] @ G[bounds[s]:bounds[s + 1]]
            S = S.reshape(r, k, m, 6)
            cov = np.empty((r, k, m))
            ok = np.empty((r, k, m), dtype=bool)
            rep = np.empty((r, k, m), dtype=bool)
            for j in range(m):
                n_obs, t, t_y, t2, t2y, t2yy = (S[:, :, j, q] for q in range(6))
                res = C.index_arrays(n_obs, t, t_y, t2, t2y, t2yy, confidence)
                lo, hi = res["ci_low"], res["ci_high"]
                with np.errstate(divide="ignore", invalid="ignore"):
                    n_eff = np.where(t2 > 0, t**2 / np.where(t2 > 0, t2, 1), 0.0)
                ok[:, :, j] = np.isfinite(lo) & np.isfinite(hi)
                rep[:, :, j] = rule.flag(n_obs, n_eff, res["rse"]) != "suppressed"
                cov[:, :, j] = (lo <= truth[None, :, j]) & (truth[None, :, j] <= hi)
            hits.append(np.where(ok, cov, np.nan))
            reps.append(rep & ok)
            done += r
    H_all = np.concatenate(hits)  # (replicates, k, metrics): 1 covered, 0 missed, NaN no interval
    R = np.concatenate(reps)
    H = np.where(R, H_all, np.nan)
    per_rep = np.nanmean(H.reshape(H.shape[0], -1), axis=1)
    per_rep = per_rep[np.isfinite(per_rep)]
    per_cell = pd.DataFrame([{"segment": labs[s], "metric": values.columns[j], "true_index": truth[s, j],
                              "coverage": float(np.nanmean(H[:, s, j])) if R[:, s, j].any() else np.nan,
                              "reported_share": float(R[:, s, j].mean())}
                             for s in range(k) for j in range(m)])
    return {"coverage": float(np.nanmean(H)), "mc_se": float(np.std(per_rep, ddof=1) / np.sqrt(len(per_rep))),
            "coverage_all_cells": float(np.nanmean(H_all)), "reported_share": float(R.mean()),
            "replicates": int(replicates), "n": int(n), "cells": int(k * m), "per_cell": per_cell}


def truth_validation_frame(table, truth, columns: Sequence[str], con=None, max_rows: int | None = None,
                           seed: int = 0) -> pd.DataFrame:
    """The ``columns`` of the panel ``table`` with each user's planted ``true_segment``, for the validation.

    ``truth`` is the generator's ``users_truth`` as an Ibis table of the same backend (``user_id``,
    ``true_segment``). The engine joins the two on ``user_id`` (inner) and orders the rows by it, so every
    engine returns the same rows in the same order (the coverage study's draws are reproducible); the ids
    themselves are not returned.

    ``max_rows``: when the join has more rows, only a seeded simple random sample of ``max_rows`` of them
    (positions in the ``user_id`` order drawn by ``numpy.random.default_rng(seed)``, kept in that order) leaves
    the engine, so the frame in memory stays bounded at any panel size (10M users: 1M rows instead of all);
    ``frame.attrs["population"]`` is then the join's row count. At or below ``max_rows`` the frame is the
    whole join, as without it.
    """
    import ibis

    backend = con if con is not None else ibis.get_backend(table)
    t = truth.select(uid_t_=truth["user_id"].cast("string"), true_segment=truth["true_segment"])
    j = table.select(*columns, uid_=table["user_id"].cast("string"))
    joined = j.join(t, j["uid_"] == t["uid_t_"]).drop("uid_t_")
    n = None
    if max_rows is not None:
        n = int(backend.execute(joined.count()))
    if n is not None and n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, int(max_rows), replace=False))
        ranked = joined.mutate(pos_=ibis.row_number().over(ibis.window(order_by=joined["uid_"])))
        picks = ibis.memtable(pd.DataFrame({"pos_k_": keep.astype(np.int64)}))
        expr = ranked.filter(ranked["pos_"].isin(picks["pos_k_"])).order_by("uid_").drop("uid_", "pos_")
    else:
        expr = joined.order_by("uid_").drop("uid_")
    out = backend.execute(expr).reset_index(drop=True)
    out.attrs["population"] = len(out) if n is None or n <= (max_rows or n) else n
    return out


def misassignment_bias(values: pd.DataFrame, estimated: np.ndarray, true: np.ndarray,
                       weights: np.ndarray | None = None) -> pd.DataFrame:
    """What segment-label error alone does to the intensity indices, on one panel.

    For every metric, the index of each estimated segment (matched to a true segment by
    :func:`match_segments`) is compared with the index of that true segment *on the same units and weights*:
    the difference is due only to users assigned to the wrong segment (no sampling noise in it).

    Returns one row per matched segment x metric: ``segment`` (estimated), ``true_segment``, ``metric``,
    ``index_estimated_labels``, ``index_true_labels``, ``bias`` (difference, index points).
    """
    est, tru = np.asarray(estimated), np.asarray(true)
    m = match_segments(est, tru)
    w = np.ones(len(est)) if weights is None else C.check_weights(weights)
    # each labelling encoded once (not once per metric: a sort of every user each time)
    (e_codes, e_labs), (t_codes, t_labs) = C.check_codes(est), C.check_codes(tru)
    rows = []
    for col in values.columns:
        y = pd.to_numeric(values[col], errors="coerce").to_numpy(dtype=float)
        a = pd.Series(C.index_table(C.moments(y, e_codes, w, len(e_labs)))["index"].to_numpy(), index=e_labs)
        b = pd.Series(C.index_table(C.moments(y, t_codes, w, len(t_labs)))["index"].to_numpy(), index=t_labs)
        for s, ts in m.items():
            if s in a.index and ts in b.index:
                rows.append({"segment": s, "true_segment": ts, "metric": col, "index_estimated_labels": a[s],
                             "index_true_labels": b[ts], "bias": a[s] - b[ts]})
    return pd.DataFrame(rows)
