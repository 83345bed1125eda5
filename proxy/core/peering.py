"""Several proxy instances on one location store: reaching a binding only its
registering instance can reach (docs/scale-out.md).  No I/O.

A phone behind a NAT, or registered over TCP, can be reached only through the
pinhole or connection of the instance its REGISTER came to.  That instance
stores with the binding a Route to itself (``Binding.instance``, OpenSIPS'
``socket`` / a Path header of RFC 3327) whose ``sl-flow`` parameter names the
flow: the phone's source address and the worker owning its connection, sealed
by an HMAC under the ``[auth] secret`` the instances share (the flow token of
RFC 5626 §5.2).  Another instance routing to the binding adds that Route; the
owner pops it, finds the flow in it and relays over the pinhole.  It
Record-Routes with the same token, so in-dialog requests of the caller's side
reach the phone the same way, and it relays *untracked* (no call events): the
instance that took the call from the caller holds the dialog and bills it.

The token only ever names an address that registered through this instance,
and the owner honours it only from a trusted source (``[proxy]
trusted_sources``: the other instances), so nobody can make an instance send
to an address of their choosing, nor place an unbilled call through it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import replace

from ..sip.message import SipMessage
from ..sip.uri import UriError, parse_name_addr, parse_uri
from .nat import pinhole, received_target
from .node import LocalNode
from .ports import Target

__all__ = ["FLOW_PARAM", "Peering"]

FLOW_PARAM = "sl-flow"
_MAC_LEN = 10
_MAX_TOKEN = 200                   # a stored received URI is short; anything longer is not ours


class Peering:
    """This instance's side of the arrangement: the Route it stores with its own
    bindings, and the flows it accepts from the others."""

    def __init__(self, secret: bytes, node: LocalNode):
        self._key = hashlib.sha256(b"sipledger flow token\0" + secret).digest()
        self.node = node

    # -- registering: the Route stored with a binding --------------------------------
    def instance_route(self, received: str, worker: int | None) -> str:
        """``<sip:HOST:PORT;lr;sl-flow=TOKEN>``: this instance's public address, and the flow."""
        return f"<sip:{self.node.host}:{self.node.public_port};lr;{FLOW_PARAM}={self.token(received, worker)}>"

    def token(self, received: str, worker: int | None) -> str:
        body = f"{received}|{'' if worker is None else worker}".encode()
        raw = body + hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_LEN]
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def open_token(self, token: str) -> tuple[str, int | None] | None:
        """(received URI, worker) if this secret sealed the token, else None."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        body, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if len(raw) <= _MAC_LEN or not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256)
                                                            .digest()[:_MAC_LEN]):
            return None
        received, _, worker = body.decode(errors="replace").rpartition("|")
        return received, int(worker) if worker.isdigit() else None

    # -- routing to a binding another instance owns -----------------------------------
    def via_owner(self, binding, resolve) -> Target | None:
        """The hop to the owning instance, carrying the Route to add, for a binding
        only that instance can reach; None when the binding is ours, or plain.
        A NATed binding stays ``nat`` (the media relay is wanted for it), with the
        phone's own source as ``party`` (where the relay expects its media)."""
        route = binding.instance
        if not route or self.node.is_me_route(route):
            return None
        try:
            hop = resolve(parse_name_addr(route).uri)
        except UriError:
            return None
        if not isinstance(hop, Target):
            return None
        received = received_target(binding.received)
        return replace(hop, route=route, nat=bool(binding.nat),
                       party=received.host if received is not None and binding.nat else None)

    # -- owning: a request another instance routed to us -------------------------------
    def flow(self, request: SipMessage, trusted: bool, effects: object) -> tuple[str, Target | None] | None:
        """When the top Route is ours and carries a valid flow token from a
        trusted source: (token, the pinhole to relay over — None when that
        connection is gone).  Read before our Routes are popped."""
        if not trusted:
            return None
        values = request.values("route")
        if not values or not self.node.is_me_route(values[0]):
            return None
        try:
            token = parse_uri(parse_name_addr(values[0]).uri).params.get(FLOW_PARAM)
        except UriError:
            return None
        opened = self.open_token(token or "")
        if opened is None:
            return None
        received, worker = opened
        target = received_target(received)
        hop = pinhole(effects, target, worker) if target is not None else None
        return token or "", None if hop is None else replace(hop, nat=True)

    def record_route_param(self, token: str) -> str:
        return f";{FLOW_PARAM}={token}"
