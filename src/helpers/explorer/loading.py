"""Load one pipeline run for the Explorer: the panel and the stages' artifacts, read through the registry only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .. import artifacts
from .. import metrics as metrics_mod
from ..paths import Paths
from .common import MAKE_TARGET, file_name, ingest_meta, jsonable, producer, run_config

SEGMENT_COLUMNS = ("user_id", "segment")
AFFINITY_COLUMNS = ("segment", "family", "attribute", "index_type", "index", "ci_low", "ci_high", "q_value",
                    "significant", "n_unweighted", "base_flag", "tier")
#: text columns of per-user artifacts with few distinct values, held as categories (codes and one string per
#: value): the lookalike stage's reason codes were 62 MB per million users as Arrow text, its seed name 27 MB
#: as Python objects
CODED_TEXT = {"lookalike_scores": ("reason_codes", "audience")}
#: What the app reads: (key, registered artifact name, required); files and producers come from the registry.
ARTIFACTS: tuple[tuple[str, str, bool], ...] = (
    ("unified", "unified", True), ("segments", "segments", True),
    ("segment_profiles", "segment_profiles", False), ("affinity", "affinity_table", True),
    ("weights", "weights", False), ("churn_risk", "churn_risk", False),
    ("segment_value", "segment_value", False), ("customer_value", "customer_value", False),
    ("lookalike_scores", "lookalike_scores", False), ("post_topics", "post_topics", False),
)


class MissingArtifacts(artifacts.MissingArtifact):
    """Required artifacts are absent; ``missing`` lists them with the notebook and make target creating them."""

    def __init__(self, missing: list[dict]) -> None:
        self.missing = missing
        names = ", ".join(f"{m['files'][0]} ({m['made_by']})" for m in missing)
        super().__init__(f"missing pipeline artifacts: {names}; run `{MAKE_TARGET}` to create them")


def artifact_status(paths: Paths) -> list[dict]:
    """Presence of every artifact the app reads, with the notebook and make target that write it."""
    return [{"key": key, "files": [file_name(name)], "present": artifacts.exists(paths, name), "required": req,
             "made_by": f"notebook {producer(name)}", "make_target": MAKE_TARGET, "folder": str(paths.processed)}
            for key, name, req in ARTIFACTS]


def stale_artifacts(paths: Paths) -> list[dict]:
    """Artifacts of the run that are missing or stale, with the notebook and make target that (re)make them
    (:func:`helpers.artifacts.status`)."""
    try:
        st = artifacts.status(paths)
    except (OSError, ValueError):  # an unreadable run state: nothing more to say than the missing files
        return []
    st = st[st["stale"]]
    return [{"file": r["file"], "reason": r["reason"], "producer": r["producer"], "make": r["make"]}
            for _, r in st.iterrows()]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(df.columns)[:12]}...); "
                         f"re-create it with `{MAKE_TARGET}`")


def _optional(paths: Paths, name: str) -> pd.DataFrame | None:
    """A registered artifact when the run has it (stale ones are shown: the header lists them), else None.
    Text of a Parquet artifact stays Arrow text (``string[pyarrow]``): a Python string per id of each
    per-user artifact took ~0.07 GB per million users and artifact."""
    return artifacts.load(paths, name, allow_stale=True, arrow_strings=True) if artifacts.exists(paths, name) else None


def _text_ids(ids: pd.Series) -> pd.Series:
    """Identifiers as Arrow text (kept when they already are): no Python string per id."""
    from ..panel import _ids

    return _ids(ids)


@dataclass
class ExplorerData:
    """Everything the app shows, loaded once from the artifacts of one pipeline run.

    ``panel`` is :class:`helpers.panel.Panel` (unified table with ``weight``, 1.0 without weighting, and
    ``segment`` / ``segment_name``) with the run's id column as ``user_id``; users without a segment dropped.
    """

    paths: Paths
    panel: pd.DataFrame
    affinity: pd.DataFrame
    profiles: pd.DataFrame | None = None
    churn_risk: pd.DataFrame | None = None
    segment_value: pd.DataFrame | None = None
    lookalike_scores: pd.DataFrame | None = None
    metrics: dict = field(default_factory=dict)
    cfg: Any = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def segments(self) -> pd.DataFrame:
        """``segments.parquet`` (posterior probabilities too), read when first asked and kept: only a segment
        export needs it (its score is the posterior); the panel carries each user's ``segment`` and
        ``segment_name``. Not held from the start: 0.14 GB per million users."""
        if "segments" not in self._cache:
            self._cache["segments"] = as_user_id(artifacts.load(self.paths, "segments", arrow_strings=True),
                                                 artifacts.id_column(self.paths))
        return self._cache["segments"]

    @segments.setter
    def segments(self, frame: pd.DataFrame | None) -> None:
        self._cache["segments"] = frame

    @property
    def segment_ids(self) -> list[int]:
        """Segment labels present in the panel, ascending."""
        return sorted(int(s) for s in pd.unique(self.panel["segment"]))

    def segment_names(self) -> dict[int, str]:
        """Segment label -> name."""
        return {int(k): str(v) for k, v in self.panel.groupby("segment")["segment_name"].first().items()}

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Row positions in the panel of ``ids`` (in their order; ids not in the panel are left out)."""
        if self._cache.get("user_index", (None,))[0] is not self.panel:  # checked once, not per call
            uid = _text_ids(self.panel["user_id"])
            self._cache["user_index"] = (self.panel, pa_text(uid) if not _duplicated(uid).any() else None)
        index = self._cache["user_index"][1]
        if index is None:
            raise ValueError("the panel lists a user_id more than once")
        import pyarrow.compute as pc

        # looked up in Arrow, hashing only the ids asked for (an index of the panel's ids as Python strings
        # was ~0.07 GB per million users): each distinct id's panel row, then the ids in their order
        want = pa_text(_text_ids(ids if isinstance(ids, pd.Series) else pd.Series(list(ids), dtype=object)))
        distinct = pc.unique(want)
        hit = pc.index_in(index, value_set=distinct)
        found = hit.is_valid().to_numpy(zero_copy_only=False)
        row_of = np.full(len(distinct), -1, dtype=np.int64)
        row_of[hit.filter(hit.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)] = np.flatnonzero(found)
        pos = row_of[pc.index_in(want, value_set=distinct).to_numpy(zero_copy_only=False).astype(np.int64)]
        return pos[pos >= 0].astype(int)

    def panel_version(self) -> str:
        """Content hash of the unified table (:func:`helpers.export.panel_version`), for export manifests:
        the one ingestion recorded when it describes the table, else the table's hash."""
        if "version" not in self._cache:
            from .. import export as export_mod

            self._cache["version"] = export_mod.panel_version(artifacts.load_unified(self.paths), self.paths)
        return self._cache["version"]

    def optional(self, name: str) -> pd.DataFrame | None:
        """Registered artifact ``name`` with ``user_id`` as its id column, read once (None when absent).
        Text is Arrow text; the few-valued text of the lookalike scores (:data:`CODED_TEXT`) is categorical."""
        if name not in self._cache:
            df = as_user_id(_optional(self.paths, name), artifacts.id_column(self.paths))
            for c in CODED_TEXT.get(name, ()):
                if df is not None and c in df.columns:
                    df[c] = df[c].astype("category")
            self._cache[name] = df
        return self._cache[name]


def pa_text(ids: pd.Series):
    """A text Series as one Arrow string array (no copy when it is Arrow text already)."""
    import pyarrow as pa

    arr = pa.array(ids.array) if isinstance(ids.dtype, pd.StringDtype) else pa.array(ids.astype(str).to_numpy(object))
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.cast(pa.string()) if arr.type != pa.string() else arr


def _duplicated(ids: pd.Series) -> pd.Series:
    """``ids.duplicated()`` (as text), counted in Arrow first: pandas' duplicated of Arrow text made a Python
    string per id (0.15 GB per million users at its peak); only a table with duplicates takes that path."""
    import pyarrow.compute as pc

    text = _text_ids(ids)
    if len(pc.unique(pa_text(text))) == len(text):
        return pd.Series(False, index=ids.index)
    return text.astype(object).duplicated()


def as_user_id(df: pd.DataFrame | None, idc: str) -> pd.DataFrame | None:
    """The run's id column (``cfg.id``, e.g. ``customerID``) as ``user_id``, the app's internal name."""
    if df is not None and idc != "user_id" and idc in df.columns and "user_id" not in df.columns:
        return df.rename(columns={idc: "user_id"})
    return df


def _check_segments(segments: pd.DataFrame) -> None:
    seg_file = file_name("segments")
    _require_columns(segments, SEGMENT_COLUMNS, seg_file)
    if segments["segment"].isna().any():
        rows = segments.index[segments["segment"].isna()][:5].tolist()
        raise ValueError(f"{seg_file} has missing segment labels (rows e.g. {rows}); "
                         f"re-create it with `{MAKE_TARGET}`")
    dup = _duplicated(segments["user_id"])
    if dup.any():
        raise ValueError(f"{seg_file} lists {int(dup.sum())} user_id more than once (e.g. "
                         f"{segments.loc[dup, 'user_id'].iloc[0]!r}); each user needs exactly one segment")
    if "segment_name" not in segments:
        raise ValueError(f"{seg_file} lacks columns ['segment_name']; re-create it with `{MAKE_TARGET}`")


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
        why = artifacts.stale_reason(paths, name)
        if why:
            raise artifacts.StaleArtifact(f"{why}; re-run notebook {producer(name)} (`{MAKE_TARGET}`)")
    idc = artifacts.id_column(paths)
    # checked on the columns the check reads, then released (the panel reads its segment columns itself;
    # ExplorerData.segments reads the whole file when a segment export needs it)
    have = pq.read_schema(artifacts.artifact("segments").path(paths)).names
    cols = [c for c in dict.fromkeys((idc, "user_id", "segment", "segment_name")) if c in have]
    segments = as_user_id(artifacts.load(paths, "segments", columns=cols, arrow_strings=True), idc)
    _check_segments(segments)
    del segments
    # the one panel (unified + weight + segment): helpers.panel.Panel, users without a segment dropped
    from ..panel import Panel

    # the frame is this function's own (the Panel object is not kept), so it is changed in place: at 1M users
    # each copy would be one more whole unified table in memory (1M users: over a GB)
    panel = Panel.load(paths).frame
    if idc != "user_id" and idc in panel.columns and "user_id" not in panel.columns:
        panel.columns = ["user_id" if c == idc else c for c in panel.columns]
    _require_columns(panel, ["user_id"], "the unified table")
    # the ids stay Arrow text as the panel reads them (Python strings: ~0.07 GB per million users)
    panel["user_id"] = _text_ids(panel["user_id"])
    if panel["segment"].isna().any():
        panel = panel[panel["segment"].notna()].copy()  # rare: users without a segment
    if panel.empty:
        raise ValueError(f"no user_id of {file_name('segments')} is in the unified table: the two artifacts come "
                         f"from different runs; re-create them with `{MAKE_TARGET}`")
    panel["segment"] = panel["segment"].astype(int)
    panel["segment_name"] = panel["segment_name"].astype(str)  # one shared str object per distinct name (Panel)
    aff_file = file_name("affinity_table")
    affinity = artifacts.load(paths, "affinity_table")
    _require_columns(affinity, AFFINITY_COLUMNS, aff_file)
    affinity["significant"] = affinity["significant"].astype(str).str.lower().isin(["true", "1"])
    stray = sorted(set(affinity["segment"].astype(int)) - set(panel["segment"]))
    if stray:
        raise ValueError(f"{aff_file} has segments {stray} that {file_name('segments')} does not: "
                         f"the two come from different segmentations; re-create them with `{MAKE_TARGET}`")
    affinity["segment"] = affinity["segment"].astype(int)
    panel.index = pd.RangeIndex(len(panel))
    data = ExplorerData(paths=paths, panel=panel, affinity=affinity,
                        metrics=metrics_mod.read(paths.metrics), cfg=run_config(paths, config_path))
    data.profiles = data.optional("segment_profiles")
    data.churn_risk = data.optional("churn_risk")
    data.segment_value = data.optional("segment_value")
    data.lookalike_scores = data.optional("lookalike_scores")
    return data


def header_facts(data: ExplorerData) -> dict:
    """The data's date, source and base size for the page header (no filesystem path)."""
    meta = ingest_meta(data.paths)
    cfg = data.cfg
    truth = artifacts.exists(data.paths, "truth_params")
    date = meta.get("observation_date") or getattr(getattr(cfg, "dates", None), "observation_date", None)
    if not date and truth:
        params = artifacts.load(data.paths, "truth_params", allow_stale=True)
        date = params.get("observation_date") if isinstance(params, dict) else None
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


def overview(data: ExplorerData) -> dict:
    """Run-level facts for the page header: users, segments, which optional artifacts exist, metrics."""
    return jsonable({"n_users": len(data.panel), "n_segments": len(data.segment_ids),
                     "weighted": bool((data.panel["weight"] != 1.0).any()),
                     "has_churn": data.churn_risk is not None or data.segment_value is not None,
                     "has_lookalike_scores": data.lookalike_scores is not None,
                     "data_dir": str(data.paths.data), "metrics": data.metrics})
