"""Client side of the authorization call (proxy/contract/credit.py) over UDP.

One datagram out, one back, matched by request id; a lost datagram is resent
after the timeout (the service answers a repeated id idempotently), and after
the last retry the caller gets None and applies `[authorization] on_error`.

The service on this host (a loopback ``host``): the socket binds that address,
so nothing else can reach it.  On another host or container (compose/): the
socket binds every address and takes answers from the service's address only.

Several billing instances (``[authorization] owners_url``): each request goes
to the instance that owns the caller's account (proxy/runtime/billing_owners.py);
the owner table is read every ``owners_refresh_ms`` and again at once after a
timeout, so the retry of a request to an instance that died or gave the account
up goes to the new owner.  A partition without an owner (during a take-over)
sends nothing: the request times out into ``on_error`` like a lost datagram.
The owners may live on other hosts: the socket binds every address and takes
answers from the current owners' addresses only.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..contract import credit
from ..infra.config import CREDIT_PORT_FILE, RUN_DIR, AuthorizationSettings
from .billing_owners import OwnerMap, OwnerReader
from .metrics import observe_authorization

log = logging.getLogger("sipledger.authorization")

Callback = Callable[["credit.AuthorizeResponse | None"], None]


class AuthorizationClient(asyncio.DatagramProtocol):
    def __init__(self, settings: AuthorizationSettings, data_dir: Path):
        self.settings = settings
        self.port_file = data_dir / RUN_DIR / CREDIT_PORT_FILE     # written by the credit service
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[str, tuple[bytes, Callback, int, asyncio.TimerHandle, str]] = {}
        self._address: tuple[str, int] | None = None
        self.timeouts = 0
        self._bind = "0.0.0.0" if settings.owners_url else local_address(settings.host)
        self._wildcard = self._bind != settings.host     # answers are then taken from the service only
        self.started: dict[str, float] = {}   # request id -> when first sent (its latency metric)
        self.owners: OwnerMap | None = OwnerMap() if settings.owners_url else None
        self._refresh = asyncio.Event()
        self._refresher: asyncio.Task | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.local_address, 0))
        if self.settings.owners_url:
            self._refresher = loop.create_task(self._read_owners(OwnerReader(self.settings.owners_url)))

    async def _read_owners(self, reader: OwnerReader) -> None:
        """The owner table, every owners_refresh_ms or at once after a timeout."""
        failing = False
        try:
            while True:
                try:
                    self.owners = await asyncio.to_thread(reader.read)
                    if failing:
                        log.warning("billing owner table: readable again")
                    failing = False
                except Exception as exc:      # noqa: BLE001 - the last table stays; the next read may work
                    if not failing:           # once per outage, not once a second
                        log.warning("billing owner table: %s", (str(exc).splitlines() or [""])[0][:200])
                    failing = True
                self._refresh.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._refresh.wait(), self.settings.owners_refresh_ms / 1000)
        finally:
            reader.close()

    @property
    def local_address(self) -> str:
        return self._bind

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for _, callback, _, timer, _ in self.pending.values():
            timer.cancel()
            callback(None)
        self.pending.clear()
        self.started.clear()
        if self.transport is not None:
            self.transport.close()

    def _target(self, account: str) -> tuple[str, int] | None:
        if self.owners is not None:
            return self.owners.route(account)
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
        self._send(request.id, data, callback, self.settings.retries, request.account)

    def _send(self, request_id: str, data: bytes, callback: Callback, retries_left: int, account: str) -> None:
        loop = asyncio.get_running_loop()
        target = self._target(account)
        if target is not None and self.transport is not None:
            self.transport.sendto(data, target)
        timer = loop.call_later(self.settings.timeout_ms / 1000, self._timed_out, request_id)
        self.pending[request_id] = (data, callback, retries_left, timer, account)

    def _timed_out(self, request_id: str) -> None:
        entry = self.pending.pop(request_id, None)
        if entry is None:
            return
        data, callback, retries_left, _, account = entry
        self._address = None                 # the service may have restarted on another port
        self._refresh.set()                  # ... or its owner changed
        if retries_left > 0:
            self._send(request_id, data, callback, retries_left - 1, account)
            return
        self.timeouts += 1
        self.started.pop(request_id, None)
        callback(None)

    def _from_service(self, addr: tuple[str, int]) -> bool:
        """A wildcard socket takes answers from the service (or a current owner) only,
        checked before decoding: a stranger's datagrams cost nothing, not even a log line."""
        if not self._wildcard:
            return True
        if self.owners is not None:
            return tuple(addr[:2]) in self.owners.owners.values()
        return tuple(addr[:2]) == self._target("")

    def datagram_received(self, data: bytes, addr) -> None:
        if not self._from_service(addr):
            return
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
