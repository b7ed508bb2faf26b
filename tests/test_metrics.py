"""The metrics file keeps every notebook's entry when several processes write it at once (``--jobs 2``)."""

from __future__ import annotations

import multiprocessing as mp

from helpers import metrics


def _writer(path: str, stem: str, n: int) -> None:
    for i in range(n):
        metrics.record(path, stem, {"i": i})
        metrics.skipped(path, stem, f"section {i % 3}", "absent input")


def test_concurrent_writers_lose_no_entry(tmp_path):
    path = str(tmp_path / "metrics.json")
    stems = [f"{k:02d}_stage" for k in range(6)]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, s, 40)) for s in stems]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # without the lock, a read-modify-write of one process overwrites another's fresh entry
    data = metrics.read(path)
    assert sorted(data) == stems
    assert all(data[s] == {"i": 39} for s in stems)
    sk = metrics.read_skipped(path)
    assert sorted(sk) == stems
    assert all(len(sk[s]) == 3 for s in stems)

