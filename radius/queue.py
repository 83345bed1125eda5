"""The durable RADIUS accounting queue (SQLite) and its sender (pyrad's asyncio client).

Spool (one SQLite file under the data dir, WAL, ``synchronous=FULL``):

* ``queue``: every record is written here *before* it is sent, in the same
  transaction as the call state that produced it (``Spool.commit``); the
  worker commits its Kafka offsets only after that transaction.  A row is
  deleted only once a server has acknowledged it (``Spool.ack``).
* ``sent``: keys of acknowledged records, kept ``dedupe_retention_s``: a
  replayed record whose key is here (or still queued) is not queued again.
  Keys are (session, status[, interim number]) - see radius/records.py.
* ``calls``: the worker's per-call fold state (radius/worker.py).
* ``owners``: which worker owns each ``sip.events`` partition (the fence).

Several workers of one consumer group share the spool (one host, one spool
directory): queue rows and call states carry the ``sip.events`` partition
of their call, each worker loads and sends only those of the partitions
Kafka assigned it, and ``owners`` fences a worker that lost a partition
without noticing (a stall past its session): its next ``commit`` touching
that partition raises ``Fenced`` instead of writing beside the new owner.

Sender:

* Records of one session (Acct-Session-Id) are sent strictly one after the
  other in queue order: a Stop is sent only once its Start is acknowledged,
  so it can never overtake it.  Different sessions go in parallel, at most
  ``max_in_flight`` requests awaiting a response.
* Each send is a new packet: a new Identifier, Acct-Delay-Time = whole
  seconds since the record was first enqueued, hence a new Request
  Authenticator (RFC 2866 5.2).  pyrad's own retransmission (the same bytes)
  is not used: ``retries`` resends per server, each waiting ``timeout``.
* Servers are tried in the configured order; one that exhausts its retries
  is skipped for ``dead_time_s``.  When every server is dead, one request
  at a time probes them (with a growing pause between rounds) until one
  answers, and the queue then drains at full concurrency.
* Acknowledgements are committed in small batches (every few ms): a crash
  between a server's response and that commit sends the record again
  (at-least-once; a record acknowledged and committed is never sent again).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import socket
import sqlite3
import struct
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec
from pyrad import packet as rpacket
from pyrad.client_async import ClientAsync
from pyrad.dictionary import Dictionary

from proxy.infra import clock
from proxy.infra.config import RadiusServer, RadiusSettings

from .records import Record, delay_seconds

log = logging.getLogger("radius.queue")

SPOOL_NAME = "radius.sqlite"
ACK_FLUSH_S = 0.005
WINDOW = 20_000                 # queued entries held in memory; the rest wait in the spool
PROBE_PAUSE_MIN_S = 0.2
PROBE_PAUSE_MAX_S = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    session TEXT NOT NULL,
    status INTEGER NOT NULL,
    attrs BLOB NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    partition INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,
    acked_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_acked ON sent(acked_ms);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    slot BLOB NOT NULL,
    partition INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (
    partition INTEGER PRIMARY KEY,
    owner TEXT NOT NULL
);
"""
# spools written before partitions were kept: call states get theirs from
# the stored slot; queued records go to partition 0's owner (one worker per
# group then: upgrade with one worker, which owns every partition anyway)
_MIGRATIONS = {
    "queue": "ALTER TABLE queue ADD COLUMN partition INTEGER NOT NULL DEFAULT 0",
    "calls": "ALTER TABLE calls ADD COLUMN partition INTEGER NOT NULL DEFAULT 0",
}
BUSY_TIMEOUT_S = 30.0           # another worker's transaction holds the write lock this long at most


class Fenced(Exception):
    """Another worker claimed a partition this one still writes to."""

_attrs_encoder = msgspec.msgpack.Encoder()
_attrs_decoder = msgspec.msgpack.Decoder(tuple[tuple[str, str | int], ...])


def wall_ms() -> int:
    """The wall clock (proxy.infra.clock): compared with event times (silence, interims)."""
    return clock.now_ms()


class Entry(msgspec.Struct, frozen=True):
    """A queued record."""
    seq: int
    key: str
    session: str
    status: int
    attrs: tuple
    enqueued_ms: int
    partition: int = 0                # of sip.events: whose owner sends it


class Spool:
    """The SQLite file: queue, sent keys, call states, partition owners.
    Shared by the workers of one consumer group (each sees its partitions' rows)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / SPOOL_NAME
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=BUSY_TIMEOUT_S)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("BEGIN IMMEDIATE")         # two workers starting together migrate once
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            for table, alter in _MIGRATIONS.items():
                columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                if "partition" not in columns:
                    self.db.execute(alter)
                    if table == "calls":
                        # a slot (radius/worker.py ``Slot``) is an array whose first item is its partition
                        self.db.executemany("UPDATE calls SET partition = ? WHERE call_id = ?", [
                            (msgspec.msgpack.decode(slot)[0], call_id)
                            for call_id, slot in self.db.execute("SELECT call_id, slot FROM calls").fetchall()])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # --- reads -------------------------------------------------------------------------
    def pending(self, after: int = 0, limit: int = -1,
                partitions: Collection[int] | None = None) -> list[Entry]:
        """Queued entries in queue order: those with ``seq > after``, at most
        ``limit``, of ``partitions`` (None: all)."""
        where, args = _in_partitions(partitions)
        rows = self.db.execute("SELECT seq, key, session, status, attrs, enqueued_ms, partition FROM queue "
                               f"WHERE seq > ?{where} ORDER BY seq LIMIT ?", (after, *args, limit)).fetchall()
        return [Entry(seq, key, session, status, _attrs_decoder.decode(attrs), enq, partition)
                for seq, key, session, status, attrs, enq, partition in rows]

    def pending_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM queue").fetchone()[0]

    def calls(self, partitions: Collection[int] | None = None) -> Iterator[tuple[str, bytes]]:
        """Stored call states (call id, slot) of ``partitions`` (None: all)."""
        where, args = _in_partitions(partitions)
        yield from self.db.execute(f"SELECT call_id, slot FROM calls WHERE 1{where}", args)

    # --- ownership ---------------------------------------------------------------------
    def claim(self, partitions: Collection[int], owner: str) -> None:
        """``owner`` takes ``partitions`` over (Kafka assigned them to it): from
        now on a commit of their previous owner raises ``Fenced``."""
        if not partitions:
            return
        with self._transaction() as cur:
            cur.executemany("INSERT INTO owners (partition, owner) VALUES (?, ?) "
                            "ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner",
                            ((p, owner) for p in sorted(partitions)))

    # --- writes ------------------------------------------------------------------------
    def commit(self, records: Iterable[Record], puts: dict[str, bytes] | None = None,
               deletes: Iterable[str] = (), now_ms: int | None = None, *,
               partitions: Sequence[int] | None = None, owner: str = "",
               call_partitions: dict[str, int] | None = None) -> list[Entry]:
        """Enqueue records and write call states in one durable transaction.
        Records whose key is queued already or was acknowledged (``sent``)
        are skipped.  Returns the entries actually enqueued, in queue order.

        ``partitions``: each record's partition (parallel to ``records``;
        None: 0), ``call_partitions``: each put's.  With ``owner``, raises
        ``Fenced`` (writing nothing) if another worker claimed one of them."""
        now = wall_ms() if now_ms is None else now_ms
        records = list(records)
        parts = list(partitions) if partitions is not None else [0] * len(records)
        if len(parts) != len(records):
            raise ValueError("one partition per record")
        put_parts = call_partitions or {}
        added: list[Entry] = []
        with self._transaction() as cur:
            if owner:
                touched = set(parts) | set(put_parts.values())
                where, args = _in_partitions(touched)
                lost = cur.execute(f"SELECT partition, owner FROM owners WHERE owner != ?{where}",
                                   (owner, *args)).fetchall()
                if lost:
                    raise Fenced(f"partitions taken over by other workers: {sorted(lost)}")
            for record, partition in zip(records, parts):
                blob = _attrs_encoder.encode(record.attrs)
                cur.execute("INSERT OR IGNORE INTO queue (key, session, status, attrs, enqueued_ms, partition) "
                            "SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM sent WHERE key = ?)",
                            (record.key, record.session, record.status, blob, now, partition, record.key))
                if cur.rowcount == 1 and cur.lastrowid is not None:
                    added.append(Entry(cur.lastrowid, record.key, record.session, record.status,
                                       record.attrs, now, partition))
            if puts:
                cur.executemany("INSERT OR REPLACE INTO calls (call_id, slot, partition) VALUES (?, ?, ?)",
                                ((call_id, slot, put_parts.get(call_id, 0)) for call_id, slot in puts.items()))
            deletes = list(deletes)
            if deletes:
                cur.executemany("DELETE FROM calls WHERE call_id = ?", ((d,) for d in deletes))
        return added

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def ack(self, entries: list[Entry], now_ms: int | None = None) -> None:
        """Acknowledged by a server: out of the queue, key remembered.

        Without an fsync of its own (synchronous=NORMAL: the next enqueue's
        fsync covers it): a power cut could undo it and send the records
        again, never lose one."""
        if not entries:
            return
        now = wall_ms() if now_ms is None else now_ms
        cur = self.db.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("DELETE FROM queue WHERE seq = ?", ((e.seq,) for e in entries))
            cur.executemany("INSERT OR IGNORE INTO sent (key, acked_ms) VALUES (?, ?)",
                            ((e.key, now) for e in entries))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.execute("PRAGMA synchronous=FULL")

    def prune_sent(self, before_ms: int) -> int:
        cur = self.db.execute("DELETE FROM sent WHERE acked_ms < ?", (before_ms,))
        return cur.rowcount


_DELAY = struct.Struct("!BBI")              # Acct-Delay-Time (41), length 6, seconds
_HEADER = struct.Struct("!BBH")
_ZERO_AUTH = bytes(16)


def _in_partitions(partitions: Collection[int] | None) -> tuple[str, tuple[int, ...]]:
    """SQL ``AND partition IN (...)`` and its arguments (nothing for None: all)."""
    if partitions is None:
        return "", ()
    args = tuple(sorted(partitions))
    return f" AND partition IN ({','.join('?' * len(args))})", args


class _Request(rpacket.AcctPacket):
    """An Accounting-Request whose attributes (all but Acct-Delay-Time) were
    encoded once by pyrad: every send appends the current Acct-Delay-Time and
    computes the Request Authenticator (RFC 2866 3) over the new packet."""

    def __init__(self, attrs: bytes, delay: int, **kw) -> None:
        super().__init__(**kw)
        self._attrs = attrs + _DELAY.pack(41, 6, delay)

    def RequestPacket(self) -> bytes:
        attrs = self._attrs
        header = _HEADER.pack(self.code, self.id, 20 + len(attrs))
        self.authenticator = hashlib.md5(header + _ZERO_AUTH + attrs + self.secret).digest()
        return header + self.authenticator + attrs


class WireEncoder:
    """Encodes (name, value) attribute pairs to RADIUS wire format, with the
    codes, vendors, types and VALUE names of a pyrad ``Dictionary``.

    pyrad's own ``AddAttribute`` + encoding costs ~0.1 ms per accounting
    record here, the better part of a send; this does the same for the types
    accounting uses (string, octets, integer, date, ipaddr; VSAs in RFC 2865
    form) several times faster.  Unlike pyrad's packets (a dict by attribute
    code) it keeps the record's attribute order, so repeated attributes stay
    interleaved (the OpenSIPS multi-leg layout).  A unit test checks that pyrad
    decodes everything this encodes to the values it was given."""

    _INT = struct.Struct("!I")

    def __init__(self, dictionary: Dictionary) -> None:
        self.dictionary = dictionary
        self._specs: dict[str, tuple] = {}

    def _spec(self, name: str) -> tuple:
        spec = self._specs.get(name)
        if spec is None:
            attr = self.dictionary.attributes[name]
            vendor_id = self.dictionary.vendors.GetForward(attr.vendor) if attr.vendor else 0
            if attr.type not in ("string", "octets", "integer", "date", "ipaddr"):
                raise ValueError(f"{name}: type {attr.type} is not supported for accounting")
            spec = self._specs[name] = (attr.code, vendor_id, attr.type, attr.values)
        return spec

    def encode(self, attrs) -> bytes:
        out = []
        for name, value in attrs:
            code, vendor_id, kind, values = self._spec(name)
            if kind == "string" or kind == "octets":
                data = value.encode() if isinstance(value, str) else bytes(value)
            elif kind == "ipaddr":
                data = socket.inet_aton(value)
            else:                                     # integer, date
                if isinstance(value, str):
                    value = values.GetForward(value)
                data = self._INT.pack(value)
            if not 0 < len(data) <= 253 - (6 if vendor_id else 0):
                raise ValueError(f"{name}: value of {len(data)} bytes")
            if vendor_id:
                out.append(struct.pack("!BBLBB", 26, len(data) + 8, vendor_id, code, len(data) + 2))
            else:
                out.append(struct.pack("!BB", code, len(data) + 2))
            out.append(data)
        return b"".join(out)


class _Server:
    def __init__(self, config: RadiusServer, client: ClientAsync) -> None:
        self.config = config
        self.client = client
        self.dead_until = 0.0                 # monotonic; 0 = alive

    @property
    def name(self) -> str:
        return f"{self.config.host}:{self.config.port}"


def _expire(future: asyncio.Future) -> None:
    # pyrad forgets the request once its future is done (its done callback)
    if not future.done():
        future.set_exception(TimeoutError("no Accounting-Response"))


class Sender:
    """Sends queued entries to the servers; see the module docstring."""

    def __init__(self, spool: Spool, settings: RadiusSettings, dictionary: Dictionary, *,
                 window: int = WINDOW) -> None:
        if not settings.servers:
            raise ValueError("no RADIUS server configured")
        self.spool = spool
        self.settings = settings
        self.dictionary = dictionary
        self.servers: list[_Server] = []
        self._sessions: dict[str, collections.deque[Entry]] = {}
        self._ready: collections.deque[str] = collections.deque()
        self._inflight: dict[str, asyncio.Task] = {}
        self._acks: list[Entry] = []
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._closing = False
        self._probe_failures = 0
        self._backlog = 0                        # entries in memory, not acknowledged yet
        self._window = window
        self._loaded_upto = 0                    # highest seq taken into memory
        self._complete = True                    # memory holds every queued entry
        self._encoded: dict[int, bytes] = {}     # seq -> attributes on the wire
        self._encoder = WireEncoder(dictionary)
        self._owned: frozenset[int] | None = None   # partitions whose entries it sends (None: all)
        self._paused = False                     # no new sends while ownership changes
        self.counts: collections.Counter = collections.Counter()

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        for config in self.settings.servers:
            # pyrad's own timeout only backs ours up (``_expire`` fires first);
            # retries=0: every resend is a new packet built here
            client = ClientAsync(server=config.host, acct_port=config.port,
                                 secret=config.secret.encode(), dict=self.dictionary,
                                 retries=0, timeout=self.settings.timeout * 2 + 1,
                                 logger_name="radius.pyrad")
            await client.initialize_transports(enable_acct=True)
            self.servers.append(_Server(config, client))

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._ack_wake.set()
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()))
        self.flush_acks()
        for server in self.servers:
            await server.client.deinitialize_transports()

    # --- queue ---------------------------------------------------------------------------
    def load_pending(self) -> None:
        """Take the spool's queue (after a restart) in, a window at a time."""
        self._complete = False
        self._refill()

    def add(self, entries: Iterable[Entry]) -> None:
        """Entries durably enqueued (in queue order): schedule them.  Beyond the
        in-memory window they stay in the spool and are paged in as it drains."""
        owned = self._owned
        for entry in entries:
            if entry.seq <= self._loaded_upto:
                continue                          # paged in already
            if owned is not None and entry.partition not in owned:
                continue                          # another worker's (the caller's guard failed)
            if not self._complete or self._backlog >= self._window:
                self._complete = False
                continue
            self._push(entry)
        self._wake.set()

    def _push(self, entry: Entry) -> None:
        self._backlog += 1
        self._loaded_upto = entry.seq
        queue = self._sessions.get(entry.session)
        if queue is None:
            self._sessions[entry.session] = collections.deque((entry,))
            self._ready.append(entry.session)
        else:
            queue.append(entry)

    def _refill(self) -> None:
        if self._complete or self._backlog > self._window // 2:
            return
        limit = self._window - self._backlog
        rows = self.spool.pending(after=self._loaded_upto, limit=limit, partitions=self._owned)
        for entry in rows:
            self._push(entry)
        if len(rows) < limit:
            self._complete = True

    async def assign(self, partitions: Collection[int]) -> None:
        """Send only the entries of ``partitions`` from now on (Kafka's
        assignment changed).  What is in flight finishes first (bounded by
        the failover's own timeouts, then cancelled) and its acknowledgements
        are committed, so that the partitions' next owner, which loads their
        queue from the spool, does not send them again; then memory is paged
        in afresh from the spool."""
        self._paused = True
        try:
            if self._inflight:
                bound = (self.settings.retries + 1) * self.settings.timeout * len(self.servers) \
                    + PROBE_PAUSE_MAX_S
                _done, late = await asyncio.wait(list(self._inflight.values()), timeout=bound)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)
            self.flush_acks()
            self._sessions.clear()
            self._ready.clear()
            self._encoded.clear()
            self._backlog = 0
            self._loaded_upto = 0
            self._owned = frozenset(partitions)
            self._complete = False
            self._refill()
        finally:
            self._paused = False
            self._wake.set()

    @property
    def backlog(self) -> int:
        """Entries in memory not acknowledged yet (see ``drained``)."""
        return self._backlog

    @property
    def drained(self) -> bool:
        """Every queued entry acknowledged (as far as this sender knows)."""
        return self._backlog == 0 and self._complete

    @property
    def all_dead(self) -> bool:
        now = time.monotonic()
        return all(server.dead_until > now for server in self.servers)

    async def run(self) -> None:
        """Send until closed."""
        ack_task = asyncio.create_task(self._ack_loop(), name="radius-acks")
        try:
            while not self._closing:
                self._refill()
                limit = 1 if self.all_dead else self.settings.max_in_flight
                while self._ready and len(self._inflight) < limit and not self._paused:
                    session = self._ready.popleft()
                    entry = self._sessions[session][0]
                    self._inflight[session] = asyncio.create_task(self._deliver(entry))
                self._wake.clear()
                await self._wake.wait()
        finally:
            ack_task.cancel()
            await asyncio.wait([ack_task])

    async def _deliver(self, entry: Entry) -> None:
        session = entry.session
        ok = False
        try:
            ok = await self._send(entry)
            if not ok:
                self._probe_failures += 1
                pause = min(PROBE_PAUSE_MAX_S, PROBE_PAUSE_MIN_S * 2 ** min(self._probe_failures, 8))
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            pass
        except Exception:                            # a bug: keep the record, retry later
            self.counts["errors"] += 1
            log.exception("sending %s failed", entry.key)
            await asyncio.sleep(PROBE_PAUSE_MAX_S)
        finally:
            self._inflight.pop(session, None)
            if ok:
                self._probe_failures = 0
                self._backlog -= 1
                self._encoded.pop(entry.seq, None)
                self._acks.append(entry)
                self._ack_wake.set()
                queue = self._sessions[session]
                queue.popleft()
                if queue:
                    self._ready.append(session)
                else:
                    del self._sessions[session]
            elif not self._closing:
                self._ready.appendleft(session)       # oldest first once a server answers
            self._wake.set()

    def _order(self) -> list[_Server]:
        """Servers to try, in failover order: the alive ones; all when none is."""
        now = time.monotonic()
        alive = [server for server in self.servers if server.dead_until <= now]
        return alive or list(self.servers)

    async def _send(self, entry: Entry) -> bool:
        """One entry through the failover order; True once a server acknowledged it."""
        settings = self.settings
        for server in self._order():
            for _attempt in range(settings.retries + 1):
                if self._closing:
                    return False
                if await self._send_once(server, entry):
                    if server.dead_until:
                        log.info("RADIUS server %s answers again", server.name)
                        server.dead_until = 0.0
                    return True
            if server.dead_until <= time.monotonic():
                log.warning("RADIUS server %s: no answer after %d tries of %gs; failing over "
                            "for %gs", server.name, settings.retries + 1, settings.timeout,
                            settings.dead_time_s)
            server.dead_until = time.monotonic() + settings.dead_time_s
            self.counts["failovers"] += 1
        return False

    async def _send_once(self, server: _Server, entry: Entry) -> bool:
        client = server.client
        protocol = client.protocol_acct
        encoded = self._encoded.get(entry.seq)
        if encoded is None:
            encoded = self._encoded[entry.seq] = self._encoder.encode(entry.attrs)
        try:
            pkt = _Request(encoded, delay_seconds(entry.enqueued_ms, wall_ms()),
                           id=protocol.create_id(), secret=client.secret, dict=self.dictionary)
        except Exception as exc:                     # 256 pending ids: wait for answers
            log.debug("cannot create packet: %s", exc)
            await asyncio.sleep(self.settings.timeout / 10)
            return False
        self.counts["sends"] += 1
        loop = asyncio.get_running_loop()
        reply_future = client.SendPacket(pkt)
        timer = loop.call_later(self.settings.timeout, _expire, reply_future)
        try:
            reply = await reply_future
        except TimeoutError:
            self.counts["timeouts"] += 1
            return False
        except (ConnectionAbortedError, OSError) as exc:
            self.counts["errors"] += 1
            log.debug("send to %s failed: %s", server.name, exc)
            await asyncio.sleep(self.settings.timeout)
            return False
        finally:
            timer.cancel()
        if reply.code != rpacket.AccountingResponse:
            self.counts["bad_replies"] += 1
            log.warning("RADIUS server %s answered code %s to %s", server.name, reply.code, entry.key)
            return False
        self.counts["acked"] += 1
        return True

    # --- acknowledgements ----------------------------------------------------------------
    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(ACK_FLUSH_S)
            self.flush_acks()

    def flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        if acks:
            self.spool.ack(acks)
