"""Reading a run's media tables: ``processed/<name>.parquet`` when ingestion wrote it, else ``raw/``.

``available(P)`` says whether a run has exposures at all (a user's own table usually has none), and
:func:`load_media` returns every media table with the channel list and the truth when it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import exposures_module

TABLES = ["exposures", "media_spend", "touch_paths", "campaign_conversions", "media_assignment"]


def _file(P, name: str) -> Path | None:
    for folder in (P.processed, P.raw):
        f = Path(folder) / f"{name}.parquet"
        if f.exists():
            return f
    return None


def available(P) -> bool:
    """True when the run has ``exposures.parquet`` (processed or raw) and the spend table."""
    return _file(P, "exposures") is not None and _file(P, "media_spend") is not None


def missing_reason(P) -> str:
    """A sentence saying which media file is absent and what produces it."""
    absent = [n for n in ("exposures", "media_spend") if _file(P, n) is None]
    return (f"no media exposures in this run ({', '.join(n + '.parquet' for n in absent)} absent from "
            f"{P.processed} and {P.raw}): they are written by the synthetic generator "
            "(helpers.sources.exposures.write_exposures, notebook 00) or delivered as your own ad-server "
            "log; the media-planning stage is skipped.")


def read(P, name: str) -> pd.DataFrame | None:
    f = _file(P, name)
    if f is None:
        return None
    df = pd.read_parquet(f)
    # ingestion writes counts as nullable integers; the media models do float arithmetic (numpy ufuncs
    # reject the object arrays that nullable columns become), so counts are read as floats here, once
    nullable_int = [c for c, t in df.dtypes.items() if isinstance(t, pd.api.extensions.ExtensionDtype)
                    and pd.api.types.is_integer_dtype(t)]
    return df.astype({c: "float64" for c in nullable_int}) if nullable_int else df


@dataclass
class MediaData:
    """The media tables of one run (``None`` where absent) and the planted truth (``None`` on real data)."""

    exposures: pd.DataFrame
    spend: pd.DataFrame
    touch_paths: pd.DataFrame | None
    conversions: pd.DataFrame | None
    assignment: pd.DataFrame | None
    truth: dict | None = None
    users_truth: pd.DataFrame | None = None
    channels: list = field(default_factory=list)
    users: pd.DataFrame | None = None     # the customer table (for pre-period covariates), when given

    @property
    def days(self) -> int:
        return int(pd.Series(self.spend["date"]).nunique())

    def label(self, channel: str) -> str:
        return exposures_module().CHANNEL_LABELS.get(channel, str(channel).replace("_", " ").title())


def from_frames(raw: dict, truth: dict | None = None, users_truth=None, users=None) -> MediaData:
    """A :class:`MediaData` from in-memory frames (``generate_exposures`` output), for tests."""
    E = exposures_module()
    spend = raw["media_spend"]
    chans = [c for c in E.CHANNELS if c in set(spend["channel"])]
    return MediaData(raw["exposures"], spend, raw.get("touch_paths"), raw.get("campaign_conversions"),
                     raw.get("media_assignment"), truth, users_truth, chans, users)


def load_media(P, users: pd.DataFrame | None = None) -> MediaData:
    """Every media table of the run ``P`` (raises FileNotFoundError with :func:`missing_reason`)."""
    if not available(P):
        raise FileNotFoundError(missing_reason(P))
    E = exposures_module()
    exp = read(P, "exposures")
    spend = read(P, "media_spend")
    truth = users_truth = None
    tj = Path(P.truth) / "media_truth.json"
    if tj.exists():
        truth = json.loads(tj.read_text())
        ut = Path(P.truth) / "media_users_truth.parquet"
        users_truth = pd.read_parquet(ut) if ut.exists() else None
    chans = [c for c in E.CHANNELS if c in set(spend["channel"])] + sorted(
        set(spend["channel"]) - set(E.CHANNELS))
    return MediaData(exp, spend, read(P, "touch_paths"), read(P, "campaign_conversions"),
                     read(P, "media_assignment"), truth, users_truth, chans, users)
