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

* DuckDB: the query result is streamed as Arrow record batches and each batch is scored and appended to
  a Parquet file, so memory is bounded by the batch size;
* Spark: the scorer is broadcast (``SparkContext.broadcast``) and applied with ``DataFrame.mapInPandas``
  under a declared output schema; the executors write the Parquet parts.

Both are :func:`helpers.engine.map_batches`; this module never branches on the engine.

The same input gives the same numbers on both engines (tests/test_scoring.py): scorers are row-wise by
construction -- features depend only on the row and on constants fixed at fit (scales, imputation
values, the tenure reference date, the per-user dequantisation hash of ``user_id``), never on the batch.

:func:`helpers.audience.segment_expr` and :func:`helpers.audience.top_expr` (the audience selector's
engine-side rule; :func:`top_audience` is a thin call of it) select an activation audience with the engine
(ordered by score descending, then ``user_id``), and :func:`export_from_engine` collects only that audience
and hands it to :func:`helpers.export.export_audience` (privacy guard, manifest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa

from . import engine as E

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
        E.g. :class:`GMMScorer`.
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
    E.map_batches(con, expr, partial(apply, scorer, id_col=id_col), out, arrow_schema=arrow_schema(scorer, id_col),
                  spark_schema=spark_ddl(scorer, id_col), batch_size=batch_size, order_by=[id_col] if sort else ())
    return out


# --- activation audiences, selected by the engine ------------------------------------------------
def top_audience(scores: ibis.Table, *, top: int | None = None, share: float | None = None,
                 label: str, score_col: str = "score", exclude: ibis.Table | None = None,
                 id_col: str = "user_id") -> ibis.Table:
    """Engine-side top-``top`` (or top-``share``) audience: a thin call of :func:`helpers.audience.top_expr`,
    the selector's rule (score descending, ties by ``user_id``), kept for the benchmarks' scripts."""
    from .audience import top_expr

    return top_expr(scores, top=top, share=share, label=label, score_col=score_col, exclude=exclude,
                    id_col=id_col)


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
