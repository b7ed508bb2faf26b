"""Raking (helpers.weights) against closed forms, an independent calibration solver and the planted truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from helpers import weights as W
from helpers.generate import population_margins

AGE_INCOME = ["age_group", "income_bracket"]


def _margins(variables: list[str]) -> pd.DataFrame:
    m = population_margins()
    return m[m["variable"].isin(variables)].reset_index(drop=True)


def _segment_tvd(truth: pd.DataFrame, weights, population: list[float]) -> float:
    shares = W.weighted_shares(truth["true_segment"], weights, categories=list(range(len(population))))
    return 0.5 * float(np.abs(shares.to_numpy() - np.asarray(population)).sum())


def _dual_raking_reference(panel: pd.DataFrame, margins: pd.DataFrame) -> np.ndarray:
    """Raking weights as the calibration estimator with the raking distance (Deville & Särndal 1992).

    Solves min_lambda sum_i exp(a_i' lambda) - lambda' T by damped Newton iterations, where
    a_i holds an intercept and the dummies of every non-first category; w_i = exp(a_i' lambda). This is a
    different algorithm from IPF with the same solution.
    """
    frame = W.raking_frame(panel, list(dict.fromkeys(margins["variable"])))
    n = len(panel)
    cols, totals = [np.ones(n)], [float(n)]
    for var, m in margins.groupby("variable", sort=False):
        share = m["target"].to_numpy() / m["target"].sum()
        for cat, s in list(zip(m["category"], share))[1:]:
            cols.append((frame[var] == cat).to_numpy(dtype=float))
            totals.append(n * s)
    A, T = np.column_stack(cols), np.array(totals)

    def f(lam):
        return np.exp(A @ lam).sum() - lam @ T

    def grad(lam):
        return A.T @ np.exp(A @ lam) - T

    def hess(lam):
        return A.T @ (A * np.exp(A @ lam)[:, None])

    lam = np.zeros(A.shape[1])
    for _ in range(100):  # Newton's method with backtracking on the convex dual
        step = np.linalg.solve(hess(lam), grad(lam))
        t = 1.0
        while f(lam - t * step) > f(lam) and t > 1e-8:
            t /= 2
        lam = lam - t * step
        if np.abs(grad(lam)).max() < 1e-9 * n:
            break
    assert np.abs(grad(lam)).max() < 1e-9 * n, "reference solver did not converge"
    return np.exp(A @ lam)


# --- agreement with independent references -------------------------------------------------------------------
def test_single_margin_rake_equals_closed_form_poststratification(small_panel):
    m = _margins(["age_group"])
    raked = W.rake(small_panel.data, m)
    ps = W.poststratify(small_panel.data, m, "age_group")
    counts = small_panel.data["age_group"].value_counts()
    target = m.set_index("category")["target"]
    by_hand = len(small_panel.data) * small_panel.data["age_group"].map(target / counts).astype(float)
    np.testing.assert_allclose(raked.weights.to_numpy(), ps.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(ps.to_numpy(), by_hand.to_numpy(), rtol=1e-12)
    assert raked.n_iter == 1


def test_saturated_two_way_rake_equals_cell_poststratification(small_panel):
    """Raking on age, income and their full interaction is post-stratification on the 36 cells."""
    df = small_panel.data
    cells = df.groupby(AGE_INCOME, observed=True).size()
    pop = population_margins().set_index(["variable", "category"])["target"]
    rows = [{"variable": "age_group:income_bracket", "category": f"{a}:{i}",
             "target": pop["age_group", a] * pop["income_bracket", i]} for a, i in cells.index]
    joint = pd.DataFrame(rows)
    joint["target"] /= joint["target"].sum()
    # one-way margins implied by the joint table, so that the three sets of margins are consistent
    key = joint["category"].str.split(":", expand=True)
    implied = pd.concat([
        joint.groupby(key[0])["target"].sum().rename_axis("category").reset_index().assign(variable="age_group"),
        joint.groupby(key[1])["target"].sum().rename_axis("category").reset_index().assign(
            variable="income_bracket"),
        joint,
    ], ignore_index=True)[["variable", "category", "target"]]
    raked = W.rake(df, implied)
    ps = W.poststratify(df, joint, "age_group:income_bracket")
    assert raked.converged
    np.testing.assert_allclose(raked.weights.to_numpy(), ps.to_numpy(), rtol=1e-6)
    assert raked.max_margin_error < 1e-8


def test_rake_equals_dual_calibration_solution(small_panel):
    df = small_panel.data.head(1500)
    m = _margins(AGE_INCOME)
    raked = W.rake(df, m, tol=1e-12)
    ref = _dual_raking_reference(df, m)
    np.testing.assert_allclose(raked.weights.to_numpy(), ref, rtol=1e-6)


def test_counts_and_shares_give_the_same_weights_up_to_scale(small_panel):
    shares = _margins(AGE_INCOME)
    counts = shares.assign(target=shares["target"] * 2_500_000)
    ws = W.rake(small_panel.data, shares).weights
    wc = W.rake(small_panel.data, counts).weights
    assert ws.sum() == pytest.approx(len(small_panel.data))
    assert wc.sum() == pytest.approx(2_500_000)
    np.testing.assert_allclose(wc.to_numpy() / wc.sum(), ws.to_numpy() / ws.sum(), rtol=1e-10)


# --- the planted truth ------------------------------------------------------------------------------------
def test_raking_moves_segment_shares_to_the_population(medium_panel):
    """Inclusion depends only on age, so raking on age (and income) removes the segment-share bias."""
    df, truth, params = medium_panel.data, medium_panel.truth, medium_panel.params
    pop = params["population_segment_shares"]
    result = W.rake(df, _margins(AGE_INCOME))
    before = _segment_tvd(truth, None, pop)
    after = _segment_tvd(truth, result.weights, pop)
    assert result.converged and result.max_margin_error < 1e-6
    assert before > 0.05  # the panel is biased (planted: young people over-represented)
    assert after < before / 3
    # the young segment 0 is over-represented by ~28 % before weighting, close to target after
    seg0 = W.weighted_shares(truth["true_segment"], result.weights)[0]
    assert abs(seg0 - pop[0]) < 0.015 < abs(W.weighted_shares(truth["true_segment"])[0] - pop[0])


def test_margin_table_reports_before_and_after(small_panel):
    m = _margins(AGE_INCOME)
    result = W.rake(small_panel.data, m)
    tab = W.margin_table(small_panel.data, m, result.weights)
    assert len(tab) == len(m)
    assert tab["weighted_error"].abs().max() < 1e-6
    young = tab.set_index("category").loc["18-24"]
    assert young["unweighted_share"] > young["target_share"] + 0.03  # planted over-representation
    assert tab["n_respondents"].sum() == 2 * len(small_panel.data)


# --- trimming and diagnostics -----------------------------------------------------------------------------
def test_trimming_caps_weights_and_keeps_margins(small_panel):
    df = small_panel.data.dropna(subset=["education_level", "household_size"])
    m = population_margins()
    free = W.rake(df, m)
    assert free.weights.max() / free.weights.mean() > 2.2  # otherwise the cap below would not bind
    capped = W.rake(df, m, cap=2.1)  # (1.8 became infeasible on the issue-14 world: a cell needs 2.02)
    ratio = capped.weights.max() / capped.weights.mean()
    assert capped.cap_satisfied and ratio <= 2.1 * 1.001
    assert capped.trim_rounds >= 1
    assert capped.max_margin_error < 1e-6
    assert set(capped.history["run"]) == set(range(capped.trim_rounds + 1))
    assert free.weights.min() / free.weights.mean() < 0.75
    floored = W.rake(df, m, floor=0.8)
    assert floored.cap_satisfied and floored.weights.min() / floored.weights.mean() >= 0.8 * 0.999
    assert floored.max_margin_error < 1e-6


def test_infeasible_cap_is_reported(small_panel):
    df = small_panel.data
    m = _margins(AGE_INCOME)
    with pytest.warns(RuntimeWarning, match="infeasible"):
        res = W.rake(df, m, cap=1.05, max_trim_rounds=3)
    assert not res.cap_satisfied
    assert res.max_margin_error < 1e-6  # margins are honoured, the cap is what gives


def test_kish_design_effect_and_effective_n():
    w = np.array([1.0, 1.0, 2.0, 2.0])
    assert W.kish_design_effect(w) == pytest.approx(4 * 10 / 36)
    assert W.effective_sample_size(w) == pytest.approx(3.6)
    rng = np.random.default_rng(0)
    v = rng.lognormal(0, 0.7, 10_000)
    assert W.kish_design_effect(v) == pytest.approx(1 + (v.std() / v.mean()) ** 2)
    assert W.kish_design_effect(np.full(7, 3.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        W.kish_design_effect(np.array([1.0, -1.0]))


# --- clear errors -------------------------------------------------------------------------------------------
def test_margins_not_covering_a_category_name_it(small_panel):
    m = _margins(["age_group"])
    m = m[m["category"] != "65+"]
    m = m.assign(target=m["target"] / m["target"].sum())
    with pytest.raises(ValueError, match=r"do not cover categor\(ies\) \['65\+'\] of 'age_group'"):
        W.rake(small_panel.data, m)


def test_category_without_respondents_is_an_error(small_panel):
    df = small_panel.data[small_panel.data["income_bracket"] != "150k+"]
    with pytest.raises(ValueError, match=r"\['150k\+'\] of 'income_bracket' have a positive target but no"):
        W.rake(df, _margins(["income_bracket"]))


def test_inconsistent_totals_are_an_error(small_panel):
    m = _margins(AGE_INCOME)
    m.loc[m["variable"] == "age_group", "target"] *= 1000
    m.loc[m["variable"] == "income_bracket", "target"] *= 900
    with pytest.raises(ValueError, match="do not sum consistently"):
        W.rake(small_panel.data, m)
    shares = _margins(["age_group"]).assign(target=lambda d: d["target"] * 0.9)
    shares = pd.concat([shares, _margins(["income_bracket"])])
    with pytest.raises(ValueError, match="do not sum consistently"):
        W.validate_margins(shares)


def test_missing_values_and_unknown_variables_are_errors(small_panel):
    df = small_panel.data
    with pytest.raises(ValueError, match=r"'education_level' is missing for \d+ row\(s\) \(e.g. \['U"):
        W.rake(df, _margins(["education_level"]))
    bad = pd.DataFrame({"variable": ["region"], "category": ["north"], "target": [1.0]})
    with pytest.raises(ValueError, match=r"needs panel column\(s\) \['region'\]"):
        W.rake(df, bad)
    neg = _margins(["age_group"])
    neg.loc[0, "target"] = -0.1
    with pytest.raises(ValueError, match="negative target"):
        W.validate_margins(neg)
    with pytest.raises(ValueError, match="missing column"):
        W.validate_margins(neg.drop(columns="target"))


def test_read_margins_round_trip(tmp_path):
    path = tmp_path / "population_margins.csv"
    population_margins().to_csv(path, index=False)
    m = W.read_margins(path)
    assert set(m["variable"]) == {"age_group", "income_bracket", "education_level", "household_size"}
    assert m.groupby("variable")["target"].sum().to_numpy() == pytest.approx(1.0)
    assert W.margins_total(m) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.read_margins(tmp_path / "nope.csv")


def test_household_size_is_banded_like_the_margins():
    s = pd.Series([1, 2, 3, 4, 5, 8, None], dtype="Int64")
    assert W.household_size_band(s).tolist()[:6] == ["1", "2", "3", "4", "5+", "5+"]
    assert pd.isna(W.household_size_band(s).iloc[6])


# --- real data -------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_census_margins_and_raking_adult(external_data):
    m = W.census_age_sex_margins(external_data / "census_popest" / "sc-est2019-agesex-civ.csv", year=2019)
    totals = m.groupby("variable")["target"].sum()
    assert totals.nunique() == 1 or np.allclose(totals, totals.iloc[0])
    assert 2.3e8 < totals.iloc[0] < 2.7e8  # US civilian adults in 2019: about 250 million
    shares = m[m["variable"] == "sex"].set_index("category")["target"] / totals.iloc[0]
    assert 0.50 < shares["Female"] < 0.53
    adult = pd.read_csv(external_data / "adult_census" / "adult.data", header=None, skipinitialspace=True,
                        usecols=[0, 9], names=["age", "sex"])
    adult["age_group"] = pd.cut(adult["age"], [17, 24, 34, 44, 54, 64, np.inf],
                                labels=["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]).astype("string")
    adult = adult.dropna()
    res = W.rake(adult, m[m["variable"] == "age_group:sex"], id_col=None)
    tab = W.margin_table(adult, m[m["variable"] == "age_group:sex"], res.weights)
    assert tab["weighted_error"].abs().max() < 1e-9
    assert tab["unweighted_error"].abs().max() > 0.02  # Adult is not a census-proportional sample
    np.testing.assert_allclose(res.weights, W.poststratify(adult, m, "age_group:sex", id_col=None), rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W.rake(adult, m[m["variable"].isin(["age_group", "sex"])], id_col=None)


# --- collapsed-cell raking (issue 20 item 3) ----------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"cap": 2.1}, {"floor": 0.8}, {"cap": 2.1, "floor": 0.7}])
def test_collapsed_raking_equals_row_level_raking(small_panel, options):
    """Raking the table of distinct cells and mapping weights back gives the row-level weights to 1e-9.

    Rows are shuffled first so that rows of one cell are scattered: a wrong mapping back (cell order,
    a missing inverse, weights per cell instead of per row) fails here.
    """
    df = small_panel.data.dropna(subset=["education_level", "household_size"])
    df = df.iloc[np.random.default_rng(4).permutation(len(df))]
    m = population_margins()
    rows = W.rake(df, m, tol=1e-12, collapse=False, **options)
    cells = W.rake(df, m, tol=1e-12, **options)
    assert cells.n_cells is not None and cells.n_cells < len(df) / 2  # really collapsed
    assert rows.n_cells is None
    np.testing.assert_allclose(cells.weights.to_numpy(), rows.weights.to_numpy(), rtol=1e-9, atol=0)
    assert cells.weights.index.equals(df.index)
    assert cells.trim_rounds == rows.trim_rounds and cells.cap_satisfied == rows.cap_satisfied
    np.testing.assert_allclose(cells.history["max_weight_ratio"], rows.history["max_weight_ratio"], rtol=1e-9)
    if "cap" in options:
        assert cells.trim_rounds >= 1 and cells.weights.max() / cells.weights.mean() <= options["cap"] * 1.001


def test_collapsed_raking_with_unequal_base_weights(small_panel):
    """Base weights vary within a cell: the cells are split by base weight, weights still equal row-level."""
    df = small_panel.data.head(3000)
    m = _margins(AGE_INCOME)
    d = np.random.default_rng(2).choice([0.5, 1.0, 2.0, 4.0], size=len(df))
    rows = W.rake(df, m, base_weights=d, tol=1e-12, cap=3.0, collapse=False)
    cells = W.rake(df, m, base_weights=d, tol=1e-12, cap=3.0)
    np.testing.assert_allclose(cells.weights.to_numpy(), rows.weights.to_numpy(), rtol=1e-9, atol=0)
    assert cells.n_cells <= 4 * W.rake(df, m).n_cells < len(df) / 10  # cells x distinct base weights, not rows


def test_collapse_cells_round_trip():
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, k, 10_000) for k in (3, 5, 7)]
    inverse, cell_codes, counts, base = W.collapse_cells(codes, [3, 5, 7])
    for c, cc in zip(codes, cell_codes):
        np.testing.assert_array_equal(cc[inverse], c)
    assert counts.sum() == 10_000 and np.array_equal(np.bincount(inverse), counts) and (base == 1).all()
    limit = W.DENSE_CELL_LIMIT
    try:  # the sorting path gives the same cells
        W.DENSE_CELL_LIMIT = 1
        inv2, cc2, counts2, _ = W.collapse_cells(codes, [3, 5, 7])
    finally:
        W.DENSE_CELL_LIMIT = limit
    np.testing.assert_array_equal(inv2, inverse)
    np.testing.assert_array_equal(counts2, counts)


def test_panel_alignment_of_stage_outputs_equals_the_id_lookup():
    """helpers.panel takes a stage's values as they are only when its ids are the table's, in order; any other
    order, a missing id or a repeated one goes through the lookup, and every case equals uid.map(values)."""
    from helpers.panel import _align

    rng = np.random.default_rng(0)
    uid = pd.Series([f"u{i}" for i in range(200)], name="user_id")
    w = pd.Series(rng.gamma(2.0, 1.0, 200), index=uid.to_numpy())
    w.iloc[7] = np.nan
    cases = [w, w.sample(frac=1.0, random_state=1), w.iloc[:-1], w.rename(index={"u3": "zz"}),
             pd.Series(np.arange(200), index=uid.to_numpy()), pd.Series(uid.to_numpy(), index=uid.to_numpy())]
    for values in cases:
        pd.testing.assert_series_equal(_align(uid, values), uid.map(values))
    dup = pd.Series([1.0, 2.0], index=["u0", "u0"])
    with pytest.raises(Exception):
        uid.iloc[:2].map(dup)
    with pytest.raises(Exception):
        _align(uid.iloc[:2], dup)


def test_margin_table_counts_each_category_as_the_per_row_labels_do():
    # the table is computed from category codes; the reference counts the per-row labels of raking_frame
    rng = np.random.default_rng(5)
    n = 3000
    panel = pd.DataFrame({"age_group": rng.choice(["18-24", "25-34", "35-44"], n),
                          "sex": pd.Series(rng.choice(["F", "M"], n), dtype="string[pyarrow]"),
                          "household_size": pd.array(rng.integers(1, 8, n), dtype="Int64")})
    panel.loc[rng.random(n) < 0.05, "sex"] = pd.NA  # missing: counted in no category
    margins = pd.DataFrame({"variable": ["age_group:sex"] * 6 + ["household_size"] * 5,
                            "category": [f"{a}:{s}" for a in ["18-24", "25-34", "35-44"] for s in "FM"]
                            + ["1", "2", "3", "4", "5+"], "target": np.r_[np.full(6, 1 / 6), np.full(5, 0.2)]})
    w = rng.gamma(2.0, 0.5, n)
    got = W.margin_table(panel, margins, w)
    frame = W.raking_frame(panel, ["age_group:sex", "household_size"])
    for _, r in got.iterrows():
        hit = (frame[r["variable"]] == r["category"]).fillna(False).to_numpy()
        assert r["n_respondents"] == hit.sum() > 0
        assert r["weighted_share"] == pytest.approx(w[hit].sum() / w.sum(), rel=1e-12)
    assert got.loc[got["variable"] == "age_group:sex", "n_respondents"].sum() == panel["sex"].notna().sum()


def test_margin_columns_are_the_parts_of_the_file_s_variables(tmp_path):
    f = tmp_path / "m.csv"
    pd.DataFrame({"variable": ["age_group:sex", "age_group:sex", "income_bracket", "income_bracket"],
                  "category": ["18-24:F", "18-24:M", "low", "high"], "target": [0.5, 0.5, 0.4, 0.6]}).to_csv(f, index=False)
    assert W.margin_columns(f) == ["age_group", "sex", "income_bracket"]
    assert W.margin_columns(None) == [] and W.margin_columns(tmp_path / "absent.csv") == []
