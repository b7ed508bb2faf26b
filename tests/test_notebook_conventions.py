"""Every numbered notebook follows the repository's conventions (CONTRIBUTING.md): a first code cell tagged
``parameters`` that papermill can fully parse, the uniform parameters, no committed outputs, and no long
functions defined inside the notebook."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest
from papermill.translators import PythonTranslator

from helpers.paths import REPO_ROOT

NOTEBOOKS = sorted(p for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")
                   if re.match(r"^[0-9]{2}[a-z]?_", p.stem))
UNIFORM = {"n_users", "seed", "data_dir", "reports_dir"}
ENGINE_STAGES = {"01_ingest", "04_segment_gmm", "07_affinity"}


def test_notebooks_are_numbered_in_data_flow_order():
    stems = [p.stem for p in NOTEBOOKS]
    # NN_ stages are numbered without gaps; NNb_/NNc_ stages sit right after their NN_ stage (06b after 06)
    main = [s[:2] for s in stems if s[2] == "_"]
    assert len(main) >= 9 and main == [f"{i:02d}" for i in range(len(main))]
    for s in stems:
        if s[2] != "_":
            assert s[:2] in main, f"{s} has no {s[:2]}_ stage before it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_first_and_fully_parsed(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    assigned = {t.id for node in ast.parse(code[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    parsed = {p.name for p in PythonTranslator.inspect(code[0])}
    assert parsed == assigned, f"papermill cannot parse {sorted(assigned - parsed)} (no '=' in comments, one per line)"
    assert UNIFORM <= parsed
    if path.stem in ENGINE_STAGES:
        assert "engine" in parsed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_without_long_functions(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), "commit notebooks without outputs"
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 6, f"function {node.name} ({length} lines) belongs in src/helpers/"
