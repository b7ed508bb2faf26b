"""The media-planning stage (notebook 07c) as a few calls: each returns tables and numbers the notebook shows.

:func:`prepare` finds the run's media tables (or, on a synthetic run whose notebook 00 did not write them,
generates them from the planted truth, saying so); when there are none it returns a stage with ``ok=False``
and the reason, and every later call returns ``None``, so the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import attribution as AT
from . import budget as BU
from . import daypart as DP
from . import experiments as XP
from . import exposures_module
from . import reach as RC
from .data import MediaData, available, load_media, missing_reason


@dataclass
class Stage:
    P: object
    ok: bool
    reason: str = ""
    md: MediaData | None = None
    users: pd.DataFrame | None = None
    groups: pd.Series | None = None          # segment label (name) by user_id, of the media data's users
    group_codes: pd.Series | None = None     # segment code by user_id, of the media data's users
    dates: pd.DatetimeIndex | None = None
    generated_here: bool = False
    notes: list = field(default_factory=list)
    #: customers per segment label over the whole customer table (``groups.value_counts()`` before the media
    #: tables' users were kept), largest first
    group_sizes: pd.Series | None = None
    #: segment label of each segment code (whole customer table)
    segment_names: dict = field(default_factory=dict)

    @property
    def has_truth(self) -> bool:
        return self.md is not None and self.md.truth is not None and self.md.users_truth is not None


def prepare(P, seed: int = 42) -> Stage:
    """Load the media tables of run ``P`` (generating them from planted truth when 00 did not)."""
    from helpers import artifacts

    generated = False
    if not available(P):
        truth_file = P.truth / "users_truth.parquet"
        if truth_file.exists() and (P.processed / artifacts.UNIFIED_PARQUET).exists():
            users = artifacts.load_unified(P)
            truth = pd.read_parquet(truth_file)
            exposures_module().write_exposures((users, truth), P.raw, P.truth, seed)
            generated = True
        else:
            return Stage(P, False, missing_reason(P))
    # only what the stage reads from the customer table and the segments (the pre-period covariate, the
    # segment of each user), and only the rows of the users in the media tables (the measurement panel, at most
    # 100k people) beyond the customer-wide counts: as whole tables of Python strings they were 1.2 GB at a
    # million customers (12 GB at 10M); what the media steps read of them is the same
    import pyarrow as pa
    import pyarrow.compute as pc

    users = artifacts.load(P, "unified", columns=["user_id", "monthly_conversions"], arrow_strings=True)
    md = load_media(P)
    media_ids = _media_user_ids(md)
    # the fill value of a missing pre-period covariate in the response fit: the median over every customer
    md.cache["monthly_conversions_median"] = float(pd.to_numeric(users["monthly_conversions"], errors="coerce").median())
    users = _rows_of(users, media_ids)
    users["user_id"] = users["user_id"].astype(object)
    users = users.reset_index(drop=True)
    md.users = users
    try:
        seg = artifacts.load(P, "segments", columns=["user_id", "segment", "segment_name"], arrow_strings=True)
        names = seg["segment_name"].astype(object).astype(str) if seg["segment_name"].hasnans else seg["segment_name"]
        sizes = names.value_counts()
        sizes = pd.Series(sizes.to_numpy(), index=pd.Index(sizes.index.astype(object).astype(str), dtype=object))
        pairs = pd.DataFrame({"c": seg["segment"].to_numpy(), "n": names}).drop_duplicates("c")
        seg_names = dict(zip(pairs["c"].tolist(), pairs["n"].astype(object).astype(str).tolist()))
        del names, pairs
        seg = _rows_of(seg, media_ids)
        groups = pd.Series(seg["segment_name"].astype(object).astype(str).to_numpy(),
                           index=seg["user_id"].astype(object).astype(str))
        codes = pd.Series(seg["segment"].to_numpy(), index=seg["user_id"].astype(object).astype(str))
    except FileNotFoundError:
        n_all = artifacts.load(P, "unified", columns=["user_id"], arrow_strings=True).shape[0]
        ids = users["user_id"].astype(str)
        groups = pd.Series("All customers", index=ids)
        codes = pd.Series(0, index=ids)
        sizes = pd.Series([n_all], index=pd.Index(["All customers"], dtype=object))
        seg_names = {0: "All customers"}
    dates = pd.DatetimeIndex(sorted(pd.to_datetime(md.spend["date"]).unique()))
    S = Stage(P, True, "", md, users, groups, codes, dates, generated, group_sizes=sizes, segment_names=seg_names)
    return S


def _media_user_ids(md: MediaData):
    """The distinct user ids of every media table (Arrow text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [pa.array(t["user_id"].astype(str), type=pa.large_string()) for t in
             (md.assignment, md.exposures, md.conversions, md.touch_paths, md.users_truth)
             if t is not None and "user_id" in t]
    return pc.unique(pa.chunked_array(parts, type=pa.large_string())) if parts else pa.array([], pa.large_string())


def _rows_of(frame: pd.DataFrame, ids) -> pd.DataFrame:
    """The rows of ``frame`` whose ``user_id`` is one of ``ids`` (an Arrow membership test, in the frame's order)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = pa.array(frame["user_id"], from_pandas=True)
    col = col.cast(pa.large_string()) if pa.types.is_string(col.type) else col
    keep = pc.is_in(col.cast(pa.large_string()), value_set=ids).to_numpy(zero_copy_only=False)
    return frame.loc[keep]


# --- reach ----------------------------------------------------------------------------------------
def reach_section(S: Stage, seed: int = 0) -> dict | None:
    if not S.ok:
        return None
    md = S.md
    served = md.assignment.loc[~md.assignment["user_holdout"], "user_id"].astype(str) if md.assignment is not None \
        else pd.Series(md.exposures["user_id"].astype(str).unique())
    cube = RC.exposure_cube(md.exposures, served, md.channels, S.dates)
    g = S.groups.reindex(pd.Index(served)).fillna("unsegmented").to_numpy()
    curves = RC.reach_curves(cube, md.channels, seed=seed)
    by_seg = RC.reach_curves(cube, md.channels, groups=g, n_grid=(1, 7, 14, 28), n_draws=4, seed=seed)
    reached = cube.any(2)
    dup = RC.duplication(reached, md.channels)
    err = float((curves["reach_bbd"] - curves["reach_observed"]).abs().max())
    err_seg = float((by_seg["reach_bbd"] - by_seg["reach_observed"]).abs().max())
    return {"curves": curves, "by_segment": by_seg, "duplication": dup, "total": RC.total_reach(reached),
            "bbd_check": RC.published_bbd_check(), "bbd_fit_err": err, "bbd_fit_err_segments": err_seg,
            "sainsbury_union_err": float((dup["union_sainsbury"] - dup["union_observed"]).abs().max())}


# --- budget ---------------------------------------------------------------------------------------
def target_audience(S: Stage, segment=None) -> tuple[str, pd.Index]:
    """(name, user ids) of the target segment: ``segment`` (code or name) or the largest one (by customers).

    The ids are those of the segment's users in the media data (the only ones the media models read);
    ``S.group_sizes[name]`` is the segment's size over the whole customer table."""
    sizes = S.group_sizes if S.group_sizes is not None else S.groups.value_counts()
    if segment is None:
        name = sizes.index[0]
    elif segment in set(sizes.index):
        name = segment
    elif segment in S.segment_names:
        name = S.segment_names[segment]
    else:
        name = S.groups[S.group_codes == segment].iloc[0]
    return str(name), pd.Index(S.groups.index[S.groups == name])


def budget_section(S: Stage, audience_ids, budget_per_person: float = 1.0, seed: int = 0,
                   support_multiple: float | None = BU.SUPPORT_MULTIPLE) -> dict | None:
    """Fit, optimise (conversions and reach, within ``support_multiple`` of the data's exposure rates),
    compare with the affinity rule and score against the truth."""
    if not S.ok:
        return None
    model = BU.fit_response(S.md, audience_ids, seed=seed, groups=S.groups)
    alloc = BU.optimise(model, budget_per_person, "conversions", seed=seed, support_multiple=support_multiple)
    alloc_reach = BU.optimise(model, budget_per_person, "reach", effective_frequency=3, seed=seed,
                              support_multiple=support_multiple)
    rule = BU.affinity_rule(model, budget_per_person)
    equal = np.full(len(model.channels), budget_per_person / len(model.channels))
    rows = {"optimised (conversions)": alloc.spend_per_person, "optimised (reach 3+)": alloc_reach.spend_per_person,
            "affinity rule of thumb": rule, "equal split": equal}
    out = {"model": model, "alloc": alloc, "alloc_reach": alloc_reach}
    score = None
    if S.has_truth:
        ut = S.md.users_truth.set_index(S.md.users_truth["user_id"].astype(str)).loc[model.users].reset_index(drop=True)
        days = int(S.md.truth["days"])
        sc = BU.share_of_planted_optimum(alloc.spend_per_person, ut, budget_per_person, days,
                                         channels=model.channels)
        rows["planted optimum"] = pd.Series(sc["optimum"], index=exposures_module().CHANNELS).reindex(
            model.channels).to_numpy()
        score = sc
        sr = BU.share_of_planted_optimum(alloc_reach.spend_per_person, ut, budget_per_person, days, "reach", 3,
                                         channels=model.channels)
        out["reach_score"] = sr
    comp = []
    for name, x in rows.items():
        r = {"allocation": name, **{c: x[j] * model.n for j, c in enumerate(model.channels)},
             "conversions_model": model.conversions(x) * model.n, "reach3_model": model.reach(x, 3)}
        if score is not None:
            E = exposures_module()
            xx = pd.Series(x, index=model.channels).reindex(E.CHANNELS).fillna(0).to_numpy()
            r["conversions_planted"] = E.true_outcome(xx, ut, days) * model.n
            r["share_of_planted_optimum"] = E.true_outcome(xx, ut, days) / score["optimum_value"]
            r["reach3_planted"] = E.true_outcome(xx, ut, days, "reach", 3)
        comp.append(r)
    out["comparison"] = pd.DataFrame(comp)
    out["score"] = score
    return out


def save_response_model(S: Stage, model: BU.ResponseModel, target_name: str):
    """Save every segment's fitted curves (artifact ``media_response_model``) for the Explorer's Plan view,
    which then plans any audience without fitting (:func:`helpers.media.budget.model_from_table`)."""
    if not S.ok:
        return None
    from helpers import artifacts

    return artifacts.save(S.P, "media_response_model", BU.response_table(model, target_name))


def segment_scores(S: Stage, table: pd.DataFrame, budget_per_person: float = 1.0, seed: int = 0,
                   support_multiple: float | None = BU.SUPPORT_MULTIPLE) -> pd.DataFrame | None:
    """Every segment's optimised plan from the saved curves (:func:`helpers.media.budget.model_from_table`,
    as the Explorer plans it, no refit) scored against its planted optimum, beside the affinity rule of
    thumb and the equal split (``None`` without planted truth)."""
    if not S.ok or not S.has_truth:
        return None
    ut = S.md.users_truth.set_index(S.md.users_truth["user_id"].astype(str))
    days = int(S.md.truth["days"])
    rows = []
    sizes = S.group_sizes if S.group_sizes is not None else S.groups.value_counts()
    for name in sizes.index:
        ids = S.groups.index[S.groups == name]
        if sizes[name] < 30:      # the segment's customers (whole table), as before the media users were kept
            continue
        m = BU.model_from_table(S.md, ids, table, S.groups)
        u = ut.loc[m.users].reset_index(drop=True)
        a = BU.optimise(m, budget_per_person, seed=seed, support_multiple=support_multiple)
        first = BU.share_of_planted_optimum(a.spend_per_person, u, budget_per_person, days, channels=m.channels)
        # the segment's planted optimum once: the rule of thumb and the equal split are scored against it
        share = lambda x: BU.share_of_planted_optimum(x, u, budget_per_person, days, channels=m.channels,
                                                      optimum=first["optimum"])["share"]
        rows.append({"segment": name, "n": m.n, "share_of_planted_optimum": first["share"],
                     "rule_of_thumb_share": share(BU.affinity_rule(m, budget_per_person)),
                     "equal_split_share": share(np.full(len(m.channels), budget_per_person / len(m.channels))),
                     "support_multiple": a.support_multiple})
    return pd.DataFrame(rows)


def fit_and_save_response_model(P, segment=None, seed: int = 0):
    """Prepare run ``P``, fit the response model (every segment's curves come out of the one pooled fit
    whose target is ``segment``, default the largest) and save it: what 07c's budget step leaves for the
    Explorer, in one call (stand-in runs of tests and demos). Returns the saved path or ``None``."""
    S = prepare(P, seed=seed)
    if not S.ok:
        return None
    name, ids = target_audience(S, segment)
    return save_response_model(S, BU.fit_response(S.md, ids, seed=seed, groups=S.groups), name)


# --- daypart, attribution, experiments -------------------------------------------------------------
def daypart_section(S: Stage) -> dict | None:
    if not S.ok or S.md.conversions is None:
        return None
    cells = DP.cell_counts(S.md.conversions, S.groups, S.dates, sizes=S.group_sizes)
    fit = DP.fit_profile(cells)
    out = {"fit": fit, "best": DP.best_cells(fit, 3), "corr": None}
    if S.has_truth:
        t = S.md.users_truth.set_index(S.md.users_truth["user_id"].astype(str))["true_segment"]
        truth = DP.truth_profile(t, S.groups, S.md.truth["response_daypart"])
        out["truth"] = truth
        out["corr"] = DP.truth_corr(fit, truth)
    return out


def attribution_section(S: Stage, n_boot: int = 100, seed: int = 0) -> dict | None:
    if not S.ok or S.md.touch_paths is None:
        return None
    res = AT.attribute(S.md.touch_paths, S.md.channels, n_boot=n_boot, seed=seed)
    out = {"result": res, "errors": None}
    if S.has_truth:
        true = S.md.truth["incremental_share"]
        errs = AT.truth_error(res.table, true)
        uniform = float(np.mean([abs(1 / len(true) - v) for v in true.values()]))
        errs = pd.concat([errs, pd.DataFrame([{"method": "uniform (baseline)", "mean_abs_err": uniform,
                                               "coverage": np.nan}])], ignore_index=True)
        out["errors"] = errs
    return out


def experiments_section(S: Stage, n_sims: int = 2000, seed: int = 0) -> dict | None:
    if not S.ok or S.md.conversions is None or S.md.assignment is None:
        return None
    a = S.md.assignment
    ids = a["user_id"].astype(str)
    conv = S.md.conversions.groupby(S.md.conversions["user_id"].astype(str))["conversions"].sum()
    y = ids.map(conv).fillna(0).to_numpy(float)
    pre = pd.to_numeric(S.users.set_index(S.users["user_id"].astype(str))["monthly_conversions"],
                        errors="coerce").reindex(ids).fillna(0).to_numpy(float) \
        if "monthly_conversions" in S.users.columns else None
    treat = ~a["user_holdout"].to_numpy(bool)
    plain = XP.diff_in_means(y, treat)
    cuped = XP.diff_in_means(y, treat, pre) if pre is not None else None
    fpr = XP.aa_false_positive_rate(y[treat], n_sims=n_sims, seed=seed)
    out = {"plain": plain, "cuped": cuped, "fpr": fpr, "n_sims": n_sims}
    gd = XP.geo_daily(S.md.conversions, a, S.dates)
    dark = sorted(a.loc[a["geo_holdout"], "geo"].unique())
    test_start = S.md.truth["geo_holdout"]["test_start"] if S.has_truth else S.dates[-14]
    out["geo"] = XP.geo_lift(gd, dark, test_start)
    base = float(y[~treat].mean())
    out["sample_size_10pct"] = XP.sample_size_arcsine(min(base, 0.99), min(base * 1.1, 0.999)) if base < 0.9 else None
    if S.has_truth:
        ut = S.md.users_truth.set_index(S.md.users_truth["user_id"].astype(str)).reindex(ids)
        mu0 = ut["expected_baseline_conversions"].to_numpy()
        mu1 = mu0 + ut["expected_media_conversions"].to_numpy()
        out["power"] = XP.simulate_rejection(mu0, mu1, treat_share=float(treat.mean()), n_sims=max(n_sims // 2, 500),
                                             seed=seed)
        out["fpr_model"] = XP.simulate_rejection(mu0, None, treat_share=float(treat.mean()),
                                                 n_sims=max(n_sims // 2, 500), seed=seed + 1)
        planted = S.md.truth["user_holdout"]["lift_abs_per_user"]
        out["planted_lift"] = planted
        out["lift_in_ci"] = bool(plain.ci_low <= planted <= plain.ci_high)
        g = S.md.truth["geo_holdout"]["lift_conversions"]
        out["planted_geo_lift"] = g
        out["geo_in_ci"] = bool(out["geo"].ci_low <= g <= out["geo"].ci_high)
    return out
