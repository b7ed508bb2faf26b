"""Unit tests of the Explorer's data functions (against planted truth) and its routes (Flask test client).

Stand-in runs come from :func:`helpers.explorer.demo.write_demo_artifacts`: segments are the planted
ones (optionally with a share deliberately mislabelled), the affinity table is computed by
``helpers.affinity``, churn risk by the planted churn process and the lookalike stage's scores by notebook
08's hide-and-find (``helpers.lookalike``), so numbers can be checked against truth. The Explorer itself
fits no model: a test runs every view with the estimators made to raise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from helpers import artifacts, export, generate, paths
from helpers.explorer import create_app
from helpers.explorer import data as D
from helpers.explorer.__main__ import parse_args
from helpers.explorer.demo import mislabel, write_demo_artifacts


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(paths, panel, data) of a 3,000-user run whose segments are the planted ones."""
    P = paths.resolve(tmp_path_factory.mktemp("explorer_clean") / "data",
                      tmp_path_factory.mktemp("explorer_clean_reports"))
    panel = write_demo_artifacts(P, n_users=3000, seed=11, lookalike_segment=2)
    return P, panel, D.load_explorer_data(P)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """(paths, panel, data) of a 2,500-user run with 30% of segment labels moved to another segment, and the
    lookalike stage seeded with (mislabelled) segment 2."""
    P = paths.resolve(tmp_path_factory.mktemp("explorer_noisy") / "data",
                      tmp_path_factory.mktemp("explorer_noisy_reports"))
    with threadpool_limits(1):
        panel = write_demo_artifacts(P, n_users=2500, seed=5, mislabel_share=0.3, with_churn=False,
                                     lookalike_segment=2)
    return P, panel, D.load_explorer_data(P)


@pytest.fixture(scope="module")
def client(clean):
    P = clean[0]
    return create_app(P.data, P.reports, min_export_size=50, n_threads=1).test_client()


@pytest.fixture(autouse=True)
def _no_salt(monkeypatch):
    monkeypatch.delenv(export.SALT_ENV, raising=False)


def sha(ids) -> set[str]:
    """Unsalted SHA-256 of ids: what a guesser computes (exports must not match it)."""
    return {hashlib.sha256(str(u).encode()).hexdigest() for u in ids}


def keyed(P, ids) -> set[str]:
    """HMAC-SHA256 of ids under the run's export key (<data>/.secrets/export_key), as export.py writes."""
    key, _ = export.export_key(export.key_path(P.data), create=False)
    return set(export.hmac_ids(pd.Series(list(ids)).astype(str), key))


# --- loading ------------------------------------------------------------------------------------
def test_missing_artifacts_name_the_make_target(tmp_path):
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    with pytest.raises(D.MissingArtifacts, match=r"make reports") as e:
        D.load_explorer_data(P)
    assert {m["key"] for m in e.value.missing} == {"unified", "segments", "affinity"}
    c = create_app(P.data, P.reports).test_client()
    r = c.get("/")
    assert r.status_code == 503
    page = r.get_data(as_text=True)
    assert "make reports" in page and "segments.parquet" in page and "affinity_table.csv" in page
    r = c.get("/api/segments")
    assert r.status_code == 503 and "make reports" in r.get_json()["error"]
    status = c.get("/api/status").get_json()
    assert status["ready"] is False


def test_load_rejects_inconsistent_artifacts(clean, tmp_path):
    P0 = clean[0]
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    for f in (artifacts.UNIFIED_PARQUET, artifacts.AFFINITY_TABLE):
        (P.processed / f).write_bytes((P0.processed / f).read_bytes())
    seg = pd.read_parquet(P0.processed / artifacts.SEGMENTS)
    seg.drop(columns="segment").to_parquet(P.processed / artifacts.SEGMENTS)
    with pytest.raises(ValueError, match=r"lacks columns \['segment'\]"):
        D.load_explorer_data(P)
    seg.assign(user_id="X" + seg["user_id"].astype(str)).to_parquet(P.processed / artifacts.SEGMENTS)
    with pytest.raises(ValueError, match="different runs"):
        D.load_explorer_data(P)


# --- segment map --------------------------------------------------------------------------------
def test_pca_2d_recovers_planar_centroids():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(5, 2)))[0]          # a plane in 5-D
    C = rng.normal(size=(6, 2)) @ basis.T + rng.normal(size=5) * 3   # an affine plane off the origin
    coords, explained, load = D.pca_2d(pd.DataFrame(C))
    assert explained.sum() == pytest.approx(1.0)
    d_full = np.linalg.norm(C[:, None] - C[None], axis=2)
    d_map = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.testing.assert_allclose(d_map, d_full, atol=1e-9)      # a planar configuration is drawn exactly
    assert (load[np.arange(2), np.abs(load).argmax(axis=1)] > 0).all()  # deterministic signs
    coords2, _, _ = D.pca_2d(pd.DataFrame(-C))                # mirrored data, same picture up to signs
    np.testing.assert_allclose(np.abs(coords2), np.abs(coords), atol=1e-9)
    with pytest.raises(ValueError, match="non-negative"):
        D.pca_2d(pd.DataFrame(C), weights=-np.ones(6))


def test_segment_map_recovers_planted_structure(clean):
    _, panel, data = clean
    m = D.segment_map(data)
    bubbles = pd.DataFrame(m["segments"]).set_index("segment")
    n = len(panel.data)
    true_share = np.array(panel.params["panel_segment_shares"])
    se = np.sqrt(true_share * (1 - true_share) / n)
    assert (np.abs(bubbles["weighted_share"].to_numpy() - true_share) < 4 * se).all()
    cent = pd.DataFrame(bubbles["centroid"].tolist(), index=bubbles.index)
    planted = pd.DataFrame.from_dict(panel.params["true_affinity_panel"], orient="index")
    planted.index = planted.index.astype(int)
    for f in planted.columns:  # segments are ordered on each feature as the planted affinity orders them
        rho = spearmanr(cent.loc[planted.index, f], planted[f]).statistic
        assert rho > 0.75, (f, rho)
    assert 0.5 < sum(m["explained"]) <= 1 + 1e-9
    xy = bubbles[["x", "y"]].to_numpy()
    full = cent.to_numpy()
    iu = np.triu_indices(len(xy), 1)
    d_map = np.linalg.norm(xy[:, None] - xy[None], axis=2)[iu]
    d_full = np.linalg.norm(full[:, None] - full[None], axis=2)[iu]
    assert spearmanr(d_map, d_full).statistic > 0.7, "the map keeps which segments are close"
    for lab in (m["x_label"], m["y_label"]):  # plain language: what separates the segments, no jargon
        assert "more" in lab and "PC" not in lab and "variance" not in lab and "_" not in lab, lab


def test_map_axis_titles_come_from_the_configuration_and_fit(clean):
    """The map's axis titles are built from the run configuration's labels (no unit, no column name) and wrapped
    into lines short enough for the chart (the rotated y title used to run off the top)."""
    from helpers.explorer import segmap

    data = clean[2]
    m = D.segment_map(data)
    labels = {data.cfg.label(c, unit=False).lower() for c in data.cfg.metric_names}
    for axis, width in (("x", segmap.X_AXIS_LINE_CHARS), ("y", segmap.AXIS_LINE_CHARS)):
        lines = m[f"{axis}_label_lines"]
        assert lines and all(len(line) <= width for line in lines), lines
        text = m[f"{axis}_label"].replace("\u2190", "").replace("\u2192", "")
        named = [part.strip() for side in text.split("|") for part in side.replace("more", "", 1).split(" and ")]
        assert named and set(named) <= labels, (named, labels)
    long = "podcast listening time on every device of the household"
    lines = D.axis_title_lines(long, "monthly spend and social media time", 40)
    assert all(len(line) <= 40 for line in lines) and len(lines) >= 3
    assert " ".join(lines).split() == f"\u2190 more {long} more monthly spend and social media time \u2192".split()
    assert D.axis_title_lines("a", "b", 40) == ["\u2190 more a   |   more b \u2192"]


# --- persona card ----------------------------------------------------------------------------------
def test_persona_card_channel_minutes_match_planted_means(clean):
    _, panel, data = clean
    planted = pd.DataFrame.from_dict(panel.params["true_affinity_panel"], orient="index")
    planted.index = planted.index.astype(int)
    got = {}
    for k in data.segment_ids:
        card = D.persona_card(data, k)
        members = (panel.truth["true_segment"] == k).to_numpy()
        assert card["n_users"] == int(members.sum()) and card["name"] == panel.params["segment_names"][k]
        for row in card["media"]:
            assert row["mean_segment"] == pytest.approx(panel.data.loc[members, row["channel"]].mean())
            assert row["index"] is not None and row["ci_low"] <= row["index"] <= row["ci_high"]
            got[(k, row["channel"])] = row["index"]
    covered = [planted.at[k, c] / 100 * 100 for (k, c) in got]  # planted panel index of every cell
    rho = spearmanr(list(got.values()), covered).statistic
    assert rho > 0.9, rho  # the card's channel index ranks cells as the planted affinity does


def test_persona_card_defining_attributes_and_demographics(clean):
    _, _, data = clean
    card = D.persona_card(data, "3")
    over, under = card["defining"]["over"], card["defining"]["under"]
    assert over and under
    assert all(r["significant"] and r["base_flag"] != "suppressed" and r["index"] > 100 for r in over)
    assert all(r["significant"] and r["index"] < 100 for r in under)
    assert [r["index"] for r in over] == sorted([r["index"] for r in over], reverse=True)
    # planted: affluent family homeowners (segment 3) over-index on children at home
    assert any(r["family"] == "presence_of_children" and r["attribute"] == "yes" for r in over)
    age = next(d for d in card["demographics"] if d["column"] == "age_group")
    assert sum(r["pct_segment"] for r in age["rows"]) == pytest.approx(100)
    assert age["coverage"] == pytest.approx(1.0)
    third = next(d for d in card["demographics"] if d["column"] == "homeowner_status")
    assert 0.3 < third["coverage"] < 1.0, "3rd-party demographics cover only matched users"
    kids = {r["category"]: r for r in next(d for d in card["demographics"]
                                           if d["column"] == "presence_of_children")["rows"]}
    assert set(kids) == {"yes", "no"} and kids["yes"]["pct_segment"] + kids["no"]["pct_segment"] == pytest.approx(100)
    assert kids["yes"]["pct_segment"] > 2 * kids["yes"]["pct_base"]  # planted: families have children


def test_persona_card_churn_follows_planted_hazards(clean):
    _, _, data = clean
    risk = {k: D.persona_card(data, k)["churn"]["churn_prob_90d_active"] for k in data.segment_ids}
    # planted log hazard ratios: segment 4 highest (+0.45, most tickets), segment 3 lowest (-0.9)
    assert max(risk, key=risk.get) == 4 and min(risk, key=risk.get) == 3
    assert all(0 < v < 1 for v in risk.values())
    # notebook 06's churn_risk has no 'churned' column: the unified table's flag decides who is active
    without = dataclasses.replace(data, churn_risk=data.churn_risk.drop(columns="churned"))
    assert D.churn_summary(without, 4)["churn_prob_90d_active"] == pytest.approx(risk[4])


def test_segment_validation(clean):
    data = clean[2]
    with pytest.raises(D.UnknownSegment, match="unknown segment 99"):
        D.persona_card(data, 99)
    with pytest.raises(ValueError, match="integer"):
        D.persona_card(data, "1; drop table")
    for bad in ("abc", "0", "-3", "1.5", str(10 ** 9)):
        with pytest.raises(ValueError, match="size"):
            D.check_size(data, bad)
    assert D.check_size(data, " 25 ") == 25


# --- heatmap ---------------------------------------------------------------------------------------
def test_heatmap_reproduces_table_and_planted_tiers(clean):
    _, panel, data = clean
    h = D.affinity_heatmap(data, "channels", "intensity")
    t = data.affinity[data.affinity["index_type"] == "intensity"].set_index(["attribute", "segment"])
    truth = pd.DataFrame.from_dict(panel.params["true_affinity_panel"], orient="index")
    truth.index = truth.index.astype(int)
    checked = 0
    for i, att in enumerate(h["attributes"]):
        for j, s in enumerate(h["segments"]):
            row = t.loc[(att, s)]
            z = h["z"][i][j]
            if row["base_flag"] == "suppressed":
                assert z is None
                continue
            assert z == pytest.approx(row["index"])
            assert h["tier"][i][j] == ("sweet spot" if z > 120 else "de-prioritise" if z < 80 else "neutral")
            true = truth.at[s, att]
            if true > 150:
                assert h["tier"][i][j] == "sweet spot" and h["significant"][i][j], (att, s, z, true)
                checked += 1
            if true < 60:
                assert h["tier"][i][j] == "de-prioritise" and h["significant"][i][j], (att, s, z, true)
                checked += 1
    assert checked >= 8


def test_heatmap_family_greys_suppressed_cells(clean):
    data = clean[2]
    h = D.affinity_heatmap(data, "traveler_type")
    assert h["index_type"] == "share" and set(h["attributes"]) == set(generate.S.TRAVELER_TYPES)
    flags = np.array(h["base_flag"])
    z = np.array(h["z"], dtype=object)
    assert (flags == "suppressed").any(), "a 3,000-user panel has small partner cells"
    assert all(v is None for v in z[flags == "suppressed"])
    assert all(v is not None for v in z[flags != "suppressed"])
    with pytest.raises(ValueError, match="unknown view"):
        D.affinity_heatmap(data, "no_such_family")
    with pytest.raises(ValueError, match="share indices only"):
        D.affinity_heatmap(data, "traveler_type", "intensity")
    with pytest.raises(ValueError, match="index_type"):
        D.affinity_heatmap(data, "channels", "share")


# --- lookalikes: the lookalike stage's audience, read (never fitted) ---------------------------------
def test_lookalike_view_finds_mislabelled_members_of_the_planted_segment(noisy):
    """The stage's audience (seeded with a 30%-mislabelled segment) is rich in the segment's planted members
    that carry another label; the view reports the stage's own held-out lift and the seed-like profile."""
    P, panel, data = noisy
    true2 = (panel.truth["true_segment"] == 2).to_numpy()
    scores = pd.read_parquet(P.processed / artifacts.REGISTRY["lookalike_scores"].file.split("/")[-1])
    cand = data.panel["user_id"].map(scores.set_index("user_id")["rank"]).notna().to_numpy()
    seed = D.seed_mask(data)
    labelled2 = (data.panel["segment"] == 2).to_numpy()
    missed = true2 & ~labelled2 & cand           # planted members of segment 2 labelled as another segment
    size = int(missed.sum())
    rows, name, _ = D.stage_lookalike_rows(data, size)
    assert len(rows) == size and not seed[rows].any(), "the audience excludes the stage's seed"
    precision = true2[rows].mean()
    base = true2[cand].mean()
    assert precision > max(0.4, 3 * base), (precision, base)
    pay = D.lookalike_payload(data, size)
    stage = data.metrics[artifacts.REGISTRY["lookalike_scores"].producer]
    assert pay["size"] == size and pay["lift"] == stage["lookalike_outcome_lift_top5"] and pay["lift"] > 2
    assert pay["seed_size"] == int(seed.sum()) == int(scores["in_seed"].sum())
    podcasts = next(p for p in pay["profile"] if p["feature"] == "time_on_podcasts_min")
    assert podcasts["seed_index"] > 150 and podcasts["lookalike_index"] > 120


def test_lookalike_view_is_the_stage_ranking(noisy):
    """The view's audience is the stage's ranking (best rank first, churned customers left out), as
    helpers.audience.select reads it: same scores artifact, same audience."""
    P, panel, data = noisy
    scores = data.lookalike_scores
    churned = set(panel.data.loc[panel.data["churned_in_last_90_days"].astype(bool), "user_id"].astype(str))
    want = scores[scores["rank"].notna() & ~scores["user_id"].isin(churned)].sort_values("rank")["user_id"]
    rows, _, aud = D.stage_lookalike_rows(data, 200)
    assert list(data.panel["user_id"].to_numpy()[rows]) == list(want.head(200)) == list(aud.ids)
    assert D.stage_candidates(data) == len(want)
    with pytest.raises(ValueError, match="between 1 and"):
        D.stage_lookalike_rows(data, len(want) + 1)


def test_lookalike_view_names_the_stage_when_it_has_not_run(clean, tmp_path):
    P0 = clean[0]
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    for f in (artifacts.UNIFIED_PARQUET, artifacts.AFFINITY_TABLE, artifacts.SEGMENTS):
        (P.processed / f).write_bytes((P0.processed / f).read_bytes())
    c = create_app(P.data, P.reports).test_client()
    for r in (c.get("/api/lookalike?size=10"), c.post("/api/export", json={"kind": "lookalike", "size": 60}),
              c.get("/api/audience?ref=lookalike:10")):
        assert r.status_code == 503, r.get_json()
        assert artifacts.REGISTRY["lookalike_scores"].producer in r.get_json()["error"]


#: Estimators a lookalike, segmentation or calibration fit would construct: the Explorer builds none.
ESTIMATORS = [("sklearn.ensemble", "HistGradientBoostingClassifier"), ("sklearn.ensemble", "RandomForestClassifier"),
              ("sklearn.linear_model", "LogisticRegression"), ("sklearn.mixture", "GaussianMixture"),
              ("sklearn.cluster", "KMeans"), ("sklearn.isotonic", "IsotonicRegression"),
              ("sklearn.neighbors", "NearestNeighbors")]


def test_explorer_fits_no_model_of_its_own(clean, monkeypatch):
    """Every view and export of a run answers with every estimator's fit (and the lookalike module's fits)
    made to raise: the Explorer reads the stages' results, it fits nothing."""
    import importlib

    from helpers import lookalike

    P, panel, _ = clean
    calls: list[str] = []

    def refuse(name):
        def _raise(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"the Explorer constructed or fitted {name}")
        return _raise

    for module, cls in ESTIMATORS:  # on the classes themselves: every reference to them refuses
        klass = getattr(importlib.import_module(module), cls)
        for method in ("fit", "fit_predict", "fit_transform", "partial_fit"):
            if hasattr(klass, method):
                monkeypatch.setattr(klass, method, refuse(f"{cls}.{method}"))
    for fn in ("run_lookalike", "run_prospective", "build_features", "reason_codes"):
        monkeypatch.setattr(lookalike, fn, refuse(fn))
    for cls in (lookalike.PropensityLookalike, lookalike.CosineLookalike):
        monkeypatch.setattr(cls, "fit", refuse(f"{cls.__name__}.fit"))
    c = create_app(P.data, P.reports, min_export_size=50, n_threads=1).test_client()
    for url in ("/", "/api/overview", "/api/table", "/api/segments", "/api/segments/2", "/api/similarity",
                "/api/affinity", "/api/affinity?view=traveler_type", "/api/lookalike?size=150",
                "/api/audience?ref=lookalike:150", "/api/compare?a=lookalike:150&b=segment:2"):
        r = c.get(url)
        assert r.status_code == 200, (url, r.status_code, r.get_data(as_text=True)[:300])
    for body in ({"kind": "segment", "segment": 2}, {"kind": "lookalike", "size": 150}):
        r = c.post("/api/export", json=body)
        assert r.status_code == 201, (body, r.get_json())
    assert calls == []
    # the guard itself works: the estimators (and the lookalike stage's fit) really refuse
    from sklearn.ensemble import HistGradientBoostingClassifier

    with pytest.raises(AssertionError, match="constructed or fitted"):
        HistGradientBoostingClassifier().fit(np.zeros((4, 1)), [0, 1, 0, 1])
    with pytest.raises(AssertionError, match="constructed or fitted"):
        lookalike.run_lookalike(None, None)
    assert calls == ["HistGradientBoostingClassifier.fit", "run_lookalike"]


def test_persona_and_heatmap_cells_are_the_statistics_core_estimates(clean):
    """A persona card's behaviour index and a heatmap cell equal helpers.stats.core's index and interval of
    the same segment x variable cell, computed here from the panel (so one cell has one number)."""
    from helpers.stats import core

    _, _, data = clean
    p = data.panel
    w = p["weight"].to_numpy(float)
    seg = p["segment"].to_numpy()
    checked = 0
    for col in ("time_on_podcasts_min", "monthly_conversions"):
        est = core.index_estimates(pd.to_numeric(p[col]).to_numpy(float), seg, w).set_index("segment")
        h = D.affinity_heatmap(data, "channels", "intensity")
        i = h["attributes"].index(col)
        for k in data.segment_ids:
            row = next(r for r in D.persona_card(data, k)["media"] if r["channel"] == col)
            e = est.loc[k]
            assert row["index"] == pytest.approx(e["index"], rel=1e-9)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((e["ci_low"], e["ci_high"]), rel=1e-9)
            assert row["mean_segment"] == pytest.approx(e["segment_value"], rel=1e-12)
            assert h["z"][i][h["segments"].index(k)] == pytest.approx(e["index"], rel=1e-9)
            checked += 1
    # a share cell: children at home, among customers whose value is known
    known = p["presence_of_children"].notna().to_numpy()
    y = np.where(known, p["presence_of_children"].astype("boolean").fillna(False).to_numpy(float), np.nan)
    est = core.index_estimates(y, seg, w, count_cells=True).set_index("segment")
    h = D.affinity_heatmap(data, "presence_of_children")
    j = h["attributes"].index("yes")
    flags = core.BaseSizeRule().flag(est["n_unweighted"], est["n_effective"], est["rse"])
    for k, flag in zip(est.index, flags):
        z = h["z"][j][h["segments"].index(k)]
        assert (z is None) == (flag == "suppressed"), (k, z, flag)  # the core's base-size rule decides
        if z is not None:
            assert z == pytest.approx(est.loc[k, "index"], rel=1e-9)
            checked += 1
    assert checked >= 2 * len(data.segment_ids) + 2


# --- routes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,url,body,status,fragment", [
    ("get", "/api/segments/99", None, 404, "unknown segment 99"),
    ("get", "/api/segments/abc", None, 400, "integer"),
    ("get", "/api/segments/1?x=1", None, 400, "unknown parameter"),
    ("get", "/api/affinity?view=nope", None, 400, "unknown view"),
    ("get", "/api/affinity?view=" + "a" * 200, None, 400, "longer than"),
    ("get", "/api/lookalike", None, 400, "missing parameter 'size'"),
    ("get", "/api/lookalike?size=-5", None, 400, "size"),
    ("get", "/api/lookalike?size=99999999", None, 400, "between 1 and"),
    ("get", "/api/lookalike?segment=7&size=10", None, 400, "unknown parameter"),
    ("get", "/api/audience?ref=lookalike:3:500", None, 400, "must look like"),
    ("post", "/api/export", "not json", 400, "JSON object"),
    ("post", "/api/export", {"kind": "everyone", "segment": 1}, 400, "kind must be"),
    ("post", "/api/export", {"kind": "segment", "segment": 1, "path": "/etc"}, 400, "unknown parameter"),
    ("post", "/api/export", {"kind": "segment", "segment": [1]}, 400, "string or an integer"),
    ("post", "/api/export", {"kind": "segment", "segment": 1, "size": 5}, 400, "lookalike exports only"),
    ("post", "/api/export", {"kind": "lookalike", "segment": 1}, 400, "needs 'size'"),
    ("post", "/api/export", {"kind": "lookalike", "segment": 1, "size": 100}, 400, "no 'segment'"),
    ("get", "/api/exports/0123456789abcdef/csv", None, 404, "no such export"),
    ("get", "/api/exports/..%2F..%2Fetc/csv", None, 404, "Not Found"),
    ("get", "/api/exports/ABC/csv", None, 400, "malformed export id"),
    ("get", "/api/nothing", None, 404, "Not Found"),
    ("post", "/api/segments", None, 405, "Method Not Allowed"),
])
def test_bad_input_gets_json_4xx(client, method, url, body, status, fragment):
    if isinstance(body, str):
        r = client.post(url, data=body, content_type="text/plain")
    else:
        r = getattr(client, method)(url, json=body) if body is not None else getattr(client, method)(url)
    assert r.status_code == status, r.get_data(as_text=True)
    err = r.get_json()["error"]
    assert fragment in err and "Traceback" not in err


def test_pages_load_no_network_scripts(client):
    html = client.get("/").get_data(as_text=True)
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith("/") for s in srcs), srcs
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and js.mimetype == "application/javascript"
    assert b"plotly.js v" in js.data[:200] and len(js.data) > 1_000_000
    app_js = client.get("/static/explorer.js").get_data(as_text=True)
    assert "http://" not in app_js and "https://" not in app_js
    assert client.get("/api/segments").get_json()["segments"]


def test_export_segment_through_the_cli_function(client, clean):
    P, panel, data = clean
    r = client.post("/api/export", json={"kind": "segment", "segment": 1})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    members = panel.data.loc[panel.truth["true_segment"] == 1, "user_id"]
    csv = client.get(body["downloads"]["csv"])
    assert csv.status_code == 200 and "attachment" in csv.headers["Content-Disposition"]
    got = pd.read_csv(io.BytesIO(csv.data))
    assert list(got.columns[:1]) == [export.HASHED_ID]
    assert set(got[export.HASHED_ID]) == keyed(P, members), "exactly the segment's members, keyed hash"
    assert not set(got[export.HASHED_ID]) & sha(members), "not the reversible unsalted SHA-256"
    assert not (P.exports / "explorer" / body["export_id"] / "export_key").exists()
    # identical to what the CLI's audience builder hands the export function
    aud, definition = export.segment_audience(pd.read_parquet(P.processed / artifacts.SEGMENTS), 1,
                                              pd.read_parquet(P.processed / artifacts.CHURN_RISK))
    assert list(got.columns[1:]) == [c for c in export.ALLOWED_COLUMNS if c in aud and c != "user_id"]
    manifest = json.loads(client.get(body["downloads"]["manifest"]).data)
    assert manifest == body["manifest"]
    assert manifest["size"] == len(members) and manifest["min_size"] == 50 and manifest["definition"] == definition
    assert manifest["id_hashing"] == export.HASH_METHOD
    key, _ = export.export_key(export.key_path(P.data), create=False)
    assert key.decode() not in json.dumps(manifest), "the manifest never carries the key"
    assert manifest["panel_version"] == export.panel_version(artifacts.load_unified(P))
    files = list((P.exports / "explorer" / body["export_id"]).iterdir())
    assert {f.suffix for f in files} == {".csv", ".parquet", ".json"}
    persona = panel.params["segment_names"][1].lower()
    assert all(persona.split()[0].lower() not in f.name.lower() for f in files), "no persona name in file names"
    assert {f.stem.split(".")[0] for f in files} == {"segment_1"}
    assert client.get(f"/api/exports/{body['export_id']}/secrets").status_code == 404


def test_export_lookalike_excludes_seed_and_carries_reasons(client, clean):
    P, panel, data = clean
    r = client.post("/api/export", json={"kind": "lookalike", "size": "120"})
    assert r.status_code == 201, r.get_json()
    got = pd.read_csv(io.BytesIO(client.get(r.get_json()["downloads"]["csv"]).data))
    assert len(got) == 120 and {"score", "reason_codes"} <= set(got.columns)
    scores = data.lookalike_scores.set_index("user_id")
    churned = set(panel.data.loc[panel.data["churned_in_last_90_days"].astype(bool), "user_id"].astype(str))
    best = scores[scores["rank"].notna() & ~scores.index.isin(churned)].sort_values("rank").head(120)
    assert set(got[export.HASHED_ID]) == keyed(P, best.index), "the stage's 120 best active candidates"
    assert sorted(got["reason_codes"]) == sorted(best["reason_codes"]), "with the stage's reason codes"
    seed_ids = scores.index[scores["in_seed"]]
    assert len(seed_ids) > 100 and not set(got[export.HASHED_ID]) & keyed(P, seed_ids), \
        "no seed member in the lookalike list"
    assert set(got[export.HASHED_ID]) <= keyed(P, panel.data["user_id"]), "panel users only, keyed hash"
    view = client.get("/api/lookalike?size=120").get_json()
    assert view["size"] == 120 and view["lift"] > 1 and view["seed_name"] == panel.params["segment_names"][2]


def test_export_guard_refuses_small_audiences(clean):
    P = clean[0]
    c = create_app(P.data, P.reports, min_export_size=10_000).test_client()
    files = lambda: {p for p in P.exports.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    r = c.post("/api/export", json={"kind": "segment", "segment": 0})
    assert r.status_code == 422
    assert "minimum is 10000" in r.get_json()["error"]
    assert files() == before, "a refused export writes no file"


def test_cli_defaults_bind_loopback():
    a = parse_args([])
    assert (a.host, a.port) == ("127.0.0.1", 8050)
    a = parse_args(["--port", "0", "--data", "d", "--reports", "r"])
    assert (a.port, a.data, a.reports) == (0, "d", "r")
    with pytest.raises(SystemExit):
        parse_args(["--port", "70000"])


def test_jsonable_and_mislabel():
    out = D.jsonable({"a": np.float64("nan"), "b": np.int64(3), "c": [np.inf, pd.NA, np.bool_(True)]})
    assert out == {"a": None, "b": 3, "c": [None, None, True]}
    json.dumps(out, allow_nan=False)
    seg = np.repeat(np.arange(4), 500)
    moved = mislabel(seg, 0.25, 4, seed=1)
    share = (moved != seg).mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(seg))
    assert ((moved >= 0) & (moved < 4)).all()


# --- HTTP hardening (issue 13 item 4) -------------------------------------------------------------
def test_host_header_allow_list_refuses_dns_rebinding(client, clean):
    assert client.get("/api/segments").status_code == 200            # test client: Host localhost
    for host in ("127.0.0.1:8050", "[::1]:8050", "LOCALHOST"):
        assert client.get("/api/segments", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "attacker.com:8050", "127.0.0.1.evil.example", ""):
        r = client.get("/api/segments", headers={"Host": host})
        assert r.status_code == 400, host
        assert "DNS rebinding" in r.get_json()["error"]
    P = clean[0]
    c = create_app(P.data, P.reports, allowed_hosts=["explorer.lan"]).test_client()
    assert c.get("/api/status", headers={"Host": "explorer.lan:8050"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "other.lan"}).status_code == 400
    with pytest.raises(ValueError, match="wildcard"):
        create_app(P.data, P.reports, allowed_hosts=["0.0.0.0"])


def test_security_headers_on_every_response(client):
    for r in (client.get("/"), client.get("/api/segments"), client.get("/api/nothing"),
              client.get("/static/explorer.js"), client.post("/api/export", data="x")):
        h = r.headers
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"] and "default-src 'self'" in \
            h["Content-Security-Policy"], r.request.path
        assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
        assert h["Server"] == "audience-explorer", h["Server"]


def test_real_server_reveals_no_version(clean):
    import threading
    import urllib.request

    from helpers.explorer.app import make_server

    P = clean[0]
    server = make_server(create_app(P.data, P.reports), "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/api/status") as r:
            assert r.headers["Server"] == "audience-explorer"
            assert "Werkzeug" not in str(r.headers) and "Python" not in str(r.headers)
    finally:
        server.shutdown()
        t.join(10)


def test_deeply_nested_json_is_400_not_500(client):
    for body in ("[" * 5000 + "]" * 5000, '{"kind": ' + "[" * 5000 + "]" * 5000 + "}",
                 '{"a":' * 3000 + "1" + "}" * 3000):
        r = client.post("/api/export", data=body, content_type="application/json")
        assert r.status_code == 400, r.status_code
        assert "nested" in r.get_json()["error"]
    # brackets inside strings do not count
    r = client.post("/api/export", json={"kind": "[[[[[[[[[[[[[[", "segment": 1})
    assert r.status_code == 400 and "kind must be" in r.get_json()["error"]
    r = client.post("/api/export", data="x" * (70 * 1024), content_type="application/json")
    assert r.status_code == 413


# --- first screen, relationships, comparison, any audience (issue 19) -----------------------------
def test_first_screen_who_how_many_worth_what(client, clean):
    _, panel, data = clean
    t = client.get("/api/table").get_json()
    rows = {r["segment"]: r for r in t["segments"]}
    n = len(panel.data)
    for k, r in rows.items():
        members = (panel.truth["true_segment"] == k).to_numpy()
        assert r["n_users"] == int(members.sum())
        s = r["share"]
        assert s["low"] < s["value"] < s["high"] and s["value"] == pytest.approx(members.mean())
        true = panel.params["panel_segment_shares"][k]
        assert s["low"] - 0.02 < true < s["high"] + 0.02, (k, s, true)  # planted share inside (slack: sampling)
        v = r["value"]
        assert v["low"] < v["value"] < v["high"]
        assert v["value"] == pytest.approx(panel.data.loc[members, "avg_monthly_spend"].mean())
        assert "spend" in v["source"] and v["label"] == "Monthly spend"
        assert r["churn"]["low"] <= r["churn"]["value"] <= r["churn"]["high"]
        assert 1 <= len(r["traits"]) <= 3 and all(x["index"] > 100 for x in r["traits"])
        assert all("_" not in x["label"] for x in r["traits"]), [x["label"] for x in r["traits"]]
    # planted: the podcast segment's top trait is podcast listening, with the planted-size index
    top = rows[2]["traits"][0]
    assert "odcast" in top["label"] and top["index"] > 300
    h = t["header"]
    assert h["date"] == panel.params["observation_date"][:10] and h["n_users"] == n
    assert "synthetic" in h["source"] and "/" not in h["source"]
    assert t["tiers"] == {"low": 80.0, "high": 120.0}


def test_action_lines_follow_the_tiers(clean):
    data = clean[2]
    for k in data.segment_ids:
        for a in D.action_lines(data, k):
            if a["action"] == "concentrate":
                assert a["index"] > D.TIER_HIGH
                assert ("concentrate spend here" if a["index_type"] != "share" else "target it") in a["text"]
            else:
                assert a["index"] < D.TIER_LOW and "de-prioritise" in a["text"]
            assert a["significant"] or a["descriptive"]
    lines = [a["text"] for a in D.action_lines(data, 2)]
    assert any(t.startswith("Podcast") and "concentrate" in t for t in lines), lines


def test_descriptive_cells_are_shown_without_a_test(clean):
    data = clean[2]
    a = data.affinity.copy()
    pod = (a["attribute"] == "time_on_podcasts_min") & (a["index_type"] == "intensity")
    a.loc[pod, "descriptive"] = True
    a.loc[pod, "significant"] = False
    a.loc[pod, ["p_value", "q_value"]] = np.nan
    d2 = dataclasses.replace(data, affinity=a)
    line = next(x for x in D.action_lines(d2, 2) if "odcast" in x["label"])
    assert line["descriptive"] and "no test" in line["basis"]


def test_similarity_recovers_planted_neighbours(client, clean):
    _, panel, data = clean
    s = client.get("/api/similarity").get_json()
    sim = np.array(s["similarity"])
    assert np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 100) and sim.min() == pytest.approx(0)
    closest = {c["segment"]: c["closest"] for c in s["closest"]}
    b = panel.params["behaviour"]  # planted medians: minutes per channel, purchases, ticket
    buys = np.array(b["median_purchases_per_active_month"])
    z = np.column_stack([np.log1p(np.array(b["median_minutes_active_month"])), np.log1p(buys),
                         np.log1p(buys * np.array(b["median_ticket_usd"]))])
    z = (z - z.mean(0)) / z.std(0)
    d = np.linalg.norm(z[:, None] - z[None], axis=2)
    np.fill_diagonal(d, np.inf)
    agree = np.mean([closest[k] == int(np.argmin(d[k])) for k in closest])
    assert agree >= 4 / 6, (closest, d.argmin(1), agree)  # closest neighbour = the planted one for most
    assert "PC" not in json.dumps(s) and "_" not in "".join(s["features"])


def test_compare_two_segments_reports_significant_planted_differences(client, clean):
    _, panel, _ = clean
    c = client.get("/api/compare?a=segment:0&b=segment:5").get_json()
    assert c["a"]["n_users"] == int((panel.truth["true_segment"] == 0).sum())
    assert c["n_significant"] <= c["n_tested"] and c["differences"]
    labels = [d["label"] for d in c["differences"]]
    # planted: power shoppers (5) buy ~8 times a month, social-first young adults (0) about once
    conv = next(d for d in c["differences"] if d["label"].startswith("Conversions"))
    assert conv["b"] > 3 * conv["a"], conv
    assert all("_" not in lab for lab in labels), labels
    same = client.get("/api/compare?a=segment:1&b=segment:1").get_json()
    assert same["differences"] == [] and same["overlap"] == same["a"]["n_users"]
    for bad, status in (("a=segment:1", 400), ("a=segment:99&b=segment:1", 404), ("a=../x&b=segment:1", 400),
                        ("a=list:0123456789abcdef&b=segment:1", 404)):
        assert client.get("/api/compare?" + bad).status_code == status, bad


def test_any_audience_upload_profile_compare_export(client, clean):
    P, panel, _ = clean
    members = panel.data.loc[panel.truth["true_segment"] == 2, "user_id"].astype(str).tolist()
    r = client.post("/api/lists", json={"name": "Podcast CRM list", "ids": members[:200] + ["not-a-customer"]})
    assert r.status_code == 201, r.get_json()
    up = r.get_json()
    assert (up["n_matched"], up["n_unmatched"]) == (200, 1)
    prof = client.get("/api/audience?ref=" + up["ref"]).get_json()
    assert prof["n_users"] == 200 and prof["segment_mix"][0]["name"] == panel.params["segment_names"][2]
    assert any("odcast" in a["text"] and a["action"] == "concentrate" for a in prof["actions"])
    cmp_ = client.get(f"/api/compare?a={up['ref']}&b=segment:2").get_json()
    assert cmp_["overlap"] == 200
    r = client.post("/api/export", json={"kind": "list", "list": up["ref"].split(":")[1]})
    assert r.status_code == 201, r.get_json()
    got = pd.read_csv(io.BytesIO(client.get(r.get_json()["downloads"]["csv"]).data))
    churned = set(panel.data.loc[panel.data["churned_in_last_90_days"].astype(bool), "user_id"].astype(str))
    assert set(got[export.HASHED_ID]) == keyed(P, [m for m in members[:200] if m not in churned])
    assert "segment_name" not in got or not got["segment_name"].astype(str).str.contains("Podcast").any()
    for body in ({"ids": []}, {"ids": [[1]]}, {"name": "x" * 100, "ids": ["1"]}, {"ids": ["zzz"]},
                 {"ids": ["1"], "path": "/etc/passwd"}):
        assert client.post("/api/lists", json=body).status_code in (400, 422), body
    assert client.post("/api/export", json={"kind": "list", "list": "0123456789abcdef"}).status_code == 404


# --- partial / stale runs, plan, questions, customer value ---------------------------------------
def test_stale_or_inconsistent_run_is_503_never_500(clean, tmp_path):
    P0 = clean[0]
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    for f in (artifacts.UNIFIED_PARQUET, artifacts.AFFINITY_TABLE):
        (P.processed / f).write_bytes((P0.processed / f).read_bytes())
    seg = pd.read_parquet(P0.processed / artifacts.SEGMENTS)
    seg.assign(user_id="X" + seg["user_id"].astype(str)).to_parquet(P.processed / artifacts.SEGMENTS)
    c = create_app(P.data, P.reports).test_client()
    r = c.get("/")
    assert r.status_code == 503 and "different runs" in r.get_data(as_text=True)
    assert c.get("/api/table").status_code == 400  # the API says what is wrong, no traceback, no 500
    # a stale affinity table (07 ran before 04 re-ran) names the stage to re-run
    real = D.artifacts.stale_reason
    try:
        D.artifacts.stale_reason = lambda paths_, name, state=None: (
            "affinity_table.csv is stale: 04_segment_gmm ran after it" if name == "affinity_table" else None)
        (P.processed / artifacts.SEGMENTS).write_bytes((P0.processed / artifacts.SEGMENTS).read_bytes())
        c = create_app(P.data, P.reports).test_client()
        r = c.get("/")
        assert r.status_code == 503 and "07_affinity" in r.get_data(as_text=True)
        r = c.get("/api/table")
        assert r.status_code == 503 and "stale" in r.get_json()["error"]
    finally:
        D.artifacts.stale_reason = real


def test_plan_view_says_the_stage_has_not_run(client):  # noqa: D103
    r = client.get("/api/plan?audience=segment:1&budget=5000")
    assert r.status_code == 503 and "07c_media_planning" in r.get_json()["error"]
    assert client.get("/api/plan?audience=segment:1&budget=-5").status_code == 400
    assert client.get("/api/plan?audience=segment:1&budget=abc").status_code == 400


def test_customer_value_replaces_spend_when_the_value_stage_ran(clean, tmp_path):
    P0, panel, _ = clean
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    for f in (artifacts.UNIFIED_PARQUET, artifacts.AFFINITY_TABLE, artifacts.SEGMENTS):
        (P.processed / f).write_bytes((P0.processed / f).read_bytes())
    ids = panel.data["user_id"].astype(str)
    clv = np.where(panel.truth["true_segment"].to_numpy() == 3, 900.0, 100.0)  # a planted value gap
    artifacts.save(P, "customer_value", pd.DataFrame({"user_id": ids, "expected_purchases": 1.0, "p_alive": 0.9,
                                                      "clv": clv, "clv_low": clv * 0.8, "clv_high": clv * 1.2}))
    rows = {r["segment"]: r for r in create_app(P.data, P.reports).test_client().get("/api/table")
            .get_json()["segments"]}
    assert rows[3]["value"]["label"] == "Customer lifetime value"
    assert rows[3]["value"]["value"] == pytest.approx(900) and rows[1]["value"]["value"] == pytest.approx(100)
    assert "06b" in rows[3]["value"]["source"]


def test_plan_view_allocates_the_budget(tmp_path):
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    write_demo_artifacts(P, n_users=2000, seed=3, with_churn=False, with_media=True)
    c = create_app(P.data, P.reports, n_threads=1).test_client()   # the demo saved 07c's response model
    with threadpool_limits(1):
        r = c.get("/api/plan?audience=segment:2&budget=3000")
    assert r.status_code == 200, r.get_json()
    plan = r.get_json()
    t = pd.DataFrame(plan["table"]).set_index("channel")
    assert t.loc["Total", "spend_usd"] == pytest.approx(3000, rel=1e-3)
    assert t.drop("Total")["spend_usd"].sum() == pytest.approx(3000, rel=1e-3)
    ch = t.drop("Total")
    assert ((ch["reach_low"] <= ch["reach"] + 1e-9) & (ch["reach"] <= ch["reach_high"] + 1e-9)).all()
    assert ((ch["conversions_low"] <= ch["conversions"]) & (ch["conversions"] <= ch["conversions_high"])).all()
    assert plan["n_audience"] == int((pd.read_parquet(P.processed / artifacts.SEGMENTS)["segment"] == 2).sum())
    assert "Podcast-heavy commuters" in plan["summary"]


def test_lookalike_stage_audience_from_its_scores_artifact(clean, tmp_path):
    """The lookalike stage's own audience is read from its scores artifact through audience.select (no fit)."""
    P0, panel, _ = clean
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    for f in (artifacts.UNIFIED_PARQUET, artifacts.AFFINITY_TABLE, artifacts.SEGMENTS):
        (P.processed / f).write_bytes((P0.processed / f).read_bytes())
    c = create_app(P.data, P.reports, min_export_size=50).test_client()
    r = c.get("/api/audience?ref=lookalike:100")
    assert r.status_code == 503 and "08_lookalike_activation" in r.get_json()["error"]
    ids = panel.data["user_id"].astype(str)
    seed = (panel.truth["true_segment"] == 2).to_numpy()
    score = np.where(seed, np.nan, np.arange(len(ids))[::-1] / len(ids))   # seed members are not candidates
    rank = pd.Series(score).rank(ascending=False, method="first")
    scores = pd.DataFrame({"user_id": ids, "score": score, "rank": rank, "audience": "Podcast seed"})
    artifacts.save(P, "lookalike_scores", scores)
    c = create_app(P.data, P.reports, min_export_size=50).test_client()
    prof = c.get("/api/audience?ref=lookalike:100").get_json()
    churned = panel.data["churned_in_last_90_days"].astype(bool).to_numpy()
    want = scores[~churned & ~seed].sort_values("rank").head(100)["user_id"]
    assert prof["n_users"] == 100 and "Podcast seed" in prof["name"]
    r = c.post("/api/export", json={"kind": "lookalike", "size": 100})
    assert r.status_code == 201, r.get_json()
    got = pd.read_csv(io.BytesIO(c.get(r.get_json()["downloads"]["csv"]).data))
    assert set(got[export.HASHED_ID]) == keyed(P, want)


def test_questions_view_audience_from_text(tmp_path):
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    panel = write_demo_artifacts(P, n_users=2500, seed=4, with_churn=False, with_posts=True)
    c = create_app(P.data, P.reports, min_export_size=20).test_client()
    o = c.get("/api/questions/options").get_json()
    topics = {t["value"] for t in o["topics"]}
    assert "luxury_watch" in topics and "age_group" in o["filters"]
    q = c.get("/api/questions?topic=luxury_watch&age_group=25-34").get_json()
    posts = pd.read_parquet(P.processed / "post_topics.parquet")
    talkers = set(posts.loc[posts["topic"] == "luxury_watch", "user_id"].astype(str))
    young = set(panel.data.loc[panel.data["age_group"] == "25-34", "user_id"].astype(str))
    assert q["n_users"] == len(talkers & young)
    s = q["share"]
    assert s["low"] < s["value"] < s["high"] and s["value"] == pytest.approx(len(talkers & young) / len(panel.data))
    assert any(a["label"].startswith("Age group: 25-34") for a in q["actions"])  # the filter shows as a trait
    r = c.post("/api/export", json={"kind": "list", "list": q["ref"].split(":")[1]})
    assert r.status_code == 201, r.get_json()
    assert c.get(f"/api/compare?a={q['ref']}&b=segment:0").status_code == 200
    for bad in ("", "?topic=nope", "?topic=luxury_watch&shoe_size=9", "?keyword=" + "x" * 100):
        assert c.get("/api/questions" + bad).status_code == 400, bad


def test_topic_questions_read_topics_only_and_join_what_the_topics_lack(tmp_path):
    """A topic question reads post_topics without the texts; when post_topics lacks the platform (and the
    texts), the platform still comes from the posts table, joined in, as before."""
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    write_demo_artifacts(P, n_users=1500, seed=5, with_churn=False, with_posts=True)
    full = create_app(P.data, P.reports, min_export_size=20).test_client()
    want_opts = full.get("/api/questions/options").get_json()
    want = full.get("/api/questions?topic=luxury_watch").get_json()["n_users"]
    assert want_opts["platforms"], "the demo posts have platforms"
    f = P.processed / "post_topics.parquet"
    pd.read_parquet(f).drop(columns=[c for c in ("platform", "text") if c in pd.read_parquet(f)]).to_parquet(f)
    c = create_app(P.data, P.reports, min_export_size=20).test_client()
    assert c.get("/api/questions/options").get_json()["platforms"] == want_opts["platforms"]
    assert c.get("/api/questions?topic=luxury_watch").get_json()["n_users"] == want


def test_regions_follow_the_core_base_size_rule(clean):
    """The Questions view's region table: each region's weighted share of the audience with its interval; the
    statistics core's base-size rule leaves out regions under 31 customers and flags those under 61."""
    data = clean[2]
    sizes = {"AA": 20, "BB": 45, "CC": 200}
    state = np.repeat(list(sizes), list(sizes.values()))
    state = np.r_[state, np.full(len(data.panel) - len(state), "DD")]
    d2 = dataclasses.replace(data, panel=data.panel.assign(state=np.random.default_rng(0).permutation(state)))
    rows = np.flatnonzero(d2.panel["segment"].to_numpy() == 2)
    got = {r["region"]: r for r in D.regions(d2, rows)}
    assert set(got) == {"BB", "CC", "DD"}, "the 20-customer region is suppressed"
    assert (got["BB"]["base_flag"], got["CC"]["base_flag"]) == ("caution", "ok")
    for reg, r in got.items():
        in_reg = (d2.panel["state"] == reg).to_numpy()
        assert r["n_customers"] == int(in_reg.sum())
        assert r["value"] == pytest.approx((d2.panel["segment"].to_numpy()[in_reg] == 2).mean())
        assert r["low"] < r["value"] < r["high"]


def test_questions_view_says_the_text_stage_has_not_run(client):
    r = client.get("/api/questions/options")
    assert r.status_code == 503 and "text-signals stage has not run" in r.get_json()["error"]
    assert client.get("/api/questions?keyword=watch").status_code == 503


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    """(paths, panel) of a 2,000-user run with the synthetic campaign and 07c's saved response model."""
    P = paths.resolve(tmp_path_factory.mktemp("explorer_media") / "data",
                      tmp_path_factory.mktemp("explorer_media_reports"))
    with threadpool_limits(1):
        panel = write_demo_artifacts(P, n_users=2000, seed=3, with_media=True, lookalike_segment=2)
    assert artifacts.exists(P, "media_response_model"), "the demo run must leave 07c's response model"
    return P, panel


def test_plan_view_plans_from_the_saved_curves_without_fitting(media_run, monkeypatch):
    from helpers.media import budget as BU
    from helpers.media import data as MD
    from helpers.media import plan as media_plan

    P, panel = media_run

    def refuse(*a, **k):
        raise AssertionError("the Plan view fitted a response model")

    monkeypatch.setattr(BU, "fit_response", refuse)
    monkeypatch.setattr(BU, "_fit_hierarchical", refuse)
    c = create_app(P.data, P.reports, min_export_size=50, n_threads=1).test_client()
    r = c.get("/api/plan?audience=segment:1&budget=2000")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    t = pd.DataFrame(body["table"]).set_index("channel")
    assert t.drop("Total")["spend_usd"].sum() == pytest.approx(2000, rel=1e-4)
    assert body["support_multiple"] >= BU.SUPPORT_MULTIPLE and "Support guard" in body["summary"]
    # spend within the guard's ceiling on every channel
    ch = t.drop("Total")
    assert (ch["spend_usd"] <= ch["supported_max_usd"] * (1 + 1e-6) + 1e-6).all()
    # a segment's plan is that segment's saved curves: the same plan as plan_for_audience on them
    data = D.load_explorer_data(P)
    names = data.segment_names()
    groups = pd.Series(data.panel["segment"].map(names).astype(str).to_numpy(), index=data.panel["user_id"].astype(str))
    ids = data.panel.loc[data.panel["segment"] == 1, "user_id"].astype(str)
    curves = artifacts.load(P, "media_response_model")
    m = BU.model_from_table(MD.load_media(P), ids, curves, groups)
    saved = curves[curves["group"] == names[1]].set_index("channel").reindex(m.channels)
    np.testing.assert_allclose(m.response_params()["beta"], saved["beta"], rtol=1e-9)
    ref = media_plan.plan_for_audience(MD.load_media(P), ids, budget_total=2000, model=m, n_draws=20)
    np.testing.assert_allclose(ch.loc[m.channels, "spend_usd"], ref.table.set_index("channel").loc[m.channels, "spend_usd"],
                               rtol=1e-6, atol=1e-6)
    # an audience across segments composes the curves by its segment mix (beta = mix-weighted mean)
    both = data.panel.loc[data.panel["segment"].isin([1, 2]), "user_id"].astype(str)
    mix = BU.model_from_table(MD.load_media(P), both, curves, groups)
    w = groups.reindex(mix.users).value_counts(normalize=True)
    want = sum(w[names[k]] * curves[curves["group"] == names[k]].set_index("channel")["beta"] for k in (1, 2))
    np.testing.assert_allclose(mix.response_params()["beta"], want.reindex(mix.channels), rtol=1e-9)
    assert c.get("/api/plan?audience=lookalike:200&budget=1500").status_code == 200


def test_plan_view_without_the_saved_model_names_07c(media_run, tmp_path):
    P0, _ = media_run
    import shutil

    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    shutil.copytree(P0.data, P.data, dirs_exist_ok=True)
    artifacts.artifact("media_response_model").path(P).unlink()
    r = create_app(P.data, P.reports, n_threads=1).test_client().get("/api/plan?audience=segment:1&budget=2000")
    assert r.status_code == 503 and "07c_media_planning" in r.get_json()["error"]


def test_profiles_from_cell_sums_equal_the_core_profile_of_the_indicator_matrix(clean):
    """The comparison and audience profiles come from per-cell sums (helpers.explorer.codes); they equal
    helpers.stats.core.profile of the full rows x indicators matrix (comparison_indicators) to float rounding,
    for an audience against everyone and for two overlapping audiences stacked (a row in both counts twice)."""
    from helpers.explorer import codes
    from helpers.stats import core

    data = clean[2]
    X, labels = D.comparison_indicators(data)
    w = data.panel["weight"].to_numpy(float)
    seg = data.panel["segment"].to_numpy()
    mask = seg == 2
    a = np.flatnonzero(seg == 1)
    b = np.r_[np.flatnonzero(seg == 0), a[:40]]  # overlapping audiences
    in_a = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    cases = [(None, mask, X, w), (np.r_[a, b], in_a, X.iloc[np.r_[a, b]].reset_index(drop=True), w[np.r_[a, b]])]
    for rows, flag, Xs, ws in cases:
        want = core.profile(Xs, flag, ws)
        got, got_labels = codes.indicator_profile(data, rows, flag)
        assert got_labels == labels
        assert list(got.columns) == list(want.columns) and len(got) == len(want) > 20
        num = [c for c in want.columns if pd.api.types.is_float_dtype(want[c])]
        pd.testing.assert_frame_equal(got.drop(columns=num), want.drop(columns=num))
        pd.testing.assert_frame_equal(got[num], want[num], rtol=1e-9, atol=1e-12)


def test_demographics_and_regions_from_codes_follow_a_replaced_panel(clean):
    """Codes are cached with the panel they come from: a copy of the data with another panel (as
    dataclasses.replace makes) gets its own distribution, not the cached one."""
    data = clean[2]
    before = D.weighted_distribution(data, "age_group", 2)
    d2 = dataclasses.replace(data, panel=data.panel.assign(age_group="65+"))
    got = D.weighted_distribution(d2, "age_group", 2)
    assert {r["category"]: r["pct_segment"] for r in got["rows"]}["65+"] == pytest.approx(100.0)
    assert D.weighted_distribution(data, "age_group", 2) == before



def test_per_user_positions_match_a_pandas_index_lookup_in_any_order():
    """Each panel user's row in a per-user artifact (Arrow match): the pandas get_indexer answer for a shuffled
    subset with missing users and for integer ids, the identity for the panel's own order, and a clear error for
    an artifact listing a user twice."""
    import types

    from helpers.explorer.persona import _positions

    ids = pd.Series([f"u{i}" for i in range(500)], dtype="string[pyarrow]")
    panel = pd.DataFrame({"user_id": ids})
    sub = pd.DataFrame({"user_id": ids.sample(frac=0.7, random_state=1).reset_index(drop=True)})
    got = _positions(types.SimpleNamespace(panel=panel, _cache={}), "churn_risk", sub)
    np.testing.assert_array_equal(got, pd.Index(sub["user_id"].astype(str)).get_indexer(panel["user_id"]))
    assert (got == -1).sum() == 150
    np.testing.assert_array_equal(_positions(types.SimpleNamespace(panel=panel, _cache={}), "churn_risk", panel),
                                  np.arange(500))
    num = pd.DataFrame({"user_id": np.arange(500)[::-1]})
    panel_num = pd.DataFrame({"user_id": pd.Series([str(i) for i in range(500)], dtype="string[pyarrow]")})
    np.testing.assert_array_equal(_positions(types.SimpleNamespace(panel=panel_num, _cache={}), "churn_risk", num),
                                  np.arange(500)[::-1])
    with pytest.raises(ValueError, match="more than once"):
        _positions(types.SimpleNamespace(panel=panel, _cache={}), "churn_risk", pd.concat([sub, sub.head(1)]))
