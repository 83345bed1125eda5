"""Shared by bench/hostile_rss.py and bench/fuzz_tracebacks.py: one real proxy
worker process (``python -m proxy worker``) on loopback, run from any checkout
(``--repo``: measure the code before a change and after), its RSS and its log."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HOST = "127.0.0.1"

# every initial INVITE relayed (no challenge) to the bench's sink, as in
# bench/sip_rate.toml; events go to a real broker (Tansu) when one is given,
# else they wait in the worker's outbox
CONFIG = """
[proxy]
workers = 1
tcp = false
static_route = "sip:127.0.0.1:{sink_port}"
trusted_sources = ["127.0.0.1/32"]
domains = ["example.test"]

[kafka]
bootstrap_servers = "{bootstrap}"
"""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Worker:
    """A proxy worker on a free port; stopped by its PID."""

    def __init__(self, repo: Path, sink_port: int, bootstrap: str | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="hostile-bench-"))
        self.port = free_port()
        config = self.dir / "sipledger.toml"
        bootstrap = bootstrap or f"{HOST}:{free_port(socket.SOCK_STREAM)}"   # nobody there
        config.write_text(CONFIG.format(sink_port=sink_port, bootstrap=bootstrap))
        self.log_path = self.dir / "worker.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(repo))
        python = sys.executable
        # prepare the stores as `run` does, then one worker in the foreground
        prep = ("import sys; from pathlib import Path; from proxy.infra.config import load;"
                "from proxy.runtime.worker import prepare_data_dir;"
                "prepare_data_dir(load(Path(sys.argv[1])), Path(sys.argv[2]))")
        subprocess.run([python, "-c", prep, str(config), str(self.dir / "data")], cwd=repo, env=env,
                       check=True)
        self.proc = subprocess.Popen(
            [python, "-m", "proxy", "worker", "--index", "0", "--workers", "1",
             "--data-dir", str(self.dir / "data"), "--config", str(config), "--sip-port", str(self.port)],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "WORKER READY" not in line:
            self.stop()
            raise RuntimeError(f"worker did not start: {line!r}; see {self.log_path}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def tracebacks(self) -> int:
        return self.log_path.read_bytes().count(b"Traceback (most recent call last)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_broker(log_dir: Path):
    """The embedded broker (Tansu) with sip.events and call.control, from this checkout."""
    repo = Path(__file__).resolve().parents[1]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from tests.harness.broker import start_broker as start
    return start(log_dir)
