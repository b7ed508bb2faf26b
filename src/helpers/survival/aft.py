"""Parametric accelerated-failure-time models (Weibull, log-normal, log-logistic), their AIC and hazard ratios."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from lifelines import LogLogisticAFTFitter, LogNormalAFTFitter, WeibullAFTFitter

from .data import DURATION, EVENT, _check_frame


AFT_FAMILIES = {"weibull": WeibullAFTFitter, "lognormal": LogNormalAFTFitter,
                "loglogistic": LogLogisticAFTFitter}


Family = Literal["weibull", "lognormal", "loglogistic"]


def fit_aft(frame: pd.DataFrame, family: Family = "weibull", penalizer: float = 0.0):
    """Fit a parametric accelerated-failure-time model (``weibull``, ``lognormal`` or ``loglogistic``)."""
    if family not in AFT_FAMILIES:
        raise ValueError(f"family must be one of {sorted(AFT_FAMILIES)}, got {family!r}")
    _check_frame(frame)
    if (frame[DURATION] <= 0).any():
        raise ValueError("AFT models need positive durations; drop rows with duration <= 0 "
                         "(model_frame keeps only usable rows)")
    return AFT_FAMILIES[family](penalizer=penalizer).fit(frame, DURATION, EVENT)


def aic_table(models: dict[str, object]) -> pd.DataFrame:
    """AIC of fitted parametric models, best first, with the difference to the best."""
    rows = [{"model": k, "aic": float(m.AIC_), "log_likelihood": float(m.log_likelihood_),
             "n_params": int(m.params_.shape[0])} for k, m in models.items()]
    out = pd.DataFrame(rows).sort_values("aic").reset_index(drop=True)
    out["delta_aic"] = out["aic"] - out["aic"].iloc[0]
    return out


def weibull_log_hr(model: WeibullAFTFitter) -> pd.DataFrame:
    """Convert a Weibull AFT fit to the PH scale: ``log HR = -rho * beta`` (delta-method 95% CI)."""
    lam = model.params_.loc["lambda_"].drop("Intercept", errors="ignore")
    rho = float(np.exp(model.params_.loc[("rho_", "Intercept")]))
    cov = model.variance_matrix_
    rows = []
    for c, b in lam.items():
        i, j = ("lambda_", c), ("rho_", "Intercept")
        g = np.array([-rho, -rho * b])  # d(-rho*b)/d b, d(-rho*b)/d log rho
        v = np.array([[cov.loc[i, i], cov.loc[i, j]], [cov.loc[j, i], cov.loc[j, j]]])
        se = float(np.sqrt(g @ v @ g))
        est = -rho * b
        rows.append({"covariate": c, "coef": est, "se": se, "lower": est - 1.96 * se, "upper": est + 1.96 * se})
    return pd.DataFrame(rows)
