"""Synthetic media exposures with planted truth: campaigns, impressions, spend, conversions and holdouts.

:func:`generate_exposures` takes the customer table (and, when available, the true segment, channel
use and US state) and simulates a national campaign of ``weeks`` weeks in flights of two weeks:

* **impressions** per user, channel, day and hour (six channels: social, streaming video, podcasts,
  paid search, display, linear TV). A user's propensity for a channel is the product of their segment's
  channel affinity, their own channel use (minutes per day; age for linear TV), a regional factor and a
  Gamma heterogeneity (so frequency is negative-binomial, reach curves bend like real ones); the hour of
  each impression follows the channel's daypart and the segment's activity profile;
* **daily spend** per channel (flighted, with day-to-day noise) and its delivered impressions (CPM);
* a **planted response**: each user converts on day ``d`` with Poisson rate
  ``m_k(weekday) * (h0_u + sum_c beta[k, c] * S_c(A_ucd))`` where ``A`` is the geometric **adstock**
  (decay ``delta_c``) of the user's daily impressions and ``S_c(a) = a^kappa / (a^kappa + H^kappa)`` a Hill
  **saturation / frequency** curve (kappa > 1: a threshold, an effective frequency);
* **touch paths**: the time-ordered channels a user saw before the first conversion (or all, if none);
* **holdouts**: 10% of users are a randomised user-level holdout (never served: ghost ads) and 30% of the
  regions a randomised geo holdout that goes dark for the last two weeks.

The truth (``media_truth.json`` and ``media_users_truth.parquet``) holds every parameter, the response
curves per segment and channel, the optimal allocation for the stated objective (maximise expected
incremental conversions of each segment for a budget per person, see :data:`DEFAULT_BUDGET_PER_PERSON`),
the true incremental contribution of each channel, the planted user-level and geo-level lifts.
:func:`true_outcome` evaluates any allocation under the planted model (used only to score estimators).

Raw files written by :func:`write_exposures`: ``exposures.parquet`` (``user_id, date, hour, channel,
impressions``), ``media_spend.parquet`` (``date, campaign, channel, planned_spend, spend, impressions``),
``touch_paths.parquet`` (``user_id, path, n_touches, converted, conversions``),
``campaign_conversions.parquet`` (``user_id, date, hour, conversions``) and
``media_assignment.parquet`` (``user_id, geo, user_holdout, geo_holdout``: the experiment design).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CHANNELS = ["social", "video", "podcast", "search", "display", "linear_tv"]
CHANNEL_LABELS = {"social": "Social media", "video": "Streaming video", "podcast": "Podcasts",
                  "search": "Paid search", "display": "Display", "linear_tv": "Linear TV"}
C = len(CHANNELS)
#: cost per 1,000 impressions (USD)
CPM = np.array([8.0, 22.0, 18.0, 30.0, 4.0, 14.0])
#: can a buy be targeted at an audience? (linear TV and podcast host reads are bought on programmes)
TARGETABLE = np.array([True, True, False, True, True, False])
#: national planned spend per 1,000 users per day (USD), before flighting
BASE_DAILY_SPEND_PER_1000 = np.array([1.6, 4.4, 3.0, 6.0, 0.8, 3.2])
ADSTOCK_DECAY = np.array([0.3, 0.5, 0.5, 0.1, 0.2, 0.7])
HILL_HALF = np.array([0.35, 0.30, 0.30, 0.25, 0.45, 0.40])   # adstocked impressions/day at half effect
HILL_SHAPE = np.array([1.3, 1.6, 1.4, 1.1, 1.0, 2.0])
GAMMA_SHAPE = np.array([1.2, 1.5, 0.9, 1.0, 2.0, 1.6])       # exposure heterogeneity (NBD shape)
#: the segment x channel tables (affinity, response) live in ``params/exposures.json`` (package data)
PARAMS_FILE = Path(__file__).resolve().parent / "params" / "exposures.json"


def _segment_table(doc: dict, key: str) -> np.ndarray:
    """The (segments x channels) table ``key`` of the parameter file, scaled by its ``scale`` (default 1)."""
    if key not in doc or "rows" not in doc[key]:
        raise ValueError(f"{PARAMS_FILE}: no table '{key}' with 'rows' (expected a segments x channels list of lists)")
    t = np.array(doc[key]["rows"], dtype=float)
    if t.ndim != 2 or t.shape[1] != C:
        raise ValueError(f"{PARAMS_FILE}: table '{key}' has shape {t.shape}; expected (segments, {C}) with "
                         f"columns {CHANNELS}")
    return float(doc[key].get("scale", 1.0)) * t


_PARAMS = json.loads(PARAMS_FILE.read_text())
#: relative channel affinity (exposure propensity) of each segment (rows follow generate.SEGMENT_NAMES)
SEGMENT_AFFINITY = _segment_table(_PARAMS, "segment_affinity")
#: maximal incremental conversions per user-day at saturation, by segment x channel
BETA = _segment_table(_PARAMS, "beta")
BASELINE_HAZARD = 0.008           # baseline conversions per user-day at the average prior conversions
BASELINE_LOG_SD = 0.3
N_SYNTHETIC_GEOS = 24             # regions when the table has no `state`
USER_HOLDOUT_SHARE = 0.10
GEO_HOLDOUT_SHARE = 0.30
FLIGHT_DAYS = 14
DEFAULT_WEEKS = 6
#: the stated objective of the planted optimum: USD per person of the audience over the campaign
DEFAULT_BUDGET_PER_PERSON = 0.25
HOURS, WEEKDAYS = 24, 7
CHUNK_USERS = 50_000
#: customers in the exposure measurement panel at most (see generate_exposures)
MAX_PANEL_USERS = 100_000

_MINUTE_COLS = ["time_on_social_media_min", "time_on_streaming_video_min", "time_on_podcasts_min"]
_AGE_GROUPS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]


def hill(a: np.ndarray, half: np.ndarray | float, shape: np.ndarray | float) -> np.ndarray:
    """Hill saturation ``a^shape / (a^shape + half^shape)`` (0 at 0, 1/2 at ``half``, 1 at infinity)."""
    a = np.maximum(a, 0.0)
    x = np.power(a / half, shape)
    return x / (1.0 + x)


def adstock(x: np.ndarray, decay: float, axis: int = -1) -> np.ndarray:
    """Geometric adstock along ``axis``: ``A_t = x_t + decay * A_{t-1}``."""
    x = np.moveaxis(np.asarray(x, float), axis, -1)
    out = np.empty_like(x)
    acc = np.zeros(x.shape[:-1])
    for t in range(x.shape[-1]):
        acc = x[..., t] + decay * acc
        out[..., t] = acc
    return np.moveaxis(out, -1, axis)


# --- daypart profiles ---------------------------------------------------------------------------
def _bump(h: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = np.minimum(np.abs(h - centre), 24 - np.abs(h - centre))
    return np.exp(-0.5 * (d / width) ** 2)


def channel_daypart() -> np.ndarray:
    """Hour-of-day availability of each channel's inventory, ``(C, 24)``, each row summing to 1."""
    h = np.arange(HOURS, dtype=float)
    prof = np.vstack([
        0.2 + _bump(h, 21, 2.5) + 0.6 * _bump(h, 12.5, 1.5),          # social: lunch and late evening
        0.1 + _bump(h, 21, 2.0) + 0.3 * _bump(h, 15, 2),              # video: evening
        0.1 + _bump(h, 8, 1.2) + 0.8 * _bump(h, 17.5, 1.2),           # podcasts: commutes
        0.3 + _bump(h, 11, 3.0) + 0.5 * _bump(h, 20, 2),              # search: working day
        0.5 + _bump(h, 13, 4.0),                                      # display: daytime
        0.05 + _bump(h, 20.5, 1.5) + 0.3 * _bump(h, 7.5, 1.0),        # linear TV: prime time + breakfast
    ])
    return prof / prof.sum(1, keepdims=True)


def segment_response_daypart(n_segments: int = 6) -> np.ndarray:
    """Planted hour x weekday conversion profile of each segment, ``(K, 7, 24)``, mean 1 per segment.

    Weekday 0 is Monday. This is the truth ``daypart_truth_corr`` is scored against.
    """
    h = np.arange(HOURS, dtype=float)
    centres = [(21.5, 13.0), (21.0, 16.0), (8.0, 18.0), (20.0, 10.0), (11.0, 15.0), (12.5, 20.5)]
    weekend_lift = [1.25, 1.35, 0.75, 1.30, 1.0, 1.15]
    out = np.empty((n_segments, WEEKDAYS, HOURS))
    for k in range(n_segments):
        c1, c2 = centres[k % len(centres)]
        hour = 0.15 + _bump(h, c1, 2.0) + 0.7 * _bump(h, c2, 2.5)
        for w in range(WEEKDAYS):
            we = weekend_lift[k % 6] if w >= 5 else 1.0
            shift = 1.5 if w >= 5 else 0.0   # later mornings at weekends
            hour_w = 0.15 + _bump(h, c1, 2.0) + 0.7 * _bump(h, c2 + shift, 2.5) if w >= 5 else hour
            out[k, w] = we * hour_w
        out[k] /= out[k].mean()
    return out


# --- inputs -------------------------------------------------------------------------------------
def _frames(panel_or_frames) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """(users, truth or None, params) from a SyntheticPanel, a (data, truth) pair or a dict of frames."""
    if hasattr(panel_or_frames, "data"):
        return panel_or_frames.data, getattr(panel_or_frames, "truth", None), getattr(panel_or_frames,
                                                                                      "params", {}) or {}
    for attr in ("users", "customers", "frame"):
        if isinstance(getattr(panel_or_frames, attr, None), pd.DataFrame):
            t = getattr(panel_or_frames, "truth", None)
            return (getattr(panel_or_frames, attr), t if isinstance(t, pd.DataFrame) else None,
                    getattr(panel_or_frames, "params", {}) or {})
    if isinstance(panel_or_frames, dict):
        users = panel_or_frames.get("users", panel_or_frames.get("data"))
        return users, panel_or_frames.get("truth"), panel_or_frames.get("params", {}) or {}
    if isinstance(panel_or_frames, (tuple, list)):
        users = panel_or_frames[0]
        truth = panel_or_frames[1] if len(panel_or_frames) > 1 else None
        return users, truth, {}
    return panel_or_frames, None, {}


def _user_inputs(users: pd.DataFrame, truth: pd.DataFrame | None, rng: np.random.Generator) -> dict:
    n = len(users)
    if "user_id" not in users.columns:
        raise ValueError("exposures: the user table has no `user_id` column; pass the unified table "
                         "(generate_panel(...).data) or a frame with user_id.")
    ids = users["user_id"].astype(str).to_numpy()
    seg = None
    for frame in (truth, users):
        if frame is not None and "true_segment" in frame.columns:
            seg = pd.Series(frame["true_segment"].to_numpy(), index=frame["user_id"].astype(str))
            seg = seg.reindex(ids).fillna(0).astype(int).to_numpy()
            break
    if seg is None:
        seg = rng.integers(0, 6, n)
    seg = np.clip(seg, 0, SEGMENT_AFFINITY.shape[0] - 1)
    use = np.ones((n, C))
    for j, col in enumerate(_MINUTE_COLS):
        if col in users.columns:
            m = pd.to_numeric(users[col], errors="coerce").fillna(0).to_numpy(float)
            use[:, j] = np.power((m + 5.0) / (np.nanmedian(m) + 5.0), 0.6)
    if "monthly_conversions" in users.columns:
        conv = pd.to_numeric(users["monthly_conversions"], errors="coerce").fillna(0).to_numpy(float)
    else:
        conv = np.ones(n)
    shop = np.power((conv + 1.0) / (conv.mean() + 1.0), 0.4)
    use[:, 3] = shop * np.sqrt(use[:, 0])
    use[:, 4] = np.sqrt(use[:, 0] * use[:, 1])
    if "age_group" in users.columns:
        age = users["age_group"].astype(str).map({a: i for i, a in enumerate(_AGE_GROUPS)})
        age = age.fillna(2).to_numpy(float)
        use[:, 5] = 0.5 + 0.25 * age
    if "state" in users.columns and users["state"].notna().any():
        geo = users["state"].astype("string").fillna("unknown").to_numpy(str)
    else:
        sizes = rng.dirichlet(np.full(N_SYNTHETIC_GEOS, 3.0))
        geo = np.array([f"R{i + 1:02d}" for i in range(N_SYNTHETIC_GEOS)])[
            rng.choice(N_SYNTHETIC_GEOS, n, p=sizes)]
    return {"ids": ids, "seg": seg, "use": use, "conv": conv, "geo": geo}


# --- the generator ------------------------------------------------------------------------------
def measurement_panel(n_customers: int, seed: int = 42, max_users: int | None = MAX_PANEL_USERS) -> np.ndarray | None:
    """Sorted positions of the measurement panel among ``n_customers`` rows (None: everyone is measured).

    Seeded by ``[seed, 1702]``; a writer that produces the customers chunk by chunk keeps these rows and
    passes them with ``drawn_from=n_customers`` (the same panel as passing every customer).
    """
    if max_users is None or n_customers <= max_users:
        return None
    return np.sort(np.random.default_rng([seed, 1702]).choice(n_customers, max_users, replace=False))


def generate_exposures(panel_or_frames, seed: int = 42, weeks: int = DEFAULT_WEEKS,
                       start_date: str | None = None, max_users: int | None = MAX_PANEL_USERS,
                       drawn_from: int | None = None) -> tuple[dict[str, pd.DataFrame], dict, pd.DataFrame]:
    """Simulate the campaign for the users of ``panel_or_frames``.

    Returns ``(raw_frames, truth_json, users_truth)``: the raw tables by file stem, the truth document
    and the per-user truth (propensities, baseline rate, expected conversions with and without media).
    Exposure logs are hour-level, so a customer base larger than ``max_users`` gets a random
    **measurement panel** of ``max_users`` customers (as a people meter or an ad-server panel would):
    every media table and the truth cover those customers only (``truth["measurement_panel"]``).
    ``drawn_from``: the users given are already that panel (the rows :func:`measurement_panel` picks among
    ``drawn_from`` customers, in order), as a chunked writer collects them.
    """
    users, truth_users, params = _frames(panel_or_frames)
    n_base = len(users) if drawn_from is None else int(drawn_from)
    pick = measurement_panel(n_base, seed, max_users) if drawn_from is None else None
    if pick is not None:
        users = users.iloc[pick].reset_index(drop=True)
    rng = np.random.default_rng([seed, 1701])
    u = _user_inputs(users, truth_users, rng)
    n, seg, geo_u = len(u["ids"]), u["seg"], u["geo"]
    D = int(weeks) * 7
    if D < 2 * FLIGHT_DAYS:
        raise ValueError(f"weeks={weeks}: need at least {2 * FLIGHT_DAYS // 7} weeks (a pre-period and a "
                         "two-week geo test).")
    obs = pd.Timestamp(start_date) if start_date else (
        pd.Timestamp(params.get("observation_date", "2026-06-30")) - pd.Timedelta(days=D - 1))
    dates = pd.date_range(obs, periods=D, freq="D")
    weekday = dates.weekday.to_numpy()

    # propensities
    geos = np.unique(geo_u)
    geo_idx = np.searchsorted(geos, geo_u)
    region = np.exp(rng.normal(0, 0.25, (len(geos), C)))
    gamma = rng.gamma(GAMMA_SHAPE, 1.0 / GAMMA_SHAPE, (n, C))
    w = SEGMENT_AFFINITY[seg] * u["use"] * region[geo_idx] * gamma
    h0 = BASELINE_HAZARD * np.power((u["conv"] + 1) / (u["conv"].mean() + 1), 0.7) * np.exp(
        rng.normal(0, BASELINE_LOG_SD, n))

    # design: user-level holdout, geo holdout dark for the last FLIGHT_DAYS days
    user_hold = rng.random(n) < USER_HOLDOUT_SHARE
    n_geo_hold = max(1, int(round(GEO_HOLDOUT_SHARE * len(geos))))
    geo_hold_set = set(rng.choice(geos, n_geo_hold, replace=False).tolist())
    geo_hold = np.array([g in geo_hold_set for g in geo_u])
    test_days = np.arange(D) >= D - FLIGHT_DAYS

    # national flighted spend
    n_flights = int(np.ceil(D / FLIGHT_DAYS))
    flight_mult = np.exp(rng.uniform(-0.7, 0.7, (n_flights, C)))
    flight = np.minimum(np.arange(D) // FLIGHT_DAYS, n_flights - 1)
    daily_noise = np.exp(rng.normal(0, 0.15, (D, C)))
    planned = (n / 1000.0) * BASE_DAILY_SPEND_PER_1000 * flight_mult[flight] * daily_noise   # (D, C)
    impressions_bought = planned * 1000.0 / CPM
    W = w.sum(0)
    rate_per_dollar = w * (1000.0 / CPM) / W          # impressions per user per planned USD

    resp = segment_response_daypart(SEGMENT_AFFINITY.shape[0])        # (K, 7, 24)
    day_mult = resp.mean(2)                                            # (K, 7)
    hour_p = resp / resp.sum(2, keepdims=True)                         # (K, 7, 24)
    chan_hour = channel_daypart()                                      # (C, 24)

    # hour-of-day CDFs: impressions by (channel, segment, weekday), conversions by (segment, weekday)
    imp_p = chan_hour[:, None, None, :] * hour_p[None, :, :, :]
    imp_cdf = np.cumsum(imp_p / imp_p.sum(-1, keepdims=True), -1).reshape(-1, HOURS)
    conv_cdf = np.cumsum(hour_p, -1).reshape(-1, HOURS)

    exp_parts, conv_parts, path_parts = [], [], []
    incr = np.zeros(C)                       # expected incremental conversions by channel (realised imps)
    exp_media = np.zeros(n)
    exp_base = np.zeros(n)
    geo_cf = 0.0                             # expected conversions lost by the dark geos in the test
    delivered = np.zeros((D, C))
    for start in range(0, n, CHUNK_USERS):
        sl = slice(start, min(n, start + CHUNK_USERS))
        crng = np.random.default_rng([seed, 1701, start // CHUNK_USERS + 1])
        m = sl.stop - sl.start
        s = seg[sl]
        elig = np.ones((m, D))
        elig[user_hold[sl]] = 0.0
        elig[np.ix_(geo_hold[sl], test_days)] = 0.0
        lam = rate_per_dollar[sl][:, :, None] * planned.T[None, :, :]             # (m, C, D)
        imps = crng.poisson(lam * elig[:, None, :])
        delivered += (imps.sum(0).T * CPM / 1000.0)
        dm = day_mult[s][:, weekday]                                              # (m, D)
        media = np.zeros((m, D))
        media_cf = np.zeros((m, D))                 # media with dark geos switched back on (counterfactual)
        contrib = np.zeros((m, C, D))
        for c in range(C):
            a = adstock(imps[:, c, :], ADSTOCK_DECAY[c])
            contrib[:, c] = BETA[s, c][:, None] * hill(a, HILL_HALF[c], HILL_SHAPE[c])
            media += contrib[:, c]
            g = geo_hold[sl] & ~user_hold[sl]
            if g.any():
                # counterfactual: dark geos served in the test window (average of 4 Poisson draws)
                for _ in range(4):
                    imp_cf = np.where(test_days, crng.poisson(lam[g, c, :]), imps[g, c, :])
                    a_cf = adstock(imp_cf, ADSTOCK_DECAY[c])
                    media_cf[g] += 0.25 * BETA[s[g], c][:, None] * hill(a_cf, HILL_HALF[c], HILL_SHAPE[c])
        rate = dm * (h0[sl][:, None] + media)
        y = crng.poisson(rate)
        incr += (dm[:, None, :] * contrib).sum((0, 2))
        exp_media[sl] = (dm * media).sum(1)
        exp_base[sl] = (dm * h0[sl][:, None]).sum(1)
        g = geo_hold[sl] & ~user_hold[sl]
        if g.any():
            geo_cf += float((dm[g][:, test_days] * (media_cf[g][:, test_days] - media[g][:, test_days])).sum())

        # impression hours: channel inventory x segment activity of that weekday
        ui, ci, di = np.nonzero(imps)
        cnt = imps[ui, ci, di]
        ui, ci, di = np.repeat(ui, cnt), np.repeat(ci, cnt), np.repeat(di, cnt)
        K_ = hour_p.shape[0]
        hr = _draw_hours(crng, (ci * K_ + s[ui]) * 7 + weekday[di], imp_cdf)
        exp_parts.append(_count_cells(ui + sl.start, di, hr, ci, D))

        # conversions with hours from the segment's profile
        yu, yd = np.nonzero(y)
        yc = y[yu, yd]
        yu, yd = np.repeat(yu, yc), np.repeat(yd, yc)
        yh = _draw_hours(crng, s[yu] * 7 + weekday[yd], conv_cdf)
        cv = _count_cells(yu + sl.start, yd, yh, None, D)
        conv_parts.append(cv)
        path_parts.append(_touch_paths(ui + sl.start, di, hr, ci, crng.random(ui.size), cv, sl.start, m, D))

    ids = u["ids"]
    exp = {k: np.concatenate([part[k] for part in exp_parts]) for k in ("u", "d", "h", "c", "n")}
    exposures = pd.DataFrame({
        "user_id": ids[exp["u"]], "date": dates.values[exp["d"]],
        "hour": exp["h"].astype("int8"), "channel": np.array(CHANNELS)[exp["c"]],
        "impressions": exp["n"].astype("int32")})
    cv = {k: np.concatenate([part[k] for part in conv_parts]) for k in ("u", "d", "h", "n")}
    conversions = pd.DataFrame({"user_id": ids[cv["u"]], "date": dates.values[cv["d"]],
                                "hour": cv["h"].astype("int8"), "conversions": cv["n"].astype("int32")})
    pth = {k: np.concatenate([part[k] for part in path_parts]) for k in ("u", "path", "n_touches", "conversions")}
    touch_paths = pd.DataFrame({"user_id": ids[pth["u"]], "path": pth["path"].astype(object),
                                "n_touches": pth["n_touches"].astype(np.int64),
                                "converted": pth["conversions"] > 0, "conversions": pth["conversions"]})
    campaign = np.array([f"flight_{f + 1}" for f in flight])
    spend = pd.DataFrame({
        "date": np.repeat(dates.values, C), "campaign": np.repeat(campaign, C),
        "channel": np.tile(CHANNELS, D), "planned_spend": planned.ravel().round(2),
        "spend": delivered.ravel().round(2),
        "impressions": (delivered * 1000.0 / CPM).ravel().round().astype(np.int64)})
    assignment = pd.DataFrame({"user_id": ids, "geo": geo_u, "user_holdout": user_hold,
                               "geo_holdout": geo_hold})

    users_truth = pd.DataFrame({"user_id": ids, "true_segment": seg, "geo": geo_u, "baseline_rate": h0,
                                "expected_baseline_conversions": exp_base,
                                "expected_media_conversions": exp_media,
                                **{f"rate_per_dollar_{c}": rate_per_dollar[:, j] for j, c in enumerate(CHANNELS)}})
    truth = _truth_document(users_truth, seed, D, dates, incr, geo_cf, geo_hold, user_hold, test_days,
                            planned, resp)
    truth["measurement_panel"] = {"customers": int(n_base), "panel": int(n),
                                  "sampled": bool(n < n_base)}
    raw = {"exposures": exposures, "media_spend": spend, "touch_paths": touch_paths,
           "campaign_conversions": conversions, "media_assignment": assignment}
    return raw, truth, users_truth


def _count_cells(u: np.ndarray, d: np.ndarray, h: np.ndarray, c: np.ndarray | None, D: int) -> dict:
    """Events counted per (user, day, hour[, channel]) cell, cells in sorted order (one integer key, not a
    pandas groupby: the same rows as ``groupby([...], sort=True).size()``)."""
    key = (u.astype(np.int64) * D + d) * HOURS + h
    if c is not None:
        key = key * C + c
    cells, counts = np.unique(key, return_counts=True)
    out = {}
    if c is not None:
        out["c"] = cells % C
        cells = cells // C
    out["h"], cells = cells % HOURS, cells // HOURS
    out["d"], out["u"] = cells % D, cells // D
    out["n"] = counts
    return out


def _touch_paths(u: np.ndarray, d: np.ndarray, h: np.ndarray, c: np.ndarray, r: np.ndarray, cv: dict,
                 start: int, m: int, D: int) -> dict:
    """Touch paths of users ``start ... start + m - 1``: each user's impressions in time order (``r`` orders
    those of one hour) up to the hour of the first conversion, channel names joined by ``>`` (Arrow's join
    on list offsets instead of one Python join per user)."""
    # (user, day, hour) as one integer key: lexsort on two keys instead of four (the same order)
    order = np.lexsort((r, (u.astype(np.int64) * D + d) * HOURS + h))
    u, d, h, c = u[order], d[order], h[order], c[order]
    # conversion cells are sorted by (user, day, hour): a user's first cell is their first conversion
    cu = cv["u"] - start
    firsts = np.r_[True, cu[1:] != cu[:-1]] if cu.size else np.zeros(0, bool)
    fd, fh = np.full(m, D + 1), np.zeros(m, dtype=np.int64)
    fd[cu[firsts]], fh[cu[firsts]] = cv["d"][firsts], cv["h"][firsts]
    conv = np.bincount(cu, weights=cv["n"], minlength=m).astype(np.int64)
    lu = u - start
    before = d * 24 + h <= fd[lu] * 24 + fh[lu]
    lu, c = lu[before], c[before]
    users, first, n_touches = np.unique(lu, return_index=True, return_counts=True)
    offsets = pa.array(np.r_[first, lu.size].astype(np.int32))
    names = pa.array(CHANNELS, pa.string()).take(pa.array(c.astype(np.int32)))
    path = pc.binary_join(pa.ListArray.from_arrays(offsets, names), ">").to_numpy(zero_copy_only=False)
    return {"u": users + start, "path": path, "n_touches": n_touches, "conversions": conv[users]}


def _draw_hours(rng: np.random.Generator, key: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """One hour per event from the CDF row ``cdf[key]`` (grouped by key: no (events x 24) matrix)."""
    u = rng.random(len(key))
    out = np.empty(len(key), dtype=np.int64)
    order = np.argsort(key, kind="stable")
    ks, starts = np.unique(key[order], return_index=True)
    bounds = np.r_[starts, len(order)]
    for i, k in enumerate(ks):
        idx = order[bounds[i]:bounds[i + 1]]
        out[idx] = np.minimum(np.searchsorted(cdf[k], u[idx], side="right"), HOURS - 1)
    return out


# --- truth: evaluator, response curves, planted optimum -----------------------------------------
@dataclass(frozen=True)
class _Audience:
    """The two arrays of an audience that :func:`true_outcome` reads (taken out of the frame once)."""

    rates: np.ndarray      # (n, C) rate_per_dollar_<channel>
    seg: np.ndarray        # (n,) true segment


def _audience(users_truth) -> _Audience:
    """``users_truth`` (rows of media_users_truth) as arrays; an :class:`_Audience` is returned as is.

    The optimiser evaluates :func:`true_outcome` thousands of times on the same audience: selecting the
    columns of the frame on every call cost more than the evaluation itself.
    """
    if isinstance(users_truth, _Audience):
        return users_truth
    return _Audience(users_truth[[f"rate_per_dollar_{c}" for c in CHANNELS]].to_numpy(),
                     users_truth["true_segment"].to_numpy())


def _rates_for(users_truth, spend_per_person: np.ndarray, days: int,
               n_population: int | None = None) -> np.ndarray:
    """Daily impressions per user ``(n, C)`` when spending ``spend_per_person`` USD per audience member.

    Targetable channels deliver the audience's spend inside the audience (in proportion to propensity);
    the others are national buys: the audience receives only its share of the impressions.
    """
    x = np.asarray(spend_per_person, float)
    r = _audience(users_truth).rates
    total = x * len(r)                                    # USD per channel for the audience
    inside = r / r.sum(0) * (1000.0 / CPM) * total        # targeted: all impressions in the audience
    national = r * total                                   # national: rate per planned USD
    return np.where(TARGETABLE, inside, national) / days


_LAMBDA_GRID = np.r_[0.0, np.geomspace(1e-3, 60.0, 80)]


@lru_cache(maxsize=1)
def _expected_hill_table() -> np.ndarray:
    """E[S_c(A)] at steady state when daily impressions are Poisson(lambda), for each lambda of the grid.

    ``A = sum_k delta^k N_k`` (N_k iid Poisson(lambda)); 4,000 draws with common random numbers per channel.
    """
    from scipy import stats
    rng = np.random.default_rng(20260630)
    K, M = 30, 4000
    u = rng.random((M, K)).ravel()
    out = np.zeros((C, len(_LAMBDA_GRID)))
    draws = []
    for lam in _LAMBDA_GRID[1:]:               # inverse-CDF Poisson draws (common uniforms: smooth in lambda)
        kmax = int(lam + 10 * np.sqrt(lam) + 15)
        cdf = stats.poisson.cdf(np.arange(kmax + 1), lam)
        draws.append(np.minimum(np.searchsorted(cdf, u), kmax).reshape(M, K).astype(float))
    for c in range(C):
        w = ADSTOCK_DECAY[c] ** np.arange(K)
        for i, n in enumerate(draws, start=1):
            out[c, i] = hill(n @ w, HILL_HALF[c], HILL_SHAPE[c]).mean()
    return out


def expected_response(daily_rate: np.ndarray) -> np.ndarray:
    """Planted expected response E[S_c(adstock)] per user-day for daily impression rates ``(n, C)``.

    The exact expectation of the simulated model (Poisson daily impressions, geometric adstock, Hill) at a
    constant daily rate, interpolated on a grid: this is what a constant-spend plan earns per day.
    """
    tab = _expected_hill_table()
    lam = np.asarray(daily_rate, float)
    out = np.empty_like(lam)
    for c in range(C):
        col = lam[..., c]
        # a channel with no spend sits at the grid's first point (what interp returns for 0): the optimiser
        # and the response curves evaluate many such allocations
        out[..., c] = np.interp(col, _LAMBDA_GRID, tab[c]) if col.any() else tab[c, 0]
    return out


def true_outcome(spend_per_person, users_truth: pd.DataFrame, days: int = DEFAULT_WEEKS * 7,
                 objective: str = "conversions", effective_frequency: int = 1) -> float:
    """Planted value of an allocation for the audience ``users_truth`` (rows of media_users_truth).

    ``objective="conversions"``: expected incremental conversions per person over ``days`` at constant daily
    spend (:func:`expected_response`: the simulated model's exact steady-state expectation; weekday profile
    averaging to 1); ``"reach"``: share of the audience with at least
    ``effective_frequency`` impressions (Poisson given the planted propensities).
    """
    aud = _audience(users_truth)
    lam = _rates_for(aud, spend_per_person, days)
    if objective == "reach":
        from scipy import stats
        return float(stats.poisson.sf(effective_frequency - 1, lam.sum(1) * days).mean())
    seg = aud.seg
    return float((days * (BETA[seg] * expected_response(lam)).sum(1)).mean())


def planted_optimum(users_truth: pd.DataFrame, budget_per_person: float = DEFAULT_BUDGET_PER_PERSON,
                    days: int = DEFAULT_WEEKS * 7, objective: str = "conversions",
                    effective_frequency: int = 1, lower=None, upper=None, seed: int = 0) -> np.ndarray:
    """The allocation (USD per person per channel) maximising :func:`true_outcome` for the budget."""
    from scipy.optimize import minimize

    lo = np.zeros(C) if lower is None else np.asarray(lower, float)
    hi = np.full(C, budget_per_person) if upper is None else np.asarray(upper, float)
    aud = _audience(users_truth)
    f = lambda x: -true_outcome(x, aud, days, objective, effective_frequency) / budget_per_person
    cons = [{"type": "eq", "fun": lambda x: x.sum() / budget_per_person - 1.0}]
    rng = np.random.default_rng(seed)
    best = None
    for s in range(6):
        x0 = np.full(C, budget_per_person / C) if s == 0 else rng.dirichlet(np.ones(C)) * budget_per_person
        x0 = np.clip(x0, lo, hi)
        r = minimize(f, x0, method="SLSQP", bounds=list(zip(lo, hi)), constraints=cons,
                     options={"maxiter": 300, "ftol": 1e-10})
        if best is None or r.fun < best.fun:
            best = r
    return np.clip(best.x, lo, hi)


def _truth_document(users_truth, seed, D, dates, incr, geo_cf, geo_hold, user_hold, test_days, planned,
                    resp) -> dict:
    seg = users_truth["true_segment"].to_numpy()
    grid = [0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0]
    curves, optimum = {}, {}
    for k in np.unique(seg):
        ut = _audience(users_truth[seg == k])
        per = {}
        for j, c in enumerate(CHANNELS):
            vals = []
            for g in grid:
                x = np.zeros(C)
                x[j] = g
                vals.append(round(true_outcome(x, ut, D), 6))
            per[c] = vals
        curves[str(int(k))] = per
        x = planted_optimum(ut, DEFAULT_BUDGET_PER_PERSON, D)
        optimum[str(int(k))] = {"allocation_per_person": dict(zip(CHANNELS, np.round(x, 6).tolist())),
                                "expected_conversions_per_person": true_outcome(x, ut, D)}
    treated = ~user_hold
    exp_total = users_truth["expected_baseline_conversions"] + users_truth["expected_media_conversions"]
    lift_abs = float(users_truth.loc[treated, "expected_media_conversions"].mean())
    base = float(users_truth.loc[treated, "expected_baseline_conversions"].mean())
    shares = incr / incr.sum() if incr.sum() > 0 else incr
    return {
        "seed": int(seed), "days": int(D), "start_date": str(dates[0].date()), "channels": CHANNELS,
        "channel_labels": CHANNEL_LABELS, "cpm_usd": CPM.tolist(), "targetable": TARGETABLE.tolist(),
        "adstock_decay": ADSTOCK_DECAY.tolist(), "hill_half": HILL_HALF.tolist(),
        "hill_shape": HILL_SHAPE.tolist(), "gamma_shape": GAMMA_SHAPE.tolist(),
        "segment_affinity": SEGMENT_AFFINITY.tolist(), "beta": BETA.tolist(),
        "baseline_hazard": BASELINE_HAZARD,
        "response_daypart": {str(k): resp[k].round(6).tolist() for k in range(resp.shape[0])},
        "objective": {"name": "expected incremental conversions per person of a segment over the campaign",
                      "budget_per_person_usd": DEFAULT_BUDGET_PER_PERSON, "days": int(D),
                      "constraints": "sum of spend = budget, spend >= 0"},
        "response_curves": {"spend_per_person_usd": grid, "by_segment": curves},
        "optimal_allocation": optimum,
        "incremental_conversions": dict(zip(CHANNELS, incr.round(4).tolist())),
        "incremental_share": dict(zip(CHANNELS, shares.round(6).tolist())),
        "user_holdout": {"share": USER_HOLDOUT_SHARE, "n_holdout": int(user_hold.sum()),
                         "lift_abs_per_user": lift_abs, "baseline_per_user": base,
                         "lift_rel": lift_abs / base if base else None,
                         "expected_conversions_per_treated_user": float(exp_total[treated].mean())},
        "geo_holdout": {"share": GEO_HOLDOUT_SHARE, "geos": sorted(set(users_truth["geo"][geo_hold])),
                        "test_start": str(dates[test_days][0].date()), "test_days": int(test_days.sum()),
                        "lift_conversions": float(geo_cf),
                        "meaning": "expected conversions the dark geos lost in the test window"},
    }


def write_exposures(panel_or_frames, raw_dir: str | Path, truth_dir: str | Path, seed: int = 42,
                    weeks: int = DEFAULT_WEEKS, max_users: int | None = MAX_PANEL_USERS,
                    drawn_from: int | None = None) -> dict[str, Path]:
    """Generate the campaign and write the raw media files into ``raw_dir`` and the truth into ``truth_dir``.

    Returns the written paths by name. ``panel_or_frames``: a ``SyntheticPanel`` (``.data``/``.truth``),
    a ``(users, truth)`` pair or a dict ``{"users": ..., "truth": ..., "params": ...}``; ``drawn_from`` as in
    :func:`generate_exposures`.
    """
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    raw, truth, users_truth = generate_exposures(panel_or_frames, seed=seed, weeks=weeks, max_users=max_users,
                                                 drawn_from=drawn_from)
    out = {}
    for name, df in raw.items():
        out[name] = raw_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out[name])
    out["media_truth"] = truth_dir / "media_truth.json"
    out["media_truth"].write_text(json.dumps(truth, indent=2))
    out["media_users_truth"] = truth_dir / "media_users_truth.parquet"
    users_truth.to_parquet(out["media_users_truth"], index=False)
    return out
