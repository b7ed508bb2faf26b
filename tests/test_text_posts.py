"""Synthetic posts: files, columns, planted dependence on age/gender/income, truth consistent with raw."""
import json

import numpy as np
import pandas as pd

from helpers.sources import posts as P


def _users(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": [f"U{i:05d}" for i in range(n)],
                         "age_group": rng.choice(["18-24", "35-44", "65+"], n),
                         "gender": rng.choice(["female", "male"], n),
                         "income_bracket": rng.choice(["<25k", "150k+"], n),
                         "education_level": rng.choice(["high_school", "graduate", None], n),
                         "state": rng.choice(["CA", "TX", "VT"], n), "true_segment": rng.integers(0, 6, n)})


def test_write_posts_files_and_truth(tmp_path):
    users = _users()
    paths = P.write_posts(users, tmp_path / "raw", tmp_path / "truth", seed=7)
    raw = pd.read_parquet(paths["posts"])
    truth = pd.read_parquet(paths["posts_truth"])
    rates = pd.read_parquet(paths["posts_user_rates"])
    params = json.loads(paths["text_truth"].read_text())
    assert list(raw.columns) == ["post_id", "user_id", "platform", "date", "text"]
    assert raw["post_id"].is_unique and (raw["post_id"].to_numpy() == truth["post_id"].to_numpy()).all()
    assert set(raw["platform"]) <= set(P.PLATFORMS) and raw["text"].str.len().gt(10).all()
    assert len(rates) == len(users) and params["n_posts"] == len(raw)
    # brand posts mention the brand's name
    watch = truth["topic"].eq("luxury_watch")
    assert raw.loc[watch, "text"].str.lower().str.contains("aurelio").mean() > 0.5
    # the same seed gives the same posts
    again = P.simulate_posts(users, seed=7)[0]
    assert again["text"].equals(raw["text"])


def test_planted_effects_visible_in_counts():
    users = _users(6000, 1)
    raw, truth, rates, _ = P.simulate_posts(users, seed=2)
    u = users.merge(rates, on="user_id")
    young = u["age_group"].eq("18-24")
    assert u.loc[young, "rate_pop_star"].mean() > 3 * u.loc[u["age_group"].eq("65+"), "rate_pop_star"].mean()
    rich = u["income_bracket"].eq("150k+")
    assert u.loc[rich, "rate_luxury_watch"].mean() > 4 * u.loc[~rich, "rate_luxury_watch"].mean()
    counts = truth.merge(users, on="user_id").query("topic == 'sustainable_fashion'")["gender"].value_counts()
    assert counts["female"] > 1.5 * counts["male"]
    # planted sentiment: pets posts more positive than sports posts
    m = truth.groupby("topic")["sentiment"].mean()
    assert m["pets"] > m["sports"] + 0.3


def test_chunked_writer_streams_chunks_and_equals_in_memory_posts(tmp_path):
    import pyarrow.parquet as pq
    users = _users(2500, 3)
    paths = P.write_posts(users, tmp_path / "raw", tmp_path / "truth", seed=5, chunk_users=1000)
    raw, truth, rates, params = P.simulate_posts(users, seed=5, chunk_users=1000)
    # one row group per chunk of users: the writer never held more than one chunk's posts
    assert pq.ParquetFile(paths["posts"]).num_row_groups == 3
    got = pd.read_parquet(paths["posts"])
    assert got["text"].equals(raw["text"]) and got["user_id"].equals(raw["user_id"])
    assert (pd.to_datetime(got["date"]) == pd.to_datetime(raw["date"])).all()
    assert pd.read_parquet(paths["posts_truth"])["topic"].equals(truth["topic"])
    assert len(pd.read_parquet(paths["posts_user_rates"])) == len(users)
    # post ids run on across chunks; users stay in their order
    assert list(got["post_id"]) == [f"P{i + 1:08d}" for i in range(len(got))]
    assert json.loads(paths["text_truth"].read_text())["n_posts"] == len(got) == params["n_posts"]
    assert not list((tmp_path / "raw").glob("*.part"))
    # a panel no larger than a chunk is one block: the chunk size does not change it
    small = users.head(800)
    assert P.simulate_posts(small, seed=5, chunk_users=1000)[0]["text"].equals(
        P.simulate_posts(small, seed=5, chunk_users=800)[0]["text"])


def test_chunk_size_must_be_positive(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="chunk_users"):
        P.write_posts(_users(10), tmp_path / "raw", tmp_path / "truth", chunk_users=0)
