"""Framing SIP over a byte stream (TCP, RFC 3261 §18.3): Content-Length delimits bodies.

Sans-I/O: the framer only says what it holds.  The transport decides what a
stalled message costs (``started``: an unfinished message is buffered, the
per-message read timeout runs from then) and answers a request whose header
section arrived but whose body did not (``head``).
"""
from __future__ import annotations

MAX_MESSAGE = 65536


class FramingError(ValueError):
    """The stream cannot be framed any further; the connection must close.

    ``status`` is the SIP answer a request deserves (513 too large, 400
    malformed) and ``head`` its header section when one was complete, so the
    transport can answer before closing."""

    def __init__(self, reason: str, status: int = 400, head: bytes | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.head = head


class StreamFramer:
    """Feed bytes, get complete messages.  Keep-alive CRLFs between messages are skipped."""

    __slots__ = ("_buf", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message = max_message

    @property
    def started(self) -> bool:
        """Part of a message (beyond keep-alive CRLFs) is buffered, waiting for the rest."""
        return bool(self._buf)

    def head(self) -> bytes | None:
        """The buffered message's header section, if it is complete (its body is not)."""
        end = self._buf.find(b"\r\n\r\n")
        return bytes(self._buf[:end + 4]) if end >= 0 else None

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            start = 0
            while start < len(buf) and buf[start] in (13, 10):
                start += 1
            if start:
                del buf[:start]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message:
                    raise FramingError("header section too large", 513)
                return out
            head = bytes(buf[:end + 4])
            length = _content_length(head)
            total = end + 4 + length
            if total > self.max_message:
                raise FramingError("message too large", 513, head)
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key in (b"content-length", b"l"):
            value = value.strip()
            if not (value.isascii() and value.isdigit()):
                raise FramingError("malformed Content-Length", 400, head)
            return int(value)
    # §18.3: Content-Length is mandatory on streams; none means no body
    return 0
