"""LDA: Griffiths-Steyvers bars recovered; k choice table; planted-topic recovery on the synthetic posts."""
import numpy as np
from scipy import sparse
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


# --- the batched paths give scikit-learn's answers ------------------------------------------------------------
EDGE_TEXTS = ["Laptop laptop, CHIP! chip-chip", "abc1def laptop2 watch_dial dial", "don't stop; it's a dial.",
              "", None, "   ", "Café naïve über laptop", "ÉCOLE chip Kelvin \u212a dial", "dial", "chip",
              "tab\tseparated\nnew line dial_ dial", "x y z laptop!!!laptop...chip", "ünïcödé only", "LAPTOP"]


def _edge_corpus(rng, n=400):
    words = ["laptop", "chip", "dial", "watch", "puppy", "stadium", "recipe", "oled"]
    body = [" ".join(rng.choice(words, rng.integers(0, 9))) + rng.choice([".", "!", "", "?"]) for _ in range(n)]
    return pd.Series(body + EDGE_TEXTS, dtype=object)


@pytest.mark.parametrize("kind", ["object", "arrow_series", "arrow_array"])
def test_count_matrix_equals_the_vectorizer(kind):
    import pyarrow as pa
    texts = _edge_corpus(np.random.default_rng(0))
    _, vocab, vec = topics.vectorize(texts.fillna(""), min_df=1)
    assert {"laptop", "chip", "dial"} <= set(vocab)
    ref = vec.transform(texts.fillna(""))
    arg = {"object": texts, "arrow_series": texts.astype(pd.StringDtype("pyarrow")),
           "arrow_array": pa.array(texts, type=pa.string())}[kind]
    got = topics.count_matrix(arg, vec)
    assert got.shape == ref.shape and (got != ref).nnz == 0
    # the non-ASCII rows went through the vectorizer: "Café naïve über laptop" still counts its laptop
    assert got[len(texts) - len(EDGE_TEXTS) + 6, vec.vocabulary_["laptop"]] == 1


def test_ascii_runs_are_the_word_runs_of_each_text():
    import pyarrow as pa
    runs, doc = topics.ascii_runs(pa.array(["ab cd", "EF", "", "..gh_1 ij", "kl"], type=pa.large_string()))
    assert runs.to_pylist() == ["ab", "cd", "ef", "gh_1", "ij", "kl"]
    assert doc.tolist() == [0, 0, 1, 3, 3, 4]


def _sparse_corpus(seed, n=300, v=40):
    rng = np.random.default_rng(seed)
    X = rng.poisson(0.15, (n, v))
    X[:5] = 0                                  # documents with no word of the vocabulary
    return sparse.csr_matrix(X)


@pytest.mark.parametrize("corpus", ["bars", "sparse"])
def test_batched_lda_gives_scikit_learns_fit_and_transform(corpus):
    from sklearn.decomposition import LatentDirichletAllocation
    X = topics.bars_corpus(n_docs=300, doc_len=40, seed=3)[0] if corpus == "bars" else _sparse_corpus(4)
    kw = dict(n_components=6, learning_method="batch", max_iter=15, random_state=7)
    ref = LatentDirichletAllocation(**kw).fit(X)
    lda = topics.BatchedLDA(**kw)
    lda.e_step_batch = 37                      # several batches, the last one short
    lda.fit(X)
    np.testing.assert_allclose(lda.components_, ref.components_, rtol=1e-6)
    np.testing.assert_allclose(lda.transform(X), ref.transform(X), atol=1e-6)
    assert lda.score(X) == pytest.approx(ref.score(X), rel=1e-9)
    assert lda.perplexity(X[:50]) == pytest.approx(ref.perplexity(X[:50]), rel=1e-9)
    assert lda.bound_ == pytest.approx(ref.bound_, rel=1e-9)


def test_distinct_rows_codes_equal_rows_only():
    rng = np.random.default_rng(3)
    dense = rng.poisson(0.3, (400, 6))
    dense[200:260] = dense[:60]                # exact duplicates far apart
    dense[300] = dense[1] + 1                  # near misses: same columns, other counts; other columns
    dense[301] = np.roll(dense[2], 1)
    dense[302, 0] = 2 ** 33                    # a count beyond int32 (wide pairs)
    X = sparse.csr_matrix(dense)
    X.indices = X.indices.copy()
    codes, first = topics.distinct_rows(X)
    assert codes.shape == (400,) and first.size == len(np.unique(dense, axis=0))
    same = (dense[:, None, :] == dense[None, :, :]).all(2)
    assert np.array_equal(codes[:, None] == codes[None, :], same)
    assert np.array_equal(dense[first][codes], dense)               # every row is its code's first row
    assert (first == np.array([np.flatnonzero(codes == c)[0] for c in range(first.size)])).all()
    with pytest.raises(TypeError):
        topics.distinct_rows(X.astype(float))


def test_row_keys_in_batches_number_rows_as_distinct_rows():
    """Batched row keys (2-byte pairs, one batch widened by a large count) give distinct_rows' codes, and the
    distinct keys decode to the distinct rows in order of first appearance."""
    rng = np.random.default_rng(4)
    dense = rng.poisson(0.3, (400, 6))
    dense[200:260] = dense[:60]
    dense[301] = np.roll(dense[2], 1)
    dense[150, 3] = 70_000                     # beyond int16: that batch is keyed at 4 bytes
    X = sparse.csr_matrix(dense)
    codes, first = topics.distinct_rows(X)
    parts = [topics.row_keys(X[i:i + 120]) for i in range(0, 400, 120)]
    assert [w for _, w in parts] == [2, 4, 2, 2]
    c, uniq, width = topics.distinct_keys(parts, X.shape[1])
    assert width == 4 and np.array_equal(c, codes)
    assert np.array_equal(topics.keys_to_rows(uniq, X.shape[1], width).toarray(), dense[first])
    assert np.array_equal(topics.keys_to_rows(uniq.slice(5, 30), X.shape[1], width).toarray(), dense[first][5:35])
    with pytest.raises(TypeError):
        topics.row_keys(X.astype(float))


def test_assign_topics_in_threads_equals_the_plain_transform():
    from helpers.text import audiences
    texts = _edge_corpus(np.random.default_rng(1), n=900).fillna("")
    texts = pd.concat([texts, texts.iloc[::3], pd.Series(["chip laptop", "laptop chip", "LAPTOP, chip!"])],
                      ignore_index=True)          # duplicated texts and different texts with the same words
    X, vocab, vec = topics.vectorize(texts, min_df=1)
    lda = topics.fit_lda(X, 4, seed=0, max_iter=10)
    posts = pd.DataFrame({"user_id": [f"U{i}" for i in range(len(texts))], "text": texts})
    labels = np.array(["a", "b", "c", "d"], dtype=object)
    out = audiences.assign_topics(posts, lda, vec, labels, batch_size=100, n_jobs=2)
    theta = lda.transform(vec.transform(texts))
    assert out["topic"].tolist() == labels[theta.argmax(1)].tolist()
    np.testing.assert_allclose(out["topic_prob"], theta.max(1), atol=1e-9)
    assert list(out.columns[:2]) == ["user_id", "text"] and "topic" not in posts
    # E-step sub-batches smaller than the batch give the same topics; the model's own setting is restored
    small = audiences.E_STEP_BATCH
    audiences.E_STEP_BATCH = 7
    try:
        again = audiences.assign_topics(posts, lda, vec, labels, batch_size=100, n_jobs=2)
    finally:
        audiences.E_STEP_BATCH = small
    assert again["topic"].tolist() == out["topic"].tolist()
    np.testing.assert_array_equal(again["topic_prob"].to_numpy(), out["topic_prob"].to_numpy())
    assert "e_step_batch" not in vars(lda) and lda.e_step_batch == topics.BatchedLDA.e_step_batch


def test_count_matrix_on_slices_whose_offsets_do_not_start_at_zero():
    import pyarrow as pa
    texts = _edge_corpus(np.random.default_rng(2))
    _, _, vec = topics.vectorize(texts.fillna(""), min_df=1)
    whole = pa.array(texts, type=pa.string())
    for piece in (whole.slice(37, 200), whole.slice(37, 200).cast(pa.large_string()),
                  pa.chunked_array([whole.slice(3, 50), whole.slice(301)])):
        ref = vec.transform(["" if t is None else t for t in piece.to_pylist()])
        assert (topics.count_matrix(piece, vec) != ref).nnz == 0
