"""HTTP hardening of the Explorer: body and nesting limits, the Host allow-list, security headers, the server."""

from __future__ import annotations

from flask import Flask

#: Largest request body the API accepts (an export request is a few dozen bytes).
MAX_BODY_BYTES = 64 * 1024
#: Deepest JSON nesting a request body may have (a real request is one flat object).
MAX_JSON_DEPTH = 8
#: Host names the app answers to besides the bound host (DNS rebinding: a page served from another name
#: that resolves to 127.0.0.1 must not reach the app).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Headers of every response: no framing, no MIME sniffing, scripts and styles only from this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SERVER_NAME = "audience-explorer"


def json_depth(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> int:
    """Maximum nesting depth of the brackets of a JSON text (strings skipped), scanning at most until the
    depth exceeds ``limit`` -- so a body nested 5,000 deep is refused before the parser recurses."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > limit:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    """Whether a request's ``Host`` header (``name`` or ``name:port``) names one of ``allowed``."""
    if not host_header:
        return False
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:8050
        name = h.split("]", 1)[0] + "]"
    else:
        name = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    return name in allowed or name.strip("[]") in allowed


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 0, threaded: bool = True):
    """A werkzeug server for ``app`` whose ``Server`` header reveals no software version."""
    from werkzeug.serving import WSGIRequestHandler, make_server as _make

    class Handler(WSGIRequestHandler):
        server_version = SERVER_NAME
        sys_version = ""

        def version_string(self) -> str:  # noqa: D102 - http.server hook
            return SERVER_NAME

    return _make(host, port, app, threaded=threaded, request_handler=Handler)
