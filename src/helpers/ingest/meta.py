"""The run's observation date (and where it came from) and the ingestion metadata later stages read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .files import _is_parquet
from .rules import EARLIEST_DATE
from .events import locate_event_source


def observation_date_from_activity(raw_dir: str | Path) -> tuple[str | None, str | None]:
    """The latest activity month of ``raw/monthly_activity`` (its last day) holding at least 1% of the rows,
    else the 99.9th percentile of ``raw/transactions`` dates; robust to a few implausible future dates.
    Returns ``(date, how)`` or ``(None, None)``."""
    for name, col in (("monthly_activity", "month"), ("transactions", "date")):
        p = locate_event_source(raw_dir, name)
        if p is None:
            continue
        try:
            if _is_parquet(p):
                dates = pd.read_parquet(p, columns=[col])[col]
            else:
                dates = pd.read_csv(p, usecols=[col], dtype=str)[col]
        except Exception:  # noqa: BLE001 - an unreadable file is reported when it is ingested
            continue
        d = pd.to_datetime(dates.astype(str).str.slice(0, 10), errors="coerce", format="%Y-%m-%d").dropna()
        d = d[d >= pd.Timestamp(EARLIEST_DATE)]
        if not len(d):
            continue
        if name == "monthly_activity":
            share = d.dt.to_period("M").value_counts(normalize=True).sort_index()
            last = share[share >= 0.01].index.max()
            return str(last.end_time.date()), f"the last day of the latest month in {p.name} ({last})"
        return str(d.quantile(0.999).date()), f"the 99.9th percentile of the dates in {p.name}"
    return None, None


def resolve_observation_date(given: str | None = None, config: Any = None, truth_dir: str | Path | None = None,
                             raw_dir: str | Path | None = None) -> tuple[str | None, str]:
    """The run's observation date and where it came from, in this order: the parameter ``given`` (notebook
    parameter / ``make OBSERVATION_DATE=``), the run configuration's ``dates.observation_date``, the
    synthetic truth's (``truth_params.json``), the latest activity in ``raw/monthly_activity`` or
    ``raw/transactions``; else ``None`` (stages that need one say so)."""
    from .. import config as C

    if given:
        return C._check_date(str(given), None, "observation_date (parameter)"), "the observation_date parameter"
    cfg = C.load(config)
    if cfg.dates.observation_date:
        return cfg.dates.observation_date, f"dates.observation_date of the run configuration ({cfg.name})"
    if truth_dir is not None:
        tp = Path(truth_dir) / "truth_params.json"
        if tp.exists():
            try:
                obs = json.loads(tp.read_text()).get("observation_date")
            except json.JSONDecodeError:
                obs = None
            if obs:
                return str(obs)[:10], "the synthetic truth (truth_params.json)"
    if raw_dir is not None:
        obs, how = observation_date_from_activity(raw_dir)
        if obs:
            return obs, how
    return None, ("none: no parameter, no dates.observation_date in the configuration, no synthetic truth and no "
                  "activity dates; stages that need one (06 survival from dates, recency) say so")


#: Stages that cannot run without an observation date when the configuration derives durations from dates.
NEEDS_OBSERVATION_DATE = ("06_churn_survival (durations from dates.customer_since)",)


def write_ingest_meta(processed_dir: str | Path, meta: dict) -> Path:
    """``processed/ingest_meta.json``: what ingestion used (observation date and its source, configuration,
    input format, panel version) so later stages neither re-hash the table nor guess the date."""
    p = Path(processed_dir) / "ingest_meta.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(p)
    return p


def read_ingest_meta(processed_dir: str | Path) -> dict:
    """The metadata :func:`write_ingest_meta` wrote ({} when ingestion has not run)."""
    p = Path(processed_dir) / "ingest_meta.json"
    return json.loads(p.read_text()) if p.exists() else {}
