"""Long tables (one row per user and month / transaction / exposure / post): their rules, ingestion with
quarantine and orphan check, and writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import pandas as pd

from .. import engine as E
from .. import schema as S
from .reading import _Session, _collect_quarantine, _connection, read_text_source
from .rules import _text, rejected, valid_values, validate
from .results import IngestResult, _no_rows_error, _put_in_place, coerce_dtypes, write_typed


@dataclass(frozen=True)
class EventSpec:
    """The rules of a long table: its identifier, its columns and the key that must be unique."""

    columns: tuple[S.Column, ...]
    id: str = "user_id"
    unique: tuple[str, ...] = ()      # e.g. ("user_id", "month"): every copy of a duplicate is rejected
    description: str = ""

    @property
    def names(self) -> list[str]:
        return [self.id, *[c.name for c in self.columns]]


def _num(name, kind="float", lo=0.0, hi=None, unit="", desc="", required=True):
    return S.Column(name, kind, "1st party", desc or name, unit=unit, required=required, nullable=not required,
                    min_value=lo, max_value=hi)


ENGAGEMENT_STATES = ("active", "light", "dormant", "churned")


#: The long tables notebook 01 ingests when present in ``raw/`` (file ``<name>.parquet``, a folder of parts,
#: or ``<name>.csv``). Columns not listed are kept as text.
EVENT_SPECS: dict[str, EventSpec] = {
    "monthly_activity": EventSpec((
        S.Column("month", "date", "1st party", "First day of the month."),
        S.Column("engagement_state", "category", "1st party", "Engagement state that month.",
                 categories=ENGAGEMENT_STATES),
        _num("minutes_social", hi=1440, unit="min/day"), _num("minutes_video", hi=1440, unit="min/day"),
        _num("minutes_podcasts", hi=1440, unit="min/day"), _num("conversions", "int", hi=100000, unit="count"),
        _num("spend", hi=1e7, unit="USD")), unique=("user_id", "month"),
        description="one row per user and month"),
    "transactions": EventSpec((S.Column("date", "date", "1st party", "Transaction date."),
                               _num("amount", hi=1e7, unit="USD")), description="one row per purchase"),
    "exposures": EventSpec((S.Column("date", "date", "1st party", "Exposure date."),
                            _num("hour", "int", 0, 23, unit="h", required=False),
                            S.Column("channel", "text", "1st party", "Media channel."),
                            _num("impressions", "int", hi=1e9, unit="count", required=False)),
                           description="one row per user, day, hour and channel"),
    "posts": EventSpec((S.Column("post_id", "text", "1st party", "Post identifier (unique)."),
                        S.Column("platform", "text", "1st party", "Platform of the post.", required=False,
                                 nullable=True),
                        S.Column("date", "date", "1st party", "Post date."),
                        S.Column("text", "text", "1st party", "Post text.", required=False, nullable=True)),
                       unique=("post_id",), description="one row per post"),
}


def locate_event_source(raw_dir: str | Path, name: str) -> Path | None:
    """``raw/<name>.parquet`` (file or folder of parts), ``raw/<name>/`` or ``raw/<name>.csv``; None if absent."""
    raw_dir = Path(raw_dir)
    for cand in (raw_dir / f"{name}.parquet", raw_dir / name, raw_dir / f"{name}.csv"):
        if cand.exists():
            return cand
    return None


def ingest_event_table(name: str, path: str | Path, spec: EventSpec | None = None, con: Any = None,
                       engine: str = "duckdb", known_ids: Any = None, observation_date: str | None = None,
                       delimiter: str = ",", encoding: str = "utf-8", id_column: str | None = None,
                       stage_dir: str | Path | None = None) -> IngestResult:
    """Validate a long table (many rows per user) with quarantine, on either engine.

    ``spec`` defaults to :data:`EVENT_SPECS` ``[name]`` (an unknown name: the id and every other column as
    text). Rules: the id is present and free of control characters; dates parse, are not before 1900 and
    not after ``observation_date``; numbers in range; categories known; the ``unique`` key (e.g.
    ``user_id, month``) is unique (every copy of a duplicate is rejected); an id not in ``known_ids``
    (the accepted customers of the unified table) is an orphan. Every rejected row is in the quarantine with
    the file, physical line, column and reason, so accepted + rejected = input. Columns not in the spec are
    kept as text. Raises :class:`IngestError` for unreadable files and when no row is accepted.

    ``known_ids``: the identifiers (a sequence), or the :class:`IngestResult` of the unified table (read on
    the engine when it is staged). Without ``stage_dir`` the accepted rows are collected as pandas
    (``result.data``); with it the engine sorts and writes them (``stage_dir/<name>.parquet`` with the pandas
    dtypes, :func:`helpers.ingest.write_typed`; ``result.staged``; :func:`write_event_table` puts it in
    place), for tables larger than memory.

    Two scans of the source, nothing materialised: the first judges every row and collects only the rejected
    ones (the quarantine); the second takes the input less the quarantined lines, parses it (Parquet numbers
    and dates are read typed, ``keep_types``) and writes it sorted. No pandas frame holds the table, and
    memory stays bounded by the engine's limit (DuckDB spills the window of the ``unique`` check and the sort).
    """
    path = Path(path)
    spec = spec or EVENT_SPECS.get(name) or EventSpec((), id=id_column or "user_id")
    if id_column:
        spec = EventSpec(spec.columns, id=id_column, unique=tuple(id_column if c == spec.id else c for c in spec.unique),
                         description=spec.description)
    rules = {c.name: c for c in spec.columns}
    required = [spec.id] + [c.name for c in spec.columns if c.required]
    spill = Path(stage_dir) / ".spill" if stage_dir is not None else None
    with _connection(engine, con, spill) as con:
        ses = _Session(con, spill)
        try:
            raw = read_text_source(con, path, required, delimiter, encoding, ses, keep_types=True)
            found = [c for c in raw.columns if c != "_line"]
            extension = [c for c in found if c != spec.id and c not in rules]
            absent = [c.name for c in spec.columns if c.name not in found]
            raw = raw.mutate(**{c: ibis.null("string") for c in absent})
            for c in extension:
                rules[c] = S.extension_column(c)
            cols = [c.name for c in spec.columns] + extension
            n_input = int(raw.count().to_pandas())
            quarantine = {path.name: _quarantine(ses, raw, spec, cols, rules, known_ids, observation_date,
                                                 path.name)}
            # accepted rows: the input less the quarantined lines, parsed again (cheap) rather than judged again
            kept = raw
            if len(quarantine[path.name]):
                lines = ses.frame(pd.DataFrame({"_q": quarantine[path.name]["_line"].astype("int64")}))
                kept = raw.anti_join(lines, raw._line == lines._q)
            ok = valid_values(kept, cols, rules, key=spec.id)
            out_cols = (S.Column(spec.id, "id", "1st party", "identifier"), *[rules[c] for c in cols])
            sort = [c for c in (spec.id, *[c.name for c in spec.columns if c.kind == "date"]) if c in ok.columns]
            if stage_dir is None:
                data = ok.to_pandas()
            else:
                staged = Path(stage_dir) / f"{name}.parquet"
                typed = write_typed(con, ok, staged, out_cols, order_by=[*sort, "_line"], count_distinct=spec.id)
        finally:
            ses.close()
    if stage_dir is None:
        staged = None
        if len(data) == 0:
            raise _no_rows_error(path, n_input, quarantine)
        data = coerce_dtypes(data.drop(columns=["_line"]).assign(_order=data["_line"]), out_cols).assign(
            _order=data["_line"].to_numpy()).sort_values([*sort, "_order"], kind="stable").drop(columns="_order") \
            .reset_index(drop=True)
        n_rows, n_users = len(data), int(data[spec.id].nunique())
    else:
        data, n_rows, n_users = None, typed.n, typed.n_users
        if n_rows == 0:
            staged.unlink(missing_ok=True)
            raise _no_rows_error(path, n_input, quarantine)
    rep = {"name": name, "file": str(path), "n_input": n_input, "n_rows": int(n_rows),
           "n_rejected": int(n_input - n_rows), "n_users": n_users,
           "extension_columns": extension, "absent_optional_columns": absent,
           "observation_date": observation_date,
           "quarantined_rows_by_source": {path.name: int(len(quarantine[path.name]))}}
    assert rep["n_rows"] + rep["n_rejected"] == rep["n_input"]
    return IngestResult(data, quarantine, rep, out_cols, staged)


def _quarantine(ses: _Session, raw: ibis.Table, spec: EventSpec, cols: list[str], rules: dict[str, S.Column],
                known_ids: Any, observation_date: str | None, source: str) -> pd.DataFrame:
    """The rejected rows of a long table (value rules, duplicate keys, orphans), collected in line order."""
    v = validate(raw, cols, key=spec.id, stage=ses.stage, spec=rules, observation_date=observation_date,
                 key_unique=False)
    if spec.unique:
        w = ibis.window(group_by=[v[f"_v_{c}"] for c in spec.unique])
        v = ses.stage(v.mutate(_copies=v._line.count().over(w)))
        dup = v._reason.isnull() & (v._copies > 1)
        key_text = ", ".join(spec.unique)
        v = v.mutate(_column=ibis.ifelse(dup, _text(spec.unique[-1]), v._column),
                     _reason=ibis.ifelse(dup, _text(f"duplicate ({key_text}) (every copy is rejected)"),
                                         v._reason)).drop("_copies")
    if known_ids is not None:
        ids = known_ids if isinstance(known_ids, ibis.Table) else _id_table(ses, known_ids)
        v = ses.stage(v.left_join(ids, v[f"_v_{spec.id}"] == ids._known).mutate(
            _orphan=lambda t: t._known.isnull()))
        orphan = v._reason.isnull() & v._orphan
        v = v.mutate(_column=ibis.ifelse(orphan, _text(spec.id), v._column),
                     _reason=ibis.ifelse(orphan, _text(f"{spec.id} not in the unified table (unknown "
                                                       "customer, or their row was rejected)"), v._reason))
        v = v.drop("_known", "_orphan")
    return _collect_quarantine(rejected(v, source)).sort_values("_line").reset_index(drop=True)


def _id_table(ses: _Session, ids: Any) -> ibis.Table:
    """The known identifiers as a one-column table ``_known`` on the session's engine."""
    if isinstance(ids, IngestResult):
        if ids.staged is None:
            ids = ids.data[ids.key]
        else:
            t = ses.own(E.read_parquet(ses.con, ids.staged, table_name=E.temp_name("ids")))
            return t.select(_known=t[ids.key].cast("string")).distinct()
    return ses.frame(pd.DataFrame({"_known": pd.Series(pd.unique(pd.Series(ids).astype(str)), dtype=object)}))


def write_event_table(result: IngestResult, processed_dir: str | Path, quarantine_dir: str | Path,
                      name: str) -> dict[str, Path]:
    """``processed/<name>.parquet`` and its quarantine ``quarantine/<name>.csv`` (only once rows were accepted)."""
    processed_dir, quarantine_dir = Path(processed_dir), Path(quarantine_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    out = {"parquet": processed_dir / f"{name}.parquet", "quarantine": quarantine_dir / f"{name}.csv"}
    _put_in_place(result, out["parquet"])
    q = next(iter(result.quarantine.values()))
    out["quarantine"].unlink(missing_ok=True)
    if len(q):
        q.to_csv(out["quarantine"], index=False)
    return out
