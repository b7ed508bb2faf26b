"""Headline figures of every notebook in ``reports/metrics.json``, keyed by notebook file stem.

Each notebook's entry is a flat map of metric name to number or string, so two reruns can be diffed.
Every read-modify-write holds an exclusive lock on ``<file>.lock``, so notebooks the runner executes side by
side (``run_notebooks.py --jobs 2``) never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

Scalar = int | float | str | bool | None


@contextlib.contextmanager
def _locked(p: Path):
    """Hold an exclusive advisory lock for a read-modify-write of ``p`` (released when the block ends)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p.with_name(p.name + ".lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lk, fcntl.LOCK_UN)


def _clean(name: str, value: object) -> Scalar:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return None
        return round(v, 10)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (int, str)) or value is None:
        return value
    raise TypeError(f"metric {name!r} must be a number or a string, got {type(value).__name__}")


def read(path: str | os.PathLike) -> dict:
    """The whole metrics file (empty dict if it does not exist yet)."""
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def record(path: str | os.PathLike, stem: str, metrics: Mapping[str, object]) -> dict:
    """Replace notebook ``stem``'s entry in the metrics file at ``path`` and return the entry.

    The file is rewritten atomically with sorted keys so that reruns diff cleanly.
    """
    entry = {k: _clean(k, v) for k, v in metrics.items()}
    p = Path(path)
    with _locked(p):
        data = read(p)
        data[stem] = dict(sorted(entry.items()))
        _write_json(p, data)
    return entry


# --- stage sections skipped because an optional input is absent ---------------------------------------
def skipped_path(path: str | os.PathLike) -> Path:
    """Where skipped sections are listed: ``skipped.json`` beside the metrics file."""
    return Path(path).with_name("skipped.json")


def read_skipped(path: str | os.PathLike) -> dict[str, list[dict]]:
    """``{stem: [{"section": ..., "reason": ...}, ...]}`` for the metrics file at ``path``."""
    return read(skipped_path(path))


def _write_json(p: Path, data: dict) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(dict(sorted(data.items())), f, indent=2)
        f.write("\n")
    os.replace(tmp, p)


def skipped(path: str | os.PathLike, stem: str, section: str, reason: str) -> dict:
    """Record that notebook ``stem`` skipped ``section`` because of ``reason`` (an optional input is absent).

    The notebook shows it visibly (a bold markdown line when run in Jupyter, else a printed line), and
    ``reports/index.html`` lists it under the notebook. ``path`` is the metrics file (``P.metrics``); the list
    lives in ``skipped.json`` beside it, one entry per section (recording a section again replaces it). The
    runner clears a notebook's entries before running it, so the list always belongs to the latest run.
    """
    entry = {"section": str(section), "reason": str(reason)}
    p = skipped_path(path)
    with _locked(p):
        data = read(p)
        items = [e for e in data.get(stem, []) if e.get("section") != entry["section"]]
        data[stem] = items + [entry]
        _write_json(p, data)
    text = f"Skipped: {entry['section']} — {entry['reason']}"
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"> **Skipped: {entry['section']}** — {entry['reason']}"))
            return entry
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        pass
    print(text, flush=True)
    return entry


def clear_skipped(path: str | os.PathLike, stem: str) -> list[dict]:
    """Remove notebook ``stem``'s skipped sections (before it runs again) and return them."""
    p = skipped_path(path)
    with _locked(p):
        data = read(p)
        old = data.pop(stem, [])
        if old:
            _write_json(p, data)
    return old


def restore(path: str | os.PathLike, stem: str, entry: Mapping[str, object] | None,
            skipped_entries: list[dict] | None = None) -> None:
    """Put back notebook ``stem``'s previous metrics entry and skipped sections (None removes them).

    The runner calls it when a notebook fails, so that a failed stage leaves its previous figures, not a mix.
    """
    p = Path(path)
    with _locked(p):
        data = read(p)
        if entry is None:
            data.pop(stem, None)
        else:
            data[stem] = dict(entry)
        _write_json(p, data)
    sp = skipped_path(p)
    with _locked(sp):
        sk = read(sp)
        if skipped_entries:
            sk[stem] = list(skipped_entries)
        else:
            sk.pop(stem, None)
        if sk or sp.exists():
            _write_json(sp, sk)
