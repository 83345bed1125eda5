"""The proxy's process tree: N workers sharing the public port, restarted if they die."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .transport import udp_socket

RESTART_BACKOFF_S = 1.0


def worker_command(index: int, workers: int, data_dir: Path, config_file: Path | None,
                   overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "proxy", "worker", "--index", str(index), "--workers", str(workers),
           "--data-dir", str(data_dir)]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    return cmd + overrides


def supervise(workers: int, data_dir: Path, config_file: Path | None, overrides: list[str],
              listen: str, sip_port: int) -> int:
    """Run the workers until SIGINT/SIGTERM; print READY once all are listening.

    The public UDP socket is bound here and inherited by every worker, as
    Kamailio's children share theirs: the kernel hands each datagram to one
    reader, so initial requests spread over the workers even when they all
    come from one peer socket (SO_REUSEPORT would pin a peer to one worker)."""
    stop = False
    try:
        public = udp_socket(listen, sip_port, reuse_port=False)
    except OSError as exc:
        print(f"error: cannot bind UDP {listen}:{sip_port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    overrides = overrides + ["--udp-fd", str(public.fileno())]

    def _stop(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    procs: dict[int, subprocess.Popen] = {}
    for i in range(workers):
        procs[i] = _spawn(i, workers, data_dir, config_file, overrides)
    for i, proc in procs.items():
        line = proc.stdout.readline()
        if not line.startswith("WORKER READY"):
            print(f"proxy worker {i} failed to start", file=sys.stderr, flush=True)
            _terminate(procs.values())
            return 1
    print(f"PROXY READY workers={workers} pids={','.join(str(p.pid) for p in procs.values())}", flush=True)
    while not stop:
        time.sleep(0.2)
        for i, proc in list(procs.items()):
            if proc.poll() is not None and not stop:
                print(f"proxy worker {i} exited with {proc.returncode}; restarting", file=sys.stderr, flush=True)
                time.sleep(RESTART_BACKOFF_S)
                procs[i] = _spawn(i, workers, data_dir, config_file, overrides)
                procs[i].stdout.readline()
    _terminate(procs.values())
    return 0


def _spawn(i, workers, data_dir, config_file, overrides) -> subprocess.Popen:
    udp_fd = int(overrides[overrides.index("--udp-fd") + 1])
    return subprocess.Popen(worker_command(i, workers, data_dir, config_file, overrides),
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
                            pass_fds=(udp_fd,))


def _terminate(procs) -> None:
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
