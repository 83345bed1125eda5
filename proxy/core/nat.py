"""Is the sender of a request behind a NAT?  nathelper's nat_uac_test, as a table.

Each rule is one flag (the numbers are OpenSIPS/Kamailio ``nat_uac_test``'s
where one exists) and one test of the request against the address its bytes
really came from.  ``detect`` returns the flags that fired; ``sender_nated``
answers the one question the registrar, the dialogs and the media relay ask:
is this party reachable only through the pinhole its request came through?

"Private" means the ranges a NAT hides (RFC 1918, RFC 6598 carrier-grade NAT,
IPv6 unique-local fc00::/7), not Python's ``ipaddress.is_private``: that also
counts the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24), loopback and link-local, which are not behind anybody's NAT
and which the tests use as public addresses.

A private address equal to the source is a phone on the proxy's own LAN: not
NATed (requests to its Contact reach it).  ``RPORT_ASKED`` is in the table
because nathelper users know it, but not in the default rules: every RFC 3581
phone asks for rport, NATed or not.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag

from ..sip.message import SipMessage
from ..sip.uri import UriError, parse_name_addr, parse_uri
from ..sip.via import ViaError, parse_via
from .ports import Target

__all__ = ["DEFAULT_RULES", "RULES", "NatFlag", "behind_nat", "detect", "is_private", "pinhole",
           "received_target", "sender_nated"]

_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",     # RFC 1918
    "100.64.0.0/10",                                      # RFC 6598 (carrier-grade NAT)
    "fc00::/7",                                           # RFC 4193 unique local
))


class NatFlag(IntFlag):
    CONTACT_PRIVATE = 1      # nat_uac_test 1: the Contact is a private address (not the source)
    VIA_RECEIVED = 2         # nat_uac_test 2: the top Via's sent-by host is not the source address
    VIA_PRIVATE = 4          # nat_uac_test 4: the top Via's sent-by is a private address (not the source)
    VIA_PORT = 16            # nat_uac_test 16: sent-by port is not the source port (only without rport)
    RPORT_ASKED = 256        # the sender asked for rport (RFC 3581): a hint, not in the defaults


def is_private(host: str) -> bool:
    """An address literal in a range NATs hide (see the module docstring)."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in _PRIVATE if net.version == addr.version)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rules look at, read once per request (None: absent or unparsable)."""
    source_host: str
    source_port: int
    contact_host: str | None
    via_host: str | None
    via_port: int | None
    rport: bool


def _facts(request: SipMessage, source: Target) -> _Facts:
    contact_host = None
    contacts = request.values("contact")
    if contacts and contacts[0].strip() != "*":
        try:
            contact_host = parse_uri(parse_name_addr(contacts[0]).uri).host.strip("[]")
        except (UriError, ValueError):
            contact_host = None
    via_host = via_port = None
    rport = False
    try:
        via = parse_via(request.top_via or "")
        via_host, rport = via.host.strip("[]"), "rport" in via.params
        via_port = via.port or (5061 if via.transport.upper() == "TLS" else 5060)
    except (ViaError, ValueError):
        pass
    return _Facts(source.host.strip("[]"), source.port, contact_host, via_host, via_port, rport)


def _private_elsewhere(host: str | None, source: str) -> bool:
    return host is not None and host != source and is_private(host)


# flag -> (test, why).  One line per rule: adding a rule is adding a line.
RULES: dict[NatFlag, tuple[Callable[[_Facts], bool], str]] = {
    NatFlag.CONTACT_PRIVATE: (lambda f: _private_elsewhere(f.contact_host, f.source_host),
                              "Contact is a private address other than the source"),
    NatFlag.VIA_RECEIVED: (lambda f: f.via_host is not None and f.via_host != f.source_host,
                           "top Via sent-by host is not the source address"),
    NatFlag.VIA_PRIVATE: (lambda f: _private_elsewhere(f.via_host, f.source_host),
                          "top Via sent-by is a private address other than the source"),
    NatFlag.VIA_PORT: (lambda f: not f.rport and f.via_port is not None and f.via_port != f.source_port,
                       "top Via sent-by port is not the source port (no rport asked)"),
    NatFlag.RPORT_ASKED: (lambda f: f.rport, "rport asked (RFC 3581)"),
}

# nat_uac_test(23) in OpenSIPS terms: every rule but the rport hint
DEFAULT_RULES = NatFlag.CONTACT_PRIVATE | NatFlag.VIA_RECEIVED | NatFlag.VIA_PRIVATE | NatFlag.VIA_PORT


# RULES with plain int flags: every request is tested (dialogs, media), and
# IntFlag arithmetic (each & or | builds an enum member) cost ~0.5 us a rule.
_RULE_BITS = tuple((int(flag), test) for flag, (test, _why) in RULES.items())
_DEFAULT_BITS = int(DEFAULT_RULES)


def _fired(facts: _Facts, wanted: int) -> int:
    found = 0
    for bit, test in _RULE_BITS:
        if bit & wanted and test(facts):
            found |= bit
    return found


def detect(request: SipMessage, source: Target, rules: NatFlag = DEFAULT_RULES) -> NatFlag:
    """The flags among ``rules`` that fire for ``request`` received from ``source``."""
    return NatFlag(_fired(_facts(request, source), int(rules)))


def sender_nated(request: SipMessage, source: Target) -> bool:
    """THE question for the registrar, the dialogs and the media relay: is the
    party that sent ``request`` (arrived from ``source``) behind a NAT, so that
    requests and media for it must go to where its packets come from?"""
    return _fired(_facts(request, source), _DEFAULT_BITS) != 0


def behind_nat(contact: str, source_host: str) -> bool:
    """True when ``contact`` (a SIP URI) is a private address other than ``source_host``:
    the Contact-only rule, for a message whose Via is not the party's (a 2xx)."""
    try:
        host = parse_uri(contact).host.strip("[]")
    except (UriError, ValueError):
        return False
    return _private_elsewhere(host, source_host.strip("[]"))


def received_target(received: str | None) -> Target | None:
    """A binding's stored source (``sip:IP:PORT;transport=T``, registrar.py) as a Target."""
    if not received:
        return None
    try:
        uri = parse_uri(received)
    except (UriError, ValueError):
        return None
    if uri.port is None:
        return None
    return Target((uri.params.get("transport") or "udp").lower(), uri.host.strip("[]"), uri.port)


def pinhole(effects: object, received: Target, worker: int | None) -> Target | None:
    """How to reach a party at the address its packets come from.  The runtime's
    ``flow`` picks the socket: UDP leaves from the public one the phone sent to
    (a NAT lets in only what comes from the address and port its pinhole was
    opened toward), TCP goes over the phone's own connection, None when that is
    gone or owned by no worker.  A core without a runtime sends as it is told."""
    flow = getattr(effects, "flow", None)
    return flow(received, worker) if flow is not None else received
