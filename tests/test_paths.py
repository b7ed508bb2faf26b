"""The run's folders: resolution order, the folders and files below the two roots, and the shipped data sets."""

import dataclasses

import pytest

from helpers import paths


def test_parameters_win_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIENCE_DATA_DIR", str(tmp_path / "env_data"))
    monkeypatch.setenv("AUDIENCE_REPORTS_DIR", str(tmp_path / "env_reports"))
    assert paths.resolve().data == tmp_path / "env_data"
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    assert (P.data, P.reports) == (tmp_path / "d", tmp_path / "r")


def test_every_path_below_its_root_and_folders_created(tmp_path):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    below = {"raw": P.data / "raw", "truth": P.data / "truth", "processed": P.data / "processed",
             "quarantine": P.data / "quarantine", "exports": P.data / "exports",
             "duckdb": P.data / "processed" / "audience.duckdb", "metrics": P.reports / "metrics.json"}
    assert {k: getattr(P, k) for k in below} == below
    assert all(getattr(P, k).is_dir() for k in ("raw", "truth", "processed", "quarantine", "exports"))
    assert P.reports.is_dir() and not P.metrics.exists() and not P.duckdb.exists()
    # only the two roots are fields: a run is compared, hashed and copied by them
    assert [f.name for f in dataclasses.fields(P)] == ["data", "reports"]
    assert P == paths.Paths(tmp_path / "d", tmp_path / "r") and len({P, paths.Paths(P.data, P.reports)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.raw = tmp_path


def test_class_attributes_document_themselves():
    assert "DuckDB" in paths.Paths.duckdb.__doc__


def test_external_names_the_known_sets():
    with pytest.raises(ValueError, match="unknown shipped data set 'cdnow'.*telco_churn"):
        paths.external("cdnow")
    assert (paths.external("telco_churn")).is_dir()
