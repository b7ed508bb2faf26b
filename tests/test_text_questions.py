"""The four questions on planted posts (true topics): estimates with intervals against the planted truth."""
import numpy as np
import pandas as pd
import pytest

from helpers.sources import posts as P
from helpers.text import audiences, questions as Q


def _users(rng, n, states, p_states):
    return pd.DataFrame({"user_id": [f"U{i:05d}" for i in range(n)],
                         "age_group": rng.choice(["18-24", "25-34", "45-54", "65+"], n),
                         "gender": rng.choice(["female", "male"], n),
                         "income_bracket": rng.choice(["<25k", "25k-50k", "50k-75k", "100k-150k", "150k+"], n),
                         "education_level": rng.choice(["high_school", "bachelors", "graduate"], n),
                         "state": rng.choice(states, n, p=p_states),
                         "true_segment": rng.integers(0, 6, n), "segment_name": rng.choice(["a", "b"], n),
                         "weight": rng.uniform(0.5, 2.0, n)})


def _context(users, seed):
    raw, truth, rates, _ = P.simulate_posts(users, seed=seed)
    posts = audiences._check(raw, "test").assign(topic=truth["topic"].to_numpy())
    return Q.TextContext(posts, users, rates)


@pytest.fixture(scope="module")
def ctx():
    rng = np.random.default_rng(11)
    n = 5000
    users = _users(rng, n, ["CA", "TX", "NY", "VT", "WY", "OH"], [.3, .25, .2, .05, .05, .15])
    # cells a data broker reports, associated with income (drawn after it: the joint is what matters)
    inc = users["income_bracket"].map({"<25k": 0, "25k-50k": 1, "50k-75k": 2, "100k-150k": 3, "150k+": 4}).to_numpy()
    users["household_size"] = np.clip(1 + rng.poisson(0.3 + 0.6 * inc), 1, 6)
    users["marital_status"] = np.where(rng.random(n) < 0.15 + 0.15 * inc, "married", "single")
    return _context(users, 4)


def test_topic_shares_cover_truth(ctx):
    r = Q.answer("topic_shares", ctx, filters={"gender": "female"}, follows="novalane")
    assert r.metrics["audience_users"] > 100
    assert r.table["estimate"].sum() == pytest.approx(1.0)
    assert r.metrics["truth_in_ci_share"] >= 0.75 and r.metrics["mean_abs_err"] < 0.02
    assert "follows" in r.summary()


def test_income_from_aggregate_cells_bayes_beats_simple_count(ctx):
    r = Q.answer("income", ctx, keyword="aurelio", truth_topic="luxury_watch", seed=1)
    m = r.metrics
    assert m["observed"] == "education_level x marital_status x household_size" and m["strata"] == "age_group x gender"
    assert m["abs_err_direct"] < 0.03                                  # individual incomes: the benchmark
    assert m["abs_err_base"] > 2 * m["abs_err_direct"]                 # the base is a poor answer
    # talking depends on income itself: the simple count stays near the base, Bayesian profiling does not
    assert m["abs_err_bayes"] < 0.7 * m["abs_err_simple"] and m["abs_err_simple"] < m["abs_err_base"]
    assert set(r.table["method"]) == {"simple count (aggregate)", "Bayesian profiling (aggregate)",
                                      "direct count (individual values)"}
    for meth, g in r.table.groupby("method"):
        assert g["estimate"].sum() == pytest.approx(1.0, abs=1e-9)


def test_coengagement_lift_covers_truth_and_finds_planted_states(ctx):
    r = Q.answer("coengagement", ctx, topic_a="sustainable_fashion", topic_b="premium_tech", small_n=400)
    t = r.table.set_index("label")
    assert r.metrics["truth_in_ci_share"] >= 4 / 6
    assert t.loc["CA", "truth"] > t.loc["TX", "truth"]          # planted: strong loading in CA
    assert t.loc["CA", "estimate"] > t.loc["TX", "estimate"]
    assert t["small_area"].any() and np.isfinite(t["eblup_log_lift"]).all()


def test_engagement_by_education_and_region(ctx):
    r = Q.answer("education", ctx, topic="health", order=["high_school", "bachelors", "graduate"])
    t = r.table.set_index("education_level")
    assert t.loc["graduate", "truth"] > t.loc["high_school", "truth"]
    assert t.loc["graduate", "estimate"] > t.loc["high_school", "estimate"]
    assert r.metrics["truth_in_ci_share"] >= 2 / 3
    ctx.users["census_region"] = Q.census_region(ctx.users["state"])
    rr = Q.answer("education", ctx, topic="health", region="census_region")
    assert set(rr.table["census_region"]) == {"West", "South", "Northeast", "Midwest"}


def test_profile_and_lookalike_seed(ctx, tmp_path):
    r = Q.audience_profile(ctx, ["income_bracket", "gender"], keyword="aurelio")
    row = r.table.set_index("label").loc["Income bracket: 150k+"]
    assert row["estimate"] > 150 and row["ci_low"] > 100 and row["q_value"] < 0.05
    ta = audiences.talking_about(ctx.posts, keyword="aurelio", platform=["x", "instagram"], start="2026-05-01")
    assert 0 < ta.size < r.metrics["audience_users"]
    aud = ta.to_audience(None, frame=ctx.users)
    assert aud.size == ta.size and aud.definition["kind"] == "ids"
    from helpers.audience import read_ids
    assert read_ids(ta.write_ids(tmp_path / "seed.csv")) == list(ta.ids)
    mix = audiences.segment_mix(ctx.users, ta.mask(ctx.users["user_id"]), ctx.w)
    assert set(mix["value_label"]) == {"a", "b"}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    r.plot(ax)
    plt.close(fig)


def test_unknown_question_named(ctx):
    with pytest.raises(ValueError, match="unknown question"):
        Q.answer("nope", ctx)


def test_stage_without_posts_or_truth_skips(tmp_path):
    from helpers import paths
    from helpers.text import stage
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    posts, where = stage.ensure_posts(P)
    assert posts is None and "no posts table" in where
    assert stage.read_text_truth(P) == (None, None, None)


def test_stage_generates_posts_from_truth_and_reads_them_back(tmp_path):
    from helpers import paths
    from helpers.text import stage
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    P.truth.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": ["U1", "U2", "U3"], "true_segment": [0, 1, 2], "state": ["CA", "TX", "NY"],
                  "gender": ["female", "male", "female"]}).to_parquet(P.truth / "users_truth.parquet")
    posts, where = stage.ensure_posts(P, seed=1)
    assert "generated here" in where and (P.raw / "posts.parquet").exists()
    again, where2 = stage.ensure_posts(P, seed=1)
    assert "read from the run" in where2 and len(again) == len(posts)
    params, post_truth, rates = stage.read_text_truth(P)
    assert params["n_users"] == 3 and len(rates) == 3


@pytest.fixture(scope="module")
def ctx_states():
    """10,000 users over the 51 states in their adult-population shares: small states have few users."""
    from helpers.sources.places import FALLBACK_STATE_SHARES, STATE_CODES
    users = _users(np.random.default_rng(1), 10000, STATE_CODES, FALLBACK_STATE_SHARES / FALLBACK_STATE_SHARES.sum())
    return _context(users, 1)


def _shrinkage(monkeypatch, mode):
    """Replace the Fay-Herriot EBLUP by the direct estimate ('none') or by the inverted shrinkage ('inverted')."""
    orig = Q.fay_herriot

    def fit(*args, **kw):
        f = orig(*args, **kw)
        t = f.table
        g = np.ones(len(t)) if mode == "none" else 1 - t["gamma"]
        t["eblup"] = g * t["direct"] + (1 - g) * t["synthetic"]
        return f
    monkeypatch.setattr(Q, "fay_herriot", fit)


def test_fay_herriot_gain_on_small_states_against_truth(ctx_states, monkeypatch):
    kw = dict(topic_a="sustainable_fashion", topic_b="premium_tech")
    r = Q.answer("coengagement", ctx_states, **kw)
    m = r.metrics
    # the rule: effective n < 60 or the smallest third of states (17 of 51)
    assert m["regions"] == 51 and m["small_regions"] >= 17
    small = r.table[r.table["small_area"]]
    assert small["n_eff"].max() <= r.table.loc[~r.table["small_area"], "n_eff"].min()
    assert m["fh_small_regions_with_direct"] >= 10
    assert m["fh_mse_gain_small_vs_truth"] > 0.4
    # the metric measures the shrinkage: none gives 0, shrinking the wrong way gives (almost) nothing
    _shrinkage(monkeypatch, "none")
    assert Q.answer("coengagement", ctx_states, **kw).metrics["fh_mse_gain_small_vs_truth"] == pytest.approx(0, abs=1e-9)
    _shrinkage(monkeypatch, "inverted")
    assert Q.answer("coengagement", ctx_states, **kw).metrics["fh_mse_gain_small_vs_truth"] < 0.2


def test_subsample_design_gain_and_its_failure_without_shrinkage(ctx_states, monkeypatch):
    kw = dict(topic_a="sustainable_fashion", topic_b="premium_tech", fraction=0.3, reps=8, seed=3)
    d = Q.coengagement_subsample_design(ctx_states, **kw)
    assert d.metrics["reps"] == 8 and d.metrics["subsample_users"] == 3000
    assert d.metrics["mse_gain_small"] > 0.4 and d.metrics["mse_gain_small_rep_p10"] > 0
    assert Q.coengagement_subsample_design(ctx_states, **kw).metrics == d.metrics        # seeded
    _shrinkage(monkeypatch, "inverted")
    assert Q.coengagement_subsample_design(ctx_states, **kw).metrics["mse_gain_small"] < 0.2
    with pytest.raises(ValueError, match="fraction"):
        Q.coengagement_subsample_design(ctx_states, "sustainable_fashion", "premium_tech", fraction=0)


def test_small_area_rule():
    n_eff = np.array([500.0, 40.0, 300.0, 90.0, 1000.0, 80.0])
    assert Q.small_areas(n_eff, small_n=60, small_share=0).tolist() == [False, True, False, False, False, False]
    assert Q.small_areas(n_eff, small_n=None, small_share=1 / 3).tolist() == [False, True, False, False, False, True]
    assert Q.small_areas(n_eff, small_n=85, small_share=1 / 3).sum() == 2


@pytest.mark.parametrize("keyword", ["aurelio", "Aurelio", "watch dial", "c++", "über", "k"])
def test_keyword_mask_is_pythons_whole_word_search(keyword):
    import re
    texts = pd.Series(["The AURELIO watch", "aurelios are not it", "xaurelio", "aurelio_x", "(aurelio)", None,
                       "über-aurelio", "Kelvin \u212a k", "a watch dial, a WATCH  dial", "c++ and c+++", "c++x", "naïveaurelio",
                       "", "aurelio"] * 3, dtype=object)
    want = np.array([t is not None and bool(re.search(r"\b" + re.escape(keyword.lower()) + r"\b", t.lower()))
                     for t in texts])
    for arg in (texts, texts.astype(pd.StringDtype("pyarrow")).iloc[1:], texts.iloc[5:]):
        assert audiences.keyword_mask(arg, keyword).tolist() == want[len(texts) - len(arg):].tolist()
    assert want.any() and not want.all()


def _truth_world(tmp_path, n_users: int):
    """A run folder holding only a planted-truth user table of ``n_users`` users (what ensure_posts draws from)."""
    from helpers import paths
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    P.truth.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": [f"U{i}" for i in range(n_users)], "true_segment": np.arange(n_users) % 5,
                  "state": "CA", "gender": "female"}).to_parquet(P.truth / "users_truth.parquet")
    return P


def test_post_truth_is_read_lazily_and_gives_the_frames_answers(tmp_path, monkeypatch):
    from helpers.text import stage
    P = _truth_world(tmp_path, 40)
    posts, _ = stage.ensure_posts(P, seed=3)
    _, lazy, _ = stage.read_text_truth(P)
    assert isinstance(lazy, stage.PostTruth)
    full = pd.read_parquet(lazy.path)
    ids = pd.concat([posts["post_id"].sample(15, random_state=1), pd.Series(["no such post"])], ignore_index=True)
    for n_max in (100_000, 0):                 # rows filtered on read, and the whole column read
        monkeypatch.setattr(stage, "TRUTH_FILTER_MAX", n_max)
        pd.testing.assert_series_equal(stage.truth_of(lazy, ids, "sentiment"), stage.truth_of(full, ids, "sentiment"))
    posts = posts.assign(topic=pd.Series(full["topic"].to_numpy()[:len(posts)]).sample(frac=1, random_state=2).to_numpy())
    assert stage.post_topic_accuracy(posts, lazy) == stage.post_topic_accuracy(posts, full)


def test_user_sample_reads_only_the_sampled_users_posts_rates_and_truth(tmp_path):
    from helpers.text import stage
    P = _truth_world(tmp_path, 60)
    posts, _ = stage.ensure_posts(P, seed=3)
    assert stage.sample_positions(60, 60, 1) is None and stage.sample_positions(60, None, 1) is None
    pick = stage.sample_positions(60, 20, 1)
    assert len(pick) == 20 and (np.diff(pick) > 0).all()
    ids = pd.Series([f"U{i}" for i in pick])
    mine, where = stage.ensure_posts(P, seed=3, user_ids=ids)
    want = posts[posts["user_id"].isin(set(ids))].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), want)
    assert "20 sampled users" in where
    _, truth, rates = stage.read_text_truth(P, user_ids=ids)
    all_rates = pd.read_parquet(P.truth / "posts_user_rates.parquet")
    assert rates["user_id"].tolist() == all_rates.loc[all_rates["user_id"].isin(set(ids)), "user_id"].tolist()
    full = pd.read_parquet(truth.path)
    got = truth.read(["post_id", "topic"])
    assert set(got["post_id"]) == set(full.loc[full["user_id"].isin(set(ids)), "post_id"])
    assert stage.post_topic_accuracy(want.assign(topic=stage.truth_of(full, want["post_id"], "topic")), truth) == 1.0


def test_write_post_topics_in_batches_equals_the_whole_table_saved(tmp_path):
    from helpers import artifacts
    from helpers.text import stage
    P = _truth_world(tmp_path, 80)
    posts, _ = stage.ensure_posts(P, seed=5)
    tm = stage.topic_model(posts, [3, 4], 0, 200, 5, 1, 1, stage.read_text_params(P))
    whole = audiences.assign_topics(posts, tm.lda, tm.vectorizer, tm.labels)
    f, n = stage.write_post_topics(P, tm, batch_size=37)
    assert n == len(posts)
    got = pd.read_parquet(f)
    want = whole[[c for c in stage.POST_TOPIC_COLUMNS if c in whole]].reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        assert got[c].astype(object).tolist() == want[c].astype(object).tolist(), c
    assert artifacts.exists(P, "post_topics")


def test_segment_mix_without_segments_is_an_empty_profile_table():
    t = audiences.segment_mix(pd.DataFrame({"user_id": ["a", "b"]}), np.array([True, False]), np.ones(2))
    assert t.empty and {"value_label", "audience_mean", "base_mean", "index", "ci_low", "ci_high", "base_flag"} <= set(t)
