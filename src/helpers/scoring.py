"""Score every user with a model fitted on a sample, on either engine, without one big pandas frame.

Fitting stays on the driver, on a sample (:class:`~helpers.segment.GMMSegmenter` sweeps mixtures on
20-50k users; the lookalike propensity model trains on its seed and a sample of the rest). Why a sample
suffices: a Gaussian mixture of k <= 10 components on 5 standardised features has at most ~250 free
parameters, and with 20,000+ users every component of >= 1% weight has >= 200 members, enough for its
mean and covariance to be estimated with a standard error far below the gap between segments (the
benchmark's ARI with the planted truth is the same at 20k and 1M fitting users); the propensity model's
ranking quality saturates once the seed has a few thousand members. What grows with the panel is
*scoring*, which is embarrassingly parallel: every user's score depends only on their own row.

:func:`score` applies a :class:`Scorer` (a fitted model wrapped with its feature pipeline) to every row
of an Ibis table and writes ``user_id`` + the scorer's output columns as Parquet:

* DuckDB: the query result is streamed as Arrow record batches (:func:`duckdb_batches`) and each
  batch is scored and appended to a Parquet file, so memory is bounded by the batch size;
* Spark: the scorer is broadcast (``SparkContext.broadcast``) and applied with ``DataFrame.mapInPandas``
  under a declared output schema; the executors write the Parquet parts.

The same input gives the same numbers on both engines (tests/test_scoring.py): scorers are row-wise by
construction -- features depend only on the row and on constants fixed at fit (scales, imputation
values, the tenure reference date, the per-user dequantisation hash of ``user_id``), never on the batch.

:func:`segment_audience` and :func:`top_audience` select an activation audience with the engine (ordered by
score descending, then ``user_id``), and :func:`export_from_engine` collects only that audience and hands
it to :func:`helpers.export.export_audience` (privacy guard, manifest).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .engine import engine_of

#: rows per scored batch on DuckDB (and Arrow records per batch on Spark): ~100 MB of features at most
DEFAULT_BATCH_SIZE = 200_000
#: largest audience :func:`export_from_engine` collects to the driver unless told otherwise
MAX_EXPORT_ROWS = 5_000_000
_ARROW_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
_SPARK_TYPES = {"string": "string", "int64": "bigint", "float64": "double", "bool": "boolean"}


# --- scorers -------------------------------------------------------------------------------------
@runtime_checkable
class Scorer(Protocol):
    """A fitted model wrapped for row-wise scoring of a pandas batch.

    ``input_columns``: the columns of the unified table the scorer reads (besides ``user_id``).
    ``output_schema``: ordered ``(column, dtype)`` pairs of the output *without* ``user_id``; dtypes are
    ``"int64"``, ``"float64"``, ``"string"`` or ``"bool"``.
    ``__call__(batch)``: one output row per input row, same order, with exactly those columns. It must be
    row-wise (a row's output may not depend on the other rows of the batch) and picklable (Spark
    broadcasts it to the executors).
    """

    input_columns: list[str]
    output_schema: list[tuple[str, str]]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame: ...


def arrow_schema(scorer: Scorer, id_col: str = "user_id") -> pa.Schema:
    """Arrow schema of :func:`score`'s output: ``id_col`` (string) then the scorer's columns."""
    return pa.schema([(id_col, pa.string())] + [(c, _ARROW_TYPES[t]) for c, t in scorer.output_schema])


def spark_ddl(scorer: Scorer, id_col: str = "user_id") -> str:
    """Spark DDL schema string of :func:`score`'s output (the ``mapInPandas`` return schema)."""
    return ", ".join(f"`{c}` {_SPARK_TYPES[t]}" for c, t in [(id_col, "string"), *scorer.output_schema])


@dataclass
class GMMScorer:
    """Segment membership from a fitted :class:`~helpers.segment.GMMSegmenter` and its feature pipeline.

    Outputs ``segment`` (most probable segment, 0 = largest), ``prob_0`` ... ``prob_{k-1}``, ``entropy``
    (nats) and, when ``segment_names`` is given, ``segment_name`` -- the columns of ``segments.parquet``.

    Parameters
    ----------
    segmenter : GMMSegmenter
        Fitted (on a sample).
    features : FeatureBuilder
        Fitted on the same sample; its scales and imputation means are constants of the scorer.
    segment_names : sequence of str, optional
        Name of each segment (``personas.name_segments``).
    """

    segmenter: Any
    features: Any
    segment_names: Sequence[str] | None = None
    input_columns: list[str] = field(init=False)
    output_schema: list[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self.segmenter, "model_")
        check_is_fitted(self.features, "mean_")
        k = int(self.segmenter.n_components_)
        if self.segment_names is not None and len(self.segment_names) != k:
            raise ValueError(f"segment_names has {len(self.segment_names)} names for {k} segments")
        self.input_columns = list(dict.fromkeys(f.column for f in self.features._specs()))
        self.output_schema = ([("segment", "int64")]
                              + ([("segment_name", "string")] if self.segment_names is not None else [])
                              + [(f"prob_{j}", "float64") for j in range(k)] + [("entropy", "float64")])

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from .segment import entropy

        proba = self.segmenter.predict_proba(self.features.transform(batch))
        out = pd.DataFrame({"segment": proba.argmax(axis=1).astype(np.int64)}, index=batch.index)
        if self.segment_names is not None:
            out["segment_name"] = np.asarray(self.segment_names, dtype=object)[out["segment"].to_numpy()]
        for j in range(proba.shape[1]):
            out[f"prob_{j}"] = proba[:, j]
        out["entropy"] = entropy(proba)
        return out


#: lookalike features whose missing values ``build_features`` fills with the median *of the frame*: the
#: scorer replaces them with the median of the fitting frame, so a row's score does not depend on its batch
_MEDIAN_FILLED = {"household_size": "household_size", "education_level": "education_level_score",
                  "estimated_net_worth": "estimated_net_worth_score"}


@dataclass
class LookalikeScorer:
    """Calibrated propensity ``P(labelled | x)`` of a fitted :class:`~helpers.lookalike.PropensityLookalike`.

    Build it with :meth:`from_fit` from the frame the model was trained on: the tenure reference date and
    the medians that fill missing enrichment values are taken from that frame and frozen, so scoring is
    row-wise. Outputs ``score`` (calibrated) and ``raw`` (the all-rows model's ranking score). The model
    must be fitted with ``refit=True`` (its all-rows model scores users it has not seen). Users that were
    in the training frame get the all-rows model's in-sample score, not their out-of-fold score.
    """

    model: Any
    reference_date: pd.Timestamp
    fill: dict[str, float]
    sources: tuple[str, ...] = ("1st party", "2nd party", "3rd party")
    input_columns: list[str] = field(init=False)
    output_schema: list[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        from . import schema as S

        if getattr(self.model, "model_", None) is None:
            raise ValueError("the lookalike model has no all-rows model: fit PropensityLookalike(refit=True)")
        self.reference_date = pd.Timestamp(self.reference_date)
        cols = ["age_group", "income_bracket", "customer_since_date", *S.CHANNEL_METRICS, "avg_monthly_spend",
                "last_seen_days_ago", "support_tickets_raised"]
        if "2nd party" in self.sources:
            cols += S.SECOND_PARTY
        if "3rd party" in self.sources:
            cols += S.THIRD_PARTY
        self.input_columns = list(dict.fromkeys(cols))
        self.output_schema = [("score", "float64"), ("raw", "float64")]

    @classmethod
    def from_fit(cls, model: Any, fit_frame: pd.DataFrame,
                 sources: Sequence[str] = ("1st party", "2nd party", "3rd party")) -> "LookalikeScorer":
        """Freeze the frame-dependent constants of ``lookalike.build_features(fit_frame)``."""
        from .lookalike import build_features

        f = build_features(fit_frame, sources=tuple(sources))
        reference = pd.to_datetime(fit_frame["customer_since_date"]).max()
        fill = {}
        for src, col in _MEDIAN_FILLED.items():  # median of the observed values, as build_features fills
            if col in f.X:
                observed = fit_frame[src].notna().to_numpy()
                fill[col] = float(f.X.loc[observed, col].median()) if observed.any() else 0.0
        return cls(model, reference, fill, tuple(sources))

    def features(self, batch: pd.DataFrame) -> pd.DataFrame:
        """The model matrix of ``batch``, with the frozen reference date and imputation values."""
        from .lookalike import build_features

        X = build_features(batch, sources=self.sources, reference_date=self.reference_date).X
        for src, col in _MEDIAN_FILLED.items():
            if col in X:
                X.loc[batch[src].isna().to_numpy(), col] = self.fill[col]
        return X

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        raw = self.model.predict_raw(self.features(batch))
        return pd.DataFrame({"score": self.model._calibrate(raw), "raw": raw}, index=batch.index)


def apply(scorer: Scorer, batch: pd.DataFrame, id_col: str = "user_id") -> pd.DataFrame:
    """Score one pandas batch: ``id_col`` then the scorer's output columns, typed as declared."""
    out = scorer(batch)
    names = [c for c, _ in scorer.output_schema]
    if list(out.columns) != names or len(out) != len(batch):
        raise ValueError(f"scorer {type(scorer).__name__} returned columns {list(out.columns)} and "
                         f"{len(out)} rows for a batch of {len(batch)}; expected {names}, one row per input")
    out = out.reset_index(drop=True)
    out.insert(0, id_col, batch[id_col].astype(str).to_numpy())
    for c, t in scorer.output_schema:
        out[c] = out[c].astype({"string": object, "int64": np.int64, "float64": np.float64, "bool": bool}[t])
    return out


# --- scoring everyone ----------------------------------------------------------------------------
def spark_frame(con: Any, table: ibis.Table):
    """The PySpark DataFrame behind an Ibis table of the Spark backend."""
    return con.raw_sql(con.compile(table))


def score(con: Any, table: ibis.Table, scorer: Scorer, out_path: str | os.PathLike,
          columns: Sequence[str] | None = None, id_col: str = "user_id",
          batch_size: int = DEFAULT_BATCH_SIZE, sort: bool = True) -> Path:
    """Apply ``scorer`` to every row of ``table`` and write ``id_col`` + its outputs as Parquet.

    The table is never collected: DuckDB streams record batches of ``batch_size`` rows through the
    scorer into ``out_path/part-00000.parquet``; Spark broadcasts the scorer and runs it with
    ``mapInPandas`` (Arrow batches of at most ``batch_size`` rows), writing ``out_path/part-*.parquet``.
    Read the result with :func:`helpers.engine.read_parquet` (either engine) or ``pandas.read_parquet``.

    Parameters
    ----------
    con : Ibis backend from :func:`helpers.engine.connect`
    table : ibis.Table
        Holds ``id_col`` and the scorer's ``input_columns`` (e.g. the unified table).
    scorer : Scorer
        E.g. :class:`GMMScorer`, :class:`LookalikeScorer`.
    out_path : path
        Output folder (replaced if it exists).
    columns : sequence of str, optional
        Columns to read from ``table``; default ``scorer.input_columns``.
    id_col : str, default "user_id"
    batch_size : int
        Rows per scored batch.
    sort : bool, default True
        Write rows ordered by ``id_col`` (the engine sorts; the output is then the same bytes-wise order
        on both engines). With False rows come in the engine's order, still keyed by ``id_col``.

    Returns
    -------
    Path
        ``out_path``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cols = list(dict.fromkeys([id_col, *(columns if columns is not None else scorer.input_columns)]))
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks columns {missing} needed by {type(scorer).__name__}; "
                         f"it has {list(table.columns)}")
    expr = table.select(cols)
    out = Path(out_path)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    schema = arrow_schema(scorer, id_col)
    if engine_of(con) == "spark":
        _score_spark(con, expr, scorer, out, id_col, batch_size, sort)
        return out
    if sort:
        expr = expr.order_by(id_col)
    out.mkdir(parents=True)
    with pq.ParquetWriter(out / "part-00000.parquet", schema) as writer:
        for batch in duckdb_batches(con, expr, batch_size):
            if batch.num_rows:
                scored = apply(scorer, batch.to_pandas(), id_col)
                writer.write_table(pa.Table.from_pandas(scored, schema=schema, preserve_index=False))
    return out


def duckdb_batches(con: Any, expr: ibis.Table, batch_size: int):
    """Stream an Ibis expression's result from DuckDB as Arrow record batches (bounded memory).

    Ibis 12's ``Table.to_pyarrow_batches`` calls ``DuckDBPyConnection.fetch_record_batch``, which DuckDB
    2.0 removed; this runs the compiled SQL on the backend's connection and reads its Arrow stream.
    """
    try:
        reader = con.con.sql(con.compile(expr)).to_arrow_reader(batch_size)
    except AttributeError:  # older DuckDB: the Ibis path works
        reader = expr.to_pyarrow_batches(chunk_size=batch_size)
    yield from reader


def _score_spark(con: Any, expr: ibis.Table, scorer: Scorer, out: Path, id_col: str, batch_size: int,
                 sort: bool) -> None:
    spark = con._session
    shared = spark.sparkContext.broadcast(scorer)

    def run(batches):
        s = shared.value
        for pdf in batches:
            if len(pdf):
                yield apply(s, pdf, id_col)

    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(batch_size))
    try:
        scored = spark_frame(con, expr).mapInPandas(run, schema=spark_ddl(scorer, id_col))
        if sort:
            scored = scored.orderBy(id_col)
        scored.write.mode("overwrite").parquet(str(out))
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
        shared.unpersist()


def score_in_memory(scorer: Scorer, df: pd.DataFrame, id_col: str = "user_id") -> pd.DataFrame:
    """Score a pandas frame in one batch (reference for tests and small panels), sorted by ``id_col``."""
    return apply(scorer, df, id_col).sort_values(id_col, kind="mergesort").reset_index(drop=True)


# --- activation audiences, selected by the engine ------------------------------------------------
def segment_audience(scores: ibis.Table, segment: int, segment_name: str | None = None,
                     id_col: str = "user_id") -> ibis.Table:
    """Members of ``segment`` in a scored table (:class:`GMMScorer` output), as an export-ready expression.

    Columns ``user_id``, ``segment_name``, ``score`` (= ``prob_<segment>``, the posterior probability);
    ordered by score descending, then ``user_id``.
    """
    prob = f"prob_{segment}"
    if "segment" not in scores.columns or prob not in scores.columns:
        raise ValueError(f"the scores lack 'segment' or {prob!r}; expected GMMScorer output "
                         f"(has {list(scores.columns)})")
    if segment_name is None and "segment_name" not in scores.columns:
        raise ValueError("give segment_name, or score with GMMScorer(segment_names=...)")
    members = scores.filter(scores["segment"] == segment)
    name = ibis.literal(segment_name) if segment_name is not None else members["segment_name"]
    sel = members.select(user_id=members[id_col].cast("string"), segment_name=name,
                         score=members[prob].cast("float64"))
    return sel.order_by([ibis.desc("score"), "user_id"])


def top_audience(scores: ibis.Table, *, top: int | None = None, share: float | None = None,
                 label: str, score_col: str = "score", exclude: ibis.Table | None = None,
                 id_col: str = "user_id") -> ibis.Table:
    """The ``top`` best-scored users (or the top ``share`` of candidates) as an export-ready expression.

    Candidates are the rows of ``scores`` whose ``id_col`` is not in ``exclude`` (e.g. the seed members a
    lookalike model was trained on). Ranking: ``score_col`` descending, ties by ``user_id`` ascending, so
    the cut-off is the same on every engine. Columns ``user_id``, ``segment_name`` (= ``label``),
    ``score``.
    """
    if (top is None) == (share is None):
        raise ValueError("give exactly one of top (users) or share (of candidates)")
    cand = scores
    if exclude is not None:
        ex = exclude.select(_excluded_id=exclude[id_col].cast("string"))
        cand = cand.anti_join(ex, cand[id_col].cast("string") == ex["_excluded_id"])
    if share is not None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        n_cand = int(cand.count().execute())
        top = int(round(share * n_cand))
    n = int(top)
    if n < 1:
        raise ValueError(f"audience size {n} must be at least 1")
    sel = cand.select(user_id=cand[id_col].cast("string"), segment_name=ibis.literal(label),
                      score=cand[score_col].cast("float64"))
    return sel.order_by([ibis.desc("score"), "user_id"]).limit(n)


def export_from_engine(audience: ibis.Table, out_dir: str | os.PathLike, name: str, *,
                       definition: str | Mapping[str, object], max_rows: int = MAX_EXPORT_ROWS,
                       **export_kwargs: Any) -> dict[str, Path]:
    """Collect an engine-selected audience (small) and write it with :func:`helpers.export.export_audience`.

    The audience is counted by the engine first; more than ``max_rows`` users is refused before anything
    is collected (an activation list is a targeted subset, not the panel). ``export_kwargs`` go to
    ``export_audience`` (``min_size``, ``hash_ids``, ``salt``, ``panel_version``, ``seed``, ``created_at``,
    ``overwrite``); its privacy guard and manifest apply unchanged.
    """
    from .export import export_audience

    n = int(audience.count().execute())
    if n > max_rows:
        raise ValueError(f"audience {name!r} has {n:,} users, more than max_rows={max_rows:,}; an activation "
                         "export is a targeted subset -- narrow it (top / share) or raise max_rows")
    frame = audience.to_pandas()
    return export_audience(frame, out_dir, name, definition=definition, **export_kwargs)
