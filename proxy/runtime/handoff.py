"""Hand-off between workers sharing the public UDP socket.

Every worker reads the shared public socket, so any of them may receive any
datagram.  All of one call's messages must meet in the worker that holds its
transactions and dialog: the owner is chosen by a stable hash of the Call-ID,
and a worker that reads someone else's datagram passes it on, with its
original source address, over a Unix datagram socket under the data dir.

TCP (docs/nat.md): a connection belongs to the worker that accepted it, and
only that process can write to it.  A message read from a connection goes
to its Call-ID's owner like a datagram, marked with the reader's index; the
owner's answers and requests for that connection (``Target.conn`` < 0, see
``remote_conn``) come back here as "write" packets the reader puts on the
wire.  REGISTERs stay with the reader: their binding names the reader as the
connection's owner.  A message too large for a hand-off is processed where it
was read, as before.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..core.node import call_owner

log = logging.getLogger("sipledger.handoff")

_CALL_ID_MARKERS = (b"\ncall-id:", b"\ni:")
MAX_BACKLOG = 50_000
MAX_PACKET = 128 * 1024          # larger messages are processed where they were read


def remote_conn(worker: int) -> int:
    """``Target.conn`` of a TCP connection owned by ``worker`` (another process):
    negative, so it never collides with a local connection id."""
    return -(worker + 1)


def conn_owner(conn: int) -> int:
    """The worker a ``remote_conn`` value names."""
    return -conn - 1


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID of a SIP datagram without parsing it (None if absent)."""
    head_end = data.find(b"\r\n\r\n")
    head = data[:head_end if head_end >= 0 else len(data)].lower()
    for marker in _CALL_ID_MARKERS:
        start = head.find(marker)
        if start >= 0:
            start += len(marker)
            end = head.find(b"\n", start)
            # take the original bytes: Call-IDs are case-sensitive
            return data[start:end if end >= 0 else len(head)].strip()
    return None


def owner_of(data: bytes, workers: int) -> int | None:
    call_id = call_id_of(data)
    if not call_id:
        return None
    return call_owner(call_id, workers)


def socket_path(run_dir: Path, index: int) -> str:
    return str(run_dir / f"worker-{index}.sock")


class Handoff:
    """This worker's end: forward datagrams to owners, receive our own."""

    def __init__(self, run_dir: Path, index: int, workers: int,
                 deliver: Callable[[bytes, str, int], None],
                 deliver_tcp: Callable[[bytes, str, int, int], None] | None = None,
                 write_tcp: Callable[[bytes, str, int], None] | None = None):
        self.run_dir = run_dir
        self.index = index
        self.workers = workers
        self.deliver = deliver
        self.deliver_tcp = deliver_tcp    # (data, ip, port, reader): read from a sibling's connection
        self.write_tcp = write_tcp        # (data, ip, port): for our connection to ip:port
        self.forwarded = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        path = socket_path(run_dir, index)
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.paths = [socket_path(run_dir, i) for i in range(workers)]
        # one connected socket per sibling: a full peer queue (net.unix.max_dgram_qlen
        # is small) then shows as "not writable" and datagrams wait here, in order,
        # instead of being processed by the wrong worker
        self.peers: dict[int, socket.socket] = {}
        self.backlog: dict[int, deque[bytes]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    async def wait_for_siblings(self, timeout: float = 15.0) -> bool:
        """Wait until every worker can take hand-offs, so that no call starts in
        a worker that is not its owner while a sibling is still starting."""
        import asyncio
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(os.path.exists(p) for p in self.paths):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def route(self, data: bytes, ip: str, port: int, transport: str = "udp") -> bool:
        """True when the message belongs to another worker and was passed on."""
        owner = owner_of(data, self.workers)
        if owner is None or owner == self.index:
            return False
        header = f"{ip} {port}\n" if transport == "udp" else f"tcp {ip} {port} {self.index}\n"
        return self._pass(owner, header.encode() + data)

    def write_via(self, owner: int, ip: str, port: int, data: bytes) -> bool:
        """Ask ``owner`` to write ``data`` on its TCP connection with ip:port."""
        return self._pass(owner, f"write {ip} {port}\n".encode() + data)

    def _pass(self, owner: int, packet: bytes) -> bool:
        if len(packet) > MAX_PACKET:
            return False
        backlog = self.backlog.get(owner)
        if backlog:                      # keep the order of what is already waiting
            backlog.append(packet)
            return True
        try:
            self._peer(owner).send(packet)
        except BlockingIOError:
            self._queue(owner, packet)
        except OSError as exc:          # owner restarting: process it here rather than drop it
            log.debug("hand-off to worker %d failed: %s", owner, exc)
            self._drop_peer(owner)
            return False
        self.forwarded += 1
        return True

    def _peer(self, owner: int) -> socket.socket:
        peer = self.peers.get(owner)
        if peer is None:
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_PACKET)
            peer.setblocking(False)
            peer.connect(self.paths[owner])
            self.peers[owner] = peer
        return peer

    def _drop_peer(self, owner: int) -> None:
        peer = self.peers.pop(owner, None)
        if peer is not None:
            peer.close()

    def _queue(self, owner: int, packet: bytes) -> None:
        backlog = self.backlog.setdefault(owner, deque())
        if not backlog and self.loop is not None:
            self.loop.add_writer(self.peers[owner].fileno(), self._drain, owner)
        if len(backlog) >= MAX_BACKLOG:   # an owner that stopped reading: shed load (UDP semantics)
            backlog.popleft()
        backlog.append(packet)

    def _drain(self, owner: int) -> None:
        backlog = self.backlog[owner]
        peer = self.peers[owner]
        try:
            while backlog:
                peer.send(backlog[0])
                backlog.popleft()
        except BlockingIOError:
            return
        except OSError:
            backlog.clear()
        if self.loop is not None:
            self.loop.remove_writer(peer.fileno())

    def _readable(self) -> None:
        for _ in range(256):
            try:
                packet = self.sock.recv(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            header, _, data = packet.partition(b"\n")
            fields = header.decode().split(" ")
            if len(fields) == 2:
                self.deliver(data, fields[0], int(fields[1]))
            elif fields[0] == "tcp" and self.deliver_tcp is not None:
                self.deliver_tcp(data, fields[1], int(fields[2]), int(fields[3]))
            elif fields[0] == "write" and self.write_tcp is not None:
                self.write_tcp(data, fields[1], int(fields[2]))

    def close(self, loop) -> None:
        loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for owner in list(self.peers):
            if self.backlog.get(owner):
                loop.remove_writer(self.peers[owner].fileno())
            self._drop_peer(owner)
