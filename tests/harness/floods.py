"""A proxy process (`python -m proxy run`) of its own, and the raw SIP the flood tests send.

    with ProxyProcess(tmp_path, broker.bootstrap, "[tcp]\\nidle_timeout_seconds = 0.5\\n") as px:
        px.addr                                  # ("127.0.0.1", port), UDP and TCP
        options(px.addr, source="127.0.0.3")     # the 200 OK, or None

Everything is stopped by PID (SIGTERM, then SIGKILL); sockets are closed by
the callers' ``with`` blocks.  The proxy runs with credit control off (no
billing process here).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from tests.harness.poll import eventually
from tests.harness.sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class ProxyProcess:
    def __init__(self, workdir: Path, bootstrap: str, config_text: str = "", workers: int = 1):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.bootstrap = bootstrap
        self.port = free_udp_port()
        self.config = self.workdir / "sipledger.toml"
        self.workers = workers             # on the command line: config_text may have its own [proxy]
        self.config.write_text("[authorization]\nenabled = false\n" + config_text)
        self.stderr_path = self.workdir / "proxy.stderr"
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.port)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        return env

    def start(self) -> "ProxyProcess":
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--data-dir", str(self.data_dir),
                 "--config", str(self.config), "--sip-port", str(self.port), "--bootstrap", self.bootstrap,
                 "--workers", str(self.workers)],
                cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("PROXY READY"):
            self.stop()
            raise RuntimeError(f"proxy did not start: {line!r}\n{self.stderr()[-3000:]}")
        return self

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "api.cli", "--data-dir", str(self.data_dir),
                               "--config", str(self.config), *args],
                              cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def options_request(proxy: tuple[str, int], via_host: str, via_port: int, transport: str = "UDP",
                    body: bytes = b"", content_length: int | None = None, call_id: str | None = None) -> bytes:
    """An OPTIONS for the proxy itself (answered 200 by the default script)."""
    call_id = call_id or uuid.uuid4().hex
    length = len(body) if content_length is None else content_length
    return (f"OPTIONS sip:{proxy[0]}:{proxy[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {via_host}:{via_port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            f"From: <sip:probe@{via_host}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{proxy[0]}:{proxy[1]}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + body


def udp_client(source: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    return sock


def options(proxy: tuple[str, int], source: str = HOST, timeout: float = 2.0) -> bytes | None:
    """One OPTIONS from ``source`` over UDP; the final answer's bytes, or None within ``timeout``."""
    with udp_client(source) as sock:
        host, port = sock.getsockname()
        sock.sendto(options_request(proxy, host, port), proxy)
        sock.settimeout(timeout)
        try:
            while True:
                data = sock.recv(65535)
                if not data.startswith(b"SIP/2.0 1"):
                    return data
        except TimeoutError:
            return None


def tcp_client(proxy: tuple[str, int], source: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(proxy)
    return sock


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """Everything the peer sent until it closed the connection, or None if it
    is still open after ``timeout`` seconds."""
    sock.settimeout(0.1)
    received = bytearray()

    def closed() -> bool:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
        received.extend(data)
        return False

    if eventually(closed, timeout=timeout, interval=0, fail=False):
        return bytes(received)
    return None


def still_open(sock: socket.socket) -> bool:
    """Nothing received and no close seen right now (a non-blocking peek)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
