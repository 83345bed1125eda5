"""Stateful forwarding of one request to one or more branches (RFC 3261 §16.6–16.10).

A ``ProxyCall`` owns the server transaction toward the caller and one client
transaction per branch: it relays provisional responses, forwards every 2xx,
picks the best final response once all branches are done, fans CANCEL out and
runs Timer C.  Initial INVITEs are tracked as calls and produce call events.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..contract import events as ev
from ..infra import clock
from ..sip.build import make_response, reason_header
from ..sip.message import SipMessage
from ..transactions import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    client_key,
    new_branch,
)
from .ports import Target, TimerHandle
from .txdriver import TxDriver

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core
    from .media import Exchange

CANCEL_REASON_ANSWERED = reason_header(200, "Call completed elsewhere")


class Branch:
    __slots__ = ("index", "parent", "cause", "request", "target", "branch_id", "driver",
                 "provisional", "progressed", "final", "cancel_wanted", "cancel_sent", "timer_c",
                 "target_uri", "gateway", "no_answer")

    def __init__(self, index: int, parent: int | None, cause: str, request: SipMessage,
                 target: Target, branch_id: str, target_uri: str):
        self.index = index
        self.parent = parent
        self.cause = cause
        self.request = request
        self.target = target
        self.branch_id = branch_id
        self.target_uri = target_uri
        self.driver: TxDriver | None = None
        self.provisional = False       # a provisional >= 100 arrived: CANCEL may be sent
        self.progressed = False        # a provisional > 100 arrived (PDD is measured to it)
        self.final: int | None = None  # status of the final response, synthetic ones included
        self.cancel_wanted = False
        self.cancel_sent = False
        self.timer_c: TimerHandle | None = None
        self.gateway = ""
        self.no_answer = False         # Timer C / ring timeout cancelled it: its 487 means 408


class ProxyCall:
    """One proxied request and its branches."""

    def __init__(self, core: "Core", server: TxDriver, request: SipMessage, *,
                 track: bool = False, account: str | None = None,
                 max_duration_s: int | None = None,
                 on_final: Callable[["ProxyCall", SipMessage], None] | None = None):
        self.core = core
        self.server = server
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.track = track                       # initial INVITE: emit call events
        self.account = account
        self.max_duration_s = max_duration_s
        self.on_final = on_final
        self.branches: list[Branch] = []
        self.responses: list[SipMessage] = []    # final non-2xx, for best-response choice
        self.synthetic: set[int] = set()          # ids of responses made up here (408/503)
        self.answered = False
        self.replied = False                     # a final response went upstream
        self.cancelled = False
        # when every branch failed: may start new branches (failover, forwarding)
        self.failure_handler: Callable[["ProxyCall", SipMessage], bool] | None = None
        self.ring_timeout_s: float | None = None
        self.media: Exchange | None = None      # responses go upstream through the media relay
        self.started_ms = clock.now_ms()         # the live-call list's start (proxy/core/livecalls.py)
        self.rr_params = ""                      # added to our Record-Route URIs (peering flow token)
        server.on_message = self._on_server_message
        server.on_terminated = self._on_server_terminated

    # -- branches -----------------------------------------------------------
    def fork(self, targets: list[tuple[str, Target]], *, cause: ev.LegCause = "initial",
             parent: int | None = None, record_route: bool = False, gateway: str = "",
             reason: str | None = None, forwarded_by: str | None = None) -> None:
        for uri, target in targets:
            self._start_branch(uri, target, cause, parent, record_route,
                               gateway=gateway, reason=reason, forwarded_by=forwarded_by)

    def _start_branch(self, uri: str, target: Target, cause: ev.LegCause, parent: int | None,
                      record_route: bool, *, gateway: str = "", reason: str | None = None,
                      forwarded_by: str | None = None) -> None:
        core = self.core
        out = self.request.copy()
        out.uri = uri
        mf = out.get("max-forwards")
        out.set("max-forwards", str(int(mf) - 1 if mf is not None else core.settings.max_forwards))
        if record_route:
            for rr in reversed(core.node.record_routes(self.server.target.transport, target.transport)):
                out.prepend("record-route", rr[:-1] + self.rr_params + ">" if self.rr_params else rr)
        if target.route is not None:          # through the instance that owns the binding
            out.prepend("route", target.route)
        branch_id = new_branch()
        out.prepend("via", core.node.via(target.transport, branch_id))
        branch = Branch(len(self.branches), parent, cause, out, target, branch_id, uri)
        branch.gateway = gateway
        self.branches.append(branch)
        reliable = target.transport != "udp"
        machine: ClientTransaction = (
            InviteClientTransaction(out, reliable=reliable, timers=core.timers) if self.is_invite
            else NonInviteClientTransaction(out, reliable=reliable, timers=core.timers))
        core.stats.request_out(out.method)
        core.stats.tm_created += 1
        branch.driver = TxDriver(
            machine, target, core.effects, client_key(out), core.client_txs,
            on_message=functools.partial(self._on_branch_response, branch),
            on_timeout=functools.partial(self._on_branch_timeout, branch),
            on_transport_failed=functools.partial(self._on_branch_timeout, branch, 503, "Service Unavailable"),
            on_terminated=self._release_when_done)
        if self.track:
            leg = ev.Leg(index=branch.index, branch=branch_id, parent=parent, cause=cause,
                         destination=str(target), gateway=gateway or None, reason=reason,
                         forwarded_by=forwarded_by)
            core.emit(core.events.invite_routed(self.request, leg, uri))
        if self.is_invite:
            branch.timer_c = core.effects.call_later(self._timer_c_delay(), self._on_timer_c, branch)
            core.trying(self.server)      # 100 only once the INVITE is relayed (engine.py)
        branch.driver.run(machine.start())

    def _pending(self) -> list[Branch]:
        return [b for b in self.branches if b.final is None]

    # -- responses from branches ---------------------------------------------
    def _on_branch_response(self, branch: Branch, resp: SipMessage) -> None:
        status = resp.status or 0
        if status < 200:
            self._on_provisional(branch, resp)
            return
        if 200 <= status < 300:
            self._on_success(branch, resp)
            return
        if branch.final is not None:
            return                      # already given up on this branch (Timer C / 408)
        self._stop_timer_c(branch)
        if status == 487 and branch.no_answer and not self.cancelled:
            # our own no-answer CANCEL: to failure handlers and the caller it is a timeout
            resp.status, resp.reason, status = 408, "Request Timeout (no answer)", 408
        branch.final = status
        self.responses.append(resp)
        if self.track:
            self.core.emit(self.core.events.make(ev.LegFailed, self.request, leg=branch.index,
                                                 code=status, reason=resp.reason or ""))
        if status >= 600:
            self._cancel_branches(reason_header(status, resp.reason or ""))
        self._maybe_finish()

    def _on_provisional(self, branch: Branch, resp: SipMessage) -> None:
        branch.provisional = True
        if branch.cancel_wanted and not branch.cancel_sent:
            self._send_cancel(branch)
        if resp.status == 100:
            return                      # hop by hop: absorbed here (§16.7 step 5)
        first = not branch.progressed
        branch.progressed = True
        if branch.timer_c is not None and self.ring_timeout_s is None:
            # §16.8: Timer C restarts on provisional responses; a ring timeout
            # (forward on no answer) counts from the start of the branch instead
            branch.timer_c.cancel()
            branch.timer_c = self.core.effects.call_later(self._timer_c_delay(), self._on_timer_c, branch)
        if first and self.track:
            self.core.emit(self.core.events.make(ev.CallProgress, self.request, to_tag=_to_tag(resp),
                                                 leg=branch.index, code=resp.status,
                                                 reason=resp.reason or ""))
        if not self.replied and not self.answered:
            self._relay(resp)

    def _on_success(self, branch: Branch, resp: SipMessage) -> None:
        self._stop_timer_c(branch)
        first = not self.answered
        branch.final = resp.status
        self.answered = True
        if self.track:
            self.core.on_answered(self, branch, resp)   # every 2xx: its own dialog
        if first:
            self._cancel_branches(CANCEL_REASON_ANSWERED)
        if self.on_final is not None and first:
            self.on_final(self, resp)
        self._relay(resp)               # every 2xx goes upstream (§16.7 step 5)

    def _on_branch_timeout(self, branch: Branch, status: int = 408,
                           reason: str = "Request Timeout") -> None:
        """No answer (Timer B/C) or an unreachable next hop (§16.9): a synthetic
        final response for the branch, sent upstream only if nothing better comes."""
        if branch.final is not None:
            return
        self._stop_timer_c(branch)
        branch.final = status
        synthetic = make_response(self.request, status, reason)
        synthetic.prepend("via", branch.request.top_via or "")   # relayed like a real one
        self.responses.append(synthetic)
        self.synthetic.add(id(synthetic))
        if self.track:
            self.core.emit(self.core.events.make(ev.LegFailed, self.request, leg=branch.index,
                                                 code=status, reason=reason))
        self._maybe_finish()

    def _timer_c_delay(self) -> float:
        return self.ring_timeout_s if self.ring_timeout_s is not None \
            else self.core.settings.invite_timeout_seconds

    def _on_timer_c(self, branch: Branch) -> None:
        branch.timer_c = None
        if branch.final is not None:
            return
        if branch.provisional:
            branch.no_answer = True
            self._send_cancel(branch, reason_header(408, "No answer"))  # the 487 ends the branch
        else:
            self._on_branch_timeout(branch)

    def _stop_timer_c(self, branch: Branch) -> None:
        if branch.timer_c is not None:
            branch.timer_c.cancel()
            branch.timer_c = None

    # -- CANCEL ------------------------------------------------------------------
    def cancel(self, reason: str | None = None) -> None:
        """CANCEL from upstream (§16.10): cancel every pending branch."""
        self.cancelled = True
        self._cancel_branches(reason)

    def _cancel_branches(self, reason: str | None) -> None:
        for branch in self._pending():
            if branch.provisional:
                self._send_cancel(branch, reason)
            else:
                branch.cancel_wanted = True   # §9.1: wait for a provisional before CANCEL

    def _send_cancel(self, branch: Branch, reason: str | None = None) -> None:
        if branch.cancel_sent or not self.is_invite:
            return
        branch.cancel_sent = True
        cancel = SipMessage.request("CANCEL", branch.request.uri or "")
        src = branch.request
        cancel.headers.append(("via", "Via", src.top_via or ""))
        for key in ("from", "to", "call-id"):
            cancel.add(key, src.get(key) or "")
        cancel.add("cseq", f"{src.cseq[0]} CANCEL")
        for route in src.get_all("route"):
            cancel.add("route", route)
        cancel.add("max-forwards", "70")
        if reason:
            cancel.add("reason", reason)
        machine = NonInviteClientTransaction(cancel, reliable=branch.target.transport != "udp",
                                             timers=self.core.timers)
        driver = TxDriver(machine, branch.target, self.core.effects, client_key(cancel),
                          self.core.client_txs)
        driver.run(machine.start())

    # -- upstream -------------------------------------------------------------------
    def _relay(self, resp: SipMessage) -> None:
        resp.pop_first_value("via")
        if self.media is not None:      # SDP rewritten by rtpengine first, order kept
            self.media.response(resp, self._send_upstream)
            return
        self._send_upstream(resp)

    def _send_upstream(self, resp: SipMessage) -> None:
        server = self.server
        if server.done:
            return
        status = resp.status or 0
        if status >= 200 and not (200 <= status < 300 and self.replied):
            self.replied = True
        self.core.stats.reply_relayed(status)
        server.run(server.machine.send_response(resp))

    def reply(self, status: int, reason: str | None = None, headers=()) -> SipMessage:
        """A final response generated here rather than relayed."""
        resp = make_response(self.request, status, reason, headers=list(headers))
        self.replied = True
        self.core.stats.reply_local(status)
        self.server.run(self.server.machine.send_response(resp))
        return resp

    def _maybe_finish(self) -> None:
        if self.replied or self.answered or self._pending():
            return
        best = self._best_response()
        if self.failure_handler is not None and not self.cancelled:
            outcome = best if best is not None else make_response(self.request, 408, "Request Timeout")
            if self.failure_handler(self, outcome):
                self.responses.clear()     # the new branches' outcome is what counts now
                self.synthetic.clear()
                return
        if best is None:
            resp = make_response(self.request, 408, "Request Timeout")
            self._send_upstream(resp)
            by_proxy = True
        else:
            if best.status == 503:    # §16.7 step 6: a proxy must not relay 503
                best.status, best.reason = 500, "Server Internal Error"
            self._relay(best)
            resp, by_proxy = best, id(best) in self.synthetic
        if self.is_invite:
            self.core.stats.dialogs_failed += 1
        if self.track:
            self.core.emit(self.core.events.make(ev.CallFailed, self.request, to_tag=_to_tag(resp),
                                                 code=resp.status, reason=resp.reason or "",
                                                 by_proxy=by_proxy))
        if self.on_final is not None:
            self.on_final(self, resp)

    def _best_response(self) -> SipMessage | None:
        """§16.7 step 6: any 6xx, else the lowest class; 401/407 challenges merged."""
        if not self.responses:
            return None
        six = [r for r in self.responses if (r.status or 0) >= 600]
        if six:
            return six[0]
        best = min(self.responses, key=lambda r: (r.status or 0) // 100)
        if best.status in (401, 407):
            for other in self.responses:
                if other is not best and other.status in (401, 407):
                    for key in ("www-authenticate", "proxy-authenticate"):
                        for value in other.get_all(key):
                            best.add(key, value)
        return best

    # -- server transaction callbacks ------------------------------------------------
    def _on_server_message(self, msg: SipMessage) -> None:
        # ACKs for 2xx reaching the IST in Accepted state (RFC 6026) belong to the dialog
        if msg.method == "ACK":
            self.core.route_ack(msg, self.server.target)

    def _on_server_terminated(self) -> None:
        for branch in self.branches:
            self._stop_timer_c(branch)
        self._release_when_done()

    def _release_when_done(self) -> None:
        """Once every transaction of the call has ended, nothing can call
        ``on_final`` or ``failure_handler`` again.  They are bound to the routing
        script's RequestContext, which holds this call (``ctx.call``): drop them
        so the pair dies by reference counting.  The worker never runs full
        collections (runtime/worker.py ``tune_gc``): this cycle kept every
        INVITE's call, transactions and messages, ~4 KB each, forever."""
        if self.server.done and all(b.driver is None or b.driver.done for b in self.branches):
            self.on_final = self.failure_handler = None


def _to_tag(msg: SipMessage) -> str | None:
    to = msg.get("to") or ""
    idx = to.find("tag=")
    if idx < 0:
        return None
    return to[idx + 4:].split(";", 1)[0].strip() or None
