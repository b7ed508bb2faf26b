"""Per-user behaviour levels: a Gaussian copula with skewed, heavy-tailed margins and zero inflation.

Each user has five latent levels (social, video, podcast minutes per day in a typical active month,
purchase rate per active month, ticket size per purchase) plus ``n_noise_features`` levels that do not
depend on the segment. Their dependence is a Gaussian copula with correlation :data:`COPULA_R` (shrunk
towards independence by ``WorldConfig.copula_strength``); each margin is, on the log scale, a *split*
Student-t: ``t_df`` quantile of the copula's uniform, scaled by ``log_sd`` on the left and by
``log_sd * skew`` on the right (so the levels are right-skewed and heavy-tailed even on the log scale a
diagonal Gaussian mixture assumes). A user is a non-user of a channel with probability
``(1 - P_USES[segment, channel]) * zero_inflation``: non-users have zero minutes in every month.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from . import planted

# The planted numbers, with what each table means, are in planted.yaml (section "behaviour"): per segment
# the median minutes/day per channel (social, video, podcasts) of a typical active month and P(uses the
# channel), the median purchases per active month and ticket size (USD); the left-side log sd and the
# copula correlation of the five latent levels (social, video, podcasts, rate, ticket).
MEDIAN_MINUTES, P_USES, PURCHASE_RATE, MEDIAN_TICKET, LOG_SD, COPULA_R = planted.tables(
    "behaviour", "MEDIAN_MINUTES", "P_USES", "PURCHASE_RATE", "MEDIAN_TICKET", "LOG_SD", "COPULA_R")
#: Median minutes/day and left-side log sd of the segment-independent noise features.
NOISE_MEDIAN_MINUTES = 30.0
NOISE_LOG_SD = 0.55


def correlation(strength: float, n_noise: int) -> np.ndarray:
    """The copula's correlation matrix: ``COPULA_R`` shrunk by ``strength``, noise dims independent."""
    d = COPULA_R.shape[0]
    R = np.eye(d + n_noise)
    R[:d, :d] = (1 - strength) * np.eye(d) + strength * COPULA_R
    return R


def draw_latent(rng: np.random.Generator, n: int, R: np.ndarray) -> np.ndarray:
    """``n`` draws of the copula's standard-normal latent vector (rows) with correlation ``R``."""
    L = np.linalg.cholesky(R)
    return rng.standard_normal((n, R.shape[0])) @ L.T


def selection_index(z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Standardised overall engagement (sum of the five behaviour latents): N(0, 1) in the population."""
    d = COPULA_R.shape[0]
    return z[:, :d].sum(axis=1) / np.sqrt(R[:d, :d].sum())


def split_t(z: np.ndarray, df: float, skew: float) -> np.ndarray:
    """Map standard normals to a split Student-t (median 0; right side scaled by ``skew``), clipped at +-4.5."""
    q = z if not np.isfinite(df) else stats.t.ppf(special.ndtr(z), df)
    q = np.clip(q, -4.5, 4.5)
    return np.where(q > 0, q * skew, q)


def levels(z: np.ndarray, seg: np.ndarray, cfg, region_effect: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user levels from the copula latents ``z`` (n x (5 + noise)): minutes, rate, ticket, noise."""
    q = split_t(z, cfg.tail_df, cfg.skew) * cfg.log_sd_scale
    sd = np.concatenate([LOG_SD, np.full(z.shape[1] - len(LOG_SD), NOISE_LOG_SD)])
    logs = q * sd
    minutes = MEDIAN_MINUTES[seg] * np.exp(logs[:, :3] + cfg.state_effects * region_effect)
    return {
        "minutes": minutes,
        "rate": PURCHASE_RATE[seg] * np.exp(logs[:, 3]),
        "ticket": MEDIAN_TICKET[seg] * np.exp(logs[:, 4]),
        "noise": NOISE_MEDIAN_MINUTES * np.exp(logs[:, 5:]),
    }


def draw_uses(rng: np.random.Generator, seg: np.ndarray, zero_inflation: float) -> np.ndarray:
    """Boolean n x 3: does the user use the channel at all (structural zeros otherwise)."""
    p_non = (1 - P_USES[seg]) * zero_inflation
    return rng.random(p_non.shape) >= p_non
