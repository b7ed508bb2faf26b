"""Synthesis time at 100k and 1M rows (timings only; nothing is asserted).

Two scenarios, for both synthesizers of ``helpers.synth``:

* ``adult``: fit on UCI Adult (the real table of notebook 03, 32,561 rows) and sample 100k / 1M rows
  ("any size" from a fixed real table);
* ``panel``: fit on a generated 22-column audience panel of n rows (with its multi-valued columns) and
  sample n rows, for n = 100k / 1M.

Usage:
    .venv/bin/python scripts/bench_synth.py                      # both scenarios, 100k and 1M
    .venv/bin/python scripts/bench_synth.py --sizes 100000 --scenarios panel --methods cart
    .venv/bin/python scripts/bench_synth.py --out reports/bench_synth.json

Peak memory is the process's maximum resident set size so far (``ru_maxrss``), so it only grows over a run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from helpers.generate import generate_panel
from helpers.synth import CARTSynthesizer, GaussianCopulaSynthesizer, load_real_table

METHODS = {
    "cart": lambda ids, seed: CARTSynthesizer(min_samples_leaf=20, id_columns=ids, random_state=seed),
    "copula": lambda ids, seed: GaussianCopulaSynthesizer(id_columns=ids, random_state=seed),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(scenario: str, method: str, n: int, seed: int) -> dict:
    """Fit and sample once; return the timings in seconds."""
    t0 = time.perf_counter()
    if scenario == "adult":
        real, ids = load_real_table(), []
    else:
        real, ids = generate_panel(n, seed=seed).data, ["user_id"]
    t_data = time.perf_counter() - t0
    model = METHODS[method](ids, seed)
    t0 = time.perf_counter()
    model.fit(real)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.sample(n, random_state=seed + 1)
    t_sample = time.perf_counter() - t0
    return {"scenario": scenario, "method": method, "fit_rows": len(real), "sampled_rows": len(out),
            "columns": out.shape[1], "data_s": round(t_data, 2), "fit_s": round(t_fit, 2),
            "sample_s": round(t_sample, 2), "copies_redrawn": model.n_copies_redrawn_,
            "peak_rss_mb": round(_peak_mb())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--scenarios", nargs="+", default=["adult", "panel"], choices=["adult", "panel"])
    ap.add_argument("--methods", nargs="+", default=["copula", "cart"], choices=sorted(METHODS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    print("| scenario | method | fit rows | sampled rows | fit s | sample s | copies redrawn | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for scenario in args.scenarios:
            for method in args.methods:
                r = run_one(scenario, method, n, args.seed)
                rows.append(r)
                print(f"| {r['scenario']} | {r['method']} | {r['fit_rows']:,} | {r['sampled_rows']:,} | "
                      f"{r['fit_s']} | {r['sample_s']} | {r['copies_redrawn']} | {r['peak_rss_mb']} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
