"""Affinity crosstab and audience questions: one Ibis code path, same answers on DuckDB and Spark.

The engine returns per-segment sufficient statistics; the table built from them must equal a direct numpy
computation of the linearised estimator on the user-level data, and the two engines must agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import affinity as A
from helpers import artifacts
from helpers import questions as Q
from helpers import schema as S

QUESTIONS = [
    dict(breakdown="income_bracket", where=[("segment_name", "==", "Podcast-heavy commuters"),
                                             ("time_on_podcasts_min", "above_mean")]),
    dict(breakdown="event_attendance_genres", where=[("presence_of_children", "==", True),
                                                      ("offline_purchase_intent", "contains", "auto")]),
    dict(breakdown="traveler_type", metric="avg_monthly_spend",
         where=[("homeowner_status", "==", "owner"), ("age_group", "in", ["35-44", "45-54"])]),
    dict(breakdown="household_size", where=[("segment", "==", 3)],
         base_where=[("age_group", "!=", "18-24"), ("time_on_social_media_min", "below_mean")]),
]


@pytest.fixture(scope="module")
def run(warehouse_run):
    return warehouse_run


def _warehouse(con, P):
    return Q.AudienceWarehouse.from_parquet(con, P.processed / artifacts.UNIFIED_PARQUET,
                                            P.processed / artifacts.WEIGHTS, P.processed / artifacts.SEGMENTS)


def _fit(con, P, base=None, **params):
    panel = _warehouse(con, P).panel
    return A.AffinityIndex(**params).fit(panel.filter(panel.segment.notnull()), base=base)


def _assert_same_table(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-9) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=rtol, atol=0,
                                       equal_nan=True, err_msg=c)
        else:
            assert x.astype(str).tolist() == y.astype(str).tolist(), c


@pytest.fixture(scope="module")
def duck_fit(run, duckdb_con):
    P, _ = run
    return _fit(duckdb_con, P)


def test_spark_and_duckdb_give_the_same_affinity_table(run, duck_fit, spark_con):
    P, frame = run
    spark = _fit(spark_con, P)
    assert duck_fit.engine_ == "duckdb" and spark.engine_ == "spark"
    _assert_same_table(duck_fit.table_, spark.table_)
    assert (duck_fit.table_["significant"] == spark.table_["significant"]).all()
    assert len(duck_fit.table_) > 400 and duck_fit.table_["significant"].sum() > 50
    # a pandas frame goes through the same path (registered into an in-memory DuckDB)
    _assert_same_table(duck_fit.table_, A.AffinityIndex().fit(frame).table_)


def test_base_filter_is_the_same_on_both_engines(run, duckdb_con, spark_con):
    P, frame = run
    query = "age_group == '25-34' and household_size >= 2"  # a pandas query, parsed into an Ibis filter
    params = dict(attributes=["age_group", "event_attendance_genres", "presence_of_children"])
    ref = A.AffinityIndex(**params).fit(frame, base=query).table_
    podcasts = ref[(ref["index_type"] == "intensity") & (ref["attribute"] == "time_on_podcasts_min")]
    assert podcasts["n_segment"].sum() == frame.eval(query).fillna(False).sum() > 300
    for con in (duckdb_con, spark_con):
        _assert_same_table(ref, _fit(con, P, base=query, **params).table_)


def _direct(y, seg, w, count_cells, zq=stats.norm.ppf(0.975)):
    """The estimator from user-level arrays: influence values summed unit by unit (no moments)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # empty cells give NaN, as in the library
        return _direct_unguarded(y, seg, w, count_cells, zq)


def _direct_unguarded(y, seg, w, count_cells, zq):
    obs = np.isfinite(y) & (w > 0)
    y, seg, w = y[obs], seg[obs], w[obs]
    labels = np.unique(seg)
    n, t_n, t_y = len(y), w.sum(), (w * y).sum()
    out = []
    for s in labels:
        ins = seg == s
        t_s, t_ys = w[ins].sum(), (w * y)[ins].sum()
        u = w * (ins * (y / t_ys - 1 / t_s) + 1 / t_n - y / t_y)
        se = np.sqrt(n / (n - 1) * (u**2).sum())
        m_s, m_r = t_ys / t_s, (t_y - t_ys) / (t_n - t_s)
        v = w * (ins * (y - m_s) / t_s - ~ins * (y - m_r) / (t_n - t_s))
        z = (m_s - m_r) / np.sqrt(n / (n - 1) * (v**2).sum())
        cell = ins & (y != 0) if count_cells else ins
        index = 100 * m_s / (t_y / t_n)
        out.append({"segment": s, "index": index, "se_log_index": se, "ci_low": index * np.exp(-zq * se),
                    "z": z, "p_value": 2 * stats.norm.sf(abs(z)), "n_unweighted": cell.sum(),
                    "n_weighted": w[cell].sum(), "n_effective": w[cell].sum() ** 2 / (w[cell] ** 2).sum(),
                    "horizontal_pct": 100 * t_ys / t_y})
    return pd.DataFrame(out)


def test_sufficient_statistics_equal_the_direct_computation(run, duck_fit):
    _, frame = run
    t = duck_fit.table_
    seg, w = frame["segment"].to_numpy(), frame["weight"].to_numpy(float)
    cols = ["index", "se_log_index", "ci_low", "z", "p_value", "n_unweighted", "n_weighted", "n_effective",
            "horizontal_pct"]
    ind, meta = A.attribute_indicators(frame, ["event_attendance_genres", "household_size", "age_group"])
    checks = []
    for m in S.CHANNEL_METRICS:
        y = frame[m].to_numpy(float)
        cut = A.weighted_quantile(y, w, 2 / 3)
        heavy = np.where(np.isfinite(y), (y > cut).astype(float), np.nan)
        checks += [("intensity", m, y, False), ("composition", m, heavy, True)]
    checks += [("share", meta.loc[c, "attribute"], ind[c].to_numpy(), True) for c in ind.columns]
    for kind, attr, y, count in checks:
        got = t[(t["index_type"] == kind) & (t["attribute"] == attr)].set_index("segment")
        ref = _direct(y, seg, w, count).set_index("segment")
        ok = got["base_flag"] != "suppressed"
        np.testing.assert_allclose(got.loc[ok, cols].to_numpy(float), ref.loc[ok[ok].index, cols].to_numpy(float),
                                   rtol=1e-9, err_msg=f"{kind} {attr}")
        np.testing.assert_allclose(got["se_log_index"], ref["se_log_index"], rtol=1e-9)  # also when hidden
    # the engine's weighted quantile is the numpy one
    m = "time_on_podcasts_min"
    assert f"> {A.weighted_quantile(frame[m].to_numpy(float), w, 2 / 3):g} " in \
        t.loc[(t["index_type"] == "composition") & (t["attribute"] == m), "definition"].iloc[0]


def test_engine_quantile_equals_numpy_on_ties_and_weights(duckdb_con):
    import ibis

    rng = np.random.default_rng(2)
    y = np.round(rng.lognormal(2, 1, 3000), 0)  # many ties
    y[:50] = np.nan
    w = rng.gamma(2, 0.5, 3000)
    w[50:80] = 0.0
    t = duckdb_con.create_table("quantile_check", pd.DataFrame({"y": y, "w": w}), overwrite=True)
    for q in (0.1, 0.5, 2 / 3, 0.99):
        assert A.engine_quantile(t, "y", q, weight="w") == A.weighted_quantile(y, w, q)
    assert isinstance(t, ibis.Table)


def test_spark_and_duckdb_answer_audience_questions_alike(run, spark_con):
    P, _ = run
    spark = _warehouse(spark_con, P)
    with Q.AudienceWarehouse.from_paths(P) as duck:  # the DuckDB warehouse file, as by default
        for q in QUESTIONS:
            a, b = duck.ask(**q), spark.ask(**q)
            assert (a.n_audience, a.n_base) == (b.n_audience, b.n_base) and a.n_audience > 0
            assert a.table["level"].tolist() == b.table["level"].tolist()
            _assert_same_table(a.table, b.table)
    assert spark.engine == "spark" and "segment" in spark.columns


def test_ibis_input_errors_are_clear(run, duckdb_con):
    P, _ = run
    panel = _warehouse(duckdb_con, P).panel
    with pytest.raises(ValueError, match="segment labels are missing in"):
        A.AffinityIndex(attributes=[]).fit(panel.mutate(segment=panel.segment.nullif(0)))
    with pytest.raises(ValueError, match="'weight' must hold finite weights >= 0"):
        A.AffinityIndex(attributes=[]).fit(panel.mutate(weight=-panel.weight))
    with pytest.raises(ValueError, match="segment column 'cluster'"):
        A.AffinityIndex().fit(panel, segment_col="cluster")
    with pytest.raises(ValueError, match="the base is empty"):
        A.AffinityIndex().fit(panel, base=lambda t: t.age_group == "nobody")


def test_both_layouts_of_the_attribute_query_agree(run, duckdb_con):
    """The long layout (Spark's default) and the union layout (DuckDB's) return the same totals."""
    P, _ = run
    panel = _warehouse(duckdb_con, P).panel
    t = panel.filter(panel.segment.notnull()).mutate(aff_w_=panel.weight, aff_w2_=panel.weight * panel.weight)
    out = []
    for layout in ("union", "long"):
        expr, decode = A._attribute_query(t, "segment", A.DEFAULT_ATTRIBUTES, "duckdb", layout)
        res = decode(duckdb_con.execute(expr)).fillna({"val_": ""})
        out.append(res.sort_values(["fam_", "tot_", "seg_", "val_"]).reset_index(drop=True))
    assert len(out[0]) > 300
    _assert_same_table(out[0], out[1])
