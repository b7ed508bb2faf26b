"""Kaplan-Meier curves with RMST, Cox proportional-hazards fits, Schoenfeld tests and their stratification remedy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test

from .data import DURATION, EVENT, _check_frame


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


def _tested_fit(work: pd.DataFrame, strata: list[str], penalizer: float, alpha: float,
                ph_max_rows: int | None, seed: int) -> tuple[CoxPHFitter | None, pd.DataFrame]:
    """Schoenfeld tests of the Cox model with ``strata`` on ``work``: fitted on the seeded test sample only
    (the tests refit there anyway), so the model is returned (else None) only when the sample is every row."""
    sample = ph_sample(work, ph_max_rows, seed)
    model = fit_cox(sample, strata=strata or None, penalizer=penalizer)
    tests = ph_test(model, sample, alpha, max_rows=None)
    tests.attrs["n_tested"] = len(sample)
    return (model if len(sample) == len(work) else None), tests


def remedy_ph(frame: pd.DataFrame, alpha: float = 0.05, n_bins: int = 4, penalizer: float = 0.0,
              max_rounds: int = 3, groups: dict[str, list[str]] | None = None,
              min_events_per_stratum: int = 10, ph_max_rows: int | None = PH_TEST_SAMPLE,
              seed: int = 0, model: CoxPHFitter | None = None) -> PHRemedy:
    """Fit Cox, test PH (Schoenfeld), stratify on the worst violator, refit and re-test; repeat.

    Each round takes the violating covariate with the largest test statistic and makes it a stratum:
    a dummy of a group in ``groups`` (original column -> its dummy columns, e.g. ``{"Contract": [...]}``)
    brings its whole group as one categorical stratum; another binary covariate becomes a stratum as is;
    a continuous one is cut into ``n_bins`` quantile bins. Its effect is then absorbed by stratum-specific
    baseline hazards (no longer estimated as a hazard ratio). A candidate that would leave a stratum
    with fewer than ``min_events_per_stratum`` events is skipped. Stops when no violation is left or
    after ``max_rounds`` rounds. The tests run on a seeded sample of at most ``ph_max_rows`` rows
    (:func:`ph_test`), where each round's model is fitted; only the final model is fitted on every row,
    once (the intermediate full-data fits changed nothing the tests saw and cost 5 s each at 675k rows).
    ``model``: the unstratified fit of ``frame`` with this ``penalizer`` when the caller has it already
    (reused as the final model if nothing is stratified).
    """
    _check_frame(frame)
    groups = groups or {}
    work, strata = frame.copy(), []
    fitted, before = _tested_fit(work, strata, penalizer, alpha, ph_max_rows, seed)
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
        fitted, after = _tested_fit(work, strata, penalizer, alpha, ph_max_rows, seed)
    if fitted is None:
        fitted = model if (model is not None and not strata) else fit_cox(work, strata=strata or None,
                                                                          penalizer=penalizer)
    return PHRemedy(fitted, work, before, after, strata, frame)


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
