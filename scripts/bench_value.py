"""Benchmark of issue 16: Markov transition counts (Ibis on DuckDB) and chain fit at N users x 24 months, and
the BG/NBD fit on N customers. Timings and peak memory are printed as JSON, never asserted.

    python scripts/bench_value.py --n-users 1000000 --out build/bench_value.json

The long table is a simple synthetic chain (``helpers.dynamics.markov``'s planted matrices, one per segment)
written in chunks of Parquet parts, so that DuckDB reads it as it would read ``processed/monthly_activity``;
the BG/NBD customers are drawn from the model itself (vectorised), with recency and age in whole days
expressed in weeks, as a transaction log gives them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _bench_common import emit, peak_rss_mb
from helpers import engine as eng
from helpers import value as V
from helpers.dynamics import markov as mk

P_SEG = [np.array([[0.88, 0.085, 0.027, 0.008], [0.30, 0.52, 0.15, 0.03], [0.12, 0.15, 0.65, 0.08], [0, 0, 0, 1]]),
         np.array([[0.80, 0.13, 0.055, 0.015], [0.20, 0.55, 0.20, 0.05], [0.07, 0.12, 0.70, 0.11], [0, 0, 0, 1]])]


def write_waves(folder: Path, n: int, months: int = 24, chunk: int = 100_000, seed: int = 0) -> pd.Series:
    """Write ``n`` users x ``months`` rows as Parquet parts; return the segment of every user."""
    rng = np.random.default_rng(seed)
    month = pa.array(pd.date_range("2024-07-01", periods=months, freq="MS").values.astype("datetime64[D]"), pa.date32())
    states = pa.array(list(mk.STATES), pa.string())
    segs = []
    for part, lo in enumerate(range(0, n, chunk)):
        m = min(chunk, n - lo)
        seg = rng.integers(0, len(P_SEG), m)
        segs.append(seg)
        s = rng.choice(4, size=m, p=[0.8, 0.15, 0.05, 0.0])
        S = np.empty((m, months), np.int8)
        for t in range(months):
            S[:, t] = s
            u = rng.random(m)
            nxt = np.empty(m, np.int64)
            for g, Pg in enumerate(P_SEG):
                k = seg == g
                nxt[k] = (u[k][:, None] > np.cumsum(Pg, axis=1)[s[k]]).sum(axis=1)
            s = np.minimum(nxt, 3)
        ids = pa.array([f"U{i:08d}" for i in range(lo, lo + m)], pa.string())
        idx = pa.array(np.repeat(np.arange(m, dtype=np.int32), months))
        tab = pa.table({"user_id": pa.DictionaryArray.from_arrays(idx, ids),
                        "month": pa.array(np.tile(month.to_numpy(zero_copy_only=False), m)),
                        "engagement_state": pa.DictionaryArray.from_arrays(pa.array(S.ravel()), states),
                        "spend": pa.array(np.where(S.ravel() == 0, 40.0, np.where(S.ravel() == 1, 12.0, 0.0)))})
        pq.write_table(tab, folder / f"part-{part:04d}.parquet")
    seg = np.concatenate(segs)
    return pd.Series(seg.astype(str), index=[f"U{i:08d}" for i in range(n)])


def simulate_bgnbd(n: int, r=0.24, alpha=4.4, a=0.79, b=2.4, seed: int = 0) -> pd.DataFrame:
    """Vectorised BG/NBD draws: x = min(Poisson(lambda T), Geometric(p)), t_x the x-th of the Poisson
    purchase times (Beta order statistic); ages uniform over 1-104 weeks, times rounded to days."""
    rng = np.random.default_rng(seed)
    T = rng.integers(7, 729, n) / 7.0
    lam = rng.gamma(r, 1 / alpha, n); p = rng.beta(a, b, n)
    npois = rng.poisson(lam * T)
    x = np.minimum(npois, rng.geometric(p))
    tx = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(npois - x + 1, 1)), 0.0)
    tx = np.minimum(np.round(tx * 7) / 7, T)
    return pd.DataFrame({"frequency": x.astype(float), "recency": np.where(x > 0, tx, 0.0), "T": T})


def bench_generated(a, rec: dict) -> None:
    """The synthetic world at ``n_users``: chunked writer, then counts + chain fit on its monthly waves and
    the purchase summary + BG/NBD fit on its transaction log, both aggregated on DuckDB."""
    from helpers import generate

    tmp = Path(tempfile.mkdtemp(prefix="bench_value_gen_"))
    try:
        t0 = time.perf_counter()
        out = generate.write_sources_chunked(a.n_users, tmp / "raw", tmp / "truth", seed=a.seed, chunk_size=a.chunk_size)
        rec["generate_s"] = round(time.perf_counter() - t0, 2)
        con = eng.connect("duckdb")
        waves = eng.read_parquet(con, out["monthly_activity"])
        rec["wave_rows"] = int(waves.count().execute())
        t0 = time.perf_counter()
        counts = mk.customer_transition_counts(waves, con=con)
        rec["markov_counts_s"] = round(time.perf_counter() - t0, 2)
        rec["markov_count_rows"] = int(len(counts))
        t0 = time.perf_counter()
        fit = mk.fit_chains(counts, n_boot=a.n_boot, seed=a.seed)
        rec["markov_fit_with_bootstrap_s"] = round(time.perf_counter() - t0, 2)
        rec["markov_total_s"] = round(rec["markov_counts_s"] + rec["markov_fit_with_bootstrap_s"], 2)
        rec["markov_pooled_active_row"] = [round(float(v), 4) for v in fit.pooled[0]]
        del counts
        tx = eng.read_parquet(con, out["transactions"])
        t0 = time.perf_counter()
        summ = V.rfm_summary(tx, generate.DEFAULT_OBSERVATION_DATE, merge_same_day=False, con=con)
        rec["rfm_summary_s"] = round(time.perf_counter() - t0, 2)
        rec["bgnbd_customers"] = int(len(summ))
        rec["bgnbd_distinct_rows"] = int(len(np.unique(summ[["frequency", "recency", "T"]].to_numpy(), axis=0)))
        t0 = time.perf_counter()
        bg = V.BetaGeoFitter().fit(summ)
        rec["bgnbd_fit_s"] = round(time.perf_counter() - t0, 2)
        rec["bgnbd_params"] = {k: round(float(v), 4) for k, v in bg.params_.items()}
        rec["bgnbd_at_bound"] = bg.at_bound_
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--n-boot", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-markov", action="store_true")
    ap.add_argument("--source", choices=("simple", "gen"), default="simple",
                    help="simple: this script's chain and BG/NBD draws; gen: the synthetic world's chunked "
                         "writer (helpers.generate.write_sources_chunked) and its transaction log")
    ap.add_argument("--chunk-size", type=int, default=250_000)
    a = ap.parse_args()
    rec = {"n_users": a.n_users, "months": a.months, "n_boot": a.n_boot, "source": a.source}
    if a.source == "gen":
        bench_generated(a, rec)
        rec["peak_rss_mb"] = peak_rss_mb()
        emit(rec, a.out)
        return
    if not a.skip_markov:
        tmp = Path(tempfile.mkdtemp(prefix="bench_value_"))
        try:
            t0 = time.perf_counter()
            seg = write_waves(tmp, a.n_users, a.months, seed=a.seed)
            rec["markov_write_s"] = round(time.perf_counter() - t0, 2)
            con = eng.connect("duckdb")
            t0 = time.perf_counter()
            counts = mk.customer_transition_counts(eng.read_parquet(con, tmp), con=con)
            rec["markov_counts_s"] = round(time.perf_counter() - t0, 2)
            rec["markov_count_rows"] = int(len(counts))
            rec["markov_transitions"] = int(counts["n"].sum())
            t0 = time.perf_counter()
            fit = mk.fit_chains(counts, seg, n_boot=a.n_boot, seed=a.seed)
            rec["markov_fit_with_bootstrap_s"] = round(time.perf_counter() - t0, 2)
            rec["markov_total_s"] = round(rec["markov_counts_s"] + rec["markov_fit_with_bootstrap_s"], 2)
            share, _ = mk.truth_in_ci_share(fit, {str(g): P.tolist() for g, P in enumerate(P_SEG)})
            rec["markov_truth_in_ci_share"] = share
            rec["markov_peak_rss_mb"] = peak_rss_mb()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    d = simulate_bgnbd(a.n_users, seed=a.seed)
    t0 = time.perf_counter()
    bg = V.BetaGeoFitter().fit(d)
    rec["bgnbd_fit_s"] = round(time.perf_counter() - t0, 2)
    rec["bgnbd_distinct_rows"] = int(len(np.unique(d.to_numpy(), axis=0)))
    rec["bgnbd_params"] = {k: round(float(v), 4) for k, v in bg.params_.items()}
    rec["bgnbd_planted"] = {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4}
    rec["peak_rss_mb"] = peak_rss_mb()
    emit(rec, a.out)


if __name__ == "__main__":
    main()
