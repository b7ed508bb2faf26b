"""The marketer's media plan for one audience: channels, spend, expected reach, frequency and conversions.

The Explorer's "Plan" view calls::

    from helpers.media import plan
    result = plan.plan_for_audience(md, audience_ids, budget_total=None, budget_per_person=1.0,
                                    objective="conversions", effective_frequency=3,
                                    min_spend=None, max_spend=None, frequency_cap=None,
                                    linear_constraints=None, audience_name="...", n_draws=200, seed=0,
                                    model=None, groups=None, support_multiple=3.0)
    result.table      # one row per channel + "Total": channel, channel_label, spend_usd, share,
                      # impressions, reach, reach_low, reach_high, frequency, conversions,
                      # conversions_low, conversions_high, marginal_per_1000_usd, affinity_index,
                      # supported_max_usd (the support guard's ceiling per channel)
    result.summary()  # a few plain sentences
    result.plot(ax)   # spend and expected conversions per channel, with intervals
    result.as_dict()  # JSON-ready (for the Explorer API)

``md`` is :class:`helpers.media.data.MediaData` (``data.load_media(P)``); ``audience_ids`` any user ids
(a segment, an exported lookalike audience, an affinity tier). ``budget_total`` (USD for the audience)
overrides ``budget_per_person``; ``groups`` (segment label by user_id, e.g. from
``artifacts.load_segments``) lets the response fit give every other segment its own baseline and effects
(recommended); ``model`` reuses a fitted :class:`helpers.media.budget.ResponseModel` (the Explorer builds
one from 07c's saved curves, :func:`helpers.media.budget.model_from_table`, and never fits);
``support_multiple`` (default :data:`helpers.media.budget.SUPPORT_MULTIPLE`, ``None`` = off) keeps each
channel within that multiple of the largest weekly exposure rate the data saw for the audience, where the
fitted curves are known; the plan says which multiple it used and each channel's ceiling. Intervals (95%): conversions from the response model's parameter
uncertainty (draws from the normal approximation at the penalised MLE), reach from a bootstrap over members.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import budget as BU
from . import exposures_module


@dataclass
class MediaPlan:
    audience_name: str
    n_audience: int
    budget_total: float
    objective: str
    effective_frequency: int
    table: pd.DataFrame
    allocation: BU.Allocation
    model: BU.ResponseModel = field(repr=False)
    rule_of_thumb: pd.DataFrame | None = None
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        t = self.table.set_index("channel")
        tot = t.loc["Total"]
        top = t.drop("Total").sort_values("spend_usd", ascending=False)
        top = top[top["spend_usd"] > 0.005 * self.budget_total]
        lines = [
            f"Plan for {self.audience_name} ({self.n_audience:,} people), budget {self.budget_total:,.0f} USD "
            f"over {self.model.days} days, objective: "
            + ("expected incremental conversions." if self.objective == "conversions" else
               f"reach at {self.effective_frequency}+ impressions."),
            "Spend: " + "; ".join(f"{r.channel_label} {r.spend_usd:,.0f} USD ({100 * r.share:.0f}%)"
                                  for r in top.itertuples()) + ".",
            f"Expected reach {100 * tot.reach:.0f}% of the audience (95% interval {100 * tot.reach_low:.0f}-"
            f"{100 * tot.reach_high:.0f}%), {tot.frequency:.1f} impressions per person reached, "
            f"{tot.conversions:,.0f} incremental conversions ({tot.conversions_low:,.0f}-{tot.conversions_high:,.0f}).",
        ]
        if self.rule_of_thumb is not None:
            r = self.rule_of_thumb
            lines.append(f"The affinity-only rule of thumb would expect {r['conversions'].iloc[0]:,.0f} conversions "
                         f"and {100 * r['reach'].iloc[0]:.0f}% reach by the same model.")
        return "\n".join(lines + self.notes)

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        t = self.table[self.table["channel"] != "Total"]
        y = np.arange(len(t))
        ax.barh(y - 0.2, t["spend_usd"], 0.4, label="spend (USD)", color="#4c72b0")
        ax2 = ax.twiny()
        err = np.vstack([t["conversions"] - t["conversions_low"], t["conversions_high"] - t["conversions"]])
        ax2.barh(y + 0.2, t["conversions"], 0.4, xerr=err.clip(min=0), color="#dd8452",
                 label="expected conversions (95% interval)")
        ax.set_yticks(y, t["channel_label"])
        ax.set_xlabel("spend over the campaign (USD)")
        ax2.set_xlabel("expected incremental conversions (count)")
        ax.set_title(f"Media plan for {self.audience_name}: spend and expected conversions by channel")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
        return ax

    def as_dict(self) -> dict:
        return {"audience_name": self.audience_name, "n_audience": self.n_audience,
                "budget_total": self.budget_total, "objective": self.objective,
                "effective_frequency": self.effective_frequency,
                "table": self.table.replace({np.nan: None}).to_dict(orient="records"),
                "feasible": self.allocation.feasible, "violations": self.allocation.violations,
                "support_multiple": self.allocation.support_multiple,
                "summary": self.summary()}


def _labels(channels):
    E = exposures_module()
    return [E.CHANNEL_LABELS.get(c, str(c).replace("_", " ").title()) for c in channels]


def plan_table(model: BU.ResponseModel, alloc: BU.Allocation, k: int, n_draws: int = 200,
               seed: int = 0) -> pd.DataFrame:
    """Per-channel and total spend, impressions, reach, frequency, conversions with 95% intervals."""
    rng = np.random.default_rng(seed)
    x, n, ch = alloc.spend_per_person, model.n, model.channels
    C = len(ch)
    lam = model.daily_rates(x) * model.days                       # (users, C) impressions per member
    reached_c = 1 - np.exp(-lam)                                  # P(reached by channel)
    reached = 1 - np.exp(-lam.sum(1))
    # conversions per channel under parameter draws (normal approximation of the fit's posterior)
    point = model.channel_conversions(x) * n
    if model.cov is not None and np.all(np.isfinite(model.cov)):
        cov = (model.cov + model.cov.T) / 2
        draws = rng.multivariate_normal(model.params, cov, size=n_draws, method="eigh")
        conv_draws = np.array([model.channel_conversions(x, d) * n for d in draws])
    else:
        conv_draws = np.tile(point, (n_draws, 1))
    boot = rng.integers(0, n, (min(n_draws, 200), n))
    reach_c_boot = np.stack([reached_c[b].mean(0) for b in boot])
    reach_boot = np.array([reached[b].mean() for b in boot])
    rows = []
    for j, c in enumerate(ch):
        rc = reached_c[:, j].mean()
        if x[j] <= 1e-9:
            rc = 0.0
        rows.append({"channel": c, "spend_usd": x[j] * n, "share": x[j] / max(x.sum(), 1e-12),
                     "impressions": lam[:, j].sum(), "reach": rc,
                     "reach_low": np.percentile(reach_c_boot[:, j], 2.5),
                     "reach_high": np.percentile(reach_c_boot[:, j], 97.5),
                     "frequency": lam[:, j].mean() / rc if rc > 0 and x[j] > 1e-9 else 0.0,
                     "conversions": point[j],
                     "conversions_low": np.percentile(conv_draws[:, j], 2.5),
                     "conversions_high": np.percentile(conv_draws[:, j], 97.5),
                     "marginal_per_1000_usd": alloc.marginal[j] * 1000.0,
                     "affinity_index": model.index.iloc[j],
                     # no ceiling (guard off, or a channel without support data): NaN, JSON null
                     "supported_max_usd": (alloc.support_cap[j] * n if alloc.support_cap is not None
                                           and np.isfinite(alloc.support_cap[j]) else np.nan)})
    tot_conv = conv_draws.sum(1)
    r = reached.mean()
    rows.append({"channel": "Total", "spend_usd": x.sum() * n, "share": 1.0, "impressions": lam.sum(),
                 "reach": r, "reach_low": np.percentile(reach_boot, 2.5),
                 "reach_high": np.percentile(reach_boot, 97.5),
                 "frequency": lam.sum(1).mean() / r if r > 0 else 0.0,
                 f"reach_{k}plus": model.reach(x, k),
                 "conversions": point.sum(), "conversions_low": np.percentile(tot_conv, 2.5),
                 "conversions_high": np.percentile(tot_conv, 97.5), "marginal_per_1000_usd": np.nan,
                 "affinity_index": np.nan, "supported_max_usd": np.nan})
    t = pd.DataFrame(rows)
    t.insert(1, "channel_label", _labels(ch) + ["Total"])
    return t


def plan_for_audience(md, audience_ids, budget_total: float | None = None, budget_per_person: float = 1.0,
                      objective: str = "conversions", effective_frequency: int = 3,
                      min_spend: dict | None = None, max_spend: dict | None = None,
                      frequency_cap=None, linear_constraints: list | None = None,
                      audience_name: str = "the audience", n_draws: int = 200, seed: int = 0,
                      model: BU.ResponseModel | None = None, groups=None,
                      support_multiple: float | None = BU.SUPPORT_MULTIPLE) -> MediaPlan:
    """Fit (or reuse ``model``), optimise and tabulate the plan for ``audience_ids`` (see module doc)."""
    model = model or BU.fit_response(md, audience_ids, seed=seed, groups=groups)
    B = budget_total / model.n if budget_total is not None else float(budget_per_person)
    alloc = BU.optimise(model, B, objective, effective_frequency, min_spend, max_spend, frequency_cap,
                        linear_constraints, seed=seed, support_multiple=support_multiple)
    table = plan_table(model, alloc, effective_frequency, n_draws, seed)
    rule = BU.affinity_rule(model, B, alloc.bounds)
    rot = pd.DataFrame({"conversions": [model.conversions(rule) * model.n], "reach": [model.reach(rule)],
                        **{c: [rule[j] * model.n] for j, c in enumerate(model.channels)}})
    notes = list(model.notes)
    if alloc.support_multiple is not None:
        widened = (f" (raised from {support_multiple:g}: the budget does not fit inside the data's support at "
                   "that multiple, so part of the plan extrapolates the curves)"
                   if alloc.support_multiple > support_multiple * (1 + 1e-9) else "")
        notes.append(f"Support guard: no channel is planned above {alloc.support_multiple:.3g} times the largest "
                     f"weekly exposure rate the audience had on it in the data{widened}.")
    if not alloc.feasible:
        notes.append("Warning: the optimiser could not satisfy every constraint: " + "; ".join(alloc.violations))
    return MediaPlan(audience_name, model.n, B * model.n, objective, effective_frequency, table, alloc, model,
                     rot, notes)
