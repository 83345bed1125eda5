"""Which rtpengine a call uses: weights, stickiness and failover (OpenSIPS rtpengine module semantics).

    relays = RelaySet([Relay("a", ("10.0.0.1", 2223), weight=2), Relay("b", ("10.0.0.2", 2223))])
    relay = relays.pick(call_id, now)            # the call's relay, chosen on its first offer
    relays.failed(relay, now)                    # a request to it timed out: down, re-probed later
    relay = relays.pick(call_id, now)            # a new offer fails over to a live one
    relays.forget(call_id)                       # after delete

A new call goes to a live relay chosen by hashing its Call-ID over the live
relays' weights (so every worker picks the same relay for the same call, with
no shared state), or to an explicitly named one.  Once chosen, the call stays
on that relay for answer/query/delete: its media ports live there, another
relay knows nothing of it.  Only a fresh ``offer`` after ``failed`` may move
it (the old relay's session is lost anyway).

A relay that timed out is down; ``probes_due`` names the down relays whose
``recheck_seconds`` have passed, for the edge to ``ping``; a pong brings it
back (``alive``).  When every relay is down, ``pick`` returns None: the
caller's policy decides (pass the call unrelayed or refuse it).
The sticky table is bounded (``max_calls``, oldest forgotten first) so calls
that never see a delete cannot grow it without end.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from proxy.infra.config import MediaSettings

__all__ = ["Relay", "RelaySet", "relays_from_settings"]


@dataclass(frozen=True)
class Relay:
    name: str                       # as configured, e.g. "udp:127.0.0.1:2223"
    address: tuple[str, int]
    weight: int = 1                 # share of new calls; 0 = only when chosen explicitly


class RelaySet:
    def __init__(self, relays: list[Relay], recheck_seconds: float = 10.0, max_calls: int = 200_000) -> None:
        if not relays:
            raise ValueError("at least one rtpengine is needed")
        if len({r.name for r in relays}) != len(relays):
            raise ValueError("rtpengine names must be unique")
        self.relays = tuple(relays)
        self.recheck_seconds = recheck_seconds
        self.max_calls = max_calls
        self._down_since: dict[str, float] = {}      # name -> when last marked down or probed
        self._calls: OrderedDict[str, Relay] = OrderedDict()

    def by_name(self, name: str) -> Relay | None:
        return next((r for r in self.relays if r.name == name), None)

    def by_address(self, address: tuple[str, int]) -> Relay | None:
        return next((r for r in self.relays if r.address == address), None)

    def is_up(self, relay: Relay) -> bool:
        return relay.name not in self._down_since

    def live(self) -> list[Relay]:
        return [r for r in self.relays if self.is_up(r)]

    def pick(self, call_id: str, now: float, explicit: str = "") -> Relay | None:
        """The relay for ``call_id``: its sticky one if it has one and it is up (or it has no
        offer to redo), else a new choice, remembered."""
        relay = self._calls.get(call_id)
        if relay is not None and self.is_up(relay):
            return relay
        relay = self._choose(call_id, explicit)
        if relay is not None:
            self._calls[call_id] = relay
            self._calls.move_to_end(call_id)
            while len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)
        return relay

    def sticky(self, call_id: str) -> Relay | None:
        """The relay that got this call's offer, up or down (answer/query/delete go there)."""
        return self._calls.get(call_id)

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def failed(self, relay: Relay, now: float) -> None:
        self._down_since[relay.name] = now

    def alive(self, relay: Relay) -> None:
        self._down_since.pop(relay.name, None)

    def probes_due(self, now: float) -> list[Relay]:
        """Down relays to ping now; each is due again ``recheck_seconds`` later."""
        due = [r for r in self.relays
               if r.name in self._down_since and now - self._down_since[r.name] >= self.recheck_seconds]
        for relay in due:
            self._down_since[relay.name] = now
        return due

    def _choose(self, call_id: str, explicit: str) -> Relay | None:
        if explicit:
            named = self.by_name(explicit)
            return named if named is not None and self.is_up(named) else None
        candidates = [r for r in self.live() if r.weight > 0]
        total = sum(r.weight for r in candidates)
        if not total:
            return None
        point = int.from_bytes(hashlib.blake2b(call_id.encode("utf-8", "surrogateescape"),
                                               digest_size=8).digest(), "big") % total
        for relay in candidates:
            if point < relay.weight:
                return relay
            point -= relay.weight
        return None     # unreachable: point < total


def relays_from_settings(media: MediaSettings) -> RelaySet:
    """The configured rtpengines (``checks()`` has vetted their URLs)."""
    relays = []
    for entry in media.rtpengines:
        address = entry.address()
        if address is None:
            raise ValueError(f"media.rtpengines: bad url {entry.url!r}")
        relays.append(Relay(entry.url, address, entry.weight))
    return RelaySet(relays, recheck_seconds=media.recheck_seconds)
