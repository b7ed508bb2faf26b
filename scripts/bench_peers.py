"""Side-by-side benchmark of the project's methods against peer packages, in one run.

Comparisons (each skipped with a message when its peer is missing):

* **Raking** (``helpers.weights.rake``, the collapsed cell table, and ``collapse=False``, the row-by-row
  implementation it replaced) against ``balance``'s ``rake`` (Meta's survey-weighting package; it needs
  Python >= 3.12, so it runs in another interpreter given by ``--peer-python`` or ``$AUDIENCE_PEER_PYTHON``)
  and against ``ipfn`` (numpy IPF) on the table of distinct cells, in that interpreter or this one. Input:
  the four raking variables of a 20,000-user synthetic panel resampled to N rows, raked to the generator's
  population margins. Every method's weights are scored by the same function: the largest absolute
  difference between a weighted and a target share (``max_margin_error``), so times are compared at equal
  margin error.
* **Synthesis** on UCI Adult (fit on the training rows, sample as many rows): CART and Gaussian copula with
  their rescaled fidelity score (``helpers.fidelity.rescaled_fidelity``: 0 = independent marginals, 1 = a
  real sample, no credit for excess near-copies), against SDV's ``GaussianCopulaSynthesizer`` when ``sdv``
  is importable here, scored the same way.
* **Hierarchical segmentation**: exact Ward (scipy) against the two-stage Ward of ``helpers.hier`` on the
  default features of a synthetic panel of ``--ward-n`` users: time, peak traced memory, ARI between them.

Writes ``build/benchmark/peers.md`` and ``peers.json`` with the machine and the date of the run (the date
belongs to the benchmark record only; no result file of the pipeline carries it). Timings are best of
``--repeats`` and are never asserted. Usage::

    AUDIENCE_PEER_PYTHON=/tmp/venv312/bin/python OMP_NUM_THREADS=1 \\
        .venv/bin/python scripts/bench_peers.py --rake-sizes 1000000 10000000 --ward-n 20000

A Python 3.12 environment with the peers: ``python3.12 -m venv /tmp/venv312 &&
/tmp/venv312/bin/pip install balance ipfn pyarrow`` (a bench-only tool, not a project dependency).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import weights as W  # noqa: E402
from helpers.generate import generate_panel, population_margins  # noqa: E402
from _bench_common import time_best  # noqa: E402

RAKING_VARS = ["age_group", "income_bracket", "education_level", "household_size"]

# Run by the peer interpreter (balance, ipfn); prints one JSON line; weights go to .npy files.
PEER_WORKER = r'''
import json, logging, sys, time
import numpy as np, pandas as pd
logging.disable(logging.WARNING)
inp, mpath, outdir, tol, repeats = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
max_length = int(sys.argv[6])
df = pd.read_parquet(inp)
m = pd.read_csv(mpath, dtype={"variable": str, "category": str}, keep_default_na=False)
n = len(df)
variables = list(dict.fromkeys(m["variable"]))
out = {"python": sys.version.split()[0]}

def best(fn):
    t, res = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter(); res = fn(); t = min(t, time.perf_counter() - t0)
    return t, res

try:
    import balance
    from balance.weighting_methods.rake import rake
    tm = {v: {c: float(t) * n / float(g["target"].sum()) for c, t in zip(g["category"], g["target"])}
          for v, g in m.groupby("variable", sort=False)}
    sample = df.astype("object")
    for key, rows in (("balance_default", 10_000), ("balance_exact", max_length)):
        t, res = best(lambda: rake(sample, pd.Series(np.ones(n)), None, None, variables=variables,
                                   target_margins=tm, transformations=None, convergence_rate=tol,
                                   rate_tolerance=0.0, max_iteration=1000, target_margins_max_length=rows))
        np.save(f"{outdir}/{key}.npy", res["weight"].to_numpy(dtype=float))
        out[key] = {"seconds": t, "version": balance.__version__, "target_rows": rows}
except ImportError as e:
    out["balance_default"] = {"skipped": f"balance not importable in {sys.executable}: {e}"}

try:
    from ipfn import ipfn
    def ipfn_cells():
        data = df.astype(str)
        table = data.groupby(variables).size().rename("total").astype(float).reset_index()
        aggregates, dims = [], []
        for var, g in m.groupby("variable", sort=False):
            share = g.set_index("category")["target"] / g["target"].sum()
            aggregates.append((share * n).rename_axis(var)); dims.append([var])
        fitted = ipfn.ipfn(table.copy(), aggregates, dims, weight_col="total", convergence_rate=tol,
                           max_iteration=1000).iteration()
        per_cell = fitted.assign(w=fitted["total"] / table["total"])
        return data.merge(per_cell[[*variables, "w"]], on=variables, how="left")["w"].to_numpy()
    t, w = best(ipfn_cells)
    np.save(f"{outdir}/ipfn.npy", w)
    from importlib.metadata import version
    out["ipfn_cells"] = {"seconds": t, "version": version("ipfn")}
except ImportError as e:
    out["ipfn_cells"] = {"skipped": f"ipfn not importable in {sys.executable}: {e}"}
print(json.dumps(out))
'''


def machine() -> dict:
    """What the run was measured on, and when (benchmark record only)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = cpu or "unknown (no /proc/cpuinfo)"
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None  # sysconf names absent on this platform: memory not reported
    return {"date": _dt.date.today().isoformat(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "load_avg_1min_at_start": load, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def margin_error(frame: pd.DataFrame, margins: pd.DataFrame, w: np.ndarray) -> float:
    """Largest |weighted share - target share| over every margin category (one scorer for every method)."""
    err = 0.0
    total = w.sum()
    for var, g in margins.groupby("variable", sort=False):
        target = g.set_index("category")["target"] / g["target"].sum()
        got = pd.Series(w).groupby(frame[var].astype(str).to_numpy()).sum() / total
        err = max(err, float((got.reindex(target.index, fill_value=0.0) - target).abs().max()))
    return err


def rake_input(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of the raking variables, resampled from the matched users of a 20k synthetic panel."""
    base = generate_panel(20_000, seed=seed).data[RAKING_VARS].dropna()
    rng = np.random.default_rng(seed)
    frame = W.raking_frame(base, RAKING_VARS).iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    return frame.astype("category")


def bench_raking(sizes: list[int], peer_python: str | None, repeats: int, tol: float) -> tuple[list[dict], list[str]]:
    margins = population_margins()
    margins = margins[margins["variable"].isin(RAKING_VARS)].reset_index(drop=True)
    rows, notes = [], []
    have_local_ipfn = _importable("ipfn")
    if not peer_python:
        notes.append("balance: skipped (needs Python >= 3.12 with `balance`; give --peer-python or "
                     "$AUDIENCE_PEER_PYTHON)")
    for n in sizes:
        frame = rake_input(n)
        t_cells, r_cells = time_best(lambda: W.rake(frame, margins, tol=tol, id_col=None), repeats)
        t_rows, r_rows = time_best(lambda: W.rake(frame, margins, tol=tol, id_col=None, collapse=False), repeats)
        rows.append({"n_rows": n, "method": "ours: rake, collapsed cells", "seconds": t_cells,
                     "max_margin_error": margin_error(frame, margins, r_cells.weights.to_numpy()),
                     "n_cells": r_cells.n_cells})
        rows.append({"n_rows": n, "method": "ours: rake row by row (previous)", "seconds": t_rows,
                     "max_margin_error": margin_error(frame, margins, r_rows.weights.to_numpy())})
        python = peer_python or (sys.executable if have_local_ipfn else None)
        if python is None:
            if n == sizes[0]:
                notes.append("ipfn: skipped (not installed here and no --peer-python)")
            continue
        with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
            frame.astype(str).to_parquet(f"{tmp}/input.parquet")
            margins.to_csv(f"{tmp}/margins.csv", index=False)
            worker = Path(tmp) / "worker.py"
            worker.write_text(PEER_WORKER)
            proc = subprocess.run([python, str(worker), f"{tmp}/input.parquet", f"{tmp}/margins.csv", tmp,
                                   str(tol), str(repeats), str(balance_target_rows(margins))],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                notes.append(f"peer run at {n:,} rows failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            for key, label in (("balance_default", "balance: rake, default 10k-row target frame"),
                               ("balance_exact", "balance: rake, target frame exact to the margins"),
                               ("ipfn_cells", "ipfn on the cell table")):
                info = res.get(key, {})
                if "skipped" in info:
                    if n == sizes[0]:
                        notes.append(f"{label}: skipped ({info['skipped']})")
                    continue
                if not info:
                    continue
                w = np.load(f"{tmp}/{'ipfn' if key == 'ipfn_cells' else key}.npy")
                rows.append({"n_rows": n, "method": f"{label} ({key.split('_')[0]} {info.get('version', '')}, "
                                                    f"Python {res['python']})",
                             "seconds": info["seconds"], "max_margin_error": margin_error(frame, margins, w),
                             "max_rel_diff_to_ours": float(np.max(np.abs(w / w.mean()
                                                                         / r_cells.weights.to_numpy() - 1)))})
        print(json.dumps(rows[-1]), flush=True)
    return rows, notes


def balance_target_rows(margins: pd.DataFrame, limit: int = 10**7) -> int:
    """Rows of the target frame ``balance`` realises from target margins: enough that every share is a whole
    number of rows (the generator's shares have 5 decimals: 100,000 rows), else its margins are rounded and
    its margin error cannot reach the others' (10,000 rows, the default, rounds to 5e-5)."""
    shares = margins["target"] / margins.groupby("variable")["target"].transform("sum")
    for rows in (10**k for k in range(2, 8)):
        if np.allclose(shares * rows, np.round(shares * rows), atol=1e-6) or rows >= limit:
            return rows
    return limit


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def bench_synthesis(n_train: int, repeats: int, seed: int) -> tuple[list[dict], list[str]]:
    from helpers import paths
    from helpers.fidelity import bootstrap_copy, fidelity_anchors, independent_marginals, rescaled_fidelity
    from helpers.synth import CARTSynthesizer, GaussianCopulaSynthesizer, load_adult
    df = load_adult(paths.external("adult_census") / "adult.data")
    idx = np.random.default_rng(seed).permutation(len(df))
    n_train = min(n_train, int(len(df) * 0.75))
    train = df.iloc[idx[:n_train]].reset_index(drop=True)
    holdout = df.iloc[idx[n_train:]].reset_index(drop=True)
    anchors = fidelity_anchors(train, holdout, len(train), random_state=seed)
    makers = {
        "ours: CART (min_samples_leaf 20)": lambda: CARTSynthesizer(min_samples_leaf=20, random_state=seed).fit(train)
        .sample(len(train), random_state=seed + 1),
        "ours: CART, trees on a 5k sample": lambda: CARTSynthesizer(min_samples_leaf=20, random_state=seed,
                                                                    tree_sample=5000).fit(train)
        .sample(len(train), random_state=seed + 1),
        "ours: Gaussian copula": lambda: GaussianCopulaSynthesizer(random_state=seed).fit(train)
        .sample(len(train), random_state=seed + 1),
        "reference: independent marginals": lambda: independent_marginals(train, len(train), seed + 2),
        "reference: bootstrap copy of training rows": lambda: bootstrap_copy(train, len(train), seed + 2),
    }
    notes = []
    if _importable("sdv"):
        def sdv_copula():
            from sdv.metadata import SingleTableMetadata
            from sdv.single_table import GaussianCopulaSynthesizer as SDVCopula
            meta = SingleTableMetadata()
            meta.detect_from_dataframe(train)
            model = SDVCopula(meta)
            model.fit(train)
            return model.sample(len(train))[train.columns]
        makers["SDV: GaussianCopulaSynthesizer"] = sdv_copula
    else:
        notes.append("SDV: skipped (`sdv` is not installed in this environment; it pulls in torch, "
                     "not installed for a benchmark here)")
    rows = []
    for name, make in makers.items():
        t, syn = time_best(make, repeats)
        r = rescaled_fidelity(train, holdout, syn, n_eval=1500, anchors=anchors, random_state=seed)
        rows.append({"method": name, "n_train": len(train), "fit_and_sample_seconds": t,
                     "fidelity_score": r.score, "rescaled_before_penalty": r.rescaled,
                     "near_copy_share": r.near_copy_share, "raw_vs_holdout": r.raw})
        print(json.dumps(rows[-1]), flush=True)
    return rows, notes


def bench_ward(n: int, seed: int) -> tuple[list[dict], list[str]]:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    from _bench_common import synthetic_features
    from helpers.hier import HierarchicalSegmenter
    X, truth, _, _ = synthetic_features(n, seed)
    rows = []
    tracemalloc.start()
    t0 = time.perf_counter()
    seg = HierarchicalSegmenter(method="two_stage", random_state=seed).fit(X)
    t_two = time.perf_counter() - t0
    _, peak_two = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    k = seg.n_clusters_
    rows.append({"method": "ours: two-stage Ward", "n_points": n, "seconds": t_two,
                 "peak_traced_mb": peak_two / 2**20, "k": k,
                 "ari_truth": float(adjusted_rand_score(truth, seg.labels_))})
    tracemalloc.start()
    t0 = time.perf_counter()
    Z = linkage(X, method="ward")
    exact = fcluster(Z, k, criterion="maxclust")
    t_exact = time.perf_counter() - t0
    _, peak_exact = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows.append({"method": "scipy: exact Ward (same k)", "n_points": n, "seconds": t_exact,
                 "peak_traced_mb": peak_exact / 2**20, "k": k,
                 "ari_truth": float(adjusted_rand_score(truth, exact)),
                 "ari_with_two_stage": float(adjusted_rand_score(exact, seg.labels_))})
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows, []


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:,.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Peer benchmark (`scripts/bench_peers.py`)", "",
             f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gb']} GB), {m['platform']}, "
             f"Python {m['python']}; load average {m['load_avg_1min_at_start']} at the start "
             "(a shared machine: times are best of the repeats and only their ratios travel).", ""]
    for section, title in (("raking", "Raking to 4 margins"), ("synthesis", "Synthesis on UCI Adult"),
                           ("ward", "Hierarchical segmentation")):
        rows = result.get(section, [])
        lines += [f"## {title}", ""]
        if rows:
            cols = list(dict.fromkeys(c for r in rows for c in r))
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
        for note in result.get("notes", {}).get(section, []):
            lines.append(f"\n*{note}*")
        lines.append("")
    if result.get("raking"):
        lines += ["Ratios (peer seconds / ours, collapsed cells):", ""]
        df = pd.DataFrame(result["raking"])
        for n, g in df.groupby("n_rows"):
            ours = float(g.loc[g["method"].str.startswith("ours: rake, collapsed"), "seconds"].iloc[0])
            for _, r in g.iterrows():
                if not r["method"].startswith("ours: rake, collapsed"):
                    lines.append(f"* {n:,} rows — {r['method']}: {r['seconds'] / ours:.1f}x")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rake-sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--synth-train", type=int, default=24_000, help="UCI Adult training rows (rest held out)")
    ap.add_argument("--ward-n", type=int, default=20_000, help="points of the exact-vs-two-stage Ward run (0: skip)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-8, help="raking tolerance (largest share error) of every method")
    ap.add_argument("--peer-python", default=os.environ.get("AUDIENCE_PEER_PYTHON"),
                    help="Python >= 3.12 interpreter with balance/ipfn installed")
    ap.add_argument("--skip", nargs="*", default=[], choices=["raking", "synthesis", "ward"])
    ap.add_argument("--out-dir", type=Path, default=REPO / "build" / "benchmark")
    args = ap.parse_args(argv)
    result: dict = {"machine": machine(), "notes": {}}
    if "raking" not in args.skip and args.rake_sizes:
        result["raking"], result["notes"]["raking"] = bench_raking(args.rake_sizes, args.peer_python,
                                                                   args.repeats, args.tol)
    if "synthesis" not in args.skip:
        result["synthesis"], result["notes"]["synthesis"] = bench_synthesis(args.synth_train, 1, 42)
    if "ward" not in args.skip and args.ward_n > 0:
        result["ward"], result["notes"]["ward"] = bench_ward(args.ward_n, 42)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "peers.md").write_text(to_markdown(result))
    print(to_markdown(result))
    for notes in result["notes"].values():
        for note in notes:
            print("skipped/note:", note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
