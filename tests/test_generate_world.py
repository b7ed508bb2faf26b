"""Tests of the chunked writer of every source (generate.write_world) and of reading its files back (sources.readback)."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import generate as G
from helpers.sources import exposures as E
from helpers.sources import posts as PO
from helpers.sources import readback as R

N = 1500
SEED = 3


def _same_files(a, b) -> list[str]:
    """Names of the files that differ between two data folders (bytes for text, table and schema for Parquet)."""
    out = []
    for sub in ("raw", "truth"):
        names = sorted(p.name for p in (a / sub).iterdir())
        assert names == sorted(p.name for p in (b / sub).iterdir()), sub
        for name in names:
            pa_, pb_ = a / sub / name, b / sub / name
            if name.endswith(".parquet"):
                ta, tb = pq.read_table(pa_), pq.read_table(pb_)
                if not (ta.equals(tb) and ta.schema.equals(tb.schema, check_metadata=True)):
                    out.append(f"{sub}/{name}")
            elif pa_.read_bytes() != pb_.read_bytes():
                out.append(f"{sub}/{name}")
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    paths = G.write_world(N, root / "raw", root / "truth", seed=SEED, n_jobs=1)
    return root, paths


def test_one_chunk_is_the_panel_and_its_writers_file_for_file(world, tmp_path):
    root, _ = world
    panel = G.generate_panel(N, seed=SEED)
    G.write_sources(panel, tmp_path / "raw", tmp_path / "truth", seed=SEED)
    E.write_exposures(panel, tmp_path / "raw", tmp_path / "truth", seed=SEED)
    PO.write_posts(panel, tmp_path / "raw", tmp_path / "truth", seed=SEED, observation_date=G.DEFAULT_OBSERVATION_DATE)
    assert _same_files(root, tmp_path) == []


def test_chunks_continue_ids_and_do_not_depend_on_the_number_of_processes(tmp_path):
    n, chunk = 2500, 1000
    a = G.write_world(n, tmp_path / "a" / "raw", tmp_path / "a" / "truth", seed=SEED, chunk_size=chunk, n_jobs=1)
    G.write_world(n, tmp_path / "b" / "raw", tmp_path / "b" / "truth", seed=SEED, chunk_size=chunk, n_jobs=2)
    assert _same_files(tmp_path / "a", tmp_path / "b") == []
    # the worker processes' tables went through Arrow files in the data folder: none is left behind
    assert not list((tmp_path / "b" / "raw").glob(".world_spool*"))
    crm = pd.read_csv(a["crm_users.csv"])
    assert crm["user_id"].tolist() == [f"U{i:08d}" for i in range(1, n + 1)]
    for name, key in [("partner_profiles.csv", "partner_id"), ("third_party_enrichment.csv", "tp_id")]:
        ids = pd.read_csv(a[name])[key]
        assert ids.is_unique and len(ids) > 0.3 * n
    posts = pq.read_table(a["posts"], columns=["post_id", "user_id"]).to_pandas()
    assert posts["post_id"].tolist() == [f"P{i:08d}" for i in range(1, len(posts) + 1)]
    assert set(posts["user_id"]) <= set(crm["user_id"])
    monthly = pq.read_table(a["monthly_activity"], columns=["user_id"]).to_pandas()["user_id"]
    assert monthly.is_monotonic_increasing and set(monthly) <= set(crm["user_id"])
    truth = pd.read_parquet(a["truth"])
    assert truth["user_id"].tolist() == crm["user_id"].tolist()
    assert truth["corrupted"].sum() == 2  # drawn per chunk: one per 1,000 users, none of 500 (round(0.5) = 0)
    # chunk 0 is generate_panel(chunk, seed); the next chunk has its own draws (not a copy of chunk 0)
    first = G.generate_panel(chunk, seed=SEED).truth
    assert truth["true_segment"].iloc[:chunk].tolist() == first["true_segment"].tolist()
    assert truth["tenure_days"].iloc[chunk:2 * chunk].tolist() != first["tenure_days"].tolist()


def test_long_tables_keep_the_types_of_the_one_block_writer(world, tmp_path):
    _, paths = world
    G.write_world(1200, tmp_path / "raw", tmp_path / "truth", seed=SEED, chunk_size=500, n_jobs=1, media=False,
                  posts=False)
    for name in ("monthly_activity", "transactions", "user_paths", "future_outcomes", "truth"):
        one = pq.read_schema(paths[name])
        chunked = pq.read_schema(tmp_path / paths[name].parent.name / paths[name].name)
        assert chunked.equals(one, check_metadata=True), name
    assert not (tmp_path / "raw" / "posts.parquet").exists() and not (tmp_path / "raw" / "exposures.parquet").exists()


def test_measurement_panel_drawn_by_the_writer_equals_the_one_drawn_inside():
    panel = G.generate_panel(900, seed=SEED)
    pick = E.measurement_panel(900, SEED, max_users=300)
    assert len(pick) == 300 and np.all(np.diff(pick) > 0)
    assert E.measurement_panel(300, SEED, max_users=300) is None
    raw_a, truth_a, users_a = E.generate_exposures(panel, seed=SEED, max_users=300)
    users = panel.data.iloc[pick].reset_index(drop=True)
    raw_b, truth_b, users_b = E.generate_exposures(
        {"users": users, "truth": panel.truth.iloc[pick], "params": panel.params}, seed=SEED, max_users=300,
        drawn_from=900)
    pd.testing.assert_frame_equal(users_a, users_b)
    for name in raw_a:
        pd.testing.assert_frame_equal(raw_a[name], raw_b[name])
    assert truth_a == truth_b and truth_b["measurement_panel"] == {"customers": 900, "panel": 300, "sampled": True}


def test_posts_chunk_on_its_own_equals_the_chunk_of_the_whole_run():
    panel = G.generate_panel(700, seed=SEED)
    whole = list(PO.iter_posts(panel, seed=SEED, chunk_users=300))
    users = PO._users(panel)
    alone = PO.posts_chunk(users.iloc[300:600], SEED, 1, first_post=len(whole[0][0]), n_segments=G.K)
    for a, b in zip(whole[1], alone):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_readback_aggregates_equal_those_of_the_whole_tables(world, monkeypatch):
    _, paths = world
    monkeypatch.setattr(R, "BATCH_ROWS", 4_000)  # several batches, so the sums across batches are exercised
    monthly = pd.read_parquet(paths["monthly_activity"])
    tx = pd.read_parquet(paths["transactions"])
    counts = R.counts_by_month(paths["monthly_activity"], "engagement_state")
    expected = monthly.groupby(["month", "engagement_state"]).size().unstack(fill_value=0)
    pd.testing.assert_frame_equal(counts, expected, check_names=False, check_dtype=False, check_column_type=False)
    hist, edges = R.amount_histogram(paths["transactions"], bins=30)
    assert hist.sum() == len(tx) and np.isclose(edges[0], np.log10(tx["amount"].min()))
    # the edges from the Parquet statistics are those of the scanned minimum and maximum, exactly
    lo, hi = tx["amount"].min(), tx["amount"].max()
    assert np.array_equal(edges, np.linspace(np.log10(lo), np.log10(hi), 31))
    assert R._column_min_max(pq.ParquetFile(paths["transactions"]), "amount") == (lo, hi)
    per_user = R.purchases_per_customer(paths["monthly_activity"], N)
    by_log = tx.groupby("user_id").size().reindex([f"U{i:08d}" for i in range(1, N + 1)], fill_value=0)
    assert per_user.tolist() == by_log.tolist() and per_user.sum() > 0
    assert R.n_rows(paths["transactions"]) == len(tx) and R.n_rows(paths["crm_users.csv"]) == N


def test_channel_minutes_checks_the_order_against_the_truth(world):
    root, paths = world
    ids = pq.read_table(paths["truth"], columns=["user_id"])["user_id"]
    minutes = R.channel_minutes(root / "raw", ids)
    panel = G.generate_panel(N, seed=SEED)
    corrupted = pd.read_parquet(paths["truth"])["corrupted"].to_numpy()
    expected = panel.data[minutes.columns].astype(float)
    # the planted defects (a negative podcast time) are part of what was written
    pd.testing.assert_frame_equal(minutes[~corrupted].reset_index(drop=True),
                                  expected[~corrupted].reset_index(drop=True), check_dtype=False)
    with pytest.raises(ValueError, match="different orders"):
        R.channel_minutes(root / "raw", ids.take(np.arange(N)[::-1]))


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_users"):
        G.write_world(0, tmp_path / "raw", tmp_path / "truth")
    with pytest.raises(ValueError, match="chunk_size"):
        G.write_world(10, tmp_path / "raw", tmp_path / "truth", chunk_size=0)


def test_exposure_cells_and_touch_paths_equal_the_pandas_groupby():
    """The integer-key counts and the Arrow-joined paths against the pandas formulation they replaced."""
    rng = np.random.default_rng(5)
    n_ev, m, start, D = 4000, 150, 300, 42
    u = start + rng.integers(0, m - 10, n_ev)  # the last 10 users have no impressions
    d, h, c = rng.integers(0, D, n_ev), rng.integers(0, 24, n_ev), rng.integers(0, E.C, n_ev)
    r = rng.random(n_ev)
    yu, yd, yh = start + rng.integers(0, m, 300), rng.integers(0, D, 300), rng.integers(0, 24, 300)
    ev = pd.DataFrame({"u": u, "c": c, "d": d, "h": h})
    agg = ev.groupby(["u", "d", "h", "c"], sort=True).size().reset_index()
    got = E._count_cells(u, d, h, c, D)
    for k in ("u", "d", "h", "c"):
        assert got[k].tolist() == agg[k].tolist(), k
    assert got["n"].tolist() == agg[0].tolist() and got["n"].max() > 1
    cv = pd.DataFrame({"u": yu, "d": yd, "h": yh}).groupby(["u", "d", "h"]).size().rename("conversions").reset_index()
    cells = E._count_cells(yu, yd, yh, None, D)
    assert cells["n"].tolist() == cv["conversions"].tolist() and cells["u"].tolist() == cv["u"].tolist()
    # reference: impressions in (day, hour, r) order up to the first conversion's hour, joined per user
    first = cv.groupby("u")[["d", "h"]].first()
    ev = ev.assign(r=r).sort_values(["u", "d", "h", "r"])
    fd = ev["u"].map(first["d"]).fillna(D + 1).to_numpy()
    fh = ev["u"].map(first["h"]).fillna(0).to_numpy()
    ev = ev[ev["d"].to_numpy() * 24 + ev["h"].to_numpy() <= fd * 24 + fh]
    names = np.array(E.CHANNELS, dtype=object)
    paths = ev.assign(name=names[ev["c"].to_numpy()]).groupby("u")["name"].agg(">".join)
    nconv = cv.groupby("u")["conversions"].sum()
    got = E._touch_paths(u, d, h, c, r, cells, start, m, D)
    assert got["u"].tolist() == paths.index.tolist() and got["path"].tolist() == paths.tolist()
    assert got["n_touches"].tolist() == [p.count(">") + 1 for p in paths]
    assert got["conversions"].tolist() == paths.index.map(nconv).fillna(0).astype(int).tolist()
    assert 0 < (got["conversions"] > 0).sum() < len(paths)  # converters and non-converters both present
    assert (got["n_touches"] < pd.Series(u).value_counts().reindex(got["u"]).to_numpy()).any()  # paths cut


def test_expected_response_of_a_zero_channel_is_interp_at_zero():
    lam = np.random.default_rng(1).gamma(1.0, 1.0, (50, E.C))
    lam[:, 2] = 0.0
    tab = E._expected_hill_table()
    full = np.column_stack([np.interp(lam[:, c], E._LAMBDA_GRID, tab[c]) for c in range(E.C)])
    assert np.array_equal(E.expected_response(lam), full)
