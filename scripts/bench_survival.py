"""Benchmark: fitting time and peak memory of the churn survival models at up to 1M users.

Generates a synthetic panel of ``--n-users`` (default 1,000,000), builds durations with
``helpers.survival.time_to_event`` and times, on the full usable table or on a seeded sample of
``--fit-sample`` users (0 = full table):

* Cox PH on the planted covariates (7 columns) and on the full panel covariates (~17 columns),
* Weibull and log-normal AFT on the panel covariates,
* the Schoenfeld PH test (on a ``--ph-sample`` subsample: it took > 10 min on 700k users), held-out C-index and per-user churn risk scoring of *all* users.

Timings are printed (and written as JSON with ``--out``); nothing is asserted. Run with
``OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_survival.py --n-users 1000000``.
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
from helpers.generate import DEFAULT_OBSERVATION_DATE, K, TRUE_LOG_HR, generate_panel

warnings.filterwarnings("ignore")


@contextmanager
def timer(results: dict, name: str):
    """Record the wall-clock seconds of the block under ``name`` (benchmark only, never asserted)."""
    t0 = time.perf_counter()
    yield
    results[name] = round(time.perf_counter() - t0, 2)
    print(f"{name:<40s} {results[name]:>8.2f} s", flush=True)


def main(n_users: int, fit_sample: int, seed: int, ph_sample: int = 50_000) -> dict:
    """Run the benchmark and return the timings (seconds) and sizes."""
    res: dict[str, object] = {"n_users": n_users, "fit_sample": fit_sample}
    with timer(res, "generate_panel"):
        panel = generate_panel(n_users, seed=seed)
    df, truth = panel.data, panel.truth
    with timer(res, "time_to_event"):
        tte = sv.time_to_event(df, DEFAULT_OBSERVATION_DATE)
    with timer(res, "covariates"):
        seg = pd.Series(truth["true_segment"].to_numpy(), index=df.index)
        X = sv.panel_covariates(df, seg, segment_reference=0)
        Xt = sv.truth_covariates(df, seg, K)
    frame, tframe = sv.model_frame(tte, X), sv.model_frame(tte, Xt)
    if fit_sample and fit_sample < len(frame):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(frame), fit_sample, replace=False))
        frame, tframe = frame.iloc[keep], tframe.iloc[keep]
    res["n_fit"] = len(frame)
    train, test = sv.split(frame, 0.3, seed=seed)
    with timer(res, "cox_planted_covariates"):
        cov = sv.true_loghr_coverage(tframe, TRUE_LOG_HR)
    res["true_loghr_coverage"] = float(cov["covered"].mean())
    with timer(res, "cox_panel_covariates"):
        cox = sv.fit_cox(train, penalizer=0.01)
    ph = train.sample(n=min(ph_sample, len(train)), random_state=seed)
    res["n_schoenfeld_sample"] = len(ph)
    with timer(res, f"schoenfeld_test_on_{len(ph)}_sample"):
        sv.ph_test(sv.fit_cox(ph, penalizer=0.01), ph)
    with timer(res, "weibull_aft"):
        wb = sv.fit_aft(train, "weibull", penalizer=0.01)
    with timer(res, "lognormal_aft"):
        sv.fit_aft(train, "lognormal", penalizer=0.01)
    with timer(res, "c_index_test"):
        res["cox_c_index_test"] = sv.c_index(cox, test)
    with timer(res, "churn_risk_all_users"):
        sv.churn_risk(wb, X, tte, df["avg_monthly_spend"])
    res["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    print(f"peak RSS {res['peak_rss_gb']} GB")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--fit-sample", type=int, default=0, help="fit on a seeded sample of this many users")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ph-sample", type=int, default=50_000,
                    help="users of the Schoenfeld test (its residual computation scales badly: >10 min at 700k)")
    ap.add_argument("--out", default=None, help="write the timings as JSON here")
    a = ap.parse_args()
    result = main(a.n_users, a.fit_sample, a.seed, a.ph_sample)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
