"""Reading a run's media tables: ``processed/<name>.parquet`` when ingestion wrote it, else ``raw/``.

``available(P)`` says whether a run has exposures at all (a user's own table usually has none), and
:func:`load_media` returns every media table with the channel list and the truth when it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
class ExposureCells:
    """Impressions and conversions summed per (user, window, channel) and (user, window) cell, once per run.

    ``users``: every user of the media data (the design's, else everyone exposed), ``dates`` the campaign
    days, windows of ``window_days`` days (the last one takes the remainder). Cells are positions into
    ``users`` / windows / ``channels``, so an audience's arrays are a mask away (no groupby per audience).
    """

    users: pd.Index
    dates: pd.DatetimeIndex
    window_days: int
    days_per_window: np.ndarray
    u: np.ndarray                 # exposure cells: user position, window, channel position, impressions
    w: np.ndarray
    c: np.ndarray
    impressions: np.ndarray
    conv_u: np.ndarray            # conversion cells: user position, window, conversions
    conv_w: np.ndarray
    conversions: np.ndarray
    n_channels: int

    @property
    def n_windows(self) -> int:
        return len(self.days_per_window)

    def _rows(self, positions) -> np.ndarray:
        """(users,) row of each user in an array over ``positions`` (row i is positions[i]; -1 elsewhere)."""
        row = np.full(len(self.users), -1, dtype=np.int64)
        row[np.asarray(positions, dtype=np.int64)] = np.arange(len(positions))
        return row

    def impressions_by_window(self, positions) -> np.ndarray:
        """(len(positions), windows, channels) impressions of the users at ``positions``."""
        row = self._rows(positions)
        k = row[self.u] >= 0
        out = np.zeros((len(positions), self.n_windows, self.n_channels))
        np.add.at(out, (row[self.u[k]], self.w[k], self.c[k]), self.impressions[k])
        return out

    def conversions_by_window(self, positions) -> np.ndarray:
        """(len(positions), windows) conversions of the users at ``positions``."""
        row = self._rows(positions)
        k = row[self.conv_u] >= 0
        out = np.zeros((len(positions), self.n_windows))
        np.add.at(out, (row[self.conv_u[k]], self.conv_w[k]), self.conversions[k])
        return out

    def per_user(self) -> np.ndarray:
        """(users, channels) impressions over the campaign of every user."""
        flat = np.bincount(self.u * self.n_channels + self.c, weights=self.impressions,
                           minlength=len(self.users) * self.n_channels)
        return flat.reshape(len(self.users), self.n_channels)


def _window_of(d, dates: pd.DatetimeIndex, window_days: int) -> np.ndarray:
    """Window index of each date ``d`` (campaign day // window_days, the last window takes the remainder;
    -1 outside the campaign)."""
    day = (pd.DatetimeIndex(pd.to_datetime(d)).normalize() - dates[0]).days.to_numpy()
    w = np.minimum(day // window_days, (len(dates) - 1) // window_days)
    return np.where((day >= 0) & (day < len(dates)), w, -1)


def exposure_cells(md: "MediaData", window_days: int | None) -> ExposureCells:
    """The run's :class:`ExposureCells` for windows of ``window_days`` days (``None``: one window, the
    campaign), computed once per (run, window length) and kept on ``md``."""
    dates = pd.DatetimeIndex(sorted(pd.to_datetime(md.spend["date"]).unique()))
    wd = int(window_days) if window_days else len(dates)
    key = ("cells", wd)
    if key in md.cache:
        return md.cache[key]
    users = pd.Index(md.assignment["user_id"].astype(str)) if md.assignment is not None else pd.Index(
        md.exposures["user_id"].astype(str).unique())
    chans = pd.Index(md.channels)
    W = (len(dates) - 1) // wd + 1

    def cells(frame, value, with_channel):
        u = users.get_indexer(frame["user_id"].astype(str))
        w = _window_of(frame["date"], dates, wd)
        c = chans.get_indexer(frame["channel"]) if with_channel else np.zeros(len(frame), dtype=np.int64)
        k = (u >= 0) & (w >= 0) & (c >= 0)
        key = (u[k].astype(np.int64) * W + w[k]) * len(chans) + c[k]
        uniq, inv = np.unique(key, return_inverse=True)
        tot = np.bincount(inv.ravel(), weights=frame[value].to_numpy(float)[k], minlength=len(uniq))
        return uniq // (W * len(chans)), (uniq // len(chans)) % W, uniq % len(chans), tot

    eu, ew, ec, imp = cells(md.exposures, "impressions", True)
    if md.conversions is not None:
        cu, cw, _, conv = cells(md.conversions, "conversions", False)
    else:
        cu = cw = np.zeros(0, dtype=np.int64)
        conv = np.zeros(0)
    out = ExposureCells(users, dates, wd, np.bincount(np.minimum(np.arange(len(dates)) // wd, W - 1),
                                                      minlength=W).astype(float),
                        eu, ew, ec, imp, cu, cw, conv, len(chans))
    md.cache[key] = out
    return out


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
    #: derived tables computed once (:func:`exposure_cells`); the tables above are not changed after loading
    cache: dict = field(default_factory=dict, repr=False)

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
