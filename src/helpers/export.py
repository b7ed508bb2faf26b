"""Activation export: write an audience (segment or lookalikes) as CSV + Parquet + a JSON manifest.

:func:`export_audience` is a pure library function (used by notebook 08, the ``audience-export`` command
line and the web explorer): it validates the audience, enforces the privacy guard -- a minimum audience
size, an allow-list of exportable columns (no 3rd-party raw attribute can leave), optional SHA-256
(optionally salted) identifiers -- and returns the paths it wrote. Nothing in the files depends on the wall
clock; only the manifest's ``created_at`` does.

Command line (``audience-export --help`` or ``python -m helpers.export --help``)::

    audience-export --segment 3 --name affluent_families --hash-ids
    audience-export --lookalike --top-share 0.05 --name seed_lookalikes --min-size 500
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import schema as S

#: The only columns an activation file may carry (besides the identifier, which may be hashed).
ALLOWED_COLUMNS = ("user_id", "segment_name", "score", "reason_codes", "churn_prob_90d")
#: Default minimum audience size: smaller audiences could single people out.
DEFAULT_MIN_SIZE = 100
HASHED_ID = "user_id_sha256"
SALT_ENV = "AUDIENCE_EXPORT_SALT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class AudienceTooSmall(ValueError):
    """The audience is below the minimum exportable size (privacy guard)."""


class DisallowedColumn(ValueError):
    """The audience frame carries a column that may not be exported (e.g. a 3rd-party attribute)."""


def sha256_ids(user_ids: pd.Series, salt: str | None = None) -> pd.Series:
    """Hex SHA-256 of ``salt + user_id`` per identifier (``salt=None``: unsalted, matchable by partners)."""
    prefix = "" if salt is None else salt
    return pd.Series([hashlib.sha256((prefix + str(u)).encode("utf-8")).hexdigest() for u in user_ids],
                     index=user_ids.index, name=HASHED_ID, dtype="string")


def panel_version(df: pd.DataFrame) -> str:
    """Content hash of the unified table the audience was built from (16 hex characters)."""
    missing = set(S.COLUMN_NAMES) - set(df.columns)
    if missing:
        raise ValueError(f"panel_version needs the unified 22-column table; missing {sorted(missing)}")
    from .ingest import table_fingerprint

    return table_fingerprint(df)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validate_audience(audience: pd.DataFrame, min_size: int = DEFAULT_MIN_SIZE) -> pd.DataFrame:
    """Check an audience frame against the export contract and return it in canonical form.

    Canonical form: allowed columns in :data:`ALLOWED_COLUMNS` order, ``user_id`` as string, rows sorted
    by descending ``score`` (when present) then ``user_id``, so the same audience gives the same bytes.

    Raises
    ------
    DisallowedColumn
        A column outside :data:`ALLOWED_COLUMNS` (3rd-party attributes are named as such).
    AudienceTooSmall
        Fewer than ``min_size`` distinct users.
    ValueError
        Missing/duplicate ``user_id``, non-numeric or non-finite ``score``/``churn_prob_90d``.
    """
    if not isinstance(audience, pd.DataFrame):
        raise TypeError(f"audience must be a pandas DataFrame, got {type(audience).__name__}")
    extra = [c for c in audience.columns if c not in ALLOWED_COLUMNS]
    if extra:
        third = [c for c in extra if c in S.THIRD_PARTY]
        why = (f"; {third} are 3rd-party attributes, which are never exported" if third else "")
        raise DisallowedColumn(f"columns {extra} may not be exported{why}. Allowed columns: "
                               f"{list(ALLOWED_COLUMNS)}; drop the others before exporting.")
    if "user_id" not in audience:
        raise ValueError("the audience needs a 'user_id' column")
    ids = audience["user_id"]
    if ids.isna().any():
        raise ValueError(f"user_id is missing in rows {audience.index[ids.isna()][:10].tolist()}")
    dup = ids.astype(str).duplicated(keep=False)
    if dup.any():
        raise ValueError(f"user_id is duplicated in rows {audience.index[dup][:10].tolist()} "
                         f"(e.g. {ids[dup].astype(str).iloc[0]!r}); an audience lists each user once")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if len(audience) < min_size:
        raise AudienceTooSmall(
            f"refusing to export an audience of {len(audience)} users: the minimum is {min_size} "
            "(privacy guard: small audiences can single people out). Widen the audience definition "
            "(a larger segment or lookalike share); lower min_size only if your privacy policy allows it.")
    out = audience.copy()
    out["user_id"] = ids.astype(str).astype("string")
    for c in ("score", "churn_prob_90d"):
        if c in out:
            v = pd.to_numeric(out[c], errors="coerce").astype(float)
            bad = ~np.isfinite(v.to_numpy())
            if bad.any():
                raise ValueError(f"column {c!r} must be a finite number; rows {out.index[bad][:10].tolist()} "
                                 "are missing or not numeric")
            out[c] = v
    for c in ("segment_name", "reason_codes"):
        if c in out:
            out[c] = out[c].astype("string").fillna("")
    keys = (["score"] if "score" in out else []) + ["user_id"]
    out = out.sort_values(keys, ascending=[False] * (len(keys) - 1) + [True], kind="mergesort")
    return out[[c for c in ALLOWED_COLUMNS if c in out]].reset_index(drop=True)


def export_audience(audience: pd.DataFrame, out_dir: str | os.PathLike, name: str, *,
                    definition: str | Mapping[str, object], min_size: int = DEFAULT_MIN_SIZE,
                    hash_ids: bool = False, salt: str | None = None, panel_version: str | None = None,
                    seed: int | None = None, created_at: str | None = None,
                    overwrite: bool = False) -> dict[str, Path]:
    """Write an audience ready for activation: ``<name>.csv``, ``<name>.parquet``, ``<name>.manifest.json``.

    Parameters
    ----------
    audience : pandas.DataFrame
        One row per user: ``user_id`` and any of ``segment_name``, ``score``, ``reason_codes``,
        ``churn_prob_90d`` -- nothing else (:data:`ALLOWED_COLUMNS`; enforced).
    out_dir : path
        Folder to write into (created if needed).
    name : str
        File stem: letters, digits, ``_``, ``.``, ``-`` (max 100), so a web form cannot write elsewhere.
    definition : str or mapping
        How the audience was built (recorded in the manifest), e.g. the seed definition and model.
    min_size : int
        Refuse (:class:`AudienceTooSmall`) audiences with fewer users. Default 100.
    hash_ids : bool
        Replace ``user_id`` by ``user_id_sha256`` = SHA-256 of ``salt + user_id``.
    salt : str, optional
        Secret salt of the hashes (never written anywhere); only with ``hash_ids``.
    panel_version : str, optional
        Content hash of the unified table (:func:`panel_version`), recorded in the manifest.
    seed : int, optional
        Random seed of the run that built the audience, recorded in the manifest.
    created_at : str, optional
        ISO timestamp for the manifest; default the current UTC time. It is the only wall-clock value:
        the CSV and Parquet bytes, and every number in the manifest, depend on the inputs alone.
    overwrite : bool
        Replace existing files of the same name (default: refuse with :class:`FileExistsError`).

    Returns
    -------
    dict
        ``{"csv": Path, "parquet": Path, "manifest": Path}``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"export name {name!r} is not allowed: use 1-100 letters, digits, '_', '.', '-' "
                         "starting with a letter or digit")
    if salt is not None and not hash_ids:
        raise ValueError("a salt only makes sense with hash_ids=True")
    table = validate_audience(audience, min_size)
    if hash_ids:
        table.insert(0, HASHED_ID, sha256_ids(table["user_id"], salt))
        table = table.drop(columns="user_id")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{name}.csv", "parquet": out / f"{name}.parquet",
             "manifest": out / f"{name}.manifest.json"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} already exist; choose another name or pass overwrite=True "
                              "(CLI: --overwrite)")
    table.to_csv(paths["csv"], index=False)
    table.to_parquet(paths["parquet"], index=False)
    manifest = {
        "name": name,
        "definition": definition if isinstance(definition, str) else dict(definition),
        "size": int(len(table)),
        "created_at": created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "panel_version": panel_version,
        "seed": seed,
        "id_column": HASHED_ID if hash_ids else "user_id",
        "id_hashing": ("sha256-salted" if salt is not None else "sha256") if hash_ids else "none",
        "columns": list(table.columns),
        "min_size": int(min_size),
        "segment_names": sorted(table["segment_name"].unique().tolist()) if "segment_name" in table else [],
        "files": {k: {"file": paths[k].name, "sha256": _file_sha256(paths[k])} for k in ("csv", "parquet")},
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return paths


# --- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audience-export",
        description="Export a segment or a lookalike audience for activation (CSV + Parquet + manifest), "
                    "from the artifacts of a pipeline run (segments.parquet / lookalike_scores.parquet).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--segment", type=int, help="export the members of this GMM segment (04)")
    what.add_argument("--lookalike", action="store_true",
                      help="export the best-ranked lookalikes of notebook 08's seed")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--top-share", type=float, help="lookalikes: share of candidates (e.g. 0.05)")
    size.add_argument("--top", type=int, help="lookalikes: number of users")
    p.add_argument("--name", required=True, help="file stem of the export (letters, digits, _ . -)")
    p.add_argument("--data", default=None, help="pipeline data folder (default $AUDIENCE_DATA_DIR or data/)")
    p.add_argument("--out", default=None, help="output folder (default <data>/exports)")
    p.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE, help="refuse smaller audiences")
    p.add_argument("--hash-ids", action="store_true", help="write SHA-256 of the ids instead of raw ids")
    p.add_argument("--salt-env", default=SALT_ENV,
                   help=f"environment variable holding the hash salt (default {SALT_ENV}; unset: no salt)")
    p.add_argument("--seed", type=int, default=None, help="seed of the run, recorded in the manifest")
    p.add_argument("--created-at", default=None, help="manifest timestamp (default: now, UTC)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same name")
    return p


def segment_audience(segments: pd.DataFrame, segment: int,
                     churn_risk: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """An exportable frame of one segment's members and its definition.

    ``segments`` is ``segments.parquet`` (``user_id``, ``segment``, ``segment_name``, ``prob_<k>``); the
    score is the posterior probability of the segment when ``prob_<segment>`` exists. ``churn_risk``
    (``user_id``, ``churn_prob_90d``) adds the churn column;
    users it does not cover make it raise: an export never carries invented values.
    """
    missing = {"user_id", "segment", "segment_name"} - set(segments.columns)
    if missing:
        raise ValueError(f"segments frame lacks columns {sorted(missing)}; expected segments.parquet (04)")
    rows = (segments["segment"] == segment).to_numpy()
    if not rows.any():
        raise ValueError(f"segment {segment} has no members; segments present: "
                         f"{sorted(segments['segment'].unique().tolist())}")
    aud = segments.loc[rows, ["user_id", "segment_name"]].reset_index(drop=True)
    how = ""
    if f"prob_{segment}" in segments:
        aud["score"] = segments.loc[rows, f"prob_{segment}"].to_numpy(float)
        how = "; score = posterior probability of the segment"
    if churn_risk is not None:
        p = aud["user_id"].astype(str).map(churn_risk.set_index(churn_risk["user_id"].astype(str))["churn_prob_90d"])
        if p.isna().any():
            raise ValueError(f"churn_risk lacks {int(p.isna().sum())} of the segment's users "
                             f"(e.g. {aud.loc[p.isna(), 'user_id'].iloc[0]!r}); rerun 06_churn on this panel")
        aud["churn_prob_90d"] = p.astype(float).to_numpy()
    return aud, f"members of GMM segment {segment} ({aud['segment_name'].iloc[0]}){how}"


def _lookalike_audience(processed: Path, top: int | None, share: float | None) -> tuple[pd.DataFrame, str]:
    from .artifacts import LOOKALIKE_SCORES, MissingArtifact
    from .lookalike import lookalike_audience

    f = processed / LOOKALIKE_SCORES
    if not f.exists():
        raise MissingArtifact(f"{f} does not exist: it is written by notebook 08_lookalike_activation")
    scores = pd.read_parquet(f)
    if top is None and share is None:
        share = 0.05
    aud = lookalike_audience(scores, size=top, share=share)
    how = f"top {top} users" if top is not None else f"top {share:.1%} of candidates"
    return aud, (f"{how} by lookalike propensity to the seed '{scores['audience'].iloc[0]}' "
                 "(score = calibrated P(labelled | x))")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``audience-export``: returns 0 on success; prints the paths written.

    Exits with status 2 and a one-line message when the export is refused (too small, bad input,
    missing artifact).
    """
    from .artifacts import CHURN_RISK, MissingArtifact, load_segments, load_unified
    from .paths import resolve

    parser = _parser()
    a = parser.parse_args(argv)
    if not a.lookalike and (a.top is not None or a.top_share is not None):
        parser.error("--top/--top-share apply to --lookalike only")
    P = resolve(a.data, None)
    churn_file = P.processed / CHURN_RISK
    churn = pd.read_parquet(churn_file) if churn_file.exists() else None
    salt = os.environ.get(a.salt_env) if a.hash_ids else None
    try:
        if a.lookalike:
            aud, definition = _lookalike_audience(P.processed, a.top, a.top_share)
        else:
            aud, definition = segment_audience(load_segments(P), a.segment, churn)
        version = panel_version(load_unified(P))
        paths = export_audience(aud, a.out or P.exports, a.name, definition=definition,
                                min_size=a.min_size, hash_ids=a.hash_ids, salt=salt,
                                panel_version=version, seed=a.seed, created_at=a.created_at,
                                overwrite=a.overwrite)
    except (ValueError, MissingArtifact, FileExistsError) as e:
        parser.exit(2, f"audience-export: error: {e}\n")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
