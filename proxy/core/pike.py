"""Per-source request-rate limiting before parsing (OpenSIPS pike semantics).

Sans-I/O: ``check(ip, now)`` says whether one request from ``ip`` may go on;
the caller owns the clock and decides what a refusal looks like (drop or 503).

Every source address gets a counter per sampling window.  A source that sends
more than ``density`` requests in one window is blocked for ``block_seconds``;
requests it keeps sending while blocked are still counted, so a source that
keeps flooding stays blocked (pike's "red" state) and one that stops is let
back in ``block_seconds`` after its last excess.

Memory is bounded whatever the number of attacker addresses: at most
``max_sources`` entries, the one whose window started longest ago forgotten
first.  A forgotten source that floods again is blocked again after ``density``
requests.  Exempt sources (trusted peers) are remembered as exempt so the
address match runs once per source, not once per packet.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

__all__ = ["Pike", "Verdict"]


class Verdict(Enum):
    ADMIT = "admit"
    BLOCKED = "blocked"          # a source already blocked
    NEWLY_BLOCKED = "newly"      # this request tipped its source over the density


class _Source:
    __slots__ = ("window_start", "count", "blocked_until", "exempt", "blocked_requests")

    def __init__(self, now: float, exempt: bool) -> None:
        self.window_start = now
        self.count = 0
        self.blocked_until = 0.0
        self.exempt = exempt
        self.blocked_requests = 0


def _never(ip: str) -> bool:
    return False


class Pike:
    def __init__(self, window: float = 2.0, density: int = 400, block_seconds: float = 60.0,
                 max_sources: int = 16384, exempt: Callable[[str], bool] = _never) -> None:
        if window <= 0 or density < 1 or block_seconds <= 0 or max_sources < 1:
            raise ValueError("pike needs window > 0, density >= 1, block_seconds > 0, max_sources >= 1")
        self.window = window
        self.density = density
        self.block_seconds = block_seconds
        self.max_sources = max_sources
        self.exempt = exempt
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        # exported as metrics later; cumulative since start
        self.requests = 0            # requests checked
        self.dropped = 0             # requests refused (blocked sources)
        self.blocks = 0              # times a source became blocked
        self.evicted = 0             # sources forgotten to stay within max_sources

    def check(self, ip: str, now: float) -> Verdict:
        self.requests += 1
        src = self._sources.get(ip)
        if src is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
                self.evicted += 1
            src = self._sources[ip] = _Source(now, self.exempt(ip))
        if src.exempt:
            return Verdict.ADMIT
        if now - src.window_start >= self.window:
            src.window_start = now
            src.count = 0
            self._sources.move_to_end(ip)      # once per window: the order is "window started"
        src.count += 1
        if src.count > self.density:
            newly = src.blocked_until <= now
            src.blocked_until = now + self.block_seconds
            if newly:
                self.blocks += 1
            self.dropped += 1
            src.blocked_requests += 1
            return Verdict.NEWLY_BLOCKED if newly else Verdict.BLOCKED
        if src.blocked_until > now:
            self.dropped += 1
            src.blocked_requests += 1
            return Verdict.BLOCKED
        return Verdict.ADMIT

    def blocked(self, now: float) -> list[tuple[str, float, int]]:
        """(address, seconds left, requests refused) of every source blocked now, most refused first."""
        out = [(ip, src.blocked_until - now, src.blocked_requests)
               for ip, src in self._sources.items() if src.blocked_until > now]
        out.sort(key=lambda row: (-row[2], row[0]))
        return out

    def counters(self) -> dict[str, int]:
        return {"requests": self.requests, "dropped": self.dropped, "blocks": self.blocks,
                "evicted": self.evicted, "tracked": len(self._sources)}
