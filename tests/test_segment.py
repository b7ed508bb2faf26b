"""Tests of helpers.segment against the generator's planted segments (6 latent segments by default)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from helpers.features import FeatureBuilder
from helpers.hier import HierarchicalSegmenter
from helpers.segment import (GMMSegmenter, StabilitySummary, ambiguous_share, bootstrap_stability, confusion_table,
                             entropy, icl, match_labels, segments_frame, truth_scores, weighted_sizes)


@pytest.fixture(scope="module")
def small(small_panel):
    X = FeatureBuilder().fit_transform(small_panel.data)
    return X, small_panel.truth["true_segment"].to_numpy()


@pytest.fixture(scope="module")
def small_fit(small):
    X, _ = small
    return GMMSegmenter(k_range=range(4, 9), covariance_types=("diag", "tied"), random_state=5).fit(X)


@pytest.fixture(scope="module")
def medium_scores(medium_panel):
    """GMM (default ICL sweep), k-means baseline and Bayes-oracle ARI with the planted segments (20k users)."""
    from helpers import generate as G
    from helpers.segment import kmeans_labels, oracle_posterior

    builder = FeatureBuilder().fit(medium_panel.data)
    X = builder.transform(medium_panel.data)
    truth = medium_panel.truth["true_segment"].to_numpy()
    seg = GMMSegmenter(fit_sample=6000, random_state=0).fit(X)
    sim = G.generate_panel(20_000, seed=123, config=G.config_from_params(medium_panel.params))
    post = oracle_posterior(builder.transform(sim.data), sim.truth["true_segment"].to_numpy(), X, max_iter=100)
    return {"seg": seg, "gmm": truth_scores(seg.labels_, truth), "X": X, "truth": truth,
            "kmeans": adjusted_rand_score(truth, kmeans_labels(X, 6, n_init=3)),
            "oracle": adjusted_rand_score(truth, post.argmax(axis=1))}


def test_planted_truth_recovery_against_the_oracle_and_the_baseline(medium_scores):
    """On the misspecified world the GMM is judged between the Bayes oracle (ceiling) and k-means (baseline).

    Former thresholds (old, Gaussian world): ARI >= 0.8, matched accuracy >= 0.85, k within 6 +- 1. Now: the
    oracle leaves a visible gap above both methods, the GMM is not far below k-means, and nothing beats the
    oracle by more than its estimation error.
    """
    s = medium_scores
    gmm, km, oracle = s["gmm"]["ari"], s["kmeans"], s["oracle"]
    assert oracle >= 0.5, oracle                       # the segments are recoverable in principle
    assert oracle - max(gmm, km) >= 0.1, (oracle, gmm, km)  # ... and the defaults leave room for a better method
    assert gmm <= oracle + 0.03 and km <= oracle + 0.03
    assert gmm > 0.1  # far from chance


@pytest.mark.xfail(reason="known gap, reported: on the misspecified world the ICL-selected GMM falls below "
                          "plain k-means (20k users, seed 11: GMM 0.24 at k = 10, k-means 0.44, oracle 0.65)", strict=False)
def test_gmm_is_not_worse_than_the_kmeans_baseline(medium_scores):
    assert medium_scores["gmm"]["ari"] >= medium_scores["kmeans"] - 0.05


def test_sweep_table_and_choice(medium_scores):
    seg = medium_scores["seg"]
    assert len(seg.sweep_) == 9 * 4 and seg.sweep_["chosen"].sum() == 1
    chosen = seg.sweep_[seg.sweep_["chosen"]].iloc[0]
    assert chosen["icl"] == seg.sweep_["icl"].min()


def test_refit_labels_reproduce_the_sweep_model(small, small_fit):
    from helpers.segment import refit_labels

    X, _ = small
    rows = small_fit.sample_index_
    labels = refit_labels(X[rows], small_fit.n_components_, small_fit.covariance_type_, n_init=small_fit.n_init,
                          random_state=5, X_score=X)
    assert adjusted_rand_score(labels, small_fit.labels_) == pytest.approx(1.0)


def test_same_seed_same_segments(small, small_fit):
    X, _ = small
    again = GMMSegmenter(k_range=range(4, 9), covariance_types=("diag", "tied"), random_state=5).fit(X)
    np.testing.assert_array_equal(again.labels_, small_fit.labels_)
    pd.testing.assert_frame_equal(again.sweep_, small_fit.sweep_)


def test_segments_numbered_by_size_and_probabilities_consistent(small, small_fit):
    X, _ = small
    assert np.all(np.diff(small_fit.weights_) <= 0)
    P = small_fit.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(P.argmax(axis=1), small_fit.labels_)
    np.testing.assert_allclose(small_fit.predict_proba(X, chunk=997), P)


def test_fit_sample_is_seeded_and_bounded(small):
    X, _ = small
    a = GMMSegmenter(k_range=[6], covariance_types=("diag",), fit_sample=1000, random_state=1).fit(X)
    b = GMMSegmenter(k_range=[6], covariance_types=("diag",), fit_sample=1000, random_state=2).fit(X)
    assert len(a.sample_index_) == 1000 and len(np.unique(a.sample_index_)) == 1000
    assert not np.array_equal(a.sample_index_, b.sample_index_)
    assert len(a.labels_) == len(X)


def test_icl_penalises_overlap(small, small_fit):
    X, _ = small
    t = small_fit.sweep_
    assert (t["icl"] >= t["bic"]).all()
    m = small_fit.model_
    assert icl(m, X) - m.bic(X) == pytest.approx(2 * entropy(m.predict_proba(X)).sum())


def test_entropy_and_ambiguity_on_known_probabilities():
    P = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.3, 0.0], [0.9, 0.05, 0.05]])
    np.testing.assert_allclose(entropy(P), [0.0, np.log(3), -(0.7 * np.log(0.7) + 0.3 * np.log(0.3)),
                                            -(0.9 * np.log(0.9) + 0.1 * np.log(0.05))])
    assert ambiguous_share(P, 0.8) == pytest.approx(0.5)
    assert ambiguous_share(P, 0.8, weights=np.array([1, 3, 0, 0])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="sum"):
        entropy(np.array([[0.5, 0.2]]))


def test_truth_ambiguity_is_small_but_real(small, small_fit):
    X, _ = small
    amb = ambiguous_share(small_fit.predict_proba(X))
    assert 0.0 < amb < 0.3  # overlapping segments: some users are genuinely ambiguous


def test_hungarian_matching_recovers_a_permutation():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 500)
    perm = np.array([3, 0, 4, 1, 2])
    found = perm[true]
    flip = rng.random(500) < 0.1
    found[flip] = rng.integers(0, 5, flip.sum())
    mapping = match_labels(found, true)
    assert mapping == {int(perm[t]): t for t in range(5)}
    tab = confusion_table(found, true)
    assert np.trace(tab.to_numpy()) == (np.array([mapping[f] for f in found]) == true).sum()
    assert truth_scores(found, true)["ari"] == pytest.approx(adjusted_rand_score(true, found))


def test_extra_found_segment_is_unmatched():
    true = np.array([0, 0, 1, 1, 1, 1])
    found = np.array([0, 0, 1, 1, 2, 2])
    mapping = match_labels(found, true)
    assert mapping[0] == 0 and sorted(mapping.values()) == [-1, 0, 1]
    assert list(confusion_table(found, true).columns)[-1] == [f for f, t in mapping.items() if t == -1][0]


def _blobs(n=1500, k=4, seed=0):
    """Well separated Gaussian blobs; the centres are fixed, ``seed`` draws the users."""
    centres = np.random.default_rng(0).normal(0, 10, (k, 3))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, 1, (n, 3)), y


def test_bootstrap_stability_is_high_for_separated_segments_and_seeded():
    X, y = _blobs()
    a = bootstrap_stability(X, y, k=4, covariance_type="diag", n_boot=6, random_state=3)
    b = bootstrap_stability(X, y, k=4, covariance_type="diag", n_boot=6, random_state=3)
    np.testing.assert_array_equal(a, b)
    s = StabilitySummary.of(a)
    assert s.median > 0.9 and s.q1 <= s.median <= s.q3 and s.n_boot == 6
    assert s.min > 0.9 and s.share_below_0_9 == 0.0
    # a deliberately wrong reference (random labels) is not reproduced by the refits
    noise = np.random.default_rng(99).integers(0, 4, len(X))
    assert np.median(bootstrap_stability(X, noise, k=4, covariance_type="diag", n_boot=3)) < 0.05


def test_bootstrap_refits_use_several_em_starts(small, small_fit):
    """Issue 15 item 6: refits with one EM start mistook local optima for instability; the floor is enforced."""
    from helpers.segment import BOOTSTRAP_N_INIT

    X, _ = small
    ref = small_fit.labels_[:1500]
    one = bootstrap_stability(X[:1500], ref, k=6, covariance_type="full", n_boot=3, n_init=1, random_state=4)
    many = bootstrap_stability(X[:1500], ref, k=6, covariance_type="full", n_boot=3, n_init=BOOTSTRAP_N_INIT,
                               random_state=4)
    np.testing.assert_array_equal(one, many)
    assert BOOTSTRAP_N_INIT >= 5


def test_stability_summary_reports_minimum_and_share_below_0_9():
    s = StabilitySummary.of(np.array([0.99, 0.98, 0.75, 0.97, 0.747, 0.985, 0.99, 0.98, 0.99, 0.97]))
    assert s.min == pytest.approx(0.747)
    assert s.share_below_0_9 == pytest.approx(0.2)
    assert s.iqr < 0.03  # the quartiles alone hide the two failed refits


def test_weighted_sizes():
    labels = np.array([0, 0, 1, 2, 2, 2])
    w = np.array([1.0, 1.0, 2.0, 0.5, 0.5, 1.0])
    s = weighted_sizes(labels, w, k=4)
    assert s["n"].tolist() == [2, 1, 3, 0]
    np.testing.assert_allclose(s["weighted_share"], [2 / 6, 2 / 6, 2 / 6, 0])
    np.testing.assert_allclose(s["share"], [2 / 6, 1 / 6, 3 / 6, 0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        weighted_sizes(labels, -w)


def test_segments_frame_matches_the_artifact_contract(small, small_fit):
    X, _ = small
    P = small_fit.predict_proba(X)
    ids = pd.Series([f"U{i:08d}" for i in range(len(X))])
    names = [f"name {j}" for j in range(P.shape[1])]
    out = segments_frame(ids, P, names)
    k = P.shape[1]
    assert list(out.columns) == ["user_id", "segment", "segment_name", *[f"prob_{j}" for j in range(k)], "entropy"]
    assert out["segment"].between(0, k - 1).all()
    assert (out["segment_name"] == np.array(names)[out["segment"]]).all()
    with pytest.raises(ValueError, match="one entry per segment"):
        segments_frame(ids, P, names[:-1])


def test_bad_inputs_raise():
    X = np.random.default_rng(0).normal(size=(50, 2))
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*rows \\[7\\]"):
        GMMSegmenter(k_range=[2]).fit(X)
    with pytest.raises(ValueError, match="criterion"):
        GMMSegmenter(criterion="aic").fit(np.zeros((10, 2)) + np.arange(10)[:, None])
    with pytest.raises(ValueError, match="2-D"):
        GMMSegmenter().fit(np.arange(10.0))
    with pytest.raises(ValueError, match="covariance types"):
        GMMSegmenter(k_range=[2], covariance_types=("banded",)).fit(np.random.default_rng(1).normal(size=(40, 2)))


def test_oracle_posterior_learns_the_planted_classes_and_checks_inputs():
    from helpers.segment import oracle_posterior

    X_sim, y_sim = _blobs(n=3000, seed=1)
    X, y = _blobs(n=800, seed=2)
    post = oracle_posterior(X_sim, y_sim, X, max_iter=50)
    assert post.shape == (800, 4) and np.allclose(post.sum(axis=1), 1.0)
    assert adjusted_rand_score(y, post.argmax(axis=1)) > 0.95
    with pytest.raises(ValueError, match="one label per row"):
        oracle_posterior(X_sim, y_sim[:-1], X)


@pytest.mark.parametrize("make", [lambda: GMMSegmenter(n_init=3, random_state=4),
                                  lambda: HierarchicalSegmenter(n_clusters=5, random_state=4),
                                  lambda: FeatureBuilder(scale=False, random_state=4)],
                         ids=["GMMSegmenter", "HierarchicalSegmenter", "FeatureBuilder"])
def test_estimators_keep_the_sklearn_parameter_contract(make):
    """The segmenters and the feature builder declare their parameters once (dataclass fields): sklearn's
    clone, get_params/set_params and repr must still see exactly those parameters, and fitting nothing."""
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import (check_get_params_invariance, check_no_attributes_set_in_init,
                                                check_set_params)

    est = make()
    name = type(est).__name__
    for check in (check_get_params_invariance, check_no_attributes_set_in_init, check_set_params):
        check(name, est)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert twin != est  # estimators compare by identity, not by their parameters
    assert repr(est).startswith(name + "(") and "random_state=4" in repr(est)
    assert not [k for k in vars(est) if k.endswith("_")]  # nothing fitted at construction


def test_fits_side_by_side_equal_the_fits_one_after_the_other(small, monkeypatch):
    """The sweep candidates and bootstrap refits run on two threads give the same table, models and ARIs as
    one thread (each fit has its own seed and one BLAS thread)."""
    import helpers.segment as G

    X, _ = small
    out = {}
    for workers in (1, 2):
        monkeypatch.setattr(G, "FIT_WORKERS", workers)
        table, models = G.sweep(X[:1500], k_range=range(2, 6), covariance_types=("full", "diag"), n_init=1,
                                random_state=4)
        boot = bootstrap_stability(X[:600], models[(3, "full")].predict(X[:600]), k=3, n_boot=4, random_state=4)
        out[workers] = (table, {key: m.means_ for key, m in models.items()}, boot)
    pd.testing.assert_frame_equal(out[1][0], out[2][0], check_exact=True)
    assert list(out[1][0][["covariance_type", "k"]].itertuples(index=False)) == \
        [(c, k) for c in ("full", "diag") for k in range(2, 6)]
    assert all(np.array_equal(out[1][1][key], out[2][1][key]) for key in out[1][1])
    np.testing.assert_array_equal(out[1][2], out[2][2])


def test_oracle_ari_scores_everyone_up_to_max_rows_and_a_seeded_sample_above():
    # notebook 04's ceiling: the oracle labels every user up to max_rows (the 50k runs: unchanged), a seeded
    # sample above, whose ARI is the ARI of those users exactly
    from helpers.segment import oracle_ari, oracle_posterior

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    y_sim, y = rng.integers(0, 3, 3000), rng.integers(0, 3, 1500)
    X_sim, X = centres[y_sim] + rng.normal(size=(3000, 2)), centres[y] + rng.normal(size=(1500, 2))
    full, n_full = oracle_ari(X_sim, y_sim, X, y, max_rows=None, random_state=1)
    post = oracle_posterior(X_sim, y_sim, X, random_state=1)
    assert n_full == 1500 and full == adjusted_rand_score(y, post.argmax(axis=1))
    assert oracle_ari(X_sim, y_sim, X, y, max_rows=1500, random_state=1) == (full, 1500)
    part, n_part = oracle_ari(X_sim, y_sim, X, y, max_rows=600, random_state=1)
    assert n_part == 600 and (part, n_part) == oracle_ari(X_sim, y_sim, X, y, max_rows=600, random_state=1)
    assert abs(part - full) < 0.1
    with pytest.raises(ValueError, match="y_true"):
        oracle_ari(X_sim, y_sim, X, y[:10])


def test_write_segments_is_the_segments_frame_parquet_block_by_block(small, small_fit, tmp_path):
    import pyarrow.parquet as pq

    from helpers.segment import write_segments

    X, _ = small
    proba = small_fit.predict_proba(X)
    ids = pd.Series([f"U{i:08d}" for i in range(len(X))], dtype="string[pyarrow]")
    names = [f"name {j}" for j in range(proba.shape[1])]
    segments_frame(ids, proba, names).to_parquet(tmp_path / "whole.parquet", index=False)
    assert write_segments(tmp_path / "blocks.parquet", ids, proba, names, chunk=97) == len(X)
    a, b = pq.read_table(tmp_path / "whole.parquet"), pq.read_table(tmp_path / "blocks.parquet")
    assert a.schema.equals(b.schema, check_metadata=True) and a.equals(b)
    assert not (tmp_path / "blocks.parquet.tmp").exists()
    with pytest.raises(ValueError, match="same length"):
        write_segments(tmp_path / "bad.parquet", ids[:-1], proba)


def test_compare_scored_matches_rows_by_identifier_in_any_order(small, small_fit, tmp_path, monkeypatch):
    from helpers import segment

    X, _ = small
    proba = small_fit.predict_proba(X)
    ids = pd.Series([f"U{i:08d}" for i in range(len(X))], dtype="string[pyarrow]")
    out = tmp_path / "scored"
    out.mkdir()
    frame = segments_frame(ids, proba)
    monkeypatch.setattr(segment, "ROW_CHUNK", 64)  # several batches
    frame.to_parquet(out / "part-00000.parquet", index=False)
    assert segment.compare_scored(out, ids, proba) == (True, 0.0, len(X))
    shuffled = frame.sample(frac=1.0, random_state=1)  # the engine's own order: matched by id
    shuffled.to_parquet(out / "part-00000.parquet", index=False)
    assert segment.compare_scored(out, ids, proba) == (True, 0.0, len(X))
    changed = frame.copy()
    changed.loc[3, "prob_0"] += 0.25
    changed.loc[5, "segment"] = (changed.loc[5, "segment"] + 1) % proba.shape[1]
    changed.to_parquet(out / "part-00000.parquet", index=False)
    same, diff, n = segment.compare_scored(out, ids, proba)
    assert not same and diff == pytest.approx(0.25) and n == len(X)
    frame.assign(user_id="nobody").head(3).to_parquet(out / "part-00000.parquet", index=False)
    with pytest.raises(ValueError, match="not in the panel"):
        segment.compare_scored(out, ids, proba)


def test_refit_labels_in_blocks_equal_one_predict(small, small_fit, monkeypatch):
    from helpers import segment

    X, _ = small
    whole = segment.refit_labels(X, 4, "diag", random_state=3)
    monkeypatch.setattr(segment, "PREDICT_CHUNK", 101)
    assert np.array_equal(segment.refit_labels(X, 4, "diag", random_state=3), whole)
    assert np.array_equal(segment.refit_labels(X[:500], 4, "diag", random_state=3, X_score=X),
                          segment._fit_gmm(X[:500], 4, "diag", 2, 1e-4, 200, 3).predict(X))


def test_entropy_in_blocks_and_truth_scores_mapping(monkeypatch):
    from helpers import segment

    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=1000)
    P[0] = [1, 0, 0, 0]
    whole = entropy(P)
    monkeypatch.setattr(segment, "ROW_CHUNK", 7)
    assert np.array_equal(entropy(P), whole)
    found, true = rng.integers(0, 5, 300), rng.integers(0, 3, 300)
    mapping = match_labels(found, true)
    expected = np.mean(np.array([mapping[int(f)] for f in found]) == true)
    assert truth_scores(found, true)["matched_accuracy"] == expected


def test_entropy_boxes_draw_the_boxplot_statistics_of_each_segment():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cbook

    from helpers.segment import plot_entropy_boxes

    rng = np.random.default_rng(0)
    labels, ent = rng.integers(0, 3, 2000), rng.exponential(0.2, 2000)
    fig, ax = plt.subplots()
    plot_entropy_boxes(labels, ent, 4, ax)  # segment 3 is empty
    levels = {float(y) for ln in ax.lines for y in np.atleast_1d(ln.get_ydata())}
    for j in range(3):
        st = cbook.boxplot_stats(ent[labels == j])[0]
        assert {float(st["med"]), float(st["whishi"]), float(st["whislo"])} <= levels
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    plt.close(fig)
