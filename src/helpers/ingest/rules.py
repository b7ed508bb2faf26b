"""The data dictionary's value rules as Ibis expressions, the same on both engines: parse, judge, and split a
validated table into accepted rows and quarantine rows with their reasons.
"""

from __future__ import annotations

from typing import Any, Mapping

import ibis

from .. import schema as S


TRUE_STRINGS = {"true", "t", "1", "yes", "y"}


FALSE_STRINGS = {"false", "f", "0", "no", "n"}


#: A number as the sources write it: optional sign, digits with an optional decimal point, optional exponent.
#: Checked before casting so that both engines accept exactly the same texts (Spark's cast alone would
#: also take Java forms such as ``1.5d``).
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


#: Surrounding whitespace removed from every value. A regex rather than Ibis' ``strip()``, whose Spark SQL
#: spells the characters as ``'\v\f'`` escapes that Spark reads as the letters v and f.
EDGE_SPACE = r"^[ \t\n\r\f\x0b]+|[ \t\n\r\f\x0b]+$"


#: Control characters an identifier must not contain (a regex both engines' regex libraries understand).
CONTROL_CHARS = r"[\x00-\x1f\x7f]"


#: Dates before this are implausible for a customer table (typing errors such as 1800 or 0202).
EARLIEST_DATE = "1900-01-01"


QUARANTINE_META = ["_source", "_line", "_column", "_reason"]


def _text(s: str) -> ibis.Value:
    return ibis.literal(s, type="string")


def _typed(raw: ibis.Value, col: S.Column) -> bool:
    """Whether a column arrives typed (from Parquet) in a form its rule can judge without text: numbers for
    ``int``/``float`` columns, dates for ``date`` columns (timestamps are read as their day)."""
    dt = raw.type()
    return (col.kind in ("int", "float") and dt.is_numeric()) or (col.kind == "date" and dt.is_date())


def _parse(s: ibis.Value, col: S.Column) -> dict[str, ibis.Value]:
    """Stage 2 of :func:`validate`: the parsed value ``v`` (before range checks) and, for numbers, ``m``
    (the text has the form of a number).

    A typed value (:func:`_typed`) is judged as its text would be, without making the text: a number's text
    (the engine's cast) has the form of a number unless it is NaN or infinite, and a date's text has the form
    ``YYYY-MM-DD`` when its year is 1 to 9999."""
    null = ibis.null("string")
    if _typed(s, col) and col.kind in ("int", "float"):
        if s.type().is_floating():
            m = ~(s.isnan() | s.isinf())
            return {"v": ibis.ifelse(m, s.cast("float64"), ibis.null("float64")), "m": m}
        return {"v": s.cast("float64"), "m": s.notnull()}
    if _typed(s, col):
        return {"v": ibis.ifelse(s.between(ibis.date("0001-01-01"), ibis.date("9999-12-31")), s,
                                 ibis.null("date"))}
    if col.kind in ("int", "float"):
        m = s.re_search(NUMBER_PATTERN)
        return {"v": ibis.ifelse(m, s, null).try_cast("float64"), "m": m}
    if col.kind == "date":
        return {"v": ibis.ifelse(s.re_search(DATE_PATTERN), s, null).try_cast("date")}
    if col.kind == "bool":
        low = s.lower()
        return {"v": ibis.cases((low.isin(sorted(TRUE_STRINGS)), True), (low.isin(sorted(FALSE_STRINGS)), False),
                                else_=ibis.null("boolean"))}
    return {"v": s}


def _problem(s: ibis.Value, v: ibis.Value, m: ibis.Value | None, col: S.Column,
             observation_date: str | None = None) -> ibis.Value:
    """Stage 3 of :func:`validate`: the problem text of a value (``NULL`` when valid). A typed value's text
    (the engine's cast) is made only inside the messages, i.e. only for rejected rows."""
    missing = s.isnull()
    s = s.cast("string") if _typed(s, col) else s
    exp = f"; expected {col.allowed()}"
    null = ibis.null("string")
    if col.kind in ("category", "ordinal"):
        problem = ibis.ifelse(~missing & ~s.isin(list(col.categories)), "unknown category " + s + exp, null)
    elif col.kind == "multi":
        problem = ibis.ifelse(~missing & ~s.re_search(S.multi_pattern(col.categories)),
                              "invalid value " + s + exp, null)
    elif col.kind in ("int", "float"):
        out = v.isnull() | (v < col.min_value)  # a number form the engine cannot hold (1e400) is out of range
        if col.max_value is not None:
            out = out | (v > col.max_value)
        cases = [(~m, "not a number: " + s + exp)]
        if col.kind == "int":
            cases.append((v.notnull() & (v % 1 != 0), "not an integer: " + s + exp))
        cases.append((out, "out of range: " + s + exp))
        problem = ibis.ifelse(missing, null, ibis.cases(*cases, else_=null))
    elif col.kind == "date":
        cases = [(v.isnull(), "unparseable date: " + s + exp),
                 (v < ibis.date(EARLIEST_DATE), f"implausibly old date (before {EARLIEST_DATE}): " + s
                  + f"; expected a date from {EARLIEST_DATE} on")]
        if observation_date:
            cases.append((v > ibis.date(observation_date), "date after the observation date " + _text(
                observation_date) + ": " + s + f"; expected a date on or before {observation_date} (or pass the "
                "real observation_date)"))
        problem = ibis.ifelse(missing, null, ibis.cases(*cases, else_=null))
    elif col.kind == "bool":
        problem = ibis.ifelse(~missing & v.isnull(), "not a boolean: " + s + exp, null)
    elif col.kind in ("id", "text"):
        problem = null
    else:  # pragma: no cover - the dictionary only has the kinds above
        raise ValueError(f"unknown column kind {col.kind}")
    if not col.nullable:
        problem = ibis.ifelse(missing, _text(f"missing value{exp}"), problem)
    return problem


def _key_problem(s: ibis.Value, copies: ibis.Value, key: str) -> ibis.Value:
    """An identifier must be present, free of control characters and unique: every copy of a duplicated
    value is rejected."""
    return ibis.cases((s.isnull(), _text("missing identifier")),
                      (s.re_search(CONTROL_CHARS), _text("identifier contains a control character (NUL, tab, line "
                                                         "break, ...); expected printable text")),
                      (copies > 1, f"duplicate {key} " + s + " (every copy is rejected)"),
                      else_=ibis.null("string"))


def _combine(problems: dict[str, ibis.Value]) -> tuple[ibis.Value, ibis.Value]:
    """``(_column, _reason)``: the first column with a problem, and ``'col: problem; ...'`` for all of them."""
    column = ibis.cases(*[(p.notnull(), _text(c)) for c, p in problems.items()], else_=ibis.null("string"))
    joined = None
    for c, p in problems.items():
        piece = ibis.ifelse(p.notnull(), f"; {c}: " + p, _text(""))
        joined = piece if joined is None else joined + piece
    reason = ibis.ifelse(column.isnull(), ibis.null("string"), joined.substr(2))
    return column, reason


def validate(raw: ibis.Table, columns: list[str], key: str = "user_id", extra_keys: list[str] | None = None,
             stage=None, spec: Mapping[str, S.Column] | None = None,
             observation_date: str | None = None, key_unique: bool = True) -> ibis.Table:
    """Apply the data dictionary's rules to a text table (from :func:`read_text_source`), on any engine.

    Values are stripped of surrounding whitespace (an empty cell is missing). Rules: unknown category,
    invalid multi-valued set (:func:`helpers.schema.multi_pattern`), not a number (:data:`NUMBER_PATTERN`),
    not an integer, out of range, unparseable date (``YYYY-MM-DD``), not a boolean, missing value where the
    column is not nullable; ``key`` and ``extra_keys`` are identifiers that must be present and unique
    (every copy of a duplicate is rejected; ``key_unique=False`` for long tables) and free of control
    characters. Dates before
    :data:`EARLIEST_DATE` or after ``observation_date`` (when given) are implausible. ``spec`` maps column
    names to their :class:`helpers.schema.Column` rule (default: the 22-column dictionary).

    Returns ``_line``, the raw text columns, the parsed value of each checked column as ``_v_<column>``,
    and ``_column`` (first column with a problem) / ``_reason`` (``'column: problem; ...'``), both ``NULL``
    for a valid row. ``stage`` (expression -> table, e.g. a temporary view) cuts the plan between the
    parsing stages so the generated SQL stays small; without it the expression is one (large) query.
    """
    stage = stage or (lambda t: t)
    spec = S.BY_NAME if spec is None else spec
    keys = [key, *(extra_keys or [])]
    checked = keys + [c for c in columns if c not in keys]
    raw = _as_text(raw, checked, spec, keys)
    t = raw.mutate(**{f"_s_{c}": raw[c] if c not in keys and _typed(raw[c], spec[c]) else _strip(raw[c])
                      for c in checked})
    t = stage(t.mutate(**{f"_n_{k}": t[f"_s_{k}"].count().over(ibis.window(group_by=t[f"_s_{k}"]))
                          if key_unique or k != key else ibis.literal(1, type="int64") for k in keys}))
    parsed = {}
    for c in checked:
        if c not in keys:
            for part, expr in _parse(t[f"_s_{c}"], spec[c]).items():
                parsed[f"_{part}_{c}"] = expr
    t = stage(t.mutate(**parsed))
    problems = {k: _key_problem(t[f"_s_{k}"], t[f"_n_{k}"], k) for k in keys}
    for c in checked:
        if c not in keys:
            problems[c] = _problem(t[f"_s_{c}"], t[f"_v_{c}"], t[f"_m_{c}"] if f"_m_{c}" in t.columns else None,
                                   spec[c], observation_date)
    t = stage(t.mutate(**{f"_p_{c}": p for c, p in problems.items()}))
    column, reason = _combine({c: t[f"_p_{c}"] for c in checked})
    values = {}
    for c in checked:
        kind = "id" if c in keys else spec[c].kind
        v = t[f"_s_{c}"] if kind == "id" else t[f"_v_{c}"]
        if kind in ("int", "float"):
            v = ibis.ifelse(t[f"_p_{c}"].isnull(), v, ibis.null("float64"))
            v = v.round().cast("int64") if kind == "int" else v
        values[f"_v_{c}"] = v
    keep = [c for c in raw.columns]
    return t.select(*keep, _column=column, _reason=reason, **values)


def valid_values(raw: ibis.Table, columns: list[str], spec: Mapping[str, S.Column], key: str = "user_id"
                 ) -> ibis.Table:
    """``_line`` and the parsed columns under their own names, for rows :func:`validate` accepted (the same
    values as :func:`accepted` of the validated table, without judging the rows again): a long table's
    accepted rows are its rows less the quarantined lines, parsed once more instead of validated twice."""
    raw = _as_text(raw, [key, *columns], spec, [key])
    out = {}
    for c in dict.fromkeys([key, *columns]):
        s = _strip(raw[c]) if not (c != key and _typed(raw[c], spec[c])) else raw[c]
        if c == key:
            out[c] = s
            continue
        v = _parse(s, spec[c])["v"]
        out[c] = v.round().cast("int64") if spec[c].kind == "int" else v
    return raw.select("_line", **out)


def _as_text(raw: ibis.Table, columns: list[str], spec: Mapping[str, S.Column], keys: list[str]) -> ibis.Table:
    """Typed columns (from Parquet read with ``keep_types``) that their rule does not judge typed, as text."""
    cast = {c: raw[c].cast("string") for c in columns if not raw[c].type().is_string()
            and (c in keys or not _typed(raw[c], spec[c]))}
    return raw.mutate(**cast) if cast else raw


def _strip(s: ibis.Value) -> ibis.Value:
    """Surrounding whitespace removed; an empty value is missing."""
    return s.re_replace(EDGE_SPACE, "").nullif("")


def accepted(v: ibis.Table, columns: list[str]) -> ibis.Table:
    """Valid rows of a validated table: ``_line`` and the parsed columns under their own names."""
    return v.filter(v._reason.isnull()).select("_line", **{c: v[f"_v_{c}"] for c in columns})


def _raw_columns(v: ibis.Table) -> list[str]:
    return [c for c in v.columns if not c.startswith("_")]


def rejected(v: ibis.Table, source: str, where: ibis.Value | None = None, column: Any = None,
             reason: Any = None) -> ibis.Table:
    """Quarantine rows: ``_source, _line, _column, _reason`` and the raw text columns."""
    rows = v.filter(v._reason.notnull() if where is None else where)
    return rows.select(_source=_text(source), _line=rows._line.cast("int64"),
                       _column=(rows._column if column is None else column).cast("string"),
                       _reason=(rows._reason if reason is None else reason).cast("string"),
                       **{c: rows[c].cast("string") for c in _raw_columns(v)})
