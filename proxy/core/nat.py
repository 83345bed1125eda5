"""Is a party behind a NAT?  One rule, used where the proxy picks a destination.

The rule is OpenSIPS's nat_uac_test 1+2: the party's Contact holds a private
address that differs from the address its request came from.  A phone that
registers from one port and listens on another is not NATed; a gateway or a
peer proxy whose Contact points elsewhere is not either (RFC 3261 §16.6:
requests go to the Contact).  The NAT work replaces this rule (and only this).
"""
from __future__ import annotations

import ipaddress

from ..sip.uri import UriError, parse_uri


def behind_nat(contact: str, source_host: str) -> bool:
    """True when ``contact`` (a SIP URI) is a private address other than ``source_host``."""
    try:
        contact_host = parse_uri(contact).host.strip("[]")
        contact_ip = ipaddress.ip_address(contact_host)
    except (UriError, ValueError):
        return False
    private = contact_ip.is_private and not contact_ip.is_loopback
    return private and contact_host != source_host.strip("[]")
