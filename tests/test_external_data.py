"""The reference data shipped in data/external/ is complete and unchanged (sizes and sha256 of the manifest)."""

from __future__ import annotations

import hashlib
import re

import pytest

from helpers import paths

MANIFEST = paths.EXTERNAL_DATA / "MANIFEST.md"


def manifest_rows() -> list[tuple[str, str, int, str]]:
    """(folder, file, bytes, sha256) of every shipped file listed in the manifest's first table."""
    rows = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"`[0-9a-f]{64}`", cells[7]):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), int(cells[6]), cells[7].strip("`")))
    return rows


def test_manifest_lists_every_shipped_file():
    rows = manifest_rows()
    listed = {f"{folder}/{name}" for folder, name, _, _ in rows}
    on_disk = {str(p.relative_to(paths.EXTERNAL_DATA)) for p in paths.EXTERNAL_DATA.rglob("*")
               if p.is_file() and p.name != "MANIFEST.md"}
    assert len(rows) == 4
    assert listed == on_disk, f"files not in the manifest: {on_disk - listed}; listed but absent: {listed - on_disk}"
    assert {folder for folder, *_ in rows} == set(paths.EXTERNAL_SETS)


@pytest.mark.parametrize("folder,name,size,sha", manifest_rows(), ids=lambda v: str(v)[:24])
def test_shipped_file_size_and_checksum(folder, name, size, sha):
    f = paths.external(folder) / name
    assert f.stat().st_size == size, f"{f}: {f.stat().st_size} bytes, manifest says {size}"
    assert hashlib.sha256(f.read_bytes()).hexdigest() == sha, f"{f}: sha256 differs from data/external/MANIFEST.md"


def test_external_and_shared_data_resolvers(tmp_path, monkeypatch):
    assert paths.external("telco_churn") == paths.EXTERNAL_DATA / "telco_churn"
    with pytest.raises(ValueError, match="cdnow"):
        paths.external("cdnow")  # not shipped: read through shared_data
    monkeypatch.setattr(paths, "SHARED_DATA", tmp_path / "absent")
    assert paths.shared_data("cdnow") is None and paths.shared_data() is None
    (tmp_path / "absent" / "cdnow").mkdir(parents=True)
    assert paths.shared_data("cdnow") == tmp_path / "absent" / "cdnow"


def test_gitignore_does_not_hide_shipped_data():
    import subprocess

    f = paths.external("adult_census") / "adult.data"
    r = subprocess.run(["git", "check-ignore", "-q", str(f)], cwd=paths.REPO_ROOT)
    if r.returncode == 128:
        pytest.skip(f"{paths.REPO_ROOT} is not a git checkout")
    assert r.returncode == 1, f"{f} is ignored by .gitignore: a fresh clone would not have it"
