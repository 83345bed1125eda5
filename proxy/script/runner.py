"""Runs the routing module for each initial request (the engine's `routing`)."""
from __future__ import annotations

import logging
import types

from ..core.engine import Core
from ..core.ports import Target
from ..core.txdriver import TxDriver
from ..sip.message import SipMessage
from ..sip.uri import UriError
from .context import RequestContext

log = logging.getLogger("sipledger.script")


class ScriptRouting:
    def __init__(self, core: Core, module: types.ModuleType):
        self.core = core
        self.module = module
        self.route = module.route

    def initial(self, req: SipMessage, server: TxDriver, source: Target) -> None:
        core = self.core
        core.pop_own_routes(req)               # a pre-loaded Route naming us
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
