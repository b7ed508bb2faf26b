"""The monthly engagement long table reduced on the engine (DuckDB or Spark through Ibis), so that a million
customers x 24 months never come into pandas: transitions between consecutive months and a per-customer
summary (both cached on the engine), and from them the small tables the chains, the tests of the chain, the
survival curve and the state values need."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import ibis
import numpy as np
import pandas as pd

from .. import engine as eng

STATES = ("active", "light", "dormant", "churned")

_TRANSITION_COLUMNS = {"month_index", "prev_state", "from_state", "to_state"}
_SUMMARY_COLUMNS = {"m0", "m_last", "s0", "s_last", "churn_m"}


def _bind(table, con):
    """``table`` as an Ibis table on ``con``: a pandas frame becomes a temporary table (on a new in-memory
    DuckDB when ``con`` is None); an Ibis table keeps its own backend when ``con`` is None."""
    if isinstance(table, pd.DataFrame):
        con = eng.connect("duckdb") if con is None else con
        return eng.register_frame(con, table), con
    return table, (ibis.get_backend(table) if con is None else con)


def _month_index(col):
    d = col.cast("date")
    return d.year().cast("int64") * 12 + d.month().cast("int64")


def _codes(col, states: Sequence[str]):
    return ibis.cases(*[(col == s, i) for i, s in enumerate(states)], else_=-1)


def _has(table, columns: set) -> bool:
    return isinstance(table, ibis.Table) and columns <= set(table.columns)


def transitions(waves, *, customer: str = "user_id", month: str = "month", state: str = "engagement_state",
                states: Sequence[str] = STATES, cache: bool | str = True, con=None) -> ibis.Table:
    """One row per transition between consecutive months, cached on the engine: ``<customer>, month_index``
    (year * 12 + month of the *to* month), ``prev_state`` (the state two months before, null unless that month
    is consecutive too), ``from_state``, ``to_state`` (indices into ``states``).

    One window pass over the long table serves the per-customer counts, the per-wave counts (stationarity) and
    the second-order counts. Pairs separated by a missing month are not transitions. ``waves`` is a pandas
    frame or an Ibis table; a label outside ``states`` raises ``ValueError`` with the number of transitions.
    ``cache``: ``True`` keeps the result in the engine's memory (``release()`` frees it), ``"disk"`` in a
    temporary Parquet file that every later query scans (:func:`helpers.engine.disk_cache`; for long tables
    whose transitions do not fit beside the rest: 10M customers x 24 months are ~190M transitions, ~4 GB in
    DuckDB), ``False`` recomputes the window pass in every query (:func:`helpers.engine.keep`).
    """
    t, con = _bind(waves, con)
    base = t.select(c=t[customer], m=_month_index(t[month]), s=_codes(t[state], states))
    w = ibis.window(group_by=base.c, order_by=base.m)
    lag = base.mutate(f=base.s.lag().over(w), fm=base.m.lag().over(w), g=base.s.lag(2).over(w),
                      gm=base.m.lag(2).over(w))
    ok = lag.f.notnull() & (lag.m - lag.fm == 1)
    tr = lag.filter(ok).select(**{customer: lag.c, "month_index": lag.m,
                                  "prev_state": ibis.ifelse(lag.fm - lag.gm == 1, lag.g, ibis.null("int8")),
                                  "from_state": lag.f, "to_state": lag.s})
    tr, _ = eng.keep(con, tr, cache)  # freed by release(tr); a disk file also goes with the last expression on tr
    bad = int(con.execute(tr.filter((tr.from_state < 0) | (tr.to_state < 0)).count()))
    if bad:
        raise ValueError(f"column {state!r} has values outside {list(states)} (coded -1) in {bad} transitions: "
                         "map them to the listed states first")
    return tr


def release(table) -> None:
    """Free what :func:`transitions` or :func:`customer_summary` keep: an in-memory cache at once; a disk cache
    (``cache="disk"``) is a file on disk, not memory, and is deleted with the last expression built on it."""
    if hasattr(table, "release"):
        table.release()


def restrict(table, customers, *, customer: str = "user_id", con=None) -> ibis.Table:
    """The rows of ``table`` (pandas or Ibis) whose ``customer`` is one of ``customers`` (ids), on the engine:
    a semi-join against the ids registered as a temporary table (it lives as long as ``con``), so a long
    table is cut to a sample of customers before a window pass such as :func:`transitions`."""
    t, con = _bind(table, con)
    keep = eng.register_frame(con, pd.DataFrame({"_k": pd.unique(np.asarray(customers))}))
    return t.semi_join(keep, t[customer] == keep._k)


def customer_transition_counts(waves, *, customer: str = "user_id", month: str = "month",
                               state: str = "engagement_state", states: Sequence[str] = STATES, order: int = 1,
                               by_month: bool = False, per_customer: bool = True, con=None) -> pd.DataFrame:
    """Transition counts between consecutive months, aggregated on the engine.

    Returns columns ``<customer>, from_state, to_state, n`` (indices into ``states``) — with ``order=2`` also
    ``prev_state`` (state two months before), with ``by_month=True`` also ``month_index`` of the *to* month,
    with ``per_customer=False`` without the customer (summed over customers: what the tests of the chain need,
    a few hundred rows whatever the number of customers). ``waves`` is a pandas frame, an Ibis table, or the
    output of :func:`transitions` (then not recomputed).
    """
    if order not in (1, 2):
        raise ValueError("order must be 1 or 2")
    tr = waves if _has(waves, _TRANSITION_COLUMNS) else transitions(waves, customer=customer, month=month,
                                                                     state=state, states=states, con=con)
    con = ibis.get_backend(tr) if con is None else con
    keys = ([customer] if per_customer else []) + (["prev_state"] if order == 2 else []) + ["from_state", "to_state"]
    keys += ["month_index"] if by_month else []
    src = tr.filter(tr.prev_state.notnull()) if order == 2 else tr
    return con.execute(src.group_by(keys).aggregate(n=ibis._.count()))


# ----------------------------------------------------------------------------------------------------------
# customers' segment and weight on the engine
# ----------------------------------------------------------------------------------------------------------
def _customer_frame(segment: pd.Series | None, weight: pd.Series | None, ids=None) -> tuple[pd.DataFrame, list]:
    """``_c, _g, _w``: customer id, segment code (into the returned labels) and weight (missing -> 1) of the
    customers with a segment (every id in ``ids`` when there is no segment)."""
    if segment is not None:
        seg = segment.dropna()
        codes, uniques = pd.factorize(seg.to_numpy(), sort=False)
        idx, labels = seg.index, uniques.tolist()
    else:
        idx, codes, labels = pd.Index(ids), np.zeros(len(ids), int), ["all"]
    w = weights_of(idx, weight)
    return pd.DataFrame({"_c": _id_values(idx), "_g": codes.astype("int32"), "_w": w}), list(labels)


def _id_values(idx: pd.Index):
    """Identifiers for a frame handed to the engine: text stored in Arrow stays so (``to_numpy`` would make a
    Python string per id, ~0.7 GB at 10M customers)."""
    return idx.array if isinstance(idx.dtype, pd.StringDtype) else idx.to_numpy()


def weights_of(idx: pd.Index, weight: pd.Series | None) -> np.ndarray:
    """``weight.reindex(idx).fillna(1.0)`` as floats (all 1 without weights), the ids matched as Arrow text
    (:func:`helpers.panel.align`): a reindex builds a hash index of Python strings of every id."""
    if weight is None:
        return np.ones(len(idx))
    from ..panel import lookup

    return lookup(pd.Series(_id_values(idx)), weight.astype(float)).fillna(1.0).to_numpy(float)


def _label_sort(values) -> list:
    return sorted(values, key=lambda v: (str(type(v)), v))


@dataclass
class ChainCounts:
    """What :func:`helpers.dynamics.markov.fit_chains` needs of a long table, from the engine.

    ``totals``: weighted transition counts ``[segment, from, to]`` over every customer (weights normalised to
    mean 1 over the customers with a transition and a segment); ``customers``: those customers per segment;
    ``per_customer``: the per-customer counts (``<customer>, segment, weight, from_state, to_state, n``) of every
    such customer, or, when there are more than ``sample``, of a seeded sample of them stratified by segment
    (``sampled``), on which the bootstrap runs; ``all_customers``: customers with a transition, with or
    without a segment."""

    segments: list
    totals: np.ndarray
    transitions: np.ndarray      # unweighted counts [segment, from, to]
    customers: np.ndarray
    per_customer: pd.DataFrame
    sampled: bool
    all_customers: int
    customer: str = "user_id"


def chain_counts(waves, segment: pd.Series | None = None, weight: pd.Series | None = None, *,
                 customer: str = "user_id", month: str = "month", state: str = "engagement_state",
                 states: Sequence[str] = STATES, sample: int | None = 100_000, min_per_segment: int = 1000,
                 seed: int = 0, con=None) -> ChainCounts:
    """Per-segment weighted transition counts over every customer, and per-customer counts for the bootstrap.

    ``waves`` is the long table (pandas or Ibis) or :func:`transitions` output; ``segment``/``weight`` are
    Series indexed by customer id (missing segment -> customer left out; missing weight -> 1). With more than
    ``sample`` customers the per-customer counts are those of a seeded sample (``seed``): in each segment
    ``ceil(sample x share of the segment)`` customers, at least ``min_per_segment`` (all of a smaller segment),
    drawn from the segment's customers; the bootstrap then rescales the sample's spread to the full count
    (:func:`helpers.dynamics.markov.fit_chains`). ``sample=None`` keeps every customer.
    """
    tr = waves if _has(waves, _TRANSITION_COLUMNS) else transitions(waves, customer=customer, month=month,
                                                                     state=state, states=states, con=con)
    con = ibis.get_backend(tr) if con is None else con
    k = len(states)
    # per-customer counts, cached: the totals, the customers and the sample all read them
    pc = tr.group_by([customer, "from_state", "to_state"]).aggregate(n=ibis._.count()).cache()
    ids = None
    if segment is None:
        ids = con.execute(tr.select(customer).distinct())[customer].to_numpy()
    frame, labels = _customer_frame(segment, weight, ids)
    cust = eng.register_frame(con, frame)
    try:
        j = pc.inner_join(cust, pc[customer] == cust._c)
        tot = con.execute(j.group_by(["_g", "from_state", "to_state"]).aggregate(wn=(j._w * j.n).sum(), n=j.n.sum()))
        seen = pc.select(customer).distinct()
        kept = cust.semi_join(seen, cust._c == seen[customer])
        per_g = con.execute(kept.group_by("_g").aggregate(customers=ibis._.count(), w=kept._w.sum()))
        all_customers = int(con.execute(seen.count()))
        present = _label_sort([labels[g] for g in per_g["_g"]])
        pos = {labels[g]: present.index(labels[g]) for g in per_g["_g"]}
        G = len(present)
        n_g = np.zeros(G, int)
        n_g[[pos[labels[g]] for g in per_g["_g"]]] = per_g["customers"].to_numpy(int)
        w_mean = float(per_g["w"].sum() / max(per_g["customers"].sum(), 1))
        totals = np.zeros((G, k, k)); trans = np.zeros((G, k, k))
        gi = np.array([pos[labels[g]] for g in tot["_g"]], int)
        fi, si = tot["from_state"].to_numpy(int), tot["to_state"].to_numpy(int)
        np.add.at(totals, (gi, fi, si), tot["wn"].to_numpy(float) / w_mean)
        np.add.at(trans, (gi, fi, si), tot["n"].to_numpy(float))
        sampled = sample is not None and int(n_g.sum()) > sample
        rows = j
        if sampled:
            pick = _stratified_sample(frame["_g"].to_numpy(), labels, pos, n_g, sample, min_per_segment, seed)
            chosen = eng.register_frame(con, pd.DataFrame({"_s": frame["_c"].to_numpy()[pick]}))
            rows = j.semi_join(chosen, j[customer] == chosen._s)
        per = con.execute(rows.select(customer, "_g", "_w", "from_state", "to_state", "n"))
        if sampled:
            eng.drop_temp(con, chosen.get_name())
    finally:
        eng.drop_temp(con, cust.get_name())
        pc.release()
    per = per.assign(segment=np.asarray(labels, dtype=object)[per["_g"].to_numpy()] if len(per) else [],
                     weight=per["_w"]).drop(columns=["_g", "_w"])
    per = per[[customer, "segment", "weight", "from_state", "to_state", "n"]]
    return ChainCounts(present, totals, trans, n_g, per, sampled, all_customers, customer)


def _stratified_sample(codes: np.ndarray, labels: list, pos: dict, n_g: np.ndarray, sample: int,
                       min_per_segment: int, seed: int) -> np.ndarray:
    """Positions (sorted) of the sampled customers: per segment ceil(sample x share), at least
    ``min_per_segment``, at most all of the segment's customers."""
    rng = np.random.default_rng(seed)
    total = n_g.sum()
    picks = []
    for g in range(len(labels)):
        if labels[g] not in pos:
            continue
        members = np.flatnonzero(codes == g)
        want = max(math.ceil(sample * n_g[pos[labels[g]]] / total), min_per_segment)
        picks.append(members if want >= len(members) else rng.choice(members, size=want, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], int)


# ----------------------------------------------------------------------------------------------------------
# per-customer summary: entry, rewards, last state
# ----------------------------------------------------------------------------------------------------------
def customer_summary(waves, *, customer: str = "user_id", month: str = "month", state: str = "engagement_state",
                     reward: str | None = "spend", states: Sequence[str] = STATES, churned: str = "churned",
                     cache: bool | str = True, con=None) -> ibis.Table:
    """One row per customer, cached on the engine: ``m0``/``m_last`` (first/last observed month index),
    ``s0``/``s_last`` (their states, indices into ``states``), ``churn_m`` (first ``churned`` month, null if
    none), and per state i ``months_i`` and ``reward_i`` (months in that state and the sum of ``reward`` over
    them). One grouped pass over the long table serves the entry states, the rewards and the last states.
    ``cache``: as in :func:`transitions` (``"disk"``: a temporary Parquet file instead of the engine's memory)."""
    t, con = _bind(waves, con)
    r = t[reward].cast("float64") if reward else ibis.literal(0.0)
    b = t.select(c=t[customer], m=_month_index(t[month]), s=_codes(t[state], states), r=r)
    agg = {"m0": b.m.min(), "m_last": b.m.max(), "s0": b.s.argmin(b.m), "s_last": b.s.argmax(b.m),
           "churn_m": b.m.min(where=b.s == list(states).index(churned))}
    for i in range(len(states)):
        agg[f"months_{i}"] = b.m.count(where=b.s == i)
        agg[f"reward_{i}"] = b.r.sum(where=b.s == i).fill_null(0.0)
    return eng.keep(con, b.group_by(b.c.name(customer)).aggregate(**agg), cache)[0]


def _summary(waves, customer, month, state, states, con, reward="spend"):
    if _has(waves, _SUMMARY_COLUMNS):
        return waves, (ibis.get_backend(waves) if con is None else con)
    s = customer_summary(waves, customer=customer, month=month, state=state, states=states, con=con,
                         reward=reward if reward in waves.columns else None)
    return s, ibis.get_backend(s)


def _join_customers(s: ibis.Table, segment, weight, customer: str, con) -> tuple[ibis.Table, list, list]:
    """``s`` with columns ``_g`` (segment code) and ``_w`` (weight): inner join on the segmented customers, or
    every customer (one segment ``all``) with its weight when there is no segment. Returns the joined
    table, the labels and the temporary tables to drop."""
    if segment is not None:
        frame, labels = _customer_frame(segment, weight)
        cust = eng.register_frame(con, frame)
        return s.inner_join(cust, s[customer] == cust._c), labels, [cust.get_name()]
    if weight is None:
        return s.mutate(_g=ibis.literal(0), _w=ibis.literal(1.0)), ["all"], []
    wt = eng.register_frame(con, pd.DataFrame({"_c": _id_values(weight.index), "_wt": weight.to_numpy(float)}))
    j = s.left_join(wt, s[customer] == wt._c)
    return j.mutate(_g=ibis.literal(0), _w=j._wt.fill_null(1.0)), ["all"], [wt.get_name()]


def _run(con, expr, temps: list) -> pd.DataFrame:
    try:
        return con.execute(expr)
    finally:
        for name in temps:
            eng.drop_temp(con, name)


def entry_states(waves, weight: pd.Series | None = None, *, customer: str = "user_id", month: str = "month",
                 state: str = "engagement_state", states: Sequence[str] = STATES, con=None) -> pd.DataFrame:
    """The Kaplan-Meier input on the chain's own clock, aggregated on the engine: one row per (first observed
    state ``s0``, ``duration`` in months from the first observed month to the first churned month (``event``)
    or to the last observed month (censored), ``event``) with ``customers`` and their summed ``weight``
    (missing -> 1). ``waves`` is the long table or :func:`customer_summary` output."""
    s, con = _summary(waves, customer, month, state, states, con)
    j, _, temps = _join_customers(s, None, weight, customer, con)
    ev = j.churn_m.notnull()
    dur = ibis.ifelse(ev, j.churn_m - j.m0, j.m_last - j.m0)
    g = j.group_by([j.s0.name("s0"), dur.name("duration"), ev.name("event")]).aggregate(
        customers=ibis._.count(), weight=j._w.sum())
    d = _run(con, g, temps)
    lab = np.asarray(list(states) + [None], dtype=object)
    d["s0"] = lab[np.where(d["s0"].to_numpy(int) < 0, len(states), d["s0"].to_numpy(int))]
    return d.sort_values(["s0", "duration", "event"]).reset_index(drop=True)


def reward_table(waves, segment: pd.Series | None = None, weight: pd.Series | None = None, *,
                 customer: str = "user_id", month: str = "month", state: str = "engagement_state",
                 reward: str = "spend", states: Sequence[str] = STATES, con=None) -> pd.DataFrame:
    """Per segment and state: the weighted months ``w`` and weighted reward ``wr`` (weights missing -> 1),
    aggregated on the engine; columns ``segment, state, w, wr``."""
    s, con = _summary(waves, customer, month, state, states, con, reward)
    j, labels, temps = _join_customers(s, segment, weight, customer, con)
    agg = {}
    for i in range(len(states)):
        agg[f"w{i}"] = (j._w * j[f"months_{i}"]).sum()
        agg[f"r{i}"] = (j._w * j[f"reward_{i}"]).sum()
    d = _run(con, j.group_by("_g").aggregate(**agg), temps)
    rows = [{"segment": labels[g], "state": st, "w": float(r[f"w{i}"]), "wr": float(r[f"r{i}"])}
            for g, r in zip(d["_g"], d.to_dict("records")) for i, st in enumerate(states)]
    return pd.DataFrame(rows, columns=["segment", "state", "w", "wr"])


def last_states(waves, segment: pd.Series | None = None, weight: pd.Series | None = None, *,
                customer: str = "user_id", month: str = "month", state: str = "engagement_state",
                states: Sequence[str] = STATES, con=None) -> pd.DataFrame:
    """Per segment and *last observed* state: ``customers`` and their summed weight ``w``, aggregated on the
    engine; columns ``segment, state, customers, w``."""
    s, con = _summary(waves, customer, month, state, states, con)
    j, labels, temps = _join_customers(s, segment, weight, customer, con)
    d = _run(con, j.group_by(["_g", "s_last"]).aggregate(customers=ibis._.count(), w=j._w.sum()), temps)
    lab = np.asarray(list(states) + [None], dtype=object)
    sl = d["s_last"].to_numpy(int)
    return pd.DataFrame({"segment": np.asarray(labels, dtype=object)[d["_g"].to_numpy(int)],
                         "state": lab[np.where(sl < 0, len(states), sl)],
                         "customers": d["customers"].to_numpy(int), "w": d["w"].to_numpy(float)})


def label_confusion(observed, latent, *, customer: str = "user_id", month: str = "month",
                    state: str = "engagement_state", latent_state: str = "true_state", customers=None,
                    con=None) -> pd.DataFrame:
    """Share of each latent state's customer-months carrying each observed label (rows sum to 1), joined on
    customer and month on the engine, on every customer or only on ``customers`` (ids: a sample keeps the
    join of two long tables small); index: latent state, columns: observed label."""
    o, con = _bind(observed, con)
    l, _ = _bind(latent, con)
    a = o.select(c=o[customer], m=_month_index(o[month]), obs=o[state])
    b = l.select(c2=l[customer], m2=_month_index(l[month]), lat=l[latent_state])
    temps = []
    if customers is not None:
        keep = eng.register_frame(con, pd.DataFrame({"_k": pd.unique(np.asarray(customers))}))
        temps.append(keep.get_name())
        a = a.semi_join(keep, a.c == keep._k)
        b = b.semi_join(keep, b.c2 == keep._k)
    j = a.inner_join(b, [a.c == b.c2, a.m == b.m2])
    d = _run(con, j.group_by(["lat", "obs"]).aggregate(n=ibis._.count()), temps)
    t = d.pivot(index="lat", columns="obs", values="n").fillna(0).sort_index().sort_index(axis=1)
    return t.div(t.sum(axis=1), axis=0).rename_axis(index="latent state", columns="observed label")
