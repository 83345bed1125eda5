"""`sipledger up`: the embedded topology on one machine.

Refuses to start on a config it cannot run (checked before anything starts)
and on a data dir another `up` is using (DATA_DIR/run/up.lock).  Then starts
the Kafka-protocol broker (Tansu, loopback, memory only) unless an external
cluster is configured, creates the topics explicitly, and starts the services
together with the supervisor library (proxy/infra/supervise.py) — none waits
for another: proxy (which runs its workers), API +
CDR sink (one process: chdb allows one process per data path), CDR processor,
billing (credit control and the ledger), RADIUS accounting when a server is
configured, and rtpengine when `[media]` is enabled with ``launch``
(proxy/runtime/rtpengine.py; the workers find its ng port in DATA_DIR/run/media.json).

It prints ``READY ...`` only when every service is; otherwise it stops what it
started and exits non-zero with one line naming the service and its reason.
Every child dies with `up`, even on ``kill -9``.  A service that dies after
READY is restarted with backoff; Tansu keeps topics in memory only, so if it
dies it is restarted and the topics recreated, while the proxy's outbox holds
every event until it is back.  Ctrl-C / SIGTERM stop everything: the
services, then the broker.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import time
from pathlib import Path

import msgspec

from proxy.infra import clock
from proxy.infra.config import KAFKA_RUN_FILE, RUN_DIR, Config
from proxy.infra.epoch import new_epoch
from proxy.infra.kafka import ensure_topics_sync
from proxy.infra.metrics import ENV_DIR, prepare_dir
from proxy.infra.pidlock import LockHeld, PidLock
from proxy.infra.runfiles import write_json_atomically
from proxy.infra.supervise import (
    RESTART_BACKOFF_S,
    Child,
    StartFailed,
    Supervisor,
    stop_on_signals,
)

from .broker import BrokerError, EmbeddedBroker

log = logging.getLogger("sipledger.up")

UP_LOCK_FILE = "up.lock"


class StartError(Exception):
    """Why `up` did not start, in one line."""


class Up:
    def __init__(self, config: Config, data_dir: Path, config_file: Path | None):
        """``config`` with the command line's overrides (--sip-port, --api-port) merged in."""
        self.config = config
        self.data_dir = data_dir
        self.config_file = config_file
        self.sip_port = config.proxy.sip_port
        self.api_port = config.api.port
        self.broker: EmbeddedBroker | None = None
        self.stopping = threading.Event()
        # the services do not wait for each other (the proxy finds credit control by its
        # port file, the sinks wait for their topics): start them all at once
        self.group = Supervisor([], together=True, stopping=self.stopping, warn=self._warn)
        self._broker_failures = 0
        self._broker_retry_at = 0.0

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> int:
        self._check_config()
        self._log_to_file()
        lock = self._lock()
        stop_on_signals(self.stopping)
        try:
            self._prepare_metrics()
            bootstrap = self._start_broker()
            self._name_broker(bootstrap)
            self._create_topics(bootstrap)
            self.group.children = self.children(bootstrap)
            try:
                self.group.start()
            except StartFailed as exc:
                raise StartError(str(exc)) from None
            print(self.ready_line(bootstrap), flush=True)
            self.group.watch(tick=lambda: self._check_broker(bootstrap))
            return 0
        finally:
            self.group.stop()
            (self.data_dir / RUN_DIR / KAFKA_RUN_FILE).unlink(missing_ok=True)
            if self.broker is not None:
                self.broker.stop()
            lock.release()

    def _check_config(self) -> None:
        """What `up` cannot run, refused before anything starts (``load`` checked the rest)."""
        c = self.config
        if c.authorization.enabled and not c.billing.enabled:
            raise StartError(f"{self.config_file or 'defaults'}: key 'authorization.enabled': "
                             "credit control needs billing, which billing.enabled = false turns off; "
                             "set authorization.enabled = false to run without it")
        from proxy.script.loader import RoutingScriptError, load_script
        try:
            load_script(c.proxy.routing_script)
        except RoutingScriptError as exc:
            raise StartError(f"routing script: {exc}") from None

    def _prepare_metrics(self) -> None:
        """Every child writes its metrics under DATA_DIR/run/metrics (multiprocess mode,
        docs/metrics.md); emptied first: a previous run's counters would add up."""
        if self.config.metrics.enabled:
            os.environ[ENV_DIR] = str(prepare_dir(self.data_dir / RUN_DIR))
        else:
            os.environ.pop(ENV_DIR, None)

    def _log_to_file(self) -> None:
        # stderr is for the operator's one-line messages; library chatter goes to the log
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_dir / "up.log", maxBytes=self.config.logging.max_bytes, backupCount=self.config.logging.backups)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)

    def _lock(self) -> PidLock:
        try:
            return PidLock(self.data_dir / RUN_DIR / UP_LOCK_FILE).acquire()
        except LockHeld as held:
            owner = f"pid {held.pid}" if held.pid else "pid not yet written"
            raise StartError(f"data dir {self.data_dir} is in use by another sipledger up ({owner})") from None

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def ready_line(self, bootstrap: str) -> str:
        c = self.config
        api = self.group.child("api")
        api_at = f"{c.api.host}:{api.ready_line.split('port=')[-1].strip()}" if api else "off"
        credit = "on" if c.authorization.enabled else "off"
        return (f"READY sip={c.proxy.listen}:{self.sip_port} kafka={bootstrap} api={api_at} "
                f"credit={credit} data={self.data_dir}")

    # -- the broker and its topics -------------------------------------------------
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

    def _name_broker(self, bootstrap: str) -> None:
        """DATA_DIR/run/kafka.json: where the CLI sends commands (`sipledger hangup`,
        api/calls.py) and the broker's incarnation (proxy/infra/epoch.py).  Written
        after each broker start and before its topics exist: nobody can read or
        write records of the new broker without seeing its new epoch first."""
        pid = self.broker.pid if self.broker is not None else None
        write_json_atomically(self.data_dir / RUN_DIR / KAFKA_RUN_FILE,
                              {"bootstrap": bootstrap, "pid": os.getpid(),
                               "broker_epoch": new_epoch(pid, clock.now_ms())})

    def topics(self) -> dict[str, int]:
        partitions = self.config.kafka.partitions
        ledger = self.config.ledger
        names = [self.config.topics.sip_events, self.config.topics.call_control,
                 self.config.cdr.records_topic, ledger.events_topic, ledger.calls_topic,
                 ledger.notifications_topic, self.config.trace.topic]
        return {name: partitions for name in names}

    def _create_topics(self, bootstrap: str) -> None:
        kafka = msgspec.structs.replace(self.config.kafka, bootstrap_servers=bootstrap)
        try:
            ensure_topics_sync(kafka, self.topics())
        except Exception as exc:
            raise StartError(f"creating topics on {bootstrap}: {exc}") from None

    def _check_broker(self, bootstrap: str) -> None:
        """Restart a dead embedded broker (with backoff) and recreate its topics:
        it keeps them in memory only."""
        if self.broker is None or self.broker.running or time.monotonic() < self._broker_retry_at:
            return
        self._warn("embedded broker died; restarting it (events wait in the outbox)")
        try:
            self.broker.start()
            self._name_broker(bootstrap)
            self._create_topics(bootstrap)
            self._broker_failures = 0
        except (BrokerError, StartError) as exc:
            delay = RESTART_BACKOFF_S[min(self._broker_failures, len(RESTART_BACKOFF_S) - 1)]
            self._broker_failures += 1
            self._broker_retry_at = time.monotonic() + delay
            self._warn(f"broker restart failed: {exc}; next attempt in {delay:g} s")

    # -- the services --------------------------------------------------------------
    def children(self, bootstrap: str) -> list[Child]:
        """The services, started together; stopped together when `up` ends."""
        c = self.config
        table = [
            # name      runs if              python -m ...                                    says
            ("proxy",   True,                ["proxy", "run", "--sip-port", str(self.sip_port)], "PROXY READY"),
            ("api",     c.api.enabled,       ["api.serve", "--api-port", str(self.api_port)],    "API READY"),
            ("cdr",     c.cdr.enabled,       ["cdr", "--worker-id", "0"],                         "CDR READY"),
            ("billing", c.billing.enabled,   ["billing"],                                          "BILLING READY"),
            ("radius",  c.radius.enabled,    ["radius"],                                           "RADIUS READY"),
            ("media",   c.media.enabled and c.media.launch, ["proxy.runtime.rtpengine"],           "MEDIA READY"),
        ]
        common = ["--data-dir", str(self.data_dir), "--bootstrap", bootstrap]
        if self.config_file is not None:
            common += ["--config", str(self.config_file)]
        logs = self.data_dir / "logs"
        return [Child(name, [sys.executable, "-m", *args, *common], ready, log=logs / f"{name}.log",
                      log_max_bytes=c.logging.max_bytes, log_backups=c.logging.backups)
                for name, enabled, args, ready in table if enabled]
