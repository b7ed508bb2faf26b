"""The planted numbers of the synthetic world, read once from ``planted.yaml`` (package data) and checked.

Every per-segment and per-category table the simulation draws from lives in one data file, so the
modules that use them (:mod:`.world`, :mod:`.behaviour`) hold code, not tables. :func:`load` parses the
file, checks each table's shape against its row and column labels (a label list of the file, or the
categories of a data-dictionary column) and its declared ``check``, and returns read-only float arrays:
the tables are shared by every caller, so nobody may change them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

FILE = Path(__file__).resolve().with_name("planted.yaml")
CHECKS = ("distribution", "probability", "positive", "correlation")
_TOL = 1e-9


class PlantedError(ValueError):
    """The planted-parameter file is malformed: the message names the file, the table and what was expected."""


@dataclass(frozen=True)
class Planted:
    """The parsed file: label lists (``labels["segments"]``) and, per section, its named tables."""

    labels: dict[str, list[str]]
    sections: dict[str, dict[str, np.ndarray]]

    def section(self, name: str) -> dict[str, np.ndarray]:
        """The tables of one section (``"world"``, ``"behaviour"``), by name."""
        if name not in self.sections:
            raise KeyError(f"{FILE.name} has no section {name!r} (has {sorted(self.sections)})")
        return self.sections[name]


def _axis(where: str, spec, labels: dict[str, list[str]]) -> list[str]:
    """Labels of one axis: a list, a label list of the file, or a data-dictionary column's categories."""
    if isinstance(spec, list):
        return [str(s) for s in spec]
    if spec in labels:
        return labels[spec]
    from .. import schema  # late: schema is not needed to read the file, only to resolve column names

    col = schema.BY_NAME.get(spec)
    if col is None or not col.categories:
        raise PlantedError(f"{where}: axis {spec!r} is neither a label list of the file ({sorted(labels)}) "
                           "nor a categorical column of helpers.schema")
    return list(col.categories)


def _check(where: str, a: np.ndarray, check: str | None) -> None:
    if check is None:
        return
    if check not in CHECKS:
        raise PlantedError(f"{where}: check {check!r} is not one of {CHECKS}")
    if check == "distribution" and np.abs(a.sum(axis=-1) - 1).max() > _TOL:
        raise PlantedError(f"{where}: expected each row to sum to 1, sums are {np.round(a.sum(axis=-1), 6)}")
    if check == "probability" and ((a < 0) | (a > 1)).any():
        raise PlantedError(f"{where}: expected every value in [0, 1]")
    if check == "positive" and (a <= 0).any():
        raise PlantedError(f"{where}: expected every value > 0")
    if check == "correlation":
        sym = a.ndim == 2 and a.shape[0] == a.shape[1] and np.allclose(a, a.T, atol=_TOL)
        if not sym or np.abs(np.diag(a) - 1).max() > _TOL or np.linalg.eigvalsh(a).min() <= 0:
            raise PlantedError(f"{where}: expected a symmetric positive-definite matrix with unit diagonal")


def _table(where: str, spec: dict, labels: dict[str, list[str]]) -> np.ndarray:
    if not isinstance(spec, dict):
        raise PlantedError(f"{where}: expected a mapping with doc, rows, values, got {type(spec).__name__}")
    missing = [k for k in ("doc", "rows", "values") if k not in spec]
    if missing:
        raise PlantedError(f"{where}: missing key(s) {missing} (a table has doc, rows, values; optional "
                           "columns, check)")
    shape = [len(_axis(where, spec["rows"], labels))]
    if "columns" in spec:
        shape.append(len(_axis(where, spec["columns"], labels)))
    try:
        a = np.array(spec["values"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PlantedError(f"{where}: values are not a numeric table of equal-length rows ({e})") from None
    if list(a.shape) != shape:
        raise PlantedError(f"{where}: values have shape {a.shape}, expected {tuple(shape)} from its rows/columns")
    _check(where, a, spec.get("check"))
    a.setflags(write=False)
    return a


def parse(path: str | Path) -> Planted:
    """Parse and check one planted-parameter file (see the comment at the top of ``planted.yaml``)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict):
        raise PlantedError(f"{path}: expected a mapping with 'labels' and one mapping of tables per section")
    labels = {k: [str(s) for s in v] for k, v in doc["labels"].items()}
    sections = {}
    for name, tables in doc.items():
        if name == "labels":
            continue
        if not isinstance(tables, dict):
            raise PlantedError(f"{path}: section {name!r} must map table names to tables")
        sections[name] = {t: _table(f"{path.name}: {name}.{t}", spec, labels) for t, spec in tables.items()}
    return Planted(labels, sections)


@lru_cache(maxsize=None)
def load() -> Planted:
    """The shipped planted parameters (parsed once per process)."""
    return parse(FILE)


def tables(section: str, *names: str) -> tuple[np.ndarray, ...]:
    """The named tables of one section of the shipped file, in the order asked (to bind them in one line)."""
    sec = load().section(section)
    missing = [n for n in names if n not in sec]
    if missing:
        raise PlantedError(f"{FILE.name}: section {section!r} has no table(s) {missing} (has {sorted(sec)})")
    return tuple(sec[n] for n in names)
