"""The world's knobs, the planted segments, selection into the customer base, and the simulation.

:func:`simulate` draws ``n`` customers and their 24 monthly waves (plus sign-up history and the future)
from one ``numpy.random.Generator``; :mod:`helpers.generate` turns the resulting :class:`World` into the
22-column snapshot, the source files and the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from . import behaviour as B
from . import future as F
from . import places as PL
from . import planted
from . import transactions as TX
from . import waves as W

# --- planted segments, profiles and selection into the customer base ------------------------------
# The numbers, with what each table means and its rows/columns, are in planted.yaml (section "world"):
# P_<column> = P(category | segment) of a profile column (per token for the multi-valued ones),
# INCLUSION_BY_* = relative inclusion in the customer base (raking on age can correct the age part, the
# segment part only through its correlates), *_MATCH_BY_* = P(matched by the partner / data broker).
SEGMENT_NAMES: list[str] = planted.load().labels["segments"]
K = len(SEGMENT_NAMES)
(POP_SHARES, P_AGE, P_INCOME, P_TRAVELER, P_PURCHASE, P_EVENTS, P_INTENT, P_EDU, P_MARITAL, P_OWNER, P_NET_WORTH,
 HOUSEHOLD_EXTRA_MEAN, P_CHILDREN_IF_HH3, TICKET_RATE, INCLUSION_BY_AGE, INCLUSION_BY_SEGMENT,
 PARTNER_MATCH_BY_SEGMENT, THIRD_PARTY_MATCH_BY_AGE) = planted.tables(
    "world", "POP_SHARES", "P_AGE", "P_INCOME", "P_TRAVELER", "P_PURCHASE", "P_EVENTS", "P_INTENT", "P_EDU",
    "P_MARITAL", "P_OWNER", "P_NET_WORTH", "HOUSEHOLD_EXTRA_MEAN", "P_CHILDREN_IF_HH3", "TICKET_RATE",
    "INCLUSION_BY_AGE", "INCLUSION_BY_SEGMENT", "PARTNER_MATCH_BY_SEGMENT", "THIRD_PARTY_MATCH_BY_AGE")
HOUSEHOLD_MAX = 8
THIRD_PARTY_ITEM_MISSING = 0.04

MAX_TENURE_DAYS = 5 * 365
MIN_TENURE_DAYS = 30
NOISE_COLUMNS_ALL = ["time_on_news_min", "time_on_gaming_min", "time_on_radio_min", "time_on_email_min"]


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the synthetic world (defaults = the shipped world; see notebook 00).

    Attributes
    ----------
    n_months : int, default 24
        Monthly waves written (ending with the observation month).
    history_months : int, default 60
        Months simulated from the earliest possible sign-up (tenure up to 5 years) to the observation month.
    future_months : int, default 6
        Months simulated after the observation month (future outcomes, truth only).
    tail_df : float, default 5.0
        Degrees of freedom of the split Student-t margins of the behaviour levels (``inf`` = Gaussian).
    skew : float, default 1.3
        Right/left scale ratio of those margins on the log scale (1 = symmetric).
    log_sd_scale : float, default 1.0
        Multiplies every within-segment log sd (larger = more overlap between segments).
    copula_strength : float, default 1.0
        0 = independent behaviours within a segment, 1 = :data:`.behaviour.COPULA_R`.
    zero_inflation : float, default 1.0
        Multiplies P(non-user of a channel) (0 = everyone uses every channel).
    count_shape : float, default 2.0
        Gamma shape of the month-to-month purchase-rate noise (``inf`` = Poisson purchasing).
    ticket_sd : float, default 0.5
        Log sd of a purchase's amount around the user's ticket size.
    monthly_noise_sd : float, default 0.15
        Log sd of month-to-month variation of minutes per channel.
    seasonality : float, default 0.08
        Amplitude of the yearly cycle of minutes and purchases (peak in December).
    selection_segment : float, default 1.0
        Exponent on :data:`INCLUSION_BY_SEGMENT` (0 = selection does not depend on the segment).
    selection_behaviour : float, default 0.6
        Probit slope of inclusion on overall engagement (0 = selection does not depend on behaviour).
    state_effects : float, default 1.0
        Multiplies the regional effects on minutes (:data:`.places.REGION_EFFECT`).
    n_noise_features : int, default 2
        Segment-independent extension metrics written to ``engagement.csv`` (up to 4).
    census : str or None, default "auto"
        Census file for state x age x sex (``"auto"`` = look it up; ``None`` = built-in state shares).
    """

    n_months: int = 24
    history_months: int = 60
    future_months: int = 6
    tail_df: float = 5.0
    skew: float = 1.3
    log_sd_scale: float = 1.0
    copula_strength: float = 1.0
    zero_inflation: float = 1.0
    count_shape: float = 2.0
    ticket_sd: float = 0.5
    monthly_noise_sd: float = 0.15
    seasonality: float = 0.08
    selection_segment: float = 1.0
    selection_behaviour: float = 0.6
    state_effects: float = 1.0
    n_noise_features: int = 2
    census: str | None = "auto"

    @classmethod
    def flattering(cls, **kw) -> "WorldConfig":
        """The old world's assumptions: Gaussian log margins, independent, no zeros, Poisson counts."""
        base = dict(tail_df=float("inf"), skew=1.0, copula_strength=0.0, zero_inflation=0.0,
                    count_shape=float("inf"), selection_segment=0.0, selection_behaviour=0.0)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    @property
    def noise_columns(self) -> list[str]:
        return NOISE_COLUMNS_ALL[: max(0, min(self.n_noise_features, len(NOISE_COLUMNS_ALL)))]


def draw_categorical(rng: np.random.Generator, probs: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """One category index per row from ``probs[seg]`` by inverse CDF (vectorised)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(seg.shape[0])
    return (u[:, None] > cum[seg]).sum(axis=1)


def segment_inclusion(cfg: WorldConfig) -> np.ndarray:
    return (INCLUSION_BY_SEGMENT / INCLUSION_BY_SEGMENT.max()) ** cfg.selection_segment


def panel_segment_shares(cfg: WorldConfig | None = None) -> np.ndarray:
    """Segment shares in the customer base (analytic: the behaviour term has the same mean in each segment)."""
    cfg = cfg or WorldConfig()
    w = np.asarray(POP_SHARES) * (P_AGE @ INCLUSION_BY_AGE) * segment_inclusion(cfg)
    return w / w.sum()


@dataclass
class World:
    """One simulated customer base: user-level arrays, the month grid and per-cell arrays, the purchase log."""

    cfg: WorldConfig
    obs: pd.Timestamp
    user: dict = field(default_factory=dict)      # name -> array (n,)
    grid_months: np.ndarray = None                # datetime64[D] first day of each grid month
    window: slice = None                          # grid columns of the written waves
    obs_col: int = 0                              # grid column of the observation month
    cells: dict = field(default_factory=dict)     # name -> array (n, months of window+future)
    tx: dict = field(default_factory=dict)        # flat purchase log over window+future columns
    places_source: str = ""

    @property
    def n(self) -> int:
        return self.user["seg"].shape[0]


def _sample_customers(rng: np.random.Generator, n: int, cfg: WorldConfig, R: np.ndarray):
    """Segments, ages and copula latents of ``n`` customers: population draws kept with probability
    ``INCLUSION_BY_AGE[age] * segment_inclusion[seg] * Phi(selection_behaviour * engagement)``."""
    seg_p, age_p, z_p, have = [], [], [], 0
    inc_seg = segment_inclusion(cfg)
    while have < n:
        m = int((n - have) * 3.5) + 200
        seg = rng.choice(K, size=m, p=POP_SHARES)
        age = draw_categorical(rng, P_AGE, seg)
        z = B.draw_latent(rng, m, R)
        p = INCLUSION_BY_AGE[age] * inc_seg[seg] * special.ndtr(cfg.selection_behaviour * B.selection_index(z, R))
        keep = rng.random(m) < p
        seg_p.append(seg[keep]); age_p.append(age[keep]); z_p.append(z[keep])
        have += int(keep.sum())
    return np.concatenate(seg_p)[:n], np.concatenate(age_p)[:n], np.concatenate(z_p)[:n]


def simulate(n: int, rng: np.random.Generator, cfg: WorldConfig | None = None,
             observation_date: str = "2026-06-30") -> World:
    """Draw ``n`` customers, their latent monthly paths and everything observable from them."""
    cfg = cfg or WorldConfig()
    obs = pd.Timestamp(observation_date)
    obs_day = int(np.datetime64(obs.date(), "D").astype(np.int64))
    R = B.correlation(cfg.copula_strength, len(cfg.noise_columns))
    seg, age, z = _sample_customers(rng, n, cfg, R)

    # places and people
    table, src = PL.state_given_age_sex(cfg.census)
    gender = PL.draw_gender(rng, seg)
    state = PL.draw_state(rng, age, gender, table)
    region_eff = PL.REGION_EFFECT[PL.STATE_REGION[state]]

    # behaviour levels
    lev = B.levels(z, seg, cfg, region_eff)
    uses = B.draw_uses(rng, seg, cfg.zero_inflation)

    # month grid: history_months ending with the observation month, then future_months
    H, Fm = cfg.history_months, cfg.future_months
    obs_m = np.datetime64(obs.date(), "M")
    months = obs_m - (H - 1) + np.arange(H + Fm)
    starts = months.astype("datetime64[D]")
    ends = (months + 1).astype("datetime64[D]")
    start_day = starts.astype(np.int64)
    mdays = (ends - starts).astype(np.int64)
    tenure = rng.integers(MIN_TENURE_DAYS, MAX_TENURE_DAYS + 1, n)
    signup_day = obs_day - tenure
    signup_col = np.searchsorted(start_day, signup_day, side="right") - 1
    signup_col = np.clip(signup_col, 0, H - 1)

    lat = W.simulate_states(rng, seg, signup_col, H + Fm)
    extra = W.months_to_churn(rng, seg, lat[:, -1])
    # account closing day = first day of the first churned month
    churned_any = (lat == W.CHURNED)
    first_churn = np.where(churned_any.any(axis=1), churned_any.argmax(axis=1), -1)
    last_col = H + Fm - 1
    close_m = np.where(first_churn >= 0, months[0] + first_churn, months[0] + last_col + extra)
    close_day = close_m.astype("datetime64[D]").astype(np.int64)

    # available days per cell: from sign-up, up to the observation date in its month
    cols = np.arange(H + Fm)
    in_signup = cols[None, :] == signup_col[:, None]
    first_day = np.where(in_signup, signup_day[:, None], start_day[None, :]).astype(np.int32)
    avail = np.where(in_signup, (start_day + mdays)[None, :] - signup_day[:, None], mdays[None, :]).astype(np.int32)
    avail[:, H - 1] = np.minimum(avail[:, H - 1], obs_day - first_day[:, H - 1] + 1)
    avail[lat < 0] = 0
    del in_signup
    # activity is drawn day by day for the written window and the future; before the window only the
    # last month with activity matters (last_seen_days_ago), drawn for that month alone
    w0 = H - cfg.n_months
    sl = slice(w0, H + Fm)
    d_w = W.active_days(rng, lat[:, sl], avail[:, sl])
    off_w = W.last_active_offset(rng, d_w, avail[:, sl])
    rows = np.arange(n)
    past_w = off_w[:, : cfg.n_months] >= 0
    any_w = past_w.any(axis=1)
    col_w = cfg.n_months - 1 - past_w[:, ::-1].argmax(axis=1)
    last_act_day = np.where(any_w, first_day[rows, w0 + col_w] + off_w[rows, col_w], -1).astype(np.int64)
    hist = np.flatnonzero(~any_w)
    if hist.size and w0 > 0:
        busy = (lat[hist, :w0] == 0) | (lat[hist, :w0] == 1)
        has = busy.any(axis=1)
        hc = w0 - 1 - busy[:, ::-1].argmax(axis=1)
        h_rows = hist[has]
        hcol = hc[has]
        a = avail[h_rows, hcol]
        dd = rng.binomial(np.maximum(a, 0), W.ACTIVE_DAY_SHARE[lat[h_rows, hcol]]).astype(np.int16)
        off = W.last_active_offset(rng, dd, a)
        last_act_day[h_rows] = np.where(off >= 0, first_day[h_rows, hcol] + off, -1)
    last_act_day = np.maximum(last_act_day, signup_day)  # sign-up counts as activity
    last_seen = obs_day - last_act_day

    # window + future cells
    phase = (months[sl].astype(np.int64) % 12)  # 0 = January
    season = 1 + cfg.seasonality * np.cos(2 * np.pi * (phase - 11) / 12)
    a_w = avail[:, sl]
    frac = np.where(a_w > 0, d_w / np.maximum(a_w, 1), 0.0).astype(np.float32)
    minutes = np.exp(rng.normal(-cfg.monthly_noise_sd**2 / 2, cfg.monthly_noise_sd, (n, d_w.shape[1], 3))
                     .astype(np.float32))
    minutes *= (uses * lev["minutes"]).astype(np.float32)[:, None, :]
    minutes *= (frac / 0.7 * season[None, :].astype(np.float32))[:, :, None]
    np.minimum(minutes, 1440.0, out=minutes)
    tx = TX.draw(rng, lev["rate"], lev["ticket"], d_w, a_w, mdays[sl], season, first_day[:, sl],
                 off_w, cfg.count_shape, cfg.ticket_sd)
    noise_feat = np.round(lev["noise"] * np.exp(rng.normal(-0.045, 0.3, lev["noise"].shape)), 1)

    label = W.observed_label(lat[:, sl], d_w, a_w)
    user = dict(seg=seg, age=age, gender=gender, state=state, uses=uses, z=z, tenure=tenure,
                signup_day=signup_day, close_day=close_day, last_seen=last_seen, obs_day=obs_day,
                state_at_obs=lat[:, H - 1], noise=noise_feat, **{f"level_{k}": v for k, v in lev.items()})
    cells = dict(latent=lat[:, sl], label=label, days=d_w, avail=a_w, minutes=minutes)
    return World(cfg=cfg, obs=obs, user=user, grid_months=starts[sl], window=slice(0, cfg.n_months),
                 obs_col=cfg.n_months - 1, cells=cells, tx=tx, places_source=src)


def future_outcomes(world: World) -> pd.DataFrame:
    """Truth-only outcomes after the observation date (see :mod:`.future`)."""
    m = world.cells["latent"].shape[1]
    user = world.tx["cell"] // m
    u = world.user
    return F.outcomes(world.n, user, world.tx["day"], world.tx["amount"], u["obs_day"],
                      u["state_at_obs"] != W.CHURNED, u["close_day"])
