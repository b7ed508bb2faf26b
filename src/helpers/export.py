"""Activation export: write an audience (segment, lookalikes, outcome, ids, query) as CSV + Parquet + a manifest.

:func:`export_audience` is a pure library function (used by notebook 08, the ``audience-export`` command
line and the web explorer): it validates the audience, enforces the privacy guard and returns the paths it
wrote. Audiences are chosen by :func:`helpers.audience.select` (the one selector). Nothing in the files
depends on the wall clock; only the manifest's ``created_at`` does.

**Identifiers are hashed by default** (CLI, Explorer and library alike) with a keyed hash:
``user_id_hmac = HMAC-SHA256(key, user_id)``. The key is per installation: ``$AUDIENCE_EXPORT_KEY`` when
set, else the file ``<data>/.secrets/export_key`` (created on first use with 32 random bytes, mode 0600,
outside the export folder). Without the key nobody can recompute the hashes from guessed ids (unsalted
SHA-256 of a ``U00000001`` pattern is reversed in milliseconds); with it the same id always gets the same
hash, so exports stay joinable with each other. The manifest records the method and where the key came
from, never the key. Raw ids only on request (``hash_ids=False``, CLI ``--raw-ids``).

**Field policy** (what an exported row may carry):

========================  ==========================================================================
field                     rule
========================  ==========================================================================
``user_id_hmac``          always (or ``user_id`` with ``--raw-ids``)
``score``                 a model score (an opaque number, no attribute value)
``churn_prob_90d``        the 1st-party churn model's score
``reason_codes``          plain-language 1st-party traits only (:func:`helpers.lookalike.reason_codes`
                          leaves 2nd/3rd-party features out)
``segment_name``          a label: neutral (``"segment 3"``, an outcome's configured label) by default;
                          persona names are built from profile attributes, some 3rd-party, so they
                          travel only when the configuration allows 3rd-party-derived fields
anything else             refused (:class:`DisallowedColumn`); raw 2nd/3rd-party attributes never leave
========================  ==========================================================================

"Allowed by the configuration" means ``export: {allow_third_party: true}`` in the run configuration.

Command line (``audience-export --help`` or ``python -m helpers.export --help``)::

    audience-export --segment 3 --name segment_3
    audience-export --lookalike --top-share 0.05 --name seed_lookalikes --min-size 500
    audience-export --outcome Churn --value Yes --name churners
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

#: The only columns an activation file may carry (besides the identifier, which is hashed by default).
ALLOWED_COLUMNS = ("user_id", "segment_name", "score", "reason_codes", "churn_prob_90d")
#: Columns whose content may be derived from 3rd-party attributes: exported only when allowed.
THIRD_PARTY_DERIVED = ("segment_name",)
#: Default minimum audience size: smaller audiences could single people out.
DEFAULT_MIN_SIZE = 100
HASHED_ID = "user_id_hmac"
HASH_METHOD = "hmac-sha256"
#: environment variable holding the export key (any text of at least 16 characters)
KEY_ENV = "AUDIENCE_EXPORT_KEY"
#: kept for callers that pass ``salt=os.environ.get(SALT_ENV)``: the same variable, used as the HMAC key
SALT_ENV = KEY_ENV
#: the per-installation key file, relative to the run's data folder (never inside ``exports/``)
KEY_FILE = Path(".secrets") / "export_key"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class AudienceTooSmall(ValueError):
    """The audience is below the minimum exportable size (privacy guard)."""


class DisallowedColumn(ValueError):
    """The audience frame carries a column that may not be exported (e.g. a 3rd-party attribute)."""


def key_path(data_dir: str | os.PathLike) -> Path:
    """The per-installation key file of a run's data folder: ``<data>/.secrets/export_key``."""
    return Path(data_dir) / KEY_FILE


def _data_dir_of(out_dir: Path) -> Path:
    """The data folder an export folder belongs to: the parent of the nearest ``exports`` ancestor, else
    the export folder's parent (so the key is never written inside the export folder)."""
    out = Path(out_dir).resolve()
    for p in (out, *out.parents):
        if p.name == "exports":
            return p.parent
    return out.parent


def export_key(key_file: str | os.PathLike | None = None, *, create: bool = True) -> tuple[bytes, str]:
    """The HMAC key and where it came from (``"$AUDIENCE_EXPORT_KEY"`` or ``"key file <path>"``).

    ``$AUDIENCE_EXPORT_KEY`` wins when set (at least 16 characters). Otherwise ``key_file`` is read, or
    created on first use (32 random bytes as hex, mode 0600, its folder 0700). A key file that other
    users can read is refused: ``chmod 600`` it.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        if len(env) < 16:
            raise ValueError(f"${KEY_ENV} is {len(env)} characters long: use at least 16 random characters "
                             "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
        return env.encode("utf-8"), f"${KEY_ENV}"
    if key_file is None:
        raise ValueError(f"no export key: set ${KEY_ENV} or give the key file (<data>/{KEY_FILE})")
    f = Path(key_file)
    if not f.exists():
        if not create:
            raise ValueError(f"the export key file {f} does not exist")
        f.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(f.parent, 0o700)
        try:
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created concurrently: read it below
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(f.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"the export key file {f} is readable by other users (mode {mode:o}); "
                         f"run: chmod 600 {f}")
    key = f.read_text(encoding="utf-8").strip()
    if len(key) < 16:
        raise ValueError(f"the export key file {f} holds {len(key)} characters; delete it to create a new key "
                         "(earlier exports then no longer match new ones)")
    return key.encode("utf-8"), f"key file {f}"


def hmac_ids(user_ids: pd.Series, key: bytes) -> pd.Series:
    """Hex HMAC-SHA256 of each identifier under ``key`` (no key, no way back from a guessed id)."""
    if not key:
        raise ValueError("an empty key would make the hashes reversible")
    return pd.Series([hmac.new(key, str(u).encode("utf-8"), hashlib.sha256).hexdigest() for u in user_ids],
                     index=user_ids.index, name=HASHED_ID, dtype="string")


def key_id(key: bytes) -> str:
    """A fingerprint of the key (HMAC of a fixed text, 12 hex characters): tells whether two exports used
    the same key without revealing it."""
    return hmac.new(key, b"audience-export key id", hashlib.sha256).hexdigest()[:12]


def check_created_at(value: str | None) -> str | None:
    """``value`` if it is an ISO 8601 date or date-time (``2026-01-01``, ``2026-01-01T00:00:00+00:00``)."""
    if value is None:
        return None
    text = str(value).strip()
    if not _ISO.match(text):
        raise ValueError(f"created_at {str(value)[:40]!r} is not an ISO 8601 date or date-time "
                         "(e.g. 2026-01-01 or 2026-01-01T00:00:00+00:00)")
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"created_at {text!r} is not a valid date or time") from None
    return text


def check_name(name: Any) -> str:
    """An export file stem: 1-100 letters, digits, ``_ . -`` starting with a letter or digit (no path
    separator, no newline or other control character)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"export name {str(name)[:60]!r} is not allowed: use 1-100 letters, digits, '_', '.', "
                         "'-' starting with a letter or digit (no '/', '\\', spaces or line breaks)")
    return name


def allow_third_party(config: Any = None) -> bool:
    """Whether the run configuration allows 3rd-party-derived fields in exports
    (``export: {allow_third_party: true}``, :class:`helpers.config.Export`; default False)."""
    return _config_allows(config)


def _config_allows(config: Any = None) -> bool:
    # a separate name: export_audience's parameter ``allow_third_party`` shadows the public function
    from .audience import load_config

    cfg = load_config(config)
    return bool(getattr(getattr(cfg, "export", None), "allow_third_party", False))


def _policy(allow: bool | None, config: Any) -> bool:
    """The field policy in force: an explicit ``allow`` wins, ``None`` follows the run configuration."""
    return _config_allows(config) if allow is None else bool(allow)


def panel_version(df: pd.DataFrame, paths: Any = None) -> str:
    """Content hash of the unified table the audience was built from (16 hex characters).

    The 22-column dictionary's columns when the table has them all (the same value ingestion records),
    else every column, in order (a user's own table).

    ``paths`` (the run's folders): the panel version ingestion recorded (``processed/ingest_meta.json``,
    :func:`recorded_panel_version`) when it describes ``df``; ingestion computed it from the same columns
    while writing the table, so the table is not hashed again (10 s at 1M users on 2 cores). Without
    ``paths``, or when nothing matching was recorded, the table is hashed.
    """
    if paths is not None:
        recorded = recorded_panel_version(paths, df)
        if recorded is not None:
            return recorded
    from . import schema as S

    if set(S.COLUMN_NAMES) <= set(df.columns):
        from .ingest import table_fingerprint

        return table_fingerprint(df)
    h = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def recorded_panel_version(paths: Any, df: pd.DataFrame | None = None) -> str | None:
    """The panel version ingestion (01) recorded in ``processed/ingest_meta.json``, or None.

    None when the file is absent, stale (an older run's: :class:`helpers.artifacts.StaleArtifact`) or has
    no 16-hex ``panel_version`` (e.g. the Explorer's demo run), and, given ``df``, when the record does not
    describe it: another number of rows (``n_users``) or a recorded column ``df`` lacks. Ingestion writes
    the unified table and this record in the same stage, and hashes the table's dictionary columns when it
    has them all, else its columns as written -- what :func:`panel_version` hashes (a column a notebook
    adds, such as ``user_id`` beside a configured id, is not part of the panel).
    """
    from . import artifacts

    try:
        meta = artifacts.load(paths, "ingest_meta")
    except artifacts.MissingArtifact:  # absent or stale (StaleArtifact): not this table's record
        return None
    version = meta.get("panel_version") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not re.fullmatch(r"[0-9a-f]{16}", version):
        return None
    if df is not None:
        columns = meta.get("columns")
        if meta.get("n_users") != len(df) or not isinstance(columns, list) or not set(columns) <= set(df.columns):
            return None
    return version


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _restricted_columns(config: Any = None) -> set[str]:
    """2nd/3rd-party attribute columns of the configuration (and of the 22-column dictionary)."""
    from . import schema as S
    from .audience import load_config

    cols = set(S.THIRD_PARTY) | set(S.SECOND_PARTY)
    cfg = load_config(config)
    for a in getattr(cfg, "attributes", None) or []:
        if a.party in ("2nd", "3rd"):
            cols.add(a.name)
    return cols


def validate_audience(audience: pd.DataFrame, min_size: int = DEFAULT_MIN_SIZE, *,
                      allow_third_party: bool | None = None, third_party_fields: Sequence[str] = (),
                      config: Any = None) -> pd.DataFrame:
    """Check an audience frame against the export contract and return it in canonical form.

    Canonical form: allowed columns in :data:`ALLOWED_COLUMNS` order, ``user_id`` as string, rows sorted
    by descending ``score`` (when present) then ``user_id``, so the same audience gives the same bytes.
    ``third_party_fields``: columns of this frame whose content derives from 2nd/3rd-party attributes
    (e.g. a persona ``segment_name``); refused unless ``allow_third_party`` (``None``: the run
    configuration's ``export.allow_third_party``, false by default).

    Raises
    ------
    DisallowedColumn
        A column outside :data:`ALLOWED_COLUMNS` (2nd/3rd-party attributes are named as such), or a
        3rd-party-derived field the policy does not allow.
    AudienceTooSmall
        Fewer than ``min_size`` distinct users.
    ValueError
        Missing/duplicate ``user_id``, non-numeric or non-finite ``score``/``churn_prob_90d``.
    """
    if not isinstance(audience, pd.DataFrame):
        raise TypeError(f"audience must be a pandas DataFrame, got {type(audience).__name__}")
    extra = [c for c in audience.columns if c not in ALLOWED_COLUMNS]
    if extra:
        third = [c for c in extra if c in _restricted_columns(config)]
        why = (f"; {third} are 2nd/3rd-party attributes, which are never exported" if third else "")
        raise DisallowedColumn(f"columns {extra} may not be exported{why}. Allowed columns: "
                               f"{list(ALLOWED_COLUMNS)}; drop the others before exporting.")
    derived = [c for c in third_party_fields if c in audience.columns]
    if derived and not _policy(allow_third_party, config):
        raise DisallowedColumn(
            f"columns {derived} are derived from 2nd/3rd-party attributes (e.g. persona names built from "
            "enrichment traits) and the export policy does not allow them; use a neutral label "
            "(helpers.audience.select does by default) or allow them in the run configuration "
            "(export: {allow_third_party: true})")
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


def export_audience(audience: Any, out_dir: str | os.PathLike, name: str, *,
                    definition: str | Mapping[str, object] | None = None, min_size: int = DEFAULT_MIN_SIZE,
                    hash_ids: bool = True, salt: str | None = None, key_file: str | os.PathLike | None = None,
                    panel_version: str | None = None, seed: int | None = None, created_at: str | None = None,
                    overwrite: bool = False, allow_third_party: bool | None = None,
                    third_party_fields: Sequence[str] = (), config: Any = None) -> dict[str, Path]:
    """Write an audience ready for activation: ``<name>.csv``, ``<name>.parquet``, ``<name>.manifest.json``.

    Parameters
    ----------
    audience : pandas.DataFrame or helpers.audience.Audience
        One row per user: ``user_id`` and any of ``segment_name``, ``score``, ``reason_codes``,
        ``churn_prob_90d`` -- nothing else (:data:`ALLOWED_COLUMNS`; enforced). An ``Audience`` brings
        its frame and definition.
    out_dir : path
        Folder to write into (created if needed).
    name : str
        File stem (:func:`check_name`), so a web form cannot write elsewhere.
    definition : str or mapping
        How the audience was built (recorded in the manifest).
    min_size : int
        Refuse (:class:`AudienceTooSmall`) audiences with fewer users. Default 100.
    hash_ids : bool, default True
        Replace ``user_id`` by ``user_id_hmac`` = HMAC-SHA256(key, ``user_id``).
    salt : str, optional
        The key as text (e.g. ``$AUDIENCE_EXPORT_KEY`` read by a caller); default :func:`export_key`.
    key_file : path, optional
        The per-installation key file; default ``<data>/.secrets/export_key`` of the data folder
        ``out_dir`` belongs to.
    panel_version : str, optional
        Content hash of the unified table (:func:`panel_version`), recorded in the manifest.
    seed : int, optional
        Random seed of the run that built the audience, recorded in the manifest.
    created_at : str, optional
        ISO 8601 date/time for the manifest (checked); default the current UTC time. It is the only
        wall-clock value: the CSV and Parquet bytes, and every number in the manifest, depend on the
        inputs alone.
    overwrite : bool
        Replace existing files of the same name (default: refuse with :class:`FileExistsError`).
    allow_third_party, third_party_fields, config
        The field policy (:func:`validate_audience`); ``allow_third_party=None`` (default) follows the run
        configuration's ``export.allow_third_party`` (false in the shipped presets).

    Returns
    -------
    dict
        ``{"csv": Path, "parquet": Path, "manifest": Path}``.
    """
    check_name(name)
    created_at = check_created_at(created_at)
    if hasattr(audience, "frame") and hasattr(audience, "definition"):
        definition = audience.definition if definition is None else definition
        audience = audience.frame
    if definition is None:
        raise ValueError("give the audience's definition (how it was built), recorded in the manifest")
    if salt is not None and not hash_ids:
        raise ValueError("a key only makes sense with hash_ids=True")
    allowed = _policy(allow_third_party, config)
    table = validate_audience(audience, min_size, allow_third_party=allowed,
                              third_party_fields=third_party_fields, config=config)
    out = Path(out_dir)
    hashing: dict[str, object] = {"method": "none (raw ids requested)"}
    if hash_ids:
        if salt:
            key, source = salt.encode("utf-8"), f"${KEY_ENV} (passed by the caller)"
        else:
            key, source = export_key(key_file if key_file is not None else key_path(_data_dir_of(out)))
        table.insert(0, HASHED_ID, hmac_ids(table["user_id"], key))
        table = table.drop(columns="user_id")
        hashing = {"method": HASH_METHOD, "key_source": source, "key_id": key_id(key),
                   "note": "keyed hash: the key is never written to an export; the same key gives the same "
                           "hash for the same id across exports"}
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
        "id_hashing": HASH_METHOD if hash_ids else "none",
        "id_hashing_detail": hashing,
        "field_policy": {"allowed_columns": list(ALLOWED_COLUMNS),
                         "third_party_derived_fields": "allowed by the configuration" if allowed
                         else "not exported (neutral labels; 1st-party reason codes)"},
        "columns": list(table.columns),
        "min_size": int(min_size),
        "segment_names": sorted(table["segment_name"].unique().tolist()) if "segment_name" in table else [],
        "files": {k: {"file": paths[k].name, "sha256": _file_sha256(paths[k])} for k in ("csv", "parquet")},
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return paths


# --- audiences the Explorer and older callers ask for by name --------------------------------------------
def segment_audience(segments: pd.DataFrame, segment: int, churn_risk: pd.DataFrame | None = None,
                     allow_third_party: bool | None = None, config: Any = None) -> tuple[pd.DataFrame, str]:
    """An exportable frame of one segment's members and its definition: a thin call of
    :func:`helpers.audience.select` (kind ``segment``; neutral label unless ``allow_third_party``, which
    ``None`` takes from the run configuration's ``export.allow_third_party``).

    Churned users are not removed here (the caller passes no unified table); ``audience-export`` and
    notebook 08 call the selector with the table, which drops them.
    """
    from .audience import select

    aud = select(None, "segment", segments=segments, segment=segment, churn_risk=churn_risk,
                 include_churned=True, allow_third_party=_policy(allow_third_party, config), config=config)
    if churn_risk is not None and "churn_prob_90d" not in aud.frame:
        raise ValueError("churn_risk lacks some of the segment's users; rerun 06_churn on this panel")
    d = aud.definition
    how = "; score = posterior probability of the segment" if "score" in aud.frame else ""
    return aud.frame, f"members of GMM segment {d['segment']} (exported label '{aud.frame['segment_name'].iloc[0]}'){how}"


# --- command line ---------------------------------------------------------------------------------
def _share(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share such as 0.05") from None
    if not math.isfinite(q) or not 0 < q <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite share in (0, 1], e.g. 0.05")
    return q


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of users") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return n


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _iso(text: str) -> str:
    try:
        return check_created_at(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audience-export",
        description="Export an audience for activation (CSV + Parquet + manifest) from the artifacts of a "
                    "pipeline run. Ids are hashed with HMAC-SHA256 under the installation's key "
                    f"(${KEY_ENV}, else <data>/{KEY_FILE}, created on first use); already-churned users "
                    "are left out unless --include-churned.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--segment", type=int, help="the members of this GMM segment (04)")
    what.add_argument("--lookalike", action="store_true", help="the best-ranked lookalikes of notebook 08's seed")
    what.add_argument("--outcome", metavar="COLUMN", help="users whose outcome COLUMN equals --value")
    what.add_argument("--ids", metavar="FILE", help="the users listed in FILE (one id per line, or a CSV)")
    what.add_argument("--query", help="a filter such as \"state == 'CA' and household_size >= 3\"")
    p.add_argument("--value", help="--outcome: the value meaning 'yes' (e.g. Yes, true, 1)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--top-share", type=_share, help="lookalikes: share of candidates in (0, 1] (e.g. 0.05)")
    size.add_argument("--top", type=_count, help="lookalikes: number of users")
    p.add_argument("--name", required=True, type=_name, help="file stem of the export (letters, digits, _ . -)")
    p.add_argument("--data", default=None, help="pipeline data folder (default $AUDIENCE_DATA_DIR or data/); "
                                                "must exist")
    p.add_argument("--config", default=None, help="run configuration (default $AUDIENCE_CONFIG or the shipped one)")
    p.add_argument("--out", default=None, help="output folder (default <data>/exports)")
    p.add_argument("--min-size", type=_count, default=DEFAULT_MIN_SIZE, help="refuse smaller audiences")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument("--hash-ids", action="store_true", default=True,
                     help="write HMAC-SHA256 of the ids (the default)")
    ids.add_argument("--raw-ids", action="store_true", help="write raw ids instead (only if your policy allows)")
    p.add_argument("--include-churned", action="store_true", help="keep users who already churned")
    p.add_argument("--seed", type=int, default=None, help="seed of the run, recorded in the manifest")
    p.add_argument("--created-at", type=_iso, default=None,
                   help="manifest timestamp, ISO 8601 (default: now, UTC)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``audience-export``: returns 0 on success; prints the paths written.

    Exits with status 2 and a one-line message when the export is refused (too small, bad input,
    missing artifact or folder).
    """
    from .artifacts import CHURN_RISK, MissingArtifact, load_unified
    from .audience import select
    from .paths import Paths

    parser = _parser()
    a = parser.parse_args(argv)
    if not a.lookalike and (a.top is not None or a.top_share is not None):
        parser.error("--top/--top-share apply to --lookalike only")
    if (a.outcome is None) != (a.value is None):
        parser.error("--outcome and --value go together")
    data = Path(a.data or os.environ.get("AUDIENCE_DATA_DIR") or Path(__file__).resolve().parents[2] / "data")
    if not data.is_dir():
        parser.exit(2, f"audience-export: error: the data folder {data} does not exist; run the pipeline "
                       "first (make reports) or pass --data <the run's data folder>\n")
    P = Paths(data.resolve(), data.resolve().parent / "reports")  # nothing is created
    try:
        churn_file = P.processed / CHURN_RISK
        churn = pd.read_parquet(churn_file) if churn_file.exists() else None
        frame = load_unified(P)
        allowed = allow_third_party(a.config)
        common = dict(frame=frame, config=a.config, include_churned=a.include_churned,
                      allow_third_party=allowed, churn_risk=churn)
        if a.lookalike:
            aud = select(P, "lookalike", top=a.top, top_share=a.top_share, **common)
        elif a.segment is not None:
            aud = select(P, "segment", segment=a.segment, **common)
        elif a.outcome is not None:
            aud = select(P, "outcome", column=a.outcome, value=a.value, **common)
        elif a.ids is not None:
            aud = select(P, "ids", path=a.ids, **common)
        else:
            aud = select(P, "query", query=a.query, **common)
        paths = export_audience(aud, a.out or P.exports, a.name, min_size=a.min_size, hash_ids=not a.raw_ids,
                                key_file=key_path(P.data), panel_version=panel_version(frame, P), seed=a.seed,
                                created_at=a.created_at, overwrite=a.overwrite, allow_third_party=allowed,
                                config=a.config)
    except (ValueError, MissingArtifact, FileExistsError) as e:
        parser.exit(2, f"audience-export: error: {e}\n")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
