"""Benchmark of the synthetic world's chunked generation: n users x 24 monthly waves into Parquet parts.

Runs :func:`helpers.generate.write_sources_chunked` (every source: CRM with state/gender, engagement, billing,
activity, support, partner and enrichment files with match tables, ``monthly_activity`` and ``transactions``
folders of parts, and the truth: users, latent paths, future outcomes, parameters) in a fresh process and
reports its wall time and peak resident memory (``ru_maxrss`` of that process). Then checks, with DuckDB and
without pandas, that the partitioned long tables read back (rows, users, months). Timings are never asserted.

    .venv/bin/python scripts/bench_generate.py                          # 1M users, chunks of 200k
    .venv/bin/python scripts/bench_generate.py --n-users 100000 --chunk-size 50000 --out /tmp/bench.json
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


def _child(n_users: int, chunk_size: int, folder: str, seed: int) -> None:
    t0 = time.perf_counter()
    from helpers import generate as G

    t1 = time.perf_counter()
    G.write_sources_chunked(n_users, Path(folder) / "raw", Path(folder) / "truth", seed=seed, chunk_size=chunk_size)
    t2 = time.perf_counter()
    print(json.dumps({"import_s": round(t1 - t0, 2), "generate_s": round(t2 - t1, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def _check(folder: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    out = {}
    for name, sub in [("monthly_activity", "raw"), ("transactions", "raw"), ("user_paths", "truth"),
                      ("future_outcomes", "truth")]:
        glob = str(folder / sub / f"{name}.parquet" / "*.parquet")
        cols = "count(*), count(distinct user_id)" + (", count(distinct month)" if name in ("monthly_activity", "user_paths") else "")
        row = con.execute(f"SELECT {cols} FROM read_parquet('{glob}')").fetchall()[0]
        out[name] = {"rows": int(row[0]), "users": int(row[1]), **({"months": int(row[2])} if len(row) > 2 else {})}
    sizes = {p.name: round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)
             for p in sorted((folder / "raw").iterdir()) if p.is_dir()}
    out["raw_parts_mb"] = sizes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--folder", default=None, help="output folder (default: a temporary folder, removed)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        _child(a.n_users, a.chunk_size, a.folder, a.seed)
        return
    folder = Path(a.folder) if a.folder else Path(tempfile.mkdtemp(prefix="bench_generate_"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--_child", "--n-users", str(a.n_users), "--chunk-size",
                           str(a.chunk_size), "--folder", str(folder), "--seed", str(a.seed)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"generation failed:\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    record = {"n_users": a.n_users, "chunk_size": a.chunk_size, "months": 24, "process_wall_s": round(wall, 2),
              **child, "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_average_1m": round(os.getloadavg()[0], 2), "read_back_duckdb": _check(folder)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    if not a.folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
