"""The durable RADIUS accounting queue (SQLite) and its sender (RFC 2866, over UDP or TCP).

Spool (one SQLite file under the data dir, WAL, ``synchronous=FULL``):

* ``queue``: every record is written here *before* it is sent, in the same
  transaction as the call state that produced it (``Spool.commit``); the
  worker commits its Kafka offsets only after that transaction.  A row is
  deleted only once a server has acknowledged it (``Spool.ack``).  The
  worker's spool stores the attributes as they go on the wire (encoded
  once, with its dictionary), else as (name, value) pairs.
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
  Authenticator (RFC 2866 5.2); ``retries`` resends per server, each
  waiting ``timeout``.  An answer counts only from the server's address and
  with a Response Authenticator that verifies against the request.  The
  packets are built here (pyrad gives the dictionary and the tests' decoder).
* ``[radius] transport``: "udp" (a datagram per request) or "tcp" (RFC
  6613: a connection per server, many requests per write); the links are in
  radius/transport.py.  Everything above holds for both.
* Servers are tried in the configured order; one that exhausts its retries
  is skipped for ``dead_time_s``.  When every server is dead, one request
  at a time probes them (with a growing pause between rounds) until one
  answers, and the queue then drains at full concurrency.
* Acknowledgements are committed in small batches (every ``ACK_FLUSH_S``, 5 ms): a crash
  between a server's response and that commit sends the record again
  (at-least-once; a record acknowledged and committed is never sent again).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import random
import socket
import sqlite3
import struct
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec
from pyrad.dictionary import Dictionary

from proxy.infra import clock
from proxy.infra.config import RadiusServer, RadiusSettings

from .records import Record, delay_seconds
from .transport import Link, make_link

log = logging.getLogger("radius.queue")

SPOOL_NAME = "radius.sqlite"
ACK_FLUSH_S = 0.005            # acknowledgements committed together (a crash resends at most these)
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
_ROWS_PER_INSERT = 1000        # rows per multi-row statement (SQLite takes 32,766 parameters)
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
    attrs: tuple                      # () when loaded from the spool in wire form (``wire``)
    enqueued_ms: int
    partition: int = 0                # of sip.events: whose owner sends it
    wire: bytes = b""                 # the attributes on the wire (WireEncoder), when known


# A stored record's attributes: the wire bytes behind this tag (the spool's
# encoder knew them: half the bytes of the attribute pairs, and nothing to
# encode at send time), else msgpack (name, value) pairs.  A msgpack blob of
# pairs starts with an array marker, never 0x00.
_WIRE_TAG = b"\x00"


def _entry(seq: int, key: str, session: str, status: int, blob: bytes, enqueued_ms: int,
           partition: int) -> Entry:
    if blob[:1] == _WIRE_TAG:
        return Entry(seq, key, session, status, (), enqueued_ms, partition, blob[1:])
    return Entry(seq, key, session, status, _attrs_decoder.decode(blob), enqueued_ms, partition)


class Spool:
    """The SQLite file: queue, sent keys, call states, partition owners.
    Shared by the workers of one consumer group (each sees its partitions' rows)."""

    def __init__(self, directory: str | Path,
                 encode: Callable[[tuple], bytes] | None = None) -> None:
        """``encode``: the attributes' wire form (``WireEncoder.encode``) to
        store records in; without it they are stored as (name, value) pairs."""
        self.encode = encode
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
        return [_entry(*row) for row in rows]

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
            for start in range(0, len(records), _ROWS_PER_INSERT):
                added += self._enqueue(cur, records[start:start + _ROWS_PER_INSERT],
                                       parts[start:start + _ROWS_PER_INSERT], now)
            if puts:
                cur.executemany("INSERT OR REPLACE INTO calls (call_id, slot, partition) VALUES (?, ?, ?)",
                                ((call_id, slot, put_parts.get(call_id, 0)) for call_id, slot in puts.items()))
            deletes = list(deletes)
            if deletes:
                cur.executemany("DELETE FROM calls WHERE call_id = ?", ((d,) for d in deletes))
        return added

    def _blob(self, attrs: tuple) -> tuple[bytes, bytes]:
        """(stored blob, wire bytes or b"")."""
        if self.encode is not None:
            try:
                wire = self.encode(attrs)
                return _WIRE_TAG + wire, wire
            except (ValueError, KeyError):
                pass                   # kept as pairs: the sender reports it when it sends it
        return _attrs_encoder.encode(attrs), b""

    def _enqueue(self, cur: sqlite3.Cursor, records: list[Record], parts: list[int], now: int) -> list[Entry]:
        """One INSERT for many records (a statement per record cost as much as
        the rows themselves): those whose key is queued (the UNIQUE key) or
        acknowledged (``sent``) are left out; RETURNING says which went in."""
        if not records:
            return []
        rows = ",".join(["(?,?,?,?,?,?)"] * len(records))
        args: list = []
        wires: dict[str, bytes] = {}
        for record, partition in zip(records, parts):
            blob, wires[record.key] = self._blob(record.attrs)
            args += (record.key, record.session, record.status, blob, now, partition)
        inserted = cur.execute(
            "INSERT OR IGNORE INTO queue (key, session, status, attrs, enqueued_ms, partition) "
            f"SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {rows}) "
            "WHERE NOT EXISTS (SELECT 1 FROM sent WHERE sent.key = column1) "
            "RETURNING seq, key", args).fetchall()
        if not inserted:
            return []
        by_key: dict[str, tuple[Record, int]] = {}
        for record, partition in zip(records, parts):
            by_key.setdefault(record.key, (record, partition))
        added = []
        for seq, key in sorted(inserted):              # RETURNING's order is not promised
            record, partition = by_key[key]
            added.append(Entry(seq, key, record.session, record.status, record.attrs, now, partition,
                               wires[key]))
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
            for start in range(0, len(entries), _ROWS_PER_INSERT):
                # a statement per batch, not per row: half the cost of executemany here
                chunk = entries[start:start + _ROWS_PER_INSERT]
                cur.execute(f"DELETE FROM queue WHERE seq IN ({','.join('?' * len(chunk))})",
                            [e.seq for e in chunk])
                cur.execute("INSERT OR IGNORE INTO sent (key, acked_ms) VALUES "
                            + ",".join(["(?,?)"] * len(chunk)),
                            [x for e in chunk for x in (e.key, now)])
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
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5
MAX_IDS = 256                   # RADIUS Identifiers: requests awaiting one server at once
MAX_VALUE = 253                 # the longest attribute value
SWEEP_S = 0.01                  # timeouts are noticed this much late at most
PAIR_CACHE = 32_768             # encoded (name, value) pairs kept (a few MB at most)


def _in_partitions(partitions: Collection[int] | None) -> tuple[str, tuple[int, ...]]:
    """SQL ``AND partition IN (...)`` and its arguments (nothing for None: all)."""
    if partitions is None:
        return "", ()
    args = tuple(sorted(partitions))
    return f" AND partition IN ({','.join('?' * len(args))})", args


def request_packet(ident: int, attrs: bytes, delay: int, secret: bytes) -> bytes:
    """An Accounting-Request on the wire: the attributes (encoded once, see
    ``WireEncoder``) with the current Acct-Delay-Time appended, and the Request
    Authenticator over the whole packet (RFC 2866 3)."""
    attrs += _DELAY.pack(41, 6, delay)
    header = _HEADER.pack(ACCOUNTING_REQUEST, ident, 20 + len(attrs))
    return header + hashlib.md5(header + _ZERO_AUTH + attrs + secret).digest() + attrs


def reply_matches(reply: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """The Response Authenticator (RFC 2866 3) verifies against the request's:
    the reply comes from a server knowing the secret, to this very request
    (a late reply to an Identifier used again does not match)."""
    length = int.from_bytes(reply[2:4], "big")
    if not 20 <= length <= len(reply):
        return False
    digest = hashlib.md5(reply[:4] + request_authenticator + reply[20:length] + secret).digest()
    return digest == reply[4:20]


class WireEncoder:
    """Encodes (name, value) attribute pairs to RADIUS wire format, with the
    codes, vendors, types and VALUE names of a pyrad ``Dictionary``.

    pyrad's own ``AddAttribute`` + encoding costs ~0.1 ms per accounting
    record here, the better part of a send; this does the same for the types
    accounting uses (string, octets, integer, date, ipaddr; VSAs in RFC 2865
    form) several times faster: each attribute's header bytes are built once
    (an integer's whole header, whose length is fixed), so a value costs a
    join.  Unlike pyrad's packets (a dict by attribute code) it keeps the
    record's attribute order, so repeated attributes stay interleaved (the
    OpenSIPS multi-leg layout).  A unit test checks that pyrad decodes
    everything this encodes to the values it was given."""

    _INT = struct.Struct("!I")

    def __init__(self, dictionary: Dictionary) -> None:
        self.dictionary = dictionary
        self._specs: dict[str, tuple] = {}
        self._pairs: dict[tuple, bytes] = {}          # (name, value) -> its bytes

    def _spec(self, name: str) -> tuple:
        """(kind, header or header maker, VALUE names): kind 0 string/octets,
        1 integer/date (the header is fixed), 2 ipaddr (fixed too)."""
        spec = self._specs.get(name)
        if spec is None:
            attr = self.dictionary.attributes[name]
            vendor_id = self.dictionary.vendors.GetForward(attr.vendor) if attr.vendor else 0
            if attr.type not in ("string", "octets", "integer", "date", "ipaddr"):
                raise ValueError(f"{name}: type {attr.type} is not supported for accounting")
            code = attr.code

            def header(size: int) -> bytes:
                if vendor_id:
                    return struct.pack("!BBLBB", 26, size + 8, vendor_id, code, size + 2)
                return struct.pack("!BB", code, size + 2)
            if attr.type in ("string", "octets"):
                # headers by value length (a value is 1..253 bytes, less the VSA's 6)
                limit = MAX_VALUE - (6 if vendor_id else 0)
                spec = (0, tuple(header(n) if 0 < n <= limit else b"" for n in range(MAX_VALUE + 1)),
                        None)
            else:
                spec = (1 if attr.type != "ipaddr" else 2, header(4), attr.values)
            self._specs[name] = spec
        return spec

    def encode(self, attrs) -> bytes:
        # most (name, value) pairs come again: a worker's constants (NAS, Service-Type,
        # statuses) and the call's own values in its Start and its Stop
        cache = self._pairs
        out = [cache.get(pair) or self._pair(pair) for pair in attrs]
        return b"".join(out)

    def _pair(self, pair: tuple) -> bytes:
        name, value = pair
        kind, header, values = self._specs.get(name) or self._spec(name)
        if kind == 1:                                 # integer, date
            if isinstance(value, str):
                value = values.GetForward(value)
            data = header + self._INT.pack(value)
        elif kind == 2:
            data = header + socket.inet_aton(value)
        else:
            raw = value.encode() if isinstance(value, str) else bytes(value)
            prefix = header[len(raw)] if len(raw) <= MAX_VALUE else b""
            if not prefix:
                raise ValueError(f"{name}: value of {len(raw)} bytes")
            data = prefix + raw
        if len(self._pairs) >= PAIR_CACHE:
            self._pairs.clear()
        self._pairs[pair] = data
        return data


class _Server:
    """One accounting server: its link (radius/transport.py), the requests
    awaiting its answer by Identifier, and the Identifiers free (least
    recently used first, so that a late answer to an old request meets a new
    one as rarely as possible; ``reply_matches`` rejects it anyway)."""

    def __init__(self, config: RadiusServer) -> None:
        self.config = config
        self.secret = config.secret.encode()
        self.link: Link | None = None
        self.pending: dict[int, _Attempt] = {}
        first = random.randrange(MAX_IDS)
        self.free = collections.deque((first + i) % MAX_IDS for i in range(MAX_IDS))
        self.dead_until = 0.0                 # monotonic; 0 = alive

    @property
    def name(self) -> str:
        return f"{self.config.host}:{self.config.port}"


class _Attempt:
    """An entry on its way through the failover order (``Sender._attempt``):
    the servers to try, which one now and how many sends it had, and the
    request awaiting an answer (Identifier, Request Authenticator; its
    deadline waits in ``Sender._deadlines``)."""
    __slots__ = ("entry", "order", "index", "tries", "server", "ident", "authenticator", "sends", "timer")

    def __init__(self, entry: Entry, order: list[_Server]) -> None:
        self.entry = entry
        self.order = order
        self.index = 0                        # order[index] is the server being tried
        self.tries = 0                        # sends to it so far
        self.server: _Server | None = None    # awaiting its answer
        self.ident = 0
        self.authenticator = b""
        self.sends = 0                        # of this entry so far: names the send a deadline is for
        self.timer: asyncio.TimerHandle | None = None     # a pause before going on


class Sender:
    """Sends queued entries to the servers; see the module docstring.

    Straight on non-blocking UDP sockets, without a task or future per
    request: an entry is an ``_Attempt`` moved along by callbacks (the
    socket's reader, the timeout sweep), and the answers waiting in a socket
    are read in one go.  A request costs a packet build, one ``sendto`` and,
    for its answer, one ``recvfrom`` and an MD5."""

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
        self._inflight: dict[str, _Attempt] = {}
        self._acks: list[Entry] = []
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._idle = asyncio.Event()             # nothing in flight (``assign`` waits for it)
        self._deadlines: collections.deque[tuple[float, int, _Attempt]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        loop = self._loop = asyncio.get_running_loop()
        for config in self.settings.servers:
            server = _Server(config)
            server.link = make_link(
                self.settings.transport, config.host, config.port, self.counts,
                timeout=self.settings.timeout,
                answer=functools.partial(self._answer, server), read_done=self._refilled,
                lost=functools.partial(self._lost, server),
                current=functools.partial(self._current, server))
            await server.link.open(loop)
            self.servers.append(server)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._ack_wake.set()
        for attempt in list(self._inflight.values()):
            self._cancel(attempt)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.flush_acks()
        for server in self.servers:
            if server.link is not None:
                server.link.close()

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
                self._idle.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), bound)
                for attempt in list(self._inflight.values()):
                    self._cancel(attempt)
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
                self._fill()
                self._wake.clear()
                await self._wake.wait()
        finally:
            ack_task.cancel()
            await asyncio.wait([ack_task])

    def _fill(self) -> None:
        """Start the ready sessions' next entries, up to the in-flight limit
        (one at a time while every server is dead: a probe)."""
        if self._paused or self._closing:
            return
        ready, inflight, sessions = self._ready, self._inflight, self._sessions
        probing = all(server.dead_until for server in self.servers) and self.all_dead
        limit = 1 if probing else min(self.settings.max_in_flight, MAX_IDS)
        while ready and len(inflight) < limit:
            entry = sessions[ready.popleft()][0]
            attempt = inflight[entry.session] = _Attempt(entry, self._order())
            self._attempt(attempt)

    # --- one entry through the failover order ----------------------------------------------
    def _order(self) -> list[_Server]:
        """Servers to try, in failover order: the alive ones; all when none is."""
        if not any(server.dead_until for server in self.servers):
            return self.servers                  # every one alive (the list is only read)
        now = time.monotonic()
        alive = [server for server in self.servers if server.dead_until <= now]
        return alive or list(self.servers)

    def _attempt(self, attempt: _Attempt) -> None:
        """Send the entry to the attempt's current server: a new packet (new
        Identifier, current Acct-Delay-Time, new authenticator)."""
        if self._closing:
            self._finish(attempt, False)
            return
        loop = self._loop
        assert loop is not None, "start() comes first"
        server = attempt.order[attempt.index]
        entry = attempt.entry
        if not server.free:                          # every Identifier awaits an answer
            attempt.timer = loop.call_later(self.settings.timeout / 10, self._attempt, attempt)
            return
        try:
            encoded = entry.wire or self._encoded.get(entry.seq)
            if encoded is None:
                encoded = self._encoded[entry.seq] = self._encoder.encode(entry.attrs)
            ident = server.free[0]
            packet = request_packet(ident, encoded, delay_seconds(entry.enqueued_ms, wall_ms()),
                                    server.secret)
        except Exception:                            # a bug: keep the record, retry later
            self.counts["errors"] += 1
            log.exception("sending %s failed", entry.key)
            attempt.timer = loop.call_later(PROBE_PAUSE_MAX_S, self._finish, attempt, False)
            return
        server.free.popleft()
        server.pending[ident] = attempt
        attempt.server, attempt.ident, attempt.authenticator = server, ident, packet[4:20]
        attempt.sends += 1
        self._deadlines.append((loop.time() + self.settings.timeout, attempt.sends, attempt))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.settings.timeout, self._sweep)
        self.counts["sends"] += 1
        server.link.send(packet)                   # type: ignore[union-attr]

    def _release(self, attempt: _Attempt) -> None:
        """The attempt's request awaits no answer any more: its Identifier is free."""
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        server = attempt.server
        if server is not None:
            attempt.server = None
            del server.pending[attempt.ident]
            server.free.append(attempt.ident)

    def _sweep(self) -> None:
        """Requests past their deadline and still unanswered time out.  One
        timer for all (the timeout is the same for every send, so deadlines
        come in send order), run at most every ``SWEEP_S``: a timer per
        request cost more than its send."""
        assert self._loop is not None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _deadline, sends, attempt = deadlines.popleft()
            if attempt.server is not None and attempt.sends == sends:
                self._timed_out(attempt)
        self._sweeper = self._loop.call_later(max(deadlines[0][0] - now, SWEEP_S), self._sweep) \
            if deadlines else None

    def _timed_out(self, attempt: _Attempt) -> None:
        self.counts["timeouts"] += 1
        server = attempt.server
        self._release(attempt)
        if server is not None and server.link is not None:
            server.link.timed_out()                # TCP: the connection is stuck, a new one
        self._try_again(attempt)

    def _lost(self, server: _Server) -> None:
        """The link lost every request it carried (a TCP connection closed, or
        never opened): each counts as a send without answer."""
        for attempt in list(server.pending.values()):
            if attempt.server is server:
                self.counts["lost"] += 1
                self._release(attempt)
                self._try_again(attempt)

    @staticmethod
    def _current(server: _Server, packet: bytes) -> bool:
        """The request in ``packet`` still awaits the server's answer."""
        attempt = server.pending.get(packet[1])
        return attempt is not None and attempt.authenticator == packet[4:20]

    def _try_again(self, attempt: _Attempt) -> None:
        """The last send got no (good) answer: resend to the same server
        ``retries`` times, then fail over to the next; once every server in
        the order failed, the entry waits a growing pause before it is tried
        again (as a probe when every server is dead)."""
        settings = self.settings
        attempt.tries += 1
        if attempt.tries <= settings.retries or self._closing:
            self._attempt(attempt)
            return
        server = attempt.order[attempt.index]
        now = time.monotonic()
        if server.dead_until <= now:
            log.warning("RADIUS server %s: no answer after %d tries of %gs; failing over "
                        "for %gs", server.name, settings.retries + 1, settings.timeout,
                        settings.dead_time_s)
        server.dead_until = now + settings.dead_time_s
        self.counts["failovers"] += 1
        attempt.index += 1
        attempt.tries = 0
        if attempt.index < len(attempt.order):
            self._attempt(attempt)
            return
        self._probe_failures += 1
        pause = min(PROBE_PAUSE_MAX_S, PROBE_PAUSE_MIN_S * 2 ** min(self._probe_failures, 8))
        assert self._loop is not None
        attempt.timer = self._loop.call_later(pause, self._finish, attempt, False)

    def _answer(self, server: _Server, reply: bytes) -> None:
        """A packet from the server (its link read it): the answer to a
        pending request, if its Response Authenticator verifies."""
        attempt = server.pending.get(reply[1]) if len(reply) >= 20 else None
        if attempt is None or not reply_matches(reply, attempt.authenticator, server.secret):
            self.counts["stray_replies"] += 1
            return
        self._release(attempt)
        if reply[0] != ACCOUNTING_RESPONSE:
            self.counts["bad_replies"] += 1
            log.warning("RADIUS server %s answered code %s to %s", server.name, reply[0],
                        attempt.entry.key)
            self._try_again(attempt)
            return
        self.counts["acked"] += 1
        if server.dead_until:
            log.info("RADIUS server %s answers again", server.name)
            server.dead_until = 0.0
        # the next requests go out together once the link read every answer
        # (``read_done`` is ``_refilled``): the server wakes up once for them
        self._finish(attempt, True, fill=False)

    def _cancel(self, attempt: _Attempt) -> None:
        self._release(attempt)
        self._finish(attempt, False)

    def _finish(self, attempt: _Attempt, ok: bool, fill: bool = True) -> None:
        """The entry is done with: acknowledged (the session's next is ready),
        or not (first in line again, unless closing).  ``fill``: start the
        next entries now (else the caller does, once for many)."""
        attempt.timer = None
        entry = attempt.entry
        session = entry.session
        if self._inflight.get(session) is not attempt:
            return                                    # cancelled meanwhile (``assign``)
        del self._inflight[session]
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
            self._ready.appendleft(session)           # oldest first once a server answers
        if not self._inflight:
            self._idle.set()
        if fill:
            self._refilled()

    def _refilled(self) -> None:
        if self._complete:
            self._fill()
        else:
            self._wake.set()                          # the run loop pages the spool in first

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
