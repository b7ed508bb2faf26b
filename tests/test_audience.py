"""The one audience selector (helpers.audience.select): every kind, churn exclusion, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import artifacts
from helpers import audience as A
from helpers.paths import Paths


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_panel):
    """A run folder with the unified table, segments (planted) and lookalike scores."""
    root = tmp_path_factory.mktemp("aud")
    P = Paths(root / "data", root / "reports")
    P.processed.mkdir(parents=True)
    df = small_panel.data
    df.to_parquet(P.processed / artifacts.UNIFIED_PARQUET, index=False)
    t = small_panel.truth
    segs = pd.DataFrame({"user_id": df["user_id"].astype(str), "segment": t["true_segment"].to_numpy(),
                         "segment_name": t["true_segment_name"].to_numpy(),
                         "prob_2": np.where(t["true_segment"] == 2, 0.9, 0.05)})
    segs.to_parquet(P.processed / artifacts.SEGMENTS, index=False)
    n = len(df)
    rank = pd.array([pd.NA] * 200 + list(range(1, n - 199)), dtype="Int64")
    pd.DataFrame({"user_id": df["user_id"].astype(str), "audience": "Converters", "in_seed": [True] * 200 + [False] * (n - 200),
                  "score": np.linspace(1, 0, n), "rank": rank,
                  "reason_codes": "high conversions"}).to_parquet(P.processed / artifacts.LOOKALIKE_SCORES, index=False)
    return P, df


def _churned(df):
    return set(df.loc[df["churned_in_last_90_days"].astype(bool), "user_id"].astype(str))


def test_segment_kind_drops_churned_and_keeps_persona_names_home(run):
    P, df = run
    aud = A.select(P, "segment", segment=2)
    members = set(pd.read_parquet(P.processed / artifacts.SEGMENTS).query("segment == 2")["user_id"])
    assert set(aud.ids) == members - _churned(df) and aud.size == len(aud.ids) > 0
    assert "excluded" in aud.definition["churned_users"]
    assert set(aud.frame["segment_name"]) == {"segment 2"} and (aud.frame["score"] == 0.9).all()
    kept = A.select(P, "segment", segment=2, include_churned=True)
    assert set(kept.ids) == members and kept.definition["churned_users"].startswith("kept")
    named = A.select(P, "segment", segment=2, allow_third_party=True)
    assert named.frame["segment_name"].iloc[0] == aud.definition["persona_name"]
    with pytest.raises(ValueError, match="segment 9 has no members"):
        A.select(P, "segment", segment=9)


def test_lookalike_kind_takes_the_top_of_the_eligible_candidates(run):
    P, df = run
    aud = A.select(P, "lookalike", top=300)
    assert aud.size == 300 and not set(aud.ids) & _churned(df)
    scores = pd.read_parquet(P.processed / artifacts.LOOKALIKE_SCORES)
    cand = scores[scores["rank"].notna() & ~scores["user_id"].isin(_churned(df))].sort_values("rank")
    assert aud.ids.tolist() == cand["user_id"].head(300).tolist()  # best first, seed never included
    assert (aud.frame["segment_name"] == "Converters lookalike").all()
    share = A.select(P, "lookalike", top_share=0.1)
    assert share.size == round(0.1 * len(cand))
    for bad in (float("inf"), float("nan"), 0, 1.5, "lots"):
        with pytest.raises(ValueError, match="top_share"):
            A.select(P, "lookalike", top_share=bad)
    with pytest.raises(ValueError, match="between 1 and"):
        A.select(P, "lookalike", top=10 ** 9)


def test_outcome_kind_column_equals_value(run):
    P, df = run
    churners = A.select(P, "outcome", frame=df, column="churned_in_last_90_days", value="true")
    assert set(churners.ids) == _churned(df)  # a churn seed keeps its (churned) members
    assert "churn seed" in churners.definition["churned_users"]
    heavy = A.select(P, "outcome", frame=df, column="monthly_conversions", at_least=8)
    want = set(df.loc[df["monthly_conversions"] >= 8, "user_id"]) - _churned(df)
    assert set(heavy.ids) == want and heavy.definition["rule"] == "monthly_conversions >= 8"
    top = A.select(P, "outcome", frame=df, column="avg_monthly_spend", top_share=0.1, include_churned=True)
    assert abs(top.size - 0.1 * len(df)) <= 2
    assert A.matches(pd.Series(["Yes", "No", None]), "yes").tolist() == [True, False, False]
    assert A.matches(pd.Series([1, 0, 1]), True).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="not in the table"):
        A.select(P, "outcome", frame=df, column="shoe_size", value=1)
    with pytest.raises(ValueError, match="exactly one of value"):
        A.select(P, "outcome", frame=df, column="monthly_conversions")


def test_ids_kind_from_list_and_file(run, tmp_path):
    P, df = run
    ids = df["user_id"].astype(str).head(120).tolist()
    a = A.select(P, "ids", frame=df, ids=ids + ids[:3], include_churned=True)
    assert a.ids.tolist() == ids  # duplicates dropped, order kept
    f = tmp_path / "seed.txt"
    f.write_text("\n".join(ids) + "\n\n")
    b = A.select(P, "ids", frame=df, path=f, include_churned=True)
    assert b.ids.tolist() == ids and "seed.txt" in b.definition["source"]
    csv = tmp_path / "seed.csv"
    pd.DataFrame({"user_id": ids, "note": "x"}).to_csv(csv, index=False)
    assert A.select(P, "ids", frame=df, path=csv, include_churned=True).size == 120
    with pytest.raises(ValueError, match="not in the panel.*NOPE"):
        A.select(P, "ids", frame=df, ids=["NOPE"])
    with pytest.raises(ValueError, match="does not exist"):
        A.select(P, "ids", frame=df, path=tmp_path / "missing.txt")


def test_query_kind_is_restricted(run):
    P, df = run
    q = A.select(P, "query", frame=df, query="household_size >= 3 and homeowner_status == 'owner'",
                 include_churned=True)
    want = df[(df["household_size"] >= 3).fillna(False) & (df["homeowner_status"] == "owner").fillna(False)]
    assert set(q.ids) == set(want["user_id"])
    inn = A.select(P, "query", frame=df, query="age_group in ('18-24', '25-34')", include_churned=True)
    assert inn.size == int(df["age_group"].isin(["18-24", "25-34"]).sum())
    for bad in ("__import__('os').system('x') == 1", "age_group == open('f')", "household_size >= 'a'",
                "nonexistent == 1", ""):
        with pytest.raises(ValueError):
            A.select(P, "query", frame=df, query=bad)


def test_unknown_kind_and_options_refused(run):
    P, df = run
    with pytest.raises(ValueError, match="kind must be one of"):
        A.select(P, "magic")
    with pytest.raises(ValueError, match="unknown options"):
        A.select(P, "segment", segment=2, colour="red")




def test_lookalike_candidate_count_is_the_size_of_the_whole_candidate_audience(run):
    """lookalike_candidates counts what select(top_share=1.0) returns: ranked users that have not churned."""
    P, df = run
    scores = pd.read_parquet(P.processed / artifacts.LOOKALIKE_SCORES)
    full = A.select(None, "lookalike", frame=df, scores=scores, top_share=1.0)
    n = A.lookalike_candidates(scores, df)
    assert n == full.size
    ranked = set(scores.loc[scores["rank"].notna(), "user_id"].astype(str))
    assert n == len(ranked - _churned(df)) < len(ranked)  # churned users are not counted
