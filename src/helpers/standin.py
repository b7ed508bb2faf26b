"""Stand-in runs built from planted truth, for tests and demos that need later stages without running them.

:func:`write_standin_run` is the one builder (the tests' warehouse fixture, the engine parity test and the
Explorer's demo all call it): it writes, through :mod:`helpers.artifacts`, the unified table (as ingestion
writes it), optionally the DuckDB warehouse and the planted truth, design weights (inverse inclusion
probability, what raking on age should recover) and the planted segments (optionally with a share of members
moved to another segment, as an imperfect segmentation would), and returns the :class:`helpers.panel.Panel`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import artifacts
from .generate import INCLUSION_BY_AGE, SyntheticPanel
from .panel import Panel
from .paths import Paths


def mislabel(segment: np.ndarray, share: float, k: int, seed: int = 0) -> np.ndarray:
    """Move a random ``share`` of users to a uniformly chosen *other* segment (simulated segmentation error)."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    if k < 2 and share > 0:
        raise ValueError("mislabelling needs at least 2 segments")
    rng = np.random.default_rng(seed)
    out = np.asarray(segment).astype(np.int64).copy()
    move = rng.random(len(out)) < share
    out[move] = (out[move] + rng.integers(1, k, int(move.sum()))) % k
    return out


def design_weights(age_group: pd.Series) -> np.ndarray:
    """Inverse inclusion probability by age group (the generator's selection model)."""
    from . import schema as S

    age = age_group.astype(str).map({a: i for i, a in enumerate(S.AGE_GROUPS)}).to_numpy()
    return 1.0 / INCLUSION_BY_AGE[age.astype(int)]


def write_standin_run(paths: Paths, panel: SyntheticPanel, *, unified: bool = True, warehouse: bool = False,
                      truth: bool = False, weights: bool = True, segments: bool = True,
                      mislabel_share: float = 0.0, seed: int = 0) -> Panel:
    """Write a stand-in run of ``panel`` into ``paths`` and return its :class:`~helpers.panel.Panel` (loaded).

    Parameters
    ----------
    unified : write the unified table; False keeps the one already there (e.g. written by notebook 01, in
        which case weights and segments cover its users, quarantined ones excluded).
    warehouse : also write ``audience.duckdb`` (table ``audience``) as ingestion does.
    truth : also write the planted truth (``users_truth.parquet``, ``truth_params.json``).
    weights : write design weights (inverse inclusion by age); False writes none (every weight 1).
    segments : write the planted segments as ``segments.parquet`` (one-hot membership probabilities).
    mislabel_share, seed : share of users moved to another segment, and the seed of that draw.
    """
    from .segment import segments_frame

    P = paths.ensure()
    if unified:
        artifacts.save(P, "unified", panel.data)
    if truth:
        artifacts.save(P, "users_truth", panel.truth)
        artifacts.save(P, "truth_params", panel.params)
    users = artifacts.load(P, "unified", columns=["user_id", "age_group"])
    if warehouse:
        from . import engine as E

        E.write_warehouse(artifacts.REGISTRY["warehouse"].path(P), {"audience": artifacts.REGISTRY["unified"].path(P)})
    if weights:
        artifacts.save(P, "weights", pd.DataFrame({"user_id": users["user_id"],
                                                   "weight": design_weights(users["age_group"])}))
    if segments:
        t = panel.truth.set_index(panel.data["user_id"].astype(str))
        k = int(panel.params["n_segments"])
        seg = mislabel(t.loc[users["user_id"].astype(str), "true_segment"].to_numpy(), mislabel_share, k, seed)
        artifacts.save(P, "segments", segments_frame(users["user_id"], np.eye(k)[seg],
                                                     panel.params["segment_names"]))
    return Panel.load(P)

