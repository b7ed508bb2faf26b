"""Audiences in the Explorer: the lookalike stage's audience, any audience's profile, comparisons and exports.

Lookalikes are the lookalike stage's own (its ``lookalike_scores`` artifact, selected by
:func:`helpers.audience.select`, the one selector) with the held-out evaluation the stage recorded in
``metrics.json``: the Explorer fits no model. Profiles and comparisons are :func:`helpers.stats.core.profile`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts
from .. import audience as audience_mod
from .codes import indicator_profile, panel_cached
from .common import (MAKE_TARGET, TIER_HIGH, TIER_LOW, check_segment, file_name, jsonable, label_of, producer,
                     unit_of, value_label)
from .loading import ExplorerData
from .persona import churn_risk_summary, value_summary
from .segmap import map_features
from .wstats import audience_estimate, weighted_share_ci

#: Keys of the lookalike stage's ``metrics.json`` entry the lookalike view shows (the stage's held-out test).
STAGE_METRICS = ("evaluation_task", "seed_size", "n_candidates", "lookalike_outcome_auc",
                 "lookalike_outcome_lift_top1", "lookalike_outcome_lift_top5", "lookalike_outcome_lift_top10",
                 "cosine_outcome_lift_top5", "random_outcome_lift_top5", "lookalike_outcome_precision_top5")


# --- the lookalike stage's audience --------------------------------------------------------------------------
def stage_scores(data: ExplorerData) -> pd.DataFrame:
    """The lookalike stage's scores, or :class:`helpers.artifacts.MissingArtifact` naming its notebook."""
    if data.lookalike_scores is None:
        raise artifacts.MissingArtifact(
            f"the lookalike stage has not run: {file_name('lookalike_scores')} is written by notebook "
            f"{producer('lookalike_scores')} (`{MAKE_TARGET}`); the Explorer shows that stage's audience and "
            "fits no model of its own")
    return data.lookalike_scores


def stage_audience(data: ExplorerData, top: int, allow_third_party: bool | None = None) -> audience_mod.Audience:
    """The ``top`` best-ranked candidates of the lookalike stage (:func:`helpers.audience.select`); labels
    derived from third-party data only where the run configuration's ``export.allow_third_party`` allows
    them (``None``) or the caller says so."""
    if allow_third_party is None:
        from .. import export as export_mod  # local, as in export_audience: export imports the selector

        allow_third_party = export_mod.allow_third_party(data.cfg)
    return audience_mod.select(None, "lookalike", frame=data.panel, scores=stage_scores(data), top=int(top),
                               config=data.cfg, id_col="user_id", churn_risk=data.churn_risk,
                               allow_third_party=allow_third_party)


def stage_candidates(data: ExplorerData) -> int:
    """How many customers the lookalike stage ranked as candidates (churned customers are not)."""
    scores = stage_scores(data)
    return panel_cached(data, "n_candidates", lambda: audience_mod.lookalike_candidates(
        scores, data.panel, data.cfg, id_col="user_id"))


def seed_name(data: ExplorerData) -> str:
    """The name of the lookalike stage's seed."""
    s = stage_scores(data)
    return str(s["audience"].iloc[0]) if "audience" in s and len(s) else "the lookalike stage's seed"


def check_size(data: ExplorerData, size: Any) -> int:
    """``size`` as an int between 1 and the lookalike stage's candidates, else a ValueError."""
    try:
        n = int(str(size).strip())
    except ValueError:
        raise ValueError(f"size must be an integer number of users, got {str(size)[:40]!r}") from None
    pool = stage_candidates(data)
    if not 1 <= n <= pool:
        raise ValueError(f"size must be between 1 and {pool} (the lookalike stage's candidates), got {n}")
    return n


def stage_lookalike_rows(data: ExplorerData, top: Any) -> tuple[np.ndarray, str, audience_mod.Audience]:
    """Row positions of the lookalike stage's ``top`` best-ranked candidates, a plain name and the audience."""
    aud = stage_audience(data, check_size(data, top))
    rows = data.rows_of(aud.ids)
    return rows, f"{len(rows):,} lookalikes of {seed_name(data)} (lookalike stage)", aud


def seed_mask(data: ExplorerData) -> np.ndarray:
    """Membership in the panel of the lookalike stage's (training) seed."""
    s = stage_scores(data)
    if "in_seed" not in s:
        return np.zeros(len(data.panel), bool)
    from .persona import _positions

    pos = _positions(data, "lookalike_scores", s)  # each panel user's row of the scores (-1: none), once
    flag = s["in_seed"].astype("boolean").fillna(False).to_numpy(bool)
    return np.where(pos >= 0, flag[np.maximum(pos, 0)], False) if len(flag) else np.zeros(len(pos), bool)


def stage_evaluation(data: ExplorerData) -> dict:
    """The held-out evaluation the lookalike stage recorded (its ``metrics.json`` entry), or an empty dict."""
    entry = data.metrics.get(producer("lookalike_scores")) or {}
    return {k: entry[k] for k in STAGE_METRICS if k in entry}


def profile_comparison(data: ExplorerData, seed_rows: np.ndarray, audience_rows: np.ndarray) -> list[dict]:
    """Weighted means of the map features in the seed, the audience and the whole panel, with the seed's and
    the audience's index against all customers (statistics core, with intervals)."""
    w = data.panel["weight"].to_numpy(float)
    out = []
    for c in map_features(data):
        v = pd.to_numeric(data.panel[c], errors="coerce").astype(float).to_numpy()
        lk = audience_estimate(v, w, audience_rows)
        sd = audience_estimate(v, w, seed_rows) if np.asarray(seed_rows).any() else None
        out.append({"feature": c, "label": label_of(data, c).lower(), "unit": unit_of(data, c),
                    "seed": sd["mean"] if sd else None, "lookalike": lk["mean"], "base": lk["base"],
                    "seed_index": sd["index"] if sd else None, "lookalike_index": lk["index"],
                    "lookalike_ci": [lk["ci_low"], lk["ci_high"]]})
    return out


def lookalike_payload(data: ExplorerData, size: Any) -> dict:
    """Payload of the lookalike view: the stage's audience of ``size`` customers, the stage's held-out
    evaluation, the audience's segment mix and its profile beside the seed's."""
    rows, name, aud = stage_lookalike_rows(data, size)
    member = np.zeros(len(data.panel), bool)
    member[rows] = True
    seed = seed_mask(data)
    mix = data.panel.loc[member, "segment_name"].value_counts(normalize=True)
    ev = stage_evaluation(data)
    return jsonable({
        "seed_name": seed_name(data), "seed_size": int(seed.sum()), "size": int(len(rows)),
        "max_size": stage_candidates(data), "name": name,
        "weighted_size": float(data.panel.loc[member, "weight"].sum()),
        "lift": ev.get("lookalike_outcome_lift_top5"), "lift_share": 0.05, "evaluation": ev,
        "mean_score": float(aud.frame["score"].mean()),
        "segment_mix": [{"segment_name": k, "share": v} for k, v in mix.items()],
        "profile": profile_comparison(data, seed, member),
        "definition": aud.definition,
        "method": (f"the lookalike stage's scores (notebook {producer('lookalike_scores')}); its held-out "
                   "test measured the lift at the top 5% of candidates"),
    })


# --- any audience against all customers, two audiences against each other ----------------------------------------
def comparison_indicators(data: ExplorerData) -> tuple[pd.DataFrame, dict]:
    """Every variable two audiences are compared on: the behavioural metrics (means) and a 0/1 indicator
    per attribute value of the families the affinity table profiles; with plain labels."""
    from ..affinity import attribute_indicators

    if "comparison_indicators" in data._cache:  # built once: 1M rows x every attribute value takes a while
        return data._cache["comparison_indicators"]
    p = data.panel
    metrics = [m for m in (getattr(data.cfg, "metric_names", None) or []) if m in p.columns]
    a = data.affinity
    fams = [f for f in pd.unique(a.loc[a["index_type"] == "share", "family"]) if f in p.columns]
    blocks = [p[metrics].apply(pd.to_numeric, errors="coerce").astype(float)] if metrics else []
    labels = {m: label_of(data, m, unit=True) for m in metrics}
    if fams:
        ind, meta = attribute_indicators(p, fams)
        blocks.append(ind)
        labels.update({c: value_label(data, meta.at[c, "family"], meta.at[c, "attribute"]) for c in ind.columns})
    X = pd.concat(blocks, axis=1) if blocks else pd.DataFrame(index=p.index)
    data._cache["comparison_indicators"] = (X, labels)
    return X, labels


def _fmt_val(v: float, kind: str) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{100 * v:.0f}%" if kind == "share" else f"{v:,.1f}"


def _side(data: ExplorerData, rows: np.ndarray, name: str) -> dict:
    w = data.panel["weight"].to_numpy(float)
    return {"name": name, "n_users": int(len(rows)), "weighted_size": float(w[rows].sum()),
            "value": value_summary(data, rows), "churn": churn_risk_summary(data, rows)}


def compare(data: ExplorerData, rows_a: np.ndarray, name_a: str, rows_b: np.ndarray, name_b: str,
            top: int = 12) -> dict:
    """Side-by-side comparison of two audiences (row positions of the panel): weighted size, value, churn
    risk, and every metric and attribute value on which they differ significantly (two-sample linearised
    test of the statistics core, FDR across all variables), largest differences first."""
    rows_a, rows_b = np.asarray(rows_a, int), np.asarray(rows_b, int)
    if len(rows_a) == 0 or len(rows_b) == 0:
        raise ValueError("both audiences need at least one member")
    # the core's profile of the two audiences' rows stacked (a row in both counts once on each side), from
    # per-cell sums (equal to profile(comparison_indicators) of those rows, without the rows x values matrix)
    in_a = np.r_[np.ones(len(rows_a), bool), np.zeros(len(rows_b), bool)]
    prof, labels = indicator_profile(data, np.r_[rows_a, rows_b], in_a)
    prof["label"] = prof["column"].map(labels)
    prof["ratio"] = 100 * prof["audience_mean"] / prof["rest_mean"]
    prof = prof[np.isfinite(prof["ratio"]) & prof["base_flag"].ne("suppressed")]
    sig = prof[prof["significant"]].copy()
    sig["strength"] = np.abs(np.log(sig["ratio"].clip(lower=1e-6) / 100))
    sig = sig.sort_values("strength", ascending=False).head(top)
    diffs = [{"label": r["label"], "kind": r["kind"], "a": r["audience_mean"], "b": r["rest_mean"],
              "ratio": r["ratio"], "q_value": r["q_value"], "n_a": int(len(rows_a)), "n_b": int(len(rows_b)),
              "text": (f"{r['label']}: {name_a} {_fmt_val(r['audience_mean'], r['kind'])} vs "
                       f"{name_b} {_fmt_val(r['rest_mean'], r['kind'])}")}
             for _, r in sig.iterrows()]
    overlap = int(len(np.intersect1d(rows_a, rows_b)))
    return jsonable({"a": _side(data, rows_a, name_a), "b": _side(data, rows_b, name_b), "differences": diffs,
                     "n_tested": int(len(prof)), "n_significant": int(prof["significant"].sum()),
                     "overlap": overlap,
                     "method": "weighted two-sample test of every variable, false-discovery rate 5% over all "
                               "of them (helpers.stats.core); shares in %"})


def _action_line(r: pd.Series, side: str) -> dict:
    verb = (("concentrate spend here" if side == "concentrate" else "de-prioritise") if r["kind"] != "share"
            else ("over-represented: target it" if side == "concentrate" else "under-represented: de-prioritise"))
    return {"label": r["label"], "index": r["index"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "action": side, "text": f"{r['label']}: index {r['index']:.0f} \u2014 {verb}"}


def audience_profile(data: ExplorerData, rows: np.ndarray, name: str, top: int = 5) -> dict:
    """Any audience (a segment, lookalikes, an uploaded list) against all customers: weighted size and
    share with interval, value, churn risk, and its most over- and under-represented traits (statistics
    core: weighted index with interval, FDR), each as an action line by the brief's tiers."""
    rows = np.asarray(rows, int)
    p = data.panel
    w = p["weight"].to_numpy(float)
    mask = np.zeros(len(p), bool)
    mask[rows] = True
    prof, labels = indicator_profile(data, None, mask)  # = stats_core.profile(comparison_indicators(data)...)
    prof["label"] = prof["column"].map(labels)
    ok = prof[prof["significant"] & prof["base_flag"].ne("suppressed") & prof["index"].notna()]
    over = ok[ok["index"] > TIER_HIGH].sort_values("index", ascending=False).head(top)
    under = ok[ok["index"] < TIER_LOW].sort_values("index").head(top)
    lines = ([_action_line(r, "concentrate") for _, r in over.iterrows()]
             + [_action_line(r, "de-prioritise") for _, r in under.iterrows()])
    mix = p["weight"][mask].groupby(p["segment_name"][mask]).sum()  # two columns, not the members' whole rows
    mix = (mix / mix.sum()).sort_values(ascending=False)
    return jsonable({**_side(data, rows, name), "n_users": int(mask.sum()), "share": weighted_share_ci(mask, w),
                     "actions": lines, "segment_mix": [{"name": k, "share": v} for k, v in mix.items()],
                     "tiers": {"low": TIER_LOW, "high": TIER_HIGH}})


# --- export ------------------------------------------------------------------------------------------------------
def audience_frame(data: ExplorerData, kind: str, segment: Any = None, size: Any = None
                   ) -> tuple[pd.DataFrame, Any]:
    """The list an export takes and its definition, built as the command line builds it.

    ``kind="segment"``: :func:`helpers.export.segment_audience` on the segments artifact (score = posterior
    probability, plus ``churn_prob_90d`` when the churn stage ran), exactly as ``audience-export
    --segment``. ``kind="lookalike"``: the lookalike stage's ``size`` best-ranked candidates
    (:func:`helpers.audience.select`, with the stage's score and reason codes), under the export policy's
    rule for 3rd-party-derived seed names.
    """
    from .. import export as export_mod

    if kind == "segment":
        s = check_segment(data, segment)
        churn = data.churn_risk if data.churn_risk is not None and "churn_prob_90d" in data.churn_risk else None
        return export_mod.segment_audience(data.segments, s, churn)
    if kind == "lookalike":
        aud = stage_audience(data, check_size(data, size), export_mod.allow_third_party(data.cfg))
        return aud.frame, aud.definition
    raise ValueError(f"kind must be 'segment' or 'lookalike', got {str(kind)[:40]!r}")


def export_name(label: str) -> str:
    """A file stem the export function accepts, from a label (``"segment 3"`` -> ``"segment_3"``)."""
    stem = re.sub(r"[^a-z0-9_.-]+", "_", label.lower()).strip("_.-")[:90]
    return stem or "audience"


def export_list(data: ExplorerData, audience: pd.DataFrame, definition: Any, out_dir: Path, name: str,
                min_size: int | None = None, seed: int | None = None, hash_ids: bool = True) -> dict:
    """Write an audience with :func:`helpers.export.export_audience`, the function behind the CLI.

    Same privacy guard (``min_size``, default the export module's), same manifest; identifiers are
    hashed by default (salted with ``$AUDIENCE_EXPORT_SALT`` when set, as the CLI does). Returns
    ``{"files": {"csv": path, "parquet": path, "manifest": path}, "manifest": dict}``; the export
    function's errors (``AudienceTooSmall``, ``DisallowedColumn``: ValueErrors) reach the caller.
    """
    from .. import export as export_mod

    salt = os.environ.get(export_mod.SALT_ENV) if hash_ids else None
    files = export_mod.export_audience(
        audience, out_dir, name, definition=definition,
        min_size=export_mod.DEFAULT_MIN_SIZE if min_size is None else min_size,
        hash_ids=hash_ids, salt=salt, panel_version=data.panel_version(), seed=seed)
    manifest = json.loads(Path(files["manifest"]).read_text())
    return {"files": {k: Path(v) for k, v in files.items()}, "manifest": manifest}
