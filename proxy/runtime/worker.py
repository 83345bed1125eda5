"""One proxy worker process: sockets, timers, outbox and Kafka around the sans-I/O core."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from pathlib import Path

from .. import native
from ..contract import events as ev
from ..core.callevents import CallEventFactory
from ..core.digest import DigestAuthenticator
from ..core.engine import Core, Engine
from ..core.fraudguard import FraudGuard
from ..core.keepalive import send_options
from ..core.location import LocationStore
from ..core.natping import NatKeepalive, NatPinger
from ..core.node import LocalNode
from ..core.peering import Peering
from ..core.ports import MediaResult, Target
from ..core.registrar import Registrar
from ..core.resolver import Answer
from ..core.session_timer import SessionTimer
from ..events.control import ControlConsumer
from ..events.outbox import Outbox
from ..events.publisher import EventPublisher
from ..events.retention import archive_retention
from ..infra import clock, heap
from ..infra.config import RUN_DIR, Config
from ..infra.logs import setup_service_logging
from ..provisioning.live import LiveProvisioning
from ..provisioning.store import ProvisioningStore, default_url
from ..routing.live import LiveRouting
from ..routing.probing import GatewayProber, Health
from ..routing.store import RoutingStore
from ..script.loader import load_script
from ..script.runner import ScriptRouting
from .authorization import AuthorizationClient
from .dns import DnsClient, read_hosts
from .floodguard import FloodGuard, probe_key
from .handoff import Handoff, conn_owner, remote_conn
from .livecalls import LiveCallsFile
from .loaded import LoadedState
from .media import MediaEdge
from .metrics import WorkerMetrics
from .trace import TraceEdge
from .transport import TcpPool, UdpEndpoint, inherited_socket, tcp_socket, udp_socket

log = logging.getLogger("sipledger.worker")


def is_numeric(host: str) -> bool:
    """An IPv4/IPv6 address literal (inet_pton: no resolver involved)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


class RuntimeEffects:
    """The core's Effects port on an asyncio loop."""

    trace_edge: TraceEdge | None = None     # set by the worker (SIP capture, docs/trace.md)

    def __init__(self, loop: asyncio.AbstractEventLoop, outbox: Outbox, default_udp: UdpEndpoint,
                 udp: dict[int, UdpEndpoint], tcp: TcpPool | None, on_emit):
        self.loop = loop
        self.outbox = outbox
        self.default_udp = default_udp
        self.udp = udp
        self.tcp = tcp
        self.on_emit = on_emit
        self.authorization: AuthorizationClient | None = None   # set once credit control is reachable
        self.dns: DnsClient | None = None                        # set before the core starts
        self.media_edge: MediaEdge | None = None                 # set when [media] is enabled
        self.public_udp: UdpEndpoint = default_udp               # the shared port phones send to
        self.worker = 0                                          # this worker's index
        self.handoff: Handoff | None = None                      # siblings (TCP connections they own)

    def dns_query(self, name: str, rdtype: str, callback) -> None:
        if self.dns is None:
            callback(Answer("servfail"))
        else:
            self.dns.query(name, rdtype, callback)

    def send(self, data: bytes, target: Target) -> bool:
        edge = self.trace_edge
        if edge is not None and edge.tracer.on:
            edge.sent(data, target)
        if target.transport == "udp":
            # numeric addresses only: a name would make sendto() resolve it on
            # the event loop, and names in Vias are the sender's to choose
            if not is_numeric(target.host):
                log.warning("not sending to a non-numeric address %.60r", target.host)
                return False
            endpoint = self.udp.get(target.conn, self.default_udp) if target.conn else self.default_udp
            try:
                return endpoint.send(data, target.host, target.port)
            except (OSError, ValueError, OverflowError) as exc:   # EINVAL, a port out of range …
                log.warning("udp send to %s failed: %s", target, exc)
                return False
        if target.conn is not None and target.conn < 0:        # a sibling's connection
            handoff = self.handoff
            return handoff is not None and handoff.write_via(conn_owner(target.conn), target.host,
                                                             target.port, data)
        if self.tcp is None:
            return False
        return self.tcp.send(data, target)

    def flow(self, target: Target, worker: int | None) -> Target | None:
        """How to reach a party where its packets come from (docs/nat.md): UDP from
        the public socket, the one its NAT pinhole was opened toward; TCP over the
        connection it opened, if this worker owns it and it is still up (None:
        a connection of another worker, or gone)."""
        if target.transport == "udp":
            return Target("udp", target.host, target.port, self.public_udp.id)
        if worker is not None and worker != self.worker:
            # written by its owner (handoff.py); if that connection is gone the
            # request times out there (408), as a lost datagram would
            return Target(target.transport, target.host, target.port, remote_conn(worker)) \
                if self.handoff is not None and worker < self.handoff.workers else None
        if self.tcp is None:
            return None
        conn = self.tcp.by_peer.get((target.host, target.port))
        return Target(target.transport, target.host, target.port, conn.id) if conn is not None else None

    def call_later(self, delay: float, fn, *args):
        return self.loop.call_later(delay, fn, *args)

    def emit(self, event) -> None:
        """Never raises: accounting must not stall signalling.  An event that
        cannot be encoded is logged (rate-limited) and dropped."""
        try:
            record = ev.key_bytes(event.call_id), ev.encode(event)
        except Exception as exc:
            log.error("call event %s dropped: cannot encode it: %r", type(event).__name__, exc)
            return
        self.outbox.append(*record)
        self.on_emit()

    def monotonic(self) -> float:
        return self.loop.time()

    def trace(self, data: bytes, source: Target) -> None:
        """ctx.trace(): capture this call's messages from the one being handled on."""
        if self.trace_edge is not None:
            self.trace_edge.flag(data, source)

    def media(self, kind, params, callback) -> None:
        if self.media_edge is None:
            callback(MediaResult(error="media relay off"))
        else:
            self.media_edge.request(kind, params, callback)

    def authorize(self, request, callback) -> None:
        if self.authorization is None:
            callback(None)
        else:
            self.authorization.authorize(request, callback)


def prepare_data_dir(config: Config, data_dir: Path) -> None:
    """Create the shared stores once, before the workers start: SQLite refuses a
    second process switching a new file to WAL at the same moment, so workers
    racing to create the schemas failed at first start ("database is locked")."""
    url = config.provisioning.url or default_url(data_dir)
    for store_class in (ProvisioningStore, RoutingStore):
        store = store_class(url)
        store.create_schema()
        store.close()
    LocationStore.open(config.registrar.location_url, data_dir).close()
    load_secret(data_dir, config.auth.secret)


def load_secret(data_dir: Path, configured: str) -> bytes:
    """Nonce HMAC key shared by the workers of one node (and kept across restarts)."""
    if configured:
        return configured.encode()
    path = data_dir / "nonce.secret"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        os.replace(tmp, path)
    return path.read_text().strip().encode()


class Worker:
    def __init__(self, config: Config, data_dir: Path, index: int, workers: int,
                 udp_fd: int | None = None, tcp_fd: int | None = None):
        self.config = config
        self.data_dir = data_dir
        self.index = index
        self.workers = workers
        self.udp_fd = udp_fd
        self.tcp_fd = tcp_fd
        self.stopping = asyncio.Event()
        self.handoff: Handoff | None = None
        self._flush_scheduled = False

    @property
    def own_port(self) -> int:
        """This worker's own UDP and TCP port (in its Via and Record-Route): 0 = any free one."""
        base = self.config.proxy.worker_port_base
        return base + self.index if base else 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        px = cfg.proxy
        (self.data_dir / "outbox").mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(str(self.data_dir / "outbox" / f"worker-{self.index}.sqlite"))
        self.publisher = EventPublisher(self.outbox, cfg.kafka, cfg.topics.sip_events,
                                        retention=archive_retention(cfg, self.data_dir),
                                        min_interval_s=px.publish_interval_ms / 1000)

        # schemas exist already (prepare_data_dir ran before the workers started)
        store = ProvisioningStore(cfg.provisioning.url or default_url(self.data_dir))
        provisioning = LiveProvisioning(store, poll_interval=cfg.provisioning.reload_seconds)
        location = LocationStore.open(cfg.registrar.location_url, self.data_dir)
        routing_store = RoutingStore(cfg.provisioning.url or default_url(self.data_dir))
        self.prober = GatewayProber(interval=px.gateway_probe_seconds, failures_to_down=2,
                                    successes_to_up=1, failure_codes={408, 503},
                                    probe_timeout=32 * px.t1 * 2)
        routing = LiveRouting(routing_store, poll_interval=cfg.provisioning.reload_seconds,
                              prober=self.prober)
        authenticator = None
        if cfg.auth.enabled:
            authenticator = DigestAuthenticator.from_settings(
                load_secret(self.data_dir, cfg.auth.secret), cfg.auth, worker=self.index)

        # pike + load shedder; the shedder's queue probes carry a key common to the node's workers
        self.guard = FloodGuard(cfg, self.data_dir / RUN_DIR, self.index,
                                probe_key(load_secret(self.data_dir, cfg.auth.secret)))
        shared = self.workers > 1
        if self.udp_fd is not None:     # shared with the other workers (see supervisor)
            public_sock = inherited_socket(self.udp_fd)
        else:
            public_sock = udp_socket(px.listen, px.sip_port)
        self.guard.watch(public_sock)
        public_udp = UdpEndpoint(self._deliver_public if shared else self._deliver)
        udp = {public_udp.id: public_udp}
        self.public_udp = public_udp
        own_udp = public_udp
        if shared:  # a private port so responses and in-dialog requests return here
            own_udp = UdpEndpoint(self._deliver)
            own_sock = udp_socket(px.listen, self.own_port)
            self.guard.watch(own_sock)
            await loop.create_datagram_endpoint(lambda: own_udp, sock=own_sock)
            udp[own_udp.id] = own_udp
        else:
            await loop.create_datagram_endpoint(lambda: public_udp, sock=public_sock)
        ports = {"udp": own_udp.local_port}
        tcp = None
        if px.tcp:
            tcp = TcpPool(loop, self._deliver_tcp, cfg.tcp, exempt=self.guard.trusted,
                          max_message_bytes=cfg.proxy.max_message_bytes)
            public_tcp = (inherited_socket(self.tcp_fd) if self.tcp_fd is not None
                          else tcp_socket(px.listen, px.sip_port))
            await tcp.listen(public_tcp)
            own_tcp = tcp_socket(px.listen, self.own_port) if shared else None
            if own_tcp is not None:
                await tcp.listen(own_tcp)
                ports["tcp"] = own_tcp.getsockname()[1]
            else:
                ports["tcp"] = px.sip_port

        host = px.advertised_host or px.listen
        node = LocalNode(host, ports, px.sip_port, aliases=(px.listen,))
        self.effects = RuntimeEffects(loop, self.outbox, own_udp, udp, tcp, self._schedule_flush)
        self.effects.public_udp, self.effects.worker = public_udp, self.index
        self.trace = TraceEdge(cfg, self.data_dir, self.index,
                               (next((h for h in (host, px.listen) if is_numeric(h)), "0.0.0.0"), px.sip_port))
        self.effects.trace_edge = self.trace
        self.effects.dns = DnsClient(cfg.dns, loop)
        self.guard.start(loop, self.effects.send)
        self.authorization: AuthorizationClient | None = None
        if cfg.authorization.enabled:
            self.authorization = AuthorizationClient(cfg.authorization, self.data_dir)
            await self.authorization.start()
            self.effects.authorization = self.authorization
        if cfg.media.enabled:
            self.effects.media_edge = MediaEdge(cfg.media, self.data_dir)
            await self.effects.media_edge.start()
        # a shared location store ([registrar] location_url): other instances use it too (peering.py)
        peering = Peering(load_secret(self.data_dir, cfg.auth.secret), node) if cfg.registrar.location_url else None
        core = Core(settings=px, effects=self.effects, node=node,
                    events=CallEventFactory(cfg.node.name, self.index),
                    provisioning=provisioning, authenticator=authenticator, location=location,
                    registrar=Registrar(location, cfg.registrar, worker=self.index,
                                        instance_route=peering.instance_route if peering else None),
                    authorization=cfg.authorization if cfg.authorization.enabled else None,
                    routing_data=routing, dns=cfg.dns, hosts=read_hosts(), media=cfg.media)
        core.peering = peering
        core.fraud = FraudGuard(core, cfg.fraud, workers=self.workers)
        self.engine = Engine(core, ScriptRouting(core, load_script(px.routing_script)))
        if cfg.session_timer.enabled or cfg.session_timer.insert:
            core.session_timer = SessionTimer(core, cfg.session_timer)
            core.dialogs.watchers.append(core.session_timer)
        if shared:   # read the shared public socket only once the engine exists
            self.handoff = Handoff(self.data_dir / "run", self.index, self.workers, self._deliver_handed,
                                   self._deliver_handed_tcp, self._write_tcp)
            self.effects.handoff = self.handoff
            self.handoff.start(loop)
            if not await self.handoff.wait_for_siblings():
                log.warning("not every worker is up; calls may start outside their owner")
            await loop.create_datagram_endpoint(lambda: public_udp, sock=public_sock)
        self.control = ControlConsumer(cfg.kafka, cfg.topics.call_control, self.engine.on_command)
        self.publisher.start()
        self.control.start()
        self.loaded = LoadedState(self.data_dir / RUN_DIR, self.index)
        self._publish_loaded(provisioning, routing)
        self.live_calls = LiveCallsFile(self.data_dir / RUN_DIR, self.index, cfg)   # shared: docs/scale-out.md
        housekeeping = loop.create_task(self._housekeeping(provisioning, routing, location, core))
        self.metrics = WorkerMetrics(core, self, self.index == 0) if cfg.metrics.enabled else None
        metrics_task = loop.create_task(self._export_metrics()) if self.metrics is not None else None
        natping = loop.create_task(self._natping(core, location))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        tune_gc()
        log.info("compiled proxy modules: %s", native.status())     # proxy/native.py
        print(f"WORKER READY index={self.index} udp={ports['udp']}", flush=True)
        await self.stopping.wait()

        housekeeping.cancel()
        natping.cancel()
        if metrics_task is not None:
            metrics_task.cancel()
        self.guard.close()
        self.loaded.remove()
        self.live_calls.remove()
        if self.handoff is not None:
            self.handoff.close(loop)
        for endpoint in udp.values():
            endpoint.close()
        if tcp is not None:
            tcp.close()
        await self.control.stop()
        if self.authorization is not None:
            self.authorization.close()
        if self.effects.dns is not None:
            await self.effects.dns.close()
        if self.effects.media_edge is not None:
            self.effects.media_edge.close()
        await self.trace.close()
        self.outbox.flush()
        await self.publisher.stop(drain_timeout=5.0)
        self.outbox.close()

    def _on_data(self, data: bytes, source: Target) -> None:
        if self.trace.tracer.on:           # the only cost of trace when it is off
            self.trace.received(data, source)
        self.engine.on_data(data, source)

    def _deliver(self, data: bytes, source: Target) -> None:
        if self.guard.admit(data, source):
            self.guard.timed(self._on_data, data, source)

    def _deliver_public(self, data: bytes, source: Target) -> None:
        # handed-over datagrams were admitted by the sibling that read them
        if not self.guard.admit(data, source):
            return
        if self.handoff is None or not self.handoff.route(data, source.host, source.port):
            self.guard.timed(self._on_data, data, source)

    def _deliver_tcp(self, data: bytes, source: Target) -> None:
        """A message read from a TCP connection: processed by its Call-ID's owner
        like a datagram (REGISTER stays: its binding names this worker as the
        connection's owner).  docs/nat.md, "TCP"."""
        if not self.guard.admit(data, source):
            return
        if self.handoff is None or data.startswith(b"REGISTER ") \
                or not self.handoff.route(data, source.host, source.port, "tcp"):
            self.guard.timed(self._on_data, data, source)

    def _deliver_handed_tcp(self, data: bytes, ip: str, port: int, reader: int) -> None:
        # read by a sibling from its connection: answers go back through it
        self.guard.timed(self._on_data, data, Target("tcp", ip, port, remote_conn(reader)))

    def _write_tcp(self, data: bytes, ip: str, port: int) -> None:
        """A sibling's message for one of our connections."""
        tcp = self.effects.tcp
        conn = tcp.by_peer.get((ip, port)) if tcp is not None else None
        if conn is not None:
            conn.write(data)

    def _deliver_handed(self, data: bytes, ip: str, port: int) -> None:
        # answered through our copy of the shared socket: the peer sees the public port
        self.guard.timed(self._on_data, data, Target("udp", ip, port, self.public_udp.id))

    def _schedule_flush(self) -> None:
        # one outbox write per burst of events, a few ms after the first
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.config.proxy.outbox_flush_ms / 1000, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.outbox.flush()
        except Exception:
            log.exception("outbox flush failed; events stay buffered")
            self._schedule_flush()
            return
        self.publisher.wake()

    async def _housekeeping(self, provisioning: LiveProvisioning, routing: LiveRouting,
                            location: LocationStore, core: Core) -> None:
        loop = asyncio.get_running_loop()
        tick = 0
        while True:
            await asyncio.sleep(self.config.provisioning.reload_seconds)
            tick += 1
            try:
                now = loop.time()
                provisioning.maybe_reload(now)
                routing.maybe_reload(now)
                self._probe_gateways(core, now)
                self._publish_loaded(provisioning, routing)
                if tick % 30 == 0 and self.index == 0:
                    purged = location.purge(clock.time())
                    if self.metrics is not None:
                        self.metrics.expired_contacts += purged
                self.live_calls.publish_calls(core)       # `sipledger calls` (proxy/runtime/livecalls.py)
            except Exception:
                log.exception("housekeeping failed")

    async def _export_metrics(self) -> None:
        """The core's plain counters into the node's metrics (proxy/runtime/metrics.py)."""
        assert self.metrics is not None
        while True:
            await asyncio.sleep(self.config.metrics.interval_seconds)
            try:
                self.metrics.tick(asyncio.get_running_loop().time())
            except Exception:
                log.exception("metrics export failed")

    async def _natping(self, core: Core, location: LocationStore) -> None:
        """NAT keep-alives (proxy/core/natping.py): this worker's share of the bindings."""
        nat = self.config.nat
        keepalive = NatKeepalive(core, location, NatPinger(
            self.index, self.workers, nat.keepalive_seconds, nat.keepalive_failures, nat.keepalive_method))
        period = min(0.1, nat.keepalive_seconds / 10)    # at most MAX_IN_FLIGHT new pings per tick
        while True:
            await asyncio.sleep(period)
            try:
                keepalive.tick()
            except Exception:
                log.exception("NAT keep-alive failed")

    def _publish_loaded(self, provisioning: LiveProvisioning, routing: LiveRouting) -> None:
        """DATA_DIR/run/worker-<i>.loaded: the versions in use (proxy/runtime/loaded.py)."""
        down = [s.gateway for s in self.prober.status() if s.state is Health.DOWN]
        self.loaded.update(provisioning.snapshot.version, routing.snapshot.version, down)

    def _probe_gateways(self, core: Core, now: float) -> None:
        prober = self.prober
        for gateway in prober.due(now):
            name = gateway.name

            def result(status, name=name):
                when = asyncio.get_running_loop().time()
                if status is None:
                    prober.on_timeout(name, when)
                else:
                    prober.on_reply(name, status, when)
            if not send_options(core, gateway.uri(), result):
                prober.on_timeout(name, now)
        for change in prober.pop_changes():
            log.warning("gateway %s", change)


def tune_gc() -> None:
    """Calls keep millions of small objects alive for ~32 s (transaction timers
    D/K/L/M): a full collection scans them all and stalls the loop for a second
    or more, long enough for UDP buffers to overflow.  The per-call structures
    break their own reference cycles when they end (TxDriver, ProxyCall,
    Dialog), so they die by reference counting; the youngest generation is
    still collected for the runtime's short-lived cycles, and the older ones
    never are.

    The middle generation is not collected either (it was, every 10th young
    pass): a call's objects outlive any young interval, so each was scanned
    a second time there, to find nothing (0 cycles in bench/proxy_cpu.py), and
    the cycle collector's cost per object grows with the set it walks (cache
    misses): ~20,000 objects cost ~5 ms, a middle pass over ~200,000 ~100 ms
    of CPU, a stall every ~1.3 s at 1,000 calls/s and ~60 us of CPU per call.
    The price: a cycle that becomes garbage only after surviving one young
    pass (20,000 allocations, not 200,000) now stays, as one surviving a
    middle pass always did."""
    heap.settle(20_000, 1_000_000_000, 1_000_000_000, collect=True)


def run(config: Config, data_dir: Path, index: int, workers: int,
        udp_fd: int | None = None, tcp_fd: int | None = None) -> None:
    setup_service_logging(f"%(asctime)s worker{index} %(name)s %(levelname)s %(message)s",
                          burst=config.logging.repeat_burst, interval=config.logging.repeat_interval_s)
    import uvloop
    uvloop.run(Worker(config, data_dir, index, workers, udp_fd, tcp_fd).run())
