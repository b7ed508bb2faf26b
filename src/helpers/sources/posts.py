"""Social posts with planted topics and sentiment (a source of the synthetic world).

Each user has an interest *rate* per topic (expected posts on that topic per :data:`WINDOW_DAYS` days):

``log rate[u, k] = log BASE_RATE[k] + activity[u] + segment[k, s] + age[k, a] + female[k] * 1(female)
+ income[k] * (income_index - 2.5) + education[k] * (education_index - 2) + state[k, state] + load[state] * t[u]``

(``t[u] ~ N(0, 1)`` a "trend-setter" trait shared by sustainable fashion and premium tech whose loading
depends on the state: that is the planted co-engagement by region; ``activity[u] ~ N(-sd^2/2, sd^2)``
is the user's overall posting intensity). Posts per user and topic are Poisson(rate) over the window,
dated uniformly in the window, on a platform that depends on age. Each post is 1-3 short sentences:
topic words drawn from the topic's word distribution (Zipf weights over a hand-built vocabulary),
English function words, and sentiment words whose number and polarity follow the post's planted
sentiment ``s in [-1, 1]`` (topic mean + user tendency + noise). Missing education (partner not matched)
is its own level with no effect.

Files: ``raw/posts.parquet`` (``post_id, user_id, platform, date, text``), ``truth/posts_truth.parquet``
(one row per post: ``post_id, user_id, topic, sentiment, mentions_brand``), ``truth/posts_user_rates.parquet``
(one row per user: ``rate_<topic>`` for every topic and ``trendsetter``) and ``truth/text_truth.json``
(topics, vocabulary, topic-word distributions, effects, window). :func:`write_posts` draws and writes them
:data:`CHUNK_USERS` users at a time (one parquet row group per chunk), so a 1M-user panel's posts are never
all in memory; :func:`simulate_posts` returns the same chunks concatenated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import schema as S
from .places import STATE_CODES

WINDOW_DAYS = 90
PLATFORMS = ["x", "instagram", "tiktok", "reddit"]
#: P(platform | age group), rows in schema.AGE_GROUPS order
P_PLATFORM = np.array([[0.15, 0.35, 0.40, 0.10], [0.22, 0.35, 0.25, 0.18], [0.30, 0.35, 0.15, 0.20],
                       [0.35, 0.40, 0.08, 0.17], [0.40, 0.42, 0.05, 0.13], [0.45, 0.45, 0.03, 0.07]])

BRANDS = {"luxury_watch": "aurelio", "pop_star": "novalane"}
TOPIC_LABELS = {"luxury_watch": "Luxury watch brand (Aurelio)", "sustainable_fashion": "Sustainable fashion",
                "premium_tech": "Premium tech", "health": "Health and fitness",
                "pop_star": "Pop star (Nova Lane)", "food": "Food and cooking", "travel": "Travel",
                "sports": "Sports", "pets": "Pets"}
TOPICS = list(TOPIC_LABELS)
VOCAB: dict[str, list[str]] = {
    "luxury_watch": ["aurelio", "watch", "chronograph", "dial", "sapphire", "automatic", "movement", "bezel",
                     "strap", "timepiece", "collector", "limited", "edition", "wrist", "boutique", "gold",
                     "steel", "craftsmanship", "swiss", "tourbillon"],
    "sustainable_fashion": ["thrift", "secondhand", "organic", "cotton", "recycled", "wardrobe", "capsule",
                            "slow", "fashion", "ethical", "upcycled", "linen", "vintage", "closet",
                            "sustainable", "outfit", "denim", "mending", "resale", "fabric"],
    "premium_tech": ["laptop", "phone", "flagship", "chip", "battery", "display", "camera", "headphones",
                     "noise", "cancelling", "upgrade", "specs", "processor", "wireless", "gadget", "oled",
                     "tablet", "smartwatch", "keyboard", "firmware"],
    "health": ["workout", "gym", "protein", "sleep", "meditation", "running", "steps", "cardio", "yoga",
               "nutrition", "vitamins", "healthy", "recovery", "hydration", "marathon", "stretching",
               "wellness", "salad", "weights", "checkup"],
    "pop_star": ["novalane", "tour", "album", "concert", "tickets", "single", "fans", "stage", "setlist",
                 "vocals", "lyrics", "music", "encore", "arena", "merch", "chart", "dance", "playlist",
                 "remix", "premiere"],
    "food": ["recipe", "pizza", "dinner", "coffee", "brunch", "tacos", "bake", "kitchen", "restaurant",
             "spicy", "pasta", "dessert", "grill", "soup", "bread", "chocolate", "ramen", "burger", "cheese",
             "breakfast"],
    "travel": ["flight", "beach", "hotel", "trip", "passport", "airport", "island", "roadtrip", "luggage",
               "mountains", "hostel", "itinerary", "sunset", "cruise", "backpacking", "resort", "visa",
               "layover", "map", "souvenir"],
    "sports": ["game", "team", "score", "playoffs", "coach", "season", "league", "goal", "stadium",
               "championship", "quarterback", "match", "referee", "draft", "fantasy", "halftime", "rivalry",
               "trade", "rookie", "overtime"],
    "pets": ["dog", "cat", "puppy", "kitten", "vet", "leash", "treats", "shelter", "adopt", "fur", "paws",
             "walkies", "litter", "groomer", "tail", "fetch", "bark", "purr", "rescue", "collar"],
}
FUNCTION_WORDS = ["the", "a", "my", "this", "is", "so", "and", "just", "to", "of", "with", "for", "it",
                  "really", "today", "new", "got", "we", "at", "on", "i", "was", "about", "that", "again"]
POSITIVE = ["love", "great", "amazing", "awesome", "happy", "excited", "best", "beautiful", "perfect",
            "fantastic"]
NEGATIVE = ["hate", "terrible", "awful", "disappointed", "worst", "boring", "annoying", "sad", "broken",
            "horrible"]

BASE_RATE = {"luxury_watch": 0.12, "sustainable_fashion": 0.35, "premium_tech": 0.45, "health": 0.55,
             "pop_star": 0.35, "food": 0.7, "travel": 0.45, "sports": 0.5, "pets": 0.45}
#: log multipliers by age group (schema.AGE_GROUPS order)
AGE_EFFECT = {"luxury_watch": [-0.6, -0.1, 0.2, 0.3, 0.2, 0.0],
              "sustainable_fashion": [0.5, 0.4, 0.1, -0.2, -0.4, -0.6],
              "premium_tech": [0.2, 0.4, 0.2, 0.0, -0.3, -0.6],
              "health": [-0.1, 0.1, 0.2, 0.2, 0.1, 0.0],
              "pop_star": [1.2, 0.5, -0.2, -0.7, -1.0, -1.3],
              "food": [0.0] * 6, "travel": [0.0, 0.2, 0.1, 0.0, 0.1, 0.2],
              "sports": [0.1, 0.1, 0.1, 0.0, -0.1, -0.2], "pets": [0.0, 0.1, 0.1, 0.0, 0.0, 0.0]}
FEMALE_EFFECT = {"luxury_watch": -0.4, "sustainable_fashion": 0.7, "premium_tech": -0.3, "health": 0.2,
                 "pop_star": 0.7, "food": 0.1, "travel": 0.1, "sports": -0.6, "pets": 0.2}
#: log multiplier per income-bracket step (centred on the middle of schema.INCOME_BRACKETS)
INCOME_EFFECT = {"luxury_watch": 0.55, "sustainable_fashion": 0.1, "premium_tech": 0.2, "health": 0.08,
                 "pop_star": -0.05, "food": 0.0, "travel": 0.15, "sports": 0.0, "pets": 0.0}
#: log multiplier per education step (centred on some_college); missing education: no effect
EDUCATION_EFFECT = {"luxury_watch": 0.1, "sustainable_fashion": 0.15, "premium_tech": 0.1, "health": 0.3,
                    "pop_star": -0.1, "food": 0.0, "travel": 0.1, "sports": -0.05, "pets": 0.0}
#: topic mean sentiment
SENTIMENT_MEAN = {"luxury_watch": 0.35, "sustainable_fashion": 0.3, "premium_tech": 0.05, "health": 0.25,
                  "pop_star": 0.45, "food": 0.4, "travel": 0.3, "sports": -0.05, "pets": 0.5}
ACTIVITY_SD = 0.8
SEGMENT_SD = 0.3
STATE_SD = 0.25
CO_TOPICS = ("sustainable_fashion", "premium_tech")
#: states with a strong trend-setter loading (co-engagement of fashion and tech), the others get a weak one
CO_STATES = {"CA": 0.9, "NY": 0.9, "WA": 0.8, "OR": 0.8, "MA": 0.7, "CO": 0.7, "IL": 0.6, "DC": 0.9,
             "VT": 0.8, "HI": 0.6}
CO_DEFAULT = 0.1


def _users(users: Any) -> pd.DataFrame:
    """A per-user frame from a SyntheticPanel (data + truth) or a DataFrame with user_id (+ attributes)."""
    if hasattr(users, "data") and hasattr(users, "truth"):
        df = users.data[[c for c in ("user_id", "age_group", "income_bracket", "education_level")
                         if c in users.data]].merge(
            users.truth[[c for c in ("user_id", "true_segment", "state", "gender") if c in users.truth]],
            on="user_id", how="left")
    elif isinstance(users, pd.DataFrame):
        if "user_id" not in users:
            raise ValueError("write_posts: the users frame needs a 'user_id' column")
        df = users.copy()
        if "true_segment" not in df and "segment" in df:
            df["true_segment"] = df["segment"]
    else:
        raise TypeError("write_posts expects a SyntheticPanel or a DataFrame of users")
    return df.reset_index(drop=True)


def _index(values: pd.Series, levels: list, default: float) -> np.ndarray:
    """Position of each value in ``levels`` as float (NaN when absent or missing; vectorised lookup)."""
    if not len(values):
        return np.zeros(0) + default
    idx = pd.Index(levels).get_indexer(pd.Index(values.astype(object)))
    return np.where(idx >= 0, idx, np.nan).astype(float)


def planted_effects(users: pd.DataFrame, rng: np.random.Generator,
                    n_segments: int | None = None) -> dict[str, np.ndarray]:
    """Segment and state effects per topic (drawn once for the whole panel, before any chunk).

    ``n_segments`` (default: the users' largest segment + 1) sets the rows of the segment table (at least 6).
    """
    seg = users["true_segment"].fillna(0).astype(int).to_numpy() if "true_segment" in users else np.zeros(0, int)
    n_seg = n_segments if n_segments is not None else (int(seg.max()) + 1 if seg.size else 1)
    return {"segment": rng.normal(0, SEGMENT_SD, (len(TOPICS), max(n_seg, 6))),
            "state": rng.normal(0, STATE_SD, (len(TOPICS), len(STATE_CODES)))}


def interest_rates(users: pd.DataFrame, rng: np.random.Generator,
                   effects: dict[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, dict]:
    """Planted interest rate per user and topic (expected posts in the window) and the drawn effects.

    ``effects`` (from :func:`planted_effects`) are drawn here when not given; the chunked writer draws
    them once and passes them to every chunk.
    """
    n = len(users)
    seg = users["true_segment"].fillna(0).astype(int).to_numpy() if "true_segment" in users else np.zeros(n, int)
    eff = effects if effects is not None else planted_effects(users, rng)
    seg_eff, state_eff = eff["segment"], eff["state"]
    age = _index(users.get("age_group", pd.Series([None] * n)), S.AGE_GROUPS, np.nan)
    inc = _index(users.get("income_bracket", pd.Series([None] * n)), S.INCOME_BRACKETS, np.nan)
    edu = _index(users.get("education_level", pd.Series([None] * n)), S.EDUCATION_LEVELS, np.nan)
    fem = (users.get("gender", pd.Series([None] * n)).astype(object) == "female").to_numpy(dtype=float)
    st = _index(users.get("state", pd.Series([None] * n)), STATE_CODES, np.nan)
    activity = rng.normal(-ACTIVITY_SD ** 2 / 2, ACTIVITY_SD, n)
    trend = rng.normal(0, 1, n)
    load_by_state = np.array([CO_STATES.get(code, CO_DEFAULT) for code in STATE_CODES])
    load = np.where(np.isfinite(st), load_by_state[np.nan_to_num(st).astype(int)], CO_DEFAULT)
    out = {}
    for k, t in enumerate(TOPICS):
        lr = np.log(BASE_RATE[t]) + activity + seg_eff[k, seg]
        lr += np.where(np.isfinite(age), np.asarray(AGE_EFFECT[t])[np.nan_to_num(age).astype(int)], 0.0)
        lr += FEMALE_EFFECT[t] * fem
        lr += np.where(np.isfinite(inc), INCOME_EFFECT[t] * (inc - 2.5), 0.0)
        lr += np.where(np.isfinite(edu), EDUCATION_EFFECT[t] * (edu - 2.0), 0.0)
        lr += np.where(np.isfinite(st), state_eff[k, np.nan_to_num(st).astype(int)], 0.0)
        if t in CO_TOPICS:
            lr += load * trend - load ** 2 / 2
        out[f"rate_{t}"] = np.exp(lr)
    rates = pd.DataFrame({"user_id": users["user_id"].to_numpy(), **out, "trendsetter": trend})
    effects_out = {"segment": seg_eff.round(6).tolist(), "state": state_eff.round(6).tolist()}
    return rates, effects_out


def word_distributions() -> dict[str, np.ndarray]:
    """Planted topic-word distribution: Zipf weights (1/rank^0.8) over the topic's words, brand first."""
    return {t: (w := 1.0 / np.arange(1, len(VOCAB[t]) + 1) ** 0.8) / w.sum() for t in TOPICS}


def _vocabulary() -> tuple[pa.Array, dict[str, int]]:
    """Every word once (topic words, function words, positive, negative) and each list's first code."""
    lists = {**{t: VOCAB[t] for t in TOPICS}, "_function": FUNCTION_WORDS, "_positive": POSITIVE,
             "_negative": NEGATIVE}
    words, first = [], {}
    for name, ws in lists.items():
        first[name] = len(words)
        words += ws
    return pa.array(words, pa.string()), first


def _sort_by_group_then_key(group: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``np.lexsort((r, group))`` for integer groups and ``r`` in [0, 1), by one 64-bit key (several times faster).

    The key holds the group in its top 24 bits and the first 40 bits of ``r`` below; the rare runs whose keys
    tie (equal leading bits) are ordered by the full ``r``, so the order is exactly lexsort's.
    """
    if group.size == 0 or group.max() >= 2**24:
        return np.lexsort((r, group))
    key = (group.astype(np.uint64) << np.uint64(40)) | (r * 2.0**40).astype(np.uint64)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    tie = np.flatnonzero(ks[1:] == ks[:-1])
    if tie.size:
        # runs of equal keys: [a, b] with a = first tied position; reorder each by the exact r (stable)
        starts = tie[np.r_[True, np.diff(tie) != 1]]
        ends = tie[np.r_[np.diff(tie) != 1, True]] + 2
        for a, b in zip(starts, ends):
            run = order[a:b]
            order[a:b] = run[np.argsort(r[run], kind="stable")]
    return order


def post_texts(rng: np.random.Generator, topic: np.ndarray, sent: np.ndarray,
               phis: dict[str, np.ndarray]) -> pa.Array:
    """Texts of all posts at once (an Arrow string array; vectorised draws, words joined by Arrow).

    Each post has 1-3 sentences; a sentence has 3-5 topic words (drawn from the topic's distribution),
    2-5 function words and the post's sentiment words, in random order, capitalised, ending in "." or "!".
    A post gets Binomial(3, min(1, 1.2 |s|)) sentiment words, each of the post's polarity with probability
    0.9, spread over its sentences. Words are drawn as codes into one vocabulary (the same draws as drawing
    the words themselves) and joined by Arrow's string kernels, not one Python join per sentence.
    """
    n = topic.size
    if n == 0:
        return pa.array([], pa.string())
    vocab, first = _vocabulary()
    n_sent = rng.choice(np.array([1, 1, 2, 2, 3]), n)
    post_of_sent = np.repeat(np.arange(n), n_sent)
    S_ = post_of_sent.size
    n_top = rng.integers(3, 6, S_)
    n_fun = rng.integers(2, 6, S_)
    n_senti = rng.binomial(3, np.minimum(1.0, np.abs(sent) * 1.2))
    senti_post = np.repeat(np.arange(n), n_senti)
    first_sent = np.concatenate([[0], np.cumsum(n_sent)[:-1]])
    senti_sent = first_sent[senti_post] + (rng.random(senti_post.size) * n_sent[senti_post]).astype(int)
    # topic words, drawn topic by topic (choice of an index draws exactly as choice of the word list)
    top_sent = np.repeat(np.arange(S_), n_top)
    top_topic = topic[post_of_sent][top_sent]
    top_words = np.empty(top_sent.size, dtype=np.int32)
    for k, t in enumerate(TOPICS):
        m = top_topic == k
        if m.any():
            top_words[m] = first[t] + rng.choice(len(VOCAB[t]), int(m.sum()), p=phis[t])
    fun_sent = np.repeat(np.arange(S_), n_fun)
    fun_words = first["_function"] + rng.choice(len(FUNCTION_WORDS), fun_sent.size)
    polar = (sent[senti_post] > 0) == (rng.random(senti_post.size) < 0.9)
    senti_words = np.where(polar, first["_positive"] + rng.choice(len(POSITIVE), senti_post.size),
                           first["_negative"] + rng.choice(len(NEGATIVE), senti_post.size))
    sid = np.concatenate([top_sent, fun_sent, senti_sent])
    words = np.concatenate([top_words, fun_words, senti_words]).astype(np.int32)
    order = _sort_by_group_then_key(sid, rng.random(sid.size))
    sid, words = sid[order], words[order]
    bounds = np.searchsorted(sid, np.arange(S_ + 1)).astype(np.int32)
    ends = pa.array(np.array([".", ".", "!"], dtype=object)[rng.choice(3, S_)], pa.string())
    sentences = pc.binary_join(pa.ListArray.from_arrays(pa.array(bounds), vocab.take(pa.array(words))), " ")
    sentences = pc.binary_join_element_wise(pc.utf8_capitalize(sentences), ends, "")
    pb = np.concatenate([[0], np.cumsum(n_sent)]).astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(pb), sentences), " ")


#: users per generation chunk: posts, truth and rates are drawn and written chunk by chunk, so a 1M-user
#: panel never holds all its posts in memory; a panel of at most this many users is one chunk
CHUNK_USERS = 100_000

_RAW_SCHEMA = {"post_id": "string", "user_id": "string", "platform": "string", "date": "date32",
               "text": "string"}


def _post_ids(first_post: int, n: int) -> np.ndarray:
    """``P00000001``-style post ids ``first_post + 1 ... first_post + n`` (formatted by Arrow, not per row)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(first_post + 1, first_post + n + 1)), pa.string()), 8, "0")
    return pc.binary_join_element_wise("P", digits, "").to_numpy(zero_copy_only=False)


def _chunk_posts(u: pd.DataFrame, rng: np.random.Generator, effects: dict[str, np.ndarray], end: pd.Timestamp,
                 phis: dict[str, np.ndarray], first_post: int, arrow: bool = False):
    """Posts, post truth and rates of one chunk of users (post ids numbered from ``first_post + 1``).

    ``arrow=True`` returns the tables of :func:`posts_tables` instead, built from the arrays (the same
    values and schema, without a Python object per post and cell)."""
    rates, _ = interest_rates(u, rng, effects)
    R = rates[[f"rate_{t}" for t in TOPICS]].to_numpy()
    counts = rng.poisson(R)
    uid = np.repeat(np.arange(len(u)), counts.sum(1))
    # topic of each post in user order: the k-th topic repeated counts[u, k] times, user after user
    topic = np.repeat(np.tile(np.arange(len(TOPICS)), len(u)), counts.reshape(-1)) if len(u) else np.zeros(0, int)
    n = uid.size
    days = rng.integers(0, WINDOW_DAYS, n)
    date = (end - pd.to_timedelta(days, unit="D")).normalize()
    age = _index(u["age_group"] if "age_group" in u else pd.Series([None] * len(u)), S.AGE_GROUPS, np.nan)
    age_u = np.where(np.isfinite(age), age, 1).astype(int)[uid]
    cum = P_PLATFORM[age_u].cumsum(1)
    plat = (rng.random(n)[:, None] > cum).sum(1).clip(0, len(PLATFORMS) - 1)
    tendency = rng.normal(0, 0.2, len(u))
    mean_s = np.array([SENTIMENT_MEAN[t] for t in TOPICS])[topic] if n else np.zeros(0)
    sent = np.clip(mean_s + tendency[uid] + rng.normal(0, 0.35, n), -1, 1)
    texts = post_texts(rng, topic, sent, phis)
    # newest post first within each user: np.lexsort((-days, uid)) as one integer key (exact, stable)
    order = np.argsort(uid.astype(np.int64) * WINDOW_DAYS + (WINDOW_DAYS - 1 - days), kind="stable")
    post_id = _post_ids(first_post, n)
    brand = "|".join(rf"\b{b}\b" for b in BRANDS.values())
    if arrow and n:
        take = pa.array(order)
        pid = pa.array(post_id, pa.string())
        user = pa.array(u["user_id"].astype(str).to_numpy(), pa.string()).take(pa.array(uid[order]))
        raw = pa.table({"post_id": pid, "user_id": user,
                        "platform": pa.array(PLATFORMS, pa.string()).take(pa.array(plat[order])),
                        "date": pa.array(pd.DatetimeIndex(date).values[order].astype("datetime64[D]"), pa.date32()),
                        "text": texts.take(take)})
        truth = pa.table({"post_id": pid, "user_id": user,
                          "topic": pa.array(TOPICS, pa.string()).take(pa.array(topic[order])),
                          "sentiment": pa.array(sent[order].astype(float)),
                          "mentions_brand": pc.match_substring_regex(pc.utf8_lower(texts), brand).take(take)})
        tables = {"posts": raw, "posts_truth": truth}
        # the pandas metadata of posts_tables' from_pandas, from the first row as the pandas frames hold it
        like = posts_tables(*(t.slice(0, 1).to_pandas() for t in tables.values()), rates.iloc[:1])
        out = {k: t.cast(like[k].schema) for k, t in tables.items()}
        out["posts_user_rates"] = pa.Table.from_pandas(rates, preserve_index=False)
        return out
    raw = pd.DataFrame({"post_id": post_id, "user_id": u["user_id"].astype(str).to_numpy()[uid][order],
                        "platform": np.array(PLATFORMS, dtype=object)[plat][order],
                        "date": pd.DatetimeIndex(date)[order].date if n else [],
                        "text": texts.take(pa.array(order)).to_numpy(zero_copy_only=False) if n else []})
    tpc = np.array(TOPICS, dtype=object)[topic][order]
    mentions = (pc.match_substring_regex(pc.utf8_lower(texts), brand).to_numpy(zero_copy_only=False)[order]
                if n else np.zeros(0, bool))
    truth = pd.DataFrame({"post_id": post_id, "user_id": raw["user_id"].to_numpy(), "topic": tpc,
                          "sentiment": sent[order].astype(float), "mentions_brand": mentions.astype(bool)})
    if arrow:
        return posts_tables(raw, truth, rates)
    return raw, truth, rates


def _effects_stream(users: pd.DataFrame, seed: int, n_segments: int | None = None
                    ) -> tuple[dict[str, np.ndarray], np.random.Generator]:
    """The planted effects (stream ``[seed, 18]``) and that stream after them (the stream of chunk 0)."""
    rng = np.random.default_rng([seed, 18])
    return planted_effects(users, rng, n_segments), rng


def posts_chunk(users: pd.DataFrame, seed: int, c: int, observation_date: str | None = None,
                first_post: int = 0, effects: dict[str, np.ndarray] | None = None,
                n_segments: int | None = None, arrow: bool = False):
    """Posts, post truth and rates of chunk ``c`` of the users (the users of that chunk only).

    Chunk 0 continues the stream ``[seed, 18]`` after the effects were drawn, chunk ``c > 0`` uses its own
    stream ``[seed, 18, c]``: any chunk can be drawn on its own (in another process) and gives the same rows
    as :func:`iter_posts`. ``effects`` default to those drawn from ``[seed, 18]`` for ``n_segments``
    segments (default: the chunk's largest segment + 1, at least 6). ``arrow=True``: the tables of
    :func:`posts_tables` of those frames, built without the frames.
    """
    if n_segments is None and effects is not None:
        n_segments = effects["segment"].shape[1]  # the same draws before chunk 0's stream as the given effects
    drawn, rng = _effects_stream(users, seed, n_segments)
    r = rng if c == 0 else np.random.default_rng([seed, 18, c])
    end = pd.Timestamp(observation_date or "2026-06-30")
    return _chunk_posts(users.reset_index(drop=True), r, effects if effects is not None else drawn, end,
                        word_distributions(), first_post, arrow)


def posts_params(seed: int, observation_date: str | None, effects: dict[str, np.ndarray], n_posts: int,
                 n_users: int, chunk_users: int) -> dict:
    """The truth parameters of a posts run (``text_truth.json``)."""
    phis = word_distributions()
    end = pd.Timestamp(observation_date or "2026-06-30")
    return {"topics": TOPICS, "topic_labels": TOPIC_LABELS, "brands": BRANDS, "vocab": VOCAB,
            "topic_word": {t: phis[t].round(8).tolist() for t in TOPICS},
            "function_words": FUNCTION_WORDS, "positive_words": POSITIVE, "negative_words": NEGATIVE,
            "window_days": WINDOW_DAYS, "observation_date": str(end.date()), "platforms": PLATFORMS,
            "base_rate": BASE_RATE, "age_effect": AGE_EFFECT, "female_effect": FEMALE_EFFECT,
            "income_effect": INCOME_EFFECT, "education_effect": EDUCATION_EFFECT,
            "sentiment_mean": SENTIMENT_MEAN, "co_topics": list(CO_TOPICS), "co_states": CO_STATES,
            "co_default": CO_DEFAULT, "activity_sd": ACTIVITY_SD,
            "effects": {k: v.round(6).tolist() for k, v in effects.items()}, "seed": seed,
            "n_posts": int(n_posts), "n_users": int(n_users), "chunk_users": int(chunk_users)}


def iter_posts(users: Any, seed: int = 42, observation_date: str | None = None,
               chunk_users: int = CHUNK_USERS):
    """Yield ``(raw, truth, rates)`` chunk by chunk, then return the truth parameters (``StopIteration.value``).

    The segment and state effects are drawn once (stream ``[seed, 18]``); chunk 0 continues that stream and
    chunk ``c > 0`` uses its own stream ``[seed, 18, c]``, so the posts depend on the seed and on
    ``chunk_users`` only (a panel of at most ``chunk_users`` users is drawn exactly as one block).
    """
    if chunk_users < 1:
        raise ValueError(f"iter_posts: chunk_users must be >= 1, got {chunk_users}")
    u = _users(users)
    effects, _ = _effects_stream(u, seed)
    n_posts = 0
    for c, lo in enumerate(range(0, max(len(u), 1), chunk_users)):
        raw, truth, rates = posts_chunk(u.iloc[lo:lo + chunk_users], seed, c, observation_date, n_posts, effects)
        n_posts += len(raw)
        yield raw, truth, rates
    return posts_params(seed, observation_date, effects, n_posts, len(u), chunk_users)


def posts_tables(raw: pd.DataFrame, truth: pd.DataFrame, rates: pd.DataFrame) -> dict[str, pa.Table]:
    """The Arrow tables :func:`write_posts` writes for one chunk (``posts``, ``posts_truth``, ``posts_user_rates``)."""
    raw_schema = pa.schema([(c, getattr(pa, t)()) for c, t in _RAW_SCHEMA.items()])
    return {"posts": pa.Table.from_pandas(raw, schema=raw_schema, preserve_index=False),
            "posts_truth": pa.Table.from_pandas(truth, preserve_index=False),
            "posts_user_rates": pa.Table.from_pandas(rates, preserve_index=False)}


def simulate_posts(users: Any, seed: int = 42, observation_date: str | None = None,
                   chunk_users: int = CHUNK_USERS) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Posts (raw), post truth, user rates and the truth parameters in memory (the chunks of :func:`iter_posts`)."""
    gen = iter_posts(users, seed, observation_date, chunk_users)
    parts = []
    while True:
        try:
            parts.append(next(gen))
        except StopIteration as stop:
            params = stop.value
            break
    raw, truth, rates = (pd.concat([p[i] for p in parts], ignore_index=True) for i in range(3))
    return raw, truth, rates, params


def write_posts(users: Any, raw_dir: str | Path, truth_dir: str | Path, seed: int = 42,
                observation_date: str | None = None, chunk_users: int = CHUNK_USERS) -> dict[str, Path]:
    """Write ``raw/posts.parquet`` and the truth files chunk by chunk (see the module docstring); their paths.

    Each chunk of ``chunk_users`` users becomes one row group of each parquet file, so memory holds one
    chunk's posts at a time; the files equal :func:`simulate_posts`'s frames. Files are written under a
    temporary name and renamed at the end, so a failure leaves no half-written table.
    """
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    paths = {"posts": raw_dir / "posts.parquet", "posts_truth": truth_dir / "posts_truth.parquet",
             "posts_user_rates": truth_dir / "posts_user_rates.parquet", "text_truth": truth_dir / "text_truth.json"}
    tmp = {k: v.with_name(v.name + ".part") for k, v in paths.items()}
    writers: dict[str, Any] = {}
    gen = iter_posts(users, seed, observation_date, chunk_users)
    try:
        while True:
            try:
                chunk = next(gen)
            except StopIteration as stop:
                params = stop.value
                break
            for key, table in posts_tables(*chunk).items():
                if key not in writers:
                    writers[key] = pq.ParquetWriter(tmp[key], table.schema)
                writers[key].write_table(table.cast(writers[key].schema))
    except BaseException:
        for w in writers.values():
            w.close()
        for k in writers:
            tmp[k].unlink(missing_ok=True)
        raise
    for w in writers.values():
        w.close()
    tmp["text_truth"].write_text(json.dumps(params, indent=1))
    for k in paths:
        tmp[k].replace(paths[k])
    return paths
