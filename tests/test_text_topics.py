"""LDA: Griffiths-Steyvers bars recovered; k choice table; planted-topic recovery on the synthetic posts."""
import numpy as np
import pandas as pd
import pytest

from helpers.text import topics


def test_bars_recovered():
    X, phi = topics.bars_corpus(n_docs=500, doc_len=100, seed=1)
    lda = topics.fit_lda(X, 10, seed=0, max_iter=60)
    m = topics.matched_cosine(topics.topic_word(lda), phi)
    assert m.mean > 0.95, m.cosine
    assert m.cosine.min() > 0.85
    # each recovered topic's 5 top words are exactly its bar, and most of its mass is on them (chance: 0.2)
    est = topics.topic_word(lda)[m.est]
    for e, r in zip(est, m.ref):
        assert set(np.argsort(e)[::-1][:5]) == set(np.flatnonzero(phi[r]))
    assert ((est * (phi[m.ref] > 0)).sum(1) > 0.75).all()


def test_matching_is_one_to_one_and_permutation_invariant():
    rng = np.random.default_rng(0)
    A = rng.dirichlet(np.ones(12), 5)
    perm = rng.permutation(5)
    m = topics.matched_cosine(A[perm], A)
    assert m.mean == pytest.approx(1.0)
    assert np.array_equal(perm[m.est], m.ref)


def test_choose_k_table_and_umass():
    X, _ = topics.bars_corpus(n_docs=300, doc_len=60, seed=2)
    k, table, fits = topics.choose_k(X, ks=(4, 10), seed=0, max_iter=30, n_boot=1)
    assert set(table.columns) >= {"k", "heldout_perplexity", "umass_coherence", "stability", "score", "chosen"}
    assert k in (4, 10) and table["chosen"].sum() == 1
    assert np.isfinite(table[["heldout_perplexity", "umass_coherence", "stability"]].to_numpy()).all()
    assert (table["umass_coherence"] <= 0).all()


def test_planted_topics_recovered_from_posts(tmp_path):
    from helpers.sources import posts as P
    rng = np.random.default_rng(5)
    users = pd.DataFrame({"user_id": [f"U{i}" for i in range(1500)],
                          "age_group": rng.choice(["18-24", "25-34", "45-54"], 1500),
                          "gender": rng.choice(["female", "male"], 1500),
                          "income_bracket": rng.choice(["<25k", "50k-75k", "150k+"], 1500),
                          "state": rng.choice(["CA", "TX", "NY"], 1500), "true_segment": rng.integers(0, 6, 1500)})
    raw, truth, rates, params = P.simulate_posts(users, seed=3)
    X, vocab, _ = topics.vectorize(raw["text"][:3000])
    lda = topics.fit_lda(X, len(P.TOPICS), seed=0, max_iter=25, n_init=4)
    M, names = topics.planted_matrix(vocab, params["vocab"], params["topic_word"])
    assert topics.matched_cosine(topics.topic_word(lda), M).mean > 0.8
