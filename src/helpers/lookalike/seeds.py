"""Seed audiences (an outcome rule, a segment, a list of ids) and the columns a model of each must not see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import audience as A


#: the churn model's score of notebook 06, when used as a feature
CHURN_SCORE = "churn_prob_90d"


@dataclass(frozen=True)
class Seed:
    """A seed audience: a name, a human-readable definition (for the export manifest) and its members.

    ``defined_by``: the columns the definition is a rule on; :func:`defining_columns` widens them to
    everything the model must not see.
    """

    name: str
    definition: str
    user_ids: pd.Index
    defined_by: tuple[str, ...] = ()
    #: the seed's label may reveal 2nd/3rd-party traits (a persona name): exports then use a neutral label
    label_third_party: bool = False

    def mask(self, user_ids: pd.Series | pd.Index) -> np.ndarray:
        """Boolean membership of each of ``user_ids`` in the seed."""
        ids = pd.Series(user_ids)
        if isinstance(ids.dtype, pd.StringDtype):
            # Arrow text looked up in Arrow: 10M ids turned into Python strings took 0.7 GB
            import pyarrow as pa
            import pyarrow.compute as pc

            members = pa.array(pd.Series(self.user_ids.astype(str), dtype="string[pyarrow]").array)
            got = pc.is_in(pa.array(ids.astype("string[pyarrow]").array), value_set=members)
            return got.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        return pd.Index(ids.astype(str)).isin(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)


def seed_from_audience(aud: "A.Audience", name: str | None = None) -> Seed:
    """A :class:`Seed` from an :func:`helpers.audience.select` result."""
    d = aud.definition
    col = d.get("column")
    label = name or d.get("label") or (f"segment {d['segment']}" if "segment" in d else "seed")
    text = d.get("rule") or d.get("source") or d.get("query") or str(d)
    return Seed(str(label), str(text), pd.Index(aud.ids.astype(str), name="user_id"),
                (col,) if col else (), label_third_party=False)


def seed_from_segment(segments: pd.DataFrame, segment: int) -> Seed:
    """Members of ``segment`` in a ``segments.parquet`` frame (``user_id``, ``segment``, ``segment_name``).

    The seed's name is the persona name, which may be built from 3rd-party traits: flagged as such.
    """
    aud = A.select(None, "segment", segments=segments, segment=segment, allow_third_party=True,
                   include_churned=True)
    name = aud.definition.get("persona_name") or f"segment {segment}"
    return Seed(name, f"members of segment {segment} ({name}) of the GMM segmentation",
                pd.Index(aud.ids, name="user_id"), label_third_party=True)


def seed_from_outcome(df: pd.DataFrame, column: str, *, value: Any = None, at_least: Any = None,
                      top_share: Any = None, label: str | None = None) -> Seed:
    """Users whose outcome ``column`` equals ``value`` (or is >= ``at_least``, or in its ``top_share``)."""
    m, rule = A.outcome_mask(df, column, value, at_least, top_share)
    if not m.any():
        raise ValueError(f"no user meets the seed rule {rule}; choose another value")
    return Seed(label or rule, rule, pd.Index(df.loc[m, "user_id"].astype(str), name="user_id"), (column,))


def seed_from_config_outcome(df: pd.DataFrame, outcome: Any, max_share: float = 0.5,
                             top_share: float = 0.1) -> Seed:
    """The seed of a configured outcome (``cfg.outcomes``): its ``positive`` rule; a rule that covers more
    than ``max_share`` of the panel (``monthly_conversions > 0`` when most users convert) is not a seed
    anyone buys lookalikes of, so a numeric outcome then seeds with its ``top_share`` instead."""
    m = np.asarray(outcome.indicator(df), bool)
    numeric = pd.api.types.is_numeric_dtype(df[outcome.name].dtype) \
        and not pd.api.types.is_bool_dtype(df[outcome.name].dtype)
    if (m.mean() > max_share or outcome.kind == "value") and numeric:
        s = seed_from_outcome(df, outcome.name, top_share=top_share)
        return Seed(f"Top {top_share:.0%}: {outcome.label}", s.definition
                    + (f" -- the configured rule {outcome.rule} covers {m.mean():.0%} of the panel"
                       if outcome.kind != "value" else ""), s.user_ids, s.defined_by)
    if not m.any():
        raise ValueError(f"no user meets the configured outcome rule {outcome.rule}")
    return Seed(outcome.label, outcome.rule, pd.Index(df.loc[m, "user_id"].astype(str), name="user_id"),
                (outcome.name,))


def seed_from_ids(df: pd.DataFrame, user_ids: Sequence[str], name: str = "Custom list") -> Seed:
    """A user-supplied list of ``user_id``; every id must exist in ``df`` (duplicates are dropped)."""
    aud = A.select(None, "ids", frame=df, ids=list(user_ids), include_churned=True, label=name)
    return Seed(name, f"user-supplied list of {aud.size} user_ids", pd.Index(aud.ids, name="user_id"))


def defining_columns(seed_columns: Sequence[str], config: Any = None) -> tuple[str, ...]:
    """Every column a model must not see for a seed defined on ``seed_columns`` (the no-circularity rule).

    1. the seed's own columns;
    2. a churn-event seed (the configuration's ``churn_event`` outcome) is computed from recency
       (``dates.recency``): both, and the churn-risk score ``churn_prob_90d`` (it conditions on recency);
    3. a recency seed likewise excludes the churn flag and the churn-risk score;
    4. columns the configuration derives from a seed column (``derived``, e.g. Telco's ``n_services``
       counts ``StreamingTV``).
    """
    cfg = A.load_config(config)
    churn = A.churn_rule(cfg)
    churn_col = churn[0] if churn else None
    recency = getattr(getattr(cfg, "dates", None), "recency", None) if cfg is not None else "last_seen_days_ago"
    out = list(dict.fromkeys(seed_columns))
    for c in seed_columns:
        if c == churn_col or (recency is not None and c == recency):
            out += [x for x in (churn_col, recency, CHURN_SCORE) if x]
    for d in getattr(cfg, "derived", None) or ():
        if set(d.columns) & set(out):
            out.append(d.name)
    return tuple(dict.fromkeys(out))
