"""The transaction log: a planted repeat-purchase process that is deliberately not BG/NBD / Gamma-Gamma.

For user ``i`` in month ``m`` with ``a`` active days out of ``d`` available (``D`` days in the month):

    purchases ~ Poisson(rate_i * (a / d) / 0.7 * (d / D) * season_m * G),   G ~ Gamma(shape, 1 / shape)

* heterogeneous rates: ``rate_i`` is a copula margin (split-t on the log scale, not Gamma);
* month-to-month over-dispersion ``G`` (``WorldConfig.count_shape``; Poisson when infinite), where
  BG/NBD assumes Poisson purchasing while alive;
* dropout through the engagement chain (light months buy less, dormant and churned months buy nothing;
  dormant users can come back), not a coin flip after each purchase;
* purchase dates uniform between the first available day and the month's last active day;
* amounts ``ticket_i * LogNormal(-s^2/2, s)`` (``s = WorldConfig.ticket_sd``), ``ticket_i`` correlated
  with ``rate_i`` through the copula (Gamma-Gamma assumes independence and gamma amounts).

``monthly_conversions`` and ``avg_monthly_spend`` of the snapshot are computed from this log.
"""

from __future__ import annotations

import numpy as np


def draw(rng: np.random.Generator, rate: np.ndarray, ticket: np.ndarray, days: np.ndarray, avail: np.ndarray,
         month_days: np.ndarray, season: np.ndarray, first_day: np.ndarray, last_off: np.ndarray,
         count_shape: float, ticket_sd: float) -> dict[str, np.ndarray]:
    """Purchases of the cells ``(user, month)`` given as 2-D arrays (users x months).

    Returns ``count`` (users x months) and the flat log: ``cell`` (flat index), ``day`` (day number),
    ``amount`` (USD, rounded to cents), ordered by cell (user, then month; days within a month unordered).
    """
    n, m = days.shape
    frac = np.where(avail > 0, days / np.maximum(avail, 1), 0.0)
    mean = rate[:, None] * frac / 0.7 * (np.maximum(avail, 0) / month_days[None, :]) * season[None, :]
    if np.isfinite(count_shape):
        mean = mean * rng.gamma(count_shape, 1.0 / count_shape, size=mean.shape)
    count = rng.poisson(mean).astype(np.int32)
    flat = count.ravel()
    cell = np.repeat(np.arange(flat.size, dtype=np.int64), flat)
    span = (last_off.ravel() + 1)[cell]
    day = first_day.ravel()[cell].astype(np.int64) + np.floor(rng.random(cell.size) * span).astype(np.int64)
    user = cell // m
    amount = ticket[user] * np.exp(rng.normal(-ticket_sd**2 / 2, ticket_sd, cell.size))
    amount = np.maximum(np.round(amount, 2), 0.01)
    return {"count": count, "cell": cell, "day": day, "amount": amount}
