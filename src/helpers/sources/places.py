"""Places and people: a US state and a gender per person, with Census margins.

Gender depends on the segment (:data:`P_FEMALE`); the state depends on age and sex through the
Census Bureau's civilian population estimates by state x single year of age x sex
(``sc-est2019-agesex-civ.csv``, July 2019 estimates, column ``POPEST2019_CIV``), looked up in
``data/external/census_popest/`` and then ``../shared/data/census_popest/``. Without either file the
generator still works: it falls back to :data:`FALLBACK_STATE_SHARES` (state shares of adults, not
split by age and sex) and says so in the truth (``params["places"]["source"]``).

Behaviour depends on the place through the Census region of the state (:data:`REGION_EFFECT`, log
multipliers of channel minutes).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema as S
from ..paths import REPO_ROOT

CENSUS_FILE = "sc-est2019-agesex-civ.csv"
CENSUS_COLUMN = "POPEST2019_CIV"
GENDERS = ["female", "male"]
REGIONS = ["Northeast", "Midwest", "South", "West"]

# FIPS code -> (postal code, Census region 1..4). Census region numbering as in the file's REGION column.
STATES: dict[int, tuple[str, int]] = {
    1: ("AL", 3), 2: ("AK", 4), 4: ("AZ", 4), 5: ("AR", 3), 6: ("CA", 4), 8: ("CO", 4), 9: ("CT", 1),
    10: ("DE", 3), 11: ("DC", 3), 12: ("FL", 3), 13: ("GA", 3), 15: ("HI", 4), 16: ("ID", 4), 17: ("IL", 2),
    18: ("IN", 2), 19: ("IA", 2), 20: ("KS", 2), 21: ("KY", 3), 22: ("LA", 3), 23: ("ME", 1), 24: ("MD", 3),
    25: ("MA", 1), 26: ("MI", 2), 27: ("MN", 2), 28: ("MS", 3), 29: ("MO", 2), 30: ("MT", 4), 31: ("NE", 2),
    32: ("NV", 4), 33: ("NH", 1), 34: ("NJ", 1), 35: ("NM", 4), 36: ("NY", 1), 37: ("NC", 3), 38: ("ND", 2),
    39: ("OH", 2), 40: ("OK", 3), 41: ("OR", 4), 42: ("PA", 1), 44: ("RI", 1), 45: ("SC", 3), 46: ("SD", 2),
    47: ("TN", 3), 48: ("TX", 3), 49: ("UT", 4), 50: ("VT", 1), 51: ("VA", 3), 53: ("WA", 4), 54: ("WV", 3),
    55: ("WI", 2), 56: ("WY", 4),
}
STATE_CODES = [code for code, _ in STATES.values()]
STATE_REGION = np.array([region - 1 for _, region in STATES.values()])

#: Share of the adult (18+) civilian population per state, in :data:`STATES` order. Derived once from
#: ``sc-est2019-agesex-civ.csv`` (US Census Bureau, Vintage 2019 population estimates, SUMLEV 40, SEX 0,
#: AGE 18-85+, POPEST2019_CIV) and rounded to 5 decimals; used only when that file is absent.
FALLBACK_STATE_SHARES = np.array([
    0.01496, 0.00214, 0.02216, 0.00916, 0.12015, 0.01753, 0.01100, 0.00299, 0.00219, 0.06641, 0.03202,
    0.00420, 0.00537, 0.03867, 0.02046, 0.00960, 0.00874, 0.01359, 0.01407, 0.00419, 0.01839, 0.02138,
    0.03067, 0.01716, 0.00899, 0.01870, 0.00327, 0.00582, 0.00937, 0.00424, 0.02720, 0.00636, 0.05994,
    0.03180, 0.00229, 0.03577, 0.01191, 0.01302, 0.03951, 0.00328, 0.01567, 0.00266, 0.02084, 0.08667,
    0.00942, 0.00195, 0.02578, 0.02317, 0.00555, 0.01785, 0.00175,
])

#: P(female | segment), in segment order (see :mod:`.world`).
P_FEMALE = np.array([0.58, 0.47, 0.42, 0.53, 0.56, 0.38])

#: Log multiplier of channel minutes (social, video, podcasts) by Census region (NE, MW, S, W).
REGION_EFFECT = np.array([
    [0.00, -0.05, 0.15],
    [-0.05, 0.05, -0.08],
    [0.06, 0.10, -0.10],
    [0.00, -0.08, 0.12],
])

_AGE_BOUNDS = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 200)]


def census_path() -> Path | None:
    """The Census file: ``data/external/census_popest/`` first, then ``../shared/data/census_popest/``."""
    for base in (REPO_ROOT / "data" / "external", REPO_ROOT.parent / "shared" / "data"):
        p = base / "census_popest" / CENSUS_FILE
        if p.exists():
            return p
    return None


@lru_cache(maxsize=4)
def state_given_age_sex(path: str | None = "auto") -> tuple[np.ndarray, str]:
    """``P(state | age group, sex)`` as an array (6 age groups, 2 sexes [female, male], 51 states).

    ``path="auto"`` looks the file up with :func:`census_path`; ``None`` forces the built-in fallback.
    Returns the array and a sentence naming its source.
    """
    p = census_path() if path == "auto" else (Path(path) if path else None)
    if p is None:
        table = np.broadcast_to(FALLBACK_STATE_SHARES / FALLBACK_STATE_SHARES.sum(),
                                (len(S.AGE_GROUPS), 2, len(STATES))).copy()
        return table, ("built-in adult state shares (Census Vintage 2019, not split by age and sex): "
                       f"{CENSUS_FILE} not found")
    d = pd.read_csv(p, usecols=["SUMLEV", "STATE", "SEX", "AGE", CENSUS_COLUMN])
    d = d[(d["SUMLEV"] == 40) & d["SEX"].isin([1, 2]) & (d["AGE"] >= 18) & (d["AGE"] <= 85)]
    fips = list(STATES)
    table = np.zeros((len(S.AGE_GROUPS), 2, len(fips)))
    idx = {f: i for i, f in enumerate(fips)}
    for a, (lo, hi) in enumerate(_AGE_BOUNDS):
        sub = d[(d["AGE"] >= lo) & (d["AGE"] <= hi)]
        g = sub.groupby(["SEX", "STATE"])[CENSUS_COLUMN].sum()
        for (sex, st), v in g.items():
            if st in idx:
                table[a, 0 if sex == 2 else 1, idx[st]] += v  # file: SEX 1 = male, 2 = female
    table /= table.sum(axis=2, keepdims=True)
    return table, f"{p.name} (US Census Bureau, {CENSUS_COLUMN}, state x age x sex)"


def draw_gender(rng: np.random.Generator, seg: np.ndarray) -> np.ndarray:
    """0 = female, 1 = male."""
    return (rng.random(seg.shape[0]) >= P_FEMALE[seg]).astype(np.int8)


def draw_state(rng: np.random.Generator, age: np.ndarray, gender: np.ndarray, table: np.ndarray) -> np.ndarray:
    """State index (into :data:`STATE_CODES`) given age group and gender, by inverse CDF."""
    cum = np.cumsum(table, axis=2)
    cum[..., -1] = 1.0
    u = rng.random(age.shape[0])
    rows = cum[age, gender]
    return (u[:, None] > rows).sum(axis=1).astype(np.int16)


def margins(pop_shares: np.ndarray, p_age: np.ndarray, table: np.ndarray) -> pd.DataFrame:
    """Population shares of ``state`` and ``gender`` implied by the model (rows variable/category/target)."""
    pf = np.column_stack([P_FEMALE, 1 - P_FEMALE])  # K x 2
    joint = np.einsum("k,ka,kg,ags->s", pop_shares, p_age, pf, table)
    gender = pop_shares @ pf
    rows = [{"variable": "gender", "category": g, "target": float(s)} for g, s in zip(GENDERS, gender)]
    rows += [{"variable": "state", "category": c, "target": float(s)} for c, s in zip(STATE_CODES, joint)]
    return pd.DataFrame(rows)
