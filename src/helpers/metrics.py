"""Headline figures of every notebook in ``reports/metrics.json``, keyed by notebook file stem.

Each notebook's entry is a flat map of metric name to number or string, so two reruns can be diffed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

Scalar = int | float | str | bool | None


def _clean(name: str, value: object) -> Scalar:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return None
        return round(v, 10)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (int, str)) or value is None:
        return value
    raise TypeError(f"metric {name!r} must be a number or a string, got {type(value).__name__}")


def read(path: str | os.PathLike) -> dict:
    """The whole metrics file (empty dict if it does not exist yet)."""
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def record(path: str | os.PathLike, stem: str, metrics: Mapping[str, object]) -> dict:
    """Replace notebook ``stem``'s entry in the metrics file at ``path`` and return the entry.

    The file is rewritten atomically with sorted keys so that reruns diff cleanly.
    """
    entry = {k: _clean(k, v) for k, v in metrics.items()}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = read(p)
    data[stem] = dict(sorted(entry.items()))
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(dict(sorted(data.items())), f, indent=2)
        f.write("\n")
    os.replace(tmp, p)
    return entry
