"""File names of the artifacts stages hand to each other in ``data/processed/``, and their loaders.

Each numbered notebook reads the previous stages' artifacts through these functions, so the contract
between stages lives in one place.
"""

from __future__ import annotations

import pandas as pd

from .paths import Paths

UNIFIED_CSV = "rich_audience_data.csv"
UNIFIED_PARQUET = "rich_audience_data.parquet"
WEIGHTS = "weights.parquet"            # 02: user_id, weight (raked to population margins)
FUSED = "fused.parquet"                # 02: user_id, fused 2nd/3rd-party columns, <col>_imputed flags
SEGMENTS = "segments.parquet"          # 04: user_id, segment, segment_name, prob_<k>..., entropy
SEGMENT_PROFILES = "segment_profiles.csv"  # 04: personas (one row per segment)
SEGMENTS_HIER = "segments_hier.parquet"    # 05: user_id, hier_segment
CHURN_RISK = "churn_risk.parquet"      # 06: user_id, churn_prob_90d, ...
SEGMENT_VALUE = "segment_value.csv"    # 06: per-segment RMST and value
AFFINITY_TABLE = "affinity_table.csv"  # 07: tidy table of every index
LOOKALIKE_SCORES = "lookalike_scores.parquet"  # 08: user_id, score, ...


class MissingArtifact(FileNotFoundError):
    """A stage's input does not exist yet: says which notebook / make target creates it."""


def _require(paths: Paths, name: str, made_by: str) -> "pd.DataFrame":
    f = paths.processed / name
    if not f.exists():
        raise MissingArtifact(
            f"{f} does not exist: it is written by notebook {made_by}; run `make reports` "
            f"(or execute {made_by} first)."
        )
    return pd.read_parquet(f) if name.endswith(".parquet") else pd.read_csv(f)


def load_unified(paths: Paths) -> pd.DataFrame:
    """The validated 22-column table written by ingestion (01), with the dictionary's dtypes."""
    df = _require(paths, UNIFIED_PARQUET, "01_ingest")
    # stored in microseconds so Spark can read it; pandas code downstream expects the schema's nanoseconds
    df["customer_since_date"] = df["customer_since_date"].astype("datetime64[ns]")
    return df


def load_weights(paths: Paths) -> pd.Series:
    """Raking weights indexed by user_id (02); all 1.0 if the weighting stage has not run."""
    f = paths.processed / WEIGHTS
    if not f.exists():
        users = load_unified(paths)["user_id"]
        return pd.Series(1.0, index=pd.Index(users, name="user_id"), name="weight")
    w = pd.read_parquet(f)
    return w.set_index("user_id")["weight"]


def load_panel(paths: Paths) -> pd.DataFrame:
    """The unified table with its ``weight`` column joined on (1.0 where no weights exist)."""
    df = load_unified(paths)
    w = load_weights(paths)
    df["weight"] = df["user_id"].map(w).fillna(1.0).astype(float)
    return df


def load_segments(paths: Paths) -> pd.DataFrame:
    """Per-user GMM segment assignments (04)."""
    return _require(paths, SEGMENTS, "04_segment_gmm")


def load_truth(paths: Paths) -> tuple[pd.DataFrame, dict]:
    """The synthetic generator's planted truth (per-user frame, parameters), for self-scoring only."""
    import json

    f = paths.truth / "users_truth.parquet"
    if not f.exists():
        raise MissingArtifact(f"{f} does not exist: planted truth exists only for the synthetic panel "
                              "(notebook 00_synthetic_sources).")
    return pd.read_parquet(f), json.loads((paths.truth / "truth_params.json").read_text())
