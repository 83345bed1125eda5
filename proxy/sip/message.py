"""SIP messages (RFC 3261 §7): bytes in, a mutable message out, bytes back.

Sans-I/O: nothing here touches a socket.  Unknown headers and bodies are kept
intact and in order; header names are matched case-insensitively with compact
forms folded to their long names, but written back as they arrived.
"""
from __future__ import annotations

from .headers import canonical, split_commas

__all__ = ["ParseError", "SipMessage", "parse", "MANDATORY",
           "MAX_MESSAGE_BYTES", "MAX_HEADER_BYTES", "MAX_HEADERS"]

MANDATORY = ("via", "from", "to", "call-id", "cseq")
_SIP2 = "SIP/2.0"

# Default size limits (the [proxy] settings of the same names override them).
MAX_MESSAGE_BYTES = 65535     # a whole message: the largest UDP datagram, Kamailio's BUF_SIZE
MAX_HEADER_BYTES = 16384      # start line + header lines; a phone's INVITE has ~1 KB
MAX_HEADERS = 256             # header lines
_SUMMARY_LINE = 1024          # a mandatory header longer than this is not echoed in a 513


class ParseError(ValueError):
    """Malformed SIP.  ``reason`` is fit for a reason phrase, ``status`` is
    the answer: 400, 413 (body too large) or 513 (header section too large)."""

    def __init__(self, reason: str, partial: "SipMessage | None" = None, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # enough of a request, when one was recognised, to answer it
        self.partial = partial


class SipMessage:
    """A request (``method``/``uri``) or a response (``status``/``reason``).

    ``headers`` is a list of ``(key, name, value)``: key is the canonical
    lower-case long name used for lookups, name is the spelling to write back.
    Tuples, not lists: a message is copied for every branch it is forwarded
    on, and immutable lines are shared by the copies instead of copied; a
    tuple of strings is also dropped from the cycle collector's lists at its
    first pass, where a list stays tracked as long as a transaction keeps the
    message (~32 s) and is scanned again in every older generation.
    """

    __slots__ = ("method", "uri", "status", "reason", "headers", "body")

    def __init__(self, method: str | None = None, uri: str | None = None, status: int | None = None, reason: str | None = None, headers: list[tuple[str, str, str]] | None = None, body: bytes = b"") -> None:
        self.method: str | None = method
        self.uri: str | None = uri
        self.status: int | None = status
        self.reason: str | None = reason
        self.headers: list[tuple[str, str, str]] = headers if headers is not None else []
        self.body: bytes = body

    # -- construction --------------------------------------------------
    @classmethod
    def request(cls, method: str, uri: str) -> "SipMessage":
        return cls(method=method, uri=uri)

    @classmethod
    def response(cls, status: int, reason: str) -> "SipMessage":
        return cls(status=status, reason=reason)

    def copy(self) -> "SipMessage":
        return SipMessage(self.method, self.uri, self.status, self.reason,
                          self.headers[:], self.body)     # lines are immutable: shared

    @property
    def is_request(self) -> bool:
        return self.method is not None

    # -- header access ---------------------------------------------------
    def get(self, key: str) -> str | None:
        """First header line's value for ``key`` (canonical lower-case long name)."""
        for h in self.headers:
            if h[0] == key:
                return h[2]
        return None

    def get_all(self, key: str) -> list[str]:
        """Every line's value, in order (comma lists not split)."""
        return [h[2] for h in self.headers if h[0] == key]

    def values(self, key: str) -> list[str]:
        """Every value of a comma-list header (Via, Route, Contact …), in order."""
        out: list[str] = []
        for h in self.headers:
            if h[0] == key:
                out.extend(split_commas(h[2]))
        return out

    def has(self, key: str) -> bool:
        for h in self.headers:          # a loop, not any(<genexpr>): half the cost
            if h[0] == key:
                return True
        return False

    def set(self, key: str, value: str, name: str | None = None) -> None:
        """Replace every ``key`` line by one (appended if absent)."""
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers[i] = (key, h[1], value)
                self.headers[i + 1:] = [x for x in self.headers[i + 1:] if x[0] != key]
                return
        self.headers.append((key, name or _display_name(key), value))

    def add(self, key: str, value: str, name: str | None = None) -> None:
        self.headers.append((key, name or _display_name(key), value))

    def prepend(self, key: str, value: str, name: str | None = None) -> None:
        """Insert a line before the first ``key`` line (or at the top)."""
        line = (key, name or _display_name(key), value)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers.insert(i, line)
                return
        self.headers.insert(0, line)

    def remove(self, key: str) -> None:
        self.headers = [h for h in self.headers if h[0] != key]

    def pop_first_value(self, key: str) -> str | None:
        """Remove and return the first value of a comma-list header (top Via, top Route)."""
        for i, h in enumerate(self.headers):
            if h[0] == key:
                parts = split_commas(h[2])
                if len(parts) <= 1:
                    del self.headers[i]
                else:
                    self.headers[i] = (key, h[1], ", ".join(parts[1:]))
                return parts[0] if parts else None
        return None

    def replace_first_value(self, key: str, value: str) -> None:
        for i, h in enumerate(self.headers):
            if h[0] == key:
                parts = split_commas(h[2])
                parts[0] = value
                self.headers[i] = (key, h[1], ", ".join(parts))
                return

    # -- convenience for the mandatory headers ------------------------------
    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        num, method = (self.get("cseq") or "").split(None, 1)
        return int(num), method.strip()

    @property
    def top_via(self) -> str | None:
        v = self.get("via")
        if v is None:
            return None
        if "," not in v:
            return v
        parts = split_commas(v)  # empty for a value of bare commas ("Via: ,")
        return parts[0] if parts else None

    # -- output ------------------------------------------------------------
    def start_line(self) -> str:
        if self.method is not None:
            return f"{self.method} {self.uri} {_SIP2}"
        return f"{_SIP2} {self.status} {self.reason}"

    def serialize(self) -> bytes:
        lines = [self.start_line()]
        for key, name, value in self.headers:
            if key != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __repr__(self) -> str:
        return f"<SipMessage {self.start_line()!r} call-id={self.call_id!r}>"


_DISPLAY = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "record-route": "Record-Route", "max-forwards": "Max-Forwards",
}


def _display_name(key: str) -> str:
    name = _DISPLAY.get(key)
    if name is None:
        name = "-".join(p.capitalize() for p in key.split("-"))
    return name


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4:]
    idx = data.find(b"\n\n")  # tolerate bare LF line ends
    if idx >= 0:
        return data[:idx], data[idx + 2:]
    return data.rstrip(b"\r\n"), b""


def parse(data: bytes, *, max_message_bytes: int = MAX_MESSAGE_BYTES,
          max_header_bytes: int = MAX_HEADER_BYTES, max_headers: int = MAX_HEADERS) -> SipMessage:
    """Parse one datagram / framed message.  Raises ParseError with a reason.

    Bytes are decoded as UTF-8 with ``surrogateescape``: a byte that is not
    UTF-8 (a Latin-1 display name) becomes a lone surrogate and serialises
    back to the same byte, so relayed messages are unchanged."""
    if not data or data.isspace():          # (isspace: the set bytes.strip() strips, no copy)
        raise ParseError("empty message")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    head, body = _split_head_body(data)
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:   # a bare LF somewhere: tolerate LF line ends
        lines = text.replace("\r\n", "\n").split("\n")
    msg = _start_line(lines[0])
    if len(head) > max_header_bytes or len(lines) > max_headers + 1:
        raise ParseError("Message Too Large (header section)", _summary(msg, lines), 513)
    _headers(msg, lines)
    if len(data) > max_message_bytes:     # the header section fits: the body is too large
        raise ParseError("Request Entity Too Large", _partial(msg), 413)
    present = {h[0] for h in msg.headers}
    for key in MANDATORY:
        if key not in present:
            raise ParseError(f"missing {_display_name(key)} header", _partial(msg))
    _check_cseq(msg)
    msg.body = _body(msg, body)
    return msg


def _headers(msg: SipMessage, lines: list[str]) -> None:
    headers = msg.headers
    append = headers.append
    keys = _KEYS
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation (RFC 3261 §7.3.1)
            if not headers:
                raise ParseError("continuation line before any header", _partial(msg))
            last = headers[-1]
            headers[-1] = (last[0], last[1], last[2] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise ParseError(f"malformed header line {line[:40]!r}", _partial(msg))
        key = keys.get(name)
        if key is None:
            name = name.strip()
            if not name or " " in name or "\t" in name:
                raise ParseError(f"malformed header line {line[:40]!r}", _partial(msg))
            key = canonical(name)
            if len(keys) < 4096 and len(name) <= 64:   # bounded: names are attacker-chosen
                keys[name] = key
        append((key, name, value.strip()))


def _summary(msg: SipMessage, lines: list[str]) -> SipMessage | None:
    """What an oversized request needs for its 513: the mandatory headers, each
    only if short (a reply never echoes the attacker's bulk back)."""
    if not msg.is_request:
        return None
    for line in lines[1:]:
        if len(line) > _SUMMARY_LINE or not line or line[0] in " \t":
            continue
        name, colon, value = line.partition(":")
        key = canonical(name.strip())
        if colon and key in MANDATORY:
            msg.headers.append((key, name.strip(), value.strip()))
    return msg


# header name as written -> lookup key; filled as names are seen
_KEYS: dict[str, str] = {}


def _digits(text: str) -> bool:
    # str.isdigit() also accepts characters like "²" that int() refuses
    return text.isascii() and text.isdigit()


# RFC 3261 §25.1 token characters (methods are tokens)
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def _start_line(line: str) -> SipMessage:
    line = line.strip("\r\n")
    if line.startswith(_SIP2 + " "):
        code, _, reason = line[len(_SIP2) + 1:].partition(" ")   # the reason may be empty
        if len(code) != 3 or not _digits(code) or not 100 <= int(code) <= 699:
            raise ParseError("malformed status code")
        return SipMessage.response(int(code), reason.strip())
    parts = line.strip().split(" ")
    if len(parts) != 3:
        raise ParseError("malformed start line")
    method, uri, version = parts
    if version.upper() != _SIP2:
        raise ParseError(f"unsupported version {version[:16]!r}")
    if not method or not _TOKEN.issuperset(method):
        raise ParseError("malformed method")
    if ":" not in uri:
        raise ParseError("malformed Request-URI")
    return SipMessage.request(method, uri)


def _partial(msg: SipMessage) -> SipMessage | None:
    return msg if msg.is_request else None


def _check_cseq(msg: SipMessage) -> None:
    parts = (msg.get("cseq") or "").split()
    if len(parts) != 2:
        raise ParseError("malformed CSeq", _partial(msg))
    num, method = parts
    if not _digits(num) or len(num) > 10 or int(num) >= 2**31:
        raise ParseError("malformed CSeq", _partial(msg))
    if msg.is_request and method != msg.method:
        raise ParseError("CSeq method does not match request method", _partial(msg))


def _body(msg: SipMessage, body: bytes) -> bytes:
    declared = msg.get("content-length")
    if declared is None:
        return body
    declared = declared.strip()
    if not _digits(declared):
        raise ParseError("malformed Content-Length", _partial(msg))
    length = int(declared)
    if length > len(body):
        raise ParseError("body shorter than Content-Length", _partial(msg))
    return body[:length]
