"""Execute every numbered notebook in order with papermill, export HTML, and write reports/index.html.

Usage (what `make reports` runs):
    python scripts/run_notebooks.py --kernel audience-intel --data data --out reports --n-users 50000 --seed 42
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def numbered_notebooks() -> list[Path]:
    """Notebooks named NN_*.ipynb, in data-flow (numeric) order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def export_html(executed: Path) -> Path:
    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def write_index(out: Path, runs: list[dict], params: dict) -> Path:
    """reports/index.html: a link to every executed notebook with its headline figures."""
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    extra = sorted(p.name for p in out.glob("*.html") if p.name != "index.html"
                   and not any(p.name == r["html"] for r in runs))
    shots = sorted(p.name for p in out.glob("screenshots/*.png"))
    rows = []
    for r in runs:
        m = metrics.get(r["stem"], {})
        figures = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in m.items())
        rows.append(
            f"<section><h2><a href='{r['html']}'>{html.escape(r['stem'])}</a></h2>"
            f"<p><a href='{r['ipynb']}'>executed notebook</a> · {r['seconds']:.0f} s</p>"
            f"<table>{figures}</table></section>")
    links = "".join(f"<li><a href='{n}'>{n}</a></li>" for n in extra)
    shot_html = "".join(f"<figure><img src='screenshots/{n}' width='480'><figcaption>{n}</figcaption></figure>"
                        for n in shots)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Audience intelligence reports</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Audience intelligence: executed notebooks</h1>
<p>Parameters: {html.escape(json.dumps(params))}. Headline figures are also in <a href="metrics.json">metrics.json</a>.</p>
{''.join(rows)}
<h2>Other reports</h2><ul>{links or '<li>none</li>'}</ul>
<h2>Explorer screenshots</h2>{shot_html or '<p>none (Chromium absent: run scripts/install_browser.sh)</p>'}
</body></html>"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def take_screenshots(data: Path, out: Path) -> None:
    """Screenshot the Explorer's views on this run's artifacts (skipped, with the reason, without Chromium)."""
    from helpers.explorer.screenshots import BrowserMissing, capture

    try:
        shots = capture(data, out)
    except BrowserMissing as exc:
        print(f"[run_notebooks] no Explorer screenshots: {exc}", flush=True)
        return
    print(f"[run_notebooks] Explorer screenshots: {', '.join(p.name for p in shots)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True, help="Jupyter kernel name (the venv's own)")
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--out", default=str(ROOT / "reports"))
    ap.add_argument("--n-users", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"])
    ap.add_argument("--input", default=None, help="your own rich_audience_data.csv/parquet instead of synthetic")
    ap.add_argument("--mapping", default=None, help="column mapping CSV (source_column,target_column)")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose stem starts with these prefixes")
    ap.add_argument("--no-screenshots", action="store_true", help="do not screenshot the Explorer's views")
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"n_users": args.n_users, "seed": args.seed, "data_dir": str(Path(args.data).resolve()),
              "reports_dir": str(out), "engine": args.engine}
    if args.input:
        params["input_path"] = str(Path(args.input).resolve())
    if args.mapping:
        params["mapping_path"] = str(Path(args.mapping).resolve())
    runs = []
    for nb in numbered_notebooks():
        if args.only and not any(nb.stem.startswith(p) for p in args.only):
            continue
        executed = out / nb.name
        print(f"[run_notebooks] {nb.name} ...", flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name=args.kernel,
                            cwd=str(NOTEBOOKS), progress_bar=False, report_mode=False)
        seconds = time.perf_counter() - t0
        html_path = export_html(executed)
        runs.append({"stem": nb.stem, "ipynb": executed.name, "html": html_path.name, "seconds": seconds})
        print(f"[run_notebooks] {nb.name} done in {seconds:.1f} s", flush=True)
    if not args.only and not args.no_screenshots:
        take_screenshots(Path(args.data).resolve(), out)
    index = write_index(out, runs, params)
    print(f"[run_notebooks] wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
