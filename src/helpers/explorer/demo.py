"""Stand-in runs for trying and testing the Explorer without running the whole pipeline.

:func:`write_demo_artifacts` writes a small synthetic run whose segments are the generator's planted
segments (optionally with a share of members deliberately mislabelled, as an imperfect segmentation
would), an affinity table computed by :mod:`helpers.affinity` on them, a churn-risk table computed from the
generator's planted churn process and, when asked, the lookalike stage's scores (:func:`write_lookalike_stage`,
notebook 08's hide-and-find through :mod:`helpers.lookalike`). Because everything derives from planted truth,
the app's numbers can be checked against it. Real runs use the artifacts of ``make reports`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts
from ..affinity import affinity_table
from ..generate import DEFAULT_OBSERVATION_DATE, SyntheticPanel, generate_panel
from ..paths import Paths
from ..standin import mislabel, write_standin_run  # noqa: F401 - mislabel re-exported for callers
from ..survival import DAYS_PER_MONTH


def true_churn_risk(panel: SyntheticPanel, horizon_days: int = 90, value_horizon_days: float = 3 * 365.0
                    ) -> pd.DataFrame:
    """Planted churn risk of the generator's world: ``1 - prod(1 - h_seg[m])`` over the horizon's months from
    the customer's tenure month, ``h_seg`` being the monthly hazard the truth records for the planted segment
    (``params["hazard_model"]``, family ``markov_chain``: churn is the chain's absorbing state).

    Users already flagged as churned get probability 1 and value 0; ``expected_value`` is the expected months
    alive within ``value_horizon_days`` times monthly spend.
    """
    hm = panel.params.get("hazard_model") or {}
    if hm.get("family") != "markov_chain" or "implied_monthly_hazard" not in hm:
        raise ValueError("the panel's truth records no monthly churn hazard (params['hazard_model'] of family "
                         f"'markov_chain', got family {hm.get('family')!r}); generate it with "
                         "helpers.generate.generate_panel")
    hazard = hm["implied_monthly_hazard"]
    d, t = panel.data, panel.truth
    seg = t["true_segment"].astype(int).to_numpy()
    month0 = (t["tenure_days"].to_numpy(float) / DAYS_PER_MONTH).astype(int)
    k, kv = max(1, round(horizon_days / DAYS_PER_MONTH)), max(1, round(value_horizon_days / DAYS_PER_MONTH))
    churned = d["churned_in_last_90_days"].astype(bool).to_numpy()
    prob, months_left = np.empty(len(d)), np.empty(len(d))
    for s_ in np.unique(seg):
        h = np.asarray(hazard[str(s_)] if str(s_) in hazard else hazard[s_], float)
        rows = np.flatnonzero(seg == s_)
        idx = np.clip(month0[rows, None] + np.arange(max(k, kv))[None, :], 0, len(h) - 1)
        surv = np.cumprod(1 - h[idx], axis=1)
        prob[rows] = 1 - surv[:, k - 1]
        months_left[rows] = surv[:, :kv].sum(axis=1)
    value = months_left * d["avg_monthly_spend"].astype(float).to_numpy()
    return pd.DataFrame({"user_id": d["user_id"].astype(str).to_numpy(),
                         f"churn_prob_{horizon_days}d": np.where(churned, 1.0, prob),
                         "expected_remaining_days": np.where(churned, 0.0, months_left * DAYS_PER_MONTH),
                         "expected_value": np.where(churned, 0.0, value), "churned": churned})


def write_lookalike_stage(paths: Paths, seed_segment: int, config: Any = None, holdout: float = 0.3,
                          n_folds: int = 3, seed: int = 0) -> pd.DataFrame:
    """Stand in for the lookalike stage: notebook 08's hide-and-find seeded with segment ``seed_segment``.

    As the notebook does, through :mod:`helpers.lookalike`: the model matrix of the unified table (with the
    churn stage's risk when it ran), ``holdout`` of the seed hidden among the candidates, the PU propensity
    model with ``n_folds`` folds, reason codes, the ``lookalike_scores`` artifact and the stage's
    ``metrics.json`` entry (held-out AUC, lift and precision at 1/5/10%). Returns the scores.
    """
    from .. import audience as A
    from .. import config as cfgmod
    from .. import lookalike as L
    from .. import metrics

    P = paths
    cfg = cfgmod.load(config)
    df = artifacts.load_unified(P)
    id_col = cfg.id if cfg.id in df else "user_id"
    ids = df[id_col].astype(str).rename("user_id")
    if id_col != "user_id":
        df = df.assign(user_id=ids.to_numpy())
    churn = artifacts.load(P, "churn_risk") if artifacts.exists(P, "churn_risk") else None
    segs = artifacts.load(P, "segments")
    if "user_id" not in segs:
        segs = segs.rename(columns={id_col: "user_id"})
    main_seed = L.seed_from_segment(segs, seed_segment)
    seed_mask = main_seed.mask(ids)
    gone, _ = A.churned_mask(df, cfg)
    features = L.build_features(df, churn_risk=churn, config=cfg)
    run = L.run_lookalike(features.X, seed_mask, holdout=holdout, n_folds=n_folds, seed=seed)
    run.eligible = ~gone | run.hold  # hidden seed members stand for unseen lookalikes: always candidates
    ev = L.evaluate(run, L.PLANNER_SHARES, seed=seed)
    scores = L.scores_frame(ids, run, main_seed, L.reason_codes(features, run.train, top_k=3), churn)
    artifacts.save(P, "lookalike_scores", scores)
    summary = {"evaluation_task": "hide-and-find", "seed_definition": main_seed.definition,
               "seed_size": int(seed_mask.sum()), "n_candidates": int(run.candidates.sum()),
               "lookalike_outcome_auc": ev.loc["propensity", "auc"],
               "cosine_outcome_lift_top5": ev.loc["cosine", "lift_top5%"],
               "random_outcome_lift_top5": ev.loc["random", "lift_top5%"]}
    for q in L.PLANNER_SHARES:
        summary[f"lookalike_outcome_lift_top{round(100 * q)}"] = ev.loc["propensity", f"lift_top{q:.0%}"]
        summary[f"lookalike_outcome_precision_top{round(100 * q)}"] = ev.loc["propensity", f"precision_top{q:.0%}"]
    metrics.record(P.metrics, artifacts.REGISTRY["lookalike_scores"].producer, summary)
    return scores


def write_demo_artifacts(paths: Paths, n_users: int = 3000, seed: int = 7, mislabel_share: float = 0.0,
                         with_churn: bool = True, observation_date: str = DEFAULT_OBSERVATION_DATE,
                         with_media: bool = False, with_posts: bool = False,
                         lookalike_segment: int | None = None) -> SyntheticPanel:
    """Write a stand-in run into ``paths``: unified table, truth, segments, profiles, affinity, churn risk.

    Parameters
    ----------
    paths : Paths
        Folders of the run (``helpers.paths.resolve``).
    n_users, seed : int
        Size and seed of :func:`helpers.generate.generate_panel`.
    mislabel_share : float
        Share of users whose segment label is moved to another segment (see :func:`mislabel`).
    with_churn : bool
        Also write ``churn_risk.parquet`` from :func:`true_churn_risk`.
    with_posts : bool
        Also write the synthetic posts (:func:`helpers.sources.posts.write_posts`) and, standing in for the
        text stage's LDA labels, each post's *planted* topic as ``post_topics`` (the Questions view needs them).
    with_media : bool
        Also write the synthetic campaign's media files (:func:`helpers.sources.exposures.write_exposures`),
        and the response model 07c saves (:func:`helpers.media.stage.fit_and_save_response_model`), which
        the Plan view needs.
    lookalike_segment : int, optional
        Also stand in for the lookalike stage seeded with this segment (:func:`write_lookalike_stage`),
        which the Lookalikes view reads.

    Returns
    -------
    SyntheticPanel
        The generated panel (its truth holds the planted segments).
    """
    panel = generate_panel(n_users, seed=seed, observation_date=observation_date)
    P = paths.ensure()
    df = write_standin_run(P, panel, truth=True, weights=False, mislabel_share=mislabel_share, seed=seed).frame
    sizes = df.groupby(["segment", "segment_name"]).size().rename("n_users").reset_index()
    sizes["weighted_share"] = sizes["n_users"] / sizes["n_users"].sum()
    artifacts.save(P, "segment_profiles", sizes)
    artifacts.save(P, "affinity_table", affinity_table(df))
    if with_churn:
        artifacts.save(P, "churn_risk", true_churn_risk(panel))
    if with_posts:
        from ..sources.posts import simulate_posts

        raw, truth, _, _ = simulate_posts(panel, seed=seed, observation_date=observation_date)
        raw.to_parquet(P.raw / "posts.parquet", index=False)
        artifacts.save(P, "post_topics", raw.merge(truth[["post_id", "topic"]], on="post_id"))
    if with_media:
        from ..sources.exposures import write_exposures

        write_exposures(panel, P.raw, P.data / "truth", seed=seed)
        # What 07c leaves for the Plan view: the fitted response curves (the Explorer fits none itself).
        from ..media.stage import fit_and_save_response_model

        fit_and_save_response_model(P, seed=seed)
    if lookalike_segment is not None:
        write_lookalike_stage(P, lookalike_segment, seed=seed)
    return panel


def write_table_run(paths: Paths, config: str = "telco", n_users: int | None = 2000, n_segments: int = 4,
                    seed: int = 0, lookalike_segment: int | None = None) -> pd.DataFrame:
    """A stand-in run on a user's table (default: the shipped Telco sample under its configuration), for
    trying and testing the Explorer on columns that are not the synthetic dictionary's.

    Reads the configured input with pandas (the derived columns and fill rules the configuration declares
    for ``TotalCharges`` / ``n_services`` are applied as ingestion would), samples ``n_users`` customers,
    segments them with k-means on the standardised ``log1p`` metrics (neutral names ``Segment 1..k``: no
    persona names are invented), and writes the unified table, ``ingest_meta`` (config name, id), the
    segments and the affinity table (metrics as clustering features: descriptive), and with
    ``lookalike_segment`` the lookalike stage seeded with that segment (:func:`write_lookalike_stage`). No churn
    or value stage.
    """
    from sklearn.cluster import KMeans

    from .. import config as cfgmod

    cfg = cfgmod.load(config)
    df = pd.read_csv(cfg.input.resolved_path(), delimiter=cfg.input.delimiter, encoding=cfg.input.encoding)
    for d in cfg.derived:
        if getattr(d, "rule", None) == "count_in":
            df[d.name] = df[list(d.columns)].isin(list(d.values)).sum(axis=1)
    for m in cfg.metrics:
        df[m.name] = pd.to_numeric(df[m.name], errors="coerce").fillna(0.0)
    if n_users is not None and n_users < len(df):
        df = df.sample(n_users, random_state=seed).sort_values(cfg.id)
    df = df.reset_index(drop=True)
    P = paths.ensure()
    artifacts.save(P, "unified", df)
    artifacts.save(P, "ingest_meta", {"config": cfg.name, "id": cfg.id})
    X = np.log1p(df[cfg.metric_names].to_numpy(float))
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    lab = KMeans(n_segments, n_init=5, random_state=seed).fit_predict(X)
    order = {old: new for new, old in enumerate(pd.Series(lab).value_counts().index)}  # 0 = largest
    seg = pd.Series(lab).map(order).to_numpy()
    segs = pd.DataFrame({cfg.id: df[cfg.id].astype(str), "segment": seg,
                         "segment_name": [f"Segment {k + 1}" for k in seg]})
    artifacts.save(P, "segments", segs)
    panel = df.assign(segment=seg, segment_name=segs["segment_name"], weight=1.0)
    attrs = [a.name for a in cfg.attributes if a.name in df.columns]
    types = {a.name: (a.type, list(a.categories or [])) for a in cfg.attributes if a.name in df.columns}
    table = affinity_table(panel, metrics=cfg.metric_names, attributes=attrs, types=types,
                           descriptive=cfg.metric_names)
    artifacts.save(P, "affinity_table", table)
    if lookalike_segment is not None:
        write_lookalike_stage(P, lookalike_segment, config=cfg, seed=seed)
    return panel
