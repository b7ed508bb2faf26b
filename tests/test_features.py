"""Tests of helpers.features: shapes, dtypes, determinism, and that missing data never becomes a category."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from helpers import schema as S
from helpers.features import (FeatureBuilder, FeatureSpec, default_segmentation_features, feature_rationale,
                              profiling_features)


@pytest.fixture(scope="module")
def data(small_panel) -> pd.DataFrame:
    return small_panel.data


def test_default_matrix_is_float64_standardised_and_complete(data):
    fb = FeatureBuilder().fit(data)
    X = fb.transform(data)
    assert X.dtype == np.float64 and X.shape == (len(data), len(default_segmentation_features()))
    assert np.isfinite(X).all()
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-9)
    assert list(fb.get_feature_names_out()) == [
        "log1p(time_on_social_media_min)", "log1p(time_on_streaming_video_min)", "log1p(time_on_podcasts_min)",
        "log1p(avg_monthly_spend)", "log1p(monthly_conversions+U)"]


def test_segmentation_uses_only_complete_first_party_columns():
    used = {f.column for f in default_segmentation_features()}
    assert used <= set(S.FIRST_PARTY)
    assert not used & {c.name for c in S.COLUMNS if c.nullable}
    table = feature_rationale()
    assert list(table["column"]) == S.COLUMN_NAMES
    assert set(table.loc[table["role"] == "segmentation", "column"]) == used
    assert (table.loc[table["source"].isin(["2nd party", "3rd party"]), "role"] == "profiling").all()
    assert table["reason"].str.len().gt(0).all()


def test_transform_is_per_user_independent_of_order_and_batch(data):
    fb = FeatureBuilder().fit(data)
    X = fb.transform(data)
    perm = np.random.default_rng(0).permutation(len(data))[:500]
    np.testing.assert_array_equal(fb.transform(data.iloc[perm]), X[perm])


def test_dequantisation_keeps_the_count_and_depends_on_seed(data):
    spec = [FeatureSpec("monthly_conversions", "log1p_dequantised")]
    a = FeatureBuilder(spec, scale=False, random_state=1).fit_transform(data)[:, 0]
    b = FeatureBuilder(spec, scale=False, random_state=1).fit_transform(data)[:, 0]
    c = FeatureBuilder(spec, scale=False, random_state=2).fit_transform(data)[:, 0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    counts = data["monthly_conversions"].astype(int).to_numpy()
    np.testing.assert_array_equal(np.floor(np.expm1(a)), counts)  # count + U(0,1) floors back to the count
    u = np.expm1(a) - counts
    assert 0.4 < u.mean() < 0.6 and u.min() >= 0 and u.max() < 1


def test_missing_first_party_value_is_an_error_naming_column_and_user(data):
    bad = data.copy()
    bad["avg_monthly_spend"] = bad["avg_monthly_spend"].astype(float)
    bad.loc[bad.index[3], "avg_monthly_spend"] = np.nan
    with pytest.raises(ValueError, match=r"avg_monthly_spend.*1 rows.*U0000000?4"):
        FeatureBuilder().fit(bad)


def test_bad_inputs_raise_clear_errors(data):
    with pytest.raises(ValueError, match="time_on_podcasts_min"):
        FeatureBuilder().fit(data.drop(columns="time_on_podcasts_min"))
    neg = data.copy()
    neg.loc[neg.index[0], "time_on_social_media_min"] = -1.0
    with pytest.raises(ValueError, match="non-negative.*U00000001"):
        FeatureBuilder().fit(neg)
    odd = data.copy()
    odd["age_group"] = odd["age_group"].astype(object)
    odd.loc[odd.index[1], "age_group"] = "teen"
    with pytest.raises(ValueError, match="age_group.*teen"):
        FeatureBuilder([FeatureSpec("age_group", "ordinal")]).fit(odd)
    with pytest.raises(ValueError, match="DataFrame"):
        FeatureBuilder().fit(data.to_numpy())


def test_missing_third_party_is_imputed_to_the_mean_not_made_a_category(data):
    spec = [FeatureSpec("homeowner_status", "onehot"), FeatureSpec("education_level", "ordinal")]
    fb = FeatureBuilder(spec, allow_missing=True).fit(data)
    X = fb.transform(data)
    assert X.shape[1] == 3  # owner, renter, education: no "unknown" column unless asked
    assert np.isfinite(X).all()
    miss = data["homeowner_status"].isna().to_numpy()
    assert miss.any()
    np.testing.assert_allclose(X[miss, :2], 0.0)  # the fitted mean after scaling: "no information"
    observed_mean = (data.loc[~miss, "homeowner_status"] == "owner").mean()
    np.testing.assert_allclose(fb.mean_[0], observed_mean)
    with_ind = FeatureBuilder(spec, allow_missing=True, missing_indicators=True).fit(data)
    Xi = with_ind.transform(data)
    assert list(with_ind.get_feature_names_out()[-2:]) == ["homeowner_status__missing", "education_level__missing"]
    np.testing.assert_array_equal(Xi[:, 3], miss.astype(float))


def test_profiling_features_cover_multi_valued_tokens(data):
    fb = FeatureBuilder(profiling_features(), allow_missing=True).fit(data)
    names = set(fb.get_feature_names_out())
    assert {f"partner_purchase_categories={c}" for c in S.PURCHASE_CATEGORIES} <= names
    X = FeatureBuilder(profiling_features(), allow_missing=True, scale=False).fit(data).transform(data)
    j = list(fb.get_feature_names_out()).index("partner_purchase_categories=electronics")
    has = data["partner_purchase_categories"].str.contains("electronics").fillna(False).to_numpy(dtype=bool)
    observed = data["partner_purchase_categories"].notna().to_numpy()
    np.testing.assert_array_equal(X[observed, j], has[observed].astype(float))


def test_is_a_clonable_sklearn_estimator(data):
    fb = FeatureBuilder(scale=False, random_state=3)
    fb2 = clone(fb)
    assert fb2.get_params() == fb.get_params()
    np.testing.assert_array_equal(fb.fit_transform(data), fb2.fit(data).transform(data))


def test_segmentation_features_follow_the_run_configuration():
    """The default preset gives the dictionary's five behaviours; another configuration its own metrics."""
    from types import SimpleNamespace as NS

    from helpers.features import default_segmentation_features, segmentation_features

    default = [f.column for f in default_segmentation_features()]
    assert [f.column for f in segmentation_features(None)] == default
    metrics = [NS(name=c, kind="minutes", cluster=True) for c in default[:3]] + [
        NS(name="avg_monthly_spend", kind="money", cluster=True), NS(name="monthly_conversions", kind="count", cluster=True),
        NS(name="support_tickets_raised", kind="count", cluster=False)]
    assert [f.column for f in segmentation_features(NS(metrics=metrics))] == default
    telco = NS(metrics=[NS(name="MonthlyCharges", kind="money", cluster=True), NS(name="n_services", kind="count", cluster=True),
                        NS(name="tenure_share", kind="share", cluster=True), NS(name="calls", kind="count", cluster=False)])
    got = {f.column: f.transform for f in segmentation_features(telco)}
    assert got == {"MonthlyCharges": "log1p", "n_services": "log1p_dequantised", "tenure_share": "identity"}
    with pytest.raises(ValueError, match="no behavioural metrics"):
        segmentation_features(NS(metrics=[NS(name="calls", kind="count", cluster=False)]))
