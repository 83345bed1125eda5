"""The routing store: gateways, routes, dialplans, blacklists, trusted sources,
groups and call forwarding, in the provisioning database (OpenSIPS-like tables).

Opened, tuned and guarded by ``proxy.contract.sqldb.SqlStore`` like the
provisioning store, on the same URL.  Routing has its own change counter
(``routing_change_log``), bumped in the same transaction as every change, so a
``user add`` does not rebuild routing tables and a ``route add`` does not
rebuild subscribers; ``LiveRouting`` polls it and swaps in a new
``RoutingSnapshot``.

Every row is checked by the same pure constructors the snapshot uses
(``DialplanRule``, ``RouteRule``, ``Gateway``...), inside the write
transaction, so what the CLI accepts always loads, and a row broken by hand
is refused at load with the row named.  Every method raises only RoutingError.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from proxy.infra.sqldb import SqlStore, change_log_table, utcnow
from proxy.infra.sqldb import count_rows as _count
from proxy.provisioning.models import ProvisioningError, check_username, normalize_domain

from .common import RoutingError, check_name
from .dialplan import DialplanRule, Dialplans
from .drouting import (
    BlacklistEntry,
    Blacklists,
    Carrier,
    DRouting,
    Gateway,
    GatewayRef,
    ProbeMode,
    RouteRule,
    TimeWindow,
    format_gwlist,
    parse_gwlist,
)
from .forwarding import (
    DEFAULT_RING_TIMEOUT,
    Condition,
    ForwardingPrefs,
    MediaDestination,
    parse_target,
)
from .permissions import GroupRequirement, Groups, TrustedSource, TrustedSources, parse_network
from .snapshot import RoutingSnapshot

__all__ = ["RoutingStore", "RoutingSnapshot", "metadata", "StoredForwarding", "GroupMember"]

metadata = MetaData()

gateway_table = Table(
    "dr_gateway", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=True),
    Column("transport", String(8), nullable=False),
    Column("strip", Integer, nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("probe", String(16), nullable=False),
    Column("attrs", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

carrier_table = Table(
    "dr_carrier", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("gwlist", String(2000), nullable=False),          # "gw1=70,gw2=30" or "gw1,gw2"
    Column("attrs", String(255), nullable=False),
)

rule_table = Table(
    "dr_rule", metadata,
    Column("id", Integer, primary_key=True),
    Column("prefix", String(32), nullable=False, index=True),
    Column("groups", String(512), nullable=False),           # "default,vip"
    Column("priority", Integer, nullable=False),
    Column("time_from", Integer, nullable=True),              # minutes after local midnight
    Column("time_to", Integer, nullable=True),
    Column("weekdays", String(16), nullable=True),            # "1,2,3,4,5"
    Column("timezone", String(64), nullable=True),
    Column("gwlist", String(2000), nullable=False),          # "gw1,#carrier=30"
    Column("attrs", String(255), nullable=False),
)

dialplan_table = Table(
    "dialplan", metadata,
    Column("id", Integer, primary_key=True),
    Column("dpid", Integer, nullable=False, index=True),
    Column("pr", Integer, nullable=False),
    Column("match_exp", String(512), nullable=False),
    Column("subst_exp", String(512), nullable=True),
    Column("repl_exp", String(512), nullable=True),
    Column("attrs", String(255), nullable=False),
)

blacklist_table = Table(
    "blacklist", metadata,
    Column("id", Integer, primary_key=True),
    Column("list_name", String(64), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("exact", Boolean, nullable=False),
    Column("code", Integer, nullable=False),
    Column("reason", String(120), nullable=False),
    UniqueConstraint("list_name", "prefix", "exact", name="blacklist_entry"),
)

trusted_table = Table(
    "trusted_source", metadata,
    Column("id", Integer, primary_key=True),
    Column("cidr", String(64), nullable=False),
    Column("proto", String(8), nullable=False),              # "" = any
    Column("tag", String(255), nullable=False),
    UniqueConstraint("cidr", "proto", name="trusted_source_entry"),
)

group_table = Table(
    "user_group", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("grp", String(64), nullable=False),
    UniqueConstraint("username", "domain", "grp", name="user_group_member"),
)

group_requirement_table = Table(
    "group_requirement", metadata,
    Column("prefix", String(32), primary_key=True),
    Column("grp", String(64), nullable=False),
)

media_table = Table(
    "media_destination", metadata,
    Column("name", String(64), primary_key=True),
    Column("uri", String(255), nullable=False),
)

forwarding_table = Table(
    "call_forwarding", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("always", String(255), nullable=True),           # targets as provisioned
    Column("busy", String(255), nullable=True),
    Column("no_answer", String(255), nullable=True),
    Column("unavailable", String(255), nullable=True),
    Column("no_answer_timeout", Integer, nullable=True),     # NULL: the default
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("username", "domain", name="call_forwarding_user"),
)

routing_change_log_table = change_log_table(metadata, "routing_change_log")

_CONDITION_COLUMNS = {Condition.ALWAYS: "always", Condition.BUSY: "busy",
                      Condition.NO_ANSWER: "no_answer", Condition.UNAVAILABLE: "unavailable"}
UNSET = object()


@dataclass(frozen=True, slots=True)
class GroupMember:
    username: str
    domain: str
    group: str

    @property
    def address(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True, slots=True)
class StoredForwarding:
    """A subscriber's forwarding row as provisioned (targets as typed, normalised)."""
    username: str
    domain: str
    targets: dict[Condition, str]
    no_answer_timeout: int | None
    updated_at: datetime | None


class RoutingStore(SqlStore):
    """Routing data in the provisioning database.  Every method raises only RoutingError."""

    error = RoutingError
    what = "provisioning"
    change_log = routing_change_log_table
    metadata = metadata


    # -- gateways ------------------------------------------------------------------------------
    def add_gateway(self, gateway: Gateway) -> None:
        g = gateway
        with self._write() as conn:
            if _count(conn, gateway_table, gateway_table.c.name == g.name):
                raise RoutingError(f"gateway {g.name} already exists")
            conn.execute(insert(gateway_table).values(
                name=g.name, host=g.host, port=g.port, transport=g.transport, strip=g.strip,
                prefix=g.prefix, probe=g.probe.value, attrs=g.attrs, created_at=utcnow()))

    def del_gateway(self, name: str) -> None:
        """Refused while a carrier or a route uses it (its calls would silently go nowhere)."""
        with self._write() as conn:
            if not _count(conn, gateway_table, gateway_table.c.name == name):
                raise RoutingError(f"gateway {name} does not exist")
            users = [f"carrier {c.name}" for c in _load_carriers(conn)
                     if any(r.name == name for r in c.gateways)]
            users += [r.label for r in _load_rules(conn)
                      if any(not ref.carrier and ref.name == name for ref in r.gateways)]
            if users:
                raise RoutingError(f"gateway {name} is used by {', '.join(users)}; change those first")
            conn.execute(delete(gateway_table).where(gateway_table.c.name == name))

    def update_gateway(self, gateway: Gateway) -> None:
        """Replace the gateway of that name (carriers and routes keep using it by name)."""
        g = gateway
        with self._write() as conn:
            gone = conn.execute(update(gateway_table).where(gateway_table.c.name == g.name).values(
                host=g.host, port=g.port, transport=g.transport, strip=g.strip, prefix=g.prefix,
                probe=g.probe.value, attrs=g.attrs))
            if not gone.rowcount:
                raise RoutingError(f"gateway {g.name} does not exist")

    def list_gateways(self) -> list[Gateway]:
        with self._read() as conn:
            return _load_gateways(conn)

    # -- carriers ------------------------------------------------------------------------------
    def add_carrier(self, carrier: Carrier) -> None:
        with self._write() as conn:
            if _count(conn, carrier_table, carrier_table.c.name == carrier.name):
                raise RoutingError(f"carrier {carrier.name} already exists")
            _require_targets(conn, carrier.gateways, f"carrier {carrier.name}")
            conn.execute(insert(carrier_table).values(
                name=carrier.name, gwlist=format_gwlist(carrier.gateways), attrs=carrier.attrs))

    def del_carrier(self, name: str) -> None:
        with self._write() as conn:
            if not _count(conn, carrier_table, carrier_table.c.name == name):
                raise RoutingError(f"carrier {name} does not exist")
            users = [r.label for r in _load_rules(conn)
                     if any(ref.carrier and ref.name == name for ref in r.gateways)]
            if users:
                raise RoutingError(f"carrier {name} is used by {', '.join(users)}; change those first")
            conn.execute(delete(carrier_table).where(carrier_table.c.name == name))

    def update_carrier(self, carrier: Carrier) -> None:
        with self._write() as conn:
            if not _count(conn, carrier_table, carrier_table.c.name == carrier.name):
                raise RoutingError(f"carrier {carrier.name} does not exist")
            _require_targets(conn, carrier.gateways, f"carrier {carrier.name}")
            conn.execute(update(carrier_table).where(carrier_table.c.name == carrier.name).values(
                gwlist=format_gwlist(carrier.gateways), attrs=carrier.attrs))

    def list_carriers(self) -> list[Carrier]:
        with self._read() as conn:
            return _load_carriers(conn)

    # -- routing rules ---------------------------------------------------------------------------
    def add_rule(self, rule: RouteRule) -> int:
        """Store a route (its ``id`` is ignored); returns the new id."""
        with self._write() as conn:
            _require_targets(conn, rule.gateways, "route")
            return _inserted_id(conn.execute(insert(rule_table).values(**_rule_values(rule))))

    def update_rule(self, rule_id: int, rule: RouteRule) -> None:
        """Replace route ``rule_id`` with ``rule`` (its ``id`` is ignored)."""
        with self._write() as conn:
            if not _count(conn, rule_table, rule_table.c.id == rule_id):
                raise RoutingError(f"route #{rule_id} does not exist")
            _require_targets(conn, rule.gateways, f"route #{rule_id}")
            conn.execute(update(rule_table).where(rule_table.c.id == rule_id).values(**_rule_values(rule)))

    def del_rule(self, rule_id: int) -> None:
        with self._write() as conn:
            gone = conn.execute(delete(rule_table).where(rule_table.c.id == rule_id))
            if not gone.rowcount:
                raise RoutingError(f"route #{rule_id} does not exist")

    def list_rules(self) -> list[RouteRule]:
        with self._read() as conn:
            return _load_rules(conn)

    def drouting(self) -> DRouting:
        """Gateways, carriers and routes only (``route test``)."""
        with self._read() as conn:
            return _load_drouting(conn)

    # -- dialplan --------------------------------------------------------------------------------
    def add_dialplan_rule(self, rule: DialplanRule) -> int:
        """Store a rule (already compiled, so checked); returns its id."""
        with self._write() as conn:
            result = conn.execute(insert(dialplan_table).values(
                dpid=rule.dpid, pr=rule.priority, match_exp=rule.match, subst_exp=rule.subst,
                repl_exp=rule.repl, attrs=rule.attrs))
            return _inserted_id(result)

    def update_dialplan_rule(self, rule_id: int, rule: DialplanRule) -> None:
        """Replace rule ``rule_id`` (its dialplan included) with ``rule``."""
        with self._write() as conn:
            gone = conn.execute(update(dialplan_table).where(dialplan_table.c.id == rule_id).values(
                dpid=rule.dpid, pr=rule.priority, match_exp=rule.match, subst_exp=rule.subst,
                repl_exp=rule.repl, attrs=rule.attrs))
            if not gone.rowcount:
                raise RoutingError(f"dialplan rule #{rule_id} does not exist")

    def del_dialplan_rule(self, rule_id: int) -> DialplanRule:
        with self._write() as conn:
            rows = _dialplan_rows(conn, dialplan_table.c.id == rule_id)
            if not rows:
                raise RoutingError(f"dialplan rule #{rule_id} does not exist")
            conn.execute(delete(dialplan_table).where(dialplan_table.c.id == rule_id))
            return rows[0]

    def list_dialplan(self, dpid: int | None = None) -> list[DialplanRule]:
        with self._read() as conn:
            where = dialplan_table.c.dpid == dpid if dpid is not None else None
            return _dialplan_rows(conn, where)

    def dialplans(self) -> Dialplans:
        with self._read() as conn:
            return Dialplans(_dialplan_rows(conn))

    # -- blacklists ---------------------------------------------------------------------------------
    def add_blacklist(self, entry: BlacklistEntry) -> None:
        b = blacklist_table
        with self._write() as conn:
            if _count(conn, b, (b.c.list_name == entry.list) & (b.c.prefix == entry.prefix)
                      & (b.c.exact == entry.exact)):
                raise RoutingError(f"{_entry_text(entry)} is already in blacklist {entry.list}")
            conn.execute(insert(b).values(list_name=entry.list, prefix=entry.prefix, exact=entry.exact,
                                          code=entry.code, reason=entry.reason))

    def del_blacklist(self, list_name: str, prefix: str, exact: bool = False) -> None:
        b = blacklist_table
        with self._write() as conn:
            gone = conn.execute(delete(b).where((b.c.list_name == list_name) & (b.c.prefix == prefix)
                                                & (b.c.exact == exact)))
            if not gone.rowcount:
                what = f"number {prefix}" if exact else f"prefix {prefix!r}"
                raise RoutingError(f"{what} is not in blacklist {list_name}")

    def list_blacklist(self, list_name: str | None = None) -> list[BlacklistEntry]:
        with self._read() as conn:
            entries = _load_blacklist(conn)
        return [e for e in entries if list_name is None or e.list == list_name]

    # -- trusted sources ----------------------------------------------------------------------------
    def add_trusted(self, source: TrustedSource) -> None:
        t = trusted_table
        proto = source.proto or ""
        with self._write() as conn:
            if _count(conn, t, (t.c.cidr == source.cidr) & (t.c.proto == proto)):
                raise RoutingError(f"{source.cidr} ({proto or 'any'}) is already trusted")
            conn.execute(insert(t).values(cidr=source.cidr, proto=proto, tag=source.tag))

    def del_trusted(self, cidr: str, proto: str | None = None) -> None:
        t = trusted_table
        parsed = parse_network(cidr)
        network = str(parsed)
        proto = TrustedSource(parsed, proto).proto or ""
        with self._write() as conn:
            gone = conn.execute(delete(t).where((t.c.cidr == network) & (t.c.proto == proto)))
            if not gone.rowcount:
                raise RoutingError(f"{network} ({proto or 'any'}) is not trusted")

    def list_trusted(self) -> list[TrustedSource]:
        with self._read() as conn:
            return _load_trusted(conn)

    # -- groups -----------------------------------------------------------------------------------------
    def add_to_group(self, user: str, domain: str, group: str) -> None:
        (user, domain), group = _subscriber(user, domain), check_name(group, "group")
        g = group_table
        with self._write() as conn:
            if _count(conn, g, (g.c.username == user) & (g.c.domain == domain) & (g.c.grp == group)):
                raise RoutingError(f"{user}@{domain} is already in group {group}")
            conn.execute(insert(g).values(username=user, domain=domain, grp=group))

    def remove_from_group(self, user: str, domain: str, group: str) -> None:
        g = group_table
        user, domain = _subscriber(user, domain)
        with self._write() as conn:
            gone = conn.execute(delete(g).where((g.c.username == user) & (g.c.domain == domain)
                                                & (g.c.grp == group)))
            if not gone.rowcount:
                raise RoutingError(f"{user}@{domain} is not in group {group}")

    def list_group_members(self, group: str | None = None) -> list[GroupMember]:
        g = group_table
        query = select(g.c.username, g.c.domain, g.c.grp).order_by(g.c.grp, g.c.domain, g.c.username)
        if group is not None:
            query = query.where(g.c.grp == group)
        with self._read() as conn:
            return [GroupMember(*row) for row in conn.execute(query)]

    def require_group(self, prefix: str, group: str) -> str | None:
        """Destinations starting with ``prefix`` need ``group``; returns the group
        the prefix required before, if any (it is replaced)."""
        req = GroupRequirement(prefix, group)
        r = group_requirement_table
        with self._write() as conn:
            before = conn.execute(select(r.c.grp).where(r.c.prefix == req.prefix)).scalar()
            if before is None:
                conn.execute(insert(r).values(prefix=req.prefix, grp=req.group))
            else:
                conn.execute(update(r).where(r.c.prefix == req.prefix).values(grp=req.group))
            return before

    def unrequire_group(self, prefix: str) -> None:
        r = group_requirement_table
        with self._write() as conn:
            gone = conn.execute(delete(r).where(r.c.prefix == prefix))
            if not gone.rowcount:
                raise RoutingError(f"prefix {prefix!r} requires no group")

    def list_group_requirements(self) -> list[GroupRequirement]:
        with self._read() as conn:
            return _load_requirements(conn)

    # -- media destinations and forwarding ---------------------------------------------------------
    def add_media(self, media: MediaDestination) -> None:
        with self._write() as conn:
            if _count(conn, media_table, media_table.c.name == media.name):
                raise RoutingError(f"media destination {media.name} already exists")
            conn.execute(insert(media_table).values(name=media.name, uri=media.uri))

    def del_media(self, name: str) -> None:
        """Refused while a forwarding preference points at it."""
        f = forwarding_table
        with self._write() as conn:
            if not _count(conn, media_table, media_table.c.name == name):
                raise RoutingError(f"media destination {name} does not exist")
            users = [f"{row.username}@{row.domain}" for row in conn.execute(select(f))
                     if name in (row.always, row.busy, row.no_answer, row.unavailable)]
            if users:
                shown = ", ".join(users[:5]) + (" ..." if len(users) > 5 else "")
                raise RoutingError(f"media destination {name} is a forwarding target of {shown}; "
                                   "change those first")
            conn.execute(delete(media_table).where(media_table.c.name == name))

    def list_media(self) -> list[MediaDestination]:
        with self._read() as conn:
            return list(_load_media(conn).values())

    def set_forwarding(self, user: str, domain: str, targets: dict[Condition | str, str | None],
                       no_answer_timeout: int | None | object = UNSET) -> StoredForwarding:
        """Change some preferences of ``user@domain`` (a target of None removes
        that condition; conditions not named are kept); returns the result."""
        user, domain = _subscriber(user, domain)
        changes = {Condition(k): v for k, v in targets.items()}
        f = forwarding_table
        with self._write() as conn:
            media = {name: m.uri for name, m in _load_media(conn).items()}
            values: dict[str, Any] = {}
            for condition, text in changes.items():
                value = None
                if text is not None:
                    try:
                        value = parse_target(text, domain, media).value
                    except RoutingError as exc:
                        raise RoutingError(f"{condition}: {exc}") from None
                values[_CONDITION_COLUMNS[condition]] = value
            if no_answer_timeout is not UNSET:
                if no_answer_timeout is not None:
                    ForwardingPrefs(no_answer_timeout=cast(int, no_answer_timeout))   # checks type and range
                values["no_answer_timeout"] = no_answer_timeout
            where = (f.c.username == user) & (f.c.domain == domain)
            if conn.execute(select(f.c.id).where(where)).first() is None:
                conn.execute(insert(f).values(username=user, domain=domain, updated_at=utcnow(), **values))
            else:
                conn.execute(update(f).where(where).values(updated_at=utcnow(), **values))
            row = conn.execute(select(f).where(where)).one()
            if not any(getattr(row, col) for col in _CONDITION_COLUMNS.values()) and row.no_answer_timeout is None:
                conn.execute(delete(f).where(where))                 # nothing left to keep
            return _stored_forwarding(row)

    def clear_forwarding(self, user: str, domain: str) -> None:
        f = forwarding_table
        user, domain = _subscriber(user, domain)
        with self._write() as conn:
            gone = conn.execute(delete(f).where((f.c.username == user) & (f.c.domain == domain)))
            if not gone.rowcount:
                raise RoutingError(f"{user}@{domain} has no forwarding set")

    def get_forwarding(self, user: str, domain: str) -> StoredForwarding | None:
        f = forwarding_table
        user, domain = _subscriber(user, domain)
        with self._read() as conn:
            row = conn.execute(select(f).where((f.c.username == user) & (f.c.domain == domain))).first()
        return _stored_forwarding(row) if row is not None else None

    def list_forwarding(self) -> list[StoredForwarding]:
        f = forwarding_table
        with self._read() as conn:
            rows = conn.execute(select(f).order_by(f.c.domain, f.c.username)).all()
        return [_stored_forwarding(r) for r in rows]

    # -- the proxy's view ----------------------------------------------------------------------------
    def snapshot(self) -> RoutingSnapshot:
        """Everything the routing script needs, read in one transaction."""
        with self._read() as conn:
            version = self._version_in(conn)
            media = _load_media(conn)
            members = [(r.username, r.domain, r.grp) for r in
                       conn.execute(select(group_table.c.username, group_table.c.domain, group_table.c.grp))]
            return RoutingSnapshot(
                version=version,
                drouting=_load_drouting(conn),
                dialplans=Dialplans(_dialplan_rows(conn)),
                blacklists=Blacklists(_load_blacklist(conn)),
                trusted=TrustedSources(_load_trusted(conn)),
                groups=Groups(members, _load_requirements(conn)),
                forwardings=_load_forwardings(conn, {n: m.uri for n, m in media.items()}),
                media=media,
            )


# -- loading (each row through its pure constructor) -------------------------------------------

def _load_gateways(conn: Connection) -> list[Gateway]:
    t = gateway_table
    return [Gateway(r.name, r.host, r.port, r.transport, r.strip, r.prefix, ProbeMode.parse(r.probe), r.attrs)
            for r in conn.execute(select(t).order_by(t.c.name))]


def _load_carriers(conn: Connection) -> list[Carrier]:
    t = carrier_table
    out = []
    for r in conn.execute(select(t).order_by(t.c.name)):
        out.append(Carrier(r.name, parse_gwlist(r.gwlist, carriers=False, what=f"carrier {r.name}"), r.attrs))
    return out


def _load_rules(conn: Connection) -> list[RouteRule]:
    t = rule_table
    out = []
    for r in conn.execute(select(t).order_by(t.c.id)):
        label = f"route #{r.id}"
        window = None
        if r.time_from is not None or r.weekdays:
            days = frozenset(int(d) for d in r.weekdays.split(",")) if r.weekdays else frozenset()
            try:
                window = TimeWindow(r.time_from if r.time_from is not None else 0,
                                    r.time_to if r.time_to is not None else 24 * 60, days, r.timezone or "UTC")
            except RoutingError as exc:
                raise RoutingError(f"{label}: {exc}") from None
        out.append(RouteRule(r.prefix, parse_gwlist(r.gwlist, what=label), frozenset(r.groups.split(",")),
                             r.priority, window, r.attrs, r.id))
    return out


def _load_drouting(conn: Connection) -> DRouting:
    return DRouting(_load_gateways(conn), _load_carriers(conn), _load_rules(conn))


def _dialplan_rows(conn: Connection, where=None) -> list[DialplanRule]:
    t = dialplan_table
    query = select(t).order_by(t.c.dpid, t.c.pr, t.c.id)
    if where is not None:
        query = query.where(where)
    return [DialplanRule(r.dpid, r.match_exp, r.subst_exp, r.repl_exp, r.pr, r.attrs, r.id)
            for r in conn.execute(query)]


def _load_blacklist(conn: Connection) -> list[BlacklistEntry]:
    t = blacklist_table
    return [BlacklistEntry(r.list_name, r.prefix, bool(r.exact), r.code, r.reason)
            for r in conn.execute(select(t).order_by(t.c.list_name, t.c.prefix))]


def _load_trusted(conn: Connection) -> list[TrustedSource]:
    t = trusted_table
    return [TrustedSource(parse_network(r.cidr), r.proto or None, r.tag)
            for r in conn.execute(select(t).order_by(t.c.id))]


def _load_requirements(conn: Connection) -> list[GroupRequirement]:
    t = group_requirement_table
    return [GroupRequirement(r.prefix, r.grp) for r in conn.execute(select(t).order_by(t.c.prefix))]


def _load_media(conn: Connection) -> dict[str, MediaDestination]:
    t = media_table
    return {r.name: MediaDestination(r.name, r.uri) for r in conn.execute(select(t).order_by(t.c.name))}


def _load_forwardings(conn: Connection, media: dict[str, str]) -> dict[tuple[str, str], ForwardingPrefs]:
    out = {}
    for row in conn.execute(select(forwarding_table)):
        stored = _stored_forwarding(row)
        targets = {}
        for condition, text in stored.targets.items():
            try:
                targets[condition] = parse_target(text, stored.domain, media)
            except RoutingError as exc:
                raise RoutingError(f"forwarding of {stored.username}@{stored.domain} ({condition}): {exc}") from None
        timeout = stored.no_answer_timeout if stored.no_answer_timeout is not None else DEFAULT_RING_TIMEOUT
        out[(stored.username, stored.domain)] = ForwardingPrefs(
            stored.username, stored.domain, targets, timeout, stored.no_answer_timeout is not None)
    return out


def _stored_forwarding(row) -> StoredForwarding:
    targets = {c: getattr(row, col) for c, col in _CONDITION_COLUMNS.items() if getattr(row, col)}
    return StoredForwarding(row.username, row.domain, targets, row.no_answer_timeout, row.updated_at)


def _subscriber(user: str, domain: str) -> tuple[str, str]:
    try:
        return check_username(user), normalize_domain(domain)
    except ProvisioningError as exc:
        raise RoutingError(str(exc)) from None


def _require_targets(conn: Connection, refs: tuple[GatewayRef, ...], what: str) -> None:
    gateways = set(conn.execute(select(gateway_table.c.name)).scalars())
    carriers = set(conn.execute(select(carrier_table.c.name)).scalars())
    for ref in refs:
        if ref.carrier and ref.name not in carriers:
            raise RoutingError(f"{what}: carrier {ref.name} does not exist; add it with 'carrier add'")
        if not ref.carrier and ref.name not in gateways:
            raise RoutingError(f"{what}: gateway {ref.name} does not exist; add it with 'gateway add'")


def _rule_values(rule: RouteRule) -> dict[str, Any]:
    w = rule.window
    return dict(prefix=rule.prefix, groups=",".join(sorted(rule.groups)), priority=rule.priority,
                time_from=w.start if w else None, time_to=w.end if w else None,
                weekdays=",".join(str(d) for d in sorted(w.weekdays)) if w and w.weekdays else None,
                timezone=w.tz if w else None, gwlist=format_gwlist(rule.gateways), attrs=rule.attrs)


def _entry_text(entry: BlacklistEntry) -> str:
    return f"number {entry.prefix}" if entry.exact else f"prefix {entry.prefix!r}"


def _inserted_id(result: Any) -> int:
    """The primary key of the row an INSERT just added."""
    key = result.inserted_primary_key
    if key is None:                      # only for executemany, which the stores never use
        raise RoutingError("the database returned no id for the new row")
    return int(key[0])
