"""SIP/SIPS/tel URIs (RFC 3261 §19.1) and name-addr values (From, To, Contact, Route)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .cache import bounded_cache
from .headers import format_params, parse_params, unquote


class UriError(ValueError):
    pass


@dataclass(slots=True)
class SipUri:
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""                   # "?a=b&c=d" part, kept verbatim

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        return (t or "udp").lower()

    @property
    def loose_route(self) -> bool:
        return "lr" in self.params

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        return f"{self.scheme}:{userinfo}{self.hostport}{format_params(self.params)}{self.headers}"


@bounded_cache(max_entries=16384, max_bytes=8 * 1024 * 1024, max_key_chars=512)
def parse_uri(text: str) -> SipUri:
    """Parse a URI.  Results are cached and shared: treat them as read-only."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips", "tel"):
        raise UriError(f"unsupported URI {text[:40]!r}")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise UriError("empty tel URI")
        return SipUri(scheme="tel", user=number, params=parse_params(params))
    rest, qmark, hdrs = rest.partition("?")
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, psep, pw = userinfo.partition(":")
        password = pw if psep else None
        if not user:
            raise UriError("empty user part")
    hostport, _, params = rest.partition(";")
    host, port = _split_hostport(hostport)
    return SipUri(scheme, user, password, host.lower(), port, parse_params(params), qmark + hdrs)


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if not hostport:
        raise UriError("missing host")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UriError("unterminated IPv6 reference")
        host, rest = hostport[:end + 1], hostport[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else None
    else:
        host, sep, port_text = hostport.partition(":")
        port_text = port_text if sep else None
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise UriError(f"bad port {port_text[:8]!r}")
        port = int(port_text)
    if not host or any(c in host for c in " <>\""):
        raise UriError(f"bad host {host[:40]!r}")
    return host, port


@dataclass(slots=True)
class NameAddr:
    """``"Display" <uri>;params`` — header params (tag, expires, q) kept apart from the URI."""
    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@bounded_cache(max_entries=16384, max_bytes=8 * 1024 * 1024, max_key_chars=512)
def parse_name_addr(value: str) -> NameAddr:
    """Parse a name-addr/addr-spec header value.  Cached and shared: read-only."""
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise UriError("unterminated <")
        display = value[:lt].strip() or None
        return NameAddr(value[lt + 1:gt].strip(), display, parse_params(value[gt + 1:]))
    # addr-spec form: every ;param belongs to the header, not the URI (§20.10)
    uri, _, params = value.partition(";")
    if not uri or ":" not in uri:
        raise UriError(f"malformed address {value[:40]!r}")
    return NameAddr(uri.strip(), None, parse_params(params), bracketed=False)


def uri_user_host(text: str) -> tuple[str | None, str]:
    """(user, host) of a URI string, the AOR key of registrar and auth."""
    u = parse_uri(text)
    return u.user, u.host


def display_unquoted(addr: NameAddr) -> str | None:
    return unquote(addr.display) if addr.display else None
