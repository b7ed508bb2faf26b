"""Where every stage reads and writes: one resolver shared by notebooks, the CLI and tests.

Notebooks take ``data_dir`` and ``reports_dir`` papermill parameters; ``None`` means the environment
variables ``AUDIENCE_DATA_DIR`` / ``AUDIENCE_REPORTS_DIR`` (set by ``make test`` so that test runs never
overwrite a real run) or, failing those, ``data/`` and ``reports/`` at the repository root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Reference data shipped inside the repository (licences allow redistribution; see data/external/MANIFEST.md).
EXTERNAL_DATA = REPO_ROOT / "data" / "external"
#: Reference data NOT shipped (licence does not clearly allow redistribution): read in place when present.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
EXTERNAL_SETS = ("adult_census", "census_popest", "telco_churn")


class _Below:
    """A path below one of a run's two roots (``data`` or ``reports``), declared as a class attribute of
    :class:`Paths` (a read-only attribute: ``P.raw`` is ``P.data / "raw"``)."""

    def __init__(self, root: str, *parts: str, doc: str):
        self.root, self.parts, self.__doc__ = root, parts, doc

    def __get__(self, run: "Paths | None", owner: type | None = None) -> Path:
        # on the class (``Paths.raw``) the descriptor itself, so that help() shows its docstring
        return self if run is None else getattr(run, self.root).joinpath(*self.parts)


@dataclass(frozen=True)
class Paths:
    """The folders of one pipeline run: two roots, and every folder and file below them named once."""

    data: Path
    reports: Path

    raw = _Below("data", "raw", doc="Source files (synthetic or a user's own), as delivered.")
    truth = _Below("data", "truth", doc="Planted truth of the synthetic generator; analysis notebooks read it "
                   "only to score themselves.")
    processed = _Below("data", "processed", doc="Artifacts each stage writes for the next (unified table, "
                       "weights, segments, scores...).")
    quarantine = _Below("data", "quarantine", doc="Rejected input rows with the reason, one file per source.")
    exports = _Below("data", "exports", doc="Activation exports (audience files and their manifests).")
    duckdb = _Below("data", "processed", "audience.duckdb", doc="The embedded DuckDB warehouse written by "
                    "ingestion.")
    metrics = _Below("reports", "metrics.json", doc="The run's metrics, one entry per notebook.")

    def ensure(self) -> "Paths":
        """Create the run's folders (idempotent) and return the run."""
        for p in (self.raw, self.truth, self.processed, self.quarantine, self.exports, self.reports):
            p.mkdir(parents=True, exist_ok=True)
        return self


def resolve(data_dir: str | os.PathLike | None = None,
            reports_dir: str | os.PathLike | None = None) -> Paths:
    """Resolve the run's folders from explicit parameters, then the environment, then the defaults."""
    data = data_dir or os.environ.get("AUDIENCE_DATA_DIR") or REPO_ROOT / "data"
    reports = reports_dir or os.environ.get("AUDIENCE_REPORTS_DIR") or REPO_ROOT / "reports"
    return Paths(Path(data).resolve(), Path(reports).resolve()).ensure()


def external(name: str) -> Path:
    """Folder of a reference data set shipped in the repository: ``<repo>/data/external/<name>/``.

    ``name`` is one of :data:`EXTERNAL_SETS` (``adult_census``, ``census_popest``, ``telco_churn``); the
    manifest ``data/external/MANIFEST.md`` gives source, licence, citation, size and sha256 of each file.
    Raises ``FileNotFoundError`` naming the folder when it is missing (a broken checkout, not a user error).
    """
    if name not in EXTERNAL_SETS:
        raise ValueError(f"unknown shipped data set {name!r}: expected one of {', '.join(EXTERNAL_SETS)} "
                         "(data sets that are not shipped are read with paths.shared_data(name))")
    folder = EXTERNAL_DATA / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: it is shipped with the repository "
                                "(see data/external/MANIFEST.md); restore it with `git checkout data/external`")
    return folder


def shared_data(name: str | None = None) -> Path | None:
    """Folder of a reference data set that is NOT shipped (e.g. ``cdnow``, research/teaching licence):
    ``<repo>/../shared/data/<name>/`` (or the whole folder when ``name`` is None), or None when it is absent.

    A notebook section that needs it must say visibly that it is skipped when this returns None
    (``metrics.skipped``), and the run goes on.
    """
    folder = SHARED_DATA if name is None else SHARED_DATA / name
    return folder if folder.exists() else None
