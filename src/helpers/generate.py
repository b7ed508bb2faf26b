"""Synthetic sources with planted truth: the built-in demo data of the pipeline.

A latent-segment model generates a customer base whose behaviour, partner (2nd-party) and enrichment
(3rd-party) attributes, and churn times depend on a hidden segment. :func:`generate_panel` returns the
unified 22-column table, the per-user truth and the model's parameters; :func:`write_sources` splits it
into the separate files a company would hold (CRM, engagement, billing, activity, support, partner file
+ match table, enrichment file + match table) and saves the truth beside them.

Everything is vectorised and driven by one ``numpy.random.Generator`` seeded from ``seed``; the
observation date is a parameter, never the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy import stats

from . import schema as S

DEFAULT_OBSERVATION_DATE = "2026-06-30"

# --- the latent-segment model -------------------------------------------------------------------
SEGMENT_NAMES = [
    "Social-first young adults",
    "Binge-streaming renters",
    "Podcast-heavy commuters",
    "Affluent family homeowners",
    "Low-engagement seniors",
    "Deal-seeking power shoppers",
]
K = len(SEGMENT_NAMES)
#: population share of each segment
POP_SHARES = np.array([0.18, 0.20, 0.15, 0.17, 0.18, 0.12])
#: median minutes/day (social, streaming video, podcasts) and median spend (USD/month) per segment
MEDIAN_MINUTES = np.array([
    [150.0, 60.0, 5.0],
    [45.0, 200.0, 8.0],
    [30.0, 40.0, 90.0],
    [25.0, 90.0, 25.0],
    [8.0, 30.0, 4.0],
    [80.0, 25.0, 15.0],
])
MEDIAN_SPEND = np.array([25.0, 45.0, 60.0, 150.0, 35.0, 90.0])
LOG_SD = 0.5  # within-segment sd of log minutes and log spend
CONVERSION_RATE = np.array([1.0, 1.5, 2.0, 4.0, 0.5, 9.0])
CONVERSION_LOG_SD = 0.3
TICKET_RATE = np.array([0.8, 1.2, 0.7, 1.0, 2.2, 1.5])

# P(category | segment); rows are segments, columns follow the schema's category order.
P_AGE = np.array([
    [0.55, 0.30, 0.08, 0.04, 0.02, 0.01],
    [0.20, 0.40, 0.22, 0.10, 0.05, 0.03],
    [0.08, 0.35, 0.30, 0.17, 0.07, 0.03],
    [0.02, 0.15, 0.35, 0.30, 0.13, 0.05],
    [0.01, 0.03, 0.06, 0.15, 0.30, 0.45],
    [0.10, 0.30, 0.28, 0.18, 0.09, 0.05],
])
P_INCOME = np.array([
    [0.35, 0.35, 0.18, 0.07, 0.04, 0.01],
    [0.15, 0.35, 0.28, 0.13, 0.07, 0.02],
    [0.05, 0.20, 0.30, 0.25, 0.15, 0.05],
    [0.01, 0.04, 0.12, 0.25, 0.33, 0.25],
    [0.25, 0.35, 0.22, 0.10, 0.06, 0.02],
    [0.08, 0.22, 0.30, 0.22, 0.13, 0.05],
])
P_TRAVELER = np.array([  # business, leisure, adventure, budget, luxury, non_traveler
    [0.03, 0.25, 0.25, 0.35, 0.02, 0.10],
    [0.05, 0.30, 0.10, 0.30, 0.05, 0.20],
    [0.40, 0.25, 0.10, 0.10, 0.10, 0.05],
    [0.15, 0.35, 0.10, 0.05, 0.30, 0.05],
    [0.02, 0.30, 0.02, 0.16, 0.05, 0.45],
    [0.10, 0.30, 0.15, 0.25, 0.15, 0.05],
])
# P(attribute present | segment) for the multi-valued columns (columns follow the schema's order)
P_PURCHASE = np.array([  # electronics fashion groceries home_garden beauty sports books toys automotive travel
    [0.45, 0.60, 0.30, 0.05, 0.45, 0.25, 0.15, 0.03, 0.05, 0.20],
    [0.55, 0.25, 0.40, 0.10, 0.15, 0.15, 0.35, 0.05, 0.08, 0.10],
    [0.40, 0.20, 0.35, 0.15, 0.10, 0.30, 0.55, 0.10, 0.15, 0.35],
    [0.35, 0.35, 0.60, 0.60, 0.25, 0.30, 0.25, 0.55, 0.30, 0.30],
    [0.10, 0.10, 0.55, 0.40, 0.10, 0.05, 0.30, 0.05, 0.10, 0.05],
    [0.60, 0.55, 0.50, 0.35, 0.40, 0.35, 0.20, 0.25, 0.25, 0.25],
])
P_EVENTS = np.array([  # concerts sports theatre comedy festivals conferences family_events
    [0.55, 0.25, 0.05, 0.25, 0.45, 0.03, 0.03],
    [0.30, 0.30, 0.10, 0.30, 0.15, 0.05, 0.05],
    [0.25, 0.20, 0.25, 0.35, 0.10, 0.45, 0.05],
    [0.20, 0.45, 0.30, 0.10, 0.05, 0.15, 0.60],
    [0.05, 0.10, 0.30, 0.05, 0.02, 0.01, 0.15],
    [0.35, 0.35, 0.10, 0.20, 0.25, 0.10, 0.20],
])
P_INTENT = np.array([  # auto home furniture appliances electronics travel luxury_goods
    [0.05, 0.03, 0.10, 0.05, 0.35, 0.20, 0.10],
    [0.10, 0.05, 0.15, 0.10, 0.30, 0.15, 0.05],
    [0.20, 0.10, 0.10, 0.10, 0.20, 0.35, 0.10],
    [0.30, 0.25, 0.30, 0.30, 0.20, 0.30, 0.30],
    [0.08, 0.05, 0.10, 0.20, 0.05, 0.10, 0.03],
    [0.25, 0.10, 0.25, 0.25, 0.45, 0.25, 0.25],
])
P_EDU = np.array([  # less_than_hs hs some_college bachelors graduate
    [0.08, 0.35, 0.40, 0.15, 0.02],
    [0.08, 0.32, 0.32, 0.22, 0.06],
    [0.02, 0.10, 0.20, 0.43, 0.25],
    [0.02, 0.10, 0.18, 0.40, 0.30],
    [0.15, 0.40, 0.25, 0.13, 0.07],
    [0.05, 0.25, 0.30, 0.28, 0.12],
])
P_MARITAL = np.array([  # single married partnered divorced widowed
    [0.75, 0.05, 0.18, 0.01, 0.01],
    [0.50, 0.20, 0.22, 0.07, 0.01],
    [0.35, 0.40, 0.15, 0.08, 0.02],
    [0.05, 0.80, 0.08, 0.06, 0.01],
    [0.10, 0.45, 0.05, 0.15, 0.25],
    [0.30, 0.45, 0.12, 0.11, 0.02],
])
P_OWNER = np.array([0.10, 0.20, 0.50, 0.88, 0.75, 0.55])
P_NET_WORTH = np.array([  # <50k 50k-100k 100k-250k 250k-500k 500k-1m 1m+
    [0.60, 0.25, 0.10, 0.04, 0.01, 0.00],
    [0.40, 0.30, 0.18, 0.08, 0.03, 0.01],
    [0.10, 0.20, 0.30, 0.25, 0.10, 0.05],
    [0.03, 0.07, 0.20, 0.30, 0.25, 0.15],
    [0.15, 0.20, 0.30, 0.20, 0.10, 0.05],
    [0.15, 0.25, 0.30, 0.18, 0.09, 0.03],
])
HOUSEHOLD_EXTRA_MEAN = np.array([0.4, 0.8, 1.0, 2.3, 0.6, 1.4])  # household_size = 1 + Poisson, capped
HOUSEHOLD_MAX = 8
P_CHILDREN_IF_HH3 = np.array([0.30, 0.45, 0.55, 0.90, 0.10, 0.65])  # P(children | household_size >= 3)

# --- panel selection and matching ------------------------------------------------------------------
#: P(a person of this age group ends up in the customer base): young people are over-represented,
#: so the unweighted panel is biased against the population margins and raking has work to do.
INCLUSION_BY_AGE = np.array([1.0, 0.9, 0.7, 0.55, 0.45, 0.35])
PARTNER_MATCH_BY_SEGMENT = np.array([0.40, 0.45, 0.50, 0.50, 0.30, 0.60])
THIRD_PARTY_MATCH_BY_AGE = np.array([0.45, 0.55, 0.65, 0.70, 0.72, 0.70])
THIRD_PARTY_ITEM_MISSING = 0.04  # each enrichment value is missing at this rate among matched users

# --- the churn model: Weibull proportional hazards -------------------------------------------------
WEIBULL_SHAPE = 1.3
WEIBULL_SCALE_DAYS = 1100.0
#: true log hazard ratios; segment effects are relative to segment 0
TRUE_LOG_HR = {
    **{f"segment_{k}": v for k, v in enumerate([0.0, -0.35, -0.6, -0.9, 0.45, -0.2]) if k > 0},
    "support_tickets_raised": 0.15,
    "age_18_24": 0.3,
}
MAX_TENURE_DAYS = 5 * 365
MIN_TENURE_DAYS = 30


@dataclass
class SyntheticPanel:
    """A generated customer base: the unified table, the per-user truth and the model parameters."""

    data: pd.DataFrame
    truth: pd.DataFrame
    params: dict = field(default_factory=dict)


def _draw_categorical(rng: np.random.Generator, probs: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Draw one category index per row from ``probs[seg]`` by inverse CDF (vectorised)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(seg.shape[0])
    return (u[:, None] > cum[seg]).sum(axis=1)


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


def _lognormal_mean(median: np.ndarray, sd: float) -> np.ndarray:
    return median * np.exp(sd**2 / 2)


def _segment_shares_in_panel() -> np.ndarray:
    w = POP_SHARES * (P_AGE @ INCLUSION_BY_AGE)
    return w / w.sum()


def true_affinity(shares: np.ndarray) -> pd.DataFrame:
    """True intensity affinity (ratio of means x 100) per segment and channel metric for a segment mix."""
    means = np.column_stack([
        _lognormal_mean(MEDIAN_MINUTES, LOG_SD),
        CONVERSION_RATE * np.exp(CONVERSION_LOG_SD**2 / 2),
    ])
    index = means / (shares @ means) * 100
    return pd.DataFrame(index, columns=S.CHANNEL_METRICS, index=pd.RangeIndex(K, name="segment"))


def population_margins() -> pd.DataFrame:
    """True population shares of the raking variables (age, income, education, household size).

    Household size is reported in the bands ``1, 2, 3, 4, 5+``; education is the share among the whole
    population (the enrichment source covers only matched users, the population does not).
    """
    hh = np.array([stats.poisson.pmf(np.arange(HOUSEHOLD_MAX - 1), m) for m in HOUSEHOLD_EXTRA_MEAN])
    hh = np.column_stack([hh, 1 - hh.sum(axis=1)])  # capped at HOUSEHOLD_MAX
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
    return pd.DataFrame(rows)


def model_parameters(observation_date: str = DEFAULT_OBSERVATION_DATE) -> dict:
    """The planted truth as a JSON-ready dict (segments, affinities, hazard model, margins)."""
    panel_shares = _segment_shares_in_panel()
    return {
        "observation_date": observation_date,
        "n_segments": K,
        "segment_names": SEGMENT_NAMES,
        "population_segment_shares": POP_SHARES.tolist(),
        "panel_segment_shares": panel_shares.tolist(),
        "true_affinity_population": true_affinity(POP_SHARES).round(6).to_dict(orient="index"),
        "true_affinity_panel": true_affinity(panel_shares).round(6).to_dict(orient="index"),
        "hazard_model": {
            "family": "weibull_ph",
            "shape": WEIBULL_SHAPE,
            "scale_days": WEIBULL_SCALE_DAYS,
            "log_hr": TRUE_LOG_HR,
            "covariates": {
                "segment_k": "1 if true segment == k (reference: segment 0)",
                "support_tickets_raised": "count, as in the unified table",
                "age_18_24": "1 if age_group == '18-24'",
            },
            "event_rule": f"churned when inactive for more than {S.CHURN_INACTIVE_DAYS} days",
        },
        "population_margins": population_margins().to_dict(orient="records"),
    }


def _sample_population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Segments and age groups of ``n`` customers, drawn from the population with age-biased inclusion."""
    seg_parts, age_parts, have = [], [], 0
    while have < n:
        m = int((n - have) * 1.8) + 100
        seg = rng.choice(K, size=m, p=POP_SHARES)
        age = _draw_categorical(rng, P_AGE, seg)
        keep = rng.random(m) < INCLUSION_BY_AGE[age]
        seg_parts.append(seg[keep])
        age_parts.append(age[keep])
        have += int(keep.sum())
    return np.concatenate(seg_parts)[:n], np.concatenate(age_parts)[:n]


def generate_panel(n_users: int = 10_000, seed: int = 42,
                   observation_date: str = DEFAULT_OBSERVATION_DATE) -> SyntheticPanel:
    """Generate ``n_users`` customers from the latent-segment model.

    Returns the unified 22-column table (rows sorted by ``user_id``), the per-user truth
    (``true_segment``, ``true_event_time_days``, ``tenure_days``) and :func:`model_parameters`.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    rng = np.random.default_rng(seed)
    obs = pd.Timestamp(observation_date)
    seg, age = _sample_population(rng, n_users)
    n = n_users

    income = _draw_categorical(rng, P_INCOME, seg)
    log_minutes = np.log(MEDIAN_MINUTES[seg]) + rng.normal(0, LOG_SD, (n, 3))
    minutes = np.minimum(np.round(np.exp(log_minutes), 1), 1440.0)
    spend = np.round(np.exp(np.log(MEDIAN_SPEND[seg]) + rng.normal(0, LOG_SD, n)), 2)
    conversions = rng.poisson(CONVERSION_RATE[seg] * np.exp(rng.normal(0, CONVERSION_LOG_SD, n)))
    tickets = rng.poisson(TICKET_RATE[seg])

    # churn: Weibull PH event time T, tenure C at the observation date
    lin = np.array([0.0] + [TRUE_LOG_HR[f"segment_{k}"] for k in range(1, K)])[seg]
    lin = lin + TRUE_LOG_HR["support_tickets_raised"] * tickets + TRUE_LOG_HR["age_18_24"] * (age == 0)
    event_time = WEIBULL_SCALE_DAYS * (rng.exponential(1.0, n) / np.exp(lin)) ** (1 / WEIBULL_SHAPE)
    tenure = rng.integers(MIN_TENURE_DAYS, MAX_TENURE_DAYS + 1, n)
    recent = np.minimum(rng.geometric(0.15, n) - 1, tenure)  # days since last visit of active users
    gone = event_time < tenure
    last_seen = np.where(gone, np.floor(tenure - event_time).astype(np.int64), recent)
    since = obs - pd.to_timedelta(tenure, unit="D")

    # 2nd party (partner) attributes, only for matched users
    partner = rng.random(n) < PARTNER_MATCH_BY_SEGMENT[seg]
    purchases = _draw_multi(rng, P_PURCHASE, seg, S.PURCHASE_CATEGORIES)
    traveler = np.array(S.TRAVELER_TYPES, dtype=object)[_draw_categorical(rng, P_TRAVELER, seg)]
    events = _draw_multi(rng, P_EVENTS, seg, S.EVENT_GENRES)

    # 3rd party (enrichment) attributes, only for matched users, with their own item non-response
    third = rng.random(n) < THIRD_PARTY_MATCH_BY_AGE[age]
    household = np.minimum(1 + rng.poisson(HOUSEHOLD_EXTRA_MEAN[seg]), HOUSEHOLD_MAX)
    children = (household >= 3) & (rng.random(n) < P_CHILDREN_IF_HH3[seg])
    edu = np.array(S.EDUCATION_LEVELS, dtype=object)[_draw_categorical(rng, P_EDU, seg)]
    marital = np.array(S.MARITAL_STATUSES, dtype=object)[_draw_categorical(rng, P_MARITAL, seg)]
    owner = np.where(rng.random(n) < P_OWNER[seg], "owner", "renter").astype(object)
    worth = np.array(S.NET_WORTH_BANDS, dtype=object)[_draw_categorical(rng, P_NET_WORTH, seg)]
    intent = _draw_multi(rng, P_INTENT, seg, S.PURCHASE_INTENTS)

    ids = pd.array([f"U{i:08d}" for i in range(1, n + 1)], dtype="string")
    df = pd.DataFrame({
        "user_id": ids,
        "age_group": pd.array(np.array(S.AGE_GROUPS, dtype=object)[age], dtype="string"),
        "income_bracket": pd.array(np.array(S.INCOME_BRACKETS, dtype=object)[income], dtype="string"),
        "customer_since_date": since.astype("datetime64[ns]"),
        "time_on_social_media_min": minutes[:, 0],
        "time_on_streaming_video_min": minutes[:, 1],
        "time_on_podcasts_min": minutes[:, 2],
        "monthly_conversions": pd.array(conversions, dtype="Int64"),
        "avg_monthly_spend": spend,
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
        masked = pd.Series(values).where(observed)
        df[name] = masked.astype(col.dtype)
    df["churned_in_last_90_days"] = pd.array(last_seen > S.CHURN_INACTIVE_DAYS, dtype="boolean")
    df = df[S.COLUMN_NAMES]

    truth = pd.DataFrame({
        "user_id": ids,
        "true_segment": seg.astype(np.int64),
        "true_segment_name": np.array(SEGMENT_NAMES, dtype=object)[seg],
        "true_event_time_days": event_time,
        "tenure_days": tenure.astype(np.int64),
        "partner_matched": partner,
        "third_party_matched": third,
        "true_log_hazard": lin,
    })
    return SyntheticPanel(df, truth, model_parameters(observation_date))


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


def write_sources(panel: SyntheticPanel, raw_dir: str | Path, truth_dir: str | Path,
                  seed: int = 42, corrupt_share: float = 0.001) -> dict[str, Path]:
    """Write the panel as separate source files into ``raw_dir`` and its truth into ``truth_dir``.

    Partner and enrichment files carry their own identifiers (``partner_id``, ``tp_id``) and cover only
    matched users, plus people who are not our customers; match tables link them to ``user_id``.
    ``corrupt_share`` of users get one planted defect (recorded in the truth as ``corrupted``).
    """
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    files, truth = _source_frames(panel, np.random.default_rng([seed, 1]), corrupt_share)
    paths: dict[str, Path] = {}
    for name, part in files.items():
        paths[name] = raw_dir / name
        _write_csv(part, paths[name])

    margins = population_margins()
    paths[MARGINS_FILE] = raw_dir / MARGINS_FILE
    margins.to_csv(paths[MARGINS_FILE], index=False)

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
                          observation_date: str = DEFAULT_OBSERVATION_DATE) -> dict[str, Path]:
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
    ``truth_dir/truth_params.json``.

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
    import shutil

    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    stems = [Path(name).stem for name in [*SOURCE_FILES, PARTNER_FILE, PARTNER_MATCH, THIRD_FILE, THIRD_MATCH]]
    paths: dict[str, Path] = {stem: raw_dir / stem for stem in stems}
    paths["truth"] = truth_dir / "users_truth.parquet"
    for folder in paths.values():
        if folder.is_dir():
            shutil.rmtree(folder)
        elif folder.exists():
            folder.unlink()
        folder.mkdir(parents=True)
    n_chunks = -(-n_users // chunk_size)
    params = None
    for c, chunk_seed in enumerate(chunk_seeds(seed, n_chunks)):
        offset = c * chunk_size
        m = min(chunk_size, n_users - offset)
        panel = _offset_ids(generate_panel(m, seed=chunk_seed, observation_date=observation_date), offset)
        params = panel.params
        files, truth = _source_frames(panel, np.random.default_rng([chunk_seed, 1]), corrupt_share, offset)
        del panel
        part = f"part-{c:05d}.parquet"
        for name, frame in files.items():
            pq.write_table(text_table(frame), paths[Path(name).stem] / part)
        pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), paths["truth"] / part)
        del files, truth
    paths[MARGINS_FILE] = raw_dir / MARGINS_FILE
    population_margins().to_csv(paths[MARGINS_FILE], index=False)
    paths["truth_params"] = truth_dir / "truth_params.json"
    paths["truth_params"].write_text(json.dumps(params, indent=2))
    return paths
