"""Outcomes after the observation date, kept only in the truth.

``conversions_next_{90,180}d`` and ``transactions_next_{90,180}d`` count the purchases dated in
``(obs, obs + 90]`` / ``(obs, obs + 180]`` days (a conversion is a purchase in this world, so both counts
are equal); ``spend_next_*`` sums their amounts; ``churn_next_*`` is true when the account was open at
the observation date and closes within the window (the latent chain's event, not the 90-day rule).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HORIZONS = (90, 180)


def outcomes(n: int, user: np.ndarray, day: np.ndarray, amount: np.ndarray, obs_day: int,
             open_at_obs: np.ndarray, close_day: np.ndarray) -> pd.DataFrame:
    """Per-user future outcomes from the future purchases (``user`` index, ``day`` number, ``amount``)."""
    out = {}
    for h in HORIZONS:
        inside = (day > obs_day) & (day <= obs_day + h)
        cnt = np.bincount(user[inside], minlength=n)
        out[f"conversions_next_{h}d"] = cnt.astype(np.int64)
        out[f"spend_next_{h}d"] = np.round(np.bincount(user[inside], weights=amount[inside], minlength=n), 2)
    for h in HORIZONS:
        out[f"churn_next_{h}d"] = open_at_obs & (close_day <= obs_day + h)
    for h in HORIZONS:
        out[f"transactions_next_{h}d"] = out[f"conversions_next_{h}d"].copy()
    return pd.DataFrame(out)
