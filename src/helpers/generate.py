"""Synthetic sources with planted truth: the built-in demo data of the pipeline (façade).

The world itself lives in :mod:`helpers.sources` (one module per source: world and segments,
behaviour, monthly waves, transactions, places, future outcomes); this module keeps the public API.
:func:`generate_panel` returns the unified 22-column snapshot - *derived from the monthly waves* at the
observation date - the per-user truth and the model's parameters, plus the long tables (monthly
activity, transactions), the extension columns (``state``, ``gender``, noise metrics), the latent paths
and the future outcomes. :func:`write_sources` splits it into the separate files a company would hold and
saves the truth beside them; :func:`write_sources_chunked` does the same out of core.

How the snapshot follows from the waves (observation month = the month of the observation date):

* ``time_on_*_min``: the observation month's average minutes per day (its "last 30 days");
* ``monthly_conversions``: purchases per month averaged over the last 3 months since sign-up, rounded
  half up (a conversion is a purchase of the transaction log);
* ``avg_monthly_spend``: billed purchases per month averaged over the last 12 months since sign-up;
* ``last_seen_days_ago``: days from the last active day (or the sign-up day) to the observation date;
* ``churned_in_last_90_days``: the business rule ``last_seen_days_ago > 90`` (not the latent state).

Everything is vectorised and driven by one ``numpy.random.Generator`` seeded from ``seed``; the
observation date is a parameter, never the wall clock.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy import stats

from . import schema as S
from .sources import behaviour as _B
from .sources import places as _PL
from .sources import transactions as _TX  # noqa: F401  (documented module of the log)
from .sources import waves as _W
from .sources import world as _WD
from .sources.world import (HOUSEHOLD_EXTRA_MEAN, HOUSEHOLD_MAX, INCLUSION_BY_AGE,  # noqa: F401
                            INCLUSION_BY_SEGMENT, K, MAX_TENURE_DAYS, MIN_TENURE_DAYS, P_AGE,
                            P_CHILDREN_IF_HH3, P_EDU, P_EVENTS, P_INCOME, P_INTENT, P_MARITAL, P_NET_WORTH,
                            P_OWNER, P_PURCHASE, P_TRAVELER, PARTNER_MATCH_BY_SEGMENT, POP_SHARES,
                            SEGMENT_NAMES, THIRD_PARTY_ITEM_MISSING, THIRD_PARTY_MATCH_BY_AGE, TICKET_RATE,
                            World, WorldConfig)

DEFAULT_OBSERVATION_DATE = "2026-06-30"
STATES = _W.STATES

# --- backwards-compatible names of the old (flattering) world ---------------------------------------
#: Median minutes/day per channel in an active month (see :mod:`helpers.sources.behaviour`).
MEDIAN_MINUTES = _B.MEDIAN_MINUTES
#: Left-side log sd of the minutes (the margins are split Student-t, not lognormal).
LOG_SD = float(_B.LOG_SD[0])
#: Median purchases per active month (= conversions) and median monthly spend of an active month.
CONVERSION_RATE = _B.PURCHASE_RATE
MEDIAN_SPEND = _B.PURCHASE_RATE * _B.MEDIAN_TICKET
#: The old Weibull churn model's constants. The generator no longer uses them: churn is the absorbing
#: state of the monthly Markov chain and the truth records the implied hazard (``params["hazard_model"]``).
WEIBULL_SHAPE = 1.3
WEIBULL_SCALE_DAYS = 1100.0


def _implied_log_hr() -> dict[str, float]:
    """PH summary of the chain: log ratio of each segment's mean monthly hazard (first 5 years) to segment 0.

    The chain's hazards are not proportional; support tickets and age have no effect on churn (0.0).
    """
    h = _W.implied_hazard().mean(axis=1)
    out = {f"segment_{k}": float(np.log(h[k] / h[0])) for k in range(1, K)}
    out.update({"support_tickets_raised": 0.0, "age_18_24": 0.0})
    return out


TRUE_LOG_HR = _implied_log_hr()


@dataclass
class SyntheticPanel:
    """A generated customer base: the unified table, the per-user truth and the model parameters.

    ``extension`` holds the extension columns (``user_id``, ``state``, ``gender``, noise metrics);
    ``monthly`` / ``transactions`` the long tables as a company logs them; ``paths`` the latent monthly
    states and ``future`` the outcomes after the observation date (both truth only).
    """

    data: pd.DataFrame
    truth: pd.DataFrame
    params: dict = field(default_factory=dict)
    extension: pd.DataFrame | None = None
    monthly: pd.DataFrame | None = None
    transactions: pd.DataFrame | None = None
    paths: pd.DataFrame | None = None
    future: pd.DataFrame | None = None


def _draw_categorical(rng: np.random.Generator, probs: np.ndarray, seg: np.ndarray) -> np.ndarray:
    return _WD.draw_categorical(rng, probs, seg)


def _draw_multi(rng: np.random.Generator, probs: np.ndarray, seg: np.ndarray,
                tokens: list[str]) -> np.ndarray:
    """Draw a multi-valued cell per row: independent Bernoulli per token, joined by ``|``."""
    present = rng.random((seg.shape[0], probs.shape[1])) < probs[seg]
    codes = present.astype(np.int64) @ (1 << np.arange(probs.shape[1]))
    lookup = np.array([
        S.MULTI_SEP.join(t for b, t in enumerate(tokens) if code >> b & 1) or S.NONE_TOKEN
        for code in range(1 << len(tokens))
    ], dtype=object)
    return lookup[codes]


def _segment_shares_in_panel(cfg: WorldConfig | None = None) -> np.ndarray:
    return _WD.panel_segment_shares(cfg)


# --- the snapshot derived from the waves ------------------------------------------------------------
def _cell_totals(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Purchases and spend per cell (users x window+future months) from the transaction log."""
    n, m = world.cells["latent"].shape
    cnt = world.tx["count"]
    spend = np.bincount(world.tx["cell"], weights=world.tx["amount"], minlength=n * m).reshape(n, m)
    return cnt, np.round(spend, 2)


def _behaviour_snapshot(world: World) -> dict[str, np.ndarray]:
    """The snapshot's behaviour columns from the waves (see the module docstring for each rule)."""
    cnt, spend = _cell_totals(world)
    o = world.obs_col
    since = world.cells["latent"][:, : o + 1] >= 0
    def last(a: np.ndarray, months: int) -> np.ndarray:
        w = since[:, o + 1 - months: o + 1]
        return (a[:, o + 1 - months: o + 1] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)
    minutes = np.round(world.cells["minutes"][:, o, :].astype(np.float64), 1)
    return {
        "minutes": minutes,
        "conversions": np.floor(last(cnt.astype(float), 3) + 0.5).astype(np.int64),
        "spend": np.round(last(spend, 12), 2),
        "cnt": cnt, "spend_cells": spend,
    }


@lru_cache(maxsize=8)
def _segment_metric_means(cfg: WorldConfig, observation_date: str, n_sim: int = 50_000) -> np.ndarray:
    """Mean of each channel metric per segment among customers, by simulation (fixed seed; MC error ~1%)."""
    world = _WD.simulate(n_sim, np.random.default_rng([20_261_130, 1]), cfg, observation_date)
    snap = _behaviour_snapshot(world)
    X = np.column_stack([snap["minutes"], snap["conversions"]])
    seg = world.user["seg"]
    return np.vstack([X[seg == k].mean(axis=0) for k in range(K)])


def true_affinity(shares: np.ndarray, cfg: WorldConfig | None = None,
                  observation_date: str = DEFAULT_OBSERVATION_DATE) -> pd.DataFrame:
    """True intensity affinity (ratio of means x 100) per segment and channel metric for a segment mix.

    The segment means are those of customers at the observation date (selection depends on behaviour),
    computed once per process by simulating 50,000 customers of the world with a fixed seed.
    """
    means = _segment_metric_means(cfg or WorldConfig(), observation_date)
    index = means / (np.asarray(shares) @ means) * 100
    return pd.DataFrame(index, columns=S.CHANNEL_METRICS, index=pd.RangeIndex(K, name="segment"))


def population_margins(cfg: WorldConfig | None = None, with_places: bool = False) -> pd.DataFrame:
    """True population shares of the raking variables (age, income, education, household size; with
    ``with_places=True`` also the extension variables gender and US state).

    The default keeps the four dictionary variables, so raking a table without the extension columns
    works; ``raw/population_margins_with_places.csv`` holds all six for tables that carry them.

    Household size is reported in the bands ``1, 2, 3, 4, 5+``; education is the share among the whole
    population. State shares combine the model's age and gender with the Census ``P(state | age, sex)``.
    """
    cfg = cfg or WorldConfig()
    hh = np.array([stats.poisson.pmf(np.arange(HOUSEHOLD_MAX - 1), m) for m in HOUSEHOLD_EXTRA_MEAN])
    hh = np.column_stack([hh, 1 - hh.sum(axis=1)])
    hh_bands = np.column_stack([hh[:, :4], hh[:, 4:].sum(axis=1)])
    rows = []
    for var, probs, cats in [
        ("age_group", P_AGE, S.AGE_GROUPS),
        ("income_bracket", P_INCOME, S.INCOME_BRACKETS),
        ("education_level", P_EDU, S.EDUCATION_LEVELS),
        ("household_size", hh_bands, ["1", "2", "3", "4", "5+"]),
    ]:
        share = POP_SHARES @ probs
        rows += [{"variable": var, "category": c, "target": float(s)} for c, s in zip(cats, share)]
    out = pd.DataFrame(rows)
    if with_places:
        table, _ = _PL.state_given_age_sex(cfg.census)
        out = pd.concat([out, _PL.margins(POP_SHARES, P_AGE, table)], ignore_index=True)
    return out


def model_parameters(observation_date: str = DEFAULT_OBSERVATION_DATE, cfg: WorldConfig | None = None) -> dict:
    """The planted truth as a JSON-ready dict (segments, affinities, chain, transactions, margins, knobs)."""
    cfg = cfg or WorldConfig()
    panel_shares = _segment_shares_in_panel(cfg)
    hazard = _W.implied_hazard()
    _, places_source = _PL.state_given_age_sex(cfg.census)
    return {
        "observation_date": observation_date,
        "world": cfg.to_dict(),
        "n_segments": K,
        "segment_names": SEGMENT_NAMES,
        "population_segment_shares": POP_SHARES.tolist(),
        "panel_segment_shares": panel_shares.tolist(),
        "true_affinity_population": true_affinity(POP_SHARES, cfg, observation_date).round(6).to_dict(orient="index"),
        "true_affinity_panel": true_affinity(panel_shares, cfg, observation_date).round(6).to_dict(orient="index"),
        "behaviour": {
            "median_minutes_active_month": _B.MEDIAN_MINUTES.tolist(),
            "p_uses_channel": _B.P_USES.tolist(),
            "median_purchases_per_active_month": _B.PURCHASE_RATE.tolist(),
            "median_ticket_usd": _B.MEDIAN_TICKET.tolist(),
            "log_sd": _B.LOG_SD.tolist(),
            "copula_correlation": _B.correlation(cfg.copula_strength, 0).tolist(),
            "margins": f"split Student-t on the log scale (df {cfg.tail_df}, right/left scale {cfg.skew})",
            "noise_columns": cfg.noise_columns,
        },
        "markov": {
            "states": _W.STATES,
            "transition": {str(k): _W.TRANSITION[k].tolist() for k in range(K)},
            "transition_keys": "segment index (see segment_names)",
            "initial": _W.INITIAL.tolist(),
            "active_day_share": _W.ACTIVE_DAY_SHARE.tolist(),
            "label_rule": (f"observed engagement_state: churned = account closed; active = active on >= "
                           f"{_W.ACTIVE_LABEL_SHARE:.0%} of the month's days; light = fewer; dormant = none"),
        },
        "transactions": {
            "process": ("purchases ~ Poisson(rate_i * active share / 0.7 * available share * season * "
                        "Gamma(shape, 1/shape)); amount = ticket_i * LogNormal(-s^2/2, s)"),
            "median_rate_per_active_month": _B.PURCHASE_RATE.tolist(),
            "median_ticket_usd": _B.MEDIAN_TICKET.tolist(),
            "count_gamma_shape": None if not np.isfinite(cfg.count_shape) else cfg.count_shape,
            "ticket_sd": cfg.ticket_sd,
            "rate_ticket_copula_correlation": float(_B.correlation(cfg.copula_strength, 0)[3, 4]),
            "not_bg_nbd_because": "dropout via the engagement chain (reversible dormancy), over-dispersed "
                                  "counts, lognormal amounts correlated with frequency",
        },
        "hazard_model": {
            "family": "markov_chain",
            "event": "account closes (first day of the first churned month)",
            "implied_monthly_hazard": {str(k): hazard[k].round(6).tolist() for k in range(K)},
            "log_hr": TRUE_LOG_HR,
            "log_hr_note": "PH summary only: log ratio of mean monthly hazard (5 years) vs segment 0",
            "event_rule": f"business flag churned when inactive for more than {S.CHURN_INACTIVE_DAYS} days",
        },
        "selection": {
            "inclusion_by_age": INCLUSION_BY_AGE.tolist(),
            "inclusion_by_segment": _WD.segment_inclusion(cfg).tolist(),
            "behaviour_probit_slope": cfg.selection_behaviour,
        },
        "places": {"source": places_source, "region_effect_on_log_minutes": _PL.REGION_EFFECT.tolist(),
                   "p_female_by_segment": _PL.P_FEMALE.tolist()},
        "population_margins": population_margins(cfg).to_dict(orient="records"),
        "population_margins_with_places": population_margins(cfg, with_places=True).to_dict(orient="records"),
    }


def _ids(n: int, offset: int = 0) -> np.ndarray:
    return np.array([f"U{i:08d}" for i in range(offset + 1, offset + n + 1)], dtype=object)


def _days_to_ts(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[ns]")


def _long_tables(world: World, ids: pa.Array) -> dict[str, pa.Table]:
    """Arrow tables of the long sources (ids dictionary-encoded: no per-row Python strings)."""
    snap_cnt, snap_spend = _cell_totals(world)
    n, m = world.cells["latent"].shape
    nw = world.cfg.n_months
    lat = world.cells["latent"][:, :nw]
    flat = np.flatnonzero(lat.ravel() >= 0)
    u, c = flat // nw, flat % nw
    states = pa.array(_W.STATES, pa.string())
    uid = pa.DictionaryArray.from_arrays(pa.array(u.astype(np.int32)), ids)
    month = pa.array(world.grid_months[:nw][c].astype("datetime64[D]"), pa.date32())
    mins = np.round(world.cells["minutes"][:, :nw, :].reshape(-1, 3)[flat].astype(np.float64), 1)
    monthly = pa.table({
        "user_id": uid, "month": month,
        "engagement_state": pa.DictionaryArray.from_arrays(
            pa.array(world.cells["label"][:, :nw].ravel()[flat].astype(np.int8)), states),
        "minutes_social": pa.array(mins[:, 0].astype(np.float64)),
        "minutes_video": pa.array(mins[:, 1].astype(np.float64)),
        "minutes_podcasts": pa.array(mins[:, 2].astype(np.float64)),
        "conversions": pa.array(snap_cnt[:, :nw].ravel()[flat].astype(np.int64)),
        "spend": pa.array(snap_spend[:, :nw].ravel()[flat]),
    })
    paths = pa.table({"user_id": uid, "month": month,
                      "true_state": pa.DictionaryArray.from_arrays(pa.array(lat.ravel()[flat].astype(np.int8)), states)})
    cell, day, amt = world.tx["cell"], world.tx["day"], world.tx["amount"]
    past = (cell % m) < nw
    tu = (cell[past] // m).astype(np.int32)
    tx = pa.table({"user_id": pa.DictionaryArray.from_arrays(pa.array(tu), ids),
                   "date": pa.array(day[past].astype("datetime64[D]"), pa.date32()),
                   "amount": pa.array(amt[past])})
    return {"monthly_activity": monthly, "transactions": tx, "user_paths": paths}


def _as_pandas(t: pa.Table) -> pd.DataFrame:
    df = t.to_pandas()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype("string")
        elif df[col].dtype == object and len(df) and isinstance(df[col].iloc[0], type(pd.Timestamp(0).date())):
            df[col] = pd.to_datetime(df[col])
    return df


def _build(n_users: int, seed: int, observation_date: str, cfg: WorldConfig, id_offset: int = 0,
           long_tables: bool = True):
    """Simulate one panel: (data, truth, extension, long arrow tables or None, future)."""
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    rng = np.random.default_rng(seed)
    world = _WD.simulate(n_users, rng, cfg, observation_date)
    u = world.user
    seg, age, n = u["seg"], u["age"], n_users
    snap = _behaviour_snapshot(world)

    income = _draw_categorical(rng, P_INCOME, seg)
    tickets = rng.poisson(TICKET_RATE[seg])
    obs = pd.Timestamp(observation_date)
    since = obs - pd.to_timedelta(u["tenure"], unit="D")

    partner = rng.random(n) < PARTNER_MATCH_BY_SEGMENT[seg]
    purchases = _draw_multi(rng, P_PURCHASE, seg, S.PURCHASE_CATEGORIES)
    traveler = np.array(S.TRAVELER_TYPES, dtype=object)[_draw_categorical(rng, P_TRAVELER, seg)]
    events = _draw_multi(rng, P_EVENTS, seg, S.EVENT_GENRES)
    third = rng.random(n) < THIRD_PARTY_MATCH_BY_AGE[age]
    household = np.minimum(1 + rng.poisson(HOUSEHOLD_EXTRA_MEAN[seg]), HOUSEHOLD_MAX)
    children = (household >= 3) & (rng.random(n) < P_CHILDREN_IF_HH3[seg])
    edu = np.array(S.EDUCATION_LEVELS, dtype=object)[_draw_categorical(rng, P_EDU, seg)]
    marital = np.array(S.MARITAL_STATUSES, dtype=object)[_draw_categorical(rng, P_MARITAL, seg)]
    owner = np.where(rng.random(n) < P_OWNER[seg], "owner", "renter").astype(object)
    worth = np.array(S.NET_WORTH_BANDS, dtype=object)[_draw_categorical(rng, P_NET_WORTH, seg)]
    intent = _draw_multi(rng, P_INTENT, seg, S.PURCHASE_INTENTS)

    ids_np = _ids(n, id_offset)
    ids = pd.array(ids_np, dtype="string")
    last_seen = u["last_seen"].astype(np.int64)
    df = pd.DataFrame({
        "user_id": ids,
        "age_group": pd.array(np.array(S.AGE_GROUPS, dtype=object)[age], dtype="string"),
        "income_bracket": pd.array(np.array(S.INCOME_BRACKETS, dtype=object)[income], dtype="string"),
        "customer_since_date": since.astype("datetime64[ns]"),
        "time_on_social_media_min": snap["minutes"][:, 0],
        "time_on_streaming_video_min": snap["minutes"][:, 1],
        "time_on_podcasts_min": snap["minutes"][:, 2],
        "monthly_conversions": pd.array(snap["conversions"], dtype="Int64"),
        "avg_monthly_spend": snap["spend"],
        "last_seen_days_ago": pd.array(last_seen, dtype="Int64"),
        "support_tickets_raised": pd.array(tickets, dtype="Int64"),
    })
    for name, values, matched in [
        ("partner_purchase_categories", purchases, partner), ("traveler_type", traveler, partner),
        ("event_attendance_genres", events, partner),
    ]:
        df[name] = pd.array(np.where(matched, values, None), dtype="string")
    third_cols = {
        "household_size": household, "presence_of_children": children, "education_level": edu,
        "marital_status": marital, "homeowner_status": owner, "estimated_net_worth": worth,
        "offline_purchase_intent": intent,
    }
    for name, values in third_cols.items():
        observed = third & (rng.random(n) >= THIRD_PARTY_ITEM_MISSING)
        col = S.BY_NAME[name]
        df[name] = pd.Series(values).where(observed).astype(col.dtype)
    df["churned_in_last_90_days"] = pd.array(last_seen > S.CHURN_INACTIVE_DAYS, dtype="boolean")
    df = df[S.COLUMN_NAMES]

    state_codes = np.array(_PL.STATE_CODES, dtype=object)[u["state"]]
    gender = np.array(_PL.GENDERS, dtype=object)[u["gender"]]
    ext = pd.DataFrame({"user_id": ids, "state": pd.array(state_codes, dtype="string"),
                        "gender": pd.array(gender, dtype="string")})
    for j, col in enumerate(cfg.noise_columns):
        ext[col] = u["noise"][:, j]
    hazard_mean = _W.implied_hazard().mean(axis=1)
    # closing dates beyond 100 years (the chain's slow tail) are NaT: no timestamp overflow
    far = u["close_day"] > u["obs_day"] + 36_500
    close = pd.to_datetime(np.where(far, np.datetime64("NaT"), u["close_day"].astype("datetime64[D]")))
    truth = pd.DataFrame({
        "user_id": ids,
        "true_segment": seg.astype(np.int64),
        "true_segment_name": np.array(SEGMENT_NAMES, dtype=object)[seg],
        "true_event_time_days": (u["close_day"] - u["signup_day"]).astype(float),
        "tenure_days": u["tenure"].astype(np.int64),
        "partner_matched": partner,
        "third_party_matched": third,
        "true_log_hazard": np.log(hazard_mean[seg]),
        "state": ext["state"], "gender": ext["gender"],
        "true_state_at_observation": pd.array(np.array(_W.STATES, dtype=object)[u["state_at_obs"]], dtype="string"),
        "true_close_date": close,
        "uses_social": u["uses"][:, 0], "uses_video": u["uses"][:, 1], "uses_podcasts": u["uses"][:, 2],
    })
    fut = _WD.future_outcomes(world)
    fut.insert(0, "user_id", ids)
    long = _long_tables(world, pa.array(ids_np, pa.string())) if long_tables else None
    return df, truth, ext, long, fut


def generate_panel(n_users: int = 10_000, seed: int = 42,
                   observation_date: str = DEFAULT_OBSERVATION_DATE,
                   config: WorldConfig | None = None) -> SyntheticPanel:
    """Generate ``n_users`` customers of the synthetic world (knobs: :class:`WorldConfig`).

    Returns the unified 22-column snapshot (rows sorted by ``user_id``) derived from the monthly waves, the
    per-user truth, :func:`model_parameters`, and the extension / long / truth-only tables (see
    :class:`SyntheticPanel`).
    """
    cfg = config or WorldConfig()
    df, truth, ext, long, fut = _build(n_users, seed, observation_date, cfg)
    return SyntheticPanel(df, truth, model_parameters(observation_date, cfg), extension=ext,
                          monthly=_as_pandas(long["monthly_activity"]),
                          transactions=_as_pandas(long["transactions"]),
                          paths=_as_pandas(long["user_paths"]), future=fut)


# --- splitting into source files -------------------------------------------------------------------
SOURCE_FILES = {
    "crm_users.csv": ["user_id", "age_group", "income_bracket", "customer_since_date"],
    "engagement.csv": ["user_id", *S.CHANNEL_METRICS],
    "billing.csv": ["user_id", "avg_monthly_spend"],
    "activity.csv": ["user_id", "last_seen_days_ago"],
    "support.csv": ["user_id", "support_tickets_raised"],
}
PARTNER_FILE, PARTNER_MATCH = "partner_profiles.csv", "partner_match.csv"
THIRD_FILE, THIRD_MATCH = "third_party_enrichment.csv", "third_party_match.csv"
MARGINS_FILE = "population_margins.csv"
#: The margins including the places extension (gender, US state), for tables that carry those columns.
PLACES_MARGINS_FILE = "population_margins_with_places.csv"


def panel_cfg(panel: "SyntheticPanel") -> WorldConfig:
    """The WorldConfig a panel was generated with (from its params; defaults when absent)."""
    return config_from_params(panel.params)


def config_from_params(params: dict | None) -> WorldConfig:
    """The WorldConfig recorded in ``truth_params.json`` (``params["world"]``); defaults when absent."""
    world = dict((params or {}).get("world") or {})
    for k in ("tail_df", "count_shape"):
        if k in world and world[k] is None:
            world[k] = float("inf")
    known = set(WorldConfig.__dataclass_fields__)
    return WorldConfig(**{k: v for k, v in world.items() if k in known})
#: Extension columns (1st party, optional: a table without them stays valid) appended to source files.
EXTENSION_COLUMNS = {"crm_users.csv": ["state", "gender"], "engagement.csv": []}
NOISE_COLUMNS = _WD.NOISE_COLUMNS_ALL
#: Long sources (raw) and truth-only tables written beside the CSVs: name -> file (or folder of parts).
LONG_SOURCES = {"monthly_activity": "monthly_activity.parquet", "transactions": "transactions.parquet"}
TRUTH_TABLES = {"user_paths": "user_paths.parquet", "future_outcomes": "future_outcomes.parquet"}


def _csv_ready(df: pd.DataFrame) -> pa.Table:
    """The Arrow table the CSV writer receives: dates as ``YYYY-MM-DD`` text, mixed columns as text."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = out[c].dt.strftime("%Y-%m-%d")
        elif out[c].dtype == object:  # mixed values planted by _corrupt: write them as text
            out[c] = out[c].astype("string")
    return pa.Table.from_pandas(out, preserve_index=False)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    pacsv.write_csv(_csv_ready(df), str(path))


def text_table(df: pd.DataFrame) -> pa.Table:
    """``df`` with every column as text, formatted exactly as the CSV writer formats it (nulls stay null).

    Arrow's CSV writer turns non-text columns into text with Arrow's cast to string, so casting the same
    table gives the same characters: a Parquet source written from this table is validated by ingestion
    exactly like the CSV file would be.
    """
    table = _csv_ready(df)
    return pa.table({name: table[name].cast(pa.string()) for name in table.column_names})


def _corrupt(files: dict[str, pd.DataFrame], rng: np.random.Generator, share: float) -> pd.Series:
    """Plant a few realistic defects so ingestion's quarantine has something to catch.

    Returns the user_ids whose rows were corrupted (each such user must end up quarantined).
    """
    crm = files["crm_users.csv"]
    n = len(crm)
    k = int(round(n * share))
    if k == 0:
        return pd.Series([], dtype="string")
    victims = rng.choice(n, size=k, replace=False)
    kinds = np.array_split(victims, 4)
    crm["age_group"] = crm["age_group"].astype(object)
    crm.loc[kinds[0], "age_group"] = "unknown"  # unknown category
    crm["customer_since_date"] = crm["customer_since_date"].dt.strftime("%Y-%m-%d").astype(object)
    crm.loc[kinds[1], "customer_since_date"] = "31/02/2020"  # unparseable date
    eng = files["engagement.csv"]
    eng.loc[kinds[2], "time_on_podcasts_min"] = -5.0  # out of range
    bill = files["billing.csv"]
    bill["avg_monthly_spend"] = bill["avg_monthly_spend"].astype(object)
    bill.loc[kinds[3], "avg_monthly_spend"] = "n/a"  # wrong type
    return crm["user_id"].iloc[victims]


def _source_frames(panel: SyntheticPanel, rng: np.random.Generator, corrupt_share: float,
                   id_offset: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Split a panel into the source files' frames (as they are written) and the truth with ``corrupted``.

    ``id_offset`` (the number of users generated before this panel, for chunked generation) shifts the
    partner/enrichment identifiers so they stay unique across chunks; 0 reproduces :func:`write_sources`.
    """
    df = panel.data
    files = {name: df[cols].copy() for name, cols in SOURCE_FILES.items()}
    if panel.extension is not None:  # extension columns (first party): places/people and noise metrics
        ext = panel.extension
        for name, cols in EXTENSION_COLUMNS.items():
            present = [c for c in ext.columns if c in cols or (name == "engagement.csv" and c in NOISE_COLUMNS)]
            for c in present:
                files[name][c] = ext[c].to_numpy()
    corrupted = _corrupt(files, rng, corrupt_share)
    for fname, mname, cols, prefix, flag in [
        (PARTNER_FILE, PARTNER_MATCH, S.SECOND_PARTY, "P", "partner_matched"),
        (THIRD_FILE, THIRD_MATCH, S.THIRD_PARTY, "T", "third_party_matched"),
    ]:
        matched = panel.truth[flag].to_numpy()
        ours = df.loc[matched, ["user_id", *cols]].reset_index(drop=True)
        ext_id = pd.Series(rng.permutation(len(df) * 3)[: len(ours)] + 10**9 + 3 * id_offset, dtype="int64")
        ours.insert(0, f"{prefix.lower()}_id", (prefix + ext_id.astype(str)).to_numpy())
        # the provider also knows people who are not our customers: rows with no match
        outsiders = ours.sample(frac=0.15, random_state=int(rng.integers(2**31))).copy()
        outsiders[f"{prefix.lower()}_id"] = [f"{prefix}X{i + id_offset:09d}" for i in range(len(outsiders))]
        key = "partner_id" if prefix == "P" else "tp_id"
        ours = ours.rename(columns={f"{prefix.lower()}_id": key})
        outsiders = outsiders.rename(columns={f"{prefix.lower()}_id": key})
        profile = pd.concat([ours, outsiders]).drop(columns="user_id")
        profile = profile.sample(frac=1.0, random_state=int(rng.integers(2**31)))
        if "presence_of_children" in profile:
            profile["presence_of_children"] = profile["presence_of_children"].astype("boolean")
        files[fname] = profile
        files[mname] = ours[["user_id", key]]
    truth = panel.truth.copy()
    truth["corrupted"] = truth["user_id"].isin(corrupted)
    return files, truth


def _clear(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_sources(panel: SyntheticPanel, raw_dir: str | Path, truth_dir: str | Path,
                  seed: int = 42, corrupt_share: float = 0.001) -> dict[str, Path]:
    """Write the panel as separate source files into ``raw_dir`` and its truth into ``truth_dir``.

    Partner and enrichment files carry their own identifiers (``partner_id``, ``tp_id``) and cover only
    matched users, plus people who are not our customers; match tables link them to ``user_id``.
    ``corrupt_share`` of users get one planted defect (recorded in the truth as ``corrupted``).
    ``crm_users.csv`` carries the extension columns ``state`` and ``gender``, ``engagement.csv`` the
    noise metrics. The long sources go to ``raw/monthly_activity.parquet`` and ``raw/transactions.parquet``;
    the latent paths and future outcomes to ``truth/user_paths.parquet`` and ``truth/future_outcomes.parquet``.
    """
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    files, truth = _source_frames(panel, np.random.default_rng([seed, 1]), corrupt_share)
    paths: dict[str, Path] = {}
    for name, part in files.items():
        paths[name] = raw_dir / name
        _write_csv(part, paths[name])

    margins = population_margins(panel_cfg(panel))
    paths[MARGINS_FILE] = raw_dir / MARGINS_FILE
    margins.to_csv(paths[MARGINS_FILE], index=False)
    paths[PLACES_MARGINS_FILE] = raw_dir / PLACES_MARGINS_FILE
    population_margins(panel_cfg(panel), with_places=True).to_csv(paths[PLACES_MARGINS_FILE], index=False)

    for name, frame in [("monthly_activity", panel.monthly), ("transactions", panel.transactions)]:
        if frame is not None:
            paths[name] = raw_dir / LONG_SOURCES[name]
            _clear(paths[name])
            frame.to_parquet(paths[name], index=False)
    for name, frame in [("user_paths", panel.paths), ("future_outcomes", panel.future)]:
        if frame is not None:
            paths[name] = truth_dir / TRUTH_TABLES[name]
            _clear(paths[name])
            frame.to_parquet(paths[name], index=False)
    truth.to_parquet(truth_dir / "users_truth.parquet", index=False)
    (truth_dir / "truth_params.json").write_text(json.dumps(panel.params, indent=2))
    paths["truth"] = truth_dir / "users_truth.parquet"
    paths["truth_params"] = truth_dir / "truth_params.json"
    return paths


# --- out-of-core generation: Parquet parts, chunk by chunk ----------------------------------------
#: users per chunk of :func:`write_sources_chunked`: about 0.6 GB peak per 500k users
DEFAULT_CHUNK_SIZE = 500_000


def chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    """Independent integer seeds of the chunks, from ``numpy.random.SeedSequence(seed).spawn``.

    Child ``c`` of a SeedSequence does not depend on how many children are spawned, so chunk ``c`` is
    the same whatever the total number of users.
    """
    return [int(child.generate_state(1, np.uint32)[0]) for child in np.random.SeedSequence(seed).spawn(n_chunks)]


def _offset_ids(panel: SyntheticPanel, offset: int) -> SyntheticPanel:
    """Renumber a chunk's users ``U{offset + 1}``, ... so ids continue across chunks."""
    if offset == 0:
        return panel
    ids = pd.array([f"U{i:08d}" for i in range(offset + 1, offset + len(panel.data) + 1)], dtype="string")
    data, truth = panel.data.copy(), panel.truth.copy()
    data["user_id"], truth["user_id"] = ids, ids
    return SyntheticPanel(data, truth, panel.params)


def write_sources_chunked(n_users: int, raw_dir: str | Path, truth_dir: str | Path, seed: int = 42,
                          chunk_size: int = DEFAULT_CHUNK_SIZE, corrupt_share: float = 0.001,
                          observation_date: str = DEFAULT_OBSERVATION_DATE,
                          config: WorldConfig | None = None) -> dict[str, Path]:
    """Generate ``n_users`` customers chunk by chunk and write every source as a folder of Parquet parts.

    Out-of-core counterpart of :func:`generate_panel` + :func:`write_sources` for panels that do not fit
    in one pandas frame (10M users on a 24 GB machine): peak memory is set by ``chunk_size``, not by
    ``n_users``. Chunk ``c`` holds users ``c * chunk_size + 1`` ... (ids continue across chunks) and is
    generated by ``generate_panel(m, seed=chunk_seeds(seed, n)[c])`` and split into sources with the
    generator ``default_rng([that seed, 1])``, exactly like ``write_sources(panel, seed=that seed)``: one
    chunk of ``n_users <= chunk_size`` users is that call, value for value. Partner/enrichment
    identifiers are offset per chunk so they stay unique; the planted defects are drawn per chunk.

    Layout: ``raw_dir/<stem>/part-00000.parquet``, ... for each source of :data:`SOURCE_FILES` and the
    partner/enrichment files and match tables (``stem`` = the CSV name without ``.csv``), with the CSV's
    columns as text formatted as the CSV writer formats them (:func:`text_table`), so ingestion's text
    validation applies unchanged; ``raw_dir/population_margins.csv``; ``truth_dir/users_truth.parquet/``
    (a folder of parts, read by ``pandas.read_parquet`` and :func:`helpers.engine.read_parquet` alike) and
    ``truth_dir/truth_params.json``; the long sources ``raw/monthly_activity.parquet/`` and
    ``raw/transactions.parquet/`` and the truth tables ``truth/user_paths.parquet/`` and
    ``truth/future_outcomes.parquet/`` as folders of parts (DuckDB: ``read_parquet('<folder>/*.parquet')``).

    Parameters
    ----------
    n_users : int
        Customers in total (>= 1).
    raw_dir, truth_dir : path
        Output folders (created). Existing part folders of the sources are replaced.
    seed : int, default 42
        Root seed; same seed and chunk_size, same files.
    chunk_size : int, default 500_000
        Users per chunk (the last chunk may be smaller). Changing it changes the draws of later chunks.
    corrupt_share : float, default 0.001
        Share of each chunk's users given one planted defect.
    observation_date : str
        Observation date of the panel (never the wall clock).

    Returns
    -------
    dict
        Source stem (or ``population_margins.csv``, ``truth``, ``truth_params``) -> path written.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    cfg = config or WorldConfig()
    stems = [Path(name).stem for name in [*SOURCE_FILES, PARTNER_FILE, PARTNER_MATCH, THIRD_FILE, THIRD_MATCH]]
    paths: dict[str, Path] = {stem: raw_dir / stem for stem in stems}
    paths["truth"] = truth_dir / "users_truth.parquet"
    paths.update({name: raw_dir / f for name, f in LONG_SOURCES.items()})
    paths.update({name: truth_dir / f for name, f in TRUTH_TABLES.items()})
    for folder in paths.values():
        _clear(folder)
        folder.mkdir(parents=True)
    n_chunks = -(-n_users // chunk_size)
    for c, chunk_seed in enumerate(chunk_seeds(seed, n_chunks)):
        offset = c * chunk_size
        m = min(chunk_size, n_users - offset)
        df, truth, ext, long, fut = _build(m, chunk_seed, observation_date, cfg, id_offset=offset)
        panel = SyntheticPanel(df, truth, {}, extension=ext)
        files, truth = _source_frames(panel, np.random.default_rng([chunk_seed, 1]), corrupt_share, offset)
        del panel, df, ext
        part = f"part-{c:05d}.parquet"
        for name, frame in files.items():
            pq.write_table(text_table(frame), paths[Path(name).stem] / part)
        pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), paths["truth"] / part)
        for name, table in long.items():
            pq.write_table(_plain_strings(table), paths[name] / part)
        pq.write_table(pa.Table.from_pandas(fut, preserve_index=False), paths["future_outcomes"] / part)
        del files, truth, long, fut
    paths[MARGINS_FILE] = raw_dir / MARGINS_FILE
    population_margins(cfg).to_csv(paths[MARGINS_FILE], index=False)
    paths[PLACES_MARGINS_FILE] = raw_dir / PLACES_MARGINS_FILE
    population_margins(cfg, with_places=True).to_csv(paths[PLACES_MARGINS_FILE], index=False)
    paths["truth_params"] = truth_dir / "truth_params.json"
    paths["truth_params"].write_text(json.dumps(model_parameters(observation_date, cfg), indent=2))
    return paths


def _plain_strings(table: pa.Table) -> pa.Table:
    """Dictionary columns cast to plain strings (one schema across parts; Parquet dictionary-encodes anyway)."""
    cols = {}
    for name in table.column_names:
        col = table[name]
        cols[name] = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
    return pa.table(cols)


# --- every source, chunk by chunk, on both cores (what notebook 00 writes) ----------------------------
#: users per chunk of :func:`write_world`: a multiple of the posts' chunk (so the posts are those of the whole
#: panel) and small enough that each process stays near 1 GB; a panel of at most this many users is one chunk
WORLD_CHUNK_USERS = 100_000
#: the long sources and truth tables :func:`write_world` writes as Parquet: name -> (folder, file)
_WORLD_PARQUET = {"monthly_activity": ("raw", LONG_SOURCES["monthly_activity"]),
                  "transactions": ("raw", LONG_SOURCES["transactions"]),
                  "user_paths": ("truth", TRUTH_TABLES["user_paths"]),
                  "future_outcomes": ("truth", TRUTH_TABLES["future_outcomes"]),
                  "users_truth": ("truth", "users_truth.parquet"),
                  "posts": ("raw", "posts.parquet"), "posts_truth": ("truth", "posts_truth.parquet"),
                  "posts_user_rates": ("truth", "posts_user_rates.parquet")}


def world_chunk_seed(seed: int, c: int) -> int:
    """Seed of chunk ``c`` of :func:`write_world`: ``seed`` itself for chunk 0 (a panel of one chunk is
    ``generate_panel(n, seed)``), else child ``c`` of ``SeedSequence(seed)`` (as :func:`chunk_seeds`)."""
    return seed if c == 0 else chunk_seeds(seed, c + 1)[c]


def _pandas_schema(table: pa.Table) -> pa.Schema:
    """The schema of ``pa.Table.from_pandas(_as_pandas(table))`` (plain strings, ns timestamps, pandas
    metadata: what :func:`write_sources` writes), found from one row instead of converting every row."""
    if not table.num_rows:
        return pa.Schema.from_pandas(_as_pandas(table), preserve_index=False)
    key = table.schema
    if key not in _PANDAS_SCHEMAS:
        # the first row with each dictionary cut to that row's value: slicing keeps the whole dictionary
        # (100k ids), which to_pandas would convert for every table of every chunk
        row = table.slice(0, 1)
        cols = {}
        for name in row.column_names:
            col = row[name].combine_chunks()
            if pa.types.is_dictionary(col.type):
                col = pa.DictionaryArray.from_arrays(pa.array([0], col.type.index_type),
                                                     col.dictionary.take(col.indices))
            cols[name] = col
        _PANDAS_SCHEMAS[key] = pa.Schema.from_pandas(_as_pandas(pa.table(cols)), preserve_index=False)
    return _PANDAS_SCHEMAS[key]


#: :func:`_pandas_schema` per Arrow schema (the pandas metadata depends on the types, not on the values)
_PANDAS_SCHEMAS: dict[pa.Schema, pa.Schema] = {}


def _spool(tables: dict[str, pa.Table], spool: str | None, tag: str) -> dict:
    """``tables`` as they are, or (``spool``: a folder) each written there as an Arrow IPC file and replaced by
    its path. A worker process hands its tables to :func:`write_world` through such files instead of pickling
    them through a pipe: the writer maps them (no copy, nothing unpickled) and the worker holds no pickled
    copy of its result; the tables read back are the same tables (schema, metadata, chunks)."""
    if spool is None:
        return tables
    out = {}
    for name, table in tables.items():
        path = str(Path(spool) / f"{tag}-{name}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = path
    return out


def _unspool(ref) -> pa.Table:
    """The table of :func:`_spool` (read from its memory-mapped file, which is then removed), or ``ref`` itself."""
    if not isinstance(ref, str):
        return ref
    table = pa.ipc.open_stream(pa.memory_map(ref)).read_all()
    if os.name != "nt":  # POSIX: the mapping stays valid until the table is released (Windows refuses to
        Path(ref).unlink()  # remove a mapped file: there write_world removes the spool folder at the end)
    return table


def _world_chunk(c: int, offset: int, m: int, seed: int, observation_date: str, cfg: WorldConfig,
                 corrupt_share: float, pick: np.ndarray | None, spool: str | None = None) -> dict:
    """Chunk ``c`` of :func:`write_world` (users ``offset + 1 ... offset + m``): every table it writes, as
    Arrow (or, with ``spool``, the paths of their files: :func:`_spool`), plus the chunk's users for the posts
    and its rows of the media measurement panel."""
    from .sources import posts as _PO

    chunk_seed = world_chunk_seed(seed, c)
    df, truth, ext, long, fut = _build(m, chunk_seed, observation_date, cfg, id_offset=offset)
    panel = SyntheticPanel(df, truth, {}, extension=ext)
    files, truth_c = _source_frames(panel, np.random.default_rng([chunk_seed, 1]), corrupt_share, offset)
    tables = {name: _csv_ready(frame) for name, frame in files.items()}
    tables.update({name: t.cast(_pandas_schema(t)) if t.num_rows else t for name, t in long.items()})
    tables["users_truth"] = pa.Table.from_pandas(truth_c, preserve_index=False)
    tables["future_outcomes"] = pa.Table.from_pandas(fut, preserve_index=False)
    local = np.arange(m) if pick is None else pick[(pick >= offset) & (pick < offset + m)] - offset
    media = (df.iloc[local].reset_index(drop=True), truth[["user_id", "true_segment"]].iloc[local])
    return {"tables": _spool(tables, spool, f"world-{c:05d}"), "posts_users": _PO._users(panel), "media": media}


def _posts_chunks(users: pd.DataFrame, seed: int, first_chunk: int, observation_date: str,
                  spool: str | None = None) -> list[dict]:
    """The posts of one world chunk's users, in chunks of the posts module (indices from ``first_chunk``);
    post ids restart at 1 in each (the writer renumbers them). ``spool``: the tables as files (:func:`_spool`)."""
    from .sources import posts as _PO

    out = []
    for j, lo in enumerate(range(0, len(users), _PO.CHUNK_USERS)):
        tables = _PO.posts_chunk(users.iloc[lo:lo + _PO.CHUNK_USERS], seed, first_chunk + j, observation_date,
                                 n_segments=K, arrow=True)
        out.append(_spool(tables, spool, f"posts-{first_chunk + j:05d}"))
    return out


def _write_exposures_job(users: pd.DataFrame, truth: pd.DataFrame, raw_dir: Path, truth_dir: Path, seed: int,
                         observation_date: str, drawn_from: int | None) -> dict[str, Path]:
    from .sources import exposures as _EX

    return _EX.write_exposures({"users": users, "truth": truth, "params": {"observation_date": observation_date}},
                               raw_dir, truth_dir, seed=seed, drawn_from=drawn_from)


class _Sinks:
    """Tables appended chunk by chunk to one CSV or Parquet file each, under a temporary name until closed."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}
        self._writers: dict[str, object] = {}
        self._schemas: dict[str, pa.Schema] = {}

    def _tmp(self, name: str) -> Path:
        return self.paths[name].with_name(self.paths[name].name + ".part")

    def write(self, name: str, path: Path, table: pa.Table) -> None:
        if name not in self._writers:
            self.paths[name] = path
            path.parent.mkdir(parents=True, exist_ok=True)
            cls = pacsv.CSVWriter if path.suffix == ".csv" else pq.ParquetWriter
            self._writers[name] = cls(str(self._tmp(name)), table.schema)
            self._schemas[name] = table.schema
        schema = self._schemas[name]  # every chunk in the first chunk's types
        self._writers[name].write_table(table if table.schema.equals(schema) else table.cast(schema))

    def close(self) -> dict[str, Path]:
        for name, writer in self._writers.items():
            writer.close()
            _clear(self.paths[name])  # a folder of parts from write_sources_chunked would block the rename
            self._tmp(name).replace(self.paths[name])
        self._writers = {}
        return dict(self.paths)

    def abort(self) -> None:
        for name, writer in self._writers.items():
            writer.close()
            self._tmp(name).unlink(missing_ok=True)
        self._writers = {}


class _Inline:
    """The executor interface run in this process (``n_jobs=1``): each job runs when submitted."""

    def submit(self, fn, *args, **kw):
        from concurrent.futures import Future

        fut: Future = Future()
        fut.set_result(fn(*args, **kw))
        return fut

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _executor(n_jobs: int):
    if n_jobs <= 1:
        return _Inline()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may be a Jupyter kernel whose Arrow and BLAS threads must not be forked
    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn"))


def write_world(n_users: int, raw_dir: str | Path, truth_dir: str | Path, seed: int = 42,
                observation_date: str = DEFAULT_OBSERVATION_DATE, config: WorldConfig | None = None,
                corrupt_share: float = 0.001, chunk_size: int = WORLD_CHUNK_USERS, n_jobs: int = 2,
                media: bool = True, posts: bool = True) -> dict[str, Path]:
    """Generate ``n_users`` customers and write every synthetic source, ``chunk_size`` users at a time.

    Writes the files of :func:`write_sources` (the first-, second- and third-party CSVs, margins, long
    sources, truth), :func:`~helpers.sources.exposures.write_exposures` (``media=True``) and
    :func:`~helpers.sources.posts.write_posts` (``posts=True``), with the same names, columns and types, but
    never holds more than one chunk per process: memory is set by ``chunk_size``, not by ``n_users``. Chunks
    are generated in ``n_jobs`` processes and appended in order to one file per source (CSV files and
    Parquet files with one row group or more per chunk, each under a temporary name until complete). The
    processes run the world chunks first (at most ``n_jobs`` results waiting to be written), then the media
    exposures (the longest job, which needs every chunk's panel rows), the parameters and the posts.

    A panel of at most ``chunk_size`` users is one chunk and gives exactly what ``generate_panel(n, seed)``
    followed by the three writers gives (the same files, value for value). Larger panels: chunk ``c`` holds
    users ``c * chunk_size + 1 ...`` and is ``generate_panel`` with :func:`world_chunk_seed` (``seed`` for
    chunk 0, an independent child seed for the others), split into sources with the generator
    ``default_rng([that seed, 1])``; partner/enrichment identifiers are offset per chunk so they stay
    unique, the planted defects are drawn per chunk and each provider file is shuffled within its chunk.
    The media measurement panel is drawn among all ``n_users`` customers (:func:`~helpers.sources.exposures.measurement_panel`),
    the posts chunk by chunk as :func:`~helpers.sources.posts.iter_posts` draws them. The files do not
    depend on ``n_jobs``.

    Returns
    -------
    dict
        Name (file name for the CSVs, table name otherwise) -> path written.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait

    from .sources import exposures as _EX
    from .sources import posts as _PO

    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    folders = {"raw": raw_dir, "truth": truth_dir}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    cfg = config or WorldConfig()
    n_chunks = -(-n_users // chunk_size)
    posts_per_chunk = -(-chunk_size // _PO.CHUNK_USERS)
    pick = _EX.measurement_panel(n_users, seed) if media else None
    sinks, paths = _Sinks(), {}
    n_posts = 0
    media_rows: list[tuple[pd.DataFrame, pd.DataFrame]] = []

    def put(name: str, table: pa.Table) -> None:
        path = raw_dir / name if name.endswith(".csv") else folders[_WORLD_PARQUET[name][0]] / _WORLD_PARQUET[name][1]
        sinks.write(name, path, table)

    def put_posts(chunks: list[dict]) -> None:
        nonlocal n_posts
        for refs in chunks:
            tables = {key: _unspool(ref) for key, ref in refs.items()}
            n = tables["posts"].num_rows
            ids = pa.array(_PO._post_ids(n_posts, n), pa.string())
            for key in ("posts", "posts_truth"):
                t = tables[key]
                put(key, t.set_column(t.schema.get_field_index("post_id"), "post_id", ids))
            put("posts_user_rates", tables["posts_user_rates"])
            n_posts += n
            del tables

    # worker processes hand their tables over as files in the data folder (removed at the end), not pickled
    spool = None
    if n_jobs > 1:
        spool = raw_dir / f".world_spool-{os.getpid()}"
        _clear(spool)
        spool.mkdir()
    try:
        with _executor(n_jobs) as pool:
            slots = max(n_jobs, 1)
            world_jobs: deque = deque()   # world chunks in order, submitted and not yet written
            posts_jobs: deque = deque()   # posts of the world chunks, in order
            posts_todo: deque = deque()   # (posts chunk index, users) of written world chunks
            queued = written = 0
            params_job = media_job = None
            media_args = None

            def running() -> int:
                jobs = [*world_jobs, *posts_jobs, media_job, params_job]
                return sum(1 for job in jobs if job is not None and not job.done())

            def feed() -> None:
                """Keep ``slots`` jobs running: the world chunks first (at most ``slots`` results held), then
                the exposures (the longest job, which needs every chunk), the parameters, the posts."""
                nonlocal queued, params_job, media_job
                while running() < slots:
                    if queued < n_chunks and len(world_jobs) < slots:
                        offset = queued * chunk_size
                        world_jobs.append(pool.submit(_world_chunk, queued, offset,
                                                      min(chunk_size, n_users - offset), seed, observation_date,
                                                      cfg, corrupt_share, pick,
                                                      None if spool is None else str(spool)))
                        queued += 1
                    elif media_args is not None and media_job is None:
                        media_job = pool.submit(_write_exposures_job, *media_args)
                    elif params_job is None and (written == n_chunks or not posts_todo):
                        params_job = pool.submit(model_parameters, observation_date, cfg)
                    elif posts_todo:
                        first, users = posts_todo.popleft()
                        posts_jobs.append(pool.submit(_posts_chunks, users, seed, first, observation_date,
                                                      None if spool is None else str(spool)))
                    else:
                        return

            feed()
            while written < n_chunks or posts_jobs or posts_todo:
                progressed = False
                if world_jobs and world_jobs[0].done():
                    result = world_jobs.popleft().result()
                    if posts:
                        posts_todo.append((written * posts_per_chunk, result["posts_users"]))
                    for name, ref in result["tables"].items():
                        put(name, _unspool(ref))
                    if media:
                        media_rows.append(result["media"])
                    del result
                    written += 1
                    if media and written == n_chunks:
                        users = pd.concat([u for u, _ in media_rows], ignore_index=True)
                        truth = pd.concat([t for _, t in media_rows], ignore_index=True)
                        media_rows.clear()
                        media_args = (users, truth, raw_dir, truth_dir, seed, observation_date,
                                      n_users if pick is not None else None)
                        del users, truth
                    progressed = True
                while posts_jobs and posts_jobs[0].done():
                    put_posts(posts_jobs.popleft().result())
                    progressed = True
                feed()
                if not progressed:
                    wait([job for job in [*world_jobs, *posts_jobs, media_job, params_job]
                          if job is not None and not job.done()], return_when=FIRST_COMPLETED)
            feed()
            params = (params_job or pool.submit(model_parameters, observation_date, cfg)).result()
            media_paths = media_job.result() if media_job is not None else {}
    except BaseException:
        sinks.abort()
        raise
    finally:
        if spool is not None:
            _clear(spool)
    written = sinks.close()
    paths.update({name: written[name] for name in written if name.endswith(".csv")})
    paths[MARGINS_FILE] = raw_dir / MARGINS_FILE
    population_margins(cfg).to_csv(paths[MARGINS_FILE], index=False)
    paths[PLACES_MARGINS_FILE] = raw_dir / PLACES_MARGINS_FILE
    population_margins(cfg, with_places=True).to_csv(paths[PLACES_MARGINS_FILE], index=False)
    paths.update({name: written[name] for name in ("monthly_activity", "transactions", "user_paths",
                                                   "future_outcomes")})
    paths["truth"] = written["users_truth"]
    paths["truth_params"] = truth_dir / "truth_params.json"
    paths["truth_params"].write_text(json.dumps(params, indent=2))
    paths.update(media_paths)
    if posts:
        paths.update({name: written[name] for name in ("posts", "posts_truth", "posts_user_rates")})
        effects, _ = _PO._effects_stream(pd.DataFrame(), seed, K)
        paths["text_truth"] = truth_dir / "text_truth.json"
        paths["text_truth"].write_text(json.dumps(
            _PO.posts_params(seed, observation_date, effects, n_posts, n_users, _PO.CHUNK_USERS), indent=1))
    return paths
