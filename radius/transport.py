"""How the sender's packets reach a RADIUS server: UDP (RFC 2866) or TCP (RFC 6613).

A link carries one server's Accounting-Requests and hands its answers back
to the sender (radius/queue.py ``Sender``), which keeps everything else:
Identifiers, authenticators, deadlines, resends, failover.  A link calls

* ``answer(packet)`` for each packet that came from the server,
* ``read_done()`` once the packets of one read are handed over (the sender
  then sends its next requests together),
* ``lost()`` when the requests it carried can no longer be answered (TCP:
  the connection closed or never opened); the sender treats each of them
  as a send without answer.

UDP (``UdpLink``): one unconnected socket.  uvloop stops watching a
connected UDP socket after an ICMP port-unreachable (the server was down
once), so answers are read from any address and only the server's kept.

TCP (``TcpLink``, RFC 6613): one connection, opened when there is something
to send, with the same packets as UDP; answers may come in any order (the
Identifier names the request).  The requests of one event-loop turn go out
in one write: what makes TCP cheaper than a datagram per request.

* A request never goes twice over one connection (a reliable transport does
  not lose it): when one goes unanswered past its deadline the server or the
  connection is stuck, and the link closes it; its resend and every other
  request it carried go on a new connection.
* A packet whose length field is not 20..4096 (RFC 2865 3) breaks the
  framing: the connection is closed.
* Reconnects: at once after a connection that had answered closed; after a
  failed connect (or one that closed before any answer) a pause, doubling
  from ``RECONNECT_MIN_S`` to ``RECONNECT_MAX_S``.  A connect takes at most
  the send timeout.
* Bounded: the sender has at most 256 requests (one Identifier space)
  awaiting a server, so the requests waiting for a connection or for the
  turn's write, and what the transport has not written yet, are at most 256
  packets of at most 4096 bytes; the reader keeps at most one partial
  packet beyond what it was just given (``PacketFramer``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("radius.transport")

MIN_PACKET = 20                 # RFC 2865 3: code, identifier, length, authenticator
MAX_PACKET = 4096               # ... and the largest
READS_PER_WAKEUP = 512          # UDP: datagrams read per readable event at most (more: next round)
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
HELD_MAX = 256                  # packets waiting for a connection before the stale ones are dropped
TRANSPORTS = ("udp", "tcp")


class FramingError(ValueError):
    """The stream does not carry RADIUS packets (a length outside 20..4096)."""


class PacketFramer:
    """RADIUS packets out of a byte stream (RFC 6613: each packet is
    framed by its own Length field).  Sans-I/O: ``feed`` takes whatever a
    read gave and returns the whole packets it completed; a partial one
    waits for the next read.  Raises ``FramingError`` on a bad length (the
    stream is then unusable: the caller closes it)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._partial:
            data = self._partial + data
        packets = []
        pos, end = 0, len(data)
        while end - pos >= 4:
            length = data[pos + 2] << 8 | data[pos + 3]
            if not MIN_PACKET <= length <= MAX_PACKET:
                self._partial = b""
                raise FramingError(f"RADIUS packet length {length} (must be {MIN_PACKET}..{MAX_PACKET})")
            if end - pos < length:
                break
            packets.append(data[pos:pos + length])
            pos += length
        self._partial = data[pos:] if pos < end else b""
        return packets

    @property
    def pending(self) -> int:
        """Bytes of a packet not complete yet."""
        return len(self._partial)


class Link:
    """One server's path: see the module docstring."""

    def __init__(self, host: str, port: int, counts: Counter, *, timeout: float,
                 answer: Callable[[bytes], None], read_done: Callable[[], None],
                 lost: Callable[[], None], current: Callable[[bytes], bool]) -> None:
        """``current(packet)``: the request still awaits its answer (a packet
        held for a connection is dropped once the sender gave up on it)."""
        self.host, self.port = host, port
        self.counts = counts
        self.timeout = timeout
        self.answer, self.read_done, self.lost, self.current = answer, read_done, lost, current

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError

    def send(self, packet: bytes) -> None:
        raise NotImplementedError

    def timed_out(self) -> None:
        """A request sent on this link got no answer in time."""

    def close(self) -> None:
        raise NotImplementedError


class UdpLink(Link):
    """A datagram per request, from one unconnected socket."""

    sock: socket.socket | None = None
    address: tuple = ()
    _loop: asyncio.AbstractEventLoop | None = None

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        family, kind, proto, _, address = (await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM))[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        self.sock, self.address, self._loop = sock, address, loop
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, packet: bytes) -> None:
        try:
            self.sock.sendto(packet, self.address)     # type: ignore[union-attr]
        except OSError as exc:
            # e.g. the socket buffer is full: the deadline takes it as a send without answer
            self.counts["errors"] += 1
            log.debug("send to %s failed: %s", self.name, exc)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            for _ in range(READS_PER_WAKEUP):       # a flood of strays cannot hold the loop
                try:
                    reply, source = sock.recvfrom(MAX_PACKET)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self.counts["errors"] += 1
                    log.debug("receiving from %s failed: %s", self.name, exc)
                    return
                if source == self.address:
                    self.answer(reply)
                else:
                    self.counts["stray_replies"] += 1
        finally:
            self.read_done()

    def close(self) -> None:
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


# TcpLink's states and what a send does in each (the transitions are the
# methods named beside them)
IDLE = "idle"               # no connection: a send opens one (_connect)
CONNECTING = "connecting"   # sends wait in ``_held`` -> OPEN (_connected) or WAITING (_failed)
OPEN = "open"               # sends join the turn's write -> IDLE (_drop) on close, error, timeout
WAITING = "waiting"         # a pause before the next connect; sends wait in ``_held`` -> CONNECTING
CLOSED = "closed"           # close(): sends are dropped


class TcpLink(Link):
    """RADIUS over one TCP connection (RFC 6613); see the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state = IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._held: list[bytes] = []          # waiting for the connection (CONNECTING, WAITING)
        self._batch: list[bytes] = []         # the turn's requests, written together (OPEN)
        self._connector: asyncio.Task | None = None
        self._pause = 0.0                     # before the next connect; 0 = connect at once
        self._pause_timer: asyncio.TimerHandle | None = None
        self._answered = False                # the open connection answered at least once
        self._framer = PacketFramer()

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop                     # connected on the first send

    def send(self, packet: bytes) -> None:
        state = self.state
        if state is OPEN:
            if not self._batch:
                self._loop.call_soon(self._write)          # type: ignore[union-attr]
            self._batch.append(packet)
        elif state is CLOSED:
            return
        else:
            held = self._held
            if len(held) >= HELD_MAX:
                # resends of requests that timed out while waiting: only the
                # current ones (one per Identifier at most) are worth keeping
                held[:] = [p for p in held if self.current(p)]
            held.append(packet)
            if state is IDLE:
                self._connect()

    def _write(self) -> None:
        batch, self._batch = self._batch, []
        if batch and self.state is OPEN and self._transport is not None:
            self._transport.write(b"".join(batch))
            self.counts["tcp_writes"] += 1

    def timed_out(self) -> None:
        if self.state is OPEN:
            log.warning("RADIUS server %s: a request over TCP went unanswered; reconnecting", self.name)
            self._drop()

    # --- the connection ----------------------------------------------------------------
    def _connect(self) -> None:
        self.state = CONNECTING
        assert self._loop is not None
        self._connector = self._loop.create_task(self._open_connection())

    async def _open_connection(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Stream(self), self.host, self.port), self.timeout)
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            self._connector = None
            if self.state is CONNECTING:
                log.debug("connecting to %s failed: %s", self.name, exc)
                self._failed()
            return
        self._connector = None
        if self.state is not CONNECTING:      # closed meanwhile
            transport.close()
            return
        self._connected(transport)            # type: ignore[arg-type]

    def _connected(self, transport: asyncio.Transport) -> None:
        self.state = OPEN
        self._transport = transport
        self._answered = False
        self._framer = PacketFramer()
        self.counts["tcp_connects"] += 1
        held, self._held = self._held, []
        self._batch = [packet for packet in held if self.current(packet)]
        self._write()

    def _failed(self) -> None:
        """The connect failed (or the connection closed before any answer):
        its requests are lost; the next connect waits a growing pause."""
        self.counts["tcp_connect_failures"] += 1
        self._pause = min(RECONNECT_MAX_S, max(RECONNECT_MIN_S, self._pause * 2))
        self.state = WAITING
        self._held = []
        assert self._loop is not None
        self._pause_timer = self._loop.call_later(self._pause, self._paused)
        self.lost()                           # their resends wait in ``_held`` for the next connect

    def _paused(self) -> None:
        self._pause_timer = None
        if self.state is not WAITING:
            return
        self._held = [packet for packet in self._held if self.current(packet)]
        if self._held:
            self._connect()
        else:
            self.state = IDLE

    def _drop(self) -> None:
        """Close the open connection: its requests are lost."""
        transport, self._transport = self._transport, None
        answered = self._answered
        self._batch = []
        if transport is not None:
            transport.abort()
        if answered:
            self._pause = 0.0
            self.state = IDLE
            self.lost()                       # their resends open a new connection
        else:
            self._failed()

    def _closed_by_peer(self, transport: asyncio.BaseTransport, exc: Exception | None) -> None:
        if transport is self._transport and self.state is OPEN:
            log.info("RADIUS server %s closed the TCP connection%s", self.name, f": {exc}" if exc else "")
            self._drop()

    def _received(self, transport: asyncio.BaseTransport, data: bytes) -> None:
        if transport is not self._transport:
            return
        try:
            packets = self._framer.feed(data)
        except FramingError as exc:
            self.counts["errors"] += 1
            log.warning("RADIUS server %s: %s; reconnecting", self.name, exc)
            self._drop()
            return
        if not packets:
            return
        self._answered = True
        try:
            for packet in packets:
                self.answer(packet)
        finally:
            self.read_done()

    def close(self) -> None:
        self.state = CLOSED
        self._held, self._batch = [], []
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


class _Stream(asyncio.Protocol):
    """asyncio's side of a TcpLink's connection."""

    def __init__(self, link: TcpLink) -> None:
        self.link = link
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.link._received(self.transport, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.link._closed_by_peer(self.transport, exc)


def make_link(transport: str, host: str, port: int, counts: Counter, **kwargs) -> Link:
    """The link for ``[radius] transport``."""
    kinds: dict[str, type[Link]] = {"udp": UdpLink, "tcp": TcpLink}
    return kinds[transport](host, port, counts, **kwargs)
