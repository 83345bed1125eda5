"""Operator commands for the routing data: gateway, carrier, route, dialplan,
blacklist, trusted, group and forward sub-apps.

Mounted by the main CLI like the provisioning ones (``ctx.obj.provisioning_url``:
the routing tables live in the provisioning database) and built on the same
helpers.  Each command is thin: it opens the store (missing tables created),
calls the service layer (proxy/routing/service.py, which the ``/v1`` routes
call too) and prints one line; errors go to stderr as one line with exit
status 1.
"""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from proxy.infra.cli import fail, print_rows, print_table
from proxy.provisioning.cli import open_store

from . import service
from .dialplan import DialplanRule
from .drouting import DEFAULT_GROUP, FILTERED_CODE, FILTERED_REASON, format_gwlist
from .forwarding import Condition
from .store import UNSET, RoutingStore

__all__ = ["gateway_app", "carrier_app", "route_app", "dialplan_app", "blacklist_app", "trusted_app",
           "group_app", "forward_app"]

gateway_app = typer.Typer(help="PSTN gateways: address, digits to strip/add, OPTIONS probing.",
                          no_args_is_help=True)
carrier_app = typer.Typer(help="Carriers: named, optionally weighted, groups of gateways (#name in routes).",
                          no_args_is_help=True)
route_app = typer.Typer(help="Routes to gateways by number prefix, group, time and priority.",
                        no_args_is_help=True)
dialplan_app = typer.Typer(help="Dialplans: ordered regex rewrite rules per dialplan id.", no_args_is_help=True)
blacklist_app = typer.Typer(help="Blacklists: destinations never routed (473 Filtered Destination).",
                            no_args_is_help=True)
trusted_app = typer.Typer(help="Trusted sources (gateways calling in): never challenged.", no_args_is_help=True)
group_app = typer.Typer(help="User groups and the destinations that require them.", no_args_is_help=True)
forward_app = typer.Typer(help="Call forwarding per subscriber; media destinations (voicemail).",
                          no_args_is_help=True)
media_app = typer.Typer(help="Named media destinations (voicemail, announcements) for forwarding.",
                        no_args_is_help=True)
forward_app.add_typer(media_app, name="media")


def _store(ctx: typer.Context):
    """The routing store; a RoutingError (any service refusal) ends the command with its line."""
    return open_store(ctx, RoutingStore)


# -- gateway --------------------------------------------------------------------------------------

@gateway_app.command("add")
def gateway_add(
    ctx: typer.Context,
    name: str,
    address: str = typer.Option(..., "--address", "-a", metavar="HOST[:PORT]", help="Where calls go."),
    transport: str = typer.Option("udp", "--transport", "-t", help="udp or tcp."),
    strip: int = typer.Option(0, "--strip", help="Leading digits removed from the number."),
    prefix: str = typer.Option("", "--prefix", help="Put in front of the number (after --strip)."),
    probe: str = typer.Option("never", "--probe", help="OPTIONS probing: never, always or when-down."),
    attrs: str = typer.Option("", "--attrs", help="Free attributes for the routing script."),
) -> None:
    """Add a gateway."""
    with _store(ctx) as store:
        gateway = service.add_gateway(store, name, address, transport, strip, prefix, probe, attrs)
    typer.echo(f"added gateway {gateway.name} at {gateway.uri()}")


@gateway_app.command("del")
def gateway_del(ctx: typer.Context, name: str) -> None:
    """Delete a gateway (no carrier or route may use it)."""
    with _store(ctx) as store:
        service.delete_gateway(store, name)
    typer.echo(f"deleted gateway {name}")


@gateway_app.command("list")
def gateway_list(ctx: typer.Context) -> None:
    """List gateways."""
    with _store(ctx) as store:
        gateways = service.list_gateways(store)
    print_rows(("gateway", "address", "transport", "strip", "prefix", "probe", "attrs"),
               ((g.name, g.address, g.transport, str(g.strip), g.prefix, str(g.probe), g.attrs) for g in gateways))


# -- carrier --------------------------------------------------------------------------------------

@carrier_app.command("add")
def carrier_add(
    ctx: typer.Context,
    name: str,
    gateways: str = typer.Option(..., "--gateways", "-g", metavar="GW1,GW2", help="Gateways, in order."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", metavar="70,30",
                                          help="One weight per gateway: weighted random order."),
    attrs: str = typer.Option("", "--attrs"),
) -> None:
    """Add a carrier (use it in a route as #NAME)."""
    with _store(ctx) as store:
        carrier = service.add_carrier(store, name, gateways, weights, attrs)
    typer.echo(f"added carrier {carrier.name}: {format_gwlist(carrier.gateways)}")


@carrier_app.command("del")
def carrier_del(ctx: typer.Context, name: str) -> None:
    """Delete a carrier (no route may use it)."""
    with _store(ctx) as store:
        service.delete_carrier(store, name)
    typer.echo(f"deleted carrier {name}")


@carrier_app.command("list")
def carrier_list(ctx: typer.Context) -> None:
    """List carriers."""
    with _store(ctx) as store:
        carriers = service.list_carriers(store)
    print_rows(("carrier", "gateways", "attrs"),
               ((c.name, format_gwlist(c.gateways), c.attrs) for c in carriers))


# -- route ----------------------------------------------------------------------------------------

@route_app.command("add")
def route_add(
    ctx: typer.Context,
    prefix: str = typer.Option(..., "--prefix", "-p", help="Number prefix (longest match wins; '' = any)."),
    gateways: str = typer.Option(..., "--gateways", "-g", metavar="GW1,GW2,#CARRIER",
                                 help="Failover order; #name for a carrier."),
    group: str = typer.Option(DEFAULT_GROUP, "--group", metavar="GROUP[,GROUP]",
                              help="Routing group(s) (caller class) the route is for."),
    priority: int = typer.Option(0, "--priority", help="Where routes of one prefix overlap, the higher wins."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", metavar="70,30",
                                          help="One weight per entry: weighted random order."),
    time_window: Optional[str] = typer.Option(None, "--time", metavar="HH:MM-HH:MM",
                                              help="Only at these times (may cross midnight)."),
    weekdays: Optional[str] = typer.Option(None, "--weekdays", metavar="1-5",
                                           help="Only on these days (1 = Monday .. 7, or mon..sun)."),
    tz: str = typer.Option("UTC", "--tz", help="Time zone of --time and --weekdays."),
    attrs: str = typer.Option("", "--attrs"),
) -> None:
    """Add a route."""
    with _store(ctx) as store:
        rule = service.add_route(store, prefix, gateways, group, priority, weights, time_window, weekdays, tz,
                                 attrs)
    when = f", {rule.window}" if rule.window else ""
    typer.echo(f"added route #{rule.id}: prefix {prefix!r} -> {format_gwlist(rule.gateways)} "
               f"(group {','.join(sorted(rule.groups))}, priority {priority}{when})")


@route_app.command("del")
def route_del(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Delete a route by its id (see 'route list')."""
    with _store(ctx) as store:
        service.delete_route(store, rule_id)
    typer.echo(f"deleted route #{rule_id}")


@route_app.command("list")
def route_list(ctx: typer.Context) -> None:
    """List routes."""
    with _store(ctx) as store:
        rules = service.list_routes(store)
    print_rows(("id", "prefix", "group", "priority", "when", "gateways", "attrs"),
               ((str(r.id), r.prefix, ",".join(sorted(r.groups)), str(r.priority), str(r.window) if r.window else "always", format_gwlist(r.gateways), r.attrs) for r in rules))


@route_app.command("test")
def route_test(
    ctx: typer.Context,
    number: str,
    group: str = typer.Option(DEFAULT_GROUP, "--group"),
    at: Optional[str] = typer.Option(None, "--at", metavar="ISO-TIME", help="Instead of now."),
    call_id: str = typer.Option("", "--call-id", help="Seed of weighted orders."),
) -> None:
    """Show the gateways a call to NUMBER would try, in order (all counted as up)."""
    with _store(ctx) as store:
        routes = service.test_route(store, number, group, at, call_id)
    for i, route in enumerate(routes, 1):
        via = f" via #{route.carrier}" if route.carrier else ""
        typer.echo(f"{i}. {route.gateway.name} {route.uri} (route #{route.rule.id}{via})")


# -- dialplan --------------------------------------------------------------------------------------

def _rule_text(rule: DialplanRule) -> str:
    text = f"rule #{rule.id} (priority {rule.priority}): match {rule.match}"
    if rule.subst:
        text += f" subst {rule.subst}"
    if rule.repl is not None:
        text += f" -> {rule.repl}"
    return text + (f" [{rule.attrs}]" if rule.attrs else "")


@dialplan_app.command("add")
def dialplan_add(
    ctx: typer.Context,
    dpid: int = typer.Argument(..., metavar="ID", help="Dialplan id."),
    match: str = typer.Option(..., "--match", "-m", metavar="REGEX", help="Which values the rule takes."),
    subst: Optional[str] = typer.Option(None, "--subst", "-s", metavar="REGEX",
                                        help="What to replace (default: the --match expression)."),
    repl: Optional[str] = typer.Option(None, "--repl", "-r", metavar="TEXT",
                                       help=r"Replacement, \1 for groups (default: value unchanged)."),
    priority: int = typer.Option(0, "--priority", help="Rules are tried lowest priority first."),
    attrs: str = typer.Option("", "--attrs"),
) -> None:
    """Add a rule to a dialplan."""
    with _store(ctx) as store:
        rule = service.add_dialplan_rule(store, dpid, match, subst, repl, priority, attrs)
    typer.echo(f"added dialplan {dpid} rule #{rule.id}")


@dialplan_app.command("del")
def dialplan_del(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="RULE-ID")) -> None:
    """Delete a dialplan rule by its id (see 'dialplan list')."""
    with _store(ctx) as store:
        rule = service.delete_dialplan_rule(store, rule_id)
    typer.echo(f"deleted dialplan {rule.dpid} rule #{rule_id}")


@dialplan_app.command("list")
def dialplan_list(ctx: typer.Context, dpid: Optional[int] = typer.Argument(None, metavar="[ID]")) -> None:
    """List dialplan rules in the order they are tried."""
    with _store(ctx) as store:
        rules = service.list_dialplan(store, dpid)
    print_rows(("dialplan", "rule", "priority", "match", "subst", "repl", "attrs"),
               ((str(r.dpid), f"#{r.id}", str(r.priority), r.match, r.subst or "", r.repl if r.repl is not None else "", r.attrs) for r in rules))


@dialplan_app.command("test")
def dialplan_test(ctx: typer.Context, dpid: int = typer.Argument(..., metavar="ID"), value: str = typer.Argument(
        ..., metavar="NUMBER")) -> None:
    """Rewrite NUMBER with dialplan ID, as the proxy would."""
    with _store(ctx) as store:
        new, rule = service.test_dialplan(store, dpid, value)
    typer.echo(f"{new}  ({_rule_text(rule)})")


# -- blacklist --------------------------------------------------------------------------------------

@blacklist_app.command("add")
def blacklist_add(
    ctx: typer.Context,
    list_name: str = typer.Argument(..., metavar="LIST"),
    prefix: str = typer.Argument(..., metavar="PREFIX"),
    exact: bool = typer.Option(False, "--exact", help="Only this exact number, not a prefix."),
    code: int = typer.Option(FILTERED_CODE, "--code", help="Status answered."),
    reason: str = typer.Option(FILTERED_REASON, "--reason", help="Reason phrase answered."),
) -> None:
    """Never route numbers starting with PREFIX (the script checks list "default")."""
    with _store(ctx) as store:
        service.add_blacklist(store, list_name, prefix, exact, code, reason)
    what = "number" if exact else "prefix"
    typer.echo(f"added {what} {prefix!r} to blacklist {list_name} ({code} {reason})")


@blacklist_app.command("del")
def blacklist_del(ctx: typer.Context, list_name: str = typer.Argument(..., metavar="LIST"),
                  prefix: str = typer.Argument(..., metavar="PREFIX"),
                  exact: bool = typer.Option(False, "--exact")) -> None:
    """Remove an entry from a blacklist."""
    with _store(ctx) as store:
        service.delete_blacklist(store, list_name, prefix, exact)
    typer.echo(f"deleted {prefix!r} from blacklist {list_name}")


@blacklist_app.command("list")
def blacklist_list(ctx: typer.Context, list_name: Optional[str] = typer.Argument(None, metavar="[LIST]")) -> None:
    """List blacklist entries."""
    with _store(ctx) as store:
        entries = service.list_blacklist(store, list_name)
    print_rows(("list", "prefix", "match", "answer"),
               ((e.list, e.prefix, "exact" if e.exact else "prefix", f"{e.code} {e.reason}") for e in entries))


@blacklist_app.command("test")
def blacklist_test(ctx: typer.Context, list_name: str = typer.Argument(..., metavar="LIST"),
                   number: str = typer.Argument(..., metavar="NUMBER")) -> None:
    """Is NUMBER blacklisted in LIST?  Exit status 0 if so, 1 if not."""
    with _store(ctx) as store:
        entry = service.test_blacklist(store, list_name, number)
    if entry is None:
        fail(f"{number} is not in blacklist {list_name}")
    typer.echo(f"{number} is blacklisted by {entry.prefix!r}: {entry.code} {entry.reason}")


# -- trusted ----------------------------------------------------------------------------------------

@trusted_app.command("add")
def trusted_add(
    ctx: typer.Context,
    cidr: str = typer.Argument(..., metavar="ADDRESS[/BITS]"),
    proto: Optional[str] = typer.Option(None, "--proto", help="Only this transport (udp, tcp); default any."),
    tag: str = typer.Option("", "--tag", help="Free text (e.g. which carrier)."),
) -> None:
    """Trust requests from an address or subnet (no authentication)."""
    with _store(ctx) as store:
        source = service.add_trusted(store, cidr, proto, tag)
    typer.echo(f"trusted {source.cidr} ({source.proto or 'any'})")


@trusted_app.command("del")
def trusted_del(ctx: typer.Context, cidr: str = typer.Argument(..., metavar="ADDRESS[/BITS]"),
                proto: Optional[str] = typer.Option(None, "--proto")) -> None:
    """Stop trusting an address or subnet."""
    with _store(ctx) as store:
        network = service.delete_trusted(store, cidr, proto)
    typer.echo(f"no longer trusted: {network} ({proto or 'any'})")


@trusted_app.command("list")
def trusted_list(ctx: typer.Context) -> None:
    """List trusted sources."""
    with _store(ctx) as store:
        sources = service.list_trusted(store)
    print_rows(("source", "protocol", "tag"),
               ((s.cidr, s.proto or "any", s.tag) for s in sources))


# -- group ---------------------------------------------------------------------------------------

@group_app.command("add")
def group_add(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN"),
              group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Put a subscriber in a group."""
    with _store(ctx) as store:
        member = service.add_to_group(store, address, group)
    typer.echo(f"added {member.address} to group {group}")


@group_app.command("del")
def group_del(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN"),
              group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Take a subscriber out of a group."""
    with _store(ctx) as store:
        member = service.remove_from_group(store, address, group)
    typer.echo(f"removed {member.address} from group {group}")


@group_app.command("list")
def group_list(ctx: typer.Context, group: Optional[str] = typer.Argument(None, metavar="[GROUP]")) -> None:
    """List group members and the destinations that require a group."""
    with _store(ctx) as store:
        members = service.list_group_members(store, group)
        required = service.list_group_requirements(store, group)
    print_rows(("group", "member"),
               ((m.group, m.address) for m in members))
    table = Table("destination prefix", "requires group")
    for r in required:
        table.add_row(r.prefix, r.group)
    print_table(table)


@group_app.command("require")
def group_require(ctx: typer.Context, prefix: str = typer.Argument(..., metavar="PREFIX"),
                  group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Only members of GROUP may call numbers starting with PREFIX (longest prefix decides)."""
    with _store(ctx) as store:
        before = service.require_group(store, prefix, group)
    was = f" (was {before})" if before and before != group else ""
    typer.echo(f"prefix {prefix!r} requires group {group}{was}")


@group_app.command("unrequire")
def group_unrequire(ctx: typer.Context, prefix: str = typer.Argument(..., metavar="PREFIX")) -> None:
    """Drop the group requirement of a prefix."""
    with _store(ctx) as store:
        service.unrequire_group(store, prefix)
    typer.echo(f"prefix {prefix!r} requires no group")


# -- forward ---------------------------------------------------------------------------------------

_TARGET_HELP = "sip: URI, user@domain, a number (via the gateways) or a media destination; 'none' clears."


@forward_app.command("set")
def forward_set(
    ctx: typer.Context,
    address: str = typer.Argument(..., metavar="USER@DOMAIN"),
    always: Optional[str] = typer.Option(None, "--always", help=f"Unconditional: {_TARGET_HELP}"),
    busy: Optional[str] = typer.Option(None, "--busy", help=f"On busy (486/600): {_TARGET_HELP}"),
    no_answer: Optional[str] = typer.Option(None, "--no-answer", help=f"On no answer: {_TARGET_HELP}"),
    timeout: Optional[int] = typer.Option(None, "--timeout", help="Ring seconds before no-answer (default 20)."),
    unavailable: Optional[str] = typer.Option(None, "--unavailable",
                                              help=f"Not registered / 408 / 480: {_TARGET_HELP}"),
) -> None:
    """Set forwarding preferences (the conditions not given are kept)."""
    given = ((Condition.ALWAYS, always), (Condition.BUSY, busy), (Condition.NO_ANSWER, no_answer),
             (Condition.UNAVAILABLE, unavailable))
    changes: dict[Condition | str, str | None] = {c: v for c, v in given if v is not None}
    with _store(ctx) as store:
        stored = service.set_forwarding(store, address, changes, timeout if timeout is not None else UNSET)
        subscriber = service.subscriber_address(address)
    typer.echo(f"forwarding of {subscriber}: {_describe(stored)}")


def _describe(stored) -> str:
    if stored is None or (not stored.targets and stored.no_answer_timeout is None):
        return "none"
    parts = [f"{c} -> {stored.targets[c]}" for c in Condition if c in stored.targets]
    if stored.no_answer_timeout is not None:
        parts.append(f"ring timeout {stored.no_answer_timeout}s")
    return ", ".join(parts)


@forward_app.command("show")
def forward_show(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN")) -> None:
    """Show a subscriber's forwarding preferences and where each goes."""
    with _store(ctx) as store:
        stored, prefs = service.find_forwarding(store, address)
        subscriber = service.subscriber_address(address)
    if stored is None:
        typer.echo(f"forwarding of {subscriber}: none")
        return
    table = Table("condition", "target", "goes to")
    for c in Condition:
        target = prefs.target(c)
        if target is not None:
            table.add_row(str(c), target.value, target.uri)
    if stored.no_answer_timeout is not None or prefs.no_answer:
        table.add_row("ring timeout", f"{prefs.no_answer_timeout}s", "")
    print_table(table)


@forward_app.command("clear")
def forward_clear(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN")) -> None:
    """Remove all of a subscriber's forwarding preferences."""
    with _store(ctx) as store:
        subscriber = service.clear_forwarding(store, address)
    typer.echo(f"cleared forwarding of {subscriber}")


@forward_app.command("list")
def forward_list(ctx: typer.Context) -> None:
    """List every subscriber with forwarding set."""
    with _store(ctx) as store:
        rows = service.list_forwarding(store)
    print_rows(("subscriber", "forwarding"),
               ((f"{row.username}@{row.domain}", _describe(row)) for row in rows))


@media_app.command("add")
def media_add(ctx: typer.Context, name: str, uri: str = typer.Argument(..., metavar="SIP-URI")) -> None:
    """Name a media destination, e.g. 'voicemail sip:vm@192.0.2.50:5070'."""
    with _store(ctx) as store:
        media = service.add_media(store, name, uri)
    typer.echo(f"added media destination {media.name} -> {media.uri}")


@media_app.command("del")
def media_del(ctx: typer.Context, name: str) -> None:
    """Delete a media destination (no forwarding may use it)."""
    with _store(ctx) as store:
        service.delete_media(store, name)
    typer.echo(f"deleted media destination {name}")


@media_app.command("list")
def media_list(ctx: typer.Context) -> None:
    """List media destinations."""
    with _store(ctx) as store:
        media = service.list_media(store)
    print_rows(("name", "uri"),
               ((m.name, m.uri) for m in media))
