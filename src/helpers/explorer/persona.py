"""The first screen and the persona card: segment sizes, value, churn risk, demographics and behaviour.

Every figure is a weighted estimate of :mod:`helpers.explorer.wstats` (one call into the statistics core);
indices and their intervals are those of the affinity table (notebook 07, also the statistics core), so a
persona card and the heatmap show the same index and interval for the same cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..audience import churned_mask
from .codes import column_codes
from .common import TIER_HIGH, TIER_LOW, check_segment, jsonable, label_of, producer, unit_of
from .heatmap import action_lines, defining_attributes, top_traits
from .loading import ExplorerData, header_facts, pa_text
from .segmap import segment_sizes
from .wstats import audience_estimate, weighted_mean_ci, weighted_median, weighted_share_ci

#: Demographic columns of the persona card when the panel has them (1st-party ones cover everybody,
#: 3rd-party only matched users); another table shows its configuration's category attributes.
DEMOGRAPHICS: tuple[str, ...] = ("age_group", "income_bracket", "homeowner_status", "presence_of_children",
                                 "marital_status")
PARTY = {"1st": "1st party", "2nd": "2nd party", "3rd": "3rd party", "derived": "1st party"}


def _attribute(data: ExplorerData, column: str) -> Any:
    try:
        return data.cfg.attribute(column) if data.cfg is not None else None
    except KeyError:
        return None


def weighted_distribution(data: ExplorerData, column: str, segment: int) -> dict:
    """Weighted % of each category of ``column`` in ``segment`` and in the whole panel (known values only)."""
    panel = data.panel
    spec = _attribute(data, column)
    # each distinct cell's text compared with each category once, mapped back to the rows by their codes
    codes, cells = column_codes(data, column)
    known = codes >= 0
    if spec is not None and spec.type == "bool":
        vals = cells.astype("boolean").map({True: "yes", False: "no"}).astype("string")
        cats = ["yes", "no"]
    else:
        vals = cells.astype("string")
        cats = list(spec.categories) if spec is not None and spec.categories else sorted(vals.dropna().unique())
    in_seg = (panel["segment"] == segment).to_numpy()
    w = panel["weight"].to_numpy(float)
    rows = []
    for c in cats:
        y = np.where(known, (vals == str(c)).fillna(False).to_numpy(float)[codes], np.nan)
        e = audience_estimate(y, w, in_seg) if (in_seg & known).any() else None
        rows.append({"category": str(c), "pct_segment": 100 * e["mean"] if e else None,
                     "pct_base": 100 * e["base"] if e else None})
    coverage = weighted_share_ci(known[in_seg], w[in_seg])["value"] if in_seg.any() else 0.0
    return {"column": column, "source": PARTY.get(getattr(spec, "party", ""), ""), "coverage": coverage,
            "n_known": int((in_seg & known).sum()), "rows": rows}


def channel_minutes(data: ExplorerData, segment: int) -> list[dict]:
    """Weighted mean and median of the behavioural metrics in the segment and the panel, with the segment's
    intensity index and interval from the affinity table when it has one."""
    p = data.panel
    in_seg = (p["segment"] == segment).to_numpy()
    w = p["weight"].to_numpy(float)
    a = data.affinity
    chans = [c for c in pd.unique(a.loc[a["index_type"] == "intensity", "attribute"]) if c in p.columns]
    out = []
    for c in chans:
        v = pd.to_numeric(p[c], errors="coerce").astype(float).to_numpy()
        e = audience_estimate(v, w, in_seg)
        row = {"channel": c, "label": label_of(data, c), "unit": unit_of(data, c), "mean_segment": e["mean"],
               "median_segment": weighted_median(v[in_seg], w[in_seg]), "mean_base": e["base"]}
        r = a[(a["segment"] == segment) & (a["attribute"] == c) & (a["index_type"] == "intensity")]
        if len(r):
            r = r.iloc[0]
            row.update(index=r["index"], ci_low=r["ci_low"], ci_high=r["ci_high"], tier=r["tier"],
                       significant=bool(r["significant"]), base_flag=r["base_flag"])
        out.append(row)
    return out


def churned_rows(data: ExplorerData) -> np.ndarray:
    """Who already churned, by the run configuration's churn rule (:func:`helpers.audience.churned_mask`);
    without one, the churn stage's own ``churned`` column when it wrote it; else nobody."""
    if "churned_rows" not in data._cache:  # every card and audience asks; at 1M users the rule costs seconds
        mask, rule = churned_mask(data.panel, data.cfg)
        cr = data.churn_risk
        if rule is None and cr is not None and "churned" in cr:
            pos = _positions(data, "churn_risk", cr)
            flag = pd.Series(cr["churned"].to_numpy()[np.maximum(pos, 0)]).astype("boolean")
            mask = flag.where(pos >= 0).fillna(False).to_numpy(bool)
        data._cache["churned_rows"] = mask
    return data._cache["churned_rows"]


def _positions(data: ExplorerData, name: str, frame: pd.DataFrame) -> np.ndarray:
    """Row of artifact ``name`` (``frame``) holding each panel user (-1 when it lacks the user), computed once
    per artifact: matching a million string ids is the slow part of every per-user figure."""
    key = ("positions", name)
    if key not in data._cache:
        import pyarrow.compute as pc

        # matched as Arrow text: Python strings of both id columns and a pandas index of them were ~2 GB at 10M
        ids, panel_ids = pa_text(frame["user_id"]), pa_text(data.panel["user_id"])
        if len(ids) == len(panel_ids) and pc.all(pc.equal(ids, panel_ids)).as_py():
            data._cache[key] = np.arange(len(ids))  # the artifact lists the panel's users in its order
        else:
            if len(pc.unique(ids)) != len(ids):
                raise ValueError(f"{name} lists a user_id more than once; re-create it with its notebook "
                                 f"{producer(name)}")
            pos = pc.index_in(panel_ids, value_set=ids)
            data._cache[key] = pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return data._cache[key]


def _per_user(data: ExplorerData, name: str, column: str) -> np.ndarray:
    """``column`` of per-user artifact ``name`` (``churn_risk``, ``customer_value``...) aligned with the panel's
    rows (NaN for users it lacks); read and aligned once."""
    key = ("per_user", name, column)
    if key not in data._cache:
        frame = getattr(data, name) if hasattr(data, name) else data.optional(name)
        pos = _positions(data, name, frame)
        v = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)[np.maximum(pos, 0)]
        data._cache[key] = np.where(pos >= 0, v, np.nan)
    return data._cache[key]


def churn_summary(data: ExplorerData, segment: int) -> dict | None:
    """Churn risk and expected value of the segment, or None when the churn stage has not run.

    From the churn stage's ``churn_risk``: the weighted mean 90-day churn probability of *active* members
    (:func:`churned_rows` are not active), the weighted churned share and the weighted mean
    ``expected_value``. Plus the segment's row of ``segment_value`` when it describes the same segment.
    """
    if data.churn_risk is None and data.segment_value is None:
        return None
    out: dict[str, Any] = {}
    cr = data.churn_risk
    in_seg = (data.panel["segment"] == segment).to_numpy()
    w = data.panel["weight"].to_numpy(float)
    if cr is not None and {"user_id", "churn_prob_90d"} <= set(cr.columns):
        risk = _per_user(data, "churn_risk", "churn_prob_90d")
        churned = churned_rows(data)
        active = in_seg & ~churned & np.isfinite(risk)
        out["n_scored"] = int((in_seg & np.isfinite(risk)).sum())
        out["churn_prob_90d_active"] = weighted_mean_ci(risk[active], w[active])["value"]
        out["churned_share"] = weighted_share_ci(churned[in_seg], w[in_seg])["value"]
        if "expected_value" in cr:
            out["expected_value_usd"] = weighted_mean_ci(_per_user(data, "churn_risk", "expected_value")[in_seg],
                                                         w[in_seg])["value"]
    sv = data.segment_value
    if sv is not None and "segment" in sv.columns and (sv["segment"] == segment).any():
        row = sv[sv["segment"] == segment].iloc[0]
        same = "segment_name" not in row or str(row["segment_name"]) == data.segment_names()[segment]
        if same:  # a segment_value of another segmentation would describe a different group
            out["segment_value"] = row.drop(labels=["segment"]).to_dict()
    return out or None


def spend_metric(data: ExplorerData) -> str | None:
    """The money metric of the run configuration (first of kind ``money``) present in the panel."""
    for m in getattr(data.cfg, "metrics", None) or []:
        if getattr(m, "kind", None) == "money" and m.name in data.panel.columns:
            return m.name
    return None


def value_summary(data: ExplorerData, rows: np.ndarray) -> dict:
    """Value of an audience (rows of the panel): mean customer lifetime value where the value stage ran,
    else the mean of the run's money metric; with its interval, label and source."""
    w = data.panel["weight"].to_numpy(float)
    cv = data.optional("customer_value")
    if cv is not None and "clv" in cv.columns:
        v = _per_user(data, "customer_value", "clv")
        return {**weighted_mean_ci(v[rows], w[rows]), "label": "Customer lifetime value", "unit": "USD",
                "source": f"value stage ({producer('customer_value').split('_')[0]})"}
    m = spend_metric(data)
    if m is None:
        return {"value": None, "low": None, "high": None, "n": 0, "label": "Value",
                "unit": "", "source": "no value stage and no money metric in this run"}
    v = pd.to_numeric(data.panel[m], errors="coerce").astype(float).to_numpy()
    return {**weighted_mean_ci(v[rows], w[rows]), "label": label_of(data, m), "unit": unit_of(data, m),
            "source": "spend (the customer value stage has not run)"}


def churn_risk_summary(data: ExplorerData, rows: np.ndarray) -> dict | None:
    """Mean 90-day churn probability of the audience's active members with its interval (None: no churn
    stage)."""
    cr = data.churn_risk
    if cr is None or "churn_prob_90d" not in cr.columns:
        return None
    sel = np.zeros(len(data.panel), bool)
    sel[rows] = True
    sel &= ~churned_rows(data)
    return {**weighted_mean_ci(_per_user(data, "churn_risk", "churn_prob_90d")[sel],
                               data.panel["weight"].to_numpy(float)[sel]),
            "label": "Chance of leaving in the next 90 days", "unit": "share"}


def persona_card(data: ExplorerData, segment: Any, top: int = 5) -> dict:
    """Payload of a segment's persona card.

    Size (unweighted, weighted, share), the ``segment_profiles`` row when present, defining attributes
    (:func:`helpers.explorer.heatmap.defining_attributes`), weighted demographics
    (:func:`weighted_distribution`), the behavioural metrics (:func:`channel_minutes`) and churn
    (:func:`churn_summary`, or None).
    """
    s = check_segment(data, segment)
    sizes = segment_sizes(data.panel)
    profile = None
    if data.profiles is not None and "segment" in data.profiles.columns:
        r = data.profiles[data.profiles["segment"] == s]
        if len(r):
            profile = {k: v for k, v in r.iloc[0].to_dict().items()
                       if isinstance(v, (int, float, str, np.integer, np.floating, bool, np.bool_))}
    demo_cols = [c for c in DEMOGRAPHICS if c in data.panel.columns]
    if not demo_cols and data.cfg is not None:  # a user table: its declared category attributes
        demo_cols = [a_.name for a_ in data.cfg.attributes if a_.name in data.panel.columns
                     and a_.type in ("category", "ordinal", "bool")][:5]
    demo = [{**weighted_distribution(data, c, s), "label": label_of(data, c)} for c in demo_cols]
    return jsonable({
        "segment": s, "name": sizes.at[s, "segment_name"],
        "n_users": int(sizes.at[s, "n_users"]), "weighted_size": float(sizes.at[s, "weighted_size"]),
        "weighted_share": float(sizes.at[s, "weighted_share"]),
        "profile": profile,
        "defining": defining_attributes(data.affinity, s, top),
        "demographics": demo,
        "media": channel_minutes(data, s),
        "churn": churn_summary(data, s),
        "value": value_summary(data, np.flatnonzero(data.panel["segment"].to_numpy() == s)),
    })


def segment_table(data: ExplorerData) -> dict:
    """The first screen: per segment its weighted size and share (with interval), value, churn risk and
    top three defining traits with their index; plus the run's facts for the header."""
    p = data.panel
    w = p["weight"].to_numpy(float)
    seg = p["segment"].to_numpy()
    names = data.segment_names()
    tot = float(w.sum())
    rows = []
    for s in data.segment_ids:
        r = np.flatnonzero(seg == s)
        share = weighted_share_ci(seg == s, w)
        rows.append({"segment": s, "name": names[s], "n_users": int(len(r)),
                     "weighted_size": float(w[r].sum()),
                     "share": share, "size_low": share["low"] * tot, "size_high": share["high"] * tot,
                     "value": value_summary(data, r), "churn": churn_risk_summary(data, r),
                     "traits": top_traits(data, s), "actions": action_lines(data, s)})
    return jsonable({"segments": rows, "header": header_facts(data), "tiers": {"low": TIER_LOW, "high": TIER_HIGH}})
