"""`python -m proxy run|worker`: the proxy's processes (started by `sipledger up`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .infra.config import Config, ConfigError, load, resolve_paths
from .infra.supervise import one_line_errors


def load_config(config_file: Path | None, sip_port: int | None, bootstrap: str | None) -> Config:
    return load(config_file, {"proxy": {"sip_port": sip_port}, "kafka": {"bootstrap_servers": bootstrap}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy")
    parser.add_argument("mode", choices=["run", "worker"])
    parser.add_argument("--data-dir")
    parser.add_argument("--config")
    parser.add_argument("--sip-port", type=int)
    parser.add_argument("--bootstrap")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--udp-fd", type=int, help="inherited public UDP socket (set by `run`)")
    parser.add_argument("--tcp-fd", type=int, help="inherited public TCP socket (set by `run`)")
    args = parser.parse_args(argv)
    data_dir, config_file = resolve_paths(args.data_dir, args.config)
    try:
        config = load_config(config_file, args.sip_port, args.bootstrap)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    workers = args.workers or max(1, config.proxy.workers)
    overrides = []
    if args.sip_port is not None:
        overrides += ["--sip-port", str(args.sip_port)]
    if args.bootstrap:
        overrides += ["--bootstrap", args.bootstrap]
    if args.mode == "run":
        from .runtime.supervisor import supervise
        from .runtime.worker import prepare_data_dir
        try:
            prepare_data_dir(config, data_dir)
        except Exception as exc:          # a store that cannot be opened: one line, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return supervise(workers, data_dir, config_file, overrides,
                         config.proxy.listen, config.proxy.sip_port, tcp=config.proxy.tcp)
    from .runtime.worker import run
    run(config, data_dir, args.index, workers, udp_fd=args.udp_fd, tcp_fd=args.tcp_fd)
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main))
