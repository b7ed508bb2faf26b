"""The artifact registry, the Panel, and the one stand-in run builder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import artifacts, paths
from helpers.panel import Panel
from helpers.standin import design_weights, write_standin_run


def test_every_producer_is_a_notebook_and_every_file_constant_is_registered():
    import re

    for a in artifacts.REGISTRY.values():  # a notebook stem (the notebook may land after its registry line)
        assert re.fullmatch(r"\d{2}[a-z]?_[a-z0-9_]+", a.producer), a
    stems = {p.stem for p in (paths.REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert {"00_synthetic_sources", "01_ingest", "02_panel_weighting_fusion", "04_segment_gmm"} <= stems
    for const in ("UNIFIED_CSV", "UNIFIED_PARQUET", "WEIGHTS", "SEGMENTS", "SEGMENT_PROFILES", "SEGMENTS_HIER",
                  "CHURN_RISK", "SEGMENT_VALUE", "AFFINITY_TABLE", "LOOKALIKE_SCORES"):
        assert artifacts.by_file(getattr(artifacts, const)) is not None, const
    assert artifacts.producers() == sorted(artifacts.producers())


def test_missing_artifact_names_its_producer(tmp_path):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    with pytest.raises(artifacts.MissingArtifact, match="written by notebook 04_segment_gmm"):
        artifacts.load(P, "segments")
    with pytest.raises(ValueError, match="unknown artifact 'segmentz'"):
        artifacts.load(P, "segmentz")
    with pytest.raises(ValueError, match=r"needs column\(s\) \['weight'\]"):
        artifacts.save(P, "weights", pd.DataFrame({"user_id": ["a"]}))
    assert not artifacts.exists(P, "weights")


def test_panel_pandas_and_ibis_agree_and_weights_default_to_one(small_panel, tmp_path, duckdb_con):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    pan = write_standin_run(P, small_panel, weights=False, segments=False)
    assert not pan.weights_used and not pan.segments_used and (pan.frame["weight"] == 1.0).all()
    assert "every user has weight 1" in pan.describe_weights()
    pan = write_standin_run(P, small_panel, mislabel_share=0.2, seed=3)
    f = pan.frame
    assert pan.weights_used and pan.segments_used and len(f) == len(small_panel.data)
    assert np.allclose(f["weight"], design_weights(small_panel.data["age_group"]))
    moved = (f["segment"].to_numpy() != small_panel.truth["true_segment"].to_numpy()).mean()
    assert 0.15 < moved < 0.25  # the planted mislabelling share
    t = pan.ibis(duckdb_con).to_pandas().sort_values("user_id").reset_index(drop=True)
    g = f.sort_values("user_id").reset_index(drop=True)
    assert np.allclose(t["weight"], g["weight"]) and (t["segment"].to_numpy() == g["segment"].to_numpy()).all()
    by_seg = g.groupby("segment")["weight"].sum()
    assert np.allclose(t.groupby("segment")["weight"].sum(), by_seg)
    old = artifacts.load_panel(P)
    assert "segment" not in old and np.allclose(old["weight"], f["weight"])


def test_identifier_column_follows_the_run(tmp_path):
    """A user's table keeps its own id column (e.g. Telco's customerID): registry and Panel key on it."""
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    artifacts.save(P, "unified", pd.DataFrame({"customerID": ["x1", "x2", "x3"], "tenure": [1, 5, 9]}))
    assert artifacts.id_column(P) == "customerID"
    artifacts.save(P, "weights", pd.DataFrame({"customerID": ["x3", "x1"], "weight": [3.0, 1.5]}))
    artifacts.save(P, "segments", pd.DataFrame({"customerID": ["x1", "x2", "x3"], "segment": [0, 1, 1],
                                                "segment_name": ["a", "b", "b"]}))
    pan = Panel.load(P)
    assert pan.id == "customerID"
    assert pan.frame["weight"].tolist() == [1.5, 1.0, 3.0] and pan.frame["segment"].tolist() == [0, 1, 1]
    assert artifacts.load_weights(P).to_dict() == {"x3": 3.0, "x1": 1.5}
    artifacts.save(P, "ingest_meta", {"config": {"settings": {"id": "tenure"}}})  # as ingestion records it
    assert artifacts.id_column(P) == "tenure"  # the record wins over the guess


def test_panel_reads_only_the_columns_asked_and_keeps_ids_as_arrow_text(small_panel, tmp_path):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    full = write_standin_run(P, small_panel, seed=3).frame
    some = Panel.load(P, columns=["age_group", "user_id"]).frame
    assert list(some.columns) == ["user_id", "age_group", "weight", "segment", "segment_name"]
    for c in some.columns:
        assert some[c].tolist() == full[c].tolist(), c
    assert isinstance(some["user_id"].dtype, pd.StringDtype) and some["user_id"].dtype.storage == "pyarrow"
    assert some["segment_name"].dtype == object  # one shared Python object per distinct name
    names = some["segment_name"].to_numpy()
    assert len({id(x) for x in names}) == some["segment_name"].nunique()
    assert list(artifacts.load_panel(P, columns=[])) == ["user_id", "weight"]
    with pytest.raises(Exception, match="no_such_column"):
        Panel.load(P, columns=["no_such_column"])


def test_panel_aligns_integer_ids_and_ids_in_another_order(tmp_path):
    P = paths.resolve(tmp_path / "d", tmp_path / "r")
    artifacts.save(P, "unified", pd.DataFrame({"user_id": [10, 20, 30], "tenure": [1, 5, 9]}))
    artifacts.save(P, "weights", pd.DataFrame({"user_id": [30, 10, 20], "weight": [3.0, 1.0, 2.0]}))
    artifacts.save(P, "segments", pd.DataFrame({"user_id": ["10", "20", "30"], "segment": [0, 1, 1],
                                                "segment_name": ["a", "b", "b"]}))
    f = Panel.load(P).frame
    assert f["weight"].tolist() == [1.0, 2.0, 3.0] and f["segment_name"].tolist() == ["a", "b", "b"]
    assert f["tenure"].tolist() == [1, 5, 9]


def test_align_is_a_left_join_on_the_identifier_in_the_order_asked():
    from helpers.panel import align

    rng = np.random.default_rng(3)
    ids = pd.Series([f"u{i}" for i in rng.permutation(50)], dtype="string[pyarrow]", index=np.arange(100, 150))
    frame = pd.DataFrame({"uid": [f"u{i}" for i in range(45)], "x": np.arange(45) * 2.0,
                          "label": [f"L{i % 4}" for i in range(45)]}).sample(frac=1.0, random_state=1)
    got = align(ids, frame, "uid")
    ref = pd.DataFrame({"uid": ids.astype(object)}).merge(frame, on="uid", how="left")
    assert list(got.index) == list(ids.index) and list(got.columns) == ["x", "label"]
    np.testing.assert_array_equal(got["x"].to_numpy(dtype=float), ref["x"].to_numpy(dtype=float))
    assert got["label"].astype(object).where(got["label"].notna(), None).tolist() == \
        ref["label"].where(ref["label"].notna(), None).tolist()
    assert got["x"].isna().sum() == 5  # u45..u49 are absent from the frame
    with pytest.raises(ValueError, match="not unique"):
        align(ids, pd.concat([frame, frame.head(1)]), "uid")
    with pytest.raises(ValueError, match="no identifier column"):
        align(ids, frame, "user_id")
