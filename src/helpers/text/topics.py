"""Topic models of short posts: scikit-learn LDA, choice of k, planted-topic recovery.

* :func:`vectorize` - word counts (CountVectorizer; English stop words and the sentiment words removed
  by default, so topics are about *what* is said, not how it is felt).
* :func:`fit_lda` - ``LatentDirichletAllocation`` (batch variational Bayes, seeded), as :class:`BatchedLDA`:
  the same model with its per-document E-step run on many documents at once (same results, faster).
* :func:`choose_k` - for each k of a small grid: held-out perplexity (fit on a random 80 % of documents,
  ``lda.perplexity`` on the other 20 %), UMass coherence of the top words (Mimno et al. 2011, document
  co-occurrence counts on the whole corpus: mean over topics of ``sum_{i<j} log((D(w_i, w_j) + 1) / D(w_j))``
  over the top-n words; higher is better) and bootstrap stability (topics refitted on bootstrap resamples
  of the documents matched one-to-one to the full-corpus fit by the Hungarian algorithm on cosine
  similarity; mean matched cosine; 1 = the same topics every time). The chosen k maximises the mean of the
  three criteria rescaled to [0, 1] over the grid (perplexity reversed); the table is returned so the
  notebook shows all three.
* :func:`count_matrix` - the fitted vectorizer's counts for many texts at once, tokenised on the bytes of the
  Arrow string array (equal to ``vectorizer.transform``; texts that are not plain ASCII go through the
  vectorizer itself).
* :func:`distinct_rows` - which rows of a count matrix are equal (so a per-document computation runs once per
  distinct row).
* :func:`matched_cosine` - one-to-one matching (Hungarian, ``scipy.optimize.linear_sum_assignment``) of
  estimated to planted topic-word distributions on a common vocabulary; mean matched cosine = the
  planted-topic recovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln, psi
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

#: the token pattern of :func:`vectorize` (two or more ASCII letters between word boundaries)
TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"
#: in lower-cased ASCII text, the runs between these characters are the candidate tokens of TOKEN_PATTERN
_ASCII_NON_WORD = r"[^a-z0-9_]+"

#: sentiment words removed from the topic vocabulary by default (from the generator's lexicon + common ones)
SENTIMENT_STOP = {"love", "great", "amazing", "awesome", "happy", "excited", "best", "beautiful", "perfect",
                  "fantastic", "hate", "terrible", "awful", "disappointed", "worst", "boring", "annoying", "sad",
                  "broken", "horrible", "got", "just", "really", "today", "new", "good", "bad"}


def vectorize(texts: Iterable[str], min_df: int = 3, max_features: int | None = 2000,
              extra_stop: Iterable[str] = SENTIMENT_STOP) -> tuple[sparse.csr_matrix, np.ndarray, CountVectorizer]:
    """Document-word counts, the vocabulary and the fitted vectorizer."""
    stop = sorted(set(ENGLISH_STOP_WORDS) | set(extra_stop))
    vec = CountVectorizer(stop_words=stop, min_df=min_df, max_features=max_features,
                          token_pattern=TOKEN_PATTERN)
    X = vec.fit_transform([str(t) for t in texts])
    return X.tocsr(), vec.get_feature_names_out(), vec


def _arrow_tokenisable(vectorizer) -> bool:
    """Whether :func:`count_matrix` can tokenise for ``vectorizer`` itself (our plain word-count settings)."""
    v = vectorizer
    return (isinstance(v, CountVectorizer) and v.analyzer == "word" and v.lowercase and v.preprocessor is None
            and v.tokenizer is None and v.strip_accents is None and tuple(v.ngram_range) == (1, 1)
            and v.token_pattern == TOKEN_PATTERN and not v.binary and hasattr(v, "vocabulary_"))


def arrow_texts(texts) -> "pa.Array":
    """``texts`` (a pandas Series, a sequence, an Arrow array) as one Arrow string array (no copy when Arrow-backed)."""
    import pyarrow as pa
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    return arr


def text_bytes(arr) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of an Arrow string array and each text's (start, end) offsets into them.

    Read straight from the array's buffers (no copy), so an array that is a slice of a larger one, whose
    offsets do not start at 0, is handled here (some Arrow string kernels mishandle such large_string
    arrays: ``ascii_lower`` returns garbage for them in pyarrow 26, which is why this module lower-cases
    bytes itself). A null text has no bytes.
    """
    import pyarrow as pa
    _, ob, db = arr.buffers()[:3]
    width = 8 if pa.types.is_large_string(arr.type) else 4
    off = np.frombuffer(ob, dtype=np.int64 if width == 8 else np.int32, count=len(arr) + 1,
                        offset=arr.offset * width).astype(np.int64)
    data = np.frombuffer(db, dtype=np.uint8)[off[0]:off[-1]] if db is not None else np.zeros(0, np.uint8)
    off = off - off[0]
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        start, end = off[:-1].copy(), off[1:].copy()
        end[~valid] = start[~valid]
        return data, np.stack([start, end])
    return data, np.stack([off[:-1], off[1:]])


def is_ascii(data: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Whether each text (``bounds`` from :func:`text_bytes`) is plain ASCII (no byte >= 128)."""
    high = np.concatenate([[0], np.flatnonzero(data >= 128) + 1])      # positions (+1) of non-ASCII bytes
    return np.searchsorted(high, bounds[1], side="right") == np.searchsorted(high, bounds[0], side="right")


#: byte -> the byte lower-cased (A-Z only); byte -> whether it is a word byte [a-z0-9_] after lower-casing
_LOWER = np.arange(256, dtype=np.uint8) + ((np.arange(256) >= 65) & (np.arange(256) <= 90)).astype(np.uint8) * 32
_WORD = np.isin(_LOWER, np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789_", dtype=np.uint8))


def ascii_runs(texts) -> tuple["pa.Array", np.ndarray]:
    """The maximal runs of ``[a-z0-9_]`` in lower-cased texts: (the runs as an Arrow string array, text index).

    Works on the bytes of the Arrow string array (vectorised, no Python call per text): ``A-Z`` are
    lower-cased, a run starts where a word byte follows a non-word byte or starts a text, and the word bytes
    packed together, cut at the run starts, are the runs themselves. Bytes >= 128 count as non-word
    (callers keep ASCII texts only).
    """
    import pyarrow as pa
    data, bounds = text_bytes(arrow_texts(texts))
    n = bounds.shape[1]
    low = _LOWER.take(data)                                     # one table look-up per byte, not six passes
    word = _WORD.take(data)
    if (bounds[1][:-1] != bounds[0][1:]).any():                 # bytes of no text (a null's) are ignored
        inside = np.zeros(data.size + 1, dtype=np.int64)
        np.add.at(inside, bounds[0], 1)
        np.add.at(inside, bounds[1], -1)
        word &= np.cumsum(inside[:-1]) > 0
    start = word.copy()
    start[1:] &= ~word[:-1]
    first = bounds[0][bounds[0] < bounds[1]]
    start[first] = word[first]                                  # a run never continues across two texts
    s = np.flatnonzero(start)
    # positions instead of running sums: a cumulative sum of a boolean array (cast element by element) cost
    # most of this function; the run starts are word bytes, so their places among the packed word bytes are
    # where the start flag is set among the word bytes, and a text's runs are the starts inside its bounds
    packed = low[word]
    run_off = np.empty(s.size + 1, dtype=np.int64)
    run_off[:-1] = np.flatnonzero(start[word])
    run_off[-1] = packed.size
    runs = pa.LargeStringArray.from_buffers(s.size, pa.py_buffer(run_off), pa.py_buffer(packed.tobytes()))
    per_text = np.searchsorted(s, bounds[1]) - np.searchsorted(s, bounds[0])
    return runs, np.repeat(np.arange(n), per_text)


def count_matrix(texts, vectorizer: CountVectorizer) -> sparse.csr_matrix:
    """Counts of ``vectorizer``'s vocabulary in ``texts``: the matrix of ``vectorizer.transform(texts)``.

    Plain-ASCII texts are tokenised on their Arrow bytes (:func:`ascii_runs`): for lower-cased ASCII, the
    tokens of :data:`TOKEN_PATTERN` are exactly the maximal runs of ``[a-z0-9_]`` made of letters only, and
    every vocabulary word is such a run, so looking the runs up in the vocabulary gives the same counts.
    Other texts (accented letters, other scripts, where Python's ``\\b`` is Unicode-aware) are tokenised by
    the vectorizer itself; a vectorizer with other settings is simply called. A missing text counts nothing.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    if not _arrow_tokenisable(vectorizer):
        return sparse.csr_matrix(vectorizer.transform(["" if t is None else str(t) for t in texts]), dtype=np.int64)
    arr = arrow_texts(texts)
    n = len(arr)
    vocab = vectorizer.get_feature_names_out()
    plain = is_ascii(*text_bytes(arr))
    runs, doc = ascii_runs(arr)
    word = pc.index_in(runs, value_set=pa.array(vocab, type=pa.large_string()))
    hit = pc.is_valid(word).to_numpy(zero_copy_only=False)
    doc, col = doc[hit], word.to_numpy(zero_copy_only=False)[hit].astype(np.int64)
    keep = plain[doc]
    rows, cols = [doc[keep]], [col[keep]]
    if not plain.all():
        other = np.flatnonzero(~plain)
        Xo = sparse.coo_matrix(vectorizer.transform(["" if t is None else t
                                                     for t in arr.take(pa.array(other)).to_pylist()]))
        rows.append(np.repeat(other[Xo.row], Xo.data))
        cols.append(np.repeat(Xo.col, Xo.data).astype(np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    X = sparse.csr_matrix((np.ones(r.size, dtype=np.int64), (r, c)), shape=(n, len(vocab)))
    X.sum_duplicates()
    return X


def distinct_rows(X: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row, first row of each code): rows with the same code have the same entries.

    Each row's (column, value) pairs in column order are one binary string, and Arrow's hash table
    (``dictionary_encode``, exact comparison of the strings, no hash collisions possible) numbers the
    distinct ones in order of first appearance. Integer matrices only (counts).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    X = sparse.csr_matrix(X)
    if not np.issubdtype(X.dtype, np.integer):
        raise TypeError(f"distinct_rows: integer counts expected, got {X.dtype}")
    X.sum_duplicates()                                      # canonical: sorted columns, no duplicates
    wide = X.nnz and (X.data.min() < -2**31 or X.data.max() >= 2**31 or X.shape[1] >= 2**31)
    pair = np.empty((X.nnz, 2), dtype=np.int64 if wide else np.int32)
    pair[:, 0], pair[:, 1] = X.indices, X.data
    keys = pa.Array.from_buffers(pa.large_binary(), X.shape[0],
                                 [None, pa.py_buffer(X.indptr.astype(np.int64) * pair.itemsize * 2),
                                  pa.py_buffer(pair)])
    codes = pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    first = np.full(int(codes.max()) + 1 if codes.size else 0, X.shape[0], dtype=np.int64)
    np.minimum.at(first, codes, np.arange(codes.size))
    return codes, first


def _pair_width(X: sparse.csr_matrix) -> int:
    """Bytes per (column, count) value of :func:`row_keys`: 2 when columns and counts fit an int16, else 4 or 8."""
    if X.nnz == 0 or (X.data.min() >= 0 and X.data.max() < 2 ** 15 and X.shape[1] <= 2 ** 15):
        return 2
    return 4 if X.data.min() >= -2 ** 31 and X.data.max() < 2 ** 31 and X.shape[1] < 2 ** 31 else 8


def row_keys(X: sparse.csr_matrix, width: int | None = None) -> tuple["pa.Array", int]:
    """(one binary key per row of an integer count matrix: its (column, count) pairs in column order, width).

    Two rows have the same key exactly when they have the same entries (at the same ``width``: bytes per
    value, 2, 4 or 8; default the smallest that holds every column and count of ``X``).
    """
    import pyarrow as pa
    X = sparse.csr_matrix(X)
    if not np.issubdtype(X.dtype, np.integer):
        raise TypeError(f"row_keys: integer counts expected, got {X.dtype}")
    X.sum_duplicates()                                      # canonical: sorted columns, no duplicates
    width = _pair_width(X) if width is None else int(width)
    pair = np.empty((X.nnz, 2), dtype={2: np.int16, 4: np.int32, 8: np.int64}[width])
    pair[:, 0], pair[:, 1] = X.indices, X.data
    keys = pa.Array.from_buffers(pa.large_binary(), X.shape[0],
                                 [None, pa.py_buffer(X.indptr.astype(np.int64) * (2 * width)),
                                  pa.py_buffer(pair)])
    return keys, width


def distinct_keys(parts: Sequence[tuple], n_cols: int) -> tuple[np.ndarray, "pa.Array", int]:
    """(code of each row, the distinct keys in order of first appearance, width) of the ``(keys, width)`` of
    :func:`row_keys` for consecutive batches ``parts``, by Arrow's hash table (exact comparison of the
    keys); batches of a narrower width are re-encoded to the widest first."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if not parts:
        return np.zeros(0, dtype=np.int64), pa.array([], type=pa.large_binary()), 2
    width = max(w for _, w in parts)
    keys = [k if w == width else row_keys(keys_to_rows(k, n_cols, w), width)[0] for k, w in parts]
    enc = pc.dictionary_encode(pa.chunked_array(keys, type=pa.large_binary()))
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in enc.chunks]).astype(np.int64)
    return codes, enc.chunks[0].dictionary, width


def keys_to_rows(keys: "pa.Array", n_cols: int, width: int) -> sparse.csr_matrix:
    """The count matrix (int32 counts) whose rows have the keys ``keys`` of :func:`row_keys`."""
    _, offsets, data = keys.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[keys.offset:keys.offset + len(keys) + 1]
    dt = {2: np.int16, 4: np.int32, 8: np.int64}[width]
    pair = np.frombuffer(data, dtype=dt)[off[0] // width:off[-1] // width].reshape(-1, 2)
    indptr = (off - off[0]) // (2 * width)
    return sparse.csr_matrix((pair[:, 1].astype(np.int32), pair[:, 0].astype(np.int32), indptr),
                             shape=(len(keys), n_cols))


def fit_lda(X, k: int, seed: int = 0, max_iter: int = 20, doc_topic_prior: float | None = None,
            topic_word_prior: float | None = None, n_init: int = 1) -> LatentDirichletAllocation:
    """Batch variational LDA with ``k`` topics (priors default to 1/k as in scikit-learn).

    ``n_init`` > 1 fits from seeds ``seed, seed + 1, ...`` and keeps the fit with the highest approximate
    log-likelihood on ``X`` (variational LDA has local optima: two topics merged, one split).
    """
    best, best_ll = None, -np.inf
    for i in range(max(1, int(n_init))):
        lda = BatchedLDA(n_components=k, learning_method="batch", max_iter=max_iter,
                                        random_state=seed + i, doc_topic_prior=doc_topic_prior,
                                        topic_word_prior=topic_word_prior).fit(X)
        ll = lda.score(X) if n_init > 1 else 0.0
        if best is None or ll > best_ll:
            best, best_ll = lda, ll
    return best


def _exp_dirichlet_expectation(g: np.ndarray) -> np.ndarray:
    return np.exp(psi(g) - psi(g.sum(axis=1, keepdims=True)))


def _update_docs(X: sparse.csr_matrix, EbT: np.ndarray, alpha: float, tol: float, cap: int,
                 gamma: np.ndarray, cal_sstats: bool) -> np.ndarray | None:
    """The variational update of every document of ``X`` at once, in place on ``gamma``; sufficient statistics.

    Per document exactly scikit-learn's ``_update_doc_distribution``: ``phi ~ exp(E log theta) exp(E log
    beta)``, ``gamma = alpha + exp(E log theta) * sum_w n_w exp(E log beta_w) / norm_w``, stop when the mean
    absolute change of gamma is below ``tol`` or after ``cap`` iterations; but all still-moving documents
    are updated together, so the cost is a few numpy calls per iteration, not per document. The working set
    (its own compact arrays, no gather from and scatter to the full ones per iteration) is compacted when
    half of it has stopped; a document's gamma is written out in the iteration it stops, and the stopped
    ones still in the working set are computed on but never written again. Every operation is row by row,
    so a document's result does not depend on the others in ``X``. Returns the statistics
    ``sum_d outer(n_d / norm_d, exp(E log theta_d))`` (words x topics, before the multiplication by
    exp(E log beta)) when ``cal_sstats``.
    """
    eps = np.finfo(X.dtype).eps
    idx = np.arange(X.shape[0])
    g_w = gamma.copy()
    e_w = _exp_dirichlet_expectation(g_w)
    live = np.ones(X.shape[0], dtype=bool)
    Xw = X
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    EbT_w = np.take(EbT, X.indices, axis=0)
    for it in range(cap):
        if 2 * live.sum() < idx.size:                           # compact the working set to the moving rows
            keep = np.flatnonzero(live)
            idx, g_w, e_w = idx[keep], g_w[keep], e_w[keep]
            Xw = X[idx]
            rows = np.repeat(np.arange(idx.size), np.diff(Xw.indptr))
            EbT_w = np.take(EbT, Xw.indices, axis=0)
            live = np.ones(idx.size, dtype=bool)
        norm = np.einsum("ij,ij->i", np.take(e_w, rows, axis=0), EbT_w) + eps
        R = sparse.csr_matrix((Xw.data / norm, Xw.indices, Xw.indptr), shape=Xw.shape)
        g = e_w * (R @ EbT) + alpha
        change = np.abs(g - g_w).mean(axis=1)
        stop = live & (change < tol)
        if it == cap - 1:
            stop = live
        gamma[idx[stop]] = g[stop]
        live &= ~stop
        g_w, e_w = g, _exp_dirichlet_expectation(g)
        if not live.any():
            break
    if not cal_sstats:
        return None
    e_theta = _exp_dirichlet_expectation(gamma)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    norm = np.einsum("ij,ij->i", e_theta[rows], EbT[X.indices]) + eps
    R = sparse.csr_matrix((X.data / norm, X.indices, X.indptr), shape=X.shape)
    return np.asarray(R.T @ e_theta)


class BatchedLDA(LatentDirichletAllocation):
    """scikit-learn's LDA with its E-step run on many documents at once (same fits, several times faster).

    scikit-learn updates each document's topic distribution in a Python loop (a few numpy calls per
    document and iteration, about 12 us per post here: most of notebook 07b's time at 1M users). This class
    overrides only that E-step (``_e_step``) with :func:`_update_docs`, the same update and stopping rule on
    batches of ``e_step_batch`` documents, and draws the random start of a training E-step as scikit-learn
    does (``random_state_.gamma(100, 0.01)``); and the variational bound (``_approx_bound``, also a loop
    over documents, called at the end of every ``fit`` and by ``score`` and ``perplexity``) with the same
    sum computed over all (document, word) pairs at once. So ``fit``, ``transform``, ``score`` and
    ``perplexity`` give scikit-learn's results (digamma from scipy instead of scikit-learn's own series:
    differences of the order of 1e-8; the tests compare both). ``n_jobs`` is not used.
    """

    e_step_batch = 100_000

    def _e_step(self, X, cal_sstats, random_init, parallel=None):
        X = sparse.csr_matrix(X)
        n, K = X.shape[0], self.exp_dirichlet_component_.shape[0]
        gamma = (self.random_state_.gamma(100.0, 0.01, (n, K)).astype(X.dtype, copy=False) if random_init
                 else np.ones((n, K), dtype=X.dtype))
        EbT = np.ascontiguousarray(self.exp_dirichlet_component_.T)
        sstats = np.zeros(EbT.shape, dtype=self.components_.dtype) if cal_sstats else None
        for start in range(0, n, self.e_step_batch):
            stop = min(start + self.e_step_batch, n)
            g = gamma[start:stop]
            s = _update_docs(X[start:stop], EbT, self.doc_topic_prior_, self.mean_change_tol,
                             self.max_doc_update_iter, g, cal_sstats)
            gamma[start:stop] = g
            if cal_sstats:
                sstats += s
        return gamma, (sstats.T * self.exp_dirichlet_component_ if cal_sstats else None)

    def _approx_bound(self, X, doc_topic_distr, sub_sampling):
        # scikit-learn's bound term by term; E[log p(words | theta, beta)] over all (document, word) pairs
        X = sparse.csr_matrix(X)
        e_log_theta = psi(doc_topic_distr) - psi(doc_topic_distr.sum(axis=1, keepdims=True))
        e_log_beta = psi(self.components_) - psi(self.components_.sum(axis=1, keepdims=True))
        e_log_beta_t = np.ascontiguousarray(e_log_beta.T)
        score = 0.0
        for start in range(0, X.shape[0], self.e_step_batch):
            Xb = X[start:start + self.e_step_batch]
            rows = np.repeat(np.arange(Xb.shape[0]), np.diff(Xb.indptr)) + start
            t = e_log_theta[rows] + e_log_beta_t[Xb.indices]
            top = t.max(axis=1)
            score += float(Xb.data @ (top + np.log(np.exp(t - top[:, None]).sum(axis=1))))

        def loglik(prior, distr, e_log, size):
            return float(np.sum((prior - distr) * e_log) + np.sum(gammaln(distr) - gammaln(prior))
                         + np.sum(gammaln(prior * size) - gammaln(np.sum(distr, 1))))

        score += loglik(self.doc_topic_prior_, doc_topic_distr, e_log_theta, self.n_components)
        if sub_sampling:
            score *= float(self.total_samples) / doc_topic_distr.shape[0]
        return score + loglik(self.topic_word_prior_, self.components_, e_log_beta, self.components_.shape[1])


def topic_word(lda: LatentDirichletAllocation) -> np.ndarray:
    """Topic-word distributions (rows sum to 1)."""
    c = lda.components_
    return c / c.sum(axis=1, keepdims=True)


def cosine_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = np.asarray(A, float)
    B = np.asarray(B, float)
    na = np.linalg.norm(A, axis=1, keepdims=True)
    nb = np.linalg.norm(B, axis=1, keepdims=True)
    return (A / np.where(na == 0, 1, na)) @ (B / np.where(nb == 0, 1, nb)).T


@dataclass
class Matching:
    """One-to-one matching of estimated topics (rows) to reference topics (columns)."""
    est: np.ndarray      # estimated topic index
    ref: np.ndarray      # matched reference topic index
    cosine: np.ndarray   # cosine of each matched pair

    @property
    def mean(self) -> float:
        return float(self.cosine.mean()) if self.cosine.size else float("nan")


def matched_cosine(est: np.ndarray, ref: np.ndarray) -> Matching:
    """Hungarian matching maximising total cosine; with unequal counts, min(k_est, k_ref) pairs."""
    C = cosine_matrix(est, ref)
    r, c = linear_sum_assignment(-C)
    return Matching(r, c, C[r, c])


def planted_matrix(vocab: Sequence[str], topic_words: dict[str, Sequence[str]],
                   topic_probs: dict[str, Sequence[float]]) -> tuple[np.ndarray, list[str]]:
    """Planted topic-word distributions on the fitted vocabulary (words outside it dropped)."""
    pos = {w: i for i, w in enumerate(vocab)}
    names = list(topic_words)
    M = np.zeros((len(names), len(vocab)))
    for k, t in enumerate(names):
        for w, p in zip(topic_words[t], topic_probs[t]):
            if w in pos:
                M[k, pos[w]] += p
    return M, names


def umass_coherence(phi: np.ndarray, X, top_n: int = 10) -> np.ndarray:
    """UMass coherence per topic from document co-occurrence in ``X`` (higher = more coherent)."""
    B = (sparse.csr_matrix(X) > 0).astype(np.float64).tocsc()
    out = []
    for row in np.asarray(phi):
        top = np.argsort(row)[::-1][:top_n]
        sub = B[:, top]
        co = (sub.T @ sub).toarray()
        df = np.diag(co)
        s = 0.0
        for i in range(1, len(top)):
            for j in range(i):
                s += np.log((co[i, j] + 1.0) / max(df[j], 1.0))
        out.append(s)
    return np.array(out)


def stability(X, k: int, seed: int = 0, n_boot: int = 3, max_iter: int = 20,
              reference: LatentDirichletAllocation | None = None) -> float:
    """Mean matched cosine between the full-corpus fit and fits on bootstrap resamples of documents."""
    X = sparse.csr_matrix(X)
    ref = reference or fit_lda(X, k, seed, max_iter)
    rng = np.random.default_rng([seed, k])
    scores = []
    for b in range(n_boot):
        idx = rng.integers(0, X.shape[0], X.shape[0])
        fit = fit_lda(X[idx], k, seed + 1 + b, max_iter)
        scores.append(matched_cosine(topic_word(fit), topic_word(ref)).mean)
    return float(np.mean(scores))


def choose_k(X, ks: Sequence[int] = (6, 9, 12), seed: int = 0, max_iter: int = 20, n_boot: int = 2,
             holdout: float = 0.2, top_n: int = 10, n_init: int = 1) -> tuple[int, pd.DataFrame, dict[int, LatentDirichletAllocation]]:
    """Grid over k: held-out perplexity, UMass coherence, bootstrap stability; the chosen k and full fits."""
    X = sparse.csr_matrix(X)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(X.shape[0])
    n_test = max(1, int(round(holdout * X.shape[0])))
    test, train = perm[:n_test], perm[n_test:]
    rows, fits = [], {}
    for k in ks:
        held = fit_lda(X[train], k, seed, max_iter)
        full = fit_lda(X, k, seed, max_iter, n_init=n_init)
        fits[k] = full
        rows.append({"k": k, "heldout_perplexity": float(held.perplexity(X[test])),
                     "umass_coherence": float(umass_coherence(topic_word(full), X, top_n).mean()),
                     "stability": stability(X, k, seed, n_boot, max_iter, reference=full)})
    t = pd.DataFrame(rows)

    def scaled(v: pd.Series, reverse: bool = False) -> pd.Series:
        rng_ = v.max() - v.min()
        s = (v - v.min()) / rng_ if rng_ > 0 else pd.Series(1.0, index=v.index)
        return 1 - s if reverse else s

    t["score"] = (scaled(t["heldout_perplexity"], True) + scaled(t["umass_coherence"]) + scaled(t["stability"])) / 3
    k_best = int(t.loc[t["score"].idxmax(), "k"])
    t["chosen"] = t["k"].eq(k_best)
    return k_best, t, fits


def top_words(phi: np.ndarray, vocab: Sequence[str], n: int = 8) -> list[list[str]]:
    vocab = np.asarray(vocab)
    return [list(vocab[np.argsort(r)[::-1][:n]]) for r in np.asarray(phi)]


def bars_corpus(n_docs: int = 500, doc_len: int = 100, alpha: float = 1.0, seed: int = 0
                ) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Griffiths & Steyvers (2004) "bars": 10 topics (5 rows, 5 columns) over a 5x5 vocabulary."""
    rng = np.random.default_rng(seed)
    phi = np.zeros((10, 25))
    for i in range(5):
        phi[i, i * 5:(i + 1) * 5] = 0.2          # horizontal bar i
        phi[5 + i, i::5] = 0.2                    # vertical bar i
    theta = rng.dirichlet(np.full(10, alpha), n_docs)
    counts = np.stack([rng.multinomial(doc_len, theta[d] @ phi) for d in range(n_docs)])
    return sparse.csr_matrix(counts), phi
