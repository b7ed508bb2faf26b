"""Benchmark of GMM segmentation (helpers.segment): fit on a sample, score 1M users; time and peak memory.

Generates ``--n-users`` users (default 1,000,000), builds the default segmentation features, runs the
model-selection sweep (k = 2..10 x 4 covariance types, ICL) on a seeded sample of ``--fit-sample`` users,
then scores every user (probabilities, hard label, entropy). Prints one JSON record with the wall time of
each step, the peak memory allocated by the segmentation steps (tracemalloc, which sees numpy buffers) and
the process peak RSS, plus the ARI against the planted segments as a sanity check. Timings are never
asserted in tests.

Usage:
    OMP_NUM_THREADS=2 python scripts/bench_segment.py --n-users 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from _bench_common import emit, peak_rss_mb, synthetic_features

from helpers.segment import GMMSegmenter, entropy, truth_scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fit-sample", type=int, default=20_000)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the JSON record to this file")
    args = ap.parse_args(argv)

    X, truth, t_gen, t_feat = synthetic_features(args.n_users, args.seed)

    tracemalloc.start()
    t0 = time.perf_counter()
    # fit() sweeps on the sample only; scoring everyone is timed separately below
    seg = GMMSegmenter(fit_sample=args.fit_sample, n_init=args.n_init, random_state=args.seed)
    seg.fit(X[np.sort(np.random.default_rng(args.seed).choice(len(X), size=min(args.fit_sample, len(X)),
                                                              replace=False))])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = seg.predict_proba(X)
    labels = proba.argmax(axis=1)
    ent = entropy(proba)
    t_score = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n = X.shape[0]
    record = {
        "n_users": n,
        "n_features": X.shape[1],
        "fit_sample": min(args.fit_sample, n),
        "n_candidate_models": len(seg.sweep_),
        "generate_s": round(t_gen, 1),
        "features_s": round(t_feat, 1),
        "model_selection_fit_s": round(t_fit, 1),
        "score_all_users_s": round(t_score, 1),
        "segmentation_total_s": round(t_fit + t_score, 1),
        "segmentation_peak_alloc_mb": round(peak / 2**20, 1),
        "feature_matrix_mb": round(X.nbytes / 2**20, 1),
        "process_peak_rss_mb": peak_rss_mb(),
        "gmm_k": seg.n_components_,
        "covariance_type": seg.covariance_type_,
        "ari_truth": round(truth_scores(labels, truth)["ari"], 4),
        "median_entropy": round(float(np.median(ent)), 4),
        "segment_shares": np.round(np.bincount(labels) / n, 3).tolist(),
    }
    emit(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
