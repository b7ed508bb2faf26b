"""Activation export: file contents and manifest, the privacy guard (size, columns, hashing) and the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import artifacts, export
from helpers.export import AudienceTooSmall, DisallowedColumn, export_audience


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    """Every test starts without $AUDIENCE_EXPORT_KEY (the key file is then used)."""
    monkeypatch.delenv(export.KEY_ENV, raising=False)


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
                            seed=42, created_at="2026-01-01T00:00:00+00:00", hash_ids=False)
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
    a = export_audience(aud, tmp_path / "a", "x", definition="d", created_at="2026-01-01T00:00:00+00:00",
                        key_file=tmp_path / "key")
    b = export_audience(aud.sample(frac=1.0, random_state=1), tmp_path / "b", "x", definition="d",
                        key_file=tmp_path / "key")
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


def test_ids_are_hashed_by_default_with_a_keyed_hash(tmp_path):
    """Issue 13: unsalted SHA-256 of a guessable id pattern is reversible. The default is HMAC-SHA256 under
    a per-installation key created on first use outside the export folder (mode 0600); the manifest says
    which method and where the key came from, never the key."""
    data = tmp_path / "data"
    out = data / "exports"
    aud = _audience()
    paths = export_audience(aud, out, "h", definition="d")  # no hash_ids argument: hashed by default
    key_file = data / ".secrets" / "export_key"
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not any(p.name == "export_key" for p in out.rglob("*"))  # the key is not in the export folder
    key = key_file.read_text().strip().encode()
    got = pd.read_csv(paths["csv"])
    assert got.columns[0] == "user_id_hmac" and "user_id" not in got.columns
    assert set(got["user_id_hmac"]) == {hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in aud["user_id"]}
    # guessing the id pattern and hashing it without the key recovers nothing
    guesses = {hashlib.sha256(f"U{i:08d}".encode()).hexdigest() for i in range(1, 1000)}
    assert guesses.isdisjoint(got["user_id_hmac"])
    assert not any(u in paths["csv"].read_text() for u in aud["user_id"])  # no raw id anywhere
    m = json.loads(paths["manifest"].read_text())
    assert m["id_hashing"] == "hmac-sha256" and "key file" in m["id_hashing_detail"]["key_source"]
    assert key.decode() not in paths["manifest"].read_text()
    # the same key on the next export: same hashes (exports stay joinable); a second key file is not made
    again = export_audience(aud, out / "explorer" / "x1", "h2", definition="d")
    assert set(pd.read_csv(again["csv"])["user_id_hmac"]) == set(got["user_id_hmac"])
    assert json.loads(again["manifest"].read_text())["id_hashing_detail"]["key_id"] == m["id_hashing_detail"]["key_id"]


def test_key_from_the_environment_and_unsafe_key_files(tmp_path, monkeypatch):
    aud = _audience()
    monkeypatch.setenv(export.KEY_ENV, "k" * 32)
    p = export_audience(aud, tmp_path / "exports", "e", definition="d")
    m = json.loads(p["manifest"].read_text())
    assert m["id_hashing_detail"]["key_source"] == "$AUDIENCE_EXPORT_KEY" and "k" * 32 not in p["manifest"].read_text()
    assert not (tmp_path / ".secrets").exists()  # no key file when the environment gives the key
    want = {hmac.new(b"k" * 32, u.encode(), hashlib.sha256).hexdigest() for u in aud["user_id"]}
    assert set(pd.read_csv(p["csv"])["user_id_hmac"]) == want
    monkeypatch.setenv(export.KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 16"):
        export_audience(aud, tmp_path / "exports", "e2", definition="d")
    monkeypatch.delenv(export.KEY_ENV)
    loose = tmp_path / "loose_key"
    loose.write_text("x" * 64)
    os.chmod(loose, 0o644)
    with pytest.raises(ValueError, match="readable by other users.*chmod 600"):
        export_audience(aud, tmp_path / "exports", "e3", definition="d", key_file=loose)
    raw = export_audience(aud, tmp_path / "exports", "raw", definition="d", hash_ids=False)
    assert json.loads(raw["manifest"].read_text())["id_hashing"] == "none"
    with pytest.raises(ValueError, match="key only makes sense"):
        export_audience(aud, tmp_path, "bad", definition="d", salt="x" * 20, hash_ids=False)


def test_third_party_derived_fields_follow_the_policy(tmp_path, small_panel):
    """Persona names can be built from 3rd-party traits ('renters', 'families'): a segment export carries a
    neutral label unless the configuration allows 3rd-party-derived fields, and a frame that declares
    such a field is refused unless allowed."""
    segs = pd.DataFrame({"user_id": small_panel.data["user_id"].astype(str),
                         "segment": small_panel.truth["true_segment"].to_numpy(),
                         "segment_name": small_panel.truth["true_segment_name"].to_numpy()})
    aud, _ = export.segment_audience(segs, 3)
    assert set(aud["segment_name"]) == {"segment 3"}
    named, _ = export.segment_audience(segs, 3, allow_third_party=True)
    assert set(named["segment_name"]) == {"Affluent family homeowners"}
    with pytest.raises(DisallowedColumn, match="derived from 2nd/3rd-party"):
        export_audience(named, tmp_path, "n", definition="d", third_party_fields=("segment_name",))
    ok = export_audience(named, tmp_path, "n", definition="d", third_party_fields=("segment_name",),
                         allow_third_party=True, key_file=tmp_path / "k")
    assert json.loads(ok["manifest"].read_text())["field_policy"]["third_party_derived_fields"] == \
        "allowed by the configuration"
    assert export.allow_third_party(None) is False  # the shipped configuration does not allow them


def _config_allowing(tmp_path, allow: bool):
    """The shipped default configuration with ``export.allow_third_party`` set to ``allow``."""
    from helpers import config
    text = config.preset("default").read_text()
    assert "allow_third_party: false" in text
    p = tmp_path / f"allow_{allow}.yaml"
    p.write_text(text.replace("allow_third_party: false", f"allow_third_party: {str(allow).lower()}"))
    return p


def test_configuration_key_decides_the_third_party_policy(tmp_path, small_panel):
    """``export.allow_third_party`` of the run configuration is the policy of export_audience (when the caller
    does not decide), of segment_audience and of the manifest; raw 3rd-party attributes stay refused."""
    yes, no = _config_allowing(tmp_path, True), _config_allowing(tmp_path, False)
    assert export.allow_third_party(yes) is True and export.allow_third_party(no) is False
    segs = pd.DataFrame({"user_id": small_panel.data["user_id"].astype(str),
                         "segment": small_panel.truth["true_segment"].to_numpy(),
                         "segment_name": small_panel.truth["true_segment_name"].to_numpy()})
    assert set(export.segment_audience(segs, 3, config=no)[0]["segment_name"]) == {"segment 3"}
    named, _ = export.segment_audience(segs, 3, config=yes)
    assert set(named["segment_name"]) == {"Affluent family homeowners"}
    with pytest.raises(DisallowedColumn, match="allow_third_party: true"):
        export_audience(named, tmp_path / "no", "n", definition="d", third_party_fields=("segment_name",),
                        config=no, key_file=tmp_path / "k")
    assert not (tmp_path / "no").exists()
    ok = export_audience(named, tmp_path / "yes", "n", definition="d", third_party_fields=("segment_name",),
                         config=yes, key_file=tmp_path / "k")
    assert json.loads(ok["manifest"].read_text())["field_policy"]["third_party_derived_fields"] == \
        "allowed by the configuration"
    assert set(pd.read_csv(ok["csv"])["segment_name"]) == {"Affluent family homeowners"}
    # an explicit argument still wins over the configuration
    with pytest.raises(DisallowedColumn, match="derived from 2nd/3rd-party"):
        export_audience(named, tmp_path / "no", "n", definition="d", third_party_fields=("segment_name",),
                        config=yes, allow_third_party=False)
    # the key covers derived labels only: a raw 3rd-party attribute column is refused even when allowed
    with pytest.raises(DisallowedColumn, match="3rd-party attributes, which are never exported"):
        export_audience(named.assign(estimated_net_worth=1), tmp_path / "yes", "raw", definition="d",
                        config=yes, key_file=tmp_path / "k")


@pytest.mark.parametrize("column,match", [("estimated_net_worth", "3rd-party"), ("household_size", "3rd-party"),
                                          ("traveler_type", "2nd/3rd-party"),
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
    for name in ("../escape", "a/b", "", ".hidden", "a\nb", "ok\n", "a\\b"):
        with pytest.raises(ValueError, match="export name"):
            export_audience(aud, tmp_path, name, definition="d")
    for bad in ("yesterday", "2026-13-01", "2026-01-01; rm -rf /", "1 Jan 2026"):
        with pytest.raises(ValueError, match="created_at"):
            export_audience(aud, tmp_path, "x", definition="d", created_at=bad)
    export_audience(aud, tmp_path, "once", definition="d", key_file=tmp_path / "k")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_audience(aud, tmp_path, "once", definition="d", key_file=tmp_path / "k")
    export_audience(aud, tmp_path, "once", definition="d", overwrite=True, key_file=tmp_path / "k")


def test_panel_version_tracks_content(small_panel):
    df = small_panel.data
    v = export.panel_version(df)
    assert v == export.panel_version(df.copy())
    changed = df.copy()
    changed.loc[0, "avg_monthly_spend"] += 1
    assert export.panel_version(changed) != v
    own = df.drop(columns="traveler_type")  # a user's own table: every column counts
    assert export.panel_version(own) == export.panel_version(own.copy()) != v


@pytest.mark.parametrize("kind", ["synthetic sources", "telco"])
def test_recorded_panel_version_is_the_hash_of_the_loaded_table(kind, small_panel, tmp_path):
    """What ingestion records (``ingest_meta.json``, as notebook 01 writes it) is the hash of the unified table
    later stages load, for the engine-staged synthetic sources (22 dictionary columns) and for a configured
    table collected in pandas (Telco: every column): notebook 08 uses the record instead of hashing again."""
    from helpers import config as C, generate as G, ingest, paths

    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    if kind == "telco":
        cfg = C.load("telco")
        res = ingest.ingest_table(cfg.input.resolved_path(), config=cfg)
    else:
        cfg = C.load(None)
        G.write_sources(small_panel, P.raw, P.truth, seed=5, corrupt_share=0.005)
        res = ingest.ingest_sources(P.raw, config=cfg, stage_dir=tmp_path / "stage")
    ingest.write_outputs(res, P.processed, P.quarantine)
    rep = res.report
    ingest.write_ingest_meta(P.processed, {"id": cfg.id, "panel_version": rep["panel_version"],
                                           "n_users": rep["n_users"], "columns": res.column_names})
    df = artifacts.load_unified(P)
    hashed = export.panel_version(df)
    assert export.recorded_panel_version(P, df) == rep["panel_version"] == hashed
    assert export.panel_version(df, P) == hashed
    # a column the notebook adds (user_id beside a configured id) is not part of the panel's record
    assert export.panel_version(df.assign(extra=1), P) == hashed
    # a record that does not describe the table is not used: the table is hashed
    assert export.recorded_panel_version(P, df.head(10)) is None
    assert export.panel_version(df.head(10), P) == export.panel_version(df.head(10))
    assert export.recorded_panel_version(P, df.drop(columns=df.columns[1])) is None
    ingest.write_ingest_meta(P.processed, {"id": cfg.id, "n_users": rep["n_users"]})  # e.g. the demo run
    assert export.recorded_panel_version(P, df) is None and export.panel_version(df, P) == hashed


def test_segment_audience(small_panel):
    segs = pd.DataFrame({"user_id": small_panel.data["user_id"].astype(str),
                         "segment": small_panel.truth["true_segment"].to_numpy(),
                         "segment_name": small_panel.truth["true_segment_name"].to_numpy(),
                         "prob_3": np.where(small_panel.truth["true_segment"] == 3, 0.9, 0.1)})
    aud, definition = export.segment_audience(segs, 3)
    assert len(aud) == int((segs["segment"] == 3).sum()) and (aud["score"] == 0.9).all()
    assert "segment 3" in definition and "thin call" in export.segment_audience.__doc__
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


def test_cli_exports_segment_and_lookalikes(run_dir, small_panel, capsys):
    rc = export.main(["--segment", "3", "--name", "seg3", "--data", str(run_dir),
                      "--seed", "42", "--created-at", "2026-01-01T00:00:00+00:00"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "seg3.csv" in printed and "seg3.manifest.json" in printed
    m = json.loads((run_dir / "exports" / "seg3.manifest.json").read_text())
    assert m["id_hashing"] == "hmac-sha256" and m["seed"] == 42 and len(m["panel_version"]) == 16  # hashed by default
    seg3 = pd.read_csv(run_dir / "exports" / "seg3.csv")
    assert m["size"] == len(seg3) and set(seg3["segment_name"]) == {"segment 3"}
    # churned users are not exported (the planted churn flag of the panel), unless asked for
    df = small_panel.data
    members = df["user_id"][small_panel.truth["true_segment"].to_numpy() == 3]
    active = members[~df.loc[members.index, "churned_in_last_90_days"].astype(bool)]
    assert len(seg3) == len(active) < len(members)
    assert export.main(["--segment", "3", "--name", "seg3all", "--data", str(run_dir), "--include-churned"]) == 0
    assert len(pd.read_csv(run_dir / "exports" / "seg3all.csv")) == len(members)
    assert export.main(["--lookalike", "--top", "250", "--name", "lal", "--data", str(run_dir), "--raw-ids",
                        "--include-churned"]) == 0
    lal = pd.read_csv(run_dir / "exports" / "lal.csv")
    assert len(lal) == 250 and lal["user_id"].iloc[0] == "U00000101"  # rank 1 = first non-seed user
    assert (lal["segment_name"] == "Seed lookalike").all()
    assert export.main(["--outcome", "churned_in_last_90_days", "--value", "true", "--name", "gone",
                        "--data", str(run_dir), "--raw-ids"]) == 0
    assert len(pd.read_csv(run_dir / "exports" / "gone.csv")) == int(df["churned_in_last_90_days"].sum())


def test_cli_follows_the_configuration_policy(run_dir, small_panel, tmp_path):
    """``audience-export --config`` with ``export.allow_third_party: true`` exports persona names; the
    shipped configuration exports the neutral label."""
    yes = _config_allowing(tmp_path, True)
    assert export.main(["--segment", "3", "--name", "named", "--data", str(run_dir), "--config", str(yes)]) == 0
    m = json.loads((run_dir / "exports" / "named.manifest.json").read_text())
    assert m["segment_names"] == ["Affluent family homeowners"]
    assert m["field_policy"]["third_party_derived_fields"] == "allowed by the configuration"
    assert export.main(["--segment", "3", "--name", "neutral", "--data", str(run_dir)]) == 0
    m = json.loads((run_dir / "exports" / "neutral.manifest.json").read_text())
    assert m["segment_names"] == ["segment 3"] and "not exported" in m["field_policy"]["third_party_derived_fields"]


def test_cli_refuses_small_audience_with_exit_code_2(run_dir, capsys):
    with pytest.raises(SystemExit) as e:
        export.main(["--lookalike", "--top", "50", "--name", "tiny", "--data", str(run_dir)])
    assert e.value.code == 2
    assert "refusing to export an audience of 50 users" in capsys.readouterr().err
    assert not (run_dir / "exports" / "tiny.csv").exists()
    with pytest.raises(SystemExit) as e:
        export.main(["--segment", "3", "--top", "10", "--name", "x", "--data", str(run_dir)])
    assert e.value.code == 2


@pytest.mark.parametrize("args,message", [
    (["--lookalike", "--top-share", "inf", "--name", "x"], "finite share"),
    (["--lookalike", "--top-share", "nan", "--name", "x"], "finite share"),
    (["--lookalike", "--top-share", "1e308", "--name", "x"], "finite share"),
    (["--lookalike", "--name", "a\nb"], "export name"),
    (["--lookalike", "--name", "ok\n"], "export name"),
    (["--lookalike", "--name", "../x"], "export name"),
    (["--lookalike", "--name", "x", "--created-at", "last tuesday"], "ISO 8601"),
    (["--lookalike", "--name", "x", "--created-at", "2026-01-01\nforged: yes"], "ISO 8601"),
])
def test_cli_refuses_bad_arguments_cleanly(run_dir, capsys, args, message):
    """Issue 13: each of these ended in a raw traceback, a file name with a newline, or free text in the
    manifest. Now: exit status 2, a one-line reason, nothing written."""
    with pytest.raises(SystemExit) as e:
        export.main([*args, "--data", str(run_dir)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "exports").exists() or not any((run_dir / "exports").iterdir())


def test_cli_does_not_create_a_missing_data_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit) as e:
        export.main(["--lookalike", "--name", "x", "--data", str(missing)])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "helpers.export", "--help"], capture_output=True, text=True,
                         check=True)
    assert "audience-export" in out.stdout and "--raw-ids" in out.stdout and "HMAC" in out.stdout
