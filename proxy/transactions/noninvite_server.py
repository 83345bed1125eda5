"""Non-INVITE server transaction: RFC 3261 §17.2.2.

    Trying: request retransmissions absorbed (nothing to resend yet)
    Trying/Proceeding --1xx from TU--> Proceeding (sent; resent on retransmissions)
    Trying/Proceeding --200-699 from TU--> Completed (sent; Timer J)
    Completed: retransmitted requests get the final response again; Timer J --> Terminated
"""
from __future__ import annotations

from .base import Event, ServerTransaction, State

__all__ = ["NonInviteServerTransaction"]


class NonInviteServerTransaction(ServerTransaction):
    __slots__ = ()
    _INITIAL = State.TRYING

    def _provisional(self, response):
        return self._send(response)

    def _final(self, response):
        return self._linger("J", self._timers.j, self._send(response))


# The state table, set once the class exists: mypyc (proxy/native.py) compiles no
# statements but assignments in a class body, and names no method there.
R, P, X, T = State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED
NonInviteServerTransaction._TABLE = {
    (R, Event.REQUEST):         (R, ServerTransaction._absorb),
    (R, Event.PROVISIONAL):     (P, NonInviteServerTransaction._provisional),
    (R, Event.SUCCESS):         (X, NonInviteServerTransaction._final),
    (R, Event.FAILURE):         (X, NonInviteServerTransaction._final),

    (P, Event.REQUEST):         (P, ServerTransaction._resend_last),
    (P, Event.PROVISIONAL):     (P, NonInviteServerTransaction._provisional),
    (P, Event.SUCCESS):         (X, NonInviteServerTransaction._final),
    (P, Event.FAILURE):         (X, NonInviteServerTransaction._final),
    (P, Event.TRANSPORT_ERROR): (T, ServerTransaction._transport_failed),

    (X, Event.REQUEST):         (X, ServerTransaction._resend_last),
    (X, Event.TIMER_J):         (T, ServerTransaction._terminate),
    (X, Event.TRANSPORT_ERROR): (T, ServerTransaction._transport_failed),
}
del R, P, X, T
