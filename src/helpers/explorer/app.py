"""Flask app factory of the Audience Affinity Explorer: routes, input validation, export registry.

The app serves one page (``templates/index.html`` with ``static/explorer.js``) and a small JSON API
whose payloads come from :mod:`helpers.explorer.data` (which reads the run's artifacts and fits no model).
Every script is served locally: plotly.js from the installed ``plotly`` Python package, the app's own JS/CSS
from ``static/``; nothing is loaded from the network. HTTP hardening is :mod:`helpers.explorer.http`.

Browser input is validated: unknown parameters, malformed or out-of-range values and unknown segments
get a 4xx JSON ``{"error": message}``; unexpected failures get a 500 JSON without a traceback (the
traceback goes to the server log). Exports go through :func:`helpers.export.export_audience` (the
function behind the command line) with its minimum-size guard and manifest; the download endpoint
serves only files the running app created, looked up by an opaque export id, never by a path.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from flask import Flask, jsonify, render_template, request, send_file
from threadpoolctl import threadpool_limits
from werkzeug.exceptions import HTTPException

from .. import artifacts as artifacts_mod
from .. import paths as paths_mod
from . import data as D
from .http import (LOOPBACK_HOSTS, MAX_BODY_BYTES, MAX_JSON_DEPTH, SECURITY_HEADERS, SERVER_NAME,  # noqa: F401
                   host_allowed, json_depth, make_server)

log = logging.getLogger(__name__)

EXPORT_KINDS = ("segment", "lookalike", "list")
#: Audience references the views take: ``segment:3``, ``lookalike:500`` (the lookalike stage's 500 best
#: candidates), ``list:<id>`` (an uploaded list of customer ids).
_AUDIENCE = re.compile(r"^(segment:\d{1,4}|lookalike:\d{1,9}|list:[0-9a-f]{16})$")
MAX_UPLOAD_IDS = 1_000_000
_EXPORT_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_PARAM_CHARS = 64
class ApiError(Exception):
    """An error the browser caused: sent as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def plotly_js_path() -> Path:
    """Location of ``plotly.min.js`` inside the installed ``plotly`` package (served offline)."""
    f = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    p = Path(str(f))
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: reinstall the 'plotly' package (pip install plotly)")
    return p


@dataclass
class ExportRecord:
    """Files one export created (absolute paths under the run's exports folder) and its manifest."""

    files: dict[str, Path]
    manifest: dict


@dataclass
class ExplorerState:
    """Per-app state: the run's folders, the loaded data, uploaded lists and the export registry."""

    paths: paths_mod.Paths
    min_export_size: int | None = None
    seed: int = 0
    n_threads: int | None = None
    data: D.ExplorerData | None = None
    exports: dict[str, ExportRecord] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)            # list id -> {"name", "rows", "n_given"}
    config_path: Any = None
    media_data: Any = None
    lock: threading.RLock = field(default_factory=threading.RLock)       # data and export registry
    plan_lock: threading.Lock = field(default_factory=threading.Lock)   # one media plan at a time
    media_lock: threading.Lock = field(default_factory=threading.Lock)  # the media tables, read once

    def load(self) -> D.ExplorerData:
        """The run's data, loaded on first use (so the app picks up artifacts created after it started)."""
        with self.lock:
            if self.data is None:
                self.data = D.load_explorer_data(self.paths, self.config_path)
            return self.data

    def add_list(self, name: str, rows: np.ndarray, n_given: int) -> str:
        """Register an audience (rows of the panel) as a list the other views and the exporter take."""
        list_id = secrets.token_hex(8)
        with self.lock:
            self.uploads[list_id] = {"name": name, "rows": rows, "n_given": int(n_given),
                                     "ids": self.load().panel["user_id"].to_numpy()[rows]}
        return list_id

    def media(self, media_data) -> Any:
        """The run's media tables (:func:`helpers.media.data.load_media`), read once: each plan reuses them
        and the exposure cells computed on them."""
        with self.media_lock:
            if self.media_data is None:
                self.media_data = _call(media_data.load_media, self.paths)
            return self.media_data

    def threads(self):
        """A cap on the BLAS / OpenMP threads of a request (``n_threads``), else no cap."""
        return threadpool_limits(self.n_threads) if self.n_threads else contextlib.nullcontext()


def _params(allowed: Mapping[str, bool], source: Mapping[str, Any]) -> dict[str, str]:
    """Validated request parameters: ``allowed`` maps name -> required; unknown or too long -> 400."""
    unknown = sorted(set(source) - set(allowed))
    if unknown:
        raise ApiError(f"unknown parameter(s) {unknown[:5]}; allowed: {sorted(allowed)}")
    out = {}
    for name, required in allowed.items():
        v = source.get(name)
        if v is None or (isinstance(v, str) and v.strip() == ""):
            if required:
                raise ApiError(f"missing parameter {name!r}")
            continue
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise ApiError(f"parameter {name!r} must be a string or an integer, got {type(v).__name__}")
        v = str(v)
        if len(v) > MAX_PARAM_CHARS:
            raise ApiError(f"parameter {name!r} is longer than {MAX_PARAM_CHARS} characters")
        out[name] = v
    return out


def _json_body() -> Any:
    """The request's JSON body, or None when it is not JSON; a body nested deeper than
    :data:`MAX_JSON_DEPTH` is a 400 (never a RecursionError)."""
    raw = request.get_data(cache=True)
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels; send one flat object")
    try:
        return request.get_json(silent=True)
    except RecursionError:  # pragma: no cover - the depth check above comes first
        raise ApiError("the JSON body is nested too deeply") from None


def _call(fn: Callable, *args, **kwargs):
    """Run a data function, turning its input errors into API errors (400 bad value, 404 unknown segment,
    503 missing artifacts)."""
    try:
        return fn(*args, **kwargs)
    except artifacts_mod.MissingArtifact as e:  # missing or stale (StaleArtifact is a MissingArtifact)
        raise ApiError(str(e), 503) from None
    except D.UnknownSegment as e:
        raise ApiError(str(e), 404) from None
    except ValueError as e:
        raise ApiError(str(e), 400) from None


def create_app(data_dir: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
               min_export_size: int | None = None, seed: int = 0,
               n_threads: int | None = None, allowed_hosts: Sequence[str] | None = None,
               config_path: str | os.PathLike | None = None) -> Flask:
    """Build the Explorer for the pipeline run in ``data_dir`` / ``reports_dir``.

    Parameters
    ----------
    data_dir, reports_dir : path, optional
        The run's folders (``None``: ``$AUDIENCE_DATA_DIR`` / ``$AUDIENCE_REPORTS_DIR`` or the repository's
        ``data/`` and ``reports/``, see :func:`helpers.paths.resolve`).
    min_export_size : int, optional
        Minimum audience size of an export; ``None`` uses the export function's default guard.
    seed : int
        Seed of the media plan's uncertainty draws, recorded in export manifests: same seed, same answers.
    n_threads : int, optional
        Cap on the BLAS / OpenMP threads of a media plan (None: the libraries' default, all cores).
    allowed_hosts : sequence of str, optional
        Host names the app answers to (the ``Host`` header, port ignored); others get 400 (DNS rebinding).
        Default: the loopback names (``127.0.0.1``, ``localhost``, ``::1``); ``python -m helpers.explorer``
        adds the host it binds.
    config_path : path, optional
        The run configuration whose labels and units the views show (default: the one ingestion recorded,
        else ``$AUDIENCE_CONFIG`` or the shipped default).
    """
    P = paths_mod.resolve(data_dir, reports_dir)
    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    hosts = {h.strip().lower() for h in (allowed_hosts or ()) if h and h.strip()} | set(LOOPBACK_HOSTS)
    if any(h in ("0.0.0.0", "::", "*") for h in hosts):
        raise ValueError("allowed_hosts names the host names clients use (e.g. 'explorer.local'), not a "
                         "wildcard or 0.0.0.0")
    app.config["EXPLORER_ALLOWED_HOSTS"] = sorted(hosts)
    if n_threads is not None and n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads}")
    state = ExplorerState(P, min_export_size, seed, n_threads=n_threads, config_path=config_path)
    app.extensions["explorer"] = state

    @app.before_request
    def _check_host():
        if not host_allowed(request.headers.get("Host"), hosts):
            raise ApiError("this server answers only to " + ", ".join(sorted(hosts)) +
                           " (Host header refused: protection against DNS rebinding)", 400)

    @app.after_request
    def _headers(resp):
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        resp.headers["Server"] = SERVER_NAME
        return resp

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return jsonify(error=e.message), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=f"{e.name}: {e.description}"), e.code
        return e

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unexpected error on %s", request.path)
        return jsonify(error="internal error while handling the request; the server log has the details"), 500

    @app.get("/")
    def index():
        try:
            data = state.load()
        except (artifacts_mod.MissingArtifact, ValueError) as e:  # missing, stale or inconsistent run
            return render_template("missing.html", artifacts=D.artifact_status(P), message=str(e),
                                   make_target=D.MAKE_TARGET, stale=D.stale_artifacts(P)), 503
        return render_template("index.html", overview=D.overview(data), header=D.header_facts(data),
                               tiers={"low": D.TIER_LOW, "high": D.TIER_HIGH})

    @app.get("/vendor/plotly.min.js")
    def plotly_js():
        return send_file(plotly_js_path(), mimetype="application/javascript", max_age=3600)

    @app.get("/api/status")
    def status():
        _params({}, request.args)
        arts = D.artifact_status(P)
        ready = all(a["present"] for a in arts if a["required"])
        return jsonify(ready=ready, artifacts=arts, make_target=D.MAKE_TARGET)

    def no_parameter_view(fn: Callable[[D.ExplorerData], dict]) -> Callable[[], Any]:
        """A GET view without parameters answering ``fn(data)``."""
        def view():
            _params({}, request.args)
            return jsonify(_call(lambda: fn(state.load())))
        return view

    for url, name, fn in (("/api/overview", "overview", D.overview), ("/api/segments", "segments", D.segment_map),
                          ("/api/table", "table", D.segment_table), ("/api/similarity", "similarity", D.similarity),
                          ("/api/questions/options", "question_options", D.question_options)):
        app.add_url_rule(url, name, no_parameter_view(fn), methods=["GET"])

    @app.get("/api/segments/<segment>")
    def persona(segment: str):
        _params({}, request.args)
        if len(segment) > MAX_PARAM_CHARS:
            raise ApiError("segment label is too long")
        return jsonify(_call(lambda: D.persona_card(state.load(), segment)))

    @app.get("/api/affinity")
    def affinity():
        p = _params({"view": False, "index_type": False}, request.args)
        return jsonify(_call(lambda: D.affinity_heatmap(state.load(), p.get("view", D.CHANNELS),
                                                         p.get("index_type"))))

    def resolve(ref: str) -> tuple[np.ndarray, str]:
        """Row positions and plain name of an audience reference (see :data:`_AUDIENCE`)."""
        if not isinstance(ref, str) or not _AUDIENCE.match(ref.strip()):
            raise ApiError(f"audience must look like 'segment:3', 'lookalike:500' or 'list:<id>', got "
                           f"{str(ref)[:40]!r}")
        data = _call(state.load)
        parts = ref.strip().split(":")
        if parts[0] == "segment":
            seg = _call(D.check_segment, data, parts[1])
            return np.flatnonzero(data.panel["segment"].to_numpy() == seg), data.segment_names()[seg]
        if parts[0] == "lookalike":
            rows, name, _ = _call(D.stage_lookalike_rows, data, parts[1])
            return rows, name
        rec = state.uploads.get(parts[1])
        if rec is None:
            raise ApiError(f"unknown list {parts[1]}: upload it first", 404)
        return rec["rows"], rec["name"]

    @app.get("/api/plan")
    def plan_view():
        """The media plan of an audience and a budget (helpers.media.plan.plan_for_audience), or 503 saying
        that the media planning stage has not run. No model is fitted here: the curves are 07c's saved
        ``media_response_model`` (per segment), composed by the audience's segment mix
        (helpers.media.budget.model_from_table); only the audience's exposure rates come from the data."""
        p = _params({"audience": True, "budget": True}, request.args)
        try:
            budget = float(p["budget"])
        except ValueError:
            raise ApiError(f"budget must be a number of US dollars, got {p['budget'][:40]!r}") from None
        if not (budget > 0 and budget < 1e10):
            raise ApiError("budget must be a positive number of US dollars below 10 billion")
        try:
            from ..media import data as media_data, plan as media_plan
        except ImportError:
            raise ApiError("the media planning module is not installed in this version", 503) from None
        if not media_data.available(P):
            raise ApiError(f"no media plan yet: {media_data.missing_reason(P)} (the media planning stage "
                           f"07c_media_planning writes its inputs; run `{D.MAKE_TARGET}`)", 503)
        try:
            curves = artifacts_mod.load(P, "media_response_model")
        except artifacts_mod.MissingArtifact as e:
            raise ApiError(f"no media plan yet: the response model of 07c_media_planning is missing or stale: "
                           f"{e}", 503) from None
        from ..media import budget as media_budget

        rows, name = resolve(p["audience"])
        data = _call(state.load)
        ids = data.panel["user_id"].to_numpy()[rows]
        with state.plan_lock, state.threads():
            md = state.media(media_data)
            names = data.segment_names()
            # the segment of the audience's members (the mix of the curves looks up no one else)
            groups = pd.Series(data.panel["segment"].to_numpy()[rows], index=ids).map(names).astype(str)
            model = _call(media_budget.model_from_table, md, ids, curves, groups)
            result = _call(media_plan.plan_for_audience, md, ids, budget_total=budget, audience_name=name,
                           n_draws=100, seed=state.seed, model=model)
        return jsonify(D.jsonable({"audience": name, "budget": budget, **result.as_dict(),
                                   "summary": result.summary()}))

    @app.get("/api/questions")
    def questions_view():
        """Customers talking about a topic or keyword (filters optional): size, profile and regions with
        intervals; the audience becomes a list usable by every view and the exporter."""
        allowed = {"topic": False, "keyword": False, "platform": False, **{c: False for c in D.QUESTION_FILTERS}}
        p = _params(allowed, request.args)
        data = _call(state.load)
        filters = {c: p[c] for c in D.QUESTION_FILTERS if c in p}
        rows, name, definition = _call(D.question_audience, data, p.get("topic"), p.get("keyword"),
                                       p.get("platform"), filters)
        if len(rows) == 0:
            raise ApiError(f"no customer is {name}", 422)
        list_id = state.add_list(name[:MAX_PARAM_CHARS], rows, len(rows))
        prof = _call(D.audience_profile, data, rows, name)
        return jsonify(D.jsonable({**prof, "ref": f"list:{list_id}", "definition": definition,
                                   "regions": D.regions(data, rows)}))

    @app.get("/api/compare")
    def compare_view():
        p = _params({"a": True, "b": True}, request.args)
        ra, na = resolve(p["a"])
        rb, nb = resolve(p["b"])
        return jsonify(_call(D.compare, state.load(), ra, na, rb, nb))

    @app.get("/api/audience")
    def audience_view():
        p = _params({"ref": True}, request.args)
        rows, name = resolve(p["ref"])
        return jsonify(_call(D.audience_profile, state.load(), rows, name))

    @app.post("/api/lists")
    def upload_list():
        """An uploaded list of customer ids (JSON ``{"name": ..., "ids": [...]}`` or text, one per line)."""
        body = _json_body()
        if isinstance(body, dict):
            unknown = sorted(set(body) - {"name", "ids"})
            if unknown:
                raise ApiError(f"unknown field(s) {unknown[:5]}; send {{'name': ..., 'ids': [...]}}")
            ids, name = body.get("ids"), body.get("name") or "uploaded list"
        else:
            text = request.get_data(as_text=True)
            ids, name = [x.strip() for x in text.splitlines() if x.strip()], "uploaded list"
        if not isinstance(ids, list) or not ids or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                            for x in ids):
            raise ApiError("send a non-empty list of customer ids (strings or integers)")
        if len(ids) > MAX_UPLOAD_IDS:
            raise ApiError(f"at most {MAX_UPLOAD_IDS:,} ids per list")
        if not isinstance(name, str) or len(name) > MAX_PARAM_CHARS or not name.strip():
            raise ApiError(f"name must be a text of at most {MAX_PARAM_CHARS} characters")
        data = _call(state.load)
        want = pd.Index(pd.Series(ids).astype(str).str.strip()).unique()
        rows = np.flatnonzero(data.panel["user_id"].isin(want).to_numpy())
        if len(rows) == 0:
            raise ApiError(f"none of the {len(want):,} ids is a customer of this run", 422)
        clean = re.sub(r"[\x00-\x1f<>]", "", name).strip()[:MAX_PARAM_CHARS] or "uploaded list"
        list_id = state.add_list(clean, rows, len(want))
        return jsonify({"ref": f"list:{list_id}", "name": clean, "n_given": int(len(want)),
                        "n_matched": int(len(rows)), "n_unmatched": int(len(want) - len(rows))}), 201

    @app.get("/api/lookalike")
    def lookalike_view():
        """The lookalike stage's audience of ``size`` customers (503 naming the stage when it has not run)."""
        p = _params({"size": True}, request.args)
        return jsonify(_call(D.lookalike_payload, _call(state.load), p["size"]))

    @app.post("/api/export")
    def export():
        body = _json_body()
        if not isinstance(body, dict):
            raise ApiError('send a JSON object like {"kind": "segment", "segment": 0} or '
                           '{"kind": "lookalike", "size": 500}')
        p = _params({"kind": True, "segment": False, "size": False, "list": False}, body)
        kind = p["kind"]
        if kind not in EXPORT_KINDS:
            raise ApiError(f"kind must be one of {list(EXPORT_KINDS)}, got {kind[:40]!r}")
        data = _call(state.load)
        if kind == "list":
            rec = state.uploads.get(p.get("list", ""))
            if rec is None:
                raise ApiError("a list export needs 'list': the id of an uploaded list", 404 if "list" in p else 400)
            from .. import audience as audience_mod

            aud = _call(audience_mod.select, None, "ids", frame=data.panel, ids=list(rec["ids"]),
                        config=data.cfg, id_col="user_id")
            return _write_export(data, aud.frame, aud.definition, D.export_name(rec["name"]), "list", None)
        if kind == "lookalike":  # the lookalike stage's own audience (its scores artifact)
            if "size" not in p or "segment" in p or "list" in p:
                raise ApiError("a lookalike export needs 'size' (number of users) and no 'segment' or 'list': "
                               "it exports the lookalike stage's best candidates")
            audience, definition = _call(D.audience_frame, data, "lookalike", size=p["size"])
            return _write_export(data, audience, definition, "lookalike_stage_audience", kind, state.seed)
        if "segment" not in p:
            raise ApiError("missing parameter 'segment'")
        if "list" in p:
            raise ApiError("'list' applies to list exports only")
        if "size" in p:
            raise ApiError("'size' applies to lookalike exports only; a segment export lists every member")
        seg = _call(D.check_segment, data, p["segment"])
        audience, definition = _call(D.audience_frame, data, "segment", seg)
        # neutral file names: persona names may be built from 3rd-party traits ("renters"), which the export
        # policy keeps out of exported rows -- and so out of the file names that travel with them
        return _write_export(data, audience, definition, D.export_name(f"segment {seg}"), kind, None)

    def _write_export(data, audience, definition, name, kind, seed):
        export_id = secrets.token_hex(8)
        try:
            result = D.export_list(data, audience, definition, P.exports / "explorer" / export_id, name,
                                   min_size=state.min_export_size, seed=seed)
        except ValueError as e:  # AudienceTooSmall, DisallowedColumn: the export function's guard
            raise ApiError(str(e), 422) from None
        root = P.exports.resolve()
        files = {k: Path(v).resolve() for k, v in result["files"].items()}
        if not all(f.is_relative_to(root) and f.is_file() for f in files.values()):
            raise RuntimeError(f"export wrote outside {root} or did not write its files: {files}")
        with state.lock:
            state.exports[export_id] = ExportRecord(files, result["manifest"])
        links = {k: f"/api/exports/{export_id}/{k}" for k in files}
        return jsonify(D.jsonable({"export_id": export_id, "kind": kind, "n_users": len(audience),
                                   "manifest": result["manifest"], "downloads": links})), 201

    @app.get("/api/exports/<export_id>/<part>")
    def download(export_id: str, part: str):
        _params({}, request.args)
        if not _EXPORT_ID.match(export_id):
            raise ApiError("malformed export id", 400)
        rec = state.exports.get(export_id)
        if rec is None:
            raise ApiError(f"unknown export id {export_id}: this server created no such export", 404)
        if part not in rec.files:
            raise ApiError(f"unknown part {part[:40]!r}; this export has {sorted(rec.files)}", 404)
        f = rec.files[part]
        return send_file(f, as_attachment=True, download_name=f.name)

    return app
