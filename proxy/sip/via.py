"""Via header values (RFC 3261 §20.42, RFC 3581 rport)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .headers import format_params, parse_params

MAGIC_COOKIE = "z9hG4bK"


class ViaError(ValueError):
    pass


@dataclass(slots=True)
class Via:
    transport: str                     # upper case: UDP, TCP, TLS …
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def response_target(self, default_port: int = 5060) -> tuple[str, int]:
        """Where a response to this hop goes (§18.2.2 and RFC 3581 §4)."""
        host = self.params.get("received") or self.host
        rport = self.params.get("rport")
        if rport:
            return host, int(rport)
        return host, self.port or default_port

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


@lru_cache(maxsize=16384)
def parse_via(value: str) -> Via:
    """Parse one Via value.  Results are cached and shared: treat them as read-only."""
    proto, _, rest = value.strip().partition(" ")
    parts = proto.split("/")
    if len(parts) != 3 or parts[0].upper() != "SIP":
        raise ViaError(f"malformed Via protocol {proto[:30]!r}")
    rest = rest.strip()
    hostport, _, params = rest.partition(";")
    hostport = hostport.strip()
    if not hostport:
        raise ViaError("Via without sent-by")
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_text = hostport[:end + 1], hostport[end + 2:] if end + 1 < len(hostport) else ""
    else:
        host, _, port_text = hostport.partition(":")
    port = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ViaError("malformed Via port")
        port = int(port_text)
    return Via(parts[2].upper(), host, port, parse_params(params))
