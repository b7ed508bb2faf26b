"""The synthetic source layout (CRM spine, first-party files, partner and enrichment match tables) ingested into
the unified table as one Ibis plan, collected or written by the engine per ``user_id`` range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import pandas as pd

from .. import engine as E
from .. import schema as S
from .files import locate_source
from .reading import _Session, _connection, read_text_source
from .rules import _text, accepted, rejected, validate
from .results import IngestResult, _coverage, _no_rows_error, _report, _safe_name, coerce_dtypes, retype_parquet


ORPHAN_REASON = "user_id not in crm_users.csv (or its CRM row was rejected)"


INCOMPLETE = "unified (incomplete customers)"


#: CRM rows above which DuckDB fetches the quarantine tables one at a time (see IngestPlan.collect_quarantine)
QUARANTINE_ONE_AT_A_TIME = 2_000_000


@dataclass
class IngestPlan:
    """Ibis expressions of one ingestion, not yet executed (see :func:`plan_sources`)."""

    # Not sorted: a global sort costs Spark a sampling job per sort; collectors and writers sort at the end.
    unified: ibis.Table                  # the 22 columns + _partner_matched/_third_matched
    quarantine: dict[str, ibis.Table]    # per source (+ incomplete customers)
    rows_input: ibis.Table               # one row per source file: source, n (input rows)
    session: _Session
    columns: tuple = S.COLUMNS           # the unified table's columns (dictionary + CRM extension columns)
    ids: ibis.Table | None = None        # accepted CRM identifiers (column _uid): the spine of the joins

    def id_ranges(self, n: int, rows_per_range: int) -> list[ibis.Value | None]:
        """Conditions on ``user_id`` splitting the spine into ranges of about ``rows_per_range`` identifiers
        (``[None]``: one range), in ``user_id`` order, so ranges written one after the other are sorted."""
        k = max(1, -(-int(n) // int(rows_per_range)))
        if k == 1 or self.ids is None:
            return [None]
        step = -(-int(n) // k)
        r = self.ids.mutate(_rn=ibis.row_number().over(order_by=self.ids._uid))
        bounds = r.filter((r._rn % step == step - 1)).select("_uid").order_by("_uid").to_pandas()["_uid"].tolist()
        u = self.unified.user_id
        conds = [u < bounds[0]] if bounds else []
        conds += [(u >= lo) & (u < hi) for lo, hi in zip(bounds, bounds[1:])]
        return conds + [u >= bounds[-1]] if bounds else [None]

    def input_rows(self) -> dict[str, int]:
        """Input rows per source file, in the order the sources are read."""
        got = self.rows_input.to_pandas()
        n = dict(zip(got["source"], got["n"].astype(int)))
        return {k: n[k] for k in self.quarantine if k in n}

    def collect_quarantine(self, one_at_a_time: bool = False) -> dict[str, pd.DataFrame]:
        """All quarantine tables as pandas, in one query (one job on Spark), or one table at a time on DuckDB.

        DuckDB runs a union's branches at once, so the joins behind the incomplete-customer quarantine and
        every source's validation hold their memory together: at 10M users that query ran out of a 5 GB
        limit. ``one_at_a_time`` releases each join's memory before the next (DuckDB only; same tables);
        at 1M it was 9 s slower (72 s against 63 s for notebook 01), hence only for large panels.
        """
        cols = list(dict.fromkeys(c for t in self.quarantine.values() for c in t.columns))
        parts = []
        for i, t in enumerate(self.quarantine.values()):
            parts.append(t.select(_q=ibis.literal(i), **{c: t[c].cast("int64" if c == "_line" else "string")
                                                           if c in t.columns else
                                                           ibis.null("int64" if c == "_line" else "string")
                                                           for c in cols}))
        if self.session.engine == "spark" or not one_at_a_time:
            got = ibis.union(*parts).to_pandas()
        else:
            got = pd.concat([p.to_pandas() for p in parts], ignore_index=True)
        out = {}
        for i, (name, t) in enumerate(self.quarantine.items()):
            df = got[got["_q"] == i][list(t.columns)]
            sort = ["_line"] if "_line" in t.columns else ["user_id"]
            df = df.sort_values(sort, kind="stable").reset_index(drop=True)
            for c in df.columns:
                df[c] = df[c].astype("Int64") if c == "_line" else df[c].astype("string")
            out[name] = df
        return out

    def close(self) -> None:
        self.session.close()


def plan_sources(con: Any, raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8",
                 observation_date: str | None = None, config: Any = None,
                 spill_dir: str | Path | None = None) -> IngestPlan:
    """Build the ingestion of :mod:`helpers.generate`'s source layout as Ibis expressions on ``con``.

    The CRM file is the spine: one input row per customer. A customer is accepted when their CRM row
    and their engagement, billing, activity and support rows are valid; partner and enrichment
    attributes are joined through the match tables where present. Rows of any file that cannot be
    used (invalid values, duplicates, identifiers unknown to the CRM) go to the quarantine with the reason.

    Columns of the CRM file beyond the dictionary are kept: those the run configuration declares
    (``config``, default: ``state`` and ``gender``) are validated by their rule, others are kept as text.
    Dates after ``observation_date`` (or before 1900) are quarantined. ``spill_dir``: intermediate tables
    are kept there as Parquet instead of in the engine's memory.
    """
    from .. import config as C
    from ..generate import PARTNER_FILE, PARTNER_MATCH, SOURCE_FILES, THIRD_FILE, THIRD_MATCH

    cfg = C.load(config)
    spec = {c.name: c for c in S.columns_for(cfg)} if cfg.is_default else dict(S.BY_NAME)
    ses = _Session(con, Path(spill_dir) if spill_dir is not None else None)
    try:
        def load(name: str, required: list[str], columns: list[str], key: str = "user_id",
                 extra: list[str] | None = None, keep_extra: bool = False) -> ibis.Table:
            raw = read_text_source(con, locate_source(raw_dir, name), required, delimiter, encoding, ses)
            if keep_extra:
                for c in raw.columns:
                    if c != "_line" and c not in columns and c != key:
                        spec.setdefault(c, S.extension_column(c))
                        columns = [*columns, c]
                        crm_extra.append(c)
            v = ses.cache(validate(raw, columns, key, extra, stage=ses.stage, spec=spec,
                                   observation_date=observation_date))
            rows.append(v.aggregate(source=_text(name), n=v.count()))
            return v

        rows: list[ibis.Table] = []
        crm_extra: list[str] = []
        checked = {name: load(name, cols, cols, keep_extra=name == "crm_users.csv")
                   for name, cols in SOURCE_FILES.items()}
        crm_cols = list(dict.fromkeys([*SOURCE_FILES["crm_users.csv"], *crm_extra]))
        present_ext = [c for c in crm_cols if c not in S.BY_NAME]
        declared_ext = [c for c in spec if c not in S.BY_NAME and not spec[c].kind == "text"]
        crm_extra = list(dict.fromkeys([*declared_ext, *present_ext]))  # declared first, absent ones empty
        crm = accepted(checked["crm_users.csv"], crm_cols)
        crm_ids = crm.select(_uid="user_id")
        quarantine: dict[str, ibis.Table] = {"crm_users.csv": rejected(checked["crm_users.csv"], "crm_users.csv")}
        first: dict[str, ibis.Table] = {}
        for name, cols in list(SOURCE_FILES.items())[1:]:
            v = checked[name]
            ok = v.filter(v._reason.isnull())
            orphans = ok.anti_join(crm_ids, ok._v_user_id == crm_ids._uid)
            quarantine[name] = rejected(v, name).union(
                rejected(orphans, name, where=ibis.literal(True), column=_text("user_id"),
                         reason=_text(ORPHAN_REASON)))
            first[name] = accepted(v, cols)
        pairs = {}
        for prof_file, match_file, key, cols in [(PARTNER_FILE, PARTNER_MATCH, "partner_id", S.SECOND_PARTY),
                                                 (THIRD_FILE, THIRD_MATCH, "tp_id", S.THIRD_PARTY)]:
            prof = load(prof_file, [key, *cols], cols, key=key)  # noqa: B023
            match = load(match_file, ["user_id", key], [], key="user_id", extra=[key])
            prof_ok = accepted(prof, [key, *cols])
            keys = prof_ok.select(_k=key)
            ok = match.filter(match._reason.isnull())
            no_user = ok.anti_join(crm_ids, ok._v_user_id == crm_ids._uid)
            known = ok.semi_join(crm_ids, ok._v_user_id == crm_ids._uid)
            no_key = known.anti_join(keys, known[f"_v_{key}"] == keys._k)
            good = known.semi_join(keys, known[f"_v_{key}"] == keys._k)
            quarantine[prof_file] = rejected(prof, prof_file)
            quarantine[match_file] = rejected(match, match_file).union(
                rejected(no_user, match_file, where=ibis.literal(True), column=_text("user_id"),
                         reason=_text(ORPHAN_REASON))).union(
                rejected(no_key, match_file, where=ibis.literal(True), column=_text(key),
                         reason=_text(f"{key} has no valid row in {prof_file}")))
            g = good.select(_uid=good._v_user_id, _k=good[f"_v_{key}"])
            pairs[key] = g.join(prof_ok, g._k == prof_ok[key]).select("_uid", *cols, _matched=ibis.literal(True))

        parts = {"engagement": first["engagement.csv"], "billing": first["billing.csv"],
                 "activity": first["activity.csv"], "support": first["support.csv"]}
        rights = {k: t.select(_uid=t.user_id, **{c: t[c] for c in t.columns if c not in ("user_id", "_line")},
                              _has=ibis.literal(True)) for k, t in parts.items()}
        rights["partner"], rights["third"] = pairs["partner_id"], pairs["tp_id"]
        j = crm
        flags = {}
        for k, r in rights.items():
            r = r.rename({f"_uid_{k}": "_uid", **{f"_flag_{k}": c for c in r.columns if c in ("_has", "_matched")}})
            j = j.left_join(r, j.user_id == r[f"_uid_{k}"])
            flags[k] = f"_flag_{k}"
        j = j.select(*S.COLUMN_NAMES[:-1], **{c: j[c] if c in present_ext else ibis.null("string")
                                              for c in crm_extra}, **{k: j[f].notnull() for k, f in flags.items()})
        complete = j.engagement & j.billing & j.activity & j.support
        out = {c: j[c] for c in S.COLUMN_NAMES[:-1]}
        unified = j.filter(complete).select(
            **out, churned_in_last_90_days=j.last_seen_days_ago > S.CHURN_INACTIVE_DAYS,
            **{c: j[c] for c in crm_extra}, _partner_matched=j.partner, _third_matched=j.third)
        why = None
        for k in parts:
            piece = ibis.ifelse(j[k], _text(""), _text(f", {k}.csv"))
            why = piece if why is None else why + piece
        inc = j.filter(~complete)
        quarantine[INCOMPLETE] = inc.select(
            user_id=inc.user_id, _source=_text("unified"), _column=_text("first-party"),
            _reason="no valid row in " + why.substr(2))
        columns = (*S.COLUMNS, *[spec[c] for c in crm_extra])
        return IngestPlan(unified, quarantine, ibis.union(*rows), ses, columns, crm_ids)
    except BaseException:
        ses.close()
        raise


def ingest_sources(raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8", engine: str = "duckdb",
                   con: Any = None, observation_date: str | None = None, config: Any = None,
                   stage_dir: str | Path | None = None, rows_per_range: int = 1_000_000) -> IngestResult:
    """Ingest the separate source files of :mod:`helpers.generate`'s layout into the unified table.

    Runs :func:`plan_sources` on ``engine`` (``duckdb`` or ``spark``; or on the Ibis backend ``con`` from
    :func:`helpers.engine.connect`). Without ``stage_dir`` the unified table (sorted by ``user_id``) is
    collected as pandas (``result.data``). With ``stage_dir`` nothing passes through one pandas frame: the
    engine sorts and writes the table as Parquet (spilling to ``stage_dir/.spill`` on DuckDB), which is
    re-typed batch by batch to the dictionary's dtypes into ``stage_dir/rich_audience_data.parquet``
    (``result.staged``, put in place by :func:`write_outputs`); the report and the panel version are computed
    in that pass. The joins run per range of about ``rows_per_range`` identifiers, written one after the
    other in ``user_id`` order, so that memory follows the range, not the panel. Both engines and both
    modes give the same table, quarantine and report. Raises
    :class:`IngestError` when no customer is accepted.
    """
    from ..artifacts import UNIFIED_PARQUET

    spill = Path(stage_dir) / ".spill" if stage_dir is not None else None
    with _connection(engine, con, spill) as con:
        plan = plan_sources(con, raw_dir, delimiter, encoding, observation_date, config, spill)
        try:
            n_rows = plan.input_rows()
            quarantine = plan.collect_quarantine(one_at_a_time=n_rows["crm_users.csv"] > QUARANTINE_ONE_AT_A_TIME)
            flags = ["_partner_matched", "_third_matched"]
            if stage_dir is None:
                joined = plan.unified.to_pandas().sort_values("user_id", kind="stable").reset_index(drop=True)
            else:
                # one join per user_id range: the joins' hash tables hold one range at a time (10M users in 8 GB)
                expr = plan.unified.select(*[c.name for c in plan.columns], *flags)
                engine_files = []
                for i, cond in enumerate(plan.id_ranges(n_rows["crm_users.csv"], rows_per_range)):
                    engine_files.append(Path(stage_dir) / f"unified.engine-{i:04d}.parquet")
                    E.write_parquet(con, expr if cond is None else expr.filter(cond), engine_files[-1],
                                    order_by=["user_id"])
        finally:
            plan.close()
    n_input = n_rows["crm_users.csv"]
    staged = None
    if stage_dir is None:
        if len(joined) == 0:
            raise _no_rows_error(Path(raw_dir) / "crm_users.csv", n_input, quarantine)
        data = coerce_dtypes(joined, plan.columns)
        S.pandera_schema(plan.columns).validate(data, lazy=True)
        n, coverage = len(data), _coverage(data, plan.columns)
        matched = {f: float(joined[f].mean()) for f in flags}
    else:
        data, staged = None, Path(stage_dir) / UNIFIED_PARQUET
        typed = retype_parquet(engine_files, staged, plan.columns, carry=flags)
        n, coverage = typed.n, typed.coverage
        matched = {f: typed.sums[f] / n if n else 0.0 for f in flags}
        if n == 0:
            staged.unlink(missing_ok=True)
            raise _no_rows_error(Path(raw_dir) / "crm_users.csv", n_input, quarantine)
    extra = {
        "match_rate_partner": round(matched["_partner_matched"], 6),
        "match_rate_third_party": round(matched["_third_matched"], 6),
        "source_rows_input": n_rows,
        "extension_columns": [c.name for c in plan.columns[len(S.COLUMNS):] if c.kind == "text"],
        "observation_date": observation_date,
    }
    rep = _report(n, coverage, n_input, quarantine, [], extra, plan.columns)
    if staged is not None:
        rep["panel_version"] = typed.fingerprint
    return IngestResult(data, quarantine, rep, plan.columns, staged)


def ingest_to_parquet(raw_dir: str | Path, out_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8",
                      engine: str = "duckdb", con: Any = None, observation_date: str | None = None,
                      config: Any = None, rows_per_range: int = 1_000_000) -> dict:
    """Ingest the sources and write the results from the engine to Parquet (nothing in one pandas frame).

    For panels larger than memory (e.g. 10M users from :func:`helpers.generate.write_sources_chunked`):
    :func:`ingest_sources` with ``stage_dir=out_dir``, then ``out_dir/rich_audience_data.parquet`` (the 22
    columns and the CRM extension columns, sorted by ``user_id``, one file on both engines),
    ``out_dir/quarantine/<source>.parquet`` (``_source, _line, _column, _reason`` + raw text) and
    ``out_dir/ingest_report.json`` (the report of :func:`ingest_sources`, with the panel version), which is
    also returned. Nothing is written when no customer is accepted (:class:`IngestError`).
    """
    out_dir = Path(out_dir)
    res = ingest_sources(raw_dir, delimiter, encoding, engine, con, observation_date, config, stage_dir=out_dir,
                         rows_per_range=rows_per_range)
    qdir = out_dir / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    for name, q in res.quarantine.items():
        q.to_parquet(qdir / f"{_safe_name(name)}.parquet", index=False)
    (out_dir / "ingest_report.json").write_text(json.dumps(res.report, indent=2, default=str))
    return dict(res.report, parquet=str(res.staged))
