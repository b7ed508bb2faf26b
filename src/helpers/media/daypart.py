"""Dayparting: the hour x weekday response of each audience, by a shrunken Poisson (or NB) GLM.

Conversions are counted in the 168 hour-of-week cells per segment; the exposure of a cell is the number
of user-days of that weekday in the campaign. The log rate is ``intercept + hour + weekday + cell`` with
ridge penalties (statsmodels' ``PenalizedMixin`` GLM with an L2 penalty): light on the hour and weekday main effects, heavier
on the 168 interaction cells, so sparse cells shrink towards the additive profile instead of chasing noise.
The planted profile (``media_truth.json`` ``response_daypart``) scores it: ``daypart_truth_corr``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.base._penalized import PenalizedMixin
from statsmodels.base._penalties import L2

WEEKDAY_LABELS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def cell_counts(conversions: pd.DataFrame, groups: pd.Series, dates, sizes: pd.Series | None = None) -> pd.DataFrame:
    """Conversions per group x weekday x hour with the exposure (user-days) of each cell.

    ``groups``: group label indexed by user_id (users absent from it are dropped); ``sizes``: users per group
    for the exposure (default ``groups.value_counts()``; a stage that keeps only some users' labels passes the
    counts of the whole table).
    """
    c = conversions.assign(group=conversions["user_id"].map(groups)).dropna(subset=["group"])
    c["weekday"] = pd.to_datetime(c["date"]).dt.weekday
    g = c.groupby(["group", "weekday", "hour"])["conversions"].sum()
    days = pd.Series(pd.to_datetime(pd.Series(dates)).dt.weekday).value_counts()
    sizes = groups.value_counts() if sizes is None else sizes
    full = pd.MultiIndex.from_product([sorted(sizes.index), range(7), range(24)],
                                      names=["group", "weekday", "hour"])
    out = g.reindex(full, fill_value=0).reset_index()
    out["exposure"] = out["group"].map(sizes).to_numpy() * out["weekday"].map(days).fillna(0).to_numpy()
    return out


class _PenalizedGLM(PenalizedMixin, sm.GLM):
    """statsmodels' GLM with a (weighted) L2 penalty on the log-likelihood, fitted by Newton."""


def _design() -> np.ndarray:
    w, h = np.meshgrid(range(7), range(24), indexing="ij")
    w, h = w.ravel(), h.ravel()
    X = np.zeros((168, 1 + 23 + 6 + 168))
    X[:, 0] = 1
    for i in range(168):
        if h[i] > 0:
            X[i, h[i]] = 1
        if w[i] > 0:
            X[i, 23 + w[i]] = 1
        X[i, 30 + i] = 1
    return X


def fit_profile(cells: pd.DataFrame, family: str = "poisson", main_penalty: float = 0.05,
                cell_penalty: float = 2.0) -> pd.DataFrame:
    """Fit the shrunken GLM per group; returns ``group, weekday, hour, rate, profile`` (profile mean 1).

    The penalty ``p * beta^2`` is a Gaussian prior of sd ``1 / sqrt(2 p)`` on each log-rate effect: the
    defaults allow hour and weekday effects of a few units and cell deviations of about +-0.5.
    """
    X = _design()
    alpha = np.r_[0.0, np.full(29, main_penalty), np.full(168, cell_penalty)]
    fam = sm.families.Poisson() if family == "poisson" else sm.families.NegativeBinomial(alpha=0.5)
    rows = []
    for g, d in cells.groupby("group", sort=True):
        d = d.sort_values(["weekday", "hour"])
        y = d["conversions"].to_numpy(float)
        expo = np.maximum(d["exposure"].to_numpy(float), 1e-9)
        start = np.zeros(X.shape[1])
        start[0] = np.log(max(y.sum(), 0.5) / expo.sum())
        model = _PenalizedGLM(y, X, family=fam, offset=np.log(expo), penal=L2(weights=alpha), pen_weight=1.0)
        res = model.fit(method="newton", start_params=start, maxiter=100, disp=0)
        rate = np.exp(X @ res.params)
        rows.append(pd.DataFrame({"group": g, "weekday": d["weekday"].to_numpy(), "hour": d["hour"].to_numpy(),
                                  "conversions": y, "rate": rate, "raw_rate": y / expo,
                                  "profile": rate / rate.mean()}))
    return pd.concat(rows, ignore_index=True)


def truth_profile(true_segments: pd.Series, groups: pd.Series, response_daypart: dict) -> pd.DataFrame:
    """Planted profile of each (estimated) group: the mean of its members' true-segment profiles."""
    t = pd.DataFrame({"group": groups, "true": true_segments.reindex(groups.index)}).dropna()
    rows = []
    for g, d in t.groupby("group"):
        mix = d["true"].astype(int).value_counts(normalize=True)
        prof = sum(share * np.asarray(response_daypart[str(k)]) for k, share in mix.items())
        prof = prof / prof.mean()
        w, h = np.meshgrid(range(7), range(24), indexing="ij")
        rows.append(pd.DataFrame({"group": g, "weekday": w.ravel(), "hour": h.ravel(),
                                  "true_profile": prof.ravel()}))
    return pd.concat(rows, ignore_index=True)


def truth_corr(fit: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per group: correlation of the fitted and of the raw (unshrunken) profile with the planted one."""
    m = fit.merge(truth, on=["group", "weekday", "hour"])
    out = m.groupby("group").apply(lambda d: pd.Series({
        "corr_glm": np.corrcoef(d["profile"], d["true_profile"])[0, 1],
        "corr_raw": np.corrcoef(d["raw_rate"], d["true_profile"])[0, 1],
        "conversions": d["conversions"].sum()}), include_groups=False).reset_index()
    return out


def best_cells(fit: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The ``top`` hour-of-week cells per group by fitted rate, labelled for a planner."""
    f = fit.sort_values(["group", "rate"], ascending=[True, False]).groupby("group").head(top).copy()
    f["when"] = [f"{WEEKDAY_LABELS[w]} {h:02d}:00-{h:02d}:59" for w, h in zip(f["weekday"], f["hour"])]
    return f[["group", "when", "profile"]]
