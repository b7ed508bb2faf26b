"""The run configuration: which column of a table plays which role, in one documented YAML file.

A run configuration declares the roles of a table's columns so that no stage hard-codes the column
meanings of the synthetic panel: the identifier; the behavioural **metrics** (name, label, unit, kind) used
by segmentation, affinity and personas; the profile **attributes** (party, type, categories, label); the
**dates** (customer since, recency, observation date); the **outcomes** (conversion/response, value, churn
event) usable as lookalike seeds and survival events; **survival** (duration and event); **weighting** (a
margins file, or none with weights 1); the **input** format (path, delimiter, encoding, mapping); and the
**export** policy (whether fields derived from 2nd/3rd-party attributes may be exported).

    from helpers import config
    cfg = config.load(config_path)   # None -> $AUDIENCE_CONFIG or presets/default.yaml
    cfg.metric_names, cfg.label("avg_monthly_spend"), cfg.require("07_affinity", "metrics")

Every key is documented in ``presets/README.md``; :func:`load` validates the file and raises
:class:`ConfigError` naming the file, the key and what is expected. The shipped presets are
``default.yaml`` (the 22-column data dictionary of the synthetic panel) and ``telco.yaml`` (the IBM Telco
customer-churn sample shipped in ``data/external/telco_churn/``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

PRESETS = Path(__file__).resolve().parent / "presets"
DEFAULT_PATH = PRESETS / "default.yaml"
ENV_VAR = "AUDIENCE_CONFIG"

METRIC_KINDS = ("minutes", "count", "money", "share", "number")
ATTRIBUTE_TYPES = ("category", "ordinal", "multi", "bool", "int")
PARTIES = ("1st", "2nd", "3rd", "derived")
OUTCOME_KINDS = ("conversion", "value", "churn_event", "response")
OUTCOME_TYPES = ("bool", "category", "int", "float")
DURATION_UNITS = ("days", "weeks", "months", "years")
TOP_KEYS = ("name", "description", "id", "input", "metrics", "attributes", "dates", "outcomes", "survival",
            "weighting", "derived", "export")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: ``">0"``, ``">= 1"``, ``"== 3"``: a rule on a numeric outcome (``positive`` of a count such as conversions).
_RULE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([+-]?\d+(?:\.\d+)?)\s*$")

#: Roles :meth:`RunConfig.has` / :meth:`RunConfig.require` understand, with what each needs in the YAML.
ROLES = {
    "id": "an identifier column (key 'id')",
    "metrics": "at least one behavioural metric (key 'metrics')",
    "attributes": "at least one profile attribute (key 'attributes')",
    "customer_since": "a customer-since date column (key 'dates.customer_since')",
    "recency": "a last-activity / recency column in days (key 'dates.recency')",
    "observation_date": "the observation date (key 'dates.observation_date', or the parameter observation_date)",
    "outcomes": "at least one outcome (key 'outcomes')",
    "conversion": "an outcome of kind 'conversion' (key 'outcomes')",
    "response": "an outcome of kind 'response' (key 'outcomes')",
    "value": "an outcome of kind 'value' (key 'outcomes')",
    "churn_event": "an outcome of kind 'churn_event' (key 'outcomes')",
    "seed_outcome": "an outcome of kind 'conversion', 'response' or 'churn_event' (key 'outcomes')",
    "survival": "a survival event and a duration (keys 'survival.event' and 'survival.duration', or "
                "'dates.customer_since' with an observation date)",
    "survival.event": "a survival event column (key 'survival.event')",
    "survival.duration": "a survival duration column (key 'survival.duration') or dates to derive it from",
    "margins": "a population margins file (key 'weighting.margins')",
}


#: What each stage needs from the run configuration (README "Bring your own data"). A stage calls
#: ``cfg.require_stage(stem)``; roles in brackets are alternatives (one of them is enough).
STAGE_NEEDS: dict[str, tuple] = {
    "01_ingest": ("id",),
    "02_panel_weighting_fusion": ("id",),          # margins optional: none -> weights 1
    "04_segment_gmm": ("id", "metrics"),
    "05_segment_hier": ("id", "metrics"),
    "06_churn_survival": ("id", "survival"),
    "06b_engagement_value": ("id",),               # long tables (monthly_activity, transactions) are its inputs
    "07_affinity": ("id", "metrics", "attributes"),
    "08_lookalike_activation": ("id", "metrics"),  # seed: an outcome (seed_outcome) or a file of ids
}


class ConfigError(ValueError):
    """A run configuration is invalid: the message names the file, the key and what is expected."""

    def __init__(self, file: str | Path | None, key: str, problem: str, expected: str | None = None):
        self.file, self.key = str(file) if file else "<run configuration>", key
        msg = f"{self.file}: key {key!r}: {problem}"
        if expected:
            msg += f"; expected {expected}"
        super().__init__(msg + " (every key is documented in src/helpers/config/presets/README.md)")


class MissingRole(ConfigError):
    """A stage needs a column role that the run configuration does not declare."""

    def __init__(self, stage: str, role: str, file: str | Path | None):
        self.stage, self.role = stage, role
        need = ROLES.get(role, f"the column {role!r}")
        ValueError.__init__(self, f"stage {stage} needs column role {role!r} ({need}), which the run "
                                  f"configuration {file or '<run configuration>'} does not declare; add it "
                                  "(see src/helpers/config/presets/README.md) or skip this stage")
        self.file, self.key = str(file), role


def tidy_title(col: str) -> str:
    """``time_on_social_media_min`` -> ``Time on social media min``; ``MonthlyCharges`` -> ``Monthly charges``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(col)).replace("_", " ").strip()
    s = re.sub(r"\s+", " ", s)
    return (s[:1].upper() + s[1:].lower()) if s else str(col)


# --- the pieces ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A behavioural metric (a number per customer) used by segmentation, affinity and personas."""

    name: str
    label: str
    unit: str = ""
    kind: str = "number"            # minutes | count | money | share | number
    type: str = "float"             # int | float (count -> int unless stated)
    min: float | None = 0.0
    max: float | None = None
    required: bool = True
    transform: str = "identity"     # identity | log1p: how segmentation features enter
    cluster: bool = True            # used to form segments (False: profiled only)
    when_missing: dict | None = None  # {fill, if: {column, equals}, note}: an explicit rule for blanks
    description: str = ""


@dataclass(frozen=True)
class Attribute:
    """A profile attribute (who the customer is) with its data party and type."""

    name: str
    label: str
    party: str = "1st"              # 1st | 2nd | 3rd | derived
    type: str = "category"          # category | ordinal | multi | bool | int
    categories: tuple[str, ...] = ()
    unit: str = ""
    required: bool = False
    min: float | None = None
    max: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Outcome:
    """An outcome column: a lookalike seed (conversion/response/churn_event) or a value."""

    name: str
    label: str
    kind: str                       # conversion | value | churn_event | response
    positive: Any = None            # the value meaning "yes" (True, "Yes", 1) or a rule such as ">0"
    type: str | None = None         # bool | category | int | float when not declared elsewhere
    categories: tuple[str, ...] = ()
    unit: str = ""
    description: str = ""

    def indicator(self, values) -> "Any":
        """A boolean Series: which rows have the positive value (``value`` outcomes: ``> 0``)."""
        import pandas as pd

        s = values[self.name] if isinstance(values, pd.DataFrame) else pd.Series(values)
        pos = self.positive if self.positive is not None else (">0" if self.kind == "value" else True)
        if isinstance(pos, str) and _RULE.match(pos):
            op, num = _RULE.match(pos).groups()
            x = pd.to_numeric(s, errors="coerce")
            out = {">": x > float(num), ">=": x >= float(num), "<": x < float(num), "<=": x <= float(num),
                   "==": x == float(num), "!=": x != float(num)}[op]
            return out.fillna(False).astype(bool)
        if isinstance(pos, bool):
            b = s.astype("string").str.strip().str.lower().map(
                {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
            return (b == pos).fillna(False).astype(bool)
        return (s.astype("string").str.strip() == str(pos)).fillna(False).astype(bool)

    def sql(self) -> str:
        """The indicator as a SQL expression (1 when positive, else 0), e.g. ``CASE WHEN "Churn" = 'Yes' ...``."""
        c = '"' + self.name.replace('"', '""') + '"'
        pos = self.positive if self.positive is not None else (">0" if self.kind == "value" else True)
        if isinstance(pos, bool):
            return f"CASE WHEN {c} = {str(pos).upper()} THEN 1 ELSE 0 END"
        m = _RULE.match(str(pos))
        if m:
            return f"CASE WHEN {c} {m.group(1)} {m.group(2)} THEN 1 ELSE 0 END"
        text = str(pos).replace("'", "''")
        return f"CASE WHEN trim(CAST({c} AS VARCHAR)) = '{text}' THEN 1 ELSE 0 END"

    @property
    def rule(self) -> str:
        """``"Churn == 'Yes'"``, ``"monthly_conversions > 0"``: the seed definition in words."""
        pos = self.positive if self.positive is not None else (">0" if self.kind == "value" else True)
        if isinstance(pos, str) and _RULE.match(pos):
            op, num = _RULE.match(pos).groups()
            return f"{self.name} {op} {num}"
        return f"{self.name} == {pos!r}"


@dataclass(frozen=True)
class Dates:
    customer_since: str | None = None
    recency: str | None = None
    observation_date: str | None = None
    recency_unit: str = "days"


@dataclass(frozen=True)
class Survival:
    duration: str | None = None     # a column; None -> derived from dates.customer_since and the observation date
    event: str | None = None
    duration_unit: str = "days"


@dataclass(frozen=True)
class Weighting:
    margins: str | None = None      # relative paths are resolved against the run's data folder
    variables: tuple[str, ...] = ()

    def margins_path(self, data_dir: str | Path) -> Path | None:
        """The margins file of the run (``None``: no margins, weights 1)."""
        if not self.margins:
            return None
        p = Path(self.margins).expanduser()
        return p if p.is_absolute() else Path(data_dir) / p


@dataclass(frozen=True)
class Input:
    path: str | None = None         # the table; None -> the synthetic sources in <data>/raw
    delimiter: str = ","
    encoding: str = "utf-8"
    mapping: str | None = None
    fallback: str | None = None     # read this when ``path`` is absent (e.g. ../shared/data/...)
    base: str | None = None         # folder relative paths are resolved against (the repository root)

    def resolved_path(self) -> Path | None:
        """The input table as an absolute path (``path`` if it exists, else ``fallback``, else ``path``)."""
        if self.path is None:
            return None
        cands = [self.path] + ([self.fallback] if self.fallback else [])
        resolved = []
        for c in cands:
            p = Path(c).expanduser()
            if not p.is_absolute():
                p = Path(self.base or ".") / p
            resolved.append(p.resolve())
        return next((p for p in resolved if p.exists()), resolved[0])


@dataclass(frozen=True)
class Export:
    """The activation-export policy: whether fields derived from 2nd/3rd-party attributes may leave."""

    # persona names (segment_name) are built from profile attributes, some 3rd-party: refused unless true;
    # raw 2nd/3rd-party attribute columns are never exported whatever this says (helpers.export)
    allow_third_party: bool = False


@dataclass(frozen=True)
class Derived:
    """A column computed at ingestion from other columns (documented, not silent)."""

    name: str
    rule: str                       # count_in
    columns: tuple[str, ...]
    values: tuple[str, ...]
    note: str = ""


# --- the configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration (see the module docstring and ``presets/README.md``)."""

    name: str
    id: str
    metrics: tuple[Metric, ...]
    attributes: tuple[Attribute, ...]
    dates: Dates
    outcomes: tuple[Outcome, ...]
    survival: Survival
    weighting: Weighting
    input: Input
    derived: tuple[Derived, ...] = ()
    description: str = ""
    path: str | None = None
    export: Export = field(default_factory=Export)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    # names ---------------------------------------------------------------------------------------
    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def outcome_names(self) -> list[str]:
        return [o.name for o in self.outcomes]

    @property
    def columns(self) -> list[str]:
        """Every declared column, in order: id, metrics, attributes, dates, survival, outcomes (no repeats)."""
        cols = [self.id, *self.metric_names, *self.attribute_names,
                *[c for c in (self.dates.customer_since, self.dates.recency) if c],
                *[c for c in (self.survival.duration, self.survival.event) if c], *self.outcome_names]
        return list(dict.fromkeys(cols))

    @property
    def is_default(self) -> bool:
        """True for the shipped 22-column dictionary configuration (the synthetic panel)."""
        return self.name == "default"

    def metric(self, name: str) -> Metric:
        return {m.name: m for m in self.metrics}[name]

    def attribute(self, name: str) -> Attribute:
        return {a.name: a for a in self.attributes}[name]

    def outcome(self, name: str) -> Outcome:
        try:
            return {o.name: o for o in self.outcomes}[name]
        except KeyError:
            raise ConfigError(self.path, "outcomes", f"no outcome named {name!r}",
                              f"one of {', '.join(self.outcome_names) or '(none declared)'}") from None

    def outcomes_of(self, *kinds: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind in kinds]

    def attributes_of(self, party: str) -> list[Attribute]:
        return [a for a in self.attributes if a.party == party]

    # labels --------------------------------------------------------------------------------------
    def _declared(self, col: str):
        for group in (self.metrics, self.attributes, self.outcomes):
            for x in group:
                if x.name == col:
                    return x
        return None

    def label(self, col: str, unit: bool = True) -> str:
        """Human label of a column (with its unit in brackets); a tidy title for undeclared columns."""
        x = self._declared(col)
        if x is None:
            base = {self.id: "Customer id"}.get(col)
            if col == self.dates.customer_since:
                base = "Customer since"
            elif col == self.dates.recency:
                base = "Days since last activity"
            elif col == self.survival.duration:
                base = f"Tenure ({self.survival.duration_unit})"
                return base
            return base or tidy_title(col)
        u = self.unit(col)
        return f"{x.label} ({u})" if unit and u else x.label

    def unit(self, col: str) -> str:
        x = self._declared(col)
        if x is not None:
            return x.unit
        if col == self.dates.recency:
            return self.dates.recency_unit
        if col == self.survival.duration:
            return self.survival.duration_unit
        return ""

    # roles ---------------------------------------------------------------------------------------
    def has(self, role_or_column: str) -> bool:
        """Whether the configuration declares a role (see :data:`ROLES`) or a column by that name."""
        r = role_or_column
        if r == "id":
            return bool(self.id)
        if r in ("metrics", "attributes", "outcomes"):
            return bool(getattr(self, r))
        if r in ("customer_since", "recency", "observation_date"):
            return bool(getattr(self.dates, r))
        if r in OUTCOME_KINDS:
            return bool(self.outcomes_of(r))
        if r == "seed_outcome":
            return bool(self.outcomes_of("conversion", "response", "churn_event"))
        if r == "survival.event":
            return bool(self.survival.event)
        if r == "survival.duration":
            return bool(self.survival.duration or self.dates.customer_since)
        if r == "survival":
            return self.has("survival.event") and self.has("survival.duration")
        if r in ("margins", "weighting"):
            return bool(self.weighting.margins)
        return r in self.columns or any(d.name == r for d in self.derived)

    def require(self, stage: str, *roles: str) -> None:
        """Raise :class:`MissingRole` for the first role (or column) the configuration lacks."""
        for r in roles:
            if not self.has(r):
                raise MissingRole(stage, r, self.path)

    def missing(self, *roles: str) -> list[str]:
        """The roles (or columns) among ``roles`` that the configuration does not declare."""
        return [r for r in roles if not self.has(r)]

    def require_stage(self, stage: str) -> None:
        """:meth:`require` the roles :data:`STAGE_NEEDS` lists for ``stage`` (nothing for unlisted stages)."""
        self.require(stage, *STAGE_NEEDS.get(stage, ()))

    # variants ------------------------------------------------------------------------------------
    def with_overrides(self, delimiter: str | None = None, encoding: str | None = None,
                       observation_date: str | None = None, input_path: str | None = None,
                       mapping_path: str | None = None) -> "RunConfig":
        """The configuration with notebook parameters / ``make`` variables applied (``None`` keeps the file's)."""
        cfg = self
        if observation_date is not None:
            obs = _check_date(str(observation_date), self.path, "observation_date (parameter)")
            cfg = replace(cfg, dates=replace(cfg.dates, observation_date=obs))
        inp = cfg.input
        if delimiter is not None:
            inp = replace(inp, delimiter=_check_delimiter(delimiter, self.path, "delimiter (parameter)"))
        if encoding is not None:
            inp = replace(inp, encoding=_check_encoding(encoding, self.path, "encoding (parameter)"))
        if input_path is not None:
            inp = replace(inp, path=str(input_path), fallback=None, base=str(Path.cwd()))
        if mapping_path is not None:
            inp = replace(inp, mapping=str(mapping_path))
        return replace(cfg, input=inp)

    def present(self, columns: Iterable[str]) -> "RunConfig":
        """The configuration restricted to the columns present in a table (optional ones may be absent)."""
        cols = set(columns)
        return replace(self, metrics=tuple(m for m in self.metrics if m.name in cols),
                       attributes=tuple(a for a in self.attributes if a.name in cols),
                       outcomes=tuple(o for o in self.outcomes if o.name in cols))

    def to_dict(self) -> dict:
        """The configuration as the plain data it was read from (with overrides applied)."""
        d = copy.deepcopy(self.raw)
        d.setdefault("input", {})
        d["input"].update(delimiter=self.input.delimiter, encoding=self.input.encoding)
        if self.input.path is not None:
            d["input"]["path"] = self.input.path
        d.setdefault("dates", {})["observation_date"] = self.dates.observation_date
        return d

    @property
    def fingerprint(self) -> str:
        """A short hash of the effective configuration (recorded in ``processed/ingest_meta.json``)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- reading and validating -----------------------------------------------------------------------
def _check_date(v: Any, file, key) -> str | None:
    if v is None or v == "":
        return None
    import datetime as _dt

    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.strftime("%Y-%m-%d")
    s = str(v).strip()
    if not ISO_DATE.match(s):
        raise ConfigError(file, key, f"got {v!r}", "an ISO date YYYY-MM-DD (or null)")
    try:
        _dt.date.fromisoformat(s)
    except ValueError:
        raise ConfigError(file, key, f"got {v!r}, which is not a calendar date", "an ISO date YYYY-MM-DD") from None
    return s


def _check_delimiter(v: Any, file, key) -> str:
    s = "\t" if v in ("\\t", "tab", "TAB") else v
    if not isinstance(s, str) or len(s) != 1 or s in "\"\r\n":
        raise ConfigError(file, key, f"got {v!r}", "one character such as ',', ';', '|' or '\\t'")
    return s


def _check_encoding(v: Any, file, key) -> str:
    import codecs

    try:
        codecs.lookup(str(v))
    except LookupError:
        raise ConfigError(file, key, f"unknown encoding {v!r}", "a Python codec name such as utf-8, latin-1, "
                          "cp1252") from None
    return str(v)


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``2014-13-45`` stays text and gets a clear error, not a ValueError."""


_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _Reader:
    def __init__(self, file):
        self.file = file

    def err(self, key, problem, expected=None):
        raise ConfigError(self.file, key, problem, expected)

    def mapping(self, v, key, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
        if v is None:
            v = {}
        if not isinstance(v, dict):
            self.err(key, f"got {type(v).__name__} {v!r}", "a mapping of keys")
        unknown = [k for k in v if k not in allowed]
        if unknown:
            self.err(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key",
                     f"one of {', '.join(allowed)}")
        for r in required:
            if v.get(r) in (None, ""):
                self.err(f"{key}.{r}" if key else r, "missing", "a value")
        return v

    def name(self, v, key) -> str:
        if not isinstance(v, str) or not v.strip():
            self.err(key, f"got {v!r}", "a column name (non-empty text)")
        return v

    def opt_name(self, v, key) -> str | None:
        return None if v is None else self.name(v, key)

    def choice(self, v, key, choices) -> str:
        if v not in choices:
            self.err(key, f"got {v!r}", f"one of {', '.join(choices)}")
        return v

    def number(self, v, key):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.err(key, f"got {v!r}", "a number (or null)")
        return float(v)

    def boolean(self, v, key, default):
        if v is None:
            return default
        if not isinstance(v, bool):
            self.err(key, f"got {v!r}", "true or false")
        return v

    def text(self, v, key, default=""):
        if v is None:
            return default
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            self.err(key, f"got {v!r}", "text")
        return str(v)

    def strings(self, v, key) -> tuple[str, ...]:
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool)
                                              for x in v):
            self.err(key, f"got {v!r}", "a list of values")
        return tuple(str(x) for x in v)

    def items(self, v, key) -> list:
        if v is None:
            return []
        if not isinstance(v, list):
            self.err(key, f"got {type(v).__name__}", "a list of entries (each starting with '- name:')")
        return v


_METRIC_KEYS = ("name", "label", "unit", "kind", "type", "min", "max", "required", "transform", "cluster",
                "when_missing", "description")
_ATTR_KEYS = ("name", "label", "party", "type", "categories", "unit", "required", "min", "max", "description")
_OUT_KEYS = ("name", "label", "kind", "positive", "type", "categories", "unit", "description")


def _metric(r: _Reader, d, key, names) -> Metric:
    d = r.mapping(d, key, _METRIC_KEYS, ("name",))
    name = r.name(d["name"], f"{key}.name")
    kind = r.choice(d.get("kind", "number"), f"{key}.kind", METRIC_KINDS)
    typ = r.choice(d.get("type", "int" if kind == "count" else "float"), f"{key}.type", ("int", "float"))
    wm = d.get("when_missing")
    if wm is not None:
        wm = r.mapping(wm, f"{key}.when_missing", ("fill", "if", "note"), ("fill", "note"))
        r.number(wm["fill"], f"{key}.when_missing.fill")
        if wm.get("if") is not None:
            cond = r.mapping(wm["if"], f"{key}.when_missing.if", ("column", "equals"), ("column", "equals"))
            r.name(cond["column"], f"{key}.when_missing.if.column")
        wm = dict(wm)
    return Metric(name=name, label=r.text(d.get("label"), f"{key}.label", tidy_title(name)),
                  unit=r.text(d.get("unit"), f"{key}.unit"), kind=kind, type=typ,
                  min=r.number(d.get("min", 0.0), f"{key}.min"), max=r.number(d.get("max"), f"{key}.max"),
                  required=r.boolean(d.get("required"), f"{key}.required", True),
                  transform=r.choice(d.get("transform", "identity"), f"{key}.transform", ("identity", "log1p")),
                  cluster=r.boolean(d.get("cluster"), f"{key}.cluster", True), when_missing=wm,
                  description=r.text(d.get("description"), f"{key}.description"))


def _attribute(r: _Reader, d, key) -> Attribute:
    d = r.mapping(d, key, _ATTR_KEYS, ("name",))
    name = r.name(d["name"], f"{key}.name")
    typ = r.choice(d.get("type", "category"), f"{key}.type", ATTRIBUTE_TYPES)
    cats = r.strings(d.get("categories"), f"{key}.categories")
    if typ in ("category", "ordinal", "multi") and not cats:
        r.err(f"{key}.categories", f"missing for a {typ} attribute", "the list of allowed values")
    return Attribute(name=name, label=r.text(d.get("label"), f"{key}.label", tidy_title(name)),
                     party=r.choice(str(d.get("party", "1st")), f"{key}.party", PARTIES), type=typ,
                     categories=cats, unit=r.text(d.get("unit"), f"{key}.unit"),
                     required=r.boolean(d.get("required"), f"{key}.required", False),
                     min=r.number(d.get("min"), f"{key}.min"), max=r.number(d.get("max"), f"{key}.max"),
                     description=r.text(d.get("description"), f"{key}.description"))


def _outcome(r: _Reader, d, key) -> Outcome:
    d = r.mapping(d, key, _OUT_KEYS, ("name", "kind"))
    name = r.name(d["name"], f"{key}.name")
    kind = r.choice(d["kind"], f"{key}.kind", OUTCOME_KINDS)
    pos = d.get("positive")
    if pos is not None and not isinstance(pos, (str, int, float, bool)):
        r.err(f"{key}.positive", f"got {pos!r}", "the value meaning 'yes' (true, 'Yes', 1) or a rule such as '>0'")
    if kind != "value" and pos is None:
        r.err(f"{key}.positive", "missing", "the value meaning 'yes' (true, 'Yes', 1) or a rule such as '>0'")
    typ = d.get("type")
    if typ is not None:
        r.choice(typ, f"{key}.type", OUTCOME_TYPES)
    return Outcome(name=name, label=r.text(d.get("label"), f"{key}.label", tidy_title(name)), kind=kind,
                   positive=pos, type=typ, categories=r.strings(d.get("categories"), f"{key}.categories"),
                   unit=r.text(d.get("unit"), f"{key}.unit"),
                   description=r.text(d.get("description"), f"{key}.description"))


def parse(data: dict, file: str | Path | None = None, base: str | Path | None = None) -> RunConfig:
    """Validate a configuration given as plain data (what :func:`load` reads from YAML)."""
    r = _Reader(file)
    if not isinstance(data, dict):
        r.err("(top level)", f"got {type(data).__name__}", "a YAML mapping with keys such as id, metrics, "
              "attributes, outcomes")
    r.mapping(data, "", TOP_KEYS, ("id",))
    ident = r.name(data["id"], "id")
    metrics = tuple(_metric(r, d, f"metrics[{i}]", None) for i, d in enumerate(r.items(data.get("metrics"), "metrics")))
    attrs = tuple(_attribute(r, d, f"attributes[{i}]")
                  for i, d in enumerate(r.items(data.get("attributes"), "attributes")))
    outs = tuple(_outcome(r, d, f"outcomes[{i}]") for i, d in enumerate(r.items(data.get("outcomes"), "outcomes")))
    dd = r.mapping(data.get("dates"), "dates", ("customer_since", "recency", "observation_date", "recency_unit"))
    dates = Dates(customer_since=r.opt_name(dd.get("customer_since"), "dates.customer_since"),
                  recency=r.opt_name(dd.get("recency"), "dates.recency"),
                  observation_date=_check_date(dd.get("observation_date"), file, "dates.observation_date"),
                  recency_unit=r.choice(dd.get("recency_unit", "days"), "dates.recency_unit", DURATION_UNITS))
    sd = r.mapping(data.get("survival"), "survival", ("duration", "event", "duration_unit"))
    surv = Survival(duration=r.opt_name(sd.get("duration"), "survival.duration"),
                    event=r.opt_name(sd.get("event"), "survival.event"),
                    duration_unit=r.choice(sd.get("duration_unit", "days"), "survival.duration_unit", DURATION_UNITS))
    wd = r.mapping(data.get("weighting"), "weighting", ("margins", "variables"))
    weighting = Weighting(margins=r.text(wd.get("margins"), "weighting.margins", None) or None,
                          variables=r.strings(wd.get("variables"), "weighting.variables"))
    idd = r.mapping(data.get("input"), "input", ("path", "delimiter", "encoding", "mapping", "fallback"))
    inp = Input(path=r.text(idd.get("path"), "input.path", None) or None,
                delimiter=_check_delimiter(idd.get("delimiter", ","), file, "input.delimiter"),
                encoding=_check_encoding(idd.get("encoding", "utf-8"), file, "input.encoding"),
                mapping=r.text(idd.get("mapping"), "input.mapping", None) or None,
                fallback=r.text(idd.get("fallback"), "input.fallback", None) or None,
                base=str(base) if base else None)
    ed = r.mapping(data.get("export"), "export", ("allow_third_party",))
    export = Export(allow_third_party=r.boolean(ed.get("allow_third_party"), "export.allow_third_party", False))
    derived = []
    for i, d in enumerate(r.items(data.get("derived"), "derived")):
        key = f"derived[{i}]"
        d = r.mapping(d, key, ("name", "rule", "columns", "values", "note"), ("name", "rule", "columns", "values"))
        derived.append(Derived(name=r.name(d["name"], f"{key}.name"),
                               rule=r.choice(d["rule"], f"{key}.rule", ("count_in",)),
                               columns=r.strings(d["columns"], f"{key}.columns"),
                               values=r.strings(d["values"], f"{key}.values"),
                               note=r.text(d.get("note"), f"{key}.note")))
    # cross-checks: names unique within a group, no role on the id, referenced columns declared somewhere
    for group, items in (("metrics", metrics), ("attributes", attrs), ("outcomes", outs)):
        seen = set()
        for i, x in enumerate(items):
            if x.name in seen:
                r.err(f"{group}[{i}].name", f"{x.name!r} is declared twice", "each column once per section")
            if x.name == ident:
                r.err(f"{group}[{i}].name", f"{x.name!r} is the identifier", "a column other than the id")
            seen.add(x.name)
    both = set(m.name for m in metrics) & set(a.name for a in attrs)
    if both:
        r.err("attributes", f"{sorted(both)[0]!r} is declared as a metric and as an attribute",
              "each column in one of metrics/attributes")
    declared = {ident, *[m.name for m in metrics], *[a.name for a in attrs], *[o.name for o in outs],
                *[d.name for d in derived], *[c for c in (dates.customer_since, dates.recency) if c],
                *[c for c in (surv.duration, surv.event) if c]}
    if surv.event and surv.event not in {o.name for o in outs} | {a.name for a in attrs}:
        r.err("survival.event", f"{surv.event!r} is not declared as an outcome", "the name of an outcome of "
              "kind 'churn_event' (declare it under 'outcomes')")
    for i, m in enumerate(metrics):
        cond = (m.when_missing or {}).get("if")
        if cond and cond["column"] not in declared:
            r.err(f"metrics[{i}].when_missing.if.column", f"{cond['column']!r} is not a declared column",
                  "a column declared in this configuration")
    for v in weighting.variables:
        if v not in declared:
            r.err("weighting.variables", f"{v!r} is not a declared column", "declared attribute names")
    return RunConfig(name=str(data.get("name") or (Path(file).stem if file else "custom")), id=ident,
                     metrics=metrics, attributes=attrs, dates=dates, outcomes=outs, survival=surv,
                     weighting=weighting, input=inp, derived=tuple(derived),
                     description=r.text(data.get("description"), "description"),
                     path=str(file) if file else None, export=export, raw=copy.deepcopy(data))


def preset(name: str) -> Path:
    """Path of a shipped preset (``default``, ``telco``)."""
    p = PRESETS / f"{name}.yaml"
    if not p.exists():
        raise ConfigError(p, "(file)", "no such preset", "one of " + ", ".join(
            sorted(x.stem for x in PRESETS.glob("*.yaml"))))
    return p


def load(path: str | os.PathLike | RunConfig | None = None) -> RunConfig:
    """Read and validate a run configuration.

    ``None`` -> ``$AUDIENCE_CONFIG`` if set, else the shipped default (the 22-column dictionary). A
    bare preset name (``"telco"``) selects ``presets/<name>.yaml``. Relative paths inside the file
    (``input.path``) are resolved against the repository root.
    """
    if isinstance(path, RunConfig):
        return path
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or DEFAULT_PATH
    p = Path(path).expanduser()
    if not p.exists() and not p.suffix and (PRESETS / f"{p.name}.yaml").exists():
        p = PRESETS / f"{p.name}.yaml"
    if not p.exists():
        raise ConfigError(p, "(file)", "file not found", "a YAML run configuration (copy "
                          "src/helpers/config/presets/telco.yaml as a start), or a preset name: " + ", ".join(
                              sorted(x.stem for x in PRESETS.glob("*.yaml"))))
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(p, where, f"not valid YAML ({getattr(e, 'problem', None) or e})",
                          "YAML as in the shipped presets (two-space indentation, 'key: value')") from None
    except UnicodeDecodeError as e:
        raise ConfigError(p, "(file)", f"not UTF-8 text ({e.reason} at byte {e.start})", "a UTF-8 text file") from None
    if data is None:
        raise ConfigError(p, "(file)", "the file is empty", "a YAML mapping with at least 'id'")
    from ..paths import REPO_ROOT

    return parse(data, p, base=REPO_ROOT)


__all__ = ["load", "parse", "preset", "RunConfig", "Metric", "Attribute", "Outcome", "Dates", "Survival",
           "Weighting", "Input", "Derived", "Export", "ConfigError", "MissingRole", "ROLES", "STAGE_NEEDS", "DEFAULT_PATH", "PRESETS",
           "tidy_title"]
