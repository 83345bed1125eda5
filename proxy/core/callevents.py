"""Turns what the proxy sees into contract events (proxy/contract/events.py)."""
from __future__ import annotations

from ..contract import events as ev
from ..infra import clock
from ..sip.message import SipMessage
from ..sip.uri import NameAddr, display_unquoted, parse_name_addr
from .ports import Target


def _addr(msg: SipMessage, key: str) -> NameAddr | None:
    value = msg.get(key)
    if value is None:
        return None
    try:
        return parse_name_addr(value)
    except ValueError:
        return None


class CallEventFactory:
    """Stamps the envelope (id, time, proxy instance, worker, dialog ids)."""

    __slots__ = ("proxy", "worker")

    def __init__(self, proxy: str, worker: int):
        self.proxy = proxy
        self.worker = worker

    def make(self, cls, msg: SipMessage, *, to_tag: str | None = None, **fields):
        from_addr = _addr(msg, "from")
        if to_tag is None:
            to_addr = _addr(msg, "to")
            to_tag = to_addr.tag if to_addr else None
        return cls(id=ev.new_event_id(), ts_ms=clock.now_ms(), call_id=msg.call_id,
                   from_tag=(from_addr.tag or "") if from_addr else "", to_tag=to_tag,
                   proxy=self.proxy, worker=self.worker, **fields)

    def for_dialog(self, cls, dialog, **fields):
        """Events inside a dialog carry its caller/callee tags whoever sent the request."""
        return cls(id=ev.new_event_id(), ts_ms=clock.now_ms(), call_id=dialog.call_id,
                   from_tag=dialog.caller_tag, to_tag=dialog.callee_tag,
                   proxy=self.proxy, worker=self.worker, **fields)

    def invite_received(self, invite: SipMessage, source: Target, account: str | None,
                        max_duration_s: int | None):
        from_addr = _addr(invite, "from")
        to_addr = _addr(invite, "to")
        caller = ev.Caller(from_uri=from_addr.uri if from_addr else "", account=account,
                           display_name=display_unquoted(from_addr) if from_addr else None)
        callee = ev.Callee(request_uri=invite.uri or "", to_uri=to_addr.uri if to_addr else "")
        via_branch = ""
        top = invite.top_via or ""
        idx = top.find("branch=")
        if idx >= 0:
            via_branch = top[idx + 7:].split(";", 1)[0].strip()
        return self.make(
            ev.InviteReceived, invite, branch=via_branch, cseq=invite.cseq[0],
            caller=caller, callee=callee,
            source=ev.Source(ip=source.host, port=source.port, transport="tcp" if source.transport == "tcp" else "udp"),
            user_agent=invite.get("user-agent"), max_duration_s=max_duration_s)

    def invite_routed(self, original: SipMessage, leg: ev.Leg, target_uri: str):
        to_addr = _addr(original, "to")
        callee = ev.Callee(request_uri=original.uri or "", to_uri=to_addr.uri if to_addr else "",
                           target=target_uri)
        return self.make(ev.InviteRouted, original, leg=leg, callee=callee)
