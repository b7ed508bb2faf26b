"""Shared steps of the segmentation benchmarks (``bench_segment.py``, ``bench_hier.py``): build the default
features of a synthetic panel, and print / save one JSON record. Not a benchmark itself (``benchmark.py``
runs only ``bench_*.py``)."""

from __future__ import annotations

import json
import resource
import time

import numpy as np

from helpers.features import FeatureBuilder
from helpers.generate import generate_panel


def synthetic_features(n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(X, true segments, generation seconds, feature seconds)`` of a default panel; the panel is dropped."""
    t0 = time.perf_counter()
    panel = generate_panel(n_users, seed=seed)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    X = FeatureBuilder(random_state=seed).fit_transform(panel.data)
    return X, panel.truth["true_segment"].to_numpy(), t_gen, time.perf_counter() - t0


def time_best(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds) and the last call's result."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(record: dict, out: str | None) -> None:
    """Print the record as JSON and, when ``out`` is given, write it there too."""
    text = json.dumps(record, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
