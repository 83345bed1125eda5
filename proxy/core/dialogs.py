"""Dialog tracking: confirmed calls, their maximum duration and teardown by the proxy.

A dialog is born from the 2xx to an initial INVITE.  It knows both parties'
contacts, tags, CSeqs and the route set on each side of this proxy, which is
what the proxy needs to send BYE both ways on its own (dialog timeout, or a
`call.control` teardown), as OpenSIPS's dlg_end_dlg does.

Dialogs are keyed by (Call-ID, caller tag, callee tag) (RFC 3261 §12).  A forked
INVITE answered by two branches makes two dialogs: the proxy relays both 2xx
(§16.7 step 5) and the caller ACKs and BYEs the extra one (§13.2.2.4).  Only
the first answered dialog is the call: it is billed, carries the maximum
duration and is what `call.control` addresses by Call-ID.  The extra ones emit
no call events, and the proxy ends any still up after ``EXTRA_GRACE_S`` (a
caller may not keep an extra dialog as an unbilled call).
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ..contract import events as ev
from ..infra import clock
from ..sip.build import reason_header
from ..sip.message import SipMessage
from ..sip.uri import parse_name_addr, parse_uri
from ..transactions import NonInviteClientTransaction, client_key, new_branch
from .nat import sender_nated
from .ports import Target, TimerHandle
from .txdriver import TxDriver

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core


class DialogState(Enum):
    CONFIRMED = "confirmed"
    ENDING = "ending"        # the proxy sent BYE both ways, waiting for the answers
    ENDED = "ended"


# (state, input) -> next state; inputs not listed leave the state unchanged.
TRANSITIONS = {
    (DialogState.CONFIRMED, "bye"): DialogState.ENDED,
    (DialogState.CONFIRMED, "proxy_bye"): DialogState.ENDING,
    (DialogState.ENDING, "bye"): DialogState.ENDING,
    (DialogState.ENDING, "byes_answered"): DialogState.ENDED,
}

ENDED_LINGER_S = 32.0        # keep an ended dialog to recognise late retransmissions
EXTRA_GRACE_S = 32.0
MAX_DURATION_MARGIN_S = 0.002  # never end a call before its granted time, as its CDR measures it         # 64*T1: time a caller has to BYE an extra (forked) dialog

DialogKey = tuple[str, str, str]     # (Call-ID, caller tag, callee tag)


class Side:
    """One party as seen from the proxy."""
    __slots__ = ("from_value", "to_value", "contact", "routes", "target", "cseq", "nat")

    def __init__(self, from_value: str, to_value: str, contact: str, routes: list[str],
                 target: Target, cseq: int, nat: bool = False):
        self.from_value = from_value   # From header of requests the proxy sends to this party
        self.to_value = to_value       # To header of those requests
        self.contact = contact         # the party's Contact: Request-URI
        self.routes = routes           # route set from the proxy toward the party
        self.target = target           # where the proxy reached the party (INVITE destination / source)
        self.cseq = cseq               # the next CSeq the proxy uses toward this party
        # behind a NAT: requests for its Contact go to ``target`` instead (the
        # Contact is unreachable); never for a gateway or peer (RFC 3261 §16.6, §16.12)
        self.nat = nat


class DialogWatcher(Protocol):
    """A feature that follows dialogs (media relay, session timers): the table
    tells each watcher, in order, of every dialog it confirms, every in-dialog
    request it sees and every dialog that stops being confirmed.  Watchers keep
    their per-dialog state in the dialog's own slot (``media``, ``session``)."""

    def confirmed(self, dialog: "Dialog", invite: SipMessage, response: SipMessage) -> None: ...

    def request(self, dialog: "Dialog", request: SipMessage, by: str | None) -> None: ...

    def ended(self, dialog: "Dialog") -> None: ...


class Dialog:
    __slots__ = ("call_id", "caller_tag", "callee_tag", "caller", "callee", "state", "leg",
                 "answered_ms", "answered_mono", "max_duration_s", "timer", "pending_byes",
                 "end_reason", "billed", "media", "session", "facts")

    def __init__(self, call_id: str, caller_tag: str, callee_tag: str, caller: Side,
                 callee: Side, leg: int, answered_ms: int, answered_mono: float,
                 max_duration_s: int, billed: bool = True):
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.caller = caller
        self.callee = callee
        self.state = DialogState.CONFIRMED
        self.leg = leg
        self.answered_ms = answered_ms
        self.answered_mono = answered_mono
        self.max_duration_s = max_duration_s
        self.timer: TimerHandle | None = None
        self.pending_byes = 0
        self.end_reason: str | None = None
        self.billed = billed           # the call's dialog (first answered); False: an extra fork
        self.media: Any = None         # the media relay's state (proxy/core/media.py)
        self.session: Any = None       # the session timer's state (RFC 4028)
        self.facts: Any = None         # livecalls.CallFacts of the billed dialog (the live-call list)

    @property
    def key(self) -> DialogKey:
        return self.call_id, self.caller_tag, self.callee_tag

    def apply(self, event: str) -> DialogState:
        self.state = TRANSITIONS.get((self.state, event), self.state)
        return self.state


class DialogTable:
    def __init__(self, core: "Core"):
        self.core = core
        self.dialogs: dict[DialogKey, Dialog] = {}
        self.by_call: dict[str, list[Dialog]] = {}  # Call-ID -> its dialogs, the billed one first
        self.pending_max: dict[str, int] = {}    # set_max_duration before the answer
        self.watchers: list[DialogWatcher] = []

    def __len__(self) -> int:
        return sum(1 for d in self.dialogs.values() if d.state is not DialogState.ENDED)

    def get(self, call_id: str) -> Dialog | None:
        """The call's dialog (the billed one) for a Call-ID, as call.control addresses it."""
        return next((d for d in self.by_call.get(call_id, ()) if d.billed), None)

    def knows(self, call_id: str) -> bool:
        return call_id in self.by_call

    # -- creation -------------------------------------------------------------
    def confirm(self, invite: SipMessage, response: SipMessage, caller_target: Target,
                callee_target: Target, leg: int, max_duration_s: int) -> tuple[Dialog, bool]:
        """The dialog a 2xx to the initial INVITE confirms, and whether it is new
        (a 2xx retransmission finds the dialog it made)."""
        core = self.core
        from_value = invite.get("from") or ""
        to_value = response.get("to") or ""
        caller_tag = parse_name_addr(from_value).tag or ""
        callee_tag = parse_name_addr(to_value).tag or ""
        known = self.dialogs.get((invite.call_id, caller_tag, callee_tag))
        if known is not None:
            return known, False
        record_route = response.values("record-route")
        mine = [i for i, rr in enumerate(record_route) if core.node.is_me_route(rr)]
        first, last = (mine[0], mine[-1]) if mine else (len(record_route), -1)
        toward_callee = list(reversed(record_route[:first]))
        toward_caller = record_route[last + 1:]
        caller_contact = _contact_uri(invite)
        caller = Side(from_value=to_value, to_value=from_value,
                      contact=caller_contact or (invite.get("from") or ""),
                      routes=toward_caller, target=caller_target, cseq=1,
                      nat=caller_contact is not None and sender_nated(invite, caller_target))
        callee = Side(from_value=from_value, to_value=to_value,
                      contact=_contact_uri(response) or invite.uri or "",
                      routes=toward_callee, target=callee_target, cseq=invite.cseq[0] + 1,
                      nat=callee_target.nat)
        siblings = self.by_call.setdefault(invite.call_id, [])
        billed = not any(d.billed for d in siblings)
        if billed:
            max_duration_s = self.pending_max.pop(invite.call_id, max_duration_s)
        else:
            max_duration_s = min(max_duration_s, int(EXTRA_GRACE_S))
        dialog = Dialog(invite.call_id, caller_tag, callee_tag, caller, callee, leg,
                        clock.now_ms(), core.effects.monotonic(), max_duration_s, billed)
        siblings.append(dialog)
        self.dialogs[dialog.key] = dialog
        self._arm(dialog)
        core.stats.dialogs_processed += 1
        for watcher in self.watchers:
            watcher.confirmed(dialog, invite, response)
        return dialog, True

    def _arm(self, dialog: Dialog) -> None:
        if dialog.timer is not None:
            dialog.timer.cancel()
        elapsed = self.core.effects.monotonic() - dialog.answered_mono
        # + 2 ms: the answer's event is stamped (wall-clock ms) a moment after
        # answered_mono; without it a 1 s cap could end the CDR at 999 ms
        delay = max(0.0, dialog.max_duration_s - elapsed) + MAX_DURATION_MARGIN_S
        dialog.timer = self.core.effects.call_later(delay, self._on_max_duration, dialog)

    # -- traffic inside the dialog ---------------------------------------------------
    def find(self, request: SipMessage) -> tuple[Dialog | None, str | None]:
        """The dialog of an in-dialog request and who sent it ("caller"/"callee")."""
        try:
            from_tag = parse_name_addr(request.get("from") or "").tag or ""
            to_tag = parse_name_addr(request.get("to") or "").tag or ""
        except ValueError:
            return None, None
        call_id = request.call_id
        dialog = self.dialogs.get((call_id, from_tag, to_tag))
        if dialog is not None:
            return dialog, "caller"
        dialog = self.dialogs.get((call_id, to_tag, from_tag))
        if dialog is not None:
            return dialog, "callee"
        return None, None

    def on_request(self, request: SipMessage) -> tuple[Dialog | None, str | None]:
        """Track CSeqs and BYE; returns the dialog and who sent it ("caller"/"callee")."""
        dialog, by = self.find(request)
        if dialog is None:
            return None, None
        cseq = request.cseq[0]
        if request.method != "ACK":
            # the proxy's own requests toward a party must go above what it has seen
            side = dialog.callee if by == "caller" else dialog.caller
            side.cseq = max(side.cseq, cseq + 1)
        for watcher in self.watchers:
            watcher.request(dialog, request, by)
        if request.method == "BYE":
            was_up = dialog.state is DialogState.CONFIRMED
            if was_up:
                self._stop_timer(dialog)
            dialog.apply("bye")
            if was_up:
                self._ended(dialog)
            if dialog.state is DialogState.ENDED:
                self._forget_later(dialog)
        return dialog, by

    # -- control ------------------------------------------------------------------------
    def set_max_duration(self, call_id: str, seconds: int) -> bool:
        dialog = self.get(call_id)
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            if self.core.has_pending_call(call_id):
                self.pending_max[call_id] = seconds
                return True
            return False
        dialog.max_duration_s = seconds
        self._arm(dialog)
        return True

    def teardown(self, call_id: str, reason: str, cause: int = 200) -> Dialog | None:
        """End the call's dialog (and any extra fork still up); None if it is not up."""
        dialog = self.get(call_id)
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            return None
        for each in self.by_call.get(call_id, ()):
            if each.state is DialogState.CONFIRMED:
                self.end_by_proxy(each, reason_header(cause, reason), reason)
        return dialog

    def _on_max_duration(self, dialog: Dialog) -> None:
        dialog.timer = None
        if dialog.state is not DialogState.CONFIRMED:
            return
        if not dialog.billed:       # an extra fork the caller did not end: not the call
            self.end_by_proxy(dialog, reason_header(200, "Call completed elsewhere"), "extra_fork")
            return
        self.end_by_proxy(dialog, reason_header(200, "Maximum call duration reached"),
                           "max_duration")
        core = self.core
        core.emit(core.events.for_dialog(ev.DialogTimeout, dialog,
                                         max_duration_s=dialog.max_duration_s,
                                         answered_ms=dialog.answered_ms))

    def end_by_proxy(self, dialog: Dialog, reason_value: str, reason: str) -> None:
        """BYE both ways with ``reason_value`` as Reason header; ``reason`` is kept
        as the dialog's ``end_reason``.  The caller emits the call event saying why."""
        if dialog.state is not DialogState.CONFIRMED:
            return
        self._stop_timer(dialog)
        dialog.apply("proxy_bye")
        dialog.end_reason = reason
        dialog.pending_byes = 2
        self.core.stats.teardown(reason)
        self._ended(dialog)
        for side in (dialog.callee, dialog.caller):
            self._send_bye(dialog, side, reason_value)

    def _ended(self, dialog: Dialog) -> None:
        """The dialog is no longer confirmed (a BYE passed, or the proxy sent its own)."""
        for watcher in self.watchers:
            watcher.ended(dialog)

    def _send_bye(self, dialog: Dialog, side: Side, reason_value: str) -> None:
        """BYE along the route set, else to the Contact (a NATed party: where it was
        reached); when that does not resolve, to where the party was reached."""
        if side.routes:
            uri = parse_name_addr(side.routes[0]).uri
        elif side.nat:
            self._send_bye_to(dialog, side, reason_value, side.target)
            return
        else:
            uri = side.contact
        self.core.when_resolved(uri, lambda target: self._send_bye_to(
            dialog, side, reason_value, target or side.target))

    def _send_bye_to(self, dialog: Dialog, side: Side, reason_value: str, target: Target) -> None:
        core = self.core
        bye = SipMessage.request("BYE", side.contact)
        for route in side.routes:
            bye.add("route", route)
        branch = new_branch()
        bye.add("via", core.node.via(target.transport, branch))
        bye.add("max-forwards", "70")
        bye.add("from", side.from_value)
        bye.add("to", side.to_value)
        bye.add("call-id", dialog.call_id)
        bye.add("cseq", f"{side.cseq} BYE")
        side.cseq += 1
        bye.add("reason", reason_value)
        bye.add("user-agent", core.user_agent)
        machine = NonInviteClientTransaction(bye, reliable=target.transport != "udp",
                                             timers=core.timers)
        driver = TxDriver(machine, target, core.effects, client_key(bye), core.client_txs,
                          on_message=lambda resp: self._bye_answered(dialog, resp),
                          on_timeout=lambda: self._bye_answered(dialog, None))
        driver.run(machine.start())

    def _bye_answered(self, dialog: Dialog, resp: SipMessage | None) -> None:
        if resp is not None and (resp.status or 0) < 200:
            return
        dialog.pending_byes -= 1
        if dialog.pending_byes <= 0 and dialog.apply("byes_answered") is DialogState.ENDED:
            self._forget_later(dialog)

    def _stop_timer(self, dialog: Dialog) -> None:
        if dialog.timer is not None:
            dialog.timer.cancel()
            dialog.timer = None

    def _forget_later(self, dialog: Dialog) -> None:
        self.core.effects.call_later(ENDED_LINGER_S, self._forget, dialog)

    def _forget(self, dialog: Dialog) -> None:
        if self.dialogs.get(dialog.key) is dialog:
            del self.dialogs[dialog.key]
        siblings = self.by_call.get(dialog.call_id)
        if siblings is not None and dialog in siblings:
            siblings.remove(dialog)
            if not siblings:
                del self.by_call[dialog.call_id]


def _contact_uri(msg: SipMessage) -> str | None:
    contacts = msg.values("contact")
    if not contacts:
        return None
    try:
        uri = parse_name_addr(contacts[0]).uri
        parse_uri(uri)
        return uri
    except ValueError:
        return None
