"""Audiences from text: "users talking about X" (topic or keyword, platform, time window).

* :func:`load_posts` - the run's posts: ``processed/posts.parquet`` (validated by notebook 01 through
  ``ingest.ingest_event_table("posts", ...)``) through :mod:`helpers.artifacts`, else ``raw/posts.parquet``
  with basic validation here (``user_id`` and ``text`` present, dates parse); None when the run has no posts.
  Text columns are Arrow-backed strings (``string[pyarrow]``): at a million users the 5.6M posts then take
  0.9 GB instead of 2 GB, read without creating a Python object per value, and reach the Arrow
  tokeniser of :func:`helpers.text.topics.count_matrix` without a copy.
* :func:`assign_topics` - each post's most probable LDA topic, labelled by the planted topic it matches
  (when the synthetic truth exists) or by its top words; in batches, on ``n_jobs`` threads, once per
  distinct bag of words.
* :func:`keyword_mask` - which texts contain a whole word or phrase (case-insensitive), in Arrow for ASCII.
* :func:`talking_about` - a :class:`TextAudience` (ids + definition) from a topic and/or keyword, platform
  and date window. ``.to_audience(P, frame)`` makes it a :class:`helpers.audience.Audience` of kind
  ``ids`` (usable by every stage, e.g. as the lookalike seed ``seed_ids_path`` after ``.write_ids(path)``).
* :func:`profile` - the audience against the base with :func:`helpers.stats.core.profile` (weighted,
  linearised intervals, BH FDR, base-size rule); :func:`segment_mix` - its segment shares vs the base.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ..stats import core
from . import topics as _topics

#: the string dtype of the posts' text columns (Arrow-backed)
STRING = pd.StringDtype("pyarrow")


def posts_path(P: Any) -> Path | None:
    """The file :func:`load_posts` reads (the validated table when ingestion wrote one, else the raw one)."""
    from .. import artifacts
    if artifacts.exists(P, "posts"):
        return artifacts.artifact("posts").path(P)
    raw = Path(P.raw) / "posts.parquet"
    return raw if raw.exists() else None


def load_posts(P: Any, user_ids=None) -> pd.DataFrame | None:
    """Posts of the run (``user_id, platform, date, text``; ``post_id`` when present), or None.

    ``user_ids``: only the posts of those users (an Arrow filter while reading: the other users' posts are
    never held), in the file's order."""
    from .. import artifacts
    filters = None
    if user_ids is not None:
        import pyarrow as pa
        import pyarrow.dataset as pads
        filters = pads.field("user_id").isin(pa.array(pd.Series(user_ids).astype(str), type=pa.string()))
    # The validated table when ingestion wrote one; a stale or malformed one is an error, never silently
    # replaced by the raw file (that would mix two runs). Strings are read straight into Arrow.
    with pd.option_context("future.infer_string", True, "mode.string_storage", "pyarrow"):
        if artifacts.exists(P, "posts"):
            if filters is None:
                return _check(artifacts.load(P, "posts"), "processed/posts.parquet")
            f = artifacts.artifact("posts").path(P)
            why = artifacts.stale_reason(P, "posts")
            if why:
                raise artifacts.StaleArtifact(f"{f}: {why}")
            return _check(pd.read_parquet(f, filters=filters), "processed/posts.parquet")
        raw = Path(P.raw) / "posts.parquet"
        if not raw.exists():
            return None
        return _check(pd.read_parquet(raw, filters=filters), str(raw))


def _as_strings(s: pd.Series) -> pd.Series:
    """``s`` as Arrow-backed strings; other values converted with ``str`` as before (a missing one to "nan")."""
    if s.dtype == STRING and not s.isna().any():
        return s
    return s.astype(object).astype(str).astype(STRING)


def _check(df: pd.DataFrame, where: str) -> pd.DataFrame:
    need = [c for c in ("user_id", "text") if c not in df.columns]
    if need:
        raise ValueError(f"{where}: the posts table has no column(s) {need}; it needs user_id, text "
                         "(and optionally platform, date)")
    df = df.copy()
    df["user_id"] = _as_strings(df["user_id"])
    df["text"] = _as_strings(df["text"].fillna(""))
    if "date" in df:
        d = pd.to_datetime(df["date"], errors="coerce")
        bad = d.isna() & df["date"].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{where}: row {i + 1}, column date: {df['date'].iloc[i]!r} is not a date; "
                             "use ISO dates (YYYY-MM-DD)")
        df["date"] = d
    if "platform" not in df:
        df["platform"] = "unknown"
    return df


#: documents per E-step sub-batch in :func:`assign_topics` (BatchedLDA's default is 100,000: at a million users
#: two threads' working arrays then took ~0.6 GB)
E_STEP_BATCH = 25_000


def assign_topics(posts: pd.DataFrame, lda, vectorizer, labels: Sequence[str], batch_size: int = 200_000,
                  n_jobs: int = 2) -> pd.DataFrame:
    """Add ``topic`` (label of the argmax LDA topic) and ``topic_prob`` to a copy of ``posts``.

    The same topics as ``lda.transform(vectorizer.transform(texts))``: batches of ``batch_size`` posts are
    counted by :func:`helpers.text.topics.count_matrix`, and the topic distribution of each *distinct*
    word-count row is computed once by the model's E-step (:class:`helpers.text.topics.BatchedLDA` does it
    for many documents at once, row by row, so a row's result does not depend on the rows beside it) and
    given to every post with that row: short posts often share their bag of words (45 % of the 5.6M posts of
    a million users do). Both steps run on ``n_jobs`` threads (Arrow and numpy release the GIL).

    Memory: a batch's counts are kept only as one binary key per row (its (column, count) pairs, 2 bytes
    each when the vocabulary and counts allow, see :func:`helpers.text.topics.row_keys`); Arrow numbers the
    distinct keys of the whole corpus exactly (:func:`helpers.text.topics.distinct_keys`) and each batch of
    distinct rows is decoded back to counts for the E-step. At a million users the whole corpus' count
    matrix with its key copy had raised the stage's peak by 1.3 GB.
    """
    import pyarrow as pa
    texts = pa.array(posts["text"], from_pandas=True)     # chunked when Arrow-backed: each batch is joined alone
    n = len(texts)
    V = len(vectorizer.vocabulary_)
    starts = list(range(0, n, batch_size))

    def in_threads(f, items):
        if n_jobs > 1 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                return list(pool.map(f, items))
        return [f(i) for i in items]

    def keys(start: int):
        return _topics.row_keys(_topics.count_matrix(texts.slice(start, batch_size), vectorizer))

    parts = in_threads(keys, starts)
    codes, uniq, width = _topics.distinct_keys(parts, V)
    del parts
    n_u = len(uniq)
    k_u = np.zeros(n_u, dtype=np.int64)
    prob_u = np.zeros(n_u, dtype=np.float64)

    def run(start: int) -> None:
        theta = lda.transform(_topics.keys_to_rows(uniq.slice(start, batch_size), V, width))
        top = theta.argmax(1)
        k_u[start:start + len(top)] = top
        prob_u[start:start + len(top)] = theta[np.arange(len(top)), top]

    # the E-step's working arrays are (words in the batch) x topics: smaller sub-batches than the model's
    # default bound them on every thread (the same rows, each computed alone, so the same results)
    own = "e_step_batch" in vars(lda)
    saved = getattr(lda, "e_step_batch", None)
    if isinstance(lda, _topics.BatchedLDA):
        lda.e_step_batch = min(saved, E_STEP_BATCH)
    try:
        in_threads(run, list(range(0, n_u, batch_size)))
    finally:
        if isinstance(lda, _topics.BatchedLDA):
            if own:
                lda.e_step_batch = saved
            else:
                del lda.e_step_batch
    out = posts.copy()
    out["topic"] = np.asarray(labels, dtype=object)[k_u[codes]]
    out["topic_prob"] = prob_u[codes]
    return out


def keyword_mask(texts: pd.Series, keyword: str, batch_size: int = 200_000) -> np.ndarray:
    """Whether each text contains ``keyword`` as a whole word or phrase, case-insensitive.

    The test is Python's ``re.search(r"\\b" + re.escape(keyword.lower()) + r"\\b", text.lower())``. For an
    ASCII keyword and ASCII texts it runs in Arrow (RE2, case-insensitive: on ASCII text its ``\\b`` and
    case folding are Python's); other texts, where Python's word boundary is Unicode-aware, are tested in
    Python. A missing text contains nothing. Texts are taken ``batch_size`` at a time (bounded memory).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    kw = str(keyword).lower()
    pat = re.compile(r"\b" + re.escape(kw) + r"\b")
    whole = pa.array(texts, from_pandas=True)
    out = np.zeros(len(whole), dtype=bool)
    for start in range(0, len(whole), batch_size):
        arr = _topics.arrow_texts(whole.slice(start, batch_size))
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if kw.isascii() and "\\E" not in kw:
            plain = _topics.is_ascii(*_topics.text_bytes(arr))
            hit = pc.match_substring_regex(arr, r"\b\Q" + kw + r"\E\b", ignore_case=True)
            m = pc.fill_null(hit, False).to_numpy(zero_copy_only=False) & plain & valid
            other = np.flatnonzero(~plain & valid)
        else:
            m = np.zeros(len(arr), dtype=bool)
            other = np.flatnonzero(valid)
        if other.size:
            m[other] = [bool(pat.search(t.lower())) for t in arr.take(pa.array(other)).to_pylist()]
        out[start:start + len(arr)] = m
    return out


@dataclass
class TextAudience:
    """Users talking about something: their ids, the definition, and the matching posts' count."""
    ids: pd.Series
    definition: dict
    n_posts: int
    posts: pd.DataFrame = field(repr=False, default=None)

    @property
    def size(self) -> int:
        return int(len(self.ids))

    def mask(self, user_ids) -> np.ndarray:
        return pd.Index(pd.Series(user_ids).astype(str)).isin(pd.Index(self.ids))

    def label(self) -> str:
        d = self.definition
        parts = [f"topic {d['topic']}" if d.get("topic") else None,
                 f"keyword '{d['keyword']}'" if d.get("keyword") else None,
                 f"on {', '.join(d['platform'])}" if d.get("platform") else None,
                 f"from {d['start']}" if d.get("start") else None, f"to {d['end']}" if d.get("end") else None]
        return "users talking about " + " ".join(p for p in parts if p)

    def to_audience(self, P: Any = None, frame: pd.DataFrame | None = None, **kw):
        """A :class:`helpers.audience.Audience` of kind ``ids`` (churned users excluded as everywhere)."""
        from .. import audience
        return audience.select(P, "ids", frame=frame, ids=list(self.ids), label=self.label(), **kw)

    def write_ids(self, path: str | Path) -> Path:
        """One id per line with a ``user_id`` header (readable by ``audience.read_ids`` / ``seed_ids_path``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"user_id": self.ids}).to_csv(path, index=False)
        return path


def talking_about(posts: pd.DataFrame, *, topic: str | Sequence[str] | None = None,
                  keyword: str | None = None, platform: str | Sequence[str] | None = None,
                  start: str | None = None, end: str | None = None, min_posts: int = 1) -> TextAudience:
    """Users with at least ``min_posts`` posts matching every given condition.

    ``topic``: value(s) of the ``topic`` column (from :func:`assign_topics`); ``keyword``: a whole word or
    phrase, case-insensitive; ``platform``: value(s) of ``platform``; ``start``/``end``: inclusive dates.
    """
    if topic is None and keyword is None:
        raise ValueError("talking_about needs a topic or a keyword")
    m = np.ones(len(posts), dtype=bool)
    if topic is not None:
        if "topic" not in posts:
            raise ValueError("talking_about(topic=...) needs posts with a 'topic' column; call assign_topics first")
        topics = [topic] if isinstance(topic, str) else list(topic)
        m &= posts["topic"].isin(topics).to_numpy()
    if keyword:
        m &= keyword_mask(posts["text"], keyword)
    if platform is not None:
        plats = [platform] if isinstance(platform, str) else list(platform)
        m &= posts["platform"].isin(plats).to_numpy()
    if start is not None or end is not None:
        if "date" not in posts:
            raise ValueError("a time window needs posts with a 'date' column")
        d = pd.to_datetime(posts["date"])
        if start is not None:
            m &= (d >= pd.Timestamp(start)).to_numpy()
        if end is not None:
            m &= (d <= pd.Timestamp(end)).to_numpy()
    hit = posts.loc[m]
    n = hit.groupby("user_id").size()
    ids = pd.Series(sorted(n.index[n >= min_posts].astype(str)), name="user_id", dtype=object)
    definition = {"kind": "text", "topic": topic, "keyword": keyword,
                  "platform": [platform] if isinstance(platform, str) else platform,
                  "start": start, "end": end, "min_posts": min_posts}
    return TextAudience(ids, definition, int(m.sum()), hit)


def indicators(frame: pd.DataFrame, columns: Sequence[str], label=None) -> tuple[pd.DataFrame, dict]:
    """0/1 indicators ``column=value`` (NaN where the column is missing) and their (attribute, value) labels."""
    blocks, meta = {}, {}
    for c in columns:
        v = frame[c]
        known = v.notna().to_numpy()
        for val in pd.unique(v.dropna()):
            name = f"{c}={val}"
            x = np.where(known, (v == val).to_numpy(dtype=float), np.nan)
            blocks[name] = x
            meta[name] = (label(c) if label else c, str(val))
    return pd.DataFrame(blocks, index=frame.index), meta


def profile(frame: pd.DataFrame, in_audience: np.ndarray, columns: Sequence[str],
            weights: np.ndarray | None = None, label=None, rule: core.BaseSizeRule | None = None) -> pd.DataFrame:
    """Profile of the audience vs the base over categorical ``columns`` by :func:`helpers.stats.core.profile`."""
    ind, meta = indicators(frame, columns, label)
    return core.profile(ind, in_audience, weights, meta=meta, rule=rule)


def segment_mix(frame: pd.DataFrame, in_audience: np.ndarray, weights: np.ndarray | None = None,
                column: str = "segment_name") -> pd.DataFrame:
    """Weighted segment shares of the audience vs the base (index and interval from the core)."""
    if column not in frame:
        # no segmentation in the run: an empty table with the columns of a profile
        return pd.DataFrame(columns=["attribute", "value_label", "audience_mean", "base_mean", "index", "ci_low",
                                     "ci_high", "base_flag"])
    return profile(frame, in_audience, [column], weights)
