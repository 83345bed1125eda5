"""What a transaction asks its runtime to do (sans-I/O: the machines never touch sockets or clocks).

Every input method of a transaction returns a list of these records, to be
carried out in order.  The records are immutable and slotted; the ones without
fields are shared singletons (``TERMINATED`` …) so the hot path allocates little.
"""
from __future__ import annotations

from dataclasses import dataclass

from proxy.sip.message import SipMessage

__all__ = [
    "Transmit", "StartTimer", "StopTimer", "PassUp", "TimedOut", "TransportFailed", "Terminated",
    "Action", "TIMED_OUT", "TRANSPORT_FAILED", "TERMINATED",
]


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``message`` to this transaction's peer (the runtime knows the address).

    Client transactions transmit their request (and the ACK of a non-2xx);
    server transactions transmit responses.  Retransmissions reuse the same
    object, so the runtime may cache its serialisation.
    """
    message: SipMessage


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm timer ``name`` (RFC 3261 letter: "A", "B" …) to fire in ``delay`` seconds.

    Replaces a running timer of the same name.  When it fires, call
    ``on_timer(name)``; a timer firing after it was stopped is harmless.
    """
    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    name: str


@dataclass(frozen=True, slots=True)
class PassUp:
    """Hand ``message`` to the transaction user (the proxy core).

    Client transactions pass up responses; a server transaction passes up only
    the ACK of a 2xx that reaches it in the Accepted state (RFC 6026 §8.7): it
    belongs to the dialog, not to the transaction.
    """
    message: SipMessage


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Client: Timer B or F fired with no final response.  Server: Timer H fired
    without an ACK.  The TU decides what follows (a proxy treats a client
    timeout as a 408 for that branch, RFC 3261 §16.8)."""


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure sending this transaction's message
    (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2: "inform the TU").

    Kept apart from ``TimedOut`` because the TU answers differently: a proxy
    treats a failed branch as a 503 (§16.9), a timed-out one as a 408.
    """


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over: remove it and cancel every timer it still has."""


Action = Transmit | StartTimer | StopTimer | PassUp | TimedOut | TransportFailed | Terminated

TIMED_OUT = TimedOut()
TRANSPORT_FAILED = TransportFailed()
TERMINATED = Terminated()
