"""What the sans-I/O core needs from its runtime, and nothing more.

The core decides; the runtime (proxy/runtime) owns sockets, the clock's timers
and the event outbox.  Tests drive the core with a recording fake.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Target:
    """A next hop: where a message goes, or where it came from."""
    transport: str                    # "udp" | "tcp"
    host: str
    port: int
    conn: int | None = None           # TCP connection id, to answer on the same connection
    # a registered contact behind a NAT reached at its source address: the hook the
    # dialog uses to pin in-dialog requests here (not part of the address's identity)
    nat: bool = field(default=False, compare=False)
    # a binding another proxy instance owns: the Route to it, added to the branch
    # (proxy/core/peering.py; not part of the address's identity either)
    route: str | None = field(default=None, compare=False)
    # ... and where that NATed party's own packets come from: the media relay's
    # NAT source for it (media.py), since ``host`` is the other instance
    party: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.transport}"


@dataclass(frozen=True, slots=True)
class MediaResult:
    """The outcome of one ng request (``Effects.media``): ``reply`` is the parsed
    answer (proxy/media/ng.py ``NgReply``; rtpengine may still say ``error``),
    None when no rtpengine answered (``error`` says why)."""
    reply: Any = None
    relay: str = ""                   # the rtpengine that answered (its configured url)
    error: str = ""


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Effects(Protocol):
    def send(self, data: bytes, target: Target) -> bool:
        """Queue bytes for the target; False when it cannot be reached (TCP down)."""

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle: ...

    def emit(self, event: Any) -> None:
        """Hand a call event to the durable outbox (never blocks on Kafka)."""

    def monotonic(self) -> float: ...

    def authorize(self, request: Any, callback: Callable[[Any], None]) -> None:
        """The authorization call (proxy/contract/credit.py): callback(response or None)."""

    def media(self, kind: str, params: dict[str, Any], callback: Callable[[MediaResult], None]) -> None:
        """One ng request to rtpengine (kind: offer, answer, query, delete; params:
        call_id, from_tag, to_tag, sdp, options: rtpengine's own keys): callback(MediaResult) once, later."""
