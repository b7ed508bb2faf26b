"""Survival-based churn: time-to-event construction, Cox/AFT fitting, PH checks with remedies, validation.

Builds right-censored durations from ``customer_since_date`` and ``last_seen_days_ago`` under the
business rule of the data dictionary (churned = inactive for more than 90 days), and wraps lifelines
(Kaplan-Meier, log-rank, Cox PH, Weibull/log-normal/log-logistic AFT) with the evaluation the churn notebook
needs: held-out concordance, calibration at fixed horizons, IPCW integrated Brier score, RMST and
per-user risk and value. The same helpers run on the real Telco churn data through :data:`TELCO_MAPPING`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
from lifelines import (CoxPHFitter, KaplanMeierFitter, LogLogisticAFTFitter, LogNormalAFTFitter,
                       WeibullAFTFitter)
from lifelines import utils as lifelines_utils
from lifelines.fitters import ParametricRegressionFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import concordance_index

from . import schema as S

DURATION, EVENT = "duration", "event"
DAYS_PER_MONTH = 365.25 / 12
AFT_FAMILIES = {"weibull": WeibullAFTFitter, "lognormal": LogNormalAFTFitter,
                "loglogistic": LogLogisticAFTFitter}
Family = Literal["weibull", "lognormal", "loglogistic"]


# --- time-to-event data --------------------------------------------------------------------------
def time_to_event(df: pd.DataFrame, observation_date: str | pd.Timestamp,
                  inactive_days: int = S.CHURN_INACTIVE_DAYS, id_col: str = "user_id",
                  since_col: str = "customer_since_date",
                  last_seen_col: str = "last_seen_days_ago") -> pd.DataFrame:
    """Right-censored lifetimes (days from sign-up to last activity) under the inactivity churn rule.

    With tenure ``C`` (days from ``customer_since_date`` to the observation date) and recency
    ``l = last_seen_days_ago``, the lifetime ``T`` ends at the last activity. A churn is *observable* only
    once ``inactive_days`` full days of inactivity have passed, i.e. when ``l > inactive_days``:

    * ``l > inactive_days``: event, ``duration = C - l`` (the last-activity day).
    * otherwise: censored at ``duration = C - inactive_days - 1``. All we know is that the lifetime did
      not end on or before that day (else ``l`` would exceed ``inactive_days``). This censoring time is
      a function of the tenure alone, so it is independent of ``T`` given covariates (non-informative).
      Censoring at ``C - l`` instead is informative: users who already churned within the last
      ``inactive_days`` would be censored exactly at their event time, which biases survival upwards.

    Users with ``C <= inactive_days + 1`` cannot have an observable churn yet; they get ``usable=False``
    (their censoring time is <= 0 and they carry no information for fitting). A churn on the sign-up day
    (``duration == 0``) is set to 0.5 days because parametric models need positive times.

    Parameters
    ----------
    df : DataFrame
        Must hold ``id_col``, ``since_col`` (dates) and ``last_seen_col`` (non-negative integers).
    observation_date : str or Timestamp
        The snapshot date the table describes.
    inactive_days : int, default 90
        The business rule's inactivity threshold (``schema.CHURN_INACTIVE_DAYS``).

    Returns
    -------
    DataFrame
        ``id_col``, ``tenure_days``, ``last_seen_days_ago``, ``duration``, ``event`` (0/1),
        ``known_alive_days`` (``C - l``: the lifetime is at least this long, used to condition
        predictions) and ``usable`` (bool), in the row order of ``df``.
    """
    missing = [c for c in (id_col, since_col, last_seen_col) if c not in df.columns]
    if missing:
        raise ValueError(f"time_to_event needs columns {missing}; got {list(df.columns)}")
    obs = pd.Timestamp(observation_date)
    since = pd.to_datetime(df[since_col], errors="coerce")
    last = pd.to_numeric(df[last_seen_col], errors="coerce").astype(float)
    for name, bad in [(since_col, since.isna()), (last_seen_col, last.isna())]:
        if bad.any():
            raise ValueError(f"column {name!r} is missing or unparseable in {int(bad.sum())} rows "
                             f"(e.g. {id_col}={list(df.loc[bad, id_col].head(3))}); expected a value "
                             "for every user")
    tenure = (obs - since).dt.days.astype(float)
    checks = [
        (tenure < 0, f"{since_col} after the observation date {obs.date()}"),
        (last < 0, f"{last_seen_col} < 0"),
        (last != np.floor(last), f"{last_seen_col} not a whole number of days"),
        (last > tenure, f"{last_seen_col} greater than the tenure (last seen before sign-up)"),
    ]
    for bad, what in checks:
        if bad.any():
            raise ValueError(f"{int(bad.sum())} rows have {what} (e.g. {id_col}="
                             f"{list(df.loc[bad, id_col].head(3))}); fix the input or the observation date")
    event = last > inactive_days
    duration = np.where(event, tenure - last, tenure - inactive_days - 1)
    duration = np.where(event & (duration <= 0), 0.5, duration)
    return pd.DataFrame({
        id_col: df[id_col].to_numpy(),
        "tenure_days": tenure.to_numpy(),
        "last_seen_days_ago": last.to_numpy(),
        DURATION: duration.astype(float),
        EVENT: event.to_numpy().astype(int),
        "known_alive_days": (tenure - last).to_numpy(),
        "usable": (duration > 0),
    }, index=df.index)


# --- covariates ----------------------------------------------------------------------------------
def panel_covariates(df: pd.DataFrame, segments: pd.Series | None = None,
                     groups: Sequence[str] = ("demographic", "behavioural", "segment"),
                     segment_reference: int | None = None) -> pd.DataFrame:
    """Numeric covariates of the unified table for Cox/AFT models.

    ``demographic``: age-group dummies (reference 25-34) and the income bracket as an ordinal score
    0..5; ``behavioural``: log(1 + minutes/day) per channel, log(1 + conversions), log spend and support
    tickets; ``segment``: dummies of ``segments`` (aligned on ``df``'s index; reference is the segment
    given, default the largest one).
    """
    unknown = set(groups) - {"demographic", "behavioural", "segment"}
    if unknown:
        raise ValueError(f"unknown covariate groups {sorted(unknown)}; use demographic, behavioural, segment")
    out = pd.DataFrame(index=df.index)
    if "demographic" in groups:
        age = df["age_group"].astype("string")
        for g in S.AGE_GROUPS:
            if g != "25-34":
                out[f"age_{g.replace('-', '_').replace('+', 'plus')}"] = (age == g).astype(float).to_numpy()
        out["income_score"] = df["income_bracket"].map({b: i for i, b in enumerate(S.INCOME_BRACKETS)}
                                                       ).astype(float).to_numpy()
    if "behavioural" in groups:
        for c in S.CHANNEL_MINUTES:
            out[f"log_{c.removeprefix('time_on_').removesuffix('_min')}"] = np.log1p(df[c].astype(float))
        out["log_conversions"] = np.log1p(df["monthly_conversions"].astype(float))
        out["log_spend"] = np.log1p(df["avg_monthly_spend"].astype(float))
        out["support_tickets_raised"] = df["support_tickets_raised"].astype(float)
    if "segment" in groups:
        if segments is None:
            raise ValueError("covariate group 'segment' needs `segments` (a Series aligned on df's index)")
        seg = pd.Series(segments, index=df.index).astype(int)
        ref = int(seg.value_counts().idxmax()) if segment_reference is None else segment_reference
        for k in sorted(seg.unique()):
            if k != ref:
                out[f"segment_{k}"] = (seg == k).astype(float)
    if out.isna().any().any():
        bad = out.columns[out.isna().any()].tolist()
        raise ValueError(f"covariates {bad} have missing values; impute or drop those rows first")
    return out


def drop_aliased(covariates: pd.DataFrame, tol: float = 1e-8) -> tuple[pd.DataFrame, dict[str, str]]:
    """Drop covariates that are exact linear combinations of earlier ones and the constant (aliased).

    Cox and AFT models cannot separate aliased columns; a ridge penalty hides this by splitting the effect
    (the plotted intervals are then meaningless). Columns are kept greedily in order; the result says what
    each dropped column equals (``"= InternetService_No"``, ``"= 1 - PhoneService_Yes"``, or a combination).
    """
    kept: list[str] = []
    dropped: dict[str, str] = {}
    basis = np.ones((len(covariates), 1))
    rank = 1
    for c in covariates.columns:
        v = covariates[c].to_numpy(float)
        trial = np.column_stack([basis, v])
        r = np.linalg.matrix_rank(trial, tol=tol * max(1.0, np.abs(trial).max()) * np.sqrt(len(v)))
        if r > rank:
            kept.append(c)
            basis, rank = trial, r
            continue
        same = [k for k in kept if np.allclose(covariates[k].to_numpy(float), v)]
        comp = [k for k in kept if np.allclose(1 - covariates[k].to_numpy(float), v)]
        dropped[c] = (f"= {same[0]}" if same else f"= 1 - {comp[0]}" if comp
                      else "a linear combination of the kept covariates")
    return covariates[kept], dropped


_LOG_KINDS = {"minutes", "count", "money"}


def config_covariates(df: pd.DataFrame, cfg, segments: pd.Series | None = None,
                      duration: pd.Series | None = None, parties: Sequence[str] = ("1st",),
                      max_levels: int = 12, leak_threshold: float = 0.8, include_metrics: bool = True
                      ) -> pd.DataFrame:
    """Numeric survival covariates from the run configuration (``helpers.config``), not from column names.

    * behavioural metrics (``cfg.metrics``): ``log1p`` of kinds minutes / count / money, as-is otherwise;
    * profile attributes of the given ``parties`` (default first party: 2nd/3rd-party columns are missing for
      unmatched users): ``category`` as dummies (reference: the most frequent level; more than
      ``max_levels`` levels are skipped), ``ordinal`` as the position in the declared categories, ``bool`` as
      0/1, ``int`` as a number; ``multi`` is skipped;
    * segment dummies when ``segments`` is given (reference: the largest segment).

    ``include_metrics=False`` leaves the behavioural metrics out: they are snapshots at the observation date,
    so a model fitted on *past* months (:func:`monthly_churn_risk`) must not see them (a customer who closed
    last month has no minutes today, which would teach the model that no minutes means closing).

    Columns that play another role (id, dates, churn outcomes, the survival duration/event) are never used. A
    column with missing values is skipped; one whose rank correlation with ``duration`` exceeds
    ``leak_threshold`` is skipped as leaking the duration (e.g. Telco's TotalCharges ~ tenure x charges);
    aliased dummies are dropped (:func:`drop_aliased`). ``.attrs["notes"]`` lists every column left out
    and why.
    """
    notes: dict[str, str] = {}
    roles = {getattr(cfg, "id", None)}
    dates = getattr(cfg, "dates", None)
    for k in ("customer_since", "recency"):
        roles.add(getattr(dates, k, None) if dates is not None else None)
    for o in getattr(cfg, "outcomes", []) or []:
        if getattr(o, "kind", None) == "churn_event":
            roles.add(o.name)
    surv = getattr(cfg, "survival", None)
    for k in ("duration", "event"):
        roles.add(getattr(surv, k, None) if surv is not None else None)
    out = pd.DataFrame(index=df.index)

    def add(name: str, values: pd.Series) -> None:
        v = pd.to_numeric(values, errors="coerce").astype(float)
        if v.isna().any():
            notes[name] = f"skipped: {int(v.isna().sum())} missing values"
            return
        if duration is not None and v.nunique() > 2:
            rho = pd.Series(v.to_numpy()).corr(pd.Series(np.asarray(duration, float)), method="spearman")
            if abs(rho) > leak_threshold:
                notes[name] = f"skipped: rank correlation {rho:.2f} with the duration (leaks it)"
                return
        out[name] = v.to_numpy()

    for m in (getattr(cfg, "metrics", []) or []) if include_metrics else []:
        if m.name in roles or m.name not in df:
            continue
        x = pd.to_numeric(df[m.name], errors="coerce")
        if getattr(m, "kind", "number") in _LOG_KINDS:
            add(f"log1p_{m.name}", np.log1p(x.clip(lower=0)))
        else:
            add(m.name, x)
    for a in getattr(cfg, "attributes", []) or []:
        if a.name in roles or a.name not in df:
            continue
        if getattr(a, "party", "1st") not in parties:
            notes[a.name] = f"skipped: {a.party}-party attribute (missing for unmatched users)"
            continue
        col = df[a.name]
        kind = getattr(a, "type", "category")
        if kind == "multi":
            notes[a.name] = "skipped: multi-valued"
        elif kind == "ordinal":
            cats = list(getattr(a, "categories", None) or sorted(col.dropna().unique()))
            add(f"{a.name}_score", col.astype("string").map({str(c): i for i, c in enumerate(cats)}))
        elif kind == "bool":
            add(a.name, col.astype("string").str.lower().map({"true": 1, "1": 1, "yes": 1, "false": 0,
                                                              "0": 0, "no": 0}))
        elif kind == "int":
            add(a.name, col)
        else:
            s = col.astype("string")
            if s.isna().any():
                notes[a.name] = f"skipped: {int(s.isna().sum())} missing values"
                continue
            levels = s.value_counts()
            if len(levels) > max_levels:
                notes[a.name] = f"skipped: {len(levels)} levels (more than {max_levels})"
                continue
            for lev in levels.index[1:]:
                out[f"{a.name}_{lev}".replace(" ", "_")] = (s == lev).astype(float).to_numpy()
    if segments is not None:
        seg = pd.Series(segments, index=df.index).astype(int)
        ref = int(seg.value_counts().idxmax())
        for k in sorted(seg.unique()):
            if k != ref:
                out[f"segment_{k}"] = (seg == k).astype(float).to_numpy()
    const = [c for c in out if out[c].nunique() <= 1]
    for c in const:
        notes[c] = "skipped: constant"
    out = out.drop(columns=const)
    out, aliased = drop_aliased(out)
    notes.update({c: f"dropped: aliased ({why})" for c, why in aliased.items()})
    out.attrs["notes"] = notes
    return out


def time_to_event_from_columns(df: pd.DataFrame, duration_col: str, event_col: str,
                               positive: object = None, duration_unit_days: float = 1.0,
                               id_col: str = "user_id") -> pd.DataFrame:
    """Durations and events straight from two columns (a table such as Telco: ``tenure`` + ``Churn``).

    ``positive`` is the event column's value meaning "churned" (``Yes``, ``1``, ``True``...; default: any
    of true/1/yes). Returns the columns of :func:`time_to_event`; ``tenure_days`` is the duration in days
    (``duration_unit_days`` per unit), the recency is unknown (NaN), and rows with duration <= 0 are not
    usable.
    """
    missing = [c for c in (id_col, duration_col, event_col) if c not in df.columns]
    if missing:
        raise ValueError(f"time_to_event_from_columns needs columns {missing}; got {list(df.columns)}")
    dur = pd.to_numeric(df[duration_col], errors="coerce").astype(float)
    if dur.isna().any() or (dur < 0).any():
        bad = dur.isna() | (dur < 0)
        raise ValueError(f"column {duration_col!r} must be a non-negative number; {int(bad.sum())} rows are "
                         f"not (e.g. {id_col}={list(df.loc[bad, id_col].head(3))})")
    raw = df[event_col].astype("string").str.strip().str.lower()
    yes = {"true", "1", "yes", "y"} if positive is None else {str(positive).strip().lower()}
    if positive is not None and str(positive).lower() in {"true", "1"}:
        yes |= {"true", "1", "1.0"}
    event = raw.isin(yes).fillna(False).to_numpy()
    return pd.DataFrame({
        id_col: df[id_col].to_numpy(), "tenure_days": (dur * duration_unit_days).to_numpy(),
        "last_seen_days_ago": np.nan, DURATION: dur.to_numpy(), EVENT: event.astype(int),
        "known_alive_days": (dur * duration_unit_days).to_numpy(), "usable": (dur > 0).to_numpy(),
    }, index=df.index)


def truth_covariates(df: pd.DataFrame, true_segment: pd.Series, n_segments: int) -> pd.DataFrame:
    """The generator's own hazard covariates: ``segment_1..K-1`` (ref 0), ``support_tickets_raised``,
    ``age_18_24`` -- named like ``TRUE_LOG_HR`` so fitted and planted coefficients line up."""
    seg = pd.Series(true_segment, index=df.index).astype(int)
    out = pd.DataFrame({f"segment_{k}": (seg == k).astype(float) for k in range(1, n_segments)},
                       index=df.index)
    out["support_tickets_raised"] = df["support_tickets_raised"].astype(float)
    out["age_18_24"] = (df["age_group"] == "18-24").astype(float)
    return out


def model_frame(tte: pd.DataFrame, covariates: pd.DataFrame,
                extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join durations/events with covariates (and e.g. strata columns), keeping only usable rows."""
    parts = [tte[[DURATION, EVENT]], covariates] + ([extra] if extra is not None else [])
    frame = pd.concat(parts, axis=1)
    return frame.loc[tte["usable"].to_numpy()].copy()


def split(frame: pd.DataFrame, test_size: float = 0.3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split stratified on the event indicator."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(frame), dtype=bool)
    ev = frame[EVENT].to_numpy()
    for v in (0, 1):
        idx = np.flatnonzero(ev == v)
        test[rng.choice(idx, size=int(round(test_size * len(idx))), replace=False)] = True
    return frame.iloc[~test].copy(), frame.iloc[test].copy()


# --- non-parametric ------------------------------------------------------------------------------
def km_by_group(frame: pd.DataFrame, group: pd.Series, labels: dict | None = None
                ) -> dict[object, KaplanMeierFitter]:
    """One fitted Kaplan-Meier estimator per level of ``group`` (aligned on ``frame``'s index)."""
    g = pd.Series(group, index=frame.index)
    out = {}
    for level in sorted(g.dropna().unique()):
        m = (g == level).to_numpy()
        name = labels.get(level, level) if labels else level
        out[level] = KaplanMeierFitter(label=str(name)).fit(frame[DURATION][m], frame[EVENT][m])
    return out


def logrank(frame: pd.DataFrame, group: pd.Series):
    """Multivariate log-rank test of equal survival across the levels of ``group``."""
    g = pd.Series(group, index=frame.index)
    return multivariate_logrank_test(frame[DURATION], g, frame[EVENT])


def rmst(km: KaplanMeierFitter, tau: float) -> tuple[float, float]:
    """Restricted mean survival time ``int_0^tau S(t) dt`` of a Kaplan-Meier curve and its standard error.

    The SE uses the Greenwood-type formula ``Var = sum_j A_j^2 d_j / (n_j (n_j - d_j))`` over event times
    ``t_j <= tau``, with ``A_j = int_{t_j}^tau S(u) du`` (Klein & Moeschberger, 4.5).
    """
    if tau > km.durations.max():
        raise ValueError(f"tau={tau:g} exceeds the follow-up of {km._label!r} ({km.durations.max():g}); "
                         "choose a smaller tau")
    sf = km.survival_function_.iloc[:, 0]
    t = np.append(sf.index.to_numpy(float), tau)
    t = np.minimum(t, tau)
    area_pieces = sf.to_numpy() * np.diff(t)  # S is constant on [t_k, t_{k+1})
    total = float(area_pieces.sum())
    table = km.event_table
    ev = table[(table.index > 0) & (table.index <= tau) & (table["observed"] > 0)]
    tail = np.cumsum(area_pieces[::-1])[::-1]  # int_{t_k}^tau S
    a_j = pd.Series(tail, index=sf.index).reindex(ev.index).to_numpy()
    n_j, d_j = ev["at_risk"].to_numpy(float), ev["observed"].to_numpy(float)
    ok = n_j > d_j
    var = float(np.sum(a_j[ok] ** 2 * d_j[ok] / (n_j[ok] * (n_j[ok] - d_j[ok]))))
    return total, float(np.sqrt(var))


def rmst_table(kms: dict[object, KaplanMeierFitter], tau: float) -> pd.DataFrame:
    """Restricted mean survival time up to ``tau`` (with SE and 95% CI) for each fitted Kaplan-Meier curve."""
    rows = []
    for level, km in kms.items():
        est, se = rmst(km, tau)
        rows.append({"group": level, "label": km._label, "n": int(km.event_observed.size),
                     "rmst": est, "rmst_se": se, "rmst_lower": est - 1.96 * se, "rmst_upper": est + 1.96 * se})
    return pd.DataFrame(rows)


# --- Cox -----------------------------------------------------------------------------------------
def fit_cox(frame: pd.DataFrame, strata: Sequence[str] | None = None, penalizer: float = 0.0,
            l1_ratio: float = 0.0) -> CoxPHFitter:
    """Fit a Cox PH model on ``frame`` (``duration``, ``event`` and numeric covariates).

    A small ``penalizer`` (ridge) stabilises fits with collinear covariates; it shrinks coefficients,
    so use 0 when coefficients are compared with planted truth.
    """
    _check_frame(frame)
    if isinstance(strata, str):  # lifelines keeps a single stratum as a string
        strata = [strata]
    cph = CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio)
    return cph.fit(frame, DURATION, EVENT, strata=list(strata) if strata else None)


def coefficient_table(model, truth: dict[str, float] | None = None, parameter: str | None = None
                      ) -> pd.DataFrame:
    """Coefficients with 95% CIs (and planted values and coverage when ``truth`` is given).

    For AFT models pass ``parameter`` (e.g. ``"lambda_"``) to select the scale regression.
    """
    s = model.summary
    if parameter is not None:
        s = s.loc[parameter]
    tab = pd.DataFrame({"covariate": s.index.astype(str), "coef": s["coef"].to_numpy(),
                        "se": s["se(coef)"].to_numpy(),
                        "lower": s["coef lower 95%"].to_numpy(), "upper": s["coef upper 95%"].to_numpy(),
                        "p": s["p"].to_numpy()})
    tab = tab[tab["covariate"] != "Intercept"].reset_index(drop=True)
    if truth is not None:
        tab["true"] = tab["covariate"].map(truth)
        tab["covered"] = (tab["lower"] <= tab["true"]) & (tab["true"] <= tab["upper"])
    return tab


def true_loghr_coverage(frame: pd.DataFrame, truth: dict[str, float]) -> pd.DataFrame:
    """Fit an unpenalised Cox model on exactly the planted covariates and score CI coverage of the truth."""
    missing = set(truth) - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks planted covariates {sorted(missing)}; build it with truth_covariates")
    return coefficient_table(fit_cox(frame[[DURATION, EVENT, *truth]]), truth)


#: Rows of the Schoenfeld test (lifelines' residual computation grows with the square of the rows: 0.3 s at
#: 10k, 30 s at 77k training rows). Larger frames are tested on a seeded sample of this many rows.
PH_TEST_SAMPLE = 20_000


def ph_sample(frame: pd.DataFrame, max_rows: int | None = PH_TEST_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of at most ``max_rows`` rows, in the frame's order (``None``/0: all rows)."""
    if not max_rows or len(frame) <= max_rows:
        return frame
    rng = np.random.default_rng(seed)
    return frame.iloc[np.sort(rng.choice(len(frame), int(max_rows), replace=False))]


def ph_test(model: CoxPHFitter, frame: pd.DataFrame, alpha: float = 0.05,
            time_transform: str = "rank", max_rows: int | None = PH_TEST_SAMPLE, seed: int = 0,
            penalizer: float | None = None) -> pd.DataFrame:
    """Schoenfeld-residual test of proportional hazards per covariate.

    Returns ``covariate``, ``statistic``, ``p`` and ``violated`` (``p < alpha / m``, Bonferroni over the
    ``m`` covariates tested, so that large samples do not flag every negligible departure). When ``frame``
    has more than ``max_rows`` rows the test runs on a seeded sample of ``max_rows`` rows (:func:`ph_sample`)
    with the same model refitted there (same strata and penalty): the residual computation grows with the
    square of the rows, so at 700k training rows one test would take most of an hour. The sample costs power
    (a departure is flagged at a smaller n); ``.attrs["n_tested"]`` records the rows used.
    """
    sample = ph_sample(frame, max_rows, seed)
    if len(sample) < len(frame):
        pen = model.penalizer if penalizer is None else penalizer
        model = fit_cox(sample, strata=model.strata or None, penalizer=pen, l1_ratio=model.l1_ratio)
    res = proportional_hazard_test(model, sample, time_transform=time_transform)
    s = res.summary
    idx = s.index.get_level_values(0) if isinstance(s.index, pd.MultiIndex) else s.index
    out = pd.DataFrame({"covariate": idx.astype(str), "statistic": s["test_statistic"].to_numpy(),
                        "p": s["p"].to_numpy()})
    out["violated"] = out["p"] < alpha / max(len(out), 1)
    out.attrs["n_tested"] = len(sample)
    return out


@dataclass
class PHRemedy:
    """Result of :func:`remedy_ph`: the final model, the tests before/after and what was stratified."""

    model: CoxPHFitter
    frame: pd.DataFrame
    before: pd.DataFrame
    after: pd.DataFrame
    strata: list[str] = field(default_factory=list)
    source: pd.DataFrame | None = None  # the training frame before stratification (for re-binning)

    @property
    def n_violations_before(self) -> int:
        return int(self.before["violated"].sum())

    @property
    def n_violations_after(self) -> int:
        return int(self.after["violated"].sum()) if len(self.after) else 0

    @property
    def n_fixed(self) -> int:
        """Covariates that violated PH at first, counted as fixed only when the remedied model passes every
        remaining test (0 while any violation, old or new, is left: see :attr:`new_violations`)."""
        if self.n_violations_after:
            return 0
        return self.n_violations_before

    @property
    def new_violations(self) -> list[str]:
        """Covariates that pass before the remedy and fail after it."""
        was = set(self.before.loc[self.before["violated"], "covariate"])
        return [c for c in self.after.loc[self.after["violated"], "covariate"] if c not in was]


def _stratify(work: pd.DataFrame, c: str, groups: dict[str, list[str]], n_bins: int
              ) -> tuple[pd.DataFrame, str]:
    """Turn covariate ``c`` (or its whole dummy group) into one stratum column; returns (frame, name)."""
    dummy_to_group = {d: g for g, ds in groups.items() for d in ds}
    out = work.copy()
    if c in dummy_to_group:
        g = dummy_to_group[c]
        cols = [d for d in groups[g] if d in out]
        out[g] = np.argmax(np.column_stack([1 - out[cols].sum(axis=1), out[cols]]), axis=1)
        return out.drop(columns=cols), g
    if out[c].nunique() <= 2:
        return out.rename(columns={c: f"{c}__stratum"}), f"{c}__stratum"
    out[f"{c}__bin"] = pd.qcut(out[c], n_bins, labels=False, duplicates="drop")
    return out.drop(columns=c), f"{c}__bin"


def remedy_ph(frame: pd.DataFrame, alpha: float = 0.05, n_bins: int = 4, penalizer: float = 0.0,
              max_rounds: int = 3, groups: dict[str, list[str]] | None = None,
              min_events_per_stratum: int = 10, ph_max_rows: int | None = PH_TEST_SAMPLE,
              seed: int = 0) -> PHRemedy:
    """Fit Cox, test PH (Schoenfeld), stratify on the worst violator, refit and re-test; repeat.

    Each round takes the violating covariate with the largest test statistic and makes it a stratum:
    a dummy of a group in ``groups`` (original column -> its dummy columns, e.g. ``{"Contract": [...]}``)
    brings its whole group as one categorical stratum; another binary covariate becomes a stratum as is;
    a continuous one is cut into ``n_bins`` quantile bins. Its effect is then absorbed by stratum-specific
    baseline hazards (no longer estimated as a hazard ratio). A candidate that would leave a stratum
    with fewer than ``min_events_per_stratum`` events is skipped. Stops when no violation is left or
    after ``max_rounds`` rounds. The tests run on a seeded sample of at most ``ph_max_rows`` rows
    (:func:`ph_test`); the models themselves are fitted on every row.
    """
    _check_frame(frame)
    groups = groups or {}
    work, strata = frame.copy(), []
    model = fit_cox(work, penalizer=penalizer)
    before = ph_test(model, work, alpha, max_rows=ph_max_rows, seed=seed)
    after, tried = before, set()
    for _ in range(max_rounds):
        viol = after[after["violated"] & ~after["covariate"].isin(tried)].sort_values(
            "statistic", ascending=False)["covariate"].tolist()
        chosen = None
        for c in viol:
            tried.add(c)
            cand, name = _stratify(work, c, groups, n_bins)
            if cand.groupby(strata + [name])[EVENT].sum().min() >= min_events_per_stratum:
                chosen = (cand, name)
                break
        if chosen is None:
            break
        work, strata = chosen[0], strata + [chosen[1]]
        model = fit_cox(work, strata=strata, penalizer=penalizer)
        after = ph_test(model, work, alpha, max_rows=ph_max_rows, seed=seed)
    return PHRemedy(model, work, before, after, strata, frame)


def apply_strata(frame: pd.DataFrame, remedy: PHRemedy, groups: dict[str, list[str]] | None = None,
                 n_bins: int = 4) -> pd.DataFrame:
    """Re-code new data (e.g. held-out users) with the strata chosen by :func:`remedy_ph`.

    Quantile bins of continuous covariates reuse the training data's bin edges.
    """
    groups = groups or {}
    out = frame.copy()
    for name in remedy.strata:
        if name in groups:
            out, _ = _stratify(out, groups[name][0], groups, n_bins)
        elif name.endswith("__stratum"):
            out = out.rename(columns={name.removesuffix("__stratum"): name})
        else:  # continuous: bins from the training frame's quantiles
            c = name.removesuffix("__bin")
            if remedy.source is None:
                raise ValueError(f"cannot re-bin {c!r}: the remedy lacks its training frame (source)")
            edges = np.unique(np.quantile(remedy.source[c], np.linspace(0, 1, n_bins + 1)))
            out[name] = np.clip(np.searchsorted(edges, out[c], side="left") - 1, 0, len(edges) - 2)
            out = out.drop(columns=c)
    return out


# --- parametric ----------------------------------------------------------------------------------
def fit_aft(frame: pd.DataFrame, family: Family = "weibull", penalizer: float = 0.0):
    """Fit a parametric accelerated-failure-time model (``weibull``, ``lognormal`` or ``loglogistic``)."""
    if family not in AFT_FAMILIES:
        raise ValueError(f"family must be one of {sorted(AFT_FAMILIES)}, got {family!r}")
    _check_frame(frame)
    if (frame[DURATION] <= 0).any():
        raise ValueError("AFT models need positive durations; drop rows with duration <= 0 "
                         "(model_frame keeps only usable rows)")
    return AFT_FAMILIES[family](penalizer=penalizer).fit(frame, DURATION, EVENT)


def aic_table(models: dict[str, object]) -> pd.DataFrame:
    """AIC of fitted parametric models, best first, with the difference to the best."""
    rows = [{"model": k, "aic": float(m.AIC_), "log_likelihood": float(m.log_likelihood_),
             "n_params": int(m.params_.shape[0])} for k, m in models.items()]
    out = pd.DataFrame(rows).sort_values("aic").reset_index(drop=True)
    out["delta_aic"] = out["aic"] - out["aic"].iloc[0]
    return out


def weibull_log_hr(model: WeibullAFTFitter) -> pd.DataFrame:
    """Convert a Weibull AFT fit to the PH scale: ``log HR = -rho * beta`` (delta-method 95% CI)."""
    lam = model.params_.loc["lambda_"].drop("Intercept", errors="ignore")
    rho = float(np.exp(model.params_.loc[("rho_", "Intercept")]))
    cov = model.variance_matrix_
    rows = []
    for c, b in lam.items():
        i, j = ("lambda_", c), ("rho_", "Intercept")
        g = np.array([-rho, -rho * b])  # d(-rho*b)/d b, d(-rho*b)/d log rho
        v = np.array([[cov.loc[i, i], cov.loc[i, j]], [cov.loc[j, i], cov.loc[j, j]]])
        se = float(np.sqrt(g @ v @ g))
        est = -rho * b
        rows.append({"covariate": c, "coef": est, "se": se, "lower": est - 1.96 * se, "upper": est + 1.96 * se})
    return pd.DataFrame(rows)


# --- prediction & evaluation ---------------------------------------------------------------------
def survival_at(model, frame: pd.DataFrame, times: Iterable[float],
                conditional_after: np.ndarray | None = None) -> np.ndarray:
    """Predicted survival ``S(t | x)`` (rows: users, columns: ``times``), optionally conditional on
    being alive at ``conditional_after`` (per-user times, then ``t`` counts from that time)."""
    times = np.asarray(list(times), dtype=float)
    kw = {} if conditional_after is None else {"conditional_after": np.asarray(conditional_after, float)}
    sf = model.predict_survival_function(frame, times=times, **kw)
    if sf.shape[1] == len(frame) and frame.index.is_unique and set(sf.columns) == set(frame.index):
        sf = sf.reindex(columns=frame.index)  # stratified Cox returns users grouped by stratum
    out = sf.to_numpy().T
    if out.shape != (len(frame), len(times)):
        raise RuntimeError(f"unexpected survival prediction shape {out.shape}")
    return np.clip(out, 0.0, 1.0)


def risk_score(model, frame: pd.DataFrame) -> np.ndarray:
    """A higher-is-riskier score: partial hazard for unstratified Cox, minus the (restricted) expected
    lifetime for stratified Cox and AFT models (their ranking then includes stratum/shape effects)."""
    if isinstance(model, CoxPHFitter) and not model.strata:
        return np.asarray(model.predict_partial_hazard(frame), dtype=float).ravel()
    expect = model.predict_expectation(frame)
    if isinstance(expect, pd.Series) and frame.index.is_unique and set(expect.index) == set(frame.index):
        expect = expect.reindex(frame.index)  # stratified Cox sorts users by index
    return -np.asarray(expect, dtype=float).ravel()


def c_index(model, frame: pd.DataFrame) -> float:
    """Harrell's concordance index of :func:`risk_score` on ``frame`` (e.g. held-out users)."""
    return float(concordance_index(frame[DURATION], -risk_score(model, frame), frame[EVENT]))


def concordance_interval(durations, risk, events, n_boot: int = 200, seed: int = 0,
                         max_rows: int | None = 1_500, level: float = 0.95) -> dict[str, float]:
    """Harrell's C of a higher-is-riskier ``risk`` with a percentile bootstrap interval (rows resampled
    with replacement, ``n_boot`` times, seeded). Above ``max_rows`` rows each replicate resamples only
    ``max_rows`` rows (an m-out-of-n bootstrap) and its deviation from the estimate is rescaled by
    ``sqrt(m / n)``: C is a U-statistic, whose spread shrinks as 1/sqrt(n), and one C computation costs
    O(n log n) (0.1 s at 6k rows), so 200 full-size replicates per model would dominate the notebook.

    Returns ``c_index``, ``lower``, ``upper``, ``n``, ``n_boot``.
    """
    d = np.asarray(durations, float)
    r = np.asarray(risk, float)
    e = np.asarray(events, int)
    est = float(concordance_index(d, -r, e))
    rng = np.random.default_rng(seed)
    n = len(d)
    m = n if not max_rows or n <= max_rows else int(max_rows)
    reps = []
    for _ in range(int(n_boot)):
        i = rng.integers(0, n, m)
        if e[i].sum() == 0:
            continue
        reps.append(concordance_index(d[i], -r[i], e[i]))
    reps = np.asarray(reps, float)
    if m < n:  # m-out-of-n bootstrap: rescale the spread to the full sample size
        reps = est + (reps - est) * np.sqrt(m / n)
    q = (1 - level) / 2
    lo, hi = (np.quantile(reps, [q, 1 - q]) if len(reps) else (np.nan, np.nan))
    return {"c_index": est, "lower": float(lo), "upper": float(hi), "n": int(n), "n_boot": int(len(reps))}


def c_index_interval(model, frame: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """:func:`c_index` of ``model`` on ``frame`` with its bootstrap interval (:func:`concordance_interval`)."""
    return concordance_interval(frame[DURATION], risk_score(model, frame), frame[EVENT], n_boot, seed)


def tenure_only_c_index(frame: pd.DataFrame, tenure, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Baseline C-index of ranking by tenure alone (longer tenure = lower risk), with its interval.

    In a snapshot, durations are tenure minus recency (events) or tenure minus the detection lag
    (censored), so tenure alone orders them well: a model's C-index says something about its covariates
    only next to this figure. (Where the duration *is* the tenure, as in Telco, this is 1 by construction.)
    """
    return concordance_interval(frame[DURATION], -np.asarray(tenure, float), frame[EVENT], n_boot, seed)


def calibration_table(model, frame: pd.DataFrame, t0: float, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs Kaplan-Meier observed churn probability by ``t0`` in quantile bins of predicted risk.

    Returns one row per bin: ``predicted`` (mean of ``1 - S(t0|x)``), ``observed`` (``1 - KM(t0)`` in
    the bin) with its 95% interval, and ``n``.
    """
    pred = 1 - survival_at(model, frame, [t0])[:, 0]
    bins = pd.qcut(pd.Series(pred).rank(method="first"), n_bins, labels=False).to_numpy()
    rows = []
    for b in range(n_bins):
        m = bins == b
        km = KaplanMeierFitter().fit(frame[DURATION].to_numpy()[m], frame[EVENT].to_numpy()[m])
        s = float(km.survival_function_at_times(t0).iloc[0])
        ci = km.confidence_interval_survival_function_
        row = ci[ci.index <= t0].iloc[-1]
        rows.append({"bin": b, "n": int(m.sum()), "predicted": float(pred[m].mean()), "observed": 1 - s,
                     "observed_lower": 1 - float(row.iloc[1]), "observed_upper": 1 - float(row.iloc[0])})
    return pd.DataFrame(rows)


def _censoring_km(durations: np.ndarray, events: np.ndarray) -> KaplanMeierFitter:
    return KaplanMeierFitter().fit(durations, 1 - events)


def brier_scores(model, train: pd.DataFrame, test: pd.DataFrame, times: Sequence[float]) -> np.ndarray:
    """IPCW Brier score at each of ``times`` on ``test`` (Graf et al. 1999).

    Censoring weights come from the Kaplan-Meier of the censoring distribution in ``train``; assumes
    censoring independent of covariates (true here: it depends on tenure only).
    """
    times = np.asarray(times, dtype=float)
    g = _censoring_km(train[DURATION].to_numpy(), train[EVENT].to_numpy())
    d, e = test[DURATION].to_numpy(), test[EVENT].to_numpy()
    s = survival_at(model, test, times)
    g_t = np.clip(g.survival_function_at_times(times).to_numpy(), 1e-6, None)
    g_d = np.clip(g.survival_function_at_times(np.maximum(d - 1e-9, 0)).to_numpy(), 1e-6, None)
    out = []
    for j, t in enumerate(times):
        died = (d <= t) & (e == 1)
        alive = d > t
        out.append(np.mean(died * s[:, j] ** 2 / g_d + alive * (1 - s[:, j]) ** 2 / g_t[j]))
    return np.array(out)


def integrated_brier_score(model, train: pd.DataFrame, test: pd.DataFrame,
                           t_max: float | None = None, n_times: int = 50) -> float:
    """Brier score averaged over ``n_times`` equally spaced times in (0, ``t_max``] (trapezoid rule).

    ``t_max`` defaults to the 80th percentile of the test durations, where IPC weights are still stable.
    """
    t_max = float(np.quantile(test[DURATION], 0.8)) if t_max is None else float(t_max)
    times = np.linspace(t_max / n_times, t_max, n_times)
    bs = brier_scores(model, train, test, times)
    return float(np.trapezoid(bs, times) / (times[-1] - times[0]))


class KMBaseline:
    """A covariate-free reference model (pooled Kaplan-Meier) with the prediction API of lifelines."""

    def __init__(self, frame: pd.DataFrame):
        self.km = KaplanMeierFitter().fit(frame[DURATION], frame[EVENT])

    def predict_survival_function(self, frame: pd.DataFrame, times=None) -> pd.DataFrame:
        s = self.km.survival_function_at_times(times).to_numpy()
        return pd.DataFrame(np.repeat(s[:, None], len(frame), axis=1), index=times)

    def cumulative_hazard_at(self, covariates: pd.DataFrame, times: np.ndarray) -> np.ndarray:
        """``-log KM(t)`` at per-user times (constant after the last observed time)."""
        sf = self.km.survival_function_
        t, s = sf.index.to_numpy(float), np.clip(sf.iloc[:, 0].to_numpy(float), 1e-12, None)
        pos = np.clip(np.searchsorted(t, np.asarray(times, float), side="right") - 1, 0, None)
        return -np.log(s[pos])


# --- per-user risk and value: recency-aware ------------------------------------------------------
def cumulative_hazard_at(model, covariates: pd.DataFrame, times: np.ndarray, chunk: int = 200_000
                         ) -> np.ndarray:
    """Cumulative hazard ``H_i(t_ij)`` of each user ``i`` at their own times (``times``: shape ``(n, m)``).

    Works for lifelines' parametric regression fitters (Weibull / log-normal / log-logistic AFT: exact, any
    time), for an unstratified Cox model (Breslow baseline; constant after the last training event time, so it
    cannot extrapolate) and for any object with a ``cumulative_hazard_at(covariates, times)`` method.
    Evaluated ``chunk`` users at a time, so memory stays bounded at 1M users.
    """
    times = np.atleast_2d(np.asarray(times, dtype=float))
    if times.shape[0] != len(covariates):
        raise ValueError(f"times has {times.shape[0]} rows, covariates {len(covariates)}: one row per user")
    if hasattr(model, "cumulative_hazard_at"):
        return np.asarray(model.cumulative_hazard_at(covariates, times), dtype=float)
    out = np.empty_like(times)
    if isinstance(model, ParametricRegressionFitter):
        names = model._fitted_parameter_names
        params = {p: model.params_.loc[p].values for p in names}
        for s in range(0, len(covariates), chunk):
            part = covariates.iloc[s:s + chunk]
            xs = lifelines_utils.DataframeSlicer(model.regressors.transform_df(part))
            out[s:s + chunk] = np.asarray(model._cumulative_hazard(params, times[s:s + chunk].T, xs)).T
        return np.clip(out, 0.0, None)
    if isinstance(model, CoxPHFitter):
        if model.strata:
            raise NotImplementedError("per-user cumulative hazards of a stratified Cox model are not "
                                      "implemented; score users with a parametric (AFT) model")
        base = model.baseline_cumulative_hazard_
        bt, bh = base.index.to_numpy(float), base.iloc[:, 0].to_numpy(float)
        ph = np.asarray(model.predict_partial_hazard(covariates), dtype=float).ravel()
        pos = np.searchsorted(bt, times, side="right") - 1
        h0 = np.where(pos >= 0, bh[np.clip(pos, 0, None)], 0.0)
        return h0 * ph[:, None]
    raise TypeError(f"cannot evaluate cumulative hazards of a {type(model).__name__}")


def recency_odds(hazard: np.ndarray) -> np.ndarray:
    """Odds term ``r = P(lifetime ended exactly l days ago) / P(alive at the observation date)``.

    ``hazard`` holds per-user cumulative hazards at ``(a - 1, a, C)`` (columns), with ``a = C - l`` the
    last-activity day and ``C`` the tenure: a recency of ``l`` days means the last activity fell in
    ``(C - l - 1, C - l]`` (``last_seen_days_ago`` is a whole number of days), probability
    ``S(a - 1) - S(a)``, against ``S(C)`` for a user still alive. ``r = exp(H(C) - H(a-1)) - exp(H(C) - H(a))``.
    """
    h_a1, h_a, h_c = hazard[:, 0], hazard[:, 1], hazard[:, 2]
    return np.exp(np.clip(h_c - h_a1, 0, 700)) - np.exp(np.clip(h_c - h_a, 0, 700))


@dataclass
class InactivityModel:
    """Distribution of the current inactivity spell (days since the last activity) of customers who are
    still alive: a mixture of geometric distributions on ``0, 1, 2, ...`` days.

    A customer seen ``l`` days ago is either alive and in an inactivity spell of at least ``l`` days so far
    (probability ``S(C) g(l)``) or gone since that last activity (``S(a-1) - S(a)``). :func:`fit_inactivity`
    estimates ``g`` from everyone's recency with the survival model's hazards held fixed (EM); the posterior
    ``P(gone | l, x) = r / (r + g(l))`` is what the silence since the last activity says.
    """

    weights: np.ndarray
    probs: np.ndarray
    loglik: float = float("nan")
    n_iter: int = 0
    converged: bool = False
    n_users: int = 0

    def pmf(self, days) -> np.ndarray:
        """``g(l)``: probability that an alive customer's last activity was ``l`` days ago."""
        d = np.asarray(days, dtype=float)[..., None]
        return np.sum(self.weights * self.probs * (1 - self.probs) ** d, axis=-1)

    def prob_gone(self, recency, odds) -> np.ndarray:
        """Posterior probability that the lifetime already ended at the last activity, given recency."""
        g = self.pmf(recency)
        odds = np.asarray(odds, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = odds / (odds + g)
        return np.where(np.isfinite(p), p, 1.0)

    def summary(self) -> pd.DataFrame:
        """One row per mixture component: weight, daily return probability and mean spell (days)."""
        return pd.DataFrame({"component": np.arange(len(self.weights)), "weight": self.weights,
                             "daily_return_prob": self.probs,
                             "mean_days_since_last_activity": (1 - self.probs) / self.probs})

    def plot(self, recency: np.ndarray | None = None, max_days: int = 120, ax=None):
        """The fitted ``g(l)`` (log scale), with the recency histogram of all users when given."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(7, 3.5))[1]
        days = np.arange(max_days + 1)
        if recency is not None:
            counts = np.bincount(np.clip(np.asarray(recency, int), 0, max_days + 1), minlength=max_days + 2)
            ax.plot(days, counts[:max_days + 1] / max(len(recency), 1), ".", color="grey",
                    label="all users (share per day of recency)")
        ax.plot(days, self.pmf(days), "-", color="C0", label="fitted g(l): alive customers")
        ax.set_yscale("log")
        ax.set(xlabel="days since last activity (recency)", ylabel="share of users per day")
        ax.legend(fontsize=8)
        return ax


def fit_inactivity(recency: np.ndarray, odds: np.ndarray, n_components: int = 2, max_iter: int = 300,
                   tol: float = 1e-9, seed: int = 0) -> InactivityModel:
    """Fit the inactivity-spell mixture ``g`` by EM, with the survival model's odds ``r`` held fixed.

    Each user's likelihood is ``r_i + g(l_i)`` (up to a factor ``S_i(C_i)``): gone at the last activity or
    alive in a spell of ``l_i`` days. Use every user, flagged churners included: their long recencies are
    explained by ``r`` and keep ``g`` from growing a flat tail that would mimic the gone.
    """
    l = np.asarray(recency, dtype=float)
    r = np.asarray(odds, dtype=float)
    ok = np.isfinite(l) & np.isfinite(r)
    l, r = l[ok], r[ok]
    if len(l) == 0:
        raise ValueError("fit_inactivity needs users with a recency (days since last activity)")
    rng = np.random.default_rng(seed)
    w = np.full(n_components, 1.0 / n_components)
    p = np.sort(np.geomspace(0.5, 0.01, n_components) * rng.uniform(0.9, 1.1, n_components))[::-1]
    prev, it, conv = -np.inf, 0, False
    for it in range(1, max_iter + 1):
        comp = w * p * (1 - p) ** l[:, None]            # (n, K)
        g = comp.sum(axis=1)
        tot = r + g
        ll = float(np.log(np.clip(tot, 1e-300, None)).sum())
        alive = g / tot                                   # E-step: P(alive | l)
        resp = alive[:, None] * comp / np.clip(g, 1e-300, None)[:, None]
        mass = resp.sum(axis=0)
        w = mass / mass.sum()
        p = np.clip(mass / np.clip((resp * (1 + l[:, None])).sum(axis=0), 1e-300, None), 1e-6, 1 - 1e-9)
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            conv = True
            break
        prev = ll
    order = np.argsort(-p)
    return InactivityModel(w[order], p[order], ll, it, conv, int(len(l)))


def _no_recency(tte: pd.DataFrame) -> bool:
    return "last_seen_days_ago" not in tte or tte["last_seen_days_ago"].isna().all()


def churn_risk(model, covariates: pd.DataFrame, tte: pd.DataFrame, spend: pd.Series | None = None,
               horizons: Sequence[int] = (90, 180), value_horizon_days: float = 3 * 365.0,
               id_col: str = "user_id", inactivity: "InactivityModel | str | None" = "fit",
               time_unit_days: float = 1.0, n_value_points: int = 157) -> pd.DataFrame:
    """Per-user probability of churning within ``horizons`` days of the observation date, given everything
    known then (covariates, tenure ``C`` and the silence since the last activity ``l``), expected remaining
    lifetime and value.

    "Churning within ``h`` days" means the lifetime (sign-up to last activity) ends before ``C + h``,
    including lifetimes that already ended at the last activity but are not yet flagged (``l <= 90``).
    With ``a = C - l`` and a fitted survival model ``S(t | x)``:

    * ``inactivity="fit"`` (default) or an :class:`InactivityModel`: the recency is evidence. The user is gone
      with posterior ``pi = r / (r + g(l))`` (:func:`recency_odds`, :func:`fit_inactivity`), otherwise alive
      at ``C``: ``churn_prob_<h>d = pi + (1 - pi) (1 - S(C + h) / S(C))``.
    * ``inactivity=None``: condition only on survival to the last activity,
      ``1 - S(C + h) / S(a)`` (the score before recency was modelled; a baseline). Also used when ``tte``
      has no recency (a duration table such as Telco: ``a = C``).

    ``expected_remaining_days = (1 - pi) int_0^H S(C + u) / S(C) du`` with ``H = value_horizon_days``
    (a finite horizon keeps the fitted tail's extrapolation out of the value); ``expected_value`` = that x
    ``spend`` (per month) / 30.44. Flagged churners (``event == 1``) get probability 1 and value 0.
    ``time_unit_days`` is the length of the model's time unit in days (30.44 for a model in months).
    Columns: ``id_col``, ``churn_prob_<h>d``, ``prob_gone``, ``recency_days``, ``expected_remaining_days``,
    ``expected_value``, ``churned``. (:func:`inactivity_model` gives the fitted :class:`InactivityModel`.)
    """
    if len(covariates) != len(tte) or not covariates.index.equals(tte.index):
        raise ValueError("covariates and tte must have the same rows in the same order (same index)")
    u = float(time_unit_days)
    churned = tte[EVENT].to_numpy() == 1
    c = tte["tenure_days"].to_numpy(float) / u
    no_rec = _no_recency(tte)
    l = np.zeros(len(tte)) if no_rec else tte["last_seen_days_ago"].to_numpy(float) / u
    a = np.clip(c - l, 0, None)
    use_recency = inactivity is not None and not no_rec
    hz = cumulative_hazard_at(model, covariates, np.column_stack([np.clip(a - 1 / u, 0, None), a, c]))
    fitted = None
    pi = np.zeros(len(tte))
    if use_recency:
        odds = recency_odds(hz)
        fitted = (fit_inactivity(l * u, odds) if isinstance(inactivity, str) else inactivity)
        pi = fitted.prob_gone(l * u, odds)
    start = hz[:, 2] if use_recency else hz[:, 1]   # condition on alive at C (recency) or at a (baseline)
    hs = np.asarray(horizons, dtype=float) / u
    hh = cumulative_hazard_at(model, covariates, c[:, None] + hs[None, :])
    out = pd.DataFrame({id_col: tte[id_col].to_numpy()}, index=tte.index)
    for j, h in enumerate(horizons):
        surv = np.exp(-np.clip(hh[:, j] - start, 0, None))
        out[f"churn_prob_{h}d"] = np.where(churned, 1.0, pi + (1 - pi) * (1 - surv))
    out["prob_gone"] = np.where(churned, 1.0, pi)
    out["recency_days"] = np.nan if no_rec else tte["last_seen_days_ago"].to_numpy(float)
    grid = np.linspace(0.0, value_horizon_days / u, n_value_points)
    rem = np.zeros(len(tte))
    act = np.flatnonzero(~churned)
    for s in range(0, len(act), 100_000):
        idx = act[s:s + 100_000]
        hv = cumulative_hazard_at(model, covariates.iloc[idx], c[idx, None] + grid[None, :])
        sv_ = np.exp(-np.clip(hv - start[idx, None], 0, None))
        rem[idx] = (1 - pi[idx]) * np.trapezoid(sv_, grid, axis=1) * u
    out["expected_remaining_days"] = rem
    sp = np.zeros(len(tte)) if spend is None else pd.Series(spend, index=tte.index).astype(float).to_numpy()
    out["expected_value"] = rem / DAYS_PER_MONTH * sp
    out["churned"] = churned
    return out


def inactivity_model(model, covariates: pd.DataFrame, tte: pd.DataFrame, n_components: int = 2
                     ) -> InactivityModel:
    """Fit the inactivity-spell distribution of alive customers (:func:`fit_inactivity`) for a fitted
    survival ``model``, from everyone's recency in ``tte`` (the step ``churn_risk(inactivity="fit")`` runs)."""
    if _no_recency(tte):
        raise ValueError("the table has no recency (last_seen_days_ago): nothing to fit")
    c = tte["tenure_days"].to_numpy(float)
    l = tte["last_seen_days_ago"].to_numpy(float)
    a = np.clip(c - l, 0, None)
    hz = cumulative_hazard_at(model, covariates, np.column_stack([np.clip(a - 1, 0, None), a, c]))
    return fit_inactivity(l, recency_odds(hz), n_components)


# --- recency from a monthly engagement history ---------------------------------------------------
ENGAGEMENT_STATES = ("active", "light", "dormant", "churned")
#: Spell codes of a month: active, light, dormant for 1, 2, or 3+ months in a row.
SPELLS = ("active", "light", "dormant_1m", "dormant_2m", "dormant_3m_plus")


def engagement_matrix(monthly: pd.DataFrame, ids: Sequence | None = None, id_col: str = "user_id",
                      month_col: str = "month", state_col: str = "engagement_state",
                      customer_since=None) -> tuple[np.ndarray, np.ndarray]:
    """Users x months matrix of observed engagement labels (0 active, 1 light, 2 dormant, 3 churned,
    -1 no row), months in calendar order; rows follow ``ids`` when given. With ``customer_since`` (dates
    aligned on ``ids``), months that end before the sign-up are set to -1 (a month without activity before
    the account existed is not a dormant month)."""
    need = {id_col, month_col, state_col} - set(monthly.columns)
    if need:
        raise ValueError(f"monthly activity table lacks columns {sorted(need)}; expected "
                         f"{id_col}, {month_col}, {state_col} (one row per user and month)")
    st = monthly[state_col].astype("string").str.lower()
    bad = ~st.isin(ENGAGEMENT_STATES)
    if bad.any():
        raise ValueError(f"column {state_col!r} has {int(bad.sum())} values outside {ENGAGEMENT_STATES} "
                         f"(e.g. {list(st[bad].head(3))})")
    months = np.sort(pd.to_datetime(monthly[month_col]).unique())
    m_idx = np.searchsorted(months, pd.to_datetime(monthly[month_col]).to_numpy())
    uid = monthly[id_col].astype(str).to_numpy()
    order = pd.Index(pd.unique(uid) if ids is None else pd.Index(pd.Series(ids).astype(str)))
    u_idx = order.get_indexer(uid)
    keep = u_idx >= 0
    out = np.full((len(order), len(months)), -1, dtype=np.int8)
    code = st.map({s: i for i, s in enumerate(ENGAGEMENT_STATES)}).to_numpy(dtype=np.int8)
    out[u_idx[keep], m_idx[keep]] = code[keep]
    if customer_since is not None:
        since = pd.to_datetime(pd.Series(customer_since)).to_numpy()
        month_end = (pd.DatetimeIndex(months) + pd.offsets.MonthEnd(0)).to_numpy()
        out[since[:, None] > month_end[None, :]] = -1
    return out, months


def resolve_observation_date(parameter=None, cfg=None, processed: Path | None = None,
                             truth_params: dict | None = None) -> tuple[pd.Timestamp | None, str]:
    """The observation date of the table and where it came from, in this order: the notebook parameter,
    the run configuration (``dates.observation_date``), the ingestion metadata (``observation_date`` in
    ``processed/ingest_meta.json`` or ``ingest_report.json``), the synthetic truth. ``(None, reason)``
    when none records it -- never a silent default."""
    import json

    if parameter:
        return pd.Timestamp(parameter), "the observation_date parameter"
    cfg_date = getattr(getattr(cfg, "dates", None), "observation_date", None)
    if cfg_date:
        return pd.Timestamp(cfg_date), "the run configuration (dates.observation_date)"
    for name in ("ingest_meta.json", "ingest_report.json"):
        f = Path(processed) / name if processed is not None else None
        if f is not None and f.exists():
            try:
                meta = json.loads(f.read_text())
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get("observation_date"):
                return pd.Timestamp(meta["observation_date"]), f"the ingestion metadata ({name})"
    if truth_params and truth_params.get("observation_date"):
        return pd.Timestamp(truth_params["observation_date"]), "the synthetic truth (truth_params.json)"
    return None, ("no observation date: not passed as a parameter, not in the run configuration "
                  "(dates.observation_date) and not recorded by ingestion")


def spell_codes(labels: np.ndarray) -> np.ndarray:
    """Per cell, the index into :data:`SPELLS` (-1 for churned or no data): the label, and for dormant
    months how many dormant months in a row end there."""
    run = np.zeros(labels.shape, dtype=np.int16)
    for m in range(labels.shape[1]):
        prev = run[:, m - 1] if m else 0
        run[:, m] = np.where(labels[:, m] == 2, prev + 1, 0)
    code = np.where(labels == 0, 0, np.where(labels == 1, 1, 1 + np.minimum(run, 3)))
    return np.where((labels < 0) | (labels == 3), -1, code).astype(np.int8)


def months_in_horizon(observation_date, horizon_days: int) -> int:
    """Account-closing months that fall within ``horizon_days`` after the observation date (first days of
    months in ``(obs, obs + horizon]``): 3 for 90 days from a month end."""
    obs = pd.Timestamp(observation_date)
    first = pd.date_range(obs + pd.Timedelta(days=1), obs + pd.Timedelta(days=horizon_days), freq="MS")
    return max(len(first), 1)


@dataclass
class MonthlyChurnModel:
    """Discrete-time model of account closing within ``horizon_months`` given this month's engagement spell
    (:data:`SPELLS`) and the user's covariates, fitted on the history's own past months (each past month is
    a backtest: its next ``horizon_months`` labels are known)."""

    model: object
    horizon_months: int
    columns: list[str]
    n_rows: int
    n_users: int
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def design(self, spell: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        onehot = np.eye(len(SPELLS))[spell][:, 1:]
        if x is None or x.shape[1] == 0:
            return onehot
        return np.column_stack([onehot, (x - self.mean) / self.scale])

    def predict(self, spell: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return self.model.predict_proba(self.design(spell, x))[:, 1]


def fit_monthly_churn(labels: np.ndarray, horizon_months: int, covariates: pd.DataFrame | None = None,
                      max_users: int = 30_000, seed: int = 0) -> MonthlyChurnModel:
    """Fit :class:`MonthlyChurnModel` (logistic regression) on every past user-month whose next
    ``horizon_months`` months are observed, for a seeded sample of at most ``max_users`` users."""
    from sklearn.linear_model import LogisticRegression

    n, M = labels.shape
    k = int(horizon_months)
    if M <= k:
        raise ValueError(f"the monthly history has {M} months: too short for a {k}-month horizon")
    rng = np.random.default_rng(seed)
    users = np.arange(n) if n <= max_users else np.sort(rng.choice(n, max_users, replace=False))
    lab = labels[users]
    code = spell_codes(lab)
    closed = lab == 3
    future = np.zeros((len(users), M - k), dtype=bool)
    for j in range(1, k + 1):
        future |= closed[:, j:M - k + j]
    past = code[:, :M - k]
    ok = past >= 0
    ui, mi = np.nonzero(ok)
    spell = past[ui, mi]
    y = future[ui, mi]
    x = None if covariates is None or covariates.shape[1] == 0 else covariates.to_numpy(float)[users][ui]
    mean = scale = None
    if x is not None:
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    cols = list(SPELLS[1:]) + ([] if x is None else list(covariates.columns))
    tmp = MonthlyChurnModel(None, k, cols, len(y), len(users), mean, scale)
    if y.all() or not y.any():
        raise ValueError("every (or no) past user-month is followed by a closing: cannot fit")
    tmp.model = LogisticRegression(C=1.0, max_iter=500).fit(tmp.design(spell, x), y)
    return tmp


def monthly_churn_risk(labels: np.ndarray, ids, observation_date, covariates: pd.DataFrame | None = None,
                       horizons: Sequence[int] = (90, 180), max_users: int = 30_000, seed: int = 0,
                       id_col: str = "user_id", return_models: bool = False):
    """Churn (account closing) probability within each horizon after the observation date, from the
    engagement spell of the last observed month (the observation month) and covariates.

    Accounts already closed (label ``churned`` in the last month) get probability 1 and ``closed=True``.
    With ``return_models`` the fitted :class:`MonthlyChurnModel` per horizon is returned too.
    """
    code = spell_codes(labels)[:, -1]
    closed = labels[:, -1] == 3
    out = pd.DataFrame({id_col: np.asarray(ids)})
    x_all = None if covariates is None else covariates.to_numpy(float)
    models = {}
    for h in horizons:
        mdl = fit_monthly_churn(labels, months_in_horizon(observation_date, h), covariates, max_users, seed)
        p = np.ones(len(out))
        ok = code >= 0
        p[ok] = mdl.predict(code[ok], None if x_all is None else x_all[ok])
        out[f"churn_prob_{h}d"] = np.where(closed, 1.0, p)
        models[h] = mdl
    out["spell"] = np.where(code >= 0, np.array(SPELLS, dtype=object)[np.maximum(code, 0)], "closed")
    out["closed"] = closed
    return (out, models) if return_models else out


def markov_oracle(truth: pd.DataFrame, paths: pd.DataFrame, params: dict, ids, observation_date,
                  horizons: Sequence[int] = (90, 180), id_col: str = "user_id") -> pd.DataFrame | None:
    """Oracle churn probability from the planted chain: ``P(closed within k months | true state at the
    observation month, true segment)`` with the planted transition matrices. None when the truth lacks
    ``markov`` parameters, ``user_paths`` or ``true_segment``."""
    mk = (params or {}).get("markov") or {}
    trans = mk.get("transition")
    states = [str(s) for s in mk.get("states", ENGAGEMENT_STATES)]
    if not trans or paths is None or "true_segment" not in truth or "churned" not in states:
        return None
    mats = {str(k): np.asarray(v, float) for k, v in (trans.items() if isinstance(trans, dict)
                                                      else enumerate(trans))}
    ids = pd.Index(pd.Series(ids).astype(str))
    last = paths[pd.to_datetime(paths["month"]) == pd.to_datetime(paths["month"]).max()]
    st = last.assign(**{id_col: last[id_col].astype(str)}).set_index(id_col)["true_state"].reindex(ids)
    seg = truth.assign(**{id_col: truth[id_col].astype(str)}).set_index(id_col)["true_segment"].reindex(ids)
    names = truth.groupby("true_segment")["true_segment_name"].first().to_dict() if \
        "true_segment_name" in truth else {}
    ch = states.index("churned")
    out = pd.DataFrame({id_col: ids.to_numpy()})
    for h in horizons:
        k = months_in_horizon(observation_date, h)
        p = np.full(len(ids), np.nan)
        for s in pd.unique(seg.dropna()):
            key = next((c for c in (str(int(s)), str(names.get(s, ""))) if c in mats), None)
            if key is None:
                return None
            pk = np.linalg.matrix_power(mats[key], k)[:, ch]
            m = (seg == s).to_numpy()
            code = st[m].map({v: i for i, v in enumerate(states)}).to_numpy()
            okc = ~pd.isna(code)
            vals = np.full(m.sum(), np.nan)
            vals[okc] = pk[code[okc].astype(int)]
            p[m] = vals
        out[f"churn_prob_{h}d"] = p
    return out


# --- calibration of the exported score against the future ---------------------------------------
def future_churn_truth(tte: pd.DataFrame, truth: pd.DataFrame, horizon: int = 90,
                       future: pd.DataFrame | None = None, id_col: str = "user_id") -> pd.Series:
    """What really happened in the ``horizon`` days after the observation date (planted truth only).

    Uses ``future_outcomes.parquet``'s ``churn_next_<h>d`` when ``future`` holds it; otherwise derives it from
    ``users_truth``: the true lifetime ends before ``tenure + horizon`` (``true_event_time_days <=
    tenure_days + horizon``). Aligned on ``tte``'s rows; raises naming the column when neither is available.
    """
    col = f"churn_next_{horizon}d"
    ids = tte[id_col].astype(str)
    if future is not None and col in future:
        m = future.assign(**{id_col: future[id_col].astype(str)}).set_index(id_col)[col]
        vals = m.reindex(ids.to_numpy())
        if vals.isna().any():
            raise ValueError(f"future_outcomes lacks {col} for {int(vals.isna().sum())} users "
                             f"(e.g. {list(ids[vals.isna().to_numpy()].head(3))})")
        return pd.Series(vals.astype(bool).to_numpy(), index=tte.index, name=col)
    need = {"true_event_time_days", "tenure_days"} - set(truth.columns)
    if need:
        raise ValueError(f"users_truth lacks {sorted(need)} and no future_outcomes.{col} was given")
    t = truth.assign(**{id_col: truth[id_col].astype(str)}).set_index(id_col).reindex(ids.to_numpy())
    fut = t["true_event_time_days"].to_numpy(float) <= t["tenure_days"].to_numpy(float) + horizon
    return pd.Series(fut, index=tte.index, name=col)


def recency_calibration(pred, actual, recency, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs actual (future) churn in recency deciles (equal-count bins of days since last
    activity; ties broken by row order), with a 95% Wilson interval of the actual share.

    Pass only the users the score is meant for (not yet flagged). Columns: ``bin``, ``recency_min``,
    ``recency_max`` (days), ``n``, ``predicted``, ``actual``, ``actual_lower``, ``actual_upper``,
    ``abs_err``.
    """
    d = pd.DataFrame({"pred": np.asarray(pred, float), "actual": np.asarray(actual, float),
                      "recency": np.asarray(recency, float)}).reset_index(drop=True)
    if len(d) < n_bins:
        raise ValueError(f"recency_calibration needs at least {n_bins} users, got {len(d)}")
    order = np.lexsort((np.arange(len(d)), d["recency"].to_numpy()))
    bins = np.empty(len(d), dtype=int)
    bins[order] = np.arange(len(d)) * n_bins // len(d)
    d["bin"] = bins
    g = d.groupby("bin")
    out = pd.DataFrame({"recency_min": g["recency"].min(), "recency_max": g["recency"].max(),
                        "n": g.size(), "predicted": g["pred"].mean(), "actual": g["actual"].mean()}
                       ).reset_index()
    z, n, ph = 1.96, out["n"].to_numpy(float), out["actual"].to_numpy(float)
    centre = (ph + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(ph * (1 - ph) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    out["actual_lower"], out["actual_upper"] = centre - half, centre + half
    out["abs_err"] = (out["predicted"] - out["actual"]).abs()
    return out


def plot_recency_calibration(tables: dict[str, pd.DataFrame], ax=None, horizon: int = 90):
    """Predicted and actual churn share by recency decile, one line per score (``tables``: label -> table
    of :func:`recency_calibration`; the first is drawn with the actual shares and their 95% intervals)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 4))[1]
    first = next(iter(tables.values()))
    x = np.arange(len(first))
    ax.errorbar(x, first["actual"], yerr=[first["actual"] - first["actual_lower"],
                                          first["actual_upper"] - first["actual"]],
                fmt="ks", capsize=3, label=f"actual churn in the next {horizon} days (95% CI)")
    for i, (lab, t) in enumerate(tables.items()):
        ax.plot(x, t["predicted"], "o-", color=f"C{i}", label=f"predicted: {lab}")
    ax.set_xticks(x, [f"{a:.0f}-{b:.0f}" for a, b in zip(first["recency_min"], first["recency_max"])],
                  rotation=45)
    ax.set(xlabel="recency decile: days since last activity at the observation date",
           ylabel=f"share churning within {horizon} days")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax


def true_churn_probability(tte: pd.DataFrame, truth: pd.DataFrame, params: dict,
                           horizons: Sequence[int] = (90, 180), id_col: str = "user_id"
                           ) -> pd.DataFrame | None:
    """Oracle score from the planted truth (Weibull PH world): the same posterior as :func:`churn_risk` with
    the true hazard (``true_log_hazard``, planted shape and scale) and the true inactivity distribution
    (recency pmf of the users truly alive at the observation date). None when the truth is of another
    kind (no ``weibull_ph`` hazard model or no ``true_log_hazard``)."""
    hm = params.get("hazard_model", {}) if params else {}
    if hm.get("family") != "weibull_ph" or "true_log_hazard" not in truth:
        return None
    t = truth.assign(**{id_col: truth[id_col].astype(str)}).set_index(id_col).reindex(
        tte[id_col].astype(str).to_numpy())
    lin = t["true_log_hazard"].to_numpy(float)
    rho, lam = float(hm["shape"]), float(hm["scale_days"])

    class _Truth:
        def cumulative_hazard_at(self, covariates, times):
            return np.exp(lin[covariates["_row"].to_numpy()])[:, None] * (np.clip(times, 0, None) / lam) ** rho

    alive = t["true_event_time_days"].to_numpy(float) > t["tenure_days"].to_numpy(float)
    rec = tte["last_seen_days_ago"].to_numpy(float)
    counts = np.bincount(rec[alive].astype(int), minlength=int(rec.max()) + 2).astype(float)
    pmf = counts / max(counts.sum(), 1.0)

    class _TrueGaps(InactivityModel):
        def pmf(self, days):
            d = np.asarray(days, dtype=int)
            return np.where(d < len(pmf), pmf[np.clip(d, 0, len(pmf) - 1)], 0.0)

    gaps = _TrueGaps(np.array([1.0]), np.array([0.5]))
    cov = pd.DataFrame({"_row": np.arange(len(tte))}, index=tte.index)
    return churn_risk(_Truth(), cov, tte, None, horizons, inactivity=gaps, id_col=id_col)


def segment_value(risk: pd.DataFrame, segment: pd.Series, spend: pd.Series,
                  rmst: pd.DataFrame | None = None, labels: dict | None = None) -> pd.DataFrame:
    """Per-segment customer value: users, churn share, mean 90-day churn risk of active users, mean
    expected remaining lifetime and value, mean spend, and (if given) the segment's KM RMST."""
    d = risk.assign(segment=pd.Series(segment, index=risk.index).to_numpy(),
                    spend=pd.Series(spend, index=risk.index).astype(float).to_numpy())
    act = d[~d["churned"]]
    out = pd.DataFrame({
        "n_users": d.groupby("segment").size(),
        "churned_share": d.groupby("segment")["churned"].mean(),
        "mean_spend_usd_month": d.groupby("segment")["spend"].mean(),
        "active_churn_prob_90d": act.groupby("segment")["churn_prob_90d"].mean(),
        "active_expected_remaining_days": act.groupby("segment")["expected_remaining_days"].mean(),
        "mean_expected_value_usd": d.groupby("segment")["expected_value"].mean(),
        "total_expected_value_usd": d.groupby("segment")["expected_value"].sum(),
    }).reset_index()
    if labels:
        out.insert(1, "segment_name", out["segment"].map(labels))
    if rmst is not None:
        r = rmst.rename(columns={"group": "segment"})[["segment", "rmst", "rmst_se"]]
        out = out.merge(r.rename(columns={"rmst": "rmst_days", "rmst_se": "rmst_se_days"}), on="segment",
                        how="left")
        out["rmst_value_usd"] = out["rmst_days"] / DAYS_PER_MONTH * out["mean_spend_usd_month"]
    return out


# --- real data: IBM Telco churn ------------------------------------------------------------------
#: How the Telco columns map onto the panel's concepts (documented in the churn notebook).
TELCO_MAPPING = {
    "tenure": "duration (months since sign-up; the snapshot's follow-up = customer_since_date -> obs)",
    "Churn": "event (Yes = churned, the analogue of churned_in_last_90_days; No = right-censored)",
    "MonthlyCharges": "avg_monthly_spend (USD/month)",
    "SeniorCitizen": "age band 65+ (demographic)",
    "gender, Partner, Dependents": "demographics (cf. marital_status, presence_of_children)",
    "Contract, PaymentMethod, PaperlessBilling": "account covariates (no panel analogue; Contract is the "
                                                  "natural segment-like stratum)",
    "PhoneService ... StreamingMovies": "product-usage covariates (cf. the behavioural channel minutes)",
    "TotalCharges": "NOT used: ~ tenure x MonthlyCharges, it leaks the duration into the covariates",
}
TELCO_CATEGORICAL = ["gender", "Partner", "Dependents", "PhoneService", "MultipleLines", "InternetService",
                     "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
                     "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod"]


def load_telco(path: str | Path, log_charges: bool = True, drop_aliased_dummies: bool = True
               ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Read the IBM Telco churn CSV into a model frame (``duration`` in months, ``event``, dummies).

    ``log_charges=False`` gives the usual "plain" specification with ``MonthlyCharges`` entering linearly
    (column ``MonthlyCharges``); ``True`` uses ``log_monthly_charges``, whose effect on the log hazard is
    closer to linear. Aliased dummies are dropped (``drop_aliased_dummies``): the six
    ``<service>_No_internet_service`` dummies all equal ``InternetService_No`` and
    ``MultipleLines_No_phone_service`` is ``1 - PhoneService_Yes``; ``frame.attrs["aliased"]`` says what
    each dropped column equals.

    Rows with ``tenure == 0`` (11 new customers, all censored at 0) carry no information and are dropped.
    Returns the frame and the dummy groups (original column -> its dummy columns) for :func:`remedy_ph`.
    The covariates are the snapshot's values at the end of each customer's follow-up (services and charges
    at churn or at the extract date), not at sign-up.
    """
    raw = pd.read_csv(path)
    need = {"tenure", "Churn", "MonthlyCharges", "SeniorCitizen", *TELCO_CATEGORICAL}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"{path} lacks Telco columns {sorted(missing)}")
    bad = ~raw["Churn"].isin(["Yes", "No"])
    if bad.any():
        raise ValueError(f"{path}: column 'Churn' must be Yes/No; {int(bad.sum())} rows are not "
                         f"(first at data row {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
    raw = raw[raw["tenure"] > 0].reset_index(drop=True)
    dummies = pd.get_dummies(raw[TELCO_CATEGORICAL], drop_first=True, dtype=float)
    charges = raw["MonthlyCharges"].astype(float)
    charge_col = (pd.DataFrame({"log_monthly_charges": np.log(charges)}) if log_charges
                  else pd.DataFrame({"MonthlyCharges": charges}))
    frame = pd.concat([
        pd.DataFrame({DURATION: raw["tenure"].astype(float), EVENT: (raw["Churn"] == "Yes").astype(int)}),
        dummies, pd.DataFrame({"SeniorCitizen": raw["SeniorCitizen"].astype(float)}), charge_col,
    ], axis=1)

    def tidy(c: str) -> str:
        return c.replace(" ", "_").replace("(", "").replace(")", "")

    frame.columns = [tidy(c) for c in frame.columns]
    aliased: dict[str, str] = {}
    if drop_aliased_dummies:
        cov, aliased = drop_aliased(frame.drop(columns=[DURATION, EVENT]))
        frame = pd.concat([frame[[DURATION, EVENT]], cov], axis=1)
    groups = {c: [tidy(d) for d in dummies if d.startswith(c + "_") and tidy(d) in frame]
              for c in TELCO_CATEGORICAL}
    frame.attrs["aliased"] = aliased
    return frame, groups


# --- plots ---------------------------------------------------------------------------------------
def plot_forest(table: pd.DataFrame, ax=None, title: str = "", xlabel: str = "log hazard ratio"):
    """Forest plot of ``coef`` with 95% CIs (and planted ``true`` values as red crosses if present)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 0.35 * len(table) + 1.2))[1]
    y = np.arange(len(table))[::-1]
    ax.errorbar(table["coef"], y, xerr=[table["coef"] - table["lower"], table["upper"] - table["coef"]],
                fmt="o", color="C0", capsize=3, label="estimate, 95% CI")
    if "true" in table and table["true"].notna().any():
        ax.plot(table["true"], y, "x", color="C3", markersize=8, label="planted truth")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, table["covariate"])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return ax


def _check_frame(frame: pd.DataFrame) -> None:
    for c in (DURATION, EVENT):
        if c not in frame.columns:
            raise ValueError(f"model frame needs a {c!r} column (build it with model_frame / load_telco)")
    if frame[DURATION].isna().any() or (frame[DURATION] < 0).any():
        raise ValueError(f"column {DURATION!r} must be non-negative and non-missing; "
                         f"{int((frame[DURATION].isna() | (frame[DURATION] < 0)).sum())} rows are not")
    if not frame[EVENT].isin([0, 1]).all():
        raise ValueError(f"column {EVENT!r} must be 0/1")
    obj = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if obj:
        raise ValueError(f"covariates {obj} are not numeric; encode them (e.g. panel_covariates)")


#: Covariates whose effect is allowed to differ for month-to-month contracts in :func:`telco_interactions`.
TELCO_MTM_INTERACTIONS = ["log_monthly_charges", "InternetService_Fiber_optic",
                          "PaymentMethod_Electronic_check", "OnlineSecurity_Yes", "TechSupport_Yes",
                          "SeniorCitizen"]


def telco_interactions(frame: pd.DataFrame, columns: Sequence[str] = tuple(TELCO_MTM_INTERACTIONS)
                       ) -> pd.DataFrame:
    """Add ``<col>_x_mtm`` interactions with the month-to-month contract (the stratum where PH fails).

    Month-to-month customers churn early and for different reasons than contract customers; letting the
    key price/service effects differ by contract type is the better-specified model of the notebook.
    """
    need = {"Contract_One_year", "Contract_Two_year", *columns} - set(frame.columns)
    if need:
        raise ValueError(f"telco_interactions needs columns {sorted(need)} (from load_telco(log_charges=True))")
    out = frame.copy()
    mtm = 1 - out["Contract_One_year"] - out["Contract_Two_year"]
    for c in columns:
        out[f"{c}_x_mtm"] = out[c] * mtm
    return out
