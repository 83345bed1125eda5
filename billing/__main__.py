"""Run the billing service (credit control + ledger writer).

    python -m billing --data-dir D [--config F] [--bootstrap HOST:PORT] [--log-level LEVEL]

Prints ``BILLING READY udp=PORT`` when it answers authorizations (the port is
also in DATA_DIR/run/credit.port).  SIGTERM / SIGINT stop it cleanly; a
SIGKILL is safe too (the next start folds the durable ledger again).
See billing/credit/service.py.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from proxy.infra.config import ConfigError, load, resolve_paths
from proxy.infra.logs import setup_service_logging
from proxy.infra.supervise import one_line_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data dir (default: SIPLEDGER_DATA_DIR or ./data)")
    parser.add_argument("--config", help="sipledger.toml (default: SIPLEDGER_CONFIG or DATA_DIR/sipledger.toml)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap_servers)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    setup_service_logging("%(asctime)s %(levelname)s %(name)s: %(message)s",
                          level=logging.getLevelName(args.log_level.upper()))
    data_dir, config_file = resolve_paths(args.data_dir, args.config)
    try:
        config = load(config_file, {"kafka": {"bootstrap_servers": args.bootstrap}})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not config.kafka.bootstrap_servers:
        print("error: the billing service needs --bootstrap (or kafka.bootstrap_servers)", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    from .credit.service import BillingService

    service = BillingService(config, data_dir)

    def ready(port: int) -> None:
        print(f"BILLING READY udp={port}", flush=True)

    try:
        import uvloop
        return uvloop.run(service.run(on_ready=ready))
    except ImportError:
        return asyncio.run(service.run(on_ready=ready))


if __name__ == "__main__":
    sys.exit(one_line_errors(main))
