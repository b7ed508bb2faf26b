"""Data layer of the Audience Affinity Explorer: load the pipeline's artifacts, build the views' payloads.

Everything the web app shows is computed here from the artifacts of the pipeline (``data/processed``,
the embedded DuckDB and ``reports/metrics.json``) by plain functions returning JSON-ready dicts, so the
numbers can be unit-tested without a browser. The Flask layer (:mod:`helpers.explorer.app`) only
validates input and serialises these payloads.

Views and their statistics:

* segment map -- each segment is a bubble sized by its weighted audience; its position is a 2-D
  principal-component projection of the segment centroids on the standardised channel / spend features
  (``log1p`` then z-scored with the panel's weighted mean and SD, so heavy tails do not dominate);
* persona card -- size, the segment's defining attributes from the affinity table (significant,
  reported share indices), weighted demographics, the three channel minutes, churn risk and value;
* affinity heatmap -- one index type of one attribute family (or the channels) as a segment x attribute
  grid with its action tier, significance and base-size flags;
* lookalikes -- the positive-unlabelled propensity model of :mod:`helpers.lookalike` seeded with a
  segment, its held-out lift at the chosen audience size and the seed-vs-lookalike profile.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import artifacts, lookalike
from .. import metrics as metrics_mod
from .. import schema as S
from ..paths import Paths

#: Make target that (re)creates every artifact the app reads.
MAKE_TARGET = "make reports"
#: Features of the segment map (channel minutes, conversions and spend), with their units.
MAP_FEATURES: dict[str, str] = {
    "time_on_social_media_min": "min/day",
    "time_on_streaming_video_min": "min/day",
    "time_on_podcasts_min": "min/day",
    "monthly_conversions": "count/month",
    "avg_monthly_spend": "USD/month",
}
#: Plain-language labels of the columns the app shows.
LABELS: dict[str, str] = {
    "time_on_social_media_min": "social media",
    "time_on_streaming_video_min": "streaming video",
    "time_on_podcasts_min": "podcasts",
    "monthly_conversions": "conversions",
    "avg_monthly_spend": "monthly spend",
}
#: Demographic columns of the persona card (1st-party ones cover everybody, 3rd-party only matched users).
DEMOGRAPHICS: tuple[str, ...] = ("age_group", "income_bracket", "homeowner_status", "presence_of_children",
                                 "marital_status")
#: The pseudo-family of the heatmap that shows the channel metrics.
CHANNELS = "channels"
CHANNEL_INDEX_TYPES = ("intensity", "composition")
SEGMENT_COLUMNS = ("user_id", "segment")
AFFINITY_COLUMNS = ("segment", "family", "attribute", "index_type", "index", "ci_low", "ci_high", "q_value",
                    "significant", "n_unweighted", "base_flag", "tier")


# --- artifacts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact the app reads: file name(s) in ``data/processed``, who writes it, whether required."""

    key: str
    files: tuple[str, ...]
    made_by: str
    required: bool

    def present(self, paths: Paths) -> bool:
        """True when any of the artifact's alternative files exists."""
        return any((paths.processed / f).exists() for f in self.files)


def _producer(name: str) -> str:
    """``notebook <producer>`` of a registered artifact (the registry is the one place producers are named)."""
    a = artifacts.REGISTRY.get(name)
    return f"notebook {a.producer}" if a is not None else "the pipeline"


#: What the app reads: (key, registry name, files, required); the producers come from the registry.
ARTIFACT_SPECS: tuple[ArtifactSpec, ...] = tuple(
    ArtifactSpec(key, files, _producer(reg), req) for key, reg, files, req in (
        ("unified", "unified", (artifacts.UNIFIED_PARQUET, "audience.duckdb"), True),
        ("segments", "segments", (artifacts.SEGMENTS,), True),
        ("segment_profiles", "segment_profiles", (artifacts.SEGMENT_PROFILES,), False),
        ("affinity", "affinity_table", (artifacts.AFFINITY_TABLE,), True),
        ("weights", "weights", (artifacts.WEIGHTS,), False),
        ("churn_risk", "churn_risk", (artifacts.CHURN_RISK,), False),
        ("segment_value", "segment_value", (artifacts.SEGMENT_VALUE,), False),
        ("customer_value", "customer_value", ("customer_value.parquet",), False),
        ("lookalike_scores", "lookalike_scores", (artifacts.LOOKALIKE_SCORES,), False),
        ("post_topics", "post_topics", ("post_topics.parquet",), False),
    ))


class UnknownSegment(LookupError):
    """The requested segment label does not exist in this run's segmentation."""


class MissingArtifacts(artifacts.MissingArtifact):
    """Required artifacts are absent; ``missing`` lists them with the notebook and make target creating them."""

    def __init__(self, missing: list[dict]) -> None:
        self.missing = missing
        names = ", ".join(f"{m['files'][0]} ({m['made_by']})" for m in missing)
        super().__init__(f"missing pipeline artifacts: {names}; run `{MAKE_TARGET}` to create them")


def artifact_status(paths: Paths) -> list[dict]:
    """Presence of every artifact the app reads, with the notebook and make target that write it."""
    return [{"key": a.key, "files": list(a.files), "present": a.present(paths), "required": a.required,
             "made_by": a.made_by, "make_target": MAKE_TARGET, "folder": str(paths.processed)}
            for a in ARTIFACT_SPECS]


def _read_unified(paths: Paths) -> pd.DataFrame:
    """The unified table from its Parquet file, or from the embedded DuckDB (table ``audience``)."""
    if (paths.processed / artifacts.UNIFIED_PARQUET).exists():
        return artifacts.load_unified(paths)
    import duckdb

    con = duckdb.connect(str(paths.duckdb), read_only=True)
    try:
        return con.execute("SELECT * FROM audience").df()
    finally:
        con.close()


def _require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(df.columns)[:12]}...); "
                         f"re-create it with `{MAKE_TARGET}`")


def _optional(paths: Paths, name: str) -> pd.DataFrame | None:
    f = paths.processed / name
    if not f.exists():
        return None
    return pd.read_parquet(f) if name.endswith(".parquet") else pd.read_csv(f)


@dataclass
class ExplorerData:
    """Everything the app shows, loaded once from the artifacts of one pipeline run.

    ``panel`` is the unified table with ``weight`` (1.0 without weighting), ``segment`` and
    ``segment_name`` joined on; users without a segment are dropped.
    """

    paths: Paths
    panel: pd.DataFrame
    affinity: pd.DataFrame
    segments: pd.DataFrame | None = None
    profiles: pd.DataFrame | None = None
    churn_risk: pd.DataFrame | None = None
    segment_value: pd.DataFrame | None = None
    lookalike_scores: pd.DataFrame | None = None
    metrics: dict = field(default_factory=dict)
    cfg: Any = field(default=None, repr=False)
    _cv: Any = field(default=None, repr=False)
    _features: Any = field(default=None, repr=False)
    _version: str | None = field(default=None, repr=False)

    @property
    def segment_ids(self) -> list[int]:
        """Segment labels present in the panel, ascending."""
        return sorted(int(s) for s in pd.unique(self.panel["segment"]))

    def segment_names(self) -> dict[int, str]:
        """Segment label -> name."""
        return {int(k): str(v) for k, v in self.panel.groupby("segment")["segment_name"].first().items()}

    def panel_version(self) -> str:
        """Content hash of the unified table (:func:`helpers.export.panel_version`), for export manifests."""
        if self._version is None:
            from .. import export as export_mod

            self._version = export_mod.panel_version(_read_unified(self.paths))
        return self._version

    def features(self) -> lookalike.Features:
        """The lookalike model matrix of the panel (built once, then cached)."""
        if self._features is None:
            cfg = self.cfg
            if cfg is not None and not getattr(cfg, "is_default", True):
                # a user table: the configuration's columns, under the run's id name
                idc = cfg.id
                frame = self.panel.drop(columns=["segment", "segment_name", "weight"], errors="ignore")
                if idc != "user_id" and idc not in frame.columns:
                    frame = frame.rename(columns={"user_id": idc})
                self._features = lookalike.build_features(frame.reset_index(drop=True), config=cfg)
                return self._features
            sources = ["1st party"] + [src for src, cols in (("2nd party", S.SECOND_PARTY),
                                                             ("3rd party", S.THIRD_PARTY))
                                       if all(c in self.panel.columns for c in cols)]
            cols = [c for c in S.COLUMN_NAMES if c in self.panel.columns]
            self._features = lookalike.build_features(self.panel[cols].reset_index(drop=True), sources=sources)
        return self._features


def load_explorer_data(paths: Paths, config_path: Any = None) -> ExplorerData:
    """Read and check every artifact of the run in ``paths``.

    Raises
    ------
    MissingArtifacts
        When a required artifact is absent (the message names the notebook and ``make reports``).
    ValueError
        When an artifact lacks a required column or the segments do not match the unified table.
    """
    missing = [s for s in artifact_status(paths) if s["required"] and not s["present"]]
    if missing:
        raise MissingArtifacts(missing)
    for name in ("segments", "affinity_table"):
        why = artifacts.stale_reason(paths, name) if name in artifacts.REGISTRY else None
        if why:
            raise artifacts.StaleArtifact(f"{why}; re-run notebook {artifacts.REGISTRY[name].producer} "
                                          f"(`{MAKE_TARGET}`)")
    unified = _read_unified(paths)
    idc = artifacts.id_column(paths)

    def as_user_id(df: pd.DataFrame | None) -> pd.DataFrame | None:
        """The run's id column (``cfg.id``, e.g. ``customerID``) as ``user_id``, the app's internal name."""
        if df is not None and idc != "user_id" and idc in df.columns and "user_id" not in df.columns:
            return df.rename(columns={idc: "user_id"})
        return df

    unified = as_user_id(unified)
    _require_columns(unified, ["user_id"], "the unified table")
    segments = as_user_id(artifacts.load_segments(paths))
    _require_columns(segments, SEGMENT_COLUMNS, artifacts.SEGMENTS)
    if segments["segment"].isna().any():
        rows = segments.index[segments["segment"].isna()][:5].tolist()
        raise ValueError(f"{artifacts.SEGMENTS} has missing segment labels (rows e.g. {rows}); "
                         f"re-create it with `{MAKE_TARGET}`")
    dup = segments["user_id"].astype(str).duplicated()
    if dup.any():
        raise ValueError(f"{artifacts.SEGMENTS} lists {int(dup.sum())} user_id more than once (e.g. "
                         f"{segments.loc[dup, 'user_id'].iloc[0]!r}); each user needs exactly one segment")
    if "segment_name" not in segments:
        raise ValueError(f"{artifacts.SEGMENTS} lacks columns ['segment_name']; re-create it with `{MAKE_TARGET}`")
    # the one panel (unified + weight + segment): helpers.panel.Panel, users without a segment dropped
    from ..panel import Panel

    panel = as_user_id(Panel.load(paths).frame.copy())
    panel["user_id"] = panel["user_id"].astype(str)
    panel = panel[panel["segment"].notna()].copy()
    if len(panel):
        panel["segment"] = panel["segment"].astype(int)
        panel["segment_name"] = panel["segment_name"].astype(str)
    if panel.empty:
        raise ValueError(f"no user_id of {artifacts.SEGMENTS} is in the unified table: the two artifacts come "
                         f"from different runs; re-create them with `{MAKE_TARGET}`")
    affinity = pd.read_csv(paths.processed / artifacts.AFFINITY_TABLE)
    _require_columns(affinity, AFFINITY_COLUMNS, artifacts.AFFINITY_TABLE)
    affinity["significant"] = affinity["significant"].astype(str).str.lower().isin(["true", "1"])
    stray = sorted(set(affinity["segment"].astype(int)) - set(panel["segment"]))
    if stray:
        raise ValueError(f"{artifacts.AFFINITY_TABLE} has segments {stray} that {artifacts.SEGMENTS} does not: "
                         f"the two come from different segmentations; re-create them with `{MAKE_TARGET}`")
    affinity["segment"] = affinity["segment"].astype(int)
    return ExplorerData(
        paths=paths, panel=panel.reset_index(drop=True), affinity=affinity, segments=segments,
        profiles=_optional(paths, artifacts.SEGMENT_PROFILES),
        churn_risk=as_user_id(_optional(paths, artifacts.CHURN_RISK)),
        segment_value=_optional(paths, artifacts.SEGMENT_VALUE),
        lookalike_scores=as_user_id(_optional(paths, artifacts.LOOKALIKE_SCORES)),
        metrics=metrics_mod.read(paths.metrics),
        cfg=run_config(paths, config_path),
    )


# --- JSON helpers --------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """``obj`` with numpy / pandas scalars made native and NaN / inf / NA replaced by ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series, pd.Index)):
        return [jsonable(v) for v in list(obj)]
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    return obj if isinstance(obj, str) else str(obj)


def check_segment(data: ExplorerData, segment: Any) -> int:
    """``segment`` as an int label present in the data, else a ValueError naming the valid labels."""
    try:
        s = int(str(segment).strip())
    except ValueError:
        raise ValueError(f"segment must be an integer label, got {str(segment)[:40]!r}; valid: "
                         f"{data.segment_ids}") from None
    if s not in data.segment_ids:
        raise UnknownSegment(f"unknown segment {s}; valid segments: {data.segment_ids}")
    return s


# --- weighted statistics -------------------------------------------------------------------------
def weighted_mean_sd(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted mean and (population) standard deviation, ignoring missing values."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    ok = np.isfinite(v) & np.isfinite(w)
    if not ok.any() or w[ok].sum() <= 0:
        return float("nan"), float("nan")
    m = float(np.average(v[ok], weights=w[ok]))
    return m, float(np.sqrt(np.average((v[ok] - m) ** 2, weights=w[ok])))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Smallest value whose cumulative weight reaches half the total (missing values ignored): the
    statistics core's :func:`helpers.stats.core.weighted_quantile` at 0.5 (NaN when nothing is observed)."""
    from ..stats.core import weighted_quantile

    v = np.asarray(values, float)
    if not np.isfinite(v).any():
        return float("nan")
    return weighted_quantile(v, np.asarray(weights, float), 0.5)


def standardised_features(panel: pd.DataFrame, features: Sequence[str] = tuple(MAP_FEATURES),
                          log: bool = True) -> pd.DataFrame:
    """Map features as ``log1p`` (when ``log``) and z-scored with the panel's weighted mean and SD."""
    _require_columns(panel, [*features, "weight"], "the panel")
    out = {}
    w = panel["weight"].to_numpy(float)
    for c in features:
        v = pd.to_numeric(panel[c], errors="coerce").astype(float).to_numpy()
        if log:
            v = np.log1p(np.clip(v, 0, None))
        m, sd = weighted_mean_sd(v, w)
        out[c] = (v - m) / sd if sd > 0 else np.zeros_like(v)
    return pd.DataFrame(out, index=panel.index)


def segment_centroids(panel: pd.DataFrame, features: Sequence[str] = tuple(MAP_FEATURES),
                      log: bool = True) -> pd.DataFrame:
    """Weighted centroid of every segment on the standardised features (rows: segments)."""
    z = standardised_features(panel, features, log)
    w = panel["weight"].to_numpy(float)
    z = z.mul(w, axis=0)
    tot = pd.Series(w, index=panel.index).groupby(panel["segment"]).sum()
    return z.groupby(panel["segment"]).sum().div(tot, axis=0).sort_index()


def pca_2d(centroids: pd.DataFrame, weights: Sequence[float] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted principal components of segment centroids: 2-D coordinates, explained shares, loadings.

    The centroids are centred on their weighted mean (with segment-share weights that is the panel
    average, so the origin is the average customer), and the components come from the SVD of the
    ``sqrt(weight)``-scaled centred matrix. Each component's sign is fixed so that its largest loading is
    positive (deterministic across runs). With fewer than three segments the missing axis is zero.

    Returns
    -------
    coords : (k, 2) array
    explained : (2,) array of the share of the between-segment variance each axis carries
    loadings : (2, n_features) array
    """
    C = centroids.to_numpy(float)
    k = C.shape[0]
    if k < 1:
        raise ValueError("no segments: the segments artifact is empty")
    w = np.ones(k) if weights is None else np.asarray(weights, float)
    if w.shape != (k,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
    w = w / w.sum()
    Cc = C - w @ C
    _, s, vt = np.linalg.svd(np.sqrt(w)[:, None] * Cc, full_matrices=False)
    load = np.zeros((2, C.shape[1]))
    r = min(2, vt.shape[0])
    load[:r] = vt[:r]
    for i in range(2):
        j = int(np.argmax(np.abs(load[i])))
        if load[i, j] < 0:
            load[i] = -load[i]
    var = s ** 2
    explained = np.zeros(2)
    if var.sum() > 0:
        explained[:r] = var[:r] / var.sum()
    return Cc @ load.T, explained, load


def _axis_label(i: int, explained: float, loading: np.ndarray, features: Sequence[str],
                label=None) -> str:
    """Plain-language meaning of a map axis: the features that push a segment to each side
    ("<- more social media  |  more podcasts and monthly spend ->"); no component or variance jargon."""
    label = label or (lambda c: LABELS.get(c, c))
    big = np.abs(loading) >= 0.5 * np.abs(loading).max() if np.abs(loading).max() > 0 else np.zeros(len(loading), bool)

    def side(sign: int) -> str:
        idx = [j for j in np.argsort(-np.abs(loading)) if big[j] and np.sign(loading[j]) == sign][:2]
        return " and ".join(label(features[j]) for j in idx)

    pos, neg = side(1), side(-1)
    parts = ([f"\u2190 more {neg}"] if neg else []) + ([f"more {pos} \u2192"] if pos else [])
    return "   |   ".join(parts) if parts else "no difference between segments"


# --- views ---------------------------------------------------------------------------------------
def segment_sizes(panel: pd.DataFrame) -> pd.DataFrame:
    """Unweighted and weighted size and weighted share of every segment."""
    g = panel.groupby("segment")
    out = pd.DataFrame({"segment_name": g["segment_name"].first(), "n_users": g.size(),
                        "weighted_size": g["weight"].sum()})
    out["weighted_share"] = out["weighted_size"] / out["weighted_size"].sum()
    return out.sort_index()


def map_features(data: ExplorerData) -> list[str]:
    """Behavioural metrics of the run configuration present in the panel (the dictionary's five otherwise)."""
    cfg = getattr(data, "cfg", None)
    names = [m for m in (getattr(cfg, "metric_names", None) or []) if m in data.panel.columns]
    for m in MAP_FEATURES:
        if m in data.panel.columns and m not in names and (not names or m == "avg_monthly_spend"):
            names.append(m)
    if not names:
        raise ValueError("the panel has none of the run configuration's behavioural metrics; re-create it "
                         f"with `{MAKE_TARGET}`")
    return names


def segment_map(data: ExplorerData, features: Sequence[str] | None = None, log: bool = True) -> dict:
    """Payload of the segment map: one bubble per segment and the meaning of the two axes.

    Bubble area is the weighted audience; position is :func:`pca_2d` of :func:`segment_centroids`
    (weighted by segment share).
    """
    features = list(features or map_features(data))
    sizes = segment_sizes(data.panel)
    cent = segment_centroids(data.panel, features, log)
    coords, explained, load = pca_2d(cent, sizes["weighted_share"].to_numpy())
    lab = lambda c: label_of(data, c).lower()  # noqa: E731
    bubbles = [{"segment": int(s), "name": sizes.at[s, "segment_name"], "n_users": int(sizes.at[s, "n_users"]),
                "weighted_size": float(sizes.at[s, "weighted_size"]),
                "weighted_share": float(sizes.at[s, "weighted_share"]),
                "x": float(coords[i, 0]), "y": float(coords[i, 1]),
                "centroid": {f: float(cent.at[s, f]) for f in features}}
               for i, s in enumerate(cent.index)]
    return jsonable({
        "segments": bubbles,
        "features": list(features),
        "transform": "log1p, then z-score with the panel's weighted mean and SD" if log else "z-score",
        "explained": explained,
        "loadings": {f: load[:, j] for j, f in enumerate(features)},
        "x_label": _axis_label(0, explained[0], load[0], features, lab),
        "y_label": _axis_label(1, explained[1], load[1], features, lab),
        "feature_labels": [label_of(data, f) for f in features],
        "n_users": int(len(data.panel)),
        "weighted_total": float(data.panel["weight"].sum()),
    })


def weighted_distribution(panel: pd.DataFrame, column: str, segment: int) -> dict:
    """Weighted % of each category of ``column`` in ``segment`` and in the whole panel (known values only)."""
    known = panel[column].notna()
    vals = panel[column].astype("string")
    spec = S.BY_NAME.get(column)
    if spec is not None and spec.kind == "bool":
        vals = panel[column].astype("boolean").map({True: "yes", False: "no"}).astype("string")
        cats = ["yes", "no"]
    elif spec is not None and spec.categories:
        cats = list(spec.categories)
    else:
        cats = sorted(vals[known].unique().tolist())
    rows = []
    in_seg = (panel["segment"] == segment).to_numpy()
    w = panel["weight"].to_numpy(float)
    seg_tot = w[in_seg & known.to_numpy()].sum()
    base_tot = w[known.to_numpy()].sum()
    for c in cats:
        hit = (vals == str(c)).fillna(False).to_numpy()
        rows.append({"category": str(c),
                     "pct_segment": 100 * w[hit & in_seg].sum() / seg_tot if seg_tot > 0 else None,
                     "pct_base": 100 * w[hit].sum() / base_tot if base_tot > 0 else None})
    coverage = float(w[in_seg & known.to_numpy()].sum() / w[in_seg].sum()) if w[in_seg].sum() > 0 else 0.0
    return {"column": column, "source": S.BY_NAME[column].source if column in S.BY_NAME else "",
            "coverage": coverage, "n_known": int((in_seg & known.to_numpy()).sum()), "rows": rows}


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


def channel_minutes(data: ExplorerData, segment: int) -> list[dict]:
    """Weighted mean and median of the three channel minutes in the segment and the panel, with the
    segment's intensity index from the affinity table when it has one."""
    p = data.panel
    in_seg = (p["segment"] == segment).to_numpy()
    w = p["weight"].to_numpy(float)
    a = data.affinity
    out = []
    chans = [c for c in pd.unique(a.loc[a["index_type"] == "intensity", "attribute"]) if c in p.columns]
    if not chans:
        chans = [c for c in S.CHANNEL_MINUTES if c in p.columns]
    cfg = getattr(data, "cfg", None)
    for c in chans:
        v = pd.to_numeric(p[c], errors="coerce").astype(float).to_numpy()
        row = {"channel": c, "label": label_of(data, c), "unit": (cfg.unit(c) if cfg is not None else "") or "",
               "mean_segment": weighted_mean_sd(v[in_seg], w[in_seg])[0],
               "median_segment": weighted_median(v[in_seg], w[in_seg]),
               "mean_base": weighted_mean_sd(v, w)[0]}
        r = a[(a["segment"] == segment) & (a["attribute"] == c) & (a["index_type"] == "intensity")]
        if len(r):
            r = r.iloc[0]
            row.update(index=r["index"], ci_low=r["ci_low"], ci_high=r["ci_high"], tier=r["tier"],
                       significant=bool(r["significant"]), base_flag=r["base_flag"])
        out.append(row)
    return out


def churn_summary(data: ExplorerData, segment: int) -> dict | None:
    """Churn risk and expected value of the segment, or None when the churn stage has not run.

    From ``churn_risk.parquet``: the weighted mean 90-day churn probability of *active* members (users
    not yet flagged ``churned_in_last_90_days``; the flag of the unified table, else the artifact's
    ``churned`` column), the weighted churned share and the weighted mean ``expected_value``. Plus the
    segment's row of ``segment_value.csv`` when it describes the same segment (same name).
    """
    if data.churn_risk is None and data.segment_value is None:
        return None
    out: dict[str, Any] = {}
    if data.churn_risk is not None and {"user_id", "churn_prob_90d"} <= set(data.churn_risk.columns):
        cr = data.churn_risk.set_index(data.churn_risk["user_id"].astype(str))
        p = data.panel[data.panel["segment"] == segment]
        risk = p["user_id"].map(cr["churn_prob_90d"]).astype(float).to_numpy()
        w = p["weight"].to_numpy(float)
        if "churned_in_last_90_days" in p:
            churned = p["churned_in_last_90_days"].astype("boolean").fillna(False).to_numpy(bool)
        elif "churned" in cr:
            churned = p["user_id"].map(cr["churned"]).astype("boolean").fillna(False).to_numpy(bool)
        else:
            raise ValueError("cannot tell churned from active users: neither the unified table's "
                             "churned_in_last_90_days nor churn_risk's 'churned' column exists")
        active = ~churned & np.isfinite(risk)
        out["n_scored"] = int(np.isfinite(risk).sum())
        out["churn_prob_90d_active"] = weighted_mean_sd(risk[active], w[active])[0]
        out["churned_share"] = float(np.average(churned, weights=w)) if w.sum() > 0 else None
        if "expected_value" in cr:
            ev = p["user_id"].map(cr["expected_value"]).astype(float).to_numpy()
            out["expected_value_usd"] = weighted_mean_sd(ev, w)[0]
    sv = data.segment_value
    if sv is not None and "segment" in sv.columns and (sv["segment"] == segment).any():
        row = sv[sv["segment"] == segment].iloc[0]
        same = "segment_name" not in row or str(row["segment_name"]) == data.segment_names()[segment]
        if same:  # segment_value.csv of another segmentation would describe a different group
            out["segment_value"] = row.drop(labels=["segment"]).to_dict()
    return out or None


def persona_card(data: ExplorerData, segment: Any, top: int = 5) -> dict:
    """Payload of a segment's persona card.

    Size (unweighted, weighted, share), the ``segment_profiles.csv`` row when present, defining
    attributes (:func:`defining_attributes`), weighted demographics (:func:`weighted_distribution`),
    the three channel minutes (:func:`channel_minutes`) and churn (:func:`churn_summary`, or None).
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
    cfg = getattr(data, "cfg", None)
    if not demo_cols and cfg is not None:  # a user table: its declared category attributes
        demo_cols = [a_.name for a_ in cfg.attributes if a_.name in data.panel.columns
                     and a_.type in ("category", "ordinal", "bool")][:5]
    demo = [{**weighted_distribution(data.panel, c, s), "label": label_of(data, c)} for c in demo_cols]
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
    from ..stats import core as _core

    low = _core.TIER_LOW if low is None else low
    high = _core.TIER_HIGH if high is None else high
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


# --- lookalikes ----------------------------------------------------------------------------------
@dataclass
class LookalikeFit:
    """A fitted lookalike model for one seed segment: per-user masks and ranking scores."""

    segment: int
    seed_name: str
    seed: np.ndarray        # members of the seed segment
    hold: np.ndarray        # seed members hidden from training (for the held-out lift)
    raw: np.ndarray         # out-of-fold propensity ranking score, every user
    proba: np.ndarray       # calibrated P(labelled | x), every user

    @property
    def pool(self) -> np.ndarray:
        """Users a lookalike audience is drawn from: everybody outside the seed segment."""
        return ~self.seed

    @property
    def max_size(self) -> int:
        return int(self.pool.sum())


def fit_lookalike(data: ExplorerData, segment: Any, holdout: float = 0.3, n_folds: int = 3,
                  max_train: int = 6000, seed: int = 0) -> LookalikeFit:
    """Fit :func:`helpers.lookalike.run_lookalike` (PU propensity model) with a segment as the seed.

    ``holdout`` of the seed is hidden from training; the held-out members measure the lift. Panels
    larger than ``max_train`` users are modelled on a simple random sample of ``max_train`` users (so a
    request stays interactive at 50,000 users): the sample gets out-of-fold scores and everybody else is
    scored by the model refitted on the whole sample; seed members outside the sample are neither
    training nor held-out rows and are left out of the lift. Same ``seed``, same scores.
    """
    s = check_segment(data, segment)
    mask = (data.panel["segment"] == s).to_numpy()
    if max_train < 100:
        raise ValueError(f"max_train must be at least 100 users, got {max_train}")
    if mask.sum() < max(2 * n_folds, 10) or (~mask).sum() < 10:
        raise ValueError(f"segment {s} has {int(mask.sum())} members: too few to train a lookalike model "
                         f"(need at least {max(2 * n_folds, 10)})")
    X = data.features().X
    n = len(X)
    if n <= max_train:
        run = lookalike.run_lookalike(X, mask, holdout=holdout, n_folds=n_folds, seed=seed)
        return LookalikeFit(s, data.segment_names()[s], mask, run.hold, run.raw, run.proba)
    sub = np.sort(np.random.default_rng(seed).choice(n, size=max_train, replace=False))
    if mask[sub].sum() < max(2 * n_folds, 10):
        raise ValueError(f"segment {s} has only {int(mask[sub].sum())} members in the training sample of "
                         f"{max_train} users; raise max_train")
    run = lookalike.run_lookalike(X.iloc[sub], mask[sub], holdout=holdout, n_folds=n_folds, refit=True,
                                  seed=seed)
    raw, proba, hold = np.empty(n), np.empty(n), np.zeros(n, bool)
    rest = np.setdiff1d(np.arange(n), sub)
    raw[sub], proba[sub], hold[sub] = run.raw, run.proba, run.hold
    raw[rest] = run.model.predict_raw(X.iloc[rest])
    proba[rest] = run.model.predict_proba(X.iloc[rest])
    return LookalikeFit(s, data.segment_names()[s], mask, hold, raw, proba)


def check_size(data: ExplorerData, segment: Any, size: Any) -> int:
    """``size`` as an int between 1 and the number of users outside ``segment``, else a ValueError."""
    s = check_segment(data, segment)
    try:
        n = int(str(size).strip())
    except ValueError:
        raise ValueError(f"size must be an integer number of users, got {str(size)[:40]!r}") from None
    pool = int((data.panel["segment"] != s).sum())
    if not 1 <= n <= pool:
        raise ValueError(f"size must be between 1 and {pool} (the users outside segment {s}), got {n}")
    return n


def lookalike_members(fit: LookalikeFit, size: int) -> np.ndarray:
    """Row positions of the ``size`` best-ranked users outside the seed segment (ties: first rows win):
    the selector's rule (:func:`helpers.audience.explorer_members`)."""
    from ..audience import explorer_members

    n = int(size)
    if not 1 <= n <= fit.max_size:
        raise ValueError(f"size must be between 1 and {fit.max_size} (the users outside the seed), got {n}")
    return explorer_members(fit.raw, fit.pool, n)


def stage_lookalike_rows(data: ExplorerData, top: int) -> tuple[np.ndarray, str, dict]:
    """The lookalike stage's audience (``lookalike_scores`` of notebook 08, through
    :func:`helpers.audience.select`): row positions of its ``top`` best-ranked candidates, its name and
    definition. Raises :class:`helpers.artifacts.MissingArtifact` naming notebook 08 when it has not run."""
    from .. import audience as audience_mod

    if data.lookalike_scores is None:
        raise artifacts.MissingArtifact(
            f"the lookalike stage has not run: {artifacts.LOOKALIKE_SCORES} is written by notebook "
            f"08_lookalike_activation (`{MAKE_TARGET}`)")
    aud = audience_mod.select(None, "lookalike", frame=data.panel, scores=data.lookalike_scores, top=int(top),
                              config=data.cfg, id_col="user_id")
    pos = pd.Series(np.arange(len(data.panel)), index=data.panel["user_id"].astype(str))
    rows = pos.reindex(aud.ids).dropna().astype(int).to_numpy()
    seed = (str(data.lookalike_scores["audience"].iloc[0]) if "audience" in data.lookalike_scores
            else "the lookalike stage's seed")
    return rows, f"{len(rows):,} lookalikes of {seed} (lookalike stage)", aud


def heldout_lift(fit: LookalikeFit, size: int) -> float:
    """Lift of the top ``size`` candidates at finding the hidden seed members.

    Candidates are the non-training users (everybody outside the seed plus the hidden members); the lift
    is the hidden members' rate among the ``size`` top-ranked candidates over their rate among all
    candidates (1 = no better than a random draw).
    """
    cand = ~(fit.seed & ~fit.hold)  # seed members outside a training sample are seed & ~hold: excluded
    share = min(1.0, size / cand.sum())
    return float(lookalike.lift_at(fit.hold[cand], fit.raw[cand], share))


def profile_comparison(panel: pd.DataFrame, seed_rows: np.ndarray, audience_rows: np.ndarray,
                       features: Sequence[str] = tuple(MAP_FEATURES)) -> list[dict]:
    """Weighted means of the map features in the seed, the lookalike audience and the whole panel."""
    w = panel["weight"].to_numpy(float)
    out = []
    for c in features:
        v = pd.to_numeric(panel[c], errors="coerce").astype(float).to_numpy()
        base = weighted_mean_sd(v, w)[0]
        sm = weighted_mean_sd(v[seed_rows], w[seed_rows])[0]
        lm = weighted_mean_sd(v[audience_rows], w[audience_rows])[0]
        out.append({"feature": c, "label": LABELS.get(c, c.replace("_", " ")), "unit": MAP_FEATURES.get(c, ""),
                    "seed": sm, "lookalike": lm, "base": base,
                    "seed_index": 100 * sm / base if base else None,
                    "lookalike_index": 100 * lm / base if base else None})
    return out


def lookalike_payload(data: ExplorerData, fit: LookalikeFit, size: Any) -> dict:
    """Payload of the lookalike view: audience size, held-out lift, segment mix and profile comparison."""
    rows = lookalike_members(fit, check_size(data, fit.segment, size))
    n = len(rows)
    aud = np.zeros(len(fit.seed), bool)
    aud[rows] = True
    mix = data.panel.loc[aud, "segment_name"].value_counts(normalize=True)
    return jsonable({
        "segment": fit.segment, "seed_name": fit.seed_name, "seed_size": int(fit.seed.sum()),
        "size": n, "max_size": fit.max_size,
        "weighted_size": float(data.panel.loc[aud, "weight"].sum()),
        "lift": heldout_lift(fit, n),
        "mean_score": float(fit.proba[rows].mean()),
        "segment_mix": [{"segment_name": k, "share": v} for k, v in mix.items()],
        "profile": [{**r, "label": label_of(data, r["feature"]).lower()}
                    for r in profile_comparison(data.panel, fit.seed, aud, features=map_features(data))],
        "method": "positive-unlabelled propensity model (helpers.lookalike, gradient boosting, out-of-fold "
                  "scores); lift measured on 30% of the seed hidden from training",
    })


def audience_frame(data: ExplorerData, kind: str, segment: Any, fit: LookalikeFit | None = None,
                   size: Any = None) -> tuple[pd.DataFrame, str]:
    """The list an export takes and its definition, built as the command line builds it.

    ``kind="segment"``: :func:`helpers.export.segment_audience` on ``segments.parquet`` (score = posterior
    probability, plus ``churn_prob_90d`` when the churn stage ran), exactly as ``audience-export
    --segment``. ``kind="lookalike"``: the ``size`` best-ranked users outside the seed segment with
    ``segment_name`` "<seed> lookalike", ``score`` (calibrated ``P(labelled | x)``), plain-language
    ``reason_codes`` (1st- and 2nd-party traits only) and ``churn_prob_90d`` when available.
    """
    from .. import export as export_mod

    s = check_segment(data, segment)
    churn = data.churn_risk if data.churn_risk is not None and "churn_prob_90d" in data.churn_risk else None
    if kind == "segment":
        segs = data.segments if data.segments is not None else data.panel[["user_id", "segment", "segment_name"]]
        return export_mod.segment_audience(segs, s, churn)
    if kind == "lookalike":
        if fit is None or fit.segment != s:
            raise ValueError("a lookalike export needs the lookalike model of the same seed segment "
                             "(fit_lookalike)")
        rows = lookalike_members(fit, check_size(data, s, size))
        mask = np.zeros(len(fit.seed), bool)
        mask[rows] = True
        reasons = lookalike.reason_codes(data.features(), fit.seed, rows=mask)
        aud = pd.DataFrame({"user_id": data.panel["user_id"].to_numpy()[mask],
                            "segment_name": f"{fit.seed_name} lookalike", "score": fit.proba[mask],
                            "reason_codes": reasons.to_numpy()})
        if churn is not None:
            p = aud["user_id"].map(churn.set_index(churn["user_id"].astype(str))["churn_prob_90d"])
            if p.notna().all():
                aud["churn_prob_90d"] = p.astype(float).to_numpy()
        definition = (f"top {len(aud)} users outside segment {s} ({fit.seed_name}) by lookalike propensity to "
                      f"its members (helpers.lookalike PU model; score = calibrated P(labelled | x))")
        return aud, definition
    raise ValueError(f"kind must be 'segment' or 'lookalike', got {str(kind)[:40]!r}")


def overview(data: ExplorerData) -> dict:
    """Run-level facts for the page header: users, segments, which optional artifacts exist, metrics."""
    return jsonable({"n_users": len(data.panel), "n_segments": len(data.segment_ids),
                     "weighted": bool((data.panel["weight"] != 1.0).any()),
                     "has_churn": data.churn_risk is not None or data.segment_value is not None,
                     "has_lookalike_scores": data.lookalike_scores is not None,
                     "data_dir": str(data.paths.data), "metrics": data.metrics})


# --- export --------------------------------------------------------------------------------------
def export_name(label: str) -> str:
    """A file stem the export function accepts, from a segment name (``"Podcast-heavy commuters"`` ->
    ``"podcast-heavy_commuters"``)."""
    stem = re.sub(r"[^a-z0-9_.-]+", "_", label.lower()).strip("_.-")[:90]
    return stem or "audience"


def export_list(data: ExplorerData, audience: pd.DataFrame, definition: str, out_dir: Path, name: str,
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


# --- plain language, first screen, relationships, comparison (issue 19) --------------------------
from ..stats import core as stats_core  # noqa: E402 - the one statistics core (tiers, intervals, tests)

#: Tier thresholds of the brief, from the statistics core (the one place they are defined).
TIER_LOW, TIER_HIGH = stats_core.TIER_LOW, stats_core.TIER_HIGH
Z95 = 1.959963984540054


def run_config(paths: Paths, config_path: Any = None) -> Any:
    """The run configuration whose labels the views use: ``config_path``, else the preset ingestion
    recorded (``ingest_meta.json``), else ``$AUDIENCE_CONFIG`` / the shipped default; None if unreadable."""
    from .. import config as cfgmod

    candidates = [config_path]
    meta = paths.processed / "ingest_meta.json"
    if config_path is None and meta.exists():
        try:
            name = json.loads(meta.read_text()).get("config")
        except (json.JSONDecodeError, AttributeError):
            name = None
        if isinstance(name, str) and name and name != "default":
            candidates.insert(0, name)
    for c in candidates:
        try:
            return cfgmod.load(c)
        except Exception:  # noqa: BLE001 - a recorded name that is not a preset: fall back
            continue
    return None


def label_of(data: "ExplorerData", col: str, unit: bool = False) -> str:
    """Plain label of a column from the run configuration (``cfg.label``); a tidy title otherwise."""
    cfg = getattr(data, "cfg", None)
    if cfg is not None:
        try:
            text = cfg.label(col, unit=unit)
        except Exception:  # noqa: BLE001
            text = None
        if text:
            return str(text)
    if col in LABELS:
        return LABELS[col].capitalize() + (f" ({MAP_FEATURES[col]})" if unit and col in MAP_FEATURES else "")
    return col.replace("_", " ").strip().capitalize()


def value_label(data: "ExplorerData", family: str, value: Any) -> str:
    """``"Children at home: yes"`` -- an attribute value with its family's plain label."""
    return f"{label_of(data, family)}: {str(value).replace('_', ' ')}"


def weighted_mean_ci(v: np.ndarray, w: np.ndarray) -> dict:
    """Weighted mean with a 95% linearised (ratio-estimator) interval and the unweighted / effective n."""
    v, w = np.asarray(v, float), np.asarray(w, float)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    v, w = v[ok], w[ok]
    if len(v) == 0:
        return {"value": None, "low": None, "high": None, "n": 0, "n_eff": 0.0}
    m = float(np.average(v, weights=w))
    se = float(np.sqrt(np.sum(w ** 2 * (v - m) ** 2)) / w.sum())
    return {"value": m, "low": m - Z95 * se, "high": m + Z95 * se, "n": int(len(v)),
            "n_eff": float(stats_core.kish_effective_n(w))}


def weighted_share_ci(member: np.ndarray, w: np.ndarray) -> dict:
    """Weighted share of ``member`` rows with a 95% logit interval (linearised standard error)."""
    y, w = np.asarray(member, float), np.asarray(w, float)
    p = float(np.sum(w * y) / np.sum(w))
    se = float(np.sqrt(np.sum(w ** 2 * (y - p) ** 2)) / np.sum(w))
    lo, hi = stats_core.logit_interval(np.array([p]), np.array([se]))
    return {"value": p, "low": float(lo[0]), "high": float(hi[0])}


def spend_metric(data: "ExplorerData") -> str | None:
    """The money metric of the run configuration (first of kind ``money``) present in the panel."""
    cfg = getattr(data, "cfg", None)
    for m in getattr(cfg, "metrics", None) or []:
        if getattr(m, "kind", None) == "money" and m.name in data.panel.columns:
            return m.name
    return "avg_monthly_spend" if "avg_monthly_spend" in data.panel.columns else None


def customer_value(data: "ExplorerData") -> pd.DataFrame | None:
    """The value stage's per-user customer value (``customer_value`` artifact), None when it has not run."""
    if getattr(data, "_cv", None) is None:
        try:
            cv = artifacts.load(data.paths, "customer_value", allow_stale=True)
        except Exception:  # noqa: BLE001 - absent or unreadable: the view says the stage has not run
            cv = False
        data._cv = cv
    return None if data._cv is False else data._cv


def value_summary(data: "ExplorerData", rows: np.ndarray) -> dict:
    """Value of an audience (rows of the panel): mean customer lifetime value where the value stage ran,
    else the mean of the run's money metric; with its interval, label and source."""
    p = data.panel
    w = p["weight"].to_numpy(float)
    cv = customer_value(data)
    if cv is not None and "clv" in cv.columns:
        idc = "user_id" if "user_id" in cv.columns else cv.columns[0]
        v = p["user_id"].map(cv.set_index(cv[idc].astype(str))["clv"]).astype(float).to_numpy()
        out = weighted_mean_ci(v[rows], w[rows])
        return {**out, "label": "Customer lifetime value", "unit": "USD", "source": "value stage (06b)"}
    m = spend_metric(data)
    if m is None:
        return {"value": None, "low": None, "high": None, "n": 0, "label": "Value",
                "unit": "", "source": "no value stage and no money metric in this run"}
    v = pd.to_numeric(p[m], errors="coerce").astype(float).to_numpy()
    cfg = getattr(data, "cfg", None)
    unit = cfg.unit(m) if cfg is not None else "USD/month"
    return {**weighted_mean_ci(v[rows], w[rows]), "label": label_of(data, m), "unit": unit or "",
            "source": "spend (the customer value stage has not run)"}


def churn_risk_summary(data: "ExplorerData", rows: np.ndarray) -> dict | None:
    """Mean 90-day churn probability of the audience's active members with its interval (None: no churn
    stage)."""
    cr = data.churn_risk
    if cr is None or "churn_prob_90d" not in cr.columns:
        return None
    p = data.panel
    risk = p["user_id"].map(cr.set_index(cr["user_id"].astype(str))["churn_prob_90d"]).astype(float).to_numpy()
    churned = np.zeros(len(p), bool)
    if "churned_in_last_90_days" in p:
        churned = p["churned_in_last_90_days"].astype("boolean").fillna(False).to_numpy(bool)
    sel = np.zeros(len(p), bool)
    sel[rows] = True
    sel &= ~churned
    return {**weighted_mean_ci(risk[sel], p["weight"].to_numpy(float)[sel]),
            "label": "Chance of leaving in the next 90 days", "unit": "share"}


def _trait_rows(data: "ExplorerData", t: pd.DataFrame) -> list[dict]:
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


def top_traits(data: "ExplorerData", segment: int, top: int = 3) -> list[dict]:
    """The segment's ``top`` most over-indexed reportable traits (significant after FDR, or descriptive
    clustering features), labelled in plain language."""
    a = _reportable(data.affinity)
    t = a[(a["segment"] == segment) & (a["index"] > 100)].sort_values("index", ascending=False)
    t = t.drop_duplicates(["family", "attribute"]).head(top)
    return _trait_rows(data, t)


def action_lines(data: "ExplorerData", segment: int, top: int = 3) -> list[dict]:
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


def segment_table(data: "ExplorerData") -> dict:
    """The first screen: per segment its weighted size and share (with interval), value, churn risk and
    top three defining traits with their index; plus the run's facts for the header."""
    p = data.panel
    w = p["weight"].to_numpy(float)
    seg = p["segment"].to_numpy()
    names = data.segment_names()
    rows = []
    for s in data.segment_ids:
        r = np.flatnonzero(seg == s)
        share = weighted_share_ci(seg == s, w)
        tot = float(w.sum())
        rows.append({"segment": s, "name": names[s], "n_users": int(len(r)),
                     "weighted_size": float(w[r].sum()),
                     "share": share, "size_low": share["low"] * tot, "size_high": share["high"] * tot,
                     "value": value_summary(data, r), "churn": churn_risk_summary(data, r),
                     "traits": top_traits(data, s), "actions": action_lines(data, s)})
    return jsonable({"segments": rows, "header": header_facts(data), "tiers": {"low": TIER_LOW, "high": TIER_HIGH}})


def header_facts(data: "ExplorerData") -> dict:
    """The data's date, source and base size for the page header (no filesystem path)."""
    meta_f = data.paths.processed / "ingest_meta.json"
    meta = {}
    if meta_f.exists():
        try:
            meta = json.loads(meta_f.read_text())
        except json.JSONDecodeError:
            meta = {}
    cfg = getattr(data, "cfg", None)
    date = meta.get("observation_date") or getattr(getattr(cfg, "dates", None), "observation_date", None)
    tp = data.paths.data / "truth" / "truth_params.json"
    if not date and tp.exists():
        try:
            date = json.loads(tp.read_text()).get("observation_date")
        except (json.JSONDecodeError, AttributeError):
            date = None
    truth = (data.paths.data / "truth" / "truth_params.json").exists()
    cfg_name = meta.get("config") or getattr(cfg, "name", None)
    if truth:
        source = "synthetic panel (generated, with planted truth)"
    elif cfg_name and cfg_name != "default":
        source = f"customer table ({str(cfg_name).replace('_', ' ')} configuration)"
    else:
        source = "customer table"
    weighted = bool((data.panel["weight"] != 1.0).any())
    return {"date": str(date)[:10] if date else None, "source": source, "n_users": int(len(data.panel)),
            "weighted_total": float(data.panel["weight"].sum()), "weighted": weighted,
            "n_segments": len(data.segment_ids), "has_lookalike_stage": data.lookalike_scores is not None,
            "weighting": "weighted to population margins" if weighted else "unweighted (every customer counts once)"}


def similarity(data: "ExplorerData") -> dict:
    """How alike segments behave: 100 x (1 - distance / largest distance) between the segments' average
    profiles on the standardised map features (100 = identical averages, 0 = the two most different),
    and each segment's closest segment."""
    cent = segment_centroids(data.panel, tuple(map_features(data)))
    C = cent.to_numpy(float)
    d = np.linalg.norm(C[:, None] - C[None], axis=2)
    dmax = d.max() if d.max() > 0 else 1.0
    sim = 100 * (1 - d / dmax)
    names = data.segment_names()
    ids = [int(s) for s in cent.index]
    closest = []
    for i, s in enumerate(ids):
        o = [j for j in np.argsort(d[i]) if j != i]
        closest.append({"segment": s, "name": names[s], "closest": ids[o[0]] if o else None,
                        "closest_name": names[ids[o[0]]] if o else None,
                        "similarity": float(sim[i, o[0]]) if o else None})
    return jsonable({"segments": ids, "names": [names[s] for s in ids], "similarity": sim, "closest": closest,
                     "features": [label_of(data, f) for f in cent.columns],
                     "method": "distance between the segments' average behaviour (standardised), as 0-100"})


def comparison_indicators(data: "ExplorerData") -> tuple[pd.DataFrame, dict]:
    """Every variable two audiences are compared on: the behavioural metrics (means) and a 0/1 indicator
    per attribute value of the families the affinity table profiles; with plain labels."""
    from ..affinity import attribute_indicators

    p = data.panel
    cfg = getattr(data, "cfg", None)
    metrics = [m for m in (getattr(cfg, "metric_names", None) or list(MAP_FEATURES)) if m in p.columns]
    for m in MAP_FEATURES:
        if m in p.columns and m not in metrics:
            metrics.append(m)
    a = data.affinity
    fams = [f for f in pd.unique(a.loc[a["index_type"] == "share", "family"]) if f in p.columns]
    blocks = [p[metrics].apply(pd.to_numeric, errors="coerce").astype(float)] if metrics else []
    labels = {m: label_of(data, m, unit=True) for m in metrics}
    if fams:
        ind, meta = attribute_indicators(p, fams)
        blocks.append(ind)
        labels.update({c: value_label(data, meta.at[c, "family"], meta.at[c, "attribute"]) for c in ind.columns})
    X = pd.concat(blocks, axis=1) if blocks else pd.DataFrame(index=p.index)
    return X, labels


def compare(data: "ExplorerData", rows_a: np.ndarray, name_a: str, rows_b: np.ndarray, name_b: str,
            top: int = 12) -> dict:
    """Side-by-side comparison of two audiences (row positions of the panel): weighted size, value, churn
    risk, and every metric and attribute value on which they differ significantly (two-sample linearised
    test of the statistics core, FDR across all variables), largest differences first."""
    rows_a, rows_b = np.asarray(rows_a, int), np.asarray(rows_b, int)
    if len(rows_a) == 0 or len(rows_b) == 0:
        raise ValueError("both audiences need at least one member")
    X, labels = comparison_indicators(data)
    w = data.panel["weight"].to_numpy(float)
    stacked = pd.concat([X.iloc[rows_a], X.iloc[rows_b]], ignore_index=True)
    in_a = np.r_[np.ones(len(rows_a), bool), np.zeros(len(rows_b), bool)]
    prof = stats_core.profile(stacked, in_a, np.r_[w[rows_a], w[rows_b]])
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
    side = lambda rows, name: {"name": name, "n_users": int(len(rows)),  # noqa: E731
                               "weighted_size": float(w[rows].sum()),
                               "value": value_summary(data, rows), "churn": churn_risk_summary(data, rows)}
    overlap = int(len(np.intersect1d(rows_a, rows_b)))
    return jsonable({"a": side(rows_a, name_a), "b": side(rows_b, name_b), "differences": diffs,
                     "n_tested": int(len(prof)), "n_significant": int(prof["significant"].sum()),
                     "overlap": overlap,
                     "method": "weighted two-sample test of every variable, false-discovery rate 5% over all "
                               "of them (helpers.stats.core); shares in %"})


def _fmt_val(v: float, kind: str) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{100 * v:.0f}%" if kind == "share" else f"{v:,.1f}"


def audience_profile(data: "ExplorerData", rows: np.ndarray, name: str, top: int = 5) -> dict:
    """Any audience (a segment, lookalikes, an uploaded list) against all customers: weighted size and
    share with interval, value, churn risk, and its most over- and under-represented traits (statistics
    core: weighted index with interval, FDR), each as an action line by the brief's tiers."""
    rows = np.asarray(rows, int)
    p = data.panel
    w = p["weight"].to_numpy(float)
    mask = np.zeros(len(p), bool)
    mask[rows] = True
    X, labels = comparison_indicators(data)
    prof = stats_core.profile(X, mask, w)
    prof["label"] = prof["column"].map(labels)
    ok = prof[prof["significant"] & prof["base_flag"].ne("suppressed") & prof["index"].notna()]
    over = ok[ok["index"] > TIER_HIGH].sort_values("index", ascending=False).head(top)
    under = ok[ok["index"] < TIER_LOW].sort_values("index").head(top)
    def line(r, side):
        verb = (("concentrate spend here" if side == "concentrate" else "de-prioritise") if r["kind"] != "share"
                else ("over-represented: target it" if side == "concentrate" else "under-represented: de-prioritise"))
        return {"label": r["label"], "index": r["index"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "action": side, "text": f"{r['label']}: index {r['index']:.0f} \u2014 {verb}"}

    lines = [line(r, "concentrate") for _, r in over.iterrows()] + [line(r, "de-prioritise") for _, r in under.iterrows()]
    mix = p.loc[mask].groupby("segment_name")["weight"].sum()
    mix = (mix / mix.sum()).sort_values(ascending=False)
    return jsonable({"name": name, "n_users": int(mask.sum()), "weighted_size": float(w[mask].sum()),
                     "share": weighted_share_ci(mask, w), "value": value_summary(data, rows),
                     "churn": churn_risk_summary(data, rows), "actions": lines,
                     "segment_mix": [{"name": k, "share": v} for k, v in mix.items()],
                     "tiers": {"low": TIER_LOW, "high": TIER_HIGH}})


def stale_artifacts(paths: Paths) -> list[dict]:
    """Artifacts of the run that are missing or stale, with the notebook and make target that (re)make them
    (:func:`helpers.artifacts.status`)."""
    try:
        st = artifacts.status(paths)
    except Exception:  # noqa: BLE001 - an unreadable run state: nothing more to say than the missing files
        return []
    st = st[st["stale"]]
    return [{"file": r["file"], "reason": r["reason"], "producer": r["producer"], "make": r["make"]}
            for _, r in st.iterrows()]


# --- questions view (audiences from text, issue 18) ------------------------------------------------
QUESTION_FILTERS = ("age_group", "gender", "state", "income_bracket", "education_level")


def text_posts(data: ExplorerData) -> pd.DataFrame | None:
    """The run's posts with their topic when the text stage labelled them (``post_topics``), else None."""
    if getattr(data, "_posts", None) is None:
        try:
            from ..text import audiences as text_aud
        except ImportError:
            data._posts = False
            return None
        posts = None
        try:
            topics = artifacts.load(data.paths, "post_topics", allow_stale=True)
            posts = topics if "text" in topics.columns else None
            if posts is None:
                raw = text_aud.load_posts(data.paths)
                if raw is not None and "post_id" in raw and "post_id" in topics:
                    posts = raw.merge(topics[["post_id", "topic"]], on="post_id", how="left")
                elif raw is not None and len(raw) == len(topics):
                    posts = raw.assign(topic=topics["topic"].to_numpy())
                else:
                    posts = raw
        except Exception:  # noqa: BLE001 - no topics: keywords only
            posts = text_aud.load_posts(data.paths)
        if posts is not None:
            posts = posts.copy()
            posts["user_id"] = posts["user_id"].astype(str)
        data._posts = False if posts is None else posts
    return None if data._posts is False else data._posts


def question_options(data: ExplorerData) -> dict:
    """What the questions view can ask: the topics of the run's posts and the filter values."""
    posts = text_posts(data)
    if posts is None:
        raise artifacts.MissingArtifact(
            "the text-signals stage has not run for this data: no posts (processed/posts.parquet from "
            f"01_ingest, topics from 07b_text_signals; `{MAKE_TARGET}`)")
    topics = sorted(map(str, pd.unique(posts["topic"].dropna()))) if "topic" in posts else []
    filters = {c: {"label": label_of(data, c), "values": sorted(map(str, pd.unique(data.panel[c].dropna())))}
               for c in QUESTION_FILTERS if c in data.panel.columns}
    plats = sorted(map(str, pd.unique(posts["platform"].dropna()))) if "platform" in posts else []
    return jsonable({"topics": [{"value": t, "label": t.replace("_", " ")} for t in topics],
                     "platforms": plats, "filters": filters})


def question_audience(data: ExplorerData, topic: str | None = None, keyword: str | None = None,
                      platform: str | None = None, filters: dict | None = None) -> tuple[np.ndarray, str, dict]:
    """"Customers talking about X" (helpers.text.audiences.talking_about) among the customers matching
    ``filters`` (column -> value): row positions of the panel, a plain name and its definition."""
    from ..text import audiences as text_aud

    posts = text_posts(data)
    if posts is None:
        question_options(data)  # raises the stage-has-not-run error
    if not topic and not keyword:
        raise ValueError("pick a topic or type a keyword")
    if topic and "topic" not in posts:
        raise ValueError("this run's posts have no topics (the text stage labels them); search a keyword")
    if topic and topic not in set(posts["topic"].astype(str)):
        raise ValueError(f"unknown topic {str(topic)[:40]!r}")
    ta = text_aud.talking_about(posts, topic=topic or None, keyword=keyword or None, platform=platform or None)
    mask = data.panel["user_id"].isin(set(ta.ids.astype(str))).to_numpy()
    for col, val in (filters or {}).items():
        if col not in QUESTION_FILTERS or col not in data.panel.columns:
            raise ValueError(f"unknown filter {str(col)[:40]!r}; filters: {[c for c in QUESTION_FILTERS if c in data.panel]}")
        mask &= (data.panel[col].astype(str) == str(val)).to_numpy()
    what = " and ".join(x for x in ((topic or "").replace("_", " "), f'"{keyword}"' if keyword else "") if x)
    where = ", ".join(f"{label_of(data, c).lower()} {v}" for c, v in (filters or {}).items())
    name = f"talking about {what}" + (f" ({where})" if where else "")
    return np.flatnonzero(mask), name, {**ta.definition, "filters": dict(filters or {})}


def regions(data: ExplorerData, rows: np.ndarray, column: str = "state", top: int = 12) -> list[dict]:
    """Share of each region's customers in the audience (weighted, 95% logit interval) with the region's
    customer count, largest shares first."""
    p = data.panel
    if column not in p.columns:
        return []
    w = p["weight"].to_numpy(float)
    member = np.zeros(len(p), bool)
    member[rows] = True
    out = []
    for reg, idx in p.groupby(p[column].astype(str)).indices.items():
        if len(idx) < 20:  # base-size rule: too few customers to report a share
            continue
        sh = weighted_share_ci(member[idx], w[idx])
        out.append({"region": reg, "n_customers": int(len(idx)), **sh})
    return sorted(out, key=lambda r: -r["value"])[:top]
