"""The default routing logic for initial requests: the book's "full script".

It reads like an opensips.cfg route block: authenticate local callers, serve
REGISTER, answer OPTIONS keep-alives, look up the location service for local
users (with aliases), relay to foreign domains for authenticated users, and
send unknown local users to the static route when one is configured.
"""
from __future__ import annotations

import ipaddress
import time

from ..contract import events as ev
from ..sip.message import SipMessage
from ..sip.uri import UriError, parse_name_addr, parse_uri
from .engine import Core
from .location import LocationError
from .forwarding import ProxyCall
from .ports import Target
from .txdriver import TxDriver

RECORD_ROUTED = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK, MESSAGE, SUBSCRIBE, NOTIFY, REFER"
# Methods a local caller must authenticate (ACK and CANCEL cannot be challenged).
CHALLENGED = frozenset({"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "OPTIONS", "PUBLISH", "NOTIFY",
                        "INFO", "UPDATE"})


class Denied(Exception):
    """A routing step refused the request; the status goes back to the caller."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DefaultRouting:
    def __init__(self, core: Core):
        self.core = core

    # -- helpers the routing steps share --------------------------------------------
    @property
    def snapshot(self):
        return self.core.provisioning.snapshot

    def local_domains(self) -> set[str]:
        domains = set(self.core.settings.domains)
        if self.core.provisioning is not None:
            domains |= set(self.snapshot.domains)
        return domains

    def domain_of(self, host: str, port: int | None) -> str | None:
        """The served domain a URI host names; our own address counts as the
        only served domain when there is exactly one (like `uri == myself`)."""
        host = host.lower()
        if host in self.local_domains():
            return host
        if self.core.node.is_me(host, port):
            domains = sorted(self.local_domains())
            return domains[0] if len(domains) == 1 else host
        return None

    # -- entry point ----------------------------------------------------------------------
    def initial(self, req: SipMessage, server: TxDriver, source: Target) -> None:
        core = self.core
        core.pop_own_routes(req)             # a pre-loaded Route naming us
        try:
            ruri = parse_uri(req.uri or "")
            from_uri = parse_uri(parse_name_addr(req.get("from") or "").uri)
        except UriError as exc:
            core.reply(server, req, 400, f"Bad Request ({exc})"[:120])
            return
        if ruri.scheme not in ("sip", "sips"):
            core.reply(server, req, 416, "Unsupported URI Scheme")
            return
        target_domain = self.domain_of(ruri.host, ruri.port)
        if req.method == "REGISTER":
            self.register(req, server, source, target_domain)
            return
        account = None
        from_domain = from_uri.host.lower()
        trusted = core.is_trusted(source.host)
        if from_domain in self.local_domains() and not trusted and self.auth_enabled \
                and req.method in CHALLENGED:
            account = self.authenticate(req, server, source, realm=from_domain,
                                        header="proxy-authorization", user=from_uri.user)
            if account is None:
                return
        elif target_domain is None and not trusted:
            core.reply(server, req, 403, "Relaying Forbidden")
            return
        if req.method == "OPTIONS" and target_domain is not None and ruri.user is None:
            core.reply(server, req, 200, "OK", headers=[("allow", ALLOW)])
            return
        track = req.method == "INVITE"
        if track:
            core.emit(core.events.invite_received(req, source, account, None))
        try:
            targets = self.targets(req, ruri, target_domain)
        except Denied as denied:
            self.reject(req, server, denied.status, denied.reason, track)
            return
        self.relay(req, server, targets, track=track, account=account)

    @property
    def auth_enabled(self) -> bool:
        return self.core.authenticator is not None

    # -- steps -----------------------------------------------------------------------------
    def targets(self, req: SipMessage, ruri, target_domain: str | None) -> list[tuple[str, Target]]:
        core = self.core
        if req.has("route"):                  # routed elsewhere by a pre-loaded route
            uri, target = core.next_hop(req)
            if target is None:
                raise Denied(502, "Bad Gateway (unresolvable route)")
            return [(uri, target)]
        if target_domain is None:             # a foreign domain: plain relay
            target = core.resolve(req.uri or "")
            if target is None:
                raise Denied(404, "Not Found (unresolvable destination)")
            return [(req.uri or "", target)]
        subscriber = None
        if ruri.user is not None and core.provisioning is not None:
            subscriber = self.snapshot.resolve(ruri.user, target_domain)
        if subscriber is None:
            if core.static_route:
                target = core.resolve(core.static_route)
                if target is None:
                    raise Denied(500, "Static route unresolvable")
                return [(req.uri or "", target)]
            raise Denied(404, "Not Found")
        return self.lookup(f"{subscriber[0]}@{subscriber[1]}")

    def lookup(self, aor: str) -> list[tuple[str, Target]]:
        """Location service: every registered contact, to fork in parallel."""
        core = self.core
        try:
            bindings = core.location.lookup(aor, time.time()) if core.location is not None else []
        except LocationError:
            raise Denied(500, "Location Service Unavailable") from None
        targets = []
        for binding in bindings:
            hop = core.resolve(_nat_destination(binding))
            if hop is not None:
                targets.append((binding.contact, hop))
        if not targets:
            raise Denied(480, "Temporarily Unavailable")
        return targets

    def relay(self, req: SipMessage, server: TxDriver, targets: list[tuple[str, Target]], *,
              track: bool, account: str | None) -> ProxyCall:
        core = self.core
        call = ProxyCall(core, server, req, track=track, account=account,
                         on_final=self._call_settled if track else None)
        if track:
            core.calls[req.call_id] = call
        call.fork(targets, record_route=req.method in RECORD_ROUTED)
        return call

    def _call_settled(self, call: ProxyCall, final: SipMessage) -> None:
        calls = self.core.calls
        if calls.get(call.request.call_id) is call:
            del calls[call.request.call_id]

    def reject(self, req: SipMessage, server: TxDriver, status: int, reason: str, track: bool) -> None:
        core = self.core
        resp = core.reply(server, req, status, reason)
        if track:
            core.emit(core.events.make(ev.CallFailed, req, to_tag=_tag(resp), code=status,
                                       reason=reason, by_proxy=True))

    # -- authentication and registration ---------------------------------------------------
    def authenticate(self, req: SipMessage, server: TxDriver, source: Target, *, realm: str,
                     header: str, user: str | None) -> str | None:
        """Digest check; returns "user@realm" or None when a reply was sent."""
        from .digest import find_credentials
        core = self.core
        auth = core.authenticator
        now = time.time()
        challenge_code, challenge_header = (407, "proxy-authenticate") if header == "proxy-authorization" \
            else (401, "www-authenticate")
        value = find_credentials(req, header, realm)
        if value is None:
            self._challenge(req, server, challenge_code, challenge_header, realm, now, stale=False)
            return None
        result = auth.verify(req.method, value, realm, self.snapshot.credentials, now,
                             request_uri=req.uri)
        if result.stale:
            self._challenge(req, server, challenge_code, challenge_header, realm, now, stale=True)
            return None
        if not result.ok:
            reason = {"wrong-password": "Forbidden (wrong password)",
                      "unknown-user": "Forbidden (unknown user)",
                      "replay": "Forbidden (replayed credentials)"}.get(result.reason, f"Forbidden ({result.reason})")
            self._auth_failed(req, server, source, reason)
            return None
        if user is not None and result.username != user:
            self._auth_failed(req, server, source, "Forbidden (From/authentication user mismatch)")
            return None
        # credentials for our realm stop here (RFC 3261 §22.3)
        req.headers = [h for h in req.headers if not (h[0] == header and h[2] is value)]
        return f"{result.username}@{realm}"

    def _challenge(self, req, server, code, header, realm, now, *, stale: bool) -> None:
        values = self.core.authenticator.challenge(realm, now, stale=stale)
        self.core.reply(server, req, code, None, headers=[(header, v) for v in values])

    def _auth_failed(self, req, server, source, reason: str) -> None:
        core = self.core
        track = req.method == "INVITE"
        if track:
            core.emit(core.events.invite_received(req, source, None, None))
        self.reject(req, server, 403, reason, track)

    def register(self, req: SipMessage, server: TxDriver, source: Target, domain: str | None) -> None:
        core = self.core
        if domain is None:
            core.reply(server, req, 403, "Forbidden (domain not served)")
            return
        try:
            to_uri = parse_uri(parse_name_addr(req.get("to") or "").uri)
        except UriError as exc:
            core.reply(server, req, 400, f"Bad Request ({exc})"[:120])
            return
        user, to_domain = to_uri.user, to_uri.host.lower()
        if to_domain not in self.local_domains():
            to_domain = domain
        if user is None:
            core.reply(server, req, 400, "Bad Request (no user in To)")
            return
        if self.auth_enabled and not core.is_trusted(source.host):
            if self.authenticate(req, server, source, realm=to_domain, header="authorization",
                                 user=user) is None:
                return
        subscriber = self.snapshot.resolve(user, to_domain) if core.provisioning else None
        if subscriber is None or core.registrar is None:
            core.reply(server, req, 404, "Not Found")
            return
        outcome = core.registrar.register(req, f"{subscriber[0]}@{subscriber[1]}",
                                          (source.host, source.port, source.transport), time.time())
        headers = [("contact", v) for v in outcome.contact_values]
        if outcome.min_expires is not None:
            headers.append(("min-expires", str(outcome.min_expires)))
        core.reply(server, req, outcome.status, outcome.reason, headers=headers)


def _nat_destination(binding) -> str:
    """Where to send a registered contact's requests: its source address when
    it registered from behind a NAT (a private Contact address different from
    the address the REGISTER came from: OpenSIPS nat_uac_test 1+2), else the
    Contact itself (a phone may well register from one port and listen on another)."""
    if not binding.received:
        return binding.contact
    try:
        contact_host = parse_uri(binding.contact).host.strip("[]")
        source_host = parse_uri(binding.received).host.strip("[]")
        private = ipaddress.ip_address(contact_host).is_private and not \
            ipaddress.ip_address(contact_host).is_loopback
    except ValueError:
        return binding.contact
    return binding.received if private and contact_host != source_host else binding.contact


def _tag(msg: SipMessage) -> str | None:
    try:
        return parse_name_addr(msg.get("to") or "").tag
    except UriError:
        return None
