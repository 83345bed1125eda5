"""Shared by the transaction tests: SIP message builders and a virtual-clock
runtime that carries out a transaction's actions the way the real one will."""
from __future__ import annotations

from proxy.sip.message import SipMessage, parse
from proxy.transactions import PassUp, StartTimer, StopTimer, Terminated, TimedOut, Transmit, TransportFailed

UPSTREAM_VIA = "SIP/2.0/UDP client.example.com:5060;branch=z9hG4bKupstream1"


def make_request(method: str = "INVITE", *, branch: str | None = "z9hG4bKtx1",
                 sent_by: str = "proxy.example.com:5060", transport: str = "UDP",
                 cseq: int = 1, call_id: str = "call-1@client", from_tag: str = "ft1",
                 to_tag: str | None = None, uri: str = "sip:bob@biloxi.example.com",
                 routes: tuple[str, ...] = ()) -> SipMessage:
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", f"Via: {UPSTREAM_VIA}",
             "Max-Forwards: 69", *(f"Route: {r}" for r in routes),
             f"From: Alice <sip:alice@atlanta.example.com>;tag={from_tag}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Contact: <sip:alice@192.0.2.1>"]
    body = b"v=0\r\n" if method == "INVITE" else b""
    if body:
        lines.append("Content-Type: application/sdp")
    return parse(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def make_response(request: SipMessage, status: int, *, to_tag: str | None = "tt1",
                  reason: str = "Reason") -> SipMessage:
    """A response as the next hop would send it: the request's Via lines,
    From, Call-ID, CSeq; To with the UAS's tag (none on 100)."""
    resp = SipMessage.response(status, reason)
    for line in request.headers:
        if line[0] in ("via", "from", "call-id", "cseq"):
            resp.headers.append(line[:])
    to = request.get("to") or ""
    if to_tag and status != 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    resp.add("to", to)
    return resp


def make_ack(invite: SipMessage, to_tag: str = "tt1") -> SipMessage:
    """The ACK an RFC 3261 UAC sends for a non-2xx: same top Via as the INVITE."""
    return make_request("ACK", branch=_branch_of(invite), cseq=invite.cseq[0],
                        call_id=invite.call_id, to_tag=to_tag, uri=invite.uri)


def make_cancel(invite: SipMessage) -> SipMessage:
    return make_request("CANCEL", branch=_branch_of(invite), cseq=invite.cseq[0],
                        call_id=invite.call_id, uri=invite.uri)


def _branch_of(request: SipMessage) -> str | None:
    from proxy.sip.via import parse_via
    return parse_via(request.top_via).branch


class Driver:
    """Carries out actions against a virtual clock and records what happened.

    Checks the runtime-facing contract as it goes: nothing follows
    ``Terminated``, which is emitted at most once.
    """

    def __init__(self, tx):
        self.tx = tx
        self.now = 0.0
        self.timers: dict[str, float] = {}       # name -> deadline
        self.transmitted: list[tuple[float, SipMessage]] = []
        self.passed_up: list[SipMessage] = []
        self.outcomes: list[object] = []         # TimedOut / TransportFailed records
        self.started: list[StartTimer] = []
        self.terminated = False

    def apply(self, actions):
        for action in actions:
            assert not self.terminated, f"{action} after Terminated"
            if isinstance(action, Transmit):
                self.transmitted.append((self.now, action.message))
            elif isinstance(action, StartTimer):
                assert action.delay > 0, action
                self.started.append(action)
                self.timers[action.name] = self.now + action.delay
            elif isinstance(action, StopTimer):
                self.timers.pop(action.name, None)
            elif isinstance(action, PassUp):
                self.passed_up.append(action.message)
            elif isinstance(action, (TimedOut, TransportFailed)):
                self.outcomes.append(action)
            elif isinstance(action, Terminated):
                self.terminated = True
                self.timers.clear()
            else:  # pragma: no cover
                raise AssertionError(f"unknown action {action!r}")
        if self.terminated:
            assert self.tx.terminated
        return actions

    def fire_next(self):
        """Advance the clock to the earliest armed timer and fire it."""
        name = min(self.timers, key=lambda n: (self.timers[n], n))
        self.now = self.timers.pop(name)
        return self.apply(self.tx.on_timer(name))

    def run(self, until: float | None = None):
        while self.timers and (until is None or min(self.timers.values()) <= until):
            self.fire_next()
        if until is not None:
            self.now = max(self.now, until)

    def transmit_times(self, message: SipMessage | None = None) -> list[float]:
        return [t for t, m in self.transmitted if message is None or m is message]
