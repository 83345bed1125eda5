"""INVITE client transaction: RFC 3261 §17.1.1 as corrected by RFC 6026 §8.4.

    Calling --1xx--> Proceeding --1xx--> Proceeding
    Calling/Proceeding --2xx--> Accepted   (pass up; Timer M; 2xx retransmissions
                                            and other forks' 2xx are passed up too)
    Calling/Proceeding --300-699--> Completed (ACK sent here, pass up; Timer D)
    Completed --300-699 retransmission--> Completed (ACK again, not passed up)
    Calling --Timer A--> Calling (retransmit INVITE, A doubles; unreliable only)
    Calling --Timer B--> Terminated (TimedOut)
    Completed --Timer D--> Terminated;  Accepted --Timer M--> Terminated

Timer B is left running after a 1xx but ignored in Proceeding: RFC 3261
Figure 5 gives B no transition there.  A proxy bounds Proceeding with its own
Timer C (§16.8), which belongs to the TU, and ends it with a CANCEL.
"""
from __future__ import annotations

from proxy.sip.message import SipMessage

from .actions import Action, PassUp, StartTimer, StopTimer, Transmit
from .base import DEFAULT_TIMERS, ClientTransaction, Event, State
from .timers import TimerConfig

__all__ = ["InviteClientTransaction", "build_non2xx_ack"]

_STOP_B = StopTimer("B")


def build_non2xx_ack(invite: SipMessage, response: SipMessage) -> SipMessage:
    """The ACK for a 300-699 response (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number of the INVITE; To of the
    response (it carries the tag of the UAS); one Via equal to the INVITE's top
    Via so the ACK matches the server transaction; the INVITE's Route headers
    (the ACK must follow the INVITE hop by hop); no body.
    """
    ack = SipMessage(method="ACK", uri=invite.uri)
    headers = ack.headers
    headers.append(("via", "Via", invite.top_via or ""))
    headers.append(("max-forwards", "Max-Forwards", "70"))
    headers.extend(line for line in invite.headers if line[0] == "route")
    headers.append(("from", "From", invite.get("from") or ""))
    to = response.get("to")
    headers.append(("to", "To", to if to is not None else (invite.get("to") or "")))
    headers.append(("call-id", "Call-ID", invite.call_id))
    headers.append(("cseq", "CSeq", f"{invite.cseq[0]} ACK"))
    return ack


class InviteClientTransaction(ClientTransaction):
    __slots__ = ("_ack",)
    _INITIAL = State.CALLING

    def __init__(self, request: SipMessage, *, reliable: bool,
                 timers: TimerConfig = DEFAULT_TIMERS):
        super().__init__(request, reliable=reliable, timers=timers)
        self._ack: Transmit | None = None

    @property
    def ack(self) -> SipMessage | None:
        """The ACK this transaction generated for a non-2xx final response."""
        return None if self._ack is None else self._ack.message

    def start(self) -> list[Action]:
        """Send the INVITE (RFC 3261 §17.1.1.2): Timer A only on unreliable
        transports, Timer B always."""
        t = self._timers
        actions: list[Action] = [Transmit(self.request)]
        if t.a is not None:
            self._interval = t.a
            actions.append(StartTimer("A", t.a))
        actions.append(StartTimer("B", t.b))
        return actions

    # -- handlers -------------------------------------------------------------
    def _first_provisional(self, response):
        # Retransmissions stop once the server shows it has the INVITE.
        return [*self._stop_retransmit("A"), PassUp(response)]

    def _provisional(self, response):
        return [PassUp(response)]

    def _accepted(self, response):
        # RFC 6026 §8.4: wait in Accepted for 2xx retransmissions and for
        # 2xx from other forks, all of which go to the TU.
        actions = self._stop_retransmit("A")
        actions += (_STOP_B, PassUp(response), StartTimer("M", self._timers.m))
        return actions

    def _success_again(self, response):
        return [PassUp(response)]

    def _rejected(self, response):
        ack = self._ack = Transmit(build_non2xx_ack(self.request, response))
        actions = self._stop_retransmit("A")
        # The TU hears of the response before the ACK goes out, so that a
        # transport error on the ACK (which ends the transaction) cannot leave
        # it without the final response.
        actions += (_STOP_B, PassUp(response), ack)
        return self._linger("D", self._timers.d, actions)

    def _rejected_again(self, _response):
        # RFC 3261 §17.1.1.2: a retransmitted final response means our ACK was
        # lost; send it again, but do not bother the TU.
        return [self._ack]

    def _retransmit_invite(self, _message):
        return self._retransmit(self.request, "A", 2 * self._interval)


# The state table, set once the class exists: mypyc (proxy/native.py) compiles no
# statements but assignments in a class body, and names no method there.
C, P, X, A, T = (State.CALLING, State.PROCEEDING, State.COMPLETED,
                 State.ACCEPTED, State.TERMINATED)
InviteClientTransaction._TABLE = {
    (C, Event.PROVISIONAL):     (P, InviteClientTransaction._first_provisional),
    (C, Event.SUCCESS):         (A, InviteClientTransaction._accepted),
    (C, Event.FAILURE):         (X, InviteClientTransaction._rejected),
    (C, Event.TIMER_A):         (C, InviteClientTransaction._retransmit_invite),
    (C, Event.TIMER_B):         (T, ClientTransaction._time_out),
    (C, Event.TRANSPORT_ERROR): (T, ClientTransaction._transport_failed),

    (P, Event.PROVISIONAL):     (P, InviteClientTransaction._provisional),
    (P, Event.SUCCESS):         (A, InviteClientTransaction._accepted),
    (P, Event.FAILURE):         (X, InviteClientTransaction._rejected),
    (P, Event.TRANSPORT_ERROR): (T, ClientTransaction._transport_failed),

    (X, Event.FAILURE):         (X, InviteClientTransaction._rejected_again),
    (X, Event.TIMER_D):         (T, ClientTransaction._terminate),
    # The TU already has its final response, so a failed ACK only ends the
    # transaction (the RFC's "inform TU" would hand it a second outcome).
    (X, Event.TRANSPORT_ERROR): (T, ClientTransaction._terminate),

    (A, Event.SUCCESS):         (A, InviteClientTransaction._success_again),
    (A, Event.TIMER_M):         (T, ClientTransaction._terminate),
}
del C, P, X, A, T
