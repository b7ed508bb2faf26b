"""Personas: what makes each segment different from the whole panel, in words a marketer can use.

:func:`profile_attributes` turns the unified table into descriptive attributes (behaviour means, shares
of every category and token, flags), each observed only where its source is (a user without a partner
match has no ``partner_purchase_categories`` and is left out of that attribute rather than counted as
"buys nothing"). :func:`attribute_index` compares every segment with the whole panel:

``index = 100 * (weighted mean in the segment) / (weighted mean in the panel)``  (100 = average),

with the project's one statistics core (:mod:`helpers.stats.core`): linearised interval, linearised Wald
test of the segment versus the rest of the panel, base-size rule (count, effective n, RSE) and
Benjamini-Hochberg q-values over all segment x attribute tests. A persona card therefore shows the same
index and interval as the affinity heatmap for the same cell. Attributes the segments were built from
(the clustering features) are *descriptive*: no p-value, never "significant" (they differ by construction).

Behaviour adjectives and units come from the run configuration (:func:`behaviour_vocabulary`): the built-in
"Podcast-heavy", "Binge-streaming", ... describe the synthetic panel's channel columns and are used only when
the configuration is the shipped default; any other table gets adjectives built from its own metric labels
("High monthly charges"). :func:`name_segments` builds short names from the top attributes,
:func:`persona_table` the marketer-readable table and :func:`plot_persona_cards` one card per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from . import schema as S
from .stats import core as C

#: behaviour attributes of the shipped default configuration (the synthetic panel's columns) and the adjective a
#: segment gets when it over-indexes on them; other configurations get adjectives from their own labels
#: (:func:`behaviour_vocabulary`)
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


def _label(column: str, value: str | None, cfg=None) -> str:
    if value is None:
        return UNITS.get(column, column)
    if cfg is not None and not cfg.is_default:  # another table: its own labels, nothing assumed
        lab = cfg.label(column, unit=False)
        return lab if value == "True" else f"{lab}: {str(value).replace('_', ' ')}"
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


def _run_config(cfg):
    """The run configuration: ``cfg`` itself, a path / preset name, or None -> $AUDIENCE_CONFIG / default."""
    from . import config

    return config.load(cfg)


def behaviour_vocabulary(cfg=None) -> tuple[dict[str, str], dict[str, str]]:
    """Adjectives and unit labels of the behaviour metrics, from the run configuration.

    With the shipped default configuration (the synthetic panel) the built-in :data:`BEHAVIOUR_ADJECTIVES` /
    :data:`UNITS` are used. With any other configuration nothing is assumed about what a column means: a
    metric's adjective is ``"High <label>"`` from its declared label (``"High monthly charges"``) and its unit
    label is ``"<label>, <unit>"`` -- so catalogue buyers are never called "Binge-streaming" even when their
    columns were mapped onto the dictionary's names.

    Returns ``(adjectives, units)``: column -> adjective, column -> "label, unit".
    """
    cfg = _run_config(cfg)
    adjectives, units = {}, {}
    for m in cfg.metrics:
        label = m.label or m.name
        if cfg.is_default:  # the synthetic panel: the built-in words (other metrics are profiled, not named)
            if m.name in BEHAVIOUR_ADJECTIVES:
                adjectives[m.name] = BEHAVIOUR_ADJECTIVES[m.name]
        else:
            adjectives[m.name] = f"High {label[:1].lower() + label[1:]}"
        units[m.name] = (UNITS[m.name] if cfg.is_default and m.name in UNITS
                         else f"{label}, {m.unit}" if m.unit else label)
    for a in cfg.attributes:
        if a.type == "int":
            units[a.name] = (UNITS[a.name] if cfg.is_default and a.name in UNITS
                             else f"{a.label}, {a.unit}" if a.unit else a.label)
    return adjectives, units


def profile_attributes(df: pd.DataFrame, cfg=None) -> tuple[pd.DataFrame, list[Attribute]]:
    """Descriptive attributes of every user, NaN where the source column is not observed.

    Parameters
    ----------
    df : pandas.DataFrame
        The unified table; declared columns that are absent are skipped.
    cfg : RunConfig, path or None
        Run configuration (:func:`helpers.config.load`): its metrics (means, in their units), its integer
        attributes (means) and its category / ordinal / multi-valued / boolean attributes (a 0/1 indicator
        per category or token). None -> ``$AUDIENCE_CONFIG`` or the shipped default.

    Returns
    -------
    values : pandas.DataFrame
        One float column per attribute (behaviour means in their units; 0/1 for category, token and
        flag indicators), same row order as ``df``.
    attributes : list of Attribute
    """
    values, meta, _ = _profile(df, cfg)
    return pd.DataFrame(values, index=df.index), meta


def _profile(df: pd.DataFrame, cfg=None, share_rows: bool = True
             ) -> tuple[dict[str, np.ndarray], list[Attribute], dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """:func:`profile_attributes` as a dict of columns, plus, for every category / ordinal / multi-valued
    column, its cell codes (-1: not observed) and each of its attributes' 0/1 value per distinct cell.

    ``share_rows=False`` leaves the per-user 0/1 columns of those attributes out of the dict (their moments come
    from the cell codes): at 1M users they were about 70 float columns, 0.6 GB, that :func:`attribute_index`
    never read."""
    cols: dict[str, np.ndarray] = {}
    meta: list[Attribute] = []
    cells_of: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for c_cols, c_meta, c_cells in _profile_columns(df, cfg, share_rows):
        cols.update(c_cols)
        meta += c_meta
        if c_cells is not None:
            cells_of[c_meta[0].column] = c_cells
    return cols, meta, cells_of


def _profile_columns(df, cfg=None, share_rows: bool = True):
    """:func:`_profile` one source column at a time: yields ``(columns, attributes, cells)`` per column of the
    table that is profiled (``cells`` = its cell codes and per-cell 0/1 values, None for a numeric or flag
    column), in the order of :func:`_profile`'s attributes. :func:`attribute_index` consumes each column's
    moments before the next is read, so with a :class:`ColumnReader` only one column is held at a time."""
    if not isinstance(df, (pd.DataFrame, ColumnReader)) or len(df) == 0:
        raise ValueError("profile_attributes expects the unified table as a non-empty DataFrame (or a ColumnReader)")
    cfg = _run_config(cfg)
    _, units = behaviour_vocabulary(cfg)
    numeric = [(m.name, "1st") for m in cfg.metrics] + [(a.name, a.party) for a in cfg.attributes
                                                         if a.type == "int"]
    for c, party in numeric:
        if c in df:
            yield ({c: pd.to_numeric(df[c], errors="coerce").astype("float64").to_numpy()},
                   [Attribute(c, units.get(c, cfg.label(c)), c, _party(party), "mean")], None)
    for att in cfg.attributes:
        if att.name not in df or att.type not in ("category", "ordinal", "multi", "bool"):
            continue
        s = df[att.name]
        source = _party(att.party)
        if att.type == "bool":
            b = s.astype("boolean")
            yield ({f"{att.name}=True": b.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)},
                   [Attribute(f"{att.name}=True", _label(att.name, "True", cfg), att.name, source, "share")], None)
            continue
        # string work on the distinct cells only (a few hundred in 1M rows), mapped back to the rows by their
        # codes: splitting and comparing every row was most of the persona step at 1M users
        codes, uniq = pd.factorize(s.astype("string"))
        del s
        cells = [str(u) for u in uniq]
        if att.type == "multi":
            cell_tokens = [set(c.split(S.MULTI_SEP)) for c in cells]
        cats = list(att.categories) or sorted(
            set().union(*cell_tokens) - {""} if att.type == "multi" else set(cells))
        cols, meta, per_attribute = {}, [], {}
        for v in cats:
            per_cell = [v in t for t in cell_tokens] if att.type == "multi" else [c == v for c in cells]
            hit = np.append(np.asarray(per_cell, dtype=float), np.nan)  # code -1 (not observed) -> NaN
            if share_rows:
                cols[f"{att.name}={v}"] = hit[codes]
            per_attribute[f"{att.name}={v}"] = hit[:-1]
            meta.append(Attribute(f"{att.name}={v}", _label(att.name, v, cfg), att.name, source, "share"))
        yield cols, meta, (codes, per_attribute)


class ColumnReader:
    """The unified table seen one column at a time: ``reader[c]`` reads column ``c`` when asked.

    :func:`attribute_index` uses one column at a time (a numeric mean, or one category's cell codes), so at
    10M users it need not hold the whole table: every text column as Arrow strings was several GB. ``read``
    maps a column name to the pandas Series the loaded table would hold (e.g.
    ``lambda c: artifacts.load(P, "unified", columns=[c], arrow_strings=True)[c]``, the reader of
    ``load_unified``), in the table's row order; ``columns`` are the names it can read, ``n_rows`` its rows.
    """

    def __init__(self, read, columns: Sequence[str], n_rows: int) -> None:
        self._read, self.columns, self._n = read, list(columns), int(n_rows)

    def __contains__(self, column: str) -> bool:
        return column in self.columns

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, column: str) -> pd.Series:
        if column not in self.columns:
            raise KeyError(column)
        s = self._read(column)
        if len(s) != self._n:
            raise ValueError(f"column {column!r} has {len(s)} rows, the table {self._n}")
        return s

    @classmethod
    def of_unified(cls, paths, n_rows: int) -> "ColumnReader":
        """The run's unified table (``helpers.artifacts``), read column by column as ``load_unified`` reads it."""
        from . import artifacts

        return cls(lambda c: artifacts.load(paths, "unified", columns=[c], arrow_strings=True)[c],
                   artifacts.unified_columns(paths), n_rows)


def _share_moments(cell_codes: np.ndarray, per_attribute: dict[str, np.ndarray], seg: np.ndarray,
                   w: np.ndarray, k: int) -> dict[str, pd.DataFrame]:
    """:func:`helpers.stats.core.moments` of every 0/1 attribute of one column, from its cell codes.

    For ``y`` in {0, 1} every moment is a sum over the observed users (or those holding the attribute) of
    1, ``w`` or ``w^2`` (``w y = w``, ``w^2 y^2 = w^2``), and a sum over the users holding a single-valued
    category is one bin of a (segment, cell) count: each bin adds the same nonzero terms in the same row
    order as ``moments``' ``bincount`` (its zero terms change nothing), so the frames are equal bit for bit,
    from 6 passes over the rows per column instead of 9 per attribute.
    """
    obs = (cell_codes >= 0) & (w > 0)
    g, c, wo = seg[obs], cell_codes[obs], w[obs]
    w2 = wo * wo
    n_cells = len(next(iter(per_attribute.values()))) if per_attribute else 0
    n = np.bincount(g, minlength=k).astype(float)
    t, t2 = np.bincount(g, weights=wo, minlength=k), np.bincount(g, weights=w2, minlength=k)
    single = all(np.count_nonzero(h) <= 1 for h in zip(*per_attribute.values())) if per_attribute else True
    if single:  # every cell holds at most one attribute (a category): one bin per (segment, cell)
        key = g * n_cells + c
        by_cell = [np.bincount(key, weights=v, minlength=k * n_cells).reshape(k, n_cells) for v in (None, wo, w2)]
    out = {}
    for name, hit_cell in per_attribute.items():
        if single:
            cell = np.flatnonzero(hit_cell)
            hn, ht, ht2 = ((b[:, cell[0]].copy() if cell.size else np.zeros(k)) for b in by_cell)
        else:
            hit = hit_cell.astype(bool)[c]
            hn = np.bincount(g[hit], minlength=k).astype(float)
            ht, ht2 = (np.bincount(g[hit], weights=v[hit], minlength=k) for v in (wo, w2))
        out[name] = pd.DataFrame({"n": n, "t": t, "ty": ht, "t2": t2, "t2y": ht2, "t2yy": ht2,
                                  "n_nz": hn.astype(float), "t_nz": ht, "t2_nz": ht2})
    return out


def clustering_columns(cfg=None) -> list[str]:
    """The configuration's metrics that form segments (``cluster: true``): descriptive in persona cards."""
    return [m.name for m in _run_config(cfg).metrics if getattr(m, "cluster", True)]


def _party(party: str) -> str:
    return {"1st": "1st party", "2nd": "2nd party", "3rd": "3rd party"}.get(party, party)


def attribute_index(df: pd.DataFrame, segments: np.ndarray, weights: np.ndarray | None = None,
                    names: Sequence[str] | None = None, *, descriptive: Sequence[str] | None = None,
                    cfg=None, rule: C.BaseSizeRule | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Index of every attribute in every segment versus the whole panel, with interval and test.

    Parameters
    ----------
    df : pandas.DataFrame or ColumnReader
        The unified table, or a :class:`ColumnReader` of it (each column is read, profiled and dropped in
        turn, so the whole table is never held: the same numbers).
    segments : ndarray of int, shape (n_users,)
        Segment label 0..k-1 of each row of ``df``.
    weights : ndarray, optional
        Survey weights (``artifacts.load_panel(P)["weight"]``); default 1.
    names : sequence of str, optional
        Segment names, copied into the output.
    descriptive : sequence of str, optional
        Source columns the segments were built from (the clustering features): their rows keep index and
        interval but have no p-value and are never significant (a segment differs from the rest on its own
        clustering features by construction). Default None: the run configuration's metrics marked
        ``cluster: true`` (what notebook 04 clusters on); pass ``()`` for segments not built from the data
        (e.g. planted ones).
    cfg : RunConfig, path or None
        Run configuration (attributes, labels, adjectives); None -> ``$AUDIENCE_CONFIG`` or the default.
    rule, alpha
        Base-size rule and FDR level of :mod:`helpers.stats.core` (the affinity table's defaults).

    Returns
    -------
    pandas.DataFrame
        Tidy, one row per segment x attribute: ``segment``, ``attribute``, ``label``, ``column``,
        ``source``, ``kind``, ``segment_value`` / ``panel_value`` (weighted mean or share among users
        with the attribute observed), ``index`` (100 = panel average), ``ci_low`` / ``ci_high`` (95 %,
        linearised), ``n_observed`` (users in the segment with the attribute observed), ``n_unweighted``
        (the base-size rule's cell count), ``n_effective``, ``rse``, ``base_flag``, ``z``, ``p_value``
        (segment vs rest), ``q_value`` (Benjamini-Hochberg over all rows), ``significant`` (q < alpha, a
        finite interval, not descriptive), ``descriptive``, ``tier`` and ``adjective`` (the behaviour
        adjective of a metric row, from :func:`behaviour_vocabulary`; empty otherwise). The numbers are
        those of :mod:`helpers.stats.core`, as in the affinity table.
    """
    seg = np.asarray(segments)
    if seg.shape != (len(df),):
        raise ValueError(f"segments must have one label per row of df ({len(df)}), got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer) or seg.min() < 0:
        raise ValueError("segments must be non-negative integers 0..k-1 (the 'segment' column of segments.parquet)")
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != seg.shape or (~np.isfinite(w)).any() or (w < 0).any():
        raise ValueError(f"weights must be {len(df)} finite non-negative numbers (column 'weight' of load_panel)")
    cfg = _run_config(cfg)
    adjectives, _ = behaviour_vocabulary(cfg)
    k = int(seg.max()) + 1
    desc = set(clustering_columns(cfg) if descriptive is None else descriptive)
    parts = []
    # one source column at a time (its values or cell codes are dropped before the next is read): the moments of
    # a category's or token's indicators come from the column's cell codes, those of a number or flag from its values
    for values, meta, cells in _profile_columns(df, cfg, share_rows=False):
        shares = {} if cells is None else _share_moments(*cells, seg, w, k)
        for a in meta:
            mom = shares[a.name] if a.name in shares else C.moments(values[a.name], seg, w, k)
            est = C.index_table(mom, np.arange(k), count_cells=a.kind == "share")
            parts.append(est.assign(attribute=a.name, label=a.label, column=a.column, source=a.source, kind=a.kind,
                                    descriptive_=a.column in desc,
                                    adjective=adjectives.get(a.name, "") if a.kind == "mean" else ""))
        del values, shares, cells
    out = pd.concat(parts, ignore_index=True)
    out = C.finalize(out, rule, alpha, descriptive=out.pop("descriptive_").to_numpy())
    out = out.rename(columns={"base_value": "panel_value", "n_segment": "n_observed"})
    cols = ["segment", "attribute", "label", "column", "source", "kind", "segment_value", "panel_value", "index",
            "ci_low", "ci_high", "n_observed", "n_unweighted", "n_effective", "rse", "base_flag", "z", "p_value",
            "q_value", "significant", "descriptive", "tier", "adjective"]
    out = out[cols]
    if names is not None:
        out.insert(1, "segment_name", np.asarray(names, dtype=object)[out["segment"]])
    return out


def _clear(t: pd.DataFrame) -> pd.Series:
    """Rows that differ from the panel: significant, or descriptive with an interval excluding 100."""
    desc = t["descriptive"].fillna(False).astype(bool) if "descriptive" in t else pd.Series(False, index=t.index)
    off = (t["ci_low"] > 100) | (t["ci_high"] < 100) if "ci_low" in t else pd.Series(True, index=t.index)
    return t["significant"].fillna(False).astype(bool) | (desc & off)


def top_attributes(index: pd.DataFrame, segment: int, n: int = 5, direction: str = "over",
                   min_observed: int = 30, min_share: float = 0.05) -> pd.DataFrame:
    """The ``n`` most over- (or under-) represented attributes of one segment that differ from the panel.

    An attribute qualifies when it is significant (FDR), or -- for a descriptive row (a clustering feature,
    not tested) -- when its interval excludes 100; suppressed rows never qualify. Shares below ``min_share``
    in both segment and panel, and attributes observed for fewer than ``min_observed`` users of the segment,
    are skipped (a 1% trait at index 300 is still a 3% trait).
    """
    if direction not in ("over", "under"):
        raise ValueError(f"direction must be 'over' or 'under', got {direction!r}")
    t = index[(index["segment"] == segment) & (index["n_observed"] >= min_observed)]
    t = t[_clear(t) & t["index"].notna()]
    small = (t["kind"] == "share") & (t["segment_value"] < min_share) & (t["panel_value"] < min_share)
    t = t[~small]
    t = t[t["index"] > 100] if direction == "over" else t[t["index"] < 100]
    return t.sort_values("index", ascending=direction == "under").head(n)


def name_segments(index: pd.DataFrame, min_index: float = 120.0, min_share: float = 0.3,
                  adjectives: dict[str, str] | None = None, nouns: dict[str, str] | None = None) -> list[str]:
    """Short names "<behaviour adjective> <demographic noun>" built from each segment's top attributes.

    The adjective comes from the behaviour metric with the highest index of at least ``min_index`` that
    differs from the panel (significant, or descriptive with its interval above 100); its word is the row's
    ``adjective`` column (from the run configuration, :func:`behaviour_vocabulary`), else ``adjectives``,
    else :data:`BEHAVIOUR_ADJECTIVES`. A segment below 100 on every behaviour is "Low-engagement". The noun
    comes from the demographic attribute (``nouns``, default :data:`DEMOGRAPHIC_NOUNS`) with the highest
    significant index of at least ``min_index`` that describes at least ``min_share`` of the segment;
    "customers" when none does. Duplicate names get the next best noun or adjective.
    """
    nouns_map = DEMOGRAPHIC_NOUNS if nouns is None else nouns
    if "adjective" in index.columns:
        adj_map = {a: j for a, j in index.loc[index["adjective"].astype(str) != "", ["attribute", "adjective"]]
                   .drop_duplicates("attribute").itertuples(index=False)}
    else:
        adj_map = dict(BEHAVIOUR_ADJECTIVES if adjectives is None else adjectives)
    if adjectives is not None:
        adj_map.update(adjectives)
    k = int(index["segment"].max()) + 1
    adj_list, noun_list = [], []
    for j in range(k):
        mine = index[index["segment"] == j]
        t = mine[_clear(mine)]
        beh = t[t["attribute"].isin(list(adj_map))].sort_values("index", ascending=False)
        all_beh = mine[mine["attribute"].isin(list(adj_map))]
        adj = [adj_map[a] for a in beh.loc[beh["index"] >= min_index, "attribute"]]
        if len(all_beh) and (all_beh["index"].dropna() < 100).all():
            adj = [LOW_ENGAGEMENT] + adj
        adj_list.append(adj or ["Average-engagement"])
        sig = mine[mine["significant"].fillna(False).astype(bool)]
        dem = sig[sig["attribute"].isin(list(nouns_map)) & (sig["index"] >= min_index)
                  & (sig["segment_value"] >= min_share)].sort_values("index", ascending=False)
        nn = list(dict.fromkeys(nouns_map[a] for a in dem["attribute"]))
        noun_list.append(nn or ["customers"])
    names = [f"{a[0]} {n[0]}" for a, n in zip(adj_list, noun_list)]
    for j in range(k):
        dup = [i for i in range(k) if names[i] == names[j]]
        for rank, i in enumerate(dup[1:], start=1):
            if len(noun_list[i]) > 1:
                names[i] = f"{adj_list[i][0]} {noun_list[i][min(rank, len(noun_list[i]) - 1)]}"
            elif len(adj_list[i]) > 1:
                names[i] = f"{adj_list[i][min(rank, len(adj_list[i]) - 1)]} {noun_list[i][0]}"
            if names[i] in names[:i]:
                names[i] = f"{names[i]} ({i})"
    return names


def _describe(t: pd.DataFrame) -> str:
    """``label (index, 95% CI lo-hi)``; a descriptive row (clustering feature, not tested) is marked ``[d]``."""
    out = []
    for r in t.itertuples():
        ci = (f", 95% CI {r.ci_low:.0f}-{r.ci_high:.0f}" if hasattr(r, "ci_low") and np.isfinite(r.ci_low)
              else "")
        mark = " [d]" if getattr(r, "descriptive", False) else ""
        out.append(f"{r.label} ({r.index:.0f}{ci}){mark}")
    return "; ".join(out)


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
        desc = t["descriptive"].fillna(False).astype(bool).to_numpy() if "descriptive" in t else np.zeros(len(t), bool)
        labels = [f"{lab} [d]" if d else lab for lab, d in zip(t["label"], desc)]
        colours = [("#e6a29b" if d else "#c0392b") if v < 100 else ("#9cc3e0" if d else "#2471a3")
                   for v, d in zip(t["index"], desc)]  # descriptive rows in a paler shade
        ax.barh(labels, t["index"] - 100, left=100, color=colours)
        if "ci_low" in t and len(t):  # the same linearised 95% interval as the affinity heatmap
            ax.errorbar(t["index"], np.arange(len(t)), xerr=[t["index"] - t["ci_low"], t["ci_high"] - t["index"]],
                        fmt="none", ecolor="k", lw=0.8)
        ax.axvline(100, color="grey", lw=1)
        ax.set_title(f"{j}: {names[j]}\n{sizes.loc[j, 'weighted_share']:.0%} of panel (weighted), "
                     f"n={int(sizes.loc[j, 'n']):,}", fontsize=10)
        ax.set_xlabel("index vs whole panel (100 = average)")
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    fig.suptitle("Persona cards: most over- (blue) and under-represented (red) attributes, 95% CI; significant "
                 "after FDR, or [d] descriptive = a clustering feature (not tested, interval excludes 100)")
    fig.tight_layout()
    return fig
