"""The data dictionary as code: the 22 columns of ``rich_audience_data.csv``, and any table's columns.

This module is the single source of truth for column names, types, allowed categories, ranges,
nullability and provenance (1st/2nd/3rd party, derived): it reads the dictionary's entries from
``dictionary.yaml`` (package data, next to this file) into :data:`COLUMNS`. The pandera schema used by
ingestion and the README's data-dictionary table are both generated from :data:`COLUMNS`.

The 22-column dictionary is the default. A run configuration (:mod:`helpers.config`) can declare other
columns: :func:`columns_for` turns a configuration into the :class:`Column` list ingestion validates
(for the default configuration: the 22 dictionary columns plus its extension columns ``state`` and
``gender``). Columns of a table beyond its configuration are kept as text extension columns
(:func:`extension_column`), never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import pandas as pd
import pandera.pandas as pa
import yaml

Kind = Literal["id", "category", "ordinal", "multi", "int", "float", "date", "bool", "text"]
Source = Literal["1st party", "2nd party", "3rd party", "derived"]

#: Separator of the multi-valued columns (``"electronics|travel_gear"``).
MULTI_SEP = "|"
#: Token a matched user carries in a multi-valued column when the set is empty (NaN means "not matched").
NONE_TOKEN = "none"
#: The data dictionary's file (package data), read once at import into :data:`COLUMNS`.
DICTIONARY_FILE = Path(__file__).resolve().with_name("dictionary.yaml")
KINDS: tuple[str, ...] = get_args(Kind)
SOURCES: tuple[str, ...] = get_args(Source)


@dataclass(frozen=True)
class Column:
    """One column of the data dictionary."""

    name: str
    kind: Kind
    source: Source
    description: str
    unit: str = ""
    required: bool = True  # must be present in a user's own file
    nullable: bool = False
    categories: tuple[str, ...] = field(default_factory=tuple)
    min_value: float | None = None
    max_value: float | None = None

    @property
    def dtype(self) -> str:
        """The pandas dtype the column has in the unified table."""
        return {
            "id": "string", "category": "string", "ordinal": "string", "multi": "string",
            "int": "Int64", "float": "float64", "date": "datetime64[ns]", "bool": "boolean", "text": "string",
        }[self.kind]

    def allowed(self) -> str:
        """Human-readable statement of the allowed values, for errors and the README."""
        if self.kind in ("category", "ordinal"):
            return "one of " + ", ".join(self.categories)
        if self.kind == "multi":
            return (f"'{MULTI_SEP}'-separated subset of " + ", ".join(self.categories)
                    + f", or '{NONE_TOKEN}'")
        if self.kind in ("int", "float"):
            hi = "" if self.max_value is None else f" and <= {self.max_value:g}"
            return f"{'integer' if self.kind == 'int' else 'number'} >= {self.min_value:g}{hi}"
        if self.kind == "date":
            return "ISO date YYYY-MM-DD"
        if self.kind == "bool":
            return "true/false (also 1/0, yes/no)"
        if self.kind == "text":
            return "text"
        return "non-empty unique identifier without control characters"


def read_dictionary(path: str | Path = DICTIONARY_FILE) -> tuple[int, tuple[Column, ...]]:
    """The churn rule's inactivity days and the columns of a data-dictionary file (see its header comment).

    Raises ``ValueError`` naming the file, the entry (number and name) and what was expected.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list) or "churn_inactive_days" not in doc:
        raise ValueError(f"{path}: expected a mapping with churn_inactive_days and a list of columns")
    days = int(doc["churn_inactive_days"])
    allowed = {f.name for f in fields(Column)}
    cols = []
    for i, entry in enumerate(doc["columns"], 1):
        name = entry.get("name", "?") if isinstance(entry, dict) else repr(entry)
        where = f"{path}: column {i} ({name})"
        if not isinstance(entry, dict) or not {"name", "kind", "source", "description"} <= set(entry):
            raise ValueError(f"{where}: expected a mapping with name, kind, source and description")
        if set(entry) - allowed:
            raise ValueError(f"{where}: unknown key(s) {sorted(set(entry) - allowed)}; expected {sorted(allowed)}")
        if entry["kind"] not in KINDS or entry["source"] not in SOURCES:
            raise ValueError(f"{where}: kind must be one of {KINDS} and source one of {SOURCES}, got "
                             f"{entry['kind']!r} / {entry['source']!r}")
        entry = {**entry, "description": entry["description"].replace("{churn_inactive_days}", str(days)),
                 "categories": tuple(str(c) for c in entry.get("categories", ()))}
        cols.append(Column(**entry))
    return days, tuple(cols)


#: Business rule of the churn flag: a user is churned when last seen more than this many days ago.
CHURN_INACTIVE_DAYS, COLUMNS = read_dictionary()
COLUMN_NAMES: list[str] = [c.name for c in COLUMNS]
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
#: The categories of the dictionary's categorical columns, in their order.
(AGE_GROUPS, INCOME_BRACKETS, PURCHASE_CATEGORIES, TRAVELER_TYPES, EVENT_GENRES, EDUCATION_LEVELS, MARITAL_STATUSES,
 HOMEOWNER_STATUSES, NET_WORTH_BANDS, PURCHASE_INTENTS) = (list(BY_NAME[c].categories) for c in (
    "age_group", "income_bracket", "partner_purchase_categories", "traveler_type", "event_attendance_genres",
    "education_level", "marital_status", "homeowner_status", "estimated_net_worth", "offline_purchase_intent"))
REQUIRED: list[str] = [c.name for c in COLUMNS if c.required]
OPTIONAL: list[str] = [c.name for c in COLUMNS if not c.required]
FIRST_PARTY = [c.name for c in COLUMNS if c.source == "1st party"]
SECOND_PARTY = [c.name for c in COLUMNS if c.source == "2nd party"]
THIRD_PARTY = [c.name for c in COLUMNS if c.source == "3rd party"]
MULTI_VALUED = [c.name for c in COLUMNS if c.kind == "multi"]
CHANNEL_MINUTES = ["time_on_social_media_min", "time_on_streaming_video_min", "time_on_podcasts_min"]
CHANNEL_METRICS = CHANNEL_MINUTES + ["monthly_conversions"]

#: Which later analyses each optional source feeds, for the "what is missing limits what" statement.
LIMITS = {
    "2nd party": "partner-based personas, affinity for purchase categories / traveler type / event genres, "
                 "and their fusion",
    "3rd party": "household demographics in personas, weighting on education and household size, "
                 "purchase-intent audiences and their fusion",
    "derived": "nothing (derived from last_seen_days_ago)",
}


def multi_pattern(categories: tuple[str, ...] | list[str]) -> str:
    """Regex matching a valid multi-valued cell: ``none`` or a separator-joined list of tokens."""
    tok = "(?:" + "|".join(re.escape(c) for c in categories) + ")"
    return rf"^(?:{re.escape(NONE_TOKEN)}|{tok}(?:{re.escape(MULTI_SEP)}{tok})*)$"


def _checks(col: Column) -> list[pa.Check]:
    if col.kind in ("category", "ordinal"):
        return [pa.Check.isin(list(col.categories), error=f"expected {col.allowed()}")]
    if col.kind == "multi":
        return [pa.Check.str_matches(multi_pattern(col.categories), error=f"expected {col.allowed()}")]
    if col.kind in ("int", "float"):
        checks = [pa.Check.ge(col.min_value, error=f"expected >= {col.min_value:g}")]
        if col.max_value is not None:
            checks.append(pa.Check.le(col.max_value, error=f"expected <= {col.max_value:g}"))
        return checks
    if col.kind == "id":
        return [pa.Check.str_length(min_value=1, error="expected a non-empty identifier")]
    return []


#: text columns are pandas strings in either storage: ingestion builds them stored as Python objects,
#: ``artifacts.load_unified`` reads them stored in Arrow (``string[pyarrow]``); values and methods are the same
_STRING_CHECK = [pa.Check(lambda s: isinstance(s.dtype, pd.StringDtype),
                          error="expected the pandas string dtype (string[python] or string[pyarrow])")]


def pandera_schema(columns: "list[str] | list[Column] | tuple[Column, ...] | None" = None) -> pa.DataFrameSchema:
    """The pandera schema of the unified table (optionally restricted to ``columns``: names of the
    dictionary, or :class:`Column` objects such as :func:`columns_for` returns).

    The schema is strict about the set of columns and coerces nothing: ingestion parses values
    first and reports what could not be parsed, then this schema checks what was parsed.
    """
    cols = [c if isinstance(c, Column) else BY_NAME[c] for c in (columns or COLUMN_NAMES)]
    return pa.DataFrameSchema(
        {
            c.name: pa.Column(
                None if c.dtype == "string" else c.dtype,
                checks=(_STRING_CHECK if c.dtype == "string" else []) + _checks(c), nullable=c.nullable,
                unique=c.kind == "id", description=c.description,
            )
            for c in cols
        },
        strict=True,
        ordered=False,
        name="rich_audience_data",
    )


def dictionary_markdown(columns: "tuple[Column, ...] | list[Column] | None" = None) -> str:
    """The README's data-dictionary table, generated from :data:`COLUMNS` (or from ``columns``, e.g.
    ``columns_for(config.load("telco"))``)."""
    rows = ["| # | column | source | type | unit | required | allowed values | description |",
            "|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(COLUMNS if columns is None else columns, 1):
        rows.append(f"| {i} | `{c.name}` | {c.source} | {c.kind} | {c.unit} | "
                    f"{'yes' if c.required else 'no'} | {c.allowed()} | {c.description} |")
    return "\n".join(rows)


# --- columns of any table, from a run configuration ------------------------------------------------
_PARTY = {"1st": "1st party", "2nd": "2nd party", "3rd": "3rd party", "derived": "derived"}


def extension_column(name: str) -> Column:
    """A column of a table that its configuration does not declare: kept as optional text."""
    return Column(name, "text", "1st party", "Extension column (not declared in the run configuration); kept "
                  "as text.", required=False, nullable=True)


def columns_for(cfg) -> tuple[Column, ...]:
    """The columns a run configuration declares, as :class:`Column` rules for ingestion.

    A name of the 22-column dictionary keeps its dictionary rule (description, range, categories)
    unless the configuration changes its categories, range or requirement. For the default
    configuration the result is :data:`COLUMNS` followed by the extension columns (``state``,
    ``gender``). Derived columns (``derived:`` in the configuration) are not input columns and are not
    listed. Requirement: the id, metrics, date columns and the survival duration are required unless a
    metric says ``required: false``; attributes and outcomes are optional unless they say
    ``required: true``.
    """
    from dataclasses import replace as _replace

    derived = {d.name for d in cfg.derived}
    out: dict[str, Column] = {}

    def put(col: Column) -> None:
        if col.name in derived or col.name in out:
            return
        if col.name in BY_NAME:
            base = BY_NAME[col.name]
            same_kind = base.kind == col.kind or (base.kind in ("int", "float") and col.kind in ("int", "float"))
            if same_kind:
                col = _replace(base, required=col.required, nullable=col.nullable,
                               categories=col.categories or base.categories,
                               min_value=base.min_value if col.min_value is None else col.min_value,
                               max_value=base.max_value if col.max_value is None else col.max_value)
        out[col.name] = col

    if cfg.is_default:  # the dictionary's own order first
        for c in COLUMNS:
            out[c.name] = c
    put(Column(cfg.id, "id", "1st party", "Customer identifier (run configuration)."))
    for m in cfg.metrics:
        put(Column(m.name, m.type, "1st party", m.description or f"{m.label} (behavioural metric).", unit=m.unit,
                   required=m.required, nullable=not m.required, min_value=m.min, max_value=m.max))
    for a in cfg.attributes:
        kind = a.type
        lo = a.min if a.min is not None else (0.0 if kind == "int" else None)
        put(Column(a.name, kind, _PARTY[a.party], a.description or f"{a.label} (profile attribute).", unit=a.unit,
                   required=a.required, nullable=not a.required, categories=tuple(a.categories),
                   min_value=lo, max_value=a.max))
    if cfg.dates.customer_since:
        put(Column(cfg.dates.customer_since, "date", "1st party", "Date the customer joined."))
    if cfg.dates.recency:
        put(Column(cfg.dates.recency, "int", "1st party", "Time since the last activity.",
                   unit=cfg.dates.recency_unit, min_value=0))
    if cfg.survival.duration:
        put(Column(cfg.survival.duration, "float", "1st party", "Time as a customer (survival duration).",
                   unit=cfg.survival.duration_unit, min_value=0))
    for o in cfg.outcomes:
        typ = o.type or "bool"
        kind = {"bool": "bool", "category": "category", "int": "int", "float": "float"}[typ]
        is_event = o.name == cfg.survival.event
        put(Column(o.name, kind, "1st party", o.description or f"{o.label} (outcome).", unit=o.unit,
                   required=is_event and not cfg.is_default, nullable=not (is_event and not cfg.is_default),
                   categories=tuple(o.categories), min_value=0.0 if kind in ("int", "float") else None))
    return tuple(out.values())
