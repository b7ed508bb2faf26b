"""The notebook runner (scripts/run_notebooks.py): discovery, parameters, and runs that never mix.

The transaction tests run three tiny stand-in notebooks (named like the real stages, so the artifact
registry's producers apply) through papermill: a failed stage keeps nothing it wrote, its previous outputs
and figures come back, later stages' outputs become stale, and index.html names the failing cell and error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import artifacts, metrics, paths

spec = importlib.util.spec_from_file_location("run_notebooks", paths.REPO_ROOT / "scripts" / "run_notebooks.py")
R = importlib.util.module_from_spec(spec)
sys.modules["run_notebooks"] = R
spec.loader.exec_module(R)

PARAMS = '''n_users = 4000
seed = 42
data_dir = None
reports_dir = None'''

HEAD = '''from helpers import artifacts, metrics, paths
import pandas as pd
P = paths.resolve(data_dir, reports_dir)'''

STAGES = {
    "01_ingest": '''artifacts.save(P, "unified", pd.DataFrame({"user_id": ["a", "b", "c"], "age_group": ["18-24"] * 3}))
metrics.record(P.metrics, "01_ingest", {"run_marker": seed})''',
    "02_panel_weighting_fusion": '''artifacts.load(P, "unified")
artifacts.save(P, "weights", pd.DataFrame({"user_id": ["a", "b", "c"], "weight": [float(seed)] * 3}))
metrics.record(P.metrics, "02_panel_weighting_fusion", {"run_marker": seed})
metrics.skipped(P.metrics, "02_panel_weighting_fusion", "real-data demonstration", "reference data absent")
if (P.data / "FAIL_02").exists():
    (P.processed / "half_written.tmp").write_text("partial")
    raise ValueError("planted failure: margins file /x/population_margins.csv does not exist")''',
    "04_segment_gmm": '''w = artifacts.load(P, "weights")
artifacts.save(P, "segments", pd.DataFrame({"user_id": w["user_id"], "segment": 0, "segment_name": "all"}))
metrics.record(P.metrics, "04_segment_gmm", {"run_marker": seed})''',
}


def write_notebook(path: Path, body: str, params: str = PARAMS) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# stand-in"), cell, nbformat.v4.new_code_cell(HEAD),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def stand_in_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem, body in STAGES.items():
        write_notebook(folder / f"{stem}.ipynb", body)
    return folder


def run(folder, root, kernel, seed, *extra):
    return R.main(["--kernel", kernel, "--data", str(root / "data"), "--out", str(root / "reports"),
                   "--seed", str(seed), "--notebooks", str(folder), "--no-progress", "--no-screenshots", *extra])


def test_discovery_sorts_lettered_stems(tmp_path):
    for name in ["08_lookalike.ipynb", "07c_media_planning.ipynb", "06b_engagement_value.ipynb", "07_affinity.ipynb",
                 "07b_text_signals.ipynb", "06_churn.ipynb", "scratch.ipynb", "1_x.ipynb", "06b.ipynb"]:
        write_notebook(tmp_path / name, "pass")
    assert [p.stem for p in R.numbered_notebooks(tmp_path)] == [
        "06_churn", "06b_engagement_value", "07_affinity", "07b_text_signals", "07c_media_planning", "08_lookalike"]


def test_only_declared_parameters_are_passed(tmp_path):
    nb = write_notebook(tmp_path / "06_x.ipynb", "pass", PARAMS + "\nobservation_date = None  # ISO date\n"
                        "rmst_tau_days: float = 365.0")
    params = {"n_users": 10, "seed": 1, "data_dir": "/d", "reports_dir": "/r", "engine": "duckdb",
              "observation_date": "2014-06-30", "rmst_tau_days": 730, "seed_outcome": "Churn", "delimiter": None}
    passed, ignored = R.parameters_for(nb, params)
    assert passed == {"n_users": 10, "seed": 1, "data_dir": "/d", "reports_dir": "/r",
                      "observation_date": "2014-06-30", "rmst_tau_days": 730}
    assert ignored == ["seed_outcome"]  # said in the log, never passed (papermill would warn)
    assert R.scalar("1") == 1 and R.scalar("0.5") == 0.5 and R.scalar("Yes") == "Yes" and R.scalar("") is None


def test_failed_stage_keeps_nothing_and_later_stages_turn_stale(stand_in_notebooks, tmp_path, venv_kernel):
    root = tmp_path / "run"
    P = paths.resolve(root / "data", root / "reports")
    assert run(stand_in_notebooks, root, venv_kernel, 1) == 0
    m = metrics.read(P.metrics)
    assert {k: v["run_marker"] for k, v in m.items()} == {"01_ingest": 1, "02_panel_weighting_fusion": 1,
                                                           "04_segment_gmm": 1}
    index = (P.reports / "index.html").read_text()
    assert "Every selected notebook finished" in index and "real-data demonstration" in index
    assert metrics.read_skipped(P.metrics)["02_panel_weighting_fusion"][0]["reason"] == "reference data absent"

    (P.data / "FAIL_02").write_text("")
    assert run(stand_in_notebooks, root, venv_kernel, 2) == 1
    # 01 re-ran; 02 failed: the weights it wrote (marker 2) and its half-written file are gone, run 1's are back
    assert artifacts.load(P, "unified")["user_id"].tolist() == ["a", "b", "c"]
    assert not (P.processed / "half_written.tmp").exists()
    assert pd.read_parquet(P.processed / artifacts.WEIGHTS)["weight"].tolist() == [1.0] * 3
    # ... but they belong to run 1, older than the new 01: refused, and so are 04's
    with pytest.raises(artifacts.StaleArtifact, match="02_panel_weighting_fusion before 01_ingest re-ran"):
        artifacts.load(P, "weights")
    with pytest.raises(artifacts.StaleArtifact):
        artifacts.load_segments(P)
    m = metrics.read(P.metrics)
    assert m == {"01_ingest": {"run_marker": 2}}  # metrics.json holds only this run's figures
    stale = json.loads((P.reports / "metrics_stale.json").read_text())
    assert stale["02_panel_weighting_fusion"]["run_marker"] == 1 and stale["04_segment_gmm"]["run_marker"] == 1
    index = (P.reports / "index.html").read_text()
    top = index[:index.index("<h2>Stages</h2>")]
    assert "Run failed in 02_panel_weighting_fusion, In [4] (cell 4 of notebooks/02_panel_weighting_fusion.ipynb)" in top
    assert "ValueError: planted failure: margins file /x/population_margins.csv does not exist" in top
    assert "Traceback" not in index and "not run (an earlier stage failed)" in index
    assert "weights.parquet is stale" in index
    st = artifacts.status(P).set_index("name")
    assert st.loc["weights", "stale"] and st.loc["segments", "stale"] and not st.loc["unified", "stale"]

    (P.data / "FAIL_02").unlink()
    assert run(stand_in_notebooks, root, venv_kernel, 3, "--only", "02", "04") == 0
    assert artifacts.load(P, "weights")["weight"].tolist() == [3.0] * 3
    assert {k: v["run_marker"] for k, v in metrics.read(P.metrics).items()} == {
        "01_ingest": 2, "02_panel_weighting_fusion": 3, "04_segment_gmm": 3}
    assert json.loads((P.reports / "metrics_stale.json").read_text()) == {}
    assert not artifacts.status(P)["stale"].any()


def test_describe_failure_names_cell_error_and_helper_line():
    from papermill.exceptions import PapermillExecutionError

    exc = PapermillExecutionError(
        7, 5, "w = weights.rake(panel, margins)", "ValueError", "margins file m.csv does not exist",
        ["\x1b[0;31m---------\x1b[0m", 'File "/work/main/src/helpers/weights.py", line 88, in rake',
         "ValueError: margins file m.csv does not exist"])
    info = R.describe_failure(exc)
    assert (info["cell_index"], info["exec_count"], info["where"]) == (7, 5, "helpers/weights.py:88")
    exc.traceback = ["File /x/src/helpers/media/stage.py:106, in budget_section(S)",
                     "File /x/src/helpers/media/budget.py:69, in nll(t)",
                     "File /venv/site-packages/scipy/optimize/_optimize.py:851, in _minimize"]
    assert R.describe_failure(exc)["where"] == "helpers/media/budget.py:69"  # IPython's frame format
    assert R.short_message(info) == "ValueError: margins file m.csv does not exist"


def test_metrics_restore_and_skipped(tmp_path):
    f = tmp_path / "metrics.json"
    metrics.record(f, "02_x", {"a": 1})
    metrics.skipped(f, "02_x", "demo", "absent")
    old = metrics.clear_skipped(f, "02_x")
    assert old == [{"section": "demo", "reason": "absent"}] and metrics.read_skipped(f) == {}
    metrics.record(f, "02_x", {"a": 2})
    metrics.restore(f, "02_x", {"a": 1}, old)
    assert metrics.read(f) == {"02_x": {"a": 1}} and metrics.read_skipped(f)["02_x"] == old
    metrics.restore(f, "02_x", None, None)
    assert metrics.read(f) == {} and metrics.read_skipped(f) == {}


def test_outputs_left_by_a_killed_run_are_put_back(tmp_path):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    artifacts.save(P, "weights", pd.DataFrame({"user_id": ["a"], "weight": [2.0]}))
    tx = R.StageTransaction(P, "02_panel_weighting_fusion")
    tx.begin()  # outputs moved aside, then the process dies before commit or rollback
    (P.processed / artifacts.WEIGHTS).write_bytes(b"half a parquet file")
    notes = R.recover_staging(P)
    assert notes == ["restored processed/weights.parquet of 02_panel_weighting_fusion from an interrupted run"]
    assert artifacts.load(P, "weights")["weight"].tolist() == [2.0]
    assert not (P.data / R.STAGING).exists()


PARALLEL = {
    "01_ingest": STAGES["01_ingest"],
    # 04 and 05 both read only 01's table here, so with --jobs 2 they run side by side
    "04_segment_gmm": '''import time
(P.data / "04.start").write_text(str(time.time())); time.sleep(4)
u = artifacts.load(P, "unified")
artifacts.save(P, "segments", pd.DataFrame({"user_id": u["user_id"], "segment": 0, "segment_name": "all"}))
metrics.record(P.metrics, "04_segment_gmm", {"run_marker": seed})
(P.data / "04.end").write_text(str(time.time()))''',
    "05_segment_hier": '''import time
(P.data / "05.start").write_text(str(time.time()))
u = artifacts.load(P, "unified")
artifacts.save(P, "segments_hier", pd.DataFrame({"user_id": u["user_id"], "hier_segment": 1}))
metrics.record(P.metrics, "05_segment_hier", {"run_marker": seed})
if (P.data / "FAIL_05").exists():
    (P.processed / "half_written.tmp").write_text("partial")
    t0 = time.time()  # fail only after 04, beside it, has written its outputs
    while float((P.data / "04.end").read_text()) < t0 and time.time() < t0 + 60:
        time.sleep(0.2)
    raise ValueError("planted failure in 05")
(P.data / "05.end").write_text(str(time.time()))''',
}


def test_jobs_run_independent_stages_side_by_side(tmp_path, venv_kernel, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem, body in PARALLEL.items():
        write_notebook(folder / f"{stem}.ipynb", body)
    monkeypatch.setattr(R, "STAGE_NEEDS", {"04": ("01",), "05": ("01",)})
    assert R.stage_needs("05_segment_hier", list(PARALLEL)) == ["01_ingest"]
    root = tmp_path / "run"
    P = paths.resolve(root / "data", root / "reports")
    assert run(folder, root, venv_kernel, 1, "--jobs", "2") == 0
    t = {k: float((P.data / k).read_text()) for k in ("04.start", "04.end", "05.start", "05.end")}
    assert t["05.start"] < t["04.end"]  # 05 began while 04 was still running
    assert {k: v["run_marker"] for k, v in metrics.read(P.metrics).items()} == {
        "01_ingest": 1, "04_segment_gmm": 1, "05_segment_hier": 1}
    state = artifacts.read_state(P)["stages"]
    assert state["01_ingest"]["seq"] < state["04_segment_gmm"]["seq"] < state["05_segment_hier"]["seq"]
    assert not artifacts.status(P)["stale"].any()  # 05 finished first, but it started after 04

    # 05 fails while 04 runs beside it: 05's files go, 04's new outputs stay, 05's previous ones come back
    (P.data / "FAIL_05").write_text("")
    assert run(folder, root, venv_kernel, 2, "--jobs", "2", "--only", "04", "05") == 1
    assert not (P.processed / "half_written.tmp").exists()
    assert artifacts.load(P, "segments")["segment_name"].tolist() == ["all"] * 3
    assert metrics.read(P.metrics)["04_segment_gmm"]["run_marker"] == 2
    # 05's previous figures and file are back, and stale: 04 re-ran after them
    assert "05_segment_hier" not in metrics.read(P.metrics)
    assert json.loads((P.reports / "metrics_stale.json").read_text())["05_segment_hier"]["run_marker"] == 1
    assert pd.read_parquet(P.processed / artifacts.SEGMENTS_HIER)["hier_segment"].tolist() == [1] * 3
    with pytest.raises(artifacts.StaleArtifact, match="05_segment_hier before 04_segment_gmm re-ran"):
        artifacts.load(P, "segments_hier")


def test_each_stage_gets_the_peak_memory_of_its_kernel(tmp_path, venv_kernel):
    # a stage that holds ~400 MB and one that holds nothing: the runner's per-stage peak tells them apart
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_ingest.ipynb", '''import numpy as np, time
block = np.ones(50_000_000)  # 400 MB, touched
time.sleep(1.5)
artifacts.save(P, "unified", pd.DataFrame({"user_id": ["a"], "age_group": ["18-24"]}))''')
    write_notebook(folder / "02_panel_weighting_fusion.ipynb", '''import time
time.sleep(1.5)''')
    root = tmp_path / "run"
    assert run(folder, root, venv_kernel, 1) == 0
    peak = {r["stem"]: r["peak_gb"] for r in R.last_runs}
    assert peak["01_ingest"] > 0.37
    assert peak["02_panel_weighting_fusion"] < peak["01_ingest"] - 0.3
    own = {r["stem"]: r["own_gb"] for r in R.last_runs}  # its kernel alone, without the runner
    assert own["01_ingest"] > 0.37 and own["02_panel_weighting_fusion"] < own["01_ingest"] - 0.3
    assert "GB" in (root / "reports" / "index.html").read_text()


def test_stage_needs_cover_every_artifact_a_notebook_names():
    # a stage started beside a producer it reads would see that producer's outputs missing (or, for files read
    # only when present, silently go without them): every registered artifact named in a notebook's code and
    # made by an earlier stage must be in that notebook's STAGE_NEEDS
    import re

    stems = [nb.stem for nb in R.numbered_notebooks()]
    for nb in R.numbered_notebooks()[1:]:
        prefix = nb.stem.split("_", 1)[0]
        assert prefix in R.STAGE_NEEDS, f"{nb.name} has no STAGE_NEEDS entry (it would wait for every stage)"
        code = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
        earlier = {s.split("_", 1)[0] for s in stems[:stems.index(nb.stem)]}
        for name in set(re.findall(r"[\"']([a-z_]+)[\"']", code)) & set(artifacts.REGISTRY):
            producer = artifacts.REGISTRY[name].producer.split("_", 1)[0]
            if producer in earlier:
                assert producer in R.STAGE_NEEDS[prefix], f"{nb.name} names {name!r} of {producer} but does not wait for it"
        assert set(R.STAGE_NEEDS[prefix]) <= earlier


def test_a_stage_given_a_file_waits_for_every_earlier_stage():
    stems = [nb.stem for nb in R.numbered_notebooks()]
    lookalike = next(s for s in stems if s.startswith("08_"))
    assert "06b_engagement_value" not in R.stage_needs(lookalike, stems)
    assert R.stage_needs(lookalike, stems, {"seed_ids_path": "data/processed/high_value_seed.csv"}) == \
        stems[:stems.index(lookalike)]


def test_only_takes_stage_numbers_exactly():
    assert R.selects("06", "06_churn_survival") and not R.selects("06", "06b_engagement_value")
    assert R.selects("06b", "06b_engagement_value") and not R.selects("0", "06_churn_survival")
    assert R.selects("07_aff", "07_affinity") and R.selects("08_lookalike_activation", "08_lookalike_activation")


def test_staleness_follows_what_a_stage_reads_directly_or_through_another(tmp_path):
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    stems = artifacts.producers()
    by = {s.split("_", 1)[0]: s for s in stems}
    # 08 reads 04 and 06, which read 02: 02 is upstream of 08 although 08 does not list it
    assert by["02"] in artifacts.upstream(by["08"], stems) and by["06b"] not in artifacts.upstream(by["08"], stems)
    state = {"seq": 9, "stages": {by[p]: {"seq": n} for p, n in
                                  [("00", 1), ("01", 2), ("02", 3), ("04", 4), ("06", 5), ("08", 6), ("06b", 7)]}}
    state["stages"]["07_affinity"] = {"seq": 6}
    # 06b re-ran after 07 and 08 (it started later, as --jobs may start it): neither reads it, neither is stale
    assert artifacts.stage_stale_reason(P, "07_affinity", state) is None
    assert artifacts.stage_stale_reason(P, by["08"], state) is None
    state["stages"][by["02"]]["seq"] = 8  # 02 re-ran: 08 is stale through 04, and 07 directly
    assert f"before {by['02']} re-ran" in artifacts.stage_stale_reason(P, by["08"], state)
    assert f"before {by['02']} re-ran" in artifacts.stage_stale_reason(P, "07_affinity", state)
    assert artifacts.stage_stale_reason(P, by["01"], state) is None


def test_estimated_peaks_scale_with_users_and_prefer_the_recorded_one():
    small, big = R.estimate_peak_gb("07b_text_signals", 50_000), R.estimate_peak_gb("07b_text_signals", 1_000_000)
    assert R.KERNEL_GB < small < 0.7 and big == pytest.approx(R.STAGE_PEAK_GB_1M["07b"])
    state = {"peaks": {"07b_text_signals": {"rows": 1_000_000, "gb": 2.2}}}
    assert R.estimate_peak_gb("07b_text_signals", 950_000, state) == 2.2  # recorded at about this size
    assert R.estimate_peak_gb("07b_text_signals", 10_000_000, state) > 2.2 * 5  # not at 10x: the table, scaled


OUT_OF_ORDER = {**PARALLEL, "06_churn_survival": '''import time
(P.data / "06.start").write_text(str(time.time()))'''}


def test_jobs_start_a_later_ready_stage_and_keep_to_the_memory_budget(tmp_path, venv_kernel, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem, body in OUT_OF_ORDER.items():
        write_notebook(folder / f"{stem}.ipynb", body)
    monkeypatch.setattr(R, "STAGE_NEEDS", {"04": ("01",), "05": ("04",), "06": ("01",)})
    root = tmp_path / "run"
    P = paths.resolve(root / "data", root / "reports")
    assert run(folder, root, venv_kernel, 1, "--jobs", "2") == 0
    t = {k: float((P.data / k).read_text()) for k in ("04.end", "05.start", "06.start")}
    # 05 waits for 04; 06, later in the order but ready, starts beside 04 instead of waiting behind 05
    assert t["06.start"] < t["04.end"] < t["05.start"]
    state = artifacts.read_state(P)
    assert state["stages"]["06_churn_survival"]["seq"] < state["stages"]["05_segment_hier"]["seq"]
    assert not artifacts.status(P)["stale"].any()
    # each stage's own kernel peak is recorded for the next run's estimates
    assert set(state["peaks"]) == set(OUT_OF_ORDER) and all(0.03 < p["gb"] < 2 for p in state["peaks"].values())

    # a budget below any stage's estimate: every stage runs alone, in order
    for f in ("04.start", "04.end", "06.start"):
        (P.data / f).unlink()
    assert run(folder, root, venv_kernel, 2, "--jobs", "2", "--memory-budget", "0.01") == 0
    t = {k: float((P.data / k).read_text()) for k in ("04.start", "04.end", "06.start")}
    assert t["04.end"] < t["06.start"]


def test_each_kernel_s_duckdb_is_capped_by_the_memory_budget_unless_the_user_set_a_cap(tmp_path, venv_kernel,
                                                                                     monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_ingest.ipynb", '''import os
from helpers import engine as E
con = E.connect("duckdb")
limit = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
(P.data / "cap.txt").write_text(f"{os.environ.get('AUDIENCE_DUCKDB_MEMORY_LIMIT')}|{limit}")''')
    root = tmp_path / "run"
    P = paths.resolve(root / "data", root / "reports")
    monkeypatch.delenv("AUDIENCE_DUCKDB_MEMORY_LIMIT", raising=False)
    assert run(folder, root, venv_kernel, 1, "--memory-budget", "5") == 0
    env, limit = (P.data / "cap.txt").read_text().split("|")
    assert env == "3.0GB" and limit.startswith("2.7")  # DuckDB reports 3 GB (10^9) as 2.7 GiB
    assert "AUDIENCE_DUCKDB_MEMORY_LIMIT" not in os.environ  # the runner's own process is left as it was
    monkeypatch.setenv("AUDIENCE_DUCKDB_MEMORY_LIMIT", "1GB")
    assert run(folder, root, venv_kernel, 2, "--memory-budget", "5") == 0
    assert (P.data / "cap.txt").read_text().startswith("1GB|")


def test_kernels_use_arrow_s_jemalloc_pool_returning_freed_memory_unless_the_user_chose_a_pool(tmp_path, venv_kernel,
                                                                                              monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_ingest.ipynb", '''import os
import pyarrow as pa
(P.data / "pool.txt").write_text(f"{pa.default_memory_pool().backend_name}|{os.environ.get('JE_ARROW_MALLOC_CONF')}")''')
    root = tmp_path / "run"
    P = paths.resolve(root / "data", root / "reports")
    for k in ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF"):
        monkeypatch.delenv(k, raising=False)
    assert run(folder, root, venv_kernel, 1) == 0
    assert (P.data / "pool.txt").read_text() == "jemalloc|dirty_decay_ms:0,muzzy_decay_ms:0"
    assert "ARROW_DEFAULT_MEMORY_POOL" not in os.environ  # the runner's own process is left as it was
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    assert run(folder, root, venv_kernel, 1) == 0
    assert (P.data / "pool.txt").read_text().startswith("system|")
