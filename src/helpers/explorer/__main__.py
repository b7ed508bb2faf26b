"""``python -m helpers.explorer``: serve the Audience Affinity Explorer (what ``make explorer`` runs)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from .app import create_app, make_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: host (loopback by default), port, the run's data and reports folders."""
    p = argparse.ArgumentParser(prog="python -m helpers.explorer",
                                description="Audience Affinity Explorer: an offline web app over the pipeline's "
                                            "artifacts (run `make reports` first).")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: only this machine can connect)")
    p.add_argument("--port", type=int, default=8050, help="TCP port (default 8050; 0 picks a free one)")
    p.add_argument("--data", default=None, help="data folder of the run (default $AUDIENCE_DATA_DIR or data/)")
    p.add_argument("--reports", default=None,
                   help="reports folder of the run (default $AUDIENCE_REPORTS_DIR or reports/)")
    p.add_argument("--min-export-size", type=int, default=None,
                   help="minimum audience size of an export (default: the export function's guard)")
    p.add_argument("--seed", type=int, default=0, help="seed of the media plan's uncertainty draws (default 0)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name clients may use in the URL (repeatable; the bound host and the "
                        "loopback names are always allowed; others are refused against DNS rebinding)")
    p.add_argument("--config", default=None,
                   help="run configuration whose labels the views show (default: the one ingestion recorded)")
    p.add_argument("--threads", type=int, default=None,
                   help="cap on the threads of a media plan (default: all cores)")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be a positive integer, got {args.threads}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be between 0 and 65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the development server (threaded, no debugger, no reloader)."""
    args = parse_args(argv)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"warning: binding {args.host} exposes the Explorer (and the audience exports) to the network",
              file=sys.stderr)
    app = create_app(args.data, args.reports, min_export_size=args.min_export_size, seed=args.seed,
                     n_threads=args.threads, config_path=args.config,
                     allowed_hosts=[args.host, *args.allow_host])
    server = make_server(app, args.host, args.port, threaded=True)
    print(f"Audience Affinity Explorer on http://{args.host}:{server.server_port}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
