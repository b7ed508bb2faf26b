"""The affinity heatmap and the segments' defining traits and action lines, read from the affinity table.

The affinity table (notebook 07, :mod:`helpers.affinity` on the statistics core) holds every index with its
interval, FDR q-value, base-size flag and tier; nothing here re-estimates them.
"""

from __future__ import annotations

import pandas as pd

from .common import CHANNEL_INDEX_TYPES, CHANNELS, TIER_HIGH, TIER_LOW, jsonable, label_of, value_label
from .loading import ExplorerData


def _affinity_rows(t: pd.DataFrame) -> list[dict]:
    cols = ["family", "attribute", "index_type", "index", "ci_low", "ci_high", "q_value", "significant",
            "tier", "base_flag", "n_unweighted"]
    extra = [c for c in ("vertical_pct",) if c in t.columns]
    return t[cols + extra].to_dict(orient="records")


def defining_attributes(affinity: pd.DataFrame, segment: int, top: int = 5,
                        index_type: str = "share") -> dict:
    """The segment's most over- and under-indexed attributes among significant, reported cells."""
    t = affinity[(affinity["segment"] == segment) & (affinity["index_type"] == index_type)
                 & affinity["significant"] & affinity["base_flag"].ne("suppressed") & affinity["index"].notna()]
    high = t[t["index"] > 100].sort_values("index", ascending=False).head(top)
    low = t[t["index"] < 100].sort_values("index").head(top)
    return {"over": _affinity_rows(high), "under": _affinity_rows(low)}


def heatmap_options(data: ExplorerData) -> dict:
    """Views the heatmap can switch between: the channels and every attribute family with share indices."""
    a = data.affinity
    inten = set(a.loc[a["index_type"] != "share", "attribute"])
    fams = [f for f in pd.unique(a.loc[a["index_type"] == "share", "family"]) if f not in inten]
    ch_types = [t for t in CHANNEL_INDEX_TYPES if (a["index_type"] == t).any()]
    return {"views": [CHANNELS, *map(str, fams)], "channel_index_types": ch_types}


def affinity_heatmap(data: ExplorerData, view: str = CHANNELS, index_type: str | None = None,
                     low: float | None = None, high: float | None = None) -> dict:
    """Payload of the heatmap: a segment x attribute grid of one index type.

    ``view`` is ``"channels"`` (the channel metrics, ``index_type`` ``intensity`` (default) or
    ``composition``) or an attribute family (share indices). Suppressed cells have ``z = None`` and are
    drawn grey; ``significant`` marks cells significant after FDR control; ``tier`` is the table's
    (> ``high`` sweet spot, < ``low`` de-prioritise); ``low`` / ``high`` are the legend's thresholds.
    """
    low = TIER_LOW if low is None else low
    high = TIER_HIGH if high is None else high
    opts = heatmap_options(data)
    if view not in opts["views"]:
        raise ValueError(f"unknown view {str(view)[:40]!r}; choose one of {opts['views']}")
    a = data.affinity
    if view == CHANNELS:
        it = index_type or "intensity"
        if it not in opts["channel_index_types"]:
            raise ValueError(f"index_type must be one of {opts['channel_index_types']} for the channels, "
                             f"got {str(it)[:40]!r}")
        t = a[a["index_type"] == it]
    else:
        if index_type not in (None, "share"):
            raise ValueError("attribute families have share indices only, got "
                             f"index_type={str(index_type)[:40]!r}")
        it = "share"
        t = a[(a["index_type"] == "share") & (a["family"] == view)]
    names = data.segment_names()
    segs = [s for s in data.segment_ids if (t["segment"] == s).any()]
    attrs = list(pd.unique(t["attribute"]))
    cell = t.drop_duplicates(["attribute", "segment"]).set_index(["attribute", "segment"])
    grid = [[_heatmap_cell(cell.loc[(att, s)] if (att, s) in cell.index else None,
                           f"{names[s]} \u00d7 {label_of(data, att) if view == CHANNELS else str(att).replace('_', ' ')}")
             for s in segs] for att in attrs]
    out = {key: [[c[key] for c in row] for row in grid]
           for key in ("z", "tier", "significant", "base_flag", "hover")}
    att_labels = [label_of(data, a_) if view == CHANNELS else str(a_).replace("_", " ") for a_ in attrs]
    view_labels = {v: ("Behaviour" if v == CHANNELS else label_of(data, v)) for v in opts["views"]}
    return jsonable({"view": view, "index_type": it, "segments": segs, "segment_names": [names[s] for s in segs],
                     "attributes": attrs, "attribute_labels": att_labels, "view_label": view_labels[view],
                     "view_labels": view_labels, **out, "thresholds": {"low": low, "high": high}, **opts})


def _heatmap_cell(r: pd.Series | None, label: str) -> dict:
    """One heatmap cell: index (None when suppressed or absent), tier, significance, base flag, hover text."""
    if r is None or r["base_flag"] == "suppressed" or pd.isna(r["index"]):
        n = 0 if r is None else int(r["n_unweighted"])
        return {"z": None, "tier": None, "significant": False, "base_flag": "suppressed",
                "hover": f"{label}: not shown ({n} customers: too few to report)"}
    caution = ", small base: read with caution" if r["base_flag"] == "caution" else ""
    desc = str(r.get("descriptive", False)).lower() in ("true", "1")
    verdict = ("describes the segment (built from it, no test)" if desc else
               "a real difference" if r["significant"] else "could be chance")
    hover = (f"{label}: index {r['index']:.0f} (95% interval {r['ci_low']:.0f}-{r['ci_high']:.0f}), "
             f"{int(r['n_unweighted'])} customers, {verdict}, {r['tier']}{caution}")
    return {"z": float(r["index"]), "tier": r["tier"], "significant": bool(r["significant"]),
            "base_flag": r["base_flag"], "hover": hover}


def _trait_rows(data: ExplorerData, t: pd.DataFrame) -> list[dict]:
    out = []
    for _, r in t.iterrows():
        if r["index_type"] == "share":
            lab = value_label(data, r["family"], r["attribute"])
        else:
            lab = label_of(data, r["attribute"])
        out.append({"label": lab, "family": r["family"], "attribute": r["attribute"],
                    "index_type": r["index_type"], "index": r["index"], "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"], "significant": bool(r["significant"]),
                    "descriptive": bool(r.get("descriptive", False)), "base_flag": r["base_flag"]})
    return out


def _reportable(a: pd.DataFrame) -> pd.DataFrame:
    desc = a["descriptive"].astype(str).str.lower().isin(["true", "1"]) if "descriptive" in a else False
    a = a.assign(descriptive=desc)
    return a[(a["significant"] | a["descriptive"]) & a["base_flag"].ne("suppressed") & a["index"].notna()
             & a["index_type"].isin(["share", "intensity"])]


def top_traits(data: ExplorerData, segment: int, top: int = 3) -> list[dict]:
    """The segment's ``top`` most over-indexed reportable traits (significant after FDR, or descriptive
    clustering features), labelled in plain language."""
    a = _reportable(data.affinity)
    t = a[(a["segment"] == segment) & (a["index"] > 100)].sort_values("index", ascending=False)
    t = t.drop_duplicates(["family", "attribute"]).head(top)
    return _trait_rows(data, t)


def action_lines(data: ExplorerData, segment: int, top: int = 3) -> list[dict]:
    """Per segment, what to do: each reportable cell above :data:`TIER_HIGH` (concentrate) or below
    :data:`TIER_LOW` (de-prioritise), strongest first: ``"Podcasts: index 395 -- concentrate spend here"``."""
    a = _reportable(data.affinity)
    t = a[a["segment"] == segment]
    out = []
    for side, cond, asc, verb in (("concentrate", t["index"] > TIER_HIGH, False, "concentrate spend here"),
                                  ("de-prioritise", t["index"] < TIER_LOW, True, "de-prioritise")):
        sel = t[cond].sort_values("index", ascending=asc).drop_duplicates(["family", "attribute"]).head(top)
        for r in _trait_rows(data, sel):
            basis = ("describes the segment (it was built from it, so no test)" if r["descriptive"]
                     else f"95% interval {r['ci_low']:.0f}-{r['ci_high']:.0f}")
            what = verb if r["index_type"] != "share" else (
                "over-represented: target it" if side == "concentrate" else "under-represented: de-prioritise")
            r.update(action=side, text=f"{r['label']}: index {r['index']:.0f} \u2014 {what}", basis=basis)
            out.append(r)
    return out
