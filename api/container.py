"""One sipledger service in a container: READY as a health check, metrics as a scrape target.

    python -m api.container --ready "CDR READY" [--metrics-port 9100] -- python -m cdr --worker-id 0

In a container nothing reads a service's ``<NAME> READY`` line, and a service
other than the API has no HTTP port for Prometheus (docs/metrics.md: `up` points
every child at one multiprocess directory that the API serves).  This wrapper
(the image's entry point, compose/) does for one service what `up` does for
its children, with the same supervisor library (proxy/infra/supervise.py):

* it empties a private ``PROMETHEUS_MULTIPROC_DIR`` and starts the service
  with it (a restarted container's old counters would add up otherwise);
* it serves ``GET /healthz`` (200 once the service printed its READY line and
  runs, else 503: compose's health check) and ``GET /metrics`` (every process
  of the service, the proxy's workers included, through
  ``proxy.infra.metrics.exposition``) on the metrics port, inside the
  deployment's network only: compose publishes no metrics port;
* a service that fails before READY ends the container with its one-line
  reason (compose's restart policy decides what next); one that dies after
  READY is restarted with the supervisor's backoff, as under `up`;
* SIGTERM / SIGINT stop the service (SIGTERM, then SIGKILL after the grace).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from proxy.infra import metrics
from proxy.infra.supervise import STOP_GRACE_S, Child, StartFailed, Supervisor, one_line_errors

DEFAULT_RUN_DIR = "/tmp/sipledger-container"     # private to the container: the metrics files
DEFAULT_METRICS_PORT = 9100
# longer than `up`'s 90 s: a CDR processor recovers its tables from their changelogs before READY
DEFAULT_READY_TIMEOUT_S = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m api.container", description=__doc__.splitlines()[0])
    parser.add_argument("--ready", required=True, help='the service\'s READY line prefix, e.g. "CDR READY"')
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address of /healthz and /metrics")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help="port of /healthz and /metrics (0: any free one)")
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="where the metrics files go")
    parser.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT_S,
                        help="seconds the service has to print its READY line")
    parser.add_argument("--stop-grace", type=float, default=STOP_GRACE_S,
                        help="seconds between SIGTERM and SIGKILL (below compose's stop_grace_period)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the service's command line")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("the service's command is missing (after --)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ[metrics.ENV_DIR] = str(metrics.prepare_dir(Path(args.run_dir)))
    name = args.ready.split()[0].lower()
    group = Supervisor([Child(name, args.command, args.ready)], ready_timeout=args.ready_timeout,
                       grace=args.stop_grace)
    group.stop_on_signals()
    server = _serve(group.children[0], args.metrics_host, args.metrics_port)
    print(f"CONTAINER {name} metrics={server.server_address[1]}", flush=True)
    try:
        group.start()
        print(group.children[0].ready_line, flush=True)
        group.watch()
        return 0
    except StartFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        group.stop()
        server.shutdown()
        server.server_close()


def _serve(child: Child, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:                       # noqa: N802 (http.server's name)
            if self.path == "/healthz":
                ok = child.is_ready and child.running
                self._answer(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            elif self.path == "/metrics":
                self._answer(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        timeout = 5.0                                   # a client that stalls loses its thread soon

        def log_message(self, format: str, *args) -> None:   # a scrape a second is not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="container-http", daemon=True).start()
    return server


if __name__ == "__main__":
    sys.exit(one_line_errors(main))
