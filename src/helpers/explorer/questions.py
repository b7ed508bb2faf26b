"""The Questions view: "customers talking about X" from the text-signals stage's posts and topics, with filters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts
from ..stats import core as stats_core
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


def question_options(data: ExplorerData) -> dict:
    """What the questions view can ask: the topics of the run's posts and the filter values."""
    posts = text_posts(data)
    if posts is None:
        raise artifacts.MissingArtifact(
            f"the text-signals stage has not run for this data: no posts ({file_name('posts')} from "
            f"{producer('posts')}, topics from {producer('post_topics')}; `{MAKE_TARGET}`)")
    topics = sorted(map(str, pd.unique(posts["topic"].dropna()))) if "topic" in posts else []
    filters = {c: {"label": label_of(data, c), "values": sorted(map(str, pd.unique(data.panel[c].dropna())))}
               for c in QUESTION_FILTERS if c in data.panel.columns}
    plats = sorted(map(str, pd.unique(posts["platform"].dropna()))) if "platform" in posts else []
    return jsonable({"topics": [{"value": t, "label": t.replace("_", " ")} for t in topics],
                     "platforms": plats, "filters": filters})


def question_audience(data: ExplorerData, topic: str | None = None, keyword: str | None = None,
                      platform: str | None = None, filters: dict | None = None) -> tuple[np.ndarray, str, dict]:
    """"Customers talking about X" (helpers.text.audiences.talking_about) among the customers matching
    ``filters`` (column -> value): row positions of the panel, a plain name and its definition."""
    from ..text import audiences as text_aud

    posts = text_posts(data, with_text=bool(keyword))
    if posts is None:
        question_options(data)  # raises the stage-has-not-run error
    if not topic and not keyword:
        raise ValueError("pick a topic or type a keyword")
    if topic and "topic" not in posts:
        raise ValueError("this run's posts have no topics (the text stage labels them); search a keyword")
    if topic and topic not in set(posts["topic"].astype(str)):
        raise ValueError(f"unknown topic {str(topic)[:40]!r}")
    ta = text_aud.talking_about(posts, topic=topic or None, keyword=keyword or None, platform=platform or None)
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
    out = []
    for reg, idx in p.groupby(p[column].astype(str)).indices.items():
        flag = str(REGION_RULE.flag([len(idx)], [stats_core.kish_effective_n(w[idx])])[0])
        if flag == "suppressed":
            continue
        out.append({"region": reg, "n_customers": int(len(idx)), "base_flag": flag,
                    **weighted_share_ci(member[idx], w[idx])})
    return sorted(out, key=lambda r: -r["value"])[:top]
