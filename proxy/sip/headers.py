"""Header names and header-value grammar shared by every SIP header parser.

Compact forms come from RFC 3261 §7.3.3 and the IANA SIP parameters registry.
"""
from __future__ import annotations

COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "x": "session-expires", "y": "identity", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition",
}


def canonical(name: str) -> str:
    """Lookup key of a header name: lower-case, compact forms expanded."""
    key = name.lower()
    if len(key) == 1:
        return COMPACT.get(key, key)
    return key


def split_commas(value: str) -> list[str]:
    """Split a comma-list header value, respecting quotes and <...>."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:     # the common case (Via lists): no quoting
        return [part for part in (p.strip() for p in value.split(",")) if part]
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return [p for p in out if p]


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=1;b;c="x"`` → {"a": "1", "b": None, "c": '"x"'} (names lower-cased, order kept)."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, val = part.partition("=")
        params[name.strip().lower()] = val.strip() if sep else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value
