"""Non-INVITE client transaction: RFC 3261 §17.1.2.

    Trying --1xx--> Proceeding --1xx--> Proceeding       (passed up)
    Trying/Proceeding --200-699--> Completed (passed up; Timer K)
    Trying --Timer E--> Trying (request again, E doubles up to T2; unreliable only)
    Proceeding --Timer E--> Proceeding (request again every T2)
    Trying/Proceeding --Timer F--> Terminated (TimedOut)
    Completed: response retransmissions absorbed; Timer K --> Terminated
"""
from __future__ import annotations

from .actions import Action, PassUp, StartTimer, StopTimer, Transmit
from .base import ClientTransaction, Event, State

__all__ = ["NonInviteClientTransaction"]

_STOP_F = StopTimer("F")


class NonInviteClientTransaction(ClientTransaction):
    __slots__ = ()
    _INITIAL = State.TRYING

    def start(self) -> list[Action]:
        """Send the request: Timer E only on unreliable transports, Timer F always."""
        t = self._timers
        actions: list[Action] = [Transmit(self.request)]
        if t.e is not None:
            self._interval = t.e
            actions.append(StartTimer("E", t.e))
        actions.append(StartTimer("F", t.f))
        return actions

    # -- handlers -------------------------------------------------------------
    def _provisional(self, response):
        # Unlike INVITE, retransmission goes on in Proceeding (at T2 pace):
        # the final response to a non-INVITE is never retransmitted by itself.
        return [PassUp(response)]

    def _final(self, response):
        actions = self._stop_retransmit("E")
        actions += (_STOP_F, PassUp(response))
        return self._linger("K", self._timers.k, actions)

    def _retransmit_trying(self, _message):
        return self._retransmit(self.request, "E", min(2 * self._interval, self._timers.t2))

    def _retransmit_proceeding(self, _message):
        return self._retransmit(self.request, "E", self._timers.t2)


# The state table, set once the class exists: mypyc (proxy/native.py) compiles no
# statements but assignments in a class body, and names no method there.
R, P, X, T = State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED
NonInviteClientTransaction._TABLE = {
    (R, Event.PROVISIONAL):     (P, NonInviteClientTransaction._provisional),
    (R, Event.SUCCESS):         (X, NonInviteClientTransaction._final),
    (R, Event.FAILURE):         (X, NonInviteClientTransaction._final),
    (R, Event.TIMER_E):         (R, NonInviteClientTransaction._retransmit_trying),
    (R, Event.TIMER_F):         (T, ClientTransaction._time_out),
    (R, Event.TRANSPORT_ERROR): (T, ClientTransaction._transport_failed),

    (P, Event.PROVISIONAL):     (P, NonInviteClientTransaction._provisional),
    (P, Event.SUCCESS):         (X, NonInviteClientTransaction._final),
    (P, Event.FAILURE):         (X, NonInviteClientTransaction._final),
    (P, Event.TIMER_E):         (P, NonInviteClientTransaction._retransmit_proceeding),
    (P, Event.TIMER_F):         (T, ClientTransaction._time_out),
    (P, Event.TRANSPORT_ERROR): (T, ClientTransaction._transport_failed),

    (X, Event.PROVISIONAL):     (X, ClientTransaction._absorb),
    (X, Event.SUCCESS):         (X, ClientTransaction._absorb),
    (X, Event.FAILURE):         (X, ClientTransaction._absorb),
    (X, Event.TIMER_K):         (T, ClientTransaction._terminate),
}
del R, P, X, T
