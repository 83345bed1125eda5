"""INVITE server transaction: RFC 3261 §17.2.1 as corrected by RFC 6026 §8.7.

    Proceeding --1xx from TU--> Proceeding (sent; kept for retransmitted INVITEs)
    Proceeding --2xx from TU--> Accepted   (sent; Timer L)
    Proceeding --300-699 from TU--> Completed (sent; Timer G unreliable, Timer H)
    Completed --Timer G--> Completed (response again, G doubles up to T2)
    Completed --ACK--> Confirmed (Timer I)      Completed --Timer H--> Terminated (TimedOut)
    Confirmed --Timer I--> Terminated
    Accepted: INVITE retransmissions absorbed (the TU, not the transaction,
      retransmits 2xx), ACKs passed up (they belong to the dialog), further 2xx
      from the TU sent; Timer L --> Terminated

The runtime hands the INVITE itself to the TU; sending 100 Trying within
200 ms is the TU's duty (a proxy does it at once, §16.2).
"""
from __future__ import annotations

from .actions import TRANSPORT_FAILED, PassUp, StartTimer, StopTimer
from .base import Event, ServerTransaction, State

__all__ = ["InviteServerTransaction"]

_STOP_H = StopTimer("H")


class InviteServerTransaction(ServerTransaction):
    __slots__ = ()
    _INITIAL = State.PROCEEDING

    # -- handlers -------------------------------------------------------------
    def _provisional(self, response):
        return self._send(response)

    def _accept(self, response):
        actions = self._send(response)
        actions.append(StartTimer("L", self._timers.l))
        return actions

    def _send_2xx_again(self, response):
        # RFC 6026 §8.7: the TU's 2xx retransmissions (or a proxy forwarding
        # them from downstream) still go out through the transaction.
        return self._send(response)

    def _reject(self, response):
        t = self._timers
        actions = self._send(response)
        if t.g is not None and not self._quiet:
            self._interval = t.g
            actions.append(StartTimer("G", t.g))
        actions.append(StartTimer("H", t.h))
        return actions

    def _retransmit_response(self, _message):
        return self._retransmit(self.last_response, "G",
                                min(2 * self._interval, self._timers.t2))

    def _confirmed(self, _ack):
        # The ACK arrived: stop retransmitting, then absorb ACK retransmissions
        # for Timer I (zero on reliable transports).
        actions = self._stop_retransmit("G")
        actions.append(_STOP_H)
        return self._linger("I", self._timers.i, actions)

    def _ack_to_tu(self, ack):
        return [PassUp(ack)]

    def _report_transport_failure(self, _message):
        # RFC 6026 §7.1: a transport error sending a 2xx must not discard the
        # transaction; the TU is told and the state stays Accepted.
        return [TRANSPORT_FAILED]


# The state table, set once the class exists: mypyc (proxy/native.py) compiles no
# statements but assignments in a class body, and names no method there.
P, X, F, A, T = (State.PROCEEDING, State.COMPLETED, State.CONFIRMED,
                 State.ACCEPTED, State.TERMINATED)
InviteServerTransaction._TABLE = {
    (P, Event.REQUEST):         (P, ServerTransaction._resend_last),
    (P, Event.PROVISIONAL):     (P, InviteServerTransaction._provisional),
    (P, Event.SUCCESS):         (A, InviteServerTransaction._accept),
    (P, Event.FAILURE):         (X, InviteServerTransaction._reject),
    (P, Event.TRANSPORT_ERROR): (T, ServerTransaction._transport_failed),

    (X, Event.REQUEST):         (X, ServerTransaction._resend_last),
    (X, Event.ACK):             (F, InviteServerTransaction._confirmed),
    (X, Event.TIMER_G):         (X, InviteServerTransaction._retransmit_response),
    (X, Event.TIMER_H):         (T, ServerTransaction._time_out),
    (X, Event.TRANSPORT_ERROR): (T, ServerTransaction._transport_failed),

    (F, Event.REQUEST):         (F, ServerTransaction._absorb),
    (F, Event.ACK):             (F, ServerTransaction._absorb),
    (F, Event.TIMER_I):         (T, ServerTransaction._terminate),

    (A, Event.REQUEST):         (A, ServerTransaction._absorb),
    (A, Event.ACK):             (A, InviteServerTransaction._ack_to_tu),
    (A, Event.SUCCESS):         (A, InviteServerTransaction._send_2xx_again),
    (A, Event.TIMER_L):         (T, ServerTransaction._terminate),
    (A, Event.TRANSPORT_ERROR): (A, InviteServerTransaction._report_transport_failure),
}
del P, X, F, A, T
