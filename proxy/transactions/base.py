"""What the four transaction machines share: states, inputs, table dispatch.

Each machine is a class whose ``_TABLE`` maps ``(state, input)`` to
``(next state, handler)``.  Dispatch sets the next state, then runs the handler,
which returns the actions.  A pair missing from the table is an input the RFC
says to ignore, and yields no actions; for a server transaction a response
from the TU missing from the table is a programming error and raises
``TransactionStateError`` (the RFC says "discard", but a TU that sends a
second final response has a bug worth surfacing).

One exception to "the table names the next state": entering a state that only
waits to absorb retransmissions (Completed with D/K/J, Confirmed with I) on a
reliable transport, where that wait is zero, goes straight on to Terminated
(``_linger``).
"""
from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar

from proxy.sip.message import SipMessage

from .actions import TERMINATED, TIMED_OUT, TRANSPORT_FAILED, Action, StartTimer, StopTimer, Transmit
from .timers import TimerConfig, TransportTimers

__all__ = ["State", "Event", "TransactionStateError", "Transaction",
           "ClientTransaction", "ServerTransaction", "DEFAULT_TIMERS"]

DEFAULT_TIMERS = TimerConfig()


class State(StrEnum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"        # RFC 6026
    TERMINATED = "Terminated"


class Event(StrEnum):
    """Inputs.  The response classes mean "received" for a client transaction
    and "sent by the TU" for a server transaction."""
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


_TIMER_EVENTS = {e.value[-1]: e for e in Event if e.value.startswith("Timer ")}
_RESPONSE_EVENTS = {1: Event.PROVISIONAL, 2: Event.SUCCESS,
                    3: Event.FAILURE, 4: Event.FAILURE, 5: Event.FAILURE, 6: Event.FAILURE}


def response_event(message: SipMessage) -> Event | None:
    status = message.status
    if status is None:
        return None
    return _RESPONSE_EVENTS.get(status // 100)


class TransactionStateError(ValueError):
    """The TU asked a server transaction to send a response its state forbids
    (e.g. a second final response, or any response once Terminated)."""


# handlers are methods of the concrete machine; typed loosely so each table can name its own
Handler = Callable[[Any, "SipMessage | None"], list[Action]]
Table = dict[tuple[State, Event], tuple[State, Handler]]


class Transaction:
    __slots__ = ("request", "reliable", "state", "_timers", "_interval")

    _TABLE: ClassVar[Table] = {}
    _INITIAL: ClassVar[State]

    def __init__(self, request: SipMessage, *, reliable: bool,
                 timers: TimerConfig = DEFAULT_TIMERS):
        self.request = request
        self.reliable = reliable
        self.state: State = self._INITIAL
        self._timers: TransportTimers = timers.for_transport(reliable)
        # current interval of the retransmission timer (A, E or G); 0 = not running
        self._interval: float = 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state} {self.request.method} {self.request.call_id!r}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- inputs shared by all machines ------------------------------------
    def on_timer(self, name: str) -> list[Action]:
        """Timer ``name`` ("A" … "M") fired.  Stale or unknown timers are ignored."""
        event = _TIMER_EVENTS.get(name)
        if event is None:
            return []
        return self._feed(event, None)

    def on_transport_error(self) -> list[Action]:
        """The transport failed to send this transaction's last message."""
        return self._feed(Event.TRANSPORT_ERROR, None)

    def _feed(self, event: Event, message: SipMessage | None) -> list[Action]:
        entry = self._TABLE.get((self.state, event))
        if entry is None:
            return []
        self.state, handler = entry
        return handler(self, message)

    # -- handler building blocks --------------------------------------------
    def _retransmit(self, message: SipMessage, timer: str, interval: float) -> list[Action]:
        if not self._interval:
            # A retransmission timer that is not running (reliable transport,
            # or a late firing of a stopped one) is stale: ignore it.
            return []
        self._interval = interval
        return [Transmit(message), StartTimer(timer, interval)]

    def _linger(self, timer: str, delay: float, actions: list[Action]) -> list[Action]:
        """Wait ``delay`` in the state just entered, absorbing retransmissions;
        a zero wait (reliable transport) terminates right away."""
        if delay > 0:
            actions.append(StartTimer(timer, delay))
        else:
            self.state = State.TERMINATED
            actions.append(TERMINATED)
        return actions

    def _stop_retransmit(self, timer: str) -> list[Action]:
        """Stop the retransmission timer if it runs (never on reliable transports)."""
        if not self._interval:
            return []
        self._interval = 0.0
        return [StopTimer(timer)]

    # Common handlers, referenced by the machines' tables.
    def _absorb(self, _message: SipMessage | None) -> list[Action]:
        return []

    def _terminate(self, _message: SipMessage | None) -> list[Action]:
        return [TERMINATED]

    def _time_out(self, _message: SipMessage | None) -> list[Action]:
        return [TIMED_OUT, TERMINATED]

    def _transport_failed(self, _message: SipMessage | None) -> list[Action]:
        return [TRANSPORT_FAILED, TERMINATED]


class ClientTransaction(Transaction):
    """Sends one request; ``start()`` once, then feed it the matching responses."""
    __slots__ = ()

    def start(self) -> list[Action]:
        raise NotImplementedError

    def on_response(self, response: SipMessage) -> list[Action]:
        event = response_event(response)
        if event is None:
            return []
        return self._feed(event, response)


class ServerTransaction(Transaction):
    """Answers one request.  The runtime hands the request to the TU itself;
    the transaction sees retransmissions (``on_request``) and the TU's
    responses (``send_response``)."""
    __slots__ = ("last_response", "_quiet")

    def __init__(self, request: SipMessage, *, reliable: bool,
                 timers: TimerConfig = DEFAULT_TIMERS):
        super().__init__(request, reliable=reliable, timers=timers)
        self.last_response: SipMessage | None = None
        self._quiet = False       # the final response goes out once (no Timer G)

    def on_request(self, request: SipMessage) -> list[Action]:
        """A request matched to this transaction: a retransmission of the
        original, or (INVITE) an ACK.  Anything else is ignored."""
        method = request.method
        if method == "ACK":
            return self._feed(Event.ACK, request)
        if method == self.request.method:
            return self._feed(Event.REQUEST, request)
        return []

    def send_response(self, response: SipMessage, *, retransmit: bool = True) -> list[Action]:
        """The TU's response.  Raises ``TransactionStateError`` when this state
        cannot send it (after a final response, except 2xx retransmissions in
        Accepted), ``ValueError`` for a non-response.  ``retransmit=False``:
        a non-2xx final to an INVITE is sent once, not again on Timer G (a
        retransmitted INVITE still re-draws it; see proxy/core/engine.py)."""
        event = response_event(response)
        if event is None:
            raise ValueError(f"not a SIP response: {response!r}")
        entry = self._TABLE.get((self.state, event))
        if entry is None:
            raise TransactionStateError(
                f"{type(self).__name__} in state {self.state} cannot send "
                f"{response.status} for {self.request.method} {self.request.call_id!r}")
        self.state, handler = entry
        self._quiet = not retransmit
        return handler(self, response)

    def _send(self, response: SipMessage) -> list[Action]:
        self.last_response = response
        return [Transmit(response)]

    def _resend_last(self, _message: SipMessage | None) -> list[Action]:
        # RFC 3261 §17.2.1/§17.2.2: a retransmitted request gets the most
        # recent response again (nothing if the TU has not answered yet).
        last = self.last_response
        return [] if last is None else [Transmit(last)]
