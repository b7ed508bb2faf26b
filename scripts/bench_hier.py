"""Benchmark of two-stage Ward segmentation (helpers.hier) on a large synthetic panel: time and peak memory.

Generates ``--n-users`` users (default 1,000,000), builds the default segmentation features and segments
everyone with the two-stage method (micro-clusters fitted on a sample, Ward on their size-weighted
centroids, every user assigned). Prints one JSON record with the wall time of each step, the peak memory
allocated by the segmentation step alone (tracemalloc, which sees numpy buffers) and the process peak RSS,
plus the ARI against the planted segments as a sanity check. Timings are never asserted in tests.

Usage:
    OMP_NUM_THREADS=2 python scripts/bench_hier.py --n-users 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np
from sklearn.metrics import adjusted_rand_score

from _bench_common import emit, peak_rss_mb, synthetic_features

from helpers.hier import HierarchicalSegmenter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-micro", type=int, default=400)
    ap.add_argument("--fit-sample", type=int, default=200_000)
    ap.add_argument("--out", default=None, help="also write the JSON record to this file")
    args = ap.parse_args(argv)

    X, truth, t_gen, t_feat = synthetic_features(args.n_users, args.seed)

    tracemalloc.start()
    t0 = time.perf_counter()
    seg = HierarchicalSegmenter(method="two_stage", n_micro=args.n_micro, fit_sample=args.fit_sample,
                                random_state=args.seed).fit(X)
    t_seg = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n = X.shape[0]
    record = {
        "n_users": n,
        "n_features": X.shape[1],
        "n_micro": int(seg.linkage_.shape[0] + 1),
        "fit_sample": args.fit_sample,
        "generate_s": round(t_gen, 1),
        "features_s": round(t_feat, 1),
        "two_stage_segmentation_s": round(t_seg, 1),
        "segmentation_peak_alloc_mb": round(peak / 2**20, 1),
        "feature_matrix_mb": round(X.nbytes / 2**20, 1),
        "process_peak_rss_mb": peak_rss_mb(),
        "exact_ward_distance_matrix_gb": round(n * (n - 1) / 2 * 8 / 2**30, 1),
        "hier_k": seg.n_clusters_,
        "ari_truth": round(float(adjusted_rand_score(truth, seg.labels_)), 4),
        "segment_shares": np.round(np.bincount(seg.labels_) / n, 3).tolist(),
    }
    emit(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
