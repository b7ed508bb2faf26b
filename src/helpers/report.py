"""Standalone HTML affinity report: one self-contained file a marketer can open without Python.

All styling is inline CSS, the crosstabs are coloured HTML tables (hover a cell for its interval, bases
and q-value) and figures are embedded as base64 PNG; nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table.xt{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.xt th,table.xt td{border:1px solid #e3e3e3;padding:3px 6px;text-align:right}
table.xt th{background:#f6f6f6;text-align:center}table.xt td.row{text-align:left;white-space:nowrap}
td.sup{color:#999;background:#fafafa}td.cau{font-style:italic}
.note{font-size:.85em;color:#555}.box{background:#f8f9fb;border:1px solid #e1e4ea;padding:.6em 1em}
ul.sum li{margin:.4em 0}
"""


def _colour(index: float) -> str:
    """Background colour of an index cell: green above 100, red below, white at 100 (log scale)."""
    if not np.isfinite(index) or index <= 0:
        return "#ffffff"
    x = float(np.clip(np.log2(index / 100) / 1.5, -1, 1))
    if x >= 0:
        r, g, b = 255 - int(130 * x), 255 - int(40 * x), 255 - int(130 * x)
    else:
        r, g, b = 255 + int(20 * x), 255 + int(130 * x), 255 + int(130 * x)
    return f"#{r:02x}{g:02x}{b:02x}"


def _cell(r: pd.Series) -> str:
    if r["base_flag"] == "suppressed":
        tip = f"suppressed: unweighted n = {int(r['n_unweighted'])}, effective n = {r['n_effective']:.0f}"
        return f'<td class="sup" title="{html.escape(tip)}">&ndash;</td>'
    mark = ""
    desc = str(r.get("descriptive", False)).lower() in ("true", "1")
    if r["significant"]:
        mark = "&#9650;" if r["index"] > 100 else "&#9660;"
    elif desc:
        mark = "<sup>d</sup>"
    test = ("descriptive: a clustering feature, no test" if desc else f"q = {r['q_value']:.3g}")
    tip = (f"index {r['index']:.0f} (95% CI {r['ci_low']:.0f}-{r['ci_high']:.0f}); {test}; "
           f"n unweighted {int(r['n_unweighted'])}, weighted {r['n_weighted']:.0f}, effective "
           f"{r['n_effective']:.0f}; tier: {r['tier']}")
    if np.isfinite(r.get("rse", np.nan)):
        tip += f"; RSE {100 * r['rse']:.0f}%"
    if np.isfinite(r.get("vertical_pct", np.nan)):
        tip += f"; vertical {r['vertical_pct']:.1f}%, horizontal {r['horizontal_pct']:.1f}%"
    cls = ' class="cau"' if r["base_flag"] == "caution" else ""
    dag = "&dagger;" if r["base_flag"] == "caution" else ""
    return (f'<td{cls} style="background:{_colour(r["index"])}" title="{html.escape(tip)}">'
            f"{r['index']:.0f}{mark}{dag}</td>")


def crosstab_html(table: pd.DataFrame, index_type: str, labels: Mapping[str, str] | None = None) -> str:
    """A coloured crosstab (attributes as rows, segments as columns) of one index type; ``labels`` maps
    columns to display labels (from the run configuration)."""
    t = table[table["index_type"] == index_type]
    if t.empty:
        return "<p class='note'>No cells of this type.</p>"
    segs = t[["segment", "segment_name"]].drop_duplicates().sort_values("segment")
    head = "".join(f"<th>{html.escape(str(n))}</th>" for n in segs["segment_name"])
    rows = []
    for (fam, att), g in t.groupby(["family", "attribute"], sort=False):
        g = g.set_index("segment")
        label = _label(fam, att, labels)
        cells = "".join(_cell(g.loc[s]) for s in segs["segment"])
        rows.append(f'<tr><td class="row">{html.escape(str(label))}</td>{cells}</tr>')
    return f'<table class="xt"><tr><th>attribute</th>{head}</tr>{"".join(rows)}</table>'


def figure_html(fig, alt: str, dpi: int = 80) -> str:
    """A matplotlib figure as an inline base64 PNG ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}">'


def render_affinity_report(table: pd.DataFrame, path: str | Path, summaries: pd.DataFrame | None = None,
                           figures: Mapping[str, object] | None = None, title: str = "Affinity report",
                           context: Mapping[str, object] | None = None, alpha: float = 0.05,
                           labels: Mapping[str, str] | None = None, rule=None) -> Path:
    """Write the standalone HTML affinity report and return its path.

    Parameters
    ----------
    table : pandas.DataFrame
        The tidy affinity table (:attr:`helpers.affinity.AffinityIndex.table_`).
    path : path
        Output file (its name should contain ``affinity``).
    summaries : pandas.DataFrame, optional
        ``segment_name, sentence`` rows (:func:`helpers.affinity.segment_summaries`).
    figures : mapping of caption -> matplotlib Figure, optional
        Embedded as PNG with the caption below.
    title : str
        Page title.
    context : mapping, optional
        Key facts shown at the top (base, weighting, panel size, thresholds...).
    alpha : float
        The FDR level the table was built with (for the legend).
    labels : mapping, optional
        Column -> display label (``helpers.config`` labels); default: tidy column names.
    rule : helpers.stats.core.BaseSizeRule, optional
        The base-size rule the table was built with (for the legend; default the core's defaults).
    """
    from .stats import core as C

    rule = rule or C.BaseSizeRule()
    required = {"segment", "segment_name", "family", "attribute", "index_type", "index", "ci_low", "ci_high",
                "q_value", "significant", "n_unweighted", "n_weighted", "n_effective", "base_flag", "tier"}
    missing = sorted(required - set(table.columns))
    if missing:
        raise ValueError(f"the affinity table lacks columns {missing}; pass AffinityIndex(...).fit(...).table_")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if context:
        parts.append("<div class='box'><ul>" + "".join(
            f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in context.items())
            + "</ul></div>")
    comp = table.loc[table["index_type"] == "composition", "definition"] if "definition" in table else []
    heavy = str(comp.iloc[0]).split("(", 1)[-1].rstrip(")") if len(comp) and "(" in str(comp.iloc[0]) else ""
    heavy = f"above the {heavy}" if heavy else "above the base's heavy-user cut-off"
    n_sig = int(table["significant"].sum())
    n_sup = int(table["base_flag"].eq("suppressed").sum())
    n_desc = int(table["descriptive"].fillna(False).astype(bool).sum()) if "descriptive" in table else 0
    rse_txt = (f", or whose relative standard error on the effective base exceeds {100 * rule.rse_caution:.0f}% "
               f"(caution) / {100 * rule.rse_suppress:.0f}% (suppressed)" if rule.rse_caution is not None
               and rule.rse_suppress is not None else "")
    parts.append(
        f"<p>{len(table)} cells; {n_sig} significant after false-discovery-rate control; "
        f"{n_sup} suppressed for small base; {n_desc} descriptive (clustering features, not tested).</p>"
        "<div class='box note'><b>How to read.</b> An index of 100 means the segment looks like the base; "
        "120 means 20% more. <b>&#9650;/&#9660;</b>: significantly above/below the rest of the base "
        f"(q &lt; {alpha:g}, false-discovery-rate control over the whole table). <b><sup>d</sup></b>: descriptive "
        "cell of a feature the segments were built from: a segment differs from the rest on its own clustering "
        "features by construction, so no test is reported (index and interval describe it). "
        f"<b>&dagger;</b>: small base (fewer than {rule.caution_below} in the cell{html.escape(rse_txt)}), use "
        f"with caution. <b>&ndash;</b>: suppressed (fewer than {rule.suppress_below}), base too small to report. "
        "Hover a cell for its 95% interval, unweighted / weighted / effective n, RSE and tier. Tiers: index "
        f"&gt; {C.TIER_HIGH:g} sweet spot (concentrate), &lt; {C.TIER_LOW:g} de-prioritise.<br><b>Intensity</b> index = segment's average / base average (ratio of means): a "
        "few very heavy users can lift it. <b>Composition</b> index = share of the segment that is a heavy "
        f"user ({html.escape(heavy)}) / share of the base: counts people, ignores how heavy, depends on the "
        "cut-off. <b>Share</b> index = % of segment with the attribute / % of base, among users for whom "
        "the attribute is known (partner and enrichment data cover only matched users).</div>")
    if summaries is not None and len(summaries):
        parts.append("<h2>What to do with each segment</h2><ul class='sum'>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in summaries["sentence"]) + "</ul>")
    for kind, head in [("intensity", "Behavioural metrics: intensity index (ratio of means)"),
                       ("composition", "Behavioural metrics: composition index (share of heavy users)"),
                       ("share", "Attribute share index")]:
        parts.append(f"<h2>{head}</h2>" + crosstab_html(table, kind, labels))
    for caption, fig in (figures or {}).items():
        parts.append(f"<h2>{html.escape(caption)}</h2>" + figure_html(fig, caption))
    parts.append("<p class='note'>Generated by helpers.report from the tidy table affinity_table.csv; "
                 "self-contained (no external resources).</p></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


# --- figures (shared by the notebook and the HTML report) -----------------------------------------------
SHORT_FAMILY = {
    "partner_purchase_categories": "buys", "event_attendance_genres": "event", "traveler_type": "traveler",
    "offline_purchase_intent": "in market", "presence_of_children": "children", "household_size": "household",
    "homeowner_status": "home", "marital_status": "marital", "estimated_net_worth": "net worth",
    "education_level": "education", "income_bracket": "income", "age_group": "age",
}


def _short(attribute: str) -> str:
    return attribute.replace("time_on_", "").replace("_min", " (min/day)").replace("_", " ")


def _label(family: str, attribute: str, labels: Mapping[str, str] | None = None) -> str:
    """Short row label: the metric's label, or ``family: value`` (labels from the run configuration when
    given, else short names of the default dictionary)."""
    if labels and family in labels:
        return str(labels[family]) if family == attribute else f"{labels[family]}: {attribute.replace('_', ' ')}"
    if family == attribute:
        return _short(attribute)
    return f"{SHORT_FAMILY.get(family, family.replace('_', ' '))}: {attribute.replace('_', ' ')}"


def heatmap_figure(table: pd.DataFrame, index_type: str = "intensity", families: list[str] | None = None,
                   title: str | None = None, labels: Mapping[str, str] | None = None, ylabel: str | None = None,
                   ax=None):
    """Segment x attribute heatmap of one index type, log colour scale centred on 100.

    Cells are annotated with the index, ``*`` when significant after FDR control, ``d`` when descriptive (a
    clustering feature, not tested), ``?`` when the base is "caution"; suppressed cells are blank. ``labels``
    maps columns to display labels (run configuration).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    t = table[table["index_type"] == index_type]
    if families is not None:
        t = t[t["family"].isin(families)]
    if t.empty:
        raise ValueError(f"no {index_type!r} cells to draw (families={families})")
    t = t.assign(label=[_label(f, a, labels) for f, a in zip(t["family"], t["attribute"])])
    desc = (t["descriptive"].fillna(False).astype(bool) if "descriptive" in t else pd.Series(False, index=t.index))
    rows = list(dict.fromkeys(t["label"]))
    names = t[["segment", "segment_name"]].drop_duplicates().sort_values("segment")["segment_name"].tolist()
    idx = t.pivot_table(index="label", columns="segment_name", values="index", dropna=False).reindex(
        index=rows, columns=names)
    ann = t.assign(txt=[("" if not np.isfinite(i) else f"{i:.0f}" + ("*" if s else "d" if d else "") +
                         ("?" if b == "caution" else ""))
                        for i, s, d, b in zip(t["index"], t["significant"], desc, t["base_flag"])]
                   ).pivot(index="label", columns="segment_name", values="txt").reindex(index=rows, columns=names)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 0.32 * len(rows) + 1.8))
    else:
        fig = ax.figure
    sns.heatmap(np.log2(idx.astype(float) / 100), annot=ann.fillna(""), fmt="", cmap="RdYlGn", vmin=-1.5,
                vmax=1.5, center=0, ax=ax, linewidths=0.4, annot_kws={"fontsize": 8},
                cbar_kws={"label": "log2(index / 100): +1 = index 200, -1 = index 50"})
    ax.set_title(title or f"{index_type.capitalize()} affinity index by segment (* significant, FDR 5%; "
                 "d descriptive)")
    ax.set_xlabel("segment")
    ax.set_ylabel(ylabel or ("attribute: value" if index_type == "share" else "behavioural metric (unit)"))
    ax.tick_params(axis="x", labelrotation=30)
    plt.setp(ax.get_xticklabels(), ha="right")
    fig.tight_layout()
    return fig


def ranked_bars_figure(table: pd.DataFrame, top: int = 6, index_types: tuple[str, ...] = ("intensity", "share"),
                       title: str = "Top and bottom significant indices per segment (95% CI)",
                       labels: Mapping[str, str] | None = None, include_descriptive: bool = False):
    """Per-segment ranked bars: the ``top`` highest and lowest significant, reported indices with CIs.

    Descriptive cells (clustering features) are left out unless ``include_descriptive`` (then marked [d]
    and kept only when their interval excludes 100)."""
    import matplotlib.pyplot as plt

    desc = (table["descriptive"].fillna(False).astype(bool) if "descriptive" in table
            else pd.Series(False, index=table.index))
    clear_desc = desc & ((table["ci_low"] > 100) | (table["ci_high"] < 100)) if include_descriptive else False
    t = table[table["index_type"].isin(index_types) & (table["significant"] | clear_desc)].dropna(subset=["index"])
    segs = table[["segment", "segment_name"]].drop_duplicates().sort_values("segment")
    ncol = 3
    nrow = int(np.ceil(len(segs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(15, 3.6 * nrow), squeeze=False)
    for ax, (_, s) in zip(axes.ravel(), segs.iterrows()):
        g = t[t["segment"] == s["segment"]].sort_values("index")
        g = pd.concat([g.head(top // 2), g.tail(top - top // 2)]).drop_duplicates()
        gd = g["descriptive"].fillna(False).astype(bool) if "descriptive" in g else pd.Series(False, index=g.index)
        ylabels = [_label(f, a, labels) + (" [I]" if k == "intensity" else "") + (" [d]" if d else "")
                   for f, a, k, d in zip(g["family"], g["attribute"], g["index_type"], gd)]
        y = np.arange(len(g))
        colours = np.where(g["index"] > 100, "#2a9d4a", "#c0392b")
        ax.barh(y, g["index"] - 100, left=100, color=colours, alpha=0.8)  # bars start at the base (100)
        ax.errorbar(g["index"], y, xerr=[g["index"] - g["ci_low"], g["ci_high"] - g["index"]], fmt="none",
                    ecolor="k", lw=1)
        ax.axvline(100, color="grey", ls="--", lw=1)
        ax.set_yticks(y, ylabels, fontsize=8)
        ax.set_xscale("log")
        ticks = [t for t in (10, 25, 50, 100, 200, 400, 800) if g["ci_low"].min() / 1.5 <= t <= g["ci_high"].max() * 1.5]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_title(str(s["segment_name"]), fontsize=10)
        ax.set_xlabel("affinity index (log scale, 100 = base)")
    for ax in axes.ravel()[len(segs):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
