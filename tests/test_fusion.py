"""Statistical matching (helpers.fusion) checked against the planted truth of the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import fusion as F
from helpers import schema as S

THIRD = F.SOURCE_GROUPS["third_party"]
PARTNER = F.SOURCE_GROUPS["partner"]


@pytest.fixture(scope="module")
def fused_small(small_panel):
    return F.fuse(small_panel.data, random_state=3)


def test_fuse_fills_only_missing_values_and_flags_them(small_panel, fused_small):
    df, out = small_panel.data, fused_small.fused
    assert out["user_id"].tolist() == df["user_id"].tolist()
    for c in PARTNER + THIRD:
        flag = out[f"{c}_imputed"].to_numpy()
        np.testing.assert_array_equal(flag, df[c].isna().to_numpy())
        assert out[c].notna().all(), c
        kept = ~flag
        assert (out.loc[kept, c].astype("string") == df.loc[kept, c].astype("string")).all(), c
        assert set(out.loc[flag, c].astype("string")) <= set(df[c].dropna().astype("string")), c
        assert out[c].dtype == df[c].dtype
    # partner imputation is whole-record: about half of the users are unmatched
    assert 0.4 < out["traveler_type_imputed"].mean() < 0.7
    assert fused_small.n_donors["partner"] + fused_small.n_recipients["partner"] == len(df)


def test_same_seed_same_values_and_seed_matters(small_panel, fused_small):
    again = F.fuse(small_panel.data, random_state=3).fused
    pd.testing.assert_frame_equal(again, fused_small.fused)
    other = F.fuse(small_panel.data, random_state=4).fused
    flag = other["education_level_imputed"]
    assert (other.loc[flag, "education_level"] != fused_small.fused.loc[flag, "education_level"]).any()


def test_thin_classes_collapse_to_coarser_classes(small_panel):
    """Recipients of age x income cells with fewer than min_donors donors get a donor of their age only."""
    df = small_panel.data
    donors = df[df[PARTNER].notna().all(axis=1)]
    recips = df[df[PARTNER].isna().any(axis=1)]
    min_donors = int(donors.groupby("age_group").size().min())  # every age class qualifies
    cell_n = donors.groupby(["age_group", "income_bracket"]).size()
    thin = (pd.MultiIndex.from_frame(recips[["age_group", "income_bracket"]].astype(str))
            .map(lambda key: cell_n.get(key, 0)).to_numpy() < min_donors)
    m = F.StatisticalMatcher(PARTNER, donor_classes=["age_group", "income_bracket"], match_on=None,
                             min_donors=min_donors, random_state=0).fit(donors)
    pos = m.donor_positions(recips)
    same_age = m.donors_["age_group"].to_numpy()[pos] == recips["age_group"].to_numpy()
    same_income = m.donors_["income_bracket"].to_numpy()[pos] == recips["income_bracket"].to_numpy()
    assert thin.any() and (~thin).any()
    assert same_age.all()
    assert same_income[~thin].all()
    assert (~same_income[thin]).mean() > 0.3


def test_donors_share_the_recipient_class(small_panel):
    df = small_panel.data
    donors = df[df[PARTNER].notna().all(axis=1)]
    recips = df[df[PARTNER].isna().any(axis=1)]
    m = F.StatisticalMatcher(PARTNER, donor_classes=["age_group", "income_bracket"], min_donors=5,
                             random_state=0).fit(donors)
    pos = m.donor_positions(recips)
    same = m.donors_["age_group"].to_numpy()[pos] == recips["age_group"].to_numpy()
    assert same.all()  # age is the first class variable: never collapsed
    same_income = m.donors_["income_bracket"].to_numpy()[pos] == recips["income_bracket"].to_numpy()
    assert same_income.mean() > 0.97  # only thin cells collapse to age only


def test_random_hotdeck_preserves_the_class_distribution(medium_panel):
    """Random hot-deck within age classes reproduces P(education | age) of the donors."""
    df = medium_panel.data
    res = F.fuse(df, groups={"third_party": THIRD}, match_on=None, random_state=1).fused
    imputed = res["education_level_imputed"].to_numpy()
    donors = df[df[THIRD].notna().all(axis=1)]
    for age in ["18-24", "65+"]:
        p_don = donors.loc[donors["age_group"] == age, "education_level"].value_counts(normalize=True)
        rec = res.loc[imputed & (df["age_group"] == age).to_numpy(), "education_level"]
        assert len(rec) > 250  # 291 recipients aged 65+ in the issue-14 world of 20k users
        assert F.total_variation(p_don, rec.value_counts(normalize=True)) < 0.06


def test_folding_beats_the_marginal_baseline_on_planted_truth(medium_panel):
    rep = F.fold_validate(medium_panel.data, THIRD, random_state=3)
    acc = rep.accuracy.set_index("column")
    assert rep.n_donors > 2000 and rep.n_recipients > 2000
    assert rep.accuracy_gain > 0.03
    single = [c for c in THIRD if S.BY_NAME[c].kind != "multi"]
    assert (acc.loc[single, "gain"] > 0.01).all(), acc
    # the planted segments drive home ownership strongly: fusion on behaviour recovers much of it
    assert acc.loc["homeowner_status", "gain"] > 0.08
    # joint distributions with the common variables are kept much better than by a marginal draw
    assert rep.joint["tvd_fused"].mean() < 0.6 * rep.joint["tvd_baseline"].mean()
    assert (rep.joint["tvd_fused"] < rep.joint["tvd_baseline"]).mean() > 0.85


def test_agreement_baseline_is_the_expected_agreement_of_a_marginal_draw():
    actual = pd.Series(["a"] * 60 + ["b"] * 40)
    pool = pd.Series(["a"] * 30 + ["b"] * 70)
    res = F.agreement(actual, actual, pool)
    assert res["accuracy"] == 1.0
    assert res["baseline_accuracy"] == pytest.approx(0.6 * 0.3 + 0.4 * 0.7)


def test_cia_cost_on_planted_truth(medium_panel):
    """Children and family events are linked only through the latent segment (CIA holds given it).

    Matching on age alone loses almost all of the association, the planted segment restores it.
    """
    df = medium_panel.data
    fam = F.items(df["event_attendance_genres"])["event_attendance_genres=family_events"]
    df = df.assign(family_events=fam)
    res = F.cia_cost(df, "family_events", "presence_of_children", oracle=medium_panel.truth["true_segment"],
                     match_on=None, random_state=0)
    assert res["v_actual"] > 0.2
    assert res["v_fused"] < 0.4 * res["v_actual"]
    assert res["v_oracle"] > 0.8 * res["v_actual"]
    assert res["tvd_oracle"] < res["tvd_fused"]
    with pytest.raises(ValueError, match="multi-valued"):
        F.cia_cost(df, "event_attendance_genres", "presence_of_children")


def test_frechet_bounds_closed_form_and_truth(medium_panel):
    a = pd.DataFrame({"y": ["u"] * 70 + ["v"] * 30})
    b = pd.DataFrame({"z": ["s"] * 60 + ["t"] * 40})
    fb = F.frechet_bounds(a, b, "y", "z").set_index(["y", "z"])
    assert fb.loc[("u", "s"), ["lower", "upper"]].tolist() == pytest.approx([0.3, 0.6])
    assert fb.loc[("v", "t"), ["lower", "upper"]].tolist() == pytest.approx([0.0, 0.3])
    assert fb.loc[("u", "s"), "cia"] == pytest.approx(0.42)

    df = medium_panel.data
    fb = F.frechet_bounds(df[df["traveler_type"].notna()], df[df["homeowner_status"].notna()],
                          "traveler_type", "homeowner_status", x=["age_group", "income_bracket"])
    both = df["traveler_type"].notna() & df["homeowner_status"].notna()
    actual = F.joint_distribution(df.loc[both, "traveler_type"], df.loc[both, "homeowner_status"])
    truth = np.array([actual.get((y, z), 0.0) for y, z in zip(fb["y"], fb["z"])])
    slack = 0.01  # sampling error of the cells (each ~ 0.001-0.005 at this size)
    assert ((fb["lower"] - slack <= truth) & (truth <= fb["upper"] + slack)).all()
    assert (fb["lower"] >= fb["lower_unconditional"] - 1e-12).all()
    assert (fb["upper"] <= fb["upper_unconditional"] + 1e-12).all()
    assert ((fb["lower"] <= fb["cia"]) & (fb["cia"] <= fb["upper"])).all()
    assert fb.attrs["uncertainty"] < fb.attrs["uncertainty_unconditional"]


def test_bad_input_errors_name_the_problem(small_panel):
    df = small_panel.data
    with pytest.raises(ValueError, match=r"donors: column '\w+' has \d+ missing value"):
        F.StatisticalMatcher(PARTNER).fit(df)
    donors = df[df[PARTNER].notna().all(axis=1)]
    m = F.StatisticalMatcher(PARTNER).fit(donors)
    bad = df.head(10).assign(avg_monthly_spend=np.nan)
    with pytest.raises(ValueError, match=r"'avg_monthly_spend' has 10 missing value\(s\) \(e.g. \['U"):
        m.transform(bad)
    with pytest.raises(ValueError, match="'marital_status' is nominal"):
        F.StatisticalMatcher(PARTNER, match_on=["marital_status"]).fit(donors.fillna({"marital_status": "single"}))
    with pytest.raises(ValueError, match="not fitted"):
        F.StatisticalMatcher(PARTNER).donor_positions(df)
    with pytest.raises(ValueError, match="no donors"):
        F.fuse(df.assign(traveler_type=pd.array([None] * len(df), dtype="string")),
               groups={"partner": PARTNER})


def test_nearest_neighbour_donor_is_among_the_k_nearest_by_brute_force(small_panel):
    """The k-d tree (scipy, since issue 20) finds the exact k nearest donors: every chosen donor is within
    the k-th smallest brute-force distance of its recipient, in the matcher's standardised features."""
    df = small_panel.data
    donors = df[df[THIRD].notna().all(axis=1)].head(800)
    rec = df[df[THIRD].isna().any(axis=1)].head(300)
    m = F.StatisticalMatcher(THIRD, donor_classes=[], k=3, random_state=0).fit(donors)
    pos = m.donor_positions(rec)
    Xr, Xd = m._features(rec.reset_index(drop=True)), m.donor_X_
    d = np.sqrt(((Xr[:, None, :] - Xd[None, :, :]) ** 2).sum(-1))
    kth = np.sort(d, axis=1)[:, 2]
    assert (d[np.arange(len(rec)), pos] <= kth + 1e-9).all()
    assert len(np.unique(pos)) > 100  # draws spread over the k nearest, not one donor
