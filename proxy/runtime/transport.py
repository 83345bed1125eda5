"""UDP and TCP sockets for one worker.  Everything here is I/O; decisions are the core's.

Each UDP socket gets an id carried in ``Target.conn`` so a response leaves
through the socket its request arrived on (NATs expect that); TCP connections
get ids too, and outgoing requests reuse or open a connection per peer.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable

from ..core.ports import Target
from ..infra.config import TcpSettings
from ..sip.message import MAX_MESSAGE_BYTES
from ..sip.reject import refusal
from ..sip.stream import FramingError, StreamFramer
from .throttle import ThrottledLog

log = logging.getLogger("sipledger.transport")

Deliver = Callable[[bytes, Target], None]
_ids = itertools.count(1)


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket.  No SO_REUSEADDR / SO_REUSEPORT: with either, a
    second proxy (or any program) could bind the same port and silently take
    part of the traffic.  The workers of one proxy share the public port by
    inheriting this one socket (see supervisor.py)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def tcp_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket.  SO_REUSEADDR only lets a restart bind while old
    connections linger in TIME_WAIT; on Linux it never lets two listeners share
    a port.  Workers share the public one by inheriting it, like UDP."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def inherited_socket(fd: int) -> socket.socket:
    """A socket passed down by the proxy supervisor (its family and type are read from the fd)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


# Sources remembered per UDP socket: a Target (a frozen dataclass, ~0.8 us to
# build) for every datagram was ~1 % of a worker; the same few peers send
# most of them.  Cleared when full, so spoofed source addresses cost nothing.
MAX_SOURCES = 4096


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, deliver: Deliver):
        self.deliver = deliver
        self.id = next(_ids)
        self.transport: asyncio.DatagramTransport | None = None
        self._sources: dict[tuple, Target] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        source = self._sources.get(addr)
        if source is None:
            if len(self._sources) >= MAX_SOURCES:
                self._sources.clear()
            source = self._sources[addr] = Target("udp", addr[0], addr[1], self.id)
        self.deliver(data, source)

    def error_received(self, exc) -> None:     # ICMP unreachable etc.: UDP is best effort
        log.debug("udp error: %s", exc)

    @property
    def local_port(self) -> int:
        if self.transport is None:
            raise RuntimeError("UDP endpoint not connected yet")
        return self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, host: str, port: int) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.sendto(data, (host, port))
        return True


class TcpConnection(asyncio.Protocol):
    def __init__(self, pool: "TcpPool", inbound: bool = False):
        self.pool = pool
        self.id = next(_ids)
        self.inbound = inbound                          # accepted here (counted against the caps)
        self.framer = StreamFramer(pool.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)          # set by connection_made, before any data
        self.pending: list[bytes] = []
        self.last_rx = pool.loop.time()                 # idle timeout runs from here
        self.message_since: float | None = None         # an unfinished message is buffered since
        self.admitted = False                           # registered in the pool (not refused)

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        if not self.pool.opened(self):
            transport.abort()                           # over a cap: nothing read, nothing said
            return
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        now = self.pool.loop.time()
        self.last_rx = now
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            self.refuse(exc.head, exc.status, exc.reason)
            return
        for msg in messages:
            self.pool.deliver(msg, Target("tcp", self.peer[0], self.peer[1], self.id))
        if not self.framer.started:
            self.message_since = None
        elif self.message_since is None or messages:
            self.message_since = now                    # a new message began in this read

    def refuse(self, head: bytes | None, status: int, reason: str) -> None:
        """Answer the request ``head`` belongs to (when it can be answered), then close."""
        if self.transport is None or self.transport.is_closing():
            return
        self.pool.refused(self, reason)
        answer = refusal(head, status, reason) if head else None
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()                          # after the answer is flushed

    def check_timers(self, now: float) -> None:
        limits = self.pool.limits
        idle = now - self.last_rx > limits.idle_timeout_seconds
        if self.message_since is not None and (idle or now - self.message_since > limits.message_timeout_seconds):
            head = self.framer.head()       # a request whose body never came still gets its answer
            self.refuse(head, 400, "Incomplete message" if head else "message not completed in time")
        elif idle:
            if self.transport is not None and not self.transport.is_closing():
                log.debug("closing idle TCP %s", self.peer)
                self.transport.close()

    def connection_lost(self, exc) -> None:
        self.pool.closed(self)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)


class TcpPool:
    """Accepted and outgoing TCP connections, by id and by peer address.

    Bounded in number and time (``[tcp]`` settings): accepted connections
    over the total or per-address cap are closed at once; a sweep closes
    connections idle too long and those whose message stays unfinished
    (slowloris, a body that never comes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Deliver,
                 limits: TcpSettings | None = None, exempt: Callable[[str], bool] = lambda ip: False,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.loop = loop
        self.deliver = deliver
        self.limits = limits or TcpSettings()
        self.max_message_bytes = max_message_bytes      # [proxy] max_message_bytes, as for UDP
        self.exempt = exempt                            # addresses free of the per-address cap
        self.by_id: dict[int, TcpConnection] = {}
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        self.inbound = 0
        self.per_ip: dict[str, int] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.counters = {"accepted": 0, "refused_total_cap": 0, "refused_ip_cap": 0, "closed_errors": 0}
        self._log = ThrottledLog(log)
        self._sweep: asyncio.TimerHandle | None = None

    async def listen(self, sock: socket.socket) -> None:
        self.servers.append(await self.loop.create_server(lambda: TcpConnection(self, inbound=True),
                                                          sock=sock))
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._sweep_interval(), self._sweep_once)

    def opened(self, conn: TcpConnection) -> bool:
        """Register a connection; False (refuse it) when an accepted one is over a cap."""
        if conn.inbound:
            ip = conn.peer[0]
            if self.inbound >= self.limits.max_connections:
                self.counters["refused_total_cap"] += 1
                self._log(logging.WARNING, "TCP connection from %s refused: %d connections open (tcp.max_connections)",
                          ip, self.inbound)
                return False
            count = self.per_ip.get(ip, 0)
            if count >= self.limits.max_connections_per_ip and not self.exempt(ip):
                self.counters["refused_ip_cap"] += 1
                self._log(logging.WARNING, "TCP connection from %s refused: %d open from there "
                          "(tcp.max_connections_per_ip)", ip, count)
                return False
            self.inbound += 1
            self.per_ip[ip] = count + 1
            self.counters["accepted"] += 1
        conn.admitted = True
        self.by_id[conn.id] = conn
        self.by_peer[conn.peer] = conn
        return True

    def refused(self, conn: TcpConnection, reason: str) -> None:
        self.counters["closed_errors"] += 1
        self._log(logging.INFO, "closing TCP %s:%d: %s", conn.peer[0], conn.peer[1], reason)

    def closed(self, conn: TcpConnection) -> None:
        if not conn.admitted:
            return
        conn.admitted = False
        self.by_id.pop(conn.id, None)
        if self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]
        if conn.inbound:
            self.inbound -= 1
            ip = conn.peer[0]
            left = self.per_ip.get(ip, 1) - 1
            if left > 0:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)

    def _sweep_interval(self) -> float:
        # often enough that a timeout is honoured within a quarter of itself (at most 1 s late)
        limits = self.limits
        return min(1.0, limits.idle_timeout_seconds / 4, limits.message_timeout_seconds / 4)

    def _sweep_once(self) -> None:
        now = self.loop.time()
        for conn in list(self.by_id.values()):
            conn.check_timers(now)
        self._sweep = self.loop.call_later(self._sweep_interval(), self._sweep_once)

    def send(self, data: bytes, target: Target) -> bool:
        conn = self.by_id.get(target.conn) if target.conn is not None else None
        if conn is None:
            conn = self.by_peer.get((target.host, target.port))
        if conn is None:
            if target.conn is not None:
                return False       # the connection a response belongs to is gone
            conn = TcpConnection(self)
            conn.pending.append(data)
            self.loop.create_task(self._connect(conn, target))
            return True
        conn.write(data)
        return True

    async def _connect(self, conn: TcpConnection, target: Target) -> None:
        try:
            await self.loop.create_connection(lambda: conn, target.host, target.port)
        except OSError as exc:
            log.info("TCP connect to %s failed: %s", target, exc)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.by_id.values()):
            if conn.transport is not None:
                conn.transport.close()
