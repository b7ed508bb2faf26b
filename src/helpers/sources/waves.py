"""Monthly waves: engagement states from a planted segment-specific Markov chain, and what they produce.

Every customer's month is in one of :data:`STATES` (active, light, dormant, churned; churned is
absorbing and means the account is closed). From the month of sign-up (state drawn from
:data:`INITIAL`) the state moves each calendar month by ``TRANSITION[segment]``. A month's state sets
how many days the user is active (``Binomial(days, ACTIVE_DAY_SHARE[state])``: dormant and churned
months have none), and through the active days everything else: minutes per channel (avg min/day),
purchases (:mod:`.transactions`) and the last active day of the month (the latest of the active days).

The *observed* monthly label ``engagement_state`` is the business's rule on activity, not the latent
state: churned when the account is closed; else active when active on at least half of the
month's days; light when active on fewer days; dormant when not active at all. The latent path is kept in
the truth (``user_paths``).

The survival model is a consequence of the chain: the event is the account closing (first day of the
first churned month) and the implied hazard per segment (:func:`implied_hazard`) is in the truth.
"""

from __future__ import annotations

import numpy as np

STATES = ["active", "light", "dormant", "churned"]
CHURNED = 3
#: Expected share of a month's days on which the user is active, per latent state.
ACTIVE_DAY_SHARE = np.array([0.70, 0.35, 0.0, 0.0])
#: Observed label rule: "active" when active on at least this share of the month's days.
ACTIVE_LABEL_SHARE = 0.5
#: State in the month of sign-up.
INITIAL = np.array([0.80, 0.15, 0.05, 0.0])
#: Monthly transition matrices (rows: from active, light, dormant, churned), one per segment.
TRANSITION = np.array([
    [[0.9365, 0.0510, 0.0115, 0.0010], [0.3100, 0.5825, 0.1015, 0.0060], [0.1300, 0.1500, 0.6960, 0.0240], [0, 0, 0, 1]],
    [[0.9465, 0.0420, 0.0105, 0.0010], [0.3300, 0.5695, 0.0945, 0.0060], [0.1400, 0.1500, 0.6890, 0.0210], [0, 0, 0, 1]],
    [[0.9563, 0.0330, 0.0100, 0.0008], [0.3400, 0.5685, 0.0875, 0.0040], [0.1500, 0.1500, 0.6820, 0.0180], [0, 0, 0, 1]],
    [[0.9675, 0.0240, 0.0080, 0.0005], [0.3600, 0.5590, 0.0770, 0.0040], [0.1600, 0.1500, 0.6750, 0.0150], [0, 0, 0, 1]],
    [[0.8940, 0.0780, 0.0260, 0.0020], [0.2100, 0.6330, 0.1470, 0.0100], [0.0800, 0.1200, 0.7670, 0.0330], [0, 0, 0, 1]],
    [[0.9413, 0.0450, 0.0125, 0.0013], [0.3100, 0.5770, 0.1050, 0.0080], [0.1300, 0.1500, 0.6930, 0.0270], [0, 0, 0, 1]],
])


def _draw_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    return (rng.random(probs.shape[0])[:, None] > cum).sum(axis=1).astype(np.int8)


def simulate_states(rng: np.random.Generator, seg: np.ndarray, start: np.ndarray, n_grid: int,
                    transition: np.ndarray = TRANSITION, initial: np.ndarray = INITIAL) -> np.ndarray:
    """Latent states (n x n_grid, int8; -1 before sign-up) from month index ``start`` on."""
    n = seg.shape[0]
    state = np.full((n, n_grid), -1, dtype=np.int8)
    for h in range(n_grid):
        cont = np.flatnonzero(state[:, h - 1] >= 0) if h else np.array([], dtype=np.int64)
        if cont.size:
            state[cont, h] = _draw_rows(rng, transition[seg[cont], state[cont, h - 1]])
        new = np.flatnonzero(start == h)
        if new.size:
            probs = initial[seg[new]] if initial.ndim > 1 else np.broadcast_to(initial, (new.size, initial.size))
            state[new, h] = _draw_rows(rng, np.ascontiguousarray(probs))
    return state


def months_to_churn(rng: np.random.Generator, seg: np.ndarray, last_state: np.ndarray, max_extra: int = 24,
                    transition: np.ndarray = TRANSITION) -> np.ndarray:
    """Months after the grid until the account closes, for users not churned by the grid's end.

    Simulated month by month up to ``max_extra``; users still open then get a geometric tail with the
    active state's churn probability (documented approximation of the chain's slow tail).
    """
    out = np.zeros(seg.shape[0], dtype=np.int64)
    alive = np.flatnonzero(last_state != CHURNED)
    s = last_state[alive].astype(np.int64)
    for e in range(1, max_extra + 1):
        if not alive.size:
            break
        s = _draw_rows(rng, transition[seg[alive], s]).astype(np.int64)
        done = s == CHURNED
        out[alive[done]] = e
        alive, s = alive[~done], s[~done]
    if alive.size:
        out[alive] = max_extra + rng.geometric(transition[seg[alive], 0, CHURNED])
    return out


def implied_hazard(transition: np.ndarray = TRANSITION, initial: np.ndarray = INITIAL,
                   months: int = 60) -> np.ndarray:
    """Monthly hazard of closing (K x months) implied by the chain from sign-up: P(close in m | open at m-1)."""
    K = transition.shape[0]
    out = np.zeros((K, months))
    for k in range(K):
        p = np.asarray(initial, dtype=float).copy()
        for m in range(months):
            q = p @ transition[k]
            out[k, m] = (q[CHURNED] - p[CHURNED]) / max(1 - p[CHURNED], 1e-12)
            p = q
    return out


def active_days(rng: np.random.Generator, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """Active days per cell: Binomial(available days, ACTIVE_DAY_SHARE[state]); 0 before sign-up."""
    share = np.where(state >= 0, ACTIVE_DAY_SHARE[np.maximum(state, 0)], 0.0)
    return rng.binomial(np.maximum(avail, 0), share).astype(np.int16)


def last_active_offset(rng: np.random.Generator, days: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """0-based offset (from the first available day) of the last active day; -1 when not active.

    The maximum of ``days`` distinct days among ``avail``: approximated by the continuous maximum of
    ``days`` uniforms, ``floor(avail * U ** (1 / days))``.
    """
    u = rng.random(days.shape)
    with np.errstate(divide="ignore"):
        off = np.floor(avail * u ** (1.0 / np.maximum(days, 1))).astype(np.int32)
    off = np.minimum(off, np.maximum(avail - 1, 0))
    # at least `days - 1` days lie before the last one
    off = np.maximum(off, days.astype(np.int32) - 1)
    return np.where(days > 0, off, -1)


def observed_label(state: np.ndarray, days: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """The business's monthly label (index into STATES) from activity and account status."""
    active = days >= np.maximum(np.ceil(ACTIVE_LABEL_SHARE * avail), 1)
    lab = np.where(days == 0, 2, np.where(active, 0, 1))
    return np.where(state == CHURNED, CHURNED, lab).astype(np.int8)
