"""The panel: the unified table joined with its survey weight and segment, in one place.

Every stage that needs "users with their weight (and segment)" reads :class:`Panel` instead of joining the
artifacts itself, as pandas (:meth:`Panel.load` -> ``.frame``) or as an Ibis table on any engine
(:meth:`Panel.ibis`). Weights are 1.0 when the weighting stage wrote none (``weights_used`` says which).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import artifacts
from .paths import Paths


class Panel:
    """The unified table + ``weight`` (+ ``segment``, ``segment_name`` when a segmentation exists).

    ``Panel.load(P)`` reads it as pandas; ``Panel.open(P)`` defers reading so that ``.ibis(con)`` can run
    the same join on an engine without loading the table into memory.

    Attributes
    ----------
    frame : pandas DataFrame, one row per user of the unified table (read on first access).
    weights_used : True when the weights come from the weighting stage, False when every weight is 1.0.
    segments_used : True when ``segment``/``segment_name`` come from the segmentation stage.
    """

    def __init__(self, paths: Paths, segments: bool = True) -> None:
        self.paths = paths
        self.id = artifacts.id_column(paths)  # the run's identifier column (``user_id`` in the dictionary)
        self.weights_used = artifacts.exists(paths, "weights")
        self.segments_used = bool(segments) and artifacts.exists(paths, "segments")
        self._frame: pd.DataFrame | None = None

    @classmethod
    def open(cls, paths: Paths, segments: bool = True) -> "Panel":
        """The run's panel, not read yet (``.frame`` or ``.ibis(con)`` read it)."""
        return cls(paths, segments)

    @classmethod
    def load(cls, paths: Paths, segments: bool = True) -> "Panel":
        """Read the run's panel as pandas. ``segments=False`` leaves segment columns out even when they exist.

        Raises :class:`helpers.artifacts.MissingArtifact` when the unified table is absent and
        :class:`helpers.artifacts.StaleArtifact` when weights or segments belong to an older run.
        """
        self = cls(paths, segments)
        self.frame  # noqa: B018 - read now
        return self

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._read()
        return self._frame

    def _read(self) -> pd.DataFrame:
        paths = self.paths
        df = artifacts.load_unified(paths)
        uid = df[artifacts.key_column(df, paths)].astype(str)
        if self.weights_used:
            w = artifacts.load(paths, "weights")
            w = w.set_index(w[artifacts.key_column(w, paths)].astype(str))["weight"]
            df["weight"] = _align(uid, w).fillna(1.0).astype(float).to_numpy()
        else:
            df["weight"] = 1.0
        if self.segments_used:
            s = artifacts.load(paths, "segments")
            s = s.set_index(s[artifacts.key_column(s, paths)].astype(str))
            seg = _align(uid, s["segment"])
            df["segment"] = seg.astype("int64").to_numpy() if seg.notna().all() else seg.to_numpy()
            df["segment_name"] = _align(uid, s["segment_name"].astype(str)).to_numpy()
        return df

    @property
    def weights(self) -> pd.Series:
        """The weights indexed by the identifier column."""
        return self.frame.set_index(artifacts.key_column(self.frame, self.paths))["weight"]

    def describe_weights(self) -> str:
        """One sentence a notebook prints about the weights it uses."""
        if self.weights_used:
            return f"survey weights from {artifacts.REGISTRY['weights'].producer} (raked to population margins)"
        return "no weights file: every user has weight 1 (results describe the customer base, not the population)"

    def ibis(self, con: Any) -> Any:
        """The same panel as an Ibis table on ``con`` (``helpers.engine.connect``): unified table left-joined
        with ``weight`` (1.0 where absent) and, if present, ``segment``/``segment_name``."""
        import ibis

        from . import engine as E

        paths = self.paths

        def path(name: str):
            return artifacts._check(paths, artifacts.artifact(name))

        def key(t) -> str:
            return self.id if self.id in t.columns else artifacts.ID

        panel = E.read_parquet(con, path("unified"))
        pid = panel[key(panel)].cast("string")
        if self.weights_used:
            w = E.read_parquet(con, path("weights"))
            w = w.select(uid_w_=w[key(w)].cast("string"), weight_w_=w["weight"].cast("float64"))
            panel = panel.left_join(w, pid == w["uid_w_"])
            panel = panel.mutate(weight=panel["weight_w_"].fill_null(1.0)).drop("uid_w_", "weight_w_")
        else:
            panel = panel.mutate(weight=ibis.literal(1.0))
        if self.segments_used:
            s = E.read_parquet(con, path("segments"))
            s = s.select(uid_s_=s[key(s)].cast("string"), segment=s["segment"], segment_name=s["segment_name"])
            panel = panel.left_join(s, panel[key(panel)].cast("string") == s["uid_s_"]).drop("uid_s_")
        return panel


def _align(uid: pd.Series, values: pd.Series) -> pd.Series:
    """``uid.map(values)``: the value of each identifier (NaN where absent). The stages write their outputs in
    the unified table's row order, so when the identifiers are the same, in the same order, the values are
    taken as they are (mapping 1M string identifiers through a hash index cost seconds per artifact)."""
    if len(values) == len(uid) and values.index.is_unique and (values.index.to_numpy() == uid.to_numpy()).all():
        return pd.Series(values.to_numpy(), index=uid.index, name=uid.name)
    return uid.map(values)
