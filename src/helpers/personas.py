"""Personas: what makes each segment different from the whole panel, in words a marketer can use.

:func:`profile_attributes` turns the unified table into descriptive attributes (behaviour means, shares
of every category and token, flags), each observed only where its source is (a user without a partner
match has no ``partner_purchase_categories`` and is left out of that attribute rather than counted as
"buys nothing"). :func:`attribute_index` compares every segment with the whole panel:

``index = 100 * (weighted mean in the segment) / (weighted mean in the panel)``  (100 = average),

with a two-sided z-test of segment versus the rest of the panel that uses Kish effective sample sizes
for the survey weights, and Benjamini-Hochberg q-values over all segment x attribute tests.
:func:`name_segments` builds short names from the top significant attributes ("Podcast-heavy
homeowners"), :func:`persona_table` the marketer-readable table and :func:`plot_persona_cards` one card
per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from . import schema as S

#: behaviour attributes and the adjective a segment gets when it over-indexes on them
BEHAVIOUR_ADJECTIVES = {
    "time_on_social_media_min": "Social-first",
    "time_on_streaming_video_min": "Binge-streaming",
    "time_on_podcasts_min": "Podcast-heavy",
    "monthly_conversions": "Deal-seeking",
    "avg_monthly_spend": "High-spend",
}
LOW_ENGAGEMENT = "Low-engagement"
#: demographic attributes and the noun a segment gets when it over-indexes on them
DEMOGRAPHIC_NOUNS = {
    "age_group=18-24": "young adults", "age_group=25-34": "under-35s", "age_group=35-44": "35-44s",
    "age_group=45-54": "45-54s", "age_group=55-64": "pre-retirees", "age_group=65+": "seniors",
    "income_bracket=<25k": "low-income customers", "income_bracket=150k+": "high earners",
    "income_bracket=100k-150k": "upper-income customers",
    "homeowner_status=owner": "homeowners", "homeowner_status=renter": "renters",
    "presence_of_children=True": "families", "marital_status=single": "singles",
    "marital_status=married": "married couples", "estimated_net_worth=1m+": "affluent households",
    "estimated_net_worth=500k-1m": "affluent households", "education_level=graduate": "graduates",
    "traveler_type=business": "business travellers", "traveler_type=luxury": "luxury travellers",
}
UNITS = {
    "time_on_social_media_min": "social media, min/day", "time_on_streaming_video_min": "streaming video, min/day",
    "time_on_podcasts_min": "podcasts, min/day", "monthly_conversions": "conversions/month",
    "avg_monthly_spend": "spend, USD/month", "support_tickets_raised": "support tickets",
    "household_size": "household size, persons",
}


@dataclass(frozen=True)
class Attribute:
    """Metadata of one profiling attribute."""

    name: str      # e.g. "age_group=18-24"
    label: str     # e.g. "age 18-24"
    column: str    # source column of the unified table
    source: str    # 1st/2nd/3rd party / derived
    kind: str      # "mean" (a numeric average) or "share" (a 0/1 indicator)


def _label(column: str, value: str | None) -> str:
    if value is None:
        return UNITS.get(column, column)
    short = {"age_group": "age", "income_bracket": "income", "traveler_type": "traveller",
             "education_level": "education", "marital_status": "", "homeowner_status": "",
             "estimated_net_worth": "net worth", "partner_purchase_categories": "buys",
             "event_attendance_genres": "attends", "offline_purchase_intent": "in market for",
             "presence_of_children": "children at home", "churned_in_last_90_days": "churned (90 days)"}
    prefix = short.get(column, column)
    if column in ("presence_of_children", "churned_in_last_90_days"):
        return prefix
    if value == "non_traveler":
        return "non-traveller"
    return f"{prefix} {value}".strip().replace("_", " ")


def profile_attributes(df: pd.DataFrame) -> tuple[pd.DataFrame, list[Attribute]]:
    """Descriptive attributes of every user, NaN where the source column is not observed.

    Parameters
    ----------
    df : pandas.DataFrame
        The unified table (``helpers.schema`` columns; optional columns may be absent).

    Returns
    -------
    values : pandas.DataFrame
        One float column per attribute (behaviour means in their units; 0/1 for category, token and
        flag indicators), same row order as ``df``.
    attributes : list of Attribute
    """
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise ValueError("profile_attributes expects the unified table as a non-empty DataFrame")
    cols: dict[str, np.ndarray] = {}
    meta: list[Attribute] = []
    for c in S.CHANNEL_METRICS + ["avg_monthly_spend", "support_tickets_raised", "household_size"]:
        if c in df:
            cols[c] = pd.to_numeric(df[c], errors="coerce").astype("float64").to_numpy()
            meta.append(Attribute(c, _label(c, None), c, S.BY_NAME[c].source, "mean"))
    for col in S.COLUMNS:
        if col.name not in df or col.kind not in ("category", "ordinal", "multi", "bool"):
            continue
        s = df[col.name]
        if col.kind == "bool":
            b = s.astype("boolean")
            cols[f"{col.name}=True"] = b.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
            meta.append(Attribute(f"{col.name}=True", _label(col.name, "True"), col.name, col.source, "share"))
            continue
        txt = s.astype("string")
        observed = txt.notna().to_numpy()
        if col.kind == "multi":
            tokens = txt.fillna("").str.split(S.MULTI_SEP)
        for v in col.categories:
            if col.kind == "multi":
                hit = tokens.map(lambda t, v=v: v in t).to_numpy(dtype=bool)
            else:
                hit = (txt == v).fillna(False).to_numpy(dtype=bool)
            cols[f"{col.name}={v}"] = np.where(observed, hit.astype(float), np.nan)
            meta.append(Attribute(f"{col.name}={v}", _label(col.name, v), col.name, col.source, "share"))
    return pd.DataFrame(cols, index=df.index), meta


def _weighted_stats(y: np.ndarray, w: np.ndarray, groups: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean, weighted variance and Kish effective n of ``y`` per group (NaN rows skipped)."""
    ok = ~np.isnan(y)
    y, w, g = y[ok], w[ok], groups[ok]
    sw = np.bincount(g, weights=w, minlength=k)
    sw2 = np.bincount(g, weights=w * w, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(g, weights=w * y, minlength=k) / sw
        var = np.bincount(g, weights=w * (y - mean[g]) ** 2, minlength=k) / sw
        neff = sw * sw / sw2
    return mean, var, neff


def attribute_index(df: pd.DataFrame, segments: np.ndarray, weights: np.ndarray | None = None,
                    names: Sequence[str] | None = None) -> pd.DataFrame:
    """Index of every attribute in every segment versus the whole panel, with a significance test.

    Parameters
    ----------
    df : pandas.DataFrame
        The unified table.
    segments : ndarray of int, shape (n_users,)
        Segment label 0..k-1 of each row of ``df``.
    weights : ndarray, optional
        Survey weights (``artifacts.load_panel(P)["weight"]``); default 1.
    names : sequence of str, optional
        Segment names, copied into the output.

    Returns
    -------
    pandas.DataFrame
        Tidy, one row per segment x attribute: ``segment``, ``attribute``, ``label``, ``column``,
        ``source``, ``kind``, ``segment_value`` / ``panel_value`` (weighted mean or share among users
        with the attribute observed), ``index`` (100 = panel average), ``n_observed`` (users in the
        segment with the attribute observed), ``z``, ``p_value`` (segment vs rest, two-sided, Kish
        effective sizes), ``q_value`` (Benjamini-Hochberg over all rows) and ``significant`` (q < 0.05).
    """
    seg = np.asarray(segments)
    if seg.shape != (len(df),):
        raise ValueError(f"segments must have one label per row of df ({len(df)}), got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer) or seg.min() < 0:
        raise ValueError("segments must be non-negative integers 0..k-1 (the 'segment' column of segments.parquet)")
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != seg.shape or (~np.isfinite(w)).any() or (w < 0).any():
        raise ValueError(f"weights must be {len(df)} finite non-negative numbers (column 'weight' of load_panel)")
    k = int(seg.max()) + 1
    values, meta = profile_attributes(df)
    rows = []
    for a in meta:
        y = values[a.name].to_numpy()
        m_s, v_s, n_s = _weighted_stats(y, w, seg, k)
        panel = _weighted_stats(y, w, np.zeros(len(y), dtype=np.int64), 1)
        n_obs = np.bincount(seg[~np.isnan(y)], minlength=k)
        for j in range(k):
            rest = seg != j
            m_r, v_r, n_r = _weighted_stats(y[rest], w[rest], np.zeros(int(rest.sum()), dtype=np.int64), 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                se = np.sqrt(v_s[j] / n_s[j] + v_r[0] / n_r[0])
                z = (m_s[j] - m_r[0]) / se
            rows.append({"segment": j, "attribute": a.name, "label": a.label, "column": a.column,
                         "source": a.source, "kind": a.kind, "segment_value": m_s[j], "panel_value": panel[0][0],
                         "index": 100 * m_s[j] / panel[0][0] if panel[0][0] > 0 else np.nan,
                         "n_observed": int(n_obs[j]), "z": z})
    out = pd.DataFrame(rows)
    out["p_value"] = 2 * stats.norm.sf(np.abs(out["z"]))
    ok = out["p_value"].notna()
    out["q_value"] = np.nan
    if ok.any():
        out.loc[ok, "q_value"] = multipletests(out.loc[ok, "p_value"], method="fdr_bh")[1]
    out["significant"] = out["q_value"] < 0.05
    if names is not None:
        out.insert(1, "segment_name", np.asarray(names, dtype=object)[out["segment"]])
    return out


def top_attributes(index: pd.DataFrame, segment: int, n: int = 5, direction: str = "over",
                   min_observed: int = 30, min_share: float = 0.05) -> pd.DataFrame:
    """The ``n`` most over- (or under-) represented significant attributes of one segment.

    Shares below ``min_share`` in both segment and panel, and attributes observed for fewer than
    ``min_observed`` users of the segment, are skipped (a 1% trait at index 300 is still a 3% trait).
    """
    if direction not in ("over", "under"):
        raise ValueError(f"direction must be 'over' or 'under', got {direction!r}")
    t = index[(index["segment"] == segment) & index["significant"] & (index["n_observed"] >= min_observed)]
    small = (t["kind"] == "share") & (t["segment_value"] < min_share) & (t["panel_value"] < min_share)
    t = t[~small]
    t = t[t["index"] > 100] if direction == "over" else t[t["index"] < 100]
    return t.sort_values("index", ascending=direction == "under").head(n)


def name_segments(index: pd.DataFrame, min_index: float = 120.0, min_share: float = 0.3) -> list[str]:
    """Short names "<behaviour adjective> <demographic noun>" built from each segment's top attributes.

    The adjective comes from the behaviour attribute (:data:`BEHAVIOUR_ADJECTIVES`) with the highest
    significant index of at least ``min_index``; a segment below 100 on every behaviour is
    "Low-engagement". The noun comes from the demographic attribute (:data:`DEMOGRAPHIC_NOUNS`) with the
    highest significant index of at least ``min_index`` that describes at least ``min_share`` of the
    segment; "customers" when none does. Duplicate names get the next best noun or adjective.
    """
    k = int(index["segment"].max()) + 1
    adjectives, nouns = [], []
    for j in range(k):
        t = index[(index["segment"] == j) & index["significant"]]
        beh = t[t["attribute"].isin(list(BEHAVIOUR_ADJECTIVES))].sort_values("index", ascending=False)
        all_beh = index[(index["segment"] == j) & index["attribute"].isin(list(BEHAVIOUR_ADJECTIVES))]
        adj = [BEHAVIOUR_ADJECTIVES[a] for a in beh.loc[beh["index"] >= min_index, "attribute"]]
        if (all_beh["index"] < 100).all():
            adj = [LOW_ENGAGEMENT] + adj
        adjectives.append(adj or ["Average-engagement"])
        dem = t[t["attribute"].isin(list(DEMOGRAPHIC_NOUNS)) & (t["index"] >= min_index)
                & (t["segment_value"] >= min_share)].sort_values("index", ascending=False)
        nn = list(dict.fromkeys(DEMOGRAPHIC_NOUNS[a] for a in dem["attribute"]))
        nouns.append(nn or ["customers"])
    names = [f"{a[0]} {n[0]}" for a, n in zip(adjectives, nouns)]
    for j in range(k):
        dup = [i for i in range(k) if names[i] == names[j]]
        for rank, i in enumerate(dup[1:], start=1):
            if len(nouns[i]) > 1:
                names[i] = f"{adjectives[i][0]} {nouns[i][min(rank, len(nouns[i]) - 1)]}"
            elif len(adjectives[i]) > 1:
                names[i] = f"{adjectives[i][min(rank, len(adjectives[i]) - 1)]} {nouns[i][0]}"
            if names[i] in names[:i]:
                names[i] = f"{names[i]} ({i})"
    return names


def _describe(t: pd.DataFrame) -> str:
    return "; ".join(f"{r.label} ({r.index:.0f})" for r in t.itertuples())


def persona_table(index: pd.DataFrame, sizes: pd.DataFrame, names: Sequence[str], n_top: int = 4) -> pd.DataFrame:
    """One row per segment for marketers: name, weighted share, users, top over/under-represented traits.

    Parameters
    ----------
    index : pandas.DataFrame
        :func:`attribute_index` output.
    sizes : pandas.DataFrame
        ``helpers.segment.weighted_sizes`` output (``n``, ``share``, ``weighted_share`` by segment).
    names : sequence of str
    n_top : int, default 4

    Returns
    -------
    pandas.DataFrame
        ``segment``, ``segment_name``, ``weighted_share``, ``n``, ``over_represented``,
        ``under_represented`` (``label (index)`` lists, most extreme first) and the segment's weighted
        mean of every behaviour metric (in its unit).
    """
    rows = []
    for j in sizes.index:
        beh = index[(index["segment"] == j) & (index["kind"] == "mean")].set_index("attribute")["segment_value"]
        rows.append({"segment": int(j), "segment_name": names[j],
                     "weighted_share": float(sizes.loc[j, "weighted_share"]), "n": int(sizes.loc[j, "n"]),
                     "over_represented": _describe(top_attributes(index, j, n_top, "over")),
                     "under_represented": _describe(top_attributes(index, j, n_top, "under")),
                     **{f"mean_{a}": float(v) for a, v in beh.items()}})
    return pd.DataFrame(rows)


def plot_persona_cards(index: pd.DataFrame, sizes: pd.DataFrame, names: Sequence[str], n_top: int = 4,
                       ncols: int = 3):
    """One card per segment: its top over- and under-represented attributes as index bars around 100.

    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    k = len(sizes)
    nrows = int(np.ceil(k / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows), squeeze=False)
    for j, ax in zip(range(k), axes.ravel()):
        t = pd.concat([top_attributes(index, j, n_top, "over"), top_attributes(index, j, n_top, "under")])
        t = t.sort_values("index")
        colours = ["#c0392b" if v < 100 else "#2471a3" for v in t["index"]]
        ax.barh(t["label"], t["index"] - 100, left=100, color=colours)
        ax.axvline(100, color="grey", lw=1)
        ax.set_title(f"{j}: {names[j]}\n{sizes.loc[j, 'weighted_share']:.0%} of panel (weighted), "
                     f"n={int(sizes.loc[j, 'n']):,}", fontsize=10)
        ax.set_xlabel("index vs whole panel (100 = average)")
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    fig.suptitle("Persona cards: most over- (blue) and under-represented (red) significant attributes")
    fig.tight_layout()
    return fig
