"""Operator commands for the routing data: gateway, carrier, route, dialplan,
blacklist, trusted, group and forward sub-apps.

Mounted by the main CLI like the provisioning ones (``ctx.obj.provisioning_url``:
the routing tables live in the provisioning database) and built on the same
helpers: each command opens the store, creates missing tables, does one thing
and prints one line; errors go to stderr as one line with exit status 1.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer
from rich.table import Table

from proxy.infra import clock
from proxy.infra.cli import fail, print_rows, print_table
from proxy.provisioning.cli import address_arg, open_store

from .common import RoutingError
from .dialplan import DialplanRule
from .drouting import (
    DEFAULT_GROUP,
    FILTERED_CODE,
    FILTERED_REASON,
    BlacklistEntry,
    Carrier,
    Gateway,
    RouteRule,
    format_gwlist,
    parse_address,
    parse_gwlist,
    parse_time_window,
)
from .forwarding import Condition, MediaDestination
from .permissions import TrustedSource, parse_network
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
    return open_store(ctx, RoutingStore)


def _checked(make, *args, **kwargs):
    """Build a value with a pure constructor; its RoutingError ends the command."""
    try:
        return make(*args, **kwargs)
    except RoutingError as exc:
        fail(str(exc))


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
    host, port = _checked(parse_address, address)
    gateway = _checked(Gateway, name, host, port, transport, strip, prefix, probe, attrs)
    with _store(ctx) as store:
        store.add_gateway(gateway)
    typer.echo(f"added gateway {gateway.name} at {gateway.uri()}")


@gateway_app.command("del")
def gateway_del(ctx: typer.Context, name: str) -> None:
    """Delete a gateway (no carrier or route may use it)."""
    with _store(ctx) as store:
        store.del_gateway(name)
    typer.echo(f"deleted gateway {name}")


@gateway_app.command("list")
def gateway_list(ctx: typer.Context) -> None:
    """List gateways."""
    with _store(ctx) as store:
        gateways = store.list_gateways()
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
    refs = _checked(parse_gwlist, gateways, weights, carriers=False, what=f"carrier {name}")
    carrier = _checked(Carrier, name, refs, attrs)
    with _store(ctx) as store:
        store.add_carrier(carrier)
    typer.echo(f"added carrier {carrier.name}: {format_gwlist(carrier.gateways)}")


@carrier_app.command("del")
def carrier_del(ctx: typer.Context, name: str) -> None:
    """Delete a carrier (no route may use it)."""
    with _store(ctx) as store:
        store.del_carrier(name)
    typer.echo(f"deleted carrier {name}")


@carrier_app.command("list")
def carrier_list(ctx: typer.Context) -> None:
    """List carriers."""
    with _store(ctx) as store:
        carriers = store.list_carriers()
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
    refs = _checked(parse_gwlist, gateways, weights)
    window = _checked(parse_time_window, time_window, weekdays, tz)
    groups = frozenset(g.strip() for g in group.split(","))
    rule = _checked(RouteRule, prefix, refs, groups, priority, window, attrs)
    with _store(ctx) as store:
        rule_id = store.add_rule(rule)
    when = f", {window}" if window else ""
    typer.echo(f"added route #{rule_id}: prefix {prefix!r} -> {format_gwlist(refs)} "
               f"(group {','.join(sorted(groups))}, priority {priority}{when})")


@route_app.command("del")
def route_del(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Delete a route by its id (see 'route list')."""
    with _store(ctx) as store:
        store.del_rule(rule_id)
    typer.echo(f"deleted route #{rule_id}")


@route_app.command("list")
def route_list(ctx: typer.Context) -> None:
    """List routes."""
    with _store(ctx) as store:
        rules = store.list_rules()
    print_rows(("id", "prefix", "group", "priority", "when", "gateways", "attrs"),
               ((str(r.id), r.prefix, ",".join(sorted(r.groups)), str(r.priority), str(r.window) if r.window else "always", format_gwlist(r.gateways), r.attrs) for r in sorted(rules, key=lambda r: (r.prefix, -r.priority, r.id))))


@route_app.command("test")
def route_test(
    ctx: typer.Context,
    number: str,
    group: str = typer.Option(DEFAULT_GROUP, "--group"),
    at: Optional[str] = typer.Option(None, "--at", metavar="ISO-TIME", help="Instead of now."),
    call_id: str = typer.Option("", "--call-id", help="Seed of weighted orders."),
) -> None:
    """Show the gateways a call to NUMBER would try, in order (all counted as up)."""
    when = _instant(at)
    with _store(ctx) as store:
        routes = store.drouting().select(number, group, when, call_id)
    if not routes:
        fail(f"no route for {number} (group {group})")
    for i, route in enumerate(routes, 1):
        via = f" via #{route.carrier}" if route.carrier else ""
        typer.echo(f"{i}. {route.gateway.name} {route.uri} (route #{route.rule.id}{via})")


def _instant(text: str | None) -> datetime:
    if not text:
        return clock.utcnow()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"invalid time {text[:40]!r} (ISO 8601, e.g. 2025-01-31T09:30+01:00)")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


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
    rule = _checked(DialplanRule, dpid, match, subst or None, repl, priority, attrs)
    with _store(ctx) as store:
        rule_id = store.add_dialplan_rule(rule)
    typer.echo(f"added dialplan {dpid} rule #{rule_id}")


@dialplan_app.command("del")
def dialplan_del(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="RULE-ID")) -> None:
    """Delete a dialplan rule by its id (see 'dialplan list')."""
    with _store(ctx) as store:
        rule = store.del_dialplan_rule(rule_id)
    typer.echo(f"deleted dialplan {rule.dpid} rule #{rule_id}")


@dialplan_app.command("list")
def dialplan_list(ctx: typer.Context, dpid: Optional[int] = typer.Argument(None, metavar="[ID]")) -> None:
    """List dialplan rules in the order they are tried."""
    with _store(ctx) as store:
        rules = store.list_dialplan(dpid)
    print_rows(("dialplan", "rule", "priority", "match", "subst", "repl", "attrs"),
               ((str(r.dpid), f"#{r.id}", str(r.priority), r.match, r.subst or "", r.repl if r.repl is not None else "", r.attrs) for r in rules))


@dialplan_app.command("test")
def dialplan_test(ctx: typer.Context, dpid: int = typer.Argument(..., metavar="ID"), value: str = typer.Argument(
        ..., metavar="NUMBER")) -> None:
    """Rewrite NUMBER with dialplan ID, as the proxy would."""
    with _store(ctx) as store:
        result = store.dialplans().translate(dpid, value)
    if result is None:
        fail(f"no rule of dialplan {dpid} matches {value!r}")
    new, rule = result
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
    entry = _checked(BlacklistEntry, list_name, prefix, exact, code, reason)
    with _store(ctx) as store:
        store.add_blacklist(entry)
    what = "number" if exact else "prefix"
    typer.echo(f"added {what} {prefix!r} to blacklist {list_name} ({code} {reason})")


@blacklist_app.command("del")
def blacklist_del(ctx: typer.Context, list_name: str = typer.Argument(..., metavar="LIST"),
                  prefix: str = typer.Argument(..., metavar="PREFIX"),
                  exact: bool = typer.Option(False, "--exact")) -> None:
    """Remove an entry from a blacklist."""
    with _store(ctx) as store:
        store.del_blacklist(list_name, prefix, exact)
    typer.echo(f"deleted {prefix!r} from blacklist {list_name}")


@blacklist_app.command("list")
def blacklist_list(ctx: typer.Context, list_name: Optional[str] = typer.Argument(None, metavar="[LIST]")) -> None:
    """List blacklist entries."""
    with _store(ctx) as store:
        entries = store.list_blacklist(list_name)
    print_rows(("list", "prefix", "match", "answer"),
               ((e.list, e.prefix, "exact" if e.exact else "prefix", f"{e.code} {e.reason}") for e in entries))


@blacklist_app.command("test")
def blacklist_test(ctx: typer.Context, list_name: str = typer.Argument(..., metavar="LIST"),
                   number: str = typer.Argument(..., metavar="NUMBER")) -> None:
    """Is NUMBER blacklisted in LIST?  Exit status 0 if so, 1 if not."""
    with _store(ctx) as store:
        entry = store.snapshot().blacklisted(list_name, number)
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
    network = _checked(parse_network, cidr)
    source = _checked(TrustedSource, network, proto, tag)
    with _store(ctx) as store:
        store.add_trusted(source)
    typer.echo(f"trusted {source.cidr} ({source.proto or 'any'})")


@trusted_app.command("del")
def trusted_del(ctx: typer.Context, cidr: str = typer.Argument(..., metavar="ADDRESS[/BITS]"),
                proto: Optional[str] = typer.Option(None, "--proto")) -> None:
    """Stop trusting an address or subnet."""
    network = _checked(parse_network, cidr)
    with _store(ctx) as store:
        store.del_trusted(str(network), proto)
    typer.echo(f"no longer trusted: {network} ({proto or 'any'})")


@trusted_app.command("list")
def trusted_list(ctx: typer.Context) -> None:
    """List trusted sources."""
    with _store(ctx) as store:
        sources = store.list_trusted()
    print_rows(("source", "protocol", "tag"),
               ((s.cidr, s.proto or "any", s.tag) for s in sources))


# -- group ---------------------------------------------------------------------------------------

@group_app.command("add")
def group_add(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN"),
              group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Put a subscriber in a group."""
    user, domain = address_arg(address)
    with _store(ctx) as store:
        store.add_to_group(user, domain, group)
    typer.echo(f"added {user}@{domain} to group {group}")


@group_app.command("del")
def group_del(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN"),
              group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Take a subscriber out of a group."""
    user, domain = address_arg(address)
    with _store(ctx) as store:
        store.remove_from_group(user, domain, group)
    typer.echo(f"removed {user}@{domain} from group {group}")


@group_app.command("list")
def group_list(ctx: typer.Context, group: Optional[str] = typer.Argument(None, metavar="[GROUP]")) -> None:
    """List group members and the destinations that require a group."""
    with _store(ctx) as store:
        members = store.list_group_members(group)
        required = store.list_group_requirements()
    print_rows(("group", "member"),
               ((m.group, m.address) for m in members))
    table = Table("destination prefix", "requires group")
    for r in required:
        if group is None or r.group == group:
            table.add_row(r.prefix, r.group)
    print_table(table)


@group_app.command("require")
def group_require(ctx: typer.Context, prefix: str = typer.Argument(..., metavar="PREFIX"),
                  group: str = typer.Argument(..., metavar="GROUP")) -> None:
    """Only members of GROUP may call numbers starting with PREFIX (longest prefix decides)."""
    with _store(ctx) as store:
        before = store.require_group(prefix, group)
    was = f" (was {before})" if before and before != group else ""
    typer.echo(f"prefix {prefix!r} requires group {group}{was}")


@group_app.command("unrequire")
def group_unrequire(ctx: typer.Context, prefix: str = typer.Argument(..., metavar="PREFIX")) -> None:
    """Drop the group requirement of a prefix."""
    with _store(ctx) as store:
        store.unrequire_group(prefix)
    typer.echo(f"prefix {prefix!r} requires no group")


# -- forward ---------------------------------------------------------------------------------------

_TARGET_HELP = "sip: URI, user@domain, a number (via the gateways) or a media destination; 'none' clears."


def _target(value: Optional[str]) -> Optional[str] | object:
    if value is None:
        return UNSET
    return None if value.strip().lower() in ("", "none", "-") else value


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
    user, domain = address_arg(address)
    changes = {c: v for c, v in ((Condition.ALWAYS, _target(always)), (Condition.BUSY, _target(busy)),
                                 (Condition.NO_ANSWER, _target(no_answer)),
                                 (Condition.UNAVAILABLE, _target(unavailable))) if v is not UNSET}
    if not changes and timeout is None:
        fail("nothing to set: give --always, --busy, --no-answer, --unavailable or --timeout")
    with _store(ctx) as store:
        stored = store.set_forwarding(user, domain, changes,
                                      timeout if timeout is not None else UNSET)
    typer.echo(f"forwarding of {user}@{domain}: {_describe(stored)}")


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
    user, domain = address_arg(address)
    with _store(ctx) as store:
        stored = store.get_forwarding(user, domain)
        prefs = store.snapshot().forwarding(user, domain)
    if stored is None:
        typer.echo(f"forwarding of {user}@{domain}: none")
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
    user, domain = address_arg(address)
    with _store(ctx) as store:
        store.clear_forwarding(user, domain)
    typer.echo(f"cleared forwarding of {user}@{domain}")


@forward_app.command("list")
def forward_list(ctx: typer.Context) -> None:
    """List every subscriber with forwarding set."""
    with _store(ctx) as store:
        rows = store.list_forwarding()
    print_rows(("subscriber", "forwarding"),
               ((f"{row.username}@{row.domain}", _describe(row)) for row in rows))


@media_app.command("add")
def media_add(ctx: typer.Context, name: str, uri: str = typer.Argument(..., metavar="SIP-URI")) -> None:
    """Name a media destination, e.g. 'voicemail sip:vm@192.0.2.50:5070'."""
    media = _checked(MediaDestination, name, uri)
    with _store(ctx) as store:
        store.add_media(media)
    typer.echo(f"added media destination {media.name} -> {media.uri}")


@media_app.command("del")
def media_del(ctx: typer.Context, name: str) -> None:
    """Delete a media destination (no forwarding may use it)."""
    with _store(ctx) as store:
        store.del_media(name)
    typer.echo(f"deleted media destination {name}")


@media_app.command("list")
def media_list(ctx: typer.Context) -> None:
    """List media destinations."""
    with _store(ctx) as store:
        media = store.list_media()
    print_rows(("name", "uri"),
               ((m.name, m.uri) for m in media))
