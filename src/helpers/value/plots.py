"""Figures of the customer-value models; every function takes ``ax=`` and returns it."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ax(ax, figsize=(6.5, 3.8)):
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_period_transactions(model, X: pd.DataFrame, ax=None, max_frequency: int = 7, seed: int = 0,
                             label: str = "repeat purchases"):
    """Customers by number of repeat purchases in the calibration period: observed vs simulated from the
    fitted model at the customers' own ages (seeded)."""
    ax = _ax(ax)
    w = X["weight"].to_numpy(float) if "weight" in X else np.ones(len(X))
    x = X["frequency"].to_numpy(int)
    T = np.repeat(X["T"].to_numpy(float), np.round(w).astype(int)) if "weight" in X else X["T"].to_numpy(float)
    sim = model.sample_frequencies(T, seed=seed)
    bins = np.arange(max_frequency + 1)
    obs = np.bincount(np.minimum(x, max_frequency), weights=w, minlength=max_frequency + 1)
    mod = np.bincount(np.minimum(sim, max_frequency), minlength=max_frequency + 1)
    ax.bar(bins - 0.2, obs, width=0.4, label="observed")
    name = {"BetaGeoFitter": "BG/NBD", "ParetoNBDFitter": "Pareto/NBD"}.get(type(model).__name__, type(model).__name__)
    ax.bar(bins + 0.2, mod, width=0.4, label=f"{name} (simulated)")
    ax.set_xticks(bins, [str(b) for b in bins[:-1]] + [f"{max_frequency}+"])
    ax.set(title="Calibration fit: customers by number of " + label, xlabel=f"{label} in calibration period (count)",
           ylabel="customers (count)")
    ax.legend()
    return ax


def plot_calibration_holdout(table: pd.DataFrame, ax=None, unit: str = "weeks", duration: float | None = None):
    """Mean holdout transactions by calibration frequency: actual vs model (from ``holdout_table``)."""
    ax = _ax(ax)
    ax.plot(table["frequency_cal"], table["actual_mean"], "o-", label="actual")
    ax.plot(table["frequency_cal"], table["predicted_mean"], "s--", label="model (conditional expectation)")
    span = f" ({duration:g} {unit})" if duration else ""
    ax.set(title="Calibration vs holdout: purchases per customer", xlabel="repeat purchases in calibration period (count)",
           ylabel=f"mean purchases in holdout{span}")
    ax.legend()
    return ax


def plot_tracking(track: pd.DataFrame, ax=None, unit: str = "week"):
    """Cumulative repeat transactions, actual vs expected, with the end of calibration marked."""
    ax = _ax(ax)
    ax.plot(track["period"], track["actual_cumulative"], label="actual")
    ax.plot(track["period"], track["expected_cumulative"], "--", label="BG/NBD expected")
    if track["holdout"].any():
        ax.axvline(track.loc[track["holdout"], "period"].iloc[0] - 0.5, color="grey", ls=":", label="end of calibration")
    ax.set(title="Tracking: cumulative repeat transactions", xlabel=f"{unit} since the cohort's first purchase",
           ylabel="cumulative repeat transactions (count)")
    ax.legend()
    return ax


def plot_spend_fit(model, X: pd.DataFrame, ax=None, label: str = "mean spend per transaction", n_sim: int = 20000,
                   seed: int = 0):
    """Distribution of customers' mean repeat spend: observed vs simulated from the fitted Gamma-Gamma at the
    customers' own frequencies."""
    ax = _ax(ax)
    p, q, g = model.params_.to_numpy()
    rng = np.random.default_rng(seed)
    x = X["frequency"].to_numpy(float)
    xs = rng.choice(x, size=n_sim)
    nu = rng.gamma(q, 1 / g, size=n_sim)
    zbar = rng.gamma(p * xs, 1 / (nu * xs))
    m = X["monetary_value"].to_numpy(float)
    hi = np.quantile(m, 0.99)
    bins = np.linspace(0, hi, 40)
    ax.hist(m, bins=bins, density=True, alpha=0.55, label="observed")
    ax.hist(zbar, bins=bins, density=True, histtype="step", lw=2, label="Gamma-Gamma (simulated)")
    ax.set(title="Gamma-Gamma fit: " + label, xlabel=label, ylabel="density (share per unit)")
    ax.legend()
    return ax


def plot_params(model, ax=None):
    """Estimates with 95% Wald intervals (log scale): the lifelines-style coefficient plot."""
    ax = _ax(ax, (5.5, 2.8))
    t = model.summary()
    y = np.arange(len(t))
    ax.errorbar(t["coef"], y, xerr=[t["coef"] - t["coef lower 95%"], t["coef upper 95%"] - t["coef"]], fmt="o")
    ax.set_yticks(y, t.index)
    ax.set_xscale("log")
    ax.set(title=f"{type(model).__name__.replace('Fitter', '')} parameters (95% intervals)", xlabel="estimate (log scale)",
           ylabel="parameter")
    return ax
