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
    .venv/bin/python scripts/bench_synth.py --sizes 50000 --tree-sample 10000 20000   # cost of tree_sample

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

CART_TREE_SAMPLE: int | None = None  # --cart-tree-sample
METHODS = {
    "cart": lambda ids, seed: CARTSynthesizer(min_samples_leaf=20, id_columns=ids, random_state=seed,
                                              tree_sample=CART_TREE_SAMPLE),
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


def tree_sample_cost(n: int, tree_samples: list[int], seed: int) -> list[dict]:
    """What growing the CART trees on a sample costs in fidelity: a generated panel of ``n`` users split
    80/20, CART (leaf 20) fitted on the 80% with trees on all rows and on each sample size, scored by the
    rescaled fidelity against the 20% held out (0 = independent marginals, 1 = a real sample)."""
    from helpers.fidelity import fidelity_anchors, rescaled_fidelity
    from helpers.synth import split_holdout
    panel = generate_panel(n, seed=seed).data
    train, holdout = split_holdout(panel, holdout_share=0.2, random_state=seed)
    tr, ho = train.drop(columns="user_id"), holdout.drop(columns="user_id")
    anchors = fidelity_anchors(tr, ho, len(tr), random_state=seed)
    rows = []
    for ts in [None, *tree_samples]:
        t0 = time.perf_counter()
        model = CARTSynthesizer(min_samples_leaf=20, id_columns=["user_id"], random_state=seed, tree_sample=ts).fit(train)
        t_fit = time.perf_counter() - t0
        syn = model.sample(len(train), random_state=seed + 1).drop(columns="user_id")
        r = rescaled_fidelity(tr, ho, syn, n_eval=1500, anchors=anchors, random_state=seed)
        rows.append({"panel_users": n, "train_rows": len(train), "tree_sample": ts or "all", "fit_s": round(t_fit, 2),
                     "fidelity_score": round(r.score, 4), "rescaled": round(r.rescaled, 4),
                     "raw_vs_holdout": round(r.raw, 4), "near_copy_share": round(r.near_copy_share, 4),
                     "independent_raw": round(anchors[0], 4), "real_raw": round(anchors[1], 4)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree-sample", type=int, nargs="*", default=None,
                    help="instead of the timings: fidelity of CART with trees on all rows vs on these sample "
                         "sizes, on a generated panel of --sizes[0] users (80/20 split)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--scenarios", nargs="+", default=["adult", "panel"], choices=["adult", "panel"])
    ap.add_argument("--methods", nargs="+", default=["copula", "cart"], choices=sorted(METHODS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--cart-tree-sample", type=int, default=None,
                    help="timings: grow the CART trees on this many sampled rows (notebook 03 uses 50000)")
    args = ap.parse_args(argv)
    global CART_TREE_SAMPLE
    CART_TREE_SAMPLE = args.cart_tree_sample
    if args.tree_sample is not None:
        rows = tree_sample_cost(args.sizes[0], args.tree_sample, args.seed)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))
        return 0
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
