"""The Questions view: "customers talking about X" from the text-signals stage's posts and topics, with filters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts
from ..stats import core as stats_core
from .codes import column_codes, panel_cached
from .common import MAKE_TARGET, file_name, jsonable, label_of, producer
from .loading import ExplorerData
from .wstats import weighted_share_ci

QUESTION_FILTERS = ("age_group", "gender", "state", "income_bracket", "education_level")
#: Base-size rule of the region table (the statistics core's counts): a region with too few customers gets no
#: share, one with few is flagged "caution".
REGION_RULE = stats_core.BaseSizeRule(rse_caution=None, rse_suppress=None)


def _posts_with_topics(data: ExplorerData) -> pd.DataFrame | None:
    """The run's posts, with each post's topic when the text stage labelled them (``post_topics``)."""
    from ..text import audiences as text_aud

    topics = data.optional("post_topics")
    if topics is None:
        return text_aud.load_posts(data.paths)  # keywords only
    if "text" in topics.columns:
        return topics
    raw = text_aud.load_posts(data.paths)
    if raw is not None and "post_id" in raw and "post_id" in topics:
        return raw.merge(topics[["post_id", "topic"]], on="post_id", how="left")
    if raw is not None and len(raw) == len(topics):
        return raw.assign(topic=topics["topic"].to_numpy())
    return raw


def _topics_only(data: ExplorerData) -> pd.DataFrame | None:
    """``user_id``, ``topic`` (and ``platform``) of every labelled post, without the text: all that a topic
    question needs, and a fraction of the memory and read time of the posts at a million users."""
    import pyarrow.parquet as pq

    if not artifacts.exists(data.paths, "post_topics"):
        return None
    have = pq.read_schema(artifacts.artifact("post_topics").path(data.paths)).names
    if "platform" not in have and "text" not in have:
        return None  # the platform then comes from the posts table, joined in (_posts_with_topics)
    cols = [c for c in ("user_id", "topic", "platform") if c in have]
    return artifacts.load(data.paths, "post_topics", columns=cols, allow_stale=True)


def text_posts(data: ExplorerData, with_text: bool = False) -> pd.DataFrame | None:
    """The run's posts with their topic when the text stage labelled them (``post_topics``), else None.

    Without ``with_text`` (topic questions) the post texts are not read when the topics table has what the
    view needs; a keyword question reads them once."""
    if "posts" in data._cache:
        return data._cache["posts"]
    if not with_text and "posts_topics" in data._cache:
        return data._cache["posts_topics"]
    posts = _topics_only(data) if not with_text else None
    key = "posts_topics" if posts is not None else "posts"
    if posts is None:
        posts = _posts_with_topics(data)
        posts = posts.copy() if posts is not None else None  # it may be the app's cached artifact
    if posts is not None:
        posts["user_id"] = posts["user_id"].astype(str)
    data._cache[key] = posts
    return posts


def topic_posts(data: ExplorerData) -> pd.DataFrame | None:
    """Every labelled post as its author's panel row (``user_id``: row position, -1 for an author who is not
    a customer of the panel), ``topic`` and ``platform`` (categoricals), read once from ``post_topics``
    without the texts; None when the topics table lacks them (the posts table is then joined in,
    :func:`text_posts`). A topic question is then integer work: at a million users the posts' ids and topics
    as Python strings were seconds to read and match, and most of the app's memory."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return panel_cached(data, "topic_posts", lambda: _read_topic_posts(data))


def _read_topic_posts(data: ExplorerData) -> pd.DataFrame | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = None
    if artifacts.exists(data.paths, "post_topics"):
        f = artifacts.artifact("post_topics").path(data.paths)
        have = pq.read_schema(f).names
        if {"user_id", "topic"} <= set(have) and ("platform" in have or "text" in have):
            t = pq.read_table(f, columns=[c for c in ("user_id", "topic", "platform") if c in have])
            users = t["user_id"].combine_chunks().cast(pa.large_string()).dictionary_encode()
            panel_ids = pa.array(data.panel["user_id"].to_numpy(), pa.large_string())
            row_of_user = pc.index_in(users.dictionary, value_set=panel_ids).fill_null(-1).to_numpy()
            idx = users.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            cols = {"user_id": np.where(idx >= 0, np.append(row_of_user, -1)[idx], -1).astype(np.int64)}
            for c in ("topic", "platform"):
                if c in have:
                    d = t[c].combine_chunks().cast(pa.large_string()).dictionary_encode()
                    cols[c] = pd.Categorical.from_codes(d.indices.fill_null(-1).to_numpy(zero_copy_only=False),
                                                        categories=d.dictionary.to_pylist())
            del t
            out = pd.DataFrame(cols)
    return out


def _present(values: pd.Series) -> list[str]:
    """Sorted distinct observed values as text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return sorted(map(str, values.cat.remove_unused_categories().cat.categories))
    return sorted(map(str, pd.unique(values.dropna())))


def question_options(data: ExplorerData) -> dict:
    """What the questions view can ask: the topics of the run's posts and the filter values."""
    posts = topic_posts(data)
    if posts is None:
        posts = text_posts(data)
    if posts is None:
        raise artifacts.MissingArtifact(
            f"the text-signals stage has not run for this data: no posts ({file_name('posts')} from "
            f"{producer('posts')}, topics from {producer('post_topics')}; `{MAKE_TARGET}`)")
    topics = _present(posts["topic"]) if "topic" in posts else []
    # a column's distinct values are its codes' cells (computed once per column)
    filters = {c: {"label": label_of(data, c), "values": sorted(map(str, column_codes(data, c)[1]))}
               for c in QUESTION_FILTERS if c in data.panel.columns}
    plats = _present(posts["platform"]) if "platform" in posts else []
    return jsonable({"topics": [{"value": t, "label": t.replace("_", " ")} for t in topics],
                     "platforms": plats, "filters": filters})


def question_audience(data: ExplorerData, topic: str | None = None, keyword: str | None = None,
                      platform: str | None = None, filters: dict | None = None) -> tuple[np.ndarray, str, dict]:
    """"Customers talking about X" (helpers.text.audiences.talking_about) among the customers matching
    ``filters`` (column -> value): row positions of the panel, a plain name and its definition."""
    from ..text import audiences as text_aud

    posts = topic_posts(data) if not keyword else None
    by_row = posts is not None  # posts keyed by the panel row of their author
    if posts is None:
        posts = text_posts(data, with_text=bool(keyword))
    if posts is None:
        question_options(data)  # raises the stage-has-not-run error
    if not topic and not keyword:
        raise ValueError("pick a topic or type a keyword")
    if topic and "topic" not in posts:
        raise ValueError("this run's posts have no topics (the text stage labels them); search a keyword")
    if topic and topic not in (set(_present(posts["topic"])) if by_row else set(posts["topic"].astype(str))):
        raise ValueError(f"unknown topic {str(topic)[:40]!r}")
    ta = text_aud.talking_about(posts, topic=topic or None, keyword=keyword or None, platform=platform or None)
    if by_row:
        found = ta.ids.astype(np.int64).to_numpy()
        mask = np.zeros(len(data.panel), bool)
        mask[found[found >= 0]] = True
    else:
        mask = data.panel["user_id"].isin(set(ta.ids.astype(str))).to_numpy()
    for col, val in (filters or {}).items():
        if col not in QUESTION_FILTERS or col not in data.panel.columns:
            raise ValueError(f"unknown filter {str(col)[:40]!r}; filters: "
                             f"{[c for c in QUESTION_FILTERS if c in data.panel]}")
        mask &= (data.panel[col].astype(str) == str(val)).to_numpy()
    what = " and ".join(x for x in ((topic or "").replace("_", " "), f'"{keyword}"' if keyword else "") if x)
    where = ", ".join(f"{label_of(data, c).lower()} {v}" for c, v in (filters or {}).items())
    name = f"talking about {what}" + (f" ({where})" if where else "")
    return np.flatnonzero(mask), name, {**ta.definition, "filters": dict(filters or {})}


def regions(data: ExplorerData, rows: np.ndarray, column: str = "state", top: int = 12) -> list[dict]:
    """Share of each region's customers in the audience (weighted, 95% logit interval) with the region's
    customer count and base-size flag (:data:`REGION_RULE`; suppressed regions are left out), largest first."""
    p = data.panel
    if column not in p.columns:
        return []
    w = p["weight"].to_numpy(float)
    member = np.zeros(len(p), bool)
    member[rows] = True
    # the rows of each region (as text, the way groupby(astype(str)) groups them) from the column's codes
    codes, cells = column_codes(data, column)
    text = cells.astype(str).tolist()
    if (codes < 0).any():
        text.append(str(p[column].iloc[[int(np.argmax(codes < 0))]].astype(str).iloc[0]))
    key_codes, keys = pd.factorize(np.asarray(text, dtype=object))
    key = key_codes[codes]  # code -1 (missing) takes the last entry: the missing value's text
    order = np.argsort(key, kind="stable")
    bounds = np.cumsum(np.bincount(key, minlength=len(keys)))
    groups = {keys[k]: order[bounds[k] - n:bounds[k]] for k, n in enumerate(np.bincount(key, minlength=len(keys)))}
    out = []
    for reg, idx in sorted(groups.items()):
        flag = str(REGION_RULE.flag([len(idx)], [stats_core.kish_effective_n(w[idx])])[0])
        if flag == "suppressed":
            continue
        out.append({"region": reg, "n_customers": int(len(idx)), "base_flag": flag,
                    **weighted_share_ci(member[idx], w[idx])})
    return sorted(out, key=lambda r: -r["value"])[:top]
