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
from ..sip.stream import FramingError, StreamFramer

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


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, deliver: Deliver):
        self.deliver = deliver
        self.id = next(_ids)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.deliver(data, Target("udp", addr[0], addr[1], self.id))

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
    def __init__(self, pool: "TcpPool"):
        self.pool = pool
        self.id = next(_ids)
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)          # set by connection_made, before any data
        self.pending: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.pool.opened(self)
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing TCP %s: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        for msg in messages:
            self.pool.deliver(msg, Target("tcp", self.peer[0], self.peer[1], self.id))

    def connection_lost(self, exc) -> None:
        self.pool.closed(self)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)


class TcpPool:
    """Accepted and outgoing TCP connections, by id and by peer address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Deliver):
        self.loop = loop
        self.deliver = deliver
        self.by_id: dict[int, TcpConnection] = {}
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        self.servers: list[asyncio.AbstractServer] = []

    async def listen(self, sock: socket.socket) -> None:
        self.servers.append(await self.loop.create_server(lambda: TcpConnection(self), sock=sock))

    def opened(self, conn: TcpConnection) -> None:
        self.by_id[conn.id] = conn
        self.by_peer[conn.peer] = conn

    def closed(self, conn: TcpConnection) -> None:
        self.by_id.pop(conn.id, None)
        if self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]

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
        for server in self.servers:
            server.close()
        for conn in list(self.by_id.values()):
            if conn.transport is not None:
                conn.transport.close()
