"""REGISTER processing, RFC 3261 §10.3 steps 6–8.

The caller has already done steps 1–5 (the Request-URI names a served
domain, Require is acceptable, the UA authenticated and may register the
To AOR) and passes the AOR.  What is left is pure rule work on the request,
applied to the location store in one transaction: a REGISTER is either
applied completely or not at all.

RFC 3327: when the request carries Path headers they are stored with each
binding; the caller copies them into the 200 OK.

NAT (nathelper's fix_nated_register): every binding keeps the address the
REGISTER came from (``received``) and its transport; a sender behind a NAT
(proxy/core/nat.py) is flagged, so lookups send to ``received`` and the
keep-alives (natping.py) hold its pinhole open.  Over TCP the binding also
names the worker owning the connection, the only process that can write to it.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.infra.config import RegistrarSettings
from proxy.sip.message import SipMessage
from proxy.sip.uri import parse_name_addr, parse_uri

from .location import Binding, BindingEditor, LocationError, LocationStore
from .nat import sender_nated
from .ports import Target

__all__ = ["RegisterOutcome", "Registrar", "RegistrarSettings"]

log = logging.getLogger(__name__)

_MAX_DELTA = 2**32 - 1                     # §20.19: larger values mean this
_Q = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What to answer.  ``contact_values`` (200 only) are the AOR's bindings,
    each ``<uri>;expires=N``, one Contact value each; ``min_expires`` (423
    only) goes in a Min-Expires header."""
    status: int
    reason: str
    contact_values: list[str] = field(default_factory=list)
    min_expires: int | None = None


class _Reject(Exception):
    def __init__(self, status: int, reason: str, min_expires: int | None = None):
        super().__init__(reason)
        self.outcome = RegisterOutcome(status, reason, [], min_expires)


@dataclass(frozen=True, slots=True)
class _ContactChange:
    uri: str
    expires: int                           # 0 removes the binding
    q_milli: int


class Registrar:
    def __init__(self, store: LocationStore, settings: RegistrarSettings | None = None,
                 worker: int = 0, instance_route: Callable[[str, int | None], str] | None = None):
        self.store = store
        self.settings = settings or RegistrarSettings()
        self.worker = worker                   # this process' index: owner of its TCP connections
        # Route to this instance for bindings only it can reach (peering.py); None: one instance
        self.instance_route = instance_route

    def register(self, request: SipMessage, aor: str, source: tuple[str, int, str],
                 now: float) -> RegisterOutcome:
        """Apply one (authenticated) REGISTER to ``aor``.  ``source`` is the
        (ip, port, transport) it arrived from; ``now`` is wall-clock seconds.
        Never raises: bad requests get 4xx, database trouble 500."""
        try:
            contacts = request.values("contact")
            if not contacts:                                   # §10.3 step 6: a query
                return self._ok(self.store.lookup(aor, now), now)
            call_id, cseq = _call_id_cseq(request)
            header_expires = _header_expires(request)
            if "*" in contacts:
                return self._unregister_all(aor, contacts, header_expires, call_id, cseq, now)
            changes = self._contact_changes(contacts, header_expires)
            return self._update(aor, changes, call_id, cseq, request, source, now)
        except _Reject as reject:
            return reject.outcome
        except LocationError as exc:
            log.error("REGISTER for %s not stored: %s", aor, exc)
            return RegisterOutcome(500, "Location Service Unavailable")

    # -- the rules --------------------------------------------------------------
    def _contact_changes(self, contacts: list[str], header_expires: int | None) -> list[_ContactChange]:
        """Every Contact checked before anything is stored (§10.3 step 6)."""
        changes = []
        too_brief = False
        for value in contacts:
            try:
                addr = parse_name_addr(value)
                uri = parse_uri(addr.uri)
            except ValueError:              # UriError, and int() on odd digits in a port
                raise _Reject(400, "Invalid Contact") from None
            if uri.scheme not in ("sip", "sips"):
                raise _Reject(400, "Unsupported Contact URI Scheme")
            expires = self._expires(addr.params, header_expires)
            too_brief |= 0 < expires < self.settings.min_expires
            changes.append(_ContactChange(addr.uri, min(expires, self.settings.max_expires),
                                          _q_milli(addr.params)))
        if too_brief:
            raise _Reject(423, "Interval Too Brief", self.settings.min_expires)
        return changes

    def _expires(self, params: dict[str, str | None], header_expires: int | None) -> int:
        if "expires" in params:
            return _delta_seconds(params["expires"])
        if header_expires is not None:
            return header_expires
        return self.settings.default_expires

    def _unregister_all(self, aor: str, contacts: list[str], header_expires: int | None,
                        call_id: str, cseq: int, now: float) -> RegisterOutcome:
        # "*" is only valid alone and with Expires: 0 (§10.3 step 6)
        if len(contacts) != 1 or header_expires != 0:
            raise _Reject(400, "Invalid Wildcard Contact")
        with self.store.edit(aor, now) as edit:
            for binding in list(edit.current.values()):
                _check_order(binding, call_id, cseq)
                edit.remove(binding.contact)
        return self._ok([], now)

    def _update(self, aor: str, changes: list[_ContactChange], call_id: str, cseq: int,
                request: SipMessage, source: tuple[str, int, str], now: float) -> RegisterOutcome:
        ip, port, transport = source
        path = ", ".join(request.values("path")) or None
        received = _received_uri(ip, port, transport)
        # behind a Path (an edge proxy registered it for the phone) the source is that
        # proxy, not the phone's NAT: the edge proxy handles the NAT (RFC 3327)
        nat = path is None and sender_nated(request, Target(transport.lower(), ip, port))
        worker = self.worker if transport.lower() != "udp" else None
        # only this instance can reach a NATed or TCP phone: the others route through it
        instance = self.instance_route(received, worker) \
            if self.instance_route is not None and (nat or transport.lower() != "udp") else None
        with self.store.edit(aor, now) as edit:
            # ordering is judged on the bindings as they were before this
            # request, so a contact listed twice does not trip over itself
            for change in changes:
                existing = edit.get(change.uri)
                if existing is not None:
                    _check_order(existing, call_id, cseq)
            for change in changes:
                if change.expires == 0:
                    edit.remove(change.uri)
                    continue
                edit.put(Binding(
                    aor=edit.aor, contact=change.uri, expires_at=now + change.expires,
                    q_milli=change.q_milli, call_id=call_id, cseq=cseq,
                    received=received, transport=transport.lower(),
                    user_agent=request.get("user-agent"), path=path, registered_at=now,
                    nat=nat, worker=worker, instance=instance))
            self._check_contact_limit(edit)
            bindings = edit.bindings()
        return self._ok(bindings, now)

    def _check_contact_limit(self, edit: BindingEditor) -> None:
        limit = self.settings.max_contacts
        if limit and len(edit.current) > limit:
            raise _Reject(503, "Too Many Registered Contacts")

    @staticmethod
    def _ok(bindings: list[Binding], now: float) -> RegisterOutcome:
        return RegisterOutcome(200, "OK", [_contact_value(b, now) for b in bindings])


# -- request fields -------------------------------------------------------------

def _call_id_cseq(request: SipMessage) -> tuple[str, int]:
    try:
        cseq, _method = request.cseq
    except ValueError:
        raise _Reject(400, "Invalid CSeq") from None
    if not request.call_id:
        raise _Reject(400, "Missing Call-ID")
    return request.call_id, cseq


def _header_expires(request: SipMessage) -> int | None:
    value = request.get("expires")
    return None if value is None else _delta_seconds(value)


def _delta_seconds(text: str | None) -> int:
    """delta-seconds (§25.1); absurdly long values mean the maximum (§20.19)."""
    value = (text or "").strip()
    if not value.isascii() or not value.isdigit():
        raise _Reject(400, "Invalid Expires")
    # checking the length first keeps int() away from huge digit strings
    return _MAX_DELTA if len(value) > 10 else min(int(value), _MAX_DELTA)


def _q_milli(params: dict[str, str | None]) -> int:
    text = params.get("q")
    if "q" not in params:
        return 1000
    if text is None or not _Q.match(text.strip()):
        raise _Reject(400, "Invalid q Value")
    whole, _, frac = text.strip().partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
    """§10.3 step 7: same Call-ID needs a higher CSeq, else the update fails."""
    if binding.call_id == call_id and cseq <= binding.cseq:
        raise _Reject(500, "Out Of Order CSeq")


def _received_uri(ip: str, port: int, transport: str) -> str:
    """Where the REGISTER really came from, as a routable URI (for NAT)."""
    host = f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
    return f"sip:{host}:{port};transport={transport.lower()}"


def _contact_value(binding: Binding, now: float) -> str:
    value = f"<{binding.contact}>;expires={binding.expires_in(now)}"
    if binding.q_milli != 1000:
        value += ";q=" + (f"{binding.q_milli / 1000:.3f}".rstrip("0").rstrip("."))
    return value
