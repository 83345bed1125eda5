"""rtpengine (Debian `rtpengine-daemon` 10.5) in userspace for the media tests.

    rtpe = RtpEngine(tmp_path / "rtpe").start()
    ... ng requests to rtpe.ng_address, media on rtpe.port_min..rtpe.port_max ...
    rtpe.stop()

The command line is the product's (proxy/runtime/rtpengine.py ``rtpengine_argv``):
no kernel module (``--table=-1``), loopback only, its control socket and a
media port range of its own (``span`` ports below 30000, under the kernel's
ephemeral range so other tests' sockets do not land in it), foreground with
its log on stderr kept in the workdir for post-mortems, stopped by PID.
``timeout`` / ``silent_timeout`` pass through to rtpengine's own RTP timeouts.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

from proxy.runtime.rtpengine import rtpengine_argv
from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.sipp import HOST, free_udp_port, port_bound
from tests.harness.xdist import worker_slice

RTPENGINE = os.environ.get("RTPENGINE_BIN") or shutil.which("rtpengine") or "/usr/bin/rtpengine"
_used_ranges: set[int] = set()


def rtpengine_available() -> bool:
    return os.access(RTPENGINE, os.X_OK)


def _media_range(span: int) -> tuple[int, int]:
    """A block of ``span`` ports nobody has bound, in 20000..29999, not handed out before."""
    ports = worker_slice(range(20000, 30000))
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - span, span)
        if base in _used_ranges:
            continue
        if all(_free(port) for port in range(base, base + span)):
            _used_ranges.add(base)
            return base, base + span - 1
    raise RuntimeError("no free media port range for rtpengine")


def _free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class RtpEngine:
    def __init__(self, workdir: Path, span: int = 40, timeout: int = 60, silent_timeout: int = 3600,
                 extra: tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.span, self.timeout, self.silent_timeout, self.extra = span, timeout, silent_timeout, extra
        self.ng_port = 0
        self.port_min = self.port_max = 0
        self.proc: subprocess.Popen | None = None

    @property
    def ng_address(self) -> tuple[str, int]:
        return (HOST, self.ng_port)

    @property
    def url(self) -> str:
        return f"udp:{HOST}:{self.ng_port}"

    @property
    def log(self) -> str:
        path = self.workdir / "rtpengine.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> RtpEngine:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ng_port = free_udp_port()
        self.port_min, self.port_max = _media_range(self.span)
        argv = rtpengine_argv(RTPENGINE, HOST, (HOST, self.ng_port), self.port_min, self.port_max,
                              timeout=self.timeout, silent_timeout=self.silent_timeout,
                              pidfile=self.workdir / "rtpengine.pid", extra=("--log-level=6", *self.extra))
        with open(self.workdir / "rtpengine.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited with {proc.returncode}:\n{self.log[-3000:]}")
            return port_bound(self.ng_port)
        eventually(ready, "rtpengine to listen on its ng port", timeout=15)
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc)
        self.proc = None
        return code

    def __enter__(self) -> RtpEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
