"""`sipledger up`: the embedded topology on one machine.

Starts the Kafka-protocol broker (Tansu, loopback, memory only) unless an
external cluster is configured, creates the topics explicitly, then the
services — proxy (which forks its workers), CDR processor, API + CDR sink
(one process: chdb allows one process per data path), the billing service
(credit control and the ledger), RADIUS accounting when a server is configured — prints one READY line and stops everything, children
first, on Ctrl-C / SIGTERM.  A service that dies is restarted (with backoff);
Tansu keeps topics in memory only, so if it dies it is restarted and the
topics recreated, while the proxy's outbox holds every event until it is back.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from proxy.infra.config import Config
from proxy.infra.kafka import ensure_topics_sync

from .broker import BrokerError, EmbeddedBroker

log = logging.getLogger("sipledger.up")

READY_TIMEOUT_S = 90.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


class StartError(Exception):
    pass


@dataclass
class Service:
    name: str
    command: list[str]
    ready_prefix: str | None           # a stdout line starting with this means "up"
    proc: subprocess.Popen | None = None
    ready_line: str = ""
    restarts: int = 0
    next_start: float = 0.0
    lines: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, config: Config, data_dir: Path, config_file: Path | None, *,
                 sip_port: int | None = None, api_port: int | None = None):
        self.config = config
        self.data_dir = data_dir
        self.config_file = config_file
        self.sip_port = sip_port or config.proxy.sip_port
        self.api_port = api_port if api_port is not None else config.api.port
        self.broker: EmbeddedBroker | None = None
        self.services: list[Service] = []
        self._stop = False

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._check_routing_script()
            bootstrap = self._start_broker()
            self._create_topics(bootstrap)
            self.services = self._services(bootstrap)
            for service in self.services:
                self._start(service, wait=True)
            api = self._service("api")
            api_port = api.ready_line.split("port=")[-1].strip() if api else ""
            print(f"READY sip={self.config.proxy.listen}:{self.sip_port} kafka={bootstrap} "
                  f"api={self.config.api.host}:{api_port} data={self.data_dir}", flush=True)
            return self._watch(bootstrap)
        finally:
            self._shutdown()

    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    def _check_routing_script(self) -> None:
        """A broken routing module stops `up` before anything starts."""
        from proxy.script.loader import RoutingScriptError, load_script
        try:
            load_script(self.config.proxy.routing_script)
        except RoutingScriptError as exc:
            raise StartError(f"routing script: {exc}") from None

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

    def topics(self) -> dict[str, int]:
        partitions = self.config.kafka.partitions
        ledger = self.config.ledger
        names = [self.config.topics.sip_events, self.config.topics.call_control,
                 self.config.cdr.records_topic, ledger.events_topic, ledger.calls_topic,
                 ledger.notifications_topic]
        return {name: partitions for name in names}

    def _create_topics(self, bootstrap: str) -> None:
        kafka = msgspec.structs.replace(self.config.kafka, bootstrap_servers=bootstrap)
        try:
            ensure_topics_sync(kafka, self.topics())
        except Exception as exc:
            raise StartError(f"creating topics on {bootstrap}: {exc}") from None

    # -- services ----------------------------------------------------------------
    def _services(self, bootstrap: str) -> list[Service]:
        common = ["--data-dir", str(self.data_dir), "--bootstrap", bootstrap]
        if self.config_file is not None:
            common += ["--config", str(self.config_file)]
        py = [sys.executable, "-m"]
        services = [Service("proxy", py + ["proxy", "run", "--sip-port", str(self.sip_port)] + common,
                            "PROXY READY")]
        if self.config.api.enabled:
            services.append(Service("api", py + ["api.serve", "--api-port", str(self.api_port)] + common,
                                    "API READY"))
        if self.config.cdr.enabled:
            services.append(Service("cdr", py + ["cdr", "--worker-id", "0"] + common, None))
        if self.config.billing.enabled:
            services.append(Service("billing", py + ["billing"] + common, "BILLING READY"))
        if self.config.radius.servers:
            services.append(Service("radius", py + ["radius"] + common, "RADIUS READY"))
        return services

    def _service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def _start(self, service: Service, *, wait: bool) -> None:
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        stderr = open(log_dir / f"{service.name}.log", "ab")
        try:
            service.proc = subprocess.Popen(service.command, stdout=subprocess.PIPE, stderr=stderr,
                                            text=True, env=os.environ.copy())
        finally:
            stderr.close()
        ready = threading.Event()
        threading.Thread(target=self._read_stdout, args=(service, ready), daemon=True).start()
        if wait and service.ready_prefix is not None:
            if not ready.wait(READY_TIMEOUT_S) or service.proc.poll() is not None:
                raise StartError(f"{service.name} did not start; see {log_dir / service.name}.log")

    def _read_stdout(self, service: Service, ready: threading.Event) -> None:
        proc = service.proc
        for line in proc.stdout:
            line = line.rstrip("\n")
            if service.ready_prefix and line.startswith(service.ready_prefix) and not ready.is_set():
                service.ready_line = line
                ready.set()
        ready.set()                         # EOF: the waiting side checks poll()

    def _watch(self, bootstrap: str) -> int:
        while not self._stop:
            time.sleep(0.25)
            if self.broker is not None and not self.broker.running and not self._stop:
                self._restart_broker(bootstrap)
            for service in self.services:
                if self._stop or service.proc is None or service.proc.poll() is None:
                    continue
                now = time.monotonic()
                if service.next_start == 0.0:
                    delay = RESTART_BACKOFF_S[min(service.restarts, len(RESTART_BACKOFF_S) - 1)]
                    print(f"warning: {service.name} exited with status {service.proc.returncode}; "
                          f"restarting in {delay:g} s", file=sys.stderr, flush=True)
                    service.next_start = now + delay
                elif now >= service.next_start:
                    service.restarts += 1
                    service.next_start = 0.0
                    self._start(service, wait=False)
        return 0

    def _restart_broker(self, bootstrap: str) -> None:
        print("warning: embedded broker died; restarting it (events wait in the outbox)",
              file=sys.stderr, flush=True)
        try:
            self.broker.start()
            self._create_topics(bootstrap)
        except (BrokerError, StartError) as exc:
            print(f"warning: broker restart failed: {exc}", file=sys.stderr, flush=True)

    def _shutdown(self) -> None:
        running = [s.proc for s in reversed(self.services) if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker is not None:
            self.broker.stop()
