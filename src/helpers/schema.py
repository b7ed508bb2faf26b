"""The data dictionary as code: the 22 columns of ``rich_audience_data.csv``, and any table's columns.

This module is the single source of truth for column names, types, allowed categories, ranges,
nullability and provenance (1st/2nd/3rd party, derived). The pandera schema used by ingestion and the
README's data-dictionary table are both generated from :data:`COLUMNS`.

The 22-column dictionary is the default. A run configuration (:mod:`helpers.config`) can declare other
columns: :func:`columns_for` turns a configuration into the :class:`Column` list ingestion validates
(for the default configuration: the 22 dictionary columns plus its extension columns ``state`` and
``gender``). Columns of a table beyond its configuration are kept as text extension columns
(:func:`extension_column`), never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pandera.pandas as pa

Kind = Literal["id", "category", "ordinal", "multi", "int", "float", "date", "bool", "text"]
Source = Literal["1st party", "2nd party", "3rd party", "derived"]

#: Separator of the multi-valued columns (``"electronics|travel_gear"``).
MULTI_SEP = "|"
#: Token a matched user carries in a multi-valued column when the set is empty (NaN means "not matched").
NONE_TOKEN = "none"
#: Business rule of the churn flag: a user is churned when last seen more than this many days ago.
CHURN_INACTIVE_DAYS = 90

AGE_GROUPS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
INCOME_BRACKETS = ["<25k", "25k-50k", "50k-75k", "75k-100k", "100k-150k", "150k+"]
PURCHASE_CATEGORIES = [
    "electronics", "fashion", "groceries", "home_garden", "beauty",
    "sports_outdoors", "books_media", "toys_kids", "automotive", "travel_gear",
]
TRAVELER_TYPES = ["business", "leisure", "adventure", "budget", "luxury", "non_traveler"]
EVENT_GENRES = ["concerts", "sports", "theatre", "comedy", "festivals", "conferences", "family_events"]
EDUCATION_LEVELS = ["less_than_high_school", "high_school", "some_college", "bachelors", "graduate"]
MARITAL_STATUSES = ["single", "married", "partnered", "divorced", "widowed"]
HOMEOWNER_STATUSES = ["owner", "renter"]
NET_WORTH_BANDS = ["<50k", "50k-100k", "100k-250k", "250k-500k", "500k-1m", "1m+"]
PURCHASE_INTENTS = ["auto", "home", "furniture", "appliances", "electronics", "travel", "luxury_goods"]


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


_P3 = dict(source="3rd party", required=False, nullable=True)
_P2 = dict(source="2nd party", required=False, nullable=True)

COLUMNS: tuple[Column, ...] = (
    Column("user_id", "id", "1st party", "Stable first-party customer identifier; unique per row."),
    Column("age_group", "ordinal", "1st party", "Age band from the CRM.", categories=tuple(AGE_GROUPS)),
    Column("income_bracket", "ordinal", "1st party", "Household income band (USD per year).",
           unit="USD/yr", categories=tuple(INCOME_BRACKETS)),
    Column("customer_since_date", "date", "1st party", "Date the account was opened."),
    Column("time_on_social_media_min", "float", "1st party",
           "Average minutes per day on social media (last 30 days).", unit="min/day",
           min_value=0, max_value=1440),
    Column("time_on_streaming_video_min", "float", "1st party",
           "Average minutes per day streaming video (last 30 days).", unit="min/day",
           min_value=0, max_value=1440),
    Column("time_on_podcasts_min", "float", "1st party",
           "Average minutes per day listening to podcasts (last 30 days).", unit="min/day",
           min_value=0, max_value=1440),
    Column("monthly_conversions", "int", "1st party",
           "Conversions (purchases, sign-ups) attributed per month, last 3-month average rounded.",
           unit="count/month", min_value=0, max_value=1000),
    Column("avg_monthly_spend", "float", "1st party", "Average billed spend per month.",
           unit="USD/month", min_value=0, max_value=100000),
    Column("last_seen_days_ago", "int", "1st party",
           "Days between the last recorded activity and the observation date.", unit="days",
           min_value=0, max_value=36500),
    Column("support_tickets_raised", "int", "1st party", "Support tickets raised over the account's life.",
           unit="count", min_value=0, max_value=10000),
    Column("partner_purchase_categories", "multi", categories=tuple(PURCHASE_CATEGORIES),
           description="Categories bought at the data partner in the last 12 months (multi-valued).", **_P2),
    Column("traveler_type", "category", categories=tuple(TRAVELER_TYPES),
           description="Partner's travel profile of the user.", **_P2),
    Column("event_attendance_genres", "multi", categories=tuple(EVENT_GENRES),
           description="Live-event genres attended in the last 12 months (multi-valued).", **_P2),
    Column("household_size", "int", description="People in the household.", unit="persons",
           min_value=1, max_value=12, **_P3),
    Column("presence_of_children", "bool", description="Children under 18 in the household.", **_P3),
    Column("education_level", "ordinal", categories=tuple(EDUCATION_LEVELS),
           description="Highest completed education.", **_P3),
    Column("marital_status", "category", categories=tuple(MARITAL_STATUSES),
           description="Marital status.", **_P3),
    Column("homeowner_status", "category", categories=tuple(HOMEOWNER_STATUSES),
           description="Owns or rents the home.", **_P3),
    Column("estimated_net_worth", "ordinal", categories=tuple(NET_WORTH_BANDS),
           description="Modelled household net worth band (USD).", unit="USD", **_P3),
    Column("offline_purchase_intent", "multi", categories=tuple(PURCHASE_INTENTS),
           description="Categories the household is in market for offline (multi-valued).", **_P3),
    Column("churned_in_last_90_days", "bool", "derived",
           f"Business rule: true when last_seen_days_ago > {CHURN_INACTIVE_DAYS}.", required=False),
)

COLUMN_NAMES: list[str] = [c.name for c in COLUMNS]
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
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
                c.dtype, checks=_checks(c), nullable=c.nullable,
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
