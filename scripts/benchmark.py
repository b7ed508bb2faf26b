"""Benchmark: wall time and peak memory of each pipeline stage at 100k and 1M users (not a test).

Each stage runs in a fresh process so its peak resident memory (ru_maxrss) is its own. Results are printed
as a table and written to ``build/benchmark/results.json``; the other ``scripts/bench_*.py`` scripts (one per
stage module) are run afterwards with the same sizes unless ``--only-foundation`` is given.

    python scripts/benchmark.py                 # 100k and 1M users
    python scripts/benchmark.py --sizes 100000  # one size
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "benchmark"


def _stage_generate(n: int, work: Path) -> dict:
    from helpers.generate import generate_panel, write_sources

    t0 = time.perf_counter()
    panel = generate_panel(n, seed=42)
    t1 = time.perf_counter()
    write_sources(panel, work / "raw", work / "truth", seed=42)
    return {"generate_s": t1 - t0, "write_sources_s": time.perf_counter() - t1}


def _stage_ingest(n: int, work: Path) -> dict:
    from helpers.ingest import ingest_sources, write_outputs

    t0 = time.perf_counter()
    res = ingest_sources(work / "raw")
    t1 = time.perf_counter()
    write_outputs(res, work / "processed", work / "quarantine")
    return {"ingest_s": t1 - t0, "write_outputs_s": time.perf_counter() - t1, "n_users": res.report["n_users"]}


STAGES = {"generate": _stage_generate, "ingest": _stage_ingest}


def _child(stage: str, n: int, work: str, q) -> None:
    t0 = time.perf_counter()
    out = STAGES[stage](n, Path(work))
    out["total_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put(out)


def run_stage(stage: str, n: int, work: Path) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(stage, n, str(work), q))
    p.start()
    res = q.get()
    p.join()
    return res


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--only-foundation", action="store_true", help="skip the per-stage bench_*.py scripts")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "runs": []}
    print(f"machine: {results['machine']}")
    print(f"{'stage':<10} {'users':>10} {'seconds':>9} {'peak MB':>9}  details")
    for n in args.sizes:
        work = OUT / f"n{n}"
        for stage in STAGES:
            r = run_stage(stage, n, work)
            results["runs"].append({"stage": stage, "n_users": n, **r})
            details = {k: round(v, 2) for k, v in r.items() if k not in ("total_s", "peak_rss_mb")}
            print(f"{stage:<10} {n:>10,} {r['total_s']:>9.1f} {r['peak_rss_mb']:>9.0f}  {details}", flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    if not args.only_foundation:
        for script in sorted((ROOT / "scripts").glob("bench_*.py")):
            print(f"\n== {script.name} ==", flush=True)
            subprocess.run([sys.executable, str(script)], check=False)
    print(f"\nwrote {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
