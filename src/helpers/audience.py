"""The one audience selector: lookalike seeds, exports, the ``audience-export`` CLI and the Explorer call it.

:func:`select` turns a specification into an :class:`Audience` (its ``user_id``s, a JSON-able definition
for the export manifest, its size, and the export-ready frame). Kinds:

* ``segment`` -- members of a GMM segment of ``segments.parquet`` (``segment=3``); score = posterior
  probability of the segment.
* ``lookalike`` -- the best-ranked candidates of ``lookalike_scores.parquet`` (``top_share=0.05`` or
  ``top=500``); the seed's own (training) members are never candidates.
* ``outcome`` -- users whose outcome column equals a value (``column="Churn", value="Yes"``), or for a
  numeric outcome is at least a threshold (``at_least=5``) or in its top share (``top_share=0.1``).
* ``ids`` -- a list (``ids=[...]``) or a file (``path=...``: one id per line, or a CSV with the id column).
* ``query`` -- a restricted filter on the unified table: clauses ``column OP literal`` joined by ``and``
  (``OP`` one of ``== != >= <= > < in``; literals are Python literals such as ``'CA'``, ``3``,
  ``('CA', 'NY')``). Nothing is evaluated but these comparisons.

**Churned users are not candidates.** Every kind drops users whose churn-event outcome (from the run
configuration: the outcome of kind ``churn_event``; default ``churned_in_last_90_days``) is positive, unless
``include_churned=True`` -- an activation list of customers who already left wastes budget. The one
exception is an ``outcome`` audience *on the churn column itself* (a churn seed), which is churned by
definition. The number dropped is stated in the definition.

**Names that could reveal 3rd-party traits.** Persona names of segments are built from profile
attributes, including 3rd-party (enrichment) ones ("renters", "families"); the export frame therefore
labels a segment audience ``"segment <k>"`` unless ``allow_third_party=True`` (the run configuration's
export policy), and the definition says so (see :mod:`helpers.export` for the whole field policy).

Engine-side selection (an Ibis table that is never collected: 1M+ users) uses :func:`top_expr` and
:func:`segment_expr`, which follow the same ordering rule (score descending, then ``user_id``).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

KINDS = ("segment", "lookalike", "outcome", "ids", "query")
#: default churn flag of the 22-column dictionary (used when no run configuration declares one)
DEFAULT_CHURN = ("churned_in_last_90_days", True)
_OPS = ("==", "!=", ">=", "<=", ">", "<", " in ")


@dataclass(frozen=True)
class Audience:
    """A selected audience.

    ``ids``: ``user_id`` (string) in selection order (best first for ranked kinds); ``definition``: how it
    was built (JSON-able, recorded in export manifests); ``size``: number of users; ``frame``: the
    export-ready table (``user_id`` + any of ``segment_name``, ``score``, ``reason_codes``,
    ``churn_prob_90d``), aligned with ``ids``.
    """

    ids: pd.Series
    definition: dict
    size: int
    frame: pd.DataFrame = field(repr=False, default=None)

    def mask(self, user_ids: pd.Series | pd.Index) -> np.ndarray:
        """Boolean membership of each of ``user_ids`` in the audience."""
        return pd.Index(pd.Series(user_ids).astype(str)).isin(pd.Index(self.ids))

    def __len__(self) -> int:
        return self.size


# --- configuration helpers --------------------------------------------------------------------------
def load_config(config: Any = None) -> Any:
    """The run configuration (``helpers.config.load``), or None when that module is not available."""
    if config is not None and not isinstance(config, (str, os.PathLike)):
        return config
    try:
        from . import config as cfgmod  # type: ignore[attr-defined]
    except ImportError:
        return None
    return cfgmod.load(config)


def churn_rule(config: Any = None, columns: Iterable[str] | None = None) -> tuple[str, Any] | None:
    """``(column, positive value)`` of the churn-event outcome of the configuration, else the default flag.

    None when neither is a column of the table (``columns``): churn status is then unknown.
    """
    cfg = load_config(config)
    cols = None if columns is None else set(columns)
    for o in getattr(cfg, "outcomes", None) or []:
        if getattr(o, "kind", None) == "churn_event" and (cols is None or o.name in cols):
            return o.name, getattr(o, "positive", True)
    if cols is None or DEFAULT_CHURN[0] in cols:
        return DEFAULT_CHURN
    return None


def matches(values: pd.Series, value: Any) -> np.ndarray:
    """Elementwise ``values == value`` that also matches across representations: ``"Yes"`` / ``"yes"``,
    ``True`` / ``"true"`` / ``1``, ``3`` / ``"3"``. Missing values never match."""
    s = pd.Series(values)
    if isinstance(value, str):
        text = value.strip().lower()
        if pd.api.types.is_bool_dtype(s.dtype) or text in ("true", "false"):
            if text in ("true", "yes", "1", "false", "no", "0"):
                want = text in ("true", "yes", "1")
                return (s.astype("boolean") == want).fillna(False).to_numpy(bool)
        if pd.api.types.is_numeric_dtype(s.dtype):
            try:
                value = float(text)
            except ValueError:
                return np.zeros(len(s), bool)
        else:
            return (s.astype("string").str.strip().str.lower() == text).fillna(False).to_numpy(bool)
    if pd.api.types.is_bool_dtype(s.dtype) or isinstance(value, (bool, np.bool_)):
        try:
            return (s.astype("boolean") == bool(value)).fillna(False).to_numpy(bool)
        except (TypeError, ValueError):
            return (s.astype("string").str.lower() == str(value).lower()).fillna(False).to_numpy(bool)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return (pd.to_numeric(s, errors="coerce") == float(value)).fillna(False).to_numpy(bool)
    return (s.astype("string") == str(value)).fillna(False).to_numpy(bool)


def churned_mask(frame: pd.DataFrame, config: Any = None) -> tuple[np.ndarray, str | None]:
    """Boolean "already churned" per row of the unified table, and the rule used (None: unknown)."""
    rule = churn_rule(config, frame.columns)
    if rule is None:
        return np.zeros(len(frame), bool), None
    col, pos = rule
    return matches(frame[col], pos), f"{col} == {pos!r}"


# --- the selector -----------------------------------------------------------------------------------
def _panel(P: Any, frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is not None:
        return frame
    if P is None:
        raise ValueError("give the run's paths (P) or the unified table (frame=)")
    from . import artifacts

    return artifacts.load_unified(P)


def _read(P: Any, name: str, producer: str) -> pd.DataFrame:
    from .artifacts import MissingArtifact

    if P is None:
        raise ValueError(f"give the run's paths (P) or the {name} frame")
    f = Path(P.processed) / name
    if not f.exists():
        raise MissingArtifact(f"{f} does not exist: it is written by notebook {producer}")
    return pd.read_parquet(f)


def select(P: Any, kind: str, *, frame: pd.DataFrame | None = None, config: Any = None,
           include_churned: bool = False, allow_third_party: bool = False, id_col: str | None = None,
           **spec: Any) -> Audience:
    """Select an audience of ``kind`` (see the module docstring) from the run at ``P``.

    Parameters
    ----------
    P : helpers.paths.Paths or None
        The run's folders (reads ``processed/``); None when every input is passed as a frame.
    kind : {"segment", "lookalike", "outcome", "ids", "query"}
    frame : DataFrame, optional
        The unified table (default: loaded from ``P``); needed for churn exclusion and outcome/query/ids.
    config : run configuration or path, optional
        Labels, the churn rule and the id column (default: the run configuration, else the dictionary).
    include_churned : bool
        Keep users who already churned (default False: they are dropped and counted).
    allow_third_party : bool
        Let persona names (possibly built from 3rd-party traits) label the exported rows.
    **spec
        ``segment=`` / ``segments=`` (frame) for ``segment``; ``top_share=`` or ``top=`` and optionally
        ``scores=`` (frame) for ``lookalike``; ``column=`` + one of ``value=`` / ``at_least=`` /
        ``top_share=`` and ``label=`` for ``outcome``; ``ids=`` or ``path=`` for ``ids``; ``query=`` for
        ``query``; ``churn_risk=`` (frame with ``churn_prob_90d``) adds that column to the export frame.
    """
    if kind not in KINDS:
        raise ValueError(f"audience kind must be one of {list(KINDS)}, got {str(kind)[:40]!r}")
    cfg = load_config(config)
    id_col = id_col or getattr(cfg, "id", None) or "user_id"
    churn_risk = spec.pop("churn_risk", None)
    # churned users are not candidates (except in a churn seed, churned by definition)
    churn = churn_rule(cfg)
    is_churn_seed = kind == "outcome" and churn is not None and spec.get("column") == churn[0]
    gone = _text_ids([])  # ids of churned users, as Arrow text
    if include_churned or is_churn_seed:
        churn_note = ("kept (churn seed: churned by definition)" if is_churn_seed
                      else "kept (include_churned=True)")
    else:
        df0 = frame if frame is not None else (_panel(P, None) if P is not None else None)
        rule = None
        if df0 is not None:
            mask, rule = churned_mask(df0, cfg)
            gone = _text_ids(df0.loc[mask, id_col]) if id_col in df0 else gone
        churn_note = ("not checked (no unified table given)" if df0 is None else
                      "not checked (the table declares no churn outcome)" if rule is None else rule)
    if kind == "segment":
        aud, definition = _segment(P, spec, allow_third_party)
    elif kind == "lookalike":
        aud, definition = _lookalike(P, spec, allow_third_party, gone)
    else:
        df = _panel(P, frame)
        if id_col not in df:
            raise ValueError(f"the table has no identifier column {id_col!r}")
        if kind == "outcome":
            aud, definition = _outcome(df, id_col, cfg, spec)
        elif kind == "ids":
            aud, definition = _ids(df, id_col, spec)
        else:
            aud, definition = _query(df, id_col, spec)
    if spec:
        raise ValueError(f"unknown options {sorted(spec)} for an audience of kind {kind!r}")
    definition = {"kind": kind, **definition}
    if len(gone):
        keep = ~_is_in(aud["user_id"], gone)
        definition["churned_users"] = f"excluded ({int((~keep).sum())} users with {churn_note})"
        aud = aud.loc[keep].reset_index(drop=True)
    elif churn_note.startswith(("kept", "not checked")):
        definition["churned_users"] = churn_note
    else:
        definition["churned_users"] = f"excluded (0 users with {churn_note})"
    if churn_risk is not None and "churn_prob_90d" in churn_risk and "churn_prob_90d" not in aud:
        p = aud["user_id"].map(churn_risk.set_index(churn_risk["user_id"].astype(str))["churn_prob_90d"])
        if p.notna().all():
            aud["churn_prob_90d"] = p.astype(float).to_numpy()
    if len(aud) == 0:
        raise ValueError(f"the audience {definition} is empty; widen its definition"
                         + ("" if include_churned else " or pass include_churned=True"))
    aud = aud.reset_index(drop=True)
    aud["user_id"] = aud["user_id"].astype(str)
    return Audience(aud["user_id"].rename("user_id"), definition, int(len(aud)), aud)


def _segment(P: Any, spec: dict, allow_third_party: bool) -> tuple[pd.DataFrame, dict]:
    if "segment" not in spec:
        raise ValueError("a segment audience needs segment=<number>")
    raw = spec.pop("segment")
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"segment must be an integer, got {str(raw)[:40]!r}") from None
    segs = spec.pop("segments", None)
    if segs is None:
        segs = _read(P, "segments.parquet", "04_segment_gmm")
    missing = {"user_id", "segment"} - set(segs.columns)
    if missing:
        raise ValueError(f"segments frame lacks columns {sorted(missing)}; expected segments.parquet (04)")
    rows = (segs["segment"] == k).to_numpy()
    if not rows.any():
        raise ValueError(f"segment {k} has no members; segments present: "
                         f"{sorted(pd.unique(segs['segment']).tolist())}")
    persona = str(segs.loc[rows, "segment_name"].iloc[0]) if "segment_name" in segs else None
    label = persona if (allow_third_party and persona) else f"segment {k}"
    aud = pd.DataFrame({"user_id": segs.loc[rows, "user_id"].astype(str).to_numpy(), "segment_name": label})
    how = {"segment": k, "persona_name": persona}
    if f"prob_{k}" in segs:
        aud["score"] = segs.loc[rows, f"prob_{k}"].to_numpy(float)
        how["score"] = "posterior probability of the segment"
        aud = aud.sort_values(["score", "user_id"], ascending=[False, True], kind="mergesort")
    how["label_in_export"] = (label if label != persona else
                              f"{label} (persona name allowed by the export policy)")
    if persona and label != persona:
        how["label_note"] = ("persona names are built from profile attributes that may be 3rd-party; "
                             "exported rows carry the neutral label (allow with the configuration's "
                             "export policy)")
    return aud, how


def _text_ids(ids) -> Any:
    """Identifiers as an Arrow text array (numbers as their text, as :mod:`helpers.panel` compares them),
    without a Python string per id."""
    import pyarrow as pa

    from .panel import _ids

    return pa.array(_ids(pd.Series(ids, dtype=object) if not isinstance(ids, pd.Series) else ids).array)


def _is_in(ids: pd.Series, value_set: Any) -> np.ndarray:
    """``ids.astype(str).isin(value_set)`` matched in Arrow: at 10M candidates the pandas form made a Python
    string per id and hashed them (the Explorer's lookalike view peaked at 8.45 GB)."""
    import pyarrow.compute as pc

    return pc.is_in(_text_ids(ids), value_set=value_set).to_numpy(zero_copy_only=False)


def _candidates(scores: pd.DataFrame, gone: Any) -> np.ndarray:
    """Rows of the lookalike scores that are candidates: ranked by the stage and not churned (``gone``)."""
    return scores["rank"].notna().to_numpy() & ~_is_in(scores["user_id"], gone)


def lookalike_candidates(scores: pd.DataFrame, frame: pd.DataFrame, config: Any = None,
                         id_col: str | None = None) -> int:
    """How many users ``select(None, "lookalike", frame=frame, scores=scores, top_share=1.0)`` would return,
    counted without building that audience (at 10M users it is every candidate's row)."""
    cfg = load_config(config)
    id_col = id_col or getattr(cfg, "id", None) or "user_id"
    mask, _ = churned_mask(frame, cfg)
    gone = _text_ids(frame.loc[mask, id_col]) if id_col in frame else _text_ids([])
    return int(_candidates(scores, gone).sum())


def _lookalike(P: Any, spec: dict, allow_third_party: bool, gone: Any) -> tuple[pd.DataFrame, dict]:
    top, share = spec.pop("top", None), spec.pop("top_share", None)
    if top is None and share is None:
        share = 0.05
    if top is not None and share is not None:
        raise ValueError("give exactly one of top (users) or top_share (of candidates)")
    scores = spec.pop("scores", None)
    if scores is None:
        scores = _read(P, "lookalike_scores.parquet", "08_lookalike_activation")
    need = {"user_id", "rank", "score"} - set(scores.columns)
    if need:
        raise ValueError(f"lookalike scores lack columns {sorted(need)}; expected lookalike_scores.parquet (08)")
    cand = scores[_candidates(scores, gone)]
    cand = cand.sort_values("rank", kind="mergesort")
    n = check_count(top, share, len(cand))
    best = cand.head(n)
    seed_name = str(scores["audience"].iloc[0]) if "audience" in scores else "seed"
    if "seed_label_third_party" in scores and bool(scores["seed_label_third_party"].iloc[0]) \
            and not allow_third_party:
        seed_name = "seed"
    out = pd.DataFrame({"user_id": best["user_id"].astype(str).to_numpy(),
                        "segment_name": f"{seed_name} lookalike", "score": best["score"].to_numpy(float)})
    for c in ("reason_codes", "churn_prob_90d"):
        if c in best:
            out[c] = best[c].to_numpy()
    how = {"seed": str(scores["audience"].iloc[0]) if "audience" in scores else None,
           "selection": (f"top {n} users" if top is not None else f"top {float(share):.1%} of candidates")
           + f" of {len(cand)} by lookalike score (ties: user_id)",
           "score": "calibrated P(labelled | x) of the lookalike model"}
    return out, how


def check_count(top: Any, share: Any, n_candidates: int) -> int:
    """The audience size from ``top`` (users) or ``share`` (of ``n_candidates``), refusing nonsense."""
    if top is not None:
        try:
            n = int(str(top).strip())
        except ValueError:
            raise ValueError(f"top must be a whole number of users, got {str(top)[:40]!r}") from None
    else:
        try:
            q = float(share)
        except (TypeError, ValueError):
            raise ValueError(f"top_share must be a number in (0, 1], got {str(share)[:40]!r}") from None
        if not np.isfinite(q) or not 0 < q <= 1:
            raise ValueError(f"top_share must be a finite share in (0, 1], got {share!r}")
        n = int(round(q * n_candidates))
    if not 1 <= n <= n_candidates:
        raise ValueError(f"audience size {n} must be between 1 and the {n_candidates} candidates")
    return n


def outcome_mask(df: pd.DataFrame, column: str, value: Any = None, at_least: Any = None,
                 top_share: Any = None) -> tuple[np.ndarray, str]:
    """Rows of ``df`` meeting an outcome rule, and the rule in words (``column == value`` etc.)."""
    if column not in df:
        raise ValueError(f"outcome column {column!r} is not in the table; columns: {list(df.columns)[:30]}")
    given = [x is not None for x in (value, at_least, top_share)]
    if sum(given) != 1:
        raise ValueError("give exactly one of value= (column == value), at_least= (numeric >=) or "
                         "top_share= (numeric, highest share)")
    if value is not None:
        return matches(df[column], value), f"{column} == {value!r}"
    v = pd.to_numeric(df[column], errors="coerce").astype(float)
    if v.isna().all():
        raise ValueError(f"outcome column {column!r} is not numeric; use value= instead")
    if at_least is not None:
        t = float(at_least)
        if not np.isfinite(t):
            raise ValueError(f"at_least must be finite, got {at_least!r}")
        return (v >= t).fillna(False).to_numpy(bool), f"{column} >= {t:g}"
    q = float(top_share)
    if not np.isfinite(q) or not 0 < q < 1:
        raise ValueError(f"top_share must be a share in (0, 1), got {top_share!r}")
    cut = float(v.quantile(1 - q))
    return (v >= cut).fillna(False).to_numpy(bool), f"{column} >= {cut:g} (top {q:.0%})"


def _outcome(df: pd.DataFrame, id_col: str, cfg: Any, spec: dict) -> tuple[pd.DataFrame, dict]:
    column = spec.pop("column", None)
    if column is None:
        raise ValueError("an outcome audience needs column= (and value=, at_least= or top_share=)")
    m, rule = outcome_mask(df, column, spec.pop("value", None), spec.pop("at_least", None),
                           spec.pop("top_share", None))
    label = spec.pop("label", None) or _label(cfg, column)
    aud = pd.DataFrame({"user_id": df.loc[m, id_col].astype(str).to_numpy(), "segment_name": label})
    return aud.sort_values("user_id", kind="mergesort"), {"column": column, "rule": rule, "label": label}


def _label(cfg: Any, column: str) -> str:
    if cfg is not None and hasattr(cfg, "label"):
        return str(cfg.label(column))  # undeclared columns get a tidy title from the configuration itself
    return column.replace("_", " ")


def read_ids(path: str | os.PathLike, id_col: str = "user_id") -> list[str]:
    """Ids from a file: a CSV with an ``id_col`` column, or one id per line (blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"seed ids file {p} does not exist; give a file with one {id_col} per line")
    text = p.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    if "," in first or first == id_col:
        t = pd.read_csv(p, dtype=str)
        if id_col not in t:
            raise ValueError(f"{p}, line 1: the header has no {id_col!r} column (has {list(t.columns)[:10]})")
        return t[id_col].dropna().str.strip().tolist()
    out = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if any(ord(ch) < 32 for ch in s):
            raise ValueError(f"{p}, line {i}: the id contains control characters")
        out.append(s)
    return out


def _ids(df: pd.DataFrame, id_col: str, spec: dict) -> tuple[pd.DataFrame, dict]:
    ids, path = spec.pop("ids", None), spec.pop("path", None)
    if (ids is None) == (path is None):
        raise ValueError("an ids audience needs exactly one of ids=[...] or path=<file>")
    source = f"list of {len(ids)} ids" if ids is not None else f"file {Path(path).name}"
    ids = [str(x) for x in ids] if ids is not None else read_ids(path, id_col)
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise ValueError(f"the {source} holds no ids")
    known = pd.Index(df[id_col].astype(str))
    unknown = pd.Index(ids).difference(known)
    if len(unknown):
        raise ValueError(f"{len(unknown)} of {len(ids)} ids of the {source} are not in the panel, e.g. "
                         f"{unknown[:5].tolist()}; check them against the unified table's {id_col}")
    label = spec.pop("label", None) or "custom list"
    return pd.DataFrame({"user_id": ids, "segment_name": label}), {"source": source, "label": label}


_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|>|<|\bin\b)\s*(.+?)\s*$")


def query_mask(df: pd.DataFrame, query: str) -> np.ndarray:
    """Rows meeting a restricted filter (see the module docstring); anything else is refused."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string such as \"state == 'CA' and household_size >= 3\"")
    if len(query) > 2000 or any(ord(ch) < 32 for ch in query):
        raise ValueError("query is too long or contains control characters")
    m = np.ones(len(df), bool)
    for clause in re.split(r"\s+and\s+", query.strip()):
        hit = _CLAUSE.match(clause)
        if not hit:
            raise ValueError(f"cannot read the clause {clause[:60]!r}: write column OP value with OP one of "
                             "== != >= <= > < in, clauses joined by 'and'")
        col, op, lit = hit.groups()
        if col not in df:
            raise ValueError(f"query column {col!r} is not in the table")
        try:
            value = ast.literal_eval(lit)
        except (ValueError, SyntaxError):
            raise ValueError(f"the value {lit[:40]!r} in {clause[:60]!r} is not a literal "
                             "(quote text: 'CA')") from None
        s = df[col]
        if op == "in":
            if not isinstance(value, (tuple, list, set)):
                raise ValueError(f"'in' needs a list or tuple, got {lit[:40]!r}")
            hit_m = np.zeros(len(df), bool)
            for v in value:
                hit_m |= matches(s, v)
        elif op in ("==", "!="):
            hit_m = matches(s, value)
            if op == "!=":
                hit_m = ~hit_m & s.notna().to_numpy()
        else:
            v = pd.to_numeric(s, errors="coerce").astype(float)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{op} needs a number, got {lit[:40]!r}")
            hit_m = {">=": v >= value, "<=": v <= value, ">": v > value, "<": v < value}[op].fillna(False)
            hit_m = hit_m.to_numpy(bool)
        m &= hit_m
    return m


def _query(df: pd.DataFrame, id_col: str, spec: dict) -> tuple[pd.DataFrame, dict]:
    q = spec.pop("query", None)
    m = query_mask(df, q)
    label = spec.pop("label", None) or "query audience"
    aud = pd.DataFrame({"user_id": df.loc[m, id_col].astype(str).to_numpy(), "segment_name": label})
    return aud, {"query": q, "label": label}


# --- engine-side selection (Ibis; nothing collected) --------------------------------------------------
def segment_expr(scores: Any, segment: int, segment_name: str | None = None, id_col: str = "user_id"):
    """Members of ``segment`` in a scored Ibis table (``segment``, ``prob_<k>``), ordered like :func:`select`.

    Columns ``user_id``, ``segment_name`` (default the neutral ``"segment <k>"``), ``score``.
    """
    import ibis

    prob = f"prob_{segment}"
    if "segment" not in scores.columns or prob not in scores.columns:
        raise ValueError(f"the scores lack 'segment' or {prob!r} (has {list(scores.columns)})")
    members = scores.filter(scores["segment"] == segment)
    sel = members.select(user_id=members[id_col].cast("string"),
                         segment_name=ibis.literal(segment_name or f"segment {segment}"),
                         score=members[prob].cast("float64"))
    return sel.order_by([ibis.desc("score"), "user_id"])


def top_expr(scores: Any, *, top: int | None = None, share: float | None = None, label: str,
             score_col: str = "score", exclude: Any = None, id_col: str = "user_id"):
    """The ``top`` best-scored rows (or top ``share`` of candidates) of an Ibis table, ordered like
    :func:`select` (score descending, ties by ``user_id``); rows whose id is in ``exclude`` are not
    candidates. Columns ``user_id``, ``segment_name`` (= ``label``), ``score``."""
    import ibis

    if (top is None) == (share is None):
        raise ValueError("give exactly one of top (users) or share (of candidates)")
    cand = scores
    if exclude is not None:
        ex = exclude.select(_excluded_id=exclude[id_col].cast("string"))
        cand = cand.anti_join(ex, cand[id_col].cast("string") == ex["_excluded_id"])
    n_cand = int(cand.count().execute()) if share is not None else None
    n = check_count(top, share, n_cand) if share is not None else int(top)
    if n < 1:
        raise ValueError(f"audience size {n} must be at least 1")
    sel = cand.select(user_id=cand[id_col].cast("string"), segment_name=ibis.literal(label),
                      score=cand[score_col].cast("float64"))
    return sel.order_by([ibis.desc("score"), "user_id"]).limit(n)


def seed_ids(P: Any, frame: pd.DataFrame, *, seed_outcome: str | None = None, seed_value: Any = None,
             seed_ids_path: str | None = None, config: Any = None) -> Audience | None:
    """The seed the notebook parameters ``seed_outcome``/``seed_value``/``seed_ids_path`` ask for (None
    when none is given): an ``ids`` audience from the file, or an ``outcome`` audience (``value``
    matched exactly; a numeric value on a numeric column of kind conversion/value is a threshold)."""
    if seed_ids_path:
        return select(P, "ids", frame=frame, config=config, path=seed_ids_path, include_churned=True)
    if not seed_outcome:
        return None
    if seed_outcome not in frame:
        raise ValueError(f"seed_outcome {seed_outcome!r} is not a column of the table")
    kind = outcome_kind(config, seed_outcome)
    numeric = pd.api.types.is_numeric_dtype(frame[seed_outcome].dtype) \
        and not pd.api.types.is_bool_dtype(frame[seed_outcome].dtype)
    if seed_value is None:
        if not numeric:
            raise ValueError(f"seed_outcome {seed_outcome!r} needs seed_value (the value meaning 'yes')")
        return select(P, "outcome", frame=frame, config=config, column=seed_outcome, top_share=0.1,
                      include_churned=True)
    if numeric and kind in ("conversion", "value"):
        return select(P, "outcome", frame=frame, config=config, column=seed_outcome, at_least=seed_value,
                      include_churned=True)
    return select(P, "outcome", frame=frame, config=config, column=seed_outcome, value=seed_value,
                  include_churned=True)


def outcome_kind(config: Any, column: str) -> str | None:
    """The configured kind (conversion, value, churn_event, response) of an outcome column, if declared."""
    cfg = load_config(config)
    for o in getattr(cfg, "outcomes", None) or []:
        if o.name == column:
            return o.kind
    return {"monthly_conversions": "conversion", "avg_monthly_spend": "value",
            "churned_in_last_90_days": "churn_event"}.get(column) if cfg is None else None


def outcome_names(config: Any, columns: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``(name, kind, positive)`` of the configured outcomes present in ``columns``."""
    cfg = load_config(config)
    outs = getattr(cfg, "outcomes", None)
    if outs is None:
        outs_t = [("monthly_conversions", "conversion", None), ("avg_monthly_spend", "value", None),
                  ("churned_in_last_90_days", "churn_event", True)]
    else:
        outs_t = [(o.name, o.kind, getattr(o, "positive", None)) for o in outs]
    return [o for o in outs_t if o[0] in set(columns)]
