"""A user's own single table ingested as the run configuration declares it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import ibis

from .. import schema as S
from .files import IngestError
from .reading import _Session, _collect_quarantine, _connection, read_text_source
from .rules import EDGE_SPACE, _text, accepted, rejected, validate
from .results import IngestResult, _coverage, _no_rows_error, _report, coerce_dtypes
from .mapping import _read_mapping, check_mapping


def _derived_column(d: Any, cfg: Any) -> S.Column:
    unit = cfg.metric(d.name).unit if d.name in cfg.metric_names else ""
    return S.Column(d.name, "int", "derived", d.note or f"derived: {d.rule}", unit=unit, required=False,
                    nullable=False, min_value=0)


def ingest_table(path: str | Path | None = None, mapping: str | Path | Mapping[str, str] | None = None,
                 delimiter: str | None = None, encoding: str | None = None, engine: str = "duckdb",
                 con: Any = None, config: Any = None, observation_date: str | None = None) -> IngestResult:
    """Ingest a user's own table (CSV, Parquet file or folder of parts) as the run configuration declares it.

    ``config`` is a :class:`helpers.config.RunConfig`, a path or ``None`` (the 22-column dictionary).
    ``path``, ``mapping``, ``delimiter``, ``encoding`` and ``observation_date`` default to the
    configuration's ``input`` and ``dates`` keys. The identifier and the required columns (metrics and
    dates, or the dictionary's first-party columns) must be present; optional attributes are added empty
    when absent, with a statement of which analyses that limits. Columns the configuration does not declare
    are **kept** as text extension columns (``report["extension_columns"]``). ``when_missing`` rules fill
    blank metrics explicitly (counted in ``report["filled"]``); ``derived`` columns are computed.
    ``churned_in_last_90_days`` (dictionary) is derived when absent and checked against
    ``last_seen_days_ago`` when present. Invalid rows go to the quarantine with their reasons. Raises
    :class:`IngestError` for unreadable files, bad mappings and when no row is accepted.
    """
    from .. import config as C

    cfg = C.load(config)
    if path is None:
        path = cfg.input.resolved_path()
        if path is None:
            raise IngestError(cfg.path or "run configuration", "no input table (key 'input.path' is null)",
                              expected="input_path, or 'input: {path: ...}' in the run configuration")
    path = Path(path)
    delimiter = cfg.input.delimiter if delimiter is None else delimiter
    encoding = cfg.input.encoding if encoding is None else encoding
    observation_date = observation_date or cfg.dates.observation_date
    mapping = cfg.input.mapping if mapping is None else mapping
    columns = S.columns_for(cfg)
    spec = {c.name: c for c in columns}
    key = cfg.id
    m = _read_mapping(mapping, [c.name for c in columns])
    derived = [_derived_column(d, cfg) for d in cfg.derived]
    with _connection(engine, con) as con:
        ses = _Session(con)
        try:
            raw = read_text_source(con, path, None, delimiter, encoding, ses)
            found0 = [c for c in raw.columns if c != "_line"]
            if m is not None:
                check_mapping(m, found0, path)
                raw = raw.rename({new: old for old, new in m.pairs.items() if old != new})
            found = [c for c in raw.columns if c != "_line"]
            required = [c.name for c in columns if c.required]
            missing_required = [c for c in required if c not in found]
            if missing_required:
                raise IngestError(path, f"missing required column(s) {', '.join(missing_required)} "
                                  f"(found: {', '.join(found)})", column=missing_required[0],
                                  expected=("user_id and the first-party columns" if cfg.is_default else
                                            f"the columns the run configuration {cfg.path} declares as required")
                                  + "; map your names with a mapping file (source_column,target_column) or "
                                  "declare your columns in a run configuration (src/helpers/config/presets/README.md)")
            extension = [c for c in found if c not in spec]
            for c in extension:
                spec[c] = S.extension_column(c)
            has_flag = "churned_in_last_90_days" in found
            flag_rule = cfg.is_default and "last_seen_days_ago" in spec
            missing_optional = [c.name for c in columns if not c.required and c.name not in found
                                and not (flag_rule and c.name == "churned_in_last_90_days")]
            raw = raw.mutate(**{c: ibis.null("string") for c in missing_optional})
            filled = {}
            for metric in cfg.metrics:  # explicit rules for blank cells, counted in the report
                rule = metric.when_missing
                if not rule or metric.name not in found:
                    continue
                blank = raw[metric.name].re_replace(EDGE_SPACE, "").nullif("").isnull()
                cond = blank
                if rule.get("if"):
                    col, eq = rule["if"]["column"], rule["if"]["equals"]
                    if col not in found:
                        raise IngestError(path, f"the rule metrics.{metric.name}.when_missing needs column {col!r}",
                                          column=col, expected=f"a column {col!r} (or drop the rule in {cfg.path})")
                    other = raw[col].re_replace(EDGE_SPACE, "").nullif("")
                    cond = cond & (other.try_cast("float64") == float(eq) if isinstance(eq, (int, float))
                                   and not isinstance(eq, bool) else other == str(eq))
                filled[metric.name] = (rule, raw.filter(cond).count())
                raw = raw.mutate(**{metric.name: ibis.ifelse(cond, _text(f"{float(rule['fill']):g}"),
                                                             raw[metric.name])})
            cols = [c.name for c in columns if c.name != key and
                    (c.name != "churned_in_last_90_days" or has_flag or not flag_rule)] + extension
            v = validate(raw, cols, key=key, stage=ses.stage, spec=spec, observation_date=observation_date)
            if has_flag and flag_rule:  # the flag must agree with the business rule
                given, seen = v._v_churned_in_last_90_days, v._v_last_seen_days_ago
                bad = v._reason.isnull() & given.notnull() & (given != (seen > S.CHURN_INACTIVE_DAYS))
                text = ("churned_in_last_90_days is " + ibis.ifelse(given, _text("True"), _text("False"))
                        + " but last_seen_days_ago is " + seen.cast("string")
                        + f"; expected last_seen_days_ago > {S.CHURN_INACTIVE_DAYS}")
                v = v.mutate(_column=ibis.ifelse(bad, _text("churned_in_last_90_days"), v._column),
                             _reason=ibis.ifelse(bad, text, v._reason))
            v = ses.cache(v)
            keep = [key] + [c for c in cols if c != "churned_in_last_90_days" or not flag_rule]
            ok = accepted(v, keep)
            for d in cfg.derived:
                absent = [c for c in d.columns if c not in found]
                if absent:
                    raise IngestError(path, f"derived column {d.name!r} needs column(s) {', '.join(absent)}",
                                      column=absent[0], expected=f"the columns listed under derived in {cfg.path}")
                total = None
                for c in d.columns:
                    piece = ibis.ifelse(ok[c].cast("string").isin(list(d.values)), 1, 0)
                    total = piece if total is None else total + piece
                ok = ok.mutate(**{d.name: total.cast("int64")})
            n_input = int(v.count().to_pandas())
            data = ok.to_pandas()
            rejected_rows = _collect_quarantine(rejected(v, path.name)).sort_values("_line").reset_index(drop=True)
            fill_counts = {}
            for name, (rule, count) in filled.items():
                fill_counts[name] = {"rows": int(count.to_pandas()), "fill": rule["fill"],
                                     "note": rule.get("note", "")}
        finally:
            ses.close()
    quarantine = {path.name: rejected_rows}
    if len(data) == 0:
        raise _no_rows_error(path, n_input, quarantine)
    if flag_rule:
        columns = tuple(c for c in columns if c.name in found or c.name in missing_optional
                        or c.name == "churned_in_last_90_days")
    out_cols = (*columns, *derived, *[spec[c] for c in extension])
    data = coerce_dtypes(data.drop(columns=["_line"]), out_cols)
    if flag_rule:
        data["churned_in_last_90_days"] = (data["last_seen_days_ago"] > S.CHURN_INACTIVE_DAYS).astype("boolean")
    data = data.sort_values(key).reset_index(drop=True)
    S.pandera_schema(out_cols).validate(data, lazy=True)
    extra: dict[str, Any] = {
        "config": cfg.name,
        "extension_columns": extension,
        "ignored_columns": [],
        "filled": fill_counts,
        "derived_columns": {d.name: d.note for d in cfg.derived},
        "mapping": dict(m.pairs) if m is not None else {},
        "observation_date": observation_date,
    }
    if "traveler_type" in data and set(S.THIRD_PARTY) <= set(data.columns):
        extra["match_rate_partner"] = round(float(data["traveler_type"].notna().mean()), 6)
        extra["match_rate_third_party"] = round(float(data[S.THIRD_PARTY].notna().any(axis=1).mean()), 6)
    if flag_rule:
        extra["churn_flag"] = "checked against last_seen_days_ago" if has_flag else "derived from last_seen_days_ago"
    return IngestResult(data, quarantine, _report(len(data), _coverage(data, out_cols), n_input, quarantine,
                                                  missing_optional, extra, out_cols), out_cols)
