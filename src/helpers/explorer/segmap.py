"""The segment map and segment similarity: segment centroids on the run's behavioural metrics, in two dimensions.

Each segment is a bubble sized by its weighted audience; its position is a 2-D principal-component
projection of the segment centroids on the standardised metrics of the run configuration (``log1p`` then
z-scored with the panel's weighted mean and SD, so heavy tails do not dominate). Axis titles say which
behaviour grows along each axis, with the configuration's labels, wrapped so that they fit the chart.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd

from ..stats import core as stats_core
from .codes import panel_cached
from .common import MAKE_TARGET, jsonable, label_of
from .loading import ExplorerData, _require_columns
from .wstats import weighted_mean_sd

#: Longest line of a map axis title, in characters: the map is about 420 px high and its 12 px title font
#: is about 7 px a character, so a rotated line of 40 characters fits the plot area between legend and title.
AXIS_LINE_CHARS = 40
#: Longest line of the horizontal axis title (the map is about 750 px wide).
X_AXIS_LINE_CHARS = 90
SIDES_SEP = "   |   "


def standardised_features(panel: pd.DataFrame, features: Sequence[str], log: bool = True) -> pd.DataFrame:
    """Features as ``log1p`` (when ``log``) and z-scored with the panel's weighted mean and SD."""
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


def segment_centroids(panel: pd.DataFrame, features: Sequence[str], log: bool = True) -> pd.DataFrame:
    """Weighted centroid of every segment on the standardised features (rows: segments, ascending): each
    segment's weighted mean from the statistics core's per-group sufficient statistics."""
    z = standardised_features(panel, features, log)
    w = panel["weight"].to_numpy(float)
    codes, labels = stats_core.check_codes(panel["segment"].to_numpy())
    out = {}
    for c in features:
        mom = stats_core.moments(z[c].to_numpy(float), codes, w, len(labels))
        out[c] = (mom["ty"] / mom["t"]).to_numpy()
    return pd.DataFrame(out, index=pd.Index(labels, name="segment"))


def _centroids(data: ExplorerData, features: Sequence[str], log: bool) -> pd.DataFrame:
    """:func:`segment_centroids` of the panel, computed once per feature list (the map and the similarity
    view both ask)."""
    return panel_cached(data, ("centroids", tuple(features), bool(log)),
                        lambda: segment_centroids(data.panel, list(features), log))


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


def axis_sides(loading: np.ndarray, labels: Sequence[str]) -> tuple[str, str]:
    """The behaviours that push a segment to the negative and to the positive side of a map axis
    (the two largest loadings of each sign, at least half the largest), e.g. ``("social media time",
    "podcast listening time and monthly spend")``."""
    a = np.abs(loading)
    big = a >= 0.5 * a.max() if a.max() > 0 else np.zeros(len(loading), bool)

    def side(sign: int) -> str:
        idx = [j for j in np.argsort(-a) if big[j] and np.sign(loading[j]) == sign][:2]
        return " and ".join(labels[j] for j in idx)

    return side(-1), side(1)


def axis_title_lines(neg: str, pos: str, width: int = AXIS_LINE_CHARS) -> list[str]:
    """The axis title as lines of at most ``width`` characters: ``"<- more X   |   more Y ->"`` when it fits
    on one line, else ``"<- more X"`` then ``"more Y ->"`` (each wrapped at words), so that a title never runs
    past the chart."""
    parts = ([f"\u2190 more {neg}"] if neg else []) + ([f"more {pos} \u2192"] if pos else [])
    if not parts:
        return ["no difference between segments"]
    one = SIDES_SEP.join(parts)
    if len(one) <= width:
        return [one]
    return [line for p in parts for line in textwrap.wrap(p, width, break_long_words=True)]


def segment_sizes(panel: pd.DataFrame) -> pd.DataFrame:
    """Unweighted and weighted size and weighted share of every segment."""
    g = panel.groupby("segment")
    out = pd.DataFrame({"segment_name": g["segment_name"].first(), "n_users": g.size(),
                        "weighted_size": g["weight"].sum()})
    out["weighted_share"] = out["weighted_size"] / out["weighted_size"].sum()
    return out.sort_index()


def map_features(data: ExplorerData) -> list[str]:
    """Behavioural metrics of the run configuration present in the panel."""
    names = [m for m in (getattr(data.cfg, "metric_names", None) or []) if m in data.panel.columns]
    if not names:
        raise ValueError("the panel has none of the run configuration's behavioural metrics; re-create it "
                         f"with `{MAKE_TARGET}`")
    return names


def segment_map(data: ExplorerData, features: Sequence[str] | None = None, log: bool = True) -> dict:
    """Payload of the segment map: one bubble per segment and the meaning of the two axes.

    Bubble area is the weighted audience; position is :func:`pca_2d` of :func:`segment_centroids`
    (weighted by segment share). ``x_label`` / ``y_label`` are the axis titles as one line,
    ``x_label_lines`` / ``y_label_lines`` the same wrapped to fit the chart.
    """
    features = list(features or map_features(data))
    sizes = segment_sizes(data.panel)
    cent = _centroids(data, features, log)
    coords, explained, load = pca_2d(cent, sizes["weighted_share"].to_numpy())
    labels = [label_of(data, c).lower() for c in features]
    bubbles = [{"segment": int(s), "name": sizes.at[s, "segment_name"], "n_users": int(sizes.at[s, "n_users"]),
                "weighted_size": float(sizes.at[s, "weighted_size"]),
                "weighted_share": float(sizes.at[s, "weighted_share"]),
                "x": float(coords[i, 0]), "y": float(coords[i, 1]),
                "centroid": {f: float(cent.at[s, f]) for f in features}}
               for i, s in enumerate(cent.index)]
    axes = {}
    for name, i, width in (("x", 0, X_AXIS_LINE_CHARS), ("y", 1, AXIS_LINE_CHARS)):
        neg, pos = axis_sides(load[i], labels)
        axes[f"{name}_label"] = axis_title_lines(neg, pos, 10 ** 6)[0]
        axes[f"{name}_label_lines"] = axis_title_lines(neg, pos, width)
    return jsonable({
        "segments": bubbles,
        "features": list(features),
        "transform": "log1p, then z-score with the panel's weighted mean and SD" if log else "z-score",
        "explained": explained,
        "loadings": {f: load[:, j] for j, f in enumerate(features)},
        **axes,
        "feature_labels": [label_of(data, f) for f in features],
        "n_users": int(len(data.panel)),
        "weighted_total": float(data.panel["weight"].sum()),
    })


def similarity(data: ExplorerData) -> dict:
    """How alike segments behave: 100 x (1 - distance / largest distance) between the segments' average
    profiles on the standardised map features (100 = identical averages, 0 = the two most different),
    and each segment's closest segment."""
    cent = _centroids(data, map_features(data), True)
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
