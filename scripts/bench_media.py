"""Benchmark of issue 17: the media-planning stage (notebook 07c) step by step on a stand-in run.

    python scripts/bench_media.py --customers 100000 --out build/bench_media.json

A customer base of N users gets a media measurement panel of at most 100,000 of them
(``helpers.sources.exposures.MAX_PANEL_USERS``), so 07c on a 1M-user run works on 100,000 panel members:
``--customers 100000`` times the stage at that size without the 1M pipeline. The run is a stand-in
(``helpers.standin.write_standin_run``: unified table, planted truth, planted segments with ``--mislabel``
of the members moved to another segment, as an imperfect segmentation would) plus the synthetic campaign
(``write_exposures``). Each step of ``helpers.media.stage`` is timed once (wall and CPU seconds: on a
shared machine the CPU time is the steadier figure) with the notebook's defaults; timings and peak memory are printed as JSON, never asserted. The budget step also
reports ``budget_share_of_planted_optimum`` of its allocation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _bench_common import emit, peak_rss_mb
from helpers import paths
from helpers.generate import generate_panel
from helpers.media import plan, stage
from helpers.sources.exposures import DEFAULT_BUDGET_PER_PERSON, write_exposures
from helpers.standin import write_standin_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--mislabel", type=float, default=0.5, help="share of members in a wrong segment")
    ap.add_argument("--dir", default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--out", default=None, help="also write the JSON record here")
    a = ap.parse_args()

    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_media_"))
    P = paths.resolve(root / "data", root / "reports")
    t = {}
    t0 = time.perf_counter()
    panel = generate_panel(a.customers, seed=a.seed)
    write_standin_run(P, panel, truth=True, mislabel_share=a.mislabel, seed=a.seed)
    t["standin_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_exposures(panel, P.raw, P.truth, seed=a.seed)
    t["write_exposures_s"] = time.perf_counter() - t0
    del panel

    cpu = {}

    def step(name, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        t[name + "_s"] = round(time.perf_counter() - t0, 2)
        cpu[name + "_s"] = round(time.process_time() - c0, 2)
        return out

    S = step("prepare", lambda: stage.prepare(P, seed=a.seed))
    step("reach", lambda: stage.reach_section(S, seed=a.seed))
    name, ids = stage.target_audience(S)
    B = step("budget", lambda: stage.budget_section(S, ids, DEFAULT_BUDGET_PER_PERSON, seed=a.seed))
    step("daypart", lambda: stage.daypart_section(S))
    step("attribution", lambda: stage.attribution_section(S, n_boot=50, seed=a.seed))
    step("experiments", lambda: stage.experiments_section(S, n_sims=2000, seed=a.seed))
    step("plan", lambda: plan.plan_for_audience(S.md, ids, budget_per_person=DEFAULT_BUDGET_PER_PERSON,
                                                effective_frequency=3, frequency_cap=12.0, audience_name=name,
                                                seed=a.seed, model=B["model"]))
    stages = [k for k in t if k not in ("standin_s", "write_exposures_s")]
    record = {"customers": a.customers, "panel_members": int(S.md.assignment.shape[0]), "seed": a.seed,
              "mislabel_share": a.mislabel, "target_members": int(len(ids)),
              "seconds": {k: round(v, 2) for k, v in t.items()},
              "stage_total_s": round(sum(t[k] for k in stages), 2),
              "cpu_seconds": cpu, "stage_total_cpu_s": round(sum(cpu.values()), 2),
              "budget_share_of_planted_optimum": round(float(B["score"]["share"]), 4),
              "peak_rss_mb": peak_rss_mb()}
    emit(record, a.out)


if __name__ == "__main__":
    main()
