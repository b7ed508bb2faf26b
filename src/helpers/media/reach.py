"""Reach and frequency: Sainsbury duplication, binomial and beta-binomial (BBD) reach, panel reach curves.

Published checks (tests): Sainsbury of two media reaching 0.45 and 0.30 is 0.615; 400 spots of 0.1% each
reach 32.98%; a BBD with rating 0.10 and two-insertion reach 0.16 is Beta(0.2, 1.8) and reaches 0.2595,
0.3401 and 0.4182 at 5, 10 and 20 insertions. On a panel, an "insertion" is a campaign day: each user's
count of days exposed to a channel is fitted by a BBD and its reach curve is checked against the reach
observed over random subsets of days (a BBD thinned at random stays a BBD with the same Beta).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

#: the published BBD example (rating, two-insertion reach, {insertions: reach})
PUBLISHED_BBD = (0.10, 0.16, {5: 0.2595, 10: 0.3401, 20: 0.4182})


def sainsbury(reaches) -> float:
    """Combined reach of media assumed independent: ``1 - prod(1 - r_i)``."""
    r = np.asarray(reaches, float)
    return float(1.0 - np.prod(1.0 - r))


def binomial_reach(n_spots: int, rating: float) -> float:
    """Reach of ``n_spots`` independent spots of the same rating (every person equally likely)."""
    return float(1.0 - (1.0 - rating) ** n_spots)


@dataclass(frozen=True)
class BBD:
    """Beta-binomial exposure distribution: a person's per-insertion probability is Beta(alpha, beta)."""

    alpha: float
    beta: float

    @property
    def rating(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def reach(self, n):
        """Share reached at least once by ``n`` insertions: ``1 - B(a, b + n) / B(a, b)``."""
        n = np.asarray(n, float)
        r = 1.0 - np.exp(special.betaln(self.alpha, self.beta + n) - special.betaln(self.alpha, self.beta))
        return float(r) if r.ndim == 0 else r

    def frequency(self, n: int) -> np.ndarray:
        """P(exposed k times), k = 0..n."""
        return stats.betabinom.pmf(np.arange(n + 1), n, self.alpha, self.beta)

    def reach_at(self, n: int, k: int) -> float:
        """Share exposed at least ``k`` times out of ``n`` insertions (effective reach)."""
        return float(stats.betabinom.sf(k - 1, n, self.alpha, self.beta))

    @classmethod
    def from_rating_and_reach2(cls, rating: float, reach2: float) -> "BBD":
        """Moment fit from the one-insertion rating and the two-insertion reach (the textbook method).

        ``P(not reached by 2) = b (b + 1) / ((a + b)(a + b + 1))`` with ``a = rating * s``; solved for s.
        """
        p, q0 = rating, 1.0 - reach2
        # (1-p) s ((1-p) s + 1) = q0 s (s + 1)  ->  s = (q0 - (1 - p)) / ((1 - p)^2 - q0)
        s = (q0 - (1 - p)) / ((1 - p) ** 2 - q0)
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"rating {rating} and two-insertion reach {reach2} are not beta-binomial "
                             "(two-insertion reach must lie between the rating and 1-(1-rating)^2).")
        return cls(p * s, (1 - p) * s)

    @classmethod
    def fit(cls, counts, n: int) -> "BBD":
        """Maximum-likelihood fit to per-person exposure counts out of ``n`` insertions."""
        k = np.bincount(np.asarray(counts, int), minlength=n + 1)[: n + 1]
        x = np.arange(n + 1)
        m = (k * x).sum() / max(k.sum(), 1) / n
        m = min(max(m, 1e-4), 1 - 1e-4)

        def nll(t):
            a, b = np.exp(t)
            return -(k * stats.betabinom.logpmf(x, n, a, b)).sum()

        r = optimize.minimize(nll, np.log([m * 2, (1 - m) * 2]), method="Nelder-Mead",
                              options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 2000})
        a, b = np.exp(r.x)
        return cls(float(a), float(b))


def published_bbd_check() -> float:
    """Largest absolute difference between this module's BBD and the published example (0 if exact)."""
    rating, r2, expected = PUBLISHED_BBD
    d = BBD.from_rating_and_reach2(rating, r2)
    errs = [abs(d.alpha - 0.2), abs(d.beta - 1.8)] + [abs(d.reach(n) - v) for n, v in expected.items()]
    return float(max(errs))


# --- panel reach ----------------------------------------------------------------------------------
def exposure_cube(exposures: pd.DataFrame, user_ids, channels, dates) -> np.ndarray:
    """Boolean ``(users, channels, days)``: was the user exposed to the channel that day."""
    uidx = pd.Index(pd.Series(user_ids).astype(str))
    cidx = pd.Index(channels)
    didx = pd.Index(pd.to_datetime(pd.Series(dates)).dt.date)
    e = exposures[["user_id", "channel", "date"]].drop_duplicates()
    ui = uidx.get_indexer(e["user_id"].astype(str))
    ci = cidx.get_indexer(e["channel"])
    di = didx.get_indexer(pd.to_datetime(e["date"]).dt.date)
    ok = (ui >= 0) & (ci >= 0) & (di >= 0)
    cube = np.zeros((len(uidx), len(cidx), len(didx)), dtype=bool)
    cube[ui[ok], ci[ok], di[ok]] = True
    return cube


def reach_curves(cube: np.ndarray, channels, groups=None, n_grid=(1, 2, 3, 5, 7, 10, 14, 21, 28),
                 n_draws: int = 8, seed: int = 0, group_labels=None) -> pd.DataFrame:
    """Per channel (and group): BBD fitted to exposed days, and the reach it predicts vs the panel's.

    The observed reach for ``n`` insertions is the share of people exposed at least once on ``n`` days
    drawn at random from the campaign (averaged over ``n_draws`` draws).
    """
    rng = np.random.default_rng(seed)
    nu, nc, D = cube.shape
    groups = np.zeros(nu, int) if groups is None else np.asarray(groups)
    rows = []
    grid = [n for n in n_grid if n <= D]
    draws = {n: [rng.choice(D, n, replace=False) for _ in range(n_draws)] for n in grid}
    for g in np.unique(groups):
        sel = groups == g
        for j, c in enumerate(channels):
            x = cube[sel, j, :]
            bbd = BBD.fit(x.sum(1), D)
            for n in grid:
                obs = np.mean([x[:, d].any(1).mean() for d in draws[n]])
                rows.append({"group": g if group_labels is None else group_labels.get(g, g), "channel": c,
                             "insertions": n, "reach_observed": obs, "reach_bbd": bbd.reach(n),
                             "reach_binomial": binomial_reach(n, bbd.rating),
                             "alpha": bbd.alpha, "beta": bbd.beta, "rating": bbd.rating})
    return pd.DataFrame(rows)


def duplication(reached: np.ndarray, channels) -> pd.DataFrame:
    """Pairwise duplication of channel audiences: panel-observed vs Sainsbury (independence).

    ``reached``: boolean ``(users, channels)``. Columns: both reaches, observed union and overlap, the
    Sainsbury union and overlap ``r_i r_j``, and the duplication index (observed overlap / independent).
    """
    r = reached.mean(0)
    rows = []
    for i, j in combinations(range(len(channels)), 2):
        both = (reached[:, i] & reached[:, j]).mean()
        rows.append({"channel_a": channels[i], "channel_b": channels[j], "reach_a": r[i], "reach_b": r[j],
                     "union_observed": r[i] + r[j] - both, "union_sainsbury": sainsbury([r[i], r[j]]),
                     "overlap_observed": both, "overlap_independent": r[i] * r[j],
                     "duplication_index": 100 * both / (r[i] * r[j]) if r[i] * r[j] > 0 else np.nan})
    out = pd.DataFrame(rows)
    return out


def total_reach(reached: np.ndarray) -> dict:
    """Panel reach of all channels together vs Sainsbury's independence formula."""
    return {"observed": float(reached.any(1).mean()), "sainsbury": sainsbury(reached.mean(0))}
