"""Activation export: file contents and manifest, the privacy guard (size, columns, hashing) and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import artifacts, export
from helpers.export import AudienceTooSmall, DisallowedColumn, export_audience


def _audience(n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": [f"U{i:08d}" for i in rng.permutation(n) + 1],
        "segment_name": "Affluent family homeowners lookalike",
        "score": rng.random(n).round(6),
        "reason_codes": "high monthly spend; higher income",
    })


def test_export_contents_and_manifest(tmp_path):
    aud = _audience()
    paths = export_audience(aud, tmp_path, "affluent", definition={"seed": "segment 3"}, panel_version="abc123",
                            seed=42, created_at="2026-01-01T00:00:00+00:00")
    assert set(paths) == {"csv", "parquet", "manifest"} and all(p.exists() for p in paths.values())
    csv = pd.read_csv(paths["csv"])
    pq = pd.read_parquet(paths["parquet"])
    assert list(csv.columns) == ["user_id", "segment_name", "score", "reason_codes"]
    assert sorted(csv["user_id"]) == sorted(aud["user_id"])
    assert (np.diff(csv["score"]) <= 0).all()  # best first
    pd.testing.assert_frame_equal(csv, pq.astype({c: object for c in ("user_id", "segment_name", "reason_codes")}),
                                  check_dtype=False)
    expected = aud.set_index("user_id")["score"]
    assert np.allclose(csv.set_index("user_id")["score"], expected.loc[csv["user_id"]])
    m = json.loads(paths["manifest"].read_text())
    assert m["size"] == 150 and m["definition"] == {"seed": "segment 3"}
    assert m["panel_version"] == "abc123" and m["seed"] == 42
    assert m["created_at"] == "2026-01-01T00:00:00+00:00"
    assert m["id_hashing"] == "none" and m["min_size"] == 100
    assert m["files"]["csv"]["sha256"] == hashlib.sha256(paths["csv"].read_bytes()).hexdigest()


def test_files_do_not_depend_on_the_clock_or_row_order(tmp_path):
    aud = _audience()
    a = export_audience(aud, tmp_path / "a", "x", definition="d", created_at="2026-01-01T00:00:00+00:00")
    b = export_audience(aud.sample(frac=1.0, random_state=1), tmp_path / "b", "x", definition="d")
    for kind in ("csv", "parquet"):
        assert a[kind].read_bytes() == b[kind].read_bytes()
    ma, mb = (json.loads(p["manifest"].read_text()) for p in (a, b))
    assert ma["files"] == mb["files"]
    assert ma["created_at"] != mb["created_at"]


def test_minimum_size_refusal_writes_nothing(tmp_path):
    with pytest.raises(AudienceTooSmall, match="audience of 99 users: the minimum is 100"):
        export_audience(_audience(99), tmp_path, "small", definition="d")
    assert not any(tmp_path.iterdir())
    with pytest.raises(AudienceTooSmall, match="minimum is 500"):
        export_audience(_audience(150), tmp_path, "small", definition="d", min_size=500)
    assert issubclass(AudienceTooSmall, ValueError)
    paths = export_audience(_audience(100), tmp_path, "ok", definition="d")  # exactly at the minimum
    assert len(pd.read_csv(paths["csv"])) == 100


def test_hashed_ids(tmp_path):
    aud = _audience()
    plain = export_audience(aud, tmp_path, "h", definition="d", hash_ids=True)
    salted = export_audience(aud, tmp_path, "s", definition="d", hash_ids=True, salt="pepper")
    out = pd.read_csv(plain["csv"])
    assert "user_id" not in out.columns and out.columns[0] == "user_id_sha256"
    want = {hashlib.sha256(u.encode()).hexdigest() for u in aud["user_id"]}
    assert set(out["user_id_sha256"]) == want
    assert not any(u in plain["csv"].read_text() for u in aud["user_id"])  # no raw id anywhere
    s = pd.read_csv(salted["csv"])
    assert set(s["user_id_sha256"]) == {hashlib.sha256(("pepper" + u).encode()).hexdigest() for u in aud["user_id"]}
    assert set(s["user_id_sha256"]).isdisjoint(want)
    m = json.loads(salted["manifest"].read_text())
    assert m["id_hashing"] == "sha256-salted" and "pepper" not in salted["manifest"].read_text()
    with pytest.raises(ValueError, match="salt only makes sense"):
        export_audience(aud, tmp_path, "bad", definition="d", salt="x")


@pytest.mark.parametrize("column,match", [("estimated_net_worth", "3rd-party"), ("household_size", "3rd-party"),
                                          ("email", "may not be exported")])
def test_disallowed_columns_refused(tmp_path, column, match):
    aud = _audience().assign(**{column: 1})
    with pytest.raises(DisallowedColumn, match=match):
        export_audience(aud, tmp_path, "x", definition="d")
    assert not any(tmp_path.iterdir())


def test_bad_input_messages(tmp_path):
    aud = _audience()
    dup = pd.concat([aud, aud.head(1)], ignore_index=True)
    with pytest.raises(ValueError, match="duplicated in rows"):
        export_audience(dup, tmp_path, "x", definition="d")
    with pytest.raises(ValueError, match="user_id is missing in rows \\[3\\]"):
        export_audience(aud.assign(user_id=aud["user_id"].where(aud.index != 3)), tmp_path, "x", definition="d")
    with pytest.raises(ValueError, match="'score' must be a finite number; rows \\[5\\]"):
        export_audience(aud.assign(score=aud["score"].where(aud.index != 5)), tmp_path, "x", definition="d")
    for name in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="export name"):
            export_audience(aud, tmp_path, name, definition="d")
    export_audience(aud, tmp_path, "once", definition="d")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_audience(aud, tmp_path, "once", definition="d")
    export_audience(aud, tmp_path, "once", definition="d", overwrite=True)


def test_panel_version_tracks_content(small_panel):
    df = small_panel.data
    v = export.panel_version(df)
    assert v == export.panel_version(df.copy())
    changed = df.copy()
    changed.loc[0, "avg_monthly_spend"] += 1
    assert export.panel_version(changed) != v
    with pytest.raises(ValueError, match="unified 22-column table"):
        export.panel_version(df.drop(columns="traveler_type"))


def test_segment_audience(small_panel):
    segs = pd.DataFrame({"user_id": small_panel.data["user_id"].astype(str),
                         "segment": small_panel.truth["true_segment"].to_numpy(),
                         "segment_name": small_panel.truth["true_segment_name"].to_numpy(),
                         "prob_3": np.where(small_panel.truth["true_segment"] == 3, 0.9, 0.1)})
    aud, definition = export.segment_audience(segs, 3)
    assert len(aud) == int((segs["segment"] == 3).sum()) and (aud["score"] == 0.9).all()
    assert "segment 3" in definition
    churn = pd.DataFrame({"user_id": segs["user_id"].iloc[:10], "churn_prob_90d": 0.2})
    with pytest.raises(ValueError, match="churn_risk lacks"):
        export.segment_audience(segs, 3, churn)


# --- command line ------------------------------------------------------------------------------------
@pytest.fixture()
def run_dir(tmp_path, small_panel):
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    small_panel.data.to_parquet(processed / artifacts.UNIFIED_PARQUET, index=False)
    segs = pd.DataFrame({"user_id": small_panel.data["user_id"].astype(str),
                         "segment": small_panel.truth["true_segment"].to_numpy(),
                         "segment_name": small_panel.truth["true_segment_name"].to_numpy()})
    segs.to_parquet(processed / artifacts.SEGMENTS, index=False)
    n = len(segs)
    rank = pd.array([pd.NA] * 100 + list(range(1, n - 99)), dtype="Int64")
    pd.DataFrame({"user_id": segs["user_id"], "audience": "Seed", "in_seed": [True] * 100 + [False] * (n - 100),
                  "score": np.linspace(1, 0, n), "cosine_score": 0.0, "rank": rank,
                  "reason_codes": "converts often"}).to_parquet(processed / artifacts.LOOKALIKE_SCORES, index=False)
    return tmp_path / "data"


def test_cli_exports_segment_and_lookalikes(run_dir, capsys):
    rc = export.main(["--segment", "3", "--name", "seg3", "--data", str(run_dir), "--hash-ids",
                      "--seed", "42", "--created-at", "2026-01-01T00:00:00+00:00"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "seg3.csv" in printed and "seg3.manifest.json" in printed
    m = json.loads((run_dir / "exports" / "seg3.manifest.json").read_text())
    assert m["id_hashing"] == "sha256" and m["seed"] == 42 and len(m["panel_version"]) == 16
    assert m["size"] == len(pd.read_csv(run_dir / "exports" / "seg3.csv"))
    assert export.main(["--lookalike", "--top", "250", "--name", "lal", "--data", str(run_dir)]) == 0
    lal = pd.read_csv(run_dir / "exports" / "lal.csv")
    assert len(lal) == 250 and lal["user_id"].iloc[0] == "U00000101"  # rank 1 = first non-seed user
    assert (lal["segment_name"] == "Seed lookalike").all()


def test_cli_refuses_small_audience_with_exit_code_2(run_dir, capsys):
    with pytest.raises(SystemExit) as e:
        export.main(["--lookalike", "--top", "50", "--name", "tiny", "--data", str(run_dir)])
    assert e.value.code == 2
    assert "refusing to export an audience of 50 users" in capsys.readouterr().err
    assert not (run_dir / "exports" / "tiny.csv").exists()
    with pytest.raises(SystemExit) as e:
        export.main(["--segment", "3", "--top", "10", "--name", "x", "--data", str(run_dir)])
    assert e.value.code == 2


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "helpers.export", "--help"], capture_output=True, text=True,
                         check=True)
    assert "audience-export" in out.stdout and "--hash-ids" in out.stdout
