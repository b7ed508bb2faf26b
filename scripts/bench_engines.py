"""Benchmark of the two engines (DuckDB, Spark local mode) on the out-of-core pipeline at 1M and 10M users.

Stages, each in a fresh process whose peak memory is its own:

* ``generate`` -- :func:`helpers.generate.write_sources_chunked`: Parquet parts, chunk by chunk (engine-free,
  run once per size);
* ``ingest`` -- :func:`helpers.ingest.ingest_to_parquet` on the engine when it exists; otherwise an
  engine-side read of the Parquet sources, typing and joins (no quarantine report) -- noted in the results;
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
STAGES = ("generate", "ingest", "score", "affinity", "export")
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


def _fallback_ingest(con, raw: Path, out: Path) -> None:
    """Engine-side read of the Parquet sources, typing and joins (no validation report, no quarantine)."""
    import ibis

    from helpers import engine as E
    from helpers import schema as S

    def src(stem):
        return E.read_parquet(con, raw / stem, table_name=f"src_{stem}")

    crm, eng, bill, act, sup = (src(s) for s in ("crm_users", "engagement", "billing", "activity", "support"))
    pp, pm, tp, tm = (src(s) for s in ("partner_profiles", "partner_match", "third_party_enrichment",
                                       "third_party_match"))
    f64, i64 = "float64", "int64"
    crm = crm.select("user_id", "age_group", "income_bracket",
                     customer_since_date=crm.customer_since_date.try_cast("date"))
    eng = eng.select("user_id", **{m: eng[m].try_cast(i64 if m == "monthly_conversions" else f64)
                                  for m in S.CHANNEL_METRICS})
    bill = bill.select("user_id", avg_monthly_spend=bill.avg_monthly_spend.try_cast(f64))
    act = act.select("user_id", last_seen_days_ago=act.last_seen_days_ago.try_cast(i64))
    sup = sup.select("user_id", support_tickets_raised=sup.support_tickets_raised.try_cast(i64))
    partner = pm.join(pp, "partner_id").select("user_id", *S.SECOND_PARTY)
    tp = tp.mutate(household_size=tp.household_size.try_cast(i64),
                   presence_of_children=tp.presence_of_children.try_cast("boolean"))
    third = tm.join(tp, "tp_id").select("user_id", *S.THIRD_PARTY)
    t = crm.join(eng, "user_id").join(bill, "user_id").join(act, "user_id").join(sup, "user_id")
    t = t.left_join(partner, "user_id").select(~ibis.selectors.endswith("_right"))
    t = t.left_join(third, "user_id").select(~ibis.selectors.endswith("_right"))
    ok = (t.age_group.isin(S.AGE_GROUPS) & t.customer_since_date.notnull() & t.avg_monthly_spend.notnull()
          & (t.time_on_podcasts_min >= 0))
    t = t.filter(ok).mutate(churned_in_last_90_days=t.last_seen_days_ago > S.CHURN_INACTIVE_DAYS)
    t = t.select(*S.COLUMN_NAMES)
    _write(con, t, out)


def _write(con, expr, out: Path) -> None:
    """Write an Ibis expression as Parquet with the engine itself (a file on DuckDB, parts on Spark)."""
    from helpers import engine as E
    from helpers.scoring import spark_frame

    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if E.engine_of(con) == "spark":
        spark_frame(con, expr).write.parquet(str(out))
    else:
        out.mkdir(parents=True)
        con.con.sql(f"COPY ({con.compile(expr)}) TO '{out / 'part-00000.parquet'}' (FORMAT parquet)")


def stage_ingest(n: int, work: Path, engine: str, args) -> dict:
    from helpers import engine as E
    from helpers import ingest

    con = _connect(engine)
    out = _unified_path(work, engine)
    if hasattr(ingest, "ingest_to_parquet"):
        target = work / engine / "processed"
        res = ingest.ingest_to_parquet(work / "raw", target, engine=engine, con=con)
        found = _find_unified(res, target)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(found.resolve(), target_is_directory=found.is_dir())
        how = "helpers.ingest.ingest_to_parquet (validation + quarantine on the engine)"
    else:
        _fallback_ingest(con, work / "raw", out)
        how = "fallback: engine-side Parquet read + typing + joins (ingest_to_parquet absent; no quarantine)"
    rows = int(E.read_parquet(con, out).count().execute())
    return {"ingest": how, "n_unified": rows}


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


STAGE_FUNCS = {"generate": stage_generate, "ingest": stage_ingest, "score": stage_score,
               "affinity": stage_affinity, "export": stage_export}


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
           "--batch-size", str(args.batch_size), "--covariance-types", *args.covariance_types]
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
                                                     "n_unified", "exported", "returncode", "load_avg")}
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
        plan = [("generate", "-")] + [(s, e) for e in args.engines for s in STAGES[1:]]
        for stage, engine in plan:
            load = [round(x, 2) for x in os.getloadavg()]
            rec = run_stage(stage, n, engine, work, args)
            rec["load_avg"] = load
            results["runs"].append(rec)
            print(json.dumps(rec), flush=True)
            out.write_text(json.dumps(results, indent=2))
            out.with_suffix(".md").write_text(markdown(results))
        if not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
