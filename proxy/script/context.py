"""The request context a routing script works on: opensips.cfg's verbs as methods.

A routing module defines ``route(ctx)`` (the request route) and may install
failure handlers with ``ctx.on_failure(fn)``; ``fn(ctx, response)`` runs when
every branch of the call failed and may start new branches (gateway failover,
call forwarding) or let the failure go back to the caller.  Verbs that answer
the request themselves (``authenticate`` challenging, ``reply``) end the
request: a script checks their result and returns, as OpenSIPS scripts `exit`.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from ..contract import credit
from ..contract import events as ev
from ..core.digest import find_credentials
from ..core.domains import MYSELF, normalise_host, served_domain
from ..core.forwarding import ProxyCall
from ..core.location import LocationError
from ..core.lockout import user_key
from ..core.nat import pinhole, received_target
from ..core.ports import Target
from ..core.resolver import Pending
from ..infra import clock
from ..sip.message import SipMessage
from ..sip.uri import SipUri, UriError, parse_name_addr, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from ..core.engine import Core
    from ..core.media import Session
    from ..core.txdriver import TxDriver

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK, MESSAGE, SUBSCRIBE, NOTIFY, REFER"
RECORD_ROUTED = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
# unknown user and wrong password get the same answer: no user enumeration
WRONG_CREDENTIALS_REASON = "Forbidden"
LOCKED_REASON = "Forbidden (too many failures, try later)"
FRAUD_REASON = "Forbidden (fraud limit reached)"
OFFNET_REASON = "Forbidden (relaying needs authentication)"
_FAILURE_REASONS = {"replay": "Forbidden (replayed credentials)"}

FailureHandler = Callable[["RequestContext", SipMessage], None]


class ForwardingPrefs:
    """What a subscriber's calls do when unanswered (targets are URIs or None)."""
    __slots__ = ("always", "busy", "no_answer", "no_answer_timeout", "unavailable")

    def __init__(self, always=None, busy=None, no_answer=None, no_answer_timeout=20, unavailable=None):
        self.always = always
        self.busy = busy
        self.no_answer = no_answer
        self.no_answer_timeout = no_answer_timeout
        self.unavailable = unavailable


NO_FORWARDING = ForwardingPrefs()


class RequestContext:
    """One initial request (and, in failure handlers, the call it became)."""

    def __init__(self, core: "Core", request: SipMessage, server: "TxDriver", source: Target):
        self.core = core
        self.request = request
        self.server = server
        self.source = source
        self.method = request.method or ""
        self.account: str | None = None       # "user@domain" once authenticated
        self.targets: list[tuple[str, Target | Pending]] = []   # Pending: DNS asked
        self.gateway_routes: list = []        # remaining failover routes (route_to_gateways)
        self.gateway: str = ""                # gateway of the current branch
        self.max_duration_s: int | None = None
        self.ring_timeout_s: float | None = None
        self.failure_handlers: list[FailureHandler] = []
        self.call: ProxyCall | None = None
        self.replied = False
        self.announced = False
        self.forwards: list[str] = []         # targets forwarded to (loop and depth guard)
        self.branch_cause = "initial"
        self.forward_reason: str | None = None
        self.forwarded_by: str | None = None
        self.parent_leg: int | None = None
        self.vars: dict = {}                  # free for the script ($avp / $var)
        self.credit_check = False             # relay waits for the authorization answer
        self.authorized = False
        self.target_kind: str | None = None   # where self.targets came from: location, gateway, static
        self.media_asked = False              # the media relay was asked (proxy/core/media.py)
        self.media_session: Session | None = None   # its session when it rewrote the SDP
        # A custom script may set this to relay off-net (gateways, static route, other domains,
        # pre-routed requests) for callers that are neither authenticated nor trusted. It
        # reopens toll fraud: the default script never sets it.
        self.allow_unauthenticated_offnet = False

    # -- facts ------------------------------------------------------------------
    @property
    def ruri(self) -> SipUri:
        return parse_uri(self.request.uri or "")

    @property
    def from_uri(self) -> SipUri:
        return parse_uri(parse_name_addr(self.request.get("from") or "").uri)

    @property
    def to_uri(self) -> SipUri:
        return parse_uri(parse_name_addr(self.request.get("to") or "").uri)

    @property
    def source_ip(self) -> str:
        return self.source.host

    @property
    def provisioning(self) -> Any:
        return self.core.provisioning.snapshot if self.core.provisioning is not None else None

    @property
    def routing_data(self) -> Any:
        live = self.core.routing_data
        return live.snapshot if live is not None else None

    def local_domains(self) -> frozenset[str]:
        snapshot = self.provisioning
        provisioned = frozenset(snapshot.domains) if snapshot is not None else frozenset()
        configured = self.core.settings.domains
        if not configured:
            return provisioned                # the snapshot's own set: no copy per question
        return provisioned | {normalise_host(d) for d in configured}

    def served_domain(self, uri: SipUri) -> str | None:
        """The served domain a URI names, in its one canonical spelling (case and
        trailing dot normalised; our own address counts as the only served
        domain when there is exactly one, else as ``MYSELF``), or None:
        `uri == myself` (proxy/core/domains.py)."""
        return served_domain(uri.host, uri.port, self.local_domains(), self.core.node)

    def from_domain(self) -> str | None:
        """The served domain the From names, or None when the caller claims to be foreign."""
        domain = self.served_domain(self.from_uri)
        return None if domain == MYSELF else domain

    def is_from_local(self) -> bool:
        return self.from_domain() is not None

    def is_to_local(self) -> bool:
        return self.served_domain(self.ruri) is not None

    def may_leave(self) -> bool:
        """May this request go off-net (a gateway, the static route, another
        domain, a pre-set Route)?  Only for an authenticated local subscriber or
        a trusted source, whatever its From says."""
        return self.account is not None or self.is_trusted() or self.allow_unauthenticated_offnet

    def is_trusted(self) -> bool:
        """Permissions: the source is a trusted peer (gateway, SBC), never challenged."""
        return self.core.source_trusted(self.source)

    # -- authentication --------------------------------------------------------------
    def authenticate(self, realm: str | None = None) -> bool:
        """www_authorize / proxy_authorize: True when the request carries valid
        credentials of the From user (To user for REGISTER); otherwise the
        challenge (401/407) or the refusal (403) has been sent.

        Unknown user and wrong password get the same 403; a source (or a user)
        with too many failures is refused before any password is checked
        (proxy/core/lockout.py), and credentials with a nonce we did not issue
        get a fresh challenge, never a verdict."""
        core = self.core
        auth = core.authenticator
        if auth is None:
            return True
        register = self.method == "REGISTER"
        user_uri = self.to_uri if register else self.from_uri
        realm = realm or self._realm_for(user_uri, register)
        header, code, challenge = ("authorization", 401, "www-authenticate") if register \
            else ("proxy-authorization", 407, "proxy-authenticate")
        # Nonce and lockout times stay on the host's own clock (time.time, not
        # proxy.infra.clock): they are only compared with times this node made,
        # never billed, so a shifted business clock must not age them.
        now = time.time()
        lockout = self._lockout()
        value, params = find_credentials(self.request, header, realm) or (None, None)
        guessed = user_key(params["username"], realm) if params and params.get("username") else None
        if lockout.locked(self.source.host, guessed, now):
            self.reply(403, LOCKED_REASON)
            return False
        if value is None:
            self._challenge(code, challenge, realm, now, stale=False)
            return False
        result = auth.verify(self.method, value, realm, self.provisioning.credentials, now,
                             request_uri=self.request.uri,
                             algorithms=auth.policy.offered(realm, self.request.get("user-agent")),
                             parsed=params)
        if result.rechallenge:
            self._challenge(code, challenge, realm, now, stale=result.stale)
            return False
        if not result.ok:
            self.core.stats.auth_failures += 1
        if result.wrong_credentials:
            lockout.failure(self.source.host, guessed, now)
            self._share_lockouts()
            self.reply(403, WRONG_CREDENTIALS_REASON)
            return False
        if not result.ok:
            self.reply(403, _FAILURE_REASONS.get(result.reason, f"Forbidden ({result.reason})"))
            return False
        if result.username != user_uri.user:
            self.reply(403, "Forbidden (From/authentication user mismatch)")
            return False
        self.core.stats.auth_successes += 1
        lockout.success(self.source.host, user_key(result.username, realm))
        # credentials for our realm stop here (RFC 3261 §22.3)
        self.request.headers = [h for h in self.request.headers if not (h[0] == header and h[2] is value)]
        self.account = f"{result.username}@{realm}"
        return True

    def _claimed_domain(self, user_uri: SipUri, register: bool) -> str | None:
        """The served domain the user claims (normalised); for REGISTER the
        Request-URI's when the To names none; None when neither is ours."""
        domain = self.served_domain(user_uri)
        if (domain is None or domain == MYSELF) and register:
            domain = self.served_domain(self.ruri)
        return None if domain is None or domain == MYSELF else domain

    def _realm_for(self, user_uri: SipUri, register: bool) -> str:
        """The claimed served domain, else the host as written."""
        return self._claimed_domain(user_uri, register) or normalise_host(user_uri.host)

    def _challenge(self, code: int, header: str, realm: str, now: float, *, stale: bool) -> None:
        auth = self.core.authenticator
        values = auth.challenge(realm, now, stale=stale,
                                algorithms=auth.policy.offered(realm, self.request.get("user-agent")))
        self.replied = True
        self.core.stats.auth_challenges += 1
        self.core.reply(self.server, self.request, code, None, headers=[(header, v) for v in values])

    def _lockout(self):
        """This worker's lockout table, with the locks other workers and the CLI shared merged in."""
        lockout = self.core.authenticator.lockout
        live = self.core.provisioning
        version = getattr(live, "lockouts_version", None)
        if version is not None and version != lockout.synced_version:
            lockout.sync(live.lockouts, version)
        return lockout

    def _share_lockouts(self) -> None:
        new = self.core.authenticator.lockout.take_new_locks()
        share = getattr(self.core.provisioning, "share_lockouts", None)
        if new and share is not None:
            share(new)                        # written by the worker's housekeeping, not here

    # -- registrar and location --------------------------------------------------------
    def save_location(self) -> None:
        """save("location"): apply the REGISTER and answer it."""
        core = self.core
        to = self.to_uri
        domain = self._claimed_domain(to, register=True)
        subscriber = self.provisioning.resolve(to.user, domain) if to.user and domain else None
        if subscriber is None or core.registrar is None:
            self.reply(404, "Not Found")
            return
        outcome = core.registrar.register(self.request, f"{subscriber[0]}@{subscriber[1]}",
                                          (self.source.host, self.source.port, self.source.transport),
                                          clock.time())
        headers = [("contact", v) for v in outcome.contact_values]
        if outcome.min_expires is not None:
            headers.append(("min-expires", str(outcome.min_expires)))
        self.reply(outcome.status, outcome.reason, headers)

    def subscriber(self, uri: SipUri | None = None) -> tuple[str, str] | None:
        """The local subscriber a URI reaches (aliases followed), or None."""
        uri = uri or self.ruri
        domain = self.served_domain(uri)
        if domain is None or domain == MYSELF or uri.user is None or self.provisioning is None:
            return None
        return self.provisioning.resolve(uri.user, domain)

    def lookup(self, aor: str | None = None) -> int:
        """lookup("location"): targets = every registered contact (parallel fork).
        Returns 1 when found, -1 unknown user, -2 nobody registered (as OpenSIPS)."""
        if aor is None:
            sub = self.subscriber()
            if sub is None:
                return -1
            aor = f"{sub[0]}@{sub[1]}"
        core = self.core
        try:
            bindings = core.location.lookup(aor, clock.time()) if core.location is not None else []
        except LocationError:
            bindings = []
        targets = []
        for binding in bindings:
            hop = _nat_destination(core, binding)
            if hop is not None:
                targets.append((binding.contact, hop))
        if not targets:
            return -2
        self.targets = targets
        self.target_kind = "location"
        return 1

    # -- request URI -------------------------------------------------------------------------
    def rewrite_uri(self, uri: str) -> None:
        parse_uri(uri)                        # refuse garbage early
        self.request.uri = uri
        self.targets = []
        self.target_kind = None

    def set_ruri_user(self, user: str) -> None:
        uri = self.ruri
        self.rewrite_uri(str(SipUri(uri.scheme, user, None, uri.host, uri.port, dict(uri.params),
                                    uri.headers)))

    def dialplan(self, dpid: int) -> bool:
        """dp_translate(dpid, "$rU/$rU"): rewrite the R-URI user by the first matching rule."""
        data = self.routing_data
        user = self.ruri.user
        if data is None or user is None:
            return False
        result = data.translate(dpid, user)
        if result is None:
            return False
        self.set_ruri_user(result[0])
        return True

    # -- policy ----------------------------------------------------------------------------------
    def in_group(self, group: str) -> bool:
        data = self.routing_data
        if data is None or self.account is None:
            return False
        user, _, domain = self.account.partition("@")
        return data.in_group(user, domain, group)

    def destination_allowed(self) -> tuple[bool, str | None]:
        """Group-restricted destinations (e.g. "00" needs "international")."""
        data = self.routing_data
        if data is None or self.account is None:
            return True, None
        user, _, domain = self.account.partition("@")
        return data.allowed(user, domain, self.ruri.user or "")

    def blacklisted(self, name: str = "default"):
        """The blacklist entry matching the dialled number (with its .code and
        .reason, 473 "Filtered Destination" by default), or None."""
        data = self.routing_data
        if data is None or not self.ruri.user:
            return None
        return data.blacklisted(name, self.ruri.user)

    # -- gateways ------------------------------------------------------------------------------------
    def route_to_gateways(self, group: str = "default") -> bool:
        """do_routing(): targets = the first gateway for the R-URI number; the
        others wait for `next_gateway()` in a failure handler."""
        data = self.routing_data
        number = self.ruri.user
        if data is None or not number:
            return False
        live = self.core.routing_data
        routes = list(data.select(number, group, clock.time(), self.request.call_id,
                                  is_up=getattr(live, "is_up", None)))
        self.gateway_routes = routes
        return self.next_gateway()

    def next_gateway(self) -> bool:
        """use_next_gw(): target the next gateway still in the list."""
        while self.gateway_routes:
            route = self.gateway_routes.pop(0)
            target = self.core.resolve(route.uri)
            if target is not None:
                self.targets = [(route.uri, target)]
                self.target_kind = "gateway"
                self.gateway = route.gateway.name
                return True
        return False

    def static_route(self) -> bool:
        """The configured catch-all next hop ([proxy] static_route), R-URI unchanged."""
        uri = self.core.static_route
        target = self.core.resolve(uri) if uri else None
        if target is None:
            return False
        self.targets = [(self.request.uri or "", target)]
        self.target_kind = "static"
        return True

    # -- forwarding (avpops-style preferences) -----------------------------------------------------
    def forwarding(self, subscriber: tuple[str, str] | None = None):
        """The subscriber's forwarding preferences (empty ones when none are set)."""
        subscriber = subscriber or self.subscriber()
        data = self.routing_data
        if data is None or subscriber is None:
            return NO_FORWARDING
        return data.forwarding(*subscriber) or NO_FORWARDING

    def begin_forward(self, target: str, reason: str) -> bool:
        """Point the request at a forwarding target as a new leg; False on a
        loop or past the configured chain depth (the caller answers 482)."""
        sub = self.subscriber()
        by = f"{sub[0]}@{sub[1]}" if sub else (self.ruri.user or "")
        if target in self.forwards or len(self.forwards) >= self.core.settings.forward_depth:
            return False
        self.forwards.append(target)
        self.rewrite_uri(target)
        self.branch_cause = "forward"
        self.forward_reason = reason
        self.forwarded_by = by
        self.gateway = ""
        return True

    # -- outcome ------------------------------------------------------------------------------------
    def set_max_duration(self, seconds: int) -> None:
        self.max_duration_s = int(seconds)
        if self.call is not None:
            self.call.max_duration_s = self.max_duration_s

    def authorize_credit(self) -> bool:
        """Prepaid check before relaying (CGRateS authorize → max usage): the
        first relay() asks credit control and goes on only if the account may
        call, with the answer's maximum duration applied to the dialog.
        False when credit control is off or the caller has no account."""
        if self.core.authorization is None or self.account is None or self.method != "INVITE":
            return False
        self.credit_check = True
        return True

    def fraud_check(self, profile: str | None = None) -> bool:
        """OpenSIPS check_fraud(user, number, profile) for an initial INVITE of an
        authenticated caller (docs/fraud.md): counts the call against the
        profile's rules, raises ``fraud.alert`` events, and answers 403 itself
        when a critical threshold is reached and ``[fraud] block_critical`` is
        on.  False when the call was refused (the script returns)."""
        guard = self.core.fraud
        if (guard is None or self.method != "INVITE" or self.account is None or self.replied
                or self.vars.get("_fraud_checked")):       # a forwarded call counts once
            return True
        self.vars["_fraud_checked"] = True
        try:
            from_tag = parse_name_addr(self.request.get("from") or "").tag or ""
        except UriError:
            from_tag = ""
        call_id = self.request.call_id or ""
        action = guard.check(self.account, self.ruri.user or "", call_id, from_tag, profile)
        if action == "none":
            cap = guard.duration_cap(call_id)
            if cap and (self.max_duration_s is None or cap < self.max_duration_s):
                self.set_max_duration(cap)
            return True
        self.reply(403, FRAUD_REASON)
        return False

    def trace(self) -> None:
        """sip_trace() with the dialog flag: capture this request and every later
        message of its Call-ID (both directions), whatever ``[trace] enabled``
        says (docs/trace.md).  The request is captured as parsed."""
        trace = getattr(self.core.effects, "trace", None)
        if trace is not None:
            trace(self.request.serialize(), self.source)

    def set_ring_timeout(self, seconds: float) -> None:
        """fr_inv_timer: give up on a ringing branch after this (then failure handlers run)."""
        self.ring_timeout_s = seconds

    def on_failure(self, handler: FailureHandler) -> None:
        """t_on_failure: handlers run in order when every branch failed."""
        self.failure_handlers.append(handler)

    def reply(self, status: int, reason: str | None = None, headers=()) -> None:
        """sl_send_reply / t_reply: answer the request here."""
        if self.replied:
            return
        self.replied = True
        track = self.method == "INVITE" and status >= 300 and status not in (401, 407)
        if track:
            self._announce()
        resp = self.core.reply(self.server, self.request, status, reason, headers)
        if track:
            self.core.emit(self.core.events.make(ev.CallFailed, self.request, to_tag=_tag(resp),
                                                 code=status, reason=resp.reason or "", by_proxy=True))

    def options_reply(self) -> None:
        self.reply(200, "OK", [("allow", ALLOW)])

    def relay(self, *, cause: str | None = None) -> bool:
        """t_relay: forward to the targets (or the R-URI); in a failure handler,
        a new serial branch of the same call (failover / forward).

        Safety net against toll fraud, whatever the script did: anything but
        the registered contacts of local subscribers (``lookup``) is off-net,
        and goes out only when ``may_leave()``; otherwise 403 and False."""
        if cause is not None and cause not in ev.LEG_CAUSES:
            # a routing script's typo: refused before any call state exists, never on the wire
            raise ValueError(f"relay(cause={cause!r}): must be one of {', '.join(ev.LEG_CAUSES)}")
        onnet = bool(self.targets) and self.target_kind == "location"
        if not onnet and not self.may_leave():
            self.reply(403, OFFNET_REASON)
            return False
        timer = self.core.session_timer
        if self.call is None and timer is not None:
            refused = timer.check_invite(self.request)     # RFC 4028: 422, or headers adjusted
            if refused is not None:
                self.reply(*refused)
                return False
        if self.credit_check and not self.authorized:
            self._ask_credit_control(cause)
            return True
        core = self.core
        targets = self.targets
        if not targets:
            if self.request.has("route"):
                uri, hop = core.next_hop(self.request)
                hop_uri = parse_name_addr(self.request.values("route")[0]).uri
            else:
                uri, hop = self.request.uri or "", core.resolve(self.request.uri or "")
                hop_uri = uri
            if hop is None:
                self.reply(*core.unreachable(hop_uri))
                return False
            targets = [(uri, hop)]
        if any(isinstance(hop, Pending) for _, hop in targets):
            self._wait_for_dns(targets, cause)
            return True
        resolved = [(uri, hop) for uri, hop in targets if isinstance(hop, Target)]
        media = core.media
        if self.call is None and media is not None and not self.media_asked \
                and media.wanted(self.request, self.source, [hop for _, hop in resolved]):
            self._offer_media(cause)
            return True
        if self.call is None:
            track = self.method == "INVITE"
            if track:
                self._announce()
            self.call = ProxyCall(core, self.server, self.request, track=track,
                                  account=self.account, max_duration_s=self.max_duration_s,
                                  on_final=self._settled if track else None)
            self.call.failure_handler = self._run_failure_handlers if self.failure_handlers else None
            if track:
                core.calls[self.request.call_id] = self.call
            if self.media_session is not None and media is not None:
                self.call.media = media.exchange(self.media_session, self.media_session.caller_tag, initial=True)
        call = self.call
        if self.ring_timeout_s is not None:
            call.ring_timeout_s = self.ring_timeout_s
        first = not call.branches
        parent = self.parent_leg if not first else None
        if cause is None:
            cause = self.branch_cause if (self.branch_cause == "forward" or not first) else "initial"
        if parent is None and not first:
            parent = call.branches[-1].index
        forward = cause == "forward"
        call.fork(resolved, cause=cast("ev.LegCause", cause), parent=parent, record_route=self.method in RECORD_ROUTED,
                  gateway=self.gateway, reason=self.forward_reason if forward else None,
                  forwarded_by=self.forwarded_by if forward else None)
        self.targets = []
        return True

    # -- internals ------------------------------------------------------------------------------------
    def _ask_credit_control(self, cause: str | None) -> None:
        self._announce()
        request = credit.AuthorizeRequest(
            id=ev.new_event_id(), ts_ms=clock.now_ms(), call_id=self.request.call_id,
            account=self.account or "", destination=self.ruri.user or "",
            request_uri=self.request.uri or "", caller_uri=parse_name_addr(self.request.get("from") or "").uri)
        self.core.waiting[self.request.call_id] = self
        self.core.effects.authorize(request, lambda answer: self._credit_answer(answer, cause))

    def _wait_for_dns(self, targets: list[tuple[str, Target | Pending]], cause: str | None) -> None:
        """Some next hop is being resolved: wait (as for credit control; a CANCEL
        ends the wait), then relay to what resolved.  When nothing did: the next
        gateway if there is one, else 503 (DNS failing) or 604 (no such name)."""
        self._announce()
        call_id = self.request.call_id
        self.core.waiting[call_id] = self
        outcomes: dict[int, Target | None] = {}

        def settled(index: int, target: Target | None) -> None:
            outcomes[index] = target
            if len(outcomes) < len(targets) or self.core.waiting.get(call_id) is not self:
                return                        # more to come, or cancelled while we waited
            del self.core.waiting[call_id]
            self.targets = [(uri, outcomes[i]) for i, (uri, _) in enumerate(targets)
                            if outcomes[i] is not None]
            if self.targets or self.next_gateway():
                self.relay(cause=cause)
                return
            failed = next(hop for _, hop in targets if isinstance(hop, Pending))
            call = self.call
            if call is not None:              # a failover branch: the call ends here
                call.replied = True
            self.reply(*self.core.unreachable(failed.uri))
            if call is not None:
                self._settled(call, call.request)

        for index, (_, hop) in enumerate(targets):
            if isinstance(hop, Pending):
                self.core.when_resolved(hop.uri, functools.partial(settled, index))
            else:
                settled(index, hop)

    def _offer_media(self, cause: str | None) -> None:
        """Hold the INVITE until rtpengine has rewritten its SDP (proxy/core/media.py),
        as for credit control: a CANCEL ends the wait.  Without an answer from
        rtpengine it goes on unchanged (media.py says why)."""
        media = self.core.media
        assert media is not None
        self._announce()
        self.media_asked = True
        self.core.waiting[self.request.call_id] = self
        media.offer(self.request, self.source, lambda session: self._media_offered(session, cause))

    def _media_offered(self, session, cause: str | None) -> None:
        if self.core.waiting.get(self.request.call_id) is not self:
            return                            # cancelled while we waited (media.py deletes it)
        del self.core.waiting[self.request.call_id]
        self.media_session = session
        self.relay(cause=cause)

    def cancel_waiting(self, cancel: SipMessage) -> None:
        """CANCEL while credit control (or the media relay) has not answered yet: the call ends here."""
        self.core.waiting.pop(self.request.call_id, None)
        if self.media_asked and self.core.media is not None:
            self.core.media.abandon(self.request.call_id)
        self.core.emit(self.core.events.make(ev.CallCancel, self.request, reason=cancel.get("reason")))
        self.reply(487, "Request Terminated")

    def _credit_answer(self, answer, cause: str | None) -> None:
        if self.core.waiting.get(self.request.call_id) is not self:
            return                            # cancelled while we waited
        del self.core.waiting[self.request.call_id]
        self.authorized = True
        if answer is None:
            if self.core.authorization.on_error != "allow":
                self.reply(503, "Service Unavailable (credit control)")
                return
        elif not answer.allowed:
            self.reply(answer.code or 402, answer.reason or "Payment Required")
            return
        elif answer.max_duration_s is not None:     # a shorter limit set before (fraud_check) stays
            self.set_max_duration(min(answer.max_duration_s, self.max_duration_s or answer.max_duration_s))
        self.relay(cause=cause)

    def _announce(self) -> None:
        if not self.announced and self.method == "INVITE":
            self.announced = True
            self.core.emit(self.core.events.invite_received(self.request, self.source, self.account,
                                                            self.max_duration_s))

    def _run_failure_handlers(self, call: ProxyCall, response: SipMessage) -> bool:
        """Called by the call when every branch failed: True if a handler relayed again."""
        before = len(call.branches)
        self.parent_leg = call.branches[-1].index if call.branches else None
        for handler in list(self.failure_handlers):
            handler(self, response)
            if len(call.branches) > before or self.core.waiting.get(call.request.call_id) is self:
                return True                   # relayed again (or waiting for DNS to)
        return False

    def _settled(self, call: ProxyCall, final: SipMessage) -> None:
        media = self.core.media
        if media is not None and self.media_session is not None and (final.status or 0) >= 300:
            media.abandon(call.request.call_id)   # however the failure went upstream
        calls = self.core.calls
        if calls.get(call.request.call_id) is call:
            del calls[call.request.call_id]


def _nat_destination(core: "Core", binding) -> Target | Pending | None:
    """Where a registered contact's requests go (nathelper's fix_nated_contact, docs/nat.md):

    - over TCP, the connection the REGISTER came on while it is open (RFC 5626
      flow reuse; the runtime's ``flow`` finds it);
    - a phone registered from behind a NAT: the address its REGISTER came from;
    - else the Contact itself (a phone may well register from one port and
      listen on another, RFC 3261 §16.6).

    A NATed phone's Contact is unreachable: when its TCP connection is gone it
    is skipped (RFC 5626 §5.3 "430 Flow Failed" in spirit; the caller gets 480
    when no contact is left) rather than dialled at a private address.
    ``nat=True`` on the Target pins the dialog's in-dialog requests there too."""
    received = received_target(binding.received)
    if received is not None and (binding.nat or received.transport != "udp"):
        owner = core.peering.via_owner(binding, core.resolve) if core.peering is not None else None
        if owner is not None:
            return owner                      # another instance's pinhole: through it
        hop = pinhole(core.effects, received, binding.worker)
        if hop is not None:
            return replace(hop, nat=True)
        if binding.nat:
            return None
    return core.resolve(binding.contact)


def _tag(msg: SipMessage) -> str | None:
    try:
        return parse_name_addr(msg.get("to") or "").tag
    except UriError:
        return None
