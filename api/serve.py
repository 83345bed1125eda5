"""The API process of the embedded topology: CDR sink + REST API in ONE process.

chdb allows one process per data path, and both the sink (writes) and the
API (reads) need the CDR store, so they share one process and one asyncio
loop: uvicorn serves the API while an aiokafka consumer feeds ``cdr.records``
into the same ``CdrStore`` (docs/architecture.md, "Embedded topology").
Blocking ClickHouse calls run in worker threads; chdb gets one connection for
writes and one for reads, so queries do not queue behind inserts.

    python -m api.serve --data-dir D [--config F] --bootstrap HOST:PORT --api-port P

applies the ClickHouse schema (``proxy/infra/clickhouse/schema.sql``), opens the stores
(``AppState``, api/state.py), starts the sinks (api/sinks.py: CDRs, and the
ledger's copy with its repair) and the app (api/main.py), and prints
``API READY port=P`` once the API listens.  SIGTERM / SIGINT stop it:
the API stops accepting, the sink inserts and commits what it holds.
With ``[clickhouse] backend = "server"`` the two halves may also run as
separate processes (``--no-sink`` / ``--no-api``), as many as wanted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import sys

import msgspec

from proxy.infra import heap
from proxy.infra.config import ConfigError, resolve_paths
from proxy.infra.logs import setup_service_logging
from proxy.infra.supervise import one_line_errors
from proxy.runtime.transport import tcp_socket

log = logging.getLogger("sipledger.api")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="data dir (default: SIPLEDGER_DATA_DIR or ./data)")
    p.add_argument("--config", help="sipledger.toml (default: SIPLEDGER_CONFIG or DATA_DIR/sipledger.toml)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap_servers)")
    p.add_argument("--api-host", help="listen address (overrides api.host)")
    p.add_argument("--api-port", type=int, help="listen port, 0 = any free one (overrides api.port)")
    p.add_argument("--no-sink", action="store_true", help="serve the API only")
    p.add_argument("--no-api", action="store_true", help="run the CDR sink only")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_service_logging("%(asctime)s %(levelname)s %(name)s: %(message)s",
                          level=logging.getLevelName(args.log_level.upper()))
    from proxy.infra import config as config_mod
    data_dir, config_file = resolve_paths(args.data_dir, args.config)
    try:
        config = config_mod.load(config_file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kafka = config.kafka
    if args.bootstrap:
        kafka = msgspec.structs.replace(kafka, bootstrap_servers=args.bootstrap)
    run_sink, run_api = not args.no_sink, not args.no_api
    if not (run_sink or run_api):
        print("error: --no-sink and --no-api: nothing to run", file=sys.stderr)
        return 2
    if run_sink and not kafka.bootstrap_servers:
        print("error: the CDR sink needs --bootstrap (or kafka.bootstrap_servers)", file=sys.stderr)
        return 2
    host = args.api_host or config.api.host
    port = config.api.port if args.api_port is None else args.api_port

    from cdr.store.queries import CdrStore
    from proxy.infra.clickhouse.backend import BackendError, open_backend
    from proxy.infra.clickhouse.migrate import MigrationError, migrate

    from .sinks import Sinks
    from .state import AppState
    from .tokens import TokenError, open_store

    data_dir.mkdir(parents=True, exist_ok=True)
    sock = None
    if run_api:
        try:
            sock = tcp_socket(host, port)     # bound here: "in use" is a one-line start error
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror or exc}"
            print(f"error: API port {host}:{port} {reason}", file=sys.stderr)
            return 1
    try:
        backend = open_backend(config.clickhouse, data_dir)
    except BackendError as exc:
        print(f"error: CDR store: {exc}", file=sys.stderr)
        return 1
    tokens = state = sinks = None
    try:
        applied = migrate(backend)
        if applied:
            log.warning("ClickHouse schema: applied migrations %s", applied)
        store = CdrStore(backend)
        if run_api:
            tokens = open_store(data_dir)
            state = AppState.open(store, tokens, config, data_dir)
        if run_sink:
            sinks = Sinks(store, kafka, config, data_dir)
        return _run_loop(_serve(state, sinks, sock))
    except (BackendError, MigrationError, TokenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if sinks is not None:
            sinks.close()
        if state is not None:
            state.close()
        if tokens is not None:
            tokens.close()
        backend.close()
        if sock is not None:
            sock.close()


def _run_loop(coro) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _serve(state, sinks, sock: socket.socket | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: dict[str, asyncio.Task] = {}
    server = None
    if sinks is not None:
        sinks.start(tasks)
    if sock is not None:
        server = await _start_api(state, sock, tasks)
        if server is None:
            stop.set()
        else:
            print(f"API READY port={sock.getsockname()[1]}", flush=True)
    elif sinks is not None:
        print("SINK READY", flush=True)
    # what exists now (the modules, FastAPI, chdb's bindings, the stores) lives
    # as long as the process: out of the collector's sight, so that the full
    # collections the sinks' records trigger do not walk it each time; a young
    # generation of 10,000 instead of 700 (a fetch brings thousands of records).
    # GC CPU after start, 25,000 calls at 5,000/s: 0.63 s with the defaults.
    heap.settle(10_000, 10, 10)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    for name, task in tasks.items():
        if task in done:
            status = 1
            exc = task.exception() if not task.cancelled() else None
            print(f"error: {name} stopped unexpectedly: {exc!r}", file=sys.stderr, flush=True)
    if server is not None:
        server.should_exit = True
    if sinks is not None:
        sinks.stop()
    waiter.cancel()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, result in zip(tasks, results):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("%s: %r", name, result)
    if sinks is not None:
        await sinks.aclose()
        stats = {k: v for k, v in vars(sinks.cdr.stats).items() if k != "assigned"}
        print(f"SINK STATS {json.dumps(stats)}", file=sys.stderr, flush=True)
    return status


async def _start_api(state, sock: socket.socket, tasks: dict[str, asyncio.Task]):
    import uvicorn

    from .main import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield       # this process handles SIGINT/SIGTERM itself (sink first)

    server = Server(uvicorn.Config(create_app(state), log_level="warning",
                                   access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    tasks["api"] = task
    while not server.started:
        if task.done():
            return None
        await asyncio.sleep(0.01)
    return server


if __name__ == "__main__":
    sys.exit(one_line_errors(main))
