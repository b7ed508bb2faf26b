"""Benchmark of the two engines (DuckDB, Spark local mode) on the out-of-core pipeline at 1M and 10M users.

Stages, each in a fresh process whose peak memory is its own:

* ``generate`` -- :func:`helpers.generate.write_sources_chunked`: Parquet parts, chunk by chunk (engine-free,
  run once per size);
* ``ingest`` -- :func:`helpers.ingest.ingest_to_parquet` on the engine: validation, quarantine, the joins per
  ``user_id`` range (``--rows-per-range``) and the engine's own sorted Parquet write, re-typed batch by batch;
  ``AUDIENCE_DUCKDB_MEMORY_LIMIT`` (e.g. ``8GB``) caps DuckDB, which then spills under the output folder;
* ``ingest_long`` -- the long tables (monthly activity, transactions) validated against the ingested users
  and written by the engine (:func:`helpers.ingest.ingest_event_table` with ``stage_dir``);
* ``score`` -- a GMM (:class:`helpers.segment.GMMSegmenter`) fitted on a seeded sample of ``--fit-sample``
  users collected to the driver, then every user scored by :func:`helpers.scoring.score` (DuckDB batch
  streaming / Spark ``mapInPandas`` with the model broadcast);
* ``affinity`` -- :class:`helpers.affinity.AffinityIndex` fitted on the engine (unified table joined with
  the segments), or a weighted group-by of the channel metrics by segment when it does not take Ibis tables;
* ``export`` -- the top 1% by posterior of segment 0, selected by the engine and written by
  :func:`helpers.scoring.export_from_engine`.

Per stage: wall seconds of the stage's work (inside the process), wall seconds of the whole process
(interpreter, imports, JVM start), the process's own peak RSS (``ru_maxrss``) and the peak summed RSS of the
process tree (sampled every 0.2 s with psutil: includes Spark's JVM and Python workers). Results go to
``--out`` (JSON) and a markdown table beside it (``.md``). Timings are never asserted.

    .venv/bin/python scripts/bench_engines.py                                  # 1M and 10M, both engines
    .venv/bin/python scripts/bench_engines.py --sizes 1000000 --engines duckdb
    AUDIENCE_DUCKDB_MEMORY_LIMIT=8GB .venv/bin/python scripts/bench_engines.py --sizes 10000000 \
        --engines duckdb --work /tmp/engine/10m --stages ingest ingest_long   # reuses generated sources
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "benchmark" / "engines.json"
STAGES = ("generate", "ingest", "ingest_long", "score", "affinity", "export")
SEED = 42


# --- stages (run in a child process) -------------------------------------------------------------
def _unified_path(work: Path, engine: str) -> Path:
    return work / engine / "unified"


def _connect(engine: str):
    from helpers import engine as E

    return E.connect(engine, conf={"spark.ui.showConsoleProgress": "false"} if engine == "spark" else None)


def stage_generate(n: int, work: Path, engine: str, args) -> dict:
    from helpers.generate import write_sources_chunked

    write_sources_chunked(n, work / "raw", work / "truth", seed=SEED, chunk_size=args.chunk_size)
    return {"chunk_size": args.chunk_size}


def stage_ingest(n: int, work: Path, engine: str, args) -> dict:
    from helpers import engine as E
    from helpers import ingest

    con = _connect(engine)
    out = _unified_path(work, engine)
    target = work / engine / "processed"
    res = ingest.ingest_to_parquet(work / "raw", target, engine=engine, rows_per_range=args.rows_per_range)
    found = _find_unified(res, target)
    if out.exists() or out.is_symlink():
        shutil.rmtree(out) if out.is_dir() and not out.is_symlink() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(found.resolve(), target_is_directory=found.is_dir())
    rows = int(E.read_parquet(con, out).count().execute())
    return {"ingest": "helpers.ingest.ingest_to_parquet (validation + quarantine on the engine, joins per "
            f"user_id range of {args.rows_per_range:,})", "n_unified": rows,
            "memory_limit": os.environ.get("AUDIENCE_DUCKDB_MEMORY_LIMIT", "none")}


def stage_ingest_long(n: int, work: Path, engine: str, args) -> dict:
    """The long tables (monthly activity, transactions) validated against the ingested users and written by
    the engine (:func:`helpers.ingest.ingest_event_table` with ``stage_dir``)."""
    import pyarrow.parquet as pq

    from helpers import ingest
    from helpers import schema as S

    target = work / engine / "processed"
    unified = _find_unified({}, target)
    spine = ingest.IngestResult(None, {}, {}, (S.BY_NAME["user_id"],), staged=unified)
    out = {}
    for name in ("monthly_activity", "transactions"):
        src = ingest.locate_event_source(work / "raw", name)
        if src is None:
            continue
        t0 = time.perf_counter()
        res = ingest.ingest_event_table(name, src, engine=engine, known_ids=spine, stage_dir=target / ".long")
        ingest.write_event_table(res, target, target / "quarantine", name)
        out[name] = {"s": round(time.perf_counter() - t0, 1), "n_input": res.report["n_input"],
                     "n_rows": int(pq.ParquetFile(target / f"{name}.parquet").metadata.num_rows)}
    shutil.rmtree(target / ".long", ignore_errors=True)
    return {"long_tables": out, "memory_limit": os.environ.get("AUDIENCE_DUCKDB_MEMORY_LIMIT", "none")}


def _find_unified(res, target: Path) -> Path:
    if isinstance(res, dict) and "parquet" in res:
        return Path(res["parquet"])
    for attr in ("parquet", "path"):
        if hasattr(res, attr):
            return Path(getattr(res, attr))
    hits = sorted(target.rglob("rich_audience_data.parquet"))
    if not hits:
        raise FileNotFoundError(f"ingest_to_parquet wrote no rich_audience_data.parquet under {target}")
    return hits[0]


def stage_score(n: int, work: Path, engine: str, args) -> dict:
    import ibis
    import numpy as np
    import pandas as pd

    from helpers import engine as E
    from helpers import scoring as SC
    from helpers.features import FeatureBuilder
    from helpers.segment import GMMSegmenter

    con = _connect(engine)
    t = E.read_parquet(con, _unified_path(work, engine), table_name="unified")
    rng = np.random.default_rng(SEED)
    ids = pd.DataFrame({"sample_id": [f"U{i:08d}" for i in np.sort(rng.choice(n, min(args.fit_sample, n),
                                                                                replace=False)) + 1]})
    sample_ids = ibis.memtable(ids)
    t0 = time.perf_counter()
    fb_cols = ["user_id", "time_on_social_media_min", "time_on_streaming_video_min", "time_on_podcasts_min",
               "avg_monthly_spend", "monthly_conversions"]
    sample = (t.semi_join(sample_ids, t.user_id == sample_ids.sample_id).select(fb_cols)
              .order_by("user_id").to_pandas())
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    fb = FeatureBuilder(random_state=SEED).fit(sample)
    seg = GMMSegmenter(k_range=range(2, 11), covariance_types=tuple(args.covariance_types), n_init=1,
                       fit_sample=None, random_state=SEED).fit(fb.transform(sample))
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    SC.score(con, t, SC.GMMScorer(seg, fb), work / engine / "segments", batch_size=args.batch_size)
    t_score = time.perf_counter() - t0
    return {"sample_users": len(sample), "collect_sample_s": round(t_collect, 2), "fit_s": round(t_fit, 2),
            "score_all_s": round(t_score, 2), "gmm_k": int(seg.n_components_),
            "covariance_type": seg.covariance_type_}


def stage_affinity(n: int, work: Path, engine: str, args) -> dict:
    import inspect

    from helpers import engine as E
    from helpers.affinity import AffinityIndex
    from helpers import schema as S

    con = _connect(engine)
    t = E.read_parquet(con, _unified_path(work, engine), table_name="unified")
    s = E.read_parquet(con, work / engine / "segments", table_name="segments")
    joined = t.join(s.select("user_id", "segment"), "user_id")
    if "con" in inspect.signature(AffinityIndex.fit).parameters:
        ai = AffinityIndex().fit(joined, segment_col="segment", weight_col=None, name_col=None, con=con)
        return {"affinity": "AffinityIndex.fit on the Ibis table", "cells": int(len(ai.table_))}
    aggs = {f"sum_{m}": joined[m].cast("float64").sum() for m in S.CHANNEL_METRICS}
    res = joined.group_by("segment").aggregate(n=joined.count(), **aggs).to_pandas()
    return {"affinity": "fallback: group-by of channel metrics by segment", "cells": int(res.size)}


def stage_export(n: int, work: Path, engine: str, args) -> dict:
    from helpers import engine as E
    from helpers import scoring as SC

    con = _connect(engine)
    scores = E.read_parquet(con, work / engine / "segments", table_name="segments")
    aud = SC.top_audience(scores, share=0.01, score_col="prob_0", label="Segment 0 core")
    paths = SC.export_from_engine(aud, work / engine / "exports", "segment0_core", overwrite=True,
                                  definition="top 1% of users by posterior probability of segment 0",
                                  created_at="2026-01-01T00:00:00+00:00", seed=SEED)
    return {"exported": int(json.loads(paths["manifest"].read_text())["size"])}


STAGE_FUNCS = {"generate": stage_generate, "ingest": stage_ingest, "ingest_long": stage_ingest_long,
               "score": stage_score, "affinity": stage_affinity, "export": stage_export}


def child(args) -> int:
    t0 = time.perf_counter()
    out = STAGE_FUNCS[args.stage](args.n, Path(args.work), args.engine, args)
    out["stage_s"] = round(time.perf_counter() - t0, 2)
    out["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.result).write_text(json.dumps(out))
    return 0


# --- harness -------------------------------------------------------------------------------------
def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_stage(stage: str, n: int, engine: str, work: Path, args) -> dict:
    import psutil

    result = work / f".result_{stage}_{engine}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--stage", stage, "--n", str(n), "--engine", engine, "--work", str(work),
           "--result", str(result), "--chunk-size", str(args.chunk_size), "--fit-sample", str(args.fit_sample),
           "--batch-size", str(args.batch_size), "--rows-per-range", str(args.rows_per_range),
           "--covariance-types", *args.covariance_types]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            peak = max(peak, _tree_rss(proc))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    rec = {"stage": stage, "engine": engine, "n_users": n, "process_s": round(wall, 2),
           "tree_peak_rss_mb": round(peak / 2**20, 1), "returncode": p.returncode}
    if p.returncode == 0 and result.exists():
        rec.update(json.loads(result.read_text()))
    return rec


def machine() -> dict:
    import psutil

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "spark_driver_memory": os.environ.get("AUDIENCE_SPARK_DRIVER_MEMORY", "4g"),
            "note": "shared machine: other jobs ran at the same time (see load averages per stage)"}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Engines benchmark\n",
             f"Machine: {m['cpus']} cores, {m['memory_gb']} GB RAM, {m['platform']}, Python {m['python']}; "
             f"load average at start {m['load_average_at_start']}; Spark local[2], driver memory "
             f"{m['spark_driver_memory']}. {m['note']}.\n",
             "| stage | engine | users | stage s | process s | peak MB (process tree) | peak MB (python) | notes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results["runs"]:
        notes = {k: v for k, v in r.items() if k in ("ingest", "affinity", "fit_s", "score_all_s", "gmm_k",
                                                     "n_unified", "exported", "returncode", "load_avg",
                                                     "long_tables", "memory_limit")}
        if r.get("returncode") == 0:
            notes.pop("returncode")
        lines.append(f"| {r['stage']} | {r['engine']} | {r['n_users']:,} | {r.get('stage_s', float('nan')):.1f} | "
                     f"{r['process_s']:.1f} | {r['tree_peak_rss_mb']:,.0f} | {r.get('self_peak_rss_mb', 0):,.0f} | "
                     f"{json.dumps(notes)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--engines", nargs="+", default=["duckdb", "spark"], choices=["duckdb", "spark"])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--work", default=None, help="data folder (default: beside --out, n<N>/)")
    ap.add_argument("--chunk-size", type=int, default=500_000)
    ap.add_argument("--fit-sample", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=200_000)
    ap.add_argument("--covariance-types", nargs="+", default=["full"])
    ap.add_argument("--rows-per-range", type=int, default=1_000_000,
                    help="users per user_id range of the ingestion joins (memory follows the range)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="stages to run (generate is skipped when --work already holds raw/ sources)")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated data (default: delete)")
    ap.add_argument("--append", action="store_true", help="add to the runs already in --out")
    # child mode
    ap.add_argument("--stage", choices=STAGES)
    ap.add_argument("--n", type=int)
    ap.add_argument("--engine")
    ap.add_argument("--result")
    args = ap.parse_args(argv)
    if args.stage:
        return child(args)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "runs": []}
    if args.append and out.exists():
        results["runs"] = json.loads(out.read_text())["runs"]
    print(f"machine: {results['machine']}", flush=True)
    for n in args.sizes:
        work = Path(args.work) if args.work else out.parent / f"engines_n{n}"
        work.mkdir(parents=True, exist_ok=True)
        have_raw = (work / "raw" / "crm_users").is_dir()
        plan = ([("generate", "-")] if "generate" in args.stages and not have_raw else []) + [
            (s, e) for e in args.engines for s in STAGES[1:] if s in args.stages]
        for stage, engine in plan:
            load = [round(x, 2) for x in os.getloadavg()]
            rec = run_stage(stage, n, engine, work, args)
            rec["load_avg"] = load
            results["runs"].append(rec)
            print(json.dumps(rec), flush=True)
            out.write_text(json.dumps(results, indent=2))
            out.with_suffix(".md").write_text(markdown(results))
        if not args.keep_data and not have_raw:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
