"""Client side of the authorization call (proxy/contract/credit.py) over UDP.

One datagram out, one back, matched by request id; a lost datagram is resent
after the timeout (the service answers a repeated id idempotently), and after
the last retry the caller gets None and applies `[authorization] on_error`.

The service on this host (a loopback ``host``): the socket binds that address,
so nothing else can reach it.  On another host or container (compose/): the
socket binds every address and takes answers from the service's address only.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..contract import credit
from ..infra.config import CREDIT_PORT_FILE, RUN_DIR, AuthorizationSettings
from .metrics import observe_authorization

log = logging.getLogger("sipledger.authorization")

Callback = Callable[["credit.AuthorizeResponse | None"], None]


class AuthorizationClient(asyncio.DatagramProtocol):
    def __init__(self, settings: AuthorizationSettings, data_dir: Path):
        self.settings = settings
        self.port_file = data_dir / RUN_DIR / CREDIT_PORT_FILE     # written by the credit service
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[str, tuple[bytes, Callback, int, asyncio.TimerHandle]] = {}
        self._address: tuple[str, int] | None = None
        self.timeouts = 0
        self._bind = local_address(settings.host)
        self._wildcard = self._bind != settings.host     # answers are then taken from the service only
        self.started: dict[str, float] = {}   # request id -> when first sent (its latency metric)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.local_address, 0))

    @property
    def local_address(self) -> str:
        return self._bind

    def close(self) -> None:
        for _, callback, _, timer in self.pending.values():
            timer.cancel()
            callback(None)
        self.pending.clear()
        self.started.clear()
        if self.transport is not None:
            self.transport.close()

    def _target(self) -> tuple[str, int] | None:
        if self.settings.port:
            return self.settings.host, self.settings.port
        if self._address is None:
            try:
                self._address = (self.settings.host, int(self.port_file.read_text().strip()))
            except (OSError, ValueError):
                return None
        return self._address

    def authorize(self, request: credit.AuthorizeRequest, callback: Callback) -> None:
        data = credit.encode(request)
        self.started[request.id] = time.perf_counter()
        self._send(request.id, data, callback, self.settings.retries)

    def _send(self, request_id: str, data: bytes, callback: Callback, retries_left: int) -> None:
        loop = asyncio.get_running_loop()
        target = self._target()
        if target is not None and self.transport is not None:
            self.transport.sendto(data, target)
        timer = loop.call_later(self.settings.timeout_ms / 1000, self._timed_out, request_id)
        self.pending[request_id] = (data, callback, retries_left, timer)

    def _timed_out(self, request_id: str) -> None:
        entry = self.pending.pop(request_id, None)
        if entry is None:
            return
        data, callback, retries_left, _ = entry
        self._address = None                 # the service may have restarted on another port
        if retries_left > 0:
            self._send(request_id, data, callback, retries_left - 1)
            return
        self.timeouts += 1
        self.started.pop(request_id, None)
        callback(None)

    def datagram_received(self, data: bytes, addr) -> None:
        if self._wildcard and tuple(addr[:2]) != self._target():
            return                           # a wildcard socket: only the service answers
        try:
            response = credit.decode_response(data)
        except Exception:
            log.info("undecodable authorization answer from %s", addr)
            return
        entry = self.pending.pop(response.id, None)
        if entry is None:
            return                           # a late answer to a retried request
        entry[3].cancel()
        started = self.started.pop(response.id, None)
        if started is not None:
            observe_authorization(time.perf_counter() - started)
        entry[1](response)


def local_address(host: str) -> str:
    """Where the client socket binds to reach the credit service at ``host``: that
    address itself when it is loopback (or a name), else every address of its family."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_loopback:
        return host
    return "::" if address.version == 6 else "0.0.0.0"
