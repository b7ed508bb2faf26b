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


def ph_test(model: CoxPHFitter, frame: pd.DataFrame, alpha: float = 0.05,
            time_transform: str = "rank") -> pd.DataFrame:
    """Schoenfeld-residual test of proportional hazards per covariate.

    Returns ``covariate``, ``statistic``, ``p`` and ``violated`` (``p < alpha / m``, Bonferroni over the
    ``m`` covariates tested, so that large samples do not flag every negligible departure).
    """
    res = proportional_hazard_test(model, frame, time_transform=time_transform)
    s = res.summary
    idx = s.index.get_level_values(0) if isinstance(s.index, pd.MultiIndex) else s.index
    out = pd.DataFrame({"covariate": idx.astype(str), "statistic": s["test_statistic"].to_numpy(),
                        "p": s["p"].to_numpy()})
    out["violated"] = out["p"] < alpha / max(len(out), 1)
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
        """Covariates that violated PH at first and no longer appear as violations."""
        still = set(self.after.loc[self.after["violated"], "covariate"])
        return int(sum(c not in still for c in self.before.loc[self.before["violated"], "covariate"]))


def _bin_name(c: str) -> str:
    return f"{c}__bin"


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
              min_events_per_stratum: int = 10) -> PHRemedy:
    """Fit Cox, test PH (Schoenfeld), stratify on the worst violator, refit and re-test; repeat.

    Each round takes the violating covariate with the largest test statistic and makes it a stratum:
    a dummy of a group in ``groups`` (original column -> its dummy columns, e.g. ``{"Contract": [...]}``)
    brings its whole group as one categorical stratum; another binary covariate becomes a stratum as is;
    a continuous one is cut into ``n_bins`` quantile bins. Its effect is then absorbed by stratum-specific
    baseline hazards (no longer estimated as a hazard ratio). A candidate that would leave a stratum
    with fewer than ``min_events_per_stratum`` events is skipped. Stops when no violation is left or
    after ``max_rounds`` rounds.
    """
    _check_frame(frame)
    groups = groups or {}
    work, strata = frame.copy(), []
    model = fit_cox(work, penalizer=penalizer)
    before = ph_test(model, work, alpha)
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
        after = ph_test(model, work, alpha)
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


# --- per-user risk and value ---------------------------------------------------------------------
def _interp_rows(s: np.ndarray, step: float, u: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of ``s`` (values on the grid ``0, step, 2 step, ...``) at ``u``
    (shape ``(n,)`` or ``(n, m)``, one row per row of ``s``); constant beyond the grid's end."""
    pos = np.clip(u / step, 0, s.shape[1] - 1)
    i0 = np.minimum(np.floor(pos).astype(int), s.shape[1] - 2)
    frac = pos - i0
    two_d = u.ndim == 2
    i0 = i0 if two_d else i0[:, None]
    frac = frac if two_d else frac[:, None]
    v = (1 - frac) * np.take_along_axis(s, i0, 1) + frac * np.take_along_axis(s, i0 + 1, 1)
    return v if two_d else v[:, 0]


def churn_risk(model, covariates: pd.DataFrame, tte: pd.DataFrame, spend: pd.Series,
               horizons: Sequence[int] = (90, 180), value_horizon_days: float = 3 * 365.0,
               id_col: str = "user_id", grid_step: float = 5.0) -> pd.DataFrame:
    """Per-user churn probability over the next ``horizons`` days, expected remaining lifetime and value.

    A user not flagged as churned is known to have a lifetime longer than ``a = known_alive_days``
    (tenure minus recency ``l``); the observation date is ``l`` days later. Then
    ``churn_prob_<h>d = P(T <= a + l + h | T > a, x)``: the lifetime ends (last activity happens) before
    ``h`` days after the observation date -- including lifetimes that have already ended but are not yet
    flagged. ``expected_remaining_days = int_0^H P(T > a + l + u | T > a, x) du`` is the remaining lifetime
    after the observation date restricted to ``H = value_horizon_days`` (a finite horizon keeps the fitted
    tail's extrapolation out of the value); ``expected_value`` = that x ``spend`` (USD/month) / 30.44.
    Users already flagged as churned get probability 1, remaining lifetime 0 and value 0.

    ``covariates`` holds every user's model covariates (and strata columns), aligned with ``tte``. Use a
    parametric model: a Cox baseline stops at the last training event time and cannot extrapolate.
    """
    if len(covariates) != len(tte) or not covariates.index.equals(tte.index):
        raise ValueError("covariates and tte must have the same rows in the same order (same index)")
    churned = tte[EVENT].to_numpy() == 1
    out = pd.DataFrame({id_col: tte[id_col].to_numpy()}, index=tte.index)
    for h in horizons:
        out[f"churn_prob_{h}d"] = 1.0
    out["expected_remaining_days"] = 0.0
    active = ~churned
    if active.any():
        a = tte["known_alive_days"].to_numpy(float)[active]
        lag = tte["last_seen_days_ago"].to_numpy(float)[active]
        top = lag.max() + value_horizon_days
        grid = np.arange(0.0, top + 2 * grid_step, grid_step)
        s = survival_at(model, covariates.loc[active], grid, conditional_after=a)
        for h in horizons:
            out.loc[active, f"churn_prob_{h}d"] = 1 - _interp_rows(s, grid_step, lag + h)
        u = np.linspace(0.0, value_horizon_days, 157)
        rem = _interp_rows(s, grid_step, lag[:, None] + u[None, :])
        out.loc[active, "expected_remaining_days"] = np.trapezoid(rem, u, axis=1)
    out["expected_value"] = out["expected_remaining_days"] / DAYS_PER_MONTH * \
        pd.Series(spend, index=tte.index).astype(float).to_numpy()
    out["churned"] = churned
    return out


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


def load_telco(path: str | Path, log_charges: bool = True) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Read the IBM Telco churn CSV into a model frame (``duration`` in months, ``event``, dummies).

    ``log_charges=False`` gives the usual "plain" specification with ``MonthlyCharges`` entering linearly;
    ``True`` uses ``log(MonthlyCharges)``, whose effect on the log hazard is closer to linear.

    Rows with ``tenure == 0`` (11 new customers, all censored at 0) carry no information and are dropped.
    Returns the frame and the dummy groups (original column -> its dummy columns) for :func:`remedy_ph`.
    """
    raw = pd.read_csv(path)
    need = {"tenure", "Churn", "MonthlyCharges", "SeniorCitizen", *TELCO_CATEGORICAL}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"{path} lacks Telco columns {sorted(missing)}")
    bad = ~raw["Churn"].isin(["Yes", "No"])
    if bad.any():
        raise ValueError(f"{path}: column 'Churn' must be Yes/No; {int(bad.sum())} rows are not")
    raw = raw[raw["tenure"] > 0].reset_index(drop=True)
    dummies = pd.get_dummies(raw[TELCO_CATEGORICAL], drop_first=True, dtype=float)
    groups = {c: [d for d in dummies if d.startswith(c + "_")] for c in TELCO_CATEGORICAL}
    frame = pd.concat([
        pd.DataFrame({DURATION: raw["tenure"].astype(float), EVENT: (raw["Churn"] == "Yes").astype(int)}),
        dummies, pd.DataFrame({"SeniorCitizen": raw["SeniorCitizen"].astype(float),
                               "log_monthly_charges": np.log(raw["MonthlyCharges"].astype(float))}),
    ], axis=1)
    frame.columns = [c.replace(" ", "_").replace("(", "").replace(")", "") for c in frame.columns]
    groups = {g: [d.replace(" ", "_").replace("(", "").replace(")", "") for d in ds] for g, ds in groups.items()}
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
