"""Benchmark of the synthetic world's chunked generation: n users x 24 monthly waves, chunk by chunk.

``--writer world`` (default) runs :func:`helpers.generate.write_world`, what notebook 00 runs: every source
(CRM with state/gender, engagement, billing, activity, support, partner and enrichment files with match tables
as CSV, ``monthly_activity`` and ``transactions``, media exposures, posts, and the truth) appended chunk by chunk
to one file each, on ``--n-jobs`` processes. ``--writer parts`` runs :func:`helpers.generate.write_sources_chunked`
(Parquet parts, no media or posts). Either runs in a fresh process; the record has its wall time, CPU time and
peak resident memory (``ru_maxrss`` of that process and of its largest worker). Then checks, with DuckDB and
without pandas, that the long tables read back (rows, users, months). Timings are never asserted.

    .venv/bin/python scripts/bench_generate.py                          # 1M users, chunks of 100k, 2 processes
    .venv/bin/python scripts/bench_generate.py --n-users 100000 --chunk-size 50000 --out /tmp/bench.json
    .venv/bin/python scripts/bench_generate.py --n-users 10000000 --folder /tmp/gen/d10m   # keeps the files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "benchmark" / "generate.json"


def _child(n_users: int, chunk_size: int, folder: str, seed: int, writer: str, n_jobs: int) -> None:
    t0 = time.perf_counter()
    from helpers import generate as G

    t1 = time.perf_counter()
    c1 = time.process_time()
    if writer == "world":
        G.write_world(n_users, Path(folder) / "raw", Path(folder) / "truth", seed=seed, chunk_size=chunk_size,
                      n_jobs=n_jobs)
    else:
        G.write_sources_chunked(n_users, Path(folder) / "raw", Path(folder) / "truth", seed=seed,
                                chunk_size=chunk_size)
    t2 = time.perf_counter()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"import_s": round(t1 - t0, 2), "generate_s": round(t2 - t1, 2),
                      "cpu_s_main": round(time.process_time() - c1, 1),
                      "cpu_s_workers": round(kids.ru_utime + kids.ru_stime, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "peak_rss_mb_largest_worker": round(kids.ru_maxrss / 1024, 1)}))


def _check(folder: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    out = {}
    for name, sub in [("monthly_activity", "raw"), ("transactions", "raw"), ("user_paths", "truth"),
                      ("future_outcomes", "truth")]:
        target = folder / sub / f"{name}.parquet"
        glob = str(target / "*.parquet") if target.is_dir() else str(target)  # parts (--writer parts) or one file
        cols = "count(*), count(distinct user_id)" + (", count(distinct month)" if name in ("monthly_activity", "user_paths") else "")
        row = con.execute(f"SELECT {cols} FROM read_parquet('{glob}')").fetchall()[0]
        out[name] = {"rows": int(row[0]), "users": int(row[1]), **({"months": int(row[2])} if len(row) > 2 else {})}
    sizes = {p.name: round((sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir()
                            else p.stat().st_size) / 2**20, 1) for p in sorted((folder / "raw").iterdir())}
    out["raw_parts_mb"] = sizes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=100_000)  # generate.WORLD_CHUNK_USERS (200k: ~3 GB per worker)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--writer", choices=["world", "parts"], default="world")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--folder", default=None, help="output folder (default: a temporary folder, removed)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        _child(a.n_users, a.chunk_size, a.folder, a.seed, a.writer, a.n_jobs)
        return
    folder = Path(a.folder) if a.folder else Path(tempfile.mkdtemp(prefix="bench_generate_"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--_child", "--n-users", str(a.n_users), "--chunk-size",
                           str(a.chunk_size), "--folder", str(folder), "--seed", str(a.seed), "--writer", a.writer,
                           "--n-jobs", str(a.n_jobs)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"generation failed:\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    record = {"n_users": a.n_users, "writer": a.writer, "n_jobs": a.n_jobs, "chunk_size": a.chunk_size, "months": 24,
              "process_wall_s": round(wall, 2),
              **child, "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_average_1m": round(os.getloadavg()[0], 2), "read_back_duckdb": _check(folder)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    if not a.folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
