"""Benchmark of raking (helpers.weights.rake) at 100k and 1M rows, against independent references.

For each size N the raking variables (age group, income bracket, education, household size) of a 20,000-user
synthetic panel are resampled with replacement to N rows, and raked to the generator's population margins.
Reported per size: wall time of :func:`helpers.weights.rake` (best of ``--repeats``; the default raking of
the collapsed cell table, and ``collapse=False``, the previous row-by-row implementation), distinct cells,
sweeps, largest margin error, Kish design effect; and the same input raked by

* the ``ipfn`` package (``pip install ipfn==1.4.4``, N-dimensional IPF on a pandas frame), when installed:
  its time and the largest relative difference between its weights and ours, run on the N rows themselves
  (up to ``--max-ipfn-rows``) and on the table of distinct cells with their counts (equivalent, fast);
* the closed form for a single margin (post-stratification on age): largest relative difference.

Timings are printed, never asserted. Usage::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_panel.py [--sizes 100000 1000000] [--repeats 3]
        [--out reports/bench_panel.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import weights as W
from helpers.generate import generate_panel, population_margins

from _bench_common import time_best

RAKING_VARS = ["age_group", "income_bracket", "education_level", "household_size"]


def make_input(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of the four raking variables, resampled from the matched users of a 20k synthetic panel."""
    base = generate_panel(20_000, seed=seed).data[RAKING_VARS].dropna()
    rng = np.random.default_rng(seed)
    frame = W.raking_frame(base, RAKING_VARS).iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    return frame.astype("category")


def ipfn_weights(df: pd.DataFrame, margins: pd.DataFrame, tol: float, cells: bool) -> np.ndarray | None:
    """Raking weights from the ``ipfn`` package on the same rows, or None when it is not installed.

    ``cells=False`` gives ipfn the N rows (each with starting weight 1); ``cells=True`` gives it the table of
    distinct combinations of the raking variables with their row counts, which IPF treats identically (a
    row's raked weight depends only on its cell) and which stays fast at 1M rows.
    """
    try:
        from ipfn import ipfn
    except ImportError:
        return None
    data = df.astype(str)
    n = len(data)
    variables = list(dict.fromkeys(margins["variable"]))
    if cells:
        table = data.groupby(variables).size().rename("total").astype(float).reset_index()
    else:
        table = data.assign(total=1.0)
    aggregates, dims = [], []
    for var, m in margins.groupby("variable", sort=False):
        share = m.set_index("category")["target"] / m["target"].sum()
        aggregates.append((share * n).rename_axis(var))
        dims.append([var])
    fitted = ipfn.ipfn(table.copy(), aggregates, dims, weight_col="total", convergence_rate=tol,
                       max_iteration=1000).iteration()
    if not cells:
        return fitted["total"].to_numpy()
    per_row = fitted.assign(w=fitted["total"] / table["total"])
    return data.merge(per_row[[*variables, "w"]], on=variables, how="left")["w"].to_numpy()


def run(sizes: list[int], repeats: int, with_ipfn: bool, max_ipfn_rows: int = 100_000) -> list[dict]:
    margins = population_margins()
    rows = []
    for n in sizes:
        df = make_input(n)
        secs, res = time_best(lambda: W.rake(df, margins, tol=1e-8, id_col=None), repeats)
        secs_rows, res_rows = time_best(lambda: W.rake(df, margins, tol=1e-8, id_col=None, collapse=False), repeats)
        row = {"n_rows": n, "rake_seconds": round(secs, 4), "n_cells": res.n_cells, "sweeps": res.n_iter,
               "max_margin_error": res.max_margin_error, "design_effect": round(res.design_effect, 4),
               "rake_rows_seconds": round(secs_rows, 4), "rake_rows_max_margin_error": res_rows.max_margin_error,
               "cells_vs_rows_max_rel_diff": float(np.max(np.abs(res.weights.to_numpy()
                                                                 / res_rows.weights.to_numpy() - 1)))}
        one = margins[margins["variable"] == "age_group"]
        ps = W.poststratify(df, one, "age_group", id_col=None).to_numpy()
        single = W.rake(df, one, id_col=None).weights.to_numpy()
        row["poststrat_max_rel_diff"] = float(np.max(np.abs(single / ps - 1)))
        if with_ipfn:
            for mode, cells in (("rows", False), ("cells", True)):
                if mode == "rows" and n > max_ipfn_rows:
                    continue
                t0 = time.perf_counter()
                ref = ipfn_weights(df, margins, tol=1e-10, cells=cells)
                if ref is None:
                    break
                row[f"ipfn_{mode}_seconds"] = round(time.perf_counter() - t0, 4)
                row[f"ipfn_{mode}_max_rel_diff"] = float(np.max(np.abs(res.weights.to_numpy() / ref - 1)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ipfn", action="store_true", help="skip the ipfn reference")
    ap.add_argument("--max-ipfn-rows", type=int, default=100_000,
                    help="largest N at which ipfn also runs on the rows themselves (slow: ~30 s at 100k)")
    ap.add_argument("--out", type=Path, default=None, help="optional JSON file for the results")
    args = ap.parse_args()
    rows = run(args.sizes, args.repeats, not args.no_ipfn, args.max_ipfn_rows)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
