"""Transaction timer values: RFC 3261 §17 Table 4 (A–K) and RFC 6026 §8.4/§8.7 (L, M).

``TimerConfig`` holds the three tunables; ``config.for_transport(reliable)``
resolves them into the concrete values one transaction uses, computed once per
(config, transport kind) and shared by every transaction.

On reliable transports (TCP, TLS, SCTP) the RFC turns retransmission off
(A, E, G are ``None``) and zeroes the waits that only exist to absorb
retransmissions (D, I, J, K = 0).  A zero wait means the machine leaves the
waiting state at once instead of arming a timer.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["TimerConfig", "TransportTimers"]

# RFC 3261 §17.1.1.2: Timer D is "at least 32 seconds for unreliable transports".
_TIMER_D_FLOOR = 32.0


@dataclass(frozen=True, slots=True)
class TransportTimers:
    """Resolved timer values in seconds for one transport kind.

    ``None`` = timer not used (no retransmission on reliable transports).
    """
    reliable: bool
    t1: float
    t2: float
    a: float | None   # INVITE request retransmit, initial interval, doubles uncapped
    b: float          # INVITE client gives up waiting for any response
    d: float          # INVITE client absorbs non-2xx retransmissions (Completed)
    e: float | None   # non-INVITE request retransmit, doubles up to T2
    f: float          # non-INVITE client gives up
    g: float | None   # INVITE non-2xx response retransmit, doubles up to T2
    h: float          # INVITE server waits for the ACK
    i: float          # INVITE server absorbs ACK retransmissions (Confirmed)
    j: float          # non-INVITE server absorbs request retransmissions (Completed)
    k: float          # non-INVITE client absorbs response retransmissions (Completed)
    l: float          # RFC 6026: INVITE server stays Accepted after a 2xx  # noqa: E741
    m: float          # RFC 6026: INVITE client stays Accepted after a 2xx


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1 (RTT estimate), T2 (retransmit cap for non-INVITE/responses), T4 (max
    time a message stays in the network), RFC 3261 §17.1.1.1 defaults."""
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"invalid SIP timers T1={self.t1} T2={self.t2} T4={self.t4}")

    def for_transport(self, reliable: bool) -> TransportTimers:
        return _resolve(self, bool(reliable))


@lru_cache(maxsize=64)
def _resolve(cfg: TimerConfig, reliable: bool) -> TransportTimers:
    t1, t2, t4 = cfg.t1, cfg.t2, cfg.t4
    window = 64 * t1  # the retransmission window a peer may keep sending in
    if reliable:
        return TransportTimers(
            reliable=True, t1=t1, t2=t2,
            a=None, b=window, d=0.0, e=None, f=window, g=None, h=window,
            i=0.0, j=0.0, k=0.0, l=window, m=window,
        )
    return TransportTimers(
        reliable=False, t1=t1, t2=t2,
        a=t1, b=window,
        # D must outlive the server's non-2xx retransmissions (which last up
        # to Timer H = 64*T1); the RFC floor of 32 s is that value for T1 = 0.5 s.
        d=max(_TIMER_D_FLOOR, window),
        e=t1, f=window, g=t1, h=window,
        i=t4, j=window, k=t4, l=window, m=window,
    )
