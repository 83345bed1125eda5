"""Dialog tracking: confirmed calls, their maximum duration and teardown by the proxy.

A dialog is born from the 2xx to an initial INVITE.  It knows both parties'
contacts, tags, CSeqs and the route set on each side of this proxy, which is
what the proxy needs to send BYE both ways on its own (dialog timeout, or a
`call.control` teardown), as OpenSIPS's dlg_end_dlg does.
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from ..contract import events as ev
from ..infra import clock
from ..sip.build import reason_header
from ..sip.message import SipMessage
from ..sip.uri import parse_name_addr, parse_uri
from ..transactions import NonInviteClientTransaction, client_key, new_branch
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


class Side:
    """One party as seen from the proxy."""
    __slots__ = ("from_value", "to_value", "contact", "routes", "target", "cseq")

    def __init__(self, from_value: str, to_value: str, contact: str, routes: list[str],
                 target: Target, cseq: int):
        self.from_value = from_value   # From header of requests the proxy sends to this party
        self.to_value = to_value       # To header of those requests
        self.contact = contact         # the party's Contact: Request-URI
        self.routes = routes           # route set from the proxy toward the party
        self.target = target           # where the proxy reaches the party without routes
        self.cseq = cseq               # the next CSeq the proxy uses toward this party


class Dialog:
    __slots__ = ("call_id", "caller_tag", "callee_tag", "caller", "callee", "state", "leg",
                 "answered_ms", "answered_mono", "max_duration_s", "timer", "pending_byes",
                 "end_reason")

    def __init__(self, call_id: str, caller_tag: str, callee_tag: str, caller: Side,
                 callee: Side, leg: int, answered_ms: int, answered_mono: float,
                 max_duration_s: int):
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

    def apply(self, event: str) -> DialogState:
        self.state = TRANSITIONS.get((self.state, event), self.state)
        return self.state


class DialogTable:
    def __init__(self, core: "Core"):
        self.core = core
        self.dialogs: dict[str, Dialog] = {}
        self.pending_max: dict[str, int] = {}    # set_max_duration before the answer

    def __len__(self) -> int:
        return sum(1 for d in self.dialogs.values() if d.state is not DialogState.ENDED)

    def get(self, call_id: str) -> Dialog | None:
        return self.dialogs.get(call_id)

    # -- creation -------------------------------------------------------------
    def confirm(self, invite: SipMessage, response: SipMessage, caller_target: Target,
                callee_target: Target, leg: int, max_duration_s: int) -> Dialog:
        core = self.core
        from_value = invite.get("from") or ""
        to_value = response.get("to") or ""
        caller_tag = parse_name_addr(from_value).tag or ""
        callee_tag = parse_name_addr(to_value).tag or ""
        record_route = response.values("record-route")
        mine = [i for i, rr in enumerate(record_route) if core.node.is_me_route(rr)]
        first, last = (mine[0], mine[-1]) if mine else (len(record_route), -1)
        toward_callee = list(reversed(record_route[:first]))
        toward_caller = record_route[last + 1:]
        caller = Side(from_value=to_value, to_value=from_value,
                      contact=_contact_uri(invite) or (invite.get("from") or ""),
                      routes=toward_caller, target=caller_target, cseq=1)
        callee = Side(from_value=from_value, to_value=to_value,
                      contact=_contact_uri(response) or invite.uri or "",
                      routes=toward_callee, target=callee_target, cseq=invite.cseq[0] + 1)
        max_duration_s = self.pending_max.pop(invite.call_id, max_duration_s)
        dialog = Dialog(invite.call_id, caller_tag, callee_tag, caller, callee, leg,
                        clock.now_ms(), core.effects.monotonic(), max_duration_s)
        old = self.dialogs.get(invite.call_id)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        self.dialogs[invite.call_id] = dialog
        self._arm(dialog)
        return dialog

    def _arm(self, dialog: Dialog) -> None:
        if dialog.timer is not None:
            dialog.timer.cancel()
        elapsed = self.core.effects.monotonic() - dialog.answered_mono
        delay = max(0.0, dialog.max_duration_s - elapsed)
        dialog.timer = self.core.effects.call_later(delay, self._on_max_duration, dialog)

    # -- traffic inside the dialog ---------------------------------------------------
    def on_request(self, request: SipMessage) -> tuple[Dialog | None, str | None]:
        """Track CSeqs and BYE; returns the dialog and who sent it ("caller"/"callee")."""
        dialog = self.dialogs.get(request.call_id)
        if dialog is None:
            return None, None
        from_tag = parse_name_addr(request.get("from") or "").tag
        by = "caller" if from_tag == dialog.caller_tag else "callee"
        cseq = request.cseq[0]
        if request.method != "ACK":
            # the proxy's own requests toward a party must go above what it has seen
            side = dialog.callee if by == "caller" else dialog.caller
            side.cseq = max(side.cseq, cseq + 1)
        if request.method == "BYE":
            if dialog.state is DialogState.CONFIRMED:
                self._stop_timer(dialog)
            dialog.apply("bye")
            if dialog.state is DialogState.ENDED:
                self._forget_later(dialog)
        return dialog, by

    # -- control ------------------------------------------------------------------------
    def set_max_duration(self, call_id: str, seconds: int) -> bool:
        dialog = self.dialogs.get(call_id)
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            if self.core.has_pending_call(call_id):
                self.pending_max[call_id] = seconds
                return True
            return False
        dialog.max_duration_s = seconds
        self._arm(dialog)
        return True

    def teardown(self, call_id: str, reason: str, cause: int = 200) -> Dialog | None:
        dialog = self.dialogs.get(call_id)
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            return None
        self._end_by_proxy(dialog, reason_header(cause, reason), reason)
        return dialog

    def _on_max_duration(self, dialog: Dialog) -> None:
        dialog.timer = None
        if dialog.state is not DialogState.CONFIRMED:
            return
        self._end_by_proxy(dialog, reason_header(200, "Maximum call duration reached"),
                           "max_duration")
        core = self.core
        core.emit(core.events.for_dialog(ev.DialogTimeout, dialog,
                                         max_duration_s=dialog.max_duration_s,
                                         answered_ms=dialog.answered_ms))

    def _end_by_proxy(self, dialog: Dialog, reason_value: str, reason: str) -> None:
        self._stop_timer(dialog)
        dialog.apply("proxy_bye")
        dialog.end_reason = reason
        dialog.pending_byes = 2
        for side in (dialog.callee, dialog.caller):
            self._send_bye(dialog, side, reason_value)

    def _send_bye(self, dialog: Dialog, side: Side, reason_value: str) -> None:
        core = self.core
        bye = SipMessage.request("BYE", side.contact)
        target = side.target
        if side.routes:
            route_uri = parse_name_addr(side.routes[0]).uri
            target = core.resolve(route_uri) or target
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
        if self.dialogs.get(dialog.call_id) is dialog:
            del self.dialogs[dialog.call_id]


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
