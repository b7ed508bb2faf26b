"""Execute every numbered notebook in order with papermill, export HTML, and write reports/index.html.

Usage (what `make reports` runs):
    python scripts/run_notebooks.py --kernel audience-intel --data data --out reports --n-users 50000 --seed 42

A run either completes or says exactly what failed, and never mixes two runs:

* each stage is a transaction: its registered outputs (``helpers.artifacts.REGISTRY``, by producer) are moved
  aside before it runs; if the notebook fails, whatever it wrote is removed, its previous outputs, metrics entry
  and skipped sections are put back, and the run stops (``--keep-going`` runs the remaining stages anyway);
* the stage record ``processed/_run_state.json`` says which stage ran after which, so outputs of later stages
  written before an upstream stage re-ran are *stale*: ``helpers.artifacts.load`` refuses them (naming the
  notebook to re-run), their figures move from ``metrics.json`` to ``metrics_stale.json``, and index.html
  lists them;
* ``reports/index.html`` is written for every run (and after every stage): each notebook's status, the
  sections it skipped (``metrics.skipped``), and for a failure the failing cell and the error message at the
  top. The exit status is 1 when a notebook failed.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from helpers import artifacts

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STEM = re.compile(r"^\d{2}[a-z]?_[A-Za-z0-9_]+$")
#: folders of the data tree a stage may write to (the shipped data/external is never touched)
DATA_FOLDERS = ("raw", "truth", "processed", "quarantine", "exports")
STAGING = ".staging"

#: papermill parameters (name -> CLI option) passed to every notebook that declares them
SHARED_PARAMETERS = ("n_users", "seed", "data_dir", "reports_dir", "engine", "config_path", "observation_date",
                     "delimiter", "encoding", "seed_outcome", "seed_value", "seed_ids_path", "rmst_tau_days",
                     "input_path", "mapping_path")


def numbered_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """Notebooks named ``NN_*.ipynb`` or ``NNx_*.ipynb`` (06b_, 07c_ ...), in data-flow (sorted) order."""
    return sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb") if STEM.match(p.stem))


def declared_parameters(nb_path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (empty set when it has none)."""
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return set()
            names = set()
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return set()


def parameters_for(nb_path: Path, params: dict) -> tuple[dict, list[str]]:
    """The subset of ``params`` the notebook declares (None values are never passed), and the names of
    explicitly set parameters it does not declare (reported, not passed: papermill would warn)."""
    declared = declared_parameters(nb_path)
    given = {k: v for k, v in params.items() if v is not None}
    passed = {k: v for k, v in given.items() if k in declared}
    ignored = sorted(k for k in given if k not in declared and k not in ("n_users", "seed", "data_dir",
                                                                           "reports_dir", "engine"))
    return passed, ignored


def scalar(text: str | None):
    """A make/CLI value as a notebook parameter: integers and decimals become numbers, other text stays."""
    if text is None or text == "":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text) if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", text) else text
    except ValueError:
        return text


# --- transactions --------------------------------------------------------------------------------------
#: Earlier stages each stage reads (stem prefixes): ``helpers.artifacts.STAGE_READS``, which staleness follows
#: too. With ``--jobs 2`` a stage starts once these have finished; a stage missing there waits for every
#: earlier stage. Reading a stage that has not finished fails loudly: a running stage's previous outputs are
#: moved aside.
STAGE_NEEDS: dict[str, tuple[str, ...]] = artifacts.STAGE_READS

#: Peak resident memory (GB) of each stage, run alone on 1M synthetic users (``make reports
#: N_USERS=1000000``, 2026-12-02, process tree, as each stage's owner measured it after this session's changes).
#: With ``--jobs`` > 1 a stage starts beside others only when the estimated peaks of all of them fit
#: ``--memory-budget``; the estimate for a run of n users is ``KERNEL_GB + (peak - KERNEL_GB) * n / 1M`` unless
#: this data folder recorded the stage's own kernel peak at about that size (``_run_state.json``, ``peaks``),
#: which then counts. A stage absent here counts as ``DEFAULT_PEAK_GB_1M``.
STAGE_PEAK_GB_1M: dict[str, float] = {
    "00": 3.3, "01": 3.5, "02": 2.4, "03": 2.8, "04": 2.5, "05": 2.2, "06": 2.8, "06b": 2.2, "07": 1.5,
    "07b": 3.3, "07c": 2.4, "08": 2.9}
DEFAULT_PEAK_GB_1M = 4.0
KERNEL_GB = 0.35  # a kernel with the project imported and nothing loaded


def selects(pattern: str, stem: str) -> bool:
    """``--only`` matching: a stage number names that stage alone (``06`` is not ``06b``); a pattern with
    ``_`` selects the stems it begins."""
    return stem.split("_", 1)[0] == pattern if "_" not in pattern else stem.startswith(pattern)


def stage_needs(stem: str, stems: list[str], params: dict | None = None) -> list[str]:
    """The stages among ``stems`` (this run's, in order) that ``stem`` must wait for.

    A stage given a file by path (``seed_ids_path``, e.g. 06b's ``high_value_seed.csv``) waits for every
    earlier stage: the file may be any stage's output.
    """
    earlier = stems[:stems.index(stem)]
    if (params or {}).get("seed_ids_path"):
        return earlier
    return artifacts.direct_reads(stem, earlier, STAGE_NEEDS)


def _snapshot(data: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file a stage may write, but the runner's own stage record."""
    from helpers import artifacts

    out = {}
    for folder in DATA_FOLDERS:
        for p in (data / folder).rglob("*"):
            if p.is_file() and p.name != artifacts.RUN_STATE:
                s = p.stat()
                out[str(p.relative_to(data))] = (s.st_size, s.st_mtime_ns)
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


@dataclass
class StageTransaction:
    """Replace one stage's outputs and its metrics entry together, or not at all."""

    P: object
    stem: str
    outputs: list = field(default_factory=list)
    moved: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    old_metrics: dict | None = None
    old_skipped: list = field(default_factory=list)
    #: other stages may run at the same time (``--jobs``): a rollback then leaves their declared outputs alone
    concurrent: bool = False
    seq: int = 0

    def begin(self, state: dict | None = None) -> None:
        """Move the stage's previous outputs aside; take its place in the stage order (``seq``) now, at the
        start, so that stages run side by side keep the order they were started in (staleness needs it)."""
        from helpers import artifacts, metrics

        P = self.P
        if state is not None:
            state["seq"] = self.seq = int(state.get("seq", 0)) + 1
        self.outputs = artifacts.produced_by(self.stem)
        stage_dir = P.data / STAGING / self.stem
        _remove(stage_dir)
        files = [a.file for a in self.outputs]
        for a in self.outputs:
            if any(a.file != f and a.file.startswith(f.rstrip("/") + "/") for f in files):
                continue  # inside a folder that is moved as a whole
            src = a.path(P)
            if src.exists():
                dst = stage_dir / a.file
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                self.moved[a.name] = (src, dst)
                if a.kind == "folder":
                    src.mkdir(parents=True, exist_ok=True)
        self.before = _snapshot(P.data)
        self.old_metrics = metrics.read(P.metrics).get(self.stem)
        self.old_skipped = metrics.clear_skipped(P.metrics, self.stem)

    def _clean(self) -> None:
        _remove(self.P.data / STAGING / self.stem)
        try:
            (self.P.data / STAGING).rmdir()
        except OSError:
            pass

    def commit(self, state: dict) -> None:
        from helpers import artifacts

        P = self.P
        self._clean()
        if not self.seq:  # begun without the state: the stage takes its place in the order when it ends
            state["seq"] = self.seq = int(state.get("seq", 0)) + 1
        state.setdefault("stages", {})[self.stem] = {
            "seq": self.seq, "run": state.get("run", 0),
            "outputs": {a.name: artifacts.signature(a.path(P)) for a in self.outputs if a.path(P).exists()}}
        artifacts.write_state(P, state)

    def rollback(self) -> list[str]:
        """Remove what the failed stage wrote and put its previous outputs back; returns warnings."""
        from helpers import artifacts, metrics

        P = self.P
        warnings = []
        for a in self.outputs:
            _remove(a.path(P))
        after = _snapshot(P.data)
        if self.concurrent:  # what the stages running beside this one write is theirs, not this stage's
            others = [a.file.rstrip("/") for a in artifacts.REGISTRY.values() if a.producer != self.stem]
            theirs = lambda rel: any(rel == f or rel.startswith(f + "/") for f in others)  # noqa: E731
            after = {k: v for k, v in after.items() if not theirs(k)}
            self.before = {k: v for k, v in self.before.items() if not theirs(k)}
        for rel in sorted(set(after) - set(self.before)):
            _remove(P.data / rel)
        changed = sorted(rel for rel in set(after) & set(self.before) if after[rel] != self.before[rel])
        gone = sorted(set(self.before) - set(after))
        if changed or gone:
            warnings.append(f"{self.stem} changed files it does not declare as outputs (not restored): "
                            + ", ".join((changed + gone)[:8]))
        for src, dst in self.moved.values():
            _remove(src)
            src.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst, src)
        self._clean()
        metrics.restore(P.metrics, self.stem, self.old_metrics, self.old_skipped)
        return warnings


def recover_staging(P) -> list[str]:
    """Put back outputs a killed run left in ``data/.staging/<stem>/`` (that stage never committed)."""
    from helpers import artifacts

    notes = []
    root = P.data / STAGING
    if not root.is_dir():
        return notes
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for a in artifacts.produced_by(stage_dir.name):
            staged = stage_dir / a.file
            if staged.exists():
                _remove(a.path(P))
                a.path(P).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, a.path(P))
                notes.append(f"restored {a.file} of {stage_dir.name} from an interrupted run")
        _remove(stage_dir)
    try:
        root.rmdir()
    except OSError:
        pass
    return notes


# --- failures ------------------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def describe_failure(exc: BaseException) -> dict:
    """Failing cell (index, execution count, source), error type and message, and where in src/ it was raised."""
    info = {"ename": type(exc).__name__, "evalue": str(exc).strip(), "cell_index": None, "exec_count": None,
            "source": "", "where": ""}
    if hasattr(exc, "ename") and hasattr(exc, "traceback"):  # papermill.PapermillExecutionError
        info.update(ename=exc.ename, evalue=ANSI.sub("", str(exc.evalue)).strip(), cell_index=exc.cell_index,
                    exec_count=exc.exec_count, source=exc.source or "")
        tb = ANSI.sub("", "\n".join(exc.traceback))
        # Python ('File "x.py", line 12') and IPython ('File /x.py:12, in f') frame formats
        frames = re.findall(r'File\s+"([^"]+)",\s+line\s+(\d+)', tb) + re.findall(r'File\s+([^\s",]+?):(\d+)', tb)
        frames.sort(key=lambda fn: tb.find(f"{fn[0]}"))
        ours = [(f, n) for f, n in frames if "/src/helpers/" in f or "/helpers/" in f]
        if ours:
            f, n = ours[-1]
            info["where"] = f"{f[f.index('helpers/'):] if 'helpers/' in f else f}:{n}"
    return info


def locate_cell(nb_path: Path, source: str) -> int | None:
    """1-based position of the cell with ``source`` in the notebook as committed (None if not found)."""
    try:
        cells = nbformat.read(nb_path, as_version=4).cells
    except Exception:  # noqa: BLE001
        return None
    hits = [i for i, c in enumerate(cells, 1) if c.cell_type == "code" and c.source.strip() == source.strip()]
    return hits[0] if len(hits) == 1 else None


def cell_label(info: dict) -> str:
    """``In [5] (cell 9 of notebooks/01_ingest.ipynb)``, or where a failure happened that is not in a cell."""
    if info["cell_index"] is None:
        return "before any cell ran (kernel or notebook file)"
    where = f" (cell {info['cell_number']} of {info['notebook']})" if info.get("cell_number") else ""
    return f"In [{info['exec_count']}]{where}"


def short_message(info: dict, limit: int = 600) -> str:
    msg = f"{info['ename']}: {info['evalue']}" if info["evalue"] else info["ename"]
    return msg if len(msg) <= limit else msg[:limit] + " …"


# --- index.html ----------------------------------------------------------------------------------------
def export_html(executed: Path) -> Path | None:
    from nbconvert import HTMLExporter

    try:
        nb = nbformat.read(executed, as_version=4)
        body, _ = HTMLExporter().from_notebook_node(nb)
    except Exception as exc:  # noqa: BLE001 - an unreadable executed notebook must not hide the real failure
        print(f"[run_notebooks] could not export {executed.name} to HTML: {exc}", flush=True)
        return None
    out = executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


STATUS_TEXT = {"ok": "ok", "failed": "FAILED", "running": "running", "pending": "not run yet",
               "not run": "not run (an earlier stage failed)", "not selected": "not run in this run",
               "stale": "stale"}
STATUS_COLOUR = {"ok": "#1a7f37", "failed": "#cf222e", "stale": "#9a6700", "not run": "#57606a",
                 "not selected": "#57606a", "running": "#0969da", "pending": "#57606a"}


def write_index(out: Path, runs: list[dict], params: dict, P=None, state: dict | None = None) -> Path:
    """reports/index.html: status of every notebook (failure first), skipped sections, stale artifacts,
    links to executed notebooks and their headline figures."""
    from helpers import artifacts, metrics

    e = html.escape
    figures_all = metrics.read(out / "metrics.json")
    stale_figures = metrics.read(out / "metrics_stale.json")
    skipped = metrics.read_skipped(out / "metrics.json")
    failed = [r for r in runs if r["status"] == "failed"]
    top = ""
    for r in failed:
        f = r["failure"]
        cell = cell_label(f)
        src = "\n".join(f["source"].splitlines()[:12])
        where = f"<p>raised in <code>{e(f['where'])}</code></p>" if f["where"] else ""
        link = f" · <a href='{e(r['html'])}'>executed notebook (HTML)</a>" if r.get("html") else ""
        link += f" · <a href='{e(r['ipynb'])}'>.ipynb</a>" if r.get("ipynb") else ""
        top += (f"<div class='fail'><h2>Run failed in {e(r['stem'])}, {e(cell)}</h2>"
                f"<p class='msg'>{e(short_message(f, 2000))}</p>{where}"
                f"<details><summary>failing cell</summary><pre>{e(src)}</pre></details>"
                f"<p>Nothing it wrote in this run was kept; "
                f"{'its previous outputs and figures were put back (see stale artifacts below)' if r.get('restored') else 'it had no earlier outputs'}"
                f"{link}.</p></div>")
    if not failed and runs and all(r["status"] in ("ok", "not selected") for r in runs):
        top = "<div class='ok'>Every selected notebook finished.</div>"
    rows = []
    for r in runs:
        status = r["status"]
        label = STATUS_TEXT.get(status, status)
        if status == "failed":
            label += f": {short_message(r['failure'], 160)}"
        if r.get("stale") and status != "failed":
            label = f"{label}; its outputs are stale: {r['stale']}"
        secs = f"{r['seconds']:.0f} s" if r.get("seconds") is not None else ""
        if r.get("own_gb") or r.get("peak_gb"):
            secs += f", {r.get('own_gb') or r['peak_gb']:.1f} GB"
        link = f"<a href='{e(r['html'])}'>{e(r['stem'])}</a>" if r.get("html") else e(r["stem"])
        sk = "".join(f"<li><b>{e(s['section'])}</b>: {e(s['reason'])}</li>" for s in skipped.get(r["stem"], []))
        colour = STATUS_COLOUR.get("stale" if r.get("stale") and status != "failed" else status, "#000")
        rows.append(f"<tr><td>{link}</td><td style='color:{colour}'>{e(label)}</td><td>{secs}</td>"
                    f"<td>{'<ul>' + sk + '</ul>' if sk else ''}</td></tr>")
    sections = []
    for r in runs:
        m = figures_all.get(r["stem"])
        note = ""
        if m is None and r["stem"] in stale_figures:
            m, note = stale_figures[r["stem"]], " (stale figures from an earlier run, in metrics_stale.json)"
        if not m:
            continue
        figs = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in m.items())
        sections.append(f"<section><h3>{e(r['stem'])}{e(note)}</h3><table>{figs}</table></section>")
    stale_rows = ""
    if P is not None:
        try:
            st = artifacts.status(P)
            bad = st[st["stale"]]
            stale_rows = "".join(f"<li><code>{e(x.file)}</code>: {e(x.reason)}</li>" for x in bad.itertuples())
        except Exception as exc:  # noqa: BLE001 - the index must be written even if the run state is unreadable
            stale_rows = f"<li>could not read the run state: {e(type(exc).__name__)}: {e(str(exc))}</li>"
    extra = sorted(p.name for p in out.glob("*.html") if p.name != "index.html"
                   and not any(p.name == r.get("html") for r in runs))
    links = "".join(f"<li><a href='{e(n)}'>{e(n)}</a></li>" for n in extra)
    shots = sorted(p.name for p in out.glob("screenshots/*.png"))
    shot_html = "".join(f"<figure><img src='screenshots/{e(n)}' width='480'><figcaption>{e(n)}</figcaption>"
                        f"</figure>" for n in shots)
    run_no = (state or {}).get("run")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Audience intelligence reports</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;vertical-align:top}}.fail{{border:2px solid #cf222e;background:#ffebe9;
padding:0 1em;margin-bottom:1em}}.fail .msg{{font-family:monospace;white-space:pre-wrap;font-size:1.05em}}
.ok{{border:2px solid #1a7f37;background:#dafbe1;padding:.5em 1em;margin-bottom:1em}}ul{{margin:0}}</style></head><body>
<h1>Audience intelligence: executed notebooks{f' (run {run_no})' if run_no else ''}</h1>
{top}
<h2>Stages</h2>
<table><tr><th>notebook</th><th>status</th><th>time, peak memory (process tree)</th><th>sections skipped (input absent)</th></tr>{''.join(rows)}</table>
<h2>Stale artifacts</h2><ul>{stale_rows or '<li>none</li>'}</ul>
<p>Parameters: {e(json.dumps(params))}. Headline figures are also in <a href="metrics.json">metrics.json</a>.</p>
<h2>Headline figures</h2>{''.join(sections) or '<p>none</p>'}
<h2>Other reports</h2><ul>{links or '<li>none</li>'}</ul>
<h2>Explorer screenshots</h2>{shot_html or '<p>none (Chromium absent: run scripts/install_browser.sh)</p>'}
</body></html>"""
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index


def move_stale_figures(P, out: Path, stems: list[str], state: dict) -> dict[str, str]:
    """Figures of stages whose last run is older than an upstream re-run go to metrics_stale.json."""
    from helpers import artifacts, metrics

    figures = metrics.read(out / "metrics.json")
    stale_file = out / "metrics_stale.json"
    stale_figs = metrics.read(stale_file)
    reasons = {}
    for stem in stems:
        why = artifacts.stage_stale_reason(P, stem, state)
        if why:
            reasons[stem] = why
            if stem in figures:
                stale_figs[stem] = figures[stem]
                metrics.restore(out / "metrics.json", stem, None, metrics.read_skipped(out / "metrics.json")
                                .get(stem))
        else:
            stale_figs.pop(stem, None)
    if stale_figs or stale_file.exists():
        metrics._write_json(stale_file, stale_figs)
    return reasons


def take_screenshots(data: Path, out: Path) -> None:
    """Screenshot the Explorer's views on this run's artifacts (skipped, with the reason, without Chromium)."""
    from helpers.explorer.screenshots import BrowserMissing, capture

    try:
        shots = capture(data, out)
    except BrowserMissing as exc:
        print(f"[run_notebooks] no Explorer screenshots: {exc}", flush=True)
        return
    except Exception as exc:  # noqa: BLE001 - screenshots are a report extra; the run itself succeeded
        print(f"[run_notebooks] Explorer screenshots failed: {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"[run_notebooks] Explorer screenshots: {', '.join(p.name for p in shots)}", flush=True)


class TreeMemory:
    """Peak resident memory per stage: of the whole process tree while it ran, and of its own kernel.

    A background thread sums the RSS of every descendant process every ``every`` seconds. Each running stage
    keeps the largest sum seen while it ran (with ``--jobs > 1`` that includes the stages beside it), and the
    largest RSS of its own kernel and that kernel's children: the first new direct child of the runner after
    :meth:`begin` is the stage's kernel (:meth:`claimed` lets the caller wait for it before starting another).
    The figures are measurements for the log, index.html and the scheduler's memory budget, never results.
    """

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.peaks, self.own, self.running = every, {}, {}, set()
        self.kernel: dict[str, int] = {}  # stem -> pid of its kernel
        self._unclaimed: list[str] = []  # stages begun whose kernel has not appeared yet
        self._known: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = True
        try:
            import psutil  # noqa: F401
        except ImportError:  # psutil comes with ipykernel; without it the log simply shows no peaks
            self.available = False

    def __enter__(self) -> "TreeMemory":
        if self.available:
            import psutil
            self._known = {c.pid for c in psutil.Process().children()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def begin(self, stem: str) -> None:
        with self._lock:
            self.running.add(stem)
            self.peaks[stem] = self.own[stem] = 0
            self._unclaimed.append(stem)

    def claimed(self, stem: str, timeout: float = 60.0) -> bool:
        """Wait until ``stem``'s kernel has been seen (False after ``timeout`` s or without psutil)."""
        t0 = time.monotonic()
        while self.available and time.monotonic() - t0 < timeout:
            with self._lock:
                if stem in self.kernel or stem not in self.running:
                    return stem in self.kernel
            time.sleep(0.05)
        return False

    def end(self, stem: str) -> float:
        """Stop tracking ``stem``; its process-tree peak in bytes (0 when psutil is missing)."""
        with self._lock:
            self.running.discard(stem)
            if stem in self._unclaimed:
                self._unclaimed.remove(stem)
            return self.peaks.get(stem, 0)

    def own_peak(self, stem: str) -> float:
        """The peak RSS in bytes of ``stem``'s own kernel and its children (0 when its kernel was not seen)."""
        with self._lock:
            return self.own.get(stem, 0)

    def _loop(self) -> None:
        if not self.available:
            return
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every):
            total, by_top = 0, {}
            for top in me.children():
                try:
                    rss = top.memory_info().rss
                    for child in top.children(recursive=True):
                        try:
                            rss += child.memory_info().rss
                        except psutil.Error:
                            continue
                except psutil.Error:  # a process that ended between listing and reading
                    continue
                by_top[top.pid] = rss
                total += rss
            with self._lock:
                for pid in sorted(set(by_top) - self._known):  # new kernels, in the order stages began
                    self._known.add(pid)
                    if self._unclaimed:
                        self.kernel[self._unclaimed.pop(0)] = pid
                for stem in self.running:
                    self.peaks[stem] = max(self.peaks[stem], total)
                    if stem in self.kernel:
                        self.own[stem] = max(self.own[stem], by_top.get(self.kernel[stem], 0))


def estimate_peak_gb(stem: str, rows: int, state: dict | None = None) -> float:
    """The peak memory (GB) stage ``stem`` is expected to need on ``rows`` users: its own peak recorded in this
    data folder at about that size (within 25%), else :data:`STAGE_PEAK_GB_1M` scaled to ``rows``."""
    rec = (state or {}).get("peaks", {}).get(stem)
    if rec and rec.get("rows") and 0.8 <= rows / rec["rows"] <= 1.25:
        return float(rec["gb"])
    p1m = STAGE_PEAK_GB_1M.get(stem.split("_", 1)[0], DEFAULT_PEAK_GB_1M)
    return KERNEL_GB + max(p1m - KERNEL_GB, 0.0) * rows / 1e6


def run_rows(P, params: dict) -> int:
    """The run's number of users: ``--n-users`` for the synthetic world; for the user's own table, the count
    ingestion recorded once it has run (before that, ``--n-users``)."""
    if params.get("input_path"):
        try:
            return int(json.loads((P.processed / "ingest_meta.json").read_text())["n_users"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return int(params.get("n_users") or 0)


def runner_gb() -> float:
    """This runner's own resident memory (GB); 0 without psutil."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**30
    except ImportError:
        return 0.0


DUCKDB_LIMIT_ENV = "AUDIENCE_DUCKDB_MEMORY_LIMIT"  # read by helpers.engine.connect in every kernel


def duckdb_memory_limit(budget_gb: float) -> str:
    """The DuckDB ``memory_limit`` a stage's kernel gets from a memory budget of ``budget_gb`` GB: 60% of it."""
    return f"{max(0.6 * budget_gb, 0.5):.1f}GB"


def arrow_allocator_env() -> dict[str, str]:
    """Environment for the kernels' Arrow allocator: jemalloc returning freed pages at once (decay 0).

    Arrow's default pool here (mimalloc) kept the pages freed after converting a Parquet table to pandas: reading
    the 1M-user table left 0.51 GB of RSS for a 0.26 GB frame, with jemalloc and decay 0 0.27 GB (measured
    2026-12-03); at 10M users that difference is GBs of an 8 GB limit. Empty when this pyarrow has no jemalloc."""
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:  # pyarrow.lib.ArrowNotImplementedError: built without jemalloc (e.g. Windows)
        return {}
    return {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "JE_ARROW_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}


def default_memory_budget() -> float:
    """6 GB, or 60% of this machine's memory when that is less (``--memory-budget``, AUDIENCE_MEMORY_BUDGET_GB)."""
    try:
        import psutil
        return round(min(6.0, 0.6 * psutil.virtual_memory().total / 2**30), 1)
    except ImportError:
        return 6.0


class LogLines:
    """A file for progress bars when stderr is not a terminal (CI, ``make reports > log``): instead of redrawing
    in place, it prints the latest state of the bar as one plain line at most every ``every`` seconds."""

    def __init__(self, stream, every: float = 30.0) -> None:
        self.stream, self.every, self.last, self.t = stream, every, "", time.monotonic()
        self.prefix = ""  # the running notebook (papermill replaces the bar's description with the cell's)

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", ANSI.sub("", text)):
            if part.strip():
                self.last = part.strip()
        if self.last and time.monotonic() - self.t >= self.every:
            self.stream.write(f"[progress] {self.prefix}{self.last}\n")
            self.stream.flush()
            self.t, self.last = time.monotonic(), ""
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


# --- main ----------------------------------------------------------------------------------------------
#: the per-notebook records of the last :func:`main` call (stem, status, seconds, failure, stale), for tests
last_runs: list[dict] = []
def build_params(args, data: Path, out: Path) -> dict:
    def path(p):
        return str(Path(p).expanduser().resolve()) if p else None

    return {"n_users": args.n_users, "seed": args.seed, "data_dir": str(data), "reports_dir": str(out),
            "engine": args.engine, "config_path": path(args.config), "observation_date": args.observation_date or None,
            "delimiter": args.delimiter or None, "encoding": args.encoding or None,
            "seed_outcome": args.seed_outcome or None, "seed_value": scalar(args.seed_value),
            "seed_ids_path": path(args.seed_ids), "rmst_tau_days": scalar(args.rmst_tau_days),
            "input_path": path(args.input), "mapping_path": path(args.mapping)}


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks (see the module docstring); the environment set for the kernels (DuckDB cap, Arrow
    allocator) is undone on return."""
    names = [DUCKDB_LIMIT_ENV, *arrow_allocator_env()]
    before = {k: os.environ.get(k) for k in names}
    try:
        return _main(argv)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True, help="Jupyter kernel name (the venv's own)")
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--out", default=str(ROOT / "reports"))
    ap.add_argument("--n-users", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"])
    ap.add_argument("--input", default=None, help="your own rich_audience_data.csv/parquet instead of synthetic")
    ap.add_argument("--mapping", default=None, help="column mapping CSV (source_column,target_column)")
    ap.add_argument("--config", default=None, help="run configuration YAML (make CONFIG=)")
    ap.add_argument("--observation-date", default=None, help="ISO date the data was observed (make OBSERVATION_DATE=)")
    ap.add_argument("--delimiter", default=None, help="input field delimiter (make DELIMITER=)")
    ap.add_argument("--encoding", default=None, help="input text encoding (make ENCODING=)")
    ap.add_argument("--seed-outcome", default=None, help="outcome column seeding the lookalike (make SEED_OUTCOME=)")
    ap.add_argument("--seed-value", default=None, help="value of that column meaning 'yes' (make SEED_VALUE=)")
    ap.add_argument("--seed-ids", default=None, help="file of seed user ids (make SEED_IDS=)")
    ap.add_argument("--rmst-tau-days", default=None, help="RMST horizon in days (make RMST_TAU_DAYS=)")
    ap.add_argument("--only", nargs="*", help="run only these notebooks: stage numbers (06 is 06_churn_survival "
                                             "only, 06b is 06b_...) or stems / their beginnings with '_'")
    ap.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    ap.add_argument("--no-screenshots", action="store_true", help="do not screenshot the Explorer's views")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (plain log lines only)")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' printed output live")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("AUDIENCE_JOBS", "1")),
                    help="stages run at once, each in its own kernel (make JOBS=); a stage waits for the "
                         "stages it reads (STAGE_NEEDS; one not listed waits for every earlier stage). "
                         "Default 1, or AUDIENCE_JOBS")
    ap.add_argument("--memory-budget", type=float,
                    default=float(os.environ.get("AUDIENCE_MEMORY_BUDGET_GB") or default_memory_budget()),
                    help="GB that the stages run at once (--jobs) may need together, by their estimated peaks "
                         "(make MEMORY_BUDGET=; default 6, or 60%% of this machine's memory when less)")
    ap.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)  # tests: another folder
    args = ap.parse_args(argv)

    import papermill as pm
    from tqdm.auto import tqdm

    from helpers import artifacts, paths

    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    P = paths.resolve(data, out)
    params = build_params(args, data, out)
    notebooks = numbered_notebooks(Path(args.notebooks))
    selected = [nb for nb in notebooks if not args.only or any(selects(p, nb.stem) for p in args.only)]
    for note in recover_staging(P):
        print(f"[run_notebooks] {note}", flush=True)
    state = artifacts.read_state(P)
    state["run"] = int(state.get("run", 0)) + 1
    artifacts.write_state(P, state)
    runs = [{"stem": nb.stem, "status": "pending" if nb in selected else "not selected", "seconds": None,
             "html": (nb.stem + ".html") if (out / (nb.stem + ".html")).exists() and nb not in selected else None,
             "ipynb": None, "failure": None, "stale": None} for nb in notebooks]
    by_stem = {r["stem"]: r for r in runs}
    last_runs[:] = runs
    shown = {k: v for k, v in params.items() if v is not None}

    def log(msg: str) -> None:
        tqdm.write(f"[run_notebooks] {msg}", file=sys.stdout)
        sys.stdout.flush()

    # on a terminal the bars redraw in place; in a log (CI, `make ... > log`) a plain line every 30 s at most
    tty = {} if sys.stderr.isatty() else {"mininterval": 2.0, "ncols": 100}
    bar_file = sys.stderr if sys.stderr.isatty() else LogLines(sys.stderr)
    bar = tqdm(total=len(selected), desc="notebooks", unit="nb", disable=args.no_progress, file=bar_file,
               position=0, dynamic_ncols=not tty, **tty)
    jobs = max(1, int(args.jobs))
    lock = threading.RLock()  # runs, state, index.html and the log are shared by the worker threads

    def execute(i: int, nb: Path, tx: StageTransaction, slot: int, passed: dict) -> None:
        """Run one stage (in a worker thread when --jobs > 1) and commit or roll back its transaction."""
        r = by_stem[nb.stem]
        executed = out / nb.name
        cell_file = bar_file
        if isinstance(bar_file, LogLines):
            cell_file = LogLines(sys.stderr) if jobs > 1 else bar_file
            cell_file.prefix = f"{nb.stem}: "
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(executed), parameters=passed, kernel_name=args.kernel,
                                cwd=str(nb.parent), log_output=args.log_output, report_mode=False,
                                progress_bar=False if args.no_progress else
                                {"desc": f"  {nb.stem} cells", "position": 1 + slot, "leave": False,
                                 "file": cell_file, "dynamic_ncols": not tty, **tty})
        except KeyboardInterrupt:
            memory.end(nb.stem)
            with lock:
                tx.rollback()
                r.update(status="failed", seconds=time.perf_counter() - t0, restored=True,
                         failure={"ename": "KeyboardInterrupt", "evalue": "the run was interrupted",
                                  "cell_index": None, "exec_count": None, "source": "", "where": ""})
                write_index(out, runs, shown, P, state)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a stage is reported, then rolled back
            with lock:
                r["seconds"] = time.perf_counter() - t0
                r["peak_gb"] = memory.end(nb.stem) / 2**30
                r.update(status="failed", failure=describe_failure(exc),
                         restored=bool(tx.moved) or tx.old_metrics is not None)
                if r["failure"]["source"]:
                    r["failure"].update(cell_number=locate_cell(nb, r["failure"]["source"]),
                                        notebook=f"{nb.parent.name}/{nb.name}")
                for w in tx.rollback():
                    log(f"warning: {w}")
            html_path = export_html(executed) if executed.exists() else None
            with lock:
                r["html"] = html_path.name if html_path else None
                f = r["failure"]
                where = f" (raised in {f['where']})" if f["where"] else ""
                log(f"FAILED {nb.name} at {cell_label(f)}{where}: {short_message(f)}")
                log(f"  nothing it wrote was kept ({'its previous outputs were put back' if r['restored'] else 'it had no earlier outputs'}); "
                    f"see {executed} and {out / 'index.html'}")
                write_index(out, runs, shown, P, state)
            return
        with lock:
            r["seconds"] = time.perf_counter() - t0
            r["peak_gb"] = memory.end(nb.stem) / 2**30
            r["own_gb"] = memory.own_peak(nb.stem) / 2**30
            if r["own_gb"]:  # what the scheduler's memory budget counts for this stage next time
                state.setdefault("peaks", {})[nb.stem] = {"rows": run_rows(P, params), "gb": round(r["own_gb"], 3)}
            tx.commit(state)
        html_path = export_html(executed)
        with lock:
            r.update(status="ok", html=html_path.name if html_path else None)
            own = f"{r['own_gb']:.2f} GB its kernel, " if r["own_gb"] else ""
            tree = "process tree, stages beside it included" if jobs > 1 else "process tree"
            log(f"[{i}/{len(selected)}] {nb.name} done in {r['seconds']:.1f} s, peak {own}{r['peak_gb']:.2f} GB {tree}")
            write_index(out, runs, shown, P, state)

    def start(i: int, nb: Path, ignored: list[str]) -> StageTransaction:
        """Begin stage ``nb`` in the main thread (outputs moved aside, its place in the stage order taken)."""
        r = by_stem[nb.stem]
        if ignored:
            log(f"{nb.name} does not declare {', '.join(ignored)}: not passed")
        with lock:
            r.update(status="running", ipynb=nb.name)
            write_index(out, runs, shown, P, state)
            log(f"[{i}/{len(selected)}] {nb.name} ..." + (f" (beside {', '.join(sorted(running))})"
                                                          if running else ""))
            tx = StageTransaction(P, nb.stem, concurrent=jobs > 1)
            tx.begin(state)
            memory.begin(nb.stem)
        bar.set_postfix_str(", ".join(sorted([*running, nb.stem])))
        if isinstance(bar_file, LogLines):
            bar_file.prefix = f"{nb.stem}: "
        return tx

    # With --jobs N up to N stages run at once. The next stage to start is the first, in numeric order, whose
    # inputs (STAGE_NEEDS) have all finished and whose estimated peak memory fits the budget beside the stages
    # running (estimate_peak_gb); a stage that fits beside nothing runs alone. A failure stops new starts
    # (unless --keep-going).
    running: dict[str, tuple[Future, int]] = {}  # stem -> (its future, its progress-bar slot)
    stems = [nb.stem for nb in selected]
    prepared = {nb.stem: parameters_for(nb, params) for nb in selected}  # parsed once per stage: reads the notebook
    needs_of = {stem: stage_needs(stem, stems, prepared[stem][0]) for stem in stems}
    estimate: dict[str, float] = {}  # stem -> the peak (GB) it was admitted with
    finished: set[str] = set()
    waited: set[str] = set()
    budget = args.memory_budget
    # DuckDB takes 80% of the machine's memory by default; each kernel's DuckDB is capped at 60% of the budget
    # instead (the rest is the kernel's pandas/numpy), unless the user set the cap: at 10M users ingestion
    # spills to disk within it instead of growing to 17 GB
    if not os.environ.get(DUCKDB_LIMIT_ENV):
        os.environ[DUCKDB_LIMIT_ENV] = duckdb_memory_limit(budget)
    for k, v in arrow_allocator_env().items():  # the user's own setting wins
        os.environ.setdefault(k, v)

    def reap() -> None:
        """Wait for a running stage to end; count every ended one."""
        wait([f for f, _ in running.values()], return_when=FIRST_COMPLETED)
        for stem in [k for k, (f, _) in running.items() if f.done()]:
            running.pop(stem)[0].result()  # a KeyboardInterrupt or a runner bug surfaces here
            finished.add(stem)
            bar.update(1)

    def next_stage(pending: list[tuple[int, Path]]) -> int | None:
        """Index in ``pending`` of the stage to start now, or None (wait for a running stage to end)."""
        if len(running) >= jobs:
            return None
        rows = run_rows(P, params)
        in_use = sum(estimate[s] for s in running) + runner_gb()
        for k, (_, nb) in enumerate(pending):
            if not all(n in finished for n in needs_of[nb.stem]):
                continue
            need = estimate_peak_gb(nb.stem, rows, state)
            if not running or in_use + need <= budget:
                estimate[nb.stem] = need
                return k
            if nb.stem not in waited:
                waited.add(nb.stem)
                log(f"{nb.name} waits: estimated peak {need:.1f} GB beside {', '.join(sorted(running))} "
                    f"({in_use:.1f} GB) exceeds the memory budget of {budget:.1f} GB")
        return None

    t_run = time.perf_counter()
    with TreeMemory() as memory, ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = list(enumerate(selected, 1))
        while pending:
            if any(r["status"] == "failed" for r in runs) and not args.keep_going:
                for _, nb in pending:
                    by_stem[nb.stem]["status"] = "not run"
                break
            k = next_stage(pending)
            if k is None:
                reap()
                continue
            i, nb = pending.pop(k)
            passed, ignored = prepared[nb.stem]
            slot = min(set(range(jobs)) - {sl for _, sl in running.values()})
            tx = start(i, nb, ignored)
            running[nb.stem] = (pool.submit(execute, i, nb, tx, slot, passed), slot)
            if jobs > 1:  # the next new process is this stage's kernel: let it appear before starting another
                memory.claimed(nb.stem)
        while running:
            reap()
    peaks = [r["peak_gb"] for r in runs if r.get("peak_gb")]
    log(f"{sum(r['status'] in ('ok', 'failed') for r in runs)} notebooks in {time.perf_counter() - t_run:.1f} s wall"
        + (f", largest process-tree peak {max(peaks):.2f} GB" if peaks else ""))
    failed = any(r["status"] == "failed" for r in runs)
    bar.close()
    reasons = move_stale_figures(P, out, [nb.stem for nb in notebooks], state)
    for stem, why in reasons.items():
        if by_stem[stem]["status"] != "failed":
            by_stem[stem]["stale"] = why
    if not args.only and not args.no_screenshots and not failed:
        t_shots = time.perf_counter()
        take_screenshots(data, out)
        log(f"Explorer screenshots step: {time.perf_counter() - t_shots:.1f} s")
    index = write_index(out, runs, shown, P, state)
    if reasons:
        log(f"stale (older than an upstream re-run): {', '.join(sorted(reasons))}")
    log(f"wrote {index}")
    if failed:
        bad = [r["stem"] for r in runs if r["status"] == "failed"]
        log(f"run FAILED in {', '.join(bad)}: see {index}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
