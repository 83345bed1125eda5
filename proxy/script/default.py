"""sipledger's default routing script.

The OpenSIPS book's "full script" (chapter 5) — authenticate local callers,
serve REGISTER, answer keep-alives, relay foreign domains only for local
users — plus PSTN gateways with failover, blacklists, dialplan and group
permissions (chapter 7) and call forwarding (chapter 8).  Copy it, change it
and point `[proxy] routing_script` at your copy: every verb is a method of
`ctx` (proxy/script/context.py).

The toll-fraud rule, as in the book's scripts: a request leaves the network
(a PSTN gateway, the static route, another domain, a pre-set Route) only for
an authenticated local subscriber or a trusted source, whatever its From says
(``leave``).  Callers from other domains may still reach local subscribers
unauthenticated (normal SIP peering), never anything beyond them.  ``relay()``
checks the same rule again, so an edited copy of this script cannot open the
hole by forgetting it (docs/auth.md).
"""
from __future__ import annotations

CHALLENGED = {"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "OPTIONS", "PUBLISH", "NOTIFY",
              "INFO", "UPDATE"}
NORMALISE_DIALPLAN = 0          # dialplan id applied to dialled numbers, if it has rules
FAILOVER_STATUS = {408} | set(range(500, 600))


def route(ctx):
    if ctx.method == "REGISTER":
        if not ctx.is_to_local():
            return ctx.reply(403, "Forbidden (domain not served)")
        if not ctx.is_trusted() and not ctx.authenticate():
            return
        return ctx.save_location()

    # keep-alive pings of the proxy itself are answered before authentication,
    # as Kamailio's default script does (REQINIT): they cost nothing and reach no one
    if ctx.method == "OPTIONS" and ctx.is_to_local() and ctx.ruri.user is None:
        return ctx.options_reply()

    # our subscribers prove who they are (From in any spelling of a served domain)
    if ctx.is_from_local() and not ctx.is_trusted() and ctx.method in CHALLENGED:
        if not ctx.authenticate():
            return

    ctx.authorize_credit()                     # prepaid accounts: relay asks credit control first
    if ctx.request.has("route") or not ctx.is_to_local():
        return leave(ctx)                      # pre-routed, or a foreign domain

    ctx.dialplan(NORMALISE_DIALPLAN)
    entry = ctx.blacklisted()
    if entry is not None:
        return ctx.reply(entry.code, entry.reason)
    subscriber = ctx.subscriber()
    if subscriber is not None:
        return to_local_user(ctx, subscriber)
    return to_pstn(ctx)


def leave(ctx):
    """Relay off-net: only for an authenticated subscriber or a trusted source."""
    if not ctx.may_leave():
        return ctx.reply(403, "Forbidden (relaying needs authentication)")
    if not ctx.fraud_check():                   # fraud rules (docs/fraud.md): 403 on a critical breach
        return
    return ctx.relay()


def to_local_user(ctx, subscriber):
    prefs = ctx.forwarding(subscriber)
    if prefs.always:
        return forward(ctx, prefs.always, "unconditional")
    if ctx.lookup(f"{subscriber[0]}@{subscriber[1]}") < 0:
        if prefs.unavailable:
            return forward(ctx, prefs.unavailable, "unavailable")
        return ctx.reply(480, "Temporarily Unavailable")
    if ctx.method == "INVITE" and (prefs.busy or prefs.no_answer or prefs.unavailable):
        if prefs.no_answer:
            ctx.set_ring_timeout(prefs.no_answer_timeout)
        ctx.vars["forwarding"] = prefs
        ctx.on_failure(forward_on_failure)
    return ctx.relay()


def forward_on_failure(ctx, response):
    prefs = ctx.vars.get("forwarding")
    if prefs is None:
        return
    status = response.status
    if status in (486, 600) and prefs.busy:
        forward(ctx, prefs.busy, "busy")
    elif status == 408 and prefs.no_answer:
        forward(ctx, prefs.no_answer, "no_answer")
    elif status in (408, 480) and prefs.unavailable:
        forward(ctx, prefs.unavailable, "unavailable")


def forward(ctx, target, reason):
    """Send the call on to another user, number or media server as a new leg."""
    if not ctx.begin_forward(target, reason):
        return ctx.reply(482, "Loop Detected (forwarding)")
    ctx.vars.pop("forwarding", None)
    subscriber = ctx.subscriber()
    if subscriber is not None:
        return to_local_user(ctx, subscriber)
    if ctx.is_to_local():
        return to_pstn(ctx)
    return leave(ctx)                           # a media server or another domain


def to_pstn(ctx):
    if not ctx.may_leave():                     # an unknown number of ours is the PSTN: never for strangers
        return ctx.reply(403, "Forbidden (relaying needs authentication)")
    allowed, group = ctx.destination_allowed()
    if not allowed:
        return ctx.reply(403, f"Forbidden (destination needs group {group})")
    if not ctx.fraud_check():                   # fraud rules (docs/fraud.md): 403 on a critical breach
        return
    if ctx.route_to_gateways():
        ctx.on_failure(gateway_failover)
        return ctx.relay()
    if ctx.static_route():
        return ctx.relay()
    return ctx.reply(404, "Not Found")


def gateway_failover(ctx, response):
    # 6xx is final; 408, 5xx and transport errors (503) try the next gateway
    if response.status in FAILOVER_STATUS and ctx.next_gateway():
        ctx.relay(cause="failover")
