"""The proxy core's front door: bytes in, transactions matched, requests routed.

``Core`` is the shared context of one worker (settings, identity, transaction
tables, dialogs, the event factory); ``Engine`` dispatches every message:
responses to their client transaction, retransmissions and ACKs to their
server transaction, CANCEL to the call it cancels, in-dialog requests along
their route set, and everything else to the routing logic (proxy/core/routing.py).
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from ..contract import commands as cmd
from ..contract import events as ev
from ..infra import clock
from ..infra.config import DnsSettings, MediaSettings
from ..sip.build import REASONS, make_response
from ..sip.message import ParseError, SipMessage, parse
from ..sip.uri import UriError, parse_name_addr, parse_uri
from ..sip.via import Via, ViaError, parse_via
from ..transactions import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    TimerConfig,
    TransactionStateError,
    client_key,
    invite_key_for_cancel,
    new_branch,
    server_key,
)
from .callevents import CallEventFactory
from .dialogs import DialogTable
from .forwarding import Branch, ProxyCall
from .livecalls import call_facts
from .media import MediaRelay
from .node import LocalNode
from .peering import Peering
from .ports import Effects, Target
from .resolver import Failure, Pending, Resolver
from .stats import CoreStats
from .txdriver import TxDriver

log = logging.getLogger("sipledger.proxy")

SESSION_STARTING = frozenset({"INVITE"})     # in-dialog methods that need a known dialog

USER_AGENT = "sipledger"


class Core:
    """Everything one worker's routing decisions need, in one place."""

    def __init__(self, *, settings, effects: Effects, node: LocalNode, events: CallEventFactory,
                 provisioning=None, authenticator=None, location=None, registrar=None,
                 authorization=None, routing_data=None, dns: DnsSettings | None = None,
                 hosts: dict[str, str] | None = None, media: MediaSettings | None = None):
        self.settings = settings
        self.effects = effects
        self.node = node
        self.events = events
        self.provisioning = provisioning
        self.authenticator = authenticator
        self.location = location
        self.registrar = registrar
        # several instances on one location store (peering.py); set by the runtime, None = alone
        self.peering: Peering | None = None
        self.authorization = authorization      # AuthorizationSettings, None = off
        self.routing_data = routing_data        # live routing snapshot (gateways, dialplan …)
        self.timers = TimerConfig(t1=settings.t1, t2=settings.t2, t4=settings.t4)
        self.client_txs: dict[Any, TxDriver] = {}
        self.server_txs: dict[Any, TxDriver] = {}
        self.calls: dict[str, ProxyCall] = {}      # initial INVITEs in progress, by Call-ID
        # INVITEs relayed for another instance (peering.py), untracked: not calls of ours,
        # but a CANCEL must find them
        self.transit: dict[str, ProxyCall] = {}
        self.waiting: dict[str, Any] = {}          # INVITEs waiting for the authorization answer
        self.dialogs = DialogTable(self)
        self.stats = CoreStats()                   # plain counters, exported by the runtime
        self.session_timer: Any = None             # RFC 4028 (session_timer.py), set by the runtime
        self.user_agent = USER_AGENT
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_sources]
        dns = dns or DnsSettings()
        self.resolver = Resolver(
            query=getattr(effects, "dns_query", None), now=effects.monotonic,
            hosts=hosts if hosts is not None else {"localhost": "127.0.0.1"},
            min_ttl=dns.min_ttl_seconds, max_ttl=dns.max_ttl_seconds,
            negative_ttl=dns.negative_ttl_seconds, cache_size=dns.cache_size,
            max_in_flight=dns.max_in_flight)
        self._trusted_cache: dict[str, bool] = {}
        self.static_route = settings.static_route or None
        # the media relay ([media] enabled): offers, answers, deletes, media timeouts
        self.media = MediaRelay(self, media) if media is not None and media.enabled else None
        self.fraud: Any = None                     # FraudGuard (fraudguard.py), set by the runtime

    # -- small services ------------------------------------------------------
    def emit(self, event) -> None:
        # accounting must never stall signalling: a failed emission is logged
        # (rate-limited) and the call goes on
        try:
            if self.fraud is not None:
                self.fraud.observe(event)          # a call's end releases its fraud counters
            self.effects.emit(event)
        except Exception as exc:
            log.error("call event %s dropped: %r", type(event).__name__, exc)

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return False
        known = self._trusted_cache.get(ip)
        if known is None:
            try:
                addr = ipaddress.ip_address(ip)
                known = any(addr in net for net in self.trusted)
            except ValueError:
                known = False
            if len(self._trusted_cache) > 10000:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = known
        return known

    def source_trusted(self, source: Target) -> bool:
        """A trusted peer (gateway, SBC): `[proxy] trusted_sources` or the permissions table."""
        if self.is_trusted(source.host):
            return True
        live = self.routing_data
        return bool(live is not None and live.snapshot.is_trusted(source.host, source.transport))

    def resolve(self, uri: str) -> Target | Pending | None:
        """Next hop of a URI (RFC 3263, proxy/core/resolver.py): a Target when known,
        Pending while DNS is asked (see ``when_resolved``), None when it cannot be reached."""
        hop = _hop(uri)
        if hop is None:
            return None
        outcome = self.resolver.resolve(*hop)
        if isinstance(outcome, Pending):
            self.resolver.when_resolved(*hop, lambda _: None)     # start asking now
            return Pending(uri)
        return outcome if isinstance(outcome, Target) else None

    def when_resolved(self, uri: str, fn: Callable[[Target | None], None]) -> None:
        """fn(next hop or None) now when known, else once DNS has answered."""
        hop = _hop(uri)
        if hop is None:
            fn(None)
            return
        self.resolver.when_resolved(*hop, lambda outcome: fn(outcome if isinstance(outcome, Target) else None))

    def unreachable(self, uri: str) -> tuple[int, str, list[tuple[str, str]]]:
        """The reply to a request whose next hop did not resolve (docs/dialogs-dns.md):
        a DNS server failing or silent is temporary (503, retry after the negative
        TTL); a name that does not exist is permanent (604); a bad URI is 404."""
        hop = _hop(uri)
        outcome = self.resolver.resolve(*hop) if hop is not None else None
        if isinstance(outcome, Failure) and outcome.transient:
            retry = str(max(1, int(self.resolver.negative_ttl)))
            return 503, "Service Unavailable (DNS failure)", [("retry-after", retry)]
        if isinstance(outcome, Failure):
            return 604, "Does Not Exist Anywhere (unresolvable domain)", []
        return 404, "Not Found (unresolvable destination)", []

    def has_pending_call(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        return call is not None and not call.answered and not call.replied

    def on_answered(self, call: ProxyCall, branch: Branch, resp: SipMessage) -> None:
        """Every 2xx to the initial INVITE confirms a dialog (one per to-tag);
        only the first answered one is the call (CallAnswered, billing)."""
        max_s = call.max_duration_s or self.settings.max_dialog_seconds
        dialog, new = self.dialogs.confirm(call.request, resp, call.server.target, branch.target,
                                           branch.index, max_s)
        if not (new and dialog.billed):
            return
        dialog.facts = call_facts(call, branch.gateway)
        self.emit(self.events.make(
            ev.CallAnswered, call.request, to_tag=dialog.callee_tag, leg=branch.index,
            code=resp.status, reason=resp.reason or "", callee_user_agent=resp.get("server")
            or resp.get("user-agent"), max_duration_s=dialog.max_duration_s))

    def reply(self, server: TxDriver, request: SipMessage, status: int, reason: str | None = None,
              headers=()) -> SipMessage:
        """A response generated here.  Its final is not retransmitted on Timer G
        (see ``LOCAL_REPLIES_RETRANSMIT``); a retransmitted request re-draws it."""
        resp = make_response(request, status, reason, headers=list(headers))
        if not server.done:
            try:
                actions = server.machine.send_response(resp, retransmit=LOCAL_REPLIES_RETRANSMIT)
            except TransactionStateError:      # already answered (a race with CANCEL …)
                return resp
            server.run(actions)
            self.stats.reply_local(status)
        return resp

    def trying(self, server: TxDriver) -> None:
        """100 Trying for an INVITE, once, when it is relayed or left waiting
        (credit control); never before a local final reply: §17.2.1 lets the
        transaction skip the 100 when the TU answers within 200 ms, and a 100
        ahead of a 407 would be a second packet drawn by one spoofed request."""
        machine = server.machine
        if not server.done and machine.state is State.PROCEEDING and machine.last_response is None:
            self.reply(server, machine.request, 100, "Trying")

    # -- routing along route sets -----------------------------------------------------
    def pop_own_routes(self, request: SipMessage) -> bool:
        """Loose routing (§16.4): remove Route entries that are this proxy.
        Strict-router compatibility: a Request-URI that is our Record-Route URI
        means the previous hop was a strict router; restore the real target."""
        popped = False
        if request.uri and self.node.is_me_uri(request.uri) and _looks_like_rr(request.uri):
            routes = request.values("route")
            if routes:
                request.uri = parse_name_addr(routes[-1]).uri
                request.remove("route")
                for route in routes[:-1]:
                    request.add("route", route)
                popped = True
        while True:
            top = request.get("route")
            if top is None:
                break
            values = request.values("route")
            if not values:                    # "Route: ," names no hop at all
                raise UriError("empty Route header")
            first = values[0]
            if not self.node.is_me_route(first):
                break
            request.pop_first_value("route")
            popped = True
        return popped

    def next_hop(self, request: SipMessage) -> tuple[str, Target | Pending | None]:
        """(Request-URI, destination) after our routes were popped (§16.6 steps 6–7).
        A strict next hop gets the Request-URI moved to the end of the route set."""
        routes = request.values("route")
        if routes:
            route_uri = parse_name_addr(routes[0]).uri
            try:
                loose = parse_uri(route_uri).loose_route
            except UriError:
                return request.uri or "", None
            if not loose:
                request.remove("route")
                for route in routes[1:]:
                    request.add("route", route)
                request.add("route", f"<{request.uri}>")
                request.uri = route_uri
            return request.uri or "", self.resolve(route_uri)
        return request.uri or "", self.resolve(request.uri or "")

    def route_ack(self, ack: SipMessage, source: Target) -> None:
        """ACK for a 2xx: its own transaction end to end; relayed statelessly."""
        flow = self.peer_flow(ack, source)
        self.pop_own_routes(ack)
        dialog, _ = self.dialogs.on_request(ack)
        self.in_dialog_hop(ack, dialog, lambda uri, target: self._send_ack(ack, dialog, target),
                           flow=flow[1] if flow else None)

    def peer_flow(self, request: SipMessage, source: Target) -> tuple[str, Target | None] | None:
        """Another instance routed this request to a binding we own (peering.py):
        (flow token, pinhole or None when gone).  Read before our Routes are popped."""
        if self.peering is None or not request.has("route"):
            return None
        return self.peering.flow(request, self.source_trusted(source), self.effects)

    def in_dialog_hop(self, request: SipMessage, dialog, send: Callable[[str, Target | None], None],
                      *, flow: Target | None = None) -> None:
        """send(Request-URI, destination) for an in-dialog request: a NATed party
        where it really is (the dialog's, or another instance's ``flow``), else
        the next hop, once DNS has answered if need be."""
        uri, hop = self.next_hop(request)
        pinned = self._dialog_target(dialog, uri) if dialog is not None and not request.has("route") else None
        if pinned is None and flow is not None and not request.has("route"):
            pinned = flow
        if pinned is not None:
            send(uri, pinned)
        elif isinstance(hop, Pending):
            self.when_resolved(hop.uri, lambda target: send(uri, target))
        else:
            send(uri, hop)

    def _send_ack(self, ack: SipMessage, dialog, target: Target | None) -> None:
        if target is None:
            return
        mf = ack.get("max-forwards")
        ack.set("max-forwards", str(max(0, int(mf) - 1)) if mf and mf.isascii() and mf.isdigit() else "70")
        ack.prepend("via", self.node.via(target.transport, new_branch()))
        self.effects.send(ack.serialize(), target)
        if dialog is not None and dialog.billed:     # an extra fork's ACK is not the call's
            self.emit(self.events.for_dialog(ev.CallAck, dialog, leg=dialog.leg))

    def _dialog_target(self, dialog, uri: str) -> Target | None:
        """A request for a NATed party's Contact goes where the party really is
        (the address the INVITE went to / came from); None: any other party gets
        its Contact, resolved as any URI (RFC 3261 §16.6 step 6, §16.12)."""
        for side in (dialog.callee, dialog.caller):
            if side.nat and uri == side.contact:
                return side.target
        return None


def _hop(uri: str) -> tuple[str, str, int | None, str | None] | None:
    """(scheme, host, port, transport) of a SIP URI; None for tel: and garbage."""
    try:
        u = parse_uri(uri)
    except UriError:
        return None
    if u.scheme == "tel" or not u.host:
        return None
    return u.scheme, u.host, u.port, (u.params.get("transport") or "").lower() or None


def _looks_like_rr(uri: str) -> bool:
    try:
        u = parse_uri(uri)
    except UriError:
        return False
    return u.user is None


class Engine:
    """Dispatch of every message one worker receives."""

    def __init__(self, core: Core, routing):
        self.core = core
        self.routing = routing

    # -- intake ------------------------------------------------------------------------
    def on_data(self, data: bytes, source: Target) -> None:
        if not data.strip(b"\r\n"):
            return                         # keep-alive CRLFs
        settings = self.core.settings
        try:
            msg = parse(data, max_message_bytes=settings.max_message_bytes,
                        max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers)
        except ParseError as exc:
            self.core.stats.bad_msg += 1
            self._bad_request(exc, source)
            return
        try:
            if msg.is_request:
                self.core.stats.request_in(msg.method)
                self._on_request(msg, source)
            else:
                self.core.stats.reply_in(msg.status or 0)
                self._on_response(msg)
        except (ValueError, ViaError, UriError) as bad:   # malformed values (UnicodeError too)
            if msg.is_request and msg.method != "ACK":
                self._fail(msg, source, 400, f"Bad Request ({bad})")
        except Exception:              # one bad message must never stop the worker
            log.exception("error handling %r from %s", msg, source)
            if msg.is_request and msg.method != "ACK":
                self._fail(msg, source, 500, "Server Internal Error")

    def _fail(self, request: SipMessage, source: Target, status: int, reason: str) -> None:
        """Answer a request whose handling failed: through its server transaction
        when one exists and is unanswered (so it ends by its timers instead of
        lingering), else statelessly."""
        try:
            driver = self.core.server_txs.get(server_key(request))
        except ValueError:
            driver = None
        if driver is None or driver.machine.request is not request:
            # none, or one this message only collides with (a "retransmission"
            # that is malformed must not end the live transaction)
            self._reply_stateless(request, source, status, reason)
            return
        call = self.core.calls.get(request.call_id) or self.core.transit.get(request.call_id)
        if call is not None and call.server is driver:
            return                         # relayed already: the call's outcome answers it
        last = driver.machine.last_response
        if not driver.done and (last is None or (last.status or 0) < 200):
            self.core.reply(driver, request, status, _safe_reason(reason))

    def _bad_request(self, exc: ParseError, source: Target) -> None:
        partial = exc.partial
        if partial is None or partial.method == "ACK" or partial.get("via") is None:
            return                         # nothing we can answer
        if exc.status == 400:
            reason = f"Bad Request ({exc.reason})"
        else:
            reason = REASONS.get(exc.status, exc.reason)
        self._reply_stateless(partial, source, exc.status, reason)

    def _reply_stateless(self, request: SipMessage, source: Target, status: int, reason: str) -> None:
        """One response per request received, never retransmitted: a spoofed
        source draws no more than it sent (see LOCAL_REPLIES_RETRANSMIT)."""
        resp = make_response(request, status, _safe_reason(reason))
        self.core.stats.reply_stateless(status)
        self.core.effects.send(resp.serialize(), self._upstream(request, source))

    def _upstream(self, request: SipMessage, source: Target) -> Target:
        """Where responses to ``request`` go: RFC 3261 §18.2.2 with RFC 3581 §4,
        always at the address the request came from.  The Via's host and any
        ``received`` it carries are the sender's assertions: following them
        would reflect our answers (and their retransmissions) at a victim of
        the sender's choosing, and a name would need a DNS lookup.  Only the
        port comes from the Via when it has no ``rport``, as §18.2.2 says
        (received address + sent-by port)."""
        if source.transport != "udp":
            return source                  # the connection it came on (§18.2.2)
        try:
            via = parse_via(request.top_via or "")
        except ViaError:
            return source
        if "rport" in via.params:
            return source                  # RFC 3581 §4: the source port, from the socket it hit
        return Target("udp", source.host, via.port or 5060, source.conn)

    # -- responses ------------------------------------------------------------------------
    def _on_response(self, resp: SipMessage) -> None:
        core = self.core
        driver = core.client_txs.get(client_key(resp))
        if driver is not None:
            driver.run(driver.machine.on_response(resp))
            return
        # A 2xx retransmission after its transaction is gone: relay statelessly
        # (§16.7 step 5 / §16.11) if the top Via is ours, to where the INVITE
        # came from, i.e. the dialog's caller side (the address the first 2xx
        # went to).  The Vias below ours are never followed: a forged stray
        # 2xx would otherwise bounce off us at any address it named.
        if 200 <= (resp.status or 0) < 300 and resp.cseq[1] == "INVITE":
            top = parse_via(resp.top_via or "")
            dialog = core.dialogs.get(resp.call_id)
            if dialog is not None and core.node.is_me(top.host, top.port):
                resp.pop_first_value("via")
                rewritten = core.media.cached_answer(dialog, resp) if core.media is not None else None
                if rewritten is not None:
                    resp.body = rewritten       # the same SDP rtpengine gave the first 2xx
                if resp.top_via:
                    core.effects.send(resp.serialize(), dialog.caller.target)
                    return
        core.stats.drop_replies += 1

    # -- requests --------------------------------------------------------------------------
    def _on_request(self, req: SipMessage, source: Target) -> None:
        core = self.core
        self._stamp_via(req, source)
        _check_addresses(req)
        upstream = self._upstream(req, source)
        if req.method == "ACK":
            driver = core.server_txs.get(server_key(req))
            if driver is not None:
                driver.run(driver.machine.on_request(req))   # ACK for a non-2xx: absorbed
            elif _to_tag_present(req):
                core.route_ack(req, source)
            return
        driver = core.server_txs.get(server_key(req))
        if driver is not None:
            driver.run(driver.machine.on_request(req))       # retransmission
            return
        if req.method == "CANCEL":
            self._on_cancel(req, upstream)
            return
        server = self._new_server(req, upstream)
        self._route(req, server, source)
        if req.method == "INVITE":
            core.trying(server)             # still unanswered: it waits (credit control)

    def _route(self, req: SipMessage, server: TxDriver, source: Target) -> None:
        core = self.core
        mf = req.get("max-forwards")
        if mf is not None:
            mf = mf.strip()
            if not (mf.isascii() and mf.isdigit()):
                core.reply(server, req, 400, "Bad Request (malformed Max-Forwards)")
                return
            if int(mf) == 0:
                core.reply(server, req, 483, "Too Many Hops")
                return
        else:
            req.set("max-forwards", str(core.settings.max_forwards))
        if _to_tag_present(req):
            refused = core.session_timer.check_refresh(req) if core.session_timer is not None else None
            if refused is not None:                  # RFC 4028 §8.1: 422 with our Min-SE
                core.reply(server, req, *refused)
                return
            self._in_dialog(req, server, source)
        else:
            self.routing.initial(req, server, source)

    def _stamp_via(self, req: SipMessage, source: Target) -> None:
        """§18.2.1 received and RFC 3581 rport on the top Via.  ``received`` is
        always ours: one the sender wrote itself is replaced (or removed when
        its host is the source address and it asked for no rport)."""
        via = parse_via(req.top_via or "")
        params = via.params
        stamp = via.host != source.host or "rport" in params
        if not stamp and "received" not in params:
            return
        params = dict(params)               # parsed Vias are shared: build a new one
        if stamp:
            params["received"] = source.host
        else:
            del params["received"]
        if "rport" in params:
            params["rport"] = str(source.port)
        req.replace_first_value("via", str(Via(via.transport, via.host, via.port, params)))

    def _new_server(self, req: SipMessage, upstream: Target) -> TxDriver:
        core = self.core
        reliable = upstream.transport != "udp"
        machine: ServerTransaction = (
            InviteServerTransaction(req, reliable=reliable, timers=core.timers) if req.method == "INVITE"
            else NonInviteServerTransaction(req, reliable=reliable, timers=core.timers))
        core.stats.tm_created += 1
        return TxDriver(machine, upstream, core.effects, server_key(req), core.server_txs)

    def _on_cancel(self, cancel: SipMessage, upstream: Target) -> None:
        core = self.core
        invite_server = core.server_txs.get(invite_key_for_cancel(cancel))
        if invite_server is not None and not _same_call(invite_server.machine.request, cancel):
            invite_server = None            # §9.1: a branch that matches with another call is not it
        server = self._new_server(cancel, upstream)
        if invite_server is None:
            core.reply(server, cancel, 481, "Call/Transaction Does Not Exist")
            return
        core.reply(server, cancel, 200, "OK")
        answered = invite_server.machine.last_response
        if invite_server.done or (answered is not None and (answered.status or 0) >= 200):
            return                          # §9.2: a CANCEL after the final response has no effect
        waiting = core.waiting.get(cancel.call_id)
        if waiting is not None and waiting.server is invite_server:
            waiting.cancel_waiting(cancel)
            return
        call = core.calls.get(cancel.call_id) or core.transit.get(cancel.call_id)
        if call is None or call.server is not invite_server:
            # nothing forwarded yet (e.g. waiting for auth): end the INVITE here
            core.reply(invite_server, invite_server.machine.request, 487, "Request Terminated")
            return
        if call.track:
            core.emit(core.events.make(ev.CallCancel, cancel, reason=cancel.get("reason")))
        call.cancel(cancel.get("reason"))

    def _in_dialog(self, req: SipMessage, server: TxDriver, source: Target) -> None:
        core = self.core
        flow = core.peer_flow(req, source)
        if not core.pop_own_routes(req):
            core.reply(server, req, 404, "Not Here")   # not routed through us
            return
        dialog, by = core.dialogs.on_request(req)
        if dialog is None and req.method in SESSION_STARTING and not core.source_trusted(source):
            # A To-tag and our own Route make any INVITE look like a re-INVITE: only a
            # dialog this worker holds may be re-INVITEd, else it would reach a gateway
            # unauthenticated (toll fraud).  Other in-dialog methods (BYE, NOTIFY, PRACK
            # of early dialogs, subscriptions we do not track) start nothing billable.
            core.reply(server, req, 481, "Call/Transaction Does Not Exist")
            return
        core.in_dialog_hop(req, dialog, lambda uri, target: self._forward_in_dialog(
            req, server, dialog, by, uri, target), flow=flow[1] if flow else None)

    def _forward_in_dialog(self, req: SipMessage, server: TxDriver, dialog, by: str | None, uri: str,
                           target: Target | None) -> None:
        core = self.core
        if server.done:
            return                          # answered while DNS was asked (CANCEL of a re-INVITE)
        if target is None:
            routes = req.values("route")
            code, reason, headers = core.unreachable(parse_name_addr(routes[0]).uri if routes else uri)
            core.reply(server, req, code, reason, headers)
            return
        if req.method == "BYE" and dialog is not None and dialog.billed:
            core.emit(core.events.for_dialog(ev.CallBye, dialog, by=by,
                                             reason=req.get("reason"), leg=dialog.leg))
        media = core.media
        if media is not None and dialog is not None and req.method in ("INVITE", "UPDATE") and \
                media.reoffer(dialog, req, lambda exchange: self._fork_in_dialog(req, server, uri, target, exchange)):
            return                          # forked once rtpengine has rewritten the new offer
        self._fork_in_dialog(req, server, uri, target, None)

    def _fork_in_dialog(self, req: SipMessage, server: TxDriver, uri: str, target: Target, media) -> None:
        last = server.machine.last_response
        if server.done or (last is not None and (last.status or 0) >= 200):
            return                          # answered (CANCEL) while rtpengine was asked
        call = ProxyCall(self.core, server, req)
        call.media = media
        call.fork([(uri, target)])

    # -- call.control ---------------------------------------------------------------------------
    def on_command(self, command) -> None:
        core = self.core
        if isinstance(command, cmd.Teardown):
            dialog = core.dialogs.teardown(command.call_id, command.reason, command.sip_cause)
            if dialog is None and not core.dialogs.knows(command.call_id) \
                    and command.call_id not in core.calls:
                return                      # another worker's call (or unknown)
            result = "sent" if dialog is not None else "unknown_call"
            if dialog is None:
                call = core.calls.get(command.call_id)
                if call is not None and not call.answered and not call.replied:
                    call.cancel(None)        # not answered yet: stop the ringing
                    result = "sent"
            core.emit(self._command_event(ev.DialogTeardown, command, dialog,
                                          reason=command.reason, result=result))
        elif isinstance(command, cmd.SetMaxDuration):
            if not core.dialogs.knows(command.call_id) and command.call_id not in core.calls:
                return
            applied = core.dialogs.set_max_duration(command.call_id, command.seconds)
            dialog = core.dialogs.get(command.call_id)
            core.emit(self._command_event(ev.MaxDurationSet, command, dialog,
                                          max_duration_s=command.seconds,
                                          result="applied" if applied else "unknown_call"))

    def _command_event(self, cls, command, dialog, **fields):
        factory = self.core.events
        if dialog is not None:
            return factory.for_dialog(cls, dialog, command_id=command.id, **fields)
        call = self.core.calls.get(command.call_id)
        if call is not None:
            return factory.make(cls, call.request, command_id=command.id, **fields)
        return cls(id=ev.new_event_id(), ts_ms=clock.now_ms(), call_id=command.call_id, from_tag="",
                   proxy=factory.proxy, worker=factory.worker, command_id=command.id, **fields)


# RFC 3261 §17.2.1 retransmits an INVITE's final response on Timer G until the
# ACK arrives.  For replies generated here (407, 404, 403 …) to a source whose
# address nobody verified, that turns one spoofed 485-byte INVITE into a dozen
# packets at a victim.  A proxy answering locally acts as a UAS, and §8.2.7
# lets a UAS answer statelessly: it never retransmits, the client's own
# retransmissions (Timer A) recover a lost reply, and our server transaction
# re-sends the stored reply once per retransmitted INVITE (§17.2.1, Completed
# state) and still absorbs the ACK.  Kamailio's sl_send_reply behaves the same.
# Relayed responses keep Timer G: the INVITE reached a downstream party.
LOCAL_REPLIES_RETRANSMIT = False


def _safe_reason(reason: str) -> str:
    """A reason phrase fit for the status line: printable ASCII, at most 120
    characters (exception texts can quote what the sender wrote)."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in reason[:120])


def _check_addresses(req: SipMessage) -> None:
    """From, To and Route must parse (UriError: a 400, or silence for an ACK)
    before anything routes on them: routing reads them and must not meet a
    malformed one halfway through a decision."""
    for key in ("from", "to"):
        parse_uri(parse_name_addr(req.get(key) or "").uri)
    for route in req.values("route"):
        parse_uri(parse_name_addr(route).uri)


def _same_call(invite: SipMessage, cancel: SipMessage) -> bool:
    """A CANCEL's Call-ID, From tag and CSeq number are the INVITE's (§9.1):
    matching by Via branch alone would let anyone who guessed or reused a
    branch cancel someone else's call."""
    return (invite.call_id == cancel.call_id and invite.cseq[0] == cancel.cseq[0]
            and _from_tag(invite) == _from_tag(cancel))


def _from_tag(msg: SipMessage) -> str | None:
    try:
        return parse_name_addr(msg.get("from") or "").tag
    except UriError:
        return None


def _to_tag_present(req: SipMessage) -> bool:
    to = req.get("to") or ""
    return ";tag=" in to.replace(" ", "").lower()
