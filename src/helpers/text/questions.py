"""The four audience questions of the brief, answered from posts with weighted estimates and intervals.

Every answer is a :class:`QuestionResult` with ``.table`` (one row per estimate: ``estimate, ci_low,
ci_high`` and ``truth`` when the planted truth is known), ``.metrics`` (headline numbers), ``.summary()``
(a sentence) and ``.plot(ax)`` (estimates with intervals, truth as markers). The Explorer's "Questions"
view calls :func:`answer` and :func:`audience_profile`:

    ctx = questions.TextContext(posts=posts_with_topics, users=panel_frame, rates=planted_rates_or_None)
    r = questions.answer("topic_shares", ctx, filters={"age_group": ["18-24"], "gender": "female",
                         "state": "CA"}, follows="novalane")
    r = questions.answer("income", ctx, keyword="aurelio")              # or topic="luxury_watch"
    r = questions.answer("coengagement", ctx, topic_a="sustainable_fashion", topic_b="premium_tech")
    r = questions.answer("education", ctx, topic="health")
    p = questions.audience_profile(ctx, keyword="aurelio", columns=["age_group", "income_bracket"])

Estimands and truth (all over the customer base, weighted by ``users["weight"]`` when present - the truth
uses the same weights, so estimate and truth refer to the same population):

1. **topic shares** among a filtered audience: share of the audience's posts per topic, a ratio of weighted
   totals with a linearised interval. "Follows X" = mentioned X in the *first* half of the window; shares
   are measured on the *second* half, so selecting on X does not inflate X's own share. Truth: the planted
   rates of the same users, ``sum_u w_u rate_uk / sum_u w_u sum_k rate_uk``.
2. **income of users talking about X** from aggregate data (:mod:`helpers.text.profiling`): the audience
   is seen only through its counts per cell of :data:`PROFILE_OBSERVED` (education x marital status x
   household size) within :data:`PROFILE_STRATA` (age x gender), the base gives the joint table of those
   cells and income. (a) the simple count method, ``sum_x n_x p(income | x)``; (b) Bayesian profiling
   (De Bruyn & Otter 2022, JMR 59(4)): the cells' counts are multinomial with probabilities
   ``sum_s pi_s p(x | s)``, prior on ``log pi`` centred on the base's income margins, MH posterior, within
   each age x gender stratum; (c) beside them the direct weighted count of the audience's individual incomes
   (what an analyst with individual data would have). Truth: ``P(talks) = 1 - exp(-rate)`` per user,
   bracket shares weighted by ``w_u P_u``. Error = mean absolute difference over brackets (share points).
3. **co-engagement of two topics by region**: per state, lift = P(both) / (P(A) P(B)) among users
   (weighted), log-lift interval by linearisation (variance at least the binomial variance of log P(both)),
   p-value of lift = 1, BH FDR over states; Fay-Herriot (Li-Lahiri adjusted REML, so the area variance stays
   > 0; Census-region means as covariates; EBLUP limited to one standard error of the direct estimate,
   ``fh_limit_se``, see :mod:`helpers.stats.small_area` for why) on the log lift. The *small*
   states (:func:`small_areas`: effective n below ``small_n`` or among the smallest third by effective n, so
   the rule has small states at any panel size) report the EBLUP and its MSE interval, the others the
   direct estimate; a state with no co-engaged user has no direct estimate and gets the
   regression-synthetic value with MSE A + g2. Truth: ``E[pA pB] / (E[pA] E[pB])`` over the state's users
   with ``p = 1 - exp(-rate)``. ``fh_mse_gain_small_vs_truth`` = 1 - sum (EBLUP - truth)^2 / sum (direct -
   truth)^2 of the log lift over the small states. :func:`coengagement_subsample_design` repeats the
   comparison over seeded subsamples of the panel (a design-based small-area simulation).
4. **engagement with a topic by education**: share of users posting on the topic, per education level,
   nationally and by Census region, with logit intervals. Truth: mean ``1 - exp(-rate)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from ..stats import core
from ..stats.small_area import fay_herriot, mse_gain_vs_truth
from . import audiences

Z = float(st.norm.ppf(0.975))


@dataclass
class TextContext:
    """Posts (with ``topic``), users (``user_id`` + attributes [+ ``weight``]) and planted rates (or None)."""
    posts: pd.DataFrame
    users: pd.DataFrame
    rates: pd.DataFrame | None = None
    label: Callable[[str], str] = field(default=lambda c: c.replace("_", " ").capitalize())

    def __post_init__(self) -> None:
        # a new frame only when something changes: at a million users a copy of the panel's frame is 0.5 GB
        u = self.users
        if not (u["user_id"].dtype == object and pd.api.types.is_string_dtype(u["user_id"])
                and u["user_id"].map(type).eq(str).all()):
            u = u.assign(user_id=u["user_id"].astype(str))
        if "weight" not in u:
            u = u.assign(weight=1.0)
        if not isinstance(u.index, pd.RangeIndex) or u.index.start != 0 or u.index.step != 1:
            u = u.reset_index(drop=True)
        self.users = u
        if self.rates is not None:
            r = self.rates.copy()
            r["user_id"] = r["user_id"].astype(str)
            self.rates = self.users[["user_id"]].merge(r, on="user_id", how="left")

    @property
    def w(self) -> np.ndarray:
        return self.users["weight"].to_numpy(dtype=float)

    def talk_prob(self, topic: str) -> np.ndarray | None:
        col = f"rate_{topic}"
        if self.rates is None or col not in self.rates:
            return None
        return 1.0 - np.exp(-self.rates[col].to_numpy(dtype=float))

    def user_flag(self, posts: pd.DataFrame) -> np.ndarray:
        """Whether each user has a post in ``posts``."""
        return self.users["user_id"].isin(pd.unique(posts["user_id"])).to_numpy()


@dataclass
class QuestionResult:
    question: str
    table: pd.DataFrame
    metrics: dict = field(default_factory=dict)
    note: str = ""
    x: str = "label"
    title: str = ""
    unit: str = "share of users"

    def summary(self) -> str:
        m = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in self.metrics.items())
        return f"{self.title or self.question}: {self.note} {m}".strip()

    def plot(self, ax, top: int | None = 25):
        t = self.table.head(top) if top else self.table
        pos = np.arange(len(t))
        err = np.vstack([t["estimate"] - t["ci_low"], t["ci_high"] - t["estimate"]]).clip(0)
        ax.errorbar(t["estimate"], pos, xerr=err, fmt="o", color="tab:blue", label="estimate, 95% interval")
        if "truth" in t and t["truth"].notna().any():
            ax.scatter(t["truth"], pos, marker="x", color="tab:red", zorder=3, label="planted truth")
        ax.set_yticks(pos)
        ax.set_yticklabels(t[self.x].astype(str))
        ax.invert_yaxis()
        ax.set_xlabel(self.unit)
        ax.set_title(self.title or self.question)
        ax.legend(loc="best", fontsize=8)
        return ax


# --- small estimators -----------------------------------------------------------------------------------------
def weighted_share(y: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float]:
    """Weighted mean of a 0/1 ``y`` with linearised SE and a logit interval: (p, se, lo, hi)."""
    y, w = np.asarray(y, float), np.asarray(w, float)
    if w.sum() <= 0 or y.size == 0:
        return (np.nan,) * 4
    p = float(np.sum(w * y) / np.sum(w))
    n = y.size
    se = float(np.sqrt(np.sum((w * (y - p)) ** 2) * n / max(n - 1, 1)) / np.sum(w))
    lo, hi = core.logit_interval(np.array([p]), np.array([se]))
    return p, se, float(lo[0]), float(hi[0])


def ratio_share(num: np.ndarray, den: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Ratio of weighted totals sum(w num)/sum(w den) and its linearised SE."""
    D = float(np.sum(w * den))
    if D <= 0:
        return np.nan, np.nan
    r = float(np.sum(w * num)) / D
    z = w * (num - r * den)
    n = num.size
    return r, float(np.sqrt(np.sum(z ** 2) * n / max(n - 1, 1)) / D)


def _filter_mask(users: pd.DataFrame, filters: Mapping[str, Any] | None) -> np.ndarray:
    m = np.ones(len(users), dtype=bool)
    for col, val in (filters or {}).items():
        if col not in users:
            raise ValueError(f"filter column {col!r} is not in the users table (available: {list(users.columns)})")
        vals = [val] if isinstance(val, (str, int, float, bool)) else list(val)
        m &= users[col].isin(vals).to_numpy()
    return m


# --- Q1 ---------------------------------------------------------------------------------------------------
def topic_shares(ctx: TextContext, filters: Mapping[str, Any] | None = None, follows: str | None = None,
                 follows_topic: str | None = None) -> QuestionResult:
    posts = ctx.posts
    d = pd.to_datetime(posts["date"]) if "date" in posts else None
    m = _filter_mask(ctx.users, filters)
    uid = ctx.users["user_id"].to_numpy()
    # only the posts of the filtered users, and only the columns each step reads, are taken out of the posts
    # (copies of the whole table's halves, text included, were 1 GB at a million users); the audience is the
    # same: a user outside the filters is never in it, whatever they posted
    of_filtered = posts["user_id"].isin(uid[m]).to_numpy() if filters else np.ones(len(posts), dtype=bool)
    measured = of_filtered
    note = ""
    if follows or follows_topic:
        if d is None:
            raise ValueError("'follows' needs dated posts (first half of the window = following)")
        mid = d.min() + (d.max() - d.min()) / 2
        early = (d <= mid).to_numpy()
        cols = ["user_id"] + (["text"] if follows else []) + (["topic"] if follows_topic else [])
        ta = audiences.talking_about(posts.loc[of_filtered & early, cols], keyword=follows, topic=follows_topic)
        m &= ta.mask(ctx.users["user_id"])
        measured = of_filtered & (d > mid).to_numpy()
        note = f"follows = mentioned {follows or follows_topic} up to {mid.date()}; shares of posts after it."
    aud_ids = set(uid[m])
    mp = posts.loc[measured, ["user_id", "topic"]]
    mp = mp[mp["user_id"].isin(aud_ids)]
    topics = sorted(posts["topic"].dropna().unique())
    cnt = pd.crosstab(mp["user_id"], mp["topic"]).reindex(index=uid[m], columns=topics, fill_value=0)
    w = ctx.w[m]
    den = cnt.to_numpy().sum(1).astype(float)
    rows = []
    for t in topics:
        num = cnt[t].to_numpy(dtype=float)
        r, se = ratio_share(num, den, w)
        lo, hi = core.logit_interval(np.array([r]), np.array([se]))
        truth = np.nan
        if ctx.rates is not None and f"rate_{t}" in ctx.rates:
            R = ctx.rates.loc[m, [c for c in ctx.rates.columns if c.startswith("rate_")]].to_numpy()
            truth = float(np.sum(w * ctx.rates.loc[m, f"rate_{t}"].to_numpy()) / np.sum(w * R.sum(1)))
        rows.append({"label": t, "estimate": r, "se": se, "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                     "truth": truth})
    tab = pd.DataFrame(rows).sort_values("estimate", ascending=False).reset_index(drop=True)
    tab["truth_in_ci"] = (tab["truth"] >= tab["ci_low"]) & (tab["truth"] <= tab["ci_high"])
    n_users, n_posts = int(m.sum()), int(den.sum())
    flag = core.BaseSizeRule().flag(np.array([n_users]), np.array([core.kish_effective_n(w) if n_users else 0]))[0]
    met = {"audience_users": n_users, "audience_posts": n_posts, "base_flag": str(flag)}
    if tab["truth"].notna().any():
        met["truth_in_ci_share"] = float(tab["truth_in_ci"].mean())
        met["mean_abs_err"] = float((tab["estimate"] - tab["truth"]).abs().mean())
    return QuestionResult("topic_shares", tab, met, note, title="Topic shares of the audience's posts",
                          unit="share of the audience's posts")


# --- Q2 ---------------------------------------------------------------------------------------------------
#: what a platform or data broker reports about an audience in aggregate (the observed cells of the profile)
PROFILE_OBSERVED = ("education_level", "marital_status", "household_size")
#: covariates that may drive talking directly: the Bayesian assumption is made within their strata
PROFILE_STRATA = ("age_group", "gender")


def income_profile(ctx: TextContext, topic: str | None = None, keyword: str | None = None,
                   column: str = "income_bracket", levels: Sequence[str] | None = None,
                   truth_topic: str | None = None, observed: Sequence[str] = PROFILE_OBSERVED,
                   strata: Sequence[str] = PROFILE_STRATA, prior_sd: float = 1.0, n_draws: int = 1000,
                   seed: int = 0, **window) -> QuestionResult:
    """The ``column`` distribution of users talking about X from aggregate data (:mod:`.profiling`).

    The audience's own ``column`` values are *not* used by the two aggregate methods (simple count, Bayesian
    profiling): they see only its counts per ``observed`` x ``strata`` cell and the base's joint table. The
    direct weighted count of the audience's individual values is shown beside them as the benchmark an
    analyst with individual data would have.
    """
    from . import profiling
    ta = audiences.talking_about(ctx.posts, topic=topic, keyword=keyword, **window)
    m = ta.mask(ctx.users["user_id"])
    known = ctx.users[column].notna().to_numpy()
    levels = [str(v) for v in (levels if levels is not None else sorted(ctx.users[column].dropna().astype(str).unique()))]
    observed = [c for c in observed if c in ctx.users]
    strata = [c for c in strata if c in ctx.users]
    if not observed:
        raise ValueError(f"income_profile: none of the observed columns {list(PROFILE_OBSERVED)} is in the users table")
    w = ctx.w
    prof = profiling.profile_audience(ctx.users, m, column, observed, strata, w, levels, prior_sd=prior_sd,
                                      n_draws=n_draws, seed=seed)
    pt = prof.table
    mk = m & known
    direct = np.array([weighted_share((ctx.users.loc[mk, column].astype(str) == v).to_numpy(float), w[mk])
                       for v in levels])
    p_talk = ctx.talk_prob(truth_topic or topic or "")
    truth = np.full(len(levels), np.nan)
    if p_talk is not None:
        wt = w[known] * p_talk[known]
        truth = np.array([np.sum(wt * (ctx.users.loc[known, column].astype(str) == v)) for v in levels]) / wt.sum()
    base = pt["base"].to_numpy()
    frames = [("simple count (aggregate)", pt["simple"].to_numpy(), np.full(len(levels), np.nan),
               np.full(len(levels), np.nan)),
              ("Bayesian profiling (aggregate)", pt["estimate"].to_numpy(), pt["ci_low"].to_numpy(),
               pt["ci_high"].to_numpy()),
              ("direct count (individual values)", direct[:, 0], direct[:, 2], direct[:, 3])]
    tab = pd.concat([pd.DataFrame({"label": levels, "method": name, "estimate": est, "ci_low": lo, "ci_high": hi,
                                   "base": base, "truth": truth}) for name, est, lo, hi in frames],
                    ignore_index=True)
    met = {"audience_users": int(m.sum()), "audience_known": int(mk.sum()),
           "n_eff": float(core.kish_effective_n(w[mk])) if mk.any() else 0.0,
           "observed": " x ".join(observed), "strata": " x ".join(strata) or "none",
           "mh_acceptance_min": float(prof.strata["acceptance"].min())}
    if np.isfinite(truth).all():
        met["abs_err_simple"] = float(np.mean(np.abs(pt["simple"].to_numpy() - truth)))
        met["abs_err_bayes"] = float(np.mean(np.abs(pt["estimate"].to_numpy() - truth)))
        met["abs_err_direct"] = float(np.mean(np.abs(direct[:, 0] - truth)))
        met["abs_err_base"] = float(np.mean(np.abs(base - truth)))
        met["bayes_truth_in_ci_share"] = float(np.mean((pt["ci_low"] <= truth) & (truth <= pt["ci_high"])))
    return QuestionResult("income", tab, met, ta.label() + ".", title=f"{ctx.label(column)} of {ta.label()}",
                          unit="share of the audience")


# --- Q3 ---------------------------------------------------------------------------------------------------
def census_region(states) -> pd.Series:
    """Census region (Northeast, Midwest, South, West) of US postal codes; NaN when unknown."""
    from ..sources.places import REGIONS, STATE_CODES, STATE_REGION
    m = {c: REGIONS[r] for c, r in zip(STATE_CODES, STATE_REGION)}
    return pd.Series(states).map(m)


def direct_lift(labels: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray,
                ta: np.ndarray | None = None, tb: np.ndarray | None = None) -> pd.DataFrame:
    """Per region: weighted lift of co-engagement, the variance of its log and (with talk probabilities) the truth.

    ``a``, ``b``: 0/1 per user (posted on topic A / B); ``ta``, ``tb``: planted probabilities of posting.
    """
    rows = []
    for reg, idx in pd.Series(labels).groupby(labels).indices.items():
        wi, ai, bi = w[idx], a[idx], b[idx]
        W = wi.sum()
        ma, mb, mab = np.sum(wi * ai) / W, np.sum(wi * bi) / W, np.sum(wi * ai * bi) / W
        n = len(idx)
        n_eff = core.kish_effective_n(wi)
        if 0 < mab < 1 and n >= 2:
            lift = mab / (ma * mb)
            z = ai * bi / mab - ai / ma - bi / mb
            var = np.sum((wi * (z - np.average(z, weights=wi))) ** 2) * n / max(n - 1, 1) / W ** 2
            # at least the binomial variance of log P(both): the linearisation is unreliable for few co-engagers
            var = max(var, (1 - mab) / (n_eff * mab))
        else:  # no co-engaged user (or only co-engaged ones): no direct estimate; the regression-synthetic value
            lift, var = np.nan, np.nan
        truth = np.nan
        if ta is not None and tb is not None:
            truth = float(np.average(ta[idx] * tb[idx], weights=wi)
                          / (np.average(ta[idx], weights=wi) * np.average(tb[idx], weights=wi)))
        rows.append({"label": reg, "n_users": n, "n_eff": n_eff, "n_both": int((ai * bi).sum()),
                     "log_lift": np.log(lift), "var_log_lift": var, "truth": truth})
    return pd.DataFrame(rows)


def small_areas(n_eff: np.ndarray, small_n: float | None = 60, small_share: float = 1 / 3) -> np.ndarray:
    """The small-area rule: effective size below ``small_n`` *or* among the ``small_share`` smallest areas.

    The relative part keeps the evaluation defined at any panel size (at 50k users no state has fewer than
    60 users, yet the smallest third of states still has noisy direct estimates).
    """
    n_eff = np.asarray(n_eff, dtype=float)
    small = np.zeros(n_eff.size, dtype=bool) if small_n is None else n_eff < small_n
    k = int(np.ceil(small_share * n_eff.size)) if small_share > 0 else 0
    if k:
        small |= n_eff <= np.sort(n_eff)[k - 1]
    return small


def _region_design(labels: pd.Series, region: str, covariates: str | None, defined: np.ndarray):
    if covariates == "census_region" and region == "state":
        cr = census_region(labels)
        if cr.notna().all() and cr[defined].nunique() == cr.nunique() > 1:
            return pd.get_dummies(cr, drop_first=True).astype(float).reset_index(drop=True)
    return None


def fay_herriot_lift(t: pd.DataFrame, region: str = "state", covariates: str | None = "census_region",
                     limit_se: float | None = 1.0):
    """Fay-Herriot fit of the direct log lifts of :func:`direct_lift`; adds ``eblup_log_lift``/``mse_log_lift``.

    Areas without a direct estimate get the regression-synthetic value with MSE ``A + g2``. ``limit_se``:
    the EBLUP stays within that many standard errors of the direct log lift (Fay & Herriot's limited
    translation, :func:`helpers.stats.small_area.fay_herriot`); ``None`` = the plain EBLUP.
    """
    t = t.reset_index(drop=True).copy()
    defined = t["log_lift"].notna().to_numpy()
    X = _region_design(t["label"], region, covariates, defined)
    fit = fay_herriot(t.loc[defined, "log_lift"], t.loc[defined, "var_log_lift"],
                      None if X is None else X[defined], area=t.loc[defined, "label"], method="adjusted",
                      limit_se=limit_se)
    Xall = np.ones((len(t), 1)) if X is None else np.column_stack([np.ones(len(t)), X.to_numpy()])
    t["eblup_log_lift"] = Xall @ fit.beta
    t["mse_log_lift"] = fit.area_variance + np.einsum("ij,jk,ik->i", Xall, fit.beta_cov, Xall)
    t.loc[defined, "eblup_log_lift"] = fit.table["eblup"].to_numpy()
    t.loc[defined, "mse_log_lift"] = fit.table["mse"].to_numpy()
    t["fh_limited"] = False
    t.loc[defined, "fh_limited"] = fit.table["limited"].to_numpy()
    return t, fit, X is not None


def _coengaged(ctx: TextContext, topic_a: str, topic_b: str):
    a = ctx.user_flag(ctx.posts[ctx.posts["topic"] == topic_a]).astype(float)
    b = ctx.user_flag(ctx.posts[ctx.posts["topic"] == topic_b]).astype(float)
    return a, b, ctx.talk_prob(topic_a), ctx.talk_prob(topic_b)


def coengagement_by_region(ctx: TextContext, topic_a: str, topic_b: str, region: str = "state",
                           small_n: float | None = 60, small_share: float = 1 / 3, alpha: float = 0.05,
                           covariates: str | None = "census_region", fh_limit_se: float | None = 1.0
                           ) -> QuestionResult:
    a, b, ta, tb = _coengaged(ctx, topic_a, topic_b)
    w = ctx.w
    t = direct_lift(ctx.users[region].to_numpy(), a, b, w, ta, tb)
    se = np.sqrt(t["var_log_lift"])
    defined = t["log_lift"].notna().to_numpy()
    t["p_value"] = 2 * st.norm.sf(np.abs(t["log_lift"] / se))
    t.loc[defined, "q_value"] = core.fdr_qvalues(t.loc[defined, "p_value"].to_numpy())
    t["significant"] = t["q_value"].lt(alpha)
    t, fit, with_x = fay_herriot_lift(t, region, covariates, fh_limit_se)
    se = np.sqrt(t["var_log_lift"])
    small = small_areas(t["n_eff"].to_numpy(), small_n, small_share) | ~t["log_lift"].notna().to_numpy()
    t["small_area"] = small
    est_log = np.where(small, t["eblup_log_lift"], t["log_lift"])
    var_log = np.where(small, t["mse_log_lift"], t["var_log_lift"])
    t["direct_lift"] = np.exp(t["log_lift"])
    t["estimate"] = np.exp(est_log)
    t["ci_low"] = np.exp(est_log - Z * np.sqrt(var_log))
    t["ci_high"] = np.exp(est_log + Z * np.sqrt(var_log))
    t["direct_ci_low"] = np.exp(t["log_lift"] - Z * se)
    t["direct_ci_high"] = np.exp(t["log_lift"] + Z * se)
    t = t.sort_values("estimate", ascending=False).reset_index(drop=True)
    met = {"regions": int(len(t)), "small_regions": int(small.sum()),
           "small_rule": f"effective n < {small_n} or the smallest {small_share:.0%} of regions by effective n",
           "small_max_n_eff": float(t.loc[t["small_area"], "n_eff"].max()), "area_variance": fit.area_variance,
           "fh_model_mse_gain": fit.mse_gain(), "significant_regions": int(t["significant"].sum()),
           "fh_limit_se": fh_limit_se, "fh_limited_small_regions": int((t["small_area"] & t["fh_limited"]).sum())}
    if t["truth"].notna().all():
        tl = np.log(t["truth"])
        t["truth_in_ci"] = (t["truth"] >= t["ci_low"]) & (t["truth"] <= t["ci_high"])
        met["truth_in_ci_share"] = float(t["truth_in_ci"].mean())
        met["truth_in_direct_ci_share"] = float(((t["truth"] >= t["direct_ci_low"])
                                                 & (t["truth"] <= t["direct_ci_high"])).mean())
        met["fh_mse_gain_vs_truth"] = mse_gain_vs_truth(t["log_lift"], t["eblup_log_lift"], tl)
        s = t["small_area"].to_numpy()
        met["fh_mse_gain_small_vs_truth"] = mse_gain_vs_truth(t.loc[s, "log_lift"], t.loc[s, "eblup_log_lift"], tl[s])
        met["fh_small_regions_with_direct"] = int((s & t["log_lift"].notna()).sum())
    return QuestionResult("coengagement", t, met, f"Lift of {topic_a} x {topic_b}; Fay-Herriot EBLUP in the small "
                          f"regions ({met['small_rule']})" + (" (Census-region means)" if with_x else "") + ".",
                          title=f"Co-engagement lift: {topic_a} and {topic_b} by {region}",
                          unit="lift (1 = independent)")


def coengagement_subsample_design(ctx: TextContext, topic_a: str, topic_b: str, fraction: float = 0.1,
                                  reps: int = 40, seed: int = 0, region: str = "state", small_n: float | None = 60,
                                  small_share: float = 1 / 3, covariates: str | None = "census_region",
                                  fh_limit_se: float | None = 1.0) -> QuestionResult:
    """Design-based small-area simulation: Fay-Herriot vs direct in repeated seeded subsamples of the panel.

    As in small-area simulation studies (e.g. Rao & Molina 2015, sec. 6.4 and 7.2.1), the panel is the finite
    population: ``reps`` simple random subsamples of ``fraction`` of its users are drawn (seed ``seed``);
    in each, every region's direct log lift and its EBLUP are computed exactly as in
    :func:`coengagement_by_region` and compared with the region's planted lift over *all* its panel users.
    The gain is ``1 - sum (EBLUP - truth)^2 / sum (direct - truth)^2`` over the small regions of every
    subsample (same rule), and over all regions.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"coengagement_subsample_design: fraction must be in (0, 1], got {fraction}")
    a, b, ta, tb = _coengaged(ctx, topic_a, topic_b)
    if ta is None or tb is None:
        raise ValueError("coengagement_subsample_design needs the planted rates (ctx.rates) of both topics")
    w = ctx.w
    labels = ctx.users[region].to_numpy()
    pop = direct_lift(labels, a, b, w, ta, tb).set_index("label")["truth"]
    rng = np.random.default_rng(seed)
    n = len(labels)
    k = max(int(round(fraction * n)), 1)
    rows = []
    for r in range(reps):
        idx = np.sort(rng.choice(n, k, replace=False))
        t = direct_lift(labels[idx], a[idx], b[idx], w[idx])
        if t["log_lift"].notna().sum() <= 5:
            continue
        t, _, _ = fay_herriot_lift(t, region, covariates, fh_limit_se)
        t["truth_log"] = np.log(pop.reindex(t["label"]).to_numpy())
        t["small_area"] = small_areas(t["n_eff"].to_numpy(), small_n, small_share)
        t["rep"] = r
        rows.append(t)
    if not rows:
        raise ValueError(f"coengagement_subsample_design: no subsample of {k} users had enough co-engaged regions")
    T = pd.concat(rows, ignore_index=True)
    s = T["small_area"].to_numpy()
    per_rep = np.array([mse_gain_vs_truth(g["log_lift"], g["eblup_log_lift"], g["truth_log"]) for _, g in T[s].groupby("rep")])
    tab = (T.assign(sq_direct=(T["log_lift"] - T["truth_log"]) ** 2, sq_eblup=(T["eblup_log_lift"] - T["truth_log"]) ** 2)
           .groupby("label").agg(n_users=("n_users", "mean"), small_share=("small_area", "mean"),
                                 mse_direct=("sq_direct", "mean"), mse_eblup=("sq_eblup", "mean")).reset_index())
    tab["estimate"] = 1 - tab["mse_eblup"] / tab["mse_direct"]
    tab["ci_low"] = tab["ci_high"] = tab["estimate"]
    tab = tab.sort_values("n_users").reset_index(drop=True)
    met = {"reps": int(T["rep"].nunique()), "fraction": fraction, "subsample_users": k,
           "mse_gain_small": mse_gain_vs_truth(T.loc[s, "log_lift"], T.loc[s, "eblup_log_lift"], T.loc[s, "truth_log"]),
           "mse_gain_all": mse_gain_vs_truth(T["log_lift"], T["eblup_log_lift"], T["truth_log"]),
           "mse_gain_small_rep_p10": float(np.nanpercentile(per_rep, 10)),
           "mse_gain_small_rep_p90": float(np.nanpercentile(per_rep, 90)),
           "small_regions_per_rep": float(T[s].groupby("rep").size().mean())}
    return QuestionResult("coengagement_design", tab, met,
                          f"{met['reps']} seeded subsamples of {k:,} users ({fraction:.0%}); truth = each region's "
                          "planted lift over all its panel users.",
                          title="Fay-Herriot vs direct in repeated subsamples: MSE gain per region",
                          unit="1 - MSE(EBLUP) / MSE(direct) of the log lift")


# --- Q4 ---------------------------------------------------------------------------------------------------
def engagement_by(ctx: TextContext, topic: str, by: str = "education_level", region: str | None = None,
                  order: Sequence[str] | None = None) -> QuestionResult:
    y = ctx.user_flag(ctx.posts[ctx.posts["topic"] == topic]).astype(float)
    p = ctx.talk_prob(topic)
    w = ctx.w
    keys = [by] if region is None else [region, by]
    known = ctx.users[keys].notna().all(axis=1).to_numpy()
    rows = []
    for key, idx in ctx.users[known].groupby(keys).indices.items():
        ii = np.flatnonzero(known)[idx]
        est, se, lo, hi = weighted_share(y[ii], w[ii])
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row.update({"label": " / ".join(map(str, key)), "n_users": len(ii), "estimate": est, "se": se,
                    "ci_low": lo, "ci_high": hi,
                    "truth": float(np.average(p[ii], weights=w[ii])) if p is not None else np.nan})
        rows.append(row)
    t = pd.DataFrame(rows)
    if order is not None:
        t["_o"] = t[by].map({v: i for i, v in enumerate(order)})
        t = t.sort_values(keys[:-1] + ["_o"]).drop(columns="_o").reset_index(drop=True)
    flags = core.BaseSizeRule().flag(t["n_users"].to_numpy(), t["n_users"].to_numpy().astype(float))
    t["base_flag"] = flags
    met = {"cells": int(len(t))}
    if t["truth"].notna().all():
        t["truth_in_ci"] = (t["truth"] >= t["ci_low"]) & (t["truth"] <= t["ci_high"])
        met["truth_in_ci_share"] = float(t["truth_in_ci"].mean())
    return QuestionResult("education", t, met, f"share of users posting about {topic} in the window.",
                          title=f"Engagement with {topic} by {ctx.label(by)}" + (f" and {region}" if region else ""),
                          unit="share of users posting on the topic")


QUESTIONS = {"topic_shares": topic_shares, "income": income_profile, "coengagement": coengagement_by_region,
             "education": engagement_by}


def answer(question: str, ctx: TextContext, **kw) -> QuestionResult:
    """Answer one of :data:`QUESTIONS` (``topic_shares``, ``income``, ``coengagement``, ``education``)."""
    if question not in QUESTIONS:
        raise ValueError(f"unknown question {question!r}; choose one of {list(QUESTIONS)}")
    return QUESTIONS[question](ctx, **kw)


def audience_profile(ctx: TextContext, columns: Sequence[str], topic: str | None = None,
                     keyword: str | None = None, **window) -> QuestionResult:
    """Profile of "users talking about X" vs the base (stats.core: weighted, intervals, FDR, base-size rule)."""
    ta = audiences.talking_about(ctx.posts, topic=topic, keyword=keyword, **window)
    m = ta.mask(ctx.users["user_id"])
    prof = audiences.profile(ctx.users, m, columns, ctx.w, label=ctx.label)
    t = prof.rename(columns={"index": "estimate"}).copy()
    t["label"] = t["attribute"] + ": " + t["value_label"]
    t["truth"] = np.nan
    return QuestionResult("profile", t.reset_index(drop=True), {"audience_users": int(m.sum())}, ta.label() + ".",
                          title=f"Profile of {ta.label()} (index vs base)", unit="index (100 = base)")
