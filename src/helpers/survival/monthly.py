"""Churn from a monthly engagement history: spells, a discrete-time closing model and the planted-chain oracle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd


ENGAGEMENT_STATES = ("active", "light", "dormant", "churned")


#: Spell codes of a month: active, light, dormant for 1, 2, or 3+ months in a row.
SPELLS = ("active", "light", "dormant_1m", "dormant_2m", "dormant_3m_plus")


def _factorize(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and distinct values of a column, missing values as a value of their own (a categorical's
    codes are used as they are: hashing 20M rows again cost a second per column at 1M users)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int32)  # not int64: 20M-row copies were a GB of the peak
        uniq = pd.Index(col.cat.categories)
        if (codes < 0).any():
            codes = np.where(codes < 0, len(uniq), codes)
            uniq = uniq.append(pd.Index([None], dtype=object))
        return codes, uniq
    codes, uniq = pd.factorize(col, use_na_sentinel=False)
    return codes, pd.Index(uniq)


def engagement_matrix(monthly: pd.DataFrame, ids: Sequence | None = None, id_col: str = "user_id",
                      month_col: str = "month", state_col: str = "engagement_state",
                      customer_since=None) -> tuple[np.ndarray, np.ndarray]:
    """Users x months matrix of observed engagement labels (0 active, 1 light, 2 dormant, 3 churned,
    -1 no row), months in calendar order; rows follow ``ids`` when given. With ``customer_since`` (dates
    aligned on ``ids``), months that end before the sign-up are set to -1 (a month without activity before
    the account existed is not a dormant month)."""
    need = {id_col, month_col, state_col} - set(monthly.columns)
    if need:
        raise ValueError(f"monthly activity table lacks columns {sorted(need)}; expected "
                         f"{id_col}, {month_col}, {state_col} (one row per user and month)")
    # every column is factorized first and its few distinct values converted (lower-cased, parsed, matched
    # to ids) once: per-row string work on a 1M-user history (24M rows) cost most of this function
    s_codes, s_uniq = _factorize(monthly[state_col])
    states = pd.Series(s_uniq, dtype=object).astype("string").str.lower()
    s_map = states.map({s: i for i, s in enumerate(ENGAGEMENT_STATES)})
    bad = s_map.isna().to_numpy()[s_codes]
    if bad.any():
        raise ValueError(f"column {state_col!r} has {int(bad.sum())} values outside {ENGAGEMENT_STATES} "
                         f"(e.g. {list(states.to_numpy()[s_codes[bad][:3]])})")
    m_codes, m_uniq = _factorize(monthly[month_col])
    m_dates = pd.to_datetime(pd.Series(m_uniq)).to_numpy()
    months = np.sort(np.unique(m_dates))
    m_idx = np.searchsorted(months, m_dates).astype(np.int32)[m_codes]
    u_codes, u_uniq = _factorize(monthly[id_col])
    u_text = pd.Index(pd.Series(u_uniq, dtype=object).astype(str))
    order = pd.Index(pd.unique(u_text) if ids is None else pd.Index(pd.Series(ids).astype(str)))
    u_idx = order.get_indexer(u_text).astype(np.int32)[u_codes]
    keep = u_idx >= 0
    out = np.full((len(order), len(months)), -1, dtype=np.int8)
    code = s_map.to_numpy(dtype=np.int8)[s_codes]
    out.reshape(-1)[u_idx[keep].astype(np.int64) * len(months) + m_idx[keep]] = code[keep]
    if customer_since is not None:
        since = pd.to_datetime(pd.Series(customer_since)).to_numpy()
        month_end = (pd.DatetimeIndex(months) + pd.offsets.MonthEnd(0)).to_numpy()
        out[since[:, None] > month_end[None, :]] = -1
    return out, months


def _id_array(ids):
    """Identifiers as an Arrow string array (text kept in Arrow; other types through ``str``), for lookups."""
    import pyarrow as pa

    s = pd.Series(ids)
    if isinstance(s.dtype, pd.StringDtype):
        arr = pa.array(s.array)
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return pa.array(s.astype(str).to_numpy(dtype=object), type=pa.string())


def _dictionary_positions(order, dicts: list) -> list[np.ndarray]:
    """For each Arrow string array in ``dicts`` (the row groups' id dictionaries), the position of each value in
    ``order`` (first occurrence; -1 when absent). All of them are encoded together with ``order`` in one
    ``dictionary_encode``: one hash pass over the ids, where a lookup per row group (``index_in``) rebuilt a hash
    of every id each time (161 row groups x 1M ids: a minute at 1M users)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not dicts:
        return []
    big = pa.chunked_array([order, *(d if d.type == order.type else pc.cast(d, order.type) for d in dicts)],
                           type=order.type)
    codes = pc.dictionary_encode(big).combine_chunks().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(order)
    inv = np.full(int(codes.max()) + 1 if len(codes) else 0, -1, dtype=np.int64)
    inv[codes[:n][::-1]] = np.arange(n, dtype=np.int64)[::-1]  # the first of equal ids wins
    out, a = [], n
    for d in dicts:
        out.append(inv[codes[a:a + len(d)]])
        a += len(d)
    return out


def engagement_matrix_file(path, ids: Sequence, id_col: str = "user_id", month_col: str = "month",
                           state_col: str = "engagement_state", customer_since=None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`engagement_matrix` of a monthly activity Parquet file (or folder), read one row group at a time:
    the matrix is filled group by group from each group's dictionary-encoded ids and states, so the long
    table is never in memory (:func:`read_monthly` + :func:`engagement_matrix` held the 20M-row table and
    its integer codes, 1.4 GB at 1M users). Same matrix and months; rows follow ``ids`` (required)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if ids is None:
        raise TypeError("engagement_matrix_file needs the ids of the matrix rows (use engagement_matrix on a frame "
                        "to take the table's own order)")
    need = [id_col, month_col, state_col]
    dataset = pq.ParquetDataset(path)
    names = dataset.schema.names
    missing = [c for c in need if c not in names]
    if missing:
        raise ValueError(f"{path}: monthly activity table lacks columns {missing}; expected {need} "
                         f"(one row per user and month), found {names}")

    def row_groups(columns):
        # one row group at a time, in the order read_table reads the files (a scanner's read-ahead held 0.3 GB)
        for name in dataset.files:
            pf = pq.ParquetFile(dataset.filesystem.open_input_file(name), read_dictionary=[id_col, state_col])
            for i in range(pf.num_row_groups):
                yield pf.read_row_group(i, columns=columns)

    # months first (one narrow pass): the matrix's columns are every month of the table, in calendar order
    uniq, id_dicts = [], []
    for t in row_groups([month_col, id_col]):
        uniq.append(pc.unique(t.column(0).combine_chunks()))
        d = t.column(1).combine_chunks().dictionary
        id_dicts.append(d if pa.types.is_string(d.type) else pc.cast(d, pa.string()))
    m_all = pd.concat([pd.Series(u.to_pandas()) for u in uniq]) if uniq else pd.Series([], dtype="datetime64[ns]")
    months = np.sort(np.unique(pd.to_datetime(m_all).to_numpy()))
    # the matrix rows' ids as Arrow text: each row group's id dictionary is looked up in them (index_in), so no
    # id becomes a Python string (a pandas index of 10M string ids took ~0.7 GB)
    order = _id_array(ids)
    rg_pos = _dictionary_positions(order, id_dicts)  # per row group: its id dictionary's matrix rows
    del id_dicts
    out = np.full((len(order), len(months)), -1, dtype=np.int8)
    flat = out.reshape(-1)
    known = {s: i for i, s in enumerate(ENGAGEMENT_STATES)}
    n_bad, bad_examples = 0, []
    for rg, t in enumerate(row_groups(need)):
        ids_b, mon_b, st_b = (t.column(c).combine_chunks() for c in need)
        # states: the row group dictionary's few values, lower-cased and matched once; nulls are outside the states
        st_null = np.asarray(st_b.is_null())
        st_idx = pc.fill_null(st_b.indices, 0).to_numpy()
        st_vals = pd.Series(st_b.dictionary.to_pandas(), dtype=object).astype("string").str.lower()
        st_map = st_vals.map(known)
        st_ok = st_map.notna().to_numpy()
        codes = np.full(len(st_vals) + 1, -1, dtype=np.int8)
        codes[:len(st_vals)][st_ok] = st_map[st_ok].to_numpy(dtype=np.int8)
        sidx = np.where(st_null, len(st_vals), st_idx)
        code = codes[sidx]
        bad = code < 0
        if bad.any():
            n_bad += int(bad.sum())
            if len(bad_examples) < 3:
                vals = np.append(st_vals.to_numpy(dtype=object), pd.NA)
                bad_examples += list(vals[sidx[bad][:3 - len(bad_examples)]])
            continue
        m_idx = np.searchsorted(months, mon_b.to_numpy(zero_copy_only=False).astype(months.dtype)).astype(np.int64)
        u_pos = np.append(rg_pos[rg], -1)  # null ids: not a row of the matrix
        u_idx = u_pos[np.where(np.asarray(ids_b.is_null()), len(u_pos) - 1,
                               pc.fill_null(ids_b.indices, 0).to_numpy())]
        keep = u_idx >= 0
        flat[u_idx[keep].astype(np.int64) * len(months) + m_idx[keep]] = code[keep]
    if n_bad:
        raise ValueError(f"column {state_col!r} has {n_bad} values outside {ENGAGEMENT_STATES} "
                         f"(e.g. {bad_examples})")
    if customer_since is not None:
        since = pd.to_datetime(pd.Series(customer_since)).to_numpy()
        month_end = (pd.DatetimeIndex(months) + pd.offsets.MonthEnd(0)).to_numpy()
        out[since[:, None] > month_end[None, :]] = -1
    return out, months


def read_monthly(path, id_col: str = "user_id", month_col: str = "month",
                 state_col: str = "engagement_state") -> pd.DataFrame:
    """The columns :func:`engagement_matrix` reads from a monthly activity Parquet file (or folder), each as a
    categorical (dictionary-encoded by pyarrow, so no row is turned into a Python object): 24M rows of
    Python strings (1M users x 24 months) cost more to build than the matrix itself."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    need = [id_col, month_col, state_col]
    names = pq.ParquetDataset(path).schema.names
    missing = [c for c in need if c not in names]
    if missing:
        raise ValueError(f"{path}: monthly activity table lacks columns {missing}; expected {need} "
                         f"(one row per user and month), found {names}")
    table = pq.read_table(path, columns=need, read_dictionary=[id_col, state_col]).unify_dictionaries()
    cols = {}
    for c in need:
        arr = table[c].combine_chunks()
        if c == month_col:
            arr = pc.dictionary_encode(arr)
        cols[c] = arr.to_pandas() if hasattr(arr, "dictionary") else pd.Series(arr.to_pandas())
    return pd.DataFrame(cols)


def spell_codes(labels: np.ndarray) -> np.ndarray:
    """Per cell, the index into :data:`SPELLS` (-1 for churned or no data): the label, and for dormant
    months how many dormant months in a row end there."""
    run = np.zeros(labels.shape, dtype=np.int16)
    for m in range(labels.shape[1]):
        prev = run[:, m - 1] if m else 0
        run[:, m] = np.where(labels[:, m] == 2, prev + 1, 0)
    code = np.where(labels == 0, 0, np.where(labels == 1, 1, 1 + np.minimum(run, 3)))
    return np.where((labels < 0) | (labels == 3), -1, code).astype(np.int8)


def last_spell_codes(labels: np.ndarray) -> np.ndarray:
    """``spell_codes(labels)[:, -1]`` -- the last month's spell code of every user -- with one column of
    temporaries instead of the users x months run lengths and codes (int64 copies: ~4 GB at 10M users)."""
    run = np.zeros(labels.shape[0], dtype=np.int16)
    for m in range(labels.shape[1]):
        run = np.where(labels[:, m] == 2, run + 1, 0).astype(np.int16)
    last = labels[:, -1] if labels.shape[1] else np.full(labels.shape[0], -1, dtype=np.int8)
    code = np.where(last == 0, 0, np.where(last == 1, 1, 1 + np.minimum(run, 3)))
    return np.where((last < 0) | (last == 3), -1, code).astype(np.int8)


def months_in_horizon(observation_date, horizon_days: int) -> int:
    """Account-closing months that fall within ``horizon_days`` after the observation date (first days of
    months in ``(obs, obs + horizon]``): 3 for 90 days from a month end."""
    obs = pd.Timestamp(observation_date)
    first = pd.date_range(obs + pd.Timedelta(days=1), obs + pd.Timedelta(days=horizon_days), freq="MS")
    return max(len(first), 1)


@dataclass
class MonthlyChurnModel:
    """Discrete-time model of account closing within ``horizon_months`` given this month's engagement spell
    (:data:`SPELLS`) and the user's covariates, fitted on the history's own past months (each past month is
    a backtest: its next ``horizon_months`` labels are known)."""

    model: object
    horizon_months: int
    columns: list[str]
    n_rows: int
    n_users: int
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def design(self, spell: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        onehot = np.eye(len(SPELLS))[spell][:, 1:]
        if x is None or x.shape[1] == 0:
            return onehot
        return np.column_stack([onehot, (x - self.mean) / self.scale])

    def predict(self, spell: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return self.model.predict_proba(self.design(spell, x))[:, 1]


def fit_monthly_churn(labels: np.ndarray, horizon_months: int, covariates: pd.DataFrame | None = None,
                      max_users: int = 30_000, seed: int = 0) -> MonthlyChurnModel:
    """Fit :class:`MonthlyChurnModel` (logistic regression) on every past user-month whose next
    ``horizon_months`` months are observed, for a seeded sample of at most ``max_users`` users."""
    from sklearn.linear_model import LogisticRegression

    n, M = labels.shape
    k = int(horizon_months)
    if M <= k:
        raise ValueError(f"the monthly history has {M} months: too short for a {k}-month horizon")
    rng = np.random.default_rng(seed)
    users = np.arange(n) if n <= max_users else np.sort(rng.choice(n, max_users, replace=False))
    lab = labels[users]
    code = spell_codes(lab)
    closed = lab == 3
    future = np.zeros((len(users), M - k), dtype=bool)
    for j in range(1, k + 1):
        future |= closed[:, j:M - k + j]
    past = code[:, :M - k]
    ok = past >= 0
    ui, mi = np.nonzero(ok)
    spell = past[ui, mi]
    y = future[ui, mi]
    x = None if covariates is None or covariates.shape[1] == 0 else covariates.to_numpy(float)[users][ui]
    mean = scale = None
    if x is not None:
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    cols = list(SPELLS[1:]) + ([] if x is None else list(covariates.columns))
    tmp = MonthlyChurnModel(None, k, cols, len(y), len(users), mean, scale)
    if y.all() or not y.any():
        raise ValueError("every (or no) past user-month is followed by a closing: cannot fit")
    tmp.model = LogisticRegression(C=1.0, max_iter=500).fit(tmp.design(spell, x), y)
    return tmp


def monthly_churn_risk(labels: np.ndarray, ids, observation_date, covariates: pd.DataFrame | None = None,
                       horizons: Sequence[int] = (90, 180), max_users: int = 30_000, seed: int = 0,
                       id_col: str = "user_id", return_models: bool = False, chunk: int = 1_000_000):
    """Churn (account closing) probability within each horizon after the observation date, from the
    engagement spell of the last observed month (the observation month) and covariates.

    Accounts already closed (label ``churned`` in the last month) get probability 1 and ``closed=True``.
    With ``return_models`` the fitted :class:`MonthlyChurnModel` per horizon is returned too.
    """
    code = last_spell_codes(labels)
    closed = labels[:, -1] == 3
    ids_s = pd.Series(ids)
    out = pd.DataFrame({id_col: ids_s.array if isinstance(ids_s.dtype, pd.StringDtype) else np.asarray(ids)})
    x_all = None if covariates is None else covariates.to_numpy(float)
    models = {}
    ok_rows = np.flatnonzero(code >= 0)
    for h in horizons:
        mdl = fit_monthly_churn(labels, months_in_horizon(observation_date, h), covariates, max_users, seed)
        p = np.ones(len(out))
        # ``chunk`` users at a time: the design matrix of every user (and its one-hot temporaries) was 1.5 GB at
        # 10M users; a row's probability is its own (one call up to ``chunk`` users)
        for a in range(0, len(ok_rows), chunk):
            r = ok_rows[a:a + chunk]
            p[r] = mdl.predict(code[r], None if x_all is None else x_all[r])
        out[f"churn_prob_{h}d"] = np.where(closed, 1.0, p)
        models[h] = mdl
    out["spell"] = np.where(code >= 0, np.array(SPELLS, dtype=object)[np.maximum(code, 0)], "closed")
    out["closed"] = closed
    return (out, models) if return_models else out


def read_last_month(path, id_col: str = "user_id", month_col: str = "month",
                    columns: Sequence[str] = ("true_state",), arrow_strings: bool = False) -> pd.DataFrame:
    """The rows of the last month of a long per-user monthly Parquet table (file or folder, e.g. the truth's
    ``user_paths``): ``id_col``, ``month_col`` and ``columns``. Only the month column is read in full; the
    other columns are read one row group at a time, text as dictionary codes, and cut to the last month's rows
    before any text is decoded (1M users x 24 months of Python strings took 7 GB; decoding every row's id to
    filter it cost 1.9 s at 1M users). Same frame as ``read_table(..., filters=month == last).to_pandas()``;
    ``arrow_strings`` keeps text as ``string[pyarrow]`` (10M ids and states as Python strings: ~1.3 GB)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dataset = pq.ParquetDataset(path)
    cols = [id_col, month_col, *columns]
    text = [c for c in cols if pa.types.is_string(dataset.schema.field(c).type)
            or pa.types.is_large_string(dataset.schema.field(c).type)]
    target = pa.schema([dataset.schema.field(c) for c in cols], metadata=dataset.schema.metadata)

    def row_groups():
        for name in dataset.files:
            pf = pq.ParquetFile(dataset.filesystem.open_input_file(name), read_dictionary=text)
            for i in range(pf.num_row_groups):
                yield pf, i

    maxima = [pc.max(pf.read_row_group(i, columns=[month_col]).column(0)) for pf, i in row_groups()]
    last = pc.max(pa.array([m.as_py() for m in maxima], type=target.field(month_col).type)) if maxima else None
    pieces = []
    for pf, i in row_groups():
        keep = pc.equal(pf.read_row_group(i, columns=[month_col]).column(0), last)
        if pc.any(keep).as_py():
            pieces.append(pf.read_row_group(i, columns=cols).filter(keep).cast(target))
    table = pa.concat_tables(pieces) if pieces else target.empty_table()
    if arrow_strings:
        from ..artifacts import _arrow_strings
        return table.to_pandas(types_mapper=_arrow_strings().get)
    return table.to_pandas()


def markov_oracle(truth: pd.DataFrame, paths: pd.DataFrame, params: dict, ids, observation_date,
                  horizons: Sequence[int] = (90, 180), id_col: str = "user_id") -> pd.DataFrame | None:
    """Oracle churn probability from the planted chain: ``P(closed within k months | true state at the
    observation month, true segment)`` with the planted transition matrices. None when the truth lacks
    ``markov`` parameters, ``user_paths`` or ``true_segment``. Only the last month of ``paths`` is used
    (:func:`read_last_month` reads just that from the truth's file)."""
    mk = (params or {}).get("markov") or {}
    trans = mk.get("transition")
    states = [str(s) for s in mk.get("states", ENGAGEMENT_STATES)]
    if not trans or paths is None or "true_segment" not in truth or "churned" not in states:
        return None
    mats = {str(k): np.asarray(v, float) for k, v in (trans.items() if isinstance(trans, dict)
                                                      else enumerate(trans))}
    from ..panel import align  # ids compared as text in Arrow (no Python string per user: 0.7 GB at 10M)

    ids = pd.Series(ids).reset_index(drop=True)
    month = pd.to_datetime(paths["month"])
    last = paths[(month == month.max()).to_numpy()]
    st = align(ids, last[[id_col, "true_state"]], id_col)["true_state"]
    seg = align(ids, truth[[id_col, "true_segment"]], id_col)["true_segment"]
    names = truth.groupby("true_segment")["true_segment_name"].first().to_dict() if \
        "true_segment_name" in truth else {}
    ch = states.index("churned")
    out = pd.DataFrame({id_col: ids.array if isinstance(ids.dtype, pd.StringDtype) else ids.to_numpy()})
    for h in horizons:
        k = months_in_horizon(observation_date, h)
        p = np.full(len(ids), np.nan)
        for s in pd.unique(seg.dropna()):
            key = next((c for c in (str(int(s)), str(names.get(s, ""))) if c in mats), None)
            if key is None:
                return None
            pk = np.linalg.matrix_power(mats[key], k)[:, ch]
            m = (seg == s).to_numpy()
            code = st[m].map({v: i for i, v in enumerate(states)}).to_numpy()
            okc = ~pd.isna(code)
            vals = np.full(m.sum(), np.nan)
            vals[okc] = pk[code[okc].astype(int)]
            p[m] = vals
        out[f"churn_prob_{h}d"] = p
    return out
