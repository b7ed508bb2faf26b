"""Steps of notebook 07b (text signals), kept here so the notebook stays thin.

* :func:`ensure_posts` - the run's posts; when absent and the synthetic truth exists (notebook 00 has not
  written posts yet), writes them with :func:`helpers.sources.posts.write_posts` from the truth users and
  the unified table, and says so.
* :func:`users_frame` - one row per user: the unified table's attributes + ``weight`` (1 when no raking
  weights) + ``segment_name`` when a segmentation exists + ``state``/``gender`` from the truth when the
  unified table lacks them (synthetic runs only; said in ``notes``) + ``census_region``.
* :func:`topic_model` - vectorise a seeded sample of posts, choose k on the grid, fit, label topics by the
  planted topics they match (Hungarian) or by their top words, and assign every post its topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import audiences, topics
from .questions import census_region


def read_text_params(P: Any) -> dict | None:
    """text_truth.json (the planted topics, vocabulary and observation date) when the generator wrote it."""
    f = Path(P.truth) / "text_truth.json"
    return json.loads(f.read_text()) if f.exists() else None


@dataclass(frozen=True)
class PostTruth:
    """The planted truth of every post (``posts_truth.parquet``), read only when and as far as a step needs it.

    At a million users the table has 5.6M rows (0.3 GB in memory for the columns the stage reads): held for
    the whole notebook it sat under every later step's peak, while only :func:`post_topic_accuracy` (post_id,
    topic) and :func:`truth_of` on a sample (a few thousand posts) read it.
    """
    path: Path
    #: when set (Arrow text), only the posts of these users are ever read (the user sample of a large panel)
    user_ids: Any = None

    def read(self, columns: Sequence[str], post_ids=None) -> pd.DataFrame:
        """``columns`` of the table; with ``post_ids``, only the rows of those posts (in the file's order)."""
        import pyarrow.parquet as pq
        have = pq.read_schema(self.path).names
        filters = None if post_ids is None else [("post_id", "in", sorted(set(map(str, post_ids))))]
        if self.user_ids is not None and post_ids is None:
            import pyarrow.dataset as pads
            filters = pads.field("user_id").isin(self.user_ids)
        with pd.option_context("future.infer_string", True, "mode.string_storage", "pyarrow"):
            return pd.read_parquet(self.path, columns=[c for c in columns if c in have], filters=filters)


def read_text_truth(P: Any, user_ids=None) -> tuple[dict | None, PostTruth | None, pd.DataFrame | None]:
    """(text_truth.json, posts_truth as a :class:`PostTruth`, posts_user_rates) when the generator wrote them,
    else Nones. Strings are read into Arrow (``string[pyarrow]``). ``user_ids`` (a user sample, see
    :func:`sample_users`): only those users' rates and posts' truth are read."""
    params = read_text_params(P)
    if params is None:
        return None, None, None
    t = Path(P.truth)
    ids = None if user_ids is None else _arrow_ids(user_ids)
    post = PostTruth(t / "posts_truth.parquet", ids) if (t / "posts_truth.parquet").exists() else None
    filters = None
    if ids is not None:
        import pyarrow.dataset as pads
        filters = pads.field("user_id").isin(ids)
    with pd.option_context("future.infer_string", True, "mode.string_storage", "pyarrow"):
        rates = pd.read_parquet(t / "posts_user_rates.parquet", filters=filters) \
            if (t / "posts_user_rates.parquet").exists() else None
    return params, post, rates


def _arrow_ids(ids):
    import pyarrow as pa
    return pa.array(pd.Series(ids).astype(str), type=pa.string())


#: below this many posts asked for, :func:`truth_of` reads only their rows of a :class:`PostTruth`
TRUTH_FILTER_MAX = 100_000


def truth_of(post_truth: pd.DataFrame | PostTruth, post_ids: pd.Series, column: str) -> pd.Series:
    """``post_truth[column]`` of each of ``post_ids`` (missing where a post has no truth), by an Arrow hash join."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if isinstance(post_truth, PostTruth):
        post_truth = post_truth.read(["post_id", column], post_ids if len(post_ids) <= TRUTH_FILTER_MAX else None)
    keys = pa.array(post_truth["post_id"], type=pa.large_string(), from_pandas=True)
    pos = pc.index_in(pa.array(post_ids, type=pa.large_string(), from_pandas=True), value_set=keys)
    found = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    vals = post_truth[column].take(pc.fill_null(pos, 0).to_numpy(zero_copy_only=False))
    return pd.Series(vals.array, index=post_ids.index, name=column).where(found)


def post_topic_accuracy(posts: pd.DataFrame, post_truth: pd.DataFrame | PostTruth) -> float:
    """Share of posts whose assigned ``topic`` is their planted topic (a post without truth counts as wrong)."""
    truth = truth_of(post_truth, posts["post_id"], "topic")
    return float((truth.to_numpy(dtype=object, na_value=None) == posts["topic"].to_numpy(dtype=object)).mean())


def ensure_posts(P: Any, seed: int = 42, observation_date: str | None = None,
                 user_ids=None) -> tuple[pd.DataFrame | None, str]:
    """(posts or None, a sentence saying where they came from). ``user_ids``: only those users' posts."""
    posts = audiences.load_posts(P, user_ids=user_ids)
    if posts is not None:
        return posts, (f"posts read from the run ({len(posts):,} rows"
                       + (f", those of the {len(user_ids):,} sampled users)" if user_ids is not None else ")"))
    from .. import artifacts
    users_truth = Path(P.truth) / "users_truth.parquet"
    if not users_truth.exists():
        return None, "no posts table in the run and no synthetic truth to generate one from"
    from ..sources.posts import write_posts
    ut = pd.read_parquet(users_truth)
    u = ut[[c for c in ("user_id", "true_segment", "state", "gender") if c in ut]]
    if artifacts.exists(P, "unified"):
        un = artifacts.load_unified(P)
        cols = [c for c in ("user_id", "age_group", "income_bracket", "education_level") if c in un]
        u = u.merge(un[cols].assign(user_id=un["user_id"].astype(str)), on="user_id", how="left")
    write_posts(u, P.raw, P.truth, seed=seed, observation_date=observation_date)
    return audiences.load_posts(P, user_ids=user_ids), ("raw/posts.parquet was absent and the synthetic truth exists: the posts were "
                                     "generated here by helpers.sources.posts.write_posts (until notebook 00 writes them)")


#: above this many users the user-level sections of notebook 07b work on a seeded sample of this many users
#: (:func:`users_frame` with ``max_users``); at or below it on every user, as always
TEXT_MAX_USERS = 1_000_000


def sample_positions(n: int, max_users: int | None, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded simple random sample of ``max_users`` of ``n`` users (None when n <= max)."""
    if max_users is None or n <= max_users:
        return None
    return np.sort(np.random.default_rng([seed, 707]).choice(n, int(max_users), replace=False))


def _panel_rows(P: Any, pick: np.ndarray, columns: Sequence[str] | None) -> pd.DataFrame:
    """``Panel.load(P, columns=columns).frame.take(pick)`` without reading the other rows: the identifiers of
    the rows at ``pick`` come from the unified table's id column, then the unified table, weights and segments
    are read filtered to them (Arrow) and aligned (:func:`helpers.panel.align`). At 10M users the whole frame
    (and its loading transients) would be several GB; this holds the sample and one id column."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    from .. import artifacts
    from ..panel import align
    f = Path(P.processed) / artifacts.UNIFIED_PARQUET
    have = artifacts.unified_columns(P)
    key = artifacts.id_column(P)
    key = key if key in have else artifacts.ID
    ids = pq.read_table(f, columns=[key]).column(key).take(pa.array(pick)).combine_chunks()
    text_ids = ids.cast(pa.string())
    cols = [key] + [c for c in (have if columns is None else columns) if c != key and c in have]
    df = pq.read_table(f, columns=cols, filters=pads.field(key).isin(ids)).to_pandas(
        types_mapper=artifacts._arrow_strings().get)
    if "customer_since_date" in df.columns:
        df["customer_since_date"] = df["customer_since_date"].astype("datetime64[ns]")
    if len(df) != len(pick):
        raise ValueError(f"{f}: {len(pick)} sampled users, {len(df)} rows read (are the identifiers unique?)")

    def rows_of(name: str, wanted: list[str]) -> pd.DataFrame:
        g = artifacts.artifact(name).path(P)
        k = artifacts.key_column(pd.DataFrame(columns=pq.read_schema(g).names), P)
        t = pq.read_table(g, columns=[k] + wanted, filters=pads.field(k).cast(pa.string()).isin(text_ids))
        return align(df[key], t.to_pandas(types_mapper=artifacts._arrow_strings().get), k)

    if artifacts.exists(P, "weights"):
        df["weight"] = rows_of("weights", ["weight"])["weight"].fillna(1.0).astype(float).to_numpy()
    else:
        df["weight"] = 1.0
    if artifacts.exists(P, "segments"):
        s = rows_of("segments", ["segment", "segment_name"])
        df["segment"] = s["segment"].astype("int64").to_numpy() if s["segment"].notna().all() else s["segment"].to_numpy()
        df["segment_name"] = s["segment_name"].astype(object).to_numpy()
    return df


def users_frame(P: Any, frame: pd.DataFrame | None = None, max_users: int | None = None, seed: int = 0,
                columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Users with attributes, weight, segment name, state/gender, Census region; and notes.

    ``max_users``: on a panel with more users, a seeded simple random sample of that many (in the panel's
    order, :func:`sample_positions`), read with only ``columns`` of the unified table (plus id, weight and
    segment), so that 10M users are never held as a full frame; ``frame.attrs["sampled_from"]`` is then the
    panel's size. At or below ``max_users`` the frame is the whole panel, as without it.
    """
    from ..panel import Panel
    notes = []
    n_panel = None
    if frame is None and max_users is not None:
        from .. import artifacts
        import pyarrow.dataset as pads
        n_panel = pads.dataset(Path(P.processed) / artifacts.UNIFIED_PARQUET).count_rows()
    pick = sample_positions(n_panel, max_users, seed) if n_panel is not None else None
    if pick is not None:
        from .. import artifacts
        have = set(artifacts.unified_columns(P))
        cols = None if columns is None else [c for c in dict.fromkeys(columns) if c in have]
        df = _panel_rows(P, pick, cols)
        notes.append(f"a seeded random sample of {len(df):,} of the {n_panel:,} users (text_max_users): the "
                     "user-level sections describe it")
    else:
        # the panel loaded here is this function's own: changed in place (a copy was 0.5 GB at a million users)
        df = frame.copy() if frame is not None else Panel.load(P).frame
    df["user_id"] = df["user_id"].astype(str)
    if "weight" not in df:
        df["weight"] = 1.0
        notes.append("no raking weights: every user weighs 1")
    ut = Path(P.truth) / "users_truth.parquet"
    missing = [c for c in ("state", "gender") if c not in df]
    if missing and ut.exists():
        if pick is not None:   # only the sampled users' rows of the truth (object text, as read below)
            import pyarrow.dataset as pads
            t = pd.read_parquet(ut, columns=["user_id"] + missing,
                                filters=pads.field("user_id").isin(_arrow_ids(df["user_id"])))
        else:
            t = pd.read_parquet(ut, columns=["user_id"] + missing)
        t_ids = pd.Index(t["user_id"].astype(str))
        if t_ids.is_unique:    # the left merge's columns, set in place (a merge copies the whole frame)
            pos = t_ids.get_indexer(df["user_id"])
            df.index = pd.RangeIndex(len(df))                  # as the merge's result
            for c in missing:
                col = t[c].iloc[np.where(pos < 0, 0, pos)] if len(t) else pd.Series(np.nan, index=range(len(df)))
                df[c] = pd.Series(col.array, index=df.index).where(pos >= 0)
        else:
            df = df.merge(t.assign(user_id=t["user_id"].astype(str)), on="user_id", how="left")
        notes.append(f"{', '.join(missing)} taken from the synthetic truth (not in the unified table)")
    if "state" in df:
        df["census_region"] = census_region(df["state"]).to_numpy()
    if pick is not None:
        df.attrs["sampled_from"] = int(n_panel)
    return df, notes


@dataclass
class TopicModel:
    k: int
    table: pd.DataFrame          # the k grid
    lda: Any
    vectorizer: Any
    vocab: np.ndarray
    labels: np.ndarray
    recovery: float | None = None
    matched: pd.DataFrame | None = field(default=None)
    n_docs: int = 0


def topic_model(posts: pd.DataFrame, ks: Sequence[int], seed: int, max_docs: int, max_iter: int,
                n_boot: int, n_init: int, params: dict | None = None) -> TopicModel:
    sample = posts.sample(min(max_docs, len(posts)), random_state=seed)
    X, vocab, vec = topics.vectorize(sample["text"])
    k, table, fits = topics.choose_k(X, ks, seed, max_iter, n_boot, n_init=n_init)
    lda = fits[k]
    phi = topics.topic_word(lda)
    words = topics.top_words(phi, vocab, 5)
    labels = np.array([" ".join(w[:3]) for w in words], dtype=object)
    recovery, matched = None, None
    if params is not None:
        M, names = topics.planted_matrix(vocab, params["vocab"], params["topic_word"])
        m = topics.matched_cosine(phi, M)
        recovery = m.mean
        labels[m.est] = np.array(names, dtype=object)[m.ref]
        matched = pd.DataFrame({"lda_topic": m.est, "planted_topic": np.array(names)[m.ref], "cosine": m.cosine,
                                "top_words": [", ".join(words[i]) for i in m.est]})
    return TopicModel(k, table, lda, vec, vocab, labels, recovery, matched, len(sample))


#: post_topics columns, in this order (those the posts have)
POST_TOPIC_COLUMNS = ("post_id", "user_id", "platform", "date", "topic", "topic_prob")


def write_post_topics(P: Any, tm: TopicModel, batch_size: int = 1_000_000) -> tuple[Path, int]:
    """Assign every post of the run its topic (:func:`helpers.text.audiences.assign_topics` with ``tm``) and
    write the ``post_topics`` artifact, ``batch_size`` posts at a time: the same rows as
    ``artifacts.save(P, "post_topics", assign_topics(load_posts(P), ...)[POST_TOPIC_COLUMNS])`` (each post's
    topic is computed alone), without holding the posts (56M at 10M users: ~9 GB with their text). Written to
    a temporary file renamed into place, timestamps in microseconds as :func:`helpers.artifacts.save` does.
    Returns (path, posts written)."""
    import os
    import tempfile
    import pyarrow as pa
    import pyarrow.parquet as pq
    from .. import artifacts
    src = audiences.posts_path(P)
    if src is None:
        raise FileNotFoundError("the run has no posts table (processed/posts.parquet or raw/posts.parquet)")
    have = pq.read_schema(src).names
    a = artifacts.artifact("post_topics")
    f = a.path(P)
    f.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f".{f.name}.", suffix=".tmp")
    os.close(fd)
    writer, n = None, 0
    try:
        pf = pq.ParquetFile(src)
        for batch in pf.iter_batches(batch_size=batch_size, columns=[c for c in ("post_id", "user_id", "platform",
                                                                                  "date", "text") if c in have]):
            with pd.option_context("future.infer_string", True, "mode.string_storage", "pyarrow"):
                df = audiences._check(batch.to_pandas(types_mapper=artifacts._arrow_strings().get), str(src))
            del batch
            df = audiences.assign_topics(df, tm.lda, tm.vectorizer, tm.labels)
            df = df[[c for c in POST_TOPIC_COLUMNS if c in df]]
            df["topic"] = df["topic"].astype(object)
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema, coerce_timestamps="us", allow_truncated_timestamps=True)
            else:
                table = table.cast(schema)
            writer.write_table(table)
            n += len(df)
            del df, table
        if writer is not None:
            writer.close()
            writer = None
        os.replace(tmp, f)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return f, n
