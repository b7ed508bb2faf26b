"""Shared pieces of the Explorer's views: the run configuration's labels, segment checks and JSON conversion."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts
from ..paths import Paths
from ..stats import core as stats_core

#: Make target that (re)creates every artifact the app reads (the registry's).
MAKE_TARGET = artifacts.MAKE_TARGET
#: Tier thresholds of the brief, from the statistics core (the one place they are defined).
TIER_LOW, TIER_HIGH = stats_core.TIER_LOW, stats_core.TIER_HIGH
#: The pseudo-family of the heatmap that shows the behavioural metrics.
CHANNELS = "channels"
CHANNEL_INDEX_TYPES = ("intensity", "composition")


class UnknownSegment(LookupError):
    """The requested segment label does not exist in this run's segmentation."""


def producer(name: str) -> str:
    """The notebook that writes registered artifact ``name`` (the registry is the one place it is named)."""
    return artifacts.REGISTRY[name].producer


def file_name(name: str) -> str:
    """The file name (without folder) of registered artifact ``name``."""
    return artifacts.REGISTRY[name].file.rsplit("/", 1)[-1]


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


def check_segment(data: Any, segment: Any) -> int:
    """``segment`` as an int label present in the data, else a ValueError naming the valid labels."""
    try:
        s = int(str(segment).strip())
    except ValueError:
        raise ValueError(f"segment must be an integer label, got {str(segment)[:40]!r}; valid: "
                         f"{data.segment_ids}") from None
    if s not in data.segment_ids:
        raise UnknownSegment(f"unknown segment {s}; valid segments: {data.segment_ids}")
    return s


def run_config(paths: Paths, config_path: Any = None) -> Any:
    """The run configuration whose labels the views use: ``config_path``, else the preset ingestion
    recorded (``ingest_meta``), else ``$AUDIENCE_CONFIG`` / the shipped default."""
    from .. import config as cfgmod

    if config_path is not None:
        return cfgmod.load(config_path)  # a configuration the user named must load: its error is the answer
    meta = ingest_meta(paths)
    name = meta.get("config")
    if isinstance(name, str) and name and name != "default":
        try:
            return cfgmod.load(name)
        except (cfgmod.ConfigError, OSError):  # a recorded path that moved: the default configuration's labels
            pass
    return cfgmod.load(None)


def ingest_meta(paths: Paths) -> dict:
    """What ingestion recorded (``ingest_meta`` artifact), or an empty dict when it recorded nothing."""
    if not artifacts.exists(paths, "ingest_meta"):
        return {}
    try:
        meta = artifacts.load(paths, "ingest_meta", allow_stale=True)
    except (json.JSONDecodeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def label_of(data: Any, col: str, unit: bool = False) -> str:
    """Plain label of a column from the run configuration (``cfg.label``)."""
    from ..config import tidy_title

    cfg = getattr(data, "cfg", None)
    return str(cfg.label(col, unit=unit)) if cfg is not None else tidy_title(col)


def unit_of(data: Any, col: str) -> str:
    """The unit of a column from the run configuration ('' when it declares none)."""
    cfg = getattr(data, "cfg", None)
    return (cfg.unit(col) if cfg is not None else "") or ""


def value_label(data: Any, family: str, value: Any) -> str:
    """``"Children at home: yes"`` -- an attribute value with its family's plain label."""
    return f"{label_of(data, family)}: {str(value).replace('_', ' ')}"
