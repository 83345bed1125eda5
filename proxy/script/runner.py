"""Runs the routing module for each initial request (the engine's `routing`)."""
from __future__ import annotations

import logging
import types

from ..core.engine import Core
from ..core.forwarding import ProxyCall
from ..core.ports import Target
from ..core.txdriver import TxDriver
from ..sip.message import SipMessage
from ..sip.uri import UriError
from .context import RECORD_ROUTED, RequestContext

log = logging.getLogger("sipledger.script")


def relay_for_peer(core: Core, req: SipMessage, server: TxDriver, token: str, hop: Target | None) -> None:
    """The owner's half of peering (proxy/core/peering.py): relay over our pinhole
    or connection, untracked (the instance that took the call bills it), and
    Record-Route with the flow token so the caller side's in-dialog requests
    find the phone too.  No script: the other instance already ran it."""
    if hop is None:
        # RFC 5626 §5.3: the flow is gone (the connection closed); the caller gets the failure
        core.reply(server, req, 430, "Flow Failed")
        return
    call_id = req.call_id or ""
    call = ProxyCall(core, server, req, on_final=lambda c, _resp: _settled(core, call_id, c))
    call.rr_params = core.peering.record_route_param(token) if core.peering is not None else ""
    if req.method == "INVITE":
        core.transit[call_id] = call            # where a CANCEL from the other instance looks
    call.fork([(req.uri or "", hop)], record_route=req.method in RECORD_ROUTED)


def _settled(core: Core, call_id: str, call: ProxyCall) -> None:
    if core.transit.get(call_id) is call:
        del core.transit[call_id]


class ScriptRouting:
    def __init__(self, core: Core, module: types.ModuleType):
        self.core = core
        self.module = module
        self.route = module.route

    def initial(self, req: SipMessage, server: TxDriver, source: Target) -> None:
        core = self.core
        flow = core.peer_flow(req, source)     # another instance routes to a binding we own
        core.pop_own_routes(req)               # a pre-loaded Route naming us
        if flow is not None:
            relay_for_peer(core, req, server, *flow)
            return
        ctx = RequestContext(core, req, server, source)
        try:
            ctx.ruri                           # noqa: B018 - refuse unparsable R-URIs up front
            ctx.from_uri                       # noqa: B018
        except UriError as exc:
            ctx.reply(400, f"Bad Request ({exc})"[:120])
            return
        if ctx.ruri.scheme not in ("sip", "sips"):
            ctx.reply(416, "Unsupported URI Scheme")
            return
        try:
            self.route(ctx)
        except Exception:
            log.exception("routing script failed on %r", req)
            ctx.reply(500, "Server Internal Error (routing script)")
            return
        # relay() resumes on the answer of credit control or DNS
        waiting = (ctx.credit_check and not ctx.authorized) or core.waiting.get(req.call_id) is ctx
        if not ctx.replied and ctx.call is None and not waiting:
            ctx.reply(500, "Server Internal Error (no routing decision)")
