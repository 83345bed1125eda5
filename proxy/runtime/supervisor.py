"""The proxy's process tree: N workers sharing the public port, restarted if they die.

``python -m proxy run`` binds the public SIP sockets itself, then runs the
workers with the supervisor library (proxy/infra/supervise.py): it prints
``PROXY READY`` only once every worker has printed ``WORKER READY``, and a
port it cannot bind is one line on stderr and exit status 1.
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

from ..infra.supervise import Child, StartFailed, Supervisor
from .transport import tcp_socket, udp_socket


def worker_command(index: int, workers: int, data_dir: Path, config_file: Path | None,
                   overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "proxy", "worker", "--index", str(index), "--workers", str(workers),
           "--data-dir", str(data_dir)]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    return cmd + overrides


def supervise(workers: int, data_dir: Path, config_file: Path | None, overrides: list[str],
              listen: str, sip_port: int, tcp: bool = True) -> int:
    """Run the workers until SIGINT/SIGTERM; print PROXY READY once all are listening.

    The public sockets are bound here and inherited by every worker, as
    Kamailio's children share theirs: the kernel hands each datagram (and
    each accepted connection) to one reader, so initial requests spread over
    the workers even when they all come from one peer socket (SO_REUSEPORT
    would pin a peer to one worker).  Binding them here, without
    SO_REUSEADDR/SO_REUSEPORT on UDP, is also what makes a port that another
    program holds an error instead of two proxies silently sharing it."""
    try:
        sockets = [udp_socket(listen, sip_port)]
        if tcp:
            sockets.append(tcp_socket(listen, sip_port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: SIP port {listen}:{sip_port} is in use", file=sys.stderr, flush=True)
        else:
            print(f"error: cannot bind SIP port {listen}:{sip_port}: {exc.strerror or exc}",
                  file=sys.stderr, flush=True)
        return 1
    fds = tuple(sock.fileno() for sock in sockets)
    overrides = overrides + ["--udp-fd", str(fds[0])] + (["--tcp-fd", str(fds[1])] if tcp else [])
    group = Supervisor([Child(f"worker {i}", worker_command(i, workers, data_dir, config_file, overrides),
                              "WORKER READY", pass_fds=fds)
                        for i in range(workers)],
                       together=True)      # workers wait for their siblings before READY
    group.stop_on_signals()
    try:
        group.start()
    except StartFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    pids = ",".join(str(child.proc.pid) for child in group.children if child.proc is not None)
    print(f"PROXY READY workers={workers} pids={pids}", flush=True)
    try:
        group.watch()
    finally:
        group.stop()
        for sock in sockets:
            sock.close()
    return 0
