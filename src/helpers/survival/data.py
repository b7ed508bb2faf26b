"""Time-to-event data: right-censored durations and events, numeric covariates and model frames."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import schema as S


DURATION, EVENT = "duration", "event"


DAYS_PER_MONTH = 365.25 / 12


def time_to_event(df: pd.DataFrame, observation_date: str | pd.Timestamp,
                  inactive_days: int = S.CHURN_INACTIVE_DAYS, id_col: str = "user_id",
                  since_col: str = "customer_since_date",
                  last_seen_col: str = "last_seen_days_ago") -> pd.DataFrame:
    """Right-censored lifetimes (days from sign-up to last activity) under the inactivity churn rule.

    With tenure ``C`` (days from ``customer_since_date`` to the observation date) and recency
    ``l = last_seen_days_ago``, the lifetime ``T`` ends at the last activity. A churn is *observable* only
    once ``inactive_days`` full days of inactivity have passed, i.e. when ``l > inactive_days``:

    * ``l > inactive_days``: event, ``duration = C - l`` (the last-activity day).
    * otherwise: censored at ``duration = C - inactive_days - 1``. All we know is that the lifetime did
      not end on or before that day (else ``l`` would exceed ``inactive_days``). This censoring time is
      a function of the tenure alone, so it is independent of ``T`` given covariates (non-informative).
      Censoring at ``C - l`` instead is informative: users who already churned within the last
      ``inactive_days`` would be censored exactly at their event time, which biases survival upwards.

    Users with ``C <= inactive_days + 1`` cannot have an observable churn yet; they get ``usable=False``
    (their censoring time is <= 0 and they carry no information for fitting). A churn on the sign-up day
    (``duration == 0``) is set to 0.5 days because parametric models need positive times.

    Parameters
    ----------
    df : DataFrame
        Must hold ``id_col``, ``since_col`` (dates) and ``last_seen_col`` (non-negative integers).
    observation_date : str or Timestamp
        The snapshot date the table describes.
    inactive_days : int, default 90
        The business rule's inactivity threshold (``schema.CHURN_INACTIVE_DAYS``).

    Returns
    -------
    DataFrame
        ``id_col``, ``tenure_days``, ``last_seen_days_ago``, ``duration``, ``event`` (0/1),
        ``known_alive_days`` (``C - l``: the lifetime is at least this long, used to condition
        predictions) and ``usable`` (bool), in the row order of ``df``.
    """
    missing = [c for c in (id_col, since_col, last_seen_col) if c not in df.columns]
    if missing:
        raise ValueError(f"time_to_event needs columns {missing}; got {list(df.columns)}")
    obs = pd.Timestamp(observation_date)
    since = pd.to_datetime(df[since_col], errors="coerce")
    last = pd.to_numeric(df[last_seen_col], errors="coerce").astype(float)
    for name, bad in [(since_col, since.isna()), (last_seen_col, last.isna())]:
        if bad.any():
            raise ValueError(f"column {name!r} is missing or unparseable in {int(bad.sum())} rows "
                             f"(e.g. {id_col}={list(df.loc[bad, id_col].head(3))}); expected a value "
                             "for every user")
    tenure = (obs - since).dt.days.astype(float)
    checks = [
        (tenure < 0, f"{since_col} after the observation date {obs.date()}"),
        (last < 0, f"{last_seen_col} < 0"),
        (last != np.floor(last), f"{last_seen_col} not a whole number of days"),
        (last > tenure, f"{last_seen_col} greater than the tenure (last seen before sign-up)"),
    ]
    for bad, what in checks:
        if bad.any():
            raise ValueError(f"{int(bad.sum())} rows have {what} (e.g. {id_col}="
                             f"{list(df.loc[bad, id_col].head(3))}); fix the input or the observation date")
    event = last > inactive_days
    duration = np.where(event, tenure - last, tenure - inactive_days - 1)
    duration = np.where(event & (duration <= 0), 0.5, duration)
    return pd.DataFrame({
        id_col: _id_values(df[id_col]),
        "tenure_days": tenure.to_numpy(),
        "last_seen_days_ago": last.to_numpy(),
        DURATION: duration.astype(float),
        EVENT: event.to_numpy().astype(int),
        "known_alive_days": (tenure - last).to_numpy(),
        "usable": (duration > 0),
    }, index=df.index)


def _id_values(ids: pd.Series):
    """The identifiers of a column for a new frame: text stored in Arrow stays so (``to_numpy`` would make a
    Python string per id, ~0.7 GB at 10M users); other columns as their numpy values."""
    return ids.array if isinstance(ids.dtype, pd.StringDtype) else ids.to_numpy()


def panel_covariates(df: pd.DataFrame, segments: pd.Series | None = None,
                     groups: Sequence[str] = ("demographic", "behavioural", "segment"),
                     segment_reference: int | None = None) -> pd.DataFrame:
    """Numeric covariates of the unified table for Cox/AFT models.

    ``demographic``: age-group dummies (reference 25-34) and the income bracket as an ordinal score
    0..5; ``behavioural``: log(1 + minutes/day) per channel, log(1 + conversions), log spend and support
    tickets; ``segment``: dummies of ``segments`` (aligned on ``df``'s index; reference is the segment
    given, default the largest one).
    """
    unknown = set(groups) - {"demographic", "behavioural", "segment"}
    if unknown:
        raise ValueError(f"unknown covariate groups {sorted(unknown)}; use demographic, behavioural, segment")
    out = pd.DataFrame(index=df.index)
    if "demographic" in groups:
        age = df["age_group"].astype("string")
        for g in S.AGE_GROUPS:
            if g != "25-34":
                out[f"age_{g.replace('-', '_').replace('+', 'plus')}"] = (age == g).astype(float).to_numpy()
        out["income_score"] = df["income_bracket"].map({b: i for i, b in enumerate(S.INCOME_BRACKETS)}
                                                       ).astype(float).to_numpy()
    if "behavioural" in groups:
        for c in S.CHANNEL_MINUTES:
            out[f"log_{c.removeprefix('time_on_').removesuffix('_min')}"] = np.log1p(df[c].astype(float))
        out["log_conversions"] = np.log1p(df["monthly_conversions"].astype(float))
        out["log_spend"] = np.log1p(df["avg_monthly_spend"].astype(float))
        out["support_tickets_raised"] = df["support_tickets_raised"].astype(float)
    if "segment" in groups:
        if segments is None:
            raise ValueError("covariate group 'segment' needs `segments` (a Series aligned on df's index)")
        seg = pd.Series(segments, index=df.index).astype(int)
        ref = int(seg.value_counts().idxmax()) if segment_reference is None else segment_reference
        for k in sorted(seg.unique()):
            if k != ref:
                out[f"segment_{k}"] = (seg == k).astype(float)
    if out.isna().any().any():
        bad = out.columns[out.isna().any()].tolist()
        raise ValueError(f"covariates {bad} have missing values; impute or drop those rows first")
    return out


def _tall_r(covariates: pd.DataFrame, cols: list[str], chunk: int) -> np.ndarray:
    """``R`` of the QR decomposition of ``[1, X]``: in one call up to ``chunk`` rows, above that block by block
    (the ``R`` of the previous blocks stacked on the next block's rows, a tall-skinny QR), so that only a block
    of rows and its LAPACK copy are in memory (the whole matrix and its copy were 2 x 1.4 GB at 10M users x 17
    covariates). ``|diag(R)|`` is the same up to rounding either way."""
    n = len(covariates)
    r = None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        x = np.column_stack([np.ones(b - a)] + [covariates[c].to_numpy(float)[a:b] for c in cols])
        r = np.linalg.qr(x if r is None else np.vstack([r, x]), mode="r")
        del x
    return r


def drop_aliased(covariates: pd.DataFrame, tol: float = 1e-8, chunk: int = 1_000_000
                 ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Drop covariates that are exact linear combinations of earlier ones and the constant (aliased).

    Cox and AFT models cannot separate aliased columns; a ridge penalty hides this by splitting the effect
    (the plotted intervals are then meaningless). Columns are kept greedily in order; the result says what
    each dropped column equals (``"= InternetService_No"``, ``"= 1 - PhoneService_Yes"``, or a combination).
    One QR decomposition of ``[1, X]`` decides them all: ``|R_jj|`` is the distance of column ``j`` from the
    span of the constant and the columns before it, and a column is aliased when that distance is below
    ``tol x max(1, max |value| of the kept columns and it) x sqrt(n)`` (one SVD per column cost 8 s at 1M rows).
    Above ``chunk`` rows the decomposition runs block by block (:func:`_tall_r`; one call up to ``chunk``).
    """
    cols = list(covariates.columns)
    n = len(covariates)
    resid = np.abs(np.diag(_tall_r(covariates, cols, chunk)))[1:] if n else np.zeros(len(cols))
    col_max = (np.array([np.abs(covariates[c].to_numpy(float)).max() for c in cols]) if n and cols
               else np.zeros(len(cols)))
    kept: list[str] = []
    dropped: dict[str, str] = {}
    scale = 1.0
    for j, c in enumerate(cols):
        if resid[j] > tol * max(scale, col_max[j]) * np.sqrt(n):
            kept.append(c)
            scale = max(scale, col_max[j])
            continue
        v = covariates[c].to_numpy(float)
        same = [k for k in kept if np.allclose(covariates[k].to_numpy(float), v)]
        comp = [k for k in kept if np.allclose(1 - covariates[k].to_numpy(float), v)]
        dropped[c] = (f"= {same[0]}" if same else f"= 1 - {comp[0]}" if comp
                      else "a linear combination of the kept covariates")
    return covariates[kept], dropped


_LOG_KINDS = {"minutes", "count", "money"}


def config_covariates(df: pd.DataFrame, cfg, segments: pd.Series | None = None,
                      duration: pd.Series | None = None, parties: Sequence[str] = ("1st",),
                      max_levels: int = 12, leak_threshold: float = 0.8, include_metrics: bool = True,
                      columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Numeric survival covariates from the run configuration (``helpers.config``), not from column names.

    * behavioural metrics (``cfg.metrics``): ``log1p`` of kinds minutes / count / money, as-is otherwise;
    * profile attributes of the given ``parties`` (default first party: 2nd/3rd-party columns are missing for
      unmatched users): ``category`` as dummies (reference: the most frequent level; more than
      ``max_levels`` levels are skipped), ``ordinal`` as the position in the declared categories, ``bool`` as
      0/1, ``int`` as a number; ``multi`` is skipped;
    * segment dummies when ``segments`` is given (reference: the largest segment).

    ``include_metrics=False`` leaves the behavioural metrics out: they are snapshots at the observation date,
    so a model fitted on *past* months (:func:`monthly_churn_risk`) must not see them (a customer who closed
    last month has no minutes today, which would teach the model that no minutes means closing).

    Columns that play another role (id, dates, churn outcomes, the survival duration/event) are never used. A
    column with missing values is skipped; one whose rank correlation with ``duration`` exceeds
    ``leak_threshold`` is skipped as leaking the duration (e.g. Telco's TotalCharges ~ tenure x charges);
    aliased dummies are dropped (:func:`drop_aliased`). ``.attrs["notes"]`` lists every column left out
    and why. ``columns``: the names of the table's columns when ``df`` was read with only some of them
    (:func:`survival_columns`): attributes of other parties that the table holds are noted as left out all the
    same (default: ``df``'s columns).
    """
    notes: dict[str, str] = {}
    roles = {getattr(cfg, "id", None)}
    dates = getattr(cfg, "dates", None)
    for k in ("customer_since", "recency"):
        roles.add(getattr(dates, k, None) if dates is not None else None)
    for o in getattr(cfg, "outcomes", []) or []:
        if getattr(o, "kind", None) == "churn_event":
            roles.add(o.name)
    surv = getattr(cfg, "survival", None)
    for k in ("duration", "event"):
        roles.add(getattr(surv, k, None) if surv is not None else None)
    out = pd.DataFrame(index=df.index)
    # Spearman's rho is Pearson's on average ranks: the duration is ranked once, not once per covariate
    dur_rank = None if duration is None else pd.Series(np.asarray(duration, float)).rank().to_numpy()

    def add(name: str, values: pd.Series) -> None:
        v = pd.to_numeric(values, errors="coerce").astype(float)
        if v.isna().any():
            notes[name] = f"skipped: {int(v.isna().sum())} missing values"
            return
        if dur_rank is not None and v.nunique() > 2:
            rho = float(np.corrcoef(pd.Series(v.to_numpy()).rank().to_numpy(), dur_rank)[0, 1])
            if abs(rho) > leak_threshold:
                notes[name] = f"skipped: rank correlation {rho:.2f} with the duration (leaks it)"
                return
        out[name] = v.to_numpy()

    for m in (getattr(cfg, "metrics", []) or []) if include_metrics else []:
        if m.name in roles or m.name not in df:
            continue
        x = pd.to_numeric(df[m.name], errors="coerce")
        if getattr(m, "kind", "number") in _LOG_KINDS:
            add(f"log1p_{m.name}", np.log1p(x.clip(lower=0)))
        else:
            add(m.name, x)
    present = set(df.columns) if columns is None else set(columns)
    for a in getattr(cfg, "attributes", []) or []:
        if a.name in roles or a.name not in present:
            continue
        if getattr(a, "party", "1st") not in parties:
            notes[a.name] = f"skipped: {a.party}-party attribute (missing for unmatched users)"
            continue
        if a.name not in df:
            raise ValueError(f"config_covariates: the table has attribute {a.name!r} but df was read without it; "
                             "read the columns of survival_columns(cfg, ...)")
        col = df[a.name]
        kind = getattr(a, "type", "category")
        if kind == "multi":
            notes[a.name] = "skipped: multi-valued"
        elif kind == "ordinal":
            cats = list(getattr(a, "categories", None) or sorted(col.dropna().unique()))
            add(f"{a.name}_score", col.astype("string").map({str(c): i for i, c in enumerate(cats)}))
        elif kind == "bool":
            add(a.name, col.astype("string").str.lower().map({"true": 1, "1": 1, "yes": 1, "false": 0,
                                                              "0": 0, "no": 0}))
        elif kind == "int":
            add(a.name, col)
        else:
            s = col.astype("string")
            if s.isna().any():
                notes[a.name] = f"skipped: {int(s.isna().sum())} missing values"
                continue
            levels = s.value_counts()
            if len(levels) > max_levels:
                notes[a.name] = f"skipped: {len(levels)} levels (more than {max_levels})"
                continue
            for lev in levels.index[1:]:
                out[f"{a.name}_{lev}".replace(" ", "_")] = (s == lev).astype(float).to_numpy()
    if segments is not None:
        seg = pd.Series(segments, index=df.index).astype(int)
        ref = int(seg.value_counts().idxmax())
        for k in sorted(seg.unique()):
            if k != ref:
                out[f"segment_{k}"] = (seg == k).astype(float).to_numpy()
    const = [c for c in out if out[c].nunique() <= 1]
    for c in const:
        notes[c] = "skipped: constant"
    out = out.drop(columns=const)
    out, aliased = drop_aliased(out)
    notes.update({c: f"dropped: aliased ({why})" for c, why in aliased.items()})
    out.attrs["notes"] = notes
    return out


def survival_columns(cfg, available: Sequence[str], id_col: str = "user_id",
                     parties: Sequence[str] = ("1st",), group_attributes: bool = False) -> list[str]:
    """The columns of the unified table (``available``) that the churn notebook reads when a run configuration
    is given: the identifier, the date roles (customer-since, recency), the survival duration/event, the
    behavioural metrics, the profile attributes of ``parties`` (covariates and the fallback grouping), and
    ``age_group``/``support_tickets_raised`` (the planted-truth covariates). Other parties' attributes and other
    columns are not read (the whole 1M-user table was 1 GB of the notebook; 10 GB at 10M users).
    ``group_attributes``: also every categorical/ordinal attribute of any party (the grouping when there are
    no segments takes the first complete one)."""
    want = [getattr(cfg, "id", None) or id_col, id_col]
    dates = getattr(cfg, "dates", None)
    want += [getattr(dates, k, None) for k in ("customer_since", "recency")] if dates is not None else []
    want += ["customer_since_date", "last_seen_days_ago"]
    surv = getattr(cfg, "survival", None)
    want += [getattr(surv, k, None) for k in ("duration", "event")] if surv is not None else []
    want += [getattr(surv, "event", None) or "churned_in_last_90_days"] if surv is not None else []
    want += [o.name for o in (getattr(cfg, "outcomes", []) or []) if getattr(o, "kind", None) == "churn_event"]
    want += [m.name for m in (getattr(cfg, "metrics", []) or [])]
    want += [a.name for a in (getattr(cfg, "attributes", []) or []) if getattr(a, "party", "1st") in parties]
    if group_attributes:
        want += [a.name for a in (getattr(cfg, "attributes", []) or []) if a.type in ("category", "ordinal")]
    want += ["age_group", "support_tickets_raised"]
    have = set(available)
    return [c for c in dict.fromkeys(w for w in want if w) if c in have]


def time_to_event_from_columns(df: pd.DataFrame, duration_col: str, event_col: str,
                               positive: object = None, duration_unit_days: float = 1.0,
                               id_col: str = "user_id") -> pd.DataFrame:
    """Durations and events straight from two columns (a table such as Telco: ``tenure`` + ``Churn``).

    ``positive`` is the event column's value meaning "churned" (``Yes``, ``1``, ``True``...; default: any
    of true/1/yes). Returns the columns of :func:`time_to_event`; ``tenure_days`` is the duration in days
    (``duration_unit_days`` per unit), the recency is unknown (NaN), and rows with duration <= 0 are not
    usable.
    """
    missing = [c for c in (id_col, duration_col, event_col) if c not in df.columns]
    if missing:
        raise ValueError(f"time_to_event_from_columns needs columns {missing}; got {list(df.columns)}")
    dur = pd.to_numeric(df[duration_col], errors="coerce").astype(float)
    if dur.isna().any() or (dur < 0).any():
        bad = dur.isna() | (dur < 0)
        raise ValueError(f"column {duration_col!r} must be a non-negative number; {int(bad.sum())} rows are "
                         f"not (e.g. {id_col}={list(df.loc[bad, id_col].head(3))})")
    raw = df[event_col].astype("string").str.strip().str.lower()
    yes = {"true", "1", "yes", "y"} if positive is None else {str(positive).strip().lower()}
    if positive is not None and str(positive).lower() in {"true", "1"}:
        yes |= {"true", "1", "1.0"}
    event = raw.isin(yes).fillna(False).to_numpy()
    return pd.DataFrame({
        id_col: _id_values(df[id_col]), "tenure_days": (dur * duration_unit_days).to_numpy(),
        "last_seen_days_ago": np.nan, DURATION: dur.to_numpy(), EVENT: event.astype(int),
        "known_alive_days": (dur * duration_unit_days).to_numpy(), "usable": (dur > 0).to_numpy(),
    }, index=df.index)


def truth_covariates(df: pd.DataFrame, true_segment: pd.Series, n_segments: int) -> pd.DataFrame:
    """The generator's own hazard covariates: ``segment_1..K-1`` (ref 0), ``support_tickets_raised``,
    ``age_18_24`` -- named like ``TRUE_LOG_HR`` so fitted and planted coefficients line up."""
    seg = pd.Series(true_segment, index=df.index).astype(int)
    out = pd.DataFrame({f"segment_{k}": (seg == k).astype(float) for k in range(1, n_segments)},
                       index=df.index)
    out["support_tickets_raised"] = df["support_tickets_raised"].astype(float)
    out["age_18_24"] = (df["age_group"] == "18-24").astype(float)
    return out


def model_frame(tte: pd.DataFrame, covariates: pd.DataFrame,
                extra: pd.DataFrame | None = None, max_rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Join durations/events with covariates (and e.g. strata columns), keeping only usable rows.

    Each part is cut to the usable rows before the join (one copy of the usable rows, not three of every row:
    the join, the selection and its copy were 0.7 GB at 1M users). ``max_rows``: when there are more usable
    rows, a seeded sample of that many of them, in row order (the rows ``ph_sample(frame, max_rows, seed)``
    would keep of the whole frame, without building it: 10M users' frame was 1.5 GB)."""
    parts = [tte[[DURATION, EVENT]], covariates] + ([extra] if extra is not None else [])
    keep = tte["usable"].to_numpy()
    rows = np.flatnonzero(keep)
    if max_rows and len(rows) > max_rows:
        rng = np.random.default_rng(seed)
        rows = rows[np.sort(rng.choice(len(rows), int(max_rows), replace=False))]
    if not all(p.index.equals(tte.index) for p in parts[1:]):  # concat aligns the parts on their index first
        out = pd.concat(parts, axis=1).loc[keep].copy()
        return out if len(out) == len(rows) else out.loc[tte.index[rows]]
    return pd.concat([p.iloc[rows] for p in parts], axis=1)


def split(frame: pd.DataFrame, test_size: float = 0.3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split stratified on the event indicator."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(frame), dtype=bool)
    ev = frame[EVENT].to_numpy()
    for v in (0, 1):
        idx = np.flatnonzero(ev == v)
        test[rng.choice(idx, size=int(round(test_size * len(idx))), replace=False)] = True
    return frame.iloc[~test].copy(), frame.iloc[test].copy()


def resolve_observation_date(parameter=None, cfg=None, processed: Path | None = None,
                             truth_params: dict | None = None) -> tuple[pd.Timestamp | None, str]:
    """The observation date of the table and where it came from, in this order: the notebook parameter,
    the run configuration (``dates.observation_date``), the ingestion metadata (``observation_date`` in
    ``processed/ingest_meta.json`` or ``ingest_report.json``), the synthetic truth. ``(None, reason)``
    when none records it -- never a silent default."""
    import json

    if parameter:
        return pd.Timestamp(parameter), "the observation_date parameter"
    cfg_date = getattr(getattr(cfg, "dates", None), "observation_date", None)
    if cfg_date:
        return pd.Timestamp(cfg_date), "the run configuration (dates.observation_date)"
    for name in ("ingest_meta.json", "ingest_report.json"):
        f = Path(processed) / name if processed is not None else None
        if f is not None and f.exists():
            try:
                meta = json.loads(f.read_text())
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get("observation_date"):
                return pd.Timestamp(meta["observation_date"]), f"the ingestion metadata ({name})"
    if truth_params and truth_params.get("observation_date"):
        return pd.Timestamp(truth_params["observation_date"]), "the synthetic truth (truth_params.json)"
    return None, ("no observation date: not passed as a parameter, not in the run configuration "
                  "(dates.observation_date) and not recorded by ingestion")


def _check_frame(frame: pd.DataFrame) -> None:
    for c in (DURATION, EVENT):
        if c not in frame.columns:
            raise ValueError(f"model frame needs a {c!r} column (build it with model_frame / load_telco)")
    if frame[DURATION].isna().any() or (frame[DURATION] < 0).any():
        raise ValueError(f"column {DURATION!r} must be non-negative and non-missing; "
                         f"{int((frame[DURATION].isna() | (frame[DURATION] < 0)).sum())} rows are not")
    if not frame[EVENT].isin([0, 1]).all():
        raise ValueError(f"column {EVENT!r} must be 0/1")
    obj = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if obj:
        raise ValueError(f"covariates {obj} are not numeric; encode them (e.g. panel_covariates)")
