"""Topic models of short posts: scikit-learn LDA, choice of k, planted-topic recovery.

* :func:`vectorize` - word counts (CountVectorizer; English stop words and the sentiment words removed
  by default, so topics are about *what* is said, not how it is felt).
* :func:`fit_lda` - ``LatentDirichletAllocation`` (batch variational Bayes, seeded).
* :func:`choose_k` - for each k of a small grid: held-out perplexity (fit on a random 80 % of documents,
  ``lda.perplexity`` on the other 20 %), UMass coherence of the top words (Mimno et al. 2011, document
  co-occurrence counts on the whole corpus: mean over topics of ``sum_{i<j} log((D(w_i, w_j) + 1) / D(w_j))``
  over the top-n words; higher is better) and bootstrap stability (topics refitted on bootstrap resamples
  of the documents matched one-to-one to the full-corpus fit by the Hungarian algorithm on cosine
  similarity; mean matched cosine; 1 = the same topics every time). The chosen k maximises the mean of the
  three criteria rescaled to [0, 1] over the grid (perplexity reversed); the table is returned so the
  notebook shows all three.
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
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

#: sentiment words removed from the topic vocabulary by default (from the generator's lexicon + common ones)
SENTIMENT_STOP = {"love", "great", "amazing", "awesome", "happy", "excited", "best", "beautiful", "perfect",
                  "fantastic", "hate", "terrible", "awful", "disappointed", "worst", "boring", "annoying", "sad",
                  "broken", "horrible", "got", "just", "really", "today", "new", "good", "bad"}


def vectorize(texts: Iterable[str], min_df: int = 3, max_features: int | None = 2000,
              extra_stop: Iterable[str] = SENTIMENT_STOP) -> tuple[sparse.csr_matrix, np.ndarray, CountVectorizer]:
    """Document-word counts, the vocabulary and the fitted vectorizer."""
    stop = sorted(set(ENGLISH_STOP_WORDS) | set(extra_stop))
    vec = CountVectorizer(stop_words=stop, min_df=min_df, max_features=max_features,
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    X = vec.fit_transform([str(t) for t in texts])
    return X.tocsr(), vec.get_feature_names_out(), vec


def fit_lda(X, k: int, seed: int = 0, max_iter: int = 20, doc_topic_prior: float | None = None,
            topic_word_prior: float | None = None, n_init: int = 1) -> LatentDirichletAllocation:
    """Batch variational LDA with ``k`` topics (priors default to 1/k as in scikit-learn).

    ``n_init`` > 1 fits from seeds ``seed, seed + 1, ...`` and keeps the fit with the highest approximate
    log-likelihood on ``X`` (variational LDA has local optima: two topics merged, one split).
    """
    best, best_ll = None, -np.inf
    for i in range(max(1, int(n_init))):
        lda = LatentDirichletAllocation(n_components=k, learning_method="batch", max_iter=max_iter,
                                        random_state=seed + i, doc_topic_prior=doc_topic_prior,
                                        topic_word_prior=topic_word_prior).fit(X)
        ll = lda.score(X) if n_init > 1 else 0.0
        if best is None or ll > best_ll:
            best, best_ll = lda, ll
    return best


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
