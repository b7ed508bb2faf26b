"""Tests of helpers.personas: indices against the generator's planted segment profiles, tests, names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.generate import P_PURCHASE, SEGMENT_NAMES
from helpers.personas import (attribute_index, behaviour_vocabulary, name_segments, persona_table,
                              plot_persona_cards, profile_attributes, top_attributes)
from helpers.segment import weighted_sizes


@pytest.fixture(scope="module")
def truth_index(small_panel):
    seg = small_panel.truth["true_segment"].to_numpy()
    return attribute_index(small_panel.data, seg, descriptive=())  # planted segments: nothing is circular


def test_behaviour_index_matches_planted_affinity(small_panel, truth_index):
    """Index of minutes/conversions per true segment is close to the generator's true intensity index."""
    seg = small_panel.truth["true_segment"].to_numpy()
    shares = np.bincount(seg, minlength=6) / len(seg)
    from helpers.generate import true_affinity
    true = true_affinity(shares)
    for col in true.columns:
        est = truth_index[truth_index["attribute"] == col].set_index("segment")
        se = np.log(est["ci_high"] / est["ci_low"]).to_numpy() / (2 * 1.96)  # the core's linearised SE of log index
        z = np.log(est["index"].to_numpy() / true[col].to_numpy()) / se
        assert np.all(np.abs(z) < 4), (col, z.round(1))  # heavy-tailed niche segment: judged by its own interval


def test_partner_token_share_is_computed_among_matched_users_only(small_panel, truth_index):
    """'buys electronics' must estimate P(electronics | segment) among partner-matched users, not be diluted
    by the unmatched half of the panel (which would put every share at roughly half its true value)."""
    rows = truth_index[truth_index["attribute"] == "partner_purchase_categories=electronics"].set_index("segment")
    matched = small_panel.data["partner_purchase_categories"].notna()
    seg = small_panel.truth["true_segment"]
    assert (rows["n_observed"].to_numpy() == np.bincount(seg[matched], minlength=6)).all()
    n = rows["n_observed"].to_numpy()
    se = np.sqrt(P_PURCHASE[:, 0] * (1 - P_PURCHASE[:, 0]) / n)
    ok = rows["base_flag"].ne("suppressed").to_numpy()  # a segment with < 31 buyers is not reported
    assert ok.sum() >= 4 and (rows.loc[~ok, "segment_value"].isna()).all()
    assert np.all(np.abs(rows["segment_value"].to_numpy() - P_PURCHASE[:, 0])[ok] < 4 * se[ok])


def test_planted_traits_are_significant_over_representations(truth_index):
    def row(j, attr):
        return truth_index[(truth_index["segment"] == j) & (truth_index["attribute"] == attr)].iloc[0]
    for j, attr in [(2, "time_on_podcasts_min"), (4, "age_group=65+"), (0, "age_group=18-24"),
                    (3, "homeowner_status=owner"), (5, "monthly_conversions")]:
        r = row(j, attr)
        assert r["index"] > 150 and r["significant"], (j, attr)
    assert row(4, "time_on_social_media_min")["index"] < 50


def test_no_signal_gives_few_discoveries(small_panel):
    """With random segment labels the BH-controlled tests should flag (almost) nothing."""
    noise = np.random.default_rng(1).integers(0, 5, len(small_panel.data))
    t = attribute_index(small_panel.data, noise, descriptive=())
    assert t["significant"].mean() < 0.02
    reported = t.dropna(subset=["index"])
    assert len(reported) > 0.8 * len(t) and reported["index"].between(60, 140).mean() > 0.95


def test_weights_enter_sizes_and_indices(small_panel):
    df = small_panel.data.iloc[:400]
    seg = (df["age_group"] == "18-24").to_numpy().astype(np.int64)
    w = np.where(seg == 1, 3.0, 1.0)
    t = attribute_index(df, seg, weights=w, descriptive=())
    young = t[(t["attribute"] == "age_group=18-24") & (t["segment"] == 1)].iloc[0]
    n1 = seg.sum()
    assert young["panel_value"] == pytest.approx(3 * n1 / (3 * n1 + (len(df) - n1)))
    assert young["index"] == pytest.approx(100 / young["panel_value"])
    with pytest.raises(ValueError, match="weights"):
        attribute_index(df, seg, weights=-w)
    with pytest.raises(ValueError, match="one label per row"):
        attribute_index(df, seg[:-1])


def test_names_are_data_generated_and_recover_planted_personas(truth_index):
    names = name_segments(truth_index)
    assert len(set(names)) == 6
    assert names[0].startswith("Social-first") and names[2].startswith("Podcast-heavy")
    assert names[1].startswith("Binge-streaming") and names[4].startswith("Low-engagement")
    assert names[5].startswith("Deal-seeking")
    assert "seniors" in names[4] and "young adults" in names[0]
    assert not any(n.startswith("Cluster") or n.startswith("Segment") for n in names)
    assert names != SEGMENT_NAMES  # built from the data, not copied from the generator


def test_top_attributes_and_persona_table(small_panel, truth_index):
    seg = small_panel.truth["true_segment"].to_numpy()
    over = top_attributes(truth_index, 2, n=3, direction="over")
    under = top_attributes(truth_index, 2, n=3, direction="under")
    assert (over["index"] > 100).all() and (under["index"] < 100).all()
    assert over["index"].is_monotonic_decreasing and over["significant"].all()
    names = name_segments(truth_index)
    table = persona_table(truth_index, weighted_sizes(seg), names)
    assert list(table.columns[:6]) == ["segment", "segment_name", "weighted_share", "n", "over_represented",
                                       "under_represented"]
    assert table["weighted_share"].sum() == pytest.approx(1.0)
    assert "podcasts" in table.loc[2, "over_represented"]
    fig = plot_persona_cards(truth_index, weighted_sizes(seg), names)
    assert len([a for a in fig.axes if a.get_visible()]) == 6
    assert all(a.get_title() and a.get_xlabel() for a in fig.axes if a.get_visible())


def test_profile_attributes_keep_missing_as_missing(small_panel):
    values, meta = profile_attributes(small_panel.data)
    assert len(meta) == values.shape[1]
    miss = small_panel.data["education_level"].isna().to_numpy()
    assert values.loc[miss, "education_level=graduate"].isna().all()
    assert values.loc[~miss, [c for c in values if c.startswith("education_level=")]].sum(axis=1).eq(1).all()
    with pytest.raises(ValueError, match="non-empty"):
        profile_attributes(pd.DataFrame())


def test_clustering_features_are_descriptive_by_default_and_never_discoveries(small_panel):
    """Issue 15 item 5: with segments built from the behaviour metrics (as notebook 04 does), persona cards
    must not present those metrics as significant discoveries; they stay as described, with interval."""
    from helpers import config

    cfg = config.load(None)
    seg = small_panel.truth["true_segment"].to_numpy()
    t = attribute_index(small_panel.data, seg)  # default: the configuration's clustering metrics
    clustered = {m.name for m in cfg.metrics if m.cluster}
    d = t[t["column"].isin(clustered)]
    assert len(d) and d["descriptive"].all() and d["p_value"].isna().all() and not d["significant"].any()
    assert not t.loc[~t["column"].isin(clustered), "descriptive"].any()
    names = name_segments(t)  # descriptive behaviour with an interval above 100 still names the segment
    assert names[2].startswith("Podcast-heavy") and names[0].startswith("Social-first")
    table = persona_table(t, weighted_sizes(seg), names)
    assert "[d]" in table.loc[2, "over_represented"] and "95% CI" in table.loc[2, "over_represented"]


def test_persona_words_come_from_the_configuration_not_the_channel_columns(small_panel):
    """A retailer who mapped catalogue spend onto the dictionary's streaming column must not read
    "Binge-streaming": another configuration gets adjectives and units from its own labels."""
    from helpers import config

    raw = config.load(None).raw
    data = {**raw, "name": "catalogue_retailer"}
    data["metrics"] = [{"name": "time_on_streaming_video_min", "label": "Catalogue spend", "unit": "USD/month",
                        "kind": "money"},
                       {"name": "time_on_podcasts_min", "label": "Store visits", "unit": "visits/month",
                        "kind": "count"}]
    cfg = config.parse(data)
    adjectives, units = behaviour_vocabulary(cfg)
    assert adjectives == {"time_on_streaming_video_min": "High catalogue spend",
                          "time_on_podcasts_min": "High store visits"}
    assert units["time_on_streaming_video_min"] == "Catalogue spend, USD/month"
    seg = small_panel.truth["true_segment"].to_numpy()
    t = attribute_index(small_panel.data, seg, cfg=cfg, descriptive=())
    names = name_segments(t)
    assert not any(w in n for n in names for w in ("Binge", "Podcast", "Social-first", "Deal-seeking"))
    assert any(n.startswith("High catalogue spend") for n in names)
    assert set(t.loc[t["kind"] == "mean", "label"]) >= {"Catalogue spend, USD/month", "Store visits, visits/month"}
    default_adj, _ = behaviour_vocabulary(None)
    assert default_adj["time_on_streaming_video_min"] == "Binge-streaming"


def test_share_moments_from_cell_codes_equal_the_core_moments(small_panel):
    """The moments of category and token indicators counted from each column's cell codes are, bit for bit,
    those of helpers.stats.core.moments on the indicator columns (uneven weights, zero weights, missing)."""
    from helpers import personas as Pe
    from helpers.stats import core as C

    df = small_panel.data
    seg = small_panel.truth["true_segment"].to_numpy()
    w = np.random.default_rng(1).gamma(2.0, 0.5, len(df))
    w[::97] = 0.0
    k = int(seg.max()) + 1
    values, meta, cells_of = Pe._profile(df)
    assert {"partner_purchase_categories", "age_group"} <= set(cells_of)  # tokens and categories
    checked = 0
    for column, (codes, per_attribute) in cells_of.items():
        for name, mom in Pe._share_moments(codes, per_attribute, seg, w, k).items():
            pd.testing.assert_frame_equal(mom, C.moments(values[name], seg, w, k), check_exact=True)
            checked += 1
    assert checked == sum(a.kind == "share" and a.column in cells_of for a in meta)


def test_attribute_index_from_a_column_reader_equals_the_frame(small_panel, truth_index):
    """Read one column at a time (each profiled and dropped in turn), the index is the frame's, bit for bit."""
    from helpers.personas import ColumnReader

    df = small_panel.data
    seg = small_panel.truth["true_segment"].to_numpy()
    reads = []

    def read(c):
        reads.append(c)
        return df[c].copy()

    reader = ColumnReader(read, list(df.columns), len(df))
    pd.testing.assert_frame_equal(attribute_index(reader, seg, descriptive=()), truth_index, check_exact=True)
    assert len(reads) == len(set(reads))  # every column read once
    assert "user_id" not in reads  # nor one that is not profiled
    w = np.random.default_rng(2).gamma(2.0, 0.5, len(df))
    pd.testing.assert_frame_equal(attribute_index(reader, seg, weights=w), attribute_index(df, seg, weights=w),
                                  check_exact=True)
    with pytest.raises(ValueError, match="rows"):
        attribute_index(ColumnReader(lambda c: df[c].iloc[:-1], list(df.columns), len(df)), seg)
    with pytest.raises(KeyError):
        reader["no such column"]


def test_column_reader_of_the_unified_artifact(small_panel, tmp_path):
    from helpers import artifacts, paths
    from helpers.personas import ColumnReader

    P = paths.resolve(tmp_path / "data", tmp_path / "rep")
    P.processed.mkdir(parents=True, exist_ok=True)
    small_panel.data.to_parquet(P.processed / artifacts.UNIFIED_PARQUET, index=False)
    df = artifacts.load_unified(P)
    reader = ColumnReader.of_unified(P, len(df))
    assert reader.columns == list(df.columns) and len(reader) == len(df) and "age_group" in reader
    pd.testing.assert_series_equal(reader["age_group"], df["age_group"])
    seg = small_panel.truth["true_segment"].to_numpy()
    pd.testing.assert_frame_equal(attribute_index(reader, seg), attribute_index(df, seg), check_exact=True)
