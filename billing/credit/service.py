"""The billing service: credit control, the ledger's one writer, and its Kafka side.

    python -m billing --data-dir D [--config F] [--bootstrap HOST:PORT]

One process, one asyncio loop (uvloop), the pure state machine of
billing/credit/control.py in memory:

* **Authorization** (UDP, ``[credit] listen``/``port``; port 0 = a free one,
  written to ``DATA_DIR/run/credit.port`` as decimal text + newline and reused
  at the next start if free).  Each ``AuthorizeRequest`` datagram is answered
  from memory: no I/O but the reply.
* **Admin RPC** (unix socket ``DATA_DIR/run/billing.sock``, mode 0600,
  billing/rpc.py): the money commands of billing/application.py -- account
  changes, top-ups / adjustments / refunds, live balances -- against the live
  state (billing/credit/live.py).  Money is persisted before it is answered.
* **Kafka**, one consumer group over three topics:
  ``sip.events`` -> repartitioned by account to ``billing.calls`` (Call-ID ->
  account from ``invite.received``, billing/credit/steps.py); ``billing.calls`` -> call steps
  (answered / ended) into credit control; ``cdr.records`` -> rated and debited.
  Teardowns go to ``call.control``.  Ledger events and notifications
  (proxy/contract/ledger.py) go through the transactional outbox to
  ``ledger.events`` / ``billing.notifications``.
* **The ledger** (SQL, billing/ledger/store.py) is written by one thread
  (billing/ledger/writer.py) that batches requests into transactions (group commit).  At start the state is
  the fold of the ledger: a broker restart or a killed service loses nothing.

Delivery: input is at-least-once; offsets are committed only after what they
caused is durable (``sip.events``: not past an INVITE whose call is still
ringing, so the Call-ID -> account map is rebuilt by replay).  Every effect is
idempotent by its event id, so replays and duplicates change nothing.

Prints ``BILLING READY udp=PORT`` once the state is loaded, the UDP port is
bound and the Kafka consumer has its partitions (or 20 s passed without a
broker: authorization works without one).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from billing import rpc
from billing.application import BillingApplication
from billing.errors import LedgerError
from billing.ledger.events import Problem, event_id
from billing.ledger.owners import Fenced, Ownership
from billing.ledger.store import LedgerStore, ServiceLock, ServiceRunning
from billing.ledger.writer import Writer
from billing.rating.model import RatingError, number_from_uri
from billing.rating.store import RatesStore
from proxy.contract import commands as cmd
from proxy.contract import credit
from proxy.contract import events as ev
from proxy.contract.callfold import end_ms_of, is_call_event
from proxy.contract.cdr import CdrLeg
from proxy.contract.ledger import encode_event, encode_notification
from proxy.infra import heap, metrics
from proxy.infra.clock import now_ms
from proxy.infra.config import BILLING_SOCKET_FILE, CREDIT_PORT_FILE, RUN_DIR, Config
from proxy.infra.kafka import bootstrap_servers, consumer_kwargs, ensure_topics, producer_kwargs, topic_partitions

from .control import CreditControl, Effects
from .live import LiveLedger
from .relay import CommandRelay
from .steps import CallStep, decode_step, encode_step

log = logging.getLogger("sipledger.billing")

COMMIT_INTERVAL_S = 0.5
SLICE_S = 0.0005          # loop work yields this often so authorization answers are not held up
POLL_INTERVAL_S = 1.0
LEDGER_LINGER_S = 0.010   # call steps' ledger appends wait this long for company (one commit for all)
CURSOR_SAVE_S = 1.0       # the ledger.events publish cursor is saved at most this often under load
UDP_RCVBUF = 4 * 1048576
READY_WITHOUT_KAFKA_S = 20.0
_END_EVENTS = (ev.CallBye, ev.DialogTimeout, ev.DialogTeardown, ev.CallFailed, ev.MediaTimeout,
               ev.SessionExpired)
_T = TypeVar("_T")


def _tag(kind: type[msgspec.Struct]) -> str:
    """The ``type`` tag of a sip.events struct (``"call.bye"``, ...)."""
    tag = kind.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{kind.__name__} has no text tag")
    return tag


_END_REASONS: dict[type, str] = {kind: _tag(kind) for kind in _END_EVENTS}     # a call step's ``reason``


def end_step(event: ev.CallEvent, account: str) -> CallStep:
    """The ``ended`` step of a call-ending event (``_END_EVENTS``), at the time
    the call ended: a media timeout's last media, else the event's time."""
    return CallStep(kind="ended", id=event.id, call_id=event.call_id, account=account,
                    ts_ms=end_ms_of(event), reason=_END_REASONS[type(event)])


def _opened(part: _T | None, what: str) -> _T:
    """A part ``BillingService.run`` opens before it starts anything that uses it."""
    if part is None:
        raise RuntimeError(f"billing: the {what} is not open (BillingService.run opens it first)")
    return part


def _tune_for_latency() -> None:
    """Authorization answers come from the loop thread; keep it from waiting.
    Other threads (the ledger writer, to_thread polls) hold the GIL at most
    0.5 ms at a time instead of 5 ms, and the state loaded at start is frozen
    out of the garbage collector, whose full collections stay rare (the
    service's objects are acyclic; reference counting frees them)."""
    sys.setswitchinterval(0.0005)
    heap.settle(20_000, 20, 1_000, collect=True)


# -- the UDP authorization server -----------------------------------------------------------

class AuthorizationProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: "BillingService"):
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            request = credit.decode_request(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.service.stats["auth_undecodable"] += 1
            return
        own = self.service.own
        if own is not None and not own.owns(request.account):
            # not ours (the proxy's owner table is stale, or a rebalance is under way):
            # no answer, the proxy asks again after its timeout with a fresh table
            self.service.stats["auth_not_owner"] += 1
            return
        try:
            response = self.service.core.authorize(request, now_ms())
        except Exception:                      # no answer: the proxy applies its on_error policy
            log.exception("authorization of %s failed", request.call_id)
            self.service.stats["auth_errors"] += 1
            return
        if self.transport is None:             # asyncio calls connection_made() first
            raise RuntimeError("authorization datagram before the socket was made")
        self.transport.sendto(credit.encode(response), addr)

    def error_received(self, exc) -> None:
        log.debug("authorization socket: %r", exc)


# -- repartitioning sip.events by account ------------------------------------------------------------

class _Invite:
    __slots__ = ("account", "number", "partition", "offset", "pinned", "seen_ms")

    def __init__(self, account: str, number: str, partition: int, offset: int, seen_ms: int):
        self.account, self.number = account, number
        self.partition, self.offset = partition, offset
        self.pinned = True                 # ringing: sip.events is not committed past its INVITE
        self.seen_ms = seen_ms


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: "BillingService"):
        self.service = service

    async def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            await self.service._commit(final=True)

    async def on_partitions_assigned(self, assigned) -> None:
        service = self.service
        if service.own is not None:
            try:
                await service._take_partitions({tp.partition for tp in assigned
                                                if tp.topic == service.ledger_cfg.calls_topic})
            except Exception as exc:
                # the group gave us partitions we could not load: their records must not be
                # applied to a state without their history.  Stop; a restart joins again.
                print(f"error: billing: taking partitions over failed: {exc!r}", file=sys.stderr, flush=True)
                service._failed = True
                service._stop.set()
                return
        service.assigned.set()


class _BrokerGone(Exception):
    pass


# -- the service -----------------------------------------------------------------------------

class BillingService:
    def __init__(self, config: Config, data_dir: Path):
        self.config = config
        self.data_dir = Path(data_dir)
        self.kafka = config.kafka
        self.credit = config.credit
        self.topics = config.topics
        self.ledger_cfg = config.ledger
        self.run_dir = self.data_dir / RUN_DIR
        self.core = CreditControl(config.credit, default_plan=config.billing.default_plan)
        self.stats: Counter = Counter()
        self.assigned = asyncio.Event()
        self.udp_port = 0
        self._stop = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._invites: dict[str, _Invite] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._sends: list[asyncio.Future] = []
        self._pending_commands: list[cmd.ControlCommand] = []
        self._persisting: set[asyncio.Future] = set()
        self._deferred: list | None = None       # _persist requests held while steps are worked off
        self._outbox_wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._last_commit = 0.0
        self._failed = False
        self._due: collections.deque[str] = collections.deque()
        self._due_ready = asyncio.Event()
        self._slice = time.perf_counter()
        self._lock = ServiceLock(self.data_dir)
        self.store: LedgerStore | None = None
        self.rates: RatesStore | None = None
        self.writer: Writer | None = None
        self.app: BillingApplication | None = None
        # several instances ([billing] partitioned): the partitions of billing.calls this one owns
        self.own: Ownership | None = None
        self._cursors: dict[int, int] = {}      # partition -> last seq published to ledger.events
        self.relay: CommandRelay | None = None   # account commands for other instances' accounts

    # -- start / stop -----------------------------------------------------------------------
    async def run(self, *, on_ready: Callable[[int], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        for attempt in range(100):                 # a CLI command may hold it for a moment
            try:
                self._lock.acquire()
                break
            except ServiceRunning as exc:
                if attempt == 99:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    return 1
                await asyncio.sleep(0.1)
        udp = server = None
        tasks: list[asyncio.Task] = []
        try:
            url = self.config.billing.database_url(self.data_dir)
            self.rates = RatesStore(url)
            self.store = LedgerStore(url)
            await self._create_schema(self.rates, self.store)
            self.writer = Writer(self.store, loop, linger_s=LEDGER_LINGER_S)
            if self.config.billing.partitioned:
                self.own = Ownership(self.ledger_cfg.partitions or self.kafka.partitions,
                                     self.config.billing.instance or f"{self.config.node.name}-{os.getpid()}",
                                     host=self.credit.advertise or self.credit.listen)
                self.store.fence = self.own.check_in
                own = self.own
                await self.writer.txn(lambda conn: own.ensure_rows(conn, now_ms()))
            self.app = BillingApplication(
                LiveLedger(self.core, self.store, self.writer, carry_out=self._carry_out, status=self._status,
                           rates=self.rates, owns=self.own.owns if self.own is not None else None),
                default_currency=self.config.billing.currency, default_plan=self.config.billing.default_plan)
            if self.own is not None:
                self.relay = CommandRelay(self.own, self.store, self.app, self.stats)
            self._rates_version = self.rates.version()
            self.core.set_rates(self.rates.snapshot())
            self._accounts_version = self.store.version()
            started = time.perf_counter()
            if self.own is None:
                fx = self.core.load(self.store.list_accounts(), self.store.iter_events(), now_ms())
                self._handle(fx)
            log.warning("billing: state rebuilt from %s in %.2fs: %d accounts, %d live calls",
                        self.store.url, time.perf_counter() - started, len(self.core.accounts),
                        len(self.core.calls))
            _tune_for_latency()
            udp = await self._start_udp(loop)
            if self.own is not None:
                self.own.port = self.udp_port
            server = await self._start_rpc()
            tasks = [asyncio.create_task(self._kafka_loop(), name="kafka"),
                     asyncio.create_task(self._due_loop(), name="timers"),
                     asyncio.create_task(self._poll_loop(), name="poll"),
                     asyncio.create_task(self._sweep_loop(), name="sweep")]
            if self.own is not None:
                tasks.append(asyncio.create_task(_opened(self.relay, "command relay").run(), name="commands"))
            try:
                await asyncio.wait_for(self.assigned.wait(), READY_WITHOUT_KAFKA_S)
            except asyncio.TimeoutError:
                log.warning("billing: no Kafka partitions within %.0fs; authorizing anyway",
                            READY_WITHOUT_KAFKA_S)
            if on_ready is not None:
                on_ready(self.udp_port)
            waiter = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            status = 0
            for task in tasks:
                if task in done and not task.cancelled() and task.exception() is not None:
                    print(f"error: billing {task.get_name()} stopped: {task.exception()!r}",
                          file=sys.stderr, flush=True)
                    status = 1
            waiter.cancel()
            return 1 if self._failed else status
        except (LedgerError, RatingError, OSError) as exc:
            print(f"error: billing: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for handle in self._timers.values():
                handle.cancel()
            if udp is not None:
                udp.close()
            if server is not None:
                server.close()
                with contextlib.suppress(OSError):
                    (self.run_dir / BILLING_SOCKET_FILE).unlink()
            if self.writer is not None:
                await asyncio.gather(*self._persisting, return_exceptions=True)
                self.writer.close()
                self.stats["ledger_commits"] = self.writer.commits
                self.stats["ledger_calls"] = self.writer.calls
            print(f"BILLING STATS {json.dumps(dict(self.stats | Counter(self.core.stats)))}",
                  file=sys.stderr, flush=True)
            if self.store is not None:
                self.store.close()
            if self.rates is not None:
                self.rates.close()
            self._lock.release()

    async def _create_schema(self, rates: RatesStore, store: LedgerStore) -> None:
        """Tables made if missing.  Several instances starting together on an
        empty shared database race on CREATE TABLE: the loser tries again."""
        for attempt in range(5):
            try:
                rates.create_schema()
                store.create_schema()
                return
            except (LedgerError, RatingError):
                if not self.config.billing.partitioned or attempt == 4:
                    raise
                await asyncio.sleep(0.2 + random.random() * 0.5)

    async def _start_udp(self, loop: asyncio.AbstractEventLoop) -> asyncio.DatagramTransport:
        host, port = self.credit.listen, self.credit.port
        port_file = self.run_dir / CREDIT_PORT_FILE
        candidates = [port]
        if port == 0:
            with contextlib.suppress(OSError, ValueError):
                candidates.insert(0, int(port_file.read_text().strip()))   # keep the proxy's target
        transport: asyncio.DatagramTransport | None = None
        for candidate in candidates:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: AuthorizationProtocol(self), local_addr=(host, candidate))
                break
            except OSError as exc:
                if candidate == candidates[-1]:
                    raise OSError(f"authorization UDP {host}:{candidate}: {exc.strerror or exc}") from None
        if transport is None:                   # not reached: the last candidate binds or raises
            raise OSError(f"authorization UDP {host}: no port to bind")
        self.udp_port = transport.get_extra_info("sockname")[1]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # a burst that arrives while the loop is busy (a ledger batch, a slice of
            # timers) waits in the kernel instead of being dropped: the default
            # ~200 kB holds ~40 ms at 5,000 requests/s, a dropped request costs
            # the proxy its whole timeout (Linux caps this at net.core.rmem_max)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{self.udp_port}\n")
        os.replace(tmp, port_file)
        return transport

    async def _start_rpc(self):
        path = self.run_dir / BILLING_SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()               # ours: the lock says no other service runs
        old = os.umask(0o077)
        try:
            server = await asyncio.start_unix_server(self._rpc_client, path=str(path))
        finally:
            os.umask(old)
        return server

    # -- effects ------------------------------------------------------------------------------
    def _handle(self, fx: Effects) -> None:
        if fx.events or fx.problems or fx.notifications:
            self._persist(fx.events, fx)
        for command in fx.commands:
            self._send_command(command)
        loop = asyncio.get_running_loop()
        for call_id, due in fx.timers.items():
            old = self._timers.pop(call_id, None)
            if old is not None:
                old.cancel()
            if due is not None:
                delay = max(0.0, (due - now_ms()) / 1000)
                self._timers[call_id] = loop.call_at(loop.time() + delay, self._fire, call_id)

    def _fire(self, call_id: str) -> None:
        # many calls can fall due together: they are worked off in slices
        self._timers.pop(call_id, None)
        self._due.append(call_id)
        self._due_ready.set()

    async def _due_loop(self) -> None:
        while True:
            await self._due_ready.wait()
            self._due_ready.clear()
            while self._due:
                call_id = self._due.popleft()
                if call_id not in self._timers:       # not re-armed meanwhile
                    self._guarded(self.core.due, call_id, now_ms())
                await self._pause()

    def _guarded(self, fn, *args) -> None:
        """One call's trouble must not stop the others: log, count, go on."""
        try:
            self._handle(fn(*args))
        except Exception:
            log.exception("billing: %s%r failed", getattr(fn, "__name__", fn), args[:2])
            self.stats["errors"] += 1

    async def _pause(self) -> None:
        """Yield to the loop (pending datagrams) once a slice of work is used up."""
        if time.perf_counter() - self._slice >= SLICE_S:
            # deferred persists go to the writer first, and whatever else runs
            # meanwhile (timers, RPC, datagrams) persists directly: the writer
            # gets the requests in the order memory applied them
            held, self._deferred = self._deferred, None
            if held is not None:
                self._submit(held)
            await asyncio.sleep(0)
            if held is not None:
                self._deferred = []
            self._slice = time.perf_counter()

    def _outbox_rows(self, fx: Effects) -> list[tuple[str, str, bytes]]:
        topic = self.ledger_cfg.notifications_topic
        return [(topic, n.account, encode_notification(n)) for n in fx.notifications]

    def _persist(self, events, fx: Effects) -> None:
        """Memory-first events (already applied): persist, and take back any the
        ledger had already (a replay that slipped through).  While a batch of
        call steps is worked off (``_deferring``) the requests wait in
        ``_deferred`` and go to the writer together (one id lookup and one
        INSERT for all of them); they are handed over before anything else can
        run on the loop, so the writer still gets every request in the order
        memory applied it."""
        request = (list(events), list(fx.problems), self._outbox_rows(fx))
        if self._deferred is not None:
            self._deferred.append(request)
            return
        self._submit([request])

    @contextlib.contextmanager
    def _deferring(self):
        """Collect ``_persist`` requests until the end of the block (handed
        over before each yield to the loop too: ``_pause``).  Only code that
        runs without yielding but through ``_pause`` may use it."""
        self._deferred = []
        try:
            yield
        finally:
            requests, self._deferred = self._deferred, None
            self._submit(requests)

    def _submit(self, requests: list) -> None:
        if not requests:
            return
        futures = _opened(self.writer, "ledger writer").append_many(requests)
        for (events, _, _), future in zip(requests, futures):
            self._persisting.add(future)
            future.add_done_callback(functools.partial(self._persisted, events))

    def _persisted(self, events: list, f: asyncio.Future) -> None:
        self._persisting.discard(f)
        if f.cancelled():
            return
        exc = f.exception()
        if isinstance(exc, Fenced):
            self._fenced_out(exc)
            return
        if exc is not None:
            log.error("billing: persisting %d events failed: %r", len(events), exc)
            self.stats["persist_errors"] += 1
            self._failed = True
            self._stop.set()                # memory is ahead of the ledger: restart from it
            return
        new_ids = {e.id for e in f.result()}
        for event in events:
            if event.id not in new_ids:
                self.core.undo(event)
        self.stats["events_persisted"] += len(new_ids)
        self._outbox_wakeup.set()

    def _send_command(self, command: cmd.ControlCommand) -> None:
        producer = self._producer
        if producer is None:
            self._pending_commands.append(command)
            return
        self.stats["commands_sent"] += 1

        async def send() -> None:
            try:
                await cmd.publish(producer, self.topics.call_control, command)
            except Exception as exc:           # the teardown is retried by its timer
                log.warning("billing: sending %s for %s failed: %r", type(command).__name__,
                            command.call_id, exc)
        asyncio.get_running_loop().create_task(send())

    # -- Kafka --------------------------------------------------------------------------------
    async def _kafka_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._kafka_session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("billing: Kafka session ended: %r; reconnecting in %.1fs", exc, backoff)
                self.stats["kafka_reconnects"] += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _kafka_session(self) -> None:
        kafka = self.kafka
        partitions = self.ledger_cfg.partitions or kafka.partitions
        cdr_topic = self.config.cdr.records_topic
        await ensure_topics(kafka, {
            self.topics.sip_events: kafka.partitions, self.topics.call_control: kafka.partitions,
            cdr_topic: self.config.cdr.partitions or kafka.partitions,
            self.ledger_cfg.calls_topic: partitions, self.ledger_cfg.events_topic: partitions,
            self.ledger_cfg.notifications_topic: partitions}, timeout=30.0)
        if self.own is not None:
            actual = await topic_partitions(kafka, self.ledger_cfg.calls_topic)
            if actual != self.own.partitions:
                # accounts would map to other partitions than the owner table says: refuse to run
                print(f"error: billing: {self.ledger_cfg.calls_topic} has {actual} partitions, the configuration "
                      f"says {self.own.partitions} ([ledger] partitions / [kafka] partitions)",
                      file=sys.stderr, flush=True)
                self._failed = True
                self._stop.set()
                return
        producer = AIOKafkaProducer(**producer_kwargs(kafka, client_id="sipledger-billing"))
        consumer = AIOKafkaConsumer(**consumer_kwargs(
            kafka, group_id=self.credit.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id="sipledger-billing", max_poll_records=2000))
        consumer.subscribe([self.topics.sip_events, self.ledger_cfg.calls_topic, cdr_topic],
                           listener=_Rebalance(self))
        broker_gone = publisher = None
        self._positions.clear()
        for invite in self._invites.values():
            invite.pinned = False              # offsets of another broker session mean nothing
        try:
            await producer.start()
            self._producer = producer
            pending, self._pending_commands = self._pending_commands, []
            for command in pending:
                self._send_command(command)
            await consumer.start()
            self._consumer = consumer
            broker_gone = await self._watch_broker()
            publisher = asyncio.create_task(
                self._publish_owned(producer) if self.own is not None else self._publish_outbox(producer),
                name="outbox")
            await self._consume(consumer, producer, broker_gone, publisher)
        finally:
            self._consumer = None
            self._producer = None
            for task in (broker_gone, publisher):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(Exception):
                await self._commit(final=True, consumer=consumer)
            if self.own is not None:            # out of the group: others get our partitions
                with contextlib.suppress(Exception):
                    await self._take_partitions(set())
            for client in (consumer, producer):
                with contextlib.suppress(BaseException):
                    await client.stop()

    async def _watch_broker(self) -> asyncio.Task | None:
        """On the embedded broker: a task that ends when its TCP connection drops
        (a restarted Tansu has lost every topic: start over with a new session)."""
        if self.kafka.client_profile != "tansu":
            return None
        host, _, port = bootstrap_servers(self.kafka).split(",")[0].strip().rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))

        async def wait_for_close() -> None:
            try:
                await reader.read()
            except OSError:
                pass
            finally:
                writer.close()
        return asyncio.get_running_loop().create_task(wait_for_close())

    async def _consume(self, consumer, producer, broker_gone, publisher) -> None:
        order = {self.topics.sip_events: 0, self.ledger_cfg.calls_topic: 1, self.config.cdr.records_topic: 2}
        loop = asyncio.get_running_loop()
        while True:
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=200, max_records=2000))
            waiting = {fetch, publisher} | ({broker_gone} if broker_gone is not None else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch
            else:
                batch = fetch.result()
                not_ready = False
                for tp in sorted(batch, key=lambda t: (order.get(t.topic, 9), t.partition)):
                    records = batch[tp]
                    if tp.topic == self.topics.sip_events:
                        await self._repartition(tp, records, producer)
                    elif tp.topic == self.ledger_cfg.calls_topic:
                        if self.own is not None and tp.partition not in self.own.ready:
                            # not loaded (failed, fenced out, or still loading: a fetch in flight can
                            # bring a partition's records while on_partitions_assigned folds it): never
                            # applied to a state without its history.  Seek back, so that this consumer
                            # (once loaded) or the partition's next owner reads them again: a skipped
                            # position would be committed with the next commit, and the steps lost
                            self.stats["steps_not_owned"] += len(records)
                            with contextlib.suppress(IllegalStateError):    # revoked meanwhile: nothing to keep
                                consumer.seek(tp, records[0].offset)
                            not_ready = True
                            continue
                        await self._on_steps(records)
                    elif self.own is not None:
                        await self._repartition_cdrs(records, producer)
                    else:
                        await self._on_cdrs(records)
                    self._positions[tp] = records[-1].offset + 1
                if not_ready:
                    await asyncio.sleep(0.05)   # the load (or the group) first: no spinning on those records
            if publisher.done():
                publisher.result()              # raises what stopped it
                raise _BrokerGone("outbox publisher stopped")
            if broker_gone is not None and broker_gone.done():
                raise _BrokerGone(f"connection to {bootstrap_servers(self.kafka)} closed")
            if loop.time() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit()

    async def _commit(self, *, final: bool = False, consumer: AIOKafkaConsumer | None = None) -> None:
        consumer = consumer or self._consumer
        self._last_commit = asyncio.get_running_loop().time()
        if consumer is None or not self._positions:
            return
        positions = dict(self._positions)
        sends, self._sends = self._sends, []
        if sends:
            await asyncio.gather(*sends)        # repartitioned steps are on the broker
        await _opened(self.writer, "ledger writer").barrier()     # memory-first events are in the ledger
        pins: dict[int, int] = {}
        for invite in self._invites.values():
            if invite.pinned:
                pins[invite.partition] = min(pins.get(invite.partition, invite.offset), invite.offset)
        offsets = {}
        for tp, position in positions.items():
            if tp.topic == self.topics.sip_events and tp.partition in pins:
                position = min(position, pins[tp.partition])
            offsets[tp] = OffsetAndMetadata(position, "")
        assignment = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assignment}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.stats["commits"] += 1
        except Exception as exc:
            log.warning("billing: commit failed (%r); records will be read again", exc)

    async def _repartition(self, tp: TopicPartition, records, producer: AIOKafkaProducer) -> None:
        topic = self.ledger_cfg.calls_topic
        self._slice = time.perf_counter()
        for record in records:
            await self._pause()
            try:
                event = ev.read(record.value)
            except ev.Unreadable as exc:
                self.stats[f"sip_{exc.reason}"] += 1
                continue
            if isinstance(event, ev.FraudAlert) and event.action == "block_account" and event.account:
                self._sends.append(asyncio.ensure_future(self._block_for_fraud(event)))
            if not is_call_event(event):             # e.g. registration.dropped: no call state
                self.stats["sip_not_a_call"] += 1
                continue
            step = None
            if isinstance(event, ev.InviteReceived):
                account = event.caller.account
                if account and event.call_id not in self._invites:
                    self._invites[event.call_id] = _Invite(
                        account, number_from_uri(event.callee.request_uri), tp.partition,
                        record.offset, now_ms())
                continue
            if isinstance(event, ev.CallAnswered):
                invite = self._invites.get(event.call_id)
                if invite is not None:
                    invite.pinned = False
                    step = CallStep(kind="answered", id=event.id, call_id=event.call_id,
                                    account=invite.account, number=invite.number, ts_ms=event.ts_ms)
            elif isinstance(event, _END_EVENTS):
                invite = self._invites.pop(event.call_id, None)
                account = invite.account if invite is not None else None
                if account is None and event.call_id in self.core.calls:
                    account = self.core.calls[event.call_id].account
                if account is not None:
                    step = end_step(event, account)
            if step is not None:
                self.stats["steps_out"] += 1
                self._sends.append(asyncio.ensure_future(
                    producer.send(topic, encode_step(step), key=step.account.encode())))

    async def _block_for_fraud(self, alert: ev.FraudAlert) -> None:
        """[fraud] block_account: a critical fraud alert blocks the caller's account,
        as `sipledger account block` does (its live calls are torn down).  A
        caller without a billing account is left alone."""
        app = self.app
        if app is None or alert.account is None:
            return
        try:
            if self.own is not None and not self.own.owns(alert.account):
                # another instance's account: its owner blocks it (and tears its calls down)
                request = rpc.RpcRequest(op="account.put", account=alert.account, fields={"status": "blocked"})
                answer = await _opened(self.relay, "command relay").forward(request)
                if not answer.ok:
                    raise LedgerError(answer.error, status=answer.status)
            else:
                await app.put_account(alert.account, {"status": "blocked"}, create=False)
        except LedgerError as exc:
            log.info("billing: fraud alert for %s: account not blocked: %s", alert.account, exc)
            return
        self.stats["fraud_blocks"] += 1
        log.warning("billing: account %s blocked: fraud %s %s=%d (threshold %d, rule %s/%d)", alert.account,
                    alert.severity, alert.parameter, alert.value, alert.threshold, alert.profile, alert.rule_id)

    async def _on_steps(self, records) -> None:
        legs: list[CdrLeg] = []
        with self._deferring():
            await self._steps(records, legs)
        if legs:
            await self._debit(legs)

    async def _steps(self, records, legs: list[CdrLeg]) -> None:
        self._slice = time.perf_counter()
        for record in records:
            await self._pause()
            now = now_ms()
            try:
                step = decode_step(record.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.stats["steps_undecodable"] += 1
                continue
            self.stats[f"steps_{step.kind}"] += 1
            if step.kind == "cdr":
                if step.cdr is not None:
                    legs.append(step.cdr)
            elif step.kind == "answered":
                if now - step.ts_ms > self.core.max_call_ms:
                    continue                    # a replay of a call long over
                self._guarded(self.core.answered, step.call_id, step.account, step.number, step.ts_ms, now)
            else:
                self._guarded(self.core.ended, step.call_id, step.ts_ms, now)

    def _legs(self, records) -> list[CdrLeg]:
        legs = []
        for record in records:
            try:
                legs.append(msgspec.json.decode(record.value, type=CdrLeg))
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.stats["cdr_undecodable"] += 1
        return legs

    async def _on_cdrs(self, records) -> None:
        await self._debit(self._legs(records))

    async def _repartition_cdrs(self, records, producer: AIOKafkaProducer) -> None:
        """Several instances: a CDR leg goes to its account's owner through ``billing.calls``."""
        topic = self.ledger_cfg.calls_topic
        for leg in self._legs(records):
            step = CallStep(kind="cdr", id=f"cdr-{leg.cdr_id}-{leg.leg}", call_id=leg.call_id, account=leg.account,
                            ts_ms=leg.end_ms, cdr=leg)
            self.stats["cdr_steps_out"] += 1
            self._sends.append(asyncio.ensure_future(
                producer.send(topic, encode_step(step), key=leg.account.encode())))

    async def _debit(self, legs: list[CdrLeg]) -> None:
        now = now_ms()
        events, problems = [], []
        leg_end_ms: list[int] = []
        self._slice = time.perf_counter()
        for leg in legs:
            await self._pause()
            self.stats["cdr_legs"] += 1
            leg_end_ms.append(leg.end_ms)
            try:
                planned, problem = self.core.plan_cdr(leg, now)
            except Exception as exc:            # a poison record must not stop the stream
                log.exception("billing: rating CDR %s/%d failed", leg.cdr_id, leg.leg)
                planned, problem = [], Problem(id=event_id("problem", leg.cdr_id, leg.leg), ts_ms=now,
                                               account=leg.account, call_id=leg.call_id, cdr_id=leg.cdr_id,
                                               leg=leg.leg, reason=f"not debited: internal error {exc!r}"[:300])
            events += planned
            if problem is not None:
                problems.append(problem)
        if not events and not problems:
            return
        self._handle(self.core.cdr_done(events))
        new = await _opened(self.writer, "ledger writer").append(events, problems)
        self.stats["debits"] += sum(1 for e in new if e.kind == "debit")
        self.stats["debit_duplicates"] += sum(1 for e in events if e.kind == "debit") - \
            sum(1 for e in new if e.kind == "debit")
        fx = self.core.apply_external(new, now_ms())
        self._handle(fx)
        self._outbox_wakeup.set()
        # how far behind the calls' ends the ledger is (the newest CDR it just applied)
        metrics.gauge("ledger_lag_seconds", max(0, now_ms() - max(leg_end_ms, default=now)) / 1000)

    # -- several instances: partitions taken and given up, publishing what we own ----------------
    async def _take_partitions(self, parts: set[int]) -> None:
        """The group gave us ``parts`` of billing.calls (all of them: an eager
        rebalance revokes and assigns everything).  A partition gone: forget its
        accounts (the new owner rebuilds them from the ledger) and clear our
        address.  A partition new: claim it (bump its epoch: a previous owner's
        appends are fenced from now on), fold its accounts' ledger -- live calls
        get their reservations and timers back -- and only then answer for it."""
        own, store = _opened(self.own, "ownership"), _opened(self.store, "ledger store")
        writer = _opened(self.writer, "ledger writer")
        started = time.perf_counter()
        lost, gained = set(own.epochs) - parts, parts - set(own.epochs)
        if lost:
            own.ready -= lost
            keep = set(own.epochs) - lost
            for call_id in self.core.drop(lambda account: own.part(account) in keep):
                handle = self._timers.pop(call_id, None)
                if handle is not None:
                    handle.cancel()
            for part in lost:
                self._cursors.pop(part, None)
            await writer.txn(lambda conn: own.release_in(conn, lost, now_ms()))
        if gained:
            await writer.txn(lambda conn: own.claim_in(conn, gained, now_ms()))
            accounts = [a for a in await asyncio.to_thread(store.list_accounts) if own.part(a.id) in gained]
            events = await asyncio.to_thread(store.events_of, [a.id for a in accounts])
            self._handle(self.core.adopt(accounts, events, now_ms()))
            topic = self.ledger_cfg.events_topic
            self._cursors.update(await writer.txn(lambda conn: own.cursors_in(conn, topic, gained)))
            own.ready |= gained
            await writer.txn(lambda conn: own.announce_in(conn, gained, now_ms()))
            self._outbox_wakeup.set()
        if lost or gained:
            self.stats["partitions_lost"] += len(lost)
            self.stats["partitions_gained"] += len(gained)
            log.warning("billing: partitions now %s (gained %s, lost %s) in %.3fs; %d accounts, %d live calls",
                        sorted(own.ready), sorted(gained), sorted(lost), time.perf_counter() - started,
                        len(self.core.accounts), len(self.core.calls))

    def _fenced_out(self, exc: Fenced) -> None:
        """Another instance claimed partitions we still held (a rebalance overtook
        us, or we stalled past our session): their new owner rebuilt them from the
        ledger, which never got our write.  Forget them; the group tells us what
        we own next."""
        own = _opened(self.own, "ownership")
        self.stats["fenced"] += 1
        log.warning("billing: %s; giving them up", exc)
        own.ready -= exc.parts
        for part in exc.parts:
            own.epochs.pop(part, None)
            self._cursors.pop(part, None)
        keep = set(own.epochs)
        for call_id in self.core.drop(lambda account: own.part(account) in keep):
            handle = self._timers.pop(call_id, None)
            if handle is not None:
                handle.cancel()

    async def _publish_owned(self, producer: AIOKafkaProducer) -> None:
        """Several instances: the ledger events and outbox rows of the partitions
        we own -> their topics.  Ledger ``seq`` is unique but, with several
        writers, not commit order across partitions; so each partition has its
        own cursor, and the ledger is read on the writer thread: none of our
        appends is in flight, and a previous owner's committed before its
        fence, so every event of our partitions up to the last one read is
        visible -- a cursor may move to it."""
        topic = self.ledger_cfg.events_topic
        own, store = _opened(self.own, "ownership"), _opened(self.store, "ledger store")
        writer = _opened(self.writer, "ledger writer")
        page_size = 500
        while True:
            cursors = dict(self._cursors)
            if not cursors:
                self._outbox_wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._outbox_wakeup.wait(), 1.0)
                continue
            start = min(cursors.values())
            page = await writer.call(lambda: store.events(after_seq=start, limit=page_size))
            rows = [r for r in await asyncio.to_thread(store.outbox_batch, page_size) if own.part(r[2]) in cursors]
            mine = [e for e in page if e.seq > cursors.get(own.part(e.account), 1 << 62)]
            futures = []
            for event in mine:
                futures.append(await producer.send(topic, encode_event(event), key=event.account.encode()))
                await self._pause()
            for _, row_topic, key, value in rows:
                futures.append(await producer.send(row_topic, value, key=key.encode()))
            await asyncio.gather(*futures)
            if page:
                end = page[-1].seq
                moved = {part: end for part, seq in cursors.items() if seq < end}
                try:
                    await writer.txn(lambda conn: own.save_cursors_in(conn, topic, moved))
                    for part, seq in moved.items():
                        if part in self._cursors:
                            self._cursors[part] = max(self._cursors[part], seq)
                except Fenced as exc:           # handed over meanwhile: the new owner publishes again
                    log.info("billing: publish cursors not moved: %s", exc)
            if rows:
                await writer.call(lambda: store.outbox_delete_rows([r[0] for r in rows]))
            self.stats["published"] += len(mine) + len(rows)
            if not rows and len(page) < page_size:
                self._outbox_wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._outbox_wakeup.wait(), 1.0)

    async def _publish_outbox(self, producer: AIOKafkaProducer) -> None:
        """The ledger after its publish cursor -> ``ledger.events`` (key = account),
        then the outbox rows (notifications); rows deleted once acknowledged.
        The cursor is kept here (this task is its only writer) and saved at
        most every ``CURSOR_SAVE_S`` (an idle service within a second more: the
        wait below times out): one UPDATE and commit a second instead of one
        per batch.  A crash repeats
        at most that much of ``ledger.events``, which is at-least-once anyway
        (every event carries its id)."""
        topic = self.ledger_cfg.events_topic
        store = _opened(self.store, "ledger store")
        writer = _opened(self.writer, "ledger writer")
        loop = asyncio.get_running_loop()
        cursor = saved = await asyncio.to_thread(store.published_seq, topic)
        saved_at = loop.time()
        while True:
            after = cursor
            self._outbox_wakeup.clear()         # before the read: an append after it wakes the wait below
            events, rows = await asyncio.to_thread(
                lambda: (store.events(after_seq=after, limit=500), store.outbox_batch(500)))
            if events or rows:
                futures = []
                for event in events:
                    futures.append(await producer.send(topic, encode_event(event), key=event.account.encode()))
                    await self._pause()
                for _, row_topic, key, value in rows:
                    futures.append(await producer.send(row_topic, value, key=key.encode()))
                await asyncio.gather(*futures)
                if events:
                    cursor = events[-1].seq
                if rows:
                    last_row = rows[-1][0]
                    await writer.call(lambda: store.outbox_delete(last_row))
                self.stats["published"] += len(events) + len(rows)
            caught_up = not events and not rows
            if cursor > saved and loop.time() - saved_at >= CURSOR_SAVE_S:
                done = cursor
                await writer.call(lambda: store.mark_published(topic, done))
                saved, saved_at = done, loop.time()
            if caught_up:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._outbox_wakeup.wait(), 1.0)

    # -- housekeeping -------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        """Rates and accounts changed by someone else (CLI, API, another host)."""
        rates = _opened(self.rates, "rates store")
        store = _opened(self.store, "ledger store")
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                version = await asyncio.to_thread(rates.version)
                if version != self._rates_version:
                    snapshot = await asyncio.to_thread(rates.snapshot)
                    self._rates_version = snapshot.version
                    self.core.set_rates(snapshot)
                    self.stats["rates_reloads"] += 1
                version = await asyncio.to_thread(store.version)
                if version != self._accounts_version:
                    self._accounts_version = version
                    await self._reload_accounts()
            except (LedgerError, RatingError) as exc:
                log.warning("billing: polling the billing database: %s", exc)

    async def _reload_accounts(self) -> None:
        accounts = {a.id: a for a in await asyncio.to_thread(_opened(self.store, "ledger store").list_accounts)}
        now = now_ms()
        for account_id in set(self.core.accounts) - set(accounts):
            self.core.remove_account(account_id)
        for info in accounts.values():
            if self.own is not None and not self.own.owns(info.id):
                continue
            if self.core.accounts.get(info.id) != info:
                self._handle(self.core.upsert_account(info, now))

    async def _sweep_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            now = now_ms()
            self._guarded(self.core.sweep, now)
            if self._consumer is not None:
                metrics.set_lag("billing", await metrics.aiokafka_lag(self._consumer, self._positions))
            rounds += 1
            if rounds % 30:
                continue
            ringing_limit = now - 2 * self.core.hold_ms
            answered_limit = now - self.core.max_call_ms
            stale = [c for c, i in self._invites.items()
                     if i.seen_ms < (ringing_limit if i.pinned else answered_limit)]
            for call_id in stale:
                del self._invites[call_id]

    # -- the admin RPC ------------------------------------------------------------------------
    async def _rpc_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            app = _opened(self.app, "billing application")
            while line := await reader.readline():
                try:
                    request = rpc.decode_request(line)
                    if self.own is not None and request.op == "rerate":
                        raise LedgerError("rerate is not available with several billing instances yet "
                                          "([billing] partitioned)", status=501)
                    if self.relay is not None and self.relay.relays(request):
                        response = await self.relay.forward(request)
                        writer.write(rpc.encode(response))
                        await writer.drain()
                        continue
                    result = await app.execute(request)
                    response = rpc.RpcResponse(ok=True, result=result)
                except LedgerError as exc:
                    response = rpc.RpcResponse(ok=False, status=exc.status, error=str(exc))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    response = rpc.RpcResponse(ok=False, status=400, error=f"bad request: {exc}")
                except Exception as exc:       # noqa: BLE001 - answered, not fatal
                    log.exception("billing rpc failed")
                    response = rpc.RpcResponse(ok=False, status=500, error=f"billing service error: {exc!r}")
                writer.write(rpc.encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _status(self) -> dict:
        """``ping``: the service is up."""
        status: dict = {"udp_port": self.udp_port, "accounts": len(self.core.accounts), "calls": len(self.core.calls),
                  "live": True}
        if self.own is not None:
            status.update(instance=self.own.owner, partitions=sorted(self.own.ready))
        return status

    def _carry_out(self, fx: Effects) -> None:
        """Effects of a money command already in the ledger: act on them, publish it."""
        self._handle(fx)
        self._outbox_wakeup.set()
