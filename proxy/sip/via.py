"""Via header values (RFC 3261 §20.42, RFC 3581 rport)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cache import bounded_cache
from .headers import format_params, parse_params

MAGIC_COOKIE = "z9hG4bK"
CACHE_BYTES = 8 * 1024 * 1024    # parse_via's cache: at most this many bytes …
CACHE_KEY_CHARS = 512            # … of values up to this length (a phone's Via is ~100)

# RFC 3261 §25.1 host: hostname or IPv4 (letters, digits, "-", "."), or an IPv6 reference
_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]")


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
        """Where a response to this hop goes (§18.2.2 and RFC 3581 §4), as the Via says."""
        host = self.params.get("received") or self.host
        rport = self.params.get("rport")
        if rport:
            return host, int(rport)
        return host, self.port or default_port

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


@bounded_cache(max_entries=16384, max_bytes=CACHE_BYTES, max_key_chars=CACHE_KEY_CHARS)
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
        if end < 0:
            raise ViaError("malformed Via host")
        host, port_text = hostport[:end + 1], hostport[end + 2:] if end + 1 < len(hostport) else ""
    else:
        host, _, port_text = hostport.partition(":")
    if not _HOST.fullmatch(host):
        raise ViaError("malformed Via host")
    port = None
    if port_text:
        port = _port(port_text, "malformed Via port")
    via = Via(parts[2].upper(), host, port, parse_params(params))
    rport = via.params.get("rport")
    if rport:
        _port(rport, "malformed Via rport")
    return via


def _port(text: str, error: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        raise ViaError(error)
    return int(text)
