"""Request bodies and response models of the provisioning routes (``/v1/users`` ...
``/v1/tokens``, docs/api.md "Provisioning"), and how each is filled from the
service layer's values.

Why apart from api/schemas.py: 13 resources with a body and a reply each
would double that module, and these models change with the provisioning
rules, not with CDRs or billing.  Every string is bounded (names 64, domains
255, addresses 330, expressions 512, attributes 255, passwords 128); a
longer one is a 422 before any rule runs.  What the rules refuse is a 400 /
404 / 409 whose ``detail`` is the CLI's own line.  Passwords and hashes are
accepted, never returned.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from proxy.provisioning.models import AliasEntry, UserEntry
from proxy.routing.dialplan import DialplanRule
from proxy.routing.drouting import (
    DEFAULT_GROUP,
    FILTERED_CODE,
    FILTERED_REASON,
    BlacklistEntry,
    Carrier,
    Gateway,
    RouteRule,
)
from proxy.routing.drouting import Route as RouteStep
from proxy.routing.forwarding import Condition, ForwardingPrefs, MediaDestination
from proxy.routing.permissions import GroupRequirement, TrustedSource
from proxy.routing.store import GroupMember, StoredForwarding

from .tokens import TokenInfo

T = TypeVar("T")

Name = Field(min_length=1, max_length=64)
Address = Field(min_length=3, max_length=330, description="user@domain")
Prefix = Field(max_length=32, description="digits, letters, '+', '*', '#'; '' = any")
Attrs = Field("", max_length=255, description="free attributes for the routing script")
Expr = Field(min_length=1, max_length=512)


class _In(BaseModel):
    """Bodies refuse keys they do not know: a misspelt field must not be ignored."""
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items[offset:offset+limit]`` of ``total``."""
    items: list[T]
    total: int
    limit: int
    offset: int


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with its offset (SQLite hands back naive UTC times)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


# -- subscribers, domains, aliases ----------------------------------------------------------------

class UserIn(_In):
    address: str = Address
    password: str | None = Field(None, min_length=1, max_length=128, description="the SIP password")
    ha1_only: bool = Field(False, description="store only the HA1 hashes (MD5, SHA-256), not the password")
    ha1: str | None = Field(None, max_length=64, description="import an existing MD5 HA1 instead of a password")


class UserPatch(_In):
    password: str = Field(min_length=1, max_length=128)
    ha1_only: bool | None = Field(None, description="true: from now on only hashes; null: keep the choice")


class User(BaseModel):
    address: str
    user: str
    domain: str
    storage: Literal["plaintext", "ha1", "ha1-md5"]
    created_at: str | None

    @classmethod
    def of(cls, e: UserEntry) -> User:
        return cls(address=e.address, user=e.username, domain=e.domain, storage=e.storage,  # type: ignore[arg-type]
                   created_at=_iso(e.created_at))


class UserDeleted(BaseModel):
    address: str
    aliases_deleted: int


class DomainIn(_In):
    domain: str = Field(min_length=1, max_length=255)


class Domain(BaseModel):
    domain: str


class AliasIn(_In):
    alias: str = Address
    target: str = Address


class Alias(BaseModel):
    alias: str
    target: str

    @classmethod
    def of(cls, e: AliasEntry) -> Alias:
        return cls(alias=e.alias, target=e.target)


# -- gateways, carriers, routes -------------------------------------------------------------------

ProbeState = Literal["up", "down", "not_probed", "unknown"]


class GatewayBody(_In):
    address: str = Field(min_length=1, max_length=300, description="host[:port]")
    transport: str = Field("udp", max_length=8, description="udp or tcp")
    strip: int = Field(0, description="leading digits removed from the number")
    prefix: str = Field("", max_length=32, description="put in front of the number (after strip)")
    probe: str = Field("never", max_length=16, description="OPTIONS probing: never, always or when-down")
    attrs: str = Attrs


class GatewayIn(GatewayBody):
    name: str = Name


class GatewayOut(BaseModel):
    name: str
    address: str
    host: str
    port: int | None
    transport: str
    strip: int
    prefix: str
    probe: str
    attrs: str
    uri: str
    probe_state: ProbeState = Field(description="as the running proxy workers see it; not_probed for "
                                                "probe=never; unknown when no proxy runs")

    @classmethod
    def of(cls, g: Gateway, state: ProbeState) -> GatewayOut:
        return cls(name=g.name, address=g.address, host=g.host, port=g.port, transport=g.transport, strip=g.strip,
                   prefix=g.prefix, probe=g.probe.value, attrs=g.attrs, uri=g.uri(), probe_state=state)


Weights = Field(None, max_length=64, description="one weight per gateway: weighted random order")


class CarrierBody(_In):
    gateways: list[str] = Field(min_length=1, max_length=64, description="gateways, in order")
    weights: list[int] | None = Weights
    attrs: str = Attrs


class CarrierIn(CarrierBody):
    name: str = Name


class CarrierOut(BaseModel):
    name: str
    gateways: list[str]
    weights: list[int] | None
    attrs: str

    @classmethod
    def of(cls, c: Carrier) -> CarrierOut:
        weights = [r.weight for r in c.gateways if r.weight is not None]
        return cls(name=c.name, gateways=[r.name for r in c.gateways], weights=weights or None, attrs=c.attrs)


class RouteIn(_In):
    prefix: str = Prefix
    gateways: list[str] = Field(min_length=1, max_length=64, description="failover order; #name for a carrier")
    weights: list[int] | None = Weights
    groups: list[str] = Field([DEFAULT_GROUP], min_length=1, max_length=32,
                              description="routing groups (caller classes) the route is for")
    priority: int = Field(0, ge=-(2**31), lt=2**31, description="where routes of one prefix overlap, the higher wins")
    time: str | None = Field(None, max_length=16, description="HH:MM-HH:MM (may cross midnight)")
    weekdays: str | None = Field(None, max_length=32, description="1 = Monday .. 7, or mon..sun: 1-5, 6,7")
    tz: str = Field("UTC", max_length=64, description="time zone of time and weekdays")
    attrs: str = Attrs


class RouteOut(BaseModel):
    id: int
    prefix: str
    gateways: list[str]
    weights: list[int] | None
    groups: list[str]
    priority: int
    time: str | None
    weekdays: str | None
    tz: str
    attrs: str

    @classmethod
    def of(cls, r: RouteRule) -> RouteOut:
        weights = [g.weight for g in r.gateways if g.weight is not None]
        w = r.window
        return cls(id=r.id, prefix=r.prefix, gateways=[f"#{g.name}" if g.carrier else g.name for g in r.gateways],
                   weights=weights or None, groups=sorted(r.groups), priority=r.priority,
                   time=w.times if w else None, weekdays=(w.days or None) if w else None,
                   tz=w.tz if w else "UTC", attrs=r.attrs)


class RouteStepOut(BaseModel):
    gateway: str
    uri: str
    route_id: int
    carrier: str | None

    @classmethod
    def of(cls, step: RouteStep) -> RouteStepOut:
        return cls(gateway=step.gateway.name, uri=step.uri, route_id=step.rule.id, carrier=step.carrier)


class RouteTest(BaseModel):
    number: str
    group: str
    routes: list[RouteStepOut]


# -- dialplans ----------------------------------------------------------------------------------

class DialplanRuleIn(_In):
    match: str = Field(min_length=1, max_length=512, description="regex: which values the rule takes")
    subst: str | None = Field(None, max_length=512, description="regex: what to replace (default: match)")
    repl: str | None = Field(None, max_length=512, description=r"replacement, \1 for groups (default: unchanged)")
    priority: int = Field(0, ge=-(2**31), lt=2**31, description="rules are tried lowest priority first")
    attrs: str = Attrs


class DialplanRuleOut(BaseModel):
    id: int
    dpid: int
    priority: int
    match: str
    subst: str | None
    repl: str | None
    attrs: str

    @classmethod
    def of(cls, r: DialplanRule) -> DialplanRuleOut:
        return cls(id=r.id, dpid=r.dpid, priority=r.priority, match=r.match, subst=r.subst, repl=r.repl,
                   attrs=r.attrs)


class DialplanTest(BaseModel):
    dpid: int
    number: str
    result: str
    rule: DialplanRuleOut


# -- blacklists, trusted sources, groups ------------------------------------------------------

class BlacklistIn(_In):
    list: str = Name
    prefix: str = Prefix
    exact: bool = Field(False, description="only this exact number, not a prefix")
    code: int = Field(FILTERED_CODE, description="status answered (400..699)")
    reason: str = Field(FILTERED_REASON, max_length=120, description="reason phrase answered")


class BlacklistOut(BaseModel):
    list: str
    prefix: str
    exact: bool
    code: int
    reason: str

    @classmethod
    def of(cls, e: BlacklistEntry) -> BlacklistOut:
        return cls(list=e.list, prefix=e.prefix, exact=e.exact, code=e.code, reason=e.reason)


class BlacklistTest(BaseModel):
    list: str
    number: str
    blacklisted: bool
    entry: BlacklistOut | None


class TrustedIn(_In):
    cidr: str = Field(min_length=1, max_length=64, description="an address or a subnet: 192.0.2.0/24")
    proto: str | None = Field(None, max_length=8, description="only this transport (udp, tcp); null = any")
    tag: str = Field("", max_length=255, description="free text (e.g. which carrier)")


class TrustedOut(BaseModel):
    cidr: str
    proto: str | None
    tag: str

    @classmethod
    def of(cls, s: TrustedSource) -> TrustedOut:
        return cls(cidr=s.cidr, proto=s.proto, tag=s.tag)


class MemberIn(_In):
    group: str = Name
    address: str = Address


class MemberOut(BaseModel):
    group: str
    address: str

    @classmethod
    def of(cls, m: GroupMember) -> MemberOut:
        return cls(group=m.group, address=m.address)


class RequirementIn(_In):
    group: str = Name


class RequirementOut(BaseModel):
    prefix: str
    group: str
    previous: str | None = Field(None, description="on PUT: the group the prefix required before")

    @classmethod
    def of(cls, r: GroupRequirement, previous: str | None = None) -> RequirementOut:
        return cls(prefix=r.prefix, group=r.group, previous=previous)


# -- forwarding and media servers -------------------------------------------------------------

Target = Field(None, max_length=255, description="sip: URI, user@domain, a number or a media server; null clears")


class ForwardingPatch(_In):
    """A key left out is kept; null clears it (``no_answer_timeout`` null: the default)."""
    always: str | None = Target
    busy: str | None = Target
    no_answer: str | None = Target
    unavailable: str | None = Target
    no_answer_timeout: int | None = Field(None, description="ring seconds before no-answer (default 20)")


FIELD_CONDITIONS = {"always": Condition.ALWAYS, "busy": Condition.BUSY, "no_answer": Condition.NO_ANSWER,
                    "unavailable": Condition.UNAVAILABLE}


class ForwardingOut(BaseModel):
    address: str
    always: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    unavailable: str | None = None
    no_answer_timeout: int | None = None
    updated_at: str | None = None
    goes_to: dict[str, str] = Field(default_factory=dict, description="where each condition goes (GET of one)")

    @classmethod
    def of(cls, f: StoredForwarding, prefs: ForwardingPrefs | None = None) -> ForwardingOut:
        targets = {name: f.targets.get(c) for name, c in FIELD_CONDITIONS.items()}
        goes_to = {} if prefs is None else {
            name: t.uri for name, c in FIELD_CONDITIONS.items() if (t := prefs.target(c)) is not None}
        return cls(address=f"{f.username}@{f.domain}", no_answer_timeout=f.no_answer_timeout,
                   updated_at=_iso(f.updated_at), goes_to=goes_to, **targets)


class MediaServerIn(_In):
    name: str = Name
    uri: str = Field(min_length=1, max_length=255, description="sip: URI, e.g. sip:vm@192.0.2.50:5070")


class MediaServerOut(BaseModel):
    name: str
    uri: str

    @classmethod
    def of(cls, m: MediaDestination) -> MediaServerOut:
        return cls(name=m.name, uri=m.uri)


# -- API tokens -----------------------------------------------------------------------------

class TokenIn(_In):
    role: str = Field(max_length=16, description="admin (everything) or account (one account's data)")
    account: str = Field("", max_length=255, description="user@domain an account token is limited to")
    name: str = Field("", max_length=255, description="a note to recognise the token by")


class TokenOut(BaseModel):
    id: str
    role: str
    account: str
    name: str
    created_at: str
    revoked_at: str | None

    @classmethod
    def of(cls, t: TokenInfo) -> TokenOut:
        return cls(id=t.id, role=t.role, account=t.account, name=t.name, created_at=_iso(t.created_at) or "",
                   revoked_at=_iso(t.revoked_at))


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token: shown this once, only its hash is kept")
