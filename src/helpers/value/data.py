"""Inputs of the customer-value models: the CDNOW reference data (read in place, never copied) and the
recency-frequency-monetary summary of a transaction log, aggregated on the engine with Ibis so that the same
code runs on DuckDB or Spark at panel scale."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths as _paths

EPOCH = pd.Timestamp("1970-01-01")


def cdnow_dir() -> Path | None:
    """``../shared/data/cdnow`` (research/teaching licence: read in place, not shipped), or None if absent."""
    if hasattr(_paths, "shared_data"):
        try:
            return _paths.shared_data("cdnow")
        except (FileNotFoundError, ValueError):
            return None
    folder = _paths.REPO_ROOT.parent / "shared" / "data" / "cdnow"
    return folder if folder.is_dir() else None


def _need(folder: str | os.PathLike | None, name: str) -> Path:
    if folder is None:
        raise FileNotFoundError(f"the CDNOW folder is absent (expected {_paths.REPO_ROOT.parent / 'shared/data/cdnow'}); "
                                "it is not shipped with the repository (research/teaching licence)")
    f = Path(folder) / name
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist: the CDNOW folder should hold {name} "
                                "(as shipped in the lifetimes 0.11.3 wheel; see ../shared/data/MANIFEST.md)")
    return f


def load_cdnow_summary(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """The published 39-week calibration summary of the CDNOW sample (2,357 customers), columns
    ``customer_id, frequency, recency, T`` (weeks) and ``monetary_value`` (mean spend of repeat purchases)."""
    f = _need(folder if folder is not None else cdnow_dir(), "cdnow_customers_summary_with_transactions.csv")
    d = pd.read_csv(f)
    return d.rename(columns={"ID": "customer_id", "x": "frequency", "t_x": "recency", "zbar": "monetary_value"})


def load_cdnow_transactions(folder: str | os.PathLike | None = None, which: str = "sample") -> pd.DataFrame:
    """CDNOW transactions: ``which='sample'`` (1/10th sample, 2,357 customers, ``CDNOW_sample.txt``) or
    ``'master'`` (23,570 customers). Columns ``customer_id, date, cds, amount``."""
    folder = folder if folder is not None else cdnow_dir()
    if which == "sample":
        f = _need(folder, "CDNOW_sample.txt")
        d = pd.read_csv(f, sep=r"\s+", header=None, names=["customer_id", "sample_id", "date", "cds", "amount"],
                        dtype={"customer_id": str, "sample_id": str, "date": str})
    elif which == "master":
        f = _need(folder, "CDNOW_master.txt")
        d = pd.read_csv(f, sep=r"\s+", header=None, skiprows=1, names=["customer_id", "date", "cds", "amount"],
                        dtype={"customer_id": str, "date": str})
    else:
        raise ValueError(f"which={which!r}: expected 'sample' or 'master'")
    try:
        d["date"] = pd.to_datetime(d["date"], format="%Y%m%d")
    except ValueError as exc:
        raise ValueError(f"{f}: column 3 (date) must be YYYYMMDD: {exc}") from exc
    return d


def _days(ts) -> int:
    return int((pd.Timestamp(ts) - EPOCH).days)


def rfm_summary(transactions, calibration_end, observation_end=None, *, customer: str = "user_id",
                date: str = "date", amount: str | None = "amount", unit_days: float = 7.0,
                merge_same_day: bool = True, con=None) -> pd.DataFrame:
    """Per-customer calibration summary (and holdout counts) of a transaction log.

    Purchases on the same day count as one transaction (amounts summed), as in the published CDNOW work;
    ``merge_same_day=False`` counts every row (extra purchases on the first day are repeats at time 0), to
    match outcomes that count every transaction.
    Customers whose first purchase is after ``calibration_end`` are left out. Times are in units of
    ``unit_days`` days (7 = weeks). Returns columns ``<customer>, first_purchase, frequency`` (repeat
    transactions in the calibration period), ``recency`` (first to last calibration purchase), ``T`` (first
    purchase to ``calibration_end``), ``monetary_value`` (mean amount of the repeat calibration
    transactions, 0 without repeats) and, when ``observation_end`` is given, ``frequency_holdout`` (transactions
    in (calibration_end, observation_end]) and ``duration_holdout``.

    ``transactions`` is a pandas frame or an Ibis table; the aggregation runs on ``con`` (Ibis backend; default
    an in-memory DuckDB), so a Spark table is summarised on Spark.
    """
    import ibis

    if isinstance(transactions, pd.DataFrame):
        missing = [c for c in (customer, date, amount) if c and c not in transactions.columns]
        if missing:
            raise KeyError(f"transaction table lacks column(s) {missing}; columns present: {list(transactions.columns)}")
        if con is None:
            from .. import engine
            con = engine.connect("duckdb")
        t = ibis.memtable(transactions[[c for c in (customer, date, amount) if c]])
    else:
        t = transactions
    cal = _days(calibration_end)
    obs = _days(observation_end) if observation_end is not None else None
    # two grouped passes over the log and one join, no per-day table: each customer's first purchase day,
    # then every row against it (the per-day grouping of 38M rows took most of the time at 1M customers)
    # amounts as exact decimals (micro-units): a sum of doubles depends on the order the engine's threads add
    # them, so a customer's total moved in the 14th digit between two runs of the same data; decimal sums are exact
    money = "decimal(38, 6)"
    b = t.select(c=t[customer], d=t[date].cast("date").epoch_days(),
                 a=t[amount].cast(money) if amount else ibis.literal(0).cast(money))
    # the first purchase from the log itself, not from ``b``: SQL that reads ``b`` twice holds it in a common
    # table expression, which DuckDB materialises (the 38M-row log: 1.2 GB of the 1M-user peak)
    first = t.group_by(t[customer].name("c")).aggregate(first=t[date].cast("date").epoch_days().min())
    first = first.filter(first["first"] <= cal)
    j = b.inner_join(first, "c")
    in_cal, on_first = j.d <= cal, j.d == j["first"]
    agg = {"first": j["first"].min(), "last_cal": j.d.max(where=in_cal),
           "amt_rep": j.a.sum(where=in_cal & (j.d > j["first"])).cast("float64").fill_null(0.0)}
    if merge_same_day:  # purchases on one day are one transaction
        agg["n_cal"] = j.d.nunique(where=in_cal)
    else:  # every row counts; the first day's extra rows are repeats at time 0 with the day's mean amount
        agg.update(n_cal=j.d.count(where=in_cal), k1=j.d.count(where=on_first),
                   a1=j.a.sum(where=on_first).cast("float64").fill_null(0.0))
    if obs is not None:
        hold = (j.d > cal) & (j.d <= obs)
        agg["frequency_holdout"] = j.d.nunique(where=hold) if merge_same_day else j.d.count(where=hold)
        agg["amount_holdout"] = j.a.sum(where=hold).cast("float64").fill_null(0.0)
    g = j.group_by(j.c.name(customer)).aggregate(**agg).order_by(customer)
    # ordered by the engine and handed over as Arrow, text ids staying Arrow text: a pandas sort of 10M ids as
    # Python strings held ~0.7 GB of string objects (and the frame twice) for the order alone
    tbl = con.to_pyarrow(g) if con is not None else g.to_pyarrow()
    from ..artifacts import _arrow_strings

    df = tbl.to_pandas(types_mapper=_arrow_strings().get)
    del tbl
    if not merge_same_day:
        df["amt_rep"] = df["amt_rep"] + df["a1"] * (df["k1"] - 1) / df["k1"]
    out = pd.DataFrame({customer: df[customer]})
    out["first_purchase"] = EPOCH + pd.to_timedelta(df["first"].astype(int), unit="D")
    out["frequency"] = (df["n_cal"] - 1).astype(int)
    out["recency"] = (df["last_cal"] - df["first"]) / unit_days
    out["T"] = (cal - df["first"]) / unit_days
    out["monetary_value"] = np.where(out["frequency"] > 0, df["amt_rep"] / out["frequency"].clip(lower=1), 0.0)
    if obs is not None:
        out["frequency_holdout"] = df["frequency_holdout"].astype(int)
        out["amount_holdout"] = df["amount_holdout"].astype(float)
        out["duration_holdout"] = (obs - cal) / unit_days
    return out
