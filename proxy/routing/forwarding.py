"""Per-subscriber call forwarding preferences (chapter 8: avpops-style).  Pure.

Conditions: ``always`` (unconditional), ``busy`` (486/600), ``no-answer``
(after the ring timeout) and ``unavailable`` (not registered, 408/480).

A target is provisioned as text and resolved to the URI the call goes to:

- ``sip:bob@example.test`` / ``bob@example.test``: that address (a local user
  or anyone else's);
- a number (``+4930123456``, ``tel:+4930123456``, ``1002``):
  ``sip:<number>@<the subscriber's domain>``, so the routing script treats it
  like a dialled number (a local extension or alias, else the gateways);
- a media destination name (``voicemail``): the URI configured for it.

The preference fields (``always``, ``busy``, ``no_answer``, ``unavailable``)
are those URIs (or None); ``target(condition)`` tells what kind each is.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from proxy.provisioning.models import ProvisioningError, parse_address
from proxy.sip.uri import UriError, parse_uri

from .common import RoutingError, check_name

__all__ = ["Condition", "ForwardTarget", "ForwardingPrefs", "MediaDestination", "parse_target",
           "condition_for_status", "BUSY_STATUS", "UNAVAILABLE_STATUS", "DEFAULT_RING_TIMEOUT",
           "MAX_RING_TIMEOUT"]

BUSY_STATUS = frozenset({486, 600})
UNAVAILABLE_STATUS = frozenset({408, 480})
DEFAULT_RING_TIMEOUT = 20
MAX_RING_TIMEOUT = 600
_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")


class Condition(str, Enum):
    ALWAYS = "always"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    UNAVAILABLE = "unavailable"

    def __str__(self) -> str:
        return self.value


def condition_for_status(status: int) -> Condition | None:
    """Which preference a final failure status triggers (408 -> unavailable;
    the ring timeout is the script's own, so it knows when it is no-answer)."""
    if status in BUSY_STATUS:
        return Condition.BUSY
    if status in UNAVAILABLE_STATUS:
        return Condition.UNAVAILABLE
    return None


def check_sip_uri(uri: str, what: str) -> str:
    try:
        parsed = parse_uri(uri)
    except UriError as exc:
        raise RoutingError(f"{what}: invalid URI {uri[:64]!r} ({exc})") from None
    if parsed.scheme not in ("sip", "sips") or not parsed.host:
        raise RoutingError(f"{what}: {uri[:64]!r} is not a sip: or sips: URI")
    return uri.strip()


@dataclass(frozen=True, slots=True)
class MediaDestination:
    """A named media service (voicemail, announcements) reached at ``uri``."""
    name: str
    uri: str

    def __post_init__(self) -> None:
        check_name(self.name, "media destination")
        if _NUMBER.match(self.name):
            raise RoutingError(f"media destination {self.name}: a name, not a number (numbers are dialled)")
        object.__setattr__(self, "uri", check_sip_uri(self.uri, f"media destination {self.name}"))


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    kind: str            # "uri" | "number" | "media"
    value: str           # as provisioned (normalised: no "tel:", "sip:" added to user@domain)
    uri: str             # where the forwarded leg goes


def parse_target(text: str, domain: str, media: Mapping[str, str]) -> ForwardTarget:
    """Resolve a provisioned target for a subscriber of ``domain`` (see module doc)."""
    value = (text or "").strip()
    if not value:
        raise RoutingError("empty forwarding target")
    lower = value.lower()
    if lower.startswith(("sip:", "sips:")):
        return ForwardTarget("uri", value, check_sip_uri(value, "forwarding target"))
    if lower.startswith("tel:"):
        value = value[4:]
    if _NUMBER.match(value):
        return ForwardTarget("number", value, f"sip:{value}@{domain}")
    if "@" in value:
        try:
            user, host = parse_address(value)
        except ProvisioningError as exc:
            raise RoutingError(f"forwarding target: {exc}") from None
        uri = f"sip:{user}@{host}"
        return ForwardTarget("uri", uri, uri)
    if value in media:
        return ForwardTarget("media", value, media[value])
    known = ", ".join(sorted(media)) or "none configured"
    raise RoutingError(f"unknown forwarding target {value[:40]!r}: give a sip: URI, user@domain, "
                       f"a number or a media destination ({known})")


@dataclass(frozen=True, slots=True)
class ForwardingPrefs:
    """A subscriber's preferences; an empty one (nothing set) is falsy."""
    user: str = ""
    domain: str = ""
    targets: Mapping[Condition, ForwardTarget] = field(default_factory=dict)
    no_answer_timeout: int = DEFAULT_RING_TIMEOUT
    timeout_set: bool = False            # the timeout was provisioned (not the default)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", MappingProxyType(
            {Condition(k): v for k, v in self.targets.items() if v is not None}))
        if not isinstance(self.no_answer_timeout, int) or not 1 <= self.no_answer_timeout <= MAX_RING_TIMEOUT:
            raise RoutingError(f"ring timeout must be 1 to {MAX_RING_TIMEOUT} seconds")

    def __bool__(self) -> bool:
        return bool(self.targets)

    def target(self, condition: Condition | str) -> ForwardTarget | None:
        return self.targets.get(Condition(condition))

    def _uri(self, condition: Condition) -> str | None:
        target = self.targets.get(condition)
        return target.uri if target is not None else None

    @property
    def always(self) -> str | None:
        return self._uri(Condition.ALWAYS)

    @property
    def busy(self) -> str | None:
        return self._uri(Condition.BUSY)

    @property
    def no_answer(self) -> str | None:
        return self._uri(Condition.NO_ANSWER)

    @property
    def unavailable(self) -> str | None:
        return self._uri(Condition.UNAVAILABLE)

    def on_failure(self, status: int, *, ring_timeout: bool = False) -> tuple[Condition, ForwardTarget] | None:
        """The forward a final failure triggers: busy for 486/600; no-answer when
        the ring timeout expired (``ring_timeout``) and one is set; else
        unavailable for 408/480.  None: no forwarding."""
        if ring_timeout and Condition.NO_ANSWER in self.targets:
            return Condition.NO_ANSWER, self.targets[Condition.NO_ANSWER]
        condition = condition_for_status(status)
        if condition is not None and condition in self.targets:
            return condition, self.targets[condition]
        return None
