"""The ng client's edge: one UDP socket, one timer, futures for the callers.

    client = await NgClient.open(relays, Schedule(timeout=1.0, retries=2))
    reply = await client.offer(call_id, from_tag, sdp)      # picks, fails over, sticks
    reply = await client.answer(call_id, from_tag, to_tag, sdp)
    stats = (await client.query(call_id)).stats
    await client.delete(call_id)
    client.close()

The protocol is in proxy/media/ng.py (requests, retransmissions, matching)
and proxy/media/relays.py (which rtpengine); this file only moves bytes and
time.  A request that times out marks its relay down; an ``offer`` then
moves to the next live relay (a call's first offer, or a re-offer after its
relay died), every other command fails with ``NgTimeout`` since the call's
media lives only on its relay.  Down relays are pinged every
``recheck_seconds`` by a background task and come back on a pong.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from proxy.media import ng
from proxy.media.bencode import Value
from proxy.media.relays import Relay, RelaySet

__all__ = ["NgClient", "NgTimeout", "NoRelay"]

log = logging.getLogger(__name__)


class NgTimeout(Exception):
    """No reply from the relay within the schedule's deadline."""


class NoRelay(Exception):
    """No live rtpengine for this call."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:    # type: ignore[override]
        self.client._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        pass        # ICMP unreachable from a dead relay: the timeout handles it


class NgClient:
    def __init__(self, relays: RelaySet, schedule: ng.Schedule, max_in_flight: int = 4096) -> None:
        self.relays = relays
        self.session = ng.NgSession(schedule, max_in_flight)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[str, asyncio.Future[ng.NgReply]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._prober: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, relays: RelaySet, schedule: ng.Schedule = ng.Schedule(), bind: str = "0.0.0.0",
                   max_in_flight: int = 4096) -> NgClient:
        client = cls(relays, schedule, max_in_flight)
        transport, _ = await client._loop.create_datagram_endpoint(lambda: _Protocol(client), local_addr=(bind, 0))
        client._transport = transport
        client._prober = asyncio.create_task(client._probe_loop())
        return client

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(NgTimeout("client closed"))
        self._waiters.clear()

    # --- commands -----------------------------------------------------------------------

    async def ping(self, relay: Relay) -> bool:
        try:
            reply = await self.request(relay, ng.ping())
        except NgTimeout:
            return False
        return reply.result == "pong"

    async def offer(self, call_id: str, from_tag: str, sdp: str, relay: str = "", **options: Value) -> ng.NgReply:
        """Offer on the call's relay, moving to the next live one while relays time out."""
        while True:
            chosen = self.relays.pick(call_id, self._loop.time(), explicit=relay)
            if chosen is None:
                raise NoRelay(f"no live rtpengine for call {call_id!r}")
            try:
                return await self.request(chosen, ng.offer(call_id, from_tag, sdp, **options))
            except NgTimeout:
                log.warning("rtpengine %s did not answer an offer; marked down", chosen.name)
                if relay:
                    raise

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Value) -> ng.NgReply:
        return await self.request(self._sticky(call_id), ng.answer(call_id, from_tag, to_tag, sdp, **options))

    async def query(self, call_id: str, from_tag: str = "", to_tag: str = "") -> ng.NgReply:
        return await self.request(self._sticky(call_id), ng.query(call_id, from_tag, to_tag))

    async def delete(self, call_id: str, from_tag: str = "", to_tag: str = "", **options: Value) -> ng.NgReply:
        relay = self._sticky(call_id)
        try:
            return await self.request(relay, ng.delete(call_id, from_tag, to_tag, **options))
        finally:
            if not from_tag and not to_tag:
                self.relays.forget(call_id)

    def _sticky(self, call_id: str) -> Relay:
        relay = self.relays.sticky(call_id)
        if relay is None:
            raise NoRelay(f"call {call_id!r} has no rtpengine (no offer went out)")
        return relay

    # --- the machinery ------------------------------------------------------------------

    async def request(self, relay: Relay, command: ng.Command) -> ng.NgReply:
        """One request to one relay; ``NgTimeout`` (and the relay marked down) when it stays silent."""
        try:
            send = self.session.request(relay.address, command, self._loop.time())
        except ng.NgBusy as exc:
            raise NgTimeout(str(exc)) from exc
        waiter: asyncio.Future[ng.NgReply] = self._loop.create_future()
        self._waiters[send.cookie] = waiter
        self._send(send)
        self._rearm()
        try:
            return await waiter
        finally:
            self._waiters.pop(send.cookie, None)
            self.session.cancel(send.cookie)        # a cancelled caller stops the retransmissions

    def _send(self, send: ng.Send) -> None:
        if self._transport is not None:
            self._transport.sendto(send.datagram, send.address)

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        answered = self.session.on_datagram(data, source)
        if answered is None:
            return
        relay = self.relays.by_address(source)
        if relay is not None:
            self.relays.alive(relay)
        waiter = self._waiters.get(answered.cookie)
        if waiter is not None and not waiter.done():
            waiter.set_result(answered.reply)
        self._rearm()

    def _fire(self) -> None:
        self._timer = None
        for action in self.session.due(self._loop.time()):
            if isinstance(action, ng.Send):
                self._send(action)
                continue
            relay = self.relays.by_address(action.address)
            if relay is not None:
                self.relays.failed(relay, self._loop.time())
            waiter = self._waiters.get(action.cookie)
            if waiter is not None and not waiter.done():
                waiter.set_exception(NgTimeout(f"no reply to {action.command} from {action.address}"))
        self._rearm()

    def _rearm(self) -> None:
        when = self.session.next_due()
        if self._timer is not None:
            if when is not None and self._timer.when() <= when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

    async def _probe_loop(self) -> None:
        interval = max(0.05, self.relays.recheck_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            for relay in self.relays.probes_due(self._loop.time()):
                with contextlib.suppress(NgTimeout):
                    await self.ping(relay)      # a pong marks it alive in _received
