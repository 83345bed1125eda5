"""`sipledger up`: the embedded topology on one machine.

Starts the Kafka-protocol broker (Tansu, loopback, memory only) unless an
external cluster is configured, creates the topics explicitly, starts the proxy
(which forks its workers) and the processors that exist, prints one READY line
and stops everything, children first, on Ctrl-C / SIGTERM.  Tansu keeps topics
in memory only: if it dies it is restarted and the topics recreated; the
proxy's outbox holds every event until the broker takes it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from proxy.contract.kafka import ensure_topics_sync

from .broker import BrokerError, EmbeddedBroker
from .config import Config

log = logging.getLogger("sipledger.up")


class StartError(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, data_dir: Path, config_file: Path | None, *,
                 sip_port: int | None = None, api_port: int | None = None):
        self.config = config
        self.data_dir = data_dir
        self.config_file = config_file
        self.sip_port = sip_port or config.proxy.sip_port
        self.api_port = api_port or config.api.port
        self.broker: EmbeddedBroker | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []
        self._stop = False

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._check_routing_script()
            bootstrap = self._start_broker()
            self._create_topics(bootstrap)
            self._start_proxy(bootstrap)
            print(f"READY sip={self.config.proxy.listen}:{self.sip_port} kafka={bootstrap} "
                  f"data={self.data_dir}", flush=True)
            return self._watch(bootstrap)
        finally:
            self._shutdown()

    def _check_routing_script(self) -> None:
        """A broken routing module stops `up` before anything starts."""
        from proxy.script.loader import RoutingScriptError, load_script
        try:
            load_script(self.config.proxy.routing_script)
        except RoutingScriptError as exc:
            raise StartError(f"routing script: {exc}") from None

    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    def _start_broker(self) -> str:
        kafka = self.config.kafka
        if kafka.mode == "external":
            return kafka.bootstrap_servers
        self.broker = EmbeddedBroker(port=kafka.embedded_port, log_path=self.data_dir / "logs" / "broker.log")
        try:
            self.broker.start()
        except BrokerError as exc:
            raise StartError(f"embedded broker: {exc}") from None
        return self.broker.bootstrap

    def _create_topics(self, bootstrap: str) -> None:
        kafka = msgspec.structs.replace(self.config.kafka, bootstrap_servers=bootstrap)
        topics = self.config.topics
        try:
            ensure_topics_sync(kafka, {topics.sip_events: kafka.partitions,
                                       topics.call_control: kafka.partitions})
        except Exception as exc:
            raise StartError(f"creating topics on {bootstrap}: {exc}") from None

    def _start_proxy(self, bootstrap: str) -> None:
        cmd = [sys.executable, "-m", "proxy", "run", "--data-dir", str(self.data_dir),
               "--sip-port", str(self.sip_port), "--bootstrap", bootstrap]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        self.children.append(("proxy", proc))
        line = proc.stdout.readline()
        if not line.startswith("PROXY READY"):
            raise StartError(f"proxy did not start (port {self.sip_port} taken or bad config?)")

    def _watch(self, bootstrap: str) -> int:
        while not self._stop:
            time.sleep(0.25)
            for name, proc in self.children:
                if proc.poll() is not None and not self._stop:
                    print(f"error: {name} exited with status {proc.returncode}", file=sys.stderr, flush=True)
                    return 1
            if self.broker is not None and not self.broker.running and not self._stop:
                print("warning: embedded broker died; restarting it (events wait in the outbox)",
                      file=sys.stderr, flush=True)
                try:
                    self.broker.start()
                    self._create_topics(bootstrap)
                except (BrokerError, StartError) as exc:
                    print(f"warning: broker restart failed: {exc}", file=sys.stderr, flush=True)
        return 0

    def _shutdown(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker is not None:
            self.broker.stop()
