"""Ingestion: load each source, validate it against the data dictionary, join, and write one table.

Every input row ends up either in the unified table or in ``data/quarantine/`` with the reason, the file
and its line number, so that accepted + rejected always equals the input row count. Structural problems
that make a whole file unreadable (missing file or column, empty file, wrong delimiter or encoding) raise
:class:`IngestError` naming the file, the column or line, and what was expected.

Joins and aggregations run as set operations in DuckDB so the same steps can move to a scale-out engine.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import duckdb
import numpy as np
import pandas as pd

from . import schema as S

DELIMITERS = [",", ";", "\t", "|"]
TRUE_STRINGS = {"true", "t", "1", "yes", "y"}
FALSE_STRINGS = {"false", "f", "0", "no", "n"}
MAX_ROWS_IN_MESSAGE = 10


class IngestError(ValueError):
    """A source cannot be read at all; the message names file, column/line and what was expected."""

    def __init__(self, file: str | Path, problem: str, column: str | None = None,
                 rows: list[int] | None = None, expected: str | None = None):
        self.file, self.column, self.rows, self.expected = str(file), column, rows or [], expected
        parts = [f"{file}: {problem}"]
        if column:
            parts.append(f"column {column!r}")
        if rows:
            shown = ", ".join(map(str, rows[:MAX_ROWS_IN_MESSAGE]))
            more = f" (+{len(rows) - MAX_ROWS_IN_MESSAGE} more)" if len(rows) > MAX_ROWS_IN_MESSAGE else ""
            parts.append(f"line(s) {shown}{more}")
        if expected:
            parts.append(f"expected {expected}")
        super().__init__("; ".join(parts))


# --- reading -----------------------------------------------------------------------------------------
def _check_encoding(path: Path, encoding: str) -> None:
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise IngestError(path, f"bytes that are not valid {encoding} (byte {e.start}: {data[e.start:e.start + 1]!r})",
                          rows=[line], expected=f"a {encoding}-encoded file; pass encoding='latin-1' (or the "
                          "file's real encoding) if it was exported that way") from None


def read_source(path: str | Path, required: list[str] | None = None, delimiter: str = ",",
                encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV or Parquet source as text columns, with structural checks.

    Every value is kept as a string (``<NA>`` for empty cells) so that nothing is lost before
    validation; a ``_line`` column holds the 1-based line number of each row in the file (header = 1).

    Raises
    ------
    IngestError
        For a missing or empty file, wrong encoding, a delimiter other than ``delimiter``, or a required
        column that is absent.
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(path, "file not found", expected="the file produced by the source system")
    if path.stat().st_size == 0:
        raise IngestError(path, "file is empty (0 bytes)", expected="a header line and data rows")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        for c in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[c]):
                df[c] = df[c].dt.strftime("%Y-%m-%d")
        df = df.astype("string")
    else:
        _check_encoding(path, encoding)
        with open(path, encoding=encoding, newline="") as f:
            header = f.readline()
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], sep=delimiter,
                             encoding=encoding, quoting=csv.QUOTE_MINIMAL)
        except pd.errors.ParserError as e:
            raise IngestError(path, f"cannot be parsed as {delimiter!r}-delimited text ({e})",
                              expected=f"{delimiter!r}-delimited rows with as many fields as the header") from None
        if df.shape[1] == 1:
            found = [d for d in DELIMITERS if d != delimiter and d in header]
            if found:
                raise IngestError(path, f"the header is {found[0]!r}-delimited",
                                  expected=f"{delimiter!r}-delimited columns; pass delimiter={found[0]!r}")
        df = df.astype("string")
    if len(df) == 0:
        raise IngestError(path, "file has a header but no data rows", expected="at least one data row")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in (required or []) if c not in df.columns]
    if missing:
        raise IngestError(path, f"missing column(s) {', '.join(missing)} (found: {', '.join(df.columns)})",
                          column=missing[0], expected="the columns of the data dictionary (see README)")
    df.insert(0, "_line", np.arange(2, len(df) + 2))
    return df


# --- parsing and validating values ----------------------------------------------------------------
def parse_column(raw: pd.Series, col: S.Column) -> tuple[pd.Series, pd.Series]:
    """Parse a text column into its dictionary dtype.

    Returns ``(values, problem)`` where ``problem`` is a string per row (``<NA>`` where the value is valid).
    Missing values are a problem only where the column is not nullable.
    """
    s = raw.str.strip()
    missing = s.isna() | (s == "")
    problem = pd.Series(pd.NA, index=s.index, dtype="string")
    if col.kind in ("id", "category", "ordinal", "multi"):
        values = s.where(~missing).astype("string")
        if col.kind in ("category", "ordinal"):
            bad = ~missing & ~values.isin(col.categories)
            problem[bad] = "unknown category " + values[bad].fillna("") + f"; expected {col.allowed()}"
        elif col.kind == "multi":
            bad = ~missing & ~values.fillna("").str.fullmatch(S.multi_pattern(col.categories))
            problem[bad] = "invalid value " + values[bad].fillna("") + f"; expected {col.allowed()}"
    elif col.kind in ("int", "float"):
        num = pd.to_numeric(s.where(~missing), errors="coerce")
        bad_type = ~missing & num.isna()
        problem[bad_type] = "not a number: " + s[bad_type].fillna("") + f"; expected {col.allowed()}"
        if col.kind == "int":
            frac = ~missing & ~bad_type & (num % 1 != 0)
            problem[frac] = "not an integer: " + s[frac].fillna("") + f"; expected {col.allowed()}"
        out = ~missing & ~bad_type & ((num < col.min_value) |
                                      ((num > col.max_value) if col.max_value is not None else False))
        problem[out & problem.isna()] = ("out of range: " + s[out & problem.isna()].fillna("")
                                         + f"; expected {col.allowed()}")
        ok = problem.isna() & ~missing
        values = num.where(ok)
        values = values.round().astype("Int64") if col.kind == "int" else values.astype("float64")
    elif col.kind == "date":
        dates = pd.to_datetime(s.where(~missing), format="ISO8601", errors="coerce")
        bad = ~missing & dates.isna()
        problem[bad] = "unparseable date: " + s[bad].fillna("") + f"; expected {col.allowed()}"
        values = dates.astype("datetime64[ns]")
    elif col.kind == "bool":
        low = s.str.lower()
        values = pd.Series(pd.NA, index=s.index, dtype="boolean")
        values[low.isin(TRUE_STRINGS).fillna(False)] = True
        values[low.isin(FALSE_STRINGS).fillna(False)] = False
        bad = ~missing & values.isna()
        problem[bad] = "not a boolean: " + s[bad].fillna("") + f"; expected {col.allowed()}"
    else:  # pragma: no cover - the dictionary only has the kinds above
        raise ValueError(f"unknown column kind {col.kind}")
    if not col.nullable:
        problem[missing] = f"missing value; expected {col.allowed()}"
    return values, problem


@dataclass
class Validated:
    """A source after validation: its accepted rows (typed) and its rejected rows (raw, with reasons)."""

    name: str
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    n_input: int


def validate_source(raw: pd.DataFrame, name: str, columns: list[str], key: str = "user_id",
                    extra_keys: Mapping[str, str] | None = None) -> Validated:
    """Parse ``columns`` of a raw source and split its rows into accepted and rejected.

    ``key`` must be present and unique: every row of a duplicated key is rejected (we cannot know which
    copy is right). ``extra_keys`` maps other identifier columns (e.g. ``partner_id``) to be checked the
    same way. Rejected rows keep their raw text plus ``_reason`` and ``_column``.
    """
    problems: dict[str, pd.Series] = {}
    parsed: dict[str, pd.Series] = {}
    keys = {key: key, **(extra_keys or {})}
    for k in keys:
        v = raw[k].str.strip()
        p = pd.Series(pd.NA, index=raw.index, dtype="string")
        p[v.isna() | (v == "")] = "missing identifier"
        dup = v.duplicated(keep=False) & v.notna()
        p[dup & p.isna()] = "duplicate " + k + " " + v[dup & p.isna()].fillna("") + " (every copy is rejected)"
        parsed[k], problems[k] = v.astype("string"), p
    for c in columns:
        if c in keys:
            continue
        parsed[c], problems[c] = parse_column(raw[c], S.BY_NAME[c])
    prob = pd.DataFrame(problems)
    bad = prob.notna().any(axis=1)
    first_col = prob[bad].notna().idxmax(axis=1)
    reasons = prob[bad].apply(lambda r: "; ".join(f"{c}: {v}" for c, v in r.dropna().items()), axis=1) \
        if bad.any() else pd.Series(dtype="string")
    rejected = raw[bad].copy()
    rejected.insert(0, "_source", name)
    rejected["_column"] = first_col
    rejected["_reason"] = reasons
    accepted = pd.DataFrame({"_line": raw["_line"][~bad], **{c: parsed[c][~bad] for c in parsed}})
    return Validated(name, accepted.reset_index(drop=True), rejected.reset_index(drop=True), len(raw))


# --- the unified table ---------------------------------------------------------------------------
@dataclass
class IngestResult:
    """The unified table, the quarantine and a report of rates and coverage."""

    data: pd.DataFrame
    quarantine: dict[str, pd.DataFrame]
    report: dict = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return int(self.report["n_rejected"])


def coerce_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Cast the dictionary columns of ``df`` to their dtypes and order them as the dictionary does."""
    out = {}
    for c in S.COLUMNS:
        s = df[c.name] if c.name in df else pd.Series(pd.NA, index=df.index)
        if c.kind == "date":
            out[c.name] = pd.to_datetime(s).astype("datetime64[ns]")
        elif c.kind == "bool":
            out[c.name] = s.astype("boolean")
        else:
            out[c.name] = s.astype(c.dtype)
    return pd.DataFrame(out, index=df.index)


def derive_and_check_churn(df: pd.DataFrame, present: bool) -> tuple[pd.DataFrame, pd.Series]:
    """Derive ``churned_in_last_90_days`` from the business rule, or check it where the source gave it.

    Returns the frame with the derived column and a per-row problem string for inconsistent rows.
    """
    rule = df["last_seen_days_ago"] > S.CHURN_INACTIVE_DAYS
    problem = pd.Series(pd.NA, index=df.index, dtype="string")
    if present:
        given = df["churned_in_last_90_days"]
        bad = given.notna() & (given != rule)
        problem[bad.fillna(False)] = (
            "churned_in_last_90_days is " + given[bad.fillna(False)].astype("string")
            + " but last_seen_days_ago is " + df.loc[bad.fillna(False), "last_seen_days_ago"].astype("string")
            + f"; expected last_seen_days_ago > {S.CHURN_INACTIVE_DAYS}"
        )
    df = df.copy()
    df["churned_in_last_90_days"] = rule.astype("boolean")
    return df, problem


def _report(data: pd.DataFrame, n_input: int, quarantine: dict[str, pd.DataFrame],
            missing_optional: list[str], extra: dict) -> dict:
    coverage = {c: round(float(data[c].notna().mean()) if len(data) else 0.0, 6) for c in S.COLUMN_NAMES}
    rep = {
        "n_input": int(n_input),
        "n_users": int(len(data)),
        "n_rejected": int(n_input - len(data)),
        "quarantined_rows_by_source": {k: int(len(v)) for k, v in quarantine.items()},
        "coverage": coverage,
        "missing_optional_columns": missing_optional,
        "limits": sorted({S.LIMITS[S.BY_NAME[c].source] for c in missing_optional}),
        **extra,
    }
    assert rep["n_users"] + rep["n_rejected"] == rep["n_input"]
    return rep


def ingest_sources(raw_dir: str | Path, delimiter: str = ",", encoding: str = "utf-8") -> IngestResult:
    """Ingest the separate source files of :mod:`helpers.generate`'s layout into the unified table.

    The CRM file is the spine: one input row per customer. A customer is accepted when their CRM row
    and their engagement, billing, activity and support rows are valid; partner and enrichment
    attributes are joined through the match tables where present. Rows of any file that cannot be
    used (invalid values, duplicates, identifiers unknown to the CRM) are quarantined with the reason.
    """
    from .generate import PARTNER_FILE, PARTNER_MATCH, SOURCE_FILES, THIRD_FILE, THIRD_MATCH

    raw_dir = Path(raw_dir)
    read = lambda name, cols: read_source(raw_dir / name, cols, delimiter, encoding)  # noqa: E731
    quarantine: dict[str, pd.DataFrame] = {}
    first: dict[str, pd.DataFrame] = {}
    n_rows: dict[str, int] = {}
    for name, cols in SOURCE_FILES.items():
        v = validate_source(read(name, cols), name, cols)
        quarantine[name], first[name], n_rows[name] = v.rejected, v.accepted, v.n_input
    crm = first.pop("crm_users.csv")
    n_input = int(len(crm) + len(quarantine["crm_users.csv"]))
    crm_ids = crm["user_id"]
    for name, df in first.items():  # rows whose user is not a (valid) CRM customer
        orphan = ~df["user_id"].isin(crm_ids)
        if orphan.any():
            rows = df[orphan].copy()
            rows.insert(0, "_source", name)
            rows["_column"], rows["_reason"] = "user_id", "user_id not in crm_users.csv (or its CRM row was rejected)"
            quarantine[name] = _append(quarantine[name], rows)
            first[name] = df[~orphan]

    partner = _validated_pair(read, PARTNER_FILE, PARTNER_MATCH, "partner_id", S.SECOND_PARTY, crm_ids,
                              quarantine, n_rows)
    third = _validated_pair(read, THIRD_FILE, THIRD_MATCH, "tp_id", S.THIRD_PARTY, crm_ids, quarantine, n_rows)

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    for name, df in {"crm": crm, "engagement": first["engagement.csv"], "billing": first["billing.csv"],
                     "activity": first["activity.csv"], "support": first["support.csv"],
                     "partner": partner, "third": third}.items():
        con.register(name, df.drop(columns=["_line"], errors="ignore"))
    joined = con.execute(f"""
        SELECT c.user_id, c.age_group, c.income_bracket, c.customer_since_date,
               {', '.join('e.' + m for m in S.CHANNEL_METRICS)},
               b.avg_monthly_spend, a.last_seen_days_ago, s.support_tickets_raised,
               {', '.join('p.' + m for m in S.SECOND_PARTY)},
               {', '.join('t.' + m for m in S.THIRD_PARTY)},
               (e.user_id IS NOT NULL) AS _has_engagement, (b.user_id IS NOT NULL) AS _has_billing,
               (a.user_id IS NOT NULL) AS _has_activity, (s.user_id IS NOT NULL) AS _has_support,
               (p.user_id IS NOT NULL) AS _partner_matched, (t.user_id IS NOT NULL) AS _third_matched
        FROM crm c
        LEFT JOIN engagement e USING (user_id)
        LEFT JOIN billing b USING (user_id)
        LEFT JOIN activity a USING (user_id)
        LEFT JOIN support s USING (user_id)
        LEFT JOIN partner p USING (user_id)
        LEFT JOIN third t USING (user_id)
        ORDER BY c.user_id
    """).df()
    con.close()
    incomplete = ~joined[["_has_engagement", "_has_billing", "_has_activity", "_has_support"]].all(axis=1)
    why = joined.loc[incomplete, ["_has_engagement", "_has_billing", "_has_activity", "_has_support"]].apply(
        lambda r: "no valid row in " + ", ".join(k[5:] + ".csv" for k, v in r.items() if not v), axis=1)
    unified = coerce_dtypes(joined)
    unified, churn_problem = derive_and_check_churn(unified, present=False)
    rejected_users = joined.loc[incomplete, ["user_id"]].assign(
        _source="unified", _column="first-party", _reason=why.to_numpy())
    quarantine["unified (incomplete customers)"] = rejected_users.astype("string")
    data = unified[~incomplete.to_numpy()].reset_index(drop=True)
    S.pandera_schema().validate(data, lazy=True)
    extra = {
        "match_rate_partner": round(float(joined.loc[~incomplete, "_partner_matched"].mean()), 6),
        "match_rate_third_party": round(float(joined.loc[~incomplete, "_third_matched"].mean()), 6),
        "source_rows_input": n_rows,
    }
    return IngestResult(data, quarantine, _report(data, n_input, quarantine, [], extra))


def _append(rejected: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Add rejected rows (as text) to a source's quarantine frame."""
    rows = rows.astype("string")
    return rows.reset_index(drop=True) if rejected.empty else pd.concat([rejected, rows], ignore_index=True)


def _validated_pair(read, profile_file: str, match_file: str, key: str, cols: list[str],
                    crm_ids: pd.Series, quarantine: dict[str, pd.DataFrame],
                    n_rows: dict[str, int]) -> pd.DataFrame:
    """Validate a provider's profile file and match table; return user_id + attributes of matched users."""
    prof = validate_source(read(profile_file, [key, *cols]), profile_file, cols, key=key)
    match = validate_source(read(match_file, ["user_id", key]), match_file, [], key="user_id",
                            extra_keys={key: key})
    n_rows[profile_file], n_rows[match_file] = prof.n_input, match.n_input
    quarantine[profile_file], quarantine[match_file] = prof.rejected, match.rejected
    m = match.accepted
    unknown_user = ~m["user_id"].isin(crm_ids)
    unknown_key = ~m[key].isin(prof.accepted[key])
    bad = unknown_user | unknown_key
    if bad.any():
        rows = m[bad].copy()
        rows.insert(0, "_source", match_file)
        rows["_column"] = np.where(unknown_user[bad], "user_id", key)
        rows["_reason"] = np.where(unknown_user[bad], "user_id not in crm_users.csv (or its CRM row was rejected)",
                                   f"{key} has no valid row in {profile_file}")
        quarantine[match_file] = _append(quarantine[match_file], rows)
    m = m[~bad]
    return m[["user_id", key]].merge(prof.accepted.drop(columns=["_line"], errors="ignore"), on=key,
                                     how="inner").drop(columns=[key])


def read_mapping(mapping: str | Path | Mapping[str, str] | None) -> dict[str, str]:
    """A column mapping {their column: dictionary column}, from a dict or a two-column CSV.

    The CSV has the header ``source_column,target_column``.
    """
    if mapping is None:
        return {}
    if isinstance(mapping, Mapping):
        m = dict(mapping)
    else:
        f = pd.read_csv(mapping, dtype=str)
        need = {"source_column", "target_column"}
        if not need <= set(f.columns):
            raise IngestError(mapping, f"mapping file has columns {list(f.columns)}",
                              expected="a header 'source_column,target_column'")
        m = dict(zip(f["source_column"].str.strip(), f["target_column"].str.strip()))
    unknown = sorted(set(m.values()) - set(S.COLUMN_NAMES))
    if unknown:
        raise IngestError(str(mapping) if not isinstance(mapping, Mapping) else "column mapping",
                          f"maps to unknown column(s) {', '.join(unknown)}",
                          expected="targets among the 22 dictionary columns")
    return m


def ingest_table(path: str | Path, mapping: str | Path | Mapping[str, str] | None = None,
                 delimiter: str = ",", encoding: str = "utf-8") -> IngestResult:
    """Ingest a user's own ``rich_audience_data.csv`` (or Parquet) in place of the synthetic sources.

    ``user_id`` and the first-party columns are required; second- and third-party columns are optional
    and are added empty when absent, with a statement of which analyses that limits. Columns not in the
    dictionary are reported as ignored. ``churned_in_last_90_days`` is derived when absent and checked
    against ``last_seen_days_ago`` when present. Invalid rows go to the quarantine with their reasons.
    """
    path = Path(path)
    m = read_mapping(mapping)
    raw = read_source(path, None, delimiter, encoding).rename(columns=m)
    missing_required = [c for c in S.REQUIRED if c not in raw.columns]
    if missing_required:
        raise IngestError(path, f"missing required column(s) {', '.join(missing_required)} "
                          f"(found: {', '.join(c for c in raw.columns if c != '_line')})",
                          column=missing_required[0],
                          expected="user_id and the first-party columns; map your names with a mapping file "
                                   "(source_column,target_column)")
    ignored = [c for c in raw.columns if c not in S.COLUMN_NAMES and c != "_line"]
    missing_optional = [c for c in S.OPTIONAL if c not in raw.columns and c != "churned_in_last_90_days"]
    has_flag = "churned_in_last_90_days" in raw.columns
    for c in missing_optional:
        raw[c] = pd.Series(pd.NA, index=raw.index, dtype="string")
    cols = [c for c in S.COLUMN_NAMES if c != "churned_in_last_90_days" or has_flag]
    v = validate_source(raw, path.name, cols)
    data = coerce_dtypes(v.accepted)
    data, churn_problem = derive_and_check_churn(data, present=has_flag)
    inconsistent = churn_problem.notna().to_numpy()
    rejected = v.rejected
    if inconsistent.any():
        rows = v.accepted[inconsistent].copy()
        rows.insert(0, "_source", path.name)
        rows["_column"], rows["_reason"] = "churned_in_last_90_days", churn_problem[inconsistent].to_numpy()
        rejected = _append(rejected, rows)
    data = data[~inconsistent].sort_values("user_id").reset_index(drop=True)
    S.pandera_schema().validate(data, lazy=True)
    quarantine = {path.name: rejected}
    extra = {
        "match_rate_partner": round(float(data["traveler_type"].notna().mean()), 6) if len(data) else 0.0,
        "match_rate_third_party": round(float(data[S.THIRD_PARTY].notna().any(axis=1).mean()), 6)
        if len(data) else 0.0,
        "ignored_columns": ignored,
        "churn_flag": "checked against last_seen_days_ago" if has_flag else "derived from last_seen_days_ago",
    }
    return IngestResult(data, quarantine, _report(data, v.n_input, quarantine, missing_optional, extra))


# --- writing ------------------------------------------------------------------------------------
def table_fingerprint(df: pd.DataFrame) -> str:
    """A short content hash of the unified table (the 'panel version' recorded by exports)."""
    h = pd.util.hash_pandas_object(df[S.COLUMN_NAMES], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def write_outputs(result: IngestResult, processed_dir: str | Path, quarantine_dir: str | Path) -> dict[str, Path]:
    """Write the unified table (CSV, Parquet, DuckDB table ``audience``), the quarantine and the report."""
    processed_dir, quarantine_dir = Path(processed_dir), Path(quarantine_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    from .artifacts import UNIFIED_CSV, UNIFIED_PARQUET

    out = {"parquet": processed_dir / UNIFIED_PARQUET, "csv": processed_dir / UNIFIED_CSV,
           "duckdb": processed_dir / "audience.duckdb", "report": processed_dir / "ingest_report.json"}
    result.data.to_parquet(out["parquet"], index=False)
    db = out["duckdb"]
    for f in (db, db.with_suffix(".duckdb.wal")):
        f.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE TABLE audience AS SELECT * FROM read_parquet('{out['parquet']}') ORDER BY user_id")
    con.execute(f"""COPY (SELECT * REPLACE (strftime(customer_since_date, '%Y-%m-%d') AS customer_since_date)
                    FROM audience ORDER BY user_id) TO '{out['csv']}' (HEADER, DELIMITER ',')""")
    for old in quarantine_dir.glob("*.csv"):
        old.unlink()
    rows = []
    for name, q in result.quarantine.items():
        safe = name.replace(" ", "_").replace("(", "").replace(")", "").replace(".csv", "")
        if len(q):
            q.to_csv(quarantine_dir / f"{safe}.csv", index=False)
        rows.append({"source": name, "rejected_rows": len(q)})
    qsum = pd.DataFrame(rows)
    con.register("qsum", qsum)
    con.execute("CREATE TABLE quarantine_summary AS SELECT * FROM qsum")
    con.close()
    rep = dict(result.report, panel_version=table_fingerprint(result.data))
    out["report"].write_text(json.dumps(rep, indent=2))
    return out
