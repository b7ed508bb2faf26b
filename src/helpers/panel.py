"""The panel: the unified table joined with its survey weight and segment, in one place.

Every stage that needs "users with their weight (and segment)" reads :class:`Panel` instead of joining the
artifacts itself, as pandas (:meth:`Panel.load` -> ``.frame``) or as an Ibis table on any engine
(:meth:`Panel.ibis`). Weights are 1.0 when the weighting stage wrote none (``weights_used`` says which).
"""

from __future__ import annotations

from typing import Any

import numpy as np
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

    def __init__(self, paths: Paths, segments: bool = True, columns: list[str] | None = None) -> None:
        self.paths = paths
        self.columns = None if columns is None else list(columns)
        self.id = artifacts.id_column(paths)  # the run's identifier column (``user_id`` in the dictionary)
        self.weights_used = artifacts.exists(paths, "weights")
        self.segments_used = bool(segments) and artifacts.exists(paths, "segments")
        self._frame: pd.DataFrame | None = None

    @classmethod
    def open(cls, paths: Paths, segments: bool = True, columns: list[str] | None = None) -> "Panel":
        """The run's panel, not read yet (``.frame`` or ``.ibis(con)`` read it)."""
        return cls(paths, segments, columns)

    @classmethod
    def load(cls, paths: Paths, segments: bool = True, columns: list[str] | None = None) -> "Panel":
        """Read the run's panel as pandas. ``segments=False`` leaves segment columns out even when they exist;
        ``columns`` reads only those columns of the unified table (plus the identifier, ``weight`` and the
        segment columns), which is what lets a stage hold 10M users in a few GB.

        Raises :class:`helpers.artifacts.MissingArtifact` when the unified table is absent and
        :class:`helpers.artifacts.StaleArtifact` when weights or segments belong to an older run.
        """
        self = cls(paths, segments, columns)
        self.frame  # noqa: B018 - read now
        return self

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._read()
        return self._frame

    def _read(self) -> pd.DataFrame:
        paths = self.paths
        df = artifacts.load_unified(paths, columns=self.columns)
        uid = _ids(df[artifacts.key_column(df, paths)])
        if self.weights_used:
            w = artifacts.load(paths, "weights", arrow_strings=True)
            w = w.set_index(_ids(w[artifacts.key_column(w, paths)]))["weight"]
            df["weight"] = _align(uid, w).fillna(1.0).astype(float).to_numpy()
        else:
            df["weight"] = 1.0
        if self.segments_used:
            s = artifacts.load(paths, "segments", arrow_strings=True)
            s = s.set_index(_ids(s[artifacts.key_column(s, paths)]))
            seg = _align(uid, s["segment"])
            df["segment"] = seg.astype("int64").to_numpy() if seg.notna().all() else seg.to_numpy()
            names = s["segment_name"]
            names = names if isinstance(names.dtype, pd.StringDtype) else names.astype(str)
            df["segment_name"] = _shared_objects(_align(uid, names))
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


def _ids(s: pd.Series) -> pd.Series:
    """Identifiers as text stored in Arrow: kept as they are when already text (10M ids as Python strings
    would take ~0.7 GB), other types (e.g. integer ids) converted, so that every artifact's ids compare alike."""
    return s if isinstance(s.dtype, pd.StringDtype) else s.astype(str).astype(pd.StringDtype("pyarrow"))


def align(ids: pd.Series, frame: pd.DataFrame, id_col: str = artifacts.ID) -> pd.DataFrame:
    """The rows of ``frame`` in the order of ``ids`` (a left join on the identifier ``id_col``, which must be
    unique in ``frame``): missing values where an id is absent, index of ``ids``, ``id_col`` left out.

    E.g. the planted truth of each panel user: ``align(panel[id_col], truth, "user_id")``. Identifiers are
    compared as text in Arrow, so 10M ids are never turned into Python strings."""
    if id_col not in frame.columns:
        raise ValueError(f"frame has no identifier column {id_col!r}; columns: {list(frame.columns)}")
    key = _ids(frame[id_col])
    uid = _ids(pd.Series(ids))
    return pd.DataFrame({c: _align(uid, pd.Series(frame[c].array, index=pd.Index(key.array), name=c))
                         for c in frame.columns if c != id_col}, index=pd.Series(ids).index)


def lookup(ids: pd.Series | pd.Index, values: pd.Series) -> pd.Series:
    """``ids.map(values)`` for ``values`` indexed by identifier (missing where an id is absent), with the index of
    ``ids``: the one-column form of :func:`align`, identifiers matched as Arrow text."""
    return _align(_ids(pd.Series(ids)), values)


def _align(uid: pd.Series, values: pd.Series) -> pd.Series:
    """``uid.map(values)``: the value of each identifier (NaN where absent). The stages write their outputs in
    the unified table's row order, so when the identifiers are the same, in the same order, the values are
    taken as they are (mapping 1M string identifiers through a hash index cost seconds per artifact);
    otherwise each identifier is looked up in Arrow (``pyarrow.compute.index_in``) instead of a pandas index
    of Python strings (~0.7 GB at 10M ids)."""
    if len(values) == len(uid) and _same(values.index, uid):
        # the values' own array, as the lookup below returns it (to_numpy made Arrow text Python strings)
        return pd.Series(values.array, index=uid.index, name=uid.name)
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _unique(values.index):
        raise ValueError(f"{values.name or 'the values'}: identifiers are not unique, so a user's value is ambiguous")
    keys = pa.array(_ids(pd.Series(values.index.array)).array)
    pos = pc.index_in(pa.array(uid.array), value_set=keys)
    found = pos.is_valid().to_numpy(zero_copy_only=False)
    idx = pos.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    out = values.iloc[idx].reset_index(drop=True) if len(values) else pd.Series(np.nan, index=range(len(uid)))
    if not found.all():
        out = out.where(pd.Series(found))
    return pd.Series(out.array, index=uid.index, name=uid.name)


def _same(index: pd.Index, uid: pd.Series) -> bool:
    """Whether ``index`` holds the identifiers of ``uid`` in the same order, each once (compared in Arrow)."""
    eq = pd.Series(index.array, copy=False).reset_index(drop=True) == uid.reset_index(drop=True)
    return bool(eq.all()) and not eq.isna().any() and _unique(index)


def _unique(index: pd.Index) -> bool:
    """``index.is_unique``, counted in Arrow for Arrow text: pandas answers it with a hash table of a Python
    string per identifier, which it then keeps with the index (~0.2 GB per million ids, 2 GB at 10M)."""
    if not isinstance(index.dtype, pd.StringDtype) or getattr(index.dtype, "storage", None) != "pyarrow":
        return bool(index.is_unique)
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(index.array)
    return pc.count_distinct(arr, mode="all").as_py() == len(arr)


def _shared_objects(values: pd.Series) -> np.ndarray:
    """``values`` as an object array whose equal strings are one Python object (8 bytes a row instead of a
    string object each: 10M segment names would otherwise take ~0.6 GB); missing values stay NaN."""
    codes, uniques = pd.factorize(values)
    out = np.asarray(list(uniques) + [np.nan], dtype=object)
    return out[codes]
