"""Benchmark: the survival notebook's steps (06_churn_survival) at up to 1M users, and what the Schoenfeld
sample costs.

Two modes (timings printed and, with ``--out``, written as JSON; nothing is asserted):

* ``--n-users N`` (default 1,000,000): generates a synthetic panel and times, in the notebook's order,
  durations (``time_to_event``), covariates from the run configuration, the Cox fit on the training users,
  the PH remedy with Schoenfeld tests on a seeded sample of ``--ph-sample`` rows (and, when it stratifies,
  the stratified model's held-out C-index and integrated Brier score), the three AFT families
  compared on a seeded sample of ``--compare-sample`` training rows (the notebook's ``compare_max_rows``),
  held-out C-index with bootstrap intervals, the best family refitted on ``--fit-sample`` rows (the
  notebook's ``fit_max_rows``), the recency-aware churn risk of every user (snapshot mixture) and, when
  the panel has a monthly history, the monthly-spell model.
* ``--compare-ph N``: on a panel of N users (20k-50k), the Schoenfeld test on all training rows against the
  test on seeded samples of ``--ph-sample`` rows (several seeds): p-values side by side and how often the
  violated / not-violated decision agrees. The full test's cost grows with the square of the rows.
* ``--compare-aft N``: on a panel of N users, the three AFT families fitted on every training row against a
  seeded sample of ``--compare-sample`` rows: CPU seconds, AIC order, held-out C-index (with interval),
  integrated Brier score and the best family's calibration error, side by side (what the sample costs).

Run with ``OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_survival.py --n-users 1000000`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd

from helpers import survival as sv
from helpers.generate import DEFAULT_OBSERVATION_DATE, generate_panel

warnings.filterwarnings("ignore")


@contextmanager
def timer(results: dict, name: str):
    """Record the wall-clock seconds of the block under ``name`` (benchmark only, never asserted)."""
    t0 = time.perf_counter()
    yield
    results[name] = round(time.perf_counter() - t0, 2)
    print(f"{name:<44s} {results[name]:>8.2f} s", flush=True)


def _covariates(df: pd.DataFrame, tte: pd.DataFrame) -> pd.DataFrame:
    try:
        from helpers import config
        return sv.config_covariates(df, config.load(None), duration=tte["duration"])
    except ImportError:
        return sv.panel_covariates(df, groups=("demographic", "behavioural"))


def main(n_users: int, fit_sample: int, seed: int, ph_sample: int = sv.PH_TEST_SAMPLE, n_boot: int = 100,
         compare_sample: int = 50_000) -> dict:
    """Time the notebook's survival steps at ``n_users`` and return the timings (seconds) and sizes."""
    res: dict[str, object] = {"n_users": n_users, "fit_sample": fit_sample, "ph_sample": ph_sample}
    with timer(res, "generate_panel"):
        panel = generate_panel(n_users, seed=seed)
    df = panel.data
    t_all = time.perf_counter()
    with timer(res, "time_to_event"):
        tte = sv.time_to_event(df, DEFAULT_OBSERVATION_DATE)
    with timer(res, "covariates_from_config"):
        X = _covariates(df, tte)
    frame = sv.model_frame(tte, X)
    train, test = sv.split(frame, 0.3, seed=seed)
    res["n_train"], res["n_test"] = len(train), len(test)
    with timer(res, "cox_fit_all_training_rows"):
        cox = sv.fit_cox(train, penalizer=0.01)
    with timer(res, f"remedy_ph_schoenfeld_on_{min(ph_sample, len(train))}_rows"):
        rem = sv.remedy_ph(train, penalizer=0.01, ph_max_rows=ph_sample, seed=seed, model=cox)
    res["ph_violations_before"], res["ph_strata"] = rem.n_violations_before, rem.strata
    cmp_rows = sv.ph_sample(train, compare_sample or None, seed)
    res["n_aft_compare"] = len(cmp_rows)
    afts = {}
    for fam in sv.AFT_FAMILIES:
        with timer(res, f"aft_{fam}_on_{len(cmp_rows)}_rows"):
            afts[fam] = sv.fit_aft(cmp_rows, fam, penalizer=0.01)
    best = min(afts, key=lambda f: afts[f].AIC_)
    with timer(res, "c_index_intervals_cox_and_3_aft"):
        res["cox_c_index_test"] = sv.c_index_interval(cox, test, n_boot, seed)["c_index"]
        for fam, m in afts.items():
            sv.c_index_interval(m, test, n_boot, seed)
    if rem.strata:  # the stratified model is ranked by expected lifetime (no users x timeline matrix)
        with timer(res, "c_index_interval_and_ibs_stratified_cox"):
            strat_test = sv.apply_strata(test, rem)
            sv.c_index_interval(rem.model, strat_test, n_boot, seed)
            sv.integrated_brier_score(rem.model, rem.frame, strat_test)
    with timer(res, "integrated_brier_best_aft"):
        sv.integrated_brier_score(afts[best], cmp_rows, test)
    fit_rows = sv.ph_sample(frame, fit_sample or None, seed)
    res["n_aft_fit"] = len(fit_rows)
    with timer(res, f"aft_{best}_refit_on_{len(fit_rows)}_rows"):
        final = sv.fit_aft(fit_rows, best, penalizer=0.01)
    with timer(res, "churn_risk_all_users_recency_mixture"):
        sv.churn_risk(final, X, tte, df.get("avg_monthly_spend"))
    monthly = getattr(panel, "monthly", None)
    if monthly is not None and len(monthly):
        with timer(res, "monthly_spell_model_fit_and_score"):
            lab, _ = sv.engagement_matrix(monthly, df["user_id"], customer_since=df["customer_since_date"])
            sv.monthly_churn_risk(lab, df["user_id"], DEFAULT_OBSERVATION_DATE, None, seed=seed)
    res["survival_steps_total_s"] = round(time.perf_counter() - t_all, 2)
    res["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    print(f"survival steps total {res['survival_steps_total_s']} s; peak RSS {res['peak_rss_gb']} GB")
    return res


def compare_ph(n_users: int, ph_sample: int, seed: int, n_seeds: int = 5) -> dict:
    """Schoenfeld p-values and decisions on all training rows vs seeded samples of ``ph_sample`` rows."""
    panel = generate_panel(n_users, seed=seed)
    df = panel.data
    tte = sv.time_to_event(df, DEFAULT_OBSERVATION_DATE)
    train, _ = sv.split(sv.model_frame(tte, _covariates(df, tte)), 0.3, seed=seed)
    cox = sv.fit_cox(train, penalizer=0.01)
    t0 = time.perf_counter()
    full = sv.ph_test(cox, train, max_rows=None).set_index("covariate")
    t_full = time.perf_counter() - t0
    table = full[["p", "violated"]].rename(columns={"p": "p_full", "violated": "violated_full"})
    agree, t_s = [], []
    for s in range(n_seeds):
        t0 = time.perf_counter()
        samp = sv.ph_test(cox, train, max_rows=ph_sample, seed=s).set_index("covariate")
        t_s.append(time.perf_counter() - t0)
        table[f"p_sample_seed{s}"] = samp["p"]
        agree.append(float((samp["violated"] == full["violated"]).mean()))
    print(table.round(4).to_string())
    out = {"n_users": n_users, "n_train": len(train), "ph_sample": ph_sample, "seconds_full": round(t_full, 2),
           "seconds_sample_mean": round(float(np.mean(t_s)), 2),
           "decision_agreement_mean": round(float(np.mean(agree)), 4),
           "n_violated_full": int(full["violated"].sum()),
           "n_violated_sample_mean": float(np.mean([int((table[f"p_sample_seed{s}"] < 0.05 / len(table)).sum())
                                                    for s in range(n_seeds)])),
           "table": table.round(6).reset_index().to_dict(orient="records")}
    print({k: v for k, v in out.items() if k != "table"})
    return out


def compare_aft(n_users: int, compare_sample: int, seed: int, n_boot: int = 100) -> dict:
    """The three AFT families on every training row vs on a seeded sample of ``compare_sample`` rows."""
    panel = generate_panel(n_users, seed=seed)
    df = panel.data
    tte = sv.time_to_event(df, DEFAULT_OBSERVATION_DATE)
    train, test = sv.split(sv.model_frame(tte, _covariates(df, tte)), 0.3, seed=seed)
    out: dict[str, object] = {"n_users": n_users, "n_train": len(train), "n_test": len(test)}
    for label, rows in (("all_training_rows", None), (f"sample_{compare_sample}", compare_sample)):
        fit_rows = sv.ph_sample(train, rows, seed)
        c0 = time.process_time()
        afts = {f: sv.fit_aft(fit_rows, f, penalizer=0.01) for f in sv.AFT_FAMILIES}
        res: dict[str, object] = {"n_fit": len(fit_rows), "cpu_s": round(time.process_time() - c0, 2),
                                  "aic_order": sv.aic_table(afts)["model"].tolist()}
        for f, m in afts.items():
            ci = sv.c_index_interval(m, test, n_boot, seed)
            res[f] = {"c_index": round(ci["c_index"], 5), "c_lower": round(ci["lower"], 5),
                      "c_upper": round(ci["upper"], 5),
                      "ibs": round(sv.integrated_brier_score(m, train, test), 5)}
        cal = sv.calibration_table(afts[res["aic_order"][0]], test, 90)
        res["best_calibration_abs_err_90d"] = round(float((cal.predicted - cal.observed).abs().mean()), 5)
        out[label] = res
        print(label, json.dumps(res), flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--fit-sample", type=int, default=200_000,
                    help="the best AFT family is refitted on a seeded sample of this many rows (0 = all)")
    ap.add_argument("--compare-sample", type=int, default=50_000,
                    help="the three AFT families are compared on a seeded sample of this many training rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ph-sample", type=int, default=sv.PH_TEST_SAMPLE,
                    help="rows of the Schoenfeld test (its cost grows with the square of the rows)")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--compare-ph", type=int, default=0, metavar="N",
                    help="compare full vs sampled Schoenfeld tests on a panel of N users instead")
    ap.add_argument("--compare-aft", type=int, default=0, metavar="N",
                    help="compare AFT fits on all training rows vs on --compare-sample rows, panel of N users")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    if a.compare_ph:
        result = compare_ph(a.compare_ph, a.ph_sample, a.seed)
    elif a.compare_aft:
        result = compare_aft(a.compare_aft, a.compare_sample, a.seed, a.n_boot)
    else:
        result = main(a.n_users, a.fit_sample, a.seed, a.ph_sample, a.n_boot, a.compare_sample)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2, default=str)
