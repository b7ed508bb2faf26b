"""Sentiment of short posts, offline: VADER with sentence-level averaging, and a hook for a local model.

VADER (Hutto & Gilbert 2014; package ``vaderSentiment``) is a lexicon and rules scorer whose lexicon ships
inside the wheel, so nothing is downloaded at run time. Its ``compound`` score is a normalised sum over the
whole text and saturates towards +-1 on long texts (vaderSentiment issue #151); :func:`score` therefore
splits a post into sentences and averages the sentence compounds (one-sentence posts are scored as VADER
scores them, so its published README values are reproduced exactly).

A transformer (BERT-type) classifier is not the default: its weights cannot be fetched at run time on the
machines this project runs on, and no such model ships inside a registry package. A user who has a model
installed locally can pass any callable ``model(list[str]) -> sequence of float in [-1, 1]`` as
``score(texts, model=...)``; e.g. for a local Hugging Face pipeline::

    from transformers import pipeline
    clf = pipeline("sentiment-analysis", model="/path/to/local/model")
    def model(texts):
        return [(r["score"] if r["label"].upper().startswith("POS") else -r["score"]) for r in clf(texts)]
    s = sentiment.score(posts["text"], model=model)

The hook validates the callable's output (one finite value in [-1, 1] per text) and names what is wrong.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=1)
def analyzer():
    """The VADER analyser (lexicon read from the installed wheel; no network)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    return SentimentIntensityAnalyzer()


def sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by white space; empty pieces dropped."""
    parts = [s.strip() for s in _SENT_SPLIT.split(str(text or ""))]
    return [s for s in parts if s]


def vader_compound(text: str) -> float:
    """VADER's compound score of the whole text (no splitting)."""
    return float(analyzer().polarity_scores(str(text or ""))["compound"])


def vader_sentence_mean(text: str) -> float:
    """Mean VADER compound over the sentences of ``text`` (0.0 for empty text)."""
    sents = sentences(text)
    if not sents:
        return 0.0
    a = analyzer()
    return float(np.mean([a.polarity_scores(s)["compound"] for s in sents]))


def check_model_output(out, n: int) -> np.ndarray:
    try:
        arr = np.asarray(list(out), dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sentiment model hook: the callable must return {n} numbers in [-1, 1]; "
                         f"got something not numeric ({exc})") from None
    if arr.size != n:
        raise ValueError(f"sentiment model hook: the callable returned {arr.size} values for {n} texts; "
                         "return one score per text, in order")
    if not np.isfinite(arr).all() or (np.abs(arr) > 1).any():
        bad = int(np.flatnonzero(~np.isfinite(arr) | (np.abs(arr) > 1))[0])
        raise ValueError(f"sentiment model hook: value {arr[bad]!r} for text {bad} is not a finite number in "
                         "[-1, 1]; rescale the model's output (e.g. P(pos) - P(neg))")
    return arr


def score(texts: Iterable[str], model: Callable[[Sequence[str]], Sequence[float]] | None = None,
          batch_size: int = 256) -> np.ndarray:
    """Sentiment in [-1, 1] per text: VADER sentence mean by default, or ``model`` (a local callable)."""
    texts = [str(t) if t is not None else "" for t in texts]
    if model is None:
        return np.array([vader_sentence_mean(t) for t in texts], dtype=float)
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        out.append(check_model_output(model(chunk), len(chunk)))
    return np.concatenate(out) if out else np.zeros(0)
